"""What a dataset's own annotation files say about an evaluated sample: its image and references.

Saved results are kept small (the captioning task writes ``[{"image_id", "caption"}]``), so the
report looks the rest up where the run found it: ``datasets.<name>.build_info`` in the run's
merged config — ``annotations.<split>.storage`` (one path or a list) and ``images.storage``,
relative paths being under the cache root (``MM_CACHE_ROOT``, ``env.cache_root``, ``~/.cache/mm``).

Records are matched to results by ``question_id`` (VQA), by ``image_id``, or — as the COCO
caption datasets number images — by the number at the end of the image file name
(``COCO_val2014_000000522418.jpg`` -> 522418, else the record's position in the file).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_core.download import cache_root, resolve_storage


@dataclass
class DatasetIndex:
    """Annotation records of one split, findable by the ids results carry."""

    dataset: str
    split: str
    images_root: Path | None = None
    by_question: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_image: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_position: list[dict[str, Any]] = field(default_factory=list)

    def find(self, result: dict[str, Any]) -> dict[str, Any] | None:
        """The annotation record of a result record, or ``None``."""
        if result.get("question_id") is not None:
            return self.by_question.get(str(result["question_id"]))
        if result.get("image_id") is not None:
            return self.by_image.get(str(result["image_id"]))
        instance = result.get("instance_id")
        if instance is not None and str(instance).isdigit() and int(instance) < len(self.by_position):
            return self.by_position[int(instance)]
        return None


def locate_split(config: dict[str, Any], label: str) -> tuple[str, str] | None:
    """``(dataset, split)`` of a result label: ``val``, or ``<dataset>_<split>`` when a run has
    several datasets (the engine writes ``dataset/split`` labels with ``/`` replaced by ``_``)."""
    datasets = config.get("datasets") or {}
    if not isinstance(datasets, dict):
        return None
    for name in sorted(datasets, key=len, reverse=True):
        for sep in ("_", "/"):
            if label.startswith(f"{name}{sep}") and label[len(name) + 1:] in _annotations(datasets[name]):
                return name, label[len(name) + 1:]
    for name, block in datasets.items():
        if label in _annotations(block):
            return name, label
    return None


def load_index(config: dict[str, Any], dataset: str, split: str, notes: list[str],
               images_root: Path | None = None) -> DatasetIndex:
    """Read the split's annotation files (those that exist; missing ones become notes)."""
    block = (config.get("datasets") or {}).get(dataset) or {}
    env = config.get("env") if isinstance(config.get("env"), dict) else {}
    root = cache_root(env.get("cache_root"))
    index = DatasetIndex(dataset=dataset, split=split)
    image_info = (block.get("build_info") or {}).get("images") or {}
    if images_root is not None:
        index.images_root = images_root
    elif image_info.get("storage"):
        index.images_root = resolve_storage(str(image_info["storage"]), root)
    info = _annotations(block).get(split) or {}
    storages = info.get("storage") if isinstance(info, dict) else None
    for storage in storages if isinstance(storages, list) else [storages] if storages else []:
        path = resolve_storage(str(storage), root)
        records = _read_records(path, notes, f"datasets.{dataset}.build_info.annotations.{split}")
        _add_records(index, records)
    return index


def references_of(record: dict[str, Any] | None) -> list[str]:
    """Reference texts of an annotation record: its captions, or its answers (VQA)."""
    if not record:
        return []
    for key in ("references", "caption", "captions", "answer", "answers", "output"):
        if key in record:
            return _texts(record[key])
    return []


def question_of(record: dict[str, Any] | None) -> str | None:
    if not record:
        return None
    for key in ("question", "instruction", "prompt"):
        if isinstance(record.get(key), str):
            return record[key]
    return None


def trailing_number(name: str, fallback: int) -> int:
    """The number at the end of a file stem (COCO image ids), else ``fallback``."""
    stem = Path(name).stem
    digits = len(stem) - len(stem.rstrip("0123456789"))
    return int(stem[-digits:]) if digits else fallback


def _annotations(block: Any) -> dict[str, Any]:
    if not isinstance(block, dict):
        return {}
    annotations = (block.get("build_info") or {}).get("annotations")
    return annotations if isinstance(annotations, dict) else {}


def _read_records(path: Path, notes: list[str], key: str) -> list[dict[str, Any]]:
    if not path.is_file():
        notes.append(f"annotation file {path} ({key}) was not found: references and images of this split "
                     "cannot be shown (the data may have moved; set MM_CACHE_ROOT to its new root)")
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        notes.append(f"annotation file {path} could not be read ({type(exc).__name__})")
        return []
    if isinstance(data, dict):  # COCO-style {"annotations": [...]} / {"questions": [...]}
        data = data.get("annotations") or data.get("questions") or []
    return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []


def _add_records(index: DatasetIndex, records: list[dict[str, Any]]) -> None:
    offset = len(index.by_position)
    for i, record in enumerate(records):
        index.by_position.append(record)
        if record.get("question_id") is not None:
            index.by_question.setdefault(str(record["question_id"]), record)
        if record.get("image_id") is not None:
            index.by_image.setdefault(str(record["image_id"]), record)
        if isinstance(record.get("image"), str):
            index.by_image.setdefault(str(trailing_number(record["image"], offset + i)), record)


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = value.get("answer") or value.get("caption")
        return [str(value)] if value is not None else []
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    return []
