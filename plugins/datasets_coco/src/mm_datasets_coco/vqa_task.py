"""The ``vqa`` task: answer each question by generation (or by ranking the split's answer list
when the model can), scored with VQA accuracy and the official answer normalisation."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from mm_core.base.results import DISPLAY_KEYS
from mm_core.base.task import BaseTask
from mm_core.errors import ConfigError
from mm_datasets_coco.generation import GenerationSettings, generate_text

log = logging.getLogger(__name__)

INFERENCE_METHODS = ("generate", "rank")
#: What a saved record keeps: the id, the answer and the report's keys (mm_core.base.results).
SAVED_KEYS = ("question_id", "answer", *DISPLAY_KEYS)


class VQATask(BaseTask):
    """Train on the model's loss; evaluate answers with VQA accuracy.

    Answers come from the model's ``predict_answers(samples, num_beams, max_len, min_len,
    prompt)`` when it has one (LAVIS' name), else from ``generate(samples, ...)``.
    ``run.prompt`` (e.g. ``"Question: {} Short answer:"``) wraps each question before it is
    given to the model. ``run.inference_method: rank`` asks the model's
    ``rank_answers(samples, answer_list, num_ans_candidates) -> list[str]`` to choose among the
    split's ``answer_list.json``.
    """

    score_name = "VQA accuracy"  # what ``score_answer`` computes, as reports show it

    def __init__(self, cfg: DictConfig | None = None) -> None:
        super().__init__(cfg)
        run = cfg.get("run") if cfg is not None else None
        self.generation = GenerationSettings.from_run(run, num_beams=3, max_len=10, min_len=1)
        self.inference_method = str(run.get("inference_method", "generate")) if run is not None else "generate"
        if self.inference_method not in INFERENCE_METHODS:
            raise ConfigError(f"run.inference_method must be one of {', '.join(INFERENCE_METHODS)}, "
                              f"got {self.inference_method!r}")
        self.num_ans_candidates = int(run.get("num_ans_candidates", 128)) if run is not None else 128
        self.answer_list: list[str] = []

    def before_evaluation(self, model: Any, dataset: Any, **kwargs: Any) -> None:
        super().before_evaluation(model, dataset, **kwargs)
        self.answer_list = list(getattr(dataset, "answer_list", []) or [])

    def valid_step(self, model: Any, samples: dict[str, Any]) -> list[dict[str, Any]]:
        answers = self._answer(model, samples)
        qids = [int(q) for q in samples["question_id"]]
        refs = samples.get("answers") or [[] for _ in qids]
        paths = samples.get("image_path") or [None] * len(qids)
        questions = samples.get("text_input") or [None] * len(qids)
        return [{"question_id": q_id, "answer": a, "references": r, **self.display_fields(image=p, prompt=q)}
                for q_id, a, r, p, q in zip(qids, answers, refs, paths, questions)]

    def _answer(self, model: Any, samples: dict[str, Any]) -> list[str]:
        unwrapped = getattr(model, "module", model)
        if self.inference_method == "generate":
            g = self.generation
            if hasattr(unwrapped, "predict_answers"):  # LAVIS' VQA entry point: it applies the prompt itself
                with torch.no_grad():
                    # run.prompt when set, else the model's own template (the one it trains with)
                    extra = {"prompt": g.prompt} if g.prompt else {}
                    answers = unwrapped.predict_answers(samples, num_beams=g.num_beams, max_len=g.max_len,
                                                        min_len=g.min_len, **extra)
                return [str(a).strip() for a in answers]
            if g.prompt:
                samples = {**samples, "text_input": [g.prompt.format(q) for q in samples["text_input"]]}
            return generate_text(model, samples, g)
        if not hasattr(unwrapped, "rank_answers"):
            raise ConfigError(f"run.inference_method: rank needs {type(unwrapped).__name__}.rank_answers",
                              hint="use inference_method: generate")
        if not self.answer_list:
            raise ConfigError("run.inference_method: rank needs an answer list (answer_list.json) in the eval split's files")
        return [str(a) for a in unwrapped.rank_answers(samples, self.answer_list, self.num_ans_candidates)]

    def score_answer(self, answer: str, references: list[str]) -> float:
        """The accuracy of one answer against the question's reference answers (VQA's official formula)."""
        from mm_datasets_coco.vqa_metrics import vqa_accuracy

        return vqa_accuracy(answer, references)

    def save_results(self, results: list[Any], output_dir: Path, split: str, epoch: int | str) -> Path:
        """Write ``[{"question_id", "answer", ...}]``, one per question, with the report's keys."""
        public = [{k: v for k, v in r.items() if k in SAVED_KEYS and v is not None} for r in _unique_by_question(results)]
        return super().save_results(public, output_dir, split, epoch)

    def after_evaluation(
        self, results: list[dict[str, Any]], split: str, epoch: int | str, output_dir: Path | None = None
    ) -> dict[str, float]:
        results = _unique_by_question(results)
        scored = []
        for record in results:
            if record.get("references"):
                scored.append(self.score_answer(record["answer"], record["references"]))
                # the saved record carries its accuracy, for reports
                record.update(self.display_fields(score=scored[-1], score_name=self.score_name))
        if not scored:
            return {"agg_metrics": 0.0, "num_questions": float(len(results))}
        accuracy = 100.0 * sum(scored) / len(scored)
        return {"agg_metrics": accuracy, "acc": accuracy, "num_questions": float(len(scored))}


def _unique_by_question(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per question: a distributed sampler pads the last batch with repeats."""
    unique: dict[int, dict[str, Any]] = {}
    for r in results:
        unique.setdefault(int(r["question_id"]), r)
    return [unique[k] for k in sorted(unique)]


class GQATask(VQATask):
    """LAVIS' ``gqa`` task: the ``vqa`` task's answering, scored by exact match with the question's one
    answer (the most frequent one when a record lists several) after the official VQA normalisation."""

    score_name = "GQA accuracy"

    def score_answer(self, answer: str, references: list[str]) -> float:
        from collections import Counter

        from mm_datasets_coco.vqa_metrics import normalize_answer

        truth = Counter(references).most_common(1)[0][0]
        return float(normalize_answer(answer) == normalize_answer(truth))
