"""`run.eval_before_train`: the untrained model is evaluated first, and the run ends with a
first-vs-last table of the validation metrics."""

from __future__ import annotations


def test_eval_before_train_logs_a_baseline_and_prints_the_table(toy_plugin, toy_data, tmp_path, monkeypatch, capsys):
    from mm_core.testing import make_config, run_training

    monkeypatch.setenv("MM_CACHE_ROOT", str(toy_data))
    loaded = make_config("toy_regressor", datasets={"toy_regression": {}},
                         run={"init_lr": 0.05, "max_epoch": 3, "batch_size_train": 8, "weight_decay": 0.0,
                              "valid_splits": ["val"], "eval_before_train": True})
    result = run_training(loaded, tmp_path / "out")
    assert result.exit_code == 0
    evals = result.of_type("eval")
    assert [e["epoch"] for e in evals] == ["init", 0, 1, 2]
    assert evals[0]["step"] == 0 and evals[-1]["loss"] < evals[0]["loss"]
    table = capsys.readouterr().out
    assert "val: epoch init -> epoch 2" in table
    assert f"{evals[0]['loss']:10.4f} -> {evals[-1]['loss']:10.4f}" in table
