"""The on-disk column cache of the caption datasets: same samples, invalidated by edits, robust to
corruption, and the same errors for bad records whether or not it is on."""

from __future__ import annotations

import json
import mmap
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mm_core.errors import DataError
from mm_datasets_coco.caption_datasets import CaptionDataset, CaptionEvalDataset


@pytest.fixture
def cache_root(tmp_path: Path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("MM_CACHE_ROOT", str(root))
    monkeypatch.delenv("MM_ANNOTATION_CACHE", raising=False)
    return root


@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    (root / "val2014").mkdir(parents=True)
    for k in range(3):
        Image.fromarray(np.full((4, 5, 3), 40 * k, dtype=np.uint8)).save(root / "val2014" / f"COCO_val2014_{k:012d}.png")
    return root


def _train_records(tag: str = "") -> list[dict]:
    records = []
    for i in range(40):
        rec = {"image": f"val2014/COCO_val2014_{i // 5 % 3:012d}.png", "caption": f"{tag}caption {i} über café ☕" * (1 + i % 3)}
        if i % 7:  # some records have no image_id: the image path stands in (LAVIS)
            rec["image_id"] = f"coco_{i // 5}" if i % 2 else i // 5  # numbers become strings
        records.append(rec)
    return records


def _write(path: Path, records) -> Path:
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


def _entries(cache_root: Path) -> list[Path]:
    folder = cache_root / "annotation_cache"
    return sorted(p for p in folder.iterdir() if (p / "meta.json").exists()) if folder.exists() else []


def _is_memory_mapped(array: np.ndarray) -> bool:
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    return isinstance(base, mmap.mmap)


def _expected_train(records: list[dict]) -> list[dict]:
    """The records as the dataset must give them back, computed from the JSON directly."""
    return [{"image": r["image"], "caption": r["caption"], "image_id": str(r.get("image_id", r["image"])),
             "instance_id": str(i)} for i, r in enumerate(records)]


def test_cached_load_gives_identical_samples(tmp_path, cache_root, images):
    records = _train_records()
    ann = _write(tmp_path / "train.json", records)
    plain = CaptionDataset(vis_root=images, ann_paths=[ann], annotation_cache=False)
    assert _entries(cache_root) == []
    first = CaptionDataset(vis_root=images, ann_paths=[ann], annotation_cache=True)
    assert len(_entries(cache_root)) == 1
    cached = CaptionDataset(vis_root=images, ann_paths=[ann], annotation_cache=True)
    assert _is_memory_mapped(cached._captions.arrays()["buffer"])  # read from the cache, not the JSON
    assert not _is_memory_mapped(first._captions.arrays()["buffer"])

    expected = _expected_train(records)
    for dataset in (plain, first, cached):
        assert list(dataset.annotation) == expected
    for i in (0, 6, 13, 39):
        a, b = plain[i], cached[i]
        assert b["text_input"] == a["text_input"] == records[i]["caption"]
        assert b["image_id"] == a["image_id"] and b["instance_id"] == a["instance_id"]
        assert np.array_equal(a["image"].numpy(), b["image"].numpy())
    # image_id codes: position among distinct ids in first-seen order, as without the cache
    distinct = list(dict.fromkeys(e["image_id"] for e in expected))
    assert [cached[i]["image_id"] for i in range(40)] == [distinct.index(e["image_id"]) for e in expected]


def test_cached_eval_split_identical(tmp_path, cache_root):
    records = [{"image": f"val2014/COCO_val2014_{k:012d}.jpg", "caption": [f"ref {k} a", f"réf {k} b", 3] if k % 2 else f"only {k}"}
               for k in range(1, 12)] + [{"image": "val2014/no_number.jpg", "caption": []}]
    ann = _write(tmp_path / "val.json", records)
    datasets = [CaptionEvalDataset(ann_paths=[ann], annotation_cache=True) for _ in range(2)]
    assert _is_memory_mapped(datasets[1]._references.arrays()["buffer"])
    expected = [{"image": r["image"], "caption": [str(c) for c in r["caption"]] if isinstance(r["caption"], list) else [r["caption"]],
                 "image_id": k + 1 if k < 11 else 11, "instance_id": str(k)} for k, r in enumerate(records)]
    for dataset in datasets:
        assert list(dataset.annotation) == expected


def test_changing_the_file_invalidates_the_cache(tmp_path, cache_root, images):
    ann = _write(tmp_path / "train.json", _train_records())
    CaptionDataset(vis_root=images, ann_paths=[ann], annotation_cache=True)
    edited = _train_records(tag="new ")
    _write(ann, edited)
    stat = ann.stat()  # make sure the edit is seen even where mtime is coarse
    os.utime(ann, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    again = CaptionDataset(vis_root=images, ann_paths=[ann], annotation_cache=True)
    assert list(again.annotation) == _expected_train(edited)
    assert len(_entries(cache_root)) == 2


@pytest.mark.parametrize("damage", ["truncate", "garbage", "inconsistent", "no_meta"])
def test_a_corrupt_cache_is_ignored_and_rebuilt(tmp_path, cache_root, images, damage):
    records = _train_records()
    ann = _write(tmp_path / "train.json", records)
    CaptionDataset(vis_root=images, ann_paths=[ann], annotation_cache=True)
    (entry,) = _entries(cache_root)
    target = entry / "_captions.buffer.npy"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:200])
    elif damage == "garbage":
        target.write_bytes(b"not a numpy file at all" * 10)
    elif damage == "inconsistent":  # a valid .npy of the right shape whose offsets run past the buffer
        offsets = np.load(entry / "_captions.offsets.npy")
        np.save(entry / "_captions.offsets.npy", offsets * 3)
    else:
        (entry / "meta.json").unlink()
    rebuilt = CaptionDataset(vis_root=images, ann_paths=[ann], annotation_cache=True)
    assert list(rebuilt.annotation) == _expected_train(records)
    cached = CaptionDataset(vis_root=images, ann_paths=[ann], annotation_cache=True)  # the rewritten entry is good
    assert _is_memory_mapped(cached._captions.arrays()["buffer"])
    assert list(cached.annotation) == _expected_train(records)


