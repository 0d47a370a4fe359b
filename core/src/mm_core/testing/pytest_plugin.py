"""pytest fixtures for plugin authors (mm-core's ``pytest11`` entry point): ``mm_register``,
``mm_config``, ``mm_train`` (docs/plugins.md, "Testing a plugin")."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture
def mm_register() -> Iterator[Callable[..., Any]]:
    from contextlib import ExitStack

    from mm_core.plugins import plugin_registered

    with ExitStack() as stack:  # an installed plugin is used as it is (mm_core.plugins.plugin_registered)
        yield lambda plugin, name=None: stack.enter_context(plugin_registered(plugin, name))


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
