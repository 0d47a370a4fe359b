"""The registry: kind -> name -> where it comes from, built from the registration hooks.

Names are known without importing anything heavy; :meth:`Registry.resolve` imports a target
only when a config asks for it, and checks that it is a subclass of the kind's base class."""

from __future__ import annotations

import fnmatch
import importlib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from mm_core.errors import (
    ConfigError,
    DuplicateNameError,
    PluginError,
    RegistryError,
    UnknownNameError,
    close_matches,
    did_you_mean,
)
from mm_core.hookspecs import REGISTRATION_HOOKS
from mm_core.plugins import PluginHost, PluginInfo, get_plugin_host

KINDS: tuple[str, ...] = tuple(REGISTRATION_HOOKS)

#: Base class each kind's targets must derive from (lazy, so listing imports no torch).
KIND_BASES: dict[str, str] = {
    "models": "mm_core.base.model:BaseModel",
    "processors": "mm_core.base.processor:BaseProcessor",
    "datasets": "mm_core.base.builder:BaseDatasetBuilder",
    "tasks": "mm_core.base.task:BaseTask",
    "runners": "mm_core.engine.runner:Runner",
    "lr_schedulers": "mm_core.engine.schedulers:LRScheduler",
    "llms": "mm_core.base.llm:BaseLLM",
}

SINGULAR = {"models": "model", "processors": "processor", "datasets": "dataset builder", "tasks": "task",
            "runners": "runner", "lr_schedulers": "lr scheduler", "llms": "LLM backend", "metrics": "metric",
            "commands": "command"}


@dataclass(frozen=True)
class Registration:
    """The dict form of a registration value; each key is described in docs/plugins.md ("Names,
    conflicts and loading"). ``target`` is required except for a ``renamed_to`` entry."""

    target: str = ""
    description: str = ""
    model_types: Mapping[str, str] | None = None
    default_model_type: str | None = None
    configs: Mapping[str, str] | None = None
    data_type: str | None = None
    card: str | None = None
    run_keys: Mapping[str, str] = field(default_factory=dict)
    config_keys: Mapping[str, str] | None = None
    help: str | None = None
    needs: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    renamed_to: str | None = None


REGISTRATION_KEYS: tuple[str, ...] = tuple(f.name for f in fields(Registration))


@dataclass(frozen=True)
class Entry:
    """One registered name: what its plugin registered, and which plugin that is."""

    kind: str
    name: str
    plugin: PluginInfo
    registration: Registration

    @property
    def target(self) -> str:
        return self.registration.target

    @property
    def package(self) -> str:
        """Top-level package of the target (where its package data lives)."""
        return self.target.split(":")[0].split(".")[0]

    @property
    def description(self) -> str:
        return self.registration.description


