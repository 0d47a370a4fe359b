"""The three losses of BLIP-2's first stage (LAVIS' ``Blip2Qformer.forward``), as functions of features,
and the gathering across ranks they need. The one definition of the ITC loss in this plugin
(``blip2`` and ``blip2_feature_extractor`` both call :func:`itc_loss`).

* ITC: image ``i`` x text ``t`` similarity = max over queries of ``image_feats[i, q] . text_feat[t]``,
  divided by the learnable temperature (clamped to [0.001, 0.5] by the model, BLIP's habit). Negatives
  are every rank's samples (:func:`gather_with_grad`); pairs whose ``image_id`` is equal are all
  positives (target = uniform over them, BLIP's retrieval ITC), and the targets are smoothed by 0.1.
  With distinct ids this is exactly LAVIS' stage-1 ITC.
* ITM: one hard negative text per image and one hard negative image per text, drawn from
  ``softmax(similarity) + 1e-4`` over the gathered batch with the sample's own positives at 0
  (:func:`hard_negative_weights`); labels are 1 for the ``bs`` positive pairs, 0 for the ``2 bs`` negatives.
* ITG: the text's first token is replaced by ``[DEC]``, padding is ignored (-100), next-token
  cross-entropy with label smoothing 0.1 (LAVIS' ``BertLMHeadModel``).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from mm_core.errors import DataError

#: LAVIS' smoothing of the ITC and ITG targets.
LABEL_SMOOTHING = 0.1
#: What keeps every candidate of the hard-negative draw possible (LAVIS' ``softmax + 1e-4``).
NEGATIVE_FLOOR = 1e-4


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if distributed() else (0, 1)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward: the gradients every rank computed for the gathered tensor are
    summed (all_reduce) and each rank keeps the slice of its own part (LAVIS' ``GatherLayer``)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad.chunk(dist.get_world_size(), dim=0)[dist.get_rank()]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated on dim 0 in rank order; the backward pass sums each
    rank's gradient for a part back to the rank that owns it, so two processes train as one."""
    if not distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)


@torch.no_grad()
def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated on dim 0 (token ids, image ids: nothing to differentiate)."""
    if not distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def check_equal_batches(batch_size: int, device: torch.device) -> None:
    """All ranks must hold the same batch size for the gathers (LAVIS assumes it silently)."""
    if not distributed():
        return
    sizes = gather_no_grad(torch.tensor([batch_size], device=device))
    if int(sizes.min()) != int(sizes.max()):
        raise DataError(f"ranks hold batches of sizes {sizes.tolist()}; BLIP-2's ITC/ITM gather needs equal ones",
                        hint="drop the last incomplete batch of the training split (equal batch_size_train per rank)")


def image_ids_tensor(image_ids: Any, batch_size: int, device: torch.device) -> torch.Tensor:
    """``samples["image_id"]`` as a LongTensor; without ids every pair is its own image (offset by rank
    so ids stay distinct across ranks); string ids are hashed (crc32) so they can be gathered."""
    if image_ids is None:
        rank, _ = rank_and_world()
        return torch.arange(batch_size, device=device) + rank * batch_size - 2**40
    if isinstance(image_ids, torch.Tensor):
        return image_ids.to(device=device, dtype=torch.long).view(-1)
    values = [int(v) if isinstance(v, int) or str(v).lstrip("-").isdigit() else zlib.crc32(str(v).encode())
              for v in (image_ids if isinstance(image_ids, Sequence) and not isinstance(image_ids, str) else [image_ids])]
    return torch.tensor(values, dtype=torch.long, device=device)


def query_max_similarity(image_feats: torch.Tensor, text_feat: torch.Tensor) -> torch.Tensor:
    """[images, texts]: max over queries of the dot products (both L2-normalised: cosine)."""
    return torch.einsum("iqd,td->itq", image_feats, text_feat).max(dim=-1).values


def itc_loss(image_feats: torch.Tensor, text_feat: torch.Tensor, temp: torch.Tensor,
             image_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """LAVIS' ITC over the gathered batch. ``image_feats`` [B, Nq, D] and ``text_feat`` [B, D] are this
    rank's (normalised), ``image_ids`` [B]. Returns the loss, ``sim_i2t`` and ``sim_t2i`` ([B, world B],
    divided by ``temp``) and the gathered ids."""
    image_feats_all = gather_with_grad(image_feats)
    text_feat_all = gather_with_grad(text_feat)
    ids_all = gather_no_grad(image_ids)
    sim_i2t = query_max_similarity(image_feats, text_feat_all) / temp
    sim_t2i = query_max_similarity(image_feats_all, text_feat).t() / temp
    positives = (image_ids[:, None] == ids_all[None, :]).float()
    targets = positives / positives.sum(dim=1, keepdim=True)
    loss = (F.cross_entropy(sim_i2t, targets, label_smoothing=LABEL_SMOOTHING)
            + F.cross_entropy(sim_t2i, targets, label_smoothing=LABEL_SMOOTHING)) / 2
    return loss, sim_i2t, sim_t2i, ids_all


@torch.no_grad()
def hard_negative_weights(sim: torch.Tensor, image_ids: torch.Tensor, ids_all: torch.Tensor) -> torch.Tensor:
    """Sampling weights of the hard negatives: ``softmax(sim) + 1e-4`` per row, 0 where the candidate
    shares the row's image id (the positive itself and any duplicate pair)."""
    weights = F.softmax(sim.float(), dim=1) + NEGATIVE_FLOOR
    weights.masked_fill_(image_ids[:, None] == ids_all[None, :], 0.0)
    empty = (weights.sum(dim=1) == 0).nonzero().flatten()
    if len(empty):
        raise DataError(f"ITM: sample {int(empty[0])} of the batch has no negative (every pair shows its image)",
                        hint="train with at least two distinct images per batch (batch_size_train >= 2)")
    return weights


def lm_inputs(input_ids: torch.Tensor, bos_token_id: int, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ITG's decoder input (first token -> ``[DEC]``) and labels (padding -> -100)."""
    decoder_ids = input_ids.clone()
    decoder_ids[:, 0] = bos_token_id
    return decoder_ids, decoder_ids.masked_fill(decoder_ids == pad_token_id, -100)


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy with LAVIS' smoothing: position ``j`` predicts label ``j + 1``."""
    shifted = logits[:, :-1].contiguous()
    return F.cross_entropy(shifted.view(-1, shifted.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=-100, label_smoothing=LABEL_SMOOTHING)


def decoder_attention_mask(num_query: int, text_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive [B, 1, Nq + T, Nq + T] mask of the ITG pass: queries see the queries only (so they are
    what LAVIS' cached query pass computed); text token ``j`` sees every query and the text tokens
    ``<= j`` that are not padding."""
    batch, length = text_mask.shape
    total = num_query + length
    allowed = torch.zeros(batch, total, total, dtype=torch.bool, device=text_mask.device)
    allowed[:, :num_query, :num_query] = True
    allowed[:, num_query:, :num_query] = True
    causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=text_mask.device))
    allowed[:, num_query:, num_query:] = causal[None] & text_mask.bool()[:, None, :]
    mask = torch.zeros(batch, 1, total, total, dtype=dtype, device=text_mask.device)
    return mask.masked_fill(~allowed[:, None], torch.finfo(dtype).min)
