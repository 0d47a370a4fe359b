"""examples/minigpt4qwen_video_tiny.yaml trains the tiny MiniGPT4-Qwen on generated mp4 videos (and
images, in shared batches) with a falling loss, on MPP-LLaVA's step-wise cosine with warmup_ratio."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from .conftest import REPO, mmrun

pytestmark = pytest.mark.slow  # a real training run in a subprocess

EXAMPLE = REPO / "examples" / "minigpt4qwen_video_tiny.yaml"


def test_video_example_trains_with_a_falling_loss_on_the_step_wise_schedule(tmp_path):
    mmrun(["--config", str(EXAMPLE), "--options", f"run.output_dir={tmp_path / 'out'}", "run.progress_bar=false"],
          cache=tmp_path)
    events = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    run = yaml.safe_load(EXAMPLE.read_text())["run"]

    video_val = [e["loss"] for e in events if e["type"] == "eval" and e["split"] == "videochatgpt_100k/val"]
    assert len(video_val) == run["max_epoch"] and video_val[-1] < 0.5 * video_val[0], video_val
    train = [e for e in events if e["type"] == "train"]
    first, last = train[:3], train[-3:]
    assert sum(e["loss"] for e in last) < 0.5 * sum(e["loss"] for e in first)

    # 32 generated videos + 64 images, batches of 8: 12 optimizer steps per epoch
    total = run["max_epoch"] * (32 + 64) // run["batch_size_train"]
    warmup = int(run["warmup_ratio"] * total)
    assert train[-1]["step"] == total
    for event in train:  # the lr logged at step s is the one optimizer step s - 1 used
        step = event["step"] - 1
        if step < warmup:
            lr = run["warmup_lr"] + (run["init_lr"] - run["warmup_lr"]) * step / warmup
        else:
            lr = run["min_lr"] + (run["init_lr"] - run["min_lr"]) * (
                1 + math.cos(math.pi * (step - warmup) / (total - warmup))) / 2
        assert event["lr"] == pytest.approx(lr, rel=1e-9), event["step"]
