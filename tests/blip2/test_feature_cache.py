"""``cache_image_features``: same losses as without it, reuse on later epochs, emptied when the
frozen weights change, unused while the image path trains."""

from __future__ import annotations

import pytest
import torch
from test_blip2_llm import build

CONVERSATION = [{"from": "user", "value": "<ImageHere> what is it?"}, {"from": "assistant", "value": "a red circle"}]


def batches() -> list[dict]:
    """Two fixed batches of three distinct images each (the eval transform: same tensor every epoch)."""
    generator = torch.Generator().manual_seed(1)
    return [{"image": torch.randn(3, 3, 28, 28, generator=generator), "conversations": [CONVERSATION] * 3}
            for _ in range(2)]


def train_losses(model, epochs: int) -> list[float]:
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(epochs):
        for samples in batches():
            loss = model(samples)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return losses


def test_cached_training_has_the_same_losses_and_reuses_features(test_llm_plugin):
    plain = train_losses(build(), epochs=3)
    model = build(cache_image_features=True)
    cached = train_losses(model, epochs=3)
    assert cached == pytest.approx(plain, abs=1e-6)
    assert plain[-1] < plain[0]  # the projection did train, so equal losses are not trivially equal
    assert (model.feature_cache.misses, model.feature_cache.hits) == (6, 12)  # 6 images, epochs 2 and 3 hit
    assert len(model.feature_cache) == 6


def test_changed_frozen_weights_empty_the_cache(test_llm_plugin):
    model = build(cache_image_features=True).eval()
    samples = batches()[0]
    model(samples)
    assert len(model.feature_cache) == 3
    with torch.no_grad():  # e.g. a checkpoint loaded into the tower
        model.visual_encoder.blocks[0].mlp.fc1.weight.add_(0.5)
    cached = model(samples)["loss"]
    assert model.feature_cache.misses == 6  # recomputed, not served stale
    cache, model.feature_cache = model.feature_cache, None
    assert cached.item() == pytest.approx(model(samples)["loss"].item(), abs=1e-6)
    model.feature_cache = cache
    reference = build(cache_image_features=True).eval()
    model.load_state_dict(reference.state_dict())
    assert model(samples)["loss"].item() == pytest.approx(reference(samples)["loss"].item(), abs=1e-6)
    assert model.feature_cache.misses == 9


def test_the_cache_steps_aside_while_the_qformer_trains(test_llm_plugin):
    plain = train_losses(build(freeze_qformer=False), epochs=2)
    model = build(freeze_qformer=False, cache_image_features=True)
    assert train_losses(model, epochs=2) == pytest.approx(plain, abs=1e-6)
    assert len(model.feature_cache) == 0 and model.feature_cache.hits == 0


def test_a_different_transform_of_an_image_is_a_different_key():
    from mm_blip2.models.feature_cache import FrozenFeatureCache

    image = torch.rand(3, 8, 8)
    assert FrozenFeatureCache.key(image) == FrozenFeatureCache.key(image.clone())
    assert FrozenFeatureCache.key(image) != FrozenFeatureCache.key(image.flip(-1))
    assert FrozenFeatureCache.key(image) != FrozenFeatureCache.key(image.double())
