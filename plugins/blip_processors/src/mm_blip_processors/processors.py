"""BLIP / BLIP-2 processors with LAVIS' names and semantics, on torchvision transforms v2.

mm-plugin-blip and mm-plugin-blip2 name them in their configs; this is their one definition.

Image processors take a PIL image (any mode; converted to RGB) and return a float tensor
(3, image_size, image_size) normalised with CLIP's statistics unless ``mean``/``std`` are given.
Text processors clean captions and questions the way LAVIS does, so metrics stay comparable.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import DictConfig
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from mm_blip_processors.randaugment import BLIP_AUGMENTATIONS, RandomAugment
from mm_core.base.model import config_value
from mm_core.base.processor import BaseProcessor

#: OpenAI CLIP's normalisation, used by LAVIS' BLIP and BLIP-2 processors.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _to_rgb(image: Any) -> Any:
    # LAVIS datasets convert to RGB before the processor; doing it here makes the processors
    # safe for grayscale/RGBA inputs given directly by users.
    if hasattr(image, "mode") and image.mode != "RGB":
        return image.convert("RGB")
    return image


class BlipImageBaseProcessor(BaseProcessor):
    """Shared normalisation of the BLIP image processors."""

    default_image_size = 384

    def __init__(self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        self.mean = tuple(mean) if mean is not None else CLIP_MEAN
        self.std = tuple(std) if std is not None else CLIP_STD
        # ToImage + ToDtype(scale=True) is v2's ToTensor: uint8 [0, 255] -> float [0, 1].
        self.to_tensor = T.Compose([T.ToImage(), T.ToDtype(torch.float32, scale=True)])
        self.normalize = T.Normalize(self.mean, self.std)

    def __call__(self, item: Any) -> torch.Tensor:
        return self.transform(_to_rgb(item))


class BlipImageTrainProcessor(BlipImageBaseProcessor):
    """LAVIS' BLIP train transform: random resized crop (bicubic) + horizontal flip +
    :class:`~mm_blip_processors.randaugment.RandomAugment` (2 ops, magnitude 5, BLIP's ten ops) +
    ToTensor + Normalize. Randomness comes from torch's generator, so a seeded run repeats."""

    def __init__(self, image_size: int = 384, mean=None, std=None, min_scale: float = 0.5, max_scale: float = 1.0):
        super().__init__(mean, std)
        self.image_size = int(image_size)
        self.transform = T.Compose([
            T.RandomResizedCrop(self.image_size, scale=(min_scale, max_scale),
                                interpolation=InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            *self.augmentations(),
            self.to_tensor,
            self.normalize,
        ])

    def augmentations(self) -> list[RandomAugment]:
        """What runs on the PIL image between the flip and ToTensor (LAVIS: RandomAugment(2, 5))."""
        return [RandomAugment(num_ops=2, magnitude=5, ops=BLIP_AUGMENTATIONS)]

    @classmethod
    def from_config(cls, cfg: DictConfig | None = None) -> BlipImageTrainProcessor:
        return cls(
            image_size=config_value(cfg, "image_size", cls.default_image_size),
            mean=config_value(cfg, "mean", None),
            std=config_value(cfg, "std", None),
            min_scale=config_value(cfg, "min_scale", 0.5),
            max_scale=config_value(cfg, "max_scale", 1.0),
        )


class Blip2ImageTrainProcessor(BlipImageTrainProcessor):
    """BLIP-2's train transform (LAVIS default size 364): as BLIP's but without RandomAugment, as
    LAVIS' ``Blip2ImageTrainProcessor`` has it."""

    default_image_size = 364

    def __init__(self, image_size: int = 364, mean=None, std=None, min_scale: float = 0.5, max_scale: float = 1.0):
        super().__init__(image_size, mean, std, min_scale, max_scale)

    def augmentations(self) -> list[RandomAugment]:
        return []


class BlipImageEvalProcessor(BlipImageBaseProcessor):
    """Bicubic resize to a square ``image_size`` + ToTensor + Normalize (deterministic)."""

    def __init__(self, image_size: int = 384, mean=None, std=None):
        super().__init__(mean, std)
        self.image_size = int(image_size)
        self.transform = T.Compose([
            T.Resize((self.image_size, self.image_size), interpolation=InterpolationMode.BICUBIC),
            self.to_tensor,
            self.normalize,
        ])

    @classmethod
    def from_config(cls, cfg: DictConfig | None = None) -> BlipImageEvalProcessor:
        return cls(
            image_size=config_value(cfg, "image_size", cls.default_image_size),
            mean=config_value(cfg, "mean", None),
            std=config_value(cfg, "std", None),
        )


class Blip2ImageEvalProcessor(BlipImageEvalProcessor):
    """BLIP-2's eval transform (LAVIS default size 364; model types set 224 or 364)."""

    default_image_size = 364

    def __init__(self, image_size: int = 364, mean=None, std=None):
        super().__init__(image_size, mean, std)


_CAPTION_PUNCT = re.compile(r"([.!\"()*#:;~])")
_SPACES = re.compile(r"\s{2,}")


def clean_caption(caption: str, max_words: int = 50) -> str:
    """LAVIS' caption clean-up: lower-case, punctuation ``.!"()*#:;~`` to spaces, runs of
    whitespace collapsed, trimmed, at most ``max_words`` words."""
    caption = _CAPTION_PUNCT.sub(" ", caption.lower())
    caption = _SPACES.sub(" ", caption).rstrip("\n").strip(" ")
    words = caption.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else caption


def clean_question(question: str, max_words: int = 50) -> str:
    """LAVIS' question clean-up: lower-case, punctuation removed, trailing spaces trimmed,
    at most ``max_words`` words."""
    question = _CAPTION_PUNCT.sub("", question.lower()).rstrip(" ")
    words = question.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else question


class BlipCaptionProcessor(BaseProcessor):
    """``prompt`` + the cleaned caption (see :func:`clean_caption`)."""

    def __init__(self, prompt: str = "", max_words: int = 50):
        super().__init__()
        self.prompt = prompt
        self.max_words = int(max_words)

    def __call__(self, caption: str) -> str:
        return self.prompt + clean_caption(caption, self.max_words)

    @classmethod
    def from_config(cls, cfg: DictConfig | None = None) -> BlipCaptionProcessor:
        return cls(prompt=config_value(cfg, "prompt", ""), max_words=config_value(cfg, "max_words", 50))


class BlipQuestionProcessor(BaseProcessor):
    """The cleaned question (see :func:`clean_question`)."""

    def __init__(self, max_words: int = 50):
        super().__init__()
        self.max_words = int(max_words)

    def __call__(self, question: str) -> str:
        return clean_question(question, self.max_words)

    @classmethod
    def from_config(cls, cfg: DictConfig | None = None) -> BlipQuestionProcessor:
        return cls(max_words=config_value(cfg, "max_words", 50))
