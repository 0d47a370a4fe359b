"""Registration hooks of mm-plugin-caption-metrics: public names -> lazy targets."""

from mm_core.hookspecs import hookimpl

MM_API_VERSION = "2.0"


@hookimpl
def register_metrics() -> dict:
    return {
        "coco_caption": {
            "target": "mm_caption_metrics.coco_caption:score",
            "description": "COCO caption metrics: Bleu_1..4, METEOR, ROUGE_L, CIDEr (per sample too), SPICE when available",
        },
    }
