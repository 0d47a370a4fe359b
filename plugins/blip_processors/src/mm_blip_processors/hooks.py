"""Registration hooks of mm-plugin-blip-processors: public names -> lazy targets (no torch imported here)."""

from mm_core.hookspecs import hookimpl

MM_API_VERSION = "2.0"

_IMAGE_OPTIONS = {"image_size": "int", "mean": "list|null", "std": "list|null"}
_TRAIN_OPTIONS = {**_IMAGE_OPTIONS, "min_scale": "float", "max_scale": "float"}


@hookimpl
def register_processors() -> dict:
    return {
        "blip_image_train": {
            "target": "mm_blip_processors.processors:BlipImageTrainProcessor",
            "config_keys": _TRAIN_OPTIONS,
            "description": "LAVIS' BLIP train transform: random resized crop (bicubic), flip, RandomAugment(2, 5), "
                           "CLIP normalisation (384 px)",
        },
        "blip2_image_train": {
            "target": "mm_blip_processors.processors:Blip2ImageTrainProcessor",
            "config_keys": _TRAIN_OPTIONS,
            "description": "LAVIS' BLIP-2 train transform: random resized crop (bicubic), flip, CLIP normalisation "
                           "(364 px; no RandomAugment, as in LAVIS)",
        },
        "blip_image_eval": {
            "target": "mm_blip_processors.processors:BlipImageEvalProcessor",
            "config_keys": _IMAGE_OPTIONS,
            "description": "bicubic resize to a square, CLIP normalisation (384 px)",
        },
        "blip2_image_eval": {
            "target": "mm_blip_processors.processors:Blip2ImageEvalProcessor",
            "config_keys": _IMAGE_OPTIONS,
            "description": "bicubic resize to a square, CLIP normalisation (364 px)",
        },
        "blip_caption": {
            "target": "mm_blip_processors.processors:BlipCaptionProcessor",
            "config_keys": {"prompt": "str", "max_words": "int"},
            "description": "prompt + LAVIS' caption clean-up (lower case, punctuation, at most max_words words)",
        },
        "blip_question": {
            "target": "mm_blip_processors.processors:BlipQuestionProcessor",
            "config_keys": {"max_words": "int"},
            "description": "LAVIS' question clean-up (lower case, punctuation removed, at most max_words words)",
        },
        "clip_image_train": {
            "target": "mm_blip_processors.clip_processors:ClipImageTrainProcessor",
            "config_keys": _TRAIN_OPTIONS,
            "description": "LAVIS' CLIP train transform (InstructBLIP's configs): random resized crop 0.9-1.0 "
                           "(bicubic), no flip, CLIP normalisation (224 px)",
        },
        "clip_image_eval": {
            "target": "mm_blip_processors.clip_processors:ClipImageEvalProcessor",
            "config_keys": _IMAGE_OPTIONS,
            "description": "bicubic resize of the short side + centre crop, CLIP normalisation (224 px)",
        },
    }
