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
    "length_penalty": "float",
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
        "ok_vqa": {
            "target": "mm_datasets_coco.builders:OKVQABuilder",
            "data_type": "images",
            "description": "OK-VQA on COCO images (LAVIS layout, train / test); type 'shapes' is a generated offline sample",
        },
        "gqa": {
            "target": "mm_datasets_coco.builders:GQABuilder",
            "data_type": "images",
            "description": "GQA balanced questions (LAVIS layout; types balanced_testdev, balanced_val, shapes)",
        },
        "coco_retrieval": {
            "target": "mm_datasets_coco.builders:CocoRetrievalBuilder",
            "data_type": "images",
            "description": "COCO image-text retrieval, Karpathy splits (LAVIS layout); type 'shapes' is offline",
        },
        "flickr30k": {
            "target": "mm_datasets_coco.builders:Flickr30kBuilder",
            "data_type": "images",
            "description": "Flickr30k image-text retrieval (LAVIS layout); type 'shapes' is offline",
        },
        "vg_caption": {
            "target": "mm_datasets_coco.builders:VGCaptionBuilder",
            "data_type": "images",
            "description": "Visual Genome image-caption pairs, train only (LAVIS layout); type 'shapes' is offline",
        },
    }


@hookimpl
def register_tasks() -> dict:
    return {
        "captioning": {
            "target": "mm_datasets_coco.captioning:CaptionTask",
            "description": "generate captions; BLEU-1..4, METEOR, ROUGE-L, CIDEr (SPICE when available)",
            "run_keys": {**_GENERATION_KEYS, "meteor": "bool", "spice": "bool|null", "inference_method": "str"},
        },
        "vqa": {
            "target": "mm_datasets_coco.vqa_task:VQATask",
            "description": "answer questions by generation (or ranking); VQA accuracy",
            "run_keys": {**_GENERATION_KEYS, "inference_method": "str", "num_ans_candidates": "int"},
        },
        "gqa": {
            "target": "mm_datasets_coco.vqa_task:GQATask",
            "description": "answer GQA questions by generation; exact-match accuracy after VQA answer normalisation",
            "run_keys": {**_GENERATION_KEYS, "inference_method": "str", "num_ans_candidates": "int"},
        },
        "retrieval": {
            "target": "mm_datasets_coco.retrieval:RetrievalTask",
            "description": "image-text retrieval: ITC similarities, top-k_test ITM re-ranking; recall@1/5/10",
            "run_keys": {"k_test": "int"},
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
