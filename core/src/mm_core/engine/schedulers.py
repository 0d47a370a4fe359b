"""Learning-rate schedules, chosen by ``run.lr_sched`` through the registry: LAVIS' constructor
arguments, warmup in global steps, a pure function of (epoch, step) (docs/engine.md, "Schedules")."""

from __future__ import annotations

import math
from typing import Any

import torch


class LRScheduler:
    """Base class: sets each param group's ``lr`` to ``lr_at(epoch, step) * lr_scale``."""

    def __init__(self, optimizer: torch.optim.Optimizer, max_epoch: int, init_lr: float, min_lr: float = 0.0,
                 decay_rate: float | None = None, warmup_start_lr: float = -1.0, warmup_steps: int = 0,
                 iters_per_epoch: int | None = None, max_iters: int | None = None, **kwargs: Any) -> None:
        self.optimizer = optimizer
        self.max_epoch = int(max_epoch)
        self.init_lr = float(init_lr)
        self.min_lr = float(min_lr)
        self.decay_rate = decay_rate
        self.warmup_start_lr = float(warmup_start_lr) if warmup_start_lr is not None and warmup_start_lr >= 0 else self.init_lr
        self.warmup_steps = int(warmup_steps or 0)
        self.iters_per_epoch = iters_per_epoch
        self.max_iters = max_iters
        self.last_lr = self.init_lr

    def lr_at(self, epoch: int, step: int) -> float:
        """The base learning rate for optimizer step ``step`` (from 0) in ``epoch``."""
        if step < self.warmup_steps:
            return self.warmup(step)
        return self.after_warmup(epoch, step)

    def warmup(self, step: int) -> float:
        """Linear warmup from ``warmup_start_lr`` to ``init_lr`` over ``warmup_steps``."""
        fraction = step / max(self.warmup_steps, 1)
        return min(self.init_lr, self.warmup_start_lr + (self.init_lr - self.warmup_start_lr) * fraction)

    def after_warmup(self, epoch: int, step: int) -> float:
        raise NotImplementedError

    def step(self, cur_epoch: int, cur_step: int) -> float:
        """Apply the learning rate of (``cur_epoch``, global ``cur_step``) to the optimizer."""
        lr = self.lr_at(cur_epoch, cur_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.last_lr = lr
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {"class": type(self).__name__, "max_epoch": self.max_epoch, "init_lr": self.init_lr,
                "min_lr": self.min_lr, "warmup_steps": self.warmup_steps, "last_lr": self.last_lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_lr = float(state.get("last_lr", self.init_lr))


class LinearWarmupCosineLR(LRScheduler):
    """Warmup, then cosine from ``init_lr`` to ``min_lr`` over ``max_epoch`` epochs (per epoch)."""

    def after_warmup(self, epoch: int, step: int) -> float:
        progress = epoch / max(self.max_epoch, 1)
        return (self.init_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress)) + self.min_lr


class LinearWarmupStepLR(LRScheduler):
    """Warmup, then ``init_lr * decay_rate ** epoch``, never below ``min_lr``."""

    def after_warmup(self, epoch: int, step: int) -> float:
        rate = 1.0 if self.decay_rate is None else float(self.decay_rate)
        return max(self.min_lr, self.init_lr * rate**epoch)


class ConstantLR(LRScheduler):
    """Warmup, then ``init_lr``."""

    def after_warmup(self, epoch: int, step: int) -> float:
        return self.init_lr
