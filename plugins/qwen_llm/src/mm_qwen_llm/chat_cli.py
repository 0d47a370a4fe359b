"""``mmrun chat``: a terminal conversation with a model that has ``chat(query, history, images)``.

    mmrun chat --config run.yaml [--checkpoint CKPT] [--options k=v ...] [--max-new-tokens N]

Lines typed are questions; these commands act instead:

    /image PATH   attach an image (it goes before the next question)
    /clear        forget the conversation and its images
    /quit         leave (also /exit, or end of input)

Answers stream as they are generated. When stdin is not a terminal the same lines are read
from it, so a conversation can be scripted (``printf '/image a.png\\nWhat is it?\\n' | mmrun chat ...``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from mm_core.base.llm import IMAGE_MARK
from mm_core.errors import ConfigError, DataError

QUIT = ("/quit", "/exit")
HELP = "commands: /image PATH, /clear, /quit"


def build_parser(prog: str = "mmrun chat") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a run config naming the model (its model block is used)")
    parser.add_argument("--checkpoint", default=None,
                        help="mm checkpoint directory, 'checkpoints' folder / pointer file, or weights file")
    parser.add_argument("--options", nargs="*", default=[], help="config overrides key.path=value")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    return parser


def load_chat_model(config: str, options: list[str], checkpoint: str | None, device: str) -> tuple[Any, Any]:
    """The model of ``config`` with ``checkpoint`` loaded, and its eval image processor."""
    from mm_core.api import load_preprocess
    from mm_core.config.loader import load_config
    from mm_core.registry import get_registry

    loaded = load_config(config, options)
    cfg = loaded.config
    if cfg.get("model") is None:
        raise ConfigError(f"{config}: no model block to chat with")
    model = get_registry().resolve("models", str(cfg.model.arch)).from_config(cfg.model)
    if not hasattr(model, "chat"):
        raise ConfigError(f"model '{cfg.model.arch}' has no chat()", hint="chat needs a BLIP-2 -> LLM model such as minigpt4qwen")
    if checkpoint:
        model.load_checkpoint(checkpoint_weights(checkpoint))
    vis, _ = load_preprocess(cfg.get("preprocess"))
    return model.to(device).eval(), vis.get("eval")


def checkpoint_weights(spec: str) -> Path:
    """The weights to load: a file as is, else an mm checkpoint directory (or pointer)."""
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix in (".safetensors", ".pth", ".pt", ".bin"):
        return path
    from mm_core.engine.checkpoint import resolve_checkpoint_dir

    return resolve_checkpoint_dir(path)


class ChatSession:
    """History, pending images and the command loop, independent of where lines come from."""

    def __init__(self, model: Any, vis_processor: Callable | None, generation: dict[str, Any],
                 out: TextIO = sys.stdout) -> None:
        self.model = model
        self.vis_processor = vis_processor
        self.generation = generation
        self.out = out
        self.history: list[tuple[str, str]] = []
        self.images: list[Any] = []
        self.pending = 0  # images attached since the last question

    def handle(self, line: str) -> bool:
        """Act on one input line; ``False`` means leave."""
        line = line.strip()
        if not line:
            return True
        if line in QUIT:
            return False
        if line == "/clear":
            self.history, self.images, self.pending = [], [], 0
            self.say("(conversation cleared)")
        elif line.startswith("/image"):
            self.attach(line[len("/image"):].strip())
        elif line.startswith("/"):
            self.say(f"unknown command {line.split()[0]}; {HELP}")
        else:
            self.ask(line)
        return True

    def attach(self, path: str) -> None:
        from PIL import Image

        if self.vis_processor is None:
            raise ConfigError("the config has no preprocess.vis_processor.eval to prepare images")
        try:
            image = Image.open(Path(path).expanduser()).convert("RGB")
        except OSError as exc:
            self.say(f"cannot open image {path}: {exc}")
            return
        self.images.append(self.vis_processor(image))
        self.pending += 1
        self.say(f"(image {len(self.images)} attached: {path})")

    def ask(self, question: str) -> str:
        import torch

        query = " ".join([IMAGE_MARK] * self.pending + [question])
        self.pending = 0
        images = torch.stack(self.images) if self.images else None
        self.out.write("Assistant: ")
        self.out.flush()
        # Beam search cannot stream: its best beam is known only at the end.
        streaming = int(self.generation.get("num_beams", 1)) == 1
        try:
            answer, self.history = self.model.chat(query, self.history, images=images,
                                                   on_text=self._stream if streaming else None, **self.generation)
        except DataError as exc:
            self.say(f"\n(error: {exc})")
            return ""
        self.out.write("\n" if streaming else answer + "\n")
        self.out.flush()
        return answer

    def _stream(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    model, vis = load_chat_model(args.config, args.options, args.checkpoint, args.device)
    generation = {"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams,
                  "repetition_penalty": args.repetition_penalty}
    if args.temperature != 1.0 or args.top_p < 1.0:
        generation.update(do_sample=True, temperature=args.temperature, top_p=args.top_p)
    session = ChatSession(model, vis, generation)
    interactive = sys.stdin.isatty()
    if interactive:
        session.say(f"Chatting with {args.config}. {HELP}")
    while True:
        try:
            line = input("You: ") if interactive else sys.stdin.readline()
        except EOFError:
            break
        if not interactive:
            if not line:
                break
            if line.strip() and not line.startswith("/"):
                session.say(f"You: {line.strip()}")
        if not session.handle(line):
            break
    return 0
