"""The optimizer: AdamW over the model's own parameter groups (``lr_scale`` honoured), else
decay / no-decay groups (1-D parameters are not decayed; docs/engine.md, "Optimizer")."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from mm_core.errors import ConfigError

log = logging.getLogger(__name__)


def default_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters, in two groups: decayed and not decayed."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or name.endswith(".bias") or "norm" in name.lower() or "ln_" in name.lower():
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def param_groups(model: nn.Module, weight_decay: float, lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """The model's own groups when it defines them, else :func:`default_param_groups`."""
    own = getattr(model, "get_optimizer_params", None)
    groups = own(weight_decay, lr_scale) if callable(own) else None
    if not groups:
        groups = default_param_groups(model, weight_decay)
    for group in groups:
        group.setdefault("lr_scale", 1.0)
    if not any(group["params"] for group in groups):
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    return groups


def build_optimizer(model: nn.Module, init_lr: float, weight_decay: float, beta2: float = 0.999,
                    lr_scale: float = 1.0, impl: str = "auto") -> torch.optim.Optimizer:
    """AdamW with :func:`param_groups`; ``lr_scale`` per group is applied by the scheduler."""
    groups = param_groups(model, weight_decay, lr_scale)
    count = sum(p.numel() for g in groups for p in g["params"])
    log.info("optimizer: AdamW over %d trainable parameters in %d groups", count, len(groups))
    return build_adamw(groups, impl, lr=init_lr, betas=(0.9, beta2), weight_decay=weight_decay)


def build_adamw(groups: list[dict[str, Any]], impl: str = "auto", **options: Any) -> torch.optim.AdamW:
    """AdamW with the kernels ``run.optimizer_impl`` names; ``auto`` is torch's own rule asked for fused
    kernels (when every param's device and dtype has them: CUDA, CPU, ...), else foreach, else for_loop."""
    from torch.optim.optimizer import _default_to_fused_or_foreach

    params = [p for g in groups for p in g["params"]]
    fused, foreach = _default_to_fused_or_foreach(params, differentiable=False, use_fused=True)
    if impl == "fused" and not fused:
        raise ConfigError(f"run.optimizer_impl: torch {torch.__version__} has no fused AdamW for parameters on "
                          f"{sorted({str(p.device) for p in params})}", hint="set run.optimizer_impl: auto")
    impl = ("fused" if fused else "foreach" if foreach else "for_loop") if impl == "auto" else impl
    flags = {"fused": impl == "fused", "foreach": impl == "foreach"}
    optimizer = torch.optim.AdamW(groups, **options, **flags)
    # a checkpoint's param groups carry the kernels they were saved with: keep this run's
    optimizer.register_load_state_dict_pre_hook(
        lambda opt, state: {**state, "param_groups": [{**g, **flags} for g in state["param_groups"]]})
    return optimizer
