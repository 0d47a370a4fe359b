"""load_model_and_preprocess("blip2_feature_extractor", "tiny"): all modes and similarities."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from mm_core.api import load_model_and_preprocess


def test_extracts_three_modes_and_similarity():
    torch.manual_seed(0)
    model, vis, txt = load_model_and_preprocess("blip2_feature_extractor", "tiny", is_eval=True)
    rng = np.random.default_rng(0)
    pil = [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(3)]
    image = torch.stack([vis["eval"](p) for p in pil])
    texts = [txt["eval"](t) for t in ["A Cat.", "two dogs on the grass!", "a bus"]]
    samples = {"image": image, "text_input": texts}

    img = model.extract_features(samples, mode="image")
    text = model.extract_features(samples, mode="text")
    multi = model.extract_features(samples, mode="multimodal")
    nq, hidden, dim = 4, 32, 16
    assert img.image_embeds.shape == (3, nq, hidden) and img["image_embeds_proj"].shape == (3, nq, dim)
    assert text.text_embeds.shape[:1] == (3,) and text.text_embeds_proj.shape[-1] == dim
    assert multi.multimodal_embeds.shape == (3, nq, hidden)
    assert img.text_embeds is None and text.image_embeds is None
    torch.testing.assert_close(img.image_embeds_proj.norm(dim=-1), torch.ones(3, nq))

    sim = model.similarity(img, text)
    assert sim.shape == (3, 3)
    for i in range(3):  # independent: best query's cosine with the text's [CLS] feature
        for t in range(3):
            cos = [float(torch.dot(img.image_embeds_proj[i, q], text.text_embeds_proj[t, 0])) for q in range(nq)]
            assert abs(sim[i, t].item() - max(cos)) < 1e-5

    # The multimodal queries see the text: other texts give other outputs.
    other = model.extract_features({"image": image, "text_input": ["a plate", "yes", "no"]}, mode="multimodal")
    assert not torch.allclose(other.multimodal_embeds, multi.multimodal_embeds)


def test_itc_forward_returns_a_loss_and_trains_qformer():
    torch.manual_seed(0)
    model, _, _ = load_model_and_preprocess("blip2_feature_extractor", "tiny")
    model.train()
    out = model({"image": torch.randn(2, 3, 28, 28), "text_input": ["a cat", "a dog"]})
    out["loss"].backward()
    assert model.text_proj.weight.grad is not None and model.visual_encoder.patch_embed.proj.weight.grad is None
    groups = model.get_optimizer_params(weight_decay=0.05, lr_scale=0.9)
    assert {g["weight_decay"] for g in groups} == {0.0, 0.05}
