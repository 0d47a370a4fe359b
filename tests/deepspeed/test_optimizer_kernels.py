"""The DeepSpeed runner's torch AdamW follows ``run.optimizer_impl`` as the plain runners' does
(the kernels' numbers are checked in tests/engine/test_optimizer_kernels.py; ZeRO runs with the
default kernels are compared with the plain runner step by step in test_training.py)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf


def build(tmp_path, impl: str, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
    from mm_deepspeed.runner import DeepSpeedRunner

    run = {"device": "cpu", "output_dir": str(tmp_path), "optimizer_impl": impl, "malloc_tuning": False,
           "deepspeed_config": {"zero_optimization": {"stage": 2}}}
    model = model or torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 1))
    return DeepSpeedRunner(OmegaConf.create({"run": run}), None, model, {}).build_optimizer()


@pytest.mark.parametrize("impl,flags", [("fused", (True, False)), ("foreach", (False, True)),
                                         ("for_loop", (False, False))])
def test_the_torch_optimizer_takes_the_configured_kernels(tmp_path, impl, flags):
    optimizer = build(tmp_path, impl)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert {(g["fused"], g["foreach"]) for g in optimizer.param_groups} == {flags}


def test_auto_is_the_plain_runners_choice(tmp_path):
    from mm_core.engine.optim import build_optimizer

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8))
    plain = build_optimizer(model, 1e-3, 0.05, impl="auto").param_groups[0]
    deepspeed = build(tmp_path, "auto", model).param_groups[0]
    assert (deepspeed["fused"], deepspeed["foreach"]) == (plain["fused"], plain["foreach"])

