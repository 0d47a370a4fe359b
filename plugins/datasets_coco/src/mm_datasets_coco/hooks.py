"""Registration hooks of mm-plugin-datasets-coco: public names -> lazy targets.

Importing this module imports no torch: the run keys are literal tables here.
"""

from mm_core.hookspecs import hookimpl

MM_API_VERSION = "2.0"

_GENERATION_KEYS = {
    "num_beams": "int",
    "max_len": "int",
    "min_len": "int",
    "prompt": "str|null",
    "repetition_penalty": "float",
}


@hookimpl
def register_datasets() -> dict:
    return {
        "coco_caption": {
            "target": "mm_datasets_coco.builders:CocoCaptionBuilder",
            "data_type": "images",
            "description": "COCO captions, Karpathy splits (LAVIS layout); type 'shapes' is a generated offline sample",
        },
        "coco_vqa": {
            "target": "mm_datasets_coco.builders:CocoVQABuilder",
            "data_type": "images",
            "description": "VQA v2 on COCO images (LAVIS layout); type 'shapes' is a generated offline sample",
        },
    }


@hookimpl
def register_tasks() -> dict:
    return {
        "captioning": {
            "target": "mm_datasets_coco.captioning:CaptionTask",
            "description": "generate captions; BLEU-1..4, METEOR, ROUGE-L, CIDEr (SPICE when available)",
            "run_keys": {**_GENERATION_KEYS, "meteor": "bool", "spice": "bool|null"},
        },
        "vqa": {
            "target": "mm_datasets_coco.vqa_task:VQATask",
            "description": "answer questions by generation (or ranking); VQA accuracy",
            "run_keys": {**_GENERATION_KEYS, "inference_method": "str", "num_ans_candidates": "int"},
        },
    }


@hookimpl
def register_commands() -> dict:
    return {
        "make-shapes": {
            "target": "mm_datasets_coco.commands:make_shapes_main",
            "help": "render the synthetic shapes dataset (COCO caption, VQA and instruction JSON) into a folder",
        },
        "download-coco": {
            "target": "mm_datasets_coco.commands:download_coco_main",
            "help": "download the COCO caption / VQA annotations (md5-checked) and explain how to get the images",
        },
    }
