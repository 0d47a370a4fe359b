"""The hook specs as a documented contract: every spec has a docstring with an example, and a
real test plugin's implementation of it is called by a real ``mmrun`` run (not a name grep)."""

from __future__ import annotations

import inspect
import json
import subprocess

import pytest

from mm_core import hookspecs

from ..toy_runs import PLUGIN_MODULES, make_config, mm_command, toy_env

SPECS = sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "mm_spec"))


def test_there_are_registration_and_lifecycle_hooks():
    assert set(hookspecs.REGISTRATION_HOOKS.values()) <= set(SPECS)
    assert {"config_loaded", "after_train_step", "after_evaluation", "checkpoint_saved", "run_finished"} <= set(SPECS)


@pytest.mark.parametrize("name", SPECS)
def test_every_hook_spec_has_a_docstring_with_an_example(name):
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    assert len(doc) > 40, f"hook spec {name} needs a docstring that explains its contract"
    assert "Example::" in doc and "@hookimpl" in doc and f"def {name}(" in doc, f"hook spec {name} needs an example"


def test_every_hook_is_called_on_a_real_test_plugin_during_a_run(tmp_path):
    config = make_config(tmp_path, max_epoch=2, ckpt_freq=1, toy_note="every hook")
    events_file = tmp_path / "events.jsonl"
    env = toy_env(MM_TOY_EVENTS=str(events_file), MM_PLUGIN_MODULES=PLUGIN_MODULES + ",mm_toy.extras")
    result = subprocess.run(mm_command() + ["--config", str(config)], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    called = {json.loads(line)["hook"] for line in events_file.read_text().splitlines()}
    assert called == set(SPECS), f"never called: {sorted(set(SPECS) - called)}; unknown: {sorted(called - set(SPECS))}"
