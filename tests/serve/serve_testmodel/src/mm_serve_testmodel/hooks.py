"""Registration hooks of the serve tests' model plugin."""

from mm_core.hookspecs import hookimpl

MM_API_VERSION = "2.0"


@hookimpl
def register_models():
    return {"char_chat": "mm_serve_testmodel.model:CharChat"}


@hookimpl
def register_processors():
    return {"char_image_eval": "mm_serve_testmodel.model:CharImageProcessor"}
