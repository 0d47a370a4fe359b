"""Annotation columns held in a few numpy arrays instead of one Python object per record.

DataLoader workers are forked from the main process. Reading a Python object in a worker
updates its reference count, which writes to the page holding it, so the worker gets a private
copy of every page it touches: with a list of dicts, a worker's memory grows with the number of
samples it has read. A numpy buffer is one object; slicing it writes nothing into the shared
pages, so the workers keep sharing them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


class StringColumn(Sequence[str]):
    """An immutable sequence of strings stored as one UTF-8 buffer plus offsets."""

    def __init__(self, strings: Iterable[str]) -> None:
        encoded = [s.encode("utf-8") for s in strings]
        lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self._offsets[1:])
        self._buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()

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
        flat: list[str] = []
        counts: list[int] = []
        for row in rows:
            flat.extend(row)
            counts.append(len(row))
        self._strings = StringColumn(flat)
        self._starts = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(np.asarray(counts, dtype=np.int64), out=self._starts[1:])

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
        table: dict[str, int] = {}
        codes = [table.setdefault(v, len(table)) for v in values]
        self.codes = np.asarray(codes, dtype=np.int64)
        self.values = StringColumn(table)

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, index: int) -> str:
        return self.values[int(self.codes[index])]

    def code(self, index: int) -> int:
        """The index of row ``index``'s value among the distinct values."""
        return int(self.codes[index])
