"""Base classes of the things a plugin provides: models, processors, datasets, builders, tasks, LLM backends.

Import the submodules directly (``from mm_core.base.model import BaseModel``); this package
imports nothing so that listing names stays free of torch."""
