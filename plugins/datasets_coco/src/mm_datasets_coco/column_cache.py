"""An on-disk cache of a dataset's annotation columns, memory-mapped on later loads.

Parsing a large JSON annotation file and building its columns costs seconds; the columns
themselves are a few flat arrays. After the first load they are saved as ``.npy`` files under
``<cache root>/annotation_cache/<key>/`` (never next to the user's data) and later loads map
them read-only (``np.load(mmap_mode="r")``): loading takes milliseconds and forked DataLoader
workers share the pages through the page cache.

The key hashes the dataset class, a format version and each annotation file's absolute path,
size and modification time, so editing a file gives a new key. A cache that is missing,
incomplete or inconsistent is ignored (the caller rebuilds it). Writes go to a temporary
directory that is renamed into place, so a reader never sees a half-written entry.

``MM_ANNOTATION_CACHE=0`` turns the cache off; ``=1`` turns it on for files of any size.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mm_core.download import cache_root
from mm_datasets_coco.compact import Interned, RaggedStrings, StringColumn

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
ENV_VAR = "MM_ANNOTATION_CACHE"
# Below this total annotation size JSON loads in well under a second: caching is not worth a file.
MIN_BYTES = 4 << 20
_META = "meta.json"


def cache_enabled(paths: Sequence[Path], option: bool | None) -> bool:
    """Whether to use the cache: the dataset option if set, else the env var, else by size."""
    if option is not None:
        return bool(option)
    env = os.environ.get(ENV_VAR, "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    try:
        return sum(Path(p).stat().st_size for p in paths) >= MIN_BYTES
    except OSError:
        return False  # a missing file: the loader raises the error that names it


def cache_dir(kind: str, paths: Sequence[Path]) -> Path | None:
    """The cache entry of these annotation files for dataset ``kind`` (None if one is missing)."""
    digest = hashlib.sha256(f"{kind}\0v{FORMAT_VERSION}".encode())
    for path in paths:
        try:
            stat = Path(path).stat()
        except OSError:
            return None
        digest.update(f"\0{Path(path).resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return cache_root() / "annotation_cache" / digest.hexdigest()[:32]


def load_columns(entry: Path, names: Sequence[str]) -> dict[str, np.ndarray] | None:
    """The arrays saved in ``entry``, memory-mapped; None if absent, incomplete or unreadable."""
    try:
        meta = json.loads((entry / _META).read_text())
        if meta.get("format") != FORMAT_VERSION or sorted(meta.get("arrays", {})) != sorted(names):
            return None
        arrays = {}
        for name in names:
            array = np.load(entry / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            if [array.dtype.str, list(array.shape)] != meta["arrays"][name]:
                return None
            arrays[name] = array.view(np.ndarray)  # plain views: slicing skips memmap's bookkeeping
        return arrays
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        log.warning("ignoring unreadable annotation cache %s (%s); rebuilding it", entry, exc)
        return None


def save_columns(entry: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as the cache entry ``entry`` (atomically; failures only log)."""
    tmp: Path | None = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
        meta = {"format": FORMAT_VERSION, "arrays": {}}
        for name, array in arrays.items():
            array = np.ascontiguousarray(array)
            np.save(tmp / f"{name}.npy", array, allow_pickle=False)
            meta["arrays"][name] = [array.dtype.str, list(array.shape)]
        (tmp / _META).write_text(json.dumps(meta))  # last: an entry without it is never read
        if entry.exists():  # stale or corrupt: replace it (a directory must be gone to rename onto it)
            shutil.rmtree(entry, ignore_errors=True)
        os.replace(tmp, entry)
        tmp = None
    except OSError as exc:
        # e.g. another process renamed its entry first, or a read-only cache root
        log.warning("could not write annotation cache %s (%s); loading from JSON each time", entry, exc)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


# -- the dataset side -------------------------------------------------------------------------
_PARTS = {StringColumn: ("buffer", "offsets"), RaggedStrings: ("buffer", "offsets", "starts"),
          Interned: ("codes", "buffer", "offsets"), np.ndarray: ("",)}


