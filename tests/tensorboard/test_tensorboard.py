"""mm-plugin-tensorboard: a real run writes the scalars metrics.jsonl has, through lifecycle hooks."""

from __future__ import annotations

import json
import subprocess

import pytest

from ..toy_runs import PLUGIN_MODULES, make_config, mm_command, toy_env

pytestmark = pytest.mark.slow  # real runs / several processes: `make test-fast` skips this module

pytest.importorskip("tensorboard")


def run_with_tensorboard(config, **env):
    env = toy_env(MM_PLUGIN_MODULES=PLUGIN_MODULES + ",mm_tensorboard.hooks", **env)
    return subprocess.run(mm_command() + ["--config", str(config)], env=env, capture_output=True, text=True,
                          timeout=300)


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_train_and_eval_scalars_match_metrics_jsonl(tmp_path):
    config = make_config(tmp_path, max_epoch=2, log_freq=2, tensorboard=True)
    result = run_with_tensorboard(config)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    written = scalars(out / "tensorboard")
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in logged if e["type"] == "eval"]
    assert [step for step, _ in written["train/loss"]] == list(range(2, 17, 2))  # every log_freq steps
    assert [step for step, _ in written["eval/val/loss"]] == [e["step"] for e in evals] == [8, 16]
    assert [value for _, value in written["eval/val/loss"]] == pytest.approx([e["loss"] for e in evals], rel=1e-6)
    assert {"train/loss_mse", "train/lr"} <= set(written)


def test_nothing_is_written_without_the_switch(tmp_path):
    result = run_with_tensorboard(make_config(tmp_path, max_epoch=1))
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "out" / "tensorboard").exists()


def test_the_switch_without_tensorboard_installed_stops_before_training(tmp_path, monkeypatch):
    import sys

    import mm_tensorboard.hooks
    from mm_core.config.loader import load_config
    from mm_core.errors import ConfigError
    from mm_core.plugins import plugin_registered

    config = make_config(tmp_path, tensorboard=True)
    monkeypatch.syspath_prepend(str(toy_env()["PYTHONPATH"].split(":")[0]))
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` raises ImportError
    import mm_toy.hooks

    with plugin_registered(mm_toy.hooks, name="toy"), plugin_registered(mm_tensorboard.hooks, name="tb"):
        with pytest.raises(ConfigError, match="run.tensorboard is set but the tensorboard package cannot be imported"):
            load_config(config)
