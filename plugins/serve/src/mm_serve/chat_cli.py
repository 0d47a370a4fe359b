"""``mmrun chat``: a terminal conversation with any model that has ``chat(query, history, images)``.

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
from pathlib import Path
from typing import Any, TextIO

from PIL import Image

from mm_core.errors import DataError
from mm_serve.chat_model import IMAGE_MARK, ChatModel, add_model_options
from mm_serve.images import IMAGE_ERRORS, open_image

QUIT = ("/quit", "/exit")
HELP = "commands: /image PATH, /clear, /quit"


def build_parser(prog: str = "mmrun chat") -> argparse.ArgumentParser:
    """The options of ``mmrun chat``."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    add_model_options(parser, "a run config naming the model (its model block is used)", device="cpu")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    return parser


class ChatSession:
    """History, pending images and the command loop, independent of where lines come from."""

    def __init__(self, chat_model: ChatModel, generation: dict[str, Any], out: TextIO = sys.stdout) -> None:
        self.chat_model = chat_model
        self.generation = generation
        self.out = out
        self.history: list[tuple[str, str]] = []
        self.images: list[Image.Image] = []
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
        """Open the image at ``path``; it goes before the next question."""
        try:
            image = open_image(Path(path).expanduser())
        except IMAGE_ERRORS as exc:
            self.say(f"cannot open image {path}: {exc}")
            return
        self.images.append(image)
        self.pending += 1
        self.say(f"(image {len(self.images)} attached: {path})")

    def ask(self, question: str) -> str:
        """Ask ``question`` (after the images attached since the last one), streaming the answer."""
        import torch

        query = " ".join([IMAGE_MARK] * self.pending + [question])
        self.pending = 0
        self.out.write("Assistant: ")
        self.out.flush()
        # Beam search cannot stream: its best beam is known only at the end.
        streaming = int(self.generation.get("num_beams", 1)) == 1
        try:
            with torch.no_grad():
                result = self.chat_model.model.chat(query, self.history, self.chat_model.prepare_images(self.images),
                                                    on_text=self._stream if streaming else None, **self.generation)
        except DataError as exc:
            self.say(f"\n(error: {exc})")
            return ""
        # transformers-style models return (answer, history); others just the answer
        if isinstance(result, tuple):
            answer, self.history = str(result[0]), list(result[1])
        else:
            answer = str(result)
            self.history = [*self.history, (query, answer)]
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
    """Run ``mmrun chat``: load the model once, then answer lines from the terminal or stdin."""
    from mm_core.api import load_model_for_inference

    args = build_parser().parse_args(argv)
    loaded = load_model_for_inference(args.config, args.options, args.checkpoint, args.device)
    session = ChatSession(ChatModel(loaded.model, loaded.vis_processor, loaded.name), generation_options(args))
    interactive = sys.stdin.isatty()
    if interactive:
        session.say(f"Chatting with {loaded.name} ({args.config}). {HELP}")
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


def generation_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``chat`` from the command line; sampling only when asked for."""
    generation: dict[str, Any] = {"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams,
                                  "repetition_penalty": args.repetition_penalty}
    if args.temperature != 1.0 or args.top_p < 1.0:
        generation.update(do_sample=True, temperature=args.temperature, top_p=args.top_p)
    return generation
