"""Issue 21's "done when": a third-party plugin written from the docs and the scaffold alone — an
LLM backend and a CSV caption builder (`mmrun new-plugin csvcap --kinds llm,dataset` plus the files
of docs/plugins.md "Writing a dataset builder") — installs as a distribution, trains `blip2_llm`
over its backend with `captioning`, gets a report with a gallery, and passes its own tests."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import pytest
from PIL import Image

from ..conftest import mm_env, run_mmrun
from .test_plugin_docs import walkthrough_files, write_files
from .test_plugins import pip_install_target

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # pip install, training, a report, pytest

COLOURS = {"red": (210, 30, 30), "green": (30, 170, 60), "blue": (40, 60, 210), "yellow": (230, 210, 40)}
SHAPES = ("square", "circle")


def write_captions(folder):
    """8 images (colour x shape) with two captions each, as CSV files beside an image folder."""
    (folder / "images").mkdir(parents=True)
    rows = []
    for colour, rgb in COLOURS.items():
        for shape in SHAPES:
            image = Image.new("RGB", (32, 32), "white")
            box = (6, 6, 26, 26)
            image.paste(rgb, box) if shape == "square" else image.paste(rgb, (10, 4, 22, 28))
            image.save(folder / "images" / f"{colour}_{shape}.png")
            rows += [(f"{colour}_{shape}.png", f"a {colour} {shape}"), (f"{colour}_{shape}.png", f"{colour} {shape}")]
    for split, chosen in (("train", rows), ("val", rows[::4])):
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows([("image", "caption"), *chosen])
    return rows


def test_a_plugin_written_from_the_docs_trains_reports_and_passes_its_tests(tmp_path):
    project = tmp_path / "mm-plugin-csvcap"
    made = run_mmrun(["new-plugin", "csvcap", "--dir", str(project), "--kinds", "llm,dataset"])
    assert made.returncode == 0, made.stderr
    guide = walkthrough_files("## Writing a dataset builder")
    assert {"src/mm_csvcap/captions.py", "src/mm_csvcap/hooks.py", "examples/csv_captions.yaml"} <= set(guide)
    write_files(project, guide)
    site = tmp_path / "site"
    pip_install_target(project, site)
    cache = tmp_path / "cache"
    write_captions(cache / "csv_captions")
    env = mm_env([site], MM_CACHE_ROOT=str(cache))

    listed = run_mmrun(["list"], env)
    assert "csvcap_llm" in listed.stdout and "csv_captions  (images)" in listed.stdout, listed.stdout
    info = run_mmrun(["info", "csvcap_llm"], env)
    assert "GPT-2 language-model backend" in info.stdout and "freeze (bool)" in info.stdout, info.stdout
    assert "Image captions from" in run_mmrun(["info", "csv_captions"], env).stdout

    out = tmp_path / "out"
    trained = run_mmrun(["--config", str(project / "examples" / "csv_captions.yaml"), "--options",
                         f"run.output_dir={out}", "run.meteor=false", "run.spice=false", "run.log_freq=1"], env, cwd=tmp_path, timeout=600)
    assert trained.returncode == 0, trained.stderr[-3000:]
    config = (out / "config.yaml").read_text()
    assert "mm_qwen_llm" not in config and "random_init" not in config  # the type's qwen options were dropped
    train = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in train if e.get("type") == "train"]
    evals = [e for e in train if e.get("type") == "eval"]
    assert losses[-1] < losses[0] and evals and "CIDEr" in evals[-1], (losses, evals)
    result = json.loads((out / "result" / "val_epoch2.json").read_text())
    assert len(result) == 4 and {"image", "images_root", "references", "score", "caption"} <= set(result[0])
    assert result[0]["images_root"] == str((cache / "csv_captions" / "images").resolve())

    report = run_mmrun(["report", str(out), "--no-plots"], env)
    assert report.returncode == 0, report.stderr
    page = (out / "report" / "report.html").read_text()
    assert len(re.findall(r'<img[^>]+src="data:image/', page)) >= 4, "the gallery shows every val image"
    assert "a red square" in page and "CIDEr" in page and "not found at" not in page

    own = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project / "tests")],
                         env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert own.returncode == 0, own.stdout[-3000:] + own.stderr[-2000:]
    assert "5 passed" in own.stdout, own.stdout[-2000:]  # the builder, the backend (2), the guide's (2); none skipped
