"""Registration hooks of mm-plugin-deepspeed: public names -> lazy targets.

Importing this module imports neither torch nor DeepSpeed.
"""

from mm_core.hookspecs import hookimpl

MM_API_VERSION = "2.0"


@hookimpl
def register_runners() -> dict:
    return {
        "deepspeed_runner": {
            "target": "mm_deepspeed.runner:DeepSpeedRunner",
            "description": "DeepSpeed engine (ZeRO 0-3, bf16/fp16, offload)",
            "run_keys": {
                "deepspeed_config": "dict|str",
                "resume_ckpt_load_dir": "str|null",
                "resume_ckpt_tag": "str|int|null",
            },
        },
        "deepspeed_pipe_runner": {
            "target": "mm_deepspeed.pipe_runner:DeepSpeedPipeRunner",
            "description": "DeepSpeed pipeline engine: the model's pipeline_layers() over run.num_stages stages x data parallel",
            "run_keys": {
                "deepspeed_config": "dict|str",
                "num_stages": "int",
                "partition_method": "str|null",
                "resume_ckpt_load_dir": "str|null",
                "resume_ckpt_tag": "str|int|null",
            },
        },
    }


@hookimpl
def register_commands() -> dict:
    return {
        "consolidate-deepspeed": {
            "target": "mm_deepspeed.consolidate:main",
            "help": "turn a DeepSpeed ZeRO checkpoint folder into one fp32 safetensors file (trainable weights)",
        },
    }
