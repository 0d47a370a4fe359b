"""Sample data generated into the cache: reused for the same spec, rebuilt otherwise, never half-written."""

from __future__ import annotations

import json

import pytest

from mm_core.generated_data import SHAPE_COLOURS, ensure_generated, manifest_spec, render_shapes


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


def test_render_shapes_draws_each_shape_in_its_box_and_colour():
    image = render_shapes(24, (250, 250, 250), [("square", (0, 0, 7, 7), "red"), ("circle", (8, 8, 15, 15), "blue"),
                                                ("triangle", (16, 0, 23, 23), "green")])
    assert image.size == (24, 24) and image.mode == "RGB"
    assert image.getpixel((0, 0)) == image.getpixel((7, 7)) == SHAPE_COLOURS["red"]  # corners included
    assert image.getpixel((11, 11)) == SHAPE_COLOURS["blue"] and image.getpixel((8, 8)) == (250, 250, 250)
    assert image.getpixel((19, 22)) == SHAPE_COLOURS["green"] and image.getpixel((16, 1)) == (250, 250, 250)
    with pytest.raises(ValueError, match="unknown shape 'star'"):
        render_shapes(8, (0, 0, 0), [("star", (0, 0, 7, 7), "red")])
