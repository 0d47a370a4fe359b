"""Runners: the training loop shared by ``runner_base`` (epochs) and ``runner_iter`` (iterations);
the loop and the methods a plugin's runner may override: docs/plugins.md, "Writing a runner"."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from mm_core.base.dataset import batch_size_of
from mm_core.engine.allocator import tune_malloc
from mm_core.engine.checkpoint import CheckpointStore, capture_rng, read_training_state, restore_rng
from mm_core.engine.data import MixedTrainStream, TrainStream, build_train_stream, move_to_device
from mm_core.engine.distributed import DistContext, init_distributed
from mm_core.engine.evaluation import evaluate_split
from mm_core.engine.guards import StopSignals, check_finite, preflight_output_dir
from mm_core.engine.metrics import MetricsLog, max_memory_mb
from mm_core.engine.optim import build_optimizer
from mm_core.engine.precision import Precision, build_precision
from mm_core.engine.settings import RunSettings
from mm_core.errors import CheckpointError, ConfigError
from mm_core.run_view import RunView

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Where training is; saved in every checkpoint so a resumed run continues exactly."""

    epoch: int = 0  # epochs completed
    iter_in_epoch: int = 0  # micro-batches done in the current epoch
    global_iter: int = 0
    step: int = 0  # optimizer steps done
    best_value: float | None = None
    best_tag: str | None = None
    best_epoch: int | None = None
    elapsed: float = 0.0


