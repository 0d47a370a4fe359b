"""How much mm's training run costs over a hand-written PyTorch loop, on the tiny BLIP-2 -> Qwen model.

Sides (same model config and init seed, same AdamW parameter groups, batch 8, one thread):

* ``mm run``: a full ``run_config`` (what ``mmrun --config`` does) of ``minigpt4qwen`` ``tiny``
  (LLM trainable) on the generated ``minigpt4_instruction`` shapes data, images decoded and
  transformed by the run's data pipeline; ``num_workers`` 1 (loading overlaps compute, as one would
  train) and 0 (everything in the training process). Throughput is read from ``metrics.jsonl``
  of each window between two logged steps after the first, so building the model, the first
  ``log_freq`` (warm-up) steps and the final checkpoint are not counted.
* ``bare loop``: forward / backward / ``optimizer.step`` / ``zero_grad`` over batches collated
  beforehand (no data loading at all: the issue's reference), after the same warm-up steps; and
  the same loop reading the same DataLoader as the run with 0 workers, which isolates the
  runner's own per-step cost from the cost of loading data.

The sides alternate, ``REPEATS`` times; the medians over all windows (of ``log_freq`` steps) of a
side are compared, which a burst of load on a shared machine moves less than whole-run means. Target (issue 10): mm run / bare
loop over pre-collated batches >= 0.95.

    python benchmarks/runner_overhead.py        # or `make bench`
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

REPEATS = int(os.environ.get("MM_BENCH_RUNNER_REPEATS", "3"))
BATCH = 8
STEPS = 64  # one epoch: NUM_TRAIN / BATCH
WARMUP = 8  # = log_freq: the run's throughput window starts at its first log line
NUM_TRAIN = BATCH * STEPS


def options(out: Path, workers: int) -> list[str]:
    return [
        "model.arch=minigpt4qwen", "model.model_type=tiny", "model.freeze_llm=false", "model.max_txt_len=96",
        "datasets.minigpt4_instruction.type=shapes",
        f"datasets.minigpt4_instruction.build_info.generate.num_train={NUM_TRAIN}",
        "run.task=image_text_pretrain", "run.runner=runner_base", "run.max_epoch=1",
        f"run.batch_size_train={BATCH}", "run.init_lr=1e-4", "run.lr_sched=constant_lr", "run.seed=42",
        f"run.output_dir={out}", f"run.log_freq={WARMUP}", "run.valid_splits=[]", "run.test_splits=[]",
        "run.progress_bar=false", "run.device=cpu", f"run.num_workers={workers}",
    ]


def mm_throughput(out: Path, workers: int) -> list[float]:
    """Samples/s of each logging window (``log_freq`` steps) of a full run after the first."""
    from mm_core.config.loader import load_config
    from mm_core.engine.run import run_config

    if run_config(load_config(None, options(out, workers))) != 0:
        raise SystemExit("the mm run failed")
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [e for e in events if e["type"] == "train"]
    return [(b["step"] - a["step"]) * BATCH / (b["wall_time"] - a["wall_time"]) for a, b in zip(train, train[1:])]


def build(out: Path):
    """Model, optimizer and train split exactly as the run builds them (same seed, same groups)."""
    from mm_core.config.loader import load_config
    from mm_core.engine.optim import build_optimizer
    from mm_core.engine.run import seed_everything
    from mm_core.engine.settings import RunSettings
    from mm_core.registry import get_registry

    cfg = load_config(None, options(out, 0)).config
    seed_everything(42)
    task = get_registry().resolve("tasks", "image_text_pretrain").setup_task(cfg)
    dataset = task.build_datasets(cfg)["minigpt4_instruction"]["train"]
    model = task.build_model(cfg)
    s = RunSettings.from_config(cfg)
    optimizer = build_optimizer(model, s.init_lr, s.weight_decay, s.beta2, s.lr_layer_decay)
    return model.train(), optimizer, dataset


def bare_throughput(model, optimizer, batches) -> list[float]:
    """The loop a PyTorch user writes by hand; ``batches`` is a list or an iterable (a loader).
    Samples/s of each window of ``WARMUP`` steps after the first, as the run's log windows."""
    iterator = iter(batches)
    windows, start = [], 0.0
    for step in range(STEPS):
        if step % WARMUP == 0:
            now = time.perf_counter()
            if step > WARMUP - 1 and start:
                windows.append(WARMUP * BATCH / (now - start))
            start = now if step >= WARMUP else 0.0
        loss = model(next(iterator))["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    windows.append(WARMUP * BATCH / (time.perf_counter() - start))
    return windows


def loader_of(dataset, seed: int):
    import torch

    return torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, drop_last=True,
                                       collate_fn=dataset.collater, generator=torch.Generator().manual_seed(seed))


def run() -> dict:
    import torch

    logging.disable(logging.INFO)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    sides = ("mm run, 1 worker", "mm run, 0 workers", "bare loop, pre-collated", "bare loop, same DataLoader")
    samples: dict[str, list[float]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory() as tmp:
        previous = os.environ.get("MM_CACHE_ROOT")
        os.environ["MM_CACHE_ROOT"] = str(Path(tmp) / "cache")
        try:
            for repeat in range(REPEATS):  # the sides alternate; every side starts from a fresh model
                samples[sides[0]] += mm_throughput(Path(tmp) / f"w1_{repeat}", 1)
                model, optimizer, dataset = build(Path(tmp) / "bare")
                samples[sides[2]] += bare_throughput(model, optimizer, list(loader_of(dataset, repeat))[:STEPS])
                samples[sides[1]] += mm_throughput(Path(tmp) / f"w0_{repeat}", 0)
                model, optimizer, dataset = build(Path(tmp) / "bare")
                samples[sides[3]] += bare_throughput(model, optimizer, loader_of(dataset, repeat))
        finally:
            logging.disable(logging.NOTSET)
            if previous is None:
                os.environ.pop("MM_CACHE_ROOT", None)
            else:
                os.environ["MM_CACHE_ROOT"] = previous
    medians = {name: statistics.median(values) for name, values in samples.items()}
    reference = medians["bare loop, pre-collated"]
    rows = [{"side": name, "median_samples_per_s": round(medians[name], 1),
             "windows": len(samples[name]),
             "p25_p75": f"{statistics.quantiles(samples[name], n=4)[0]:.1f}-{statistics.quantiles(samples[name], n=4)[2]:.1f}",
             "ratio_to_bare_precollated": round(medians[name] / reference, 3)} for name in sides]
    ratio = medians[sides[0]] / reference
    return {
        "benchmark": "runner_overhead",
        "model": "minigpt4qwen tiny (LLM trainable), batch 8, max_txt_len 96",
        "steps_timed": f"{STEPS - WARMUP} after {WARMUP} warm-up", "repeats": REPEATS,
        "torch_threads": torch.get_num_threads(),
        "ratio": round(ratio, 3),
        "runner_only_ratio": round(medians[sides[1]] / medians[sides[3]], 3),
        "target": ">= 0.95", "target_met": ratio >= 0.95,
        "rows": rows,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
