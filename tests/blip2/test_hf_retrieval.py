"""transformers' ``Blip2ForImageTextRetrieval`` (tiny random config) saved with ``save_pretrained`` and read
by mm's ``blip2`` through ``hf_pretrained`` gives the same ITM and ITC scores (<= 1e-5)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from transformers import Blip2Config, Blip2ForImageTextRetrieval

from mm_core.config.loader import load_model_defaults
from mm_core.errors import CheckpointError
from mm_core.registry import get_registry

TEXTS = ["a red cat", "two dogs on the grass", "a bus"]


def hf_model() -> Blip2ForImageTextRetrieval:
    config = Blip2Config(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 28, "patch_size": 14, "layer_norm_eps": 1e-6, "qkv_bias": True},
        qformer_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                        "vocab_size": 142, "max_position_embeddings": 64, "cross_attention_frequency": 2,
                        "encoder_hidden_size": 32, "use_qformer_text_input": True},
        num_query_tokens=4, image_text_hidden_size=16,
    )
    torch.manual_seed(0)
    model = Blip2ForImageTextRetrieval(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))  # no parameter left at its 0 / 1 default
    return model


def mm_blip2(directory, **overrides):
    cfg = load_model_defaults("blip2", "tiny").model
    OmegaConf.update(cfg, "hf_pretrained", str(directory), force_add=True)
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return get_registry().resolve("models", "blip2").from_config(cfg).eval()


def test_itm_and_itc_scores_equal_transformers(tmp_path):
    hf = hf_model()
    hf.save_pretrained(tmp_path)
    # An HF config has one eps for the blocks and post_layernorm (LAVIS' ln_vision: 1e-5); loading the
    # directory follows its config (issue #16's pitfall), so mm computes what the HF model computes.
    # The HF retrieval model has no LM head and no temperature: they start random, on purpose.
    model = mm_blip2(tmp_path, allow_random_init=["lm_head", "temp"])
    sources = model.weight_sources.sources
    assert all(v.startswith("fresh") for k, v in sources.items() if k.startswith("lm_head.predictions.transform"))
    assert sources["itm_head.weight"] == str(tmp_path) and sources["text_embeddings.word_embeddings.weight"] == str(tmp_path)

    torch.manual_seed(3)
    image = torch.randn(3, 3, 28, 28)
    tokens = model.tokenizer(TEXTS, padding="longest", return_tensors="pt")
    with torch.no_grad():
        hf_itm = hf(pixel_values=image, input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                    use_image_text_matching_head=True).logits_per_image
        hf_itc = hf(pixel_values=image, input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                    use_image_text_matching_head=False).logits_per_image
        image_embeds, image_feats = model.retrieval_image_features(image)
        mm_itm = model.itm_logits(image_embeds, tokens.input_ids, tokens.attention_mask)
        text_feat = model.retrieval_text_features(tokens.input_ids, tokens.attention_mask)
        mm_itc = torch.einsum("iqd,td->itq", image_feats, text_feat).max(-1).values
    assert hf_itm.shape == (3, 2) and hf_itc.shape == (3, 3)
    torch.testing.assert_close(mm_itm, hf_itm, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.retrieval_itm_scores(image_embeds, tokens.input_ids, tokens.attention_mask),
                               hf_itm[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(mm_itc, hf_itc, atol=1e-5, rtol=0)
    assert (hf_itc - hf_itc.diagonal()[:, None]).abs().max() > 1e-3  # the pairs score differently


def test_missing_lm_head_is_named_not_silently_random(tmp_path):
    hf_model().save_pretrained(tmp_path)
    with pytest.raises(CheckpointError) as err:
        mm_blip2(tmp_path)
    assert "lm_head" in str(err.value) and "temp" in str(err.value)