class Runner:
    """Trains and evaluates ``model`` on ``datasets`` as ``task`` says, under ``cfg.run``."""

    def __init__(self, cfg: DictConfig, task: Any, model: torch.nn.Module, datasets: dict[str, dict[str, Any]]):
        self.cfg = self.config = cfg
        self.settings = RunSettings.from_config(cfg)
        self.task = task
        self.datasets = datasets
        s = self.settings
        tune_malloc(s.malloc_tuning)
        self.ctx: DistContext = init_distributed(s.device, s.dist_backend, s.dist_timeout)
        self.output_dir = Path(s.output_dir)
        self.model = model.to(self.ctx.device)
        self.view = RunView(config=cfg, output_dir=self.output_dir, runner=s.runner, rank=self.ctx.rank,
                            world_size=self.ctx.world_size)
        self.progress = Progress()
        self.store = CheckpointStore(self.output_dir / "checkpoints", keep_last=s.keep_last)
        self.precision: Precision = build_precision(self.ctx.device, s.amp, s.autocast_dtype, s.loss_scale)
        self.wrapped_model: torch.nn.Module = self.model
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Any = None
        self.stream: TrainStream | MixedTrainStream | None = None
        self.metrics: MetricsLog | None = None
        self.last_checkpoint: str | None = None
        self.eval_history: dict[str, list[tuple[int | str, dict[str, float]]]] = {}
        self.last_saved_step: int | None = None
        self.epoch_length = 0  # micro-batches of the epoch being trained (LAVIS' num_iters_per_epoch)
        if s.gradient_checkpointing and hasattr(self.model, "set_gradient_checkpointing"):
            self.model.set_gradient_checkpointing(True)

    # -- plan ----------------------------------------------------------------------------
    def plan(self) -> list[int]:
        """Iterations (micro-batches) of each epoch."""
        raise NotImplementedError

    @property
    def hook(self) -> Any:
        from mm_core.plugins import get_plugin_host

        return get_plugin_host().pm.hook

    def run_view(self, metrics: dict[str, Any] | None = None) -> RunView:
        """The lifecycle hooks' view of the run, brought up to date."""
        self.view.step, self.view.epoch = self.progress.step, self.progress.epoch
        self.view.metrics = dict(metrics or {})
        return self.view

    # -- building --------------------------------------------------------------------------
    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """DistributedDataParallel when a process group exists."""
        if not self.ctx.enabled or not any(p.requires_grad for p in model.parameters()):
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def build_optimizer(self) -> torch.optim.Optimizer:
        s = self.settings
        return build_optimizer(self.model, s.init_lr, s.weight_decay, s.beta2, s.lr_layer_decay, s.optimizer_impl)

    def build_scheduler(self, epochs: list[int]) -> Any:
        from mm_core.registry import get_registry

        s = self.settings
        cls = get_registry().resolve("lr_schedulers", s.lr_sched)
        steps_per_epoch = math.ceil(epochs[0] / s.accum_grad_iters) if epochs else 0
        total = sum(math.ceil(length / s.accum_grad_iters) for length in epochs)  # optimizer steps
        warmup = int(s.warmup_ratio * total) if s.warmup_ratio is not None else s.warmup_steps
        return cls(optimizer=self.optimizer, max_epoch=len(epochs), init_lr=s.init_lr, min_lr=s.min_lr,
                   decay_rate=s.lr_decay_rate, warmup_start_lr=s.warmup_lr, warmup_steps=warmup,
                   iters_per_epoch=steps_per_epoch, max_iters=sum(epochs), max_steps=total)

    def setup_training(self) -> list[int]:
        s = self.settings
        self.check_splits(training=True)
        self.stream = build_train_stream(self.datasets, s, self.ctx.rank, self.ctx.world_size)
        epochs = self.plan()
        if self.ctx.is_main:
            trainable_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters() if p.requires_grad)
            preflight_output_dir(self.output_dir, needed_bytes=4 * trainable_bytes + (16 << 20))
            self.store.clean_temporaries()
        self.optimizer = self.build_optimizer()
        self.scheduler = self.build_scheduler(epochs)
        self.wrapped_model = self.wrap_model(self.model)
        return epochs

    def check_splits(self, training: bool) -> None:
        labels = self.eval_labels(self.settings.valid_splits)
        best = self.settings.best_split
        if training and best is not None and best not in labels:
            raise ConfigError(f"run.best_split '{best}' is not among the evaluated validation splits {list(labels)}",
                              hint="add it to run.valid_splits (as <split>, or <dataset>/<split> with several datasets)")

    def eval_labels(self, splits: list[str]) -> dict[str, Any]:
        """``label -> dataset`` of the given splits (label: ``split``, or ``dataset/split`` with several)."""
        labels = {}
        several = len(self.datasets) > 1
        for name, splits_of in self.datasets.items():
            for split in splits:
                if split in splits_of:
                    labels[f"{name}/{split}" if several else split] = splits_of[split]
        return labels

    # -- training ------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Train (resuming when ``run.resume_ckpt_path`` is set), evaluate, test with the best."""
        epochs = self.setup_training()
        if self.settings.resume_ckpt_path:
            self.load_checkpoint(self.resolve_resume(self.settings.resume_ckpt_path))
        self.metrics = MetricsLog(self.output_dir, self.ctx.is_main, self.settings.progress_bar,
                                  wall_offset=self.progress.elapsed)
        signals = StopSignals().install()
        status, summary = "failed", {}
        try:
            if self.settings.eval_before_train and self.progress.step == 0 and self.settings.valid_splits:
                self.evaluate_splits(self.settings.valid_splits, "init")  # the untrained baseline
            summary = self._train_epochs(epochs, signals)
            status = "interrupted" if signals.requested else "completed"
            if status == "completed":
                summary["test"] = self.test_with_best()
        finally:
            signals.restore()
            self.metrics.close()
            self.hook.run_finished(run=self.run_view(), status=status)
        if self.ctx.is_main and self.eval_history:
            print(format_eval_history(self.eval_history), flush=True)
        summary.update(status=status, signal=signals.received, step=self.progress.step)
        return summary

    def _train_epochs(self, epochs: list[int], signals: StopSignals) -> dict[str, Any]:
        s = self.settings
        self.metrics.start_bar(sum(epochs), self.progress.global_iter)
        window = _Window()
        last_eval: dict[str, Any] = {}
        while self.progress.epoch < len(epochs):
            epoch, length = self.progress.epoch, epochs[self.progress.epoch]
            self.epoch_length = length
            self.wrapped_model.train()
            while self.progress.iter_in_epoch < length:
                group = min(s.accum_grad_iters, length - self.progress.iter_in_epoch)
                values, n_samples = self.train_step(group)
                window.add(values, n_samples)
                stop = self._stop_requested(signals)
                if self.progress.step % s.log_freq == 0 or stop:
                    self._log_train(window)
                if stop:
                    self.save_checkpoint()
                    return {"stopped_at": self.progress.step}
                mid_epoch = self.progress.iter_in_epoch < length
                if s.ckpt_iters and self.progress.step % s.ckpt_iters == 0 and mid_epoch:
                    self.save_checkpoint()
            self.progress.epoch += 1
            self.progress.iter_in_epoch = 0
            last = self.progress.epoch == len(epochs)
            is_best = False
            if s.valid_splits and (self.progress.epoch % s.val_freq == 0 or last):
                last_eval, is_best = self.validate(epoch)
            if is_best or last or self.progress.epoch % s.ckpt_freq == 0:
                self.save_checkpoint(best=is_best)
        return {"valid": last_eval}

    def train_step(self, group: int) -> tuple[dict[str, float], int]:
        """Forward and backward over ``group`` micro-batches, then one optimizer step."""
        model = self.wrapped_model
        terms: dict[str, torch.Tensor] = {}
        n_samples = 0
        for k in range(group):
            samples = move_to_device(self.stream.next(), self.ctx.device)
            n_samples += batch_size_of(samples)
            if isinstance(samples, dict):  # what LAVIS' runner adds to a batch (ramps such as BLIP's alpha read it)
                samples.update(epoch=self.progress.epoch, iters=self.progress.iter_in_epoch + k,
                               num_iters_per_epoch=self.epoch_length)
            with self.accumulation_context(model, last=k == group - 1):
                with self.precision.autocast():
                    output = self.task.train_step(model=model, samples=samples)
                self.backward(output["loss"] / group)
            for key, value in output.items():
                if isinstance(value, torch.Tensor) and value.numel() == 1 and (key == "loss" or key.startswith("loss")):
                    terms[key] = terms.get(key, 0.0) + value.detach().float() / group
        keys = sorted(terms)
        numbers = dict(zip(keys, torch.stack([terms[k] for k in keys]).tolist()))  # one device sync
        self.progress.iter_in_epoch += group
        self.progress.global_iter += group
        step = self.progress.step + 1
        nonfinite = self.ctx.any_true(not math.isfinite(numbers["loss"]))
        if nonfinite:
            self.optimizer.zero_grad(set_to_none=True)
            check_finite(numbers["loss"] if not math.isfinite(numbers["loss"]) else float("nan"),
                         step, self.progress.epoch, self.last_checkpoint)
        lr = self.scheduler.step(cur_epoch=self.progress.epoch, cur_step=self.progress.step)
        self.optimizer_step()
        self.progress.step = step
        values = {**numbers, "lr": lr, "epoch": self.progress.epoch}
        self.hook.after_train_step(run=self.run_view(values), step=step, metrics=dict(values))
        self.metrics.advance(group, loss=numbers["loss"], lr=lr)
        return values, n_samples

    def accumulation_context(self, model: torch.nn.Module, last: bool) -> Any:
        """Context of one micro-batch's forward and backward; ``last`` marks the micro-batch that
        ends an optimizer step. DDP skips its gradient all-reduce (``no_sync``) on the others."""
        if last or not hasattr(model, "no_sync"):
            return contextlib.nullcontext()
        return model.no_sync()

    def backward(self, loss: torch.Tensor) -> None:
        """Backward pass of one micro-batch (scaled when a GradScaler is in use)."""
        scaler = self.precision.scaler
        (scaler.scale(loss) if scaler is not None else loss).backward()

    def optimizer_step(self) -> None:
        """Clip, step, update the scaler, zero the gradients."""
        scaler, clip = self.precision.scaler, self.settings.grad_norm_clip
        if clip is not None and clip > 0:
            if scaler is not None:
                scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, clip)
        if scaler is not None:
            scaler.step(self.optimizer)
            scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _stop_requested(self, signals: StopSignals) -> bool:
        return self.ctx.any_true(signals.requested or self.view.stop_requested)

    def _log_train(self, window: _Window) -> None:
        values = self.ctx.mean(window.means())
        if not values:
            return
        elapsed = max(window.elapsed(), 1e-9)
        event = {"type": "train", "step": self.progress.step, "epoch": self.progress.epoch,
                 "iter": self.progress.global_iter, **values,
                 "lr": window.last.get("lr"),
                 "samples_per_sec": window.samples * self.ctx.world_size / elapsed,
                 "max_memory_mb": max_memory_mb(self.ctx.device)}
        self.metrics.write(event)
        window.reset()

    # -- evaluation ----------------------------------------------------------------------
    def validate(self, epoch: int) -> tuple[dict[str, Any], bool]:
        """Evaluate the validation splits; whether this is the best epoch so far (all ranks agree)."""
        s = self.settings
        results = self.evaluate_splits(s.valid_splits, epoch)
        is_best = False
        if self.ctx.is_main and results:
            split = s.best_split or next(iter(results))
            value = results.get(split, {}).get(s.best_metric)
            if value is None:
                raise ConfigError(f"run.best_metric '{s.best_metric}' is not among the metrics of split '{split}': "
                                  f"{sorted(results.get(split, {}))}",
                                  hint="set run.best_metric to one of them")
            best = self.progress.best_value
            is_best = best is None or (value > best if s.best_mode == "max" else value < best)
        is_best = bool(self.ctx.broadcast_from_main(is_best))
        if is_best:
            self.progress.best_value = float(self.ctx.broadcast_from_main(value if self.ctx.is_main else None))
            self.progress.best_epoch = epoch
            self.progress.best_tag = self.tag()
        return results, is_best

    def evaluate_splits(self, splits: list[str], epoch: int | str) -> dict[str, dict[str, float]]:
        """Metrics per split label (on rank 0; ``{}`` elsewhere); logs events and fires hooks."""
        s = self.settings
        results: dict[str, dict[str, float]] = {}
        for label, dataset in self.eval_labels(splits).items():
            metrics = evaluate_split(self.task, self.model, dataset, label, epoch, self.ctx, self.precision,
                                     s.batch_size_eval, s.num_workers, self.output_dir, s.save_results,
                                     s.report_metric, shard=s.use_dist_eval_sampler is not False)
            if metrics is None:
                continue
            results[label] = metrics
            self.eval_history.setdefault(label, []).append((epoch, dict(metrics)))
            if self.metrics is not None:
                self.metrics.write({"type": "eval", "split": label, "step": self.progress.step,
                                    "epoch": epoch, **metrics})
            self.hook.after_evaluation(run=self.run_view(metrics), split=label,
                                       epoch=epoch if isinstance(epoch, int) else -1, metrics=dict(metrics))
            log.info("eval %s (epoch %s): %s", label, epoch, metrics)
        return results

    def test_with_best(self) -> dict[str, Any]:
        """Evaluate the test splits with the best checkpoint (the final weights if none)."""
        if not self.settings.test_splits or not self.eval_labels(self.settings.test_splits):
            return {}
        if self.progress.best_tag is not None and (self.store.root / self.progress.best_tag).is_dir():
            self.load_model_weights(self.store.root / self.progress.best_tag)
            return self.evaluate_splits(self.settings.test_splits, "best")
        return self.evaluate_splits(self.settings.test_splits, "last")

    def evaluate(self) -> dict[str, Any]:
        """Evaluate only (``run.evaluate: True``): the test splits (else the validation splits)
        with the weights of ``run.resume_ckpt_path`` when given."""
        s = self.settings
        if s.resume_ckpt_path:
            self.load_model_weights(self.resolve_resume(s.resume_ckpt_path))
        splits = s.test_splits if self.eval_labels(s.test_splits) else s.valid_splits
        if not self.eval_labels(splits):
            raise ConfigError(f"run.evaluate is set but none of the splits {splits} exists in the datasets",
                              hint="set run.test_splits (or run.valid_splits) to split names the datasets define")
        if self.ctx.is_main:
            preflight_output_dir(self.output_dir)
        self.metrics = MetricsLog(self.output_dir, self.ctx.is_main, False)
        status, results = "failed", {}
        try:
            results = self.evaluate_splits(splits, "eval")
            status = "completed"
        finally:
            self.metrics.close()
            self.hook.run_finished(run=self.run_view(), status=status)
        return {"status": status, "eval": results}

    # -- checkpoints ---------------------------------------------------------------------
    def tag(self) -> str:
        return f"step_{self.progress.step:07d}"

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        if hasattr(self.model, "trainable_state_dict"):
            return self.model.trainable_state_dict()
        return {n: p.detach() for n, p in self.model.named_parameters() if p.requires_grad}

    def training_state(self, rng_states: list[Any]) -> dict[str, Any]:
        """Everything but the weights: optimizer, scheduler, scaler, RNG, progress, data position."""
        self.progress.elapsed = self.metrics.wall_time if self.metrics else self.progress.elapsed
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "scaler": self.precision.scaler.state_dict() if self.precision.scaler is not None else {},
            "rng": rng_states,
            "progress": asdict(self.progress),
            "stream": self.stream.state_dict() if self.stream is not None else {},
            "world_size": self.ctx.world_size,
        }

    def save_checkpoint(self, best: bool = False) -> str:
        """Write ``checkpoints/<tag>`` (rank 0 writes; every rank's RNG state is gathered to it)."""
        tag = self.tag()
        if self.last_saved_step == self.progress.step:  # already saved at this step
            if best and self.ctx.is_main:
                self.store.set_pointer("best", tag)
            return tag
        rng_states = self.ctx.gather_to_main(capture_rng())
        if self.ctx.is_main:
            meta = {"step": self.progress.step, "epoch": self.progress.epoch, "best": best,
                    "best_value": self.progress.best_value, "runner": type(self).__name__}
            config_yaml = OmegaConf.to_yaml(self.cfg, resolve=True)
            path = self.store.write(tag, self.trainable_state_dict(), self.training_state(rng_states),
                                    config_yaml, meta, best=best)
            self.store.prune()
            log.info("saved checkpoint %s", path)
            self.hook.checkpoint_saved(run=self.run_view(), path=str(path), tag=tag)
        self.ctx.barrier()
        self.last_checkpoint = tag
        self.last_saved_step = self.progress.step
        return tag

    def resolve_resume(self, spec: str) -> Path:
        """The checkpoint ``run.resume_ckpt_path`` names (see :meth:`CheckpointStore.resolve`)."""
        return self.store.resolve(spec)

    def load_model_weights(self, path: Path) -> None:
        """Trainable weights of a checkpoint (strict for trainable parameters, silent for frozen)."""
        if hasattr(self.model, "load_checkpoint"):
            self.model.load_checkpoint(path, strict=True)
            return
        from mm_core.checkpoint_io import read_state_dict

        state, _ = read_state_dict(path)
        self.model.load_state_dict(state, strict=False)

    def load_checkpoint(self, path: Path) -> None:
        """Continue from a checkpoint directory: weights, optimizer, scheduler, scaler, progress,
        data position and (for the same world size) every rank's RNG state."""
        if not path.is_dir():
            raise CheckpointError(f"{path}: resuming needs an mm checkpoint directory (a .pth such as LAVIS' or "
                                  "MiniGPT4-Qwen's checkpoint_*.pth holds another runner's optimizer state)",
                                  hint="start a new run from its weights: model.finetuned: <file>, load_finetuned: true")
        self.load_model_weights(path)
        state = read_training_state(path)
        if not state.get("optimizer"):
            raise CheckpointError(f"{path} holds no optimizer state for {type(self).__name__} (it was written by another "
                                  "runner, e.g. deepspeed_runner, whose optimizer state lives in its own folder)",
                                  hint="resume with the runner that wrote it, or start a new run from its weights "
                                  "(model.load_checkpoint / run.evaluate)")
        self.optimizer.load_state_dict(state["optimizer"])
        if self.precision.scaler is not None and state.get("scaler"):
            self.precision.scaler.load_state_dict(state["scaler"])
        self.restore_training_state(state, str(path))
        self.last_checkpoint = path.name
        self.last_saved_step = self.progress.step
        log.info("resumed from %s at step %d (epoch %d)", path, self.progress.step, self.progress.epoch)

    def restore_training_state(self, state: dict[str, Any], where: str) -> None:
        """Scheduler, progress, data position and (for the same world size) this rank's RNG state
        from a :meth:`training_state` dict; ``where`` names the checkpoint in warnings."""
        if self.scheduler is not None and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        self.progress = Progress(**state["progress"])
        if state.get("stream"):
            self.stream.load_state_dict(state["stream"])
        rng = state.get("rng") or []
        if len(rng) == self.ctx.world_size:
            restore_rng(rng[self.ctx.rank])
        else:
            log.warning("checkpoint %s was saved by %d processes, this run has %d: RNG states not restored, "
                        "so the run continues but not bit-exactly", where, len(rng), self.ctx.world_size)


