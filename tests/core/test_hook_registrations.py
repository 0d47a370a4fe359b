"""Registration hooks beyond the toy model's: tasks and runners with run keys, lr schedules, LLM
backends, metrics, mmrun sub-commands and plugin run keys (all from ``mm_toy.extras``)."""

from __future__ import annotations

import pytest

from mm_core.plugins import plugin_registered
from mm_core.registry import get_registry

from ..conftest import TOY_SRC, mm_env, run_mmrun


@pytest.fixture
def toy_extras(toy_plugin):
    import mm_toy.extras

    with plugin_registered(mm_toy.extras, name="toy_extras") as info:
        yield info


def test_register_tasks_run_keys_are_accepted_by_validation(toy_extras, tmp_path):
    from mm_core.config.loader import load_config
    from mm_core.errors import ConfigError

    path = tmp_path / "run.yaml"
    path.write_text("run:\n  task: toy_generate\n  num_beams: 3\n  toy_note: hi\n")
    assert load_config(path).config.run.num_beams == 3
    assert "toy_llm" in get_registry().names("llms")
    path.write_text("run:\n  task: base\n  num_beams: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'run.num_beams'"):
        load_config(path)


def test_register_metrics_gives_a_scoring_function_by_name(toy_extras):
    score = get_registry().resolve("metrics", "toy_exact_match")
    scores = score({"a": "cat", "b": "dog"}, {"a": ["cat", "kitten"], "b": ["wolf"]})
    assert scores.metrics == {"exact_match": 0.5}
    assert scores.per_sample == {"exact_match": {"a": 1.0, "b": 0.0}}


def test_register_commands_adds_an_mmrun_subcommand():
    env = mm_env([TOY_SRC], MM_PLUGIN_MODULES="mm_toy.extras")
    result = run_mmrun(["toy-hello", "world"], env)
    assert result.returncode == 3 and result.stdout.strip() == "hello world"
    assert "say hello" in run_mmrun(["--help"], env).stdout
    unknown = run_mmrun(["toy-helo"], env)
    assert unknown.returncode == 2 and "did you mean 'toy-hello'" in unknown.stderr


def test_a_plugin_command_named_like_a_builtin_is_the_registrys_conflict_error(tmp_path):
    package = tmp_path / "mm_clash"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "hooks.py").write_text(
        "from mm_core.hookspecs import hookimpl\n"
        "@hookimpl\n"
        "def register_commands():\n"
        "    return {'list': 'mm_clash.hooks:main'}\n"
        "def main(argv):\n"
        "    return 0\n"
    )
    result = run_mmrun(["list"], mm_env([tmp_path], MM_PLUGIN_MODULES="mm_clash.hooks"))
    assert result.returncode == 2
    assert "command name 'list' is registered by more than one plugin" in result.stderr
    assert "mm_core.cli.listing:list_main" in result.stderr and "mm_clash.hooks:main" in result.stderr


def test_plugin_lr_scheduler_and_runner_drive_a_run(toy_extras, toy_data, tmp_path, monkeypatch):
    from mm_core.testing import make_config, run_training

    monkeypatch.setenv("MM_CACHE_ROOT", str(toy_data))
    loaded = make_config("toy_regressor", datasets={"toy_regression": {}},
                         run={"lr_sched": "halving_lr", "runner": "counting_runner", "count_label": "x",
                              "init_lr": 0.08, "max_epoch": 1, "batch_size_train": 16, "log_freq": 1})
    result = run_training(loaded, tmp_path / "out")
    assert result.exit_code == 0
    lrs = [event["lr"] for event in result.of_type("train")]
    assert lrs == pytest.approx([0.08 * 0.5**step for step in range(4)])  # 64 samples / 16 per step
    from mm_toy.extensions import CountingRunner

    assert CountingRunner.steps_seen == [1, 2, 3, 4]
