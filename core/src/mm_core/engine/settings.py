"""RunSettings: the ``run`` block's schema and its typed view — the one list of the engine's
``run.*`` keys, LAVIS' loosely written numbers coerced with errors naming the key (docs/run_keys.md)."""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mm_core.errors import ConfigError


@dataclass
class RunSettings:
    """Every ``run.*`` key the engine uses, with LAVIS' defaults."""

    task: str = "base"
    runner: str = "runner_base"
    evaluate: bool = False
    train_splits: list[str] = field(default_factory=lambda: ["train"])
    valid_splits: list[str] = field(default_factory=list)
    test_splits: list[str] = field(default_factory=list)
    output_dir: str = "output"
    seed: int = 42
    # length
    max_epoch: int = 1
    max_iters: int | None = None
    iters_per_inner_epoch: int | None = None
    iters_per_epoch: int | None = None
    # optimisation
    lr_sched: str = "linear_warmup_cosine_lr"
    init_lr: float = 1e-4
    min_lr: float = 0.0
    warmup_lr: float = -1.0
    warmup_steps: int = 0
    warmup_ratio: float | None = None  # of all optimizer steps, instead of warmup_steps (MPP-LLaVA)
    lr_decay_rate: float | None = None
    lr_layer_decay: float = 1.0
    weight_decay: float = 0.05
    beta2: float = 0.999
    optimizer_impl: str = "auto"  # AdamW kernels: auto | fused | foreach | for_loop (docs/engine.md)
    accum_grad_iters: int = 1
    grad_norm_clip: float | None = None
    gradient_checkpointing: bool = False
    # data
    batch_size_train: int = 1
    batch_size_eval: int = 1
    num_workers: int = 0
    group_by_length: bool = False
    # precision and device
    amp: bool = False
    autocast_dtype: str | None = None
    loss_scale: bool | float | str | None = True
    num_threads: int | None = None
    device: str | None = None
    dist_backend: str | None = None
    dist_timeout: float = 1800.0
    malloc_tuning: bool = True  # glibc heap kept between steps (docs/engine.md, "Allocator")
    # checkpoints and evaluation
    resume_ckpt_path: str | None = None
    ckpt_freq: int = 1
    ckpt_iters: int | None = None
    keep_last: int = 3
    val_freq: int = 1
    best_metric: str = "agg_metrics"
    best_split: str | None = None
    best_mode: str = "max"
    eval_before_train: bool = False
    save_results: bool = True
    # logging
    log_freq: int = 50
    progress_bar: bool | None = None
    # LAVIS' / MiniGPT4-Qwen's keys: what each does here is in docs/run_keys.md
    optimizer: str | None = None
    use_dist_eval_sampler: bool | None = None
    train_dataset_ratios: dict | None = None
    world_size: int | None = None
    dist_url: str | None = None
    distributed: bool | None = None
    gpu: int | None = None
    rank: int | None = None
    fsdp: bool | None = None
    cpu_offload: bool | None = None
    min_num_params: float | None = None
    eval_freq: int | None = None  # MiniGPT4-Qwen's name for val_freq
    save_freq: int | None = None  # LAVIS' name for ckpt_freq; -1: only the last and best epochs
    report_metric: bool = True

    @classmethod
    def from_config(cls, cfg: DictConfig | dict | None) -> RunSettings:
        """Read ``cfg.run`` (or a plain ``run`` mapping), coercing numbers written as strings."""
        run = cfg.get("run") if cfg is not None and "run" in cfg else cfg
        if isinstance(run, DictConfig):
            run = OmegaConf.to_container(run, resolve=True)
        run = dict(run or {})
        if "eval_freq" in run and "val_freq" not in run:  # MiniGPT4-Qwen's name for it
            run["val_freq"] = run["eval_freq"]
        if run.get("save_freq") is not None and "ckpt_freq" not in run:
            run["ckpt_freq"] = int(run["save_freq"]) if int(run["save_freq"]) > 0 else 2**31
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in run and run[f.name] is not None:
                values[f.name] = _coerce(f.name, run[f.name], str(f.type))
            elif f.name in run and "None" in str(f.type):
                values[f.name] = None
        settings = cls(**values)
        settings._check()
        return settings

    def _check(self) -> None:
        if self.best_mode not in ("max", "min"):
            raise ConfigError(f"run.best_mode must be 'max' or 'min', got {self.best_mode!r}")
        if self.optimizer_impl not in ("auto", "fused", "foreach", "for_loop"):
            raise ConfigError(f"run.optimizer_impl must be auto, fused, foreach or for_loop, got {self.optimizer_impl!r}")
        if self.autocast_dtype not in (None, "bf16", "fp16", "bfloat16", "float16"):
            raise ConfigError(f"run.autocast_dtype must be bf16 or fp16, got {self.autocast_dtype!r}",
                              hint="autocast_dtype: bf16 (CUDA/CPU) or fp16 (CUDA, with a GradScaler)")
        for name in ("accum_grad_iters", "batch_size_train", "batch_size_eval", "keep_last", "log_freq", "val_freq",
                     "ckpt_freq", "max_iters", "iters_per_inner_epoch", "iters_per_epoch", "ckpt_iters", "num_threads",
                     "max_epoch", "warmup_steps", "num_workers", "min_num_params"):
            least = 0 if name in ("warmup_steps", "num_workers", "min_num_params") or (
                name == "max_epoch" and self.evaluate) else 1
            if getattr(self, name) is not None and getattr(self, name) < least:
                raise ConfigError(f"run.{name} must be >= {least}, got {getattr(self, name)}")
        if self.warmup_ratio is not None and (self.warmup_steps or not 0 <= self.warmup_ratio < 1):
            raise ConfigError(f"run.warmup_ratio {self.warmup_ratio} must be in [0, 1), without run.warmup_steps")
        _check_lavis_keys(self)

    @property
    def warmup_start_lr(self) -> float:
        """LAVIS' ``warmup_lr``; a negative value means "start the warmup at ``init_lr``"."""
        return self.init_lr if self.warmup_lr < 0 else self.warmup_lr


