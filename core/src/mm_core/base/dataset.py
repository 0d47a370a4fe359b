"""BaseDataset: annotations + processors -> samples, and the collater that batches them."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torch.utils.data.dataloader import default_collate

from mm_core.errors import DataError


class BaseDataset(Dataset):
    """A split: the annotation records of ``ann_paths`` (:meth:`read_annotations`), processors and a
    media root. Subclasses implement ``__getitem__``, returning ``None`` for a sample to drop."""

    def __init__(self, vis_processor: Callable | None = None, text_processor: Callable | None = None,
                 vis_root: str | Path | None = None, ann_paths: Sequence[str | Path] = ()) -> None:
        self.vis_root = Path(vis_root) if vis_root is not None else None
        self.annotation: list[Any] = []
        for path in ann_paths:
            self.annotation.extend(self.read_annotations(Path(path)))
        self.vis_processor = vis_processor
        self.text_processor = text_processor
        self._add_instance_ids()

    def __len__(self) -> int:
        return len(self.annotation)

    def read_annotations(self, path: Path) -> list[Any]:
        """The records of one annotation file (or folder)."""
        return load_annotation_file(path)

    def collater(self, samples: list[Any]) -> Any:
        """Batch samples, dropping ``None`` ones: strings, lists and tuples stay a list per key (ragged
        fields are not transposed), the rest goes through torch's ``default_collate``."""
        samples = [s for s in samples if s is not None]
        if not samples or not isinstance(samples[0], Mapping):
            return default_collate(samples) if samples else {}
        return {key: [s[key] for s in samples] if isinstance(value, (str, list, tuple))
                else default_collate([s[key] for s in samples]) for key, value in samples[0].items()}

    def _add_instance_ids(self, key: str = "instance_id") -> None:
        for idx, ann in enumerate(self.annotation):
            if isinstance(ann, dict):
                ann.setdefault(key, str(idx))

    def media_path(self, relative: str, index: int | None = None) -> Path:
        """``vis_root / relative``, refusing paths that escape ``vis_root``."""
        if self.vis_root is None:
            raise DataError("this dataset has no media root (build_info.<data_type>.storage)")
        return resolve_inside(self.vis_root, relative, what=f"annotation {index}" if index is not None else "path")


def read_json_file(path: str | Path, what: str = "annotation file") -> Any:
    """A JSON data file's content, with errors naming the file (and the line for bad JSON)."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError as exc:
        raise DataError(f"{what} not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from exc


def load_annotation_file(path: str | Path) -> list[Any]:
    """Records of an annotation file by suffix: ``.csv`` / ``.tsv`` (a dict of strings per row), ``.jsonl``
    (an object per line), else JSON (a list of records, or ``{"annotations": [...]}``)."""
    path = Path(path)
    if path.suffix in (".csv", ".tsv", ".jsonl") and not path.is_file():
        raise DataError(f"annotation file not found: {path}")
    if path.suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as fh:
            return [dict(row) for row in csv.DictReader(fh, delimiter="," if path.suffix == ".csv" else "\t")]
    if path.suffix == ".jsonl":
        lines = enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        return [_json_line(text, path, n) for n, text in lines if text.strip()]
    data = read_json_file(path)
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        data = data["annotations"]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of records, found {type(data).__name__}")
    return data


def _json_line(text: str, path: Path, line: int) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {line} is not valid JSON: {exc.msg}") from exc


def resolve_inside(root: str | Path, relative: str, what: str = "path") -> Path:
    """``root / relative`` resolved, or a :class:`DataError` if it leaves ``root``."""
    root = Path(root).resolve()
    candidate = (root / relative).resolve()
    if candidate != root and root not in candidate.parents:
        raise DataError(f"{what}: '{relative}' resolves to {candidate}, outside the data root {root}",
                        hint="paths in annotation files must stay inside their images/features root")
    return candidate


def batch_size_of(samples: Any) -> int:
    """Samples in a collated batch: the first dimension of its first tensor (or list) value."""
    if isinstance(samples, Mapping):
        for value in samples.values():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                return int(value.shape[0])
            if isinstance(value, (list, tuple)):
                return len(value)
    return 1
