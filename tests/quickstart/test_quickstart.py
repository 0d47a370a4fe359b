"""The quickstart (`make demo`), shortened: examples/quickstart.yaml run by ``mmrun`` end to end
with three training steps, then ``mmrun report`` on its output, as the Makefile's demo target does.

The full run (600 steps, about two minutes) is `make demo`; its table is in README.md.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real runs / several processes: `make test-fast` skips this module

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
MMRUN = str(Path(sys.executable).parent / "mmrun")
SHORT = ["run.max_epoch=1", "run.iters_per_epoch=3", "run.log_freq=1", "run.progress_bar=false"]


def _env(cache_root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                "MM_CACHE_ROOT": str(cache_root)})
    return env


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory) -> dict:
    """The shortened quickstart and its report, as subprocesses (the data is generated under a
    private cache root, so this also covers the first-use generation)."""
    base = tmp_path_factory.mktemp("quickstart")
    out, env = base / "out", _env(base / "cache")
    run = subprocess.run([MMRUN, "--config", str(QUICKSTART), "--options", *SHORT, f"run.output_dir={out}"],
                         env=env, cwd=base, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = subprocess.run([MMRUN, "report", str(out)], env=env, cwd=base, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"out": out, "run": run, "report": report, "events": events}


def test_quickstart_evaluates_before_and_after_training_and_prints_the_table(quickstart):
    evals = [e for e in quickstart["events"] if e["type"] == "eval" and e["split"] == "val"]
    assert [e["epoch"] for e in evals] == ["init", 0]
    assert [e["step"] for e in evals] == [0, 3]
    assert [e["num_images"] for e in evals] == [24, 24]
    assert any(e["type"] == "train" and e["step"] == 3 for e in quickstart["events"])

    # the printed table shows, per metric, exactly the logged first and last values
    stdout = quickstart["run"].stdout
    assert "val: epoch init -> epoch 0" in stdout
    for metric in ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr"):
        line = re.search(rf"^\s+{metric}\s+(\S+) ->\s+(\S+)$", stdout, re.MULTILINE)
        assert line, f"{metric} row missing from:\n{stdout}"
        assert [float(v) for v in line.groups()] == [round(evals[0][metric], 4), round(evals[1][metric], 4)]


def test_quickstart_writes_its_report(quickstart):
    page_path = quickstart["out"] / "report" / "report.html"
    assert f"report: {page_path}" in quickstart["report"].stdout
    page = page_path.read_text(encoding="utf-8")
    assert "CIDEr" in page and "data:image/png;base64," in page
    # the gallery shows the generated captions of the last evaluation
    captions = json.loads((quickstart["out"] / "result" / "val_epoch0.json").read_text())
    assert any(c["caption"] and html.escape(c["caption"]) in page for c in captions)


def test_make_demo_runs_the_quickstart_then_its_report():
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.MULTILINE).group(1)
    assert "mmrun --config examples/quickstart.yaml" in recipe
    assert "mmrun report output/quickstart" in recipe
    assert "  output_dir: output/quickstart\n" in QUICKSTART.read_text()
