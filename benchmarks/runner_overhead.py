"""mm's runner beside its peer (Hugging Face ``Trainer``) and a hand-written PyTorch loop, on the tiny
BLIP-2 -> Qwen model, with glibc's default allocator and with mm's (``run.malloc_tuning``).

All three sides train the same model (``minigpt4qwen`` ``tiny``, LLM trainable, built with the same
seed) on the same batches — collated by mm's collater from the run's dataset, in the order mm's train
stream yields them — with the same AdamW (``mm_core.engine.optim.build_optimizer``: parameter groups
and kernels, ``run.optimizer_impl: auto``), batch 8, one torch thread:

* ``mm runner``: ``runner_base`` resolved from the registry, given the batches as a dataset (one
  pre-collated batch per item), so its train stream, DataLoader, step, hooks and metrics all run;
* ``Trainer``: ``transformers.Trainer`` with that optimizer and a constant schedule,
  ``max_grad_norm=0`` (no clipping, as mm's default), no evaluation, no saving, no logging;
* ``bare loop``: forward / backward / ``step`` / ``zero_grad`` over the list of batches.

Per-step times come from each side's own per-step callback (mm's ``after_train_step`` hook, the
Trainer's ``on_step_end``, the loop itself), for the steps after ``WARMUP``; a run's samples/s is the batch
over its median step time (a burst of load on a shared machine moves a median much less than a sum; the
whole window's rate is reported beside it), and each side's figure is the median over its runs. Peak RSS is the
training loop's own high-water mark (``/proc/self/clear_refs`` resets it before each side). The per-step
losses of the three sides must agree (the run stops otherwise).

Each repetition is two fresh processes, one per allocator setting (glibc's thresholds are per process
and cannot be unset), alternating which goes first; inside each, the sides run in rotating order.
Targets (issue 24): mm >= 1.0 of the bare loop and >= 1.1 of Trainer.

    python benchmarks/runner_overhead.py        # or `make bench`
"""

from __future__ import annotations

import gc
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPEATS = int(os.environ.get("MM_BENCH_RUNNER_REPEATS", "3"))
BATCH, STEPS, WARMUP, SEED = 8, 64, 8, 42
SIDES = ("mm runner", "Trainer", "bare loop")
TOLERANCE = 1e-5  # the sides' losses: the same arithmetic in the same order, so equal up to rounding


def options(out: Path) -> list[str]:
    return [
        "model.arch=minigpt4qwen", "model.model_type=tiny", "model.freeze_llm=false", "model.max_txt_len=96",
        "datasets.minigpt4_instruction.type=shapes",
        f"datasets.minigpt4_instruction.build_info.generate.num_train={BATCH * STEPS}",
        "run.task=image_text_pretrain", "run.runner=runner_base", "run.max_epoch=1", "run.init_lr=1e-4",
        "run.lr_sched=constant_lr", f"run.seed={SEED}", f"run.output_dir={out}", f"run.log_freq={STEPS}",
        "run.valid_splits=[]", "run.test_splits=[]", "run.progress_bar=false", "run.device=cpu",
        "run.num_workers=0", "run.batch_size_train=1",  # one item of the pre-collated dataset is a batch
    ]


class Batches:
    """Pre-collated batches as a dataset: item ``i`` is batch ``i``; the collater unwraps it."""

    def __init__(self, batches: list) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int):
        return self.batches[index]

    def collater(self, items: list):
        return items[0]


def prepare(out: Path):
    """The config, the task, a model builder and the batches in the order mm's stream yields them."""
    from mm_core.config.loader import load_config
    from mm_core.engine.data import TrainStream
    from mm_core.engine.run import seed_everything
    from mm_core.registry import get_registry

    cfg = load_config(None, options(out)).config
    seed_everything(SEED)
    task = get_registry().resolve("tasks", "image_text_pretrain").setup_task(cfg)
    dataset = task.build_datasets(cfg)["minigpt4_instruction"]["train"]
    collated = TrainStream(dataset, BATCH, SEED, 0, 1)  # mm's sampler order and mm's collater
    batches = Batches([collated.next() for _ in range(STEPS)])
    stream = TrainStream(batches, 1, SEED, 0, 1)  # what the runner's stream yields from ``batches``
    ordered = [stream.next() for _ in range(STEPS)]

    def build_model():
        seed_everything(SEED)
        return task.build_model(cfg).train()

    return cfg, task, build_model, batches, ordered


