"""``blip_feature_extractor``: LAVIS' ``BlipFeatureExtractor`` — the ViT, the text encoder and the
image-text contrastive projections (``vision_proj``, ``text_proj``, 256-d) with ``temp``.

``extract_features(samples, mode)`` returns LAVIS' ``BlipOutputFeatures`` fields: ``image_embeds``
and ``image_embeds_proj`` (every ViT token, projected and L2-normalised), ``text_embeds`` and
``text_embeds_proj`` (every token of the text encoder without the image), ``multimodal_embeds`` (the
text encoder over ``[ENC]`` + text, cross-attending to the image). LAVIS' feature-extractor tutorial
compares ``image_embeds_proj[:, 0]`` with ``text_embeds_proj[:, 0]``. ``forward`` trains the
contrastive (ITC) loss of :mod:`mm_blip.models.contrastive`, which LAVIS' extractor does not train.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from mm_blip.models.base import BlipBase
from mm_blip.models.contrastive import itc_loss
from mm_core.base.model import config_value
from mm_core.errors import DataError

MODES = ("image", "text", "multimodal")


@dataclass
class BlipOutputFeatures:
    """LAVIS' ``BlipOutputFeatures``: what ``extract_features`` computed for ``mode`` (the rest None)."""

    image_embeds: torch.Tensor | None = None
    image_embeds_proj: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    text_embeds_proj: torch.Tensor | None = None
    multimodal_embeds: torch.Tensor | None = None


class BlipFeatureExtractor(BlipBase):
    """Features and ITC (LAVIS' ``blip_feature_extractor``). Options: ``embed_dim`` (256),
    ``max_txt_len`` (30, for training), ``vit_type``, ``image_size``, ``med_config_path``."""

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        self.max_txt_len = int(config_value(cfg, "max_txt_len", 30))
        self.build_vision(cfg)
        self.build_text_encoder()
        self.build_projections(cfg, itm_head=False)

    def _texts(self, samples: dict[str, Any], mode: str) -> Any:
        caption = samples.get("text_input")
        if caption is None:
            raise DataError(f"extract_features(mode='{mode}') needs samples['text_input']")
        return self.tokenizer([caption] if isinstance(caption, str) else list(caption), padding=True,
                              return_tensors="pt").to(self.device)

    @torch.no_grad()
    def extract_features(self, samples: dict[str, Any], mode: str = "multimodal") -> BlipOutputFeatures:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if mode != "text" and samples.get("image") is None:
            raise DataError(f"extract_features(mode='{mode}') needs samples['image']")
        if mode == "image":
            image_embeds = self.encode_image(samples["image"])
            return BlipOutputFeatures(image_embeds=image_embeds,
                                      image_embeds_proj=F.normalize(self.vision_proj(image_embeds), dim=-1))
        tokens = self._texts(samples, mode)
        if mode == "text":
            text_embeds = self.text_only(tokens.input_ids, tokens.attention_mask)
            return BlipOutputFeatures(text_embeds=text_embeds,
                                      text_embeds_proj=F.normalize(self.text_proj(text_embeds), dim=-1))
        image_embeds = self.encode_image(samples["image"])
        multimodal = self.image_grounded_text(image_embeds, tokens.input_ids, tokens.attention_mask)
        return BlipOutputFeatures(image_embeds=image_embeds, multimodal_embeds=multimodal)

    def image_feature(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ViT tokens, the normalised ITC feature of [CLS])."""
        image_embeds = self.encode_image(image)
        return image_embeds, F.normalize(self.vision_proj(image_embeds[:, 0]), dim=-1)

    def text_feature(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The normalised ITC feature of the text's [CLS] output."""
        return F.normalize(self.text_proj(self.text_only(input_ids, attention_mask)[:, 0]), dim=-1)

    def forward(self, samples: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``loss = loss_itc`` over ``image``, ``text_input`` (and ``image_id``: captions of one image are positives)."""
        _, image_feat = self.image_feature(samples["image"])
        tokens = self.tokenize(list(samples["text_input"]), padding="max_length")
        text_feat = self.text_feature(tokens.input_ids, tokens.attention_mask)
        loss = itc_loss(image_feat, text_feat, self.temp, samples.get("image_id"))
        return {"loss": loss, "loss_itc": loss.detach()}
