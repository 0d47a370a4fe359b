"""Best checkpoint on a split not named "val", evaluate-only, NaN guard, SIGTERM, and a
lifecycle plugin that sees every step."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import time

import pytest
import torch

from ..toy_runs import checkpoint_dir, load_weights, make_config, mm_command, read_events, toy_env, toy_mse

pytestmark = pytest.mark.slow  # real runs / several processes: `make test-fast` skips this module

SPLITS = {"train": 64, "dev": 16, "test": 16}


def test_best_checkpoint_is_chosen_on_a_configured_split(tmp_path, in_process):
    config = make_config(tmp_path, splits=SPLITS, valid_splits=["dev"], test_splits=["test"], best_split="dev",
                         best_metric="loss", best_mode="min", init_lr=0.05, max_epoch=5, keep_last=1)
    assert in_process(config) == 0
    out = tmp_path / "out"
    dev = [e for e in read_events(out, "eval") if e["split"] == "dev"]
    assert len(dev) == 5
    best_event = min(dev, key=lambda e: e["loss"])
    best = checkpoint_dir(out, "best")
    assert best.name == f"step_{best_event['step']:07d}"  # kept although keep_last=1
    weights = load_weights(best)
    assert math.isclose(best_event["loss"], toy_mse(weights, tmp_path / "data" / "dev.json"), rel_tol=1e-5)
    # the test split is evaluated once, at the end, with the best weights
    test = [e for e in read_events(out, "eval") if e["split"] == "test"]
    assert len(test) == 1 and test[0]["epoch"] == "best"
    assert math.isclose(test[0]["loss"], toy_mse(weights, tmp_path / "data" / "test.json"), rel_tol=1e-5)
    assert (out / "result" / "test_epochbest.json").is_file()


def test_evaluate_only_scores_a_given_checkpoint_without_training(tmp_path, in_process):
    config = make_config(tmp_path, splits=SPLITS, valid_splits=["dev"], max_epoch=2)
    assert in_process(config) == 0
    out = tmp_path / "out"
    ckpt = checkpoint_dir(out, "latest")
    before = (out / "metrics.jsonl").read_text()
    assert in_process(config, "run.evaluate=true", f"run.resume_ckpt_path={ckpt}", "run.test_splits=[test]") == 0
    new = [json.loads(line) for line in (out / "metrics.jsonl").read_text()[len(before):].splitlines()]
    assert [(e["type"], e["split"]) for e in new] == [("eval", "test")]
    assert math.isclose(new[0]["loss"], toy_mse(load_weights(ckpt), tmp_path / "data" / "test.json"), rel_tol=1e-5)
    results = json.loads((out / "result" / "test_epocheval.json").read_text())
    assert sum(r["n"] for r in results) == SPLITS["test"]
    assert checkpoint_dir(out, "latest") == ckpt


def test_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, in_process, capsys):
    nan_record = 37
    config = make_config(tmp_path, nan_at=nan_record, ckpt_iters=1, max_epoch=1,
                         valid_splits=[])
    events = tmp_path / "events.jsonl"
    assert in_process(config, MM_TOY_EVENTS=str(events)) == 2
    # the step whose batch holds the bad record, from DistributedSampler's permutation
    order = torch.randperm(64, generator=torch.Generator().manual_seed(42)).tolist()
    bad_step = order.index(nan_record) // 8 + 1
    err = capsys.readouterr().err
    assert f"optimizer step {bad_step} " in err, err
    latest = checkpoint_dir(tmp_path / "out", "latest")
    assert latest.name == f"step_{bad_step - 1:07d}"
    assert all(torch.isfinite(w).all() for w in load_weights(latest).values())
    finished = [json.loads(line) for line in events.read_text().splitlines() if '"run_finished"' in line]
    assert [f["status"] for f in finished] == ["failed"]


def test_each_training_batch_carries_its_position_as_lavis_runner_adds_it(tmp_path, in_process):
    """LAVIS' runner adds ``epoch``, ``iters`` (micro-batch index in the epoch) and
    ``num_iters_per_epoch`` to every training batch; models such as BLIP's retrieval ramp on them."""
    config = make_config(tmp_path, splits={"train": 48}, max_epoch=2, batch_size_train=8, accum_grad_iters=2,
                         valid_splits=[])
    batches_file = tmp_path / "batches.jsonl"
    assert in_process(config, MM_TOY_BATCHES=str(batches_file)) == 0
    batches = [json.loads(line) for line in batches_file.read_text().splitlines()]
    assert [(b["epoch"], b["iters"], b["num_iters_per_epoch"]) for b in batches] == \
        [(epoch, i, 6) for epoch in (0, 1) for i in range(6)]


