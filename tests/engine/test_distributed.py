"""DDP under torchrun (gloo on CPU): equivalence with one process, and a dead rank ending the job."""

from __future__ import annotations

import json
import time

import pytest
import torch

from ..toy_runs import (
    checkpoint_dir,
    finish,
    fresh_dir,
    load_weights,
    make_config,
    read_events,
    run_mm,
    start_mm,
    toy_env,
)

pytestmark = pytest.mark.slow  # real runs / several processes: `make test-fast` skips this module


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path, in_process):
    settings = {"max_epoch": 2, "valid_splits": ["val"], "ckpt_iters": 5}
    single = make_config(fresh_dir(tmp_path / "one"), batch_size_train=8, **settings)
    double = make_config(fresh_dir(tmp_path / "two"), batch_size_train=4, **settings)
    proc = start_mm(double, nproc=2)  # starts while the single-process run runs
    assert in_process(single) == 0
    result = finish(proc)
    assert result.returncode == 0, result.stderr[-3000:]

    one, two = load_weights(checkpoint_dir(tmp_path / "one" / "out")), load_weights(checkpoint_dir(tmp_path / "two" / "out"))
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=1e-6)
    # rank 0 alone writes: one event per step and per evaluation, losses averaged over ranks
    train_one, train_two = read_events(tmp_path / "one" / "out", "train"), read_events(tmp_path / "two" / "out", "train")
    assert [e["step"] for e in train_two] == [e["step"] for e in train_one] == list(range(1, 17))
    for a, b in zip(train_one, train_two):
        assert abs(a["loss"] - b["loss"]) < 1e-5
    eval_one, eval_two = read_events(tmp_path / "one" / "out", "eval"), read_events(tmp_path / "two" / "out", "eval")
    assert len(eval_two) == len(eval_one) == 2
    for a, b in zip(eval_one, eval_two):  # every validation sample scored once across the two ranks
        assert abs(a["loss"] - b["loss"]) < 1e-5


def test_use_dist_eval_sampler_false_evaluates_the_whole_split_on_every_rank(tmp_path, in_process):
    """LAVIS' ``use_dist_eval_sampler: false`` (its retrieval files set it): no sharding; rank 0's results
    are the split's. 12 samples in batches of 8: one process per split gives batches of 8 and 4, a
    sharded split two batches of 6."""
    settings = {"max_epoch": 1, "batch_size_eval": 8, "splits": {"train": 16, "val": 12}}
    single = make_config(fresh_dir(tmp_path / "one"), batch_size_train=8, **settings)
    whole = make_config(fresh_dir(tmp_path / "whole"), batch_size_train=4, use_dist_eval_sampler=False, **settings)
    sharded = make_config(fresh_dir(tmp_path / "sharded"), batch_size_train=4, **settings)
    for config in (whole, sharded):
        result = run_mm(config, nproc=2, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    assert in_process(single) == 0
    sizes = {name: [r["n"] for r in json.loads((tmp_path / name / "out" / "result" / "val_epoch0.json").read_text())]
             for name in ("one", "whole", "sharded")}
    assert sizes == {"one": [8, 4], "whole": [8, 4], "sharded": [6, 6]}
    losses = {name: read_events(tmp_path / name / "out", "eval")[0]["loss"] for name in sizes}
    assert abs(losses["whole"] - losses["one"]) < 1e-5 and abs(losses["sharded"] - losses["one"]) < 1e-5


def test_killing_one_rank_ends_the_whole_job_within_the_timeout(tmp_path):
    config = make_config(tmp_path, max_epoch=100000, batch_size_train=4, dist_timeout=20, log_freq=1000)
    started = time.monotonic()
    result = run_mm(config, env=toy_env(MM_TOY_KILL_AT_STEP="1:5"), nproc=2, timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert elapsed < 20 + 40, elapsed  # the collective timeout plus start-up on a busy machine
