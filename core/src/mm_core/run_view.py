"""RunView: what the lifecycle hooks see of a run (see :mod:`mm_core.hookspecs`). A runner owns
one view and brings ``step``, ``epoch`` and ``metrics`` up to date before each hook call, so a
plugin reads plain values instead of reaching into the runner's internals."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunView:
    """The state of a run at a lifecycle hook."""

    config: Any  # the merged OmegaConf DictConfig: read it, do not change it
    output_dir: Path
    runner: str  # the runner's registered name
    rank: int = 0
    world_size: int = 1
    step: int = 0  # optimizer steps done
    epoch: int = 0  # epochs done
    #: the values of the event that fired the hook: the train step's loss, loss terms and lr, or
    #: the evaluation's metrics
    metrics: dict[str, float] = field(default_factory=dict)
    stop_requested: bool = False

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that writes shared files."""
        return self.rank == 0

    def request_stop(self) -> None:
        """Ask the runner to stop after the current step: every rank stops together, a checkpoint
        is saved and the test splits are evaluated as after a normal end (early stopping)."""
        self.stop_requested = True
