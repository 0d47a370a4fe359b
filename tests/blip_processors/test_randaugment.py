"""RandomAugment of ``blip_image_train``: LAVIS' operations and magnitudes, its draws, determinism under a
seed, and each operation's effect against a direct computation (numpy / torch / torchvision tensors)."""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from mm_blip_processors.randaugment import BLIP_AUGMENTATIONS, RandomAugment, apply_operation, magnitude
from mm_core.api import load_processor

# Facts read in LAVIS (lavis/processors/blip_processors.py and randaugment.py), written out here:
# BlipImageTrainProcessor uses RandomAugment(2, 5, isPIL=True, augs=[...these ten...]); MAX_LEVEL = 10;
# enhance ops: level / 10 * 1.8 + 0.1; shear: level / 10 * 0.3; translate: level / 10 * 10 (translate_const);
# rotate: level / 10 * 30; shear / translate / rotate negated with probability 1/2; each op applied with p = 0.5.
LAVIS_BLIP_AUGS = ["Identity", "AutoContrast", "Brightness", "Sharpness", "Equalize",
                   "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"]
LAVIS_LEVEL_TO_ARG = {
    "Identity": None, "AutoContrast": None, "Equalize": None,
    "Brightness": lambda m: m / 10 * 1.8 + 0.1, "Sharpness": lambda m: m / 10 * 1.8 + 0.1,
    "ShearX": lambda m: m / 10 * 0.3, "ShearY": lambda m: m / 10 * 0.3,
    "TranslateX": lambda m: m / 10 * 10.0, "TranslateY": lambda m: m / 10 * 10.0,
    "Rotate": lambda m: m / 10 * 30.0,
}
SIGNED = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}
#: BLIP's magnitude 5, in numbers: the enhance ops are identities there.
AT_FIVE = {"Brightness": 1.0, "Sharpness": 1.0, "ShearX": 0.15, "ShearY": 0.15, "TranslateX": 5.0,
           "TranslateY": 5.0, "Rotate": 15.0}


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int64)


@pytest.fixture
def image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(20, 230, (17, 23, 3), dtype=np.uint8))


# -- LAVIS' list and magnitudes ----------------------------------------------------------------------
def test_the_operation_list_is_lavis_blip_list():
    assert list(BLIP_AUGMENTATIONS) == LAVIS_BLIP_AUGS
    augment = [t for t in load_processor("blip_image_train").transform.transforms if isinstance(t, RandomAugment)]
    assert len(augment) == 1
    assert (augment[0].num_ops, augment[0].magnitude, list(augment[0].ops)) == (2, 5, LAVIS_BLIP_AUGS)


@pytest.mark.parametrize("level", [0, 1, 3, 5, 7.5, 10])
def test_magnitudes_follow_lavis_level_to_args(level):
    for name, to_arg in LAVIS_LEVEL_TO_ARG.items():
        expected = None if to_arg is None else to_arg(level)
        got = magnitude(name, level)
        assert got == pytest.approx(expected, abs=1e-12) if expected is not None else got is None, name


def test_at_blip_magnitude_five():
    assert {name: magnitude(name, 5) for name in AT_FIVE} == pytest.approx(AT_FIVE, abs=1e-12)


def test_draws_follow_lavis_with_replacement_half_applied_random_signs():
    augment = RandomAugment(2, 5)
    generator = torch.Generator().manual_seed(0)
    calls = [augment.sample(generator) for _ in range(4000)]
    applied = [op for call in calls for op in call]
    assert all(len(call) <= 2 for call in calls)
    assert abs(len(applied) - 4000) < 180  # 8000 draws kept with p = 0.5: 4000 +- 4 sigma (~179)
    counts = Counter(name for name, _ in applied)
    assert set(counts) == set(LAVIS_BLIP_AUGS)
    assert all(abs(n - len(applied) / 10) < 4 * math.sqrt(len(applied) * 0.09) for n in counts.values()), counts
    assert sum(1 for call in calls if len(call) == 2 and call[0][0] == call[1][0]) > 30  # with replacement (~100)
    for name, argument in applied:
        if name in SIGNED:
            assert abs(argument) == pytest.approx(AT_FIVE[name])
        elif name in AT_FIVE:
            assert argument == pytest.approx(AT_FIVE[name])
        else:
            assert argument is None
    for name in SIGNED:
        signs = [argument > 0 for op, argument in applied if op == name]
        assert 0.35 < sum(signs) / len(signs) < 0.65, name


