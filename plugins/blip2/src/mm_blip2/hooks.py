"""Registration hooks of mm-plugin-blip2: public names -> lazy targets (no torch imported here)."""

from mm_core.hookspecs import hookimpl

MM_API_VERSION = "2.0"


def blip_processors(*names: str) -> dict:
    """``needs`` of a model whose default configs name these processors of mm-plugin-blip-processors."""
    return {"processors": dict.fromkeys(names, "mm-plugin-blip-processors")}


@hookimpl
def register_models() -> dict:
    return {
        "blip2": {
            "target": "mm_blip2.models.blip2_qformer:Blip2Qformer",
            "needs": blip_processors("blip_image_train", "blip2_image_train", "blip_image_eval", "blip_caption"),
            "default_model_type": "pretrain",
            "description": "BLIP-2 stage 1 (LAVIS' Blip2Qformer): Q-Former trained with ITC + ITM + captioning "
                           "losses, generate() captions, retrieval scores",
        },
        "blip2_image_text_matching": {
            "target": "mm_blip2.models.blip2_qformer:Blip2ImageTextMatching",
            "needs": blip_processors("blip_image_train", "blip2_image_train", "blip_image_eval", "blip_caption"),
            "default_model_type": "pretrain",
            "description": "BLIP-2 image-text matching (LAVIS): model(samples, match_head='itm' | 'itc') scores pairs",
        },
        "blip2_feature_extractor": {
            "target": "mm_blip2.models.feature_extractor:Blip2FeatureExtractor",
            "needs": blip_processors("blip_image_train", "blip2_image_train", "blip_image_eval", "blip_caption"),
            "default_model_type": "pretrain",
            "description": "BLIP-2 Q-Former image, text and multimodal features (LAVIS' feature extractor)",
        },
        "blip2_llm": {
            "target": "mm_blip2.models.blip2_llm:Blip2LLM",
            "needs": blip_processors("blip2_image_train", "blip_image_eval", "blip_caption"),
            "default_model_type": "tiny",
            "description": "BLIP-2 vision tower + Q-Former projected into any registered LLM backend",
        },
        "minigpt4qwen": {
            "target": "mm_blip2.models.minigpt4qwen:MiniGPT4Qwen",
            "default_model_type": "qwen7b_chat",
            "description": "BLIP-2 vision tower + Q-Former + projection into a Qwen chat LLM (MiniGPT4-Qwen; "
                           "needs the qwen backend of mm-plugin-qwen-llm)",
            "needs": {"llms": {"qwen": "mm-plugin-qwen-llm"},
                      "processors": {**blip_processors("blip2_image_train", "blip2_image_eval")["processors"],
                                     "base_instruction": "mm-plugin-qwen-llm"}},
        },
        **lavis_llm_zoo(),
    }


def lavis_llm_zoo() -> dict:
    """LAVIS' BLIP-2 LLM archs (mm_blip2.models.blip2_zoo): each reaches its backend of mm-plugin-qwen-llm by name."""
    processors = blip_processors("blip_image_train", "blip2_image_train", "blip_image_eval", "blip_caption")["processors"]
    zoo = {
        "blip2_opt": ("Blip2OPT", "hf_causal_lm", "pretrain_opt2.7b", "BLIP-2 with OPT (LAVIS' blip2_opt): captions, "
                      "zero-shot VQA; Hugging Face Blip2ForConditionalGeneration directories load too"),
        "blip2_t5": ("Blip2T5", "hf_seq2seq", "pretrain_flant5xl", "BLIP-2 with Flan-T5 (LAVIS' blip2_t5): queries + "
                     "prompt into the encoder, the answer from the decoder"),
        "blip2_vicuna_instruct": ("Blip2VicunaInstruct", "hf_causal_lm", "vicuna7b", "InstructBLIP with Vicuna "
                                  "(LAVIS' blip2_vicuna_instruct): the instruction enters the Q-Former too"),
        "blip2_t5_instruct": ("Blip2T5Instruct", "hf_seq2seq", "flant5xl", "InstructBLIP with Flan-T5 (LAVIS' "
                              "blip2_t5_instruct): the instruction enters the Q-Former too"),
    }
    return {name: {"target": f"mm_blip2.models.blip2_zoo:{cls}", "default_model_type": default,
                   "description": text, "needs": {"llms": {backend: "mm-plugin-qwen-llm"}, "processors": processors}}
            for name, (cls, backend, default, text) in zoo.items()}


@hookimpl
def register_processors() -> dict:
    return {}  # its processors are mm-plugin-blip-processors' (each model's `needs`)
