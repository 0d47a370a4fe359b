"""Lifecycle hooks that mirror a run's numbers to TensorBoard when ``run.tensorboard`` is set.

One writer per process, opened on the first event of a run on rank 0 and closed when the run
ends; events go to ``<run.output_dir>/tensorboard``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mm_core.errors import ConfigError
from mm_core.hookspecs import hookimpl
from mm_core.run_view import RunView

MM_API_VERSION = "2.0"

_writers: dict[Path, Any] = {}


def _enabled(config: Any) -> bool:
    run = config.get("run") if config is not None else None
    return bool(run is not None and run.get("tensorboard", False))


def _writer(run: RunView) -> Any | None:
    """The run's SummaryWriter (rank 0 with ``run.tensorboard``), else ``None``."""
    if not run.is_main or not _enabled(run.config):
        return None
    folder = Path(run.output_dir) / "tensorboard"
    if folder not in _writers:
        from torch.utils.tensorboard import SummaryWriter

        _writers[folder] = SummaryWriter(str(folder))
    return _writers[folder]


def _scalars(writer: Any, prefix: str, values: dict[str, Any], step: int) -> None:
    for key, value in values.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            writer.add_scalar(f"{prefix}/{key}", value, step)


@hookimpl
def register_run_keys() -> dict[str, str]:
    return {"tensorboard": "bool"}


@hookimpl
def config_loaded(config: Any) -> None:
    if not _enabled(config):
        return
    try:
        import tensorboard  # noqa: F401  (SummaryWriter needs it)
    except ImportError as exc:
        raise ConfigError("run.tensorboard is set but the tensorboard package cannot be imported",
                          hint="pip install tensorboard, or set run.tensorboard: false") from exc


@hookimpl
def after_train_step(run: RunView, step: int, metrics: dict[str, float]) -> None:
    writer = _writer(run)
    log_freq = int(run.config.run.get("log_freq", 50) or 1)
    if writer is not None and step % log_freq == 0:
        _scalars(writer, "train", {k: v for k, v in metrics.items() if k != "epoch"}, step)


@hookimpl
def after_evaluation(run: RunView, split: str, epoch: int, metrics: dict[str, float]) -> None:
    writer = _writer(run)
    if writer is not None:
        _scalars(writer, f"eval/{split}", metrics, run.step)


@hookimpl
def checkpoint_saved(run: RunView, path: str, tag: str) -> None:
    writer = _writer(run)
    if writer is not None:
        writer.flush()


@hookimpl
def run_finished(run: RunView, status: str) -> None:
    writer = _writers.pop(Path(run.output_dir) / "tensorboard", None)
    if writer is not None:
        writer.close()
