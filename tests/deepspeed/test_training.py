"""ZeRO stages 0-3 on CPU, one process and two (torchrun), against the plain runner on the same
data: same per-step losses (fp32), same final trainable weights; bf16; resume after SIGKILL; the
consolidated checkpoint evaluated by the plain runner and rebuilt by DeepSpeed's zero_to_fp32."""

from __future__ import annotations

import math
import signal
from pathlib import Path

import pytest
import torch

pytest.importorskip("deepspeed", reason="DeepSpeed is optional: DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed")

from .conftest import checkpoint_dir, load_weights, make_config, read_events, run_mm, toy_env, toy_mse, train_losses

pytestmark = pytest.mark.slow  # real runs / several processes: `make test-fast` skips this module

# 32 training records, micro-batch 4, 2 micro-batches per step: 4 steps per epoch on one process
# (2 on two), 2 epochs; checkpoints every 3 steps land mid-epoch.
RUN = {"accum_grad_iters": 2, "ckpt_iters": 3, "max_epoch": 2}


def _zero(stage: int, bf16: bool = False) -> dict:
    return {"zero_optimization": {"stage": stage}, "gradient_clipping": 1.0, "steps_per_print": 1000,
            "bf16": {"enabled": bf16}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, in_process) -> dict:
    """Output folders of the runs several tests compare, each made once on first use: one
    process in this pytest process, two with ``torchrun --no-python mmrun``."""
    root = tmp_path_factory.mktemp("ds_runs")
    cache: dict = {}

    def get(name: str, nproc: int = 1, stage: int | None = None, bf16: bool = False, **run) -> Path:
        key = (name, nproc)
        if key not in cache:
            folder = root / f"{name}_{nproc}"
            if stage is None:
                config = make_config(folder, runner="runner_base", grad_norm_clip=1.0, **{**RUN, **run})
            else:
                config = make_config(folder, ds=_zero(stage, bf16), **{**RUN, **run})
            if nproc == 1:
                assert in_process(config) == 0
            else:
                result = run_mm(config, nproc=nproc)
                assert result.returncode == 0, result.stderr[-3000:]
            cache[key] = folder / "out"
        return cache[key]

    return get


@pytest.mark.parametrize("nproc,stages", [(1, (0, 1, 2, 3)), (2, (1, 2))], ids=["1proc", "2proc"])
def test_zero_matches_plain_runner_in_fp32(runs, nproc, stages):
    """Two processes with micro-batch 4 see, per optimizer step, the same 16 samples as one
    process with micro-batch 8 (the shards interleave one permutation), so both compare with the
    plain runner on one process."""
    plain = runs("plain", 1) if nproc == 1 else runs("plain_b8", 1, batch_size_train=8)
    expected_losses = train_losses(plain)
    assert len(expected_losses) == (8 if nproc == 1 else 4)
    assert expected_losses[-1] < expected_losses[0]  # the toy model learns
    expected_weights = load_weights(checkpoint_dir(plain))
    for stage in stages:
        # ZeRO-3 also tests with the best checkpoint loaded into its partitioned parameters
        out = runs(f"zero{stage}", nproc, stage, **({"test_splits": ["val"]} if stage == 3 else {}))
        losses = train_losses(out)
        assert len(losses) == len(expected_losses), stage
        for step, (got, want) in enumerate(zip(losses, expected_losses), start=1):
            assert math.isclose(got, want, rel_tol=1e-5, abs_tol=1e-7), (stage, step, got, want)
        weights = load_weights(checkpoint_dir(out))
        assert sorted(weights) == sorted(expected_weights)
        for key, value in expected_weights.items():
            torch.testing.assert_close(weights[key], value, rtol=1e-4, atol=1e-6, msg=f"stage {stage}: {key}")
        if stage == 3:
            evals = read_events(out, "eval")
            best = min(e["loss"] for e in evals if e["epoch"] != "best")
            assert [e["loss"] for e in evals if e["epoch"] == "best"] == [best]
        # the learning-rate curve is mm's schedule, stepped the same way
        assert [e["lr"] for e in read_events(out, "train")] == [e["lr"] for e in read_events(plain, "train")]


