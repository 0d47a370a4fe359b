"""Registration hooks of mm-plugin-qwen-llm: public names -> lazy targets."""

from mm_core.hookspecs import hookimpl

MM_API_VERSION = "2.0"


@hookimpl
def register_llms() -> dict:
    return {
        "qwen": {
            "target": "mm_qwen_llm.qwen:QwenLLM",
            "description": "Qwen / Qwen2.x / Qwen3 chat models with ChatML, image placeholders and LoRA",
            "config_keys": {"model": "str|null", "llm_model": "str|null", "dtype": "str", "freeze": "bool",
                            "lora": "bool", "lora_r": "int", "lora_alpha": "int", "lora_dropout": "float",
                            "lora_target_modules": "list|null", "gradient_checkpointing": "bool", "device_map": "any",
                            "trust_remote_code": "bool", "random_init": "bool", "init_seed": "int",
                            "image_token": "str|null", "system_message": "str|null"},
        },
    }


@hookimpl
def register_processors() -> dict:
    return {"base_instruction": "mm_qwen_llm.processors:BaseInstructionProcessor"}


@hookimpl
def register_datasets() -> dict:
    return {
        "minigpt4_instruction": {
            "target": "mm_qwen_llm.instruction_data:InstructionBuilder",
            "data_type": "images",
            "description": "MiniGPT-4 detailed descriptions in MiniGPT4-Qwen's instruction format",
        },
        "llava_instruction": {
            "target": "mm_qwen_llm.instruction_data:LlavaInstructionBuilder",
            "data_type": "images",
            "description": "LLaVA-Instruct conversations (MiniGPT4-Qwen or LLaVA format)",
        },
    }


#: Generation settings MiniGPT4-Qwen's training YAMLs carry in ``run`` (read by chat/generate).
GENERATION_RUN_KEYS = {"max_new_tokens": "int", "min_new_tokens": "int", "num_beams": "int",
                       "max_len": "int", "min_len": "int"}


@hookimpl
def register_tasks() -> dict:
    return {
        "image_text_pretrain": {
            "target": "mm_qwen_llm.task:ImageTextPretrainTask",
            "description": "train on the model's language-modelling loss; optional validation loss",
            "run_keys": GENERATION_RUN_KEYS,
        },
        "deepspeed_image_text_pretrain": {"target": "mm_qwen_llm.task:ImageTextPretrainTask",
                                          "description": "MiniGPT4-Qwen's name for image_text_pretrain",
                                          "run_keys": GENERATION_RUN_KEYS},
    }


@hookimpl
def register_commands() -> dict:
    return {
        "export-lora": {"target": "mm_qwen_llm.export:main",
                        "help": "merge a checkpoint's LoRA adapters into a plain Hugging Face model directory"},
    }
