"""``run.deepspeed_config``: reading it and reconciling it with the ``run`` block.

The DeepSpeed runner takes MiniGPT4-Qwen's layout: a DeepSpeed config inline in the YAML (or
a path to a JSON/YAML file) beside the usual ``run`` keys. Several numbers exist on both
sides; one value must win and a contradiction must not go unnoticed:

========================  ==========================================
``run`` key               ``run.deepspeed_config`` key
========================  ==========================================
``batch_size_train``      ``train_micro_batch_size_per_gpu``
``accum_grad_iters``      ``gradient_accumulation_steps``
``init_lr``               ``optimizer.params.lr``
``weight_decay``          ``optimizer.params.weight_decay``
``beta2``                 ``optimizer.params.betas[1]``
``grad_norm_clip``        ``gradient_clipping``
========================  ==========================================

A key set on one side only takes that value on both; set on both sides, the values must agree
or :class:`~mm_core.errors.ConfigError` names both keys. ``train_batch_size``, when given, must
equal micro-batch × accumulation × processes. The mm schedulers drive the learning rate, so a
DeepSpeed ``scheduler`` block is refused.

Nothing here imports DeepSpeed: the checks run before anything heavy is built.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mm_core.engine.settings import RunSettings
from mm_core.errors import ConfigError

_KEY = "run.deepspeed_config"

#: (run key, path inside the DeepSpeed config, kind) of every value both sides may set.
SHARED_KEYS: tuple[tuple[str, tuple[Any, ...], str], ...] = (
    ("batch_size_train", ("train_micro_batch_size_per_gpu",), "int"),
    ("accum_grad_iters", ("gradient_accumulation_steps",), "int"),
    ("init_lr", ("optimizer", "params", "lr"), "float"),
    ("weight_decay", ("optimizer", "params", "weight_decay"), "float"),
    ("beta2", ("optimizer", "params", "betas", 1), "float"),
    ("grad_norm_clip", ("gradient_clipping",), "float"),
)


@dataclass
class DeepSpeedPlan:
    """The reconciled settings: the dict for ``deepspeed.initialize`` and what the runner needs."""

    config: dict[str, Any]
    settings: RunSettings
    stage: int
    dtype: str | None  # "bf16", "fp16" or None (fp32)
    offload_optimizer: bool
    betas: tuple[float, float]
    eps: float


def read_deepspeed_config(value: Any) -> dict[str, Any]:
    """``run.deepspeed_config`` as a plain dict: a mapping, or a path to a JSON/YAML file."""
    if value is None:
        raise ConfigError(f"{_KEY} is required by the deepspeed_runner",
                          hint="give the DeepSpeed config inline under run.deepspeed_config, or a path to its JSON")
    if isinstance(value, dict):
        return json.loads(json.dumps(value))  # a deep copy with plain types
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise ConfigError(f"{_KEY}: file not found: {path}", hint="give a JSON/YAML file or the config inline")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            loaded = yaml.safe_load(text)
        else:
            loaded = json.loads(text)
    except (ValueError, ImportError) as exc:
        raise ConfigError(f"{_KEY}: cannot parse {path}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{_KEY}: {path} does not hold a mapping")
    return loaded


def plan_deepspeed(run: dict[str, Any], settings: RunSettings, world_size: int) -> DeepSpeedPlan:
    """Reconcile ``run`` (the user's ``run`` block, plain dict) with its DeepSpeed config.

    Returns the DeepSpeed config to pass to ``deepspeed.initialize`` (without an ``optimizer``
    block: the runner builds the optimizer from mm's parameter groups) and ``settings`` with the
    DeepSpeed-only values filled in.
    """
    ds = read_deepspeed_config(run.get("deepspeed_config"))
    if ds.get("scheduler"):
        raise ConfigError(
            f"{_KEY}.scheduler is set, but the learning rate is driven by run.lr_sched",
            hint="remove the DeepSpeed scheduler block and use run.lr_sched / init_lr / min_lr / warmup_steps",
        )
    optimizer = ds.get("optimizer") or {}
    opt_type = str(optimizer.get("type", "AdamW")).lower()
    if opt_type not in ("adamw", "adam"):
        raise ConfigError(f"{_KEY}.optimizer.type is {optimizer.get('type')!r}; the deepspeed_runner trains with AdamW",
                          hint="use type: AdamW (or leave the optimizer block out: run.init_lr and weight_decay apply)")
    updates: dict[str, Any] = {}
    for run_key, path, kind in SHARED_KEYS:
        updates[run_key] = _reconcile(run, settings, ds, run_key, path, kind)
    _check_train_batch_size(ds, updates["batch_size_train"], updates["accum_grad_iters"], world_size)
    settings = replace(settings, **{k: v for k, v in updates.items() if v is not None})

    params = dict(optimizer.get("params") or {})
    betas = params.get("betas", [0.9, settings.beta2])
    eps = float(params.get("eps", 1e-8))
    config = {k: v for k, v in ds.items() if k not in ("optimizer", "scheduler", "train_batch_size")}
    config["train_micro_batch_size_per_gpu"] = settings.batch_size_train
    config["gradient_accumulation_steps"] = settings.accum_grad_iters
    if settings.grad_norm_clip is not None:
        config["gradient_clipping"] = settings.grad_norm_clip
    # mm builds a torch (or DeepSpeed CPU) AdamW from its own parameter groups
    config.setdefault("zero_allow_untested_optimizer", True)
    zero = config.get("zero_optimization") or {}
    stage = int(float(zero.get("stage", 0)))
    if stage not in (0, 1, 2, 3):
        raise ConfigError(f"{_KEY}.zero_optimization.stage must be 0, 1, 2 or 3, got {zero.get('stage')!r}")
    offload = str((zero.get("offload_optimizer") or {}).get("device", "none")).lower() not in ("none", "")
    dtype = _precision(ds, settings)
    return DeepSpeedPlan(config, settings, stage, dtype, offload, (float(betas[0]), float(betas[1])), eps)


def _reconcile(run: dict[str, Any], settings: RunSettings, ds: dict[str, Any], run_key: str,
               path: tuple[Any, ...], kind: str) -> Any:
    ds_value = _lookup(ds, path)
    in_run = run.get(run_key) is not None
    if ds_value is None or ds_value == "auto":
        return getattr(settings, run_key)
    number = _number(ds_value, f"{_KEY}.{_dotted(path)}", kind)
    if in_run:
        mine = getattr(settings, run_key)
        if not math.isclose(float(mine), float(number), rel_tol=1e-9, abs_tol=0.0):
            raise ConfigError(
                f"run.{run_key} is {mine} but {_KEY}.{_dotted(path)} is {number}: they must agree",
                hint=f"set one of them (the other follows it), or make run.{run_key} and "
                f"{_KEY}.{_dotted(path)} equal",
            )
    return number


def _check_train_batch_size(ds: dict[str, Any], micro: int, accum: int, world_size: int) -> None:
    total = ds.get("train_batch_size")
    if total is None or total == "auto":
        return
    expected = micro * accum * world_size
    if int(float(total)) != expected:
        raise ConfigError(
            f"{_KEY}.train_batch_size is {total} but micro-batch {micro} (run.batch_size_train) x accumulation "
            f"{accum} (run.accum_grad_iters) x {world_size} process(es) = {expected}",
            hint=f"remove {_KEY}.train_batch_size (it follows from the others) or make the product agree",
        )


def _precision(ds: dict[str, Any], settings: RunSettings) -> str | None:
    bf16 = _enabled(ds.get("bf16") or ds.get("bfloat16"))
    fp16 = _enabled(ds.get("fp16"))
    if bf16 and fp16:
        raise ConfigError(f"{_KEY}: bf16.enabled and fp16.enabled are both true", hint="enable one of them")
    dtype = "bf16" if bf16 else "fp16" if fp16 else None
    wanted = {"bfloat16": "bf16", "float16": "fp16"}.get(settings.autocast_dtype or "", settings.autocast_dtype)
    if wanted is not None and wanted != dtype:
        raise ConfigError(
            f"run.autocast_dtype is {settings.autocast_dtype} but {_KEY} enables {dtype or 'neither bf16 nor fp16'}",
            hint=f"under the deepspeed_runner precision comes from {_KEY}.bf16 / fp16; drop run.autocast_dtype",
        )
    return dtype


def _enabled(block: Any) -> bool:
    if isinstance(block, dict):
        value = block.get("enabled", False)
        return value is True or str(value).lower() == "true"
    return False


def _lookup(tree: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        if isinstance(part, int):
            if not isinstance(tree, (list, tuple)) or len(tree) <= part:
                return None
            tree = tree[part]
        elif isinstance(tree, dict):
            tree = tree.get(part)
        else:
            return None
    return tree


def _number(value: Any, key: str, kind: str) -> int | float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key} must be a number, got {value!r}") from exc
    if kind == "int":
        if number != int(number):
            raise ConfigError(f"{key} must be a whole number, got {value!r}")
        return int(number)
    return number


def _dotted(path: tuple[Any, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