def import_target(target: str) -> Any:
    """Import ``"package.module:Attr"`` (``Attr`` may be dotted) and return the attribute."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise RegistryError(f"invalid target {target!r}", hint="targets look like 'package.module:Attr'")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def resource(spec: str) -> Traversable:
    """Package data named ``"package:relative/path"``."""
    package, _, path = spec.partition(":")
    return resources.files(package).joinpath(path)


class Registry:
    """kind -> name -> :class:`Entry`, built from every loaded plugin's registration hooks."""

    def __init__(self, host: PluginHost):
        self.host = host
        self.generation = host.generation  # the host's plugins this registry was built from
        self._entries: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
        self._conflicts: dict[tuple[str, str], list[Entry]] = {}
        for kind, hook_name in REGISTRATION_HOOKS.items():
            self._collect(kind, hook_name)

    def _collect(self, kind: str, hook_name: str) -> None:
        for info, provided in self._provided(hook_name):
            for name, value in provided.items():
                try:
                    entry = Entry(kind, name, info, make_registration(kind, name, value, info))
                except PluginError as exc:
                    info.status, info.error = "failed", str(exc)
                    continue
                previous = self._entries[kind].get(name)
                if previous is not None and previous.plugin.name != info.name:
                    self._conflicts.setdefault((kind, name), [previous]).append(entry)
                    continue
                self._entries[kind][name] = entry

    def _provided(self, hook_name: str) -> list[tuple[PluginInfo, dict[str, Any]]]:
        """Each plugin's answer to a registration hook, in registration order; a plugin whose
        hook raises is marked failed and skipped."""
        answers = []
        for impl in reversed(getattr(self.host.pm.hook, hook_name).get_hookimpls()):
            info = self.host.infos.get(impl.plugin_name) or PluginInfo(impl.plugin_name)
            try:
                answers.append((info, dict(impl.function() or {})))
            except Exception as exc:
                info.status, info.error = "failed", f"{hook_name}() raised {type(exc).__name__}: {exc}"
        return answers

    def plugin_run_keys(self) -> dict[str, str]:
        """``run.*`` keys declared by plugins through ``register_run_keys`` (key -> type spec)."""
        keys: dict[str, str] = {}
        for _, provided in self._provided("register_run_keys"):
            keys.update({str(k): str(v) for k, v in provided.items()})
        return keys

    # -- lookup ------------------------------------------------------------------------
    def names(self, kind: str, pattern: str = "*") -> list[str]:
        """Registered names of ``kind`` matching an fnmatch ``pattern``, sorted."""
        self._check_kind(kind)
        return sorted(n for n, e in self._entries[kind].items()
                      if fnmatch.fnmatchcase(n, pattern) and not e.registration.renamed_to)

    def entries(self, kind: str, pattern: str = "*") -> list[Entry]:
        return [self._entries[kind][n] for n in self.names(kind, pattern)]

    def conflicts(self) -> dict[tuple[str, str], list[Entry]]:
        """Names claimed by more than one plugin, with every claimant."""
        return dict(self._conflicts)

    def get(self, kind: str, name: str) -> Entry:
        """The entry for ``name``; raises a helpful error when it is unknown or claimed twice."""
        self._check_kind(kind)
        if (kind, name) in self._conflicts:
            claimants = self._conflicts[(kind, name)]
            who = " and ".join(f"'{e.plugin.label}' ({e.target})" for e in claimants)
            raise DuplicateNameError(f"{SINGULAR[kind]} name '{name}' is registered by more than one plugin: {who}",
                                     hint="uninstall one of them, or limit loading with MM_PLUGINS=<names>")
        if name not in self._entries[kind]:
            raise self._unknown(kind, name)
        entry = self._entries[kind][name]
        if entry.registration.renamed_to:
            successor = entry.registration.renamed_to
            warnings.warn(f"{SINGULAR[kind]} name '{name}' is deprecated: plugin '{entry.plugin.label}' renamed "
                          f"it to '{successor}'; use that name", FutureWarning, stacklevel=2)
            return self.get(kind, successor)
        return entry

    def name_of(self, kind: str, cls: type) -> str:
        """The name class ``cls`` is registered under as a ``kind`` (its own default configs live there)."""
        target = f"{cls.__module__}:{cls.__qualname__}"
        for entry in self.entries(kind):
            if entry.target == target:
                return entry.name
        raise ConfigError(f"{SINGULAR[kind]} class {target} is not registered by any plugin")

    def __contains__(self, key: tuple[str, str]) -> bool:
        kind, name = key
        return name in self._entries.get(kind, {})

    def resolve(self, kind: str, name: str) -> Any:
        """Import and return the class (or function) registered as ``name``."""
        entry = self.get(kind, name)
        try:
            obj = import_target(entry.target)
        except Exception as exc:
            if isinstance(exc, RegistryError):
                raise
            raise PluginError(f"{SINGULAR[kind]} '{name}' from plugin '{entry.plugin.label}' could not be "
                              f"imported from '{entry.target}': {type(exc).__name__}: {exc}",
                              hint="check that the plugin's dependencies are installed") from exc
        _check_base(kind, name, entry, obj)
        return obj

    # -- package data ------------------------------------------------------------------
    def model_types(self, arch: str) -> dict[str, Traversable]:
        """``model_type`` -> default YAML for a model architecture."""
        entry = self.get("models", arch)
        return _default_configs(entry, entry.registration.model_types)

    def default_model_type(self, arch: str) -> str | None:
        entry = self.get("models", arch)
        if entry.registration.default_model_type is not None:
            return entry.registration.default_model_type
        types = self.model_types(arch)
        return next(iter(types)) if len(types) == 1 else None

    def dataset_types(self, name: str) -> dict[str, Traversable]:
        """Builder type -> default YAML for a dataset builder (``default`` is the usual one)."""
        entry = self.get("datasets", name)
        return _default_configs(entry, entry.registration.configs)

    def card(self, kind: str, name: str) -> str | None:
        """The card (markdown) of a name of any kind: the registration's ``card``, else
        ``configs/<kind>/<name>/card.md`` in the target's top-level package, if there is one."""
        entry = self.get(kind, name)
        if entry.registration.card:
            return resource(entry.registration.card).read_text(encoding="utf-8")
        path = resources.files(entry.package) / "configs" / kind / entry.name / "card.md"
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def run_keys(self, kind: str, name: str) -> dict[str, str]:
        """Extra ``run.*`` keys a task or runner declares (key -> type name)."""
        return dict(self.get(kind, name).registration.run_keys or {})

    # -- errors ------------------------------------------------------------------------
    def _check_kind(self, kind: str) -> None:
        if kind not in self._entries:
            matches = close_matches(kind, KINDS)
            hint = f"did you mean {matches[0]!r}?" if matches else "kinds: " + ", ".join(KINDS)
            raise UnknownNameError(f"unknown kind '{kind}'", hint=hint)

    def wanted_by(self, kind: str, name: str) -> list[tuple[Entry, str]]:
        """Installed entries that need ``name`` of ``kind``, with the distribution they say provides it."""
        return [(entry, entry.registration.needs[kind][name]) for entries in self._entries.values()
                for entry in entries.values() if name in entry.registration.needs.get(kind, {})]

    def _unknown(self, kind: str, name: str) -> UnknownNameError:
        what = SINGULAR[kind]
        matches = close_matches(name, self._entries[kind])
        providers = sorted({e.plugin.label for e in self._entries[kind].values()})
        failed = self.host.failed()
        parts = [f"unknown {what} '{name}'"]
        if matches:
            parts.append("did you mean " + " or ".join(repr(m) for m in matches) + "?")
        if failed:
            parts.append("these plugins failed to load and may provide it: "
                         + "; ".join(f"'{p.label}': {p.error}" for p in failed))
        hint = (f"installed {kind}: {', '.join(self.names(kind)) or '(none)'}"
                f" — provided by {', '.join(providers) or 'no plugin'}; `mmrun list {kind}` shows them")
        for entry, distribution in self.wanted_by(kind, name)[:1]:
            hint = (f"{what} '{name}' is provided by {distribution} ({SINGULAR[entry.kind]} '{entry.name}' of "
                    f"'{entry.plugin.label}' needs it): pip install {distribution}; {hint}")
        return UnknownNameError("; ".join(parts), hint=hint)


