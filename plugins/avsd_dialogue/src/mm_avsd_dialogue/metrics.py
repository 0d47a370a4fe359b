"""Scoring generated answers against all their references: BLEU-1..4, METEOR, ROUGE-L and CIDEr,
computed as COCO captioning is (the DSTC7 AVSD evaluation uses the same scorers), with
:mod:`mm_core.caption_metrics`. Without Java, METEOR is left out and the PTB tokenisation is
approximated in Python, with notes saying so."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from mm_core.caption_metrics import score_captions, start_meteor

__all__ = ["score_answers", "start_meteor"]

log = logging.getLogger(__name__)


def score_answers(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]],
                  meteor: bool = True) -> tuple[dict[str, float], list[str]]:
    """Scores of ``predictions[id]`` against all of ``references[id]`` (every id of
    ``predictions``), and notes about anything left out. Scores are in [0, 1] (CIDEr in [0, 10]).
    ``meteor=False`` leaves METEOR out on purpose (it needs a JVM with large tables)."""
    if not predictions:
        return {}, ["no predictions to score"]
    ids = sorted(predictions)
    missing = [i for i in ids if not references.get(i)]
    if missing:
        raise ValueError(f"no reference answers for {missing[:5]}")
    scores = score_captions({i: list(references[i]) for i in ids}, {i: predictions[i] for i in ids},
                            spice=False, meteor=meteor)
    for note in scores.notes:
        log.warning("dialogue metrics: %s", note)
    return scores.metrics, scores.notes
