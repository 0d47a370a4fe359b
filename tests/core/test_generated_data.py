"""Sample data generated into the cache: reused for the same spec, rebuilt otherwise, never half-written."""

from __future__ import annotations

import json

import pytest

from mm_core.generated_data import ensure_generated, manifest_spec


def writer(calls: list, fail: bool = False):
    def write(folder):
        calls.append(folder)
        (folder / "data.txt").write_text(str(len(calls)))
        if fail:
            raise OSError("disk full")
        (folder / "manifest.json").write_text(json.dumps({"spec": {"n": len(calls)}}))
    return write


def test_same_spec_is_reused_and_another_spec_rebuilds(tmp_path):
    root, calls = tmp_path / "sample", []
    assert ensure_generated(root, {"n": 1}, writer(calls)) == root
    assert (root / "data.txt").read_text() == "1" and manifest_spec(root) == {"n": 1}
    ensure_generated(root, {"n": 1}, writer(calls))
    assert len(calls) == 1  # reused
    ensure_generated(root, {"n": 2}, writer(calls))
    assert (root / "data.txt").read_text() == "2" and len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample"]  # no temporary folder left


def test_a_failed_write_leaves_nothing_in_place(tmp_path):
    root = tmp_path / "sample"
    with pytest.raises(OSError, match="disk full"):
        ensure_generated(root, {"n": 1}, writer([], fail=True))
    assert list(tmp_path.iterdir()) == []


def test_a_folder_without_manifest_is_regenerated(tmp_path):
    root = tmp_path / "sample"
    root.mkdir()
    (root / "data.txt").write_text("half")
    ensure_generated(root, {"n": 1}, writer([]))
    assert (root / "data.txt").read_text() == "1"
