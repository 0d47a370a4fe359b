"""The image-text contrastive loss of ``blip2_feature_extractor`` pinned to its formula, recomputed
here element by element from the features ``extract_features`` returns:

    s[i, t] = max over queries q of <image_proj[i, q], text_proj[t, CLS]> / temp
    loss    = (CE(s, diagonal) + CE(s^T, diagonal)) / 2

This pins the loss *as it is today* (hard targets, the learnable ``temp``: 0.07 at init). LAVIS' stage-1 ITC
adds label smoothing 0.1; the issue that brings stage-1 training to LAVIS' formula changes this
test together with the loss."""

from __future__ import annotations

import math

import lavis_reference as ref
import numpy as np
import pytest
import torch
from PIL import Image

from mm_blip2.checkpoints import load_lavis_state_dict
from mm_core.api import load_model_and_preprocess

INITIAL_TEMPERATURE = 0.07  # LAVIS' Blip2Qformer: self.temp = nn.Parameter(0.07 * torch.ones([]))
CHECKPOINT_TEMPERATURE = 0.05  # the "temp" tensor of lavis_reference.lavis_state_dict()


def _cross_entropy(logits: list[list[float]]) -> float:
    """Mean over rows of -log softmax(row)[row index], in float64."""
    total = 0.0
    for i, row in enumerate(logits):
        top = max(row)
        log_norm = top + math.log(sum(math.exp(v - top) for v in row))
        total += log_norm - row[i]
    return total / len(logits)


def test_itc_loss_equals_the_formula_from_the_features():
    torch.manual_seed(0)
    model, vis, txt = load_model_and_preprocess("blip2_feature_extractor", "tiny", is_eval=True)
    assert float(model.temp.detach()) == pytest.approx(INITIAL_TEMPERATURE, rel=1e-6)
    # LAVIS-layout random weights: a fresh tiny model scores every pair almost alike, these do not
    load_lavis_state_dict(model, ref.lavis_state_dict())
    assert float(model.temp.detach()) == pytest.approx(CHECKPOINT_TEMPERATURE, rel=1e-6)
    rng = np.random.default_rng(4)
    images = torch.stack([vis["eval"](Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)))
                          for _ in range(3)])
    texts = [txt["eval"](t) for t in ["a red cat", "two dogs on the grass", "a bus in the city"]]
    samples = {"image": images, "text_input": texts}

    with torch.no_grad():
        out = model(samples)
    image_proj = model.extract_features(samples, mode="image").image_embeds_proj.double()
    text_cls = model.extract_features(samples, mode="text").text_embeds_proj[:, 0].double()
    n, nq = image_proj.shape[:2]
    cosine = [[[float(image_proj[i, q] @ text_cls[t]) for q in range(nq)] for t in range(n)] for i in range(n)]
    sim = [[max(cosine[i][t]) / CHECKPOINT_TEMPERATURE for t in range(n)] for i in range(n)]
    transposed = [[sim[i][t] for i in range(n)] for t in range(n)]
    expected = (_cross_entropy(sim) + _cross_entropy(transposed)) / 2
    assert out["loss"].item() == float(out["loss_itc"])
    assert abs(out["loss"].item() - expected) < 1e-5 * max(1.0, expected)
    # guards of the formula's parts: the best query differs from the queries' mean, and the two
    # directions differ, so a mean over queries or a one-sided loss gives another value
    mean_sim = [[sum(cosine[i][t]) / nq / CHECKPOINT_TEMPERATURE for t in range(n)] for i in range(n)]
    assert abs(_cross_entropy(mean_sim) - _cross_entropy(sim)) > 1e-2
    assert abs(_cross_entropy(sim) - _cross_entropy(transposed)) > 1e-3
