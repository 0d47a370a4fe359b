"""The process group, from the environment ``torchrun`` sets (docs/distributed.md); without one
(single-process runs) every collective here is a no-op."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    """Rank, world size and device of this process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether a process group exists (collectives are real)."""
        return dist.is_available() and dist.is_initialized()

    # -- collectives (no-ops without a process group) --------------------------------
    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def gather_to_main(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (in rank order); ``None`` on the other ranks."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast_from_main(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def any_true(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (so all ranks stop together)."""
        if not self.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self._collective_device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean over ranks of a dict of floats (same keys on every rank)."""
        if not self.enabled or not values:
            return values
        keys = sorted(values)
        tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(tensor)
        tensor /= self.world_size
        return dict(zip(keys, tensor.tolist()))

    def _collective_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")


def init_distributed(device: str | None = None, backend: str | None = None, timeout_s: float = 1800.0) -> DistContext:
    """Start the process group when torchrun launched more than one process. ``device`` is ``run.device`` (``cuda``
    falls back to CPU when no GPU is visible); the backend defaults to nccl on GPU and gloo on CPU. ``timeout_s``
    bounds every collective, so a dead rank ends the job instead of hanging it."""
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wants_cuda = device is None or str(device).startswith("cuda")
    if wants_cuda and torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu" if wants_cuda else str(device))
    ctx = DistContext(rank, world_size, local_rank, dev)
    if world_size > 1 and dist.is_available() and not dist.is_initialized():
        ctx.backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
        dist.init_process_group(backend=ctx.backend, timeout=datetime.timedelta(seconds=float(timeout_s)),
                                **({"device_id": dev} if ctx.backend == "nccl" else {}))
    elif dist.is_available() and dist.is_initialized():
        ctx.backend = dist.get_backend()
    return ctx


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
