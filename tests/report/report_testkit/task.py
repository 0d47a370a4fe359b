"""``report_describe``: a task that is not COCO's captioning. It saves each sample in the keys
of mm_core.base.results (image, prompt, references, a per-sample score and its name), which is
all ``mmrun report`` needs to show it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mm_core.base.task import BaseTask

PROMPT = "How many squares, and of which colour?"


def word_overlap(prediction: str, references: list[str]) -> float:
    """Share of the prediction's words found in its closest reference."""
    words = prediction.split()
    return max(sum(w in r.split() for w in words) / max(len(words), 1) for r in references)


class DescribeTask(BaseTask):
    def valid_step(self, model: Any, samples: dict) -> list[dict]:
        outputs = getattr(model, "module", model).generate(samples)
        return [{"sample_id": i, "prediction": text, **self.display_fields(image=f, prompt=PROMPT, references=refs)}
                for i, text, f, refs in zip(samples["sample_id"], outputs, samples["file"], samples["texts"])]

    def after_evaluation(self, results: list[dict], split: str, epoch: int | str,
                         output_dir: Path | None = None) -> dict[str, float]:
        for record in results:
            record.update(self.display_fields(score=word_overlap(record["prediction"], record["references"]),
                                              score_name="word overlap"))
        mean = sum(r["score"] for r in results) / max(len(results), 1)
        return {"overlap": mean, "agg_metrics": mean}
