"""``run.optimizer_impl``: the fused / foreach AdamW kernels update a small model as the plain
per-parameter loop does and as AdamW's formula, re-derived here, says (weight-decay and no-decay
groups, an ``lr_scale`` group); ``auto`` takes torch's fused kernels where the device has them;
a resumed optimizer keeps this run's kernels; bad values are config errors naming the key."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mm_core.engine.optim import build_optimizer
from mm_core.engine.schedulers import ConstantLR
from mm_core.engine.settings import RunSettings
from mm_core.errors import ConfigError

LR, WD, BETAS, EPS, STEPS = 0.05, 0.1, (0.9, 0.999), 1e-8, 6


class Small(nn.Module):
    """Two groups of its own (as BLIP-2's layer-wise decay): the head learns at half the rate."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.GELU())
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def get_optimizer_params(self, weight_decay: float, lr_scale: float) -> list[dict]:
        body = [p for n, p in self.body.named_parameters() if p.ndim > 1]
        body_1d = [p for n, p in self.body.named_parameters() if p.ndim == 1]
        return [{"params": body, "weight_decay": weight_decay, "lr_scale": 1.0},
                {"params": body_1d, "weight_decay": 0.0, "lr_scale": 1.0},
                {"params": list(self.head.parameters()), "weight_decay": weight_decay, "lr_scale": 0.5}]


def train(model: nn.Module, impl: str, steps: int = STEPS, optimizer=None) -> torch.optim.Optimizer:
    optimizer = optimizer or build_optimizer(model, LR, WD, BETAS[1], impl=impl)
    scheduler = ConstantLR(optimizer, max_epoch=1, init_lr=LR)
    generator = torch.Generator().manual_seed(1)
    for step in range(steps):
        scheduler.step(cur_epoch=0, cur_step=step)  # group lr = LR * lr_scale, as the runner does
        x, y = torch.randn(8, 6, generator=generator), torch.randn(8, 3, generator=generator)
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return optimizer


def adamw_by_formula(model: nn.Module, steps: int = STEPS) -> None:
    """Loshchilov & Hutter's AdamW, as torch documents it, one parameter at a time."""
    groups = model.get_optimizer_params(WD, 1.0)
    state = {id(p): (torch.zeros_like(p), torch.zeros_like(p)) for g in groups for p in g["params"]}
    generator = torch.Generator().manual_seed(1)
    for t in range(1, steps + 1):
        x, y = torch.randn(8, 6, generator=generator), torch.randn(8, 3, generator=generator)
        nn.functional.mse_loss(model(x), y).backward()
        with torch.no_grad():
            for group in groups:
                lr = LR * group["lr_scale"]
                for p in group["params"]:
                    m, v = state[id(p)]
                    p.mul_(1 - lr * group["weight_decay"])
                    m.mul_(BETAS[0]).add_(p.grad, alpha=1 - BETAS[0])
                    v.mul_(BETAS[1]).addcmul_(p.grad, p.grad, value=1 - BETAS[1])
                    m_hat, v_hat = m / (1 - BETAS[0] ** t), v / (1 - BETAS[1] ** t)
                    p.sub_(lr * m_hat / (v_hat.sqrt() + EPS))
                    p.grad = None


def params_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.fixture
def initial() -> Small:
    torch.manual_seed(0)
    return Small()


@pytest.mark.parametrize("impl", ["fused", "foreach", "auto"])
def test_kernels_update_as_the_plain_loop_and_the_formula(initial, impl):
    plain, tested, by_formula = copy.deepcopy(initial), copy.deepcopy(initial), copy.deepcopy(initial)
    train(plain, "for_loop")
    train(tested, impl)
    adamw_by_formula(by_formula)
    moved = max((plain.get_parameter(n) - p).abs().max().item() for n, p in initial.named_parameters())
    assert moved > 1e-2  # the steps did move the weights: the comparisons below mean something
    for name, value in params_of(tested).items():
        torch.testing.assert_close(value, plain.get_parameter(name).detach(), rtol=1e-6, atol=1e-6, msg=name)
        torch.testing.assert_close(value, by_formula.get_parameter(name).detach(), rtol=1e-5, atol=1e-6, msg=name)


def test_auto_takes_the_fused_kernels_where_torch_has_them_for_the_device(initial):
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    group = build_optimizer(initial, LR, WD, impl="auto").param_groups[0]
    fused_here = "cpu" in _get_fused_kernels_supported_devices()  # torch >= 2.4 has fused CPU AdamW
    assert (group["fused"], group["foreach"]) == (fused_here, False)
    assert build_optimizer(initial, LR, WD, impl="for_loop").param_groups[0]["fused"] is False


def test_a_resumed_optimizer_keeps_this_runs_kernels_and_continues_exactly(initial):
    """State saved by the plain loop, resumed with the fused kernels: the groups' flags are this
    run's (a checkpoint's groups carry the flags they were saved with) and the moments continue."""
    saved_by, resumed, straight = copy.deepcopy(initial), copy.deepcopy(initial), copy.deepcopy(initial)
    state = train(saved_by, "for_loop", steps=3).state_dict()
    resumed.load_state_dict(saved_by.state_dict())
    optimizer = build_optimizer(resumed, LR, WD, BETAS[1], impl="fused")
    optimizer.load_state_dict(state)
    assert all(g["fused"] and not g["foreach"] for g in optimizer.param_groups)
    train(resumed, "fused", steps=3, optimizer=optimizer)
    train(straight, "for_loop", steps=3, optimizer=train(straight, "for_loop", steps=3))
    for name, value in params_of(resumed).items():
        torch.testing.assert_close(value, straight.get_parameter(name).detach(), rtol=1e-6, atol=1e-6, msg=name)


def test_fused_where_torch_has_no_such_kernel_and_unknown_names_are_config_errors(initial):
    with pytest.raises(ConfigError, match=r"run.optimizer_impl.*meta"):
        build_optimizer(initial.to("meta"), LR, WD, impl="fused")
    with pytest.raises(ConfigError, match="run.optimizer_impl must be auto, fused, foreach or for_loop"):
        RunSettings.from_config({"run": {"optimizer_impl": "apex"}})