def new_optimizer(model, cfg):
    from mm_core.engine.optim import build_optimizer
    from mm_core.engine.settings import RunSettings

    s = RunSettings.from_config(cfg)
    return build_optimizer(model, s.init_lr, s.weight_decay, s.beta2, s.lr_layer_decay, s.optimizer_impl)


def mm_side(cfg, task, model, batches: Batches, ordered: list) -> tuple[list[float], list[float]]:
    from mm_core.hookspecs import hookimpl
    from mm_core.plugins import plugin_registered
    from mm_core.registry import get_registry

    times, losses = [], []

    class Probe:
        @hookimpl
        def after_train_step(self, run, step, metrics):
            times.append(time.perf_counter())
            losses.append(metrics["loss"])

    runner = get_registry().resolve("runners", "runner_base")(cfg, task, model, {"batches": {"train": batches}})
    with plugin_registered(Probe(), "runner_overhead_probe"):
        runner.train()
    return times, losses


def trainer_side(cfg, model, ordered: list, out: Path) -> tuple[list[float], list[float]]:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    times, losses = [], []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter())

    class Recording(Trainer):
        def training_step(self, *args, **kwargs):
            loss = super().training_step(*args, **kwargs)
            losses.append(loss)
            return loss

    args = TrainingArguments(output_dir=str(out), max_steps=STEPS, per_device_train_batch_size=1, max_grad_norm=0.0,
                             logging_strategy="no", save_strategy="no", eval_strategy="no", report_to="none",
                             disable_tqdm=True, use_cpu=True, dataloader_num_workers=0, seed=SEED,
                             remove_unused_columns=False, dataloader_pin_memory=False,
                             train_sampling_strategy="sequential")
    optimizer = new_optimizer(model, cfg)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    in_order = [{"samples": batch} for batch in ordered]  # one pre-collated batch per item, read in order
    trainer = Recording(model=model, args=args, train_dataset=in_order, data_collator=lambda items: items[0],
                        optimizers=(optimizer, schedule), callbacks=[Clock()])
    trainer.train()
    return times, [float(loss) for loss in losses]


def bare_side(cfg, model, ordered: list) -> tuple[list[float], list[float]]:
    """The loop a PyTorch user writes by hand."""
    optimizer = new_optimizer(model, cfg)
    times, losses = [], []
    for batch in ordered:
        loss = model(batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
        times.append(time.perf_counter())
    return times, [float(loss) for loss in losses]


def peak_rss_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)


def peak_rss_mb() -> float:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def worker(tuned: bool, first: int) -> dict:
    """One process: every side once, starting with ``SIDES[first]``."""
    import torch

    from mm_core.engine.allocator import tune_malloc

    applied = tune_malloc(tuned)
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    result = {"tuned": tuned, "applied": applied, "sides": {}}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MM_CACHE_ROOT"] = str(Path(tmp) / "cache")
        cfg, task, build_model, batches, ordered = prepare(Path(tmp) / "out")
        for name in SIDES[first:] + SIDES[:first]:
            gc.collect()  # the previous side's model, optimizer and runner / Trainer are gone
            model = build_model()
            peak_rss_reset()
            if name == "mm runner":
                times, losses = mm_side(cfg, task, model, batches, ordered)
            elif name == "Trainer":
                times, losses = trainer_side(cfg, model, ordered, Path(tmp) / "trainer")
            else:
                times, losses = bare_side(cfg, model, ordered)
            result["sides"][name] = {"times": times, "losses": losses, "peak_rss_mb": peak_rss_mb()}
            del model
    return result


