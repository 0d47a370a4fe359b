"""What every BLIP (v1) arch shares: the ViT (transformers' ``BlipVisionModel``), the BERT text
encoder (``BlipTextModel``) and decoder (``BlipTextLMHeadModel``) built with LAVIS' dimensions and
defaults, the tokenizer, weight loading and freezing.

Module names are those of transformers' composite classes (``BlipForConditionalGeneration``,
``BlipForQuestionAnswering``, ``BlipForImageTextRetrieval``): ``vision_model``, ``text_encoder``,
``text_decoder``, ``vision_proj``, ``text_proj``, ``itm_head``, so a Hugging Face ``Salesforce/blip-*``
directory loads by name and LAVIS' checkpoints through one table (:mod:`mm_blip.checkpoints`).

Where transformers' defaults differ from LAVIS', LAVIS' are used: the ViT's LayerNorm eps is 1e-6
(transformers: 1e-5), the ViT's init std 0.02 (a standalone transformers ``BlipVisionConfig``: 1e-10,
which leaves a random ViT blind to its input), the decoder's label smoothing 0.1 (transformers: 0),
dropout 0.1 in the text model. transformers' BLIP text cross-attention ignores the encoder attention mask (its layer passes
the mask under the self-attention's name); :func:`mask_cross_attention` routes it, so a decoder
attending to a padded question sees only the question's tokens, as LAVIS' does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mm_core.base.model import BaseModel, LoadReport, config_value
from mm_core.errors import ConfigError, DataError
from mm_core.weights import WeightSources

#: LAVIS' ``vit_type`` -> ViT dimensions (``VisionTransformerEncoder.from_config``; patch 16).
VIT_TYPES = {
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
             "patch_size": 16},
    "large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
              "patch_size": 16},
}
#: LAVIS' ``med_config.json`` (bert-base + [DEC] + [ENC]); ``med_large_config.json`` differs only in the
#: width of the image features the cross-attention reads (``encoder_width``: 1024).
MED_CONFIG = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
              "vocab_size": 30524, "max_position_embeddings": 512, "layer_norm_eps": 1e-12,
              "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}
VIT_LAYER_NORM_EPS = 1e-6
LABEL_SMOOTHING = 0.1


def _block(cfg: DictConfig, key: str) -> dict[str, Any]:
    value = config_value(cfg, key, {})
    return dict(OmegaConf.to_container(value) if isinstance(value, DictConfig) else value)


def vision_config(cfg: DictConfig):
    """transformers' ``BlipVisionConfig`` of ``vit_type`` (or ``model.vision`` overrides), LAVIS' eps."""
    from transformers import BlipVisionConfig

    vit_type = str(config_value(cfg, "vit_type", "base"))
    if vit_type not in VIT_TYPES:
        raise ConfigError(f"model.vit_type must be one of {', '.join(VIT_TYPES)}, not '{vit_type}'",
                          hint="LAVIS' BLIP towers are ViT-B/16 ('base') and ViT-L/16 ('large')")
    dims = {**VIT_TYPES[vit_type], **_block(cfg, "vision")}
    eps = float(config_value(cfg, "vit_layer_norm_epsilon", -1))
    return BlipVisionConfig(**dims, image_size=int(config_value(cfg, "image_size", 384)), hidden_act="gelu",
                            layer_norm_eps=VIT_LAYER_NORM_EPS if eps == -1 else eps, attention_dropout=0.0,
                            initializer_range=0.02)


def med_dims(cfg: DictConfig) -> dict[str, Any]:
    """The text model's dimensions: LAVIS' ``med_config_path`` (its two shipped files by name, or a
    JSON file), then ``model.text`` overrides."""
    path = str(config_value(cfg, "med_config_path", "configs/models/med_config.json"))
    dims = dict(MED_CONFIG)
    name = Path(path).name
    if name in ("med_config.json", "med_large_config.json") and not Path(path).is_file():
        dims["encoder_hidden_size"] = 1024 if name == "med_large_config.json" else 768
    elif Path(path).is_file():
        raw = json.loads(Path(path).read_text())
        keys = set(MED_CONFIG) | {"hidden_act"}
        dims.update({k: v for k, v in raw.items() if k in keys}, encoder_hidden_size=raw.get("encoder_width", 768))
    else:
        raise ConfigError(f"model.med_config_path '{path}' is not a file",
                          hint="use LAVIS' configs/models/med_config.json or med_large_config.json, or a JSON file")
    return {**dims, **_block(cfg, "text")}


def text_config(cfg: DictConfig, tokenizer: Any):
    """transformers' ``BlipTextConfig`` with LAVIS' dims, dropout, label smoothing and special ids."""
    from transformers import BlipTextConfig

    dims = med_dims(cfg)
    if dims["vocab_size"] < len(tokenizer):
        raise ConfigError(f"model.text.vocab_size {dims['vocab_size']} is smaller than the tokenizer ({len(tokenizer)})",
                          hint="BLIP's vocabulary is bert-base-uncased + [DEC] + [ENC] (30524)")
    return BlipTextConfig(**dims, label_smoothing=LABEL_SMOOTHING, is_decoder=True,
                          pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                          sep_token_id=tokenizer.sep_token_id, eos_token_id=tokenizer.sep_token_id)


def _route_encoder_mask(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    if kwargs.get("encoder_hidden_states") is not None and kwargs.get("encoder_attention_mask") is None:
        kwargs["encoder_attention_mask"] = kwargs.pop("attention_mask", None)
    return args, kwargs


def mask_cross_attention(text_model: nn.Module) -> None:
    """Make every cross-attention of a ``BlipTextModel`` apply the encoder attention mask (see the
    module docstring): transformers' layer hands it over as ``attention_mask``, which a
    cross-attention reads only as ``encoder_attention_mask``."""
    for layer in text_model.encoder.layer:
        if hasattr(layer, "crossattention"):
            layer.crossattention.self.register_forward_pre_hook(_route_encoder_mask, with_kwargs=True)


class BlipBase(BaseModel):
    """A BLIP arch: subclasses build their parts in ``__init__`` with :meth:`build_vision`,
    :meth:`build_text_encoder`, :meth:`build_text_decoder`, :meth:`build_projections`."""

    def __init__(self, cfg: DictConfig):
        super().__init__()
        from mm_blip.tokenizer import build_tokenizer

        self.tokenizer = build_tokenizer(str(config_value(cfg, "tokenizer", "bert-base-uncased")))
        self.max_txt_len = int(config_value(cfg, "max_txt_len", 35))
        self._vision_config = vision_config(cfg)
        self._text_config = text_config(cfg, self.tokenizer)
        self._text_config.encoder_hidden_size = self._vision_config.hidden_size

    @classmethod
    def from_config(cls, cfg: DictConfig) -> BlipBase:
        model = cls(cfg)
        model.load_weights_from_config(cfg)
        model.apply_freezing(cfg)
        return model

    # -- parts --------------------------------------------------------------------------------
    def build_vision(self, cfg: DictConfig) -> None:
        from transformers import BlipVisionModel

        self.vision_model = BlipVisionModel(self._vision_config)
        if config_value(cfg, "vit_grad_ckpt", False):
            self.vision_model.gradient_checkpointing_enable()

    def build_text_encoder(self) -> None:
        from transformers import BlipTextModel

        self.text_encoder = BlipTextModel(self._text_config, add_pooling_layer=False)
        mask_cross_attention(self.text_encoder)

    def build_text_decoder(self) -> None:
        from transformers import BlipTextLMHeadModel

        self.text_decoder = BlipTextLMHeadModel(self._text_config)
        mask_cross_attention(self.text_decoder.bert)

    def build_projections(self, cfg: DictConfig, itm_head: bool) -> None:
        """ITC projections to ``embed_dim``, the learnable temperature (0.07) and optionally ``itm_head``."""
        embed_dim = int(config_value(cfg, "embed_dim", 256))
        self.vision_proj = nn.Linear(self._vision_config.hidden_size, embed_dim)
        self.text_proj = nn.Linear(self._text_config.hidden_size, embed_dim)
        self.temp = nn.Parameter(0.07 * torch.ones([]))
        if itm_head:
            self.itm_head = nn.Linear(self._text_config.hidden_size, 2)

    def apply_freezing(self, cfg: DictConfig) -> None:
        """``freeze_vit: true`` freezes the ViT (LAVIS' BLIP fine-tunes it; off by default)."""
        if config_value(cfg, "freeze_vit", False):
            self.vision_model.requires_grad_(False)

    # -- shared computations --------------------------------------------------------------------
    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """The ViT's tokens after its final LayerNorm (LAVIS' ``forward_features``): (B, 1 + patches, C)."""
        size = self._vision_config.image_size
        if tuple(image.shape[-2:]) != (size, size):
            raise DataError(f"{type(self).__name__} takes {size}x{size} images (model.image_size), got "
                            f"{image.shape[-2]}x{image.shape[-1]}",
                            hint=f"set image_size: {size} in the vis_processor blocks (or change model.image_size)")
        pixels = image.to(self.device, next(self.vision_model.parameters()).dtype)
        return self.vision_model(pixel_values=pixels, interpolate_pos_encoding=False).last_hidden_state

    def tokenize(self, texts: list[str], padding: str = "longest", max_length: int | None = None) -> Any:
        return self.tokenizer(list(texts), padding=padding, truncation=True,
                              max_length=max_length or self.max_txt_len, return_tensors="pt").to(self.device)

    def image_grounded_text(self, image_embeds: torch.Tensor, input_ids: torch.Tensor,
                            attention_mask: torch.Tensor) -> torch.Tensor:
        """The text encoder over ``[ENC]`` + text, cross-attending to every image token."""
        input_ids = input_ids.clone()
        input_ids[:, 0] = self.tokenizer.enc_token_id
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        return self.text_encoder(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image_embeds,
                                 encoder_attention_mask=image_atts).last_hidden_state

    def text_only(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The text encoder without cross-attention (LAVIS' ``mode="text"``)."""
        return self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    # -- weights ----------------------------------------------------------------------------------
    def load_weights_from_config(self, cfg: DictConfig) -> list[LoadReport]:
        """Read ``pretrained`` / ``finetuned`` / ``hf_pretrained`` in LAVIS' order and check that
        every tensor came from one of them (:func:`mm_blip.checkpoints.load_weights`)."""
        from mm_blip.checkpoints import load_weights

        return load_weights(self, cfg)

    def declare_weights(self, sources: WeightSources, cfg: DictConfig) -> None:
        """A Hugging Face directory has no ``temp`` (the ITC temperature, used only in training):
        it keeps LAVIS' initial 0.07 unless a LAVIS file read as well holds one."""
        if config_value(cfg, "hf_pretrained", None) and hasattr(self, "temp"):
            sources.fresh(["temp"], "LAVIS' initial 0.07 (Hugging Face BLIP directories hold no temp)")

    @classmethod
    def weights_plan(cls, cfg: DictConfig) -> list[tuple[str, str]]:
        from mm_blip.checkpoints import plan

        return plan(cfg)

    def map_checkpoint_keys(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """LAVIS-layout keys are translated; mm's (= Hugging Face's) keys pass through."""
        from mm_blip.checkpoints import map_lavis_keys

        return map_lavis_keys(state_dict, self).state_dict
