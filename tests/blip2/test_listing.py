"""Listing the plugin's names imports no torch and no model code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MMRUN = Path(sys.executable).with_name("mmrun")


def run(code_or_args, python: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-c", code_or_args] if python else [str(MMRUN), *code_or_args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def test_registry_listing_is_torch_free():
    code = (
        "import sys, mm_blip2, mm_blip2.hooks\n"
        "from mm_core.registry import get_registry\n"
        "r = get_registry()\n"
        "print(sorted(r.model_types('blip2_feature_extractor')), sorted(r.model_types('blip2_llm')))\n"
        "print(sorted(n for n in r.names('processors') if n.startswith('blip')))\n"
        "print('torch' in sys.modules, 'timm' in sys.modules, 'transformers' in sys.modules)\n"
    )
    result = run(code)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "['coco', 'pretrain', 'tiny'] ['tiny']"
    assert lines[1] == str(sorted(["blip_image_train", "blip2_image_train", "blip_image_eval", "blip2_image_eval",
                                   "blip_caption", "blip_question"]))
    assert lines[2] == "False False False"


def test_mmrun_list_models_shows_archs_and_types():
    if not MMRUN.exists():
        import pytest

        pytest.skip("mmrun is not installed in this environment")
    result = run(["list", "models"], python=False)
    assert result.returncode == 0, result.stderr
    for name in ("blip2_feature_extractor", "blip2_llm", "pretrain", "tiny"):
        assert name in result.stdout
