"""glibc malloc thresholds, set once when a runner starts (why, and the figures: docs/engine.md, "Allocator")."""

from __future__ import annotations

import ctypes
import os
import sys

# (glibc's M_TRIM_THRESHOLD, bytes), (M_MMAP_THRESHOLD, bytes): what glibc's dynamic rule reaches, from the start
SETTINGS = ((-1, 64 << 20), (-3, 32 << 20))
_done: list[bool] = []


def tune_malloc(enabled: bool = True) -> bool:
    """Keep freed heap for the next step instead of trimming and refaulting it; once per process.
    Off with ``enabled=False`` (``run.malloc_tuning``) or ``MM_MALLOC_TUNING=0``. True if applied now."""
    if _done or not enabled or os.environ.get("MM_MALLOC_TUNING", "1").lower() in ("0", "false", "off", "no"):
        return False
    _done.append(True)
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None) if sys.platform.startswith("linux") else None
    return mallopt is not None and all([mallopt(option, value) == 1 for option, value in SETTINGS])