def format_eval_history(history: dict[str, list[tuple[int | str, dict[str, float]]]]) -> str:
    """A table of each split's metrics at its first and last evaluation (before and after training)."""
    lines = []
    for label, evaluations in history.items():
        (first_epoch, first), (last_epoch, last) = evaluations[0], evaluations[-1]
        header = f"{label}: epoch {first_epoch} -> epoch {last_epoch}" if len(evaluations) > 1 else f"{label}: epoch {last_epoch}"
        lines.append(header)
        for key in sorted(last):
            if isinstance(last[key], (int, float)) and not isinstance(last[key], bool):
                before = first.get(key)
                shown = f"{before:10.4f} -> {last[key]:10.4f}" if len(evaluations) > 1 and isinstance(before, (int, float)) else f"{last[key]:10.4f}"
                lines.append(f"  {key:<16}{shown}")
    return "\n".join(lines)


class _Window:
    """Means of step values between two log lines."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0
        self.samples = 0
        self.started = time.perf_counter()
        self.last: dict[str, Any] = {}

    def add(self, values: dict[str, Any], samples: int) -> None:
        for key, value in values.items():
            if key.startswith("loss"):
                self.sums[key] = self.sums.get(key, 0.0) + float(value)
        self.count += 1
        self.samples += samples
        self.last = values

    def means(self) -> dict[str, float]:
        return {k: v / self.count for k, v in self.sums.items()} if self.count else {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


class EpochRunner(Runner):
    """``runner_base``: ``run.max_epoch`` passes over the training data (or ``run.iters_per_epoch``
    iterations per epoch, as MiniGPT-4 configs set)."""

    def plan(self) -> list[int]:
        per_epoch = self.settings.iters_per_epoch or self.stream.batches_per_epoch
        return [per_epoch] * self.settings.max_epoch


class IterRunner(Runner):
    """``runner_iter``: ``run.max_iters`` iterations in inner epochs of
    ``run.iters_per_inner_epoch`` (evaluation and checkpoints after each inner epoch)."""

    def plan(self) -> list[int]:
        s = self.settings
        if not s.max_iters:
            raise ConfigError("runner_iter needs run.max_iters", hint="e.g. max_iters: 20000, iters_per_inner_epoch: 2000")
        inner = s.iters_per_inner_epoch or s.max_iters
        full, rest = divmod(s.max_iters, inner)
        return [inner] * full + ([rest] if rest else [])
