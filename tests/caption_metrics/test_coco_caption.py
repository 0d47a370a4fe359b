"""The metric ``coco_caption`` (pycocoevalcap, Java) against hand-computed values, reached by name
through the registry as the tasks reach it."""

from __future__ import annotations

import math

import pytest

from mm_caption_metrics import coco_caption
from mm_core.base.metric import MetricScores
from mm_core.registry import get_registry

CAPTIONS = {
    1: "a red circle on a white background",
    2: "two blue squares next to each other",
    3: "three green triangles in a row",
}


@pytest.fixture
def score():
    return get_registry().resolve("metrics", "coco_caption")


def test_registered_by_name(score):
    assert score is coco_caption.score
    assert get_registry().get("metrics", "coco_caption").plugin.name == "caption_metrics"


@pytest.mark.slow  # starts METEOR's Java scorer (about 10 s)
def test_identical_candidates_and_references_score_the_maximum(score):
    scores = score(dict(CAPTIONS), {k: [v] for k, v in CAPTIONS.items()}, spice=False)
    assert isinstance(scores, MetricScores)
    m = scores.metrics
    for n in range(1, 5):
        assert m[f"Bleu_{n}"] == pytest.approx(1.0, abs=1e-6)
    assert m["METEOR"] == pytest.approx(1.0)
    assert m["ROUGE_L"] == pytest.approx(1.0)
    assert m["CIDEr"] == pytest.approx(10.0)  # CIDEr-D's maximum: cosine 1 for every n, times 10
    assert scores.per_sample["CIDEr"] == pytest.approx({1: 10.0, 2: 10.0, 3: 10.0})


def test_bleu_and_rouge_by_hand(score):
    # candidate vs reference: 5/6 unigrams, 3/5 bigrams, 1/4 trigrams, 0/3 4-grams match; equal lengths
    refs = {1: ["the cat is on the mat"]}
    m = score({1: "the cat sat on the mat"}, refs, spice=False, meteor=False).metrics
    assert m["Bleu_1"] == pytest.approx(5 / 6, abs=1e-6)
    assert m["Bleu_2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 5), abs=1e-6)
    assert m["Bleu_3"] == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3), abs=1e-6)
    assert m["Bleu_4"] < 1e-3
    assert m["ROUGE_L"] == pytest.approx(5 / 6)  # LCS 5 of 6 words both ways
    # a short candidate: brevity penalty exp(1 - 6/2); ROUGE-L F with beta 1.2, P = 1, R = 1/3
    m = score({1: "the cat"}, refs, spice=False, meteor=False).metrics
    assert m["Bleu_1"] == pytest.approx(math.exp(1 - 6 / 2), abs=1e-6)
    beta2, p, r = 1.2**2, 1.0, 1 / 3
    assert m["ROUGE_L"] == pytest.approx((1 + beta2) * p * r / (r + beta2 * p))


def test_missing_references_are_an_error_naming_the_ids(score):
    with pytest.raises(ValueError, match=r"\[2\]"):
        score({1: "a cat", 2: "a dog"}, {1: ["a cat"]}, meteor=False, spice=False)


def test_without_java_metrics_degrade_with_notes(score, monkeypatch):
    candidates = {1: "a red circle", 2: "two blue squares", 3: "green triangles"}
    with_java = score(candidates, {k: [v] for k, v in CAPTIONS.items()}, spice=False, meteor=False).metrics
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(coco_caption, "_meteor_scorer", None)
    assert score.warm_up() is False  # no Java: nothing to start
    scores = score(candidates, {k: [v] for k, v in CAPTIONS.items()}, spice=None)
    assert "METEOR" not in scores.metrics
    assert any("METEOR left out" in n for n in scores.notes)
    assert any("PTBTokenizer" in n for n in scores.notes)
    # the Python tokenisation agrees with the Java one on plain lower-case captions
    assert {k: v for k, v in scores.metrics.items()} == pytest.approx(with_java)
