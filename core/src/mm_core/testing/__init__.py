"""The plugin-author kit: register a plugin for a test, a config in code, a real training run, the
contract of every kind, pytest fixtures (docs/plugins.md, "Testing a plugin", with an example)."""

from mm_core.plugins import plugin_registered
from mm_core.testing.contracts import (
           ContractError,
           check_builder,
           check_model,
           check_plugin,
           check_processor,
           check_task,
)
from mm_core.testing.llm_contract import check_llm_backend
from mm_core.testing.runs import RunResult, make_config, run_training

__all__ = ["ContractError", "RunResult", "check_builder", "check_llm_backend", "check_model", "check_plugin",
           "check_processor", "check_task", "make_config", "plugin_registered", "run_training"]
