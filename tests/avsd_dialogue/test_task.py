"""The dialogue task and its metrics (pycocoevalcap, every reference counted)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mm_avsd_dialogue.metrics import score_answers
from mm_avsd_dialogue.task import DialogueTask

from .. import caption_reference as ref

# answers that score mid-range against the sample data's references (and differently per sample)
ANSWERS = ["the person is cleaning the book", "a man is in the video", "they are cooking"]


@pytest.fixture
def no_java(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A PATH without java: the documented degraded mode (no METEOR, no PTB tokenizer)."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))


def test_bleu_and_rouge_match_hand_computation(no_java: None) -> None:
    result = score_answers({"1": "a b c d"}, {"1": ["a b x y"]}, meteor=False)
    scores, notes = result.metrics, result.notes
    # BLEU: clipped n-gram precisions 2/4 (unigrams) and 1/3 (bigrams), no brevity penalty
    assert scores["Bleu_1"] == pytest.approx(0.5, abs=1e-6)
    assert scores["Bleu_2"] == pytest.approx(math.sqrt(0.5 * 1 / 3), abs=1e-6)
    scores = score_answers({"1": "a b c d"}, {"1": ["a x b d"]}, meteor=False).metrics
    # ROUGE-L: LCS "a b d" = 3 of 4 both ways; F with beta 1.2 is then 0.75
    assert scores["ROUGE_L"] == pytest.approx(0.75, abs=1e-6)
    assert any("java not found" in n for n in notes)


def test_every_reference_counts() -> None:
    refs = {"1": ["the cat sat on the mat", "a dog runs in the park", "nothing happens at all today"],
            "2": ["it is red", "the box is blue", "i think it looks green"]}
    last = {"1": "nothing happens at all today", "2": "i think it looks green"}
    scores = score_answers(last, refs, meteor=False).metrics  # PTB tokenizer (java) when available
    for n in range(1, 5):
        assert scores[f"Bleu_{n}"] == pytest.approx(1.0, abs=1e-6)
    assert scores["ROUGE_L"] == pytest.approx(1.0)
    wrong = score_answers({"1": "zebra zebra", "2": "zebra"}, refs, meteor=False).metrics
    assert wrong["Bleu_1"] < 1e-6 and wrong["CIDEr"] == 0.0 and scores["CIDEr"] > 1.0


def test_meteor_degrades_with_a_note_without_java(no_java: None) -> None:
    result = score_answers({"1": "it is red"}, {"1": ["it is red"]})
    scores, notes = result.metrics, result.notes
    assert "METEOR" not in scores
    assert any(n.startswith("METEOR left out") and "java not found" in n for n in notes)
    assert scores["Bleu_1"] == pytest.approx(1.0, abs=1e-6)


def test_task_evaluation_scores_saves_and_aggregates(splits: dict, tiny_model, tmp_path: Path, no_java: None) -> None:
    cfg = OmegaConf.create({"run": {"task": "dialogue", "num_beams": 2, "max_len": 4, "min_len": 2}})
    task = DialogueTask.setup_task(cfg)
    assert (task.num_beams, task.max_len, task.min_len) == (2, 4, 2)
    data = splits["test"]
    batch = data.collater([data[i] for i in range(len(data))])
    results = task.valid_step(tiny_model, batch)
    assert [r["references"] for r in results] == [a["references"] for a in data.annotation]
    assert all(len(r["references"]) == 6 and r["answer"] for r in results)
    # the tiny random model's answers score 0 against anything: score chosen answers instead
    for record, answer in zip(results, ANSWERS * len(results)):
        record["answer"] = answer
    # results of two ranks overlap (padded sampler): each sample is scored once
    metrics = task.after_evaluation(results + results[:1], split="test", epoch=3, output_dir=tmp_path)
    answers = {r["instance_id"]: ref.tokenize(r["answer"]) for r in results}
    references = {r["instance_id"]: [ref.tokenize(t) for t in r["references"]] for r in results}
    cider = ref.cider_d(answers, references)
    expected = {f"Bleu_{n}": v for n, v in enumerate(ref.bleu(answers, references), start=1)}
    expected.update(ROUGE_L=ref.rouge_l(answers, references), CIDEr=sum(cider.values()) / len(cider))
    assert 0.1 < expected["CIDEr"] < 5 and 0 < expected["Bleu_4"] < 1  # mid-range, not an edge case
    assert {k: v for k, v in metrics.items() if k in expected} == pytest.approx(expected, rel=1e-9)
    assert set(metrics) >= set(expected)
    assert metrics["agg_metrics"] == pytest.approx(expected["CIDEr"] + expected["Bleu_4"])
    saved = json.loads((tmp_path / "result" / "test_epoch3_metrics.json").read_text())
    assert saved["num_answers"] == len(results) and saved["metrics"] == pytest.approx(metrics)
    assert any("METEOR left out" in n for n in saved["notes"])
    # each record says how a report shows it: the question asked, the references, its own CIDEr
    questions = {str(a["instance_id"]): a["question"] for a in data.annotation}
    for record in results:
        assert record["prompt"] == questions[record["instance_id"]]
        assert record["score_name"] == "CIDEr"
        assert record["score"] == pytest.approx(cider[record["instance_id"]], rel=1e-9)
    task.save_results(results, tmp_path, "test", 3)
    assert json.loads((tmp_path / "result" / "test_epoch3.json").read_text()) == results
    quiet = DialogueTask(cfg, report_metric=False)
    assert quiet.after_evaluation(results, split="test", epoch=0) == {"agg_metrics": 0.0}
