"""What the ``run`` block may contain, and the type checks shared by config validation.

The engine's own keys live here; a task or runner adds its own through the ``run_keys`` of
its registration (see :func:`mm_core.hookspecs.register_tasks`).
"""

from __future__ import annotations

from typing import Any

#: ``run.*`` keys every run understands: key -> type name ("a|b" for either).
RUN_KEYS: dict[str, str] = {
    # what to run
    "task": "str",
    "runner": "str",
    "evaluate": "bool",
    "train_splits": "list",
    "valid_splits": "list",
    "test_splits": "list",
    "output_dir": "str",
    "seed": "int",
    # length of training
    "max_epoch": "int",
    "max_iters": "int",
    "iters_per_inner_epoch": "int",
    "iters_per_epoch": "int",
    # optimisation
    "lr_sched": "str",
    "init_lr": "float",
    "min_lr": "float",
    "warmup_lr": "float",
    "warmup_steps": "int",
    "lr_decay_rate": "float",
    "lr_layer_decay": "float",
    "weight_decay": "float",
    "beta2": "float",
    "optimizer": "str",
    "accum_grad_iters": "int",
    "grad_norm_clip": "float|null",
    "gradient_checkpointing": "bool",
    # data loading
    "batch_size_train": "int",
    "batch_size_eval": "int",
    "num_workers": "int",
    "group_by_length": "bool",
    "use_dist_eval_sampler": "bool",
    "train_dataset_ratios": "dict|null",
    # precision
    "amp": "bool",
    "autocast_dtype": "str",
    "loss_scale": "bool|float|str|null",
    "num_threads": "int|null",
    # distributed
    "device": "str",
    "world_size": "int",
    "dist_url": "str",
    "distributed": "bool",
    "dist_backend": "str",
    "dist_timeout": "int|float",
    "gpu": "int",
    "rank": "int",
    # MiniGPT4-Qwen's FSDP switches (read, not used: mm trains with DDP or the DeepSpeed runner)
    "fsdp": "bool",
    "cpu_offload": "bool|null",
    "min_num_params": "int|float|null",
    # checkpoints and evaluation
    "resume_ckpt_path": "str|null",
    "ckpt_freq": "int",
    "ckpt_iters": "int|null",
    "keep_last": "int",
    "val_freq": "int",
    "eval_freq": "int",
    "best_metric": "str",
    "best_split": "str|null",
    "best_mode": "str",
    "eval_before_train": "bool",
    "save_results": "bool",
    # logging
    "log_freq": "int",
    "tensorboard": "bool",
    "report_metric": "bool",
    "progress_bar": "bool|null",
}

TOP_LEVEL_KEYS = ("model", "datasets", "run", "preprocess", "env")

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
    "list": (list, tuple),
    "dict": (dict,),
}


def type_matches(value: Any, type_spec: str) -> bool:
    """Whether a (resolved, plain-container) ``value`` fits a type spec such as ``"int|null"``."""
    for name in type_spec.split("|"):
        name = name.strip()
        if name == "any":
            return True
        if name == "null":
            if value is None:
                return True
            continue
        accepted = _PY_TYPES.get(name)
        if accepted is None:
            raise ValueError(f"unknown type name {name!r} in run key schema")
        if isinstance(value, bool) and name in ("int", "float"):
            continue  # True is an int to Python, not to a config author
        if name == "int" and isinstance(value, float) and value.is_integer():
            return True  # `max_iters: 2e4` in LAVIS configs
        if isinstance(value, accepted):
            return True
    return False


def type_of_default(value: Any) -> str | None:
    """Type spec implied by a default value, used to check user overrides of model options.

    An integer default accepts floats (``drop_path_rate: 0`` may become ``0.1``); ``null``
    is always accepted.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool|null"
    if isinstance(value, (int, float)):
        return "float|null"
    for name in ("str", "list", "dict"):
        if type_matches(value, name):
            return f"{name}|null"
    return None
