"""Fixtures of the datasets_coco tests: a small shapes dataset and the test model plugin."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the test modules import coco_helpers and coco_testkit from here
    sys.path.insert(0, str(HERE))

from coco_helpers import SMALL  # noqa: E402


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory) -> Path:
    """A small shapes dataset, generated once per session (read-only for tests)."""
    from mm_datasets_coco.shapes import ShapesSpec, write_shapes

    return write_shapes(tmp_path_factory.mktemp("shapes"), ShapesSpec(**SMALL))


@pytest.fixture
def shapes_copy(shapes_root: Path, tmp_path: Path) -> Path:
    """A private copy of the small dataset that a test may damage."""
    import shutil

    return Path(shutil.copytree(shapes_root, tmp_path / "shapes"))


@pytest.fixture
def test_model_plugin():
    """Registers ``shape_captioner`` (coco_testkit) for one test."""
    import coco_testkit.hooks

    from mm_core.plugins import plugin_registered

    with plugin_registered(coco_testkit.hooks, name="coco_testkit.hooks") as info:
        assert info.ok, info.error
        yield info
