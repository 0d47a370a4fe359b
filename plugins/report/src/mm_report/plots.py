"""Drawing :class:`~mm_report.curves.Figure` s as PNG files with matplotlib (Agg backend,
no display needed), plus ``plots.json``: for every PNG, the curves actually drawn on it (read
back from the axes' lines), so scripts and tests can check a plot without looking at pixels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_report.curves import Figure

DPI = 100
SIZE_INCHES = (7.0, 3.6)
MARKER_MAX_POINTS = 60  # few points (evaluations): draw markers so single points show


@dataclass
class PlotFile:
    """One written PNG and what is on it."""

    path: Path
    figure: Figure
    lines: list[dict[str, Any]] = field(default_factory=list)


def draw_figures(figures: list[Figure], folder: Path) -> list[PlotFile]:
    """Write ``<folder>/<figure.name>.png`` for each figure and ``<folder>/plots.json``."""
    # The Agg canvas directly, not pyplot: no display, no global figure state, less to import.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for figure in figures:
        fig = MplFigure(figsize=SIZE_INCHES, dpi=DPI)
        FigureCanvasAgg(fig)
        # fixed margins instead of tight_layout, which costs a second full draw per figure
        fig.subplots_adjust(left=0.11, right=0.97, top=0.90, bottom=0.14)
        ax = fig.add_subplot()
        _draw(ax, figure)
        lines = [_describe(line) for line in ax.get_lines()]
        path = folder / f"{figure.name}.png"
        # no Software/URL text chunk in the PNG: the page must reference nothing outside itself
        fig.savefig(path, format="png", metadata={"Software": None})
        written.append(PlotFile(path=path, figure=figure, lines=lines))
    _remove_stale(folder, {p.path.name for p in written})
    manifest = [{"file": p.path.name, "title": p.figure.title, "ylabel": p.figure.ylabel,
                 "log_y": p.figure.log_y, "curves": p.lines} for p in written]
    (folder / "plots.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return written


def _remove_stale(folder: Path, current: set[str]) -> None:
    """Delete PNGs an earlier report listed in ``plots.json`` that this one did not redraw."""
    try:
        previous = json.loads((folder / "plots.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    for entry in previous if isinstance(previous, list) else []:
        name = entry.get("file") if isinstance(entry, dict) else None
        if isinstance(name, str) and name not in current and "/" not in name and name.endswith(".png"):
            (folder / name).unlink(missing_ok=True)


def _draw(ax: Any, figure: Figure) -> None:
    for series in figure.series:
        marker = "o" if len(series.x) <= MARKER_MAX_POINTS else None
        ax.plot(series.x, series.y, label=series.label, marker=marker, markersize=3, linewidth=1.2)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    ax.set_title(figure.title)
    ax.set_xlabel(figure.xlabel)
    ax.set_ylabel(figure.ylabel)
    if figure.log_y:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if len(figure.series) > 1 or figure.series[0].label != figure.ylabel:
        ax.legend(fontsize="small", loc="best")


def _describe(line: Any) -> dict[str, Any]:
    ys = [float(v) for v in line.get_ydata()]
    xs = [float(v) for v in line.get_xdata()]
    return {"label": str(line.get_label()), "points": len(ys),
            "first": [xs[0], ys[0]] if ys else None, "last": [xs[-1], ys[-1]] if ys else None,
            "min": min(ys) if ys else None, "max": max(ys) if ys else None}
