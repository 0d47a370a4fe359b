"""The hook specs as a documented contract: every spec has a docstring and a test."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from conftest import mm_env, run_mmrun
from mm_core import hookspecs
from mm_core.hookspecs import hookimpl
from mm_core.plugins import plugin_registered
from mm_core.registry import get_registry

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


class _TaskAndCommand:
    @hookimpl
    def register_tasks(self):
        return {"toy_generate": {"target": "mm_core.base.task:BaseTask", "run_keys": {"num_beams": "int"}}}

    @hookimpl
    def register_commands(self):
        return {"hello": {"target": "mm_toy.cli:hello", "help": "say hello"}}

    @hookimpl
    def register_llms(self):
        return {"toy_llm": "mm_core.base.llm:BaseLLM"}


def test_register_tasks_run_keys_are_accepted_by_validation(toy_plugin, tmp_path):
    from mm_core.config.loader import load_config
    from mm_core.errors import ConfigError

    path = tmp_path / "run.yaml"
    path.write_text("run:\n  task: toy_generate\n  num_beams: 3\n")
    with plugin_registered(_TaskAndCommand(), name="extras"):
        assert load_config(path).config.run.num_beams == 3
        assert "toy_llm" in get_registry().names("llms")
    path.write_text("run:\n  task: base\n  num_beams: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'run.num_beams'"):
        load_config(path)


def test_register_commands_adds_an_mmrun_subcommand(tmp_path):
    package = tmp_path / "mm_hello"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "hooks.py").write_text(
        "from mm_core.hookspecs import hookimpl\n"
        "@hookimpl\n"
        "def register_commands():\n"
        "    return {'hello': {'target': 'mm_hello.hooks:hello', 'help': 'greet someone'}}\n"
        "def hello(argv):\n"
        "    print('hello', *argv)\n"
        "    return 3\n"
    )
    env = mm_env([tmp_path], MM_PLUGIN_MODULES="mm_hello.hooks")
    result = run_mmrun(["hello", "world"], env)
    assert result.returncode == 3 and result.stdout.strip() == "hello world"
    assert "greet someone" in run_mmrun(["--help"], env).stdout
    unknown = run_mmrun(["helo"], env)
    assert unknown.returncode == 2 and "did you mean 'hello'" in unknown.stderr
