"""LAVIS' ``clip_image_train`` / ``clip_image_eval`` against the torchvision (v1) pipeline LAVIS writes."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from mm_core.registry import get_registry

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def photo(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def test_eval_keeps_the_aspect_ratio_and_crops_the_centre():
    processor = get_registry().resolve("processors", "clip_image_eval").from_config(None)
    image = photo(90, 60)
    expected = transforms.Compose([transforms.Resize(224, interpolation=InterpolationMode.BICUBIC),
                                   transforms.CenterCrop(224), transforms.ToTensor(),
                                   transforms.Normalize(CLIP_MEAN, CLIP_STD)])(image)
    out = processor(image)
    assert out.shape == (3, 224, 224)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    # unlike blip_image_eval's square resize
    square = get_registry().resolve("processors", "blip_image_eval").from_config(None).build(image_size=224)(image)
    assert (square - out).abs().max() > 0.1


def test_train_crops_within_its_scale_and_converts_grey_images():
    cls = get_registry().resolve("processors", "clip_image_train")
    whole = cls(image_size=32, min_scale=1.0, max_scale=1.0)
    image = photo(32, 32)
    expected = transforms.Compose([transforms.ToTensor(), transforms.Normalize(CLIP_MEAN, CLIP_STD)])(image)
    torch.testing.assert_close(whole(image), expected, atol=1e-5, rtol=0)  # scale 1, square: the image itself
    grey = cls.from_config(None)(photo(50, 40).convert("L"))
    assert grey.shape == (3, 224, 224)
