"""pytest fixtures for plugin authors (loaded through mm-core's ``pytest11`` entry point).

* ``mm_register(plugin, name=None)`` — register a plugin object/module for this test only.
* ``mm_config(**kw)`` — :func:`mm_core.testing.make_config`.
* ``mm_train(loaded, **run)`` — :func:`mm_core.testing.run_training` into the test's ``tmp_path``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture
def mm_register() -> Iterator[Callable[..., Any]]:
    from mm_core.plugins import register_plugin, unregister_plugin

    names: list[str] = []

    def register(plugin: Any, name: str | None = None) -> Any:
        info = register_plugin(plugin, name=name)
        names.append(info.name)
        return info

    yield register
    for name in reversed(names):
        unregister_plugin(name)


@pytest.fixture
def mm_config() -> Callable[..., Any]:
    from mm_core.testing.runs import make_config

    return make_config


@pytest.fixture
def mm_train(tmp_path) -> Callable[..., Any]:
    from mm_core.testing.runs import run_training

    def train(loaded: Any, **run: Any) -> Any:
        return run_training(loaded, tmp_path / "output", **run)

    return train
