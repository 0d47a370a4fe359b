"""Lifecycle hooks of the toy plugin, for the engine's tests (load with
``MM_PLUGIN_MODULES=mm_toy.lifecycle``).

* ``MM_TOY_EVENTS=<file>``: append every hook call as one JSON line (rank, hook, arguments).
* ``MM_TOY_KILL_AFTER_CKPT=<n>``: SIGKILL this process right after its n-th checkpoint.
* ``MM_TOY_KILL_AT_STEP=<rank>:<step>``: SIGKILL that rank after that optimizer step.
"""

import json
import os
import signal

from mm_core.hookspecs import hookimpl

MM_API_VERSION = "1.0"

_checkpoints = 0


def _record(hook, **fields):
    path = os.environ.get("MM_TOY_EVENTS")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"hook": hook, "rank": int(os.environ.get("RANK", "0")), **fields}) + "\n")


@hookimpl
def after_train_step(runner, step, metrics):
    _record("after_train_step", step=step, metrics=metrics)
    target = os.environ.get("MM_TOY_KILL_AT_STEP")
    if target:
        rank, at = (int(v) for v in target.split(":"))
        if rank == int(os.environ.get("RANK", "0")) and step == at:
            os.kill(os.getpid(), signal.SIGKILL)


@hookimpl
def after_evaluation(runner, split, epoch, metrics):
    _record("after_evaluation", split=split, epoch=epoch, metrics=metrics)


@hookimpl
def checkpoint_saved(runner, path, tag):
    global _checkpoints
    _checkpoints += 1
    _record("checkpoint_saved", path=path, tag=tag)
    if os.environ.get("MM_TOY_KILL_AFTER_CKPT") == str(_checkpoints):
        os.kill(os.getpid(), signal.SIGKILL)


@hookimpl
def run_finished(runner, status):
    _record("run_finished", status=status)
