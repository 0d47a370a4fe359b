"""Fixtures of the report tests: one real tiny captioning run per session and one of the test
plugin's own task and dataset (read-only for tests), and private copies that a test may damage."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from report_helpers import caption_run_config, env, mmrun, squares_run_config  # noqa: E402


@pytest.fixture(scope="session")
def caption_run(tmp_path_factory) -> dict[str, Path]:
    """``mmrun`` trains and evaluates the test captioner on generated shapes (val each epoch,
    test with the best checkpoint). Returns the run directory and the cache root."""
    base = tmp_path_factory.mktemp("caption_run")
    cache, out = base / "cache", base / "out"
    done = mmrun(["--config", str(caption_run_config(base, out))], env(cache))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"run": out, "cache": cache}


@pytest.fixture(scope="session")
def squares_run(tmp_path_factory) -> dict[str, Path]:
    """``mmrun`` trains and evaluates the test plugin's own task on its own dataset (no COCO
    plugin involved). Returns the run directory and the cache root."""
    base = tmp_path_factory.mktemp("squares_run")
    cache, out = base / "cache", base / "out"
    done = mmrun(["--config", str(squares_run_config(base, out))], env(cache))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"run": out, "cache": cache}


@pytest.fixture
def run_copy(caption_run, tmp_path) -> Path:
    """A private copy of the session's run directory."""
    return Path(shutil.copytree(caption_run["run"], tmp_path / "copy"))
