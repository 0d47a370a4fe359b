"""Registration hooks of the toy plugin for every other kind: an lr schedule, a runner, a task,
an LLM backend, a metric, an ``mmrun`` command and a ``run`` key (load with
``MM_PLUGIN_MODULES=mm_toy.extras``). Each call is recorded (see :mod:`mm_toy.events`)."""

from mm_core.hookspecs import hookimpl
from mm_toy.events import record

MM_API_VERSION = "2.0"


@hookimpl
def register_lr_schedulers():
    record("register_lr_schedulers")
    return {"halving_lr": "mm_toy.extensions:HalvingLR"}


@hookimpl
def register_runners():
    record("register_runners")
    return {"counting_runner": {"target": "mm_toy.extensions:CountingRunner", "run_keys": {"count_label": "str"}}}


@hookimpl
def register_tasks():
    record("register_tasks")
    return {"toy_generate": {"target": "mm_core.base.task:BaseTask", "run_keys": {"num_beams": "int"}}}


@hookimpl
def register_llms():
    record("register_llms")
    return {"toy_llm": "mm_core.base.llm:BaseLLM"}


@hookimpl
def register_metrics():
    record("register_metrics")
    return {"toy_exact_match": "mm_toy.extensions:exact_match"}


@hookimpl
def register_commands():
    record("register_commands")
    return {"toy-hello": {"target": "mm_toy.extensions:hello", "help": "say hello"}}


@hookimpl
def register_run_keys():
    record("register_run_keys")
    return {"toy_note": "str"}
