"""Mixed precision: the autocast of the forward pass and whether to scale the loss (``run.amp``,
``run.autocast_dtype``, ``run.loss_scale``; docs/engine.md, "Precision")."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


@dataclass
class Precision:
    """The autocast dtype (``None`` = fp32) and the GradScaler (``None`` = unscaled)."""

    device_type: str
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None

    def autocast(self) -> Any:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


def build_precision(device: torch.device, amp: bool, autocast_dtype: str | None, loss_scale: Any = True) -> Precision:
    """Choose autocast and scaling for ``device`` from the ``run`` settings."""
    dtype = None
    if device.type == "cuda" and amp:
        dtype = _DTYPES[autocast_dtype or "fp16"]
    elif device.type == "cpu" and autocast_dtype in ("bf16", "bfloat16"):
        dtype = torch.bfloat16
    elif device.type == "cpu" and amp:
        log.info("run.amp is set but the device is a CPU: training in fp32 (set autocast_dtype: bf16 to autocast)")
    scaler = None
    if dtype is torch.float16 and loss_scale not in (False, None, "none", 0):
        kwargs = {"init_scale": float(loss_scale)} if isinstance(loss_scale, (int, float)) and loss_scale is not True else {}
        scaler = torch.amp.GradScaler(device.type, **kwargs)
    return Precision(device.type, dtype, scaler)
