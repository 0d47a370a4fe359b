"""Registration hooks of the toy plugin."""

from mm_core.hookspecs import hookimpl

MM_API_VERSION = "1.0"


@hookimpl
def register_models():
    return {"toy_regressor": "mm_toy.model:ToyRegressor"}


@hookimpl
def register_datasets():
    return {"toy_regression": {"target": "mm_toy.data:ToyRegressionBuilder", "data_type": "features"}}


@hookimpl
def register_processors():
    return {"toy_scale": "mm_toy.data:ScaleProcessor"}
