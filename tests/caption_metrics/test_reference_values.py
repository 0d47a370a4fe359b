"""``coco_caption`` on a small corpus with mid-range scores, against the metrics written again from
their definitions (tests/caption_reference.py): corpus values, and each sample's CIDEr under its
own id (ids given in an order that is neither sorted nor reversed-sorted)."""

from __future__ import annotations

import pytest

from mm_core.registry import get_registry

from .. import caption_reference as ref

# lower-case words only: PTB tokenisation leaves them as they are, so both sides see the same tokens
REFERENCES = {
    "b7": ["a red circle on a white background", "one red circle in the middle"],
    "a3": ["two blue squares next to each other", "a pair of blue squares side by side"],
    "c1": ["three green triangles in a row", "green triangles lined up"],
    "a9": ["a yellow star above a black line", "a star over a line"],
}
CANDIDATES = {
    "b7": "a red circle in the middle of a white background",
    "a3": "two blue squares",
    "c1": "a row of green triangles",
    "a9": "a black line under a yellow circle",
}


@pytest.fixture(scope="module")
def scores():
    metric = get_registry().resolve("metrics", "coco_caption")
    return metric(dict(CANDIDATES), {k: list(v) for k, v in REFERENCES.items()}, spice=False, meteor=False)


def test_per_sample_cider_is_each_ids_own(scores):
    expected = ref.cider_d(CANDIDATES, REFERENCES)
    assert list(scores.per_sample["CIDEr"]) == list(CANDIDATES)
    assert scores.per_sample["CIDEr"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # the samples' scores differ, so a mix-up of ids cannot go unnoticed
    assert len({round(v, 6) for v in expected.values()}) == len(expected)


def test_corpus_cider_bleu_and_rouge_are_mid_range_and_as_defined(scores):
    m = scores.metrics
    cider = ref.corpus_cider_d(CANDIDATES, REFERENCES)
    assert 0.5 < cider < 5  # neither the 0 nor the 10 of the edge-case tests
    assert m["CIDEr"] == pytest.approx(cider, rel=1e-9)
    for n, value in enumerate(ref.bleu(CANDIDATES, REFERENCES), start=1):
        assert 0 < value < 1
        assert m[f"Bleu_{n}"] == pytest.approx(value, rel=1e-9), n
    assert m["ROUGE_L"] == pytest.approx(ref.rouge_l(CANDIDATES, REFERENCES), rel=1e-9)


def test_the_reference_cider_reaches_ten_for_identical_captions():
    """Guard of the reference itself: its edge case is CIDEr-D's (10 when every candidate equals
    its only reference, with idf from a corpus of several samples)."""
    same = {k: v[0] for k, v in REFERENCES.items()}
    assert ref.corpus_cider_d(same, {k: [v] for k, v in same.items()}) == pytest.approx(10.0)
