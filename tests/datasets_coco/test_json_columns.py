"""The fast annotation parser (:mod:`mm_datasets_coco.json_columns`) against the general path
(``json.load`` -> dicts -> per-record checks): the same columns on good files, the same errors on
bad ones, and proof that each case took the path it claims."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mm_core.errors import DataError
from mm_datasets_coco import json_columns
from mm_datasets_coco.caption_datasets import CaptionDataset, CaptionEvalDataset
from mm_datasets_coco.json_columns import DecodedColumnsMixin
from mm_datasets_coco.vqa_datasets import VQADataset


@pytest.fixture(autouse=True)
def _no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MM_CACHE_ROOT", str(tmp_path / "cache"))
    monkeypatch.setenv("MM_ANNOTATION_CACHE", "0")


@pytest.fixture
def spy(monkeypatch) -> list:
    """What each fast decode returned (None: the file went to the general path)."""
    results: list = []
    real = json_columns.decode_columns

    def recording(*args, **kwargs):
        results.append(real(*args, **kwargs))
        return results[-1]

    monkeypatch.setattr(json_columns, "decode_columns", recording)
    return results


def _load(cls, paths, general: bool, monkeypatch):
    with monkeypatch.context() as patch:
        if general:
            patch.setattr(DecodedColumnsMixin, "_fast_path", lambda self: False)
        return cls(ann_paths=paths)


def _columns(dataset) -> dict[str, np.ndarray]:
    if isinstance(dataset, VQADataset):
        return {"images": dataset._images.codes, "values": dataset._images.values.arrays()["buffer"],
                "questions": dataset._questions.arrays()["buffer"], "qids": dataset._question_ids,
                **{f"answers.{k}": v for k, v in dataset._answers.arrays().items()}, "starts": dataset._source_starts}
    return dataset._column_arrays()


def _write(path: Path, content) -> Path:
    path.write_text(content if isinstance(content, str) else json.dumps(content, ensure_ascii=False), encoding="utf-8")
    return path


def _assert_same(cls, paths, monkeypatch):
    fast, general = _load(cls, paths, False, monkeypatch), _load(cls, paths, True, monkeypatch)
    a, b = _columns(fast), _columns(general)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), name
    assert list(fast.annotation) == list(general.annotation)
    return fast


TRAIN = [{"image": "val2014/COCO_val2014_000000000001.jpg", "caption": "a dog über café ☕ 😀", "image_id": "coco_1"},
         {"image": "val2014/COCO_val2014_000000000001.jpg", "caption": "tab\there \"quoted\" \\ back", "image_id": 1},
         {"image": "val2014/COCO_val2014_000000000002.jpg", "caption": "", "extra": {"nested": [1, 2.5, None]}},
         {"image": "val2014/COCO_val2014_000000000001.jpg", "caption": "back to the first image",
          "image_id": 123456789012345678901234},
         {"image": "val2014/ñ.jpg", "caption": "x" * 3000, "image_id": "coco_1"}]
GOOD_TRAIN = {
    "unicode, escapes, mixed ids": json.dumps(TRAIN, ensure_ascii=False),
    "ascii escapes": json.dumps(TRAIN, ensure_ascii=True),
    "pretty printed": json.dumps(TRAIN, indent=2),
    "annotations object": json.dumps({"info": {}, "annotations": TRAIN}),
    "duplicate key": '[{"image": "a.jpg", "caption": "first", "caption": "last"}]',
    "empty": "[]",
}


@pytest.mark.parametrize("content", GOOD_TRAIN.values(), ids=GOOD_TRAIN.keys())
def test_train_columns_equal_on_good_files(tmp_path, monkeypatch, spy, content):
    ann = _write(tmp_path / "train.json", content)
    dataset = _assert_same(CaptionDataset, [ann], monkeypatch)
    assert spy and spy[0] is not None  # the fast path read it
    records = json.loads(content)
    records = records["annotations"] if isinstance(records, dict) else records
    assert list(dataset.annotation) == [  # and both equal what the JSON says, read independently
        {"image": r["image"], "caption": r["caption"], "image_id": str(r.get("image_id", r["image"])), "instance_id": str(i)}
        for i, r in enumerate(records)]


def test_two_files_and_where_names_each(tmp_path, monkeypatch, spy):
    first = _write(tmp_path / "a.json", TRAIN)
    second = _write(tmp_path / "b.json", TRAIN[:2])
    dataset = _assert_same(CaptionDataset, [first, second], monkeypatch)
    assert spy[0] is not None and list(dataset._source_starts) == [0, 5, 7]
    assert dataset.where(6) == f"annotation 1 of {second}"


ACCEPTED_BY_JSON_ONLY = {  # valid for the general path, outside the fast path's types: same columns
    "float id": [{"image": "a.jpg", "caption": "c", "image_id": 1.5}],
    "null id": [{"image": "a.jpg", "caption": "c", "image_id": None}],
    "bool id": [{"image": "a.jpg", "caption": "c", "image_id": True}],
    "NaN elsewhere": '[{"image": "a.jpg", "caption": "c", "score": NaN}]',
    "lone surrogate": '[{"image": "a.jpg", "caption": "c", "note": "\\ud800"}]',
}


@pytest.mark.parametrize("content", ACCEPTED_BY_JSON_ONLY.values(), ids=ACCEPTED_BY_JSON_ONLY.keys())
def test_files_outside_the_fast_types_load_the_same_the_general_way(tmp_path, monkeypatch, spy, content):
    ann = _write(tmp_path / "train.json", content)
    dataset = _assert_same(CaptionDataset, [ann], monkeypatch)
    assert spy[0] is None  # went to the general path
    assert dataset.record(0)["image_id"] == str(json.loads(ann.read_text())[0].get("image_id", "a.jpg"))


BAD_TRAIN = {
    "caption an int": ([{"image": "a.jpg", "caption": "c"}, {"image": "a.jpg", "caption": 17}],
                       "annotation 1 of {}: field 'caption' is a int, expected str"),
    "missing caption": ([{"image": "a.jpg", "caption": "c"}] * 2 + [{"image": "a.jpg"}],
                        "annotation 2 of {}: field 'caption' is missing"),
    "null image before a bad caption": ([{"image": "a.jpg", "caption": 3}, {"image": None, "caption": "c"}][::-1],
                                        "annotation 0 of {}: field 'image' is missing"),
    "caption a list": ([{"image": "a.jpg", "caption": ["a", "b"]}], "annotation 0 of {}: field 'caption' is a list"),
    "record not an object": ([{"image": "a.jpg", "caption": "c"}, "oops"], "{}: record 1 is a str, expected an object"),
    "not a list": ('{"images": []}', "{}: expected a list of records, found dict"),
    "invalid JSON": ('[{"image": "a.jpg",\n "caption": "c",}]', "{}: not valid JSON (line 2, column 17)"),
    "empty file": ("", "{}: not valid JSON (line 1, column 1)"),
    "UTF-8 BOM": ("\ufeff[]", "{}: not valid JSON (line 1, column 1)"),
}


@pytest.mark.parametrize(("content", "message"), BAD_TRAIN.values(), ids=BAD_TRAIN.keys())
def test_train_errors_equal_on_bad_files(tmp_path, monkeypatch, spy, content, message):
    ann = _write(tmp_path / "train.json", content)
    errors = []
    for general in (False, True):
        with pytest.raises(DataError) as err:
            _load(CaptionDataset, [ann], general, monkeypatch)
        errors.append((str(err.value), err.value.hint))
    assert errors[0] == errors[1]
    assert errors[0][0].startswith(message.format(ann))
    assert spy == [None]  # the fast path declined the file; the general path named the fault


def test_a_missing_file_is_the_same_error(tmp_path, monkeypatch):
    missing = tmp_path / "absent.json"
    for general in (False, True):
        with pytest.raises(DataError, match=f"annotation file not found: {missing}"):
            _load(CaptionDataset, [missing], general, monkeypatch)


EVAL = [{"image": "val2014/COCO_val2014_000000000007.jpg", "caption": ["a cat", "Ünïcode ref ☕", 3]},
        {"image": "val2014/no_number.jpg", "caption": "only one"},
        {"image": "val2014/COCO_val2014_000000000009.jpg", "caption": []}]


@pytest.mark.parametrize("content", [EVAL, EVAL + [{"image": "b.jpg", "caption": [True, None, 1.5]}]], ids=["fast", "general"])
def test_eval_reference_lists_equal(tmp_path, monkeypatch, spy, content):
    ann = _write(tmp_path / "val.json", content)
    dataset = _assert_same(CaptionEvalDataset, [ann], monkeypatch)
    assert (spy[0] is not None) == (content is EVAL)
    assert dataset.references(0) == ["a cat", "Ünïcode ref ☕", "3"] and dataset.references(2) == []


def test_eval_errors_equal(tmp_path, monkeypatch, spy):
    ann = _write(tmp_path / "val.json", EVAL + [{"image": "b.jpg", "caption": {"text": "x"}}])
    errors = []
    for general in (False, True):
        with pytest.raises(DataError) as err:
            _load(CaptionEvalDataset, [ann], general, monkeypatch)
        errors.append(str(err.value))
    assert errors[0] == errors[1] and errors[0].startswith(f"annotation 3 of {ann}: field 'caption' is a dict, expected list")


VQA = [{"question_id": 7, "question": "what is it?", "image": "train2014/x.jpg", "answer": ["cat", "cat", "kitten"]},
       {"question_id": "12", "question": "¿qué color?", "image": "train2014/x.jpg", "answer": "red"},
       {"question": "no id", "image": "train2014/y.jpg", "answers": ["yes"]},
       {"question_id": "q9", "question": "odd id", "image": "train2014/y.jpg", "answer": ["2"], "answers": ["ignored"]}]


@pytest.mark.parametrize("content", [VQA, VQA + [{"question": "official", "image": "z.jpg",
                                                  "answers": [{"answer": "a"}, {"answer": "b"}]}]], ids=["fast", "general"])
def test_vqa_answers_equal(tmp_path, monkeypatch, spy, content):
    ann = _write(tmp_path / "vqa.json", content)
    dataset = _assert_same(VQADataset, [ann], monkeypatch)
    assert (spy[0] is not None) == (content is VQA)
    assert [dataset.record(i)["question_id"] for i in range(4)] == [7, 12, 2, 3]
    assert [dataset.record(i)["answer"] for i in range(4)] == [["cat", "cat", "kitten"], ["red"], ["yes"], ["2"]]


@pytest.mark.parametrize(("bad", "message"), [
    ({"question": "q", "image": "a.jpg", "answer": []}, "annotation 4 of {}: a training question needs at least one answer"),
    ({"question": "q", "image": "a.jpg"}, "annotation 4 of {}: a training question needs at least one answer"),
    ({"question": "q", "image": "a.jpg", "answer": 5}, "annotation 4 of {}: field 'answer' must be a string or a list, got int"),
    ({"image": "a.jpg", "answer": "x"}, "annotation 4 of {}: field 'question' is missing"),
], ids=["empty answers", "no answers", "answer an int", "no question"])
def test_vqa_errors_equal(tmp_path, monkeypatch, bad, message):
    ann = _write(tmp_path / "vqa.json", VQA + [bad])
    errors = []
    for general in (False, True):
        with pytest.raises(DataError) as err:
            _load(VQADataset, [ann], general, monkeypatch)
        errors.append(str(err.value))
    assert errors[0] == errors[1] and errors[0].startswith(message.format(ann))


def test_a_subclass_reading_records_its_own_way_gets_the_general_path(tmp_path, spy):
    class Dicts(CaptionDataset):
        def _load_records(self, records):
            self.seen = [dict(r) for r in records]

    Dicts(ann_paths=[_write(tmp_path / "t.json", TRAIN)])
    assert spy == []  # never offered to the fast path
