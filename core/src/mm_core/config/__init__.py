"""Config loading: LAVIS-layout YAML merged with plugin defaults, then validated.

Import :func:`mm_core.config.loader.load_config`; this package imports no torch."""

from mm_core.config.loader import LoadedConfig, load_config

__all__ = ["LoadedConfig", "load_config"]
