"""Sample data that a plugin generates into the cache root the first time a config asks for it.

The folder holds a ``manifest.json`` whose ``"spec"`` says what was generated (written last, so
its presence means the data is complete). :func:`ensure_generated` reuses a folder made from the
same spec, and otherwise writes into a temporary sibling and moves it into place, so several
processes (DDP ranks) asking at once never read a half-written folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


def manifest_spec(root: Path) -> dict[str, Any] | None:
    """The ``spec`` recorded in ``root/manifest.json``, or ``None`` when absent or unreadable."""
    try:
        return json.loads((root / MANIFEST).read_text(encoding="utf-8")).get("spec")
    except (OSError, ValueError, AttributeError):
        return None


def ensure_generated(root: str | Path, spec: dict[str, Any], write: Callable[[Path], Any]) -> Path:
    """``root`` holding the data of ``spec``; ``write(folder)`` generates it (and must write the
    manifest with this ``spec`` last) when ``root`` is absent or was made from another spec."""
    root = Path(root)
    if manifest_spec(root) == spec:
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        write(tmp)
        if manifest_spec(root) == spec:  # another process finished first
            return root
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    except OSError:
        if manifest_spec(root) != spec:
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
