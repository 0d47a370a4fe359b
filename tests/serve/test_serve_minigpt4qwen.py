"""`mmrun serve` of a tiny MiniGPT4-Qwen checkpoint (plugins blip2 + qwen_llm) with the openai client.

The checkpoint holds a random projection (the tiny type's only trainable tensors) in the
engine's checkpoint layout; the reference answers come from the tiny model built here with
those tensors copied in and its ``chat`` called directly, so the server's checkpoint loading,
message conversion, image handling and streaming are all checked against it.
"""

from __future__ import annotations

import pytest
from serve_support import IMAGE_MARK, Server, decode_png, image_message, png_bytes

NAME = "minigpt4qwen-tiny"
BLUE = png_bytes((30, 30, 220), size=40)


@pytest.fixture(scope="module")
def qwen(qwen_checkpoint: dict):
    """The checkpoint's model built here (while the server loads it), and its eval image processor."""
    import torch

    from mm_core.api import load_preprocess
    from mm_core.config.loader import load_config
    from mm_core.registry import get_registry

    loaded = load_config({"model": {"arch": "minigpt4qwen", "model_type": "tiny"}})
    model = get_registry().resolve("models", "minigpt4qwen").from_config(loaded.config.model).eval()
    assert sorted(model.trainable_state_dict()) == sorted(qwen_checkpoint["tensors"])
    with torch.no_grad():
        for name, tensor in qwen_checkpoint["tensors"].items():
            model.get_parameter(name).copy_(tensor)
    vis, _ = load_preprocess(loaded.config.preprocess)
    return model, vis["eval"]


@pytest.fixture(scope="module")
def qwen_server(launches: dict, qwen) -> Server:
    return launches["qwen"].wait()


def reference(qwen, query: str, history=(), images=(), max_new_tokens: int = 12) -> tuple[str, list[str]]:
    """The model's own answer and the pieces it streams."""
    import torch

    model, processor = qwen
    pixels = torch.stack([processor(decode_png(i)) for i in images]) if images else None
    pieces: list[str] = []
    result = model.chat(query, list(history), pixels, on_text=pieces.append, max_new_tokens=max_new_tokens,
                        do_sample=False)
    return (result[0] if isinstance(result, tuple) else result), pieces


def test_completion_with_image(qwen_server: Server, qwen):
    response = qwen_server.client().chat.completions.create(
        model=NAME, messages=[image_message("what shape is this?", BLUE)], max_tokens=12)
    expected, _ = reference(qwen, f"{IMAGE_MARK}\nwhat shape is this?", images=[BLUE])
    assert expected  # precondition: the tiny model says something
    assert response.choices[0].message.content == expected
    assert 0 < response.usage.completion_tokens <= 12
    # the text tokens of the question plus num_query_token (4) for the image
    tokenizer = qwen[0].llm.tokenizer
    question_tokens = len(tokenizer.encode("\nwhat shape is this?", add_special_tokens=False))
    assert response.usage.prompt_tokens == question_tokens + 4


def test_streamed_completion_with_image(qwen_server: Server, qwen):
    stream = qwen_server.client().chat.completions.create(
        model=NAME, messages=[image_message("what colour is it?", BLUE)], max_tokens=12, stream=True)
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    expected, expected_pieces = reference(qwen, f"{IMAGE_MARK}\nwhat colour is it?", images=[BLUE])
    assert pieces == expected_pieces and len(pieces) > 1
    assert "".join(pieces).strip() == expected


def test_two_turn_conversation(qwen_server: Server, qwen):
    client = qwen_server.client()
    first_turn = image_message("what is this?", BLUE)
    answer1 = client.chat.completions.create(model=NAME, messages=[first_turn], max_tokens=10).choices[0].message.content
    second = client.chat.completions.create(
        model=NAME, max_tokens=10,
        messages=[first_turn, {"role": "assistant", "content": answer1}, {"role": "user", "content": "is it large?"}])
    expected, _ = reference(qwen, "is it large?", [(f"{IMAGE_MARK}\nwhat is this?", answer1)], images=[BLUE],
                            max_new_tokens=10)
    assert second.choices[0].message.content == expected
