"""Exact resume after SIGKILL, and checkpoints that a kill mid-write cannot corrupt."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
import torch

from ..toy_runs import (
    checkpoint_dir,
    finish,
    fresh_dir,
    load_weights,
    make_config,
    mm_command,
    read_events,
    start_mm,
    toy_env,
)

pytestmark = pytest.mark.slow  # real runs / several processes: `make test-fast` skips this module

RUNNERS = {
    # 8 batches per data epoch; checkpoints every 3 optimizer steps land mid-epoch
    "runner_base": {"runner": "runner_base", "max_epoch": 3, "ckpt_iters": 3, "accum_grad_iters": 2,
                    "batch_size_train": 4},
    # inner epochs of 6 iterations cross the data epochs (8 batches) at different points
    "runner_iter": {"runner": "runner_iter", "max_iters": 20, "iters_per_inner_epoch": 6, "ckpt_iters": 4},
}


# Dropout makes every step draw from torch's RNG, and the train stream shuffles: a resume that
# skipped restoring the RNG states (or the data position) would train on other masks or samples.
RANDOM_MODEL = {"dropout": 0.3}


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_resume_after_sigkill_is_bitwise_exact(tmp_path, in_process, runner):
    settings = RUNNERS[runner]
    reference = make_config(fresh_dir(tmp_path / "ref"), model=RANDOM_MODEL, **settings)
    killed = make_config(fresh_dir(tmp_path / "killed"), model=RANDOM_MODEL, **settings)
    proc = start_mm(killed, env=toy_env(MM_TOY_KILL_AFTER_CKPT="2"))  # starts while the reference runs
    assert in_process(reference) == 0
    result = finish(proc)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    out = tmp_path / "killed" / "out"
    stopped_at = int(checkpoint_dir(out).name.split("_")[1])
    final_step = read_events(tmp_path / "ref" / "out", "train")[-1]["step"]
    assert 0 < stopped_at < final_step

    assert in_process(killed, "run.resume_ckpt_path=latest") == 0
    expected = load_weights(checkpoint_dir(tmp_path / "ref" / "out"))
    resumed = load_weights(checkpoint_dir(out))
    assert checkpoint_dir(out).name == checkpoint_dir(tmp_path / "ref" / "out").name
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
    # the resumed run continued the metrics file from the step after the checkpoint, with the
    # reference's losses to the last bit (dropout masks and batches as in the uninterrupted run)
    events = read_events(out, "train")
    assert [e["step"] for e in events] == list(range(1, final_step + 1))
    reference_losses = {e["step"]: e["loss"] for e in read_events(tmp_path / "ref" / "out", "train")}
    assert {e["step"]: e["loss"] for e in events if e["step"] > stopped_at} == \
        {s: v for s, v in reference_losses.items() if s > stopped_at}


def test_sigkill_while_writing_a_checkpoint_leaves_no_usable_half(tmp_path, in_process):
    """Large trainable tensors make every write take a while; the run is killed as soon as a
    write is seen in progress. Whatever is on disk then, resume must pick a complete checkpoint."""
    dim = 256
    config = make_config(tmp_path, dim=dim, model={"hidden": 4096}, splits={"train": 32}, max_epoch=50, valid_splits=[],
                         ckpt_iters=1, keep_last=2, batch_size_train=8, log_freq=50)
    root = tmp_path / "out" / "checkpoints"
    for _attempt in range(3):
        proc = subprocess.Popen(mm_command() + ["--config", str(config)], env=toy_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        caught = _kill_during_write(proc, root, deadline=60)
        if caught:
            break
    assert caught, "never saw a checkpoint write in progress"
    complete = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".tmp-")]
    for ckpt in complete:  # every visible checkpoint directory is whole and readable
        assert len(load_weights(ckpt)) == 6
        torch.load(ckpt / "training_state.pt", weights_only=True)
    assert in_process(config, "run.resume_ckpt_path=latest", "run.max_epoch=1") == 0
    from mm_core.engine.checkpoint import CheckpointStore

    resumed_from = CheckpointStore(root).resolve("latest")
    assert resumed_from.parent == root and not resumed_from.name.startswith(".tmp-")
    assert not any(p.name.startswith(".tmp-") for p in root.iterdir())  # leftovers cleaned on start


def _kill_during_write(proc: subprocess.Popen, root, deadline: float) -> bool:
    end = time.monotonic() + deadline
    try:
        while time.monotonic() < end and proc.poll() is None:
            # a later write, so that an earlier complete checkpoint exists to fall back on
            writing = root.is_dir() and any(p.name.startswith(".tmp-step") for p in root.iterdir())
            if writing and (root / "latest").is_file():
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.0005)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_directory_without_metadata_is_never_resumed_from(tmp_path):
    from mm_core.engine.checkpoint import CheckpointStore

    store = CheckpointStore(tmp_path)
    store.write("step_0000001", {"w": torch.ones(2)}, {"progress": {}}, "run: {}\n", {"step": 1})
    half = tmp_path / "step_0000002"  # as if a non-atomic writer died before finishing
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"")
    (tmp_path / "latest").write_text("step_0000002\n")
    assert store.resolve("latest").name == "step_0000001"
    assert store.tags() == ["step_0000001"]