def _strings_ok(buffer: np.ndarray, offsets: np.ndarray) -> bool:
    return (buffer.ndim == 1 and offsets.ndim == 1 and len(offsets) >= 1 and int(offsets[0]) == 0
            and int(offsets[-1]) == len(buffer) and bool(np.all(np.diff(offsets) >= 0)))


def _column_from(kind: type, parts: dict[str, np.ndarray]) -> object | None:
    """A column rebuilt from its arrays, or None when they do not fit together."""
    if kind is np.ndarray:
        return parts[""] if parts[""].ndim == 1 else None
    if not _strings_ok(parts["buffer"], parts["offsets"]):
        return None
    if kind is StringColumn:
        return StringColumn.from_arrays(parts["buffer"], parts["offsets"])
    if kind is RaggedStrings:
        starts, n = parts["starts"], len(parts["offsets"]) - 1
        if not (starts.ndim == 1 and len(starts) >= 1 and int(starts[0]) == 0 and int(starts[-1]) == n
                and bool(np.all(np.diff(starts) >= 0))):
            return None
        return RaggedStrings.from_arrays(parts["buffer"], parts["offsets"], starts)
    codes, n = parts["codes"], len(parts["offsets"]) - 1
    if codes.ndim != 1 or (len(codes) and (int(codes.min()) < 0 or int(codes.max()) >= n)):
        return None
    return Interned.from_arrays(codes, parts["buffer"], parts["offsets"])


class CachedColumnsMixin:
    """Gives a compact dataset's ``_load`` the column cache.

    A subclass lists its columns in ``_cached_columns`` (attribute -> column type); the first
    load parses the JSON (every validation as usual) and saves them, later loads map them.
    ``annotation_cache``: True / False forces the cache on / off; None (default) follows
    ``MM_ANNOTATION_CACHE``, else caches annotation files of at least :data:`MIN_BYTES`.
    """

    _cached_columns: dict[str, type] = {}

    def __init__(self, *args, annotation_cache: bool | None = None, **kwargs) -> None:
        self.annotation_cache = annotation_cache
        super().__init__(*args, **kwargs)

    def _load(self, paths: Sequence[Path]) -> None:
        entry = None
        if paths and cache_enabled(paths, self.annotation_cache):
            entry = cache_dir(f"{type(self).__module__}.{type(self).__qualname__}", paths)
        if entry is not None and self._restore_columns(entry, len(paths)):
            return
        super()._load(paths)  # type: ignore[misc]
        if entry is not None:
            save_columns(entry, self._column_arrays())

    def _array_names(self) -> list[str]:
        names = ["source_starts"]
        for attr, kind in self._cached_columns.items():
            names += [f"{attr}.{part}" if part else attr for part in _PARTS[kind]]
        return names

    def _column_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"source_starts": self._source_starts}
        for attr, kind in self._cached_columns.items():
            column = getattr(self, attr)
            parts = {"": column} if kind is np.ndarray else column.arrays()
            arrays.update({f"{attr}.{part}" if part else attr: array for part, array in parts.items()})
        return arrays

    def _restore_columns(self, entry: Path, n_files: int) -> bool:
        arrays = load_columns(entry, self._array_names())
        if arrays is None:
            return False
        columns = {}
        for attr, kind in self._cached_columns.items():
            parts = {part: arrays[f"{attr}.{part}" if part else attr] for part in _PARTS[kind]}
            columns[attr] = _column_from(kind, parts)
        starts = arrays["source_starts"]
        lengths = {len(c) for c in columns.values() if c is not None}
        if (any(c is None for c in columns.values()) or len(lengths) != 1 or len(starts) != n_files + 1
                or int(starts[-1]) != lengths.pop()):
            log.warning("ignoring inconsistent annotation cache %s; rebuilding it", entry)
            return False
        self._source_starts = np.array(starts)
        for attr, column in columns.items():
            setattr(self, attr, column)
        return True
