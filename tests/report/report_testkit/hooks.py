"""Registration of the report tests' plugin: a model, a dataset and a task, none of them COCO's."""

from mm_core.hookspecs import hookimpl

MM_API_VERSION = "2.0"


@hookimpl
def register_models():
    return {"report_captioner": "report_testkit.model:ReportCaptioner"}


@hookimpl
def register_datasets():
    return {"report_squares": {"target": "report_testkit.data:SquaresBuilder", "data_type": "images"}}


@hookimpl
def register_tasks():
    return {"report_describe": "report_testkit.task:DescribeTask"}
