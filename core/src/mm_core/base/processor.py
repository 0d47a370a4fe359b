"""BaseProcessor: turns one raw item (image, text, feature) into model input."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


class BaseProcessor:
    """A callable built from a config block ``{name: ..., **options}`` (LAVIS semantics). Subclasses set
    ``self.transform`` or override :meth:`__call__`, and read their options in :meth:`from_config`. Processors must
    be picklable (DataLoader workers receive them)."""

    def __init__(self) -> None:
        self.transform = _identity

    def __call__(self, item: Any) -> Any:
        return self.transform(item)

    @classmethod
    def from_config(cls, cfg: DictConfig | None = None) -> BaseProcessor:
        """Build from a config block; the base class takes no options."""
        return cls()

    def build(self, **kwargs: Any) -> BaseProcessor:
        """A new processor of this class built from keyword options."""
        return self.from_config(OmegaConf.create(kwargs))


def _identity(item: Any) -> Any:
    return item
