"""LAVIS' ``clip_image_train`` / ``clip_image_eval`` (the image processors of InstructBLIP's published configs).

Train: random resized crop (scale ``min_scale``..``max_scale``, 0.9..1.0, bicubic), no flip; eval: bicubic
resize of the short side to ``image_size`` then a centre crop (the aspect ratio is kept, unlike
``blip_image_eval``'s square resize). Both end with ToTensor + Normalize (OpenAI CLIP's statistics
unless ``mean`` / ``std`` are given) and return a float tensor (3, image_size, image_size).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import DictConfig
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from mm_blip_processors.processors import CLIP_MEAN, CLIP_STD
from mm_core.base.model import config_value
from mm_core.base.processor import BaseProcessor


class _ClipImageProcessor(BaseProcessor):
    def __init__(self, steps: list[Any], mean: Sequence[float] | None, std: Sequence[float] | None):
        super().__init__()
        self.transform = T.Compose([*steps, T.ToImage(), T.ToDtype(torch.float32, scale=True),
                                    T.Normalize(tuple(mean or CLIP_MEAN), tuple(std or CLIP_STD))])

    def __call__(self, item: Any) -> torch.Tensor:
        if hasattr(item, "mode") and item.mode != "RGB":
            item = item.convert("RGB")
        return self.transform(item)


class ClipImageTrainProcessor(_ClipImageProcessor):
    """Random resized crop (bicubic) + ToTensor + Normalize."""

    def __init__(self, image_size: int = 224, mean=None, std=None, min_scale: float = 0.9, max_scale: float = 1.0):
        self.image_size = int(image_size)
        crop = T.RandomResizedCrop(self.image_size, scale=(float(min_scale), float(max_scale)),
                                   interpolation=InterpolationMode.BICUBIC)
        super().__init__([crop], mean, std)

    @classmethod
    def from_config(cls, cfg: DictConfig | None = None) -> ClipImageTrainProcessor:
        return cls(image_size=config_value(cfg, "image_size", 224), mean=config_value(cfg, "mean", None),
                   std=config_value(cfg, "std", None), min_scale=config_value(cfg, "min_scale", 0.9),
                   max_scale=config_value(cfg, "max_scale", 1.0))


class ClipImageEvalProcessor(_ClipImageProcessor):
    """Bicubic resize of the short side + centre crop + ToTensor + Normalize (deterministic)."""

    def __init__(self, image_size: int = 224, mean=None, std=None):
        self.image_size = int(image_size)
        super().__init__([T.Resize(self.image_size, interpolation=InterpolationMode.BICUBIC),
                          T.CenterCrop(self.image_size)], mean, std)

    @classmethod
    def from_config(cls, cfg: DictConfig | None = None) -> ClipImageEvalProcessor:
        return cls(image_size=config_value(cfg, "image_size", 224), mean=config_value(cfg, "mean", None),
                   std=config_value(cfg, "std", None))
