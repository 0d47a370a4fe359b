"""``deepspeed_pipe_runner``: the tiny MiniGPT4-Qwen in 2 pipeline stages (2 processes, gloo,
fp32) against the plain runner on one process with the same micro-batches: per-step losses,
consolidated weights, validation loss; resume after SIGKILL of a stage; the consolidated
checkpoint chats; configuration errors."""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("deepspeed", reason="DeepSpeed is optional: DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed")
pytest.importorskip("mm_qwen_llm", reason="needs mm-plugin-qwen-llm")

from .conftest import BIN, REPO, TOY_SRC, checkpoint_dir, load_weights, read_events, train_losses

pytestmark = pytest.mark.slow  # several processes and real runs: `make test-fast` skips this module

EXAMPLE = REPO / "examples" / "minigpt4qwen_pipe_tiny.yaml"
CHAT_EXAMPLE = REPO / "examples" / "minigpt4qwen_tiny.yaml"
# 1 epoch of 8 optimizer steps (2 micro-batches of 4 each), checkpoints at steps 3, 6 and 8
RUN = ["run.max_epoch=1", "run.ckpt_iters=3"]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    cache = tmp_path_factory.mktemp("pipe_cache")
    base = {k: v for k, v in os.environ.items() if not k.startswith("MM_")}
    return {**base, "MM_CACHE_ROOT": str(cache), "DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def mmrun(config: Path, *options: str, nproc: int = 1, env: dict[str, str], timeout: float = 400):
    cmd = [str(BIN / "mmrun"), "--config", str(config), "--options", *options]
    if nproc > 1:
        cmd = [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={nproc}", "--no-python", *cmd]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, env) -> dict[str, Path]:
    """The pipeline run (2 stages) and the plain runner's run of the same config, made once."""
    root = tmp_path_factory.mktemp("pipe_runs")
    pipe = root / "pipe"
    done = mmrun(EXAMPLE, *RUN, f"run.output_dir={pipe}", nproc=2, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    cfg = yaml.safe_load(EXAMPLE.read_text())
    run = cfg["run"]
    clip = run.pop("deepspeed_config")["gradient_clipping"]
    del run["num_stages"]
    run.update(runner="runner_base", grad_norm_clip=clip)
    plain_config = root / "plain.yaml"
    plain_config.write_text(yaml.safe_dump(cfg))
    done = mmrun(plain_config, *RUN, f"run.output_dir={root / 'plain'}", env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    return {"pipe": pipe, "plain": root / "plain"}


def test_two_stages_equal_the_plain_runner(runs):
    pipe, plain = runs["pipe"], runs["plain"]
    expected = train_losses(plain)
    assert len(expected) == 8 and expected[-1] < expected[0] - 1.0  # the tiny model learns
    got = train_losses(pipe)
    assert len(got) == len(expected)
    for step, (a, b) in enumerate(zip(got, expected), start=1):
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-5), (step, a, b)
    # mm's schedule drives DeepSpeed's optimizer: the same lr at every step
    assert [e["lr"] for e in read_events(pipe, "train")] == [e["lr"] for e in read_events(plain, "train")]
    weights, reference = load_weights(checkpoint_dir(pipe)), load_weights(checkpoint_dir(plain))
    assert sorted(weights) == sorted(reference) and len(reference) > 10
    for key, value in reference.items():
        torch.testing.assert_close(weights[key], value, rtol=1e-4, atol=1e-5, msg=key)
    # both stages' weights were trained (the stage-1 head moved from its initial value the same way)
    [pipe_eval], [plain_eval] = read_events(pipe, "eval"), read_events(plain, "eval")
    assert math.isclose(pipe_eval["loss"], plain_eval["loss"], rel_tol=1e-4)
    # DeepSpeed's own per-layer files: 4 layers (embeddings + block | block + head) and one file per stage
    ds = pipe / "checkpoints" / "deepspeed" / checkpoint_dir(pipe).name
    assert sorted(p.name for p in ds.glob("layer_*-model_states.pt")) == [f"layer_{i:02d}-model_states.pt"
                                                                       for i in range(4)]
    assert len(list(ds.glob("mp_rank_*_model_states.pt"))) == 2
    # zero_to_fp32 does not read per-layer files: the command says where the consolidated file is
    from mm_deepspeed.consolidate import main

    assert main([str(ds.parent), "-o", str(pipe / "x.safetensors")]) == 2


@pytest.mark.skipif((os.cpu_count() or 1) < 4 and os.environ.get("MM_TEST_4PROC") != "1",
                    reason="4 processes on fewer than 4 cores time out now and then; MM_TEST_4PROC=1 runs it anyway "
                           "(measured result: README, Benchmarks)")
def test_two_stages_times_two_replicas_equal_ddp(tmp_path, runs, env):
    """4 processes (2 stages x 2 data-parallel replicas) against DDP on 2 processes: each replica
    reads the DDP rank's shard (a token-mean loss over 4 samples is not one over 8, so one process
    with micro-batch 8 is not the reference)."""
    pipe = tmp_path / "pipe4"
    done = mmrun(EXAMPLE, *RUN, f"run.output_dir={pipe}", nproc=4, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    ddp = tmp_path / "ddp2"
    done = mmrun(runs["plain"].parent / "plain.yaml", *RUN, f"run.output_dir={ddp}", nproc=2, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    expected, got = train_losses(ddp), train_losses(pipe)
    assert len(expected) == len(got) == 4
    for step, (a, b) in enumerate(zip(got, expected), start=1):
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-5), (step, a, b)
    weights, reference = load_weights(checkpoint_dir(pipe)), load_weights(checkpoint_dir(ddp))
    for key, value in reference.items():
        torch.testing.assert_close(weights[key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_resume_after_sigkill_of_a_stage_is_exact(tmp_path, runs, env):
    reference = runs["pipe"]
    out = tmp_path / "killed"
    kill = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(TOY_SRC), env.get("PYTHONPATH")])),
            "MM_PLUGIN_MODULES": "mm_toy.lifecycle", "MM_TOY_KILL_AT_STEP": "1:5"}  # stage 1, after step 5
    killed = mmrun(EXAMPLE, *RUN, f"run.output_dir={out}", nproc=2, env=kill)
    assert killed.returncode != 0 and "SIGKILL" in killed.stderr + killed.stdout, killed.stderr[-3000:]
    assert checkpoint_dir(out).name == "step_0000003"
    assert (out / "checkpoints" / "deepspeed" / "step_0000003" / "layer_03-model_states.pt").is_file()

    resumed = mmrun(EXAMPLE, *RUN, f"run.output_dir={out}", "run.resume_ckpt_path=latest", nproc=2, env=env)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert checkpoint_dir(out).name == checkpoint_dir(reference).name == "step_0000008"
    expected, got = load_weights(checkpoint_dir(reference)), load_weights(checkpoint_dir(out))
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    losses = {e["step"]: e["loss"] for e in read_events(out, "train")}  # steps 4-5 were logged twice
    assert [losses[s] for s in range(1, 9)] == train_losses(reference)


def test_consolidated_checkpoint_chats(runs, env):
    ckpt = checkpoint_dir(runs["pipe"])
    weights = load_weights(ckpt)
    from mm_core.api import load_model_for_inference

    saved = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k.startswith(("MM_", "HF_", "TRANSFORMERS_"))})
    try:
        model = load_model_for_inference(str(CHAT_EXAMPLE), [], str(ckpt)).model
    finally:
        os.environ.clear()
        os.environ.update(saved)
    state = model.state_dict()
    for key, value in weights.items():
        assert torch.equal(state[key].float(), value), key
    answer, history = model.chat("What shape is in the picture?", [], max_new_tokens=4)
    assert isinstance(answer, str) and len(history) == 1


