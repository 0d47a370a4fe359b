"""Guards around a run: a non-finite loss stops it, SIGINT/SIGTERM stop it after a checkpoint,
and an unwritable or full output directory is reported before training starts."""

from __future__ import annotations

import math
import os
import shutil
import signal
import threading
from pathlib import Path
from types import FrameType

from mm_core.errors import CheckpointError, MMError


class NonFiniteLossError(MMError):
    """The loss became NaN or infinite; the run stops without saving the bad state."""


def check_finite(loss: float, step: int, epoch: int, last_checkpoint: str | None) -> None:
    """Raise :class:`NonFiniteLossError` naming the step when ``loss`` is NaN or inf."""
    if math.isfinite(loss):
        return
    kept = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was saved yet"
    raise NonFiniteLossError(f"loss is {loss} at optimizer step {step} (epoch {epoch}); training stopped and {kept}",
                             hint="lower run.init_lr, set run.grad_norm_clip, check the data of this step, or use "
                             "bf16 instead of fp16; resume with run.resume_ckpt_path=latest")


class StopSignals:
    """Turns the first SIGINT/SIGTERM into a request to checkpoint and stop; a second SIGINT
    interrupts at once. Installed only in the main thread (signal handlers must be)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    @property
    def requested(self) -> bool:
        return self.received is not None

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()


def preflight_output_dir(output_dir: Path, needed_bytes: int = 0) -> None:
    """Fail early when ``output_dir`` cannot be written or lacks room for a checkpoint."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise CheckpointError(f"output directory {output_dir} is not writable: {exc.strerror or exc}",
                              hint="set run.output_dir to a writable folder") from exc
    free = shutil.disk_usage(output_dir).free
    if needed_bytes and free < needed_bytes:
        raise CheckpointError(f"only {free / 2**20:.0f} MiB free under {output_dir}; one checkpoint needs about "
                              f"{needed_bytes / 2**20:.0f} MiB",
                              hint="free disk space, lower run.keep_last, or choose another run.output_dir")
