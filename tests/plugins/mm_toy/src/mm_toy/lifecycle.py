"""Lifecycle hooks of the toy plugin, for the engine's tests (load with
``MM_PLUGIN_MODULES=mm_toy.lifecycle``).

* ``MM_TOY_EVENTS=<file>``: append every hook call as one JSON line (rank, hook, arguments and
  what the :class:`~mm_core.run_view.RunView` said: ``view_step``, ``view_epoch``, ``view_runner``,
  ``view_world_size``).
* ``MM_TOY_STOP_AT_STEP=<step>``: ``run.request_stop()`` after that optimizer step (early stopping).
* ``MM_TOY_KILL_AFTER_CKPT=<n>``: SIGKILL this process right after its n-th checkpoint.
* ``MM_TOY_KILL_AT_STEP=<rank>:<step>``: SIGKILL that rank after that optimizer step.
"""

import os
import signal

from mm_core.hookspecs import hookimpl
from mm_toy.events import record

MM_API_VERSION = "2.0"

_checkpoints = 0


def _view(run):
    return {"view_step": run.step, "view_epoch": run.epoch, "view_runner": run.runner,
            "view_world_size": run.world_size, "view_is_main": run.is_main}


@hookimpl
def config_loaded(config):
    record("config_loaded", task=config.run.task)


@hookimpl
def describe_run(config, model):
    record("describe_run", built=model is not None)
    return [f"toy plan: {type(model).__name__ if model is not None else 'nothing built'}"]


@hookimpl
def after_train_step(run, step, metrics):
    record("after_train_step", step=step, metrics=metrics, **_view(run))
    if os.environ.get("MM_TOY_STOP_AT_STEP") == str(step):
        run.request_stop()
    target = os.environ.get("MM_TOY_KILL_AT_STEP")
    if target:
        rank, at = (int(v) for v in target.split(":"))
        if rank == int(os.environ.get("RANK", "0")) and step == at:
            os.kill(os.getpid(), signal.SIGKILL)


@hookimpl
def after_evaluation(run, split, epoch, metrics):
    record("after_evaluation", split=split, epoch=epoch, metrics=metrics, **_view(run))


@hookimpl
def checkpoint_saved(run, path, tag):
    global _checkpoints
    _checkpoints += 1
    record("checkpoint_saved", path=path, tag=tag, **_view(run))
    if os.environ.get("MM_TOY_KILL_AFTER_CKPT") == str(_checkpoints):
        os.kill(os.getpid(), signal.SIGKILL)


@hookimpl
def run_finished(run, status):
    record("run_finished", status=status)
