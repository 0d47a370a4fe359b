"""The memory plan's hooks: ``run.plan_*`` keys, and the plan lines of ``describe_run``.

``mmrun --config X --dry-run`` builds the config's model on the meta device (no weight file is
read, no memory allocated) and prints the plan; a run logs the plan of the model it built. Nothing
heavy is imported until a plan is asked for.
"""

from __future__ import annotations

from typing import Any

from mm_core.errors import MMError
from mm_core.hookspecs import hookimpl

MM_API_VERSION = "2.0"


@hookimpl
def register_run_keys() -> dict[str, str]:
    from mm_memory_plan.plan import RUN_KEYS

    return dict(RUN_KEYS)


@hookimpl
def describe_run(config: Any, model: Any) -> list[str]:
    if config.get("model") is None or config.model.get("arch") is None:
        return []
    from mm_memory_plan.model_facts import build_on_meta, read_facts
    from mm_memory_plan.plan import Plan, PlanSettings
    from mm_memory_plan.render import plan_lines

    title = f"{config.model.arch} / {config.model.get('model_type')}"
    if model is None:
        try:
            model = build_on_meta(config.model)
        except (MMError, NotImplementedError, RuntimeError, OSError) as exc:
            return [f"memory plan: not available, the model could not be built on the meta device: "
                    f"{type(exc).__name__}: {exc}"]
        title += " (built on the meta device: no weights read)"
    return plan_lines(Plan.build(read_facts(model), PlanSettings.from_config(config)), title)
