"""Registration hooks of the toy plugin: a model, a dataset builder and a processor. Each call is
recorded (see :mod:`mm_toy.events`)."""

from mm_core.hookspecs import hookimpl
from mm_toy.events import record

MM_API_VERSION = "2.0"


@hookimpl
def register_models():
    record("register_models")
    return {"toy_regressor": "mm_toy.model:ToyRegressor"}


@hookimpl
def register_datasets():
    record("register_datasets")
    return {"toy_regression": {"target": "mm_toy.data:ToyRegressionBuilder", "data_type": "features"}}


@hookimpl
def register_processors():
    record("register_processors")
    return {"toy_scale": "mm_toy.data:ScaleProcessor"}