def spawn(tuned: bool, first: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MM_MALLOC_TUNING": "1" if tuned else "0"}
    done = subprocess.run([sys.executable, __file__, "--worker", str(int(tuned)), str(first)], capture_output=True,
                          text=True, env=env, timeout=1200)
    if done.returncode != 0:
        raise SystemExit(f"runner_overhead worker failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_losses(results: list[dict]) -> float:
    """The largest difference between any side's per-step losses and the bare loop's (tuned or not)."""
    reference = results[0]["sides"]["bare loop"]["losses"]
    worst = 0.0
    for result in results:
        for name, side in result["sides"].items():
            if len(side["losses"]) != STEPS:
                raise SystemExit(f"{name} took {len(side['losses'])} steps, not {STEPS}")
            worst = max(worst, max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(side["losses"], reference)))
    if worst > TOLERANCE:
        raise SystemExit(f"the sides' losses differ by up to {worst:.2e} (> {TOLERANCE}): they did not train alike")
    return worst


def summarize(results: list[dict]) -> list[dict]:
    rows = []
    for tuned in (False, True):
        for name in SIDES:
            sides = [r["sides"][name] for r in results if r["tuned"] == tuned]
            per_run = [[b - a for a, b in zip(s["times"][WARMUP - 1:], s["times"][WARMUP:])] for s in sides]
            rates = [BATCH / statistics.median(steps) for steps in per_run]
            overall = [(STEPS - WARMUP) * BATCH / sum(steps) for steps in per_run]
            steps = [t * 1e3 for run_steps in per_run for t in run_steps]
            deciles = statistics.quantiles(steps, n=10)
            rows.append({"side": name, "allocator": "mm (tuned)" if tuned else "glibc default",
                         "samples_per_s": round(statistics.median(rates), 1), "runs": len(rates),
                         "samples_per_s_whole_window": round(statistics.median(overall), 1),
                         "step_ms_p50": round(statistics.median(steps), 2), "step_ms_p90": round(deciles[8], 2),
                         "peak_rss_mb": round(statistics.median(s["peak_rss_mb"] for s in sides))})
    return rows


def run() -> dict:
    results = []
    for repeat in range(REPEATS):  # allocator settings alternate which goes first; sides rotate
        for tuned in ((False, True) if repeat % 2 == 0 else (True, False)):
            results.append(spawn(tuned, repeat % len(SIDES)))
    if not all(r["applied"] == r["tuned"] for r in results):
        raise SystemExit("the allocator setting was not applied as asked (glibc only: is this Linux/glibc?)")
    worst = check_losses(results)
    rows = summarize(results)
    rate = {(r["side"], r["allocator"]): r["samples_per_s"] for r in rows}
    mm, default = rate["mm runner", "mm (tuned)"], "glibc default"
    for row in rows:
        row["ratio_to_bare_default"] = round(row["samples_per_s"] / rate["bare loop", default], 3)
    return {
        "benchmark": "runner_overhead",
        "model": f"minigpt4qwen tiny (LLM trainable), batch {BATCH}, max_txt_len 96, AdamW via build_optimizer",
        "steps_timed": f"{STEPS - WARMUP} after {WARMUP} warm-up", "repeats": REPEATS,
        "losses_max_rel_diff": worst,
        "mm_vs_bare": round(mm / rate["bare loop", default], 3),
        "mm_vs_trainer": round(mm / rate["Trainer", default], 3),
        "same_allocator_mm_vs_bare": f"{rate['mm runner', default] / rate['bare loop', default]:.3f} (default) / "
                                     f"{mm / rate['bare loop', 'mm (tuned)']:.3f} (tuned)",
        "same_allocator_mm_vs_trainer": f"{rate['mm runner', default] / rate['Trainer', default]:.3f} (default) / "
                                        f"{mm / rate['Trainer', 'mm (tuned)']:.3f} (tuned)",
        "tuned_vs_default": {n: round(rate[n, "mm (tuned)"] / rate[n, default], 3) for n in SIDES},
        "target": "mm >= 1.0 x bare loop and >= 1.1 x Trainer (each with glibc's default allocator)",
        "target_met": mm / rate["bare loop", default] >= 1.0 and mm / rate["Trainer", default] >= 1.1,
        "rows": rows,
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        print(json.dumps(worker(bool(int(sys.argv[2])), int(sys.argv[3]))))
    else:
        print(json.dumps(run(), indent=1))
