"""A LAVIS ``pos_embed`` for another image size is resized as LAVIS' ``interpolate_pos_embed``
(lavis/models/eva_vit.py) does it: the [CLS] row kept, the patch grid bicubic-interpolated
(``align_corners=False``, no antialiasing). The expected values are computed here with
``torch.nn.functional.interpolate`` on the checkpoint's tensor, not through timm."""

from __future__ import annotations

import lavis_reference as ref
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from mm_blip2.checkpoints import load_lavis_state_dict
from mm_core.config.loader import load_model_defaults
from mm_core.registry import get_registry


def _extractor(image_size: int):
    cfg = load_model_defaults("blip2_feature_extractor", "tiny").model
    OmegaConf.update(cfg, "image_size", image_size, force_add=True)
    torch.manual_seed(1)
    return get_registry().resolve("models", "blip2_feature_extractor").from_config(cfg).eval()


def lavis_interpolation(pos_embed: torch.Tensor, new_grid: int) -> torch.Tensor:
    """LAVIS' computation, step by step: (1, 1 + g*g, D) -> (1, 1 + n*n, D)."""
    cls_row, grid = pos_embed[:, :1], pos_embed[:, 1:]
    old_grid, dim = int(grid.shape[1] ** 0.5), grid.shape[-1]
    image_like = grid.reshape(1, old_grid, old_grid, dim).permute(0, 3, 1, 2)
    resized = F.interpolate(image_like.double(), size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    return torch.cat([cls_row.double(), resized.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)


@pytest.mark.parametrize("image_size,grid", [(42, 3), (56, 4)])
def test_pos_embed_values_are_lavis_bicubic_interpolation(image_size, grid):
    sd = ref.lavis_state_dict()
    source = sd["visual_encoder.pos_embed"].clone()
    assert source.shape == (1, 1 + 2 * 2, 32)  # the checkpoint is for 28-pixel images: 2x2 patches
    model = _extractor(image_size)
    report = load_lavis_state_dict(model, dict(sd))
    assert report.missing == []
    loaded = model.visual_encoder.pos_embed.detach().double()
    expected = lavis_interpolation(source, grid)
    assert loaded.shape == expected.shape == (1, 1 + grid * grid, 32)
    torch.testing.assert_close(loaded, expected, rtol=0, atol=1e-6)
    # the corners of an upsampled grid are not copies of the source corners (bicubic, not nearest)
    assert not torch.allclose(loaded[0, 1], source[0, 1].double(), atol=1e-4)


def test_same_grid_is_loaded_unchanged():
    sd = ref.lavis_state_dict()
    model = _extractor(28)
    load_lavis_state_dict(model, dict(sd))
    assert torch.equal(model.visual_encoder.pos_embed.detach(), sd["visual_encoder.pos_embed"])
