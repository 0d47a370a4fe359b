"""Image-text retrieval scores as LAVIS computes them (``compute_sim_matrix`` and the task's
``_report_metrics``), written for mm's process group.

:func:`compute_sim_matrix` ranks every text for every image and every image for every text: the
ITC similarity of all pairs (the maximum over the image's query features of their dot product
with the text feature), then, for each row, the ``k_test`` best are re-scored with the model's
image-text matching head and get ``ITM score + ITC similarity``; the others keep -100. As in LAVIS
every rank encodes the whole split (features are cheap next to the re-ranking) and re-ranks its
own contiguous block of rows; the blocks are gathered to rank 0 (``DistContext.gather_to_main``),
which alone returns the matrices.

:func:`retrieval_metrics` turns the matrices into LAVIS' recall figures.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from mm_core.engine.distributed import DistContext

log = logging.getLogger(__name__)

#: Texts encoded per forward pass (LAVIS' ``text_bs``).
TEXT_BATCH = 256
#: The score of a pair outside the top ``k_test`` (LAVIS' fill value).
UNRANKED = -100.0


def _pad_cat(parts: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate ``[B, L_i]`` token blocks, right-padding with zeros to the longest ``L_i``."""
    width = max(p.shape[1] for p in parts)
    return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts])


@torch.no_grad()
def encode_texts(model: Any, texts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, text_feats)`` of every text, in order."""
    ids, masks, feats = [], [], []
    for start in range(0, len(texts), TEXT_BATCH):
        input_ids, mask = model.retrieval_tokenize(list(texts[start:start + TEXT_BATCH]))
        input_ids, mask = input_ids.to(device), mask.to(device)
        feats.append(model.retrieval_text_features(input_ids, mask).float())
        ids.append(input_ids)
        masks.append(mask)
    return _pad_cat(ids), _pad_cat(masks), torch.cat(feats)


@torch.no_grad()
def encode_images(model: Any, batches: Any, num_images: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(image_embeds on the CPU, image_feats)`` of every image, placed by the batches' ``index``."""
    embeds: list[torch.Tensor | None] = [None] * num_images
    feats: list[torch.Tensor | None] = [None] * num_images
    for samples in batches:
        embed, feat = model.retrieval_image_features(samples["image"].to(device))
        for row, index in enumerate(torch.as_tensor(samples["index"]).tolist()):
            embeds[index], feats[index] = embed[row].cpu(), feat[row].float()
    missing = [i for i, e in enumerate(embeds) if e is None]
    if missing:
        from mm_core.errors import DataError

        raise DataError(f"retrieval needs every image of the split; {len(missing)} were not loaded "
                        f"(first: index {missing[0]})",
                        hint="on_bad_sample: skip cannot be used for a retrieval split: fix or remove the images")
    return torch.stack(embeds), torch.stack(feats)  # type: ignore[arg-type]


