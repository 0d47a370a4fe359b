"""The LAVIS key table covers the ``blip2`` arch: a state dict laid out as LAVIS saves ``Blip2Qformer``
(text branch, LM head ``Qformer.cls``, ``vision_proj``, ``text_proj``, ``itm_head``, ``temp``) loads with
zero missing / unexpected / ignored keys, every tensor lands where the table says, and coverage is
enforced when a part is absent."""

from __future__ import annotations

import lavis_reference as ref
import pytest
import torch
from omegaconf import OmegaConf

from mm_blip2.checkpoints import upstream_to_mm
from mm_core.config.loader import load_model_defaults
from mm_core.errors import CheckpointError
from mm_core.registry import get_registry


def from_file(tmp_path, state):
    path = tmp_path / "blip2_stage1.pth"
    torch.save({"model": state}, path)
    cfg = load_model_defaults("blip2", "tiny").model
    OmegaConf.update(cfg, "pretrained", str(path), force_add=True)
    OmegaConf.update(cfg, "load_pretrained", True, force_add=True)
    torch.manual_seed(0)
    return get_registry().resolve("models", "blip2").from_config(cfg), str(path)


def test_lavis_layout_round_trips_with_every_key_used(tmp_path):
    sd = ref.lavis_state_dict(seed=4)
    model, path = from_file(tmp_path, sd)
    own = model.state_dict()
    sources = model.weight_sources.sources
    assert set(sources) == set(own) and set(sources.values()) == {path}  # nothing fresh, nothing else
    hit = set()
    for key, value in sd.items():
        if key == "Qformer.bert.embeddings.position_ids":
            continue  # a constant buffer transformers builds itself
        target = upstream_to_mm(key, model)
        assert target in own, key
        assert torch.equal(own[target], value), key
        hit.add(target)
    assert hit == set(own)  # every tensor of the model comes from exactly the LAVIS key the table names
    for part in ("lm_head.predictions.transform.dense.weight", "itm_head.weight", "vision_proj.weight",
                 "text_proj.weight", "temp", "text_embeddings.word_embeddings.weight",
                 "qformer.encoder.layer.0.intermediate.dense.weight"):
        assert part in hit
    # the LM decoder is the word embedding matrix, as in LAVIS
    assert model.lm_head.predictions.decoder.weight is model.text_embeddings.word_embeddings.weight


def test_missing_head_is_an_error_naming_it(tmp_path):
    sd = {k: v for k, v in ref.lavis_state_dict(seed=4).items() if not k.startswith("itm_head.")}
    with pytest.raises(CheckpointError, match="itm_head: 2 tensors"):
        from_file(tmp_path, sd)
