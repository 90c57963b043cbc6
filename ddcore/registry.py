"""The component registry: named factories with their config classes, per kind.

Plugins never build a registry; they receive a :class:`KindRegistry` in a ``ddcore_register_*`` hook::

    @hookimpl
    def ddcore_register_objectives(registry):
        registry.add("dm", DMTerm, config=DMConfig)
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import attrs

from ddcore.config import NoConfig, structure
from ddcore.errors import PluginError, RecipeError

__all__ = ["KINDS", "SMOKE_KEYS", "Entry", "KindRegistry", "Registry"]

#: kind -> hook name that registers it (the order is the documentation order).
KINDS: dict[str, str] = {
    "data": "ddcore_register_data_sources",
    "backbone": "ddcore_register_backbones",
    "parameterization": "ddcore_register_parameterizations",
    "init": "ddcore_register_inits",
    "augmentation": "ddcore_register_augmentations",
    "sampler": "ddcore_register_samplers",
    "objective": "ddcore_register_objectives",
    "optimizer": "ddcore_register_optimizers",
    "evaluator": "ddcore_register_evaluators",
    "table": "ddcore_register_recipe_tables",
}


#: what ``registry.add(..., smoke=...)`` may declare
SMOKE_KEYS = frozenset({"options", "recipe", "setup", "targets"})


@attrs.define(frozen=True)
class Entry:
    """One registered component."""

    kind: str
    name: str
    factory: Callable[..., Any]
    config: type
    doc: str
    plugin: str  # plugin (entry-point) name
    distribution: str  # distribution that ships it ("ddcore" for built-ins)
    #: recipe options of a tiny configuration that runs at test scale (the testing kit's smoke tests)
    smoke: Optional[dict] = None

    def structure(self, data: Any, *, key: str = "", file: Optional[str] = None) -> Any:
        """The component's config from a recipe table; an invalid *default* is the plugin's bug, said so."""
        try:
            return structure(self.config, data, key=key, file=file)
        except RecipeError as exc:
            given = data if isinstance(data, dict) else {}
            option = (exc.key or "")[len(key):].lstrip(".").split(".")[0].split("[")[0] if exc.key else ""
            # only an option the recipe left to its default: a missing required option is the recipe's
            defaulted = {f.name for f in attrs.fields(self.config) if f.default is not attrs.NOTHING}
            if option in defaulted and option not in given:
                raise PluginError(
                    f"plugin '{self.plugin}' (distribution {self.distribution}): the default of {self.kind} "
                    f"'{self.name}' option '{option}' is invalid ({exc.detail}); this is a bug in the plugin, not "
                    f"in your recipe (set {key}.{option} explicitly to work around it)") from exc
            raise


class Registry:
    """All components of all plugins, by kind and name."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        #: returns a note on plugins left out (broken or disabled), appended to unknown-name errors
        self.unavailable: Callable[[], str] = lambda: ""

    def bind(self, kind: str, plugin: str, distribution: str, staged: Optional[list] = None) -> "KindRegistry":
        """A view adding ``kind`` components of ``plugin``: into ``staged`` (committed later), or directly."""
        return KindRegistry(self, kind, plugin, distribution, staged)

    def check_new(self, entries: list[Entry]) -> None:
        """Raise ``PluginError`` when one of ``entries`` takes a name already registered (or twice among them)."""
        seen: dict[tuple[str, str], Entry] = {}
        for entry in entries:
            old = self._entries[entry.kind].get(entry.name) or seen.get((entry.kind, entry.name))
            if old is not None:
                raise PluginError(
                    f"{entry.kind} '{entry.name}' is registered twice: by plugin '{old.plugin}' "
                    f"(distribution {old.distribution}) and by plugin '{entry.plugin}' "
                    f"(distribution {entry.distribution})")
            seen[(entry.kind, entry.name)] = entry

    def commit(self, entries: list[Entry]) -> None:
        self.check_new(entries)
        for entry in entries:
            self._entries[entry.kind][entry.name] = entry

    def _add(self, entry: Entry) -> None:
        self.commit([entry])

    def get(self, kind: str, name: str, *, key: str = "", file: Optional[str] = None) -> Entry:
        table = self._entries[kind]
        if name not in table:
            allowed = ", ".join(sorted(table)) or "(none registered)"
            raise RecipeError(f"unknown {kind} '{name}'; available: {allowed}{self.unavailable()}", file=file,
                              key=key or kind)
        return table[name]

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def entries(self, kind: Optional[str] = None) -> list[Entry]:
        kinds = [kind] if kind else list(KINDS)
        return [e for k in kinds for _, e in sorted(self._entries[k].items())]


class KindRegistry:
    """The view of the registry a registration hook receives: adds components of one kind."""

    def __init__(self, registry: Registry, kind: str, plugin: str, distribution: str,
                 staged: Optional[list] = None):
        self._registry = registry
        self._staged = staged
        self.kind = kind
        self.plugin = plugin
        self.distribution = distribution

    def add(self, name: str, factory: Callable[..., Any], *, config: type = NoConfig, doc: str = "",
            smoke: Optional[dict] = None) -> None:
        """Register ``factory`` under ``name``.

        :param factory: called as ``factory(config, build, **extra)`` (backbones: ``factory(config, *, info,
            num_classes)``); a class is the usual factory.
        :param config: a frozen attrs class of the component's options (``NoConfig`` when it has none).
        :param doc: one paragraph for the generated reference; defaults to the factory's docstring.
        :param smoke: what the testing kit's smoke test of this component needs at test scale (see
            :func:`ddcore.testing.smoke_test`); ``None``: the defaults run at test scale. Keys: ``options`` (the
            component's own table; ``"<tmp>"`` becomes the test's temporary directory), ``recipe`` (top-level
            changes to the tiny test recipe, e.g. the sampler an objective needs), ``setup`` (a callable or
            ``"module:function"`` called with the temporary directory first, e.g. to write fake data files),
            ``targets`` (evaluators of self-supervised sets: the target dimension of the probe set).
        """
        if not attrs.has(config):
            raise PluginError(f"plugin '{self.plugin}': config of {self.kind} '{name}' must be an attrs class")
        if smoke is not None and (not isinstance(smoke, dict) or set(smoke) - SMOKE_KEYS):
            raise PluginError(f"plugin '{self.plugin}': smoke of {self.kind} '{name}' must be a dict with keys "
                              f"among {', '.join(sorted(SMOKE_KEYS))}, got {smoke!r}")
        if self.kind == "table":
            from ddcore.recipe import TOP_KEYS

            if name in TOP_KEYS or not name.isidentifier():
                raise PluginError(f"plugin '{self.plugin}': recipe table '{name}' must be a new identifier, not one "
                                  f"of the core's top-level keys ({', '.join(TOP_KEYS)})")
        text = doc or (getattr(factory, "__doc__", None) or "").strip()
        entry = Entry(self.kind, name, factory, config, text, self.plugin, self.distribution, smoke)
        if self._staged is not None:
            self._staged.append(entry)
        else:
            self._registry._add(entry)
