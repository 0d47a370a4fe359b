"""Merging a run config (LAVIS layout) with plugins' defaults, lowest first: the model type's YAML
< each dataset builder's YAML < the user's file < ``--options`` (which may select the model type);
then validating it, every error naming the file and key path."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mm_core.config.schema import TOP_LEVEL_KEYS, type_matches, type_of_default
from mm_core.errors import ConfigError, RegistryError, did_you_mean

OPTIONS_SOURCE = "--options"


@dataclass
class LoadedConfig:
    """The merged config and, per block, the files it was merged from (lowest first)."""

    config: DictConfig
    sources: dict[str, list[str]] = field(default_factory=dict)
    user_file: str | None = None
    model_defaults: DictConfig | None = None


def _env(name: str, default: Any = None) -> Any:
    """``${env:VAR}`` / ``${env:VAR,default}``: an environment variable (LAVIS configs use it)."""
    return os.environ.get(name, default)


if not OmegaConf.has_resolver("env"):  # register_resolver is omegaconf 2.4's name, register_new_resolver 2.3's
    (getattr(OmegaConf, "register_resolver", None) or OmegaConf.register_new_resolver)("env", _env)


# -- reading files -----------------------------------------------------------------------------
def read_yaml(path: str | Path | Traversable, what: str = "config") -> DictConfig:
    """A YAML file as a DictConfig, with errors naming the file and line."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8") if hasattr(path, "read_text") else Path(path).read_text()
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} file not found: {name}") from exc
    try:
        top = yaml.safe_load(text)
        if not isinstance(top, dict):
            found = "nothing (the file is empty)" if top is None else f"a {type(top).__name__}"
            raise ConfigError(f"{name}: a {what} file must be a mapping at the top level, found {found}",
                              hint="write the blocks model:, datasets:, run: (see examples/quickstart.yaml)")
        # OmegaConf's YAML loader reads `1e-4` as a float (PyYAML alone reads a string), as LAVIS configs expect
        cfg = OmegaConf.create(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{name}{where}: invalid YAML: {problem}", hint="check indentation and quoting") from exc
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{name}: {exc}") from exc
    return cfg


def parse_options(options: list[str] | tuple[str, ...]) -> DictConfig:
    """``["a.b=1", "run.task=x"]`` (LAVIS' ``--options``) as a DictConfig."""
    for option in options:
        if "=" not in option:
            raise ConfigError(f"--options entry '{option}' is not of the form key.path=value")
    try:
        return OmegaConf.from_dotlist(list(options))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"--options: {exc}") from exc


# -- defaults shipped by plugins --------------------------------------------------------------
def model_default_path(arch: str, model_type: str) -> Traversable:
    from mm_core.registry import get_registry

    types = get_registry().model_types(arch)
    if model_type not in types:
        raise ConfigError(f"model '{arch}' has no model_type '{model_type}'{did_you_mean(model_type, types)}",
                          hint=f"model types of {arch}: {', '.join(types) or '(none)'}")
    return types[model_type]


def load_model_defaults(arch: str, model_type: str) -> DictConfig:
    """The default YAML of ``arch``/``model_type`` (``model:`` and ``preprocess:`` blocks)."""
    return read_yaml(model_default_path(arch, model_type), what="model default config")


def dataset_default_path(name: str, type: str = "default") -> Traversable:
    from mm_core.registry import get_registry

    types = get_registry().dataset_types(name)
    if type not in types:
        raise ConfigError(f"dataset builder '{name}' has no config type '{type}'{did_you_mean(type, types)}",
                          hint=f"types of {name}: {', '.join(types) or '(none)'}")
    return types[type]


def load_dataset_defaults(name: str, type: str = "default") -> DictConfig:
    """The ``datasets.<name>`` block of a builder's default YAML."""
    loaded = read_yaml(dataset_default_path(name, type), what="dataset default config")
    block = OmegaConf.select(loaded, f"datasets.{name}")
    return block if block is not None else OmegaConf.create({})


