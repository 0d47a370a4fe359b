"""The cache root and checksum-verified downloads of dataset annotations and checkpoints."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

from mm_core.errors import DataError

DEFAULT_CACHE_ROOT = "~/.cache/mm"


def cache_root(config_value: str | None = None) -> Path:
    """``MM_CACHE_ROOT``, else ``env.cache_root`` from the config, else ``~/.cache/mm``."""
    value = os.environ.get("MM_CACHE_ROOT") or config_value or DEFAULT_CACHE_ROOT
    return Path(value).expanduser()


def resolve_storage(storage: str | Path, root: Path | None = None) -> Path:
    """A storage path from a config: absolute as is, relative under the cache root."""
    path = Path(storage).expanduser()
    return path if path.is_absolute() else (root or cache_root()) / path


def file_md5(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_file(url: str | None, storage: Path, md5: str | None = None) -> Path:
    """Make sure ``storage`` exists: a file already there (or a symlink) is used as it is;
    otherwise ``url`` is downloaded to a temporary file beside it, its md5 checked, and the file
    moved into place atomically. A checksum mismatch raises and leaves nothing behind."""
    if storage.exists():
        if md5:
            _verify_present(storage, md5)
        return storage
    if not url:
        raise DataError(f"missing file {storage} and no URL to download it from",
                        hint="put the file there (or a symlink to it), or set its url in build_info")
    storage.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{storage.name}.", suffix=".part", dir=storage.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, _open_url(url) as response:
            shutil.copyfileobj(response, out)
        if md5:
            actual = file_md5(tmp)
            if actual != md5.lower():
                raise DataError(f"checksum mismatch for {url}: expected md5 {md5}, got {actual}; "
                                f"the download was discarded and {storage} was not written",
                                hint="the file at the URL changed or the transfer was corrupted; retry, or "
                                "place a known-good copy at the storage path")
        os.replace(tmp, storage)
    finally:
        tmp.unlink(missing_ok=True)
    return storage


_VERIFIED: set[tuple[str, int, int, str]] = set()  # (path, size, mtime, md5) checked in this process


def _verify_present(path: Path, md5: str) -> None:
    """A file already in place must match its declared md5 (LAVIS declares it, never checks)."""
    key = (str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns, md5.lower())
    if key in _VERIFIED or (actual := file_md5(path)) == md5.lower():
        _VERIFIED.add(key)
        return
    raise DataError(f"checksum mismatch for {path}: its md5 is {actual}, the config declares {md5}",
                    hint="replace the file with the right version (delete it to download it again), "
                    "or correct the md5 in build_info")


def download_to_cache(url: str, md5: str | None = None) -> Path:
    """Download ``url`` once into ``<cache root>/downloads/<file name>`` and return its path."""
    name = Path(urllib.parse.urlparse(url).path).name or "download"
    return ensure_file(url, cache_root() / "downloads" / name, md5)


def _open_url(url: str):
    if "://" not in url:  # a plain local path
        url = Path(url).resolve().as_uri()
    try:
        return urllib.request.urlopen(url, timeout=60)  # noqa: S310 - http(s)/file URLs from configs
    except Exception as exc:
        raise DataError(f"cannot download {url}: {exc}", hint="check the URL or place the file by hand") from exc
