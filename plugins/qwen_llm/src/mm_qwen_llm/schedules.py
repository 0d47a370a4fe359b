"""MPP-LLaVA's ``linear_warmup_cosine_lr_step-wise``: linear warmup, then a cosine over the
remaining optimizer steps (LAVIS' ``linear_warmup_cosine_lr`` decays per epoch instead)."""

from __future__ import annotations

import math
from typing import Any

from mm_core.engine.schedulers import LRScheduler
from mm_core.errors import ConfigError


class StepWiseWarmupCosineLR(LRScheduler):
    """After ``warmup_steps``, ``min_lr + (init_lr - min_lr) * (1 + cos(pi * t)) / 2`` with
    ``t = (step - warmup_steps) / (max_steps - warmup_steps)``; ``max_steps`` is the run's number
    of optimizer steps (passed by the runner; run.warmup_ratio is a fraction of it)."""

    def __init__(self, *args: Any, max_steps: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if max_steps is None:
            max_steps = (self.iters_per_epoch or 0) * self.max_epoch
        self.max_steps = int(max_steps)
        if self.max_steps <= self.warmup_steps:
            raise ConfigError(f"run.lr_sched linear_warmup_cosine_lr_step-wise: {self.warmup_steps} warmup steps "
                              f"but only {self.max_steps} optimizer steps in the run",
                              hint="lower run.warmup_steps / run.warmup_ratio or train longer")

    def after_warmup(self, epoch: int, step: int) -> float:
        progress = (step - self.warmup_steps) / (self.max_steps - self.warmup_steps)
        return (self.init_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress)) + self.min_lr

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "max_steps": self.max_steps}
