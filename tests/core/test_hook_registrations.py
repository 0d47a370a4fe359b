"""Registration hooks that the toy plugin does not use: tasks with run keys, LLM backends and
mmrun sub-commands."""

from __future__ import annotations

import pytest

from mm_core.hookspecs import hookimpl
from mm_core.plugins import plugin_registered
from mm_core.registry import get_registry

from ..conftest import mm_env, run_mmrun


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


class _EngineExtensions:
    """A plugin adding an lr schedule and a runner, as a third party would."""

    @hookimpl
    def register_lr_schedulers(self):
        return {"halving_lr": "mm_toy.extensions:HalvingLR"}

    @hookimpl
    def register_runners(self):
        return {"counting_runner": {"target": "mm_toy.extensions:CountingRunner",
                                    "run_keys": {"count_label": "str"}}}


def test_plugin_lr_scheduler_and_runner_drive_a_run(toy_plugin, toy_data, tmp_path, monkeypatch):
    from mm_core.testing import make_config, run_training

    monkeypatch.setenv("MM_CACHE_ROOT", str(toy_data))
    with plugin_registered(_EngineExtensions(), name="engine_extensions"):
        loaded = make_config("toy_regressor", datasets={"toy_regression": {}},
                             run={"lr_sched": "halving_lr", "runner": "counting_runner", "count_label": "x",
                                  "init_lr": 0.08, "max_epoch": 1, "batch_size_train": 16, "log_freq": 1})
        result = run_training(loaded, tmp_path / "out")
    assert result.exit_code == 0
    lrs = [event["lr"] for event in result.of_type("train")]
    assert lrs == pytest.approx([0.08 * 0.5**step for step in range(4)])  # 64 samples / 16 per step
    from mm_toy.extensions import CountingRunner

    assert CountingRunner.steps_seen == [1, 2, 3, 4]
