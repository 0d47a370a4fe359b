"""Scaling with work: training-step time of the tiny BLIP-2 -> Qwen composition as the batch size
doubles 1 -> 16 (text 128 tokens) and the text length doubles 64 -> 512 tokens (batch 4).

A step is forward + backward + AdamW step of ``minigpt4qwen`` ``tiny`` with the LLM trainable,
on (B, 3, 32, 32) images and conversations truncated to exactly the text length. The points are
visited in turn, ``REPEATS`` times (after one warm-up pass), and the median step time is
reported with the step-time ratio to the previous point: 2.0 is linear; below 2.0 means fixed
per-step costs (Python, kernel launches) are still amortising, above 2.0 super-linear growth
(attention's quadratic term, cache effects).

    python benchmarks/scaling.py              # or `make bench`
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time

import torch

REPEATS = int(os.environ.get("MM_BENCH_SCALING_REPEATS", "5"))
BATCHES = (1, 2, 4, 8, 16)
LENGTHS = (64, 128, 256, 512)
FIXED_LENGTH, FIXED_BATCH = 128, 4
WORDS = "a red circle on a white background next to the small blue square and green line".split()


def build():
    from mm_core.config.loader import load_model_defaults
    from mm_core.engine.optim import build_optimizer
    from mm_core.registry import get_registry

    cfg = load_model_defaults("minigpt4qwen", "tiny").model
    cfg.freeze_llm = False
    model = get_registry().resolve("models", "minigpt4qwen").from_config(cfg)
    return model.train(), build_optimizer(model, 1e-4, 0.05)


def batch_of(size: int, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    answer = " ".join(WORDS[i % len(WORDS)] for i in range(700))  # longer than any length: truncated
    return {"image": torch.rand(size, 3, 32, 32, generator=generator),
            "conversations": [[{"from": "user", "value": "<Img><ImageHere></Img> Describe the image."},
                               {"from": "assistant", "value": answer}] for _ in range(size)]}


def step_seconds(model, optimizer, samples: dict, length: int) -> float:
    model.max_txt_len = length
    start = time.perf_counter()
    loss = model(samples)["loss"]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def run() -> dict:
    logging.disable(logging.INFO)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model, optimizer = build()
    points = [("batch", b, b, FIXED_LENGTH) for b in BATCHES] + [("length", n, FIXED_BATCH, n) for n in LENGTHS]
    batches = {b: batch_of(b, b) for b in set(BATCHES) | {FIXED_BATCH}}
    for _, _, b, n in points:  # warm-up
        step_seconds(model, optimizer, batches[b], n)
    times: dict[tuple, list[float]] = {p: [] for p in points}
    for _ in range(REPEATS):
        for p in points:  # interleaved, so load changes spread over every point
            times[p].append(step_seconds(model, optimizer, batches[p[2]], p[3]))
    logging.disable(logging.NOTSET)
    rows, previous = [], {}
    for p in points:
        kind, value, b, n = p
        median = statistics.median(times[p])
        rows.append({"varied": kind, "batch": b, "text_tokens": n, "step_ms": round(1000 * median, 1),
                     "ms_per_sample": round(1000 * median / b, 2),
                     "ratio_to_previous": round(median / previous[kind], 2) if kind in previous else ""})
        previous[kind] = median
    ratios = {kind: [r["ratio_to_previous"] for r in rows if r["varied"] == kind and r["ratio_to_previous"] != ""]
              for kind in ("batch", "length")}
    last_ratio = {kind: values[-1] for kind, values in ratios.items()}
    return {
        "benchmark": "scaling",
        "model": "minigpt4qwen tiny (LLM trainable)", "repeats": REPEATS,
        "last_doubling_ratio": last_ratio,
        "near_linear": all(1.5 <= v <= 2.5 for v in last_ratio.values()),
        "rows": rows,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
