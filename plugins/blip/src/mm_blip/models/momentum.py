"""LAVIS' momentum distillation and feature queues for ``blip_retrieval`` (``MomentumDistilationMixin``,
``SharedQueueMixin``): momentum copies of the model's own modules, updated by an exponential moving
average in each training forward, and ring buffers of the momentum features and image ids of past
batches (every rank's, gathered), registered as buffers so checkpoints hold them as LAVIS' files do."""

from __future__ import annotations

from copy import deepcopy

import torch
import torch.nn.functional as F
from torch import nn

from mm_blip.models.gather import gather_no_grad
from mm_core.errors import ConfigError, DataError

#: online module -> its momentum copy (LAVIS: ``visual_encoder_m``, ``text_encoder_m``, ``*_proj_m``).
MOMENTUM_PARTS = {"vision_model": "vision_model_m", "text_encoder": "text_encoder_m",
                  "vision_proj": "vision_proj_m", "text_proj": "text_proj_m"}
QUEUE_BUFFERS = ("image_queue", "text_queue", "idx_queue", "queue_ptr")


def build_momentum_copies(model: nn.Module) -> None:
    """``<part>_m`` for every part of :data:`MOMENTUM_PARTS`: a frozen copy (LAVIS' ``copy_params``).
    Gradient checkpointing is off in the copies: they never run backward."""
    for online, name in MOMENTUM_PARTS.items():
        copy = deepcopy(getattr(model, online)).requires_grad_(False)
        disable = getattr(copy, "activation_checkpointing_disable", None) or getattr(
            copy, "gradient_checkpointing_disable", None)
        if getattr(copy, "supports_gradient_checkpointing", False) and disable is not None:
            disable()
        setattr(model, name, copy)


@torch.no_grad()
def copy_params(model: nn.Module, parts: dict[str, str] = MOMENTUM_PARTS) -> None:
    for online, name in parts.items():
        for param, param_m in zip(getattr(model, online).parameters(), getattr(model, name).parameters()):
            param_m.copy_(param)


@torch.no_grad()
def momentum_update(model: nn.Module, momentum: float) -> None:
    """``param_m = momentum * param_m + (1 - momentum) * param`` for every momentum pair."""
    for online, name in MOMENTUM_PARTS.items():
        for param, param_m in zip(getattr(model, online).parameters(), getattr(model, name).parameters()):
            param_m.mul_(momentum).add_(param.detach(), alpha=1.0 - momentum)


def register_queues(model: nn.Module, embed_dim: int, queue_size: int) -> None:
    """LAVIS' initial queues: random unit feature columns (embed_dim, queue_size), ids -100, pointer 0."""
    if queue_size < 1:
        raise ConfigError(f"model.queue_size must be a positive number of queued features, not {queue_size}",
                        hint="LAVIS' blip_retrieval types use 57600")
    model.register_buffer("image_queue", F.normalize(torch.randn(embed_dim, queue_size), dim=0))
    model.register_buffer("text_queue", F.normalize(torch.randn(embed_dim, queue_size), dim=0))
    model.register_buffer("idx_queue", torch.full((1, queue_size), -100, dtype=torch.long))
    model.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))


@torch.no_grad()
def enqueue(model: nn.Module, image_feat_m: torch.Tensor, text_feat_m: torch.Tensor, image_ids: torch.Tensor) -> None:
    """Write every rank's momentum features and ids (gathered, in rank order) at ``queue_ptr`` and move
    it on. LAVIS requires the global batch to divide ``queue_size``; here the write wraps around the
    end instead (the same as LAVIS' when it divides)."""
    image_feats, text_feats = gather_no_grad(image_feat_m), gather_no_grad(text_feat_m)
    ids = gather_no_grad(image_ids.view(-1))
    size, count = model.image_queue.shape[1], image_feats.shape[0]
    if count > size:
        raise DataError(f"the global batch ({count} pairs) is larger than model.queue_size ({size})",
                        hint="raise model.queue_size or lower run.batch_size_train")
    ptr = int(model.queue_ptr)
    columns = (ptr + torch.arange(count, device=image_feats.device)) % size
    model.image_queue[:, columns] = image_feats.t().to(model.image_queue.dtype)
    model.text_queue[:, columns] = text_feats.t().to(model.text_queue.dtype)
    model.idx_queue[:, columns] = ids.view(1, -1)
    model.queue_ptr[0] = (ptr + count) % size
