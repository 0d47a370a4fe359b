"""Reading a run directory as it is on disk, finished or not.

A run directory (``run.output_dir``) holds ``config.yaml`` (the merged config),
``metrics.jsonl`` (one event per line, see :mod:`mm_core.engine.metrics`),
``checkpoints/`` with ``latest`` / ``best`` pointer files and ``result/`` with the tasks'
saved results (``<split>_epoch<epoch>.json``, see :meth:`mm_core.base.task.BaseTask.save_results`).
Only rank 0 writes these files, so DDP and DeepSpeed runs look exactly like single-process runs.

Nothing here raises for a run that is still being written or was killed: a truncated last
line, a result file caught mid-write or a missing config become :attr:`RunData.notes`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_core.errors import DataError

# Companions a task writes beside its results (``val_epoch0_scores.json``) have an underscore after the epoch.
RESULT_NAME = re.compile(r"^(?P<split>.+)_epoch(?P<epoch>[^_]+)\.json$")


@dataclass
class ResultFile:
    """One saved evaluation result: ``result/<split>_epoch<epoch>.json``."""

    path: Path
    split: str  # the label as written in the file name ("val", or "coco_caption_val" for several datasets)
    epoch: str  # "0", "1", ..., "best", "last", "eval"

    @property
    def mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0


@dataclass
class BestCheckpoint:
    """What ``checkpoints/best`` points at."""

    tag: str
    step: int | None = None
    epoch: int | None = None
    value: float | None = None


@dataclass
class RunData:
    """Everything a report needs from one run directory."""

    path: Path
    name: str
    config: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    best: BestCheckpoint | None = None
    latest: str | None = None
    results: list[ResultFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        """Events whose ``type`` is ``kind`` (``train`` / ``eval``), in file order."""
        return [e for e in self.events if e.get("type") == kind]

    def run_block(self) -> dict[str, Any]:
        run = self.config.get("run")
        return run if isinstance(run, dict) else {}


def read_run(path: str | Path, name: str | None = None) -> RunData:
    """Read ``path``; raises :class:`DataError` only when it is not a run directory at all."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"run directory {root} does not exist",
                        hint="pass the run's run.output_dir (the folder holding metrics.jsonl and config.yaml)")
    if not (root / "metrics.jsonl").is_file() and not (root / "config.yaml").is_file():
        raise DataError(f"{root} holds neither metrics.jsonl nor config.yaml, so it is not an mm run directory",
                        hint="pass the run's run.output_dir")
    run = RunData(path=root, name=name or root.resolve().name)
    run.config = read_config(root / "config.yaml", run.notes)
    run.events = read_events(root / "metrics.jsonl", run.notes)
    run.best, run.latest = read_checkpoints(root / "checkpoints", run.notes)
    run.results = find_results(root / "result")
    return run


def read_config(path: Path, notes: list[str]) -> dict[str, Any]:
    """The merged config as plain data (``{}`` with a note when absent or unreadable)."""
    import yaml

    if not path.is_file():
        notes.append(f"{path.name} is missing: the config summary is empty")
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        notes.append(f"{path.name} could not be read ({type(exc).__name__}): the config summary is empty")
        return {}
    return data if isinstance(data, dict) else {}


def read_events(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """Events of ``metrics.jsonl``; lines that are not JSON objects are skipped with a note.

    A run killed while writing leaves a partial last line; a run still going may be mid-line
    when we read. Either way that line is skipped, and the rest of the file is used.
    """
    if not path.is_file():
        notes.append("metrics.jsonl is missing: no curves and no metrics table")
        return []
    try:
        raw = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        notes.append(f"metrics.jsonl could not be read: {exc}")
        return []
    lines = raw.split("\n")
    events, bad = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            event = None
        if isinstance(event, dict):
            events.append(event)
        else:
            bad.append(number)
    last_line = max((i for i, line in enumerate(lines, start=1) if line.strip()), default=0)
    if bad == [last_line] and not raw.endswith("\n"):
        notes.append(f"metrics.jsonl: the last line ({last_line}) is incomplete (the run was stopped while "
                     "writing it, or is still writing) and was skipped")
    elif bad:
        shown = ", ".join(str(n) for n in bad[:10]) + (" ..." if len(bad) > 10 else "")
        notes.append(f"metrics.jsonl: {len(bad)} line(s) are not JSON objects and were skipped (line {shown})")
    return events


def read_checkpoints(folder: Path, notes: list[str]) -> tuple[BestCheckpoint | None, str | None]:
    """The ``best`` checkpoint (tag, step, epoch, value) and the ``latest`` tag, when present."""
    latest = _pointer(folder / "latest")
    tag = _pointer(folder / "best")
    if tag is None:
        return None, latest
    best = BestCheckpoint(tag=tag, step=_step_of_tag(tag))
    meta_path = folder / tag / "meta.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            best.step = int(meta.get("step", best.step)) if meta.get("step") is not None else best.step
            best.value = float(meta["best_value"]) if meta.get("best_value") is not None else None
        except (OSError, ValueError, TypeError):
            notes.append(f"checkpoints/{tag}/meta.json could not be read; the best step comes from the tag")
    return best, latest


def find_results(folder: Path) -> list[ResultFile]:
    """Saved results under ``result/`` (``<split>_epoch<epoch>.json``; other files are skipped)."""
    if not folder.is_dir():
        return []
    found = (RESULT_NAME.match(path.name) for path in sorted(folder.glob("*.json")))
    return [ResultFile(path=folder / m.string, split=m["split"], epoch=m["epoch"]) for m in found if m]


def read_json(path: Path, notes: list[str], what: str) -> Any:
    """A JSON file, or ``None`` with a note (a result file may be caught mid-write)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        notes.append(f"{what} {path.name} could not be read ({type(exc).__name__}; still being written?) "
                     "and was skipped")
        return None


def _pointer(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text or None


def _step_of_tag(tag: str) -> int | None:
    match = re.search(r"(\d+)$", tag)
    return int(match.group(1)) if match else None
