"""RunSettings: the ``run`` block's schema and its typed view — the one list of the engine's ``run.*`` keys.

Config validation reads the key types from these fields (:func:`run_key_types`); tasks, runners and
plugins add keys through their registration. LAVIS YAMLs write numbers loosely (``max_iters: 2e4``,
``init_lr: 1e-4`` that plain YAML reads as a string): they are coerced here once, with errors naming
the key, so the rest of the engine works with plain Python values.
"""

from __future__ import annotations

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
    lr_decay_rate: float | None = None
    lr_layer_decay: float = 1.0
    weight_decay: float = 0.05
    beta2: float = 0.999
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
    # accepted so that LAVIS' and MiniGPT4-Qwen's files load unchanged; not read by mm's runners
    # (torchrun sets the process group; DDP or the DeepSpeed runner replace FSDP)
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
    report_metric: bool | None = None

    @classmethod
    def from_config(cls, cfg: DictConfig | dict | None) -> RunSettings:
        """Read ``cfg.run`` (or a plain ``run`` mapping), coercing numbers written as strings."""
        run = cfg.get("run") if cfg is not None and "run" in cfg else cfg
        if isinstance(run, DictConfig):
            run = OmegaConf.to_container(run, resolve=True)
        run = dict(run or {})
        if "eval_freq" in run and "val_freq" not in run:  # MiniGPT4-Qwen's name for it
            run["val_freq"] = run["eval_freq"]
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
        if self.accum_grad_iters < 1:
            raise ConfigError(f"run.accum_grad_iters must be >= 1, got {self.accum_grad_iters}")
        if self.best_mode not in ("max", "min"):
            raise ConfigError(f"run.best_mode must be 'max' or 'min', got {self.best_mode!r}")
        if self.autocast_dtype not in (None, "bf16", "fp16", "bfloat16", "float16"):
            raise ConfigError(f"run.autocast_dtype must be bf16 or fp16, got {self.autocast_dtype!r}",
                              hint="autocast_dtype: bf16 (CUDA/CPU) or fp16 (CUDA, with a GradScaler)")
        for name in ("batch_size_train", "batch_size_eval", "keep_last", "log_freq", "val_freq", "ckpt_freq"):
            if getattr(self, name) < 1:
                raise ConfigError(f"run.{name} must be >= 1, got {getattr(self, name)}")

    @property
    def warmup_start_lr(self) -> float:
        """LAVIS' ``warmup_lr``; a negative value means "start the warmup at ``init_lr``"."""
        return self.init_lr if self.warmup_lr < 0 else self.warmup_lr


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
