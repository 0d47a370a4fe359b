"""The type checks shared by config validation, and the config's top-level blocks.

The ``run`` keys themselves are :class:`mm_core.engine.settings.RunSettings`' fields, plus those a
task, runner or plugin declares (see :mod:`mm_core.hookspecs`)."""

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
}


def type_matches(value: Any, type_spec: str) -> bool:
    """Whether a (resolved, plain-container) ``value`` fits a type spec such as ``"int|null"``."""
    for name in type_spec.split("|"):
        name = name.strip()
        if name == "any":
            return True
        if name == "null":
            if value is None:
                return True
            continue
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
    """Type spec implied by a default value, used to check user overrides of model options.

    An integer default accepts floats (``drop_path_rate: 0`` may become ``0.1``); ``null``
    is always accepted."""
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
