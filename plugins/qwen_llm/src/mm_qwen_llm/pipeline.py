"""A Hugging Face decoder-only LM cut into pipeline pieces (``deepspeed_pipe_runner``).

What MPP-LLaVA's ``minigpt4qwen_pipe`` does for Qwen-7B, for any transformers model with the
Llama/Qwen2 layout (``model.layers``, ``model.norm``, ``model.rotary_emb``, ``lm_head``): one
piece per decoder block and a head (final norm + LM head). Pieces pass ``(hidden, attention_mask)``
between stages; each rebuilds the causal mask and rotary embeddings with transformers' own
functions, so a split forward is the unsplit one. The pieces hold the model's own modules (no
copies): trained weights keep their names in the composed model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mm_core.errors import ConfigError


def decoder_of(hf_model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """``(inner model, causal-LM wrapper)`` under peft's wrapper, if any."""
    base = hf_model.get_base_model() if hasattr(hf_model, "peft_config") else hf_model
    inner = getattr(base, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(base, "lm_head"):
        raise ConfigError(f"{type(base).__name__} has no model.layers / lm_head: the pipeline runner cannot split it",
                          hint="pipeline stages need a Llama/Qwen2-layout LLM; use the deepspeed_runner (ZeRO) instead")
    return inner, base


class DecoderBlock(nn.Module):
    """One decoder layer: ``(hidden, attention_mask) -> (hidden, attention_mask)``."""

    def __init__(self, inner: nn.Module, index: int):
        super().__init__()
        self.layer = inner.layers[index]
        self.index = index
        # the rotary module holds buffers only; it is shared, not trained
        object.__setattr__(self, "_inner", inner)

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, attention_mask = inputs
        inner = self._inner
        positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        mask = causal_mask(inner, hidden, attention_mask, positions, inner.config.layer_types[self.index]
                           if getattr(inner.config, "layer_types", None) else "full_attention")
        embeddings = inner.rotary_emb(hidden, positions)
        out = self.layer(hidden, attention_mask=mask, position_embeddings=embeddings, position_ids=positions,
                         use_cache=False)
        return (out[0] if isinstance(out, tuple) else out), attention_mask


class LMHead(nn.Module):
    """Final norm and LM head: ``(hidden, attention_mask) -> logits`` (fp32)."""

    def __init__(self, inner: nn.Module, base: nn.Module):
        super().__init__()
        self.norm = inner.norm
        self.lm_head = base.lm_head

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        hidden, _ = inputs
        return self.lm_head(self.norm(hidden)).float()


def causal_mask(inner: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor,
                kind: str) -> Any:
    """The mask ``inner.forward`` gives its layers of ``kind`` (transformers' own mask functions)."""
    from transformers import masking_utils

    build = (masking_utils.create_sliding_window_causal_mask if kind == "sliding_attention"
             else masking_utils.create_causal_mask)
    return build(config=inner.config, inputs_embeds=hidden, attention_mask=attention_mask, cache=None,
                 position_ids=positions)


def pipeline_parts(hf_model: nn.Module) -> list[nn.Module]:
    """The decoder blocks and the head of ``hf_model``, in order (embeddings are the caller's)."""
    inner, base = decoder_of(hf_model)
    return [DecoderBlock(inner, i) for i in range(len(inner.layers))] + [LMHead(inner, base)]


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """transformers' causal-LM loss: next-token cross-entropy, ``-100`` ignored, mean over tokens."""
    return nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten().to(logits.device),
                                       ignore_index=-100)
