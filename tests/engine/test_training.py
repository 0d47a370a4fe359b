"""Training under mmrun: outputs where documented, loss going down, optimizer groups, schedules,
gradient accumulation, frozen weights."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from ..toy_runs import checkpoint_dir, fresh_dir, load_weights, make_config, read_events, run_mm, toy_mse

pytestmark = pytest.mark.slow  # real runs / several processes: `make test-fast` skips this module


def test_mmrun_trains_and_writes_config_metrics_and_checkpoints(tmp_path):
    config = make_config(tmp_path, max_epoch=4, keep_last=2)
    result = run_mm(config)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["run"]["task"] == "base" and saved["model"]["arch"] == "toy_regressor"

    train = read_events(out, "train")
    assert [e["step"] for e in train] == list(range(1, 4 * 8 + 1))  # 64 samples / batch 8, 4 epochs
    for key in ("epoch", "lr", "loss", "loss_mse", "samples_per_sec", "max_memory_mb", "wall_time"):
        assert key in train[0], key
    evals = read_events(out, "eval")
    assert [e["split"] for e in evals] == ["val"] * 4
    assert evals[-1]["loss"] < evals[0]["loss"] * 0.8, [e["loss"] for e in evals]
    first, last = train[:8], train[-8:]
    assert sum(e["loss"] for e in last) < sum(e["loss"] for e in first)

    # the logged validation loss is the MSE of the saved weights, computed independently
    latest = checkpoint_dir(out, "latest")
    assert latest.name == "step_0000032"
    assert math.isclose(evals[-1]["loss"], toy_mse(load_weights(latest), tmp_path / "data" / "val.json"),
                        rel_tol=1e-5)
    # keep_last=2 keeps the two newest plus the best
    tags = sorted(p.name for p in (out / "checkpoints").iterdir() if p.is_dir())
    best = checkpoint_dir(out, "best").name
    assert set(tags) == {"step_0000024", "step_0000032", best}
    state = torch.load(latest / "training_state.pt", weights_only=True)
    assert state["progress"]["step"] == 32 and state["progress"]["epoch"] == 4
    assert set(state) >= {"optimizer", "scheduler", "scaler", "rng", "progress", "stream"}
    assert (latest / "config.yaml").is_file()
    assert sorted((out / "result").iterdir())[0].name == "val_epoch0.json"


def test_frozen_weights_are_not_saved_and_resume_is_strict_for_trainable(tmp_path, in_process):
    config = make_config(tmp_path, model={"freeze_encoder": True}, max_epoch=2)
    assert in_process(config) == 0
    ckpt = checkpoint_dir(tmp_path / "out")
    assert sorted(load_weights(ckpt)) == ["head.bias", "head.weight", "norm.bias", "norm.weight"]
    # resuming a finished run loads the trainable-only checkpoint without complaint
    assert in_process(config, f"run.resume_ckpt_path={ckpt}") == 0


def test_gradient_accumulation_matches_the_larger_batch(tmp_path, in_process):
    a = make_config(fresh_dir(tmp_path / "a"), batch_size_train=8, max_epoch=2)
    b = make_config(fresh_dir(tmp_path / "b"), batch_size_train=4, accum_grad_iters=2, max_epoch=2)
    assert in_process(a) == 0 and in_process(b) == 0
    wa, wb = load_weights(checkpoint_dir(tmp_path / "a" / "out")), load_weights(checkpoint_dir(tmp_path / "b" / "out"))
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-6)


def test_optimizer_groups_skip_weight_decay_on_biases_and_norms():
    from torch import nn

    from mm_core.engine.optim import param_groups

    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1))
    groups = param_groups(model, weight_decay=0.05)
    ids = {g["weight_decay"]: {id(p) for p in g["params"]} for g in groups}
    assert ids[0.05] == {id(model[0].weight), id(model[2].weight)}
    assert ids[0.0] == {id(model[0].bias), id(model[1].weight), id(model[1].bias), id(model[2].bias)}


@pytest.mark.parametrize("name", ["linear_warmup_cosine_lr", "linear_warmup_step_lr", "constant_lr"])
def test_schedulers_follow_their_formulas(name):
    from mm_core.registry import get_registry

    cls = get_registry().resolve("lr_schedulers", name)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [param], "lr_scale": 0.5}], lr=1.0)
    sched = cls(optimizer=opt, max_epoch=4, init_lr=1e-3, min_lr=1e-5, decay_rate=0.5,
                warmup_start_lr=1e-6, warmup_steps=10)
    assert sched.step(0, 0) == pytest.approx(1e-6)
    assert sched.step(0, 5) == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * sched.last_lr)  # lr_scale honoured
    expected = {
        "linear_warmup_cosine_lr": (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 2 / 4)) + 1e-5,
        "linear_warmup_step_lr": 1e-3 * 0.5**2,
        "constant_lr": 1e-3,
    }[name]
    assert sched.step(2, 40) == pytest.approx(expected)


def test_unwritable_output_dir_is_reported_before_training(tmp_path, in_process, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    config = make_config(tmp_path, output_dir=str(blocker / "out"))
    assert in_process(config) == 2
    assert str(blocker / "out") in capsys.readouterr().err


# The engine keys of the `run` blocks of LAVIS' project YAMLs (blip2/train/pretrain_stage1,
# caption_coco_ft, blip/coco_cap_ft_iter, albef/train/ret_coco_ft) and MiniGPT4-Qwen's train.yaml,
# with the values as those files write them (task-specific keys such as max_len are the task's).
PUBLISHED_RUN_BLOCK = """
run:
  task: base
  runner: runner_iter
  max_iters: 2e4
  iters_per_inner_epoch: 2e3
  lr_sched: "linear_warmup_cosine_lr"
  init_lr: 1e-4
  min_lr: 1e-6
  warmup_lr: 0
  warmup_steps: 500
  weight_decay: 0.05
  grad_norm_clip: 1.
  max_epoch: 10
  batch_size_train: 16
  batch_size_eval: 1
  num_workers: 4
  accum_grad_iters: 1
  lr_layer_decay: 0.95
  beta2: 0.999
  seed: 42
  output_dir: "output/ckpt-and-data/minigpt4qwen"
  amp: True
  autocast_dtype: bf16
  loss_scale: True
  resume_ckpt_path: null
  evaluate: False
  train_splits: ["train"]
  valid_splits: ["val"]
  test_splits: ["test"]
  use_dist_eval_sampler: False
  eval_freq: 1
  log_freq: 32
  device: "cuda"
  world_size: 1
  dist_url: "env://"
  distributed: True
"""


def test_published_lavis_and_minigpt4qwen_run_keys_are_accepted(tmp_path, in_process):
    from mm_core.config.loader import load_config
    from mm_core.engine.settings import RunSettings

    path = tmp_path / "published.yaml"
    path.write_text(PUBLISHED_RUN_BLOCK)
    settings = RunSettings.from_config(load_config(path).config)
    assert (settings.max_iters, settings.iters_per_inner_epoch, settings.init_lr) == (20000, 2000, 1e-4)
    assert settings.val_freq == 1 and settings.grad_norm_clip == 1.0 and settings.loss_scale is True
