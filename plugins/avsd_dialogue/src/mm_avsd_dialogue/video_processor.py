"""``gpt_video_ft``: a video's pre-extracted features (I3D, VGGish) as one sequence of frames."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from mm_avsd_dialogue.sample_data import FEATURE_DIMS
from mm_avsd_dialogue.tokenizer import load_tokenizer
from mm_core.base.dataset import resolve_inside
from mm_core.base.model import config_value
from mm_core.base.processor import BaseProcessor
from mm_core.errors import ConfigError, DataError


class GPTVideoFeatureProcessor(BaseProcessor):
    """Loads ``<root>/<feature>/<video_id>.npy`` for every visual and audio feature, truncates them
    to the shortest number of frames and concatenates them along the feature axis.

    Options: ``visual_ft`` (default ``["i3d_rgb"]``), ``audio_ft`` (default ``["vggish"]``),
    ``feature_dims`` (sizes of feature names other than i3d_flow 2048, i3d_rgb 2048, vggish 128)
    and ``tokenizer`` (where the ``<video>`` token-type id comes from; default ``gpt2``).
    Called as ``processor(feature_root, video_id)`` or ``processor((feature_root, video_id))``;
    returns ``video_fts`` (frames, dim) and ``token_type_ids`` (frames,) filled with the ``<video>`` id.
    """

    def __init__(self, visual_ft: Sequence[str] = ("i3d_rgb",), audio_ft: Sequence[str] = ("vggish",),
                 tokenizer: str = "gpt2", feature_dims: Mapping[str, int] | None = None) -> None:
        super().__init__()
        self.visual_ft = list(visual_ft)
        self.audio_ft = list(audio_ft)
        self.feature_names = self.visual_ft + self.audio_ft
        if not self.feature_names:
            raise ConfigError("gpt_video_ft: visual_ft and audio_ft are both empty",
                              hint="name at least one feature, e.g. visual_ft: [i3d_rgb]")
        self.feature_dims = {**FEATURE_DIMS, **dict(feature_dims or {})}
        unknown = [n for n in self.feature_names if n not in self.feature_dims]
        if unknown:
            raise ConfigError(f"gpt_video_ft: feature(s) {unknown} have no known size",
                              hint="give their sizes in the processor's feature_dims option")
        self.tokenizer_name = tokenizer
        self.video_token_id = int(load_tokenizer(tokenizer).convert_tokens_to_ids("<video>"))

    @property
    def dim(self) -> int:
        """Size of one concatenated frame (what the model's ``len_video_ft`` must be)."""
        return sum(self.feature_dims[n] for n in self.feature_names)

    def load_feature(self, root: str | Path, name: str, video_id: str) -> np.ndarray:
        """One feature file as a (frames, dim) float32 array, checked against its expected size."""
        path = resolve_inside(root, f"{name}/{video_id}.npy", what=f"video '{video_id}'")
        if not path.is_file():
            raise DataError(
                f"video '{video_id}': feature '{name}' not found at {path}",
                hint=f"extract '{name}' features for this video, or drop '{name}' from the "
                "processor's visual_ft/audio_ft",
            )
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DataError(f"{path}: not a readable .npy array: {exc}") from exc
        expected = self.feature_dims[name]
        if array.ndim != 2 or array.shape[1] != expected or array.shape[0] == 0:
            raise DataError(
                f"{path}: feature '{name}' has shape {tuple(array.shape)}, expected (frames, {expected})",
                hint="the file was extracted with another model or layer; set feature_dims if the size is intended",
            )
        return array.astype(np.float32, copy=False)

    def __call__(self, item: str | Path | tuple[str | Path, str],
                 video_id: str | None = None) -> dict[str, torch.Tensor]:
        """Features of one video: ``processor(feature_root, video_id)`` (LAVIS' call), or one item
        ``processor((feature_root, video_id))`` as :class:`BaseProcessor`'s contract has it."""
        feature_root, video_id = (item, video_id) if video_id is not None else item
        arrays = [self.load_feature(feature_root, name, video_id) for name in self.feature_names]
        frames = min(len(a) for a in arrays)
        joined = np.concatenate([a[:frames] for a in arrays], axis=1)
        return {
            "video_fts": torch.from_numpy(np.ascontiguousarray(joined)),
            "token_type_ids": torch.full((frames,), self.video_token_id, dtype=torch.long),
        }

    @classmethod
    def from_config(cls, cfg: DictConfig | None = None) -> GPTVideoFeatureProcessor:
        dims = config_value(cfg, "feature_dims", None)
        return cls(
            visual_ft=_names(config_value(cfg, "visual_ft", ["i3d_rgb"]), "visual_ft"),
            audio_ft=_names(config_value(cfg, "audio_ft", ["vggish"]), "audio_ft"),
            tokenizer=str(config_value(cfg, "tokenizer", "gpt2")),
            feature_dims=OmegaConf.to_container(dims) if isinstance(dims, DictConfig) else dims,
        )


def _names(value: Any, key: str) -> list[str]:
    """A feature list from a config value; LAVIS' ``'none'`` and null mean no feature."""
    if value is None or value == "none":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple, ListConfig)):
        return [str(v) for v in value]
    raise ConfigError(f"gpt_video_ft: {key} must be a list of feature names, got {value!r}")
