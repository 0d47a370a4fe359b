"""``char_chat``: a real (tiny) chat model for the serve tests.

A GRU over characters. The prompt is the whole conversation: ``<user>`` text ``<assistant>``
text ... ``<user>`` query ``<assistant>``; each :data:`IMAGE_MARK` in a user text becomes one
position whose input embedding is the projection of that image's pixels. Decoding is greedy
unless ``do_sample`` (temperature, top_p), one character per step, and each character is
passed to ``on_text`` as soon as it is chosen. Random weights drawn from ``init_seed``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from torch import nn

from mm_core.base.llm import IMAGE_MARK
from mm_core.base.model import BaseModel, config_value
from mm_core.base.processor import BaseProcessor
from mm_core.errors import DataError

EOS, USER, ASSISTANT, IMAGE = 0, 1, 2, 3
CHARS = " abcdefghijklmnopqrstuvwxyz.,?!'"
UNKNOWN = CHARS.index("?")
VOCAB = 4 + len(CHARS)


def char_ids(text: str) -> list[int]:
    """Ids of the characters of ``text`` (lower-cased; anything else reads as '?')."""
    return [4 + (CHARS.index(c) if c in CHARS else UNKNOWN) for c in text.lower()]


class CharImageProcessor(BaseProcessor):
    """PIL image -> (3, size, size) float tensor in [0, 1]."""

    def __init__(self, image_size: int = 8):
        self.image_size = image_size

    @classmethod
    def from_config(cls, cfg: DictConfig | None = None) -> CharImageProcessor:
        return cls(int((cfg or {}).get("image_size", 8)))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        resized = image.convert("RGB").resize((self.image_size, self.image_size), Image.BILINEAR)
        return torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


class CharChat(BaseModel):
    def __init__(self, hidden: int = 48, image_size: int = 8, step_delay: float = 0.0):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, hidden)
        self.position = nn.Embedding(512, hidden)
        self.image_proj = nn.Linear(3 * image_size * image_size, hidden)
        self.rnn = nn.GRU(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, VOCAB)
        self.step_delay = step_delay
        with torch.no_grad():  # larger weights than the default init: varied, prompt-dependent answers
            self.head.weight.mul_(4.0)
            self.image_proj.weight.mul_(4.0)
            self.rnn.weight_hh_l0.mul_(2.0)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> CharChat:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(config_value(cfg, "init_seed", 0)))
            return cls(int(config_value(cfg, "hidden", 48)), int(config_value(cfg, "image_size", 8)),
                       float(config_value(cfg, "step_delay", 0.0)))

    def forward(self, samples: dict[str, Any]) -> dict[str, torch.Tensor]:
        ids = samples["input_ids"]
        logits = self.head(self.rnn(self.embed(ids))[0])
        loss = nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
        return {"loss": loss}

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as this model sees them (one per character)."""
        return len(text)

    def prompt_ids(self, query: str, history: Sequence[Sequence[str]]) -> list[int]:
        ids: list[int] = []
        for user, assistant in [*history, (query, None)]:
            ids.append(USER)
            for i, piece in enumerate(user.split(IMAGE_MARK)):
                ids += ([IMAGE] if i else []) + char_ids(piece)
            ids.append(ASSISTANT)
            if assistant is not None:
                ids += char_ids(assistant)
        return ids

    #: generation settings that may differ between the requests of one chat_batch call
    chat_batch_row_settings = ("max_new_tokens", "do_sample", "temperature", "top_p", "seed")

    @torch.no_grad()
    def chat(self, query: str, history: Sequence[Sequence[str]] | None = None, images: Any = None,
             on_text: Callable[[str], None] | None = None, max_new_tokens: int = 32, temperature: float = 1.0,
             top_p: float = 1.0, do_sample: bool = False, **unused: Any) -> str:
        """One chat turn: ``history`` holds earlier (user, assistant) pairs; ``images`` (N, 3, H, W)
        fill the image marks of the whole conversation, in order."""
        row = self._prefill(query, history or [], images)
        settings = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p,
                    "do_sample": do_sample}
        return self._decode([row], [settings], [on_text], [lambda: False], [None])[0]

    @torch.no_grad()
    def chat_batch(self, requests: Sequence[dict[str, Any]]) -> list[str]:
        """Several chat turns decoded together, one character per step for every unfinished row;
        each row keeps its own settings (a ``seed`` seeds that row's own generator)."""
        rows = [self._prefill(r["query"], r.get("history") or [], r.get("images")) for r in requests]
        settings = [{"max_new_tokens": 32, "temperature": 1.0, "top_p": 1.0, "do_sample": False, **r["generation"]}
                    for r in requests]
        generators = [torch.Generator().manual_seed(int(s["seed"])) if s.get("seed") is not None else None
                      for s in settings]
        return self._decode(rows, settings, [r.get("on_text") for r in requests],
                            [r.get("stopped") or (lambda: False) for r in requests], generators)

    def _prefill(self, query: str, history: Sequence[Sequence[str]], images: Any) -> dict[str, torch.Tensor]:
        """The conversation read: its length, the image context every step adds, the last output and state."""
        ids = torch.tensor(self.prompt_ids(query, history))
        slots = int((ids == IMAGE).sum())
        pixels = _stack(images)
        if slots != pixels.shape[0]:
            raise DataError(f"the conversation has {slots} image marks but {pixels.shape[0]} images",
                            hint=f"put one {IMAGE_MARK} per image in the user turns")
        inputs = self.embed(ids) + self.position(torch.arange(len(ids)) % 512)
        context = torch.zeros(inputs.shape[-1])
        if slots:
            image_embeds = self.image_proj(pixels.flatten(1).to(inputs.dtype))
            inputs[ids == IMAGE] = image_embeds
            context = image_embeds.mean(0)  # every step sees the images, so they shape the whole answer
        out, state = self.rnn((inputs + context).unsqueeze(0))
        return {"length": torch.tensor(len(ids)), "context": context, "out": out[0, -1], "state": state[:, 0]}

    def _decode(self, rows: list[dict[str, torch.Tensor]], settings: list[dict[str, Any]],
                on_texts: list[Any], stopped: list[Any], generators: list[Any]) -> list[str]:
        """Greedy or sampled decoding of every row, the unfinished rows stepped through the GRU together."""
        out = torch.stack([r["out"] for r in rows])
        state = torch.stack([r["state"] for r in rows], dim=1)
        texts: list[list[str]] = [[] for _ in rows]
        active, step = list(range(len(rows))), 0
        while active:
            logits = self.head(out[active])
            going, tokens = [], []
            for i, row_logits in zip(active, logits):
                s = settings[i]
                if step >= int(s["max_new_tokens"]) or stopped[i]():
                    continue
                token = (_sample(row_logits, s["temperature"], s["top_p"], generators[i]) if s["do_sample"]
                         else int(row_logits.argmax()))
                if token == EOS:
                    continue
                texts[i].append(CHARS[token - 4] if token >= 4 else "?")
                if on_texts[i] is not None:
                    on_texts[i](texts[i][-1])
                going.append(i)
                tokens.append(token)
            if not going:
                break
            if self.step_delay:
                time.sleep(self.step_delay)  # one step of the whole batch, as on an accelerator
            positions = torch.stack([(rows[i]["length"] + step) % 512 for i in going])
            context = torch.stack([rows[i]["context"] for i in going])
            step_input = self.embed(torch.tensor(tokens)) + self.position(positions) + context
            new_out, new_state = self.rnn(step_input.unsqueeze(1), state[:, going].contiguous())
            out[going], state[:, going] = new_out[:, 0], new_state
            active, step = going, step + 1
        return ["".join(t) for t in texts]


def _stack(images: Any) -> torch.Tensor:
    if images is None:
        return torch.zeros(0, 3, 1, 1)
    if isinstance(images, torch.Tensor):
        return images if images.dim() == 4 else images.unsqueeze(0)
    return torch.stack(list(images)) if len(images) else torch.zeros(0, 3, 1, 1)


def _sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None = None) -> int:
    probs = torch.softmax(logits / max(temperature, 1e-5), dim=-1)
    ordered, order = probs.sort(descending=True)
    keep = ordered.cumsum(0) - ordered < top_p
    ordered = ordered * keep
    return int(order[torch.multinomial(ordered / ordered.sum(), 1, generator=generator)])
