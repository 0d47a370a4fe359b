"""`mmrun new-plugin`: the scaffold installs as a real distribution, lists, trains and
evaluates with `mmrun`, and its own tests pass."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ..conftest import mm_env, run_mmrun
from .test_plugins import pip_install_target

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # pip installs plugins: `make test-fast` skips this module


def test_scaffold_installs_trains_and_passes_its_own_tests(tmp_path):
    project = tmp_path / "mm-plugin-shapes3"
    made = run_mmrun(["new-plugin", "shapes3", "--dir", str(project)])
    assert made.returncode == 0, made.stderr
    site = tmp_path / "site"
    pip_install_target(project, site)
    env = mm_env([site], MM_CACHE_ROOT=str(tmp_path / "cache"))

    listed = run_mmrun(["list"], env)
    for name in ("shapes3_classifier  [tiny]", "shapes3_features", "shapes3_sample  (features)",
                 "shapes3_classification"):
        assert name in listed.stdout
    plugins = run_mmrun(["plugins", "-v"], env)
    assert "mm-plugin-shapes3 0.1.0  [ok]" in plugins.stdout and "api version: 2.0" in plugins.stdout

    trained = run_mmrun(["--config", str(project / "examples" / "shapes3_tiny.yaml"),
                         "--options", f"run.output_dir={tmp_path / 'out'}"], env, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    events = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in events if e.get("type") == "eval"]
    assert evals and evals[-1]["accuracy"] > 0.8

    own = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project / "tests")],
                         env=env, capture_output=True, text=True, cwd=tmp_path, timeout=500)
    assert own.returncode == 0, own.stdout[-3000:] + own.stderr[-2000:]
    assert "3 passed" in own.stdout


def test_partial_scaffold_tests_pass(tmp_path):
    project = tmp_path / "mm-plugin-bits"
    assert run_mmrun(["new-plugin", "bits", "--dir", str(project), "--kinds", "model,processor"]).returncode == 0
    assert not (project / "src" / "mm_bits" / "data.py").exists()
    site = tmp_path / "site"
    pip_install_target(project, site)
    own = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project / "tests")],
                         env=mm_env([site]), capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert own.returncode == 0 and "2 passed" in own.stdout, own.stdout[-3000:]


@pytest.mark.parametrize("bad", ["Bad", "mmx", "1abc", "class", "a-b"])
def test_invalid_names_are_refused(bad, tmp_path):
    result = run_mmrun(["new-plugin", bad, "--dir", str(tmp_path / "x")])
    assert result.returncode == 2 and "invalid plugin name" in result.stderr
    assert not (tmp_path / "x").exists()


def test_existing_directory_is_never_overwritten(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    result = run_mmrun(["new-plugin", "fresh", "--dir", str(tmp_path / "taken")])
    assert result.returncode == 2 and "never overwrites" in result.stderr
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
