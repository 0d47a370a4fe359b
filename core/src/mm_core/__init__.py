"""mm-core: the plugin host of mm.

Concepts, one module each: :mod:`~mm_core.hookspecs` (the contract with plugins),
:mod:`~mm_core.plugins` (finding and loading plugins), :mod:`~mm_core.registry` (names ->
targets), :mod:`~mm_core.config` (merging and validating configs), :mod:`~mm_core.base`
(base classes), :mod:`~mm_core.engine` (runners, optimisation, checkpoints),
:mod:`~mm_core.api` (the Python API) and :mod:`~mm_core.cli` (``mmrun``).

Importing ``mm_core`` imports no torch; the API functions are loaded on first use.
"""

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
