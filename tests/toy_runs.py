"""Real runs of the toy plugin, shared by the engine, DeepSpeed, hook and TensorBoard tests: toy data,
run configs, running ``mmrun`` in a subprocess (under torchrun for several processes), reading a
run's outputs, and an independent re-implementation of the toy model's loss."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from .conftest import REPO, TOY_SRC

VENV_BIN = Path(sys.executable).parent
PLUGIN_MODULES = "mm_toy.hooks,mm_toy.lifecycle"
WEIGHTS = [0.5, -1.0, 2.0, 0.3]


def write_split(path: Path, n: int, seed: int, dim: int = 4, nan_at: int | None = None) -> Path:
    """``n`` records ``{"x": [...], "y": w·x}``; ``nan_at`` puts a NaN target in one record."""
    rng = random.Random(seed)
    weights = WEIGHTS + [0.1] * (dim - len(WEIGHTS))
    records = []
    for i in range(n):
        x = [rng.uniform(-1, 1) for _ in range(dim)]
        y = float("nan") if i == nan_at else sum(a * b for a, b in zip(weights, x))
        records.append({"x": x, "y": y})
    path.write_text(json.dumps(records))
    return path


def make_config(tmp_path: Path, splits: dict[str, int] | None = None, model: dict | None = None,
                dim: int = 4, nan_at: int | None = None, **run) -> Path:
    """A run YAML for the toy plugin with its data files under ``tmp_path``."""
    splits = dict(splits or {"train": 64, "val": 16})
    splits.setdefault("val", 8)  # the toy builder's defaults name a val split; give it a file
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    annotations = {}
    for i, (split, n) in enumerate(splits.items()):
        path = write_split(data / f"{split}.json", n, seed=i, dim=dim, nan_at=nan_at if split == "train" else None)
        annotations[split] = {"storage": str(path)}
    run_block = {
        "task": "base", "runner": "runner_base", "lr_sched": "linear_warmup_cosine_lr",
        "init_lr": 0.01, "min_lr": 0.0, "warmup_steps": 2, "max_epoch": 3, "batch_size_train": 8,
        "batch_size_eval": 8, "seed": 42, "output_dir": str(tmp_path / "out"), "log_freq": 1,
        "valid_splits": ["val"], "num_threads": 1, "device": "cpu",
        "progress_bar": False,
    }
    run_block.update(run)
    cfg = {
        "model": {"arch": "toy_regressor", "model_type": "tiny", "in_dim": dim, **(model or {})},
        "datasets": {"toy_regression": {"build_info": {"annotations": annotations}}},
        "run": run_block,
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def toy_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "PYTHONPATH": os.pathsep.join([str(TOY_SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "MM_PLUGIN_MODULES": PLUGIN_MODULES, "MM_DISABLE_PLUGIN_AUTOLOAD": "1",
        "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
    })
    env.update(extra)
    return env


@functools.cache
def mm_command() -> list[str]:
    """``mmrun`` once the CLI exists, else the engine's own module entry point."""
    mmrun = VENV_BIN / "mmrun"
    try:
        has_cli = importlib.util.find_spec("mm_core.cli.main") is not None
    except ModuleNotFoundError:
        has_cli = False
    if mmrun.exists() and has_cli:
        return [str(mmrun)]
    return [sys.executable, "-m", "mm_core.engine.run"]


def torchrun_command(nproc: int) -> list[str]:
    base = [str(VENV_BIN / "torchrun"), "--standalone", f"--nproc_per_node={nproc}"]
    cmd = mm_command()
    if cmd[0].endswith("mmrun"):
        return base + ["--no-python", cmd[0]]
    return base + ["-m", "mm_core.engine.run"]


def start_mm(config: Path, *options: str, env: dict[str, str] | None = None, nproc: int = 1) -> subprocess.Popen:
    """Start ``mmrun --config`` (under torchrun when ``nproc > 1``) in the background."""
    cmd = (torchrun_command(nproc) if nproc > 1 else mm_command()) + ["--config", str(config)]
    if options:
        cmd += ["--options", *options]
    return subprocess.Popen(cmd, env=env or toy_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)


def finish(proc: subprocess.Popen, timeout: float = 180) -> subprocess.CompletedProcess:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_mm(config: Path, *options: str, env: dict[str, str] | None = None, nproc: int = 1,
           timeout: float = 180) -> subprocess.CompletedProcess:
    return finish(start_mm(config, *options, env=env, nproc=nproc), timeout)


# -- reading a run's outputs --------------------------------------------------------------------
def read_events(out: Path, kind: str | None = None) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines if line.strip()]
    return [e for e in events if kind is None or e["type"] == kind]


def checkpoint_dir(out: Path, pointer: str = "latest") -> Path:
    tag = (out / "checkpoints" / pointer).read_text().strip()
    return out / "checkpoints" / tag


def load_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(ckpt / "model.safetensors"))


def toy_mse(weights: dict[str, torch.Tensor], split_file: Path) -> float:
    """The toy regressor's MSE on a split, computed here from raw weights (not via the model)."""
    records = json.loads(split_file.read_text())
    x = torch.tensor([r["x"] for r in records], dtype=torch.float64)
    y = torch.tensor([r["y"] for r in records], dtype=torch.float64)
    w = {k: v.double() for k, v in weights.items()}
    h = x @ w["encoder.weight"].T + w["encoder.bias"]
    h = (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-5)
    h = torch.tanh(h * w["norm.weight"] + w["norm.bias"])
    pred = (h @ w["head.weight"].T + w["head.bias"]).squeeze(-1)
    return float(((pred - y) ** 2).mean())


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
