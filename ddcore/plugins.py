"""Plugin discovery and the registry built from it.

Built-in components are internal plugins (modules under :mod:`ddcore.builtin`) registered through the same
hooks as third-party ones; third-party plugins are found through the ``ddcore`` entry-point group unless
``DDCORE_DISABLE_PLUGIN_AUTOLOAD`` is set. ``DDCORE_LOAD_PLUGINS=a,b`` restricts autoloading to the named
entry points (handy to reproduce a run with exactly the plugins it recorded); ``DDCORE_DISABLE_PLUGINS=a,b``
leaves the named plugins (entry-point or distribution names) out.

A plugin that fails to import, carries an invalid hook, raises while registering or registers a name another
plugin already holds is *broken*: it is reported once, on one line on stderr, and left out with everything it
registered; the other plugins work. ``ddcore plugins`` lists it with the reason, and a recipe that needs it fails
naming it. ``PluginHost(strict=True)`` raises the first fault instead (the testing kit uses it).
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import inspect
import os
import sys
from typing import Any, Callable, Iterable, Optional

import attrs
import pluggy

from ddcore import hookspecs
from ddcore.errors import PluginError
from ddcore.registry import KINDS, Entry, Registry

__all__ = ["BrokenPlugin", "PluginHost", "PluginInfo", "get_host"]

ENTRY_POINT_GROUP = "ddcore"
BUILTIN_MODULES = (
    "ddcore.builtin.data",
    "ddcore.builtin.backbones",
    "ddcore.builtin.synset",
    "ddcore.builtin.augmentations",
    "ddcore.builtin.samplers",
    "ddcore.builtin.objectives",
    "ddcore.builtin.optimizers",
    "ddcore.builtin.evaluators",
)
IN_PROCESS = "(registered in-process)"


@attrs.define(frozen=True)
class PluginInfo:
    """One loaded plugin: its name, the distribution that ships it, and what it registers."""

    name: str
    distribution: str
    version: str
    components: tuple[tuple[str, str], ...]  # (kind, name)


@attrs.define(frozen=True)
class BrokenPlugin:
    """A plugin left out: why, in one line (``reason``), and whether the user switched it off (``disabled``)."""

    name: str
    distribution: str
    version: str
    reason: str
    disabled: bool = False

    def line(self) -> str:
        what = "disabled" if self.disabled else "broken"
        version = f" {self.version}" if self.version else ""
        return f"plugin '{self.name}' (distribution {self.distribution}{version}) {what}: {self.reason}"


def autoload_disabled() -> bool:
    return os.environ.get("DDCORE_DISABLE_PLUGIN_AUTOLOAD", "").strip() not in ("", "0", "false", "False")


def disabled_plugins() -> set[str]:
    """Names in ``DDCORE_DISABLE_PLUGINS`` (entry-point or distribution names, normalised)."""
    return {_normalise(n) for n in os.environ.get("DDCORE_DISABLE_PLUGINS", "").split(",") if n.strip()}


# Each broken plugin is reported once per process, however many hosts are created (tests create many).
_reported: set[str] = set()


def _report(line: str) -> None:
    if line not in _reported:
        _reported.add(line)
        print(f"ddcore: warning: {line}", file=sys.stderr)


class _Fault(Exception):
    """Why one plugin is left out (internal)."""


class PluginHost:
    """The pluggy manager plus the component registry its plugins filled.

    :param autoload: load entry-point plugins (default: unless ``DDCORE_DISABLE_PLUGIN_AUTOLOAD`` is set).
    :param extra: additional plugin objects (modules or instances) to register, e.g. in tests.
    :param strict: raise :class:`~ddcore.errors.PluginError` on the first broken plugin instead of leaving it out.
    :param report: where the one-line report of a broken plugin goes (default: stderr, once per process).
    """

    def __init__(self, *, autoload: Optional[bool] = None, extra: Iterable[Any] = (), strict: bool = False,
                 report: Optional[Callable[[str], None]] = None):
        self.pm = pluggy.PluginManager("ddcore")
        self.pm.add_hookspecs(hookspecs)
        self.strict = strict
        self._report = report or _report
        self._dists: dict[str, tuple[str, str]] = {}  # plugin name -> (distribution, version)
        self.broken: dict[str, BrokenPlugin] = {}
        self._disabled = disabled_plugins()
        import ddcore

        for modname in BUILTIN_MODULES:
            module = importlib.import_module(modname)
            self._add(module, modname, "ddcore", ddcore.__version__)
        if not (autoload_disabled() if autoload is None else not autoload):
            self._load_entry_points()
        for i, plugin in enumerate(extra):
            name = getattr(plugin, "__name__", None) or f"extra-{i}"
            self._add(plugin, name, IN_PROCESS, "")
        self.registry = Registry()
        self._components: dict[str, list[tuple[str, str]]] = {}
        self._register_components()
        self.registry.unavailable = self.unavailable_note

    # -- loading ------------------------------------------------------------------------------------------
    def _fail(self, name: str, dist: str, version: str, reason: str, *, disabled: bool = False) -> None:
        broken = BrokenPlugin(name, dist, version, reason, disabled)
        self.broken[name] = broken
        self._dists.pop(name, None)
        if disabled:
            return  # the user asked for it: nothing to report
        if self.strict:
            raise PluginError(broken.line())
        self._report(broken.line() + " (left out; switch it off with DDCORE_DISABLE_PLUGINS=" + name + ")")

    def _add(self, plugin: Any, name: str, dist: str, version: str) -> None:
        """Register one plugin object with pluggy, checking its hook implementations against the specs."""
        try:
            self.pm.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            self._fail(name, dist, version, f"invalid hook implementation: {_first_line(exc)}")
            return
        unknown = [impl.function.__name__ for caller in self.pm.get_hookcallers(plugin) or []
                   for impl in caller.get_hookimpls() if impl.plugin is plugin and not caller.has_spec()]
        if unknown:
            self.pm.unregister(plugin)
            self._fail(name, dist, version, f"@ddcore.hookimpl on {', '.join(sorted(unknown))}, which is no hook "
                                            f"spec (see docs/hooks.md for the hook names)")
            return
        self._dists[name] = (dist, version)
        self._warn_unmarked(plugin, name, dist)

    def _warn_unmarked(self, plugin: Any, name: str, dist: str) -> None:
        """A function named like a hook but without ``@ddcore.hookimpl`` is silently ignored by pluggy: say so."""
        for attr in dir(plugin):
            if not attr.startswith("ddcore_"):
                continue
            value = getattr(plugin, attr, None)
            if not callable(value) or self.pm.parse_hookimpl_opts(plugin, attr) is not None:
                continue
            if attr in vars(hookspecs) or inspect.isfunction(value) or inspect.ismethod(value):
                self._report(f"plugin '{name}' (distribution {dist}): {attr} is named like a hook but has no "
                             f"@ddcore.hookimpl marker, so ddcore never calls it")

    def _load_entry_points(self) -> None:
        seen: set[str] = set()
        only = os.environ.get("DDCORE_LOAD_PLUGINS")
        allowed = None if only is None else {n.strip() for n in only.split(",") if n.strip()}
        for dist in md.distributions():
            for ep in dist.entry_points:
                if ep.group != ENTRY_POINT_GROUP or ep.name in seen:
                    continue
                if allowed is not None and ep.name not in allowed:
                    continue
                seen.add(ep.name)
                dist_name, version = dist.metadata["Name"], dist.version
                if {_normalise(ep.name), _normalise(dist_name)} & self._disabled:
                    self._fail(ep.name, dist_name, version, "switched off by DDCORE_DISABLE_PLUGINS", disabled=True)
                    continue
                try:
                    plugin = ep.load()
                except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's, reported as such
                    self._fail(ep.name, dist_name, version, f"failed to load: {type(exc).__name__}: "
                                                            f"{_first_line(exc)}")
                    continue
                self._add(plugin, ep.name, dist_name, version)

    def _register_components(self) -> None:
        """Call each plugin's registration hooks; a plugin whose registration fails is left out entirely."""
        impls_by_plugin: dict[str, list[tuple[str, Any]]] = {}
        for kind, hook_name in KINDS.items():
            for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):  # registration order
                impls_by_plugin.setdefault(impl.plugin_name, []).append((kind, impl))
        for plugin, _ in self.pm.list_name_plugin():
            dist, version = self._dists.get(plugin, ("(unknown)", ""))
            staged: list[Entry] = []
            try:
                for kind, impl in impls_by_plugin.get(plugin, []):
                    bound = self.registry.bind(kind, plugin, dist, staged)
                    try:
                        impl.function(**{name: bound for name in impl.argnames})
                    except PluginError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - the plugin's own bug, reported as such
                        raise _Fault(f"{impl.function.__name__} raised {type(exc).__name__}: {_first_line(exc)}")
                self.registry.check_new(staged)
            except (PluginError, _Fault) as exc:
                self.pm.unregister(name=plugin)
                self._fail(plugin, dist, version, str(exc))
                continue
            self.registry.commit(staged)
            self._components[plugin] = [(e.kind, e.name) for e in staged]

    # -- queries ------------------------------------------------------------------------------------------
    @property
    def hook(self):
        return self.pm.hook

    def plugins(self) -> list[PluginInfo]:
        out = []
        for name, _ in self.pm.list_name_plugin():
            dist, version = self._dists.get(name, ("(unknown)", ""))
            out.append(PluginInfo(name, dist, version, tuple(self._components.get(name, ()))))
        return out

    def plugin_distribution(self, name: str) -> Optional[str]:
        """The distribution a loaded plugin (by its registered name) comes from, or ``None``."""
        entry = self._dists.get(name)
        return entry[0] if entry else None

    def distributions(self) -> dict[str, str]:
        """Distribution name → version of every loaded plugin (``ddcore`` included)."""
        return {dist: version for dist, version in self._dists.values()}

    def unavailable_note(self) -> str:
        """``"; plugin(s) left out: ..."`` when some are broken or disabled (appended to unknown-name errors)."""
        if not self.broken:
            return ""
        return "; left out: " + "; ".join(b.line() for b in self.broken.values())

    def require(self, names: Iterable[str], *, file: Optional[str] = None) -> None:
        """Fail fast (``PluginError``, exit 2) when a distribution a recipe lists is not loaded."""
        have = {_normalise(d) for d in self.distributions()} | {_normalise(n) for n in self._dists}
        missing = [n for n in names if _normalise(n) not in have]
        if not missing:
            return
        where = f"{file}: plugins" if file else "plugins"
        left_out = [b for b in self.broken.values()
                    if {_normalise(b.name), _normalise(b.distribution)} & {_normalise(n) for n in missing}]
        if left_out:
            raise PluginError(f"{where}: the recipe needs {left_out[0].line()}")
        hint = " (plugin autoload is disabled by DDCORE_DISABLE_PLUGIN_AUTOLOAD)" if autoload_disabled() else ""
        raise PluginError(
            f"{where}: required plugin distribution(s) not installed: {', '.join(missing)}{hint}; "
            f"loaded: {', '.join(sorted(self.distributions()))}; install with: {install_command(missing)}"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def install_command(distributions: Iterable[str]) -> str:
    """``pip install`` for the given distributions: ``-e <folder>`` for plugins that live in this checkout."""
    from pathlib import Path

    plugins_dir = Path(__file__).resolve().parent.parent / "plugins"
    args = []
    for name in distributions:
        folder = plugins_dir / _normalise(name)
        if (folder / "pyproject.toml").is_file():
            try:
                shown = os.path.relpath(folder)
            except ValueError:  # another drive (Windows)
                shown = str(folder)
            args.append(f"-e {str(folder) if shown.startswith('..') else shown}")
        else:
            args.append(name)
    return "pip install " + " ".join(args)


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-").strip()


_default_host: Optional[PluginHost] = None


def get_host() -> PluginHost:
    """The process-wide default host (created on first use)."""
    global _default_host
    if _default_host is None:
        _default_host = PluginHost()
    return _default_host