@pytest.mark.parametrize("options,message", [
    (["run.num_stages=2"], "run.num_stages is 2: it must divide the 1 process(es)"),
    (["run.num_stages=two"], "run.num_stages must be an integer"),
    (["run.num_stages=0"], "run.num_stages must be a positive integer"),
    (["run.num_stages=1", "run.deepspeed_config.zero_optimization.stage=2"], "supports ZeRO stage 0 or 1"),
], ids=["stages", "not-int", "zero", "zero2"])
def test_config_errors_name_the_key(tmp_path, env, options, message):
    """One process: exit code 2 and the key in the message, no traceback."""
    done = mmrun(EXAMPLE, *RUN, f"run.output_dir={tmp_path}", *options, env=env)
    assert done.returncode == 2, (done.stderr + done.stdout)[-3000:]
    assert message in done.stderr + done.stdout, (done.stderr + done.stdout)[-3000:]
    assert "Traceback" not in done.stderr


def test_dry_run_plans_the_pipeline_row(env):
    """``--dry-run`` of the pipeline example marks the memory plan's pipeline row as this run's."""
    done = subprocess.run([str(BIN / "mmrun"), "--config", str(EXAMPLE), "--dry-run"], env=env, capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    [marked] = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.endswith("<- this run")]
    assert marked.startswith("pipeline, 2 stages"), marked


def test_bf16_zero1_trains_close_to_fp32_and_checkpoints_fp32_masters(tmp_path, runs, env):
    """bf16 modules with ZeRO-1's fp32 master weights: the consolidated file holds the masters."""
    out = tmp_path / "bf16"
    done = mmrun(EXAMPLE, *RUN, f"run.output_dir={out}", "run.deepspeed_config.bf16.enabled=true",
                 "run.deepspeed_config.zero_optimization.stage=1", nproc=2, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    for got, want in zip(train_losses(out), train_losses(runs["plain"])):
        assert math.isclose(got, want, rel_tol=2e-2), (got, want)
    weights, expected = load_weights(checkpoint_dir(out)), load_weights(checkpoint_dir(runs["plain"]))
    assert sorted(weights) == sorted(expected)
    for key, value in expected.items():
        assert weights[key].dtype == torch.float32
        # not rounded to bf16: the fp32 masters (a bf16 value has at most 8 significant bits)
        torch.testing.assert_close(weights[key], value, rtol=0, atol=5e-2, msg=key)
    assert any(not torch.equal(v, v.bfloat16().float()) for v in weights.values())
