"""BaseTask: how a model is trained and evaluated on datasets (LAVIS semantics); the result
records a report shows: :mod:`mm_core.base.results` and docs/plugins.md."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from mm_core.base.dataset import BaseDataset, batch_size_of
from mm_core.base.model import BaseModel
from mm_core.base.results import display_fields
from mm_core.errors import ConfigError


class BaseTask:
    """Builds the model and datasets, takes training steps (:meth:`train_step`) and scores the
    evaluation results that :meth:`valid_step` returns on every rank, gathered for
    :meth:`after_evaluation` on rank 0 (by default the mean loss, ``agg_metrics = -loss``)."""

    def __init__(self, cfg: DictConfig | None = None) -> None:
        self.cfg = cfg
        #: The media root of the split being evaluated (set by :meth:`before_evaluation`).
        self.images_root: Path | None = None

    @classmethod
    def setup_task(cls, cfg: DictConfig | None = None, **kwargs: Any) -> BaseTask:
        """Create the task from the merged config."""
        return cls(cfg)

    def build_model(self, cfg: DictConfig) -> BaseModel:
        """``get_registry().resolve("models", cfg.model.arch).from_config(cfg.model)``."""
        from mm_core.registry import get_registry

        if not OmegaConf.select(cfg, "model.arch"):
            raise ConfigError("the config has no model (model.arch)", hint="add a model: block (`mmrun list models`)")
        model_cls = get_registry().resolve("models", cfg.model.arch)
        return model_cls.from_config(cfg.model)

    def build_datasets(self, cfg: DictConfig) -> dict[str, dict[str, BaseDataset]]:
        """``{dataset name: {split: dataset}}`` from every builder named under ``datasets``."""
        from mm_core.download import cache_root
        from mm_core.registry import get_registry

        registry = get_registry()
        root = cache_root(cfg.get("env", {}).get("cache_root") if cfg.get("env") else None)
        datasets = {}
        for name, dataset_cfg in (cfg.get("datasets") or {}).items():
            builder = registry.resolve("datasets", name)(dataset_cfg, cache_dir=root)
            datasets[name] = builder.build_datasets()
        return datasets

    def train_step(self, model: torch.nn.Module, samples: Any) -> dict[str, torch.Tensor]:
        """One forward pass; returns the model's output dict with ``loss``."""
        output = model(samples)
        if not isinstance(output, dict) or "loss" not in output:
            raise TypeError(f"{type(model).__name__}.forward must return a dict with a 'loss' tensor")
        return output

    def valid_step(self, model: torch.nn.Module, samples: Any) -> list[dict[str, Any]]:
        """Results of one evaluation batch: by default its loss and size."""
        output = model(samples)
        return [{"loss": float(output["loss"].detach()), "n": batch_size_of(samples)}]

    def before_evaluation(self, model: BaseModel, dataset: BaseDataset, **kwargs: Any) -> None:
        """Called on every rank before a split is evaluated: records the split's media root
        (``dataset.vis_root``) for :meth:`display_fields`, and lets the model prepare."""
        vis_root = getattr(dataset, "vis_root", None)
        self.images_root = Path(vis_root).resolve() if vis_root is not None else None
        unwrapped = getattr(model, "module", model)
        if hasattr(unwrapped, "before_evaluation"):
            unwrapped.before_evaluation(dataset=dataset, task_type=type(self))

    def after_evaluation(self, results: list[dict[str, Any]], split: str, epoch: int | str,
                         output_dir: Path | None = None) -> dict[str, float]:
        """Metrics of a split from all ranks' results (rank 0 only). Must include ``agg_metrics``."""
        total = sum(r.get("n", 1) for r in results) or 1
        loss = sum(r["loss"] * r.get("n", 1) for r in results) / total
        return {"loss": loss, "agg_metrics": -loss}

    def display_fields(self, image: str | None = None, prompt: str | None = None,
                       references: Sequence[str] | None = None, score: float | None = None,
                       score_name: str | None = None) -> dict[str, Any]:
        """The keys that let a report show a result record (:mod:`mm_core.base.results`), those
        given only; ``image`` is relative to the evaluated split's media root, added as ``images_root``."""
        return display_fields(image=image, images_root=self.images_root, prompt=prompt, references=references,
                              score=score, score_name=score_name)

    def save_results(self, results: list[Any], output_dir: Path, split: str, epoch: int | str) -> Path:
        """Write results as ``result/<split>_epoch<epoch>.json`` under ``output_dir``."""
        folder = Path(output_dir) / "result"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{split}_epoch{epoch}.json"
        path.write_text(json.dumps(results, indent=1, default=jsonable), encoding="utf-8")
        return path


def jsonable(value: Any) -> Any:
    """JSON's fallback for results and metrics events: a tensor as a list, anything else as its text."""
    return value.tolist() if isinstance(value, torch.Tensor) else str(value)
