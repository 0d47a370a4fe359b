"""``gpt_dialogue``: one dialogue turn (caption, history, question, answer) as GPT-2 inputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from omegaconf import DictConfig

from mm_avsd_dialogue.tokenizer import load_tokenizer, special_token_ids
from mm_core.base.llm import IGNORE_INDEX
from mm_core.base.model import config_value
from mm_core.base.processor import BaseProcessor


class GPTDialogueProcessor(BaseProcessor):
    """Encodes a sample ``{"caption", "summary", "dialog": [earlier turns], "question", "answer"}``.

    The sequence is the caption (caption + summary when ``use_caption``), then the last
    ``max_turns`` turns of history (question, answer, ...), the question and the answer, each
    segment ending in ``<eos>``. Token types are ``<cap>`` on the caption and then alternate
    ``<speaker1>`` (questions) and ``<speaker2>`` (answers); labels are the answer's tokens and
    its ``<eos>``, ``-100`` elsewhere. Options: ``max_turns`` (3), ``use_caption`` (true),
    ``tokenizer`` (``gpt2``, a directory, or ``tiny``).
    """

    def __init__(self, max_turns: int = 3, use_caption: bool = True, tokenizer: str = "gpt2") -> None:
        super().__init__()
        self.max_turns = int(max_turns)
        self.use_caption = bool(use_caption)
        self.tokenizer_name = tokenizer
        self.tokenizer = load_tokenizer(tokenizer)
        self.special = special_token_ids(self.tokenizer)

    @property
    def pad_token_id(self) -> int:
        return self.special["<pad>"]

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False)) if text else []

    def segments(self, ann: Mapping[str, Any]) -> tuple[list[int], list[list[int]], list[int]]:
        """Token ids of the caption, of the history + question, and of the answer."""
        caption = " ".join([ann.get("caption", ""), ann.get("summary", "")]).strip() if self.use_caption else ""
        turns = list(ann.get("dialog", []))
        recent = turns[-self.max_turns:] if self.max_turns > 0 else []
        history = [text for turn in recent for text in (turn["question"], turn["answer"])]
        history.append(ann["question"])
        return self.encode(caption), [self.encode(t) for t in history], self.encode(ann.get("answer") or "")

    def assemble(self, caption: list[int], history: Sequence[list[int]], answer: list[int]) -> dict[str, torch.Tensor]:
        """Concatenate the segments with their ``<eos>``, token types and answer-only labels."""
        eos, speaker1, speaker2, cap = (self.special[t] for t in ("<eos>", "<speaker1>", "<speaker2>", "<cap>"))
        spoken = [*history, answer]
        input_ids = caption + [eos]
        token_types = [cap] * len(input_ids)
        for i, segment in enumerate(spoken):
            # history alternates question/answer and ends with a question, so the answer is speaker2
            input_ids += segment + [eos]
            token_types += [speaker2 if i % 2 else speaker1] * (len(segment) + 1)
        answer_len = len(answer) + 1
        labels = [IGNORE_INDEX] * (len(input_ids) - answer_len) + input_ids[-answer_len:]
        return {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "token_type_ids": torch.tensor(token_types, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
        }

    def __call__(self, ann: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return self.assemble(*self.segments(ann))

    @classmethod
    def from_config(cls, cfg: DictConfig | None = None) -> GPTDialogueProcessor:
        return cls(max_turns=config_value(cfg, "max_turns", 3), use_caption=config_value(cfg, "use_caption", True),
                   tokenizer=str(config_value(cfg, "tokenizer", "gpt2")))
