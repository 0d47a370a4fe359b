"""The ``retrieval`` task: train on the model's loss (ITC + ITM + ITG for ``blip2``); evaluate a
split by ranking every caption for every image and every image for every caption, with LAVIS'
``compute_sim_matrix`` (:mod:`mm_datasets_coco.retrieval_scores`) and recall figures.

A model the task can evaluate implements :class:`RetrievalModel` (docs/retrieval.md). The
evaluation split is a :class:`~mm_datasets_coco.retrieval_datasets.RetrievalEvalDataset`
(``text``, ``image``, ``txt2img``, ``img2txt``). The score matrices are computed when the split's
evaluation begins (:meth:`RetrievalTask.before_evaluation`, every rank); the per-image records the
engine then collects are filled in on rank 0 with what each image retrieved, and saved as
``result/<split>_epoch<N>.json``; the metrics and each caption's image rank go to
``result/<split>_epoch<N>_scores.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from omegaconf import DictConfig

from mm_core.base.results import DISPLAY_KEYS
from mm_core.base.task import BaseTask
from mm_core.errors import ConfigError

log = logging.getLogger(__name__)

#: What a saved record keeps: the image index, its best-ranked caption, its rank and the report's keys.
SAVED_KEYS = ("image_id", "text", "rank", "top_texts", *DISPLAY_KEYS)
SPLIT_ATTRIBUTES = ("text", "image", "txt2img", "img2txt")
MODEL_METHODS = ("retrieval_tokenize", "retrieval_image_features", "retrieval_text_features", "retrieval_itm_scores")


@runtime_checkable
class RetrievalModel(Protocol):
    """What the ``retrieval`` task asks of a model (LAVIS' ``compute_sim_matrix`` in four calls)."""

    def retrieval_tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)``, ``[B, L]``: the texts tokenized as for ITM (padded to ``max_txt_len``)."""

    def retrieval_image_features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image_embeds [B, N_img, C], image_feats [B, num_query, D])``: what the ITM head attends
        to, and the L2-normalised per-query ITC features."""

    def retrieval_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, D]``: the L2-normalised ITC feature of each text."""

    def retrieval_itm_scores(self, image_embeds: torch.Tensor, input_ids: torch.Tensor,
                             attention_mask: torch.Tensor) -> torch.Tensor:
        """``[N]``: the image-text matching score of each (image, text) pair."""


class RetrievalTask(BaseTask):
    """Image-text retrieval (LAVIS' ``retrieval``); ``run.k_test`` (default 128) candidates per
    query are re-ranked with the ITM head."""

    def __init__(self, cfg: DictConfig | None = None) -> None:
        super().__init__(cfg)
        run = cfg.get("run") if cfg is not None else None
        self.k_test = int(run.get("k_test", 128)) if run is not None else 128
        if self.k_test < 1:
            raise ConfigError(f"run.k_test must be >= 1, got {self.k_test}", hint="LAVIS uses k_test: 128")
        self.batch_size = int(run.get("batch_size_eval", 1) or 1) if run is not None else 1
        self.num_workers = int(run.get("num_workers", 0) or 0) if run is not None else 0
        self.scores: tuple[np.ndarray, np.ndarray] | None = None
        self.split_info: dict[str, Any] = {}

    def before_evaluation(self, model: Any, dataset: Any, **kwargs: Any) -> None:
        """Compute the split's score matrices (every rank takes part; rank 0 keeps them)."""
        super().before_evaluation(model, dataset, **kwargs)
        unwrapped = getattr(model, "module", model)
        check_retrieval_inputs(unwrapped, dataset)
        from mm_core.engine.data import eval_loader

        ctx = _dist_context(unwrapped)
        images = eval_loader(dataset, self.batch_size, 0, 1, self.num_workers)  # every rank: the whole split
        from mm_datasets_coco.retrieval_scores import compute_sim_matrix

        self.scores = compute_sim_matrix(unwrapped, list(dataset.text), images, len(dataset.image), self.k_test, ctx)
        self.split_info = {"text": list(dataset.text), "txt2img": dict(dataset.txt2img),
                           "img2txt": {int(k): list(v) for k, v in dataset.img2txt.items()}}

    def valid_step(self, model: Any, samples: dict[str, Any]) -> list[dict[str, Any]]:
        """One record per image of the batch (filled in by :meth:`after_evaluation`)."""
        indices = torch.as_tensor(samples["index"]).tolist()
        paths = samples.get("image_path") or [None] * len(indices)
        return [{"image_id": int(i), **self.display_fields(image=p)} for i, p in zip(indices, paths)]

    def after_evaluation(self, results: list[dict[str, Any]], split: str, epoch: int | str,
                         output_dir: Path | None = None) -> dict[str, float]:
        if self.scores is None:
            raise RuntimeError("retrieval: after_evaluation without the scores of before_evaluation (rank 0)")
        from mm_datasets_coco.retrieval_scores import ranks_of, retrieval_metrics

        scores_i2t, scores_t2i = self.scores
        info = self.split_info
        metrics = retrieval_metrics(scores_i2t, scores_t2i, info["txt2img"], info["img2txt"])
        image_ranks = ranks_of(scores_i2t, [info["img2txt"][i] for i in range(len(scores_i2t))])
        for record in results:  # what each image retrieved, for reports
            _describe(record, scores_i2t[record["image_id"]], int(image_ranks[record["image_id"]]), info, self)
        text_ranks = ranks_of(scores_t2i, [[info["txt2img"][t]] for t in range(len(scores_t2i))])
        if output_dir is not None:
            _write_scores(Path(output_dir), split, epoch, metrics, info["text"], text_ranks)
        return metrics

    def save_results(self, results: list[Any], output_dir: Path, split: str, epoch: int | str) -> Path:
        """Write one record per image: ``image_id`` (its index), ``text`` (the best-ranked caption),
        ``rank`` (of its first own caption, 0-based), ``top_texts`` and the report's keys."""
        unique = {int(r["image_id"]): r for r in results}
        public = [{k: v for k, v in unique[i].items() if k in SAVED_KEYS and v is not None} for i in sorted(unique)]
        return super().save_results(public, output_dir, split, epoch)


def check_retrieval_inputs(model: Any, dataset: Any) -> None:
    """A clear error when the model or the split lacks what retrieval needs."""
    missing = [m for m in MODEL_METHODS if not callable(getattr(model, m, None))]
    if missing:
        raise ConfigError(f"run.task retrieval: {type(model).__name__} lacks {', '.join(missing)}",
                          hint="use a retrieval-capable model (e.g. blip2; docs/retrieval.md), or another run.task")
    absent = [a for a in SPLIT_ATTRIBUTES if not hasattr(dataset, a)]
    if absent:
        raise ConfigError(f"run.task retrieval: the evaluated split ({type(dataset).__name__}) has no "
                          f"{', '.join(absent)}", hint="evaluate a retrieval dataset (coco_retrieval, flickr30k)")


def _dist_context(model: Any):
    """This process's rank, world size and the model's device, as the engine's helpers take them."""
    import torch.distributed as dist

    from mm_core.engine.distributed import DistContext

    device = next(model.parameters()).device
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), device=device, backend=dist.get_backend())
    return DistContext(device=device)


def _describe(record: dict[str, Any], row: np.ndarray, rank: int, info: dict[str, Any], task: BaseTask) -> None:
    own = info["img2txt"][record["image_id"]]
    top = [int(t) for t in np.argsort(-row, kind="stable")[:5]]
    record.update({"text": info["text"][top[0]] if top else "", "rank": rank,
                   "top_texts": [info["text"][t] for t in top]})
    record.update(task.display_fields(references=[info["text"][t] for t in own], score=1.0 / (1 + rank),
                                      score_name="reciprocal rank (image -> text)"))


def _write_scores(output_dir: Path, split: str, epoch: int | str, metrics: dict[str, float],
                  texts: list[str], text_ranks: np.ndarray) -> Path:
    """``result/<split>_epoch<epoch>_scores.json``: the metrics and, per caption, its image's rank."""
    folder = output_dir / "result"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split.replace('/', '_')}_epoch{epoch}_scores.json"
    per_text = [{"text_id": t, "text": texts[t], "image_rank": int(r)} for t, r in enumerate(text_ranks)]
    path.write_text(json.dumps({"metrics": metrics, "per_text": per_text}, indent=1), encoding="utf-8")
    return path
