"""Tiny configs built in code, and real training runs through ``mm_core.engine``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_core.config.loader import LoadedConfig, load_config


def make_config(model: str | None = None, model_type: str = "tiny", datasets: dict[str, Any] | None = None,
                run: dict[str, Any] | None = None, model_options: dict[str, Any] | None = None,
                options: list[str] | tuple[str, ...] = ()) -> LoadedConfig:
    """A merged, validated config for ``model``/``model_type`` on ``datasets`` (names -> blocks). ``run`` defaults
    to a short single-process CPU run of the ``base`` task with a constant lr."""
    user: dict[str, Any] = {}
    if model is not None:
        user["model"] = {"arch": model, "model_type": model_type, **(model_options or {})}
    if datasets:
        user["datasets"] = {name: dict(block or {}) for name, block in datasets.items()}
    user["run"] = {"task": "base", "lr_sched": "constant_lr", "init_lr": 1e-3, "max_epoch": 1,
                   "batch_size_train": 2, "batch_size_eval": 2, "num_workers": 0, "seed": 0,
                   "device": "cpu", **(run or {})}
    return load_config(user, options)


@dataclass
class RunResult:
    """What a run left in its output directory."""

    output_dir: Path
    exit_code: int
    events: list[dict[str, Any]] = field(default_factory=list)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        """Events of ``metrics.jsonl`` whose ``type`` is ``kind`` (``train`` / ``eval``)."""
        return [e for e in self.events if e.get("type") == kind]


def run_training(loaded: LoadedConfig, output_dir: str | Path, **run_overrides: Any) -> RunResult:
    """Train (and evaluate, as the config says) in this process with the real runner."""
    from omegaconf import OmegaConf

    from mm_core.engine.run import run_config

    OmegaConf.update(loaded.config, "run.output_dir", str(output_dir), force_add=True)
    for key, value in run_overrides.items():
        OmegaConf.update(loaded.config, f"run.{key}", value, force_add=True)
    code = int(run_config(loaded) or 0)
    return RunResult(Path(output_dir), code, read_metrics(Path(output_dir) / "metrics.jsonl"))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Events of a ``metrics.jsonl`` (a truncated last line is skipped)."""
    events = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events
