"""VQA accuracy and its answer normalisation against hand-computed values (the caption metrics' tests
are in tests/caption_metrics)."""

from __future__ import annotations

import pytest

from mm_datasets_coco.vqa_metrics import normalize_answer, vqa_accuracy


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
