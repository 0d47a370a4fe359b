"""mm-plugin-report. Seeing a run: ``mmrun report`` turns run directories into PNG plots and one self-contained
HTML page (config summary, metrics table with the best checkpoint marked, curves, a gallery of
evaluation samples next to their images), from the run directory alone and offline.

Modules, in the order a report is made:

* :mod:`~mm_report.run_dir` — reading ``config.yaml``, ``metrics.jsonl``, checkpoint
  pointers and saved results, tolerating a run still being written;
* :mod:`~mm_report.curves` — which curves to draw; :mod:`~mm_report.plots` — drawing them;
* :mod:`~mm_report.gallery` — samples, their references and images, ranked by score, all read
  from the result records (the keys a task saves for it are the contract in
  :mod:`mm_core.base.results`: the report knows no task and no dataset);
* :mod:`~mm_report.tables`, :mod:`~mm_report.embed`, :mod:`~mm_report.page` — the page;
* :mod:`~mm_report.build` — :func:`write_report`, the whole thing; :mod:`~mm_report.cli` — the command.

Python use (e.g. at the end of a script or notebook)::

    from mm_report import write_report
    report = write_report(["output/quickstart"])
    print(report.html)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Report", "write_report"]


def __getattr__(name: str) -> Any:
    # The plugin host imports this package to load its hooks: the report's modules come on use.
    if name in __all__:
        from mm_report import build

        return getattr(build, name)
    raise AttributeError(f"module 'mm_report' has no attribute {name!r}")