@pytest.mark.parametrize("cache", [False, True])
def test_a_bad_record_raises_the_same_error(tmp_path, cache_root, images, cache):
    ann = _write(tmp_path / "train.json", _train_records())
    CaptionDataset(vis_root=images, ann_paths=[ann], annotation_cache=cache)  # cached when asked
    bad = _train_records()
    bad[9]["caption"] = 17       # the first bad record, in file order ...
    del bad[4]["image_id"], bad[12]["image"]  # ... before a missing image further on
    _write(ann, bad)
    os.utime(ann, ns=(ann.stat().st_atime_ns, ann.stat().st_mtime_ns + 2_000_000_000))
    with pytest.raises(DataError) as err:
        CaptionDataset(vis_root=images, ann_paths=[ann], annotation_cache=cache)
    assert str(err.value).startswith(f"annotation 9 of {ann}: field 'caption' is a int, expected str")
    assert "LAVIS" in err.value.hint
    del bad[9]["caption"]
    _write(tmp_path / "second.json", bad)
    with pytest.raises(DataError, match=r"annotation 9 of .*second\.json: field 'caption' is missing"):
        CaptionDataset(vis_root=images, ann_paths=[tmp_path / "second.json"], annotation_cache=cache)
    assert len(_entries(cache_root)) == (1 if cache else 0)  # nothing cached for a bad file


def test_the_cache_can_be_turned_off(tmp_path, cache_root, images, monkeypatch):
    ann = _write(tmp_path / "train.json", _train_records())
    CaptionDataset(vis_root=images, ann_paths=[ann])  # default: small files are not worth a cache
    monkeypatch.setenv("MM_ANNOTATION_CACHE", "0")
    CaptionDataset(vis_root=images, ann_paths=[ann])
    assert _entries(cache_root) == []
    monkeypatch.setenv("MM_ANNOTATION_CACHE", "1")
    CaptionDataset(vis_root=images, ann_paths=[ann])
    assert len(_entries(cache_root)) == 1
    assert not any(p.name != "train.json" for p in tmp_path.iterdir() if p.is_file())  # nothing beside the data
