"""Registration of the report tests' model."""

from mm_core.hookspecs import hookimpl

MM_API_VERSION = "1.0"


@hookimpl
def register_models():
    return {"report_captioner": "report_testkit.model:ReportCaptioner"}
