"""Seeing a run: ``mmrun report`` turns run directories into PNG plots and one self-contained
HTML page (config summary, metrics table with the best checkpoint marked, curves, a gallery of
evaluation samples next to their images), from the run directory alone and offline.

Modules, in the order a report is made:

* :mod:`~mm_core.report.run_dir` — reading ``config.yaml``, ``metrics.jsonl``, checkpoint
  pointers and saved results, tolerating a run still being written;
* :mod:`~mm_core.report.curves` — which curves to draw; :mod:`~mm_core.report.plots` — drawing them;
* :mod:`~mm_core.report.annotations`, :mod:`~mm_core.report.scores`,
  :mod:`~mm_core.report.gallery` — samples, their references and images, ranked by score
  (the fields a task should save are listed in :mod:`~mm_core.report.gallery`);
* :mod:`~mm_core.report.tables`, :mod:`~mm_core.report.embed`, :mod:`~mm_core.report.page` — the page;
* :mod:`~mm_core.report.build` — :func:`write_report`, the whole thing; :mod:`~mm_core.report.cli` — the command.

Python use (e.g. at the end of a script or notebook)::

    from mm_core.report import write_report
    report = write_report(["output/quickstart"])
    print(report.html)
"""

from __future__ import annotations

from mm_core.report.build import Report, write_report  # light: matplotlib is imported when drawing

__all__ = ["Report", "write_report"]