def test_unknown_operation_is_refused_with_the_list():
    with pytest.raises(ValueError, match=r"unknown operation 'Solarise'.*Rotate"):
        RandomAugment(2, 5, ops=["Identity", "Solarise"])


# -- determinism ---------------------------------------------------------------------------------------
def run_train_processor(seed: int, images: list[Image.Image], numpy_seed: int = 0) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(numpy_seed)  # LAVIS drew from numpy; mm's draws must not depend on it
    proc = load_processor("blip_image_train", {"image_size": 24})
    return [proc(im) for im in images]


def test_deterministic_under_a_seed(image):
    images = [image, image.rotate(90, expand=True), image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)] * 3
    first = run_train_processor(7, images)
    again = run_train_processor(7, images, numpy_seed=123)
    other = run_train_processor(8, images)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    generator = torch.Generator().manual_seed(3)
    draws = [RandomAugment().sample(generator) for _ in range(20)]
    generator.manual_seed(3)
    assert draws == [RandomAugment().sample(generator) for _ in range(20)]


# -- each operation's effect, computed directly ---------------------------------------------------------
def test_identity_brightness_and_sharpness_at_five_leave_the_image(image):
    for name in ("Identity", "Brightness", "Sharpness"):
        assert np.array_equal(pixels(apply_operation(image, name, magnitude(name, 5))), pixels(image)), name


def test_autocontrast_stretches_each_channel(image):
    out = pixels(apply_operation(image, "AutoContrast"))
    src = pixels(image)
    for c in range(3):
        lo, hi = src[..., c].min(), src[..., c].max()
        scale = 255.0 / (hi - lo)
        table = np.clip(np.floor(np.arange(256) * scale - lo * scale), 0, 255)
        assert np.array_equal(out[..., c], table[src[..., c]]), c
        assert out[..., c].min() == 0 and out[..., c].max() == 255
    tensor = F.autocontrast(torch.from_numpy(np.asarray(image)).permute(2, 0, 1).contiguous())
    assert np.abs(out - tensor.permute(1, 2, 0).numpy().astype(np.int64)).max() <= 1  # torchvision, float rounding


def test_equalize_equals_torchvision_tensor_equalize(image):
    tensor = F.equalize(torch.from_numpy(np.asarray(image)).permute(2, 0, 1).contiguous())
    assert np.array_equal(pixels(apply_operation(image, "Equalize")), tensor.permute(1, 2, 0).numpy())


@pytest.mark.parametrize("level", [2, 9])
def test_brightness_scales_and_truncates(image, level):
    factor = magnitude("Brightness", level)
    expected = torch.from_numpy(np.asarray(image)).float().mul(factor).clamp(0, 255).to(torch.uint8).numpy()
    assert np.array_equal(pixels(apply_operation(image, "Brightness", factor)), expected)


def test_sharpness_blends_with_the_smoothing_kernel_inside_the_border(image):
    factor = magnitude("Sharpness", 2)
    x = torch.from_numpy(np.asarray(image)).permute(2, 0, 1).float()
    kernel = torch.ones(3, 1, 3, 3)
    kernel[:, :, 1, 1] = 5
    smooth = torch.floor(torch.nn.functional.conv2d(x[None], kernel / 13, groups=3)[0] + 0.5)
    expected = x.clone()
    expected[:, 1:-1, 1:-1] = (smooth + factor * (x[:, 1:-1, 1:-1] - smooth)).clamp(0, 255).floor()
    out = torch.from_numpy(pixels(apply_operation(image, "Sharpness", factor))).permute(2, 0, 1)
    assert torch.equal(out, expected.long())


