"""BLIP's image-text contrastive (ITC) losses and the ITM hard-negative draw (LAVIS' ``BlipRetrieval``).

:func:`itc_loss` is the in-batch form (``blip_image_text_matching``'s training step);
:func:`itc_with_queue` is ``blip_retrieval``'s: each rank's features against the momentum features of
its batch and the shared queue, with targets mixing the momentum model's similarities (``alpha``) into
the image-id positives (momentum distillation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def positives(image_ids: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
    """(B, B) boolean: pairs of one image (the diagonal when ``image_ids`` is not given)."""
    if image_ids is None:
        return torch.eye(batch, dtype=torch.bool, device=device)
    ids = torch.as_tensor(image_ids, device=device).view(-1, 1)
    return ids == ids.t()


def itc_loss(image_feat: torch.Tensor, text_feat: torch.Tensor, temp: torch.nn.Parameter,
             image_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of the image->text and text->image cross-entropies against the positives' uniform
    distribution; ``temp`` is clamped to [0.001, 0.5] first, as in LAVIS."""
    with torch.no_grad():
        temp.clamp_(0.001, 0.5)
    pos = positives(image_ids, image_feat.shape[0], image_feat.device).float()
    targets = pos / pos.sum(1, keepdim=True)
    sim_i2t = image_feat @ text_feat.t() / temp
    sim_t2i = text_feat @ image_feat.t() / temp
    loss_i2t = -(F.log_softmax(sim_i2t, dim=1) * targets).sum(1).mean()
    loss_t2i = -(F.log_softmax(sim_t2i, dim=1) * targets).sum(1).mean()
    return (loss_i2t + loss_t2i) / 2


def itc_with_queue(image_feat: torch.Tensor, text_feat: torch.Tensor, image_feat_m: torch.Tensor,
                   text_feat_m: torch.Tensor, image_queue: torch.Tensor, text_queue: torch.Tensor,
                   image_ids: torch.Tensor, idx_queue: torch.Tensor, temp: torch.Tensor, alpha: float) -> torch.Tensor:
    """LAVIS' retrieval ITC. Rows: this rank's ``image_feat`` / ``text_feat`` (B, D); columns: the
    momentum features of the same samples, then the queue (D, Q). Targets: ``alpha`` x the softmax of
    the momentum similarities + (1 - ``alpha``) x the uniform distribution over the columns of the row's
    image id (the queue's ids included)."""
    ids = image_ids.view(-1, 1)
    pos = (ids == torch.cat([ids.t(), idx_queue], dim=1)).to(image_feat.dtype)
    targets = pos / pos.sum(1, keepdim=True)
    with torch.no_grad():
        image_all = torch.cat([image_feat_m.t(), image_queue], dim=1)
        text_all = torch.cat([text_feat_m.t(), text_queue], dim=1)
        targets_i2t = alpha * F.softmax(image_feat_m @ text_all / temp, dim=1) + (1 - alpha) * targets
        targets_t2i = alpha * F.softmax(text_feat_m @ image_all / temp, dim=1) + (1 - alpha) * targets
    loss_i2t = -(F.log_softmax(image_feat @ text_all / temp, dim=1) * targets_i2t).sum(1).mean()
    loss_t2i = -(F.log_softmax(text_feat @ image_all / temp, dim=1) * targets_t2i).sum(1).mean()
    return (loss_i2t + loss_t2i) / 2


@torch.no_grad()
def negative_weights(feat: torch.Tensor, candidates: torch.Tensor, temp: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """Sampling weights of hard negatives: the softmax of the similarity to each candidate, 0 where the
    candidate shows the row's image (``same``); a row with no negative draws uniformly."""
    weights = F.softmax(feat @ candidates.t() / temp, dim=1).masked_fill(same, 0)
    weights[weights.sum(1) == 0] = 1.0
    return weights


@torch.no_grad()
def hard_negatives(image_feat: torch.Tensor, text_feat: torch.Tensor, temp: torch.Tensor,
                   image_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(a negative image per text, a negative text per image) of the local batch, drawn in proportion
    to the softmax of their similarity with pairs of one image excluded."""
    same = positives(image_ids, image_feat.shape[0], image_feat.device)
    weights_i2t = negative_weights(image_feat, text_feat, temp, same)
    weights_t2i = negative_weights(text_feat, image_feat, temp, same)
    return torch.multinomial(weights_t2i, 1).squeeze(1), torch.multinomial(weights_i2t, 1).squeeze(1)
