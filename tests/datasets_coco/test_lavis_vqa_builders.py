"""LAVIS' ``gqa`` and ``ok_vqa`` builders, the ``gqa`` task's exact-match accuracy, ``coco_vqa``'s ``eval`` type."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from mm_core.config.loader import load_dataset_defaults
from mm_core.registry import get_registry
from mm_datasets_coco.vqa_task import GQATask, VQATask


def gqa_records(shapes_copy):
    """The shapes val questions in GQA's layout: one ``answer`` string, a ``fullAnswer``, string question ids."""
    records = json.loads((shapes_copy / "annotations" / "vqa_val.json").read_text())
    return [{"image": r["image"], "question": r["question"], "question_id": str(r["question_id"]),
             "answer": r["answer"][0], "fullAnswer": f"The answer is {r['answer'][0]}."} for r in records]


def test_gqa_reads_its_one_answer_records(shapes_copy):
    records = gqa_records(shapes_copy)
    path = shapes_copy / "annotations" / "testdev_balanced_questions.json"
    path.write_text(json.dumps(records))
    cfg = OmegaConf.create({"data_type": "images", "build_info": {"images": {"storage": str(shapes_copy / "images")},
                            "annotations": {"train": {"storage": str(path)}, "val": {"storage": str(path)}}}})
    builder = get_registry().resolve("datasets", "gqa")
    datasets = builder(cfg).build_datasets()
    sample = datasets["val"][2]
    assert sample["answers"] == [records[2]["answer"]] and sample["text_input"] == records[2]["question"]
    assert sample["question_id"] == int(records[2]["question_id"])
    train = datasets["train"][2]
    assert train["answers"] == [records[2]["answer"]] and train["weights"] == [1.0]


def test_gqa_accuracy_is_exact_match_after_normalisation():
    task = GQATask(OmegaConf.create({"run": {"task": "gqa"}}))
    results = [{"question_id": 1, "answer": "Two.", "references": ["2"]},   # number words, punctuation
               {"question_id": 2, "answer": "a red", "references": ["red"]},  # articles
               {"question_id": 3, "answer": "blue", "references": ["red"]},
               {"question_id": 4, "answer": "circle", "references": ["circle", "square", "square"]}]  # most frequent
    metrics = task.after_evaluation(results, "val", 0)
    assert metrics["acc"] == pytest.approx(50.0) and metrics["agg_metrics"] == metrics["acc"]
    # why GQA has a task of its own: VQA's leave-one-out accuracy scores a lone reference answer 0
    assert VQATask(OmegaConf.create({"run": {"task": "vqa"}})).after_evaluation(
        [dict(results[0])], "val", 0)["acc"] == 0.0


def test_lavis_dataset_types_name_lavis_files():
    gqa = load_dataset_defaults("gqa", "balanced_testdev").build_info.annotations
    assert gqa.val.storage == ["gqa/annotations/testdev_balanced_questions.json"]
    assert load_dataset_defaults("gqa", "balanced_val").build_info.annotations.val.storage == \
        ["gqa/annotations/val_balanced_questions.json"]
    okvqa = load_dataset_defaults("ok_vqa").build_info.annotations
    assert sorted(okvqa) == ["test", "train"] and okvqa.test.url[0].endswith("/okvqa/okvqa_val_eval.json")
    coco_eval = load_dataset_defaults("coco_vqa", "eval").build_info.annotations
    assert sorted(coco_eval) == ["val"] and coco_eval.val.storage[0] == "coco/annotations/vqa_val_eval.json"
