"""Where a run's numbers go: ``<output_dir>/metrics.jsonl`` (rank 0 only) and a tqdm progress bar
with ETA; the event format is in docs/engine.md, "Metrics"."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from mm_core.base.task import jsonable


def max_memory_mb(device: torch.device) -> float:
    """Peak memory: allocated CUDA memory on GPU, else the process' peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


class MetricsLog:
    """Appends events to ``metrics.jsonl`` and drives the progress bar."""

    def __init__(self, output_dir: Path | None, enabled: bool, progress_bar: bool | None = None,
                 wall_offset: float = 0.0):
        self.enabled = enabled and output_dir is not None
        self.path = Path(output_dir) / "metrics.jsonl" if output_dir is not None else None
        self.start = time.time() - wall_offset
        self._file = open(self.path, "a", encoding="utf-8") if self.enabled else None  # noqa: SIM115
        show_bar = sys.stderr.isatty() if progress_bar is None else progress_bar
        self._show_bar = self.enabled and show_bar
        self._bar = None

    @property
    def wall_time(self) -> float:
        return time.time() - self.start

    def write(self, event: dict[str, Any]) -> None:
        """Append one event (``type`` first), with ``wall_time`` and ``time`` added."""
        if not self.enabled:
            return
        record = {"type": event.pop("type"), **event, "wall_time": round(self.wall_time, 4), "time": time.time()}
        self._file.write(json.dumps(record, default=jsonable) + "\n")
        self._file.flush()

    # progress bar -----------------------------------------------------------------------
    def start_bar(self, total: int, initial: int, desc: str = "train") -> None:
        if not self._show_bar:
            return
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=True)

    def advance(self, n: int = 1, **postfix: Any) -> None:
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix({k: _short(v) for k, v in postfix.items()}, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._file is not None:
            self._file.close()
            self._file = None


def _short(value: Any) -> Any:
    return f"{value:.4g}" if isinstance(value, float) else value
