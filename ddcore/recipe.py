"""TOML recipes: loading, ``--set`` overrides, structuring into attrs classes, validation.

A recipe names one component per slot (``data``, ``backbone``, ``synset``, ``sampler``, ``optimizer``,
``eval``) and any number of ``augment`` and ``objective`` entries. Engine-owned sections (``real``, ``run``)
and each component's options are structured into attrs classes; every error names the file and key path.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Optional

import attrs

from ddcore.config import ComponentRef, non_negative, option, positive, structure
from ddcore.errors import RecipeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = ["ComponentRef", "ObjectiveRef", "Recipe", "RealConfig", "RunConfig", "load_recipe", "parse_recipe"]


@attrs.define(frozen=True, kw_only=True)
class RealConfig:
    """How the engine draws real images each step (table ``[real]``)."""

    sampling: str = option(
        "per_class", "'per_class': class-major batch, `batch` images of every class, drawn with one gather; "
        "'uniform': `batch` images over the whole split; 'none': no real batch.",
        choices=("per_class", "uniform", "none"),
    )
    batch: int = option(256, "Images per class (per_class) or in total (uniform).", validator=positive)


@attrs.define(frozen=True, kw_only=True)
class RunConfig:
    """Loop length and callback intervals (table ``[run]``)."""

    iterations: int = option(1000, "Synthetic-set updates.", validator=non_negative)
    log_every: int = option(10, "Steps between metric lines (the only host syncs of the loop).", validator=positive)
    eval_every: int = option(0, "Steps between evaluations; 0 = only at the end.", validator=non_negative)
    eval_at_end: bool = option(True, "Evaluate the final synthetic set (and the baselines).")
    checkpoint_every: int = option(500, "Steps between atomic checkpoints; 0 = only at the end.", validator=non_negative)
    progress: bool = option(True, "Show a progress bar with loss and ETA.")
    precision: str = option(
        "fp32", "Arithmetic of the distillation step: 'fp32' (faithful default); 'bf16': autocast the objective "
        "terms' forward passes to bfloat16 (CPU and CUDA); 'tf32': fp32 tensors, TF32 matmul/convolution on "
        "CUDA (no effect on CPU). See docs/benchmarks.md for measured effects.",
        choices=("fp32", "bf16", "tf32"),
    )
    channels_last: str = option(
        "auto", "Run the step networks and batches in channels_last memory format (same values up to kernel "
        "rounding): 'on', 'off', or 'auto' = on for CPU, where together with real_chunk it made the DM step "
        "1.69x faster (docs/benchmarks.md), off elsewhere.",
        choices=("auto", "on", "off"))
    real_chunk: int = option(
        -1, "Most real images per (no-grad) forward pass of a batch-independent step network (no BatchNorm "
        "using batch statistics); the outputs are the same and the peak memory drops. -1 = auto: 256 on CPU "
        "(smaller activations run faster there: docs/benchmarks.md), the whole batch on other devices; "
        "0 = always the whole batch.",
        validator=attrs.validators.ge(-1))
    compile: str = option(
        "auto", "Run the step networks' forward passes (and a model queue's training) through torch.compile "
        "(same values up to kernel rounding; the first steps pay the compilation): 'on', 'off', or 'auto' = on "
        "for a CPU with a C++ compiler, where it made the DM and IDM steps faster (docs/benchmarks.md), off "
        "elsewhere. Objectives that differentiate through the network's gradients "
        "(gradient matching) need double backward, which compiled code lacks: 'auto' then stays eager and 'on' "
        "is an error. Under 'auto' a backbone whose compiled code fails runs eagerly, with one warning; 'on' "
        "raises the error.",
        choices=("auto", "on", "off"))
    distributed: str = option(
        "auto", "Under torchrun (WORLD_SIZE > 1): 'auto' picks from the objectives' coupling (all separable: "
        "class_sharded; any shared: data_parallel; any collective: replicated); or force one. See docs/scaling.md.",
        choices=("auto", "class_sharded", "data_parallel", "replicated"),
    )


@attrs.define(frozen=True)
class ObjectiveRef:
    """An objective term: the component reference plus its engine-owned ``weight``."""

    ref: ComponentRef
    weight: float = 1.0


SECTIONS = ("data", "backbone", "synset", "sampler", "optimizer", "eval")
DEFAULTS: dict[str, Any] = {
    "backbone": "ConvNet",
    "synset": {"name": "pixels", "ipc": 10},
    "sampler": "random_init",
    "optimizer": {"name": "sgd", "lr": 1.0, "momentum": 0.5},
}
TOP_KEYS = ("name", "plugins", "seed", "device", "real", "run", "augment", "objective", *SECTIONS, "track")
#: Top-level tables the core reserves for a plugin, which validates their keys itself: table -> distribution.
PLUGIN_TABLES = {"track": "ddcore-track"}


@attrs.define(frozen=True, kw_only=True)
class Recipe:
    """A structured recipe. ``raw`` is the resolved TOML mapping (written back as ``recipe.toml``)."""

    name: str
    plugins: tuple[str, ...]
    seed: int
    device: str
    data: ComponentRef
    backbone: ComponentRef
    synset: ComponentRef
    sampler: ComponentRef
    optimizer: ComponentRef
    eval: Optional[ComponentRef]
    augment: tuple[ComponentRef, ...]
    objective: tuple[ObjectiveRef, ...]
    real: RealConfig
    run: RunConfig
    raw: dict
    file: Optional[str] = None

    def components(self) -> list[tuple[str, str, ComponentRef]]:
        """``(kind, key path, ref)`` for every component the recipe names."""
        out = [("data", "data", self.data), ("backbone", "backbone", self.backbone),
               ("parameterization", "synset", self.synset), ("sampler", "sampler", self.sampler),
               ("optimizer", "optimizer", self.optimizer)]
        out += [("augmentation", f"augment[{i}]", a) for i, a in enumerate(self.augment)]
        out += [("objective", f"objective[{i}]", o.ref) for i, o in enumerate(self.objective)]
        if self.eval is not None:
            out.append(("evaluator", "eval", self.eval))
        return out


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read a TOML recipe file, apply ``key.path=value`` overrides and structure it."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RecipeError(f"cannot read recipe ({exc.strerror or exc})", file=str(path)) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"invalid TOML: {exc}", file=str(path)) from exc
    return parse_recipe(data, overrides, file=str(path))


def parse_recipe(data: dict, overrides: list[str] = (), *, file: Optional[str] = None) -> Recipe:
    """Structure an already-parsed recipe mapping (overrides applied first)."""
    data = copy.deepcopy(data)
    for item in overrides:
        apply_override(data, item, file=file)
    for key in data:
        if key not in TOP_KEYS:
            raise RecipeError(f"unknown key; allowed keys: {', '.join(sorted(TOP_KEYS))}", file=file, key=key)
    resolved = {**{k: copy.deepcopy(v) for k, v in DEFAULTS.items() if k not in data}, **data}

    def ref(key: str, required: bool = True) -> Optional[ComponentRef]:
        if key not in resolved:
            if required:
                raise RecipeError("missing required section (expected a table with 'name')", file=file, key=key)
            return None
        return ComponentRef.parse(resolved[key], key=key, file=file)

    def ref_list(key: str) -> list[Any]:
        value = resolved.get(key, [])
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list):
            raise RecipeError(f"expected an array of tables ([[{key}]]), got {type(value).__name__}", file=file, key=key)
        return value

    objectives = []
    for i, item in enumerate(ref_list("objective")):
        key = f"objective[{i}]"
        r = ComponentRef.parse(item, key=key, file=file)
        weight = r.options.pop("weight", 1.0) if isinstance(item, dict) else 1.0
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise RecipeError(f"expected float, got {type(weight).__name__} {weight!r}", file=file, key=f"{key}.weight")
        objectives.append(ObjectiveRef(r, float(weight)))
    if not objectives:
        raise RecipeError("a recipe needs at least one [[objective]] table", file=file, key="objective")

    plugins = resolved.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise RecipeError("expected an array of distribution names", file=file, key="plugins")
    for table, owner in PLUGIN_TABLES.items():
        if table not in resolved:
            continue
        if not isinstance(resolved[table], dict):
            raise RecipeError(f"expected a table ([{table}]), got {type(resolved[table]).__name__}", file=file, key=table)
        if owner not in {p.lower().replace("_", "-") for p in plugins}:
            raise RecipeError(f"[{table}] is read by the {owner} plugin; add it to the recipe's plugins "
                              f"(plugins = [..., \"{owner}\"])", file=file, key=table)
    scalars = {"name": (str, ""), "seed": (int, 0), "device": (str, "auto")}
    values = {}
    for key, (tp, default) in scalars.items():
        value = resolved.get(key, default)
        if isinstance(value, bool) or not isinstance(value, tp):
            raise RecipeError(f"expected {tp.__name__}, got {type(value).__name__} {value!r}", file=file, key=key)
        values[key] = value
    return Recipe(
        name=values["name"],
        plugins=tuple(plugins),
        seed=values["seed"],
        device=values["device"],
        data=ref("data"),
        backbone=ref("backbone"),
        synset=ref("synset"),
        sampler=ref("sampler"),
        optimizer=ref("optimizer"),
        eval=ref("eval", required=False),
        augment=tuple(ComponentRef.parse(a, key=f"augment[{i}]", file=file) for i, a in enumerate(ref_list("augment"))),
        objective=tuple(objectives),
        real=structure(RealConfig, resolved.get("real"), key="real", file=file),
        run=structure(RunConfig, resolved.get("run"), key="run", file=file),
        raw=resolved,
        file=file,
    )


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word is a string: --set data.path=cifar10-jpeg


def _split_path(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for chunk in path.split("."):
        while "[" in chunk:
            head, _, rest = chunk.partition("[")
            if head:
                parts.append(head)
            index, _, chunk = rest.partition("]")
            parts.append(int(index))
        if chunk:
            parts.append(int(chunk) if chunk.isdigit() else chunk)
    return parts


def apply_override(data: dict, item: str, *, file: Optional[str] = None) -> None:
    """Apply one ``key.path=value`` override in place (``objective[1].weight=0.5`` indexes arrays)."""
    if "=" not in item:
        raise RecipeError(f"--set expects key.path=value, got {item!r}", file=file)
    path, _, text = item.partition("=")
    try:
        parts = _split_path(path.strip())
    except ValueError:
        raise RecipeError(f"--set: cannot parse key path {path!r}", file=file) from None
    if not parts:
        raise RecipeError(f"--set expects key.path=value, got {item!r}", file=file)
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise RecipeError(f"--set: index {part} out of range", file=file, key=path)
            node = node[part]
            continue
        if part in DEFAULTS and part not in node:
            node[part] = copy.deepcopy(DEFAULTS[part])
        if isinstance(node.get(part), str):  # promote `backbone = "ConvNet"` to a table to set an option
            node[part] = {"name": node[part]}
        node = node.setdefault(part, [] if isinstance(nxt, int) else {})
    last = parts[-1]
    value = _parse_value(text.strip())
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise RecipeError(f"--set: index {last} out of range", file=file, key=path)
        node[last] = value
    else:
        if not isinstance(node, dict):
            raise RecipeError("--set: cannot set a key inside a non-table value", file=file, key=path)
        if last in DEFAULTS and last not in node and isinstance(value, (int, float, bool)):
            raise RecipeError("--set: expected a component name or table", file=file, key=path)
        node[last] = value


def validate(recipe: Recipe, registry) -> dict[str, Any]:
    """Check every component name and structure every component's options; return configs by key path."""
    configs = {}
    for kind, key, r in recipe.components():
        entry = registry.get(kind, r.name, key=f"{key}.name", file=recipe.file)
        configs[key] = entry.structure(r.options, key=key, file=recipe.file)
    return configs
