"""mm-plugin-memory-plan: how much memory a config needs per GPU, printed before a run starts."""

__version__ = "0.1.0"
