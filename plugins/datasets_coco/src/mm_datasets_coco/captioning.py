"""The ``captioning`` task: generate a caption per image; score with the COCO caption metrics
(the metric ``coco_caption``, reached by name: mm-plugin-caption-metrics provides it).

Evaluation batches carry each image's references (``text_references``) and image path, so the
metrics come from the split's own annotations, with no separate ground-truth file. The engine
saves the results as ``[{"image_id", "caption", ...}]`` under ``<output_dir>/result/``
(:meth:`CaptionTask.save_results`), each record with what a report shows (its image, prompt,
references and CIDEr; see :mod:`mm_core.base.results`); ``agg_metrics`` is CIDEr + BLEU-4 (LAVIS).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mm_core.base.results import DISPLAY_KEYS
from mm_core.base.task import BaseTask
from mm_core.errors import ConfigError
from mm_datasets_coco.generation import GenerationSettings, generate_text

log = logging.getLogger(__name__)

#: What a saved record keeps: the id, the caption and the report's keys (mm_core.base.results).
SAVED_KEYS = ("image_id", "caption", *DISPLAY_KEYS)


class CaptionTask(BaseTask):
    """Train on the model's loss; evaluate by generating captions (``run.num_beams``,
    ``run.max_len``, ``run.min_len``, optional ``run.prompt``) and scoring them."""

    def __init__(self, cfg: DictConfig | None = None) -> None:
        super().__init__(cfg)
        run = cfg.get("run") if cfg is not None else None
        self.generation = GenerationSettings.from_run(run, num_beams=5, max_len=30, min_len=1)
        if run is not None and str(run.get("inference_method", "generate")) != "generate":
            raise ConfigError(f"run.inference_method: captioning generates, got {run.get('inference_method')!r}",
                              hint="set run.inference_method: generate (LAVIS' value) or leave it out")
        self.report_metric = bool(run.get("report_metric", True)) if run is not None else True
        self.meteor = bool(run.get("meteor", True)) if run is not None else True
        self.spice = run.get("spice") if run is not None else None

    def valid_step(self, model: Any, samples: dict[str, Any]) -> list[dict[str, Any]]:
        if self.generation.prompt is not None:
            samples = {**samples, "prompt": self.generation.prompt}
        captions = generate_text(model, samples, self.generation)
        ids = [int(i) for i in samples["image_id"]]
        references = samples.get("text_references") or [None] * len(ids)
        paths = samples.get("image_path") or [None] * len(ids)
        return [{"image_id": i, "caption": c, "references": r,
                 **self.display_fields(image=p, prompt=self.generation.prompt)}
                for i, c, r, p in zip(ids, captions, references, paths)]

    def save_results(self, results: list[Any], output_dir: Path, split: str, epoch: int | str) -> Path:
        """Write ``[{"image_id", "caption", ...}]``, one per image, with the report's keys."""
        public = [{k: v for k, v in r.items() if k in SAVED_KEYS and v is not None} for r in _unique_by_image(results)]
        return super().save_results(public, output_dir, split, epoch)

    def after_evaluation(
        self, results: list[dict[str, Any]], split: str, epoch: int | str, output_dir: Path | None = None
    ) -> dict[str, float]:
        results = _unique_by_image(results)
        references = {r["image_id"]: r["references"] for r in results if r.get("references")}
        if not self.report_metric or not references:
            # e.g. a test split without captions: only the results are written
            return {"agg_metrics": 0.0, "num_images": float(len(results))}
        from mm_core.registry import get_registry

        candidates = {i: r["caption"] for i, r in ((r["image_id"], r) for r in results) if i in references}
        score = get_registry().resolve("metrics", "coco_caption")
        scores = score(candidates, references, spice=self.spice, meteor=self.meteor)
        for note in scores.notes:
            log.info("captioning metrics on %s: %s", split, note)
        metrics = dict(scores.metrics)
        metrics["agg_metrics"] = metrics["CIDEr"] + metrics["Bleu_4"]
        metrics["num_images"] = float(len(candidates))
        per_image = scores.per_sample["CIDEr"]
        for record in results:  # the saved records carry their own CIDEr, for reports
            if record["image_id"] in per_image:
                record.update(self.display_fields(score=per_image[record["image_id"]], score_name="CIDEr"))
        if output_dir is not None:
            _write_scores(Path(output_dir), split, epoch, metrics, per_image, scores.notes)
        return metrics


def _unique_by_image(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per image: a distributed sampler pads the last batch with repeats."""
    seen: dict[int, dict[str, Any]] = {}
    for r in results:
        seen.setdefault(int(r["image_id"]), r)
    return [seen[k] for k in sorted(seen)]


def _write_scores(output_dir: Path, split: str, epoch: int | str, metrics: dict[str, float],
                  per_image: dict[Any, float], notes: list[str]) -> Path:
    """``result/<split>_epoch<epoch>_scores.json``: metrics, per-image CIDEr (for reports), notes."""
    folder = output_dir / "result"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}_epoch{epoch}_scores.json"
    payload = {"metrics": metrics, "per_image": {"CIDEr": {str(k): v for k, v in per_image.items()}}, "notes": notes}
    path.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return path
