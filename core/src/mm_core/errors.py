"""Errors a user can act on: every error raised for bad input derives from :class:`MMError`; the
CLI prints its message (and hint) and exits with code 2 instead of showing a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MMError(Exception):
    """Base class of user-facing errors: a message and an optional hint."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(MMError):
    """A config file, key or value is wrong."""


class RegistryError(MMError):
    """A name cannot be resolved to a class."""


class UnknownNameError(RegistryError):
    """A name that no installed plugin registers."""


class DuplicateNameError(RegistryError):
    """Two plugins register the same name for one kind."""


class PluginError(MMError):
    """A plugin failed to load or is not valid."""


class DataError(MMError):
    """A data file (annotation, image, feature) is missing or malformed."""


class CheckpointError(MMError):
    """A checkpoint is missing, incomplete or does not fit the model."""


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Names among ``candidates`` that look like ``word`` (difflib), best first."""
    return difflib.get_close_matches(word, list(candidates), n=n, cutoff=0.6)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """A ``" (did you mean 'x'?)"`` suffix, or an empty string."""
    matches = close_matches(word, candidates)
    return " (did you mean " + " or ".join(repr(m) for m in matches) + "?)" if matches else ""
