"""Registration hooks of mm-plugin-blip: public names -> lazy targets (no torch imported here)."""

from mm_core.hookspecs import hookimpl

MM_API_VERSION = "2.0"

#: The BLIP processors every model type's ``preprocess`` block names (shared with the BLIP-2 family).
_PROCESSORS = {"processors": {"blip_image_train": "mm-plugin-blip-processors",
                              "blip_image_eval": "mm-plugin-blip-processors",
                              "blip_caption": "mm-plugin-blip-processors",
                              "blip_question": "mm-plugin-blip-processors"}}


@hookimpl
def register_models() -> dict:
    return {
        "blip_caption": {
            "target": "mm_blip.models.caption:BlipCaption",
            "default_model_type": "base_coco",
            "description": "BLIP captioning (LAVIS): ViT + image-grounded BERT decoder, prompt 'a picture of ', "
                           "generate() with beam search or nucleus sampling",
            "needs": _PROCESSORS,
        },
        "blip_vqa": {
            "target": "mm_blip.models.vqa:BlipVQA",
            "default_model_type": "vqav2",
            "description": "BLIP VQA (LAVIS): ViT + question encoder + answer decoder, predict_answers() by "
                           "generation or ranking an answer list",
            "needs": _PROCESSORS,
        },
        "blip_feature_extractor": {
            "target": "mm_blip.models.feature_extractor:BlipFeatureExtractor",
            "default_model_type": "base",
            "description": "BLIP image, text and multimodal features with their ITC projections (LAVIS)",
            "needs": _PROCESSORS,
        },
        "blip_retrieval": {
            "target": "mm_blip.models.retrieval:BlipRetrieval",
            "default_model_type": "coco",
            "description": "BLIP image-text retrieval (LAVIS): ITC + ITM training, the retrieval task's scores",
            "needs": _PROCESSORS,
        },
        "blip_image_text_matching": {
            "target": "mm_blip.models.retrieval:BlipImageTextMatching",
            "default_model_type": "base",
            "description": "BLIP image-text matching (LAVIS): model(samples, match_head='itm' | 'itc') scores pairs",
            "needs": _PROCESSORS,
        },
    }
