"""Registration of the test model."""

from mm_core.hookspecs import hookimpl

MM_API_VERSION = "1.0"


@hookimpl
def register_models():
    return {"shape_captioner": "coco_testkit.model:ShapeCaptioner"}
