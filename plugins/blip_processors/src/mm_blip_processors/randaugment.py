"""LAVIS' ``RandomAugment`` (lavis/processors/randaugment.py), as BLIP's train transform uses it, on Pillow.

One call draws ``num_ops`` operations uniformly *with replacement* from ``ops``; each is applied with
probability 0.5 at the argument its level maps to (``magnitude`` out of ``MAX_LEVEL`` = 10):

=============  ======================================  =====================  =========================
operation      argument at level ``m``                 at BLIP's ``m`` = 5    random sign
=============  ======================================  =====================  =========================
Identity       —                                       —                      —
AutoContrast   — (per channel, no cut-off)             —                      —
Equalize       —                                       —                      —
Brightness     factor ``m / 10 * 1.8 + 0.1``           1.0 (no change)        no
Sharpness      factor ``m / 10 * 1.8 + 0.1``           1.0 (no change)        no
ShearX/Y       ``m / 10 * 0.3``                        0.15                   yes
TranslateX/Y   ``m / 10 * 10`` pixels                  5 px                   yes
Rotate         ``m / 10 * 30`` degrees                 15°                    yes
=============  ======================================  =====================  =========================

Geometric operations fill with grey (128, 128, 128) and sample bilinearly. They reproduce OpenCV's
``warpAffine`` geometry of LAVIS (forward matrices about the top-left pixel's centre, rotation about
``(W / 2, H / 2)`` in pixel indices) with ``PIL.Image.transform``; the plugin README gives the measured
differences to LAVIS' OpenCV output. Random draws use torch's generator, so ``torch.manual_seed``
(which the engine and DataLoader workers set) makes them repeat.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

MAX_LEVEL = 10
#: LAVIS' fill of the pixels a geometric operation uncovers.
FILL = (128, 128, 128)
_BORDER = 2
#: The operations of LAVIS' ``BlipImageTrainProcessor``, in its order.
BLIP_AUGMENTATIONS = ("Identity", "AutoContrast", "Brightness", "Sharpness", "Equalize",
                      "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")

#: operation -> (argument at MAX_LEVEL, offset, random sign); None takes no argument.
LEVEL_ARGUMENTS: dict[str, tuple[float, float, bool] | None] = {
    "Identity": None, "AutoContrast": None, "Equalize": None,
    "Brightness": (1.8, 0.1, False), "Sharpness": (1.8, 0.1, False),
    "ShearX": (0.3, 0.0, True), "ShearY": (0.3, 0.0, True),
    "TranslateX": (10.0, 0.0, True), "TranslateY": (10.0, 0.0, True),
    "Rotate": (30.0, 0.0, True),
}


def magnitude(name: str, level: float) -> float | None:
    """The argument of operation ``name`` at ``level`` before its random sign (None: it takes none)."""
    spec = LEVEL_ARGUMENTS[name]
    return None if spec is None else level / MAX_LEVEL * spec[0] + spec[1]


# -- geometric operations: OpenCV-style forward matrices, applied with PIL -------------------------
def _rotation_matrix(degrees: float, size: tuple[int, int]) -> np.ndarray:
    """OpenCV's ``getRotationMatrix2D((W / 2, H / 2), degrees, 1)``: counter-clockwise on screen."""
    cx, cy = size[0] / 2, size[1] / 2
    a, b = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[a, b, (1 - a) * cx - b * cy], [-b, a, b * cx + (1 - a) * cy]])


def forward_matrix(name: str, argument: float, size: tuple[int, int]) -> np.ndarray:
    """The 2x3 matrix mapping a source pixel index (x, y) to its destination, as LAVIS' OpenCV ops
    build it (``size`` is PIL's (width, height))."""
    if name == "Rotate":
        return _rotation_matrix(argument, size)
    return np.array({
        "ShearX": [[1, argument, 0], [0, 1, 0]],
        "ShearY": [[1, 0, 0], [argument, 1, 0]],
        "TranslateX": [[1, 0, -argument], [0, 1, 0]],
        "TranslateY": [[1, 0, 0], [0, 1, -argument]],
    }[name], dtype=np.float64)


