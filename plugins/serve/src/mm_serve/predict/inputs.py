"""What ``mmrun predict`` answers: a list of :class:`Record` s in input order, each with a stable id.

``--inputs`` is a folder (its images, recursively, sorted; id = the path relative to the folder),
a glob (sorted matches; id = the path), one image file, or a records file: JSONL (one object a
line), JSON (a list of objects) or CSV (a header row), each record with ``image`` and optional
``prompt`` (the whole user text), ``question`` (a VQA question) and ``id`` (default: the record's
position, 0-based). Relative image paths are read against ``--image-root``, else the records
file's folder. Ids are what a resumed run skips, so they must be unique.
"""

from __future__ import annotations

import csv
import glob
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mm_core.errors import ConfigError, DataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
RECORD_SUFFIXES = (".jsonl", ".json", ".csv")


@dataclass(frozen=True)
class Record:
    """One input: ``id`` as given (str or int), the image path, prompt / question, position."""

    id: Any
    image: str | None
    index: int
    prompt: str | None = None
    question: str | None = None

    @property
    def key(self) -> str:
        """The id as the output file's lines are matched on (JSON keeps 7 and "7" apart; we do not)."""
        return str(self.id)


def read_records(source: str, image_root: str | None = None) -> list[Record]:
    """The records ``source`` names (see the module doc); :class:`ConfigError` when it names none."""
    path = Path(source).expanduser()
    if path.is_dir():
        records = _folder(path)
    elif path.is_file() and path.suffix.lower() in RECORD_SUFFIXES:
        root = Path(image_root).expanduser() if image_root else path.parent
        records = _from_rows(_rows(path), path, root)
    elif path.is_file():
        records = [Record(str(path), str(path), 0)]
    elif glob.has_magic(source):
        matches = sorted(p for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        records = [Record(p, p, i) for i, p in enumerate(matches)]
    else:
        raise ConfigError(f"--inputs {source}: no such file or folder",
                          hint="give a folder of images, a glob ('imgs/*.jpg'), a .jsonl/.json/.csv of records, "
                               "or --split NAME for a dataset split of the config")
    if not records:
        raise ConfigError(f"--inputs {source}: no images or records found",
                          hint=f"image files end in {', '.join(sorted(IMAGE_SUFFIXES))}")
    return records


def _folder(folder: Path) -> list[Record]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return [Record(p.relative_to(folder).as_posix(), str(p), i) for i, p in enumerate(files)]


def _rows(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".csv":
        return [{k: (v if v != "" else None) for k, v in row.items()} for row in csv.DictReader(text.splitlines())]
    if suffix == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(rows, list):
            raise DataError(f"{path}: a JSON records file holds a list of objects", hint='[{"image": "a.jpg"}, ...]')
        return rows
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not a JSON object ({exc})") from exc
    return rows


def _from_rows(rows: list[Any], path: Path, root: Path) -> list[Record]:
    records, seen = [], {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not row.get("image"):
            raise DataError(f"{path}: record {i} has no 'image'",
                            hint="each record needs 'image' (a path) and may have 'prompt', 'question', 'id'")
        record_id = row.get("id", i)
        record = Record(record_id, str(root / Path(str(row["image"])).expanduser()), i,
                        _text(row.get("prompt")), _text(row.get("question")))
        if record.key in seen:
            raise DataError(f"{path}: records {seen[record.key]} and {i} have the same id {record_id!r}",
                            hint="ids are what a resumed run skips; make them unique (or leave them out)")
        seen[record.key] = i
        records.append(record)
    return records


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
