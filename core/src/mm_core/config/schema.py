"""The type checks shared by config validation, and the config's top-level blocks (the ``run`` keys
themselves: :class:`mm_core.engine.settings.RunSettings` and what plugins declare, docs/run_keys.md)."""

from __future__ import annotations

from typing import Any

TOP_LEVEL_KEYS = ("model", "datasets", "run", "preprocess", "env")

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
    "list": (list, tuple),
    "dict": (dict,),
    "null": (type(None),),
    "any": (object,),
}


def type_matches(value: Any, type_spec: str) -> bool:
    """Whether a (resolved, plain-container) ``value`` fits a type spec such as ``"int|null"``."""
    for name in type_spec.split("|"):
        name = name.strip()
        accepted = _PY_TYPES.get(name)
        if accepted is None:
            raise ValueError(f"unknown type name {name!r} in run key schema")
        if isinstance(value, bool) and name in ("int", "float"):
            continue  # True is an int to Python, not to a config author
        if name == "int" and isinstance(value, float) and value.is_integer():
            return True  # `max_iters: 2e4` in LAVIS configs
        if isinstance(value, accepted):
            return True
    return False


def type_of_default(value: Any) -> str | None:
    """Type spec implied by a model option's default value (docs/plugins.md, "Default configs")."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool|null"
    if isinstance(value, (int, float)):
        return "float|null"
    for name in ("str", "list", "dict"):
        if type_matches(value, name):
            return f"{name}|null"
    return None
