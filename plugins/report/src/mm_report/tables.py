"""The report's tables as plain data: a run's config summary and its evaluation metrics, with
the row of the best checkpoint marked."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from mm_report.curves import NOT_METRICS, number
from mm_report.run_dir import RunData

SUMMARY_RUN_KEYS = ("task", "runner", "max_epoch", "max_iters", "batch_size_train", "accum_grad_iters",
                    "lr_sched", "init_lr", "amp", "seed", "train_splits", "valid_splits", "test_splits",
                    "best_metric", "output_dir")


@dataclass
class MetricsTable:
    """Evaluation events as rows; ``best_row`` indexes the best checkpoint's row (or ``None``)."""

    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    best_row: int | None = None
    best_note: str | None = None


def config_summary(run: RunData) -> list[tuple[str, str]]:
    """``(label, value)`` pairs: what was trained, on what, how, and how far it got."""
    cfg, block = run.config, run.run_block()
    model = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    items: list[tuple[str, str]] = []
    if model:
        items.append(("model", f"{model.get('arch', '?')} ({model.get('model_type', 'default type')})"))
    datasets = cfg.get("datasets") if isinstance(cfg.get("datasets"), dict) else {}
    if datasets:
        items.append(("datasets", ", ".join(
            f"{n} ({b['type']})" if isinstance(b, dict) and b.get("type") else str(n) for n, b in datasets.items())))
    items += [(f"run.{k}", _plain(block[k])) for k in SUMMARY_RUN_KEYS if block.get(k) is not None]
    items += progress_summary(run)
    return items


def progress_summary(run: RunData) -> list[tuple[str, str]]:
    """How far the run got: last step and epoch, wall time, when it last logged, checkpoints."""
    items: list[tuple[str, str]] = []
    train = run.of_type("train")
    if train:
        last = train[-1]
        items.append(("last logged step", f"{last.get('step')} (epoch {last.get('epoch')})"))
    if run.events:
        wall = number(run.events[-1].get("wall_time"))
        if wall is not None:
            items.append(("wall time", _duration(wall)))
        stamp = number(run.events[-1].get("time"))
        if stamp is not None:
            ago = _duration(max(0.0, time.time() - stamp))
            items.append(("last event", f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(stamp))} ({ago} ago)"))
    if run.latest:
        items.append(("latest checkpoint", run.latest))
    if run.best:
        value = f", {run.run_block().get('best_metric', 'agg_metrics')} = {run.best.value:.4g}" \
            if run.best.value is not None else ""
        items.append(("best checkpoint", f"{run.best.tag} (step {run.best.step}{value})"))
    return items


def metrics_table(run: RunData) -> MetricsTable:
    """One row per evaluation event, columns split / epoch / step and every metric logged."""
    evals = run.of_type("eval")
    metrics = sorted({k for e in evals for k in e if k not in NOT_METRICS}, key=lambda k: (k != "agg_metrics", k.lower()))
    table = MetricsTable(columns=["split", "epoch", "step", *metrics])
    table.rows = [{c: e.get(c) for c in table.columns} for e in evals]
    table.best_row, table.best_note = _best_row(run, evals)
    return table


def _best_row(run: RunData, evals: list[dict[str, Any]]) -> tuple[int | None, str | None]:
    block = run.run_block()
    valid = [i for i, e in enumerate(evals) if isinstance(e.get("epoch"), int)]  # not the final test rows
    if not valid:
        return None, None
    split = block.get("best_split") or evals[valid[0]].get("split")
    candidates = [i for i in valid if evals[i].get("split") == split]
    if run.best is not None and run.best.step is not None:
        at_step = [i for i in candidates if evals[i].get("step") == run.best.step]
        if at_step:
            return at_step[-1], f"best checkpoint {run.best.tag}"
    metric, mode = block.get("best_metric", "agg_metrics"), block.get("best_mode", "max")
    scored = [i for i in candidates if number(evals[i].get(metric)) is not None]
    if not scored:
        return None, None
    pick = (max if mode == "max" else min)(scored, key=lambda i: evals[i][metric])
    return pick, f"best {metric} so far (no best checkpoint pointer found)"


def _plain(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"
