"""Fixtures of the qwen_llm tests: the shipped tiny tokenizer and the tiny Qwen2 backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_dir():
    from mm_qwen_llm.tiny import shipped_tiny_dir

    return shipped_tiny_dir()


@pytest.fixture(scope="session")
def tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_dir))


@pytest.fixture(scope="session")
def tiny_llm():
    from mm_qwen_llm.qwen import QwenLLM

    return QwenLLM.from_config({"model": "mm_qwen_llm:assets/tiny_qwen2", "random_init": True}).eval()


# -- running the example with mmrun ---------------------------------------------------------------
REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "minigpt4qwen_tiny.yaml"
MMRUN = Path(sys.executable).parent / "mmrun"


def mmrun(args: list[str], cache: Path, stdin: str | None = None, timeout: float = 400) -> subprocess.CompletedProcess:
    """``mmrun ARGS`` offline, one thread, data under ``cache``; fails the test on a non-zero exit."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               MM_CACHE_ROOT=str(cache), PYTHONUNBUFFERED="1")
    done = subprocess.run([str(MMRUN), *args], env=env, input=stdin, capture_output=True, text=True,
                          timeout=timeout, cwd=str(cache))
    assert done.returncode == 0, f"mmrun {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def train_losses(output_dir: Path) -> dict[int, float]:
    """step -> training loss from a run's metrics.jsonl."""
    records = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in records if r["type"] == "train"}


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("qwen_cache")


@pytest.fixture(scope="session")
def trained_run(cache_root):
    """The example trained for 3 epochs (8 steps each): the output directory."""
    out = cache_root / "run_example"
    mmrun(["--config", str(EXAMPLE), "--options", f"run.output_dir={out}", "run.max_epoch=3"], cache_root)
    return out


@pytest.fixture(scope="session")
def lora_run(cache_root):
    """The example with a frozen LLM and LoRA adapters, one epoch."""
    out = cache_root / "run_lora"
    mmrun(["--config", str(EXAMPLE), "--options", f"run.output_dir={out}", "run.max_epoch=1",
           "model.freeze_llm=true", "model.get_lora=true", "run.init_lr=1e-2"], cache_root)
    return out
