"""Registration hooks of mm-plugin-qwen-llm: public names -> lazy targets."""

from mm_core.hookspecs import hookimpl

MM_API_VERSION = "2.0"


#: ``model.llm`` options every backend here reads (the loading options of mm_qwen_llm.hf_backend).
HF_KEYS = {"model": "str|null", "dtype": "str", "freeze": "bool", "lora": "bool", "lora_r": "int",
           "lora_alpha": "int", "lora_dropout": "float", "lora_target_modules": "list|null",
           "gradient_checkpointing": "bool", "device_map": "any", "trust_remote_code": "bool",
           "random_init": "bool", "init_seed": "int"}
#: the prompt-layout options of hf_causal_lm / hf_seq2seq (mm_qwen_llm.hf_lm.LAYOUT_KEYS)
LAYOUT_KEYS = {"prompt_format": "str", "answer_suffix": "str|null", "stop_tokens": "list|null",
               "max_answer_len": "int|null", "image_token": "str|null"}


@hookimpl
def register_llms() -> dict:
    return {
        "hf_causal_lm": {
            "target": "mm_qwen_llm.hf_lm:HFCausalLM",
            "description": "any transformers causal LM (OPT, LLaMA / Vicuna, GPT-2, Mistral, Qwen2) in BLIP-2 OPT's "
                           "plain layout or InstructBLIP's (prompt_format: plain | vicuna)",
            "config_keys": {**HF_KEYS, **LAYOUT_KEYS},
        },
        "hf_seq2seq": {
            "target": "mm_qwen_llm.hf_lm:HFSeq2SeqLM",
            "description": "transformers encoder-decoders (T5 / Flan-T5): images and prompt into the encoder, "
                           "the answer into the decoder; fp32 `wo` under bf16/fp16",
            "config_keys": {**HF_KEYS, **LAYOUT_KEYS},
        },
        "qwen": {
            "target": "mm_qwen_llm.qwen:QwenLLM",
            "description": "Qwen / Qwen2.x / Qwen3 chat models with ChatML, image placeholders and LoRA",
            "config_keys": {**HF_KEYS, "llm_model": "str|null", "image_token": "str|null",
                            "system_message": "str|null"},
        },
    }


@hookimpl
def register_lr_schedulers() -> dict:
    return {"linear_warmup_cosine_lr_step-wise": "mm_qwen_llm.schedules:StepWiseWarmupCosineLR"}


@hookimpl
def register_processors() -> dict:
    return {"base_instruction": "mm_qwen_llm.processors:BaseInstructionProcessor"}


#: the BLIP image processors the instruction builders' default configs name (mm-plugin-blip-processors)
IMAGE_PROCESSORS = {"processors": {"blip2_image_train": "mm-plugin-blip-processors",
                                   "blip2_image_eval": "mm-plugin-blip-processors"}}


#: MPP-LLaVA's LLaVA builders (its names), in LLaVA's or MPP-LLaVA's annotation format
LLAVA_DATA = {
    "llava_pretrain": "LLaVA-Pretrain 558K / LLaVA-CC3M-595K chat.json captions (LLaVA or MPP-LLaVA format)",
    "llava_instruct_100k": "LLaVA-Instruct 100K multi-turn conversations on COCO (MPP-LLaVA's SFT split)",
    "llava_instruct_156k": "LLaVA-Instruct 158K conversations on COCO (MPP-LLaVA's SFT split)",
}


@hookimpl
def register_datasets() -> dict:
    return {
        "minigpt4_instruction": {
            "target": "mm_qwen_llm.instruction_data:InstructionBuilder",
            "data_type": "images",
            "description": "MiniGPT-4 detailed descriptions in MiniGPT4-Qwen's instruction format",
            "needs": IMAGE_PROCESSORS,
        },
        "llava_instruction": {
            "target": "mm_qwen_llm.instruction_data:LlavaInstructionBuilder",
            "data_type": "images",
            "description": "LLaVA-Instruct conversations (MiniGPT4-Qwen or LLaVA format)",
            "needs": IMAGE_PROCESSORS,
        },
        **{name: {"target": "mm_qwen_llm.instruction_data:LlavaInstructionBuilder", "data_type": "images",
                  "description": description, "needs": IMAGE_PROCESSORS} for name, description in LLAVA_DATA.items()},
        "videochatgpt_100k": {
            "target": "mm_qwen_llm.video:VideoInstructionBuilder",
            "data_type": "videos",
            "description": "VideoChatGPT-100K (MPP-LLaVA format): mp4 / frame folders, max_frames sampled, one mark per frame",
            "needs": IMAGE_PROCESSORS,
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
