"""The BLIP-2 -> LLM composition as pipeline layers (``deepspeed_pipe_runner``), MPP-LLaVA's split:
vision tower + Q-Former + projection + token embeddings first, then the LLM backend's decoder blocks
and its head (``BaseLLM.pipeline_parts``, offered by backends that can split), loss on the last
stage. Text is tokenised before the pipeline (:func:`pipeline_batch`): stages exchange tensors only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mm_core.errors import ConfigError


class ImageTextEmbedding(nn.Module):
    """First stage: images -> projected Q-Former tokens, spliced into the token embeddings.

    ``(input_ids, attention_mask, images (N, 3, H, W), counts (B,)) -> (embeds, attention_mask)``.
    Registers the composition's own vision, Q-Former, projection and embedding modules (frozen
    ones included), so DeepSpeed's optimizer and checkpoints see exactly them.
    """

    def __init__(self, owner: nn.Module):
        super().__init__()
        self.visual_encoder, self.ln_vision, self.qformer = owner.visual_encoder, owner.ln_vision, owner.qformer
        self.query_tokens = owner.query_tokens
        self.llm_proj = owner.llm_proj
        self.embed = owner.llm.model.get_input_embeddings()
        object.__setattr__(self, "_owner", owner)  # its methods, not a second copy of its modules

    def train(self, mode: bool = True) -> ImageTextEmbedding:
        """Frozen parts stay in eval mode (no dropout), as in ``Blip2Base.train``."""
        super().train(mode)
        for module in getattr(self._owner, "_frozen", []):
            module.eval()
        return self

    def forward(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        input_ids, attention_mask, images, counts = inputs
        owner = self._owner
        counts = [int(n) for n in counts.tolist()]
        tokens = owner.encode_images(images) if sum(counts) else None
        per_sample, start = [], 0
        for n in counts:
            per_sample.append(tokens[start:start + n].flatten(0, 1) if n
                              else owner.llm_proj.weight.new_zeros(0, owner.llm.hidden_size))
            start += n
        return owner._embed(input_ids, per_sample), attention_mask


def pipeline_layers(model: nn.Module) -> dict[str, Any]:
    """``{"layers", "loss_fn", "batch"}`` of ``BaseModel.pipeline_layers`` for a ``Blip2LLM``."""
    if not hasattr(model.llm, "pipeline_parts"):
        raise ConfigError(f"the LLM backend {type(model.llm).__name__} cannot be split into pipeline stages",
                          hint="use a backend that offers pipeline_parts() (qwen, hf_causal_lm), or another runner")
    if model.qformer_text_input:
        raise ConfigError(f"{type(model).__name__}'s Q-Former reads the instruction text: the pipeline runner "
                          "passes only tensors between stages and does not support it yet",
                          hint="train it with runner_base or the deepspeed_runner")
    if model.feature_cache is not None:
        raise ConfigError("model.cache_image_features is not supported by the pipeline runner",
                          hint="set model.cache_image_features: false")
    parts, loss_fn = model.llm.pipeline_parts()
    return {"layers": [ImageTextEmbedding(model), *parts], "loss_fn": loss_fn,
            "batch": lambda samples: pipeline_batch(model, samples)}


def pipeline_batch(model: nn.Module, samples: dict[str, Any]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """A collated batch as the first stage's tensors and the last stage's labels (what
    ``Blip2LLM.forward`` computes before the LLM, in the same order)."""
    conversations = model.conversations_of(samples)
    image = samples.get("image")
    conversations = [model.with_image_mark(c, image is not None) for c in conversations]
    encoded = [model.llm.encode_conversation(c, model.num_query_token, model.max_txt_len) for c in conversations]
    batch = model.llm.collate(encoded)
    if image is None:
        images = torch.zeros(0, 3, 1, 1)  # no image is encoded
        counts = [0] * len(conversations)
    else:
        per_sample = list(image.unsqueeze(1)) if isinstance(image, torch.Tensor) and image.dim() == 4 else (
            [image] if isinstance(image, torch.Tensor) else [im.unsqueeze(0) if im.dim() == 3 else im for im in image])
        images, counts = torch.cat(per_sample), [im.shape[0] for im in per_sample]
    inputs = (batch["input_ids"], batch["attention_mask"], images, torch.tensor(counts, dtype=torch.long))
    return inputs, batch["labels"]
