"""`mmrun chat` (mm-plugin-serve): scripted conversations checked against the model's own ``chat``.

The command runs in a subprocess on the tiny MiniGPT4-Qwen with the serve tests' checkpoint (a
model whose ``chat`` returns ``(answer, history)``); the session loop runs in-process on the
``char_chat`` test model (whose ``chat`` returns the answer only).
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
from PIL import Image
from serve_support import BIN, HERE, IMAGE_MARK, QWEN_CONFIG, CharReference, png_bytes, serve_env

pytestmark = pytest.mark.slow  # real runs / several processes: `make test-fast` skips this module

RED, BLUE = png_bytes((220, 30, 30)), png_bytes((30, 30, 220), size=40)


def mmrun(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    """``mmrun ARGS`` with the test model's plugin; fails the test on a non-zero exit."""
    done = subprocess.run([str(BIN / "mmrun"), *args], env=serve_env(), input=stdin, capture_output=True,
                          text=True, timeout=400, cwd=HERE)
    assert done.returncode == 0, f"mmrun {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def assistant_lines(stdout: str) -> list[str]:
    return [line[len("Assistant: "):].strip() for line in stdout.splitlines() if line.startswith("Assistant:")]


def test_mmrun_lists_serve_and_chat_and_both_explain_themselves():
    from mm_core.registry import get_registry

    for name in ("serve", "chat"):
        assert get_registry().get("commands", name).target.startswith("mm_serve."), name
    listing = mmrun(["--help"]).stdout
    assert "serve" in listing and "chat" in listing
    assert "--checkpoint" in mmrun(["serve", "--help"]).stdout
    chat_help = mmrun(["chat", "--help"]).stdout
    assert "--checkpoint" in chat_help and "--max-new-tokens" in chat_help


def test_chat_answers_a_scripted_two_turn_conversation_with_an_image(serve_dir: Path, qwen_checkpoint: dict):
    import torch
    from PIL import Image

    from mm_core.api import load_model_for_inference

    image, config = serve_dir / "chat_blue.png", serve_dir / "chat_minigpt4qwen.yaml"
    image.write_bytes(BLUE)
    config.write_text(QWEN_CONFIG)
    checkpoint = qwen_checkpoint["path"].parent / "latest"  # the pointer file, as a user gives it
    script = f"/image {image}\nWhat shape is in the picture?\nWhat color is the shape?\n/quit\nnot read\n"
    done = mmrun(["chat", "--config", str(config), "--checkpoint", str(checkpoint), "--max-new-tokens", "12"], script)
    answers = assistant_lines(done.stdout)
    assert len(answers) == 2 and all(answers), done.stdout
    assert "image 1 attached" in done.stdout and "not read" not in done.stdout

    # The same two turns in this process, through model.chat with the checkpoint's weights.
    loaded = load_model_for_inference(str(config), checkpoint=str(checkpoint))
    assert not loaded.model.training and loaded.name == "minigpt4qwen-tiny"
    for name, tensor in qwen_checkpoint["tensors"].items():
        assert torch.equal(loaded.model.get_parameter(name), tensor), name
    pixels = loaded.vis_processor(Image.open(image).convert("RGB")).unsqueeze(0)
    streamed: list[str] = []
    first, history = loaded.model.chat(f"{IMAGE_MARK} What shape is in the picture?", [], images=pixels,
                                       max_new_tokens=12, on_text=streamed.append)
    second, history = loaded.model.chat("What color is the shape?", history, images=pixels, max_new_tokens=12)
    assert answers == [first, second]
    assert "".join(streamed).strip() == first
    assert len(history) == 2


@pytest.fixture
def char_session(char_reference: CharReference):
    from mm_serve.chat_cli import ChatSession
    from mm_serve.chat_model import ChatModel

    out = io.StringIO()
    chat_model = ChatModel(char_reference.model, char_reference.processor, "char_chat-tiny")
    return ChatSession(chat_model, {"max_new_tokens": 16, "num_beams": 1}, out), out


def test_chat_session_keeps_history_for_a_model_that_returns_only_text(char_session, char_reference, serve_dir):
    session, out = char_session
    red = serve_dir / "chat_red.png"
    red.write_bytes(RED)
    for line in (f"/image {red}", "which color?", "/nonsense", "and now?"):
        assert session.handle(line)
    first = char_reference.answer(f"{IMAGE_MARK} which color?", [], [RED], max_new_tokens=16)
    second = char_reference.answer("and now?", [(f"{IMAGE_MARK} which color?", first)], [RED], max_new_tokens=16)
    assert first and assistant_lines(out.getvalue()) == [first, second]
    assert session.history == [(f"{IMAGE_MARK} which color?", first), ("and now?", second)]
    assert "unknown command /nonsense" in out.getvalue()

    assert session.handle("/clear")
    assert session.history == [] and session.images == []
    assert session.handle("/image /no/such/picture.png") and "cannot open image" in out.getvalue()
    bomb = serve_dir / "chat_bomb.png"
    side = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 16
    Image.new("1", (side, side)).save(bomb)  # over twice Pillow's pixel limit: its bomb error, not an OSError
    assert session.handle(f"/image {bomb}") and f"cannot open image {bomb}" in out.getvalue()
    assert session.images == []
    assert not session.handle("/quit")
