"""An lr schedule and a runner registered by a plugin (used by tests of those hooks)."""

from mm_core.engine.runner import EpochRunner
from mm_core.engine.schedulers import LRScheduler


class HalvingLR(LRScheduler):
    """Halves the learning rate at every optimizer step."""

    def after_warmup(self, epoch: int, step: int) -> float:
        return self.init_lr * 0.5**step


class CountingRunner(EpochRunner):
    """The epoch runner, recording the optimizer steps it took."""

    steps_seen: list[int] = []

    def train(self):
        type(self).steps_seen = []
        return super().train()

    def optimizer_step(self):
        super().optimizer_step()
        type(self).steps_seen.append(len(type(self).steps_seen) + 1)
