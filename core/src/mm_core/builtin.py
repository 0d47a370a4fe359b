"""mm-core's own plugin: the engine's runners and lr schedulers, the base task and the CLI's
built-in commands, registered exactly as a third-party plugin registers its names (datasette's habit)."""

from __future__ import annotations

from mm_core.hookspecs import hookimpl

MM_API_VERSION = "2.0"


@hookimpl
def register_runners() -> dict:
    return {
        "runner_base": "mm_core.engine.runner:EpochRunner",
        "runner_iter": "mm_core.engine.runner:IterRunner",
    }


@hookimpl
def register_lr_schedulers() -> dict:
    return {
        "linear_warmup_cosine_lr": "mm_core.engine.schedulers:LinearWarmupCosineLR",
        "linear_warmup_step_lr": "mm_core.engine.schedulers:LinearWarmupStepLR",
        "constant_lr": "mm_core.engine.schedulers:ConstantLR",
    }


@hookimpl
def register_tasks() -> dict:
    return {
        "base": {
            "target": "mm_core.base.task:BaseTask",
            "description": "train on the model's loss; evaluation reports the mean loss",
        },
    }


def _command(target: str, help_text: str) -> dict:
    return {"target": target, "help": help_text}


@hookimpl
def register_commands() -> dict:
    return {
        "list": _command("mm_core.cli.listing:list_main", "list registered names (models, datasets, ...)"),
        "plugins": _command("mm_core.cli.listing:plugins_main", "show installed plugins and their status"),
        "info": _command("mm_core.cli.listing:info_main", "show the card of a model or dataset"),
        "config": _command("mm_core.cli.run:config_main", "print the merged config and where each block came from"),
        "new-plugin": _command("mm_core.cli.new_plugin:main", "scaffold a pip-installable third-party plugin"),
    }
