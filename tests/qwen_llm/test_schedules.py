"""MPP-LLaVA's schedule (``linear_warmup_cosine_lr_step-wise``) and ``run.warmup_ratio``: every value
re-derived here from the formula in MPP-LLaVA's lavis/common/optims.py (linear warm-up from
``warmup_lr``, then a cosine over the optimizer steps left after it, not over epochs)."""

from __future__ import annotations

import math

import pytest
import torch

from mm_core.engine.settings import RunSettings
from mm_core.errors import ConfigError
from mm_core.registry import get_registry

INIT, START, MIN = 2e-5, 0.0, 1e-7
NAME = "linear_warmup_cosine_lr_step-wise"


def expected(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return START + (INIT - START) * step / warmup
    return MIN + (INIT - MIN) * (1 + math.cos(math.pi * (step - warmup) / (total - warmup))) / 2


def _scheduler(warmup: int, **sizes):
    cls = get_registry().resolve("lr_schedulers", NAME)
    optimizer = torch.optim.AdamW([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr_scale": 0.5}], lr=1.0)
    return optimizer, cls(optimizer=optimizer, max_epoch=2, init_lr=INIT, min_lr=MIN, warmup_start_lr=START,
                          warmup_steps=warmup, **sizes)


def test_step_wise_cosine_follows_the_formula_at_every_step():
    optimizer, sched = _scheduler(warmup=3, max_steps=20, iters_per_epoch=10)
    for step in range(20):
        epoch = step // 10
        assert sched.step(cur_epoch=epoch, cur_step=step) == pytest.approx(expected(step, 3, 20), rel=1e-12, abs=1e-18)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * expected(step, 3, 20), rel=1e-12, abs=1e-18)


def test_step_wise_differs_from_the_epoch_cosine_within_an_epoch():
    """The point of the schedule: two steps of one epoch get different rates (LAVIS' cosine is
    constant within an epoch)."""
    _, step_wise = _scheduler(warmup=0, max_steps=20)
    epoch_wise = get_registry().resolve("lr_schedulers", "linear_warmup_cosine_lr")(
        optimizer=torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))]), max_epoch=2, init_lr=INIT, min_lr=MIN)
    assert step_wise.step(0, 2) > step_wise.step(0, 8)
    assert epoch_wise.step(0, 2) == epoch_wise.step(0, 8)
    assert step_wise.step(1, 19) == pytest.approx(expected(19, 0, 20), rel=1e-12)
    assert step_wise.step(1, 19) < MIN * 1.01 + (INIT - MIN) * 0.01  # the cosine ends near min_lr at the last step


def test_without_max_steps_the_total_is_epochs_times_steps_per_epoch():
    _, sched = _scheduler(warmup=2, iters_per_epoch=7)
    assert sched.max_steps == 14
    assert sched.step(1, 9) == pytest.approx(expected(9, 2, 14), rel=1e-12)


def test_warmup_as_long_as_the_run_is_an_error_naming_the_keys():
    with pytest.raises(ConfigError, match="20 warmup steps but only 20 optimizer steps") as info:
        _scheduler(warmup=20, max_steps=20)
    assert "warmup_ratio" in info.value.hint


def test_warmup_ratio_is_read_and_checked():
    assert RunSettings.from_config({"run": {"warmup_ratio": "0.03"}}).warmup_ratio == pytest.approx(0.03)
    assert RunSettings.from_config({"run": {}}).warmup_ratio is None
    with pytest.raises(ConfigError, match=r"run.warmup_ratio 0.1 must be in \[0, 1\), without run.warmup_steps"):
        RunSettings.from_config({"run": {"warmup_ratio": 0.1, "warmup_steps": 5}})
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match="run.warmup_ratio"):
            RunSettings.from_config({"run": {"warmup_ratio": bad}})


def test_runner_turns_warmup_ratio_into_steps_of_the_whole_run():
    """Runner.build_scheduler: warmup = int(ratio x all optimizer steps) for every schedule, and
    max_steps = all optimizer steps (epochs of 10 and 7 micro-batches, accumulation 2: 5 + 4 steps)."""
    from mm_core.engine.runner import Runner

    runner = Runner.__new__(Runner)  # only what build_scheduler reads
    runner.optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    for name in ("linear_warmup_cosine_lr", "constant_lr", NAME):
        runner.settings = RunSettings.from_config({"run": {"lr_sched": name, "warmup_ratio": 0.5, "accum_grad_iters": 2,
                                                           "init_lr": INIT}})
        sched = runner.build_scheduler([10, 7])
        assert (sched.warmup_steps, sched.max_epoch) == (int(0.5 * 9), 2), name
    assert sched.max_steps == 9
    runner.settings = RunSettings.from_config({"run": {"lr_sched": NAME, "warmup_steps": 3}})
    assert runner.build_scheduler([10, 7]).warmup_steps == 3
