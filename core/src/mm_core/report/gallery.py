"""The gallery: evaluation samples with their image, the model's output and the references,
the best and the worst by a per-sample score.

What a task should save for a good gallery (``BaseTask.save_results``; every field optional
except an id and the output):

=================  ===============================================================
``image_id``       the image's id (COCO number) — or ``question_id`` for VQA, or
                   ``instance_id`` (position in the split's annotation file)
``caption``        the generated text (also read: ``answer``, ``prediction``,
                   ``output``, ``text``)
``image``          the image path, absolute or relative to the dataset's
                   ``build_info.images.storage`` (else found through the annotations)
``references``     the ground-truth texts (else read from the split's annotations)
``question``       the question or prompt, shown above the output
``score``          a per-sample score (``score_name`` names it), used for ranking
=================  ===============================================================

A task may also write ``<split>_epoch<epoch>_scores.json`` beside the results with
``{"per_image": {"<metric>": {"<id>": value}}}``; see :mod:`mm_core.report.scores`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_core.report import scores as scoring
from mm_core.report.annotations import DatasetIndex, load_index, locate_split, question_of, references_of
from mm_core.report.run_dir import ResultFile, RunData, read_json

OUTPUT_KEYS = ("caption", "answer", "prediction", "output", "text")
ID_KEYS = ("question_id", "image_id", "instance_id")


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
    located = locate_split(run.config, result.split)
    index = load_index(run.config, *located, run.notes, images_root) if located else None
    if index is None and images_root is not None:
        index = DatasetIndex(dataset="?", split=result.split, images_root=images_root)
    samples = _unique([_sample(record, position, index) for position, record in enumerate(records)])
    gallery = Gallery(run=run.name, split=result.split, epoch=result.epoch, source=result.path,
                      total=len(samples), images_root=index.images_root if index else None)
    scored = _scores(run, result, records, samples) if score else None
    if scored is not None:
        gallery.metric, gallery.score_source = scored.metric, scored.source
        for sample in samples:
            sample.score = scored.values.get(sample.key)
    _select(gallery, samples, size)
    _embed_images(gallery.best + gallery.worst)
    gallery.missing_images = sum(1 for s in gallery.best + gallery.worst if s.image_missing)
    return gallery


def _sample(record: dict[str, Any], position: int, index: DatasetIndex | None) -> Sample:
    key = _key(record, position)
    annotation = index.find(record) if index is not None else None
    prediction = next((str(record[k]) for k in OUTPUT_KEYS if record.get(k) is not None), None)
    references = references_of({"references": record["references"]}) if record.get("references") \
        else references_of(annotation)
    sample = Sample(key=key, prediction=prediction, references=references,
                    question=question_of(record) or question_of(annotation))
    relative = _string(record.get("image")) or _string((annotation or {}).get("image"))
    _place_image(sample, relative, index)
    return sample


def _key(record: dict[str, Any], position: int) -> str:
    return next((str(record[k]) for k in ID_KEYS if record.get(k) is not None), str(position))


def _unique(samples: list[Sample]) -> list[Sample]:
    """One sample per id: a distributed sampler pads the last batch of each rank with repeats,
    and a task may save the gathered results as they are."""
    seen: dict[str, Sample] = {}
    for sample in samples:
        seen.setdefault(sample.key, sample)
    return list(seen.values())


def _place_image(sample: Sample, relative: str | None, index: DatasetIndex | None) -> None:
    if relative is None:
        sample.image_missing = "no image path in the result or the annotations"
        return
    path = Path(relative).expanduser()
    if not path.is_absolute():
        root = index.images_root if index is not None else None
        if root is None:
            sample.image_missing = f"{relative}: the config names no images root (build_info.images.storage)"
            return
        path = root / path
    sample.image_path = path
    if not path.is_file():
        sample.image_missing = f"not found at {path}"


def _scores(run: RunData, result: ResultFile, records: list[dict[str, Any]],
            samples: list[Sample]) -> scoring.Scored | None:
    found = scoring.from_records(records, [_key(r, i) for i, r in enumerate(records)])
    if found is None and result.scores_path is not None:
        payload = read_json(result.scores_path, run.notes, "scores file")
        found = scoring.from_scores_file(payload) if payload is not None else None
    if found is not None:
        return found
    predictions = {s.key: s.prediction for s in samples if s.prediction is not None}
    references = {s.key: s.references for s in samples if s.references}
    if not references:
        return None
    is_caption = any("caption" in r for r in records)
    return scoring.computed_cider(predictions, references) if is_caption \
        else scoring.computed_accuracy(predictions, references)


def _embed_images(samples: list[Sample]) -> None:
    from mm_core.report.embed import image_url

    for sample in samples:
        if sample.image_path is None or sample.image_missing:
            continue
        try:
            sample.image_src = image_url(sample.image_path)
        except Exception as exc:  # noqa: BLE001 - an unreadable image is a note on its card, never a crash
            sample.image_missing = f"unreadable ({type(exc).__name__}): {sample.image_path}"


def _select(gallery: Gallery, samples: list[Sample], size: int) -> None:
    ranked = sorted((s for s in samples if s.score is not None), key=lambda s: s.score, reverse=True)
    if not ranked:
        gallery.best = samples[: 2 * size]
        return
    if len(ranked) <= 2 * size:
        gallery.best = ranked
        return
    gallery.best = ranked[:size]
    gallery.worst = ranked[-size:][::-1]  # worst first


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _epoch_order(epoch: str) -> tuple[int, int]:
    return (0, int(epoch)) if epoch.isdigit() else (1, 0)
