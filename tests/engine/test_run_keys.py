"""LAVIS run keys the engine implements: ``run.train_dataset_ratios`` (LAVIS' MultiIterLoader
semantics: every batch comes whole from one dataset, drawn with probability ratio / sum; seeded,
the same on every rank, and resumable) and ``run.report_metric`` (the config-level checks of the
others: tests/core/test_config.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import TensorDataset

from mm_core.engine.data import MixedTrainStream, TrainStream, build_train_stream
from mm_core.errors import ConfigError

from ..toy_runs import fresh_dir, make_config, read_events


def datasets():
    """Dataset ``a`` holds 0..39, ``b`` 1000..1011: a batch's values say where it came from."""
    return {"a": {"train": TensorDataset(torch.arange(40))}, "b": {"train": TensorDataset(torch.arange(1000, 1012))},
            "c": {"val": TensorDataset(torch.arange(5))}}


def settings(ratios, seed=7):
    return SimpleNamespace(train_splits=["train"], batch_size_train=4, seed=seed, num_workers=0,
                           group_by_length=False, train_dataset_ratios=ratios)


def take(stream, n):
    return [stream.next()[0].tolist() for _ in range(n)]


def test_batches_are_drawn_whole_from_one_dataset_by_ratio():
    stream = build_train_stream(datasets(), settings({"a": 3, "b": 1}), rank=0, world_size=1)
    assert isinstance(stream, MixedTrainStream)
    batches = take(stream, 2000)
    from_b = [all(v >= 1000 for v in b) for b in batches]
    assert all(all(v < 1000 for v in b) or all(v >= 1000 for v in b) for b in batches)  # never mixed
    assert 0.22 < sum(from_b) / len(from_b) < 0.28  # 1 / (3 + 1)
    # each dataset cycles through its own epochs: b's 12 samples (3 batches) come round again and again
    b_values = [v for b, is_b in zip(batches, from_b) if is_b for v in b]
    assert sorted(b_values[:12]) == list(range(1000, 1012))
    assert stream.batches_per_epoch == 10 + 3


def test_the_draws_are_seeded_and_the_same_on_every_rank():
    one = take(build_train_stream(datasets(), settings({"a": 1, "b": 1}), 0, 1), 50)
    assert take(build_train_stream(datasets(), settings({"a": 1, "b": 1}), 0, 1), 50) == one
    assert take(build_train_stream(datasets(), settings({"a": 1, "b": 1}, seed=8), 0, 1), 50) != one
    rank0 = build_train_stream(datasets(), settings({"a": 1, "b": 1}), 0, 2)
    rank1 = build_train_stream(datasets(), settings({"a": 1, "b": 1}), 1, 2)
    for _ in range(30):
        x, y = rank0.next()[0], rank1.next()[0]
        assert bool((x >= 1000).all()) == bool((y >= 1000).all())  # same dataset, different shards
        assert set(x.tolist()).isdisjoint(y.tolist())


def test_a_resumed_stream_continues_exactly():
    uninterrupted = take(build_train_stream(datasets(), settings({"a": 2, "b": 1}), 0, 1), 40)
    first = build_train_stream(datasets(), settings({"a": 2, "b": 1}), 0, 1)
    head = take(first, 17)
    state = first.state_dict()
    resumed = build_train_stream(datasets(), settings({"a": 2, "b": 1}), 0, 1)
    resumed.load_state_dict(state)
    assert head + take(resumed, 23) == uninterrupted
    plain = build_train_stream(datasets(), settings(None), 0, 1)
    assert isinstance(plain, TrainStream)
    with pytest.raises(ConfigError, match="train_dataset_ratios the checkpoint was written with"):
        resumed.load_state_dict({"draws": 3, "streams": {"a": {"data_epoch": 0, "batch": 1}}})


@pytest.mark.parametrize("ratios, fragment", [
    ({"a": 1.0}, "to each dataset with a train split, ['a', 'b']"),
    ({"a": 1.0, "b": 1.0, "c": 1.0}, "and to no other"),
    ({"a": 1.0, "b": 0}, "bad values: {'b': 0}"),
    ({"a": 1.0, "b": "half"}, "bad values"),
])
def test_ratios_that_do_not_name_the_training_datasets_are_errors(ratios, fragment):
    with pytest.raises(ConfigError, match="run.train_dataset_ratios") as err:
        build_train_stream(datasets(), settings(ratios), 0, 1)
    assert fragment in str(err.value) and "train_dataset_ratios: {a: 1.0, b: 1.0}" in err.value.hint


@pytest.mark.slow
def test_a_run_with_ratios_trains_and_a_wrong_name_exits_2(tmp_path, in_process):
    config = make_config(tmp_path, train_dataset_ratios={"toy_regression": 1.0}, max_epoch=2)
    assert in_process(config) == 0
    assert read_events(tmp_path / "out", "train")[-1]["step"] == 16  # 64 samples / 8, two epochs
    assert in_process(config, "run.train_dataset_ratios={coco_vqa: 1.0}", "run.output_dir=" + str(tmp_path / "o2")) == 2


def test_report_metric_false_saves_results_without_scoring(tmp_path, in_process):
    config = make_config(tmp_path, report_metric=False, max_epoch=1)
    assert in_process(config) == 0
    evals = read_events(tmp_path / "out", "eval")
    assert evals and all({k for k in e if k not in ("type", "split", "step", "epoch", "time", "wall_time")}
                         == {"agg_metrics"} and e["agg_metrics"] == 0.0 for e in evals), evals
    scored = make_config(fresh_dir(tmp_path / "scored"), max_epoch=1)
    assert in_process(scored) == 0
    assert set(read_events(tmp_path / "scored" / "out", "eval")[0]) - {"agg_metrics"} > {"type", "split", "step"}
