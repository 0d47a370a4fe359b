"""The captioning and vqa tasks: generation through the model contract, saved results, metrics
recomputed independently from the saved files (caption metrics from their definitions in
tests/caption_reference.py, not through pycocoevalcap); one end-to-end `mmrun` run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from coco_helpers import HERE, SMALL, shared_helpers
from omegaconf import OmegaConf

from mm_datasets_coco.vqa_metrics import vqa_accuracy

from .. import caption_reference as ref

_shared = shared_helpers()
mm_env, run_mmrun = _shared.mm_env, _shared.run_mmrun


def reference_scores(references, candidates):
    """CIDEr-D (corpus and per sample) and BLEU-4 from their definitions; the captions must be
    what PTB tokenisation leaves unchanged (lower-case words), which this checks."""
    texts = list(candidates.values()) + [r for refs in references.values() for r in refs]
    assert all(re.fullmatch(r"[a-z0-9]+( [a-z0-9]+)*", t) for t in texts if t), texts
    references = {k: list(references[k]) for k in candidates}
    per_sample = ref.cider_d(candidates, references)
    return {"CIDEr": sum(per_sample.values()) / len(per_sample), "Bleu_4": ref.bleu(candidates, references)[3],
            "per_sample": per_sample}


def _run_cfg(**run):
    return OmegaConf.create({"run": {"task": "captioning", **run}})


def test_caption_after_evaluation_dedups_saves_and_aggregates(tmp_path):
    from mm_datasets_coco.captioning import CaptionTask

    task = CaptionTask(_run_cfg(meteor=False, spice=False))
    results = [
        {"image_id": 7, "caption": "a red circle on a white background", "references": ["a red circle on a white background", "one red circle"]},
        {"image_id": 9, "caption": "two blue squares", "references": ["two blue squares on gray", "blue squares"]},
        {"image_id": 7, "caption": "a red circle on a white background", "references": ["a red circle on a white background", "one red circle"]},
    ]
    metrics = task.after_evaluation(results, "val", 0, tmp_path)  # the engine's order: metrics, then results
    task.save_results(results, tmp_path, "val", 0)
    saved = json.loads((tmp_path / "result" / "val_epoch0.json").read_text())
    expected = reference_scores({7: results[0]["references"], 9: results[1]["references"]},
                                {7: results[0]["caption"], 9: results[1]["caption"]})
    cider = expected["per_sample"]
    assert cider[7] != pytest.approx(cider[9])  # a mix-up of the two images would show
    assert saved == [
        {"image_id": 7, "caption": results[0]["caption"], "references": results[0]["references"],
         "score": pytest.approx(cider[7]), "score_name": "CIDEr"},
        {"image_id": 9, "caption": "two blue squares", "references": results[1]["references"],
         "score": pytest.approx(cider[9]), "score_name": "CIDEr"},
    ]
    assert metrics["CIDEr"] == pytest.approx(expected["CIDEr"])
    assert metrics["agg_metrics"] == pytest.approx(expected["CIDEr"] + expected["Bleu_4"])
    assert metrics["num_images"] == 2
    scores = json.loads((tmp_path / "result" / "val_epoch0_scores.json").read_text())
    assert set(scores["per_image"]["CIDEr"]) == {"7", "9"}


def test_generation_settings_are_checked():
    from mm_core.errors import ConfigError
    from mm_datasets_coco.captioning import CaptionTask

    with pytest.raises(ConfigError, match="min_len"):
        CaptionTask(_run_cfg(max_len=5, min_len=9))


def test_vqa_task_generates_answers_and_scores_them(shapes_root, test_model_plugin, tmp_path):
    from mm_core.api import load_model
    from mm_datasets_coco.builders import CocoVQABuilder
    from mm_datasets_coco.vqa_task import VQATask

    cfg = OmegaConf.create({"data_type": "images", "build_info": {"images": {"storage": str(shapes_root / "images")},
                            "annotations": {"val": {"storage": str(shapes_root / "annotations" / "vqa_val.json")}}}})
    val = CocoVQABuilder(cfg).build_datasets()["val"]
    model = load_model("shape_captioner", "tiny", is_eval=True)
    task = VQATask(OmegaConf.create({"run": {"task": "vqa", "prompt": "Question: {} Answer:"}}))
    task.before_evaluation(model, val)
    results = []
    for start in range(0, len(val), 8):
        results += task.valid_step(model, val.collater([val[i] for i in range(start, min(start + 8, len(val)))]))
    metrics = task.after_evaluation(results, "val", 0, tmp_path)  # the engine's order: metrics, then results
    task.save_results(results, tmp_path, "val", 0)
    saved = json.loads((tmp_path / "result" / "val_epoch0.json").read_text())
    annotations = {r["question_id"]: r for r in json.loads((shapes_root / "annotations" / "vqa_val.json").read_text())}
    records = {q: a["answer"] for q, a in annotations.items()}
    assert len(saved) == len(records)
    expected = 100 * sum(vqa_accuracy(r["answer"], records[r["question_id"]]) for r in saved) / len(saved)
    assert metrics["acc"] == pytest.approx(expected) and metrics["agg_metrics"] == metrics["acc"]
    # each record says how a report shows it: image, question, references and its own accuracy
    for record in saved:
        annotation = annotations[record["question_id"]]
        assert record["image"] == annotation["image"]
        assert Path(record["images_root"]) == (shapes_root / "images").resolve()
        assert record["prompt"] == annotation["question"] and record["references"] == annotation["answer"]
        assert record["score_name"] == "VQA accuracy"
        assert record["score"] == pytest.approx(vqa_accuracy(record["answer"], annotation["answer"]))


def test_quick_captioning_run_end_to_end(tmp_path):
    """`mmrun` trains the test model on generated shapes captions and evaluates with the metrics."""
    config = {
        "model": {"arch": "shape_captioner", "model_type": "tiny"},
        "datasets": {"coco_caption": {"type": "shapes", "build_info": {"generate": {**SMALL, "root": str(tmp_path / "shapes")},
            "annotations": {s: {"storage": str(tmp_path / "shapes" / "annotations" / f"karpathy_{s}.json")} for s in ("train", "val", "test")},
            "images": {"storage": str(tmp_path / "shapes" / "images")}}}},
        "run": {"task": "captioning", "runner": "runner_base", "max_epoch": 2, "batch_size_train": 8, "batch_size_eval": 4,
                "init_lr": 0.05, "lr_sched": "constant_lr", "num_workers": 0, "seed": 1, "num_beams": 1, "max_len": 12,
                "meteor": False, "valid_splits": ["val"], "test_splits": ["test"], "output_dir": str(tmp_path / "out"),
                "progress_bar": False},
    }
    path = tmp_path / "run.yaml"
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    env = mm_env([HERE], MM_PLUGIN_MODULES="coco_testkit.hooks")
    done = run_mmrun(["--config", str(path)], env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    out = tmp_path / "out"
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evals = [e for e in events if e.get("type") == "eval" and e.get("split") == "val"]
    assert evals and {"Bleu_4", "ROUGE_L", "CIDEr", "agg_metrics"} <= set(evals[-1])
    # recompute from the saved results and the split's own annotation file
    refs = {int(Path(r["image"]).stem.split("_")[-1]): r["caption"]
            for r in json.loads((tmp_path / "shapes" / "annotations" / "karpathy_val.json").read_text())}
    saved = json.loads((out / "result" / f"val_epoch{evals[-1]['epoch']}.json").read_text())
    assert sorted(r["image_id"] for r in saved) == sorted(refs)
    for record in saved:  # what a report needs: the image beside its references and per-image CIDEr
        assert (Path(record["images_root"]) / record["image"]).is_file()
        assert record["references"] == refs[record["image_id"]] and record["score_name"] == "CIDEr"
    expected = reference_scores(refs, {r["image_id"]: r["caption"] for r in saved})
    assert evals[-1]["CIDEr"] == pytest.approx(expected["CIDEr"], rel=1e-6)
    assert evals[-1]["agg_metrics"] == pytest.approx(expected["CIDEr"] + expected["Bleu_4"], rel=1e-6)
    assert list((out / "result").glob("test_epoch*.json"))
