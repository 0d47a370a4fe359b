"""Shared test helpers: offline environment, running `mmrun` in a subprocess, the toy plugin."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOY_SRC = REPO / "tests" / "plugins" / "mm_toy" / "src"
TOY_PROJECT = TOY_SRC.parent
BIN = Path(sys.executable).parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")


def mm_env(extra_paths: list[Path] | tuple = (), toy: bool = False, **overrides: str) -> dict[str, str]:
    """Environment for a subprocess `mmrun`: offline, one thread, optionally the toy plugin."""
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    paths = [str(p) for p in extra_paths]
    if toy:
        paths.append(str(TOY_SRC))
        env["MM_PLUGIN_MODULES"] = "mm_toy.hooks"
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(overrides)
    return env


def run_mmrun(args: list[str], env: dict[str, str] | None = None, timeout: float = 300,
              cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `mmrun ARGS` from the test environment's bin folder; returns the completed process."""
    return subprocess.run([str(BIN / "mmrun"), *args], env=env or mm_env(), capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def write_toy_data(root: Path, n_train: int = 64, n_val: int = 16, dim: int = 4, seed: int = 0) -> Path:
    """Linear-regression records y = w.x + noise as `toy/{train,val,test}.json` under ``root``."""
    rng = random.Random(seed)
    weights = [rng.uniform(-1, 1) for _ in range(dim)]
    folder = root / "toy"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("val", n_val), ("test", n_val)):
        records = []
        for _ in range(n):
            x = [rng.uniform(-1, 1) for _ in range(dim)]
            y = sum(w * v for w, v in zip(weights, x)) + rng.gauss(0, 0.01)
            records.append({"x": x, "y": y})
        (folder / f"{split}.json").write_text(json.dumps(records))
    return root


@pytest.fixture
def toy_plugin():
    """The toy plugin registered in-process for one test."""
    sys.path.insert(0, str(TOY_SRC))
    import mm_toy.hooks
    from mm_core.plugins import plugin_registered

    with plugin_registered(mm_toy.hooks, name="mm_toy.hooks") as info:
        yield info
    sys.path.remove(str(TOY_SRC))


@pytest.fixture
def toy_data(tmp_path: Path) -> Path:
    return write_toy_data(tmp_path / "cache")
