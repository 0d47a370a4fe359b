"""Registration hooks of mm-plugin-blip2: public names -> lazy targets (no torch imported here)."""

from mm_core.hookspecs import hookimpl

MM_API_VERSION = "2.0"


@hookimpl
def register_models() -> dict:
    return {
        "blip2_feature_extractor": {
            "target": "mm_blip2.models.feature_extractor:Blip2FeatureExtractor",
            "default_model_type": "pretrain",
            "description": "BLIP-2 Q-Former image, text and multimodal features (LAVIS' feature extractor)",
        },
        "blip2_llm": {
            "target": "mm_blip2.models.blip2_llm:Blip2LLM",
            "default_model_type": "tiny",
            "description": "BLIP-2 vision tower + Q-Former projected into any registered LLM backend",
        },
        "minigpt4qwen": {
            "target": "mm_blip2.models.minigpt4qwen:MiniGPT4Qwen",
            "default_model_type": "qwen7b_chat",
            "description": "BLIP-2 vision tower + Q-Former + projection into a Qwen chat LLM (MiniGPT4-Qwen; "
                           "needs the qwen backend of mm-plugin-qwen-llm)",
            "needs": {"llms": {"qwen": "mm-plugin-qwen-llm"}},
        },
    }


@hookimpl
def register_processors() -> dict:
    return {
        "blip_image_train": "mm_blip2.processors:BlipImageTrainProcessor",
        "blip2_image_train": "mm_blip2.processors:Blip2ImageTrainProcessor",
        "blip_image_eval": "mm_blip2.processors:BlipImageEvalProcessor",
        "blip2_image_eval": "mm_blip2.processors:Blip2ImageEvalProcessor",
        "blip_caption": "mm_blip2.processors:BlipCaptionProcessor",
        "blip_question": "mm_blip2.processors:BlipQuestionProcessor",
    }
