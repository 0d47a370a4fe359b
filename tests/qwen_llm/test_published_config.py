"""MiniGPT4-Qwen's published instruction-tuning `train.yaml` (its keys and values, unchanged)
passes `mmrun config` and `mmrun --dry-run`."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import mm_env, run_mmrun

pytestmark = pytest.mark.slow  # real runs / several processes: `make test-fast` skips this module

PUBLISHED = Path(__file__).parent / "published" / "minigpt4qwen_train.yaml"


def test_published_train_yaml_is_accepted_unchanged(tmp_path):
    env = mm_env(MM_CACHE_ROOT=str(tmp_path))
    merged = run_mmrun(["config", "--config", str(PUBLISHED)], env)
    assert merged.returncode == 0, merged.stderr
    assert "arch: minigpt4qwen" in merged.stdout and "num_beams: 5" in merged.stdout
    plan = run_mmrun(["--config", str(PUBLISHED), "--dry-run"], env)
    assert plan.returncode == 0, plan.stderr
    assert "model: minigpt4qwen / qwen7b_chat" in plan.stdout
    assert "dataset: minigpt4_instruction" in plan.stdout and "dataset: llava_instruction" in plan.stdout
