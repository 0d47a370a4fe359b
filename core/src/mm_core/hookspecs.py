"""The hook specifications: the contract between mm and its plugins (docs/plugins.md explains it).

Registration hooks (``register_*``) return name -> lazy target ``"package.module:Attr"`` (or a
:class:`~mm_core.registry.Registration` dict), so listing names imports nothing heavy. Lifecycle
hooks are called by the engine during a run with a :class:`~mm_core.run_view.RunView` of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from mm_core.run_view import RunView

PROJECT_NAME = "mm"
ENTRY_POINT_GROUP = "mm.plugins"

#: Version of the hook API. A plugin may declare ``MM_API_VERSION = "2.0"`` in its hook module;
#: a plugin written for another major version is reported and not loaded. 2.0: lifecycle hooks
#: receive ``run: RunView`` instead of the runner object.
API_VERSION = "2.0"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

Targets = dict[str, Any]


# --- registration hooks: called once per process, when the registry is first built ----------


@hookspec
def register_models() -> Targets:
    """Model architectures, ``arch`` name -> target of a :class:`~mm_core.base.model.BaseModel`.

    Default configs are found by convention in the target's top-level package as
    ``configs/models/<arch>/<model_type>.yaml`` (each with ``model:`` and optionally
    ``preprocess:`` blocks); ``configs/models/<arch>/card.md`` is the model card. A dict value
    may override this with ``model_types`` / ``default_model_type``. Example::

        @hookimpl
        def register_models():
            return {"patch_mlp": {"target": "mm_patchmlp.model:PatchMLP", "default_model_type": "tiny"}}
    """


@hookspec
def register_processors() -> Targets:
    """Processors, name -> target of a :class:`~mm_core.base.processor.BaseProcessor`. Example::

        @hookimpl
        def register_processors():
            return {"my_image_eval": "mm_mine.processors:MyImageEval"}
    """


@hookspec
def register_datasets() -> Targets:
    """Dataset builders, name -> target of a :class:`~mm_core.base.builder.BaseDatasetBuilder`.

    Default configs by convention: ``configs/datasets/<name>/<type>.yaml`` in the target's
    top-level package (type ``default`` unless the config names ``type``), and
    ``configs/datasets/<name>/card.md``. Dict values may add ``data_type``
    (images/videos/features) and ``description``. Example::

        @hookimpl
        def register_datasets():
            return {"csv_caption": {"target": "mm_csv.builder:CsvCaptionBuilder", "data_type": "images"}}
    """


@hookspec
def register_tasks() -> Targets:
    """Tasks, name -> target of a :class:`~mm_core.base.task.BaseTask`.

    A dict value may declare ``run_keys``: the extra ``run.*`` keys the task reads, as
    ``{key: type}`` with type one of ``int float str bool list dict any`` (``|null`` for
    optional), so config validation accepts them. Example::

        @hookimpl
        def register_tasks():
            return {"captioning": {"target": "mm_coco.captioning:CaptionTask",
                                   "run_keys": {"max_len": "int", "num_beams": "int"}}}
    """


@hookspec
def register_runners() -> Targets:
    """Runners, name -> target of a :class:`~mm_core.engine.runner.Runner` subclass, built as
    ``Runner(cfg, task, model, datasets)``; ``run_keys`` as for :func:`register_tasks`. Example::

        @hookimpl
        def register_runners():
            return {"my_runner": {"target": "mm_mine.runner:MyRunner", "run_keys": {"my_switch": "bool"}}}
    """


@hookspec
def register_lr_schedulers() -> Targets:
    """Learning-rate schedulers (``run.lr_sched``), name -> target of a
    :class:`~mm_core.engine.schedulers.LRScheduler`. Example::

        @hookimpl
        def register_lr_schedulers():
            return {"halving_lr": "mm_mine.schedules:HalvingLR"}
    """


@hookspec
def register_llms() -> Targets:
    """Language-model backends that other models compose (BLIP-2 -> LLM, by ``model.llm.name``),
    name -> target of a :class:`~mm_core.base.llm.BaseLLM`. Example::

        @hookimpl
        def register_llms():
            return {"qwen": {"target": "mm_qwen_llm.qwen:QwenLLM", "description": "Qwen chat models"}}
    """


@hookspec
def register_metrics() -> Targets:
    """Metrics that tasks and reports reach by name, name -> target of a scoring function.

    A metric is a function ``score(predictions: dict[str, str], references: dict[str, list[str]],
    **options) -> MetricScores`` over samples keyed by id (:class:`mm_core.base.metric.MetricScores`:
    corpus and, where the metric has them, per-sample values); a task reaches it with
    ``get_registry().resolve("metrics", name)``. Example::

        @hookimpl
        def register_metrics():
            return {"coco_caption": "mm_caption_metrics.coco_caption:score"}
    """


@hookspec
def register_commands() -> Targets:
    """``mmrun`` sub-commands, name -> target of a function ``main(argv: list[str]) -> int``.

    A dict value may add ``help``, the line ``mmrun --help`` shows. mm's own commands are
    registered the same way (:mod:`mm_core.builtin`). Example::

        @hookimpl
        def register_commands():
            return {"make-shapes": {"target": "mm_coco.shapes:main", "help": "render the shapes data"}}
    """


@hookspec
def register_run_keys() -> dict[str, str]:
    """``run.*`` keys a plugin reads besides those of its tasks and runners (e.g. the switch of a
    lifecycle plugin), key -> type spec as in :func:`register_tasks`. Example::

        @hookimpl
        def register_run_keys():
            return {"tensorboard": "bool"}
    """


# --- lifecycle hooks: called by the engine during a run, with the runner's up-to-date RunView --


@hookspec
def config_loaded(config: Any) -> None:
    """Called once the config is merged and validated, before anything is built (runs,
    ``--dry-run`` and ``mmrun config`` alike).

    ``config`` is the merged OmegaConf ``DictConfig``; a plugin may check it (raise
    :class:`~mm_core.errors.ConfigError` to stop with exit code 2) or fill in values. Example::

        @hookimpl
        def config_loaded(config):
            if config.run.get("tensorboard") and importlib.util.find_spec("tensorboard") is None:
                raise ConfigError("run.tensorboard is set but tensorboard is not installed")
    """


@hookspec
def after_train_step(run: RunView, step: int, metrics: dict[str, float]) -> None:
    """Called on every rank after each optimizer step.

    ``step`` counts optimizer steps from 1; ``metrics`` holds ``loss``, every loss term the
    model returned, ``lr`` and ``epoch``. ``run.request_stop()`` ends training after this step
    (all ranks together, with a checkpoint). Example::

        @hookimpl
        def after_train_step(run, step, metrics):
            if run.is_main and step % 100 == 0:
                print(f"step {step}: loss {metrics['loss']:.3f}")
    """


@hookspec
def after_evaluation(run: RunView, split: str, epoch: int, metrics: dict[str, float]) -> None:
    """Called on rank 0 after a split is evaluated, with the metrics the task computed.

    ``split`` is the split's label (``val``, or ``<dataset>/val`` with several datasets);
    ``epoch`` is the epoch just finished, ``-1`` for the evaluations before training, of the
    best checkpoint and of ``run.evaluate`` runs. Example::

        @hookimpl
        def after_evaluation(run, split, epoch, metrics):
            if metrics.get("agg_metrics", 1.0) < 0.01 and run.epoch >= 3:
                run.request_stop()
    """


@hookspec
def checkpoint_saved(run: RunView, path: str, tag: str) -> None:
    """Called on rank 0 after a checkpoint directory is complete; ``tag`` names it
    (``step_0000120``) and ``path`` is the directory. Example::

        @hookimpl
        def checkpoint_saved(run, path, tag):
            shutil.copytree(path, f"/backup/{tag}")
    """


@hookspec
def run_finished(run: RunView, status: str) -> None:
    """Called on every rank once when a run ends; ``status`` is ``"completed"``,
    ``"interrupted"`` (a signal stopped it after saving) or ``"failed"`` (an exception is on its
    way). Example::

        @hookimpl
        def run_finished(run, status):
            if run.is_main:
                notify(f"{run.output_dir}: {status} at step {run.step}")
    """


#: kind -> the registration hook that fills it (``register_<kind>``).
REGISTRATION_HOOKS: dict[str, str] = {kind: f"register_{kind}" for kind in (
    "models", "processors", "datasets", "tasks", "runners", "lr_schedulers", "llms", "metrics", "commands")}
