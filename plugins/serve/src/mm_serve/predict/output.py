"""The output of ``mmrun predict``: one JSON object a line, appended and flushed as answers come.

A single process appends to the output file itself; under ``torchrun`` each rank appends to its
own part, ``<output>.part-rank<R>``. A rerun skips every id that already has an ``output`` line
(in the file or any part; lines with an ``error`` are tried again), after cutting off a last line
that a killed process left half written. At the end, rank 0 merges the file and the parts into the
output, in input order, one line per id (an answer wins over an error, a later line over an earlier
one), and removes the parts.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, TextIO

from mm_serve.predict.inputs import Record

log = logging.getLogger(__name__)
CHUNK = 1 << 16


def cut_partial_line(path: Path) -> int:
    """Truncate ``path`` after its last newline; the number of bytes cut (0 when it ends in one)."""
    if not path.exists():
        return 0
    with open(path, "rb+") as file:
        size = file.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - CHUNK)
            file.seek(start)
            newline = file.read(end - start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        else:
            keep = 0
        if keep < size:
            file.truncate(keep)
    return size - keep


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of ``path`` that carry an ``id``; a line that does not parse (what a killed
    writer leaves last) is skipped with a warning, so its id is predicted again."""
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8", errors="replace") as file:
        for number, text in enumerate(file, 1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                log.warning("%s:%d: not a complete JSON line (a run killed while writing?); its input is redone",
                            path, number)
                continue
            if isinstance(line, dict) and "id" in line:
                out.append(line)
    return out


class PredictionFile:
    """The output file and this rank's part of it (the file itself in a single process)."""

    def __init__(self, path: str | Path, rank: int = 0, world_size: int = 1) -> None:
        self.path = Path(path)
        self.own = self.path if world_size == 1 else self.path.with_name(f"{self.path.name}.part-rank{rank}")
        self._file: TextIO | None = None

    def parts(self) -> list[Path]:
        """Every rank's part (of this run or of an interrupted one with another world size)."""
        return sorted(self.path.parent.glob(f"{self.path.name}.part-rank*"))

    def done_keys(self) -> set[str]:
        """Ids (as strings) that have an answer in the file or a part."""
        return {str(line["id"]) for p in [self.path, *self.parts()] for line in read_lines(p) if "output" in line}

    def open(self) -> None:
        """Start appending to this rank's file, first cutting a half-written last line."""
        self.own.parent.mkdir(parents=True, exist_ok=True)
        if cut_partial_line(self.own):
            log.warning("%s: removed a half-written last line (its input is predicted again)", self.own)
        self._file = open(self.own, "a", encoding="utf-8")

    def write(self, lines: list[dict[str, Any]]) -> None:
        """Append ``lines`` and flush, so a killed run keeps every line written before."""
        assert self._file is not None, "open() first"
        self._file.write("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def merge(self, records: list[Record]) -> list[dict[str, Any]]:
        """Rewrite the output in input order, one line per id, from the file and every part (rank 0,
        after all ranks closed theirs); ids not among ``records`` stay, after the others."""
        best: dict[str, dict[str, Any]] = {}
        for source in [self.path, *self.parts()]:
            for line in read_lines(source):
                key = str(line["id"])
                if "output" in line or "output" not in best.get(key, {}):
                    best[key] = line
        ordered = [best.pop(r.key) for r in records if r.key in best]
        ordered += list(best.values())
        temporary = self.path.with_name(self.path.name + ".merging")
        with open(temporary, "w", encoding="utf-8") as file:
            file.write("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in ordered))
        os.replace(temporary, self.path)
        for part in self.parts():
            part.unlink()
        return ordered
