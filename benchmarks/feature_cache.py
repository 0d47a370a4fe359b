"""Frozen vision features: epoch time of the BLIP-2 -> Qwen model with ``cache_image_features`` on
vs off (the default), vision tower and Q-Former frozen, eval transform.

The model is ``minigpt4qwen`` ``tiny`` with a larger vision side so that the image path weighs
as it does in the real model (EVA-style tower 96 px, patch 8, width 192, depth 6; Q-Former width
128, 32 query tokens), the tiny Qwen frozen and the projection trainable (MiniGPT4-Qwen's
setting). Both sides are built from the same seed and train on the same batches (images already
transformed: decoding is the same on both sides and not what the cache saves). Epoch 1 fills the
cache; epochs 2.. are timed, the sides alternating epoch by epoch; medians. The losses of every
step must agree (``max_loss_diff``).

    python benchmarks/feature_cache.py         # or `make bench`
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time

import torch

EPOCHS = int(os.environ.get("MM_BENCH_CACHE_EPOCHS", "4"))  # epoch 1 fills the cache
IMAGES, BATCH = 64, 8
VISION = {"image_size": 96, "vision": {"embed_dim": 192, "depth": 6, "num_heads": 3, "patch_size": 8, "mlp_ratio": 4.0},
          "num_query_token": 32,
          "qformer": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256,
                      "vocab_size": 128, "max_position_embeddings": 64}}
ANSWERS = ["a red circle on a white background", "two blue squares", "a green triangle next to a yellow star",
           "the shape is small"]


def build(cache: bool):
    from omegaconf import OmegaConf

    from mm_core.config.loader import load_model_defaults
    from mm_core.registry import get_registry

    cfg = load_model_defaults("minigpt4qwen", "tiny").model
    cfg = OmegaConf.merge(cfg, VISION, {"freeze_llm": True, "cache_image_features": cache})
    model = get_registry().resolve("models", "minigpt4qwen").from_config(cfg)  # init_seed: same weights
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return model.train(), optimizer


def batches() -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(IMAGES, 3, VISION["image_size"], VISION["image_size"], generator=generator)
    out = []
    for start in range(0, IMAGES, BATCH):
        conversations = [[{"from": "user", "value": "<Img><ImageHere></Img> Describe the image."},
                          {"from": "assistant", "value": ANSWERS[(start + i) % len(ANSWERS)]}] for i in range(BATCH)]
        out.append({"image": images[start:start + BATCH], "conversations": conversations})
    return out


def epoch(model, optimizer, data: list[dict]) -> tuple[float, list[float]]:
    losses = []
    start = time.perf_counter()
    for samples in data:
        loss = model(samples)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return time.perf_counter() - start, losses


def run() -> dict:
    logging.disable(logging.INFO)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    data = batches()
    sides = {"cache off (default)": build(False), "cache_image_features": build(True)}
    times: dict[str, list[float]] = {name: [] for name in sides}
    losses: dict[str, list[float]] = {name: [] for name in sides}
    first: dict[str, float] = {}
    for e in range(EPOCHS):
        for name, (model, optimizer) in sides.items():  # alternate, epoch by epoch
            seconds, epoch_losses = epoch(model, optimizer, data)
            losses[name] += epoch_losses
            if e == 0:
                first[name] = seconds
            else:
                times[name].append(seconds)
    logging.disable(logging.NOTSET)
    cache = sides["cache_image_features"][0].feature_cache
    medians = {name: statistics.median(values) for name, values in times.items()}
    rows = [{"side": name, "epoch1_s": round(first[name], 2), "later_epoch_s_median": round(medians[name], 2),
             "later_runs_s": " ".join(f"{v:.2f}" for v in times[name]),
             "speedup": round(medians["cache off (default)"] / medians[name], 2)} for name in sides]
    diff = max(abs(a - b) for a, b in zip(*losses.values()))
    return {
        "benchmark": "feature_cache",
        "model": "minigpt4qwen tiny, vision 96px/192w/depth 6, Q-Former 128w, 32 queries, LLM frozen",
        "images": IMAGES, "batch": BATCH, "timed_epochs": EPOCHS - 1,
        "cache_hits_misses": [cache.hits, cache.misses],
        "max_loss_diff": float(f"{diff:.2e}"), "identical_loss": diff <= 1e-6,
        "rows": rows,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
