"""The hook specs as a documented contract: every spec has a docstring and a test."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from mm_core import hookspecs

TESTS = Path(__file__).resolve().parents[1]
SPECS = sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "mm_spec"))


def test_there_are_registration_and_lifecycle_hooks():
    assert set(hookspecs.REGISTRATION_HOOKS.values()) <= set(SPECS)
    assert {"config_loaded", "after_train_step", "after_evaluation", "checkpoint_saved", "run_finished"} <= set(SPECS)


@pytest.mark.parametrize("name", SPECS)
def test_every_hook_spec_has_a_docstring_and_a_test(name):
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    assert len(doc) > 40, f"hook spec {name} needs a docstring that explains its contract"
    mentions = [p for p in TESTS.rglob("*.py") if p.name != Path(__file__).name and name in p.read_text()]
    assert mentions, f"no test exercises hook {name}"