def warp(image: Image.Image, forward: np.ndarray) -> Image.Image:
    """``image`` under the forward affine map ``forward`` (pixel indices), bilinear, grey fill.

    PIL maps each output pixel centre (x + 0.5, y + 0.5) to an input point and samples it with pixel
    centres at + 0.5; the inverse map is shifted by half a pixel so that indices map as OpenCV's do.
    A grey border of 2 pixels makes the samples that straddle the image's edge blend with the fill,
    as OpenCV's constant border does (PIL alone would repeat the edge pixel there)."""
    linear_inv = np.linalg.inv(forward[:, :2])
    shift = -linear_inv @ forward[:, 2] + 0.5 - linear_inv @ np.array([0.5, 0.5]) + _BORDER
    data = (*linear_inv[0], shift[0], *linear_inv[1], shift[1])
    padded = ImageOps.expand(image, border=_BORDER, fill=FILL)
    return padded.transform(image.size, Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR,
                            fillcolor=FILL)


def _geometric(name: str) -> Callable[[Image.Image, float], Image.Image]:
    def apply(image: Image.Image, argument: float) -> Image.Image:
        return warp(image, forward_matrix(name, argument, image.size))

    apply.__name__ = name
    return apply


# -- photometric operations ---------------------------------------------------------------------
def brightness(image: Image.Image, factor: float) -> Image.Image:
    """Each value times ``factor``, clipped to 255 and truncated (LAVIS' lookup table, in float32)."""
    table = (np.arange(256, dtype=np.float32) * np.float32(factor)).clip(0, 255).astype(np.uint8)
    return image.point(table.tolist() * len(image.getbands()))


def sharpness(image: Image.Image, factor: float) -> Image.Image:
    """PIL's Sharpness: a blend with the 3x3 smoothing kernel (centre 5, others 1, / 13); borders kept."""
    return ImageEnhance.Sharpness(image).enhance(factor)


OPERATIONS: dict[str, Callable[..., Image.Image]] = {
    "Identity": lambda image: image,
    "AutoContrast": ImageOps.autocontrast,
    "Equalize": ImageOps.equalize,
    "Brightness": brightness,
    "Sharpness": sharpness,
    **{name: _geometric(name) for name in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")},
}


def apply_operation(image: Image.Image, name: str, argument: float | None = None) -> Image.Image:
    """One operation with its (signed) argument, as :meth:`RandomAugment.sample` returns them."""
    return OPERATIONS[name](image) if argument is None else OPERATIONS[name](image, argument)


class RandomAugment:
    """LAVIS' ``RandomAugment(N, M, isPIL=True, augs=ops)``: a PIL image in, a PIL image out."""

    def __init__(self, num_ops: int = 2, magnitude: float = 5, ops: Sequence[str] = BLIP_AUGMENTATIONS,
                 prob: float = 0.5):
        unknown = [op for op in ops if op not in OPERATIONS]
        if unknown or not ops:
            what = f"unknown operation {unknown[0]!r}" if unknown else "no operations given"
            raise ValueError(f"RandomAugment: {what}; operations: {', '.join(OPERATIONS)}")
        self.num_ops, self.magnitude, self.ops, self.prob = int(num_ops), float(magnitude), tuple(ops), prob

    def sample(self, generator: torch.Generator | None = None) -> list[tuple[str, float | None]]:
        """The operations one call applies, in order, with their signed arguments: ``num_ops`` draws
        with replacement, each kept with probability ``prob``, then its sign drawn (LAVIS' order)."""
        picks = torch.randint(len(self.ops), (self.num_ops,), generator=generator).tolist()
        chosen = []
        for index in picks:
            if torch.rand((), generator=generator).item() > self.prob:
                continue
            name = self.ops[index]
            argument = magnitude(name, self.magnitude)
            if argument is not None and LEVEL_ARGUMENTS[name][2] and torch.rand((), generator=generator) < 0.5:
                argument = -argument
            chosen.append((name, argument))
        return chosen

    def __call__(self, image: Image.Image) -> Image.Image:
        if not isinstance(image, Image.Image):
            from torchvision.transforms.v2.functional import to_pil_image

            image = to_pil_image(image)
        for name, argument in self.sample():
            image = apply_operation(image, name, argument)
        return image

    def __repr__(self) -> str:
        return f"RandomAugment(num_ops={self.num_ops}, magnitude={self.magnitude:g}, ops={list(self.ops)})"
