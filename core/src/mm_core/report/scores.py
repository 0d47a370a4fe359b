"""Per-sample scores for ranking a gallery, best and worst first.

In order of preference:

1. a numeric ``score`` in each result record (a task that knows its own per-sample metric);
2. the task's scores file ``result/<split>_epoch<epoch>_scores.json`` with
   ``{"per_image": {"CIDEr": {"<image_id>": value, ...}}}`` (what the captioning task writes);
3. computed here from the predictions and the references: CIDEr-D per image with
   pycocoevalcap for captions (over the samples of the file, so the document frequencies are
   the split's), or the VQA accuracy formula ``min(1, matches / 3)`` for answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mm_core.caption_metrics import simple_tokenize


@dataclass
class Scored:
    """Scores by sample key, what they measure and where they came from."""

    metric: str | None
    values: dict[str, float]
    source: str


def from_records(records: list[dict[str, Any]], keys: list[str]) -> Scored | None:
    values = {k: float(r["score"]) for k, r in zip(keys, records)
              if isinstance(r.get("score"), (int, float)) and not isinstance(r.get("score"), bool)}
    if not values:
        return None
    name = next((str(r["score_name"]) for r in records if r.get("score_name")), "score")
    return Scored(name, values, "saved with the results")


def from_scores_file(payload: Any) -> Scored | None:
    """Per-sample values of a task's ``_scores.json`` (CIDEr when there, else its first metric)."""
    per = payload.get("per_image") or payload.get("per_sample") if isinstance(payload, dict) else None
    if not isinstance(per, dict) or not per:
        return None
    metric = "CIDEr" if "CIDEr" in per else next(iter(per))
    table = per[metric]
    if not isinstance(table, dict):
        return None
    values = {str(k): float(v) for k, v in table.items() if isinstance(v, (int, float))}
    return Scored(metric, values, "the task's scores file") if values else None


def computed_cider(predictions: dict[str, str], references: dict[str, list[str]]) -> Scored | None:
    """CIDEr-D per sample with pycocoevalcap (lower-cased, punctuation dropped: no Java tokenizer)."""
    keys = [k for k in predictions if references.get(k)]
    if not keys:
        return None
    try:
        from pycocoevalcap.cider.cider import Cider
    except ImportError:
        return None
    gts = {k: [simple_tokenize(r) for r in references[k]] for k in keys}
    res = {k: [simple_tokenize(predictions[k])] for k in keys}
    _, per_sample = Cider().compute_score(gts, res)
    return Scored("CIDEr", {k: float(v) for k, v in zip(keys, per_sample)},
                  "computed by the report from the references (pycocoevalcap CIDEr-D, simple tokenisation)")


def computed_accuracy(predictions: dict[str, str], references: dict[str, list[str]]) -> Scored | None:
    """VQA accuracy per question: ``min(1, #references equal to the answer / 3)``."""
    values = {}
    for key, answer in predictions.items():
        refs = references.get(key)
        if refs:
            wanted = simple_tokenize(answer)
            values[key] = min(1.0, sum(simple_tokenize(r) == wanted for r in refs) / 3.0)
    return Scored("accuracy", values, "computed by the report (VQA accuracy formula, simple normalisation)") \
        if values else None
