"""The BLIP-2 family's shared parts: EVA ViT-g vision tower (timm), ``ln_vision``, Q-Former
(transformers) with learned query tokens, freezing, layer-wise lr decay and weight loading.

Module names follow LAVIS where the libraries allow (``visual_encoder``, ``ln_vision``,
``query_tokens``, ``vision_proj``, ``text_proj``, ``llm_proj``) so LAVIS checkpoints map with a
short, documented key translation (:mod:`mm_blip2.checkpoints`).
"""

from __future__ import annotations

import contextlib
import logging
from functools import partial
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from timm.layers import LayerNormFp32
from timm.models.eva import Eva
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel

from mm_core.base.model import BaseModel, LoadReport, config_value
from mm_core.errors import ConfigError
from mm_core.weights import WeightSources

log = logging.getLogger(__name__)

#: EVA ViT-g as LAVIS builds it (timm's ``eva_giant_patch14_clip_224`` dims, 39 blocks, no final norm).
EVA_VIT_G = {"embed_dim": 1408, "depth": 39, "num_heads": 16, "patch_size": 14, "mlp_ratio": 4.3637}

#: bert-base-uncased, the Q-Former's initialisation in LAVIS.
BERT_BASE = {
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "vocab_size": 30523, "max_position_embeddings": 512,  # 30522 + LAVIS' added [DEC] token
}

#: LAVIS' ln_vision is a plain nn.LayerNorm (eps 1e-5), unlike the blocks' 1e-6.
LN_VISION_EPS = 1e-5
EVA_BLOCK_EPS = 1e-6


def build_vision_encoder(cfg: DictConfig) -> tuple[Eva, nn.Module]:
    """timm ``Eva`` with LAVIS' EVA ViT-g layout (or the dims in ``cfg.vision``) and ``ln_vision``."""
    vit_model = config_value(cfg, "vit_model", "eva_clip_g")
    if vit_model != "eva_clip_g":
        raise ConfigError(
            f"model.vit_model '{vit_model}' is not supported",
            hint="BLIP-2 here uses the EVA ViT-g tower ('eva_clip_g'); shrink it with model.vision.* for tests",
        )
    dims = {**EVA_VIT_G, **OmegaConf.to_container(OmegaConf.create(config_value(cfg, "vision", {})))}
    tower = Eva(
        img_size=int(config_value(cfg, "image_size", 224)),
        patch_size=int(dims["patch_size"]),
        num_classes=0,
        global_pool="",
        embed_dim=int(dims["embed_dim"]),
        depth=int(dims["depth"]),
        num_heads=int(dims["num_heads"]),
        mlp_ratio=float(dims["mlp_ratio"]),
        qkv_bias=True,  # separate q_bias / v_bias, k has none: LAVIS' EVA attention
        qkv_fused=True,
        drop_path_rate=float(config_value(cfg, "drop_path_rate", 0.0)),
        norm_layer=partial(nn.LayerNorm, eps=EVA_BLOCK_EPS),
        init_values=None,
        use_post_transformer_norm=False,
        use_fc_norm=False,
    )
    if config_value(cfg, "use_grad_checkpoint", False):
        tower.set_grad_checkpointing(True)
    # Computes in fp32 whatever the tower's precision (LAVIS' fp16-safe LayerNorm).
    ln_vision = LayerNormFp32(tower.num_features, eps=LN_VISION_EPS)
    return tower, ln_vision


