"""Saved evaluation results (``result/<split>_epoch<epoch>.json``) and the keys that let a report
show them without knowing the task (docs/plugins.md, "Results a report can show")."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Keys of a result record that identify its sample, in order of preference.
ID_KEYS: tuple[str, ...] = ("question_id", "image_id", "instance_id", "sample_id")
#: Keys of a result record that may hold the model's output, in order of preference.
OUTPUT_KEYS: tuple[str, ...] = ("caption", "answer", "prediction", "output", "text")
#: The keys that say how a sample is shown.
DISPLAY_KEYS: tuple[str, ...] = ("image", "images_root", "prompt", "references", "score", "score_name")


def display_fields(image: str | None = None, images_root: str | Path | None = None, prompt: str | None = None,
                   references: Sequence[str] | None = None, score: float | None = None,
                   score_name: str | None = None) -> dict[str, Any]:
    """The display keys of a result record, those given only (``images_root`` only with an ``image``)."""
    fields: dict[str, Any] = {"prompt": prompt, "score_name": score_name}
    if image is not None:
        fields["image"] = str(image)
        fields["images_root"] = str(images_root) if images_root is not None else None
    if references is not None:
        fields["references"] = [str(r) for r in references]
    if score is not None:
        fields["score"] = float(score)
    return {k: v for k, v in fields.items() if v is not None}
