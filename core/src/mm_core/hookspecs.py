"""The hook specifications: the contract between mm and its plugins (docs/plugins.md, "Hook reference")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from mm_core.run_view import RunView

PROJECT_NAME = "mm"
ENTRY_POINT_GROUP = "mm.plugins"

#: Version of the hook API, matched against a plugin's ``MM_API_VERSION`` (docs/plugins.md, "API versions").
API_VERSION = "2.0"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

Targets = dict[str, Any]


# --- registration hooks: called once per process, when the registry is first built ----------


@hookspec
def register_models() -> Targets:
    """Model architectures, ``arch`` -> a :class:`~mm_core.base.model.BaseModel`; configs in
    ``configs/models/<arch>/<model_type>.yaml`` (docs/plugins.md, "Default configs"). Example::

        @hookimpl
        def register_models():
            return {"patch_mlp": {"target": "mm_patchmlp.model:PatchMLP", "default_model_type": "tiny"}}
    """


@hookspec
def register_processors() -> Targets:
    """Processors (``*_processor`` blocks), name -> a
    :class:`~mm_core.base.processor.BaseProcessor`. Example::

        @hookimpl
        def register_processors():
            return {"my_image_eval": "mm_mine.processors:MyImageEval"}
    """


@hookspec
def register_datasets() -> Targets:
    """Dataset builders, name -> a :class:`~mm_core.base.builder.BaseDatasetBuilder`; configs in
    ``configs/datasets/<name>/<type>.yaml`` (docs/plugins.md, "Default configs"). Example::

        @hookimpl
        def register_datasets():
            return {"csv_caption": {"target": "mm_csv.builder:CsvCaptionBuilder", "data_type": "images"}}
    """


@hookspec
def register_tasks() -> Targets:
    """Tasks, name -> a :class:`~mm_core.base.task.BaseTask`; ``run_keys`` declares the extra
    ``run.*`` keys it reads, with types (docs/run_keys.md). Example::

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
    """Learning-rate schedulers (``run.lr_sched``), name -> a
    :class:`~mm_core.engine.schedulers.LRScheduler`. Example::

        @hookimpl
        def register_lr_schedulers():
            return {"halving_lr": "mm_mine.schedules:HalvingLR"}
    """


@hookspec
def register_llms() -> Targets:
    """LLM backends that other models compose by ``model.llm.name``, name -> a
    :class:`~mm_core.base.llm.BaseLLM` (docs/llm_backend.md). Example::

        @hookimpl
        def register_llms():
            return {"qwen": {"target": "mm_qwen_llm.qwen:QwenLLM", "description": "Qwen chat models"}}
    """


@hookspec
def register_metrics() -> Targets:
    """Metrics, name -> a function ``score(predictions, references, **options) -> MetricScores``
    over samples keyed by id (:mod:`mm_core.base.metric`; docs/plugins.md, "Metrics"). Example::

        @hookimpl
        def register_metrics():
            return {"coco_caption": "mm_caption_metrics.coco_caption:score"}
    """


@hookspec
def register_commands() -> Targets:
    """``mmrun`` sub-commands, name -> a function ``main(argv: list[str]) -> int``; ``help`` is
    the line ``mmrun --help`` shows. Example::

        @hookimpl
        def register_commands():
            return {"make-shapes": {"target": "mm_coco.shapes:main", "help": "render the shapes data"}}
    """


@hookspec
def register_run_keys() -> dict[str, str]:
    """``run.*`` keys a plugin reads besides its tasks' and runners' (e.g. a lifecycle plugin's
    switch), key -> type as in :func:`register_tasks`. Example::

        @hookimpl
        def register_run_keys():
            return {"tensorboard": "bool"}
    """


# --- lifecycle hooks: called by the engine during a run, with the runner's up-to-date RunView --


@hookspec
def config_loaded(config: Any) -> None:
    """Called with the merged, validated ``DictConfig`` before anything is built (runs,
    ``--dry-run``, ``mmrun config``); raise :class:`~mm_core.errors.ConfigError` to stop. Example::

        @hookimpl
        def config_loaded(config):
            if config.run.get("tensorboard") and importlib.util.find_spec("tensorboard") is None:
                raise ConfigError("run.tensorboard is set but tensorboard is not installed")
    """


@hookspec
def describe_run(config: Any, model: Any) -> list[str]:
    """Lines of the run's plan: printed by ``--dry-run`` (``model`` None), logged once a run built it. Example::

        @hookimpl
        def describe_run(config, model):
            return [f"batch per GPU: {config.run.batch_size_train}"]
    """


@hookspec
def after_train_step(run: RunView, step: int, metrics: dict[str, float]) -> None:
    """Called on every rank after each optimizer step (counted from 1); ``metrics`` holds
    ``loss``, the model's loss terms, ``lr`` and ``epoch``. Example::

        @hookimpl
        def after_train_step(run, step, metrics):
            if run.is_main and step % 100 == 0:
                print(f"step {step}: loss {metrics['loss']:.3f}")
    """


@hookspec
def after_evaluation(run: RunView, split: str, epoch: int, metrics: dict[str, float]) -> None:
    """Called on rank 0 after a split (``val`` or ``<dataset>/val``) is evaluated; ``epoch`` is
    ``-1`` outside the training epochs. Example::

        @hookimpl
        def after_evaluation(run, split, epoch, metrics):
            if metrics.get("agg_metrics", 1.0) < 0.01 and run.epoch >= 3:
                run.request_stop()
    """


@hookspec
def checkpoint_saved(run: RunView, path: str, tag: str) -> None:
    """Called on rank 0 once the checkpoint directory ``path`` is complete; ``tag`` names it
    (``step_0000120``). Example::

        @hookimpl
        def checkpoint_saved(run, path, tag):
            shutil.copytree(path, f"/backup/{tag}")
    """


@hookspec
def run_finished(run: RunView, status: str) -> None:
    """Called on every rank once when a run ends; ``status`` is ``completed``, ``interrupted`` or
    ``failed``. Example::

        @hookimpl
        def run_finished(run, status):
            if run.is_main:
                notify(f"{run.output_dir}: {status} at step {run.step}")
    """


#: kind -> the registration hook that fills it (``register_<kind>``).
REGISTRATION_HOOKS: dict[str, str] = {kind: f"register_{kind}" for kind in (
    "models", "processors", "datasets", "tasks", "runners", "lr_schedulers", "llms", "metrics", "commands")}