def build_qformer(cfg: DictConfig, vision_width: int, text_input: bool) -> tuple[Blip2QFormerModel, nn.Parameter]:
    """transformers' ``Blip2QFormerModel`` (cross-attention every ``cross_attention_freq``
    layers) and ``num_query_token`` learned queries initialised N(0, 0.02)."""
    dims = {**BERT_BASE, **OmegaConf.to_container(OmegaConf.create(config_value(cfg, "qformer", {})))}
    config = Blip2QFormerConfig(
        vocab_size=int(dims["vocab_size"]),
        hidden_size=int(dims["hidden_size"]),
        num_hidden_layers=int(dims["num_hidden_layers"]),
        num_attention_heads=int(dims["num_attention_heads"]),
        intermediate_size=int(dims["intermediate_size"]),
        max_position_embeddings=int(dims["max_position_embeddings"]),
        cross_attention_frequency=int(config_value(cfg, "cross_attention_freq", 2)),
        encoder_hidden_size=vision_width,
        use_qformer_text_input=text_input,
        layer_norm_eps=1e-12,
        # BERT's init and dropout; the tiny types shrink both with the width (a 0.02 init at 32 wide
        # leaves the queries blind to the image, and 0.1 dropout drowns what they see)
        initializer_range=float(dims.get("initializer_range", 0.02)),
        hidden_dropout_prob=float(dims.get("hidden_dropout_prob", 0.1)),
        attention_probs_dropout_prob=float(dims.get("attention_probs_dropout_prob", 0.1)),
    )
    qformer = Blip2QFormerModel(config)
    num_query_token = int(config_value(cfg, "num_query_token", 32))
    query_tokens = nn.Parameter(torch.zeros(1, num_query_token, config.hidden_size))
    query_tokens.data.normal_(mean=0.0, std=config.initializer_range)
    return qformer, query_tokens


def vit_layer_id(name: str, num_layers: int) -> int:
    """Layer index of a tower parameter for layer-wise lr decay (LAVIS' ``get_num_layer``):
    embeddings 0, block i -> i + 1, anything after the blocks ``num_layers``."""
    if name in ("cls_token", "pos_embed", "mask_token") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers


