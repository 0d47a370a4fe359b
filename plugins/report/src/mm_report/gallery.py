"""The gallery: evaluation samples with their image, the model's output and the references,
the best and the worst by a per-sample score.

Everything comes from the saved result records themselves, in the keys of the contract in
:mod:`mm_core.base.results` (an id, the output, ``image`` + ``images_root``, ``prompt``,
``references``, ``score`` + ``score_name``): the report knows no task and no dataset, so a
third party's task is shown as well as mm's own. ``images_root`` given to the report replaces
the one the records name (the images moved since the run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_core.base.results import ID_KEYS, OUTPUT_KEYS
from mm_report.run_dir import ResultFile, RunData, read_json


@dataclass
class Sample:
    """One gallery card."""

    key: str
    prediction: str | None
    references: list[str] = field(default_factory=list)
    question: str | None = None
    image_path: Path | None = None
    image_missing: str | None = None  # why the image cannot be shown
    image_src: str | None = None  # the image as a data URL, once embedded
    score: float | None = None


@dataclass
class Gallery:
    """The shown samples of one result file."""

    run: str
    split: str
    epoch: str
    source: Path
    total: int
    best: list[Sample] = field(default_factory=list)
    worst: list[Sample] = field(default_factory=list)
    metric: str | None = None
    score_source: str | None = None
    missing_images: int = 0
    images_root: Path | None = None


def results_by_split(run: RunData) -> list[list[ResultFile]]:
    """Saved results grouped by split (in the order the splits were evaluated), newest first,
    so a report of a running run shows its latest evaluation, or the one before when the latest
    file is still being written."""
    groups: dict[str, list[ResultFile]] = {}
    for result in sorted(run.results, key=lambda r: (r.mtime, _epoch_order(r.epoch)), reverse=True):
        groups.setdefault(result.split, []).append(result)
    order = {split: i for i, split in enumerate(dict.fromkeys(
        str(e.get("split", "")).replace("/", "_") for e in run.of_type("eval")))}
    return [groups[s] for s in sorted(groups, key=lambda s: (order.get(s, len(order)), s))]


def build_gallery(run: RunData, result: ResultFile, size: int, images_root: Path | None = None,
                  score: bool = True) -> Gallery | None:
    """``size`` best and ``size`` worst samples of ``result`` (the first ``2 * size`` when unscored)."""
    records = read_json(result.path, run.notes, "result file")
    if not isinstance(records, list):
        return None
    records = [r for r in records if isinstance(r, dict)]
    if not any(k in r for r in records for k in OUTPUT_KEYS):
        return None  # e.g. the base task's per-batch losses: nothing to look at
    samples = _unique([_sample(record, position, images_root) for position, record in enumerate(records)])
    shown_root = images_root or next((_root(r) for r in records if _root(r) is not None), None)
    gallery = Gallery(run=run.name, split=result.split, epoch=result.epoch, source=result.path,
                      total=len(samples), images_root=shown_root)
    _rank(gallery, samples, records, score)
    _select(gallery, samples, size)
    _embed_images(gallery.best + gallery.worst)
    gallery.missing_images = sum(1 for s in gallery.best + gallery.worst if s.image_missing)
    return gallery


def _sample(record: dict[str, Any], position: int, images_root: Path | None) -> Sample:
    prediction = next((str(record[k]) for k in OUTPUT_KEYS if record.get(k) is not None), None)
    references = record.get("references")
    sample = Sample(key=_key(record, position), prediction=prediction,
                    references=[str(r) for r in references] if isinstance(references, list) else [],
                    question=_string(record.get("prompt")),
                    score=_number(record.get("score")))
    _place_image(sample, _string(record.get("image")), images_root or _root(record))
    return sample


def _key(record: dict[str, Any], position: int) -> str:
    return next((str(record[k]) for k in ID_KEYS if record.get(k) is not None), str(position))


def _root(record: dict[str, Any]) -> Path | None:
    root = _string(record.get("images_root"))
    return Path(root).expanduser() if root is not None else None


def _unique(samples: list[Sample]) -> list[Sample]:
    """One sample per id: a distributed sampler pads the last batch of each rank with repeats,
    and a task may save the gathered results as they are."""
    seen: dict[str, Sample] = {}
    for sample in samples:
        seen.setdefault(sample.key, sample)
    return list(seen.values())


def _place_image(sample: Sample, relative: str | None, root: Path | None) -> None:
    if relative is None:
        sample.image_missing = "no image path in the result"
        return
    path = Path(relative).expanduser()
    if not path.is_absolute():
        if root is None:
            sample.image_missing = f"{relative}: the result names no images_root (pass --images-root DIR)"
            return
        path = root / path
    sample.image_path = path
    if not path.is_file():
        sample.image_missing = f"not found at {path}"


def _rank(gallery: Gallery, samples: list[Sample], records: list[dict[str, Any]], wanted: bool) -> None:
    """Name the metric of the samples' saved scores; without scores (or not ``wanted``) there
    is no ranking and no score on the cards."""
    if not wanted or not any(s.score is not None for s in samples):
        for sample in samples:
            sample.score = None
        return
    gallery.metric = next((str(r["score_name"]) for r in records if r.get("score_name")), "score")
    gallery.score_source = "saved with the results by the task"


def _embed_images(samples: list[Sample]) -> None:
    from mm_report.embed import image_url

    for sample in samples:
        if sample.image_path is None or sample.image_missing:
            continue
        try:
            sample.image_src = image_url(sample.image_path)
        except Exception as exc:  # noqa: BLE001 - an unreadable image is a note on its card, never a crash
            sample.image_missing = f"unreadable ({type(exc).__name__}): {sample.image_path}"


def _select(gallery: Gallery, samples: list[Sample], size: int) -> None:
    ranked = sorted((s for s in samples if s.score is not None), key=lambda s: s.score, reverse=True)
    if not ranked or gallery.metric is None:
        gallery.best = samples[: 2 * size]
        return
    if len(ranked) <= 2 * size:
        gallery.best = ranked
        return
    gallery.best = ranked[:size]
    gallery.worst = ranked[-size:][::-1]  # worst first


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _epoch_order(epoch: str) -> tuple[int, int]:
    return (0, int(epoch)) if epoch.isdigit() else (1, 0)
