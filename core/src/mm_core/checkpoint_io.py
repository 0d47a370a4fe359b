"""Reading state dicts from files, directories and URLs (safely: ``weights_only=True``)."""

from __future__ import annotations

from pathlib import Path

import torch

from mm_core.engine.checkpoint import MODEL_FILE
from mm_core.errors import CheckpointError


def read_state_dict(path_or_url: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """Tensors of a checkpoint and the path they came from. Accepts a ``.safetensors`` file, a ``torch.save`` file
    (loaded with ``weights_only=True``; a ``{"model": ...}`` wrapper as LAVIS writes is unwrapped), an mm
    checkpoint directory (its ``model.safetensors``) or an http(s) URL (downloaded into the cache root first)."""
    text = str(path_or_url)
    if text.startswith(("http://", "https://")):
        from mm_core.download import download_to_cache

        path = download_to_cache(text)
    else:
        path = Path(text).expanduser()
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}",
                              hint="give a .safetensors/.pth file, an mm checkpoint directory or a URL")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path)), str(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}",
                              hint="only tensors and plain containers are loaded (weights_only=True)") from exc
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} does not hold a state dict (found {type(obj).__name__})")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}, str(path)
