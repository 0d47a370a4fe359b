"""Annotation columns held in a few numpy arrays instead of one Python object per record.

DataLoader workers are forked from the main process. Reading a Python object in a worker
updates its reference count, which writes to the page holding it, so the worker gets a private
copy of every page it touches: with a list of dicts, a worker's memory grows with the number of
samples it has read. A numpy buffer is one object; slicing it writes nothing into the shared
pages, so the workers keep sharing them.

The columns are built in bulk (one ``join`` and one ``encode`` per column, C-level ``map``
instead of per-record Python), and each exposes its arrays (:meth:`arrays`) and can be rebuilt
from them (:meth:`from_arrays`), which is what :mod:`.column_cache` saves and memory-maps.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any

import numpy as np


def _byte_offsets(strings: list[str], encoded_len: int, chars: int) -> np.ndarray:
    """Offsets of each string in their UTF-8 concatenation (``len(strings) + 1`` entries)."""
    offsets = np.zeros(len(strings) + 1, dtype=np.int64)
    if encoded_len == chars:  # all ASCII: byte lengths are the character lengths
        lengths = np.fromiter(map(len, strings), dtype=np.int64, count=len(strings))
    else:
        lengths = np.fromiter((len(s.encode("utf-8")) for s in strings), dtype=np.int64, count=len(strings))
    np.cumsum(lengths, out=offsets[1:])
    return offsets


class StringColumn(Sequence[str]):
    """An immutable sequence of strings stored as one UTF-8 buffer plus offsets."""

    def __init__(self, strings: Iterable[str]) -> None:
        strings = strings if isinstance(strings, list) else list(strings)
        joined = "".join(strings)
        data = joined.encode("utf-8")
        self._offsets = _byte_offsets(strings, len(data), len(joined))
        self._buffer = np.frombuffer(data, dtype=np.uint8)

    @classmethod
    def from_arrays(cls, buffer: np.ndarray, offsets: np.ndarray) -> StringColumn:
        """A column over existing arrays (e.g. memory-mapped from a cache), not copied."""
        column = cls.__new__(cls)
        column._buffer, column._offsets = buffer, offsets
        return column

    def arrays(self) -> dict[str, np.ndarray]:
        """The column's arrays, for :meth:`from_arrays`."""
        return {"buffer": self._buffer, "offsets": self._offsets}

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> str:  # type: ignore[override]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"StringColumn index {index} out of range ({len(self)} strings)")
        start, end = self._offsets[index], self._offsets[index + 1]
        return self._buffer[start:end].tobytes().decode("utf-8")

    @property
    def nbytes(self) -> int:
        """Memory held by the column's arrays."""
        return int(self._buffer.nbytes + self._offsets.nbytes)


class RaggedStrings:
    """Row ``i`` -> a list of strings (e.g. the reference captions of image ``i``)."""

    def __init__(self, rows: Iterable[Sequence[str]]) -> None:
        rows = rows if isinstance(rows, list) else list(rows)
        flat: list[str] = [s for row in rows for s in row]
        self._strings = StringColumn(flat)
        self._starts = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, rows), dtype=np.int64, count=len(rows)), out=self._starts[1:])

    @classmethod
    def from_arrays(cls, buffer: np.ndarray, offsets: np.ndarray, starts: np.ndarray) -> RaggedStrings:
        column = cls.__new__(cls)
        column._strings = StringColumn.from_arrays(buffer, offsets)
        column._starts = starts
        return column

    def arrays(self) -> dict[str, np.ndarray]:
        return {**self._strings.arrays(), "starts": self._starts}

    def __len__(self) -> int:
        return len(self._starts) - 1

    def __getitem__(self, index: int) -> list[str]:
        start, end = int(self._starts[index]), int(self._starts[index + 1])
        return [self._strings[i] for i in range(start, end)]

    @property
    def nbytes(self) -> int:
        return self._strings.nbytes + int(self._starts.nbytes)


class Interned:
    """A column with few distinct values (image paths, image ids): codes + one table of values."""

    def __init__(self, values: Iterable[str]) -> None:
        values = values if isinstance(values, list) else list(values)
        # Annotation files list an image's records together: intern one value per run of equal
        # neighbours (one cheap comparison each), not one hash-table lookup per record.
        new_run = np.ones(len(values), dtype=bool)
        if len(values) > 1:
            new_run[1:] = np.fromiter(map(operator.ne, islice(values, 1, None), values), dtype=bool, count=len(values) - 1)
        run_starts = np.flatnonzero(new_run)
        heads = list(map(values.__getitem__, run_starts.tolist())) if len(run_starts) < len(values) else values
        distinct = dict.fromkeys(heads)  # first-seen order
        if len(distinct) == len(heads):  # each value in one run (the usual layout): codes count the runs
            head_codes = np.arange(len(heads), dtype=np.int64)
        else:
            table = dict(zip(distinct, range(len(distinct))))
            head_codes = np.fromiter(map(table.__getitem__, heads), dtype=np.int64, count=len(heads))
        self.codes = np.repeat(head_codes, np.diff(np.append(run_starts, len(values))))
        self.values = StringColumn(list(distinct))

    @classmethod
    def from_arrays(cls, codes: np.ndarray, buffer: np.ndarray, offsets: np.ndarray) -> Interned:
        column = cls.__new__(cls)
        column.codes = codes
        column.values = StringColumn.from_arrays(buffer, offsets)
        return column

    def arrays(self) -> dict[str, np.ndarray]:
        return {"codes": self.codes, **self.values.arrays()}

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, index: int) -> str:
        return self.values[int(self.codes[index])]

    def code(self, index: int) -> int:
        """The index of row ``index``'s value among the distinct values."""
        return int(self.codes[index])


def all_of_type(values: list[Any], kind: type) -> bool:
    """Whether every value is exactly of type ``kind`` (one C-level pass; subclasses say no)."""
    return set(map(type, values)) <= {kind}