class Blip2Base(BaseModel):
    """Vision tower -> ``ln_vision`` -> Q-Former, built from a LAVIS-style ``model`` block.

    Options (LAVIS names): ``vit_model``, ``image_size``, ``drop_path_rate``,
    ``use_grad_checkpoint``, ``vit_precision`` (fp16/fp32), ``freeze_vit``,
    ``unfreeze_pos_embed``, ``num_query_token``, ``cross_attention_freq``, ``freeze_qformer``,
    ``freeze_queries``; ``vision`` / ``qformer`` sub-blocks override the architecture dims
    (used by the ``tiny`` types). Weights: ``vit_pretrained`` (bare EVA keys),
    ``pretrained`` (a LAVIS BLIP-2 checkpoint) with ``load_pretrained``, ``finetuned`` with
    ``load_finetuned``, ``hf_pretrained`` (a local Hugging Face ``Blip2*`` directory), each with
    optional ``<key>_url`` / ``<key>_md5``; ``allow_random_init`` (see :mod:`mm_blip2.weights`).
    """

    #: Whether the Q-Former's text branch (word/position embeddings, text FFN) is built.
    qformer_text_input: bool = False

    def __init__(self, cfg: DictConfig):
        super().__init__()
        self.config = cfg
        self.visual_encoder, self.ln_vision = build_vision_encoder(cfg)
        self.vit_precision = str(config_value(cfg, "vit_precision", "fp16"))
        if self.vit_precision == "fp16":
            self.visual_encoder.half()
        self.qformer, self.query_tokens = build_qformer(cfg, self.visual_encoder.num_features, self.qformer_text_input)
        self.num_query_token = self.query_tokens.shape[1]
        self._frozen: list[nn.Module] = []

    # -- construction helpers -------------------------------------------------------------
    def apply_freezing(self, cfg: DictConfig) -> None:
        """Freeze as configured; frozen modules stay in eval mode (dropout, drop-path off)."""
        if config_value(cfg, "freeze_vit", True):
            self.freeze(self.visual_encoder)
            if config_value(cfg, "unfreeze_pos_embed", False):
                self.visual_encoder.pos_embed.requires_grad_(True)
        if config_value(cfg, "freeze_qformer", False):
            self.freeze(self.ln_vision)
            self.freeze(self.qformer)
        if config_value(cfg, "freeze_queries", False):
            self.query_tokens.requires_grad_(False)

    def freeze(self, module: nn.Module) -> None:
        """Stop gradients to ``module`` and keep it in eval mode through ``model.train()``."""
        module.requires_grad_(False)
        module.eval()
        self._frozen.append(module)

    def train(self, mode: bool = True) -> Blip2Base:
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self

    #: How ``pretrained`` and ``finetuned`` combine: "lavis" (finetuned instead of pretrained) or
    #: "minigpt4qwen" (both, in that order); see :mod:`mm_blip2.weights`.
    loading_order = "lavis"

    def load_weights_from_config(self, cfg: DictConfig) -> list[LoadReport]:
        """Read ``vit_pretrained``, ``pretrained`` / ``finetuned`` and ``hf_pretrained`` in the arch's
        order, record every tensor's source in ``self.weight_sources`` and stop when a part would
        silently stay random (:func:`mm_blip2.weights.load_weights`)."""
        from mm_blip2.weights import load_weights

        return load_weights(self, cfg)

    def declare_weights(self, sources: WeightSources, cfg: DictConfig) -> None:
        """Record tensors that are not read from the BLIP-2 files (nothing here; see Blip2LLM)."""

    @classmethod
    def weights_plan(cls, cfg: DictConfig) -> list[tuple[str, str]]:
        from mm_blip2.weights import plan

        return plan(cfg, cls.loading_order)

    def map_checkpoint_keys(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """LAVIS-layout keys are translated; mm's own keys pass through unchanged."""
        from mm_blip2 import checkpoints

        if any(k.startswith("Qformer.") for k in state_dict):
            return checkpoints.map_lavis_keys(state_dict, self).state_dict
        return state_dict

    # -- forward pieces --------------------------------------------------------------------
    def maybe_autocast(self, dtype: torch.dtype = torch.float16) -> contextlib.AbstractContextManager:
        """Autocast on accelerators (the fp16 tower needs it); a no-op on CPU."""
        if self.device.type == "cpu":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Patch features of the tower after ``ln_vision``: (B, 1 + patches, vision width), fp32."""
        tower_dtype = self.visual_encoder.patch_embed.proj.weight.dtype
        with self.maybe_autocast():
            return self.ln_vision(self.visual_encoder(image.to(tower_dtype)))

    def query_image(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Q-Former outputs of the learned queries attending to the image: (B, Nq, hidden),
        and the image features they attended to."""
        image_embeds = self.encode_image(image).float()
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        queries = self.query_tokens.expand(image_embeds.shape[0], -1, -1)
        output = self.qformer(
            query_embeds=queries, encoder_hidden_states=image_embeds, encoder_attention_mask=image_atts
        )
        return output.last_hidden_state[:, : queries.shape[1]], image_embeds

    # -- optimisation ----------------------------------------------------------------------
    def get_optimizer_params(self, weight_decay: float, lr_scale: float = 1.0) -> list[dict[str, Any]]:
        """Parameter groups with layer-wise lr decay over the vision tower (LAVIS): tower layer
        ``i`` of ``L`` gets ``lr_scale ** (L + 1 - i)``; biases and 1-d weights get no decay."""
        num_layers = len(self.visual_encoder.blocks)
        scales = [lr_scale ** (num_layers + 1 - i) for i in range(num_layers + 2)]
        groups: dict[str, dict[str, Any]] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            no_decay = param.ndim < 2 or name.endswith(".bias")
            decay = "no_decay" if no_decay else "decay"
            if name.startswith("visual_encoder."):
                layer = vit_layer_id(name[len("visual_encoder."):], num_layers)
                key, scale = f"vit_layer_{layer}_{decay}", scales[layer]
            else:
                key, scale = f"other_{decay}", 1.0
            group = groups.setdefault(key, {"params": [], "weight_decay": 0.0 if no_decay else weight_decay,
                                            "lr_scale": scale, "name": key})
            group["params"].append(param)
        return list(groups.values())
