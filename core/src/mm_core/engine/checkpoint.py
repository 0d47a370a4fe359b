"""Checkpoint directories under ``<output_dir>/checkpoints/``, written atomically (layout and
guarantees: docs/engine.md, "Checkpoints")."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mm_core.errors import CheckpointError

MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"
META_FILE = "meta.json"
CONFIG_FILE = "config.yaml"
TMP_PREFIX = ".tmp-"
POINTERS = ("latest", "best")


# -- RNG state as plain types -----------------------------------------------------------------
def capture_rng() -> dict[str, Any]:
    """Python, numpy, torch and CUDA RNG states as tensors and plain types."""
    np_state = np.random.get_state()
    numpy_state = {"kind": str(np_state[0]), "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
                   "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])}
    state: dict[str, Any] = {"python": _to_plain(random.getstate()), "numpy": numpy_state,
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    random.setstate(_to_tuple(state["python"]))
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_plain(value: Any) -> Any:
    return [_to_plain(v) for v in value] if isinstance(value, tuple) else value


def _to_tuple(value: Any) -> Any:
    return tuple(_to_tuple(v) for v in value) if isinstance(value, list) else value


# -- the store --------------------------------------------------------------------------------
class CheckpointStore:
    """Writes, finds, prunes and reads checkpoint directories (writing is rank 0's job)."""

    def __init__(self, root: str | Path, keep_last: int = 3):
        self.root = Path(root)
        self.keep_last = keep_last

    # writing ------------------------------------------------------------------------
    def write(self, tag: str, trainable: Mapping[str, torch.Tensor], state: Mapping[str, Any],
              config_yaml: str, meta: Mapping[str, Any], best: bool = False) -> Path:
        """Write a complete checkpoint ``tag``, then move ``latest`` (and ``best``) to it."""
        from safetensors.torch import save_file

        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{TMP_PREFIX}{tag}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in trainable.items()}
        save_file(tensors, str(tmp / MODEL_FILE), metadata={"format": "pt", "tag": tag})
        torch.save(dict(state), tmp / STATE_FILE)
        (tmp / CONFIG_FILE).write_text(config_yaml, encoding="utf-8")
        full_meta = {**meta, "tag": tag, "saved_at": time.time(),
                     "files": [MODEL_FILE, STATE_FILE, CONFIG_FILE, META_FILE]}
        (tmp / META_FILE).write_text(json.dumps(full_meta, indent=1, default=str), encoding="utf-8")
        for path in tmp.iterdir():
            _fsync_file(path)
        _fsync_dir(tmp)
        final, old = self.root / tag, self.root / f"{TMP_PREFIX}old-{tag}-{os.getpid()}"
        if final.exists():  # the same tag again (e.g. a re-run): swap it out, then delete it
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(self.root)
        self.set_pointer("latest", tag)
        if best:
            self.set_pointer("best", tag)
        return final

    def set_pointer(self, name: str, tag: str) -> None:
        """Point ``name`` (``latest``/``best``) at ``tag``, atomically."""
        tmp = self.root / f"{TMP_PREFIX}{name}-{os.getpid()}"
        tmp.write_text(tag + "\n", encoding="utf-8")
        _fsync_file(tmp)
        os.replace(tmp, self.root / name)
        _fsync_dir(self.root)

    def prune(self) -> list[str]:
        """Delete all but the newest ``keep_last`` checkpoints; never ``latest`` or ``best``."""
        keep = {self.pointer(p) for p in POINTERS} - {None}
        tags = self.tags()
        doomed = [t for t in tags[: max(0, len(tags) - self.keep_last)] if t not in keep]
        for tag in doomed:
            shutil.rmtree(self.root / tag, ignore_errors=True)
        return doomed

    def clean_temporaries(self) -> None:
        """Remove leftovers of writes that were killed (never read by resume)."""
        if self.root.is_dir():
            for path in self.root.glob(f"{TMP_PREFIX}*"):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)

    # finding ------------------------------------------------------------------------
    def pointer(self, name: str) -> str | None:
        """The tag ``latest`` / ``best`` names, when that checkpoint is complete."""
        path = self.root / name
        tag = path.read_text(encoding="utf-8").strip() if path.is_file() else None
        return tag if tag and is_complete(self.root / tag) else None

    def tags(self) -> list[str]:
        """Complete checkpoints, oldest first (by their global step, then time)."""
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.iterdir():
            if path.is_dir() and not path.name.startswith(TMP_PREFIX) and is_complete(path):
                meta = read_meta(path)
                found.append((int(meta.get("step", 0)), float(meta.get("saved_at", 0.0)), path.name))
        return [name for _, _, name in sorted(found)]

    def resolve(self, spec: str) -> Path:
        """``latest`` or ``best`` of this store, else what :func:`resolve_checkpoint` makes of ``spec``."""
        if spec in POINTERS:
            tag = self.pointer(spec)
            if tag is None and spec == "latest" and self.tags():
                tag = self.tags()[-1]
            if tag is None:
                raise CheckpointError(f"no complete checkpoint to resume from under {self.root} ('{spec}')",
                                      hint="start without run.resume_ckpt_path, or point it at a checkpoint directory")
            return self.root / tag
        return resolve_checkpoint(spec)


def resolve_checkpoint(spec: str | Path) -> Path:
    """The one reading of a checkpoint a user names: a weights file as is, an mm checkpoint directory,
    or the directory a run's ``checkpoints`` folder or pointer file names (docs/engine.md)."""
    path = Path(spec).expanduser()
    if path.is_file() and path.name not in POINTERS:
        return path
    if path.is_file():
        return CheckpointStore(path.parent).resolve(path.name)
    if path.is_dir() and not is_complete(path) and (path / "latest").is_file():
        return CheckpointStore(path).resolve("latest")
    if not path.is_dir() or not is_complete(path):
        raise CheckpointError(f"{path} is neither a weights file nor a complete mm checkpoint directory "
                              f"(one needs {META_FILE}, {MODEL_FILE}, {STATE_FILE})",
                              hint="give a .safetensors/.pth file, <output_dir>/checkpoints/<tag>, <output_dir>/checkpoints "
                              "or its 'latest' / 'best' pointer (run.resume_ckpt_path=latest continues the run in run.output_dir)")
    return path


def is_complete(path: Path) -> bool:
    """A finished checkpoint: renamed into place with its metadata (written last)."""
    return (not path.name.startswith(TMP_PREFIX) and (path / META_FILE).is_file()
            and (path / MODEL_FILE).is_file() and (path / STATE_FILE).is_file())


def read_meta(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def read_training_state(path: Path) -> dict[str, Any]:
    """``training_state.pt`` of a checkpoint directory (``weights_only=True``)."""
    try:
        return torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read {path / STATE_FILE}: {type(exc).__name__}: {exc}") from exc


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened or synced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