def test_resume_after_sigkill_gives_the_same_weights(tmp_path, runs, in_process):
    reference = runs("zero2", 1, 2)
    config = make_config(tmp_path / "killed", ds=_zero(2), **RUN)
    out = tmp_path / "killed" / "out"
    killed = run_mm(config, env=toy_env(MM_TOY_KILL_AFTER_CKPT="1"))  # killed right after step 3's checkpoint
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert checkpoint_dir(out).name == "step_0000003"
    assert (out / "checkpoints" / "deepspeed" / "step_0000003").is_dir()

    assert in_process(config, "run.resume_ckpt_path=latest") == 0
    assert checkpoint_dir(out).name == checkpoint_dir(reference).name == "step_0000008"
    expected, got = load_weights(checkpoint_dir(reference)), load_weights(checkpoint_dir(out))
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    steps = [e["step"] for e in read_events(out, "train")]
    assert steps == list(range(1, 9))  # the metrics file continued after step 3
    assert train_losses(out) == train_losses(reference)

    # MiniGPT4-Qwen's keys name the DeepSpeed folder and tag; mm's progress travels in its client_state
    again = tmp_path / "again" / "out"
    assert in_process(config, f"run.output_dir={again}", f"run.resume_ckpt_load_dir={out / 'checkpoints' / 'deepspeed'}",
                      "run.resume_ckpt_tag=step_0000006") == 0  # step 3 was pruned (keep_last 3)
    got = load_weights(checkpoint_dir(again))
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    assert train_losses(again) == train_losses(reference)[6:]


def test_consolidated_checkpoint_evaluates_in_the_plain_runner(tmp_path, runs, in_process):
    trained = runs("zero2", 1, 2)
    ckpt = checkpoint_dir(trained)
    weights = load_weights(ckpt)
    assert all(v.dtype == torch.float32 for v in weights.values())
    config = make_config(tmp_path, runner="runner_base", evaluate=True, valid_splits=["val"])
    assert in_process(config, f"run.resume_ckpt_path={ckpt}") == 0
    [event] = read_events(tmp_path / "out", "eval")
    expected = toy_mse(weights, tmp_path / "data" / "val.json")
    assert math.isclose(event["loss"], expected, rel_tol=1e-5)
    # ... and it is the loss the DeepSpeed run measured at its last validation
    assert math.isclose(event["loss"], read_events(trained, "eval")[-1]["loss"], rel_tol=1e-5)


def test_bf16_trains_close_to_fp32_and_checkpoints_fp32_masters(runs):
    plain, out = runs("plain", 1), runs("zero2_bf16", 1, 2, bf16=True)
    for got, want in zip(train_losses(out), train_losses(plain)):
        assert math.isclose(got, want, rel_tol=2e-2), (got, want)
    weights, expected = load_weights(checkpoint_dir(out)), load_weights(checkpoint_dir(plain))
    for key, value in expected.items():
        assert weights[key].dtype == torch.float32  # the fp32 master copy, not the bf16 module weights
        torch.testing.assert_close(weights[key], value, rtol=0, atol=3e-2, msg=key)


def test_deepspeed_folder_consolidates_with_zero_to_fp32(tmp_path, runs, in_process):
    """The bare DeepSpeed half of a ZeRO-3 checkpoint, turned into safetensors by DeepSpeed's
    zero_to_fp32 through ``mmrun consolidate-deepspeed`` (the plugin's command), equals the
    model.safetensors the runner wrote beside it."""
    from mm_core.cli.main import main
    from mm_core.plugins import reset_plugin_host

    out = runs("zero3", 1, 3)
    ckpt = checkpoint_dir(out)
    target = tmp_path / "weights.safetensors"
    reset_plugin_host()  # the toy environment's plugins, mm_deepspeed's command among them
    assert main(["consolidate-deepspeed", str(out / "checkpoints" / "deepspeed"), "--tag", ckpt.name,
                 "-o", str(target)]) == 0
    from safetensors.torch import load_file

    got, expected = load_file(str(target)), load_weights(ckpt)
    assert sorted(got) == sorted(expected)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
