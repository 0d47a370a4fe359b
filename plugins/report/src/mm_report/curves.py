"""Which curves a report draws, as plain data: one :class:`Figure` per plot, each holding the
:class:`Series` (one per run, loss term or split) it overlays.

Train events give ``loss`` and every ``loss_*`` term, ``lr`` and ``samples_per_sec``; eval
events give one figure per metric with a curve per split. The x axis is the optimizer step;
evaluations done after training (``epoch`` ``"best"`` / ``"last"``) sit at the last step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mm_report.run_dir import RunData

# Event keys that are bookkeeping, not something to plot as an evaluation metric.
NOT_METRICS = {"type", "split", "step", "epoch", "iter", "wall_time", "time", "n"}


@dataclass
class Series:
    """One curve: ``y`` against ``x`` (steps)."""

    label: str
    run: str
    key: str
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    split: str | None = None


@dataclass
class Figure:
    """One plot file: a title, axis labels and the series it overlays."""

    name: str  # file stem, e.g. "loss", "eval_CIDEr"
    title: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    xlabel: str = "step"
    log_y: bool = False


def number(value: Any) -> float | None:
    """A plottable float, or ``None`` (bools, strings such as ``"nan"`` from the log, missing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None


def train_figures(runs: list[RunData]) -> list[Figure]:
    """Loss (total and every term), learning rate and throughput, overlaid across runs."""
    several = len(runs) > 1
    loss = Figure("loss", "training loss", "loss")
    lr = Figure("lr", "learning rate", "lr")
    speed = Figure("samples_per_sec", "throughput", "samples / s")
    for run in runs:
        train = run.of_type("train")
        keys = sorted({k for e in train for k in e if k == "loss" or k.startswith("loss_")},
                      key=lambda k: (k != "loss", k))
        for key in keys:
            loss.series.append(_series(train, key, run.name, key if not several else f"{run.name}: {key}"))
        for figure, key in ((lr, "lr"), (speed, "samples_per_sec")):
            if any(number(e.get(key)) is not None for e in train):
                figure.series.append(_series(train, key, run.name, run.name if several else key))
    loss.log_y = _spans_decades([y for s in loss.series for y in s.y])
    return [f for f in (loss, lr, speed) if f.series]


def eval_figures(runs: list[RunData]) -> list[Figure]:
    """One figure per evaluation metric, a curve per (run, split)."""
    several = len(runs) > 1
    figures: dict[str, Figure] = {}
    for run in runs:
        evals = run.of_type("eval")
        last_step = max((number(e.get("step")) or 0 for e in run.events), default=0)
        metrics = sorted({k for e in evals for k in e if k not in NOT_METRICS and not k.startswith("num_")
                          and number(e.get(k)) is not None}, key=lambda k: (k != "agg_metrics", k.lower()))
        splits = list(dict.fromkeys(str(e.get("split", "?")) for e in evals))
        for metric in metrics:
            figure = figures.setdefault(metric, Figure(f"eval_{_safe(metric)}", f"evaluation: {metric}", metric))
            for split in splits:
                events = [e for e in evals if str(e.get("split", "?")) == split]
                series = _series(events, metric, run.name, f"{run.name}: {split}" if several else split,
                                 default_x=last_step)
                series.split = split
                if series.x:
                    figure.series.append(series)
    return [f for f in figures.values() if f.series]


def _series(events: list[dict[str, Any]], key: str, run: str, label: str, default_x: float = 0.0) -> Series:
    series = Series(label=label, run=run, key=key)
    for event in events:
        y = number(event.get(key))
        if y is None:
            continue
        x = number(event.get("step"))
        series.x.append(default_x if x is None else x)
        series.y.append(y)
    return series


def _spans_decades(values: list[float]) -> bool:
    """Log scale when a positive curve falls by more than two orders of magnitude."""
    if not values or min(values) <= 0:
        return False
    return max(values) / min(values) > 100


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
