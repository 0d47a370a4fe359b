"""Fixtures of the blip2 tests: offline settings and the ``tiny_gpt2`` test LLM plugin."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the test modules import lavis_reference and blip2_testllm from here
    sys.path.insert(0, str(HERE))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def test_llm_plugin():
    """Registers the ``tiny_gpt2`` backend (tests/blip2/blip2_testllm.py) for one test."""
    import blip2_testllm

    from mm_core.plugins import plugin_registered

    with plugin_registered(blip2_testllm, name="blip2-test-llm") as info:
        assert info.ok, info.error
        yield info
