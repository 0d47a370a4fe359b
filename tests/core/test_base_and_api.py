"""Base classes and the Python API as a LAVIS user calls them."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from mm_core.api import load_dataset, load_model, load_processor, model_zoo
from mm_core.base.dataset import resolve_inside
from mm_core.errors import CheckpointError, DataError


def test_load_model_builds_the_model_type(toy_plugin):
    model = load_model("toy_regressor", "wide", is_eval=True)
    assert model.head.in_features == 32 and not model.training
    assert model.num_parameters() == 4 * 32 + 32 + 2 * 32 + 32 + 1
    assert model.device == torch.device("cpu")


def test_from_pretrained_and_default_config_path(toy_plugin):
    from mm_toy.model import ToyRegressor

    assert ToyRegressor.from_pretrained("tiny").head.in_features == 8
    assert ToyRegressor.default_config_path("wide").name == "wide.yaml"


def test_load_checkpoint_lavis_pth_and_safetensors(toy_plugin, tmp_path):
    source = load_model("toy_regressor", "tiny")
    torch.nn.init.normal_(source.head.weight)
    torch.save({"model": source.state_dict(), "epoch": 3}, tmp_path / "lavis.pth")
    target = load_model("toy_regressor", "tiny", checkpoint=str(tmp_path / "lavis.pth"))
    assert torch.equal(target.head.weight, source.head.weight)

    save_file({"head.weight": source.head.weight.contiguous(), "surplus": torch.zeros(1)},
              str(tmp_path / "w.safetensors"))
    fresh = load_model("toy_regressor", "tiny")
    report = fresh.load_checkpoint(tmp_path / "w.safetensors")
    assert report.loaded == ["head.weight"] and report.unexpected == ["surplus"]
    assert "encoder.weight" in report.missing


def test_load_checkpoint_refuses_pickled_code(toy_plugin, tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"model": {"x": Evil()}}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_model("toy_regressor", "tiny").load_checkpoint(tmp_path / "evil.pth")


def test_strict_load_requires_trainable_but_not_frozen(toy_plugin, tmp_path):
    from mm_core.api import _build_model
    from mm_core.config.loader import load_model_defaults

    cfg = load_model_defaults("toy_regressor", "tiny").model
    cfg.freeze_encoder = True
    model = _build_model(cfg, None)
    save_file(dict(model.trainable_state_dict()), str(tmp_path / "trainable.safetensors"))
    assert "encoder.weight" not in model.trainable_state_dict()
    model.load_checkpoint(tmp_path / "trainable.safetensors", strict=True)  # frozen ones may be absent
    save_file({"head.weight": model.head.weight.detach().contiguous()}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(CheckpointError, match="missing trainable"):
        model.load_checkpoint(tmp_path / "partial.safetensors", strict=True)


def test_checkpoint_shape_mismatch_names_the_tensor(toy_plugin, tmp_path):
    wide = load_model("toy_regressor", "wide")
    save_file(dict(wide.trainable_state_dict()), str(tmp_path / "wide.safetensors"))
    with pytest.raises(CheckpointError, match=r"tensor .encoder.bias. has shape \(32,\), the model expects \(8,\)"):
        load_model("toy_regressor", "tiny").load_checkpoint(tmp_path / "wide.safetensors")


def test_load_processor_and_dataset(toy_plugin, toy_data):
    scale = load_processor("toy_scale", {"scale": 3})
    assert scale([1.0, 2.0]) == [3.0, 6.0]
    splits = load_dataset("toy_regression", cache_dir=toy_data)
    assert len(splits["val"]) == 16
    batch = splits["train"].collater([splits["train"][0], None, splits["train"][1]])
    assert batch["x"].shape == (2, 4)


def test_model_zoo_prints_a_table(toy_plugin):
    text = str(model_zoo)
    assert "Architectures" in text and "toy_regressor" in text and "tiny, wide" in text


def test_paths_cannot_escape_their_root(tmp_path):
    assert resolve_inside(tmp_path, "a/b.png") == (tmp_path / "a" / "b.png").resolve()
    with pytest.raises(DataError, match="outside the data root"):
        resolve_inside(tmp_path, "../../etc/passwd", what="annotation 7")


def test_bad_annotation_file_names_the_file_and_line(toy_plugin, tmp_path):
    from mm_toy.data import ToyRegressionDataset

    bad = tmp_path / "bad.json"
    bad.write_text('[{"x": [1], "y": 2},\n {"x": ]')
    with pytest.raises(DataError, match=r"bad.json: not valid JSON \(line 2"):
        ToyRegressionDataset(ann_paths=[bad])
    (tmp_path / "obj.json").write_text(json.dumps({"x": 1}))
    with pytest.raises(DataError, match="expected a list"):
        ToyRegressionDataset(ann_paths=[tmp_path / "obj.json"])


def test_config_value_reads_dict_configs_plain_dicts_and_none():
    from omegaconf import OmegaConf

    from mm_core.base.model import config_value

    block = {"image_size": 224, "mean": None, "llm": {"name": "qwen"}}
    for cfg in (block, OmegaConf.create(block)):
        assert config_value(cfg, "image_size", 384) == 224
        assert config_value(cfg, "mean", (0.5,)) == (0.5,)  # null means "use the default"
        assert config_value(cfg, "absent", 7) == 7
        assert config_value(cfg, "llm.name", None) == "qwen" and config_value(cfg, "llm.model", "m") == "m"
    assert config_value(None, "image_size", 384) == 384
