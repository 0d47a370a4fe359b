"""The hook specifications: the contract between mm and its plugins.

A plugin is a module (or object) whose functions are marked with :data:`hookimpl` and named
after one of the specs below. It is found through the ``mm.plugins`` entry-point group or
registered in code with :func:`mm_core.plugins.register_plugin`.

Two families of hooks:

* **Registration hooks** (``register_*``) return a mapping of public name to a *lazy target*,
  a string ``"package.module:Attribute"``. Nothing is imported until a config asks for that
  name, so listing names never imports torch or model code. A value may also be a dict with a
  ``"target"`` key plus metadata (see each hook).
* **Lifecycle hooks** are called by the engine at fixed points of a run; loggers, early
  stopping and custom metrics are plugins of this family.

Plugins keep their top-level package import light (no torch at module level): the registry
reads package data (default YAMLs, cards) through it.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT_NAME = "mm"
ENTRY_POINT_GROUP = "mm.plugins"

#: Version of the hook API. A plugin may declare ``MM_API_VERSION = "1"`` in its hook module;
#: a plugin written for another major version is reported and not loaded.
API_VERSION = "1.0"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

Targets = dict[str, Any]


# --- registration hooks -------------------------------------------------------------------


@hookspec
def register_models() -> Targets:
    """Model architectures, ``arch`` name -> target of a :class:`~mm_core.base.model.BaseModel`.

    Default configs are found by convention in the target's top-level package as
    ``configs/models/<arch>/<model_type>.yaml`` (each with ``model:`` and optionally
    ``preprocess:`` blocks); ``configs/models/<arch>/card.md`` is the model card. A dict value
    may override this: ``{"target": ..., "model_types": {type: "pkg:path.yaml"},
    "default_model_type": "pretrain", "description": "..."}``.
    """


@hookspec
def register_processors() -> Targets:
    """Processors, name -> target of a :class:`~mm_core.base.processor.BaseProcessor`."""


@hookspec
def register_datasets() -> Targets:
    """Dataset builders, name -> target of a :class:`~mm_core.base.builder.BaseDatasetBuilder`.

    Default configs by convention: ``configs/datasets/<name>/<type>.yaml`` in the target's
    top-level package (type ``default`` unless the config names ``type``), and
    ``configs/datasets/<name>/card.md``. Dict values may add ``"data_type"``
    (images/videos/features) and ``"description"``.
    """


@hookspec
def register_tasks() -> Targets:
    """Tasks, name -> target of a :class:`~mm_core.base.task.BaseTask`.

    A dict value may declare ``"run_keys"``: the extra ``run.*`` keys the task reads, as
    ``{key: type}`` with type one of ``int float str bool list dict any`` (e.g. the
    generation settings ``max_len``, ``num_beams``), so config validation accepts them.
    """


@hookspec
def register_runners() -> Targets:
    """Runners, name -> target of a class built as ``Runner(cfg, task, model, datasets)``.

    A dict value may declare ``"run_keys"`` like :func:`register_tasks`.
    """


@hookspec
def register_lr_schedulers() -> Targets:
    """Learning-rate schedulers, name -> target of a scheduler class (``run.lr_sched``)."""


@hookspec
def register_llms() -> Targets:
    """Language-model backends that other models compose (e.g. BLIP-2 -> LLM), name -> target
    of a :class:`~mm_core.base.llm.BaseLLM`."""


@hookspec
def register_commands() -> Targets:
    """Extra ``mmrun`` sub-commands, name -> target of a function ``main(argv: list[str]) -> int``.

    A dict value may add ``"help"``, the one-line description shown by ``mmrun --help``.
    """


# --- lifecycle hooks ----------------------------------------------------------------------


@hookspec
def config_loaded(config: Any) -> None:
    """Called once the config is merged and validated, before anything is built.

    ``config`` is the merged OmegaConf ``DictConfig``; a plugin may read it or fill in values.
    """


@hookspec
def after_train_step(runner: Any, step: int, metrics: dict[str, float]) -> None:
    """Called on every rank after each optimizer step.

    ``step`` counts optimizer steps from 1; ``metrics`` holds ``loss``, every loss term the
    model returned, ``lr`` and ``epoch``. A plugin may set ``runner.should_stop = True``.
    """


@hookspec
def after_evaluation(runner: Any, split: str, epoch: int, metrics: dict[str, float]) -> None:
    """Called on rank 0 after a split is evaluated with the metrics the task computed."""


@hookspec
def checkpoint_saved(runner: Any, path: str, tag: str) -> None:
    """Called on rank 0 after a checkpoint directory is complete; ``tag`` names it."""


@hookspec
def run_finished(runner: Any, status: str) -> None:
    """Called once when a run ends; ``status`` is ``"completed"``, ``"interrupted"`` or ``"failed"``."""


REGISTRATION_HOOKS: dict[str, str] = {
    "models": "register_models",
    "processors": "register_processors",
    "datasets": "register_datasets",
    "tasks": "register_tasks",
    "runners": "register_runners",
    "lr_schedulers": "register_lr_schedulers",
    "llms": "register_llms",
    "commands": "register_commands",
}
