"""The report as one self-contained HTML page: inline CSS, plots and images as ``data:`` URLs,
no script, no link to anything outside the file (it opens offline, in a mail, in an archive).

Text taken from runs (captions, config values, notes) is escaped, and URLs in it are shown as
plain text without their ``scheme://`` so that the page references nothing it does not contain.
"""

from __future__ import annotations

import html
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_report.embed import png_file_url
from mm_report.gallery import Gallery, Sample
from mm_report.plots import PlotFile
from mm_report.run_dir import RunData
from mm_report.tables import MetricsTable, config_summary, metrics_table

_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*)://(\S+)")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1300px}
h1{font-size:1.5em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
h3{font-size:1.05em;margin-top:20px}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f4f4f4}tr.best td{background:#fff4c2;font-weight:600}
dl.summary{display:grid;grid-template-columns:max-content auto;gap:2px 16px;font-size:.92em}
dl.summary dt{color:#555}dl.summary dd{margin:0}
.notes{background:#fff8e6;border:1px solid #f0d48a;padding:8px 14px;border-radius:4px}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots figure{margin:0}.plots img{max-width:100%;width:640px}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(230px,1fr));gap:12px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px;font-size:.88em;background:#fafafa}
.card img{width:100%;image-rendering:auto;border-radius:3px;background:#eee}
.missing{height:120px;display:flex;align-items:center;justify-content:center;background:#eee;color:#a33;
 text-align:center;padding:6px;border-radius:3px;word-break:break-all}
.pred{font-weight:600;margin:6px 0 2px}.score{float:right;color:#555}.refs{margin:2px 0 0 16px;padding:0;color:#444}
pre{background:#f6f6f6;padding:10px;overflow:auto;font-size:.85em}
"""


@dataclass
class PageInput:
    """Everything the page shows."""

    runs: list[RunData]
    plots: list[PlotFile]
    galleries: list[Gallery]
    notes: list[str] = field(default_factory=list)
    plots_wanted: bool = True  # False: the page has no curves section at all


def render_page(data: PageInput) -> str:
    """The whole HTML document."""
    names = ", ".join(r.name for r in data.runs)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>mm report: {_text(names)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>mm report: {_text(names)}</h1>",
        f"<p>Written {time.strftime('%Y-%m-%d %H:%M:%S')} from {len(data.runs)} run director"
        f"{'y' if len(data.runs) == 1 else 'ies'}: " + ", ".join(f"<code>{_text(str(r.path.resolve()))}</code>" for r in data.runs)
        + ".</p>",
        _notes(data.notes),
    ]
    for run in data.runs:
        parts.append(_run_section(run, len(data.runs) > 1))
    parts.append(_plots_section(data.plots) if data.plots_wanted else "")
    parts.append(_galleries_section(data.galleries))
    for run in data.runs:
        parts.append(_config_section(run))
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)


def _text(value: Any) -> str:
    """Escaped text, URLs written without their scheme (never a link)."""
    return html.escape(_URL.sub(lambda m: f"{m.group(2)} ({m.group(1)} address, not linked)", str(value)))


def _notes(notes: list[str]) -> str:
    if not notes:
        return ""
    items = "".join(f"<li>{_text(n)}</li>" for n in notes)
    return f'<div class="notes"><strong>Notes</strong><ul>{items}</ul></div>'


def _run_section(run: RunData, several: bool) -> str:
    title = f"Run {run.name}" if several else "Run"
    summary = "".join(f"<dt>{_text(k)}</dt><dd>{_text(v)}</dd>" for k, v in config_summary(run))
    return (f'<section id="run-{_text(run.name)}"><h2>{_text(title)}</h2>'
            f'<dl class="summary">{summary}</dl>'
            f"<h3>Evaluation metrics</h3>{_metrics_table(metrics_table(run))}</section>")


def _metrics_table(table: MetricsTable) -> str:
    if not table.rows:
        return "<p>No evaluation yet.</p>"
    head = "".join(f"<th>{_text(c)}</th>" for c in table.columns) + "<th></th>"
    rows = []
    for i, row in enumerate(table.rows):
        best = i == table.best_row
        cells = "".join(f"<td>{_text(_format(row.get(c)))}</td>" for c in table.columns)
        mark = f'<td title="{_text(table.best_note or "")}">&#9733; best</td>' if best else "<td></td>"
        rows.append(f'<tr{" class=best" if best else ""}>{cells}{mark}</tr>')
    note = f"<p><small>&#9733; marks the {_text(table.best_note)}.</small></p>" if table.best_note else ""
    return f'<table class="metrics"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>{note}'


def _plots_section(plots: list[PlotFile]) -> str:
    if not plots:
        return "<h2>Curves</h2><p>Nothing to plot yet.</p>"
    figures = "".join(
        f'<figure><img src="{png_file_url(p.path)}" alt="{_text(p.figure.title)}">'
        f"<figcaption><small>{_text(p.path.name)}</small></figcaption></figure>" for p in plots)
    return f'<h2>Curves</h2><div class="plots">{figures}</div>'


def _galleries_section(galleries: list[Gallery]) -> str:
    if not galleries:
        return ("<h2>Samples</h2><p>No saved evaluation results with outputs "
                "(<code>result/&lt;split&gt;_epoch&lt;n&gt;.json</code>) yet.</p>")
    parts = ["<h2>Samples</h2>"]
    for gallery in galleries:
        parts.append(_gallery(gallery))
    return "".join(parts)


def _gallery(gallery: Gallery) -> str:
    head = (f'<h3>{_text(gallery.run)}: {_text(gallery.split)} (epoch {_text(gallery.epoch)}), '
            f"{gallery.total} samples, from <code>{_text(gallery.source.name)}</code></h3>")
    info = []
    if gallery.metric:
        info.append(f"Ranked by {_text(gallery.metric)} per sample ({_text(gallery.score_source)}).")
    else:
        info.append("No per-sample score: samples are shown in file order.")
    if gallery.missing_images:
        root = f" under <code>{_text(gallery.images_root)}</code>" if gallery.images_root else ""
        info.append(f'<strong class="moved">{gallery.missing_images} image(s) could not be found{root}: the images '
                    "may have moved since the run. Point the report at them with <code>--images-root DIR</code>."
                    "</strong>")
    parts = [head, f"<p>{' '.join(info)}</p>"]
    if gallery.worst:
        parts += ["<h4>Best</h4>", _cards(gallery.best), "<h4>Worst</h4>", _cards(gallery.worst)]
    else:
        parts.append(_cards(gallery.best))
    return f'<section class="samples">{"".join(parts)}</section>'


def _cards(samples: list[Sample]) -> str:
    return f'<div class="gallery">{"".join(_card(s) for s in samples)}</div>'


def _card(sample: Sample) -> str:
    picture = _picture(sample)
    score = f'<span class="score">{sample.score:.3f}</span>' if sample.score is not None else ""
    question = f"<div class=question>Q: {_text(sample.question)}</div>" if sample.question else ""
    prediction = _text(sample.prediction) if sample.prediction is not None else "<em>(no output)</em>"
    refs = "".join(f"<li>{_text(r)}</li>" for r in sample.references)
    references = f'<ul class="refs">{refs}</ul>' if refs else "<div><small>(no references)</small></div>"
    return (f'<div class="card" data-id="{_text(sample.key)}">{picture}<div><small>id {_text(sample.key)}</small>'
            f"{score}</div>{question}<div class=pred>{prediction}</div>{references}</div>")


def _picture(sample: Sample) -> str:
    if sample.image_src is not None:
        return f'<img src="{sample.image_src}" alt="image {_text(sample.key)}">'
    return f'<div class="missing">image {_text(sample.image_missing or "not available")}</div>'


def _config_section(run: RunData) -> str:
    if not run.config:
        return ""
    import yaml

    dumped = yaml.safe_dump(run.config, sort_keys=False, default_flow_style=False)
    return (f"<details><summary>Merged config of {_text(run.name)} "
            f"(<code>{_text(str(Path(run.path) / 'config.yaml'))}</code>)</summary><pre>{_text(dumped)}</pre></details>")


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)
