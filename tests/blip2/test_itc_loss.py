"""The image-text contrastive loss of ``blip2_feature_extractor`` (LAVIS' feature extractor is its
``Blip2Qformer``, so it trains with the one stage-1 ITC of :mod:`mm_blip2.models.stage1_losses`),
recomputed here element by element from the features ``extract_features`` returns:

    s[i, t]    = max over queries q of <image_proj[i, q], text_proj[t, CLS]> / temp
    target[i]  = uniform over the texts t with image_id[t] == image_id[i] (the diagonal without ids)
    loss       = (CE_0.1(s, target) + CE_0.1(s^T, target)) / 2,   CE_e: targets (1 - e) * target + e / N

with the learnable ``temp`` (0.07 at init, clamped to [0.001, 0.5]) and LAVIS' label smoothing 0.1."""

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


SMOOTHING = 0.1  # LAVIS' label smoothing of the stage-1 ITC


def _cross_entropy(logits: list[list[float]], positives: list[list[bool]] | None = None,
                   smoothing: float = SMOOTHING) -> float:
    """Mean over rows of -sum_c q_c log softmax(row)_c, in float64, where q is uniform over the row's
    positives (its own index by default), smoothed: (1 - smoothing) * q + smoothing / N."""
    total = 0.0
    for i, row in enumerate(logits):
        top = max(row)
        log_norm = top + math.log(sum(math.exp(v - top) for v in row))
        pos = positives[i] if positives else [t == i for t in range(len(row))]
        q = [(1 - smoothing) * p / sum(pos) + smoothing / len(row) for p in pos]
        total -= sum(qc * (v - log_norm) for qc, v in zip(q, row))
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
    # without smoothing the value differs: the 0.1 is visible
    assert abs((_cross_entropy(sim, smoothing=0.0) + _cross_entropy(transposed, smoothing=0.0)) / 2 - expected) > 1e-3

    # two captions of one image (image_id) are both positives of it, in both directions
    ids = [5, 8, 5]
    with torch.no_grad():
        out_ids = model({**samples, "image_id": torch.tensor(ids)})
    positives = [[ids[t] == ids[i] for t in range(n)] for i in range(n)]
    expected_ids = (_cross_entropy(sim, positives) + _cross_entropy(transposed, positives)) / 2
    assert abs(out_ids["loss"].item() - expected_ids) < 1e-5 * max(1.0, expected_ids)
    assert abs(expected_ids - expected) > 1e-3
    # guards of the formula's parts: the best query differs from the queries' mean, and the two
    # directions differ, so a mean over queries or a one-sided loss gives another value
    mean_sim = [[sum(cosine[i][t]) / nq / CHECKPOINT_TEMPERATURE for t in range(n)] for i in range(n)]
    # (compared without smoothing, which pulls every value toward log N)
    assert abs(_cross_entropy(mean_sim, smoothing=0.0) - _cross_entropy(sim, smoothing=0.0)) > 1e-2
    assert abs(_cross_entropy(mean_sim) - _cross_entropy(sim)) > 5e-3
    assert abs(_cross_entropy(sim) - _cross_entropy(transposed)) > 1e-3
