"""LAVIS-layout weights load into timm's Eva + transformers' Q-Former and compute what LAVIS computes."""

from __future__ import annotations

import logging

import lavis_reference as ref
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from mm_blip2.checkpoints import load_lavis_state_dict
from mm_core.config.loader import load_model_defaults
from mm_core.errors import CheckpointError
from mm_core.registry import get_registry


def tiny_extractor(**overrides):
    cfg = load_model_defaults("blip2_feature_extractor", "tiny").model
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    torch.manual_seed(1)
    return get_registry().resolve("models", "blip2_feature_extractor").from_config(cfg).eval()


@pytest.fixture(scope="module")
def lavis_sd():
    return ref.lavis_state_dict()


@pytest.fixture(scope="module")
def loaded(lavis_sd):
    model = tiny_extractor()
    report = load_lavis_state_dict(model, dict(lavis_sd))
    return model, report


def test_every_key_maps(loaded, lavis_sd):
    model, report = loaded
    assert report.missing == [] and report.unexpected == []
    # Only what the model has no use for is set aside: the LM head, the ITM head, position_ids.
    assert sorted(report.ignored) == sorted(k for k in lavis_sd if k.startswith(("Qformer.cls.", "itm_head.")))
    assert len(report.loaded) == len(model.state_dict())
    assert model.ln_vision.eps == 1e-5


def test_outputs_match_the_reference_forward(loaded, lavis_sd):
    model, _ = loaded
    torch.manual_seed(3)
    image = torch.randn(2, 3, 28, 28)
    texts = ["a cat on a sofa", "two dogs!"]
    tokens = model.tokenizer(texts, padding="longest", return_tensors="pt")
    with torch.no_grad():
        vit = ref.vision(lavis_sd, image)
        torch.testing.assert_close(model.encode_image(image), vit, atol=1e-5, rtol=0)
        feats = model.extract_features({"image": image}, mode="image")
        expected = ref.qformer(lavis_sd, image_embeds=vit)
        torch.testing.assert_close(feats.image_embeds, expected, atol=1e-5, rtol=0)
        proj = F.normalize(expected @ lavis_sd["vision_proj.weight"].T + lavis_sd["vision_proj.bias"], dim=-1)
        torch.testing.assert_close(feats.image_embeds_proj, proj, atol=1e-5, rtol=0)

        text = model.extract_features({"text_input": texts}, mode="text").text_embeds
        expected_text = ref.qformer(lavis_sd, input_ids=tokens.input_ids, text_mask=tokens.attention_mask)
        valid = tokens.attention_mask.bool()  # padded positions are unconstrained
        torch.testing.assert_close(text[valid], expected_text[valid], atol=1e-5, rtol=0)

        multi = model.extract_features({"image": image, "text_input": texts}, mode="multimodal").multimodal_embeds
        expected_multi = ref.qformer(lavis_sd, image_embeds=vit, input_ids=tokens.input_ids,
                                     text_mask=tokens.attention_mask)[:, : ref.DIMS["Nq"]]
        torch.testing.assert_close(multi, expected_multi, atol=1e-5, rtol=0)


def test_layer_norm_eps_is_visible_in_the_outputs():
    """With a low-variance residual stream, eps matters: LAVIS' 1e-6 in blocks, 1e-5 in ln_vision."""
    sd = ref.lavis_state_dict(seed=5, tower_scale=0.003)
    model = tiny_extractor()
    load_lavis_state_dict(model, dict(sd))
    image = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        expected = ref.vision(sd, image)
        torch.testing.assert_close(model.encode_image(image), expected, atol=1e-5, rtol=0)
        model.ln_vision.eps = 1e-6  # the historical conversion bug must be caught by the comparison
        assert (model.encode_image(image) - expected).abs().max() > 1e-3


def test_checkpoint_file_relative_to_cache_root(tmp_path, monkeypatch, lavis_sd, caplog):
    monkeypatch.setenv("MM_CACHE_ROOT", str(tmp_path))
    (tmp_path / "ckpt").mkdir()
    torch.save({"model": lavis_sd}, tmp_path / "ckpt" / "blip2_tiny.pth")
    with caplog.at_level(logging.INFO, logger="mm_blip2.checkpoints"):
        model = tiny_extractor(load_pretrained=True, pretrained="ckpt/blip2_tiny.pth")
    torch.testing.assert_close(model.query_tokens.data, lavis_sd["query_tokens"])
    lines = [r.message for r in caplog.records if "loaded" in r.message]
    assert len(lines) == 1 and "missing" not in lines[0] and "ignored" in lines[0]


def test_query_token_count_mismatch_is_dropped(lavis_sd, caplog):
    model = tiny_extractor(num_query_token=3)
    before = model.query_tokens.detach().clone()
    with caplog.at_level(logging.WARNING):
        report = load_lavis_state_dict(model, dict(lavis_sd))
    assert report.dropped == ["query_tokens"] and "query tokens" in caplog.text
    assert torch.equal(model.query_tokens, before)
    assert report.missing == ["query_tokens"]


def test_pos_embed_is_interpolated_for_another_image_size(lavis_sd):
    model = tiny_extractor(image_size=42)  # 3x3 patches instead of 2x2
    report = load_lavis_state_dict(model, dict(lavis_sd))
    assert report.missing == [] and model.visual_encoder.pos_embed.shape == (1, 10, 32)
    torch.testing.assert_close(model.visual_encoder.pos_embed[:, 0], lavis_sd["visual_encoder.pos_embed"][:, 0])


def test_wrong_dimensions_are_reported(lavis_sd):
    model = tiny_extractor(**{"qformer.intermediate_size": 48})
    with pytest.raises(CheckpointError, match="intermediate"):
        load_lavis_state_dict(model, dict(lavis_sd))


def test_eva_checkpoint_with_bare_keys(tmp_path, lavis_sd):
    eva = {k[len("visual_encoder."):]: v for k, v in lavis_sd.items() if k.startswith("visual_encoder.")}
    eva["head.weight"] = torch.zeros(3, 32)  # EVA-CLIP extras that LAVIS drops too
    torch.save(eva, tmp_path / "eva_vit_g.pth")
    # Only the tower comes from a file here: the rest is random on purpose (coverage would stop otherwise).
    model = tiny_extractor(vit_pretrained=str(tmp_path / "eva_vit_g.pth"),
                           allow_random_init=["ln_vision", "qformer", "query_tokens", "text_embeddings",
                                              "vision_proj", "text_proj", "temp"])
    with torch.no_grad():
        image = torch.randn(1, 3, 28, 28)
        vit = model.visual_encoder(image)
    sd = dict(lavis_sd, **{"ln_vision.weight": torch.ones(32), "ln_vision.bias": torch.zeros(32)})
    torch.testing.assert_close(F.layer_norm(vit, (32,), eps=1e-5), ref.vision(sd, image), atol=1e-5, rtol=0)
