"""The learning-rate schedules at their boundaries: the first and last warm-up steps and the first
step after warm-up, each value written from LAVIS' formulas (linear warm-up from
``warmup_start_lr`` over ``warmup_steps`` global steps, then the epoch schedule)."""

from __future__ import annotations

import math

import pytest
import torch

from mm_core.registry import get_registry

INIT, START, MIN, WARMUP, EPOCHS, DECAY = 1e-3, 1e-6, 1e-5, 10, 4, 0.5

AFTER_WARMUP = {  # the epoch schedule at epoch e, from the formulas in LAVIS' lavis/common/optims.py
    "linear_warmup_cosine_lr": lambda e: (INIT - MIN) * 0.5 * (1 + math.cos(math.pi * e / EPOCHS)) + MIN,
    "linear_warmup_step_lr": lambda e: max(MIN, INIT * DECAY**e),
    "constant_lr": lambda e: INIT,
}


def _scheduler(name: str):
    cls = get_registry().resolve("lr_schedulers", name)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([{"params": [param], "lr_scale": 0.5}], lr=1.0)
    return optimizer, cls(optimizer=optimizer, max_epoch=EPOCHS, init_lr=INIT, min_lr=MIN, decay_rate=DECAY,
                          warmup_start_lr=START, warmup_steps=WARMUP)


@pytest.mark.parametrize("name", sorted(AFTER_WARMUP))
def test_first_and_last_warmup_steps_and_the_step_after(name):
    optimizer, sched = _scheduler(name)
    # step 0 is the first optimizer step: it runs at warmup_start_lr exactly
    assert sched.step(cur_epoch=0, cur_step=0) == pytest.approx(START, rel=1e-12)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * START, rel=1e-12)  # lr_scale
    # step WARMUP - 1 is the last warm-up step: (WARMUP - 1) / WARMUP of the way to init_lr
    last = START + (INIT - START) * (WARMUP - 1) / WARMUP
    assert sched.step(cur_epoch=0, cur_step=WARMUP - 1) == pytest.approx(last, rel=1e-12)
    # warm-up spanning an epoch boundary still follows the global step, not the epoch
    assert sched.step(cur_epoch=1, cur_step=WARMUP - 1) == pytest.approx(last, rel=1e-12)
    # step WARMUP is the epoch schedule's (epoch 1 here, where the schedules differ from init_lr)
    assert sched.step(cur_epoch=1, cur_step=WARMUP) == pytest.approx(AFTER_WARMUP[name](1), rel=1e-12)
    assert sched.step(cur_epoch=3, cur_step=WARMUP + 30) == pytest.approx(AFTER_WARMUP[name](3), rel=1e-12)


@pytest.mark.parametrize("name", ["linear_warmup_cosine_lr", "linear_warmup_step_lr"])
def test_the_epoch_schedule_differs_from_init_lr_where_the_boundary_test_looks(name):
    """Guard of the test above: at epoch 1 a warm-up that ran one step too long (ending at
    ``init_lr``) gives another value than the epoch schedule."""
    assert not math.isclose(AFTER_WARMUP[name](1), INIT, rel_tol=1e-6)


def test_no_warmup_starts_on_the_epoch_schedule():
    cls = get_registry().resolve("lr_schedulers", "linear_warmup_step_lr")
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = cls(optimizer=optimizer, max_epoch=EPOCHS, init_lr=INIT, min_lr=MIN, decay_rate=DECAY,
                warmup_start_lr=START, warmup_steps=0)
    assert sched.step(cur_epoch=0, cur_step=0) == pytest.approx(INIT, rel=1e-12)
    assert sched.step(cur_epoch=2, cur_step=5) == pytest.approx(INIT * DECAY**2, rel=1e-12)


def test_step_decay_stops_at_min_lr():
    _, sched = _scheduler("linear_warmup_step_lr")
    assert INIT * DECAY**10 < MIN  # by epoch 10 the decay alone would go below min_lr
    assert sched.step(cur_epoch=10, cur_step=WARMUP + 100) == pytest.approx(MIN, rel=1e-12)
    assert sched.step(cur_epoch=6, cur_step=WARMUP + 60) == pytest.approx(INIT * DECAY**6, rel=1e-12)
