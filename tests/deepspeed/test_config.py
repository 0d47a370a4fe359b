"""``run.deepspeed_config``: reconciliation with ``run``, errors naming both keys, and
MiniGPT4-Qwen's published DeepSpeed configs read unchanged."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mm_core.engine.settings import RunSettings
from mm_core.errors import ConfigError
from mm_deepspeed.config import plan_deepspeed

from .conftest import make_config

CONFIGS = Path(__file__).parent / "configs"


def _plan(run: dict, world_size: int = 1):
    return plan_deepspeed(run, RunSettings.from_config({"run": run}), world_size)


def test_keys_set_on_one_side_are_taken_by_the_other():
    plan = _plan({"batch_size_train": 4, "init_lr": 0.01, "deepspeed_config": {
        "gradient_accumulation_steps": 8, "optimizer": {"params": {"betas": [0.9, 0.95], "eps": 1e-6}},
        "bf16": {"enabled": True}, "zero_optimization": {"stage": 2}}})
    assert plan.settings.accum_grad_iters == 8 and plan.settings.beta2 == 0.95
    assert plan.config["train_micro_batch_size_per_gpu"] == 4 and plan.config["gradient_accumulation_steps"] == 8
    assert "optimizer" not in plan.config  # mm builds AdamW from its parameter groups
    assert (plan.stage, plan.dtype, plan.betas, plan.eps) == (2, "bf16", (0.9, 0.95), 1e-6)


@pytest.mark.parametrize("run_key,run_value,ds,ds_key", [
    ("batch_size_train", 8, {"train_micro_batch_size_per_gpu": 4}, "train_micro_batch_size_per_gpu"),
    ("accum_grad_iters", 2, {"gradient_accumulation_steps": 16}, "gradient_accumulation_steps"),
    ("init_lr", 1e-4, {"optimizer": {"type": "AdamW", "params": {"lr": 3e-4}}}, "optimizer.params.lr"),
    ("grad_norm_clip", 1.0, {"gradient_clipping": 0.5}, "gradient_clipping"),
])
def test_a_disagreement_names_both_keys(run_key, run_value, ds, ds_key):
    with pytest.raises(ConfigError) as err:
        _plan({run_key: run_value, "deepspeed_config": ds})
    message = str(err.value)
    assert f"run.{run_key}" in message and f"run.deepspeed_config.{ds_key}" in message


def test_train_batch_size_must_be_the_product():
    ds = {"train_batch_size": 32, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2}
    assert _plan({"deepspeed_config": ds}, world_size=4).settings.batch_size_train == 4
    with pytest.raises(ConfigError, match="train_batch_size is 32 .* = 16"):
        _plan({"deepspeed_config": ds}, world_size=2)


def test_a_deepspeed_scheduler_is_refused_and_a_path_is_read(tmp_path):
    with pytest.raises(ConfigError, match="run.lr_sched"):
        _plan({"deepspeed_config": {"scheduler": {"type": "WarmupLR"}}})
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 2}))
    plan = _plan({"deepspeed_config": str(path)})
    assert plan.stage == 3 and plan.settings.batch_size_train == 2
    with pytest.raises(ConfigError, match="file not found"):
        _plan({"deepspeed_config": str(tmp_path / "missing.json")})


def test_mmrun_reports_a_disagreement_before_training(tmp_path, in_process, capsys):
    config = make_config(tmp_path, ds={"train_micro_batch_size_per_gpu": 2}, batch_size_train=4)
    assert in_process(config) == 2
    err = capsys.readouterr().err
    assert "run.batch_size_train is 4 but run.deepspeed_config.train_micro_batch_size_per_gpu is 2" in err
    assert not (tmp_path / "out" / "checkpoints").exists()


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_minigpt4qwen_published_configs_pass_config_and_dry_run(stage, monkeypatch, capsys):
    """``mmrun config`` and ``mmrun --config X --dry-run`` (in this process) with the installed
    plugins: qwen_llm provides minigpt4qwen, its builders and the task name."""
    from mm_core.cli.main import main
    from mm_core.plugins import reset_plugin_host

    for key in [k for k in os.environ if k.startswith("MM_")]:
        monkeypatch.delenv(key)
    reset_plugin_host()
    path = str(CONFIGS / f"minigpt4qwen_train_zero{stage}_3090x4.yaml")
    try:
        assert main(["config", "--config", path]) == 0, capsys.readouterr().err
        assert "deepspeed_config:" in capsys.readouterr().out
        assert main(["--config", path, "--dry-run"]) == 0, capsys.readouterr().err
    finally:
        reset_plugin_host()
    out = capsys.readouterr().out
    assert "runner: deepspeed_runner" in out and "task: deepspeed_image_text_pretrain" in out


def test_minigpt4qwen_configs_reconcile_as_documented():
    """zero0/zero1 agree with their run blocks (accumulation 16 comes from DeepSpeed); zero2 as
    published sets run.batch_size_train 2 against a DeepSpeed micro-batch of 1, which the runner
    reports when it starts."""
    import yaml

    for stage in (0, 1):
        run = yaml.safe_load((CONFIGS / f"minigpt4qwen_train_zero{stage}_3090x4.yaml").read_text())["run"]
        plan = _plan(run, world_size=4)
        assert (plan.settings.batch_size_train, plan.settings.accum_grad_iters, plan.settings.init_lr) == (2, 16, 1e-4)
        assert plan.dtype == "fp16" and plan.offload_optimizer == (stage == 1)
    run = yaml.safe_load((CONFIGS / "minigpt4qwen_train_zero2_3090x4.yaml").read_text())["run"]
    with pytest.raises(ConfigError, match="run.batch_size_train is 2 but .*train_micro_batch_size_per_gpu is 1"):
        _plan(run, world_size=4)
