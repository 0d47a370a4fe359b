"""examples/blip_caption_tiny.yaml, LAVIS' caption config layout with the tiny type on the shapes data,
trains: the val CIDEr rises from the untrained model's and the run prints the before/after table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ..conftest import mm_env, run_mmrun

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "blip_caption_tiny.yaml"


def test_the_example_keeps_the_seed_layout():
    cfg = OmegaConf.load(EXAMPLE)
    assert (cfg.model.arch, cfg.model.model_type, cfg.run.task) == ("blip_caption", "tiny", "captioning")
    block = cfg.datasets.coco_caption
    assert block.type == "shapes"
    assert (block.vis_processor.train.name, block.vis_processor.eval.name) == ("blip_image_train", "blip_image_eval")
    assert (block.text_processor.train.name, block.text_processor.train.prompt) == ("blip_caption", "a picture of ")


@pytest.mark.slow
def test_the_blip_caption_example_learns_to_caption(tmp_path):
    """The example as written (20 epochs, ~70 s), evaluated before training and at the end only."""
    out = tmp_path / "out"
    run = run_mmrun(["--config", str(EXAMPLE), "--options", "run.val_freq=20", "run.ckpt_freq=20",
                     "run.test_splits=[]", "run.progress_bar=false", f"run.output_dir={out}"],
                    env=mm_env(MM_CACHE_ROOT=str(tmp_path / "cache")), timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in events if e["type"] == "eval" and e["split"] == "val"]
    assert [e["epoch"] for e in evals] == ["init", 19]
    before, after = evals[0]["CIDEr"], evals[-1]["CIDEr"]
    assert after >= max(before + 0.5, 2 * before), (before, after)  # measured: 0.0 -> 1.39
    losses = [e["loss"] for e in events if e["type"] == "train"]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    row = re.search(r"^\s+CIDEr\s+(\S+) ->\s+(\S+)$", run.stdout, re.MULTILINE)
    assert row and [float(v) for v in row.groups()] == [round(before, 4), round(after, 4)]
    captions = [c["caption"].split() for c in json.loads((out / "result" / "val_epoch19.json").read_text())]
    colours = {"red", "green", "blue", "yellow", "purple", "orange"}
    assert sum(bool(colours & set(words)) for words in captions) >= len(captions) / 2, captions  # names colours
