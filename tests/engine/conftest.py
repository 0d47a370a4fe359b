"""The engine tests' fixture: ``in_process`` runs a config with ``run_config`` in this process
(the helpers they share with other folders are in :mod:`tests.toy_runs`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..toy_runs import TOY_SRC, toy_env


@pytest.fixture
def in_process(monkeypatch):
    """``run(config, *options) -> exit code`` running ``run_config`` in this process."""
    monkeypatch.syspath_prepend(str(TOY_SRC))
    for key, value in toy_env().items():
        if key.startswith("MM_") or key in ("HF_HUB_OFFLINE",):
            monkeypatch.setenv(key, value)
    from mm_core.plugins import reset_plugin_host

    reset_plugin_host()

    def run(config: Path, *options: str, **env: str) -> int:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        reset_plugin_host()
        from mm_core.config.loader import load_config
        from mm_core.engine.run import run_config

        return run_config(load_config(config, list(options)))

    yield run
    reset_plugin_host()