def test_lifecycle_plugin_sees_every_step_evaluation_and_checkpoint(tmp_path, in_process):
    config = make_config(tmp_path, max_epoch=3, ckpt_iters=5, log_freq=4)
    events_file = tmp_path / "events.jsonl"
    assert in_process(config, MM_TOY_EVENTS=str(events_file)) == 0
    events = [json.loads(line) for line in events_file.read_text().splitlines()
              if not json.loads(line)["hook"].startswith("register_")]
    assert events[0] == {"hook": "config_loaded", "rank": 0, "task": "base"}
    steps = [e for e in events if e["hook"] == "after_train_step"]
    assert [e["step"] for e in steps] == list(range(1, 25))
    assert [e["view_step"] for e in steps] == list(range(1, 25))  # the RunView is up to date
    assert [e["view_epoch"] for e in steps] == [0] * 8 + [1] * 8 + [2] * 8
    assert all(e["view_runner"] == "runner_base" and e["view_world_size"] == 1 and e["view_is_main"] for e in steps)
    assert all({"loss", "loss_mse", "lr", "epoch"} <= set(e["metrics"]) for e in steps)
    evaluations = [e for e in events if e["hook"] == "after_evaluation"]
    assert [e["epoch"] for e in evaluations] == [0, 1, 2]
    assert [(e["view_step"], e["view_epoch"]) for e in evaluations] == [(8, 1), (16, 2), (24, 3)]
    saved = [e for e in events if e["hook"] == "checkpoint_saved"]
    assert [e["tag"] for e in saved] == ["step_0000005", "step_0000008", "step_0000010", "step_0000015",
                                         "step_0000016", "step_0000020", "step_0000024"]
    assert [e["view_step"] for e in saved] == [5, 8, 10, 15, 16, 20, 24]
    assert events[-1] == {"hook": "run_finished", "rank": 0, "status": "completed"}


def test_a_lifecycle_plugin_stops_the_run_early_through_the_run_view(tmp_path, in_process):
    config = make_config(tmp_path, max_epoch=3, log_freq=4)
    events_file = tmp_path / "events.jsonl"
    assert in_process(config, MM_TOY_EVENTS=str(events_file), MM_TOY_STOP_AT_STEP="11") == 0
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert max(e["step"] for e in events if e["hook"] == "after_train_step") == 11
    assert [e["tag"] for e in events if e["hook"] == "checkpoint_saved"][-1] == "step_0000011"
    assert checkpoint_dir(tmp_path / "out").name == "step_0000011"
    assert events[-1]["status"] == "completed"


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    config = make_config(tmp_path, max_epoch=100000, valid_splits=[], log_freq=1000, ckpt_freq=100000)
    events_file = tmp_path / "events.jsonl"
    proc = subprocess.Popen(mm_command() + ["--config", str(config)], env=toy_env(MM_TOY_EVENTS=str(events_file)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (events_file.exists() and "after_train_step" in events_file.read_text()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Traceback" not in err
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    last_step = max(e["step"] for e in events if e["hook"] == "after_train_step")
    assert checkpoint_dir(tmp_path / "out").name == f"step_{last_step:07d}"
    assert events[-1]["hook"] == "run_finished" and events[-1]["status"] == "interrupted"