# -- the merge --------------------------------------------------------------------------------
def load_config(path: str | Path | DictConfig | dict | None, options: list[str] | tuple[str, ...] = ()) -> LoadedConfig:
    """Merge plugin defaults, the user's config (a YAML file, or a mapping built in code) and
    ``--options``; validate; fire ``config_loaded``."""
    from mm_core.registry import get_registry

    registry = get_registry()
    if isinstance(path, (dict, DictConfig)):
        user, user_name = OmegaConf.create(path), "<in-memory config>"
    else:
        user = read_yaml(path) if path is not None else OmegaConf.create({})
        user_name = str(path) if path is not None else "<no file>"
    overrides = parse_options(options)
    _check_top_level(user, user_name)
    _check_top_level(overrides, OPTIONS_SOURCE)
    selected = OmegaConf.merge(user, overrides)

    layers: list[tuple[str, DictConfig]] = []
    model_defaults = None
    if "model" in selected and not isinstance(selected.model, DictConfig):
        raise ConfigError(f"{user_name}: the model section is empty or not a mapping",
                          hint="give model.arch and model.model_type (`mmrun list models`), or remove `model:`")
    arch = OmegaConf.select(selected, "model.arch")
    given = [(user_name, user), (OPTIONS_SOURCE, overrides)]
    if arch is None:
        if OmegaConf.select(selected, "model") is not None:
            raise ConfigError(f"{user_name}: model.arch is required", hint="`mmrun list models` shows the architectures")
    else:
        layers.append(_model_defaults(str(arch), selected, given))
        model_defaults = layers[-1][1]

    for name, block in (OmegaConf.select(selected, "datasets") or {}).items():
        check_name("datasets", name, f"datasets.{name}", given)
        dtype = str((block or {}).get("type") or "default") if isinstance(block, DictConfig) else "default"
        types = registry.dataset_types(str(name))
        if dtype in types:
            layers.append((str(types[dtype]), read_yaml(types[dtype], what="dataset default config")))
        elif types or dtype != "default":
            dataset_default_path(str(name), dtype)  # raises with the known types

    layers.append((user_name, user))
    if options:
        layers.append((OPTIONS_SOURCE, overrides))
    try:
        merged = OmegaConf.merge(*(layer for _, layer in layers)) if layers else OmegaConf.create({})
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{user_name}: cannot merge with defaults: {exc}") from exc
    loaded = LoadedConfig(merged, _sources(layers), user_file=user_name, model_defaults=model_defaults)
    validate_config(loaded, layers)
    from mm_core.plugins import get_plugin_host

    get_plugin_host().pm.hook.config_loaded(config=merged)
    return loaded


def _model_defaults(arch: str, selected: DictConfig, given: list[tuple[str, DictConfig]]) -> tuple[str, DictConfig]:
    """The default YAML of the selected model type (path, config); its ``llm`` block only when
    ``model.llm.name`` names no other backend (its options are for its own backend)."""
    from mm_core.registry import get_registry

    check_name("models", arch, "model.arch", given)
    model_type = OmegaConf.select(selected, "model.model_type") or get_registry().default_model_type(arch)
    if model_type is None:
        types = ", ".join(get_registry().model_types(arch))
        raise ConfigError(f"{_origin('model', given)}: model.model_type is required for '{arch}'", hint=f"one of: {types}")
    default_path = model_default_path(arch, str(model_type))
    defaults = read_yaml(default_path, what="model default config")
    defaults = OmegaConf.merge(defaults, {"model": {"arch": arch, "model_type": str(model_type)}})
    backend = OmegaConf.select(selected, "model.llm.name")
    if backend is not None and str(backend) != str(OmegaConf.select(defaults, "model.llm.name", default=backend)):
        defaults.model.pop("llm")
    return str(default_path), defaults


def _check_top_level(cfg: DictConfig, source: str) -> None:
    for key in cfg.keys():
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(f"{source}: unknown top-level key '{key}'{did_you_mean(str(key), TOP_LEVEL_KEYS)}",
                              hint="a config has the blocks " + ", ".join(TOP_LEVEL_KEYS))


def _sources(layers: list[tuple[str, DictConfig]]) -> dict[str, list[str]]:
    sources: dict[str, list[str]] = {}
    for name, layer in layers:
        for block in layer.keys():
            if block == "datasets":
                for dataset in layer.datasets.keys():
                    sources.setdefault(f"datasets.{dataset}", []).append(name)
            else:
                sources.setdefault(str(block), []).append(name)
    return sources


# -- validation -------------------------------------------------------------------------------
def validate_config(loaded: LoadedConfig, layers: list[tuple[str, DictConfig]]) -> None:
    """Types, required keys and unknown ``run`` keys, each error naming file and key path."""
    cfg = loaded.config
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{loaded.user_file}: cannot resolve interpolation: {exc}") from exc
    _validate_names(resolved, layers)
    _validate_run(resolved.get("run"), layers)
    _validate_model(resolved.get("model"), loaded.model_defaults, layers)


def _origin(key_path: str, layers: list[tuple[str, DictConfig]]) -> str:
    """The highest layer that sets ``key_path`` (where the user should look)."""
    for name, layer in reversed(layers):
        if OmegaConf.select(layer, key_path, default="__absent__") != "__absent__":
            return name
    return layers[-1][0] if layers else "<config>"


def check_name(kind: str, name: Any, key_path: str, layers: list[tuple[str, DictConfig]]) -> Any:
    """The registry entry of ``name``; unknown, the error names the file and key path that set it."""
    from mm_core.registry import get_registry

    try:
        return get_registry().get(kind, str(name))
    except RegistryError as exc:
        raise type(exc)(f"{_origin(key_path, layers)}: {key_path}: {exc.message}", hint=exc.hint) from None