def _check_lavis_keys(s: RunSettings) -> None:
    """LAVIS' launcher and FSDP keys: what mm does anyway is accepted, the rest refused (docs/run_keys.md)."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    refused = {  # key: (asks for what mm does not do, what to do instead)
        "optimizer": (str(s.optimizer).lower() not in ("none", "adamw"), "mm's runners train with AdamW: remove it"),
        "dist_url": (s.dist_url not in (None, "env://"), "mm joins torchrun's env:// group: launch with torchrun"),
        "fsdp": (bool(s.fsdp), "mm has no FSDP: use runner deepspeed_runner (ZeRO stage 3) or DDP"),
        "cpu_offload": (bool(s.cpu_offload), "use deepspeed_runner's zero_optimization.offload_optimizer"),
        "distributed": (s.distributed is False and launched > 1, f"torchrun started {launched} processes: remove it"),
    }
    for key, (bad, instead) in refused.items():
        if bad:
            raise ConfigError(f"run.{key}: {getattr(s, key)!r} is not supported", hint=f"{instead} (docs/run_keys.md)")
    actual = {"world_size": launched, "rank": int(os.environ.get("RANK", "0")), "gpu": int(os.environ.get("LOCAL_RANK", "0"))}
    for key, value in actual.items():
        if getattr(s, key) is not None and getattr(s, key) != value:
            _warn_once(f"run.{key}: {getattr(s, key)} in the config, {value} from the launcher: the launcher's is used")


@functools.cache
def _warn_once(message: str) -> None:
    logging.getLogger(__name__).warning(message)


def run_key_types() -> dict[str, str]:
    """``run.*`` key -> type spec (``"int|null"``, see :func:`mm_core.config.schema.type_matches`)."""
    return {f.name: _type_spec(str(f.type)) for f in fields(RunSettings)}


def _type_spec(annotation: str) -> str:
    """``"list[str] | None"`` -> ``"list|null"``."""
    parts = [part.strip().split("[")[0] for part in annotation.split("|")]
    return "|".join("null" if part == "None" else part for part in parts)


def _coerce(key: str, value: Any, type_name: str) -> Any:
    type_name = type_name.replace(" | None", "")
    if "|" in type_name:  # a union (loss_scale: true, 128.0 or "dynamic") is taken as written
        return value
    try:
        if type_name.startswith("bool"):
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if type_name.startswith("int"):
            number = float(value)
            if number != int(number):
                raise ValueError("not a whole number")
            return int(number)
        if type_name.startswith("float"):
            return float(value)
        if type_name.startswith("list"):
            return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
        if type_name.startswith("str"):
            return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"run.{key}: cannot read {value!r} as {type_name.split(' ')[0]}: {exc}") from exc
    return value
