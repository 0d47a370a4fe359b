"""Evaluating one split: each rank runs ``task.valid_step`` over its shard (or, ``shard`` false, the
whole split); the results are gathered to rank 0, which scores them, then saves them (so tasks can add scores)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from mm_core.engine.data import eval_loader, move_to_device
from mm_core.engine.distributed import DistContext
from mm_core.engine.precision import Precision


@torch.no_grad()
def evaluate_split(task: Any, model: torch.nn.Module, dataset: Dataset, split: str, epoch: int | str,
                   ctx: DistContext, precision: Precision, batch_size: int, num_workers: int = 0,
                   output_dir: Path | None = None, save_results: bool = True,
                   report_metric: bool = True, shard: bool = True) -> dict[str, float] | None:
    """Metrics of ``split`` on rank 0 (``None`` on other ranks); with ``report_metric`` false
    (LAVIS' ``run.report_metric``: splits without references) the results are saved unscored."""
    was_training = model.training
    model.eval()
    try:
        if hasattr(task, "before_evaluation"):
            task.before_evaluation(model=model, dataset=dataset)
        results: list[Any] = []
        rank, world_size = (ctx.rank, ctx.world_size) if shard else (0, 1)
        for samples in eval_loader(dataset, batch_size, rank, world_size, num_workers):
            samples = move_to_device(samples, ctx.device)
            with precision.autocast():
                results.extend(task.valid_step(model=model, samples=samples))
    finally:
        model.train(was_training)
    gathered = ctx.gather_to_main(results) if shard else [results]
    if not ctx.is_main:
        return None
    merged = [r for part in gathered for r in part]
    try:
        metrics = (task.after_evaluation(results=merged, split=split, epoch=epoch, output_dir=output_dir)
                   if report_metric else {"agg_metrics": 0.0})
    finally:  # results are saved even when scoring fails: they are what one looks at then
        if save_results and output_dir is not None and hasattr(task, "save_results"):
            task.save_results(merged, output_dir, split.replace("/", "_"), epoch)
    return {k: _scalar(v) for k, v in (metrics or {}).items()}


def _scalar(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    return value