def itc_similarity(image_feats: torch.Tensor, text_feats: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """``[N_img, N_txt]``: for each pair the maximum over the image's queries of ``query @ text``
    (``chunk`` images at a time, so the ``[images, queries, texts]`` product stays small)."""
    return torch.cat([(part @ text_feats.t()).amax(dim=1) for part in image_feats.split(chunk)])


def row_block(rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """The rows a rank re-ranks: contiguous blocks of ``rows // world_size + 1`` (LAVIS' split)."""
    step = rows // world_size + 1
    start = min(rows, rank * step)
    return start, min(rows, start + step)


@torch.no_grad()
def rerank_rows(model: Any, sims: torch.Tensor, rows: range, k: int, pair: Any) -> list[tuple[int, list[int], list[float]]]:
    """``(row, top-k columns, ITM + ITC scores)`` for each row; ``pair(row, cols)`` gives the
    ``(image_embeds, input_ids, attention_mask)`` the ITM head scores."""
    out = []
    for row in rows:
        top_sim, top_idx = sims[row].topk(k=k, dim=0)
        image_embeds, input_ids, mask = pair(row, top_idx)
        scores = model.retrieval_itm_scores(image_embeds, input_ids, mask).float().reshape(-1) + top_sim
        out.append((row, top_idx.tolist(), scores.tolist()))
    return out


def _dense(blocks: list[list[tuple[int, list[int], list[float]]]], shape: tuple[int, int]) -> np.ndarray:
    matrix = np.full(shape, UNRANKED, dtype=np.float32)
    for block in blocks:
        for row, cols, scores in block:
            matrix[row, cols] = scores
    return matrix


@torch.no_grad()
def compute_sim_matrix(model: Any, texts: list[str], image_batches: Any, num_images: int, k_test: int,
                       ctx: DistContext) -> tuple[np.ndarray, np.ndarray] | None:
    """``(scores_i2t [N_img, N_txt], scores_t2i [N_txt, N_img])`` on rank 0, ``None`` elsewhere.

    ``model`` implements :class:`~mm_datasets_coco.retrieval.RetrievalModel`; ``image_batches``
    iterates over the whole split (``{"image", "index"}`` batches). ``k_test`` is clamped to the
    number of candidates.
    """
    device = ctx.device
    input_ids, mask, text_feats = encode_texts(model, texts, device)
    image_embeds, image_feats = encode_images(model, image_batches, num_images, device)
    sims = itc_similarity(image_feats, text_feats)
    k_i2t, k_t2i = min(k_test, sims.shape[1]), min(k_test, sims.shape[0])
    if k_test > min(sims.shape):
        log.info("k_test %d clamped to %d texts / %d images", k_test, k_i2t, k_t2i)

    def image_to_texts(row: int, cols: torch.Tensor):
        return image_embeds[row].unsqueeze(0).expand(len(cols), *image_embeds.shape[1:]).to(device), \
            input_ids[cols], mask[cols]

    def text_to_images(row: int, cols: torch.Tensor):
        return image_embeds[cols.cpu()].to(device), input_ids[row].repeat(len(cols), 1), mask[row].repeat(len(cols), 1)

    i2t = rerank_rows(model, sims, range(*row_block(sims.shape[0], ctx.rank, ctx.world_size)), k_i2t, image_to_texts)
    sims_t = sims.t().contiguous()
    t2i = rerank_rows(model, sims_t, range(*row_block(sims_t.shape[0], ctx.rank, ctx.world_size)), k_t2i, text_to_images)
    gathered = ctx.gather_to_main((i2t, t2i))
    if gathered is None:
        return None
    return (_dense([part[0] for part in gathered], tuple(sims.shape)),
            _dense([part[1] for part in gathered], tuple(sims_t.shape)))


def ranks_of(scores: np.ndarray, positives: list[list[int]]) -> np.ndarray:
    """For each row, the 0-based position of its best-placed positive when the row is sorted by
    descending score (ties: the lower column first, numpy's stable sort)."""
    ranks = np.zeros(len(scores), dtype=np.int64)
    for row, score in enumerate(scores):
        order = np.argsort(-score, kind="stable")
        position = np.empty_like(order)
        position[order] = np.arange(len(order))
        ranks[row] = min(position[p] for p in positives[row]) if positives[row] else len(order)
    return ranks


def _recalls(ranks: np.ndarray) -> tuple[float, float, float]:
    return tuple(100.0 * float(np.mean(ranks < k)) for k in (1, 5, 10))  # type: ignore[return-value]


def retrieval_metrics(scores_i2t: np.ndarray, scores_t2i: np.ndarray, txt2img: dict[int, int],
                      img2txt: dict[int, list[int]]) -> dict[str, float]:
    """LAVIS' figures: recall at 1/5/10 in percent for image->text (``txt_r*``: an image is right
    when any of its captions ranks that high) and text->image (``img_r*``), their means,
    ``r_mean`` (the mean of both) and ``agg_metrics`` = ``txt_r_mean`` (LAVIS' choice)."""
    tr1, tr5, tr10 = _recalls(ranks_of(scores_i2t, [img2txt[i] for i in range(len(scores_i2t))]))
    ir1, ir5, ir10 = _recalls(ranks_of(scores_t2i, [[txt2img[t]] for t in range(len(scores_t2i))]))
    tr_mean, ir_mean = (tr1 + tr5 + tr10) / 3, (ir1 + ir5 + ir10) / 3
    return {"txt_r1": tr1, "txt_r5": tr5, "txt_r10": tr10, "txt_r_mean": tr_mean,
            "img_r1": ir1, "img_r5": ir5, "img_r10": ir10, "img_r_mean": ir_mean,
            "r_mean": (tr_mean + ir_mean) / 2, "agg_metrics": tr_mean}
