"""mm-core: the plugin host of mm (its concepts, one module each: docs/architecture.md).

Importing ``mm_core`` imports no torch; the API functions are loaded on first use."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("load_model", "load_processor", "load_model_and_preprocess", "load_dataset", "model_zoo", "dataset_zoo")

__all__ = [*_API, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        from mm_core import api

        return getattr(api, name)
    raise AttributeError(f"module 'mm_core' has no attribute {name!r}")
