"""The plugin host: entry points (``mm.plugins``), ``MM_PLUGIN_MODULES`` and in-code plugins,
registered with pluggy; failures are recorded, not raised (docs/plugins.md)."""

from __future__ import annotations

import importlib
import os
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from mm_core import hookspecs

BUILTIN_PLUGINS = ("mm_core.builtin",)


@dataclass
class PluginInfo:
    """What is known about one plugin: where it came from and whether it loaded."""

    name: str
    module: str | None = None
    dist: str | None = None
    version: str | None = None
    status: str = "ok"  # ok | failed | incompatible | builtin
    error: str | None = None
    api_version: str | None = None
    hooks: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "builtin")

    @property
    def label(self) -> str:
        """``dist version`` when known, else the plugin name."""
        return f"{self.dist} {self.version or ''}".strip() if self.dist else self.name


class PluginHost:
    """A pluggy ``PluginManager`` for project ``mm`` plus a record of every plugin's status."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.generation = 0  # increases whenever a plugin is registered or removed (the registry rebuilds then)

    # -- loading -----------------------------------------------------------------------
    def load_builtins(self) -> None:
        for module_name in BUILTIN_PLUGINS:
            module = importlib.import_module(module_name)
            self.register(module, name=module_name, status="builtin", dist="mm-core")

    def load_entry_points(self) -> None:
        """Load the ``mm.plugins`` entry points, honouring the autoload and allow-list variables."""
        if os.environ.get("MM_DISABLE_PLUGIN_AUTOLOAD", "").strip() not in ("", "0"):
            return
        allow = _allow_list()
        for ep in sorted(entry_points(group=hookspecs.ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.metadata["Name"] if ep.dist is not None else None
            version = ep.dist.version if ep.dist is not None else None
            if allow is not None and ep.name not in allow and (dist or "") not in allow:
                continue
            self._load(ep.name, ep.value, ep.load, dist, version)

    def load_modules_from_env(self) -> None:
        """Register the modules named in ``MM_PLUGIN_MODULES`` (comma-separated)."""
        for module_name in filter(None, (m.strip() for m in os.environ.get("MM_PLUGIN_MODULES", "").split(","))):
            self._load(module_name, module_name, lambda name=module_name: importlib.import_module(name))

    def _load(self, name: str, where: str, load: Callable[[], Any], dist: str | None = None,
              version: str | None = None) -> None:
        """Import and register one plugin unless known; a broken one is recorded, not raised."""
        if name in self.infos:
            return
        try:
            plugin = load()
        except Exception as exc:  # a broken plugin must not take the others down
            self.infos[name] = PluginInfo(name, where, dist, version, "failed", _describe(exc))
            return
        if not self.pm.is_registered(plugin):  # a module also installed: its entry point registered it
            self.register(plugin, name=name, dist=dist, version=version)

    # -- registration ------------------------------------------------------------------
    def register(self, plugin: Any, name: str | None = None, dist: str | None = None, version: str | None = None,
                 status: str = "ok") -> PluginInfo:
        """Register ``plugin`` (a module or object with hook implementations); one that is incompatible
        or has a misspelled hook is recorded as failed in its :class:`PluginInfo`, not raised."""
        name = name or self.pm.get_canonical_name(plugin)
        module = getattr(plugin, "__name__", type(plugin).__name__)
        info = PluginInfo(name, module, dist, version, status)
        info.api_version = str(getattr(plugin, "MM_API_VERSION", hookspecs.API_VERSION))
        self.infos[name] = info
        if _major(info.api_version) != _major(hookspecs.API_VERSION):
            info.status = "incompatible"
            info.error = (f"plugin targets mm hook API {info.api_version}, this mm-core provides "
                          f"{hookspecs.API_VERSION}; upgrade the plugin or mm-core")
            return info
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            info.status = "failed"
            info.error = _explain_validation_error(exc)
            return info
        info.hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
        self.generation += 1
        return info

    def unregister(self, name: str) -> None:
        """Remove a plugin registered under ``name`` (no error if it is not there)."""
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        self.infos.pop(name, None)
        self.generation += 1

    def failed(self) -> list[PluginInfo]:
        """Plugins that did not load."""
        return [i for i in self.infos.values() if not i.ok]


def _allow_list() -> set[str] | None:
    raw = os.environ.get("MM_PLUGINS")
    if raw is None or not raw.strip():
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def _major(version: str) -> str:
    return version.split(".")[0]


def _describe(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _explain_validation_error(exc: pluggy.PluginValidationError) -> str:
    from mm_core.errors import did_you_mean

    message = str(exc)
    specs = [n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "mm_spec")]
    for word in message.replace("'", " ").replace('"', " ").split():
        hint = did_you_mean(word, specs)
        if hint and word not in specs:
            return f"{message}; hook '{word}' matches no mm hook spec{hint}"
    return message


# -- the process-wide host ---------------------------------------------------------------
_host: PluginHost | None = None


def get_plugin_host() -> PluginHost:
    """The process-wide :class:`PluginHost`, loading builtins and entry points on first use."""
    global _host
    if _host is None:
        host = PluginHost()
        host.load_builtins()
        host.load_entry_points()
        host.load_modules_from_env()
        _host = host
    return _host


def reset_plugin_host() -> None:
    """Forget loaded plugins; the next :func:`get_plugin_host` discovers them again."""
    global _host
    _host = None


def register_plugin(plugin: Any, name: str | None = None) -> PluginInfo:
    """Register a plugin object or module in code (tests, notebooks)."""
    return get_plugin_host().register(plugin, name=name)


def unregister_plugin(name: str) -> None:
    """Remove a plugin registered in code."""
    get_plugin_host().unregister(name)


@contextmanager
def plugin_registered(plugin: Any, name: str | None = None) -> Iterator[PluginInfo]:
    """Register ``plugin`` for the duration of a ``with`` block; one already registered (e.g. from its
    entry point) is used as it is, under its own name, and stays registered after the block."""
    host = get_plugin_host()
    existing = host.pm.get_name(plugin)
    if existing is not None:
        yield host.infos.get(existing) or PluginInfo(existing)
        return
    info = register_plugin(plugin, name=name)
    try:
        yield info
    finally:
        unregister_plugin(info.name)
