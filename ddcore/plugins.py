"""Plugin discovery and the registry built from it.

Built-in components are internal plugins (modules under :mod:`ddcore.builtin`) registered through the same
hooks as third-party ones; third-party plugins are found through the ``ddcore`` entry-point group unless
``DDCORE_DISABLE_PLUGIN_AUTOLOAD`` is set. ``DDCORE_LOAD_PLUGINS=a,b`` restricts autoloading to the named
entry points (handy to reproduce a run with exactly the plugins it recorded).
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
from typing import Any, Iterable, Optional

import attrs
import pluggy

from ddcore import hookspecs
from ddcore.errors import PluginError
from ddcore.registry import KINDS, Registry

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


@attrs.define(frozen=True)
class PluginInfo:
    """One loaded plugin: its name, the distribution that ships it, and what it registers."""

    name: str
    distribution: str
    version: str
    components: tuple[tuple[str, str], ...]  # (kind, name)


def autoload_disabled() -> bool:
    return os.environ.get("DDCORE_DISABLE_PLUGIN_AUTOLOAD", "").strip() not in ("", "0", "false", "False")


class PluginHost:
    """The pluggy manager plus the component registry its plugins filled.

    :param autoload: load entry-point plugins (default: unless ``DDCORE_DISABLE_PLUGIN_AUTOLOAD`` is set).
    :param extra: additional plugin objects (modules or instances) to register, e.g. in tests.
    """

    def __init__(self, *, autoload: Optional[bool] = None, extra: Iterable[Any] = ()):
        self.pm = pluggy.PluginManager("ddcore")
        self.pm.add_hookspecs(hookspecs)
        self._dists: dict[str, tuple[str, str]] = {}  # plugin name -> (distribution, version)
        import ddcore

        for modname in BUILTIN_MODULES:
            module = importlib.import_module(modname)
            self.pm.register(module, name=modname)
            self._dists[modname] = ("ddcore", ddcore.__version__)
        if autoload_disabled() if autoload is None else not autoload:
            pass
        else:
            self._load_entry_points()
        for i, plugin in enumerate(extra):
            name = getattr(plugin, "__name__", None) or f"extra-{i}"
            self.pm.register(plugin, name=name)
            self._dists[name] = ("(registered in-process)", "")
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.pm.get_name(exc.plugin) or repr(exc.plugin)
            dist = self._dists.get(name, ("(unknown)", ""))[0]
            raise PluginError(f"plugin '{name}' (distribution {dist}): {str(exc).split(' in plugin ')[0]}") from exc
        self.registry = Registry()
        self._components: dict[str, list[tuple[str, str]]] = {}
        self._register_components()

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
                dist_name = dist.metadata["Name"]
                try:
                    plugin = ep.load()
                except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's, reported as such
                    raise PluginError(
                        f"plugin '{ep.name}' (distribution {dist_name}) failed to load: {type(exc).__name__}: {exc}"
                    ) from exc
                try:
                    self.pm.register(plugin, name=ep.name)
                except pluggy.PluginValidationError as exc:
                    raise PluginError(f"plugin '{ep.name}' (distribution {dist_name}): {exc}") from exc
                self._dists[ep.name] = (dist_name, dist.version)

    def _register_components(self) -> None:
        # Call each registration hook impl separately so every entry knows which plugin added it.
        for kind, hook_name in KINDS.items():
            hook = getattr(self.pm.hook, hook_name)
            for impl in reversed(hook.get_hookimpls()):  # registration order
                plugin = impl.plugin_name
                dist = self._dists.get(plugin, ("(unknown)", ""))[0]
                bound = self.registry.bind(kind, plugin, dist)
                before = set(self.registry.names(kind))
                impl.function(**{name: bound for name in impl.argnames})
                added = sorted(set(self.registry.names(kind)) - before)
                self._components.setdefault(plugin, []).extend((kind, n) for n in added)

    @property
    def hook(self):
        return self.pm.hook

    def plugins(self) -> list[PluginInfo]:
        out = []
        for name, _ in self.pm.list_name_plugin():
            dist, version = self._dists.get(name, ("(unknown)", ""))
            out.append(PluginInfo(name, dist, version, tuple(self._components.get(name, ()))))
        return out

    def distributions(self) -> dict[str, str]:
        """Distribution name → version of every loaded plugin (``ddcore`` included)."""
        return {dist: version for dist, version in self._dists.values()}

    def require(self, names: Iterable[str], *, file: Optional[str] = None) -> None:
        """Fail fast (``PluginError``, exit 2) when a distribution a recipe lists is not loaded."""
        have = {_normalise(d) for d in self.distributions()} | {_normalise(n) for n in self._dists}
        missing = [n for n in names if _normalise(n) not in have]
        if missing:
            where = f"{file}: plugins" if file else "plugins"
            hint = " (plugin autoload is disabled by DDCORE_DISABLE_PLUGIN_AUTOLOAD)" if autoload_disabled() else ""
            raise PluginError(
                f"{where}: required plugin distribution(s) not installed: {', '.join(missing)}{hint}; "
                f"loaded: {', '.join(sorted(self.distributions()))}; install with: {install_command(missing)}"
            )


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
    return name.lower().replace("_", "-").replace(".", "-")


_default_host: Optional[PluginHost] = None


def get_host() -> PluginHost:
    """The process-wide default host (created on first use)."""
    global _default_host
    if _default_host is None:
        _default_host = PluginHost()
    return _default_host
