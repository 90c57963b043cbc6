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
}


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

    def structure(self, data: Any, *, key: str = "", file: Optional[str] = None) -> Any:
        return structure(self.config, data, key=key, file=file)


class Registry:
    """All components of all plugins, by kind and name."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}

    def bind(self, kind: str, plugin: str, distribution: str) -> "KindRegistry":
        return KindRegistry(self, kind, plugin, distribution)

    def _add(self, entry: Entry) -> None:
        table = self._entries[entry.kind]
        old = table.get(entry.name)
        if old is not None:
            raise PluginError(
                f"{entry.kind} '{entry.name}' is registered twice: by plugin '{old.plugin}' "
                f"(distribution {old.distribution}) and by plugin '{entry.plugin}' (distribution {entry.distribution})"
            )
        table[entry.name] = entry

    def get(self, kind: str, name: str, *, key: str = "", file: Optional[str] = None) -> Entry:
        table = self._entries[kind]
        if name not in table:
            allowed = ", ".join(sorted(table)) or "(none registered)"
            raise RecipeError(f"unknown {kind} '{name}'; available: {allowed}", file=file, key=key or kind)
        return table[name]

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def entries(self, kind: Optional[str] = None) -> list[Entry]:
        kinds = [kind] if kind else list(KINDS)
        return [e for k in kinds for _, e in sorted(self._entries[k].items())]


class KindRegistry:
    """The view of the registry a registration hook receives: adds components of one kind."""

    def __init__(self, registry: Registry, kind: str, plugin: str, distribution: str):
        self._registry = registry
        self.kind = kind
        self.plugin = plugin
        self.distribution = distribution

    def add(self, name: str, factory: Callable[..., Any], *, config: type = NoConfig, doc: str = "") -> None:
        """Register ``factory`` under ``name``.

        :param factory: called as ``factory(config, build, **extra)`` (backbones: ``factory(config, *, info,
            num_classes)``); a class is the usual factory.
        :param config: a frozen attrs class of the component's options (``NoConfig`` when it has none).
        :param doc: one paragraph for the generated reference; defaults to the factory's docstring.
        """
        if not attrs.has(config):
            raise PluginError(f"plugin '{self.plugin}': config of {self.kind} '{name}' must be an attrs class")
        text = doc or (getattr(factory, "__doc__", None) or "").strip()
        self._registry._add(Entry(self.kind, name, factory, config, text, self.plugin, self.distribution))
