"""``write_report``: from run directories to PNG plots and one self-contained HTML page."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mm_report.curves import eval_figures, train_figures
from mm_report.gallery import Gallery, build_gallery, results_by_split
from mm_report.run_dir import ResultFile, RunData, read_run

DEFAULT_GALLERY_SIZE = 8


@dataclass
class Report:
    """What :func:`write_report` wrote."""

    html: Path
    plots: list[Path] = field(default_factory=list)
    plots_manifest: Path | None = None
    galleries: list[Gallery] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def default_output(run_dirs: list[Path]) -> Path:
    """``<run>/report/report.html`` for one run; ``report/report.html`` here for several."""
    base = run_dirs[0] if len(run_dirs) == 1 else Path.cwd()
    return base / "report" / "report.html"


def plots_folder(html: Path) -> Path:
    """PNGs go beside the page, in ``<page stem>_plots/``."""
    return html.parent / f"{html.stem}_plots"


def write_report(run_dirs: list[str | Path], out: str | Path | None = None,
                 gallery_size: int = DEFAULT_GALLERY_SIZE, images_root: str | Path | None = None,
                 score: bool = True, plots: bool = True) -> Report:
    """Read the runs (finished or still going), draw their curves, pick gallery samples and write
    the page. Several runs are overlaid on the same plots; ``plots=False`` leaves them out (a
    quicker page of tables and samples). Raises :class:`~mm_core.errors.DataError`
    only for a path that is not a run directory."""
    paths = [Path(p).expanduser() for p in run_dirs]
    runs = [read_run(p, name) for p, name in zip(paths, run_names(paths))]
    html = Path(out).expanduser() if out is not None else default_output(paths)
    html.parent.mkdir(parents=True, exist_ok=True)

    drawn = []
    if plots:
        from mm_report.plots import draw_figures  # matplotlib only when plots are drawn

        drawn = draw_figures(train_figures(runs) + eval_figures(runs), plots_folder(html))
    root = Path(images_root).expanduser() if images_root is not None else None
    galleries = [g for run in runs for newest_first in results_by_split(run)
                 if (g := _first_gallery(run, newest_first, gallery_size, root, score)) is not None]
    notes = collect_notes(runs, galleries)

    from mm_report.page import PageInput, render_page

    html.write_text(render_page(PageInput(runs=runs, plots=drawn, galleries=galleries, notes=notes,
                                       plots_wanted=plots)), encoding="utf-8")
    return Report(html=html, plots=[p.path for p in drawn],
                  plots_manifest=plots_folder(html) / "plots.json" if plots else None,
                  galleries=galleries, notes=notes)


def _first_gallery(run: RunData, newest_first: list[ResultFile], size: int, images_root: Path | None,
                   score: bool) -> Gallery | None:
    for result in newest_first:
        gallery = build_gallery(run, result, size, images_root, score)
        if gallery is not None:
            return gallery
    return None


def run_names(paths: list[Path]) -> list[str]:
    """Folder names, made unique with their parent's name where two runs share one."""
    names = [p.resolve().name for p in paths]
    return [f"{p.resolve().parent.name}/{n}" if names.count(n) > 1 else n for p, n in zip(paths, names)]


def collect_notes(runs: list[RunData], galleries: list[Gallery]) -> list[str]:
    several = len(runs) > 1
    notes = [f"{run.name}: {note}" if several else note for run in runs for note in dict.fromkeys(run.notes)]
    for gallery in galleries:
        if gallery.missing_images:
            where = f" under {gallery.images_root}" if gallery.images_root else ""
            notes.append(f"{gallery.run}, {gallery.split}: {gallery.missing_images} of the shown images were not "
                         f"found{where}; the images may have moved since the run (pass --images-root DIR)")
    return notes
