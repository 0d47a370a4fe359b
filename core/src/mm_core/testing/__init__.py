"""Helpers for plugin authors' tests: register a plugin for one test, build a tiny config in
code, train and evaluate through the real runner, and check the contracts every registered
model, processor, dataset builder and task must satisfy.

Plain functions, also exposed as pytest fixtures by :mod:`mm_core.testing.pytest_plugin`
(loaded automatically through the ``pytest11`` entry point of mm-core)::

    def test_my_plugin(tmp_path):
        import mm_mine.hooks
        with plugin_registered(mm_mine.hooks):
            check_plugin("mm_mine.hooks", cache_dir=tmp_path)
"""

from mm_core.plugins import plugin_registered
from mm_core.testing.contracts import (
    ContractError,
    check_builder,
    check_model,
    check_plugin,
    check_processor,
    check_task,
)
from mm_core.testing.runs import RunResult, make_config, run_training

__all__ = ["ContractError", "RunResult", "check_builder", "check_model", "check_plugin", "check_processor",
           "check_task", "make_config", "plugin_registered", "run_training"]
