"""What a registered metric returns (see :func:`mm_core.hookspecs.register_metrics`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class MetricScores:
    """Scores of predictions against references. ``metrics``: corpus values by name (e.g. ``Bleu_4``, ``CIDEr``);
    ``per_sample``: metric name -> sample id -> value, for the metrics that score each sample on its own (a report
    ranks its gallery by them); ``notes``: what was left out and why (e.g. METEOR without Java)."""

    metrics: dict[str, float] = field(default_factory=dict)
    per_sample: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
