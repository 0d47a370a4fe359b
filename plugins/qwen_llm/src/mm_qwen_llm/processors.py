"""``base_instruction``: tidy an instruction's text and cap its length in words."""

from __future__ import annotations

import re
from typing import Any

from omegaconf import DictConfig

from mm_core.base.llm import IMAGE_MARK
from mm_core.base.model import config_value
from mm_core.base.processor import BaseProcessor

_SPACES = re.compile(r"[ \t]+")


class BaseInstructionProcessor(BaseProcessor):
    """Collapses runs of spaces, strips the ends and keeps the first ``max_words`` words.

    Image marks (``<ImageHere>``, also inside ``<Img>...</Img>``) never count as words and are
    never cut, so truncation cannot drop an image. Lists (multi-turn instructions) are
    processed item by item.
    """

    def __init__(self, max_words: int = 50) -> None:
        super().__init__()
        self.max_words = int(max_words)

    def __call__(self, instruction: Any) -> Any:
        if isinstance(instruction, (list, tuple)):
            return [self(item) for item in instruction]
        return self.clean(str(instruction))

    def clean(self, text: str) -> str:
        words = 0
        lines = []
        for line in text.strip().splitlines():
            kept = []
            for word in _SPACES.sub(" ", line).strip().split(" "):
                if IMAGE_MARK in word:
                    kept.append(word)
                elif word and words < self.max_words:
                    kept.append(word)
                    words += 1
            if kept:
                lines.append(" ".join(kept))
        return "\n".join(lines)

    @classmethod
    def from_config(cls, cfg: DictConfig | None = None) -> BaseInstructionProcessor:
        return cls(max_words=int(config_value(cfg, "max_words", 50)))
