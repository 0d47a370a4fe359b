"""BLIP processors: shapes, value ranges, determinism, LAVIS' text clean-up."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mm_blip_processors.processors import CLIP_MEAN, CLIP_STD
from mm_core.api import load_processor


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8))


@pytest.mark.parametrize("name,size", [("blip_image_eval", 384), ("blip2_image_eval", 364)])
def test_eval_default_sizes_as_lavis(name, size, image):
    assert load_processor(name)(image).shape == (3, size, size)


def test_eval_is_deterministic_and_normalised(image):
    proc = load_processor("blip2_image_eval", {"image_size": 32})
    out = proc(image)
    assert out.dtype == torch.float32 and torch.equal(out, proc(image))
    # Independent: bicubic resize with PIL, scale to [0,1], CLIP normalisation.
    resized = np.asarray(image.resize((32, 32), Image.BICUBIC), dtype=np.float32) / 255.0
    expected = (torch.from_numpy(resized).permute(2, 0, 1) - torch.tensor(CLIP_MEAN)[:, None, None]) \
        / torch.tensor(CLIP_STD)[:, None, None]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    lo, hi = (0 - max(CLIP_MEAN)) / min(CLIP_STD), (1 - min(CLIP_MEAN)) / min(CLIP_STD)
    assert lo <= out.min() and out.max() <= hi


def test_grayscale_input_becomes_rgb():
    gray = Image.new("L", (20, 20), color=128)
    out = load_processor("blip_image_eval", {"image_size": 16})(gray)
    assert out.shape == (3, 16, 16)


def test_train_random_crop_and_options(image):
    proc = load_processor("blip2_image_train", {"image_size": 24, "min_scale": 0.2, "max_scale": 0.4,
                                                 "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]})
    outs = [proc(image) for _ in range(4)]
    assert all(o.shape == (3, 24, 24) for o in outs)
    assert not all(torch.equal(outs[0], o) for o in outs[1:])  # random crops differ
    assert min(o.min() for o in outs) >= -1.0 - 1e-6 and max(o.max() for o in outs) <= 1.0 + 1e-6
    assert load_processor("blip_image_train")(image).shape == (3, 384, 384)


@pytest.mark.parametrize("raw,expected", [
    ("A Dog.  Running!", "a dog running"),
    ("  (Two) cats; on: a #mat~  \n", "two cats on a mat"),
    ('He said "hi"', "he said hi"),
    ("Hello, world", "hello, world"),  # commas are kept, as in LAVIS
])
def test_caption_cleanup(raw, expected):
    assert load_processor("blip_caption")(raw) == expected


def test_caption_prompt_and_max_words():
    proc = load_processor("blip_caption", {"prompt": "a picture of ", "max_words": 3})
    assert proc("One two three four five") == "a picture of one two three"


def test_question_cleanup():
    proc = load_processor("blip_question", {"max_words": 4})
    assert proc("What is the Man holding?  ") == "what is the man"
    assert load_processor("blip_question")("Is it (really) red?") == "is it really red?"  # "?" is kept
