"""The report on hand-written run directories: the result keys a task saves for it
(mm_core.base.results: answers, prompts, absolute image paths, references, scores), repeats from a
distributed sampler, unreadable images and log lines, results as the coco plugin's vqa task saves
them, and a run directory that is not one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from report_helpers import Page, decode_data_url

pytestmark = pytest.mark.slow  # real runs / several processes: `make test-fast` skips this module

COLOURS = [(200, 30, 30), (30, 160, 60), (40, 60, 210), (230, 200, 40), (120, 40, 160)]


def _vqa_run(tmp_path: Path) -> tuple[Path, list[dict]]:
    run, images = tmp_path / "run", tmp_path / "imgs"
    (run / "result").mkdir(parents=True)
    images.mkdir()
    train = [{"type": "train", "step": s, "epoch": 0, "loss": 1.0 / s, "loss_itm": 0.5 / s, "lr": 1e-3}
             for s in range(1, 6)]
    train[2]["loss"] = "nan"  # how the engine logs a non-finite value
    lines = [json.dumps(e) for e in train]
    lines.insert(3, "{not json")  # a damaged line in the middle
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    records = []
    for i, colour in enumerate(COLOURS):
        path = images / f"img{i}.png"
        Image.new("RGB", (24, 16), colour).save(path)
        records.append({"question_id": 100 + i, "prompt": f"what colour is picture {i}?", "answer": f"answer{i}",
                        "image": str(path), "references": [f"ref{i}a", f"ref{i}b"], "score": i / 10})
    records[1]["image"] = str(images / "gone.png")  # moved away
    (images / "img2.png").write_bytes(b"not an image")  # damaged
    records.append(dict(records[0]))  # a repeat from a padded distributed sampler
    (run / "result" / "val_epoch0.json").write_text(json.dumps(records))
    return run, records


def test_generic_fields_are_shown_ranked_by_their_score(tmp_path):
    from mm_report import write_report

    run, records = _vqa_run(tmp_path)
    report = write_report([run], out=tmp_path / "r.html", gallery_size=2)
    (gallery,) = report.galleries
    assert gallery.total == len(COLOURS) and gallery.metric == "score"
    assert [s.key for s in gallery.best] == ["104", "103"]
    assert [s.key for s in gallery.worst] == ["100", "101"]  # worst first
    page = Page(report.html.read_text())
    cards = {c["id"]: c for c in page.cards}
    for key in ("104", "103", "100", "101"):
        record = next(r for r in records if str(r["question_id"]) == key)
        for text in (record["prompt"], record["answer"], *record["references"]):
            assert text in cards[key]["text"]
    for key, index in (("104", 4), ("103", 3), ("100", 0)):
        shown = decode_data_url(cards[key]["img"]).convert("RGB")
        assert shown.size == (24, 16) and shown.getpixel((5, 5)) == COLOURS[index]
    assert cards["101"]["img"] is None and "not found at" in cards["101"]["text"]
    notes = " ".join(report.notes)
    assert "config.yaml is missing" in notes
    assert "1 line(s) are not JSON objects" in notes and "line 4" in notes
    curves = {c["label"]: c for c in json.loads(
        (tmp_path / "r_plots" / "plots.json").read_text())[0]["curves"]}
    assert curves["loss"]["points"] == 4 and curves["loss_itm"]["points"] == 5  # "nan" is not drawn


def test_an_unreadable_image_is_a_note_on_its_card(tmp_path):
    from mm_report import write_report

    run, _ = _vqa_run(tmp_path)
    report = write_report([run], out=tmp_path / "r.html", gallery_size=5, plots=False)
    card = next(c for c in Page(report.html.read_text()).cards if c["id"] == "102")
    assert card["img"] is None and "unreadable" in card["text"]


def test_records_without_scores_are_shown_in_file_order(tmp_path):
    """The report computes no metric of its own: unscored records are shown as saved."""
    from mm_report import write_report

    run, _ = _vqa_run(tmp_path)
    refs = {0: ["blue"] * 3, 1: ["blue", "red"], 2: ["red"] * 5, 3: ["Blue.", "blue", "green"]}
    unscored = [{"question_id": i, "answer": "blue", "references": r} for i, r in refs.items()]
    (run / "result" / "val_epoch0.json").write_text(json.dumps(unscored))
    report = write_report([run], out=tmp_path / "r.html", gallery_size=2, plots=False)
    (gallery,) = report.galleries
    assert gallery.metric is None and gallery.score_source is None and not gallery.worst
    assert [s.key for s in gallery.best] == ["0", "1", "2", "3"]
    assert all(s.score is None for s in gallery.best)
    page = Page(report.html.read_text())
    assert "No per-sample score" in page.text
    for card in page.cards:
        assert all(ref in card["text"] for ref in refs[int(card["id"])])


def test_a_folder_that_is_not_a_run_is_an_error(tmp_path):
    from mm_core.cli.main import main

    assert main(["report", str(tmp_path)]) == 2
    assert main(["report", str(tmp_path / "missing")]) == 2


class _Answerer:
    """Answers the shapes questions: right on odd positions, "no idea" on even ones."""

    def __init__(self, answers: dict[int, str]):
        self.answers = answers

    def predict_answers(self, samples, **kwargs):
        return [self.answers[int(q)] for q in samples["question_id"]]


def test_results_of_the_coco_vqa_task_show_question_answer_image_and_accuracy(caption_run, tmp_path):
    """Results as the coco plugin's vqa task saves them (reached by name, as a run does): the
    report shows each question, answer and image, ranked by the accuracy the task saved."""
    from omegaconf import OmegaConf

    from mm_core.registry import get_registry
    from mm_report import write_report

    shapes = caption_run["cache"] / "shapes"
    registry = get_registry()
    cfg = OmegaConf.create({"data_type": "images", "build_info": {"images": {"storage": str(shapes / "images")},
                            "annotations": {"val": {"storage": str(shapes / "annotations" / "vqa_val.json")}}}})
    val = registry.resolve("datasets", "coco_vqa")(cfg).build_datasets()["val"]
    annotations = json.loads((shapes / "annotations" / "vqa_val.json").read_text())[:4]
    answers = {a["question_id"]: a["answer"][0].rstrip(".") if i % 2 else "no idea" for i, a in enumerate(annotations)}
    task = registry.resolve("tasks", "vqa")(OmegaConf.create({"run": {"task": "vqa"}}))
    model = _Answerer(answers)
    task.before_evaluation(model, val)
    results = task.valid_step(model, val.collater([val[i] for i in range(4)]))
    task.after_evaluation(results, "val", 0, tmp_path / "vqa")  # the engine's order: metrics, then results
    task.save_results(results, tmp_path / "vqa", "val", 0)
    (tmp_path / "vqa" / "config.yaml").write_text("run: {task: vqa}\n")

    report = write_report([tmp_path / "vqa"], out=tmp_path / "r.html", gallery_size=4, plots=False)
    (gallery,) = report.galleries
    assert gallery.metric == "VQA accuracy"
    cards = {c["id"]: c for c in Page(report.html.read_text()).cards}
    for annotation in annotations:
        card = cards[str(annotation["question_id"])]
        assert annotation["question"] in card["text"] and answers[annotation["question_id"]] in card["text"]
        shown = decode_data_url(card["img"]).convert("RGB")
        original = Image.open(shapes / "images" / annotation["image"]).convert("RGB")
        assert shown.tobytes() == original.tobytes()
    scores = {s.key: s.score for s in gallery.best}
    assert [scores[str(a["question_id"])] for a in annotations] == [0.0, 1.0, 0.0, 1.0]
