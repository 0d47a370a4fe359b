"""One way to load a trained model for inference (``mm_core.api.load_model_for_inference``) and
the one reading of a checkpoint argument (``mm_core.engine.checkpoint.resolve_checkpoint``)."""

from __future__ import annotations

import pytest
import torch

from mm_core.api import load_model, load_model_for_inference
from mm_core.engine.checkpoint import CheckpointStore, resolve_checkpoint
from mm_core.errors import CheckpointError, ConfigError

CONFIG = {"model": {"arch": "toy_regressor", "model_type": "tiny"}}


@pytest.fixture
def run_checkpoints(toy_plugin, tmp_path):
    """A run's ``checkpoints`` folder with two checkpoints, ``latest`` on the second, and its weights."""
    model = load_model("toy_regressor", "tiny")
    store = CheckpointStore(tmp_path / "checkpoints")
    for step in (1, 2):
        torch.nn.init.normal_(model.head.weight)
        store.write(f"step_{step}", model.state_dict(), {}, "model: {}\n", {"step": step})
    return store.root, model.head.weight.detach().clone()


def test_a_checkpoint_argument_is_read_one_way(run_checkpoints, tmp_path):
    root, _ = run_checkpoints
    assert resolve_checkpoint(root) == root / "step_2"
    assert resolve_checkpoint(root / "latest") == root / "step_2"
    assert resolve_checkpoint(root / "step_1") == root / "step_1"
    weights = root / "step_1" / "model.safetensors"
    assert resolve_checkpoint(weights) == weights
    assert CheckpointStore(root).resolve(str(root / "step_1")) == root / "step_1"
    (tmp_path / "half").mkdir()
    for missing in (tmp_path / "nothing.pth", tmp_path / "half"):
        with pytest.raises(CheckpointError, match="neither a weights file nor a complete mm checkpoint"):
            resolve_checkpoint(missing)


def test_load_model_for_inference_builds_loads_and_evaluates(run_checkpoints):
    root, latest_weights = run_checkpoints
    loaded = load_model_for_inference(CONFIG, checkpoint=str(root / "latest"))
    assert not loaded.model.training and loaded.model.device == torch.device("cpu")
    assert torch.equal(loaded.model.head.weight, latest_weights)
    assert loaded.name == "toy_regressor-tiny" and loaded.config.model.arch == "toy_regressor"
    overridden = load_model_for_inference(CONFIG, ["model.model_type=wide"])
    assert overridden.model.head.in_features == 32 and overridden.name == "toy_regressor-wide"


def test_load_model_for_inference_names_what_is_missing(toy_plugin, tmp_path):
    with pytest.raises(ConfigError, match="no model.arch to load"):
        load_model_for_inference({})
    with pytest.raises(CheckpointError, match=str(tmp_path / "gone")):
        load_model_for_inference(CONFIG, checkpoint=str(tmp_path / "gone"))
