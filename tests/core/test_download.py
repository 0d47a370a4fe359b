"""Downloads into the cache root: checksum verified, atomic, nothing bad left behind."""

from __future__ import annotations

import hashlib
import json

import pytest

from mm_core.download import cache_root, ensure_file
from mm_core.errors import DataError

PAYLOAD = b'[{"x": [1, 2, 3, 4], "y": 1.0}]'


@pytest.fixture
def remote(tmp_path):
    """A file served by URL (file://), as the annotations of a dataset are."""
    source = tmp_path / "remote" / "train.json"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    return source.as_uri()


def test_checksum_match_downloads_into_place(tmp_path, remote):
    target = tmp_path / "cache" / "ann" / "train.json"
    ensure_file(remote, target, hashlib.md5(PAYLOAD).hexdigest())
    assert target.read_bytes() == PAYLOAD
    assert sorted(p.name for p in target.parent.iterdir()) == ["train.json"]


def test_checksum_mismatch_is_an_error_and_leaves_nothing(tmp_path, remote):
    target = tmp_path / "cache" / "ann" / "train.json"
    with pytest.raises(DataError) as err:
        ensure_file(remote, target, "0" * 32)
    assert "checksum mismatch" in str(err.value) and remote in str(err.value)
    assert list(target.parent.iterdir()) == []  # no partial file, no bad file


def test_present_file_is_used_as_it_is_when_its_md5_matches_or_none_is_given(tmp_path, remote):
    target = tmp_path / "train.json"
    target.write_text("[]")
    ensure_file(remote, target, hashlib.md5(b"[]").hexdigest())
    ensure_file(remote, target)
    assert target.read_text() == "[]"


def test_present_file_with_another_md5_is_an_error_naming_the_file_and_both_sums(tmp_path, remote):
    target = tmp_path / "train.json"
    target.write_text("[]")
    with pytest.raises(DataError) as err:
        ensure_file(remote, target, "0" * 32)
    assert str(target) in str(err.value) and "0" * 32 in str(err.value)
    assert hashlib.md5(b"[]").hexdigest() in str(err.value)
    assert target.read_text() == "[]"  # the user's file is left alone


def test_missing_local_file_without_url_names_the_path(tmp_path):
    target = tmp_path / "nowhere" / "train.json"
    with pytest.raises(DataError, match=str(target)):
        ensure_file(None, target)


def test_cache_root_order(monkeypatch, tmp_path):
    monkeypatch.delenv("MM_CACHE_ROOT", raising=False)
    assert cache_root("/from/config") == tmp_path.__class__("/from/config")
    assert str(cache_root()).endswith(".cache/mm")
    monkeypatch.setenv("MM_CACHE_ROOT", str(tmp_path))
    assert cache_root("/from/config") == tmp_path


def test_builder_downloads_with_checksum_and_builds_splits(toy_plugin, tmp_path, remote):
    from mm_core.config.loader import load_dataset_defaults

    cfg = load_dataset_defaults("toy_regression")
    cfg.build_info.annotations = {"train": {"url": remote, "md5": hashlib.md5(PAYLOAD).hexdigest(),
                                            "storage": "toy/dl_train.json"}}
    builder_cls = __import__("mm_toy.data", fromlist=["x"]).ToyRegressionBuilder
    splits = builder_cls(cfg, cache_dir=tmp_path).build_datasets()
    assert (tmp_path / "toy" / "dl_train.json").read_bytes() == PAYLOAD
    assert len(splits["train"]) == 1 and splits["train"][0]["x"].tolist() == [1, 2, 3, 4]

    cfg.build_info.annotations.train.md5 = "f" * 32
    cfg.build_info.annotations.train.storage = "toy/other.json"
    with pytest.raises(DataError, match="checksum mismatch"):
        builder_cls(cfg, cache_dir=tmp_path).build_datasets()
    assert not (tmp_path / "toy" / "other.json").exists()


def test_missing_media_root_points_at_the_card(toy_plugin, tmp_path, toy_data):
    from mm_core.config.loader import load_dataset_defaults
    from mm_toy.data import ToyRegressionBuilder

    cfg = load_dataset_defaults("toy_regression")
    cfg.build_info.features = {"storage": "toy/features"}
    with pytest.raises(DataError) as err:
        ToyRegressionBuilder(cfg, cache_dir=toy_data).build_datasets()
    assert str(toy_data / "toy" / "features") in str(err.value)
    assert "mmrun info toy_regression" in str(err.value)


def test_builder_without_config_uses_its_registered_defaults(toy_plugin, toy_data):
    from mm_toy.data import ToyRegressionBuilder

    splits = ToyRegressionBuilder(cache_dir=toy_data).build_datasets()
    assert sorted(splits) == ["train", "val"] and len(splits["train"]) == 64
    assert ToyRegressionBuilder.default_config_path().name == "default.yaml"
    # the defaults name toy/<split>.json under the cache dir: each split holds that file's records
    for split in ("train", "val"):
        records = json.loads((toy_data / "toy" / f"{split}.json").read_text())
        built = [splits[split][i] for i in range(len(splits[split]))]
        assert [s["y"].item() for s in built] == pytest.approx([r["y"] for r in records], rel=1e-6)
        assert [v for s in built for v in s["x"].tolist()] == pytest.approx([v for r in records for v in r["x"]], rel=1e-6)
