"""Config-class helpers: ``option()`` fields with docs, and strict cattrs structuring with key-path errors.

Every component declares its options as a frozen attrs class::

    @attrs.define(frozen=True, kw_only=True)
    class ConvNetConfig:
        width: int = option(128, "Channels of every conv layer.")
        norm: str = option("instancenorm", "Normalisation layer.", choices=NORMS)

``structure(cls, data, key=..., file=...)`` turns a recipe table into such an instance; an unknown key, a
wrong type or a value outside ``choices`` raises :class:`~ddcore.errors.RecipeError` naming the key path.
"""

from __future__ import annotations

import math
import typing
from typing import Any, Iterable, Optional

import attrs
import cattrs

from ddcore.errors import RecipeError

__all__ = [
    "CHOICES", "choices_of", "ComponentRef", "converter", "describe", "DOC", "doc_of", "NoConfig", "non_negative",
    "option", "OptionValueError", "positive", "structure", "type_name"
]

DOC = "ddcore_doc"
CHOICES = "ddcore_choices"
NONFINITE = "ddcore_nonfinite"
KIND = "ddcore_component_kind"


def option(default: Any = attrs.NOTHING, doc: str = "", *, choices: Optional[Iterable[Any]] = None,
           factory: Any = None, validator: Any = None, allow_nonfinite: bool = False,
           kind: Optional[str] = None) -> Any:
    """An attrs field carrying a doc string (for the generated recipe reference) and optional choices.

    Numbers in an option must be finite unless ``allow_nonfinite`` (a NaN passes every ``<=`` check and would
    silently poison a run). ``kind`` names the registry kind of a nested :class:`ComponentRef` option (or list of
    them), so ``ddcore recipe check`` validates the nested component too.
    """
    metadata = {DOC: doc, NONFINITE: allow_nonfinite}
    if kind is not None:
        metadata[KIND] = kind
    validators = []
    if choices is not None:
        allowed = tuple(choices)
        metadata[CHOICES] = allowed
        validators.append(_in_choices(allowed))
    if validator is not None:
        validators.append(validator)
    kwargs: dict[str, Any] = {"metadata": metadata}
    if factory is not None:
        kwargs["factory"] = factory
    else:
        kwargs["default"] = default
    if validators:
        kwargs["validator"] = validators
    return attrs.field(**kwargs)


class OptionValueError(ValueError):
    """A validator's complaint about one option; carries the option name for the key path."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


def _in_choices(allowed: tuple):
    def check(instance, attribute, value):
        if value not in allowed:
            raise OptionValueError(attribute.name, f"expected one of {', '.join(map(repr, allowed))}, got {value!r}")

    return check


def positive(instance, attribute, value):
    """attrs validator: the value must be > 0."""
    if not value > 0:  # written so that NaN fails too
        raise OptionValueError(attribute.name, f"expected a positive number, got {value!r}")


def non_negative(instance, attribute, value):
    """attrs validator: the value must be >= 0."""
    if not value >= 0:
        raise OptionValueError(attribute.name, f"expected a number >= 0, got {value!r}")


@attrs.define(frozen=True, kw_only=True)
class NoConfig:
    """A component without options."""


@attrs.define(frozen=True)
class ComponentRef:
    """A reference to a registered component: its ``name`` plus the options for its config class.

    In TOML either a string (``init = "real"``) or a table (``init = {name = "mosaic", factor = 2}``).
    """

    name: str
    options: dict = attrs.field(factory=dict)

    @classmethod
    def parse(cls, value: Any, key: str = "", file: Optional[str] = None) -> "ComponentRef":
        if isinstance(value, ComponentRef):
            return value
        if isinstance(value, str):
            return cls(value, {})
        if isinstance(value, dict):
            if "name" not in value:
                raise RecipeError("missing required key 'name' (the component to use)", file=file, key=key or None)
            name = value["name"]
            if not isinstance(name, str):
                raise RecipeError(f"expected str, got {type(name).__name__} {name!r}", file=file, key=_join(key, "name"))
            return cls(name, {k: v for k, v in value.items() if k != "name"})
        raise RecipeError(
            f"expected a component name or a table with 'name', got {type(value).__name__} {value!r}",
            file=file, key=key or None,
        )

    def to_toml(self) -> Any:
        return {"name": self.name, **self.options} if self.options else self.name


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, prefer_attrib_converters=False)

    # TOML has no tuples: accept lists for tuple-typed fields; refuse silent str -> number coercions.
    def strict_number(kind):
        def hook(value, _type):
            if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
                raise TypeError(f"expected {kind.__name__}, got {type(value).__name__} {value!r}")
            return kind(value)

        return hook

    conv.register_structure_hook(int, strict_number(int))
    conv.register_structure_hook(float, strict_number(float))

    def strict_str(value, _type):
        if not isinstance(value, str):
            raise TypeError(f"expected str, got {type(value).__name__} {value!r}")
        return value

    def strict_bool(value, _type):
        if not isinstance(value, bool):
            raise TypeError(f"expected bool (true/false), got {type(value).__name__} {value!r}")
        return value

    conv.register_structure_hook(str, strict_str)
    conv.register_structure_hook(bool, strict_bool)
    conv.register_structure_hook(ComponentRef, lambda v, _t: ComponentRef.parse(v))
    conv.register_unstructure_hook(ComponentRef, lambda r: r.to_toml())
    return conv


converter = _make_converter()


def type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def structure(cls: type, data: Any, *, key: str = "", file: Optional[str] = None) -> Any:
    """Structure ``data`` (a dict from TOML) into ``cls``; errors name ``file`` and the full key path."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"expected a table, got {type(data).__name__} {data!r}", file=file, key=key or None)
    fields = {f.name: f for f in attrs.fields(cls)}
    for k in data:
        if k not in fields:
            allowed = ", ".join(sorted(fields)) or "(none)"
            raise RecipeError(f"unknown key; allowed keys: {allowed}", file=file, key=_join(key, k))
    for name, f in fields.items():
        if f.default is attrs.NOTHING and name not in data:
            raise RecipeError(f"missing required key (expected {type_name(f.type)})", file=file, key=_join(key, name))
        if name in data and not f.metadata.get(NONFINITE, False):
            where = _first_nonfinite(data[name])
            if where is not None:
                path, value = where
                raise RecipeError(f"expected a finite number, got {value!r}", file=file, key=_join(key, name) + path)
    try:
        return converter.structure(data, cls)
    except Exception as exc:  # noqa: BLE001 - converted into one-line user errors below
        msgs = _flatten(exc)
        path, msg = msgs[0]
        raise RecipeError(msg, file=file, key=_join(key, path)) from exc


