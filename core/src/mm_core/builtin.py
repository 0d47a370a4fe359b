"""mm-core's own plugin: the engine's runners and lr schedulers, registered exactly as a
third-party plugin registers its names (datasette's habit)."""

from __future__ import annotations

from mm_core.hookspecs import hookimpl

MM_API_VERSION = "1.0"


@hookimpl
def register_runners() -> dict:
    return {
        "runner_base": "mm_core.engine.runner:EpochRunner",
        "runner_iter": "mm_core.engine.runner:IterRunner",
        "deepspeed_runner": {
            "target": "mm_core.engine.deepspeed_runner:DeepSpeedRunner",
            "description": "DeepSpeed engine (ZeRO 0-3, bf16/fp16, offload); needs mm-core[deepspeed]",
            "run_keys": {
                "deepspeed_config": "dict|str",
                "resume_ckpt_load_dir": "str|null",
                "resume_ckpt_tag": "str|int|null",
            },
        },
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