def make_registration(kind: str, name: str, value: Any, info: PluginInfo) -> Registration:
    """A registration value (``"pkg.module:Attr"`` or a dict of :class:`Registration`'s keys) as a
    record; a malformed value or an unknown key is a :class:`PluginError` naming the plugin."""
    where = f"plugin '{info.label}' registers {SINGULAR[kind]} '{name}'"
    if isinstance(value, str):
        return Registration(target=value)
    if not isinstance(value, Mapping):
        raise PluginError(f"{where} with {value!r}",
                          hint="a registration value is 'package.module:Attr' or a dict with a 'target' key")
    unknown = [key for key in value if key not in REGISTRATION_KEYS]
    if unknown:
        raise PluginError(f"{where} with unknown key '{unknown[0]}'{did_you_mean(str(unknown[0]), REGISTRATION_KEYS)}",
                          hint="registration keys: " + ", ".join(REGISTRATION_KEYS))
    if not value.get("target") and not value.get("renamed_to"):
        raise PluginError(f"{where} without a 'target'", hint="add 'target': 'package.module:Attr'")
    return Registration(**{k: str(v) if k in ("target", "description") else v for k, v in value.items()})


def _default_configs(entry: Entry, explicit: Mapping[str, str] | None) -> dict[str, Traversable]:
    """type -> YAML: the registration's own mapping, else ``configs/<kind>/<name>/*.yaml`` of its package."""
    if explicit:
        return {t: resource(p) for t, p in explicit.items()}
    folder = resources.files(entry.package) / "configs" / entry.kind / entry.name
    if not folder.is_dir():
        return {}
    return dict(sorted((p.name.rsplit(".", 1)[0], p) for p in folder.iterdir() if p.name.endswith(".yaml")))


def _check_base(kind: str, name: str, entry: Entry, obj: Any) -> None:
    base_target = KIND_BASES.get(kind)
    if base_target is None:
        return
    base = import_target(base_target)
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise PluginError(f"{SINGULAR[kind]} '{name}' from plugin '{entry.plugin.label}' points at "
                          f"{entry.target}, which is not a subclass of {base.__module__}.{base.__qualname__}",
                          hint=f"derive the class from {base.__qualname__}")


_registry: Registry | None = None


def get_registry() -> Registry:
    """The registry of the process-wide plugin host (rebuilt when plugins change)."""
    global _registry
    host = get_plugin_host()
    if _registry is None or _registry.host is not host or _registry.generation != host.generation:
        _registry = Registry(host)
    return _registry