def _first_nonfinite(value: Any, path: str = "") -> Optional[tuple[str, float]]:
    """``(sub-path, value)`` of the first NaN/inf inside a TOML value (lists and tables included), else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, value
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = _first_nonfinite(v, f"{path}[{i}]")
            if found is not None:
                return found
    if isinstance(value, dict):
        for k, v in value.items():
            found = _first_nonfinite(v, f"{path}.{k}")
            if found is not None:
                return found
    return None


def _join(prefix: str, name: str) -> str:
    if not name:
        return prefix
    if not prefix:
        return name
    return f"{prefix}{name}" if name.startswith("[") else f"{prefix}.{name}"


def _flatten(exc: BaseException, path: str = "") -> list[tuple[str, str]]:
    """Walk cattrs' exception groups, returning ``(key path, message)`` leaves."""
    if isinstance(exc, BaseExceptionGroup):
        out: list[tuple[str, str]] = []
        notes = getattr(exc, "__notes__", [])
        for sub in exc.exceptions:
            sub_path = path
            for note in getattr(sub, "__notes__", []):
                note_str = str(note)
                name = getattr(note, "name", None)
                idx = getattr(note, "index", None)
                if name is not None:
                    sub_path = _join(path, str(name))
                elif idx is not None:
                    sub_path = f"{path}[{idx}]"
                elif "attribute" in note_str:
                    sub_path = _join(path, note_str.split("'")[1] if "'" in note_str else "")
            out.extend(_flatten(sub, sub_path))
        del notes
        return out or [(path, str(exc))]
    if isinstance(exc, OptionValueError):
        return [(_join(path, exc.name), str(exc))]
    if isinstance(exc, KeyError):
        return [(path, f"missing required key {exc}")]
    msg = str(exc)
    return [(path, msg)]


def doc_of(field: attrs.Attribute) -> str:
    return field.metadata.get(DOC, "")


def choices_of(field: attrs.Attribute) -> Optional[tuple]:
    return field.metadata.get(CHOICES)


def component_kind_of(field: attrs.Attribute) -> Optional[str]:
    """The registry kind of a nested component option (``option(kind=...)``), else None."""
    return field.metadata.get(KIND)


def describe(cls: type) -> list[dict[str, Any]]:
    """Rows ``{name, type, default, value, doc, choices}`` for every option of a config class (for docs).

    ``default`` is printable (``repr``, or ``"(required)"``); ``value`` is the default itself (``attrs.NOTHING``
    when the option is required), for renderers with their own format.
    """
    rows = []
    hints = typing.get_type_hints(cls)
    for f in attrs.fields(cls):
        if f.default is attrs.NOTHING:
            value = attrs.NOTHING
        elif isinstance(f.default, attrs.Factory):  # type: ignore[arg-type]
            value = f.default.factory()
        else:
            value = f.default
        rows.append(
            {
                "name": f.name,
                "type": type_name(hints.get(f.name, f.type)),
                "default": "(required)" if value is attrs.NOTHING else repr(value),
                "value": value,
                "doc": doc_of(f),
                "choices": choices_of(f),
            }
        )
    return rows
