"""Helpers for the DeepSpeed runner tests: toy run configs, running ``mmrun`` (or ``torchrun
... mmrun``) in a subprocess, reading a run's metrics and checkpoints.

DeepSpeed runs on the CPU accelerator with gloo; the runner passes a torch AdamW to
``deepspeed.initialize``, so no C++ op is compiled. Modules that train skip themselves when
DeepSpeed (mm-plugin-deepspeed and its ``deepspeed`` dependency) is not installed. The toy
environment registers ``mm_deepspeed.hooks`` beside the toy plugin: plugin autoloading is off
there, and the ``deepspeed_runner`` is that plugin's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ..toy_runs import (  # noqa: F401 (shared with the engine tests)
    PLUGIN_MODULES,
    REPO,
    TOY_SRC,
    checkpoint_dir,
    load_weights,
    read_events,
    toy_mse,
    write_split,
)
from ..toy_runs import toy_env as engine_toy_env

BIN = Path(sys.executable).parent


def make_config(folder: Path, ds: dict | None = None, runner: str = "deepspeed_runner",
                model: dict | None = None, **run) -> Path:
    """A toy run YAML under ``folder`` (data in ``folder/data``, outputs in ``folder/out``)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data"
    data.mkdir(exist_ok=True)
    annotations = {split: {"storage": str(write_split(data / f"{split}.json", n, seed))}
                   for seed, (split, n) in enumerate((("train", 32), ("val", 16)))}
    block = {
        "task": "base", "runner": runner, "lr_sched": "linear_warmup_cosine_lr", "init_lr": 0.01,
        "min_lr": 0.0, "warmup_steps": 2, "max_epoch": 2, "batch_size_train": 4, "batch_size_eval": 8,
        "seed": 7, "output_dir": str(folder / "out"), "log_freq": 1, "valid_splits": ["val"],
        "num_threads": 1, "device": "cpu", "progress_bar": False,
    }
    block.update(run)
    if runner == "deepspeed_runner":
        block["deepspeed_config"] = ds if ds is not None else {"zero_optimization": {"stage": 1}}
    cfg = {
        "model": {"arch": "toy_regressor", "model_type": "tiny", **(model or {})},
        "datasets": {"toy_regression": {"build_info": {"annotations": annotations}}},
        "run": block,
    }
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def toy_env(**extra: str) -> dict[str, str]:
    """The engine tests' toy environment plus the DeepSpeed plugin, with DeepSpeed on the CPU."""
    return engine_toy_env(MM_PLUGIN_MODULES=f"{PLUGIN_MODULES},mm_deepspeed.hooks", DS_ACCELERATOR="cpu",
                          PYTHONUNBUFFERED="1", **extra)


def run_mm(config: Path, *options: str, nproc: int = 1, env: dict[str, str] | None = None,
           timeout: float = 180) -> subprocess.CompletedProcess:
    """``mmrun --config`` (``torchrun --no-python mmrun`` for several processes)."""
    cmd = [str(BIN / "mmrun")]
    if nproc > 1:
        cmd = [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={nproc}", "--no-python"] + cmd
    cmd += ["--config", str(config)]
    if options:
        cmd += ["--options", *options]
    return subprocess.run(cmd, env=env or toy_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def in_process():
    """``run(config, *options) -> exit code``: ``run_config`` in this process (DeepSpeed and torch
    are imported once for all such runs, which keeps the folder fast on busy machines)."""
    saved = {k: os.environ.get(k) for k in ("MM_PLUGIN_MODULES", "MM_DISABLE_PLUGIN_AUTOLOAD", "DS_ACCELERATOR")}
    os.environ.update({k: v for k, v in toy_env().items() if k in saved})
    sys.path.insert(0, str(TOY_SRC))
    from mm_core.config.loader import load_config
    from mm_core.engine.run import run_config
    from mm_core.plugins import reset_plugin_host

    def run(config: Path, *options: str) -> int:
        reset_plugin_host()
        return run_config(load_config(config, list(options)))

    yield run
    reset_plugin_host()
    sys.path.remove(str(TOY_SRC))
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value



def train_losses(out: Path) -> list[float]:
    return [e["loss"] for e in read_events(out, "train")]
