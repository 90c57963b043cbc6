"""Preset config classes: a copy of a config class with other defaults, for named backbone presets.

``ConvNetBN`` is ``ConvNet`` with ``norm = "batchnorm"`` by default; giving it its own config class (rather
than patching defaults at build time) makes the generated recipe reference show the preset's real defaults,
while every option stays overridable from a recipe.
"""

import typing
from typing import Any

import attrs

__all__ = ["preset_config"]


def preset_config(base: type, name: str, doc: str = "", *, module: str = "", **defaults: Any) -> type:
    """A frozen, kw-only attrs subclass of ``base`` named ``name`` whose field defaults are ``defaults``.

    Field order, docs, choices and validators are kept. Unknown names in ``defaults`` raise ``TypeError``;
    defaults are validated by constructing the class once. ``module`` names the module that will hold the
    class as a global of the same name (so instances pickle); it defaults to ``base``'s module.
    """
    fields = attrs.fields(base)
    unknown = set(defaults) - {f.name for f in fields}
    if unknown:
        raise TypeError(f"preset {name}: {base.__name__} has no option(s) {', '.join(sorted(unknown))}")
    hints = typing.get_type_hints(base)
    these = {
        f.name: attrs.field(
            default=defaults.get(f.name, f.default),
            validator=f.validator,
            metadata=dict(f.metadata),
            type=hints.get(f.name, f.type),
        )
        for f in fields
    }
    cls = attrs.make_class(name, these, bases=(base,), frozen=True, kw_only=True, slots=True)
    cls.__annotations__ = {f: these[f].type for f in these}
    cls.__doc__ = doc or f"{base.__doc__ or base.__name__} (preset {name})"
    cls.__module__ = module or base.__module__
    cls.__qualname__ = name
    cls()  # validate the preset's defaults once, at import time
    return cls
