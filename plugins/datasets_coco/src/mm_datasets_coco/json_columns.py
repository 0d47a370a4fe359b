"""JSON annotation files decoded straight into one list per field, for the compact datasets.

``json.load`` builds a dict per record and the columns are then read out of the dicts; for a
large file that object pass costs more than the parse itself. Here msgspec decodes each record
into a small struct of the fields the dataset declares (unknown keys are skipped in C, nothing
is garbage-collector tracked), with the field types checked as it parses, and the columns are
read from the structs in one C-level pass each.

This path only takes files it can read exactly as ``json.load`` would: ``.json`` files holding a
list of records (or ``{"annotations": [...]}``) whose fields have the declared types. Anything
else -- a file that is missing, not valid JSON, a record that is not an object, a field that is
missing or of another type, ``NaN`` -- returns ``None``, and the dataset reads the files the
general way (:meth:`CompactImageDataset._load <mm_datasets_coco.image_dataset.CompactImageDataset._load>`:
dicts, per-record checks), which also reads ``.jsonl`` / ``.csv`` / ``.tsv`` files. So the
errors keep their one definition: the message naming the file and the record (or the JSON
line and column) is the one the general path raises.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from itertools import repeat
from operator import attrgetter
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from mm_datasets_coco.image_dataset import CompactImageDataset

#: the value of a field a record does not have (msgspec's marker, so both paths agree)
MISSING = msgspec.UNSET
_NOT_JSON = (".csv", ".tsv", ".jsonl")  # the suffixes load_annotation_file reads otherwise


def field_columns(records: Sequence[dict], names: Sequence[str]) -> dict[str, list[Any]]:
    """The columns of ``records`` (dicts, as ``json.load`` gives them): ``MISSING`` where a key is absent."""
    return {name: list(map(dict.get, records, repeat(name), repeat(MISSING))) for name in names}


def record_decoder(fields: dict[str, Any]) -> msgspec.json.Decoder:
    """A decoder of a list of records (or ``{"annotations": [...]}``) with these fields.

    ``fields`` maps a key to its accepted type; a type that includes ``msgspec.UnsetType`` makes
    the key optional (``MISSING`` when absent), any other key is required.
    """
    spec = [(name, kind, MISSING) if _optional(kind) else (name, kind) for name, kind in fields.items()]
    record = msgspec.defstruct("AnnotationRecord", spec, kw_only=True, gc=False)
    wrapped = msgspec.defstruct("AnnotationsObject", [("annotations", list[record])], gc=False)
    return msgspec.json.Decoder(list[record] | wrapped)


def _optional(kind: Any) -> bool:
    return kind is msgspec.UnsetType or msgspec.UnsetType in getattr(kind, "__args__", ())


def decode_columns(paths: Sequence[Path], decoder: msgspec.json.Decoder,
                   names: Sequence[str]) -> tuple[dict[str, list[Any]], np.ndarray] | None:
    """The field columns of all files' records and the index where each file starts, or
    ``None`` when a file is not one this fast path reads exactly (see the module docstring)."""
    columns: dict[str, list[Any]] = {name: [] for name in names}
    starts = [0]
    for path in paths:
        if Path(path).suffix in _NOT_JSON:
            return None
        try:  # mapped, not read: the decoder reads the page cache without a copy of the file
            with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
                decoded = decoder.decode(data)
        except (OSError, ValueError, msgspec.DecodeError):  # ValidationError is a DecodeError; ValueError: empty file
            return None
        records = decoded if isinstance(decoded, list) else decoded.annotations
        for name in names:
            columns[name].extend(map(attrgetter(name), records))
        starts.append(starts[-1] + len(records))
    return columns, np.asarray(starts, dtype=np.int64)


def _defined_by(cls: type, attribute: str) -> type:
    return next(klass for klass in cls.__mro__ if attribute in vars(klass))


class DecodedColumnsMixin:
    """Gives a compact dataset the fast path: ``_load`` decodes the files straight into columns.

    A subclass declares ``_record_fields`` (key -> type the fast path accepts, see
    :func:`record_decoder`) and implements ``_load_columns(columns)`` (columns -> its arrays);
    its ``_load_records(records)`` checks the dicts of the general path and hands
    :func:`field_columns` to ``_load_columns``. A subclass that overrides ``_load_records`` or
    ``_read_file`` reads records its own way, so it always gets the general path.
    """

    _record_fields: dict[str, Any] = {}
    _decoders: dict[type, msgspec.json.Decoder] = {}

    def _load(self, paths: Sequence[Path]) -> None:
        decoded = decode_columns(paths, self._decoder(), list(self._record_fields)) if self._fast_path() else None
        if decoded is None:
            super()._load(paths)  # type: ignore[misc]
            return
        columns, self._source_starts = decoded
        self._load_columns(columns)

    def _fast_path(self) -> bool:
        cls = type(self)
        return (_defined_by(cls, "_load_records") is _defined_by(cls, "_load_columns")
                and _defined_by(cls, "_read_file") is CompactImageDataset)

    def _decoder(self) -> msgspec.json.Decoder:
        cls = type(self)
        if cls not in DecodedColumnsMixin._decoders:
            DecodedColumnsMixin._decoders[cls] = record_decoder(self._record_fields)
        return DecodedColumnsMixin._decoders[cls]

    def _load_columns(self, columns: dict[str, list[Any]]) -> None:
        raise NotImplementedError
