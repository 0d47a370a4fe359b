"""Registration of the test model."""

from mm_core.hookspecs import hookimpl

MM_API_VERSION = "2.0"


@hookimpl
def register_models():
    return {"shape_captioner": "coco_testkit.model:ShapeCaptioner"}
