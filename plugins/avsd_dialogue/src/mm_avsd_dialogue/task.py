"""The ``dialogue`` task: train on the model's loss; evaluate by generating answers and scoring
them against every reference answer.

Run keys (declared at registration): ``num_beams`` (5), ``max_len`` (20), ``min_len`` (1) for beam
search, plus the engine's ``report_metric`` (true) and ``save_results``.

Metrics of a split: ``Bleu_1``..``Bleu_4``, ``METEOR``, ``ROUGE_L``, ``CIDEr`` (pycocoevalcap,
multi-reference) and ``agg_metrics = CIDEr + Bleu_4`` (LAVIS' choice for this task; higher is
better, and it picks the best checkpoint). With ``report_metric: false`` only the answers are saved
and ``agg_metrics`` is 0. Answers go to ``result/<split>_epoch<epoch>.json`` under the run's
output folder (written by the engine), each with the question as ``prompt``, its references and
its CIDEr as ``score`` (what ``mmrun report`` shows, see :mod:`mm_core.base.results`); the scores
and any notes (e.g. METEOR left out) beside them in ``result/<split>_epoch<epoch>_metrics.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from mm_avsd_dialogue.metrics import score_answers, start_meteor
from mm_core.base.task import BaseTask

GENERATION_DEFAULTS = {"num_beams": 5, "max_len": 20, "min_len": 1}


class DialogueTask(BaseTask):
    """Video-grounded dialogue (AVSD): answer the last question of each dialog."""

    def __init__(self, cfg: DictConfig | None = None, num_beams: int = 5, max_len: int = 20, min_len: int = 1,
                 report_metric: bool = True, save_results: bool = True) -> None:
        super().__init__(cfg)
        self.num_beams = int(num_beams)
        self.max_len = int(max_len)
        self.min_len = int(min_len)
        self.report_metric = bool(report_metric)
        self.save_results_enabled = bool(save_results)

    @classmethod
    def setup_task(cls, cfg: DictConfig | None = None, **kwargs: Any) -> DialogueTask:
        run = (cfg.get("run") if cfg is not None else None) or {}
        options = {key: run.get(key, default) for key, default in GENERATION_DEFAULTS.items()}
        if run.get("report_metric", True) and int(os.environ.get("RANK", "0")) == 0:
            # METEOR's Java process loads its tables while the run builds and trains (rank 0 scores)
            start_meteor()
        return cls(cfg, report_metric=run.get("report_metric", True), save_results=run.get("save_results", True),
                   **options)

    def valid_step(self, model: torch.nn.Module, samples: dict[str, Any]) -> list[dict[str, Any]]:
        """Generate one answer per sample; results carry the references for scoring."""
        unwrapped = getattr(model, "module", model)  # DistributedDataParallel wraps the model
        answers = unwrapped.generate(samples, num_beams=self.num_beams, max_len=self.max_len, min_len=self.min_len)
        questions = samples.get("question") or [None] * len(answers)
        return [
            {"instance_id": str(iid), "image_id": str(vid), "answer": answer,
             **self.display_fields(prompt=question, references=list(refs))}
            for iid, vid, answer, refs, question in zip(samples["instance_id"], samples["image_id"], answers,
                                                        samples["references"], questions)
        ]

    def after_evaluation(self, results: list[dict[str, Any]], split: str, epoch: int | str,
                         output_dir: Path | None = None) -> dict[str, float]:
        # ranks may evaluate the same sample twice (padded distributed sampler): keep one of each
        unique = {r["instance_id"]: r for r in results}
        records = [unique[k] for k in sorted(unique, key=_natural_key)]
        metrics: dict[str, float] = {"agg_metrics": 0.0}
        notes: list[str] = []
        if self.report_metric and records:
            scores = score_answers({r["instance_id"]: r["answer"] for r in records},
                                   {r["instance_id"]: r["references"] for r in records})
            metrics = {**scores.metrics, "agg_metrics": scores.metrics["CIDEr"] + scores.metrics["Bleu_4"]}
            notes = scores.notes
            cider = scores.per_sample["CIDEr"]
            for record in results:  # every saved record (repeats too) carries its CIDEr, for reports
                record.update(self.display_fields(score=cider[record["instance_id"]], score_name="CIDEr"))
        if output_dir is not None and self.save_results_enabled:
            self.save_metrics(metrics, notes, len(records), Path(output_dir), split, epoch)
        return metrics


    def save_metrics(self, metrics: dict[str, float], notes: list[str], count: int, output_dir: Path,
                     split: str, epoch: int | str) -> Path:
        """``result/<split>_epoch<epoch>_metrics.json``: the scores and notes such as a skipped METEOR
        (the engine writes the answers themselves to ``result/<split>_epoch<epoch>.json``)."""
        folder = output_dir / "result"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{split.replace('/', '_')}_epoch{epoch}_metrics.json"
        summary = {"split": split, "epoch": epoch, "num_answers": count, "metrics": metrics, "notes": notes}
        path.write_text(json.dumps(summary, indent=1), encoding="utf-8")
        return path


def _natural_key(value: str) -> tuple[int, Any]:
    return (0, int(value)) if value.isdigit() else (1, value)