@pytest.mark.parametrize("name,offset", [("TranslateX", 5.0), ("TranslateX", -5.0), ("TranslateY", 5.0),
                                         ("TranslateY", -5.0)])
def test_translate_shifts_by_whole_pixels_with_grey_fill(image, name, offset):
    src = pixels(image)
    h, w, _ = src.shape
    expected = np.full_like(src, 128)
    o = int(offset)
    ys, xs = np.mgrid[0:h, 0:w]
    sx, sy = (xs + o, ys) if name == "TranslateX" else (xs, ys + o)  # LAVIS: dst(x, y) = src(x + offset, y)
    inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
    expected[inside] = src[sy[inside], sx[inside]]
    assert np.array_equal(pixels(apply_operation(image, name, offset)), expected)


def sample_bilinear_with_grey(image: Image.Image, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """torch's grid_sample at source pixel indices (sx, sy), outside blending with grey (OpenCV's border)."""
    border = 2
    x = torch.from_numpy(np.asarray(image)).permute(2, 0, 1).float()
    x = torch.nn.functional.pad(x, (border,) * 4, value=128.0)
    h, w = x.shape[1:]
    grid = torch.from_numpy(np.stack([(sx + border) / (w - 1) * 2 - 1, (sy + border) / (h - 1) * 2 - 1], -1))
    out = torch.nn.functional.grid_sample(x[None], grid[None].float(), mode="bilinear", align_corners=True,
                                          padding_mode="border")[0]
    far = torch.from_numpy((sx < -1) | (sx > image.width) | (sy < -1) | (sy > image.height))
    out[:, far] = 128.0
    return out.permute(1, 2, 0).numpy()


@pytest.mark.parametrize("name,argument", [("ShearX", 0.15), ("ShearX", -0.15), ("ShearY", 0.15),
                                           ("ShearY", -0.15), ("Rotate", 15.0), ("Rotate", -15.0)])
def test_shear_and_rotate_match_the_inverse_map(image, name, argument):
    w, h = image.size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    if name == "ShearX":  # LAVIS' forward [[1, f, 0], [0, 1, 0]] about pixel (0, 0)
        sx, sy = xs - argument * ys, ys
    elif name == "ShearY":
        sx, sy = xs, ys - argument * xs
    else:  # counter-clockwise on screen about (W / 2, H / 2) in pixel indices (OpenCV's getRotationMatrix2D)
        a, b, cx, cy = math.cos(math.radians(argument)), math.sin(math.radians(argument)), w / 2, h / 2
        sx, sy = a * (xs - cx) - b * (ys - cy) + cx, b * (xs - cx) + a * (ys - cy) + cy
    expected = sample_bilinear_with_grey(image, sx, sy)
    out = pixels(apply_operation(image, name, argument))
    assert np.abs(out - expected).max() < 1.01  # 8-bit output (PIL truncates), float32 grid


def test_positive_rotation_turns_counter_clockwise():
    canvas = np.zeros((41, 41, 3), dtype=np.uint8)
    canvas[19:22, 34:37] = 255  # a dot right of the centre
    out = pixels(apply_operation(Image.fromarray(canvas), "Rotate", 15.0))[..., 0]
    bright = np.argwhere(out > 200)
    assert bright[:, 0].mean() < 19.5  # it moved up


def test_non_pil_input_is_accepted(image):
    tensor = torch.from_numpy(np.asarray(image)).permute(2, 0, 1).contiguous()
    torch.manual_seed(0)
    assert isinstance(RandomAugment(2, 5)(tensor), Image.Image)
