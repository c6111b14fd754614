"""Plugin discovery: entry points (group ``facekit``) -> pluggy -> a stage registry.

The core never imports a plugin by module name; built-in plugins are found the same way
as third-party ones.
"""

from __future__ import annotations

import importlib.metadata as md
import typing
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Optional

import pluggy

from facekit import hookspecs
from facekit.errors import ConfigError
from facekit.stages import KINDS, Stage

ENTRY_POINT_GROUP = "facekit"


@dataclass
class PluginInfo:
    name: str
    version: str
    distribution: str
    module: str
    stages: list = field(default_factory=list)  # stage and executor classes
    #: the click commands it added through ``register_commands`` (filled by the ``facekit``
    #: command line when it loads, :func:`facekit.cli.main.add_plugin_commands`)
    commands: list = field(default_factory=list)
    error: str = ""


@dataclass
class Registry:
    """Stage and executor classes by ``(kind, name)`` and the plugins that provided them."""

    stages: dict = field(default_factory=dict)
    plugins: dict = field(default_factory=dict)  # plugin name -> PluginInfo
    owner: dict = field(default_factory=dict)  # (kind, name) -> plugin name
    #: the pluggy manager holding every loaded plugin (for hooks called later, e.g.
    #: ``register_commands``)
    manager: Optional[pluggy.PluginManager] = None

    def get(self, kind: str, name: str) -> type[Stage]:
        """The stage class for ``kind``/``name``.

        Raises:
            ConfigError: unknown name; the message lists the installed ones of that kind.
        """
        try:
            return self.stages[(kind, name)]
        except KeyError:
            known = self.names(kind)
            broken = [p.name for p in self.plugins.values() if p.error]
            msg = f"unknown {kind} plugin {name!r}; installed {kind}s: {', '.join(known) or '(none)'}"
            if broken:
                msg += f" (plugins that failed to load: {', '.join(broken)}; see 'facekit plugins')"
            raise ConfigError(msg) from None

    def names(self, kind: str) -> list[str]:
        return sorted(n for k, n in self.stages if k == kind)


def make_plugin_manager() -> pluggy.PluginManager:
    """A pluggy manager for project ``facekit`` with :mod:`facekit.hookspecs` added."""
    pm = pluggy.PluginManager("facekit")
    pm.add_hookspecs(hookspecs)
    return pm


@lru_cache(maxsize=1)
def get_registry() -> Registry:
    """Load every installed plugin once per process and return the registry."""
    return load_registry()


def load_registry(entry_points=None) -> Registry:
    """Load the plugins of ``entry_points`` (default: the installed ``facekit`` group).

    A plugin that fails to import or register is recorded in its :class:`PluginInfo`
    ``error`` instead of breaking the others.

    Raises:
        ConfigError: a registered class is not a Stage, or two plugins register the same
            ``(kind, name)``.
    """
    pm = make_plugin_manager()
    reg = Registry()
    eps = entry_points if entry_points is not None else md.entry_points(group=ENTRY_POINT_GROUP)
    described: dict = {}  # id(dist) -> (name, version): one METADATA parse per distribution
    for ep in sorted(eps, key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        if dist is not None and id(dist) not in described:
            meta = dist.metadata
            described[id(dist)] = (meta["Name"] or "", meta["Version"] or "")
        distribution, version = described[id(dist)] if dist is not None else ("", "")
        info = PluginInfo(name=ep.name, version=version, distribution=distribution, module=ep.value)
        reg.plugins[ep.name] = info
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
        except Exception as e:  # a broken plugin is reported, it does not break the others
            info.error = f"{type(e).__name__}: {e}"
    # Call each plugin's hook implementations on their own, so every registered class is
    # attributed to the plugin that registered it.
    for hook, kinds in (("register_stages", KINDS), ("register_executors", ("executor",))):
        for impl in getattr(pm.hook, hook).get_hookimpls():
            info = reg.plugins[impl.plugin_name]

            def register(cls, _plugin=impl.plugin_name, _info=info, _kinds=kinds):
                _register(reg, _plugin, _info, cls, _kinds)

            try:
                impl.function(register=register)
            except ConfigError:
                raise
            except Exception as e:
                info.error = f"{hook} failed: {type(e).__name__}: {e}"
    reg.manager = pm
    return reg


def _register(reg: Registry, plugin: str, info: PluginInfo, cls, kinds=KINDS) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Stage) and cls.kind in kinds and cls.name):
        what = "an Executor subclass" if kinds == ("executor",) else "a Stage subclass with a kind"
        raise ConfigError(f"plugin {plugin!r} registered {cls!r}: not {what} with a name")
    key = (cls.kind, cls.name)
    if key in reg.stages and reg.stages[key] is not cls:
        raise ConfigError(
            f"{cls.kind} {cls.name!r} is registered by both plugin {reg.owner[key]!r} and plugin {plugin!r}"
        )
    reg.stages[key] = cls
    reg.owner[key] = plugin
    info.stages.append(cls)


def describe_params(cls: type[Stage]) -> list[dict]:
    """Parameters of a stage class: name, type, default, required, description."""
    out = []
    for pname, f in cls.Params.model_fields.items():
        ann = f.annotation
        tname = _type_name(ann)
        out.append(
            {
                "name": pname,
                "type": tname,
                "required": f.is_required(),
                "default": None if f.is_required() else _jsonable(f.get_default(call_default_factory=True)),
                "description": f.description or "",
            }
        )
    return out


def _type_name(ann) -> str:
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(ann)[0])
    if origin is typing.Literal:
        return "|".join(repr(a) for a in typing.get_args(ann))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(_type_name(a) for a in typing.get_args(ann))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(ann))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if ann is type(None):
        return "None"
    return getattr(ann, "__name__", str(ann))


def _jsonable(v):
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return str(v)


def plugin_listing(reg: Registry | None = None) -> list[dict]:
    """What ``facekit plugins --json`` prints: one dict per installed plugin, with its
    ``stages`` (sources, detectors, aligners, augmenters, sinks), ``executors`` (kind
    ``executor``), ``commands`` (those it added to the command line; filled only once the
    ``facekit`` group has looked a command up or listed them,
    :meth:`facekit.cli.main.FacekitGroup.add_plugin_commands`) and ``error`` (one line, or
    None)."""
    reg = reg or get_registry()
    out = []
    for info in reg.plugins.values():
        classes = [
            {
                "kind": cls.kind,
                "name": cls.name,
                "description": cls.description or (cls.__doc__ or "").strip().split("\n")[0],
                "params": describe_params(cls),
            }
            for cls in info.stages
        ]
        out.append(
            {
                "name": info.name,
                "version": info.version,
                "distribution": info.distribution,
                "module": info.module,
                "error": " ".join(info.error.split()) or None,
                "stages": [c for c in classes if c["kind"] != "executor"],
                "executors": [c for c in classes if c["kind"] == "executor"],
                "commands": [
                    {"name": cmd.name, "description": cmd.get_short_help_str(limit=120)} for cmd in info.commands
                ],
            }
        )
    return out
