"""Registration hooks of mm-plugin-report: the ``mmrun report`` command."""

from mm_core.hookspecs import hookimpl

MM_API_VERSION = "2.0"


@hookimpl
def register_commands() -> dict:
    return {
        "report": {
            "target": "mm_report.cli:main",
            "help": "plots and a self-contained HTML page of one or more run directories",
        },
    }
