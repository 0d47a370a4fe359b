"""Offline batch inference: ``mmrun predict`` images/s vs a per-image Python loop over ``model.generate``.

Same model (``minigpt4qwen`` ``tiny``, random init, loaded by ``load_model_for_inference``), same
``IMAGES`` generated PNG images, same greedy settings (``TOKENS`` new tokens, the model's own
caption prompt), one torch thread:

* ``mmrun predict``: the command itself (in this process), ``--batch-size`` 16 (and 1, to show the
  command's own per-image cost), no DataLoader workers; its images/s is the one its summary line
  prints (decoding, batching, generation and the flushed JSONL lines; loading the model is not timed);
* ``per-image loop``: open, process and ``model.generate`` each image alone, as a user script would.

The sides alternate, ``REPEATS`` times; medians are compared. Target (issue 22): >= 3x at batch 16.
The outputs of both sides are compared too (they must be the same captions).

    python benchmarks/predict.py        # or `make bench`
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

REPEATS = int(os.environ.get("MM_BENCH_PREDICT_REPEATS", "3"))
IMAGES = 128
TOKENS = 16
CONFIG = "model:\n  arch: minigpt4qwen\n  model_type: tiny\n"


def make_images(root: Path) -> Path:
    from PIL import Image, ImageDraw

    folder = root / "images"
    folder.mkdir()
    for i in range(IMAGES):
        image = Image.new("RGB", (64, 64), (37 * i % 256, 255 - 3 * i, 91 * i % 256))
        ImageDraw.Draw(image).ellipse([8 + i % 16, 8, 40 + i % 20, 48], fill=(255 - 37 * i % 256, 20, 200))
        image.save(folder / f"img{i:03d}.png")
    return folder


def predict_rate(config: Path, folder: Path, out: Path, batch: int) -> tuple[float, list[str]]:
    """Images/s from the summary of one ``mmrun predict`` run, and its outputs in input order."""
    from mm_core.cli.main import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["predict", "--config", str(config), "--inputs", str(folder), "--output", str(out),
                     "--batch-size", str(batch), "--num-workers", "0", "--max-new-tokens", str(TOKENS),
                     "--device", "cpu", "--no-progress-bar"])
    match = re.search(r"([\d.]+) images/s", err.getvalue())
    if code != 0 or match is None:
        raise SystemExit(f"mmrun predict failed ({code}):\n{err.getvalue()}")
    return float(match.group(1)), [json.loads(line)["output"] for line in out.read_text().splitlines()]


def loop_rate(loaded, folder: Path) -> tuple[float, list[str]]:
    """Images/s of a per-image loop: open, process, ``generate`` one image at a time."""
    import torch

    from mm_serve.images import open_image

    outputs = []
    start = time.perf_counter()
    with torch.no_grad():
        for path in sorted(folder.iterdir()):
            pixels = loaded.vis_processor(open_image(str(path))).unsqueeze(0)
            outputs.append(loaded.model.generate({"image": pixels}, max_new_tokens=TOKENS, num_beams=1)[0].strip())
    return IMAGES / (time.perf_counter() - start), outputs


def run() -> dict:
    import logging

    import torch

    from mm_core.api import load_model_for_inference

    logging.disable(logging.WARNING)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rates: dict[str, list[float]] = {"mmrun predict, batch 16": [], "mmrun predict, batch 1": [], "per-image loop": []}
    outputs: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = make_images(root)
        config = root / "tiny.yaml"
        config.write_text(CONFIG)
        loaded = load_model_for_inference(str(config), device="cpu")
        for repeat in range(REPEATS):  # alternate the sides
            for name in rates:
                if name == "per-image loop":
                    rate, texts = loop_rate(loaded, folder)
                else:
                    batch = int(name.rsplit(" ", 1)[1])
                    rate, texts = predict_rate(config, folder, root / f"out_{batch}_{repeat}.jsonl", batch)
                rates[name].append(rate)
                outputs[name] = texts
    logging.disable(logging.NOTSET)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    loop = medians["per-image loop"]
    rows = [{"side": name, "images_per_s_median": round(medians[name], 1),
             "runs": " ".join(f"{v:.1f}" for v in rates[name]), "vs_loop": round(medians[name] / loop, 2)}
            for name in rates]
    same = len({tuple(texts) for texts in outputs.values()}) == 1
    return {
        "benchmark": "predict",
        "model": "minigpt4qwen tiny (random init), greedy",
        "images": IMAGES, "max_new_tokens": TOKENS, "repeats": REPEATS,
        "same_outputs": same,
        "speedup_batch16": round(medians["mmrun predict, batch 16"] / loop, 2),
        "rows": rows,
    }


if __name__ == "__main__":
    result = run()
    print(json.dumps(result, indent=1))