def _validate_names(cfg: dict[str, Any], layers: list[tuple[str, DictConfig]]) -> None:
    """Task, runner, schedule, processors and LLM backend exist; a backend that declares its
    ``config_keys`` gets no other key in ``model.llm``."""
    run, model = ({} if not isinstance(cfg.get(k), dict) else cfg[k] for k in ("run", "model"))
    named = [("tasks", "run.task", run.get("task")), ("runners", "run.runner", run.get("runner")),
             ("lr_schedulers", "run.lr_sched", run.get("lr_sched"))]
    holders = [(f"datasets.{n}", b) for n, b in (cfg.get("datasets") or {}).items()]
    for where, holder in [*holders, ("preprocess", cfg.get("preprocess"))]:
        for key, stages in holder.items() if isinstance(holder, dict) else ():
            if key.endswith("_processor") and isinstance(stages, dict):
                named += [("processors", f"{where}.{key}.{stage}.name", p.get("name"))
                          for stage, p in stages.items() if isinstance(p, dict)]
    llm = model.get("llm") if isinstance(model.get("llm"), dict) else {}
    named.append(("llms", "model.llm.name", llm.get("name")))
    entries = {key: check_name(kind, name, key, layers) for kind, key, name in named if isinstance(name, str)}
    declared = entries["model.llm.name"].registration.config_keys if "model.llm.name" in entries else None
    if declared:
        _check_keys({k: v for k, v in llm.items() if k != "name"}, declared, "model.llm", layers,
                    f"LLM backend '{llm['name']}' has no option", hint="its options: " + ", ".join(declared))


def _check_keys(block: dict[str, Any], schema: Any, prefix: str, layers: list[tuple[str, DictConfig]], unknown: str,
                hint: str) -> None:
    """Each key of ``block`` (at ``prefix``) is in ``schema`` (key -> type spec) with a value of its type."""
    for key, value in block.items():
        where = _origin(f"{prefix}.{key}", layers)
        if key not in schema:
            raise ConfigError(f"{where}: {unknown} '{prefix}.{key}'{did_you_mean(key, schema)}", hint=hint)
        if not type_matches(value, schema[key]):
            raise ConfigError(f"{where}: {prefix}.{key} must be {_type_words(schema[key])}, "
                              f"got {type(value).__name__} {value!r}")


def run_schema(run: dict[str, Any]) -> dict[str, str]:
    """Known ``run`` keys for this run: the engine's, its task's and runner's, and the plugins'."""
    from mm_core.engine.settings import run_key_types
    from mm_core.registry import get_registry

    registry = get_registry()
    schema = {**run_key_types(), **registry.plugin_run_keys()}
    for kind, name in (("tasks", run.get("task")), ("runners", run.get("runner") or "runner_base")):
        if isinstance(name, str):
            schema.update(registry.run_keys(kind, name))
    return schema


def _validate_run(run: Any, layers: list[tuple[str, DictConfig]]) -> None:
    if run is None:
        return
    if not isinstance(run, dict):
        raise ConfigError(f"{_origin('run', layers)}: 'run' must be a mapping")
    if "task" not in run:
        raise ConfigError(f"{_origin('run', layers)}: run.task is required", hint="`mmrun list tasks` shows the tasks")
    schema = run_schema(run)
    _check_keys(run, schema, "run", layers, "unknown key", hint=f"run keys are the engine's, plus those task "
                f"'{run.get('task')}' and runner '{run.get('runner', 'runner_base')}' declare")
    from mm_core.engine.settings import RunSettings

    try:  # values: impossible counts, LAVIS keys asking for what mm does not do
        RunSettings.from_config({"run": run})
    except ConfigError as exc:
        raise ConfigError(f"{_origin(exc.message.split()[0].rstrip(':'), layers)}: {exc.message}", hint=exc.hint) from None


def _validate_model(model: Any, defaults: DictConfig | None, layers: list[tuple[str, DictConfig]]) -> None:
    if model is None:
        return
    has_model = defaults is not None and "model" in defaults
    default_model = OmegaConf.to_container(defaults.model, resolve=False) if has_model else {}
    for key, value in model.items():
        spec = type_of_default(default_model.get(key))
        if spec and not type_matches(value, spec):
            raise ConfigError(f"{_origin(f'model.{key}', layers)}: model.{key} must be {_type_words(spec)} "
                              f"(as in the model's defaults), got {type(value).__name__} {value!r}")


_TYPE_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
               "list": "a list", "dict": "a mapping", "null": "null", "any": "anything"}


def _type_words(spec: str) -> str:
    return " or ".join(_TYPE_WORDS.get(part, part) for part in spec.split("|"))
