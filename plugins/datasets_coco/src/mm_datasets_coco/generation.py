"""How the COCO tasks ask a model for text: ``model.generate(samples, num_beams=...,
max_new_tokens=..., min_length=...) -> list[str]`` (the contract BLIP-2 -> LLM models follow)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mm_core.errors import ConfigError


@dataclass(frozen=True)
class GenerationSettings:
    """The ``run`` keys LAVIS keeps for generation."""

    num_beams: int = 5
    max_len: int = 30
    min_len: int = 1
    prompt: str | None = None
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0

    @classmethod
    def from_run(cls, run: Any, **defaults: Any) -> GenerationSettings:
        values = dict(defaults)
        for key in ("num_beams", "max_len", "min_len", "prompt", "repetition_penalty", "length_penalty"):
            if run is not None and run.get(key) is not None:
                values[key] = run.get(key)
        settings = cls(**values)
        if settings.num_beams < 1 or settings.max_len < 1 or settings.min_len < 0 or settings.min_len > settings.max_len:
            raise ConfigError(
                f"generation settings out of range: num_beams={settings.num_beams}, max_len={settings.max_len}, "
                f"min_len={settings.min_len}",
                hint="need num_beams >= 1, max_len >= 1 and 0 <= min_len <= max_len",
            )
        return settings


def generate_text(model: torch.nn.Module, samples: dict[str, Any], settings: GenerationSettings) -> list[str]:
    """Call the (unwrapped) model's ``generate`` without gradients and check what it returns."""
    unwrapped = getattr(model, "module", model)  # DDP
    if not hasattr(unwrapped, "generate"):
        raise ConfigError(
            f"{type(unwrapped).__name__} has no generate(samples, ...) method, which this task needs",
            hint="use a model that generates text (e.g. minigpt4qwen), or another run.task",
        )
    kwargs: dict[str, Any] = {"num_beams": settings.num_beams, "max_new_tokens": settings.max_len,
                              "min_length": settings.min_len}
    if settings.repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = settings.repetition_penalty
    if settings.length_penalty != 1.0:
        kwargs["length_penalty"] = settings.length_penalty
    with torch.no_grad():
        texts = unwrapped.generate(samples, **kwargs)
    texts = list(texts)
    expected = _batch_size(samples)
    if expected is not None and len(texts) != expected:
        raise RuntimeError(f"{type(unwrapped).__name__}.generate returned {len(texts)} texts for a batch of {expected}")
    return [str(t).strip() for t in texts]


def _batch_size(samples: dict[str, Any]) -> int | None:
    image = samples.get("image")
    if isinstance(image, torch.Tensor):
        return int(image.shape[0])
    ids = samples.get("instance_id")
    return len(ids) if isinstance(ids, list) else None
