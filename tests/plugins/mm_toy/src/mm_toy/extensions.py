"""What mm_toy.extras registers: an lr schedule, a runner, a metric and a command."""

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


def exact_match(predictions, references, **options):
    """The share of predictions equal to one of their references (a metric reached by name)."""
    from mm_core.base.metric import MetricScores

    per_sample = {key: float(text in references[key]) for key, text in predictions.items()}
    return MetricScores(metrics={"exact_match": sum(per_sample.values()) / max(len(per_sample), 1)},
                        per_sample={"exact_match": per_sample})


def hello(argv):
    print("hello", *argv)
    return 3
