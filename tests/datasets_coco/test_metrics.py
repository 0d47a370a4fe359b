"""Caption metrics (pycocoevalcap, Java) and VQA accuracy against hand-computed values."""

from __future__ import annotations

import math

import pytest

from mm_core import caption_metrics
from mm_core.caption_metrics import score_captions
from mm_datasets_coco.vqa_metrics import normalize_answer, vqa_accuracy

CAPTIONS = {
    1: "a red circle on a white background",
    2: "two blue squares next to each other",
    3: "three green triangles in a row",
}


def test_identical_candidates_and_references_score_the_maximum():
    scores = score_captions({k: [v] for k, v in CAPTIONS.items()}, dict(CAPTIONS), spice=False)
    m = scores.metrics
    for n in range(1, 5):
        assert m[f"Bleu_{n}"] == pytest.approx(1.0, abs=1e-6)
    assert m["METEOR"] == pytest.approx(1.0)
    assert m["ROUGE_L"] == pytest.approx(1.0)
    assert m["CIDEr"] == pytest.approx(10.0)  # CIDEr-D's maximum: cosine 1 for every n, times 10
    assert scores.per_image_cider == pytest.approx({1: 10.0, 2: 10.0, 3: 10.0})


def test_bleu_and_rouge_by_hand():
    # candidate vs reference: 5/6 unigrams, 3/5 bigrams, 1/4 trigrams, 0/3 4-grams match; equal lengths
    refs = {1: ["the cat is on the mat"]}
    m = score_captions(refs, {1: "the cat sat on the mat"}, spice=False, meteor=False).metrics
    assert m["Bleu_1"] == pytest.approx(5 / 6, abs=1e-6)
    assert m["Bleu_2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 5), abs=1e-6)
    assert m["Bleu_3"] == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3), abs=1e-6)
    assert m["Bleu_4"] < 1e-3
    assert m["ROUGE_L"] == pytest.approx(5 / 6)  # LCS 5 of 6 words both ways
    # a short candidate: brevity penalty exp(1 - 6/2); ROUGE-L F with beta 1.2, P = 1, R = 1/3
    m = score_captions(refs, {1: "the cat"}, spice=False, meteor=False).metrics
    assert m["Bleu_1"] == pytest.approx(math.exp(1 - 6 / 2), abs=1e-6)
    beta2, p, r = 1.2**2, 1.0, 1 / 3
    assert m["ROUGE_L"] == pytest.approx((1 + beta2) * p * r / (r + beta2 * p))


def test_without_java_metrics_degrade_with_notes(monkeypatch):
    with_java = score_captions({k: [v] for k, v in CAPTIONS.items()}, {1: "a red circle", 2: "two blue squares",
                               3: "green triangles"}, spice=False, meteor=False).metrics
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(caption_metrics, "_meteor_scorer", None)
    scores = score_captions({k: [v] for k, v in CAPTIONS.items()}, {1: "a red circle", 2: "two blue squares",
                            3: "green triangles"}, spice=None)
    assert "METEOR" not in scores.metrics
    assert any("METEOR left out" in n for n in scores.notes)
    assert any("PTBTokenizer" in n for n in scores.notes)
    # the Python tokenisation agrees with the Java one on plain lower-case captions
    assert {k: v for k, v in scores.metrics.items()} == pytest.approx(with_java)


@pytest.mark.parametrize(("raw", "normal"), [
    ("Two.", "2"), ("the dog", "dog"), ("dont", "don't"), ("1,000", "1000"), ("yes, sir!", "yes sir"),
    ("3.5", "3.5"), ("An apple", "apple"), ("none", "0"), ("red/white", "red white"),
])
def test_answer_normalisation(raw, normal):
    assert normalize_answer(raw) == normal


def test_vqa_accuracy_by_hand():
    # leaving each of the 10 annotators out: matches among the other 9, min(1, matches / 3)
    assert vqa_accuracy("2", ["two", "2"] + ["3"] * 8) == pytest.approx((2 * 1 / 3 + 8 * 2 / 3) / 10)
    assert vqa_accuracy("2", ["2"] * 3 + ["3"] * 7) == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)
    assert vqa_accuracy("Two", ["2"] * 4 + ["3"] * 6) == 1.0
    assert vqa_accuracy("blue", ["red"] * 10) == 0.0
