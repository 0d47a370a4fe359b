"""Scoring generated answers against all their references: BLEU-1..4, METEOR, ROUGE-L and CIDEr,
computed as COCO captioning is (the DSTC7 AVSD evaluation uses the same scorers) by the metric
``coco_caption``, reached by name through the registry (mm-plugin-caption-metrics provides it).
Without Java, METEOR is left out and the PTB tokenisation is approximated in Python, with notes
saying so."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from mm_core.base.metric import MetricScores

__all__ = ["score_answers", "start_meteor"]

log = logging.getLogger(__name__)

METRIC = "coco_caption"


def caption_metric() -> Any:
    """The registered ``coco_caption`` metric (the registry's error names what to install)."""
    from mm_core.registry import get_registry

    return get_registry().resolve("metrics", METRIC)


def start_meteor() -> bool:
    """Start the metric's METEOR scorer early, when it has one to start; whether it runs."""
    warm_up = getattr(caption_metric(), "warm_up", None)
    return bool(warm_up()) if callable(warm_up) else False


def score_answers(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]],
                  meteor: bool = True) -> MetricScores:
    """Scores of ``predictions[id]`` against all of ``references[id]`` (every id of
    ``predictions``): corpus ``metrics`` in [0, 1] (CIDEr in [0, 10]), ``per_sample["CIDEr"]`` and
    notes about anything left out. ``meteor=False`` leaves METEOR out on purpose (it needs a JVM
    with large tables)."""
    if not predictions:
        return MetricScores(notes=["no predictions to score"])
    ids = sorted(predictions)
    missing = [i for i in ids if not references.get(i)]
    if missing:
        raise ValueError(f"no reference answers for {missing[:5]}")
    scores = caption_metric()({i: predictions[i] for i in ids}, {i: list(references[i]) for i in ids},
                              spice=False, meteor=meteor)
    for note in scores.notes:
        log.warning("dialogue metrics: %s", note)
    return scores
