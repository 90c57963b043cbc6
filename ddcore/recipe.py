"""TOML recipes: loading, ``--set`` overrides, structuring into attrs classes, validation.

A recipe names one component per slot (``data``, ``backbone``, ``synset``, ``sampler``, ``optimizer``,
``eval``) and any number of ``augment`` and ``objective`` entries. Engine-owned sections (``real``, ``run``)
and each component's options are structured into attrs classes; every error names the file and key path.
"""

from __future__ import annotations

import copy
import math
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

__all__ = [
    "DEFAULT_BASELINES", "ComponentRef", "ObjectiveRef", "PaperConfig", "PaperValue", "Recipe", "RealConfig",
    "RunConfig", "apply_override", "load_recipe", "parse_recipe", "validate",
]


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
        "auto", "Arithmetic of the distillation step: 'fp32'; 'bf16': autocast the objective terms' forward passes "
        "to bfloat16 (CPU and CUDA); 'tf32': fp32 tensors, TF32 matmul/convolution on CUDA (no effect on CPU); "
        "'auto' = bf16 on a CPU when every objective is marked bf16_safe (measured: DM, faster at the same "
        "accuracy with paired seeds, docs/reproduction.md), fp32 otherwise and on other devices. The manifest "
        "records what it resolved to (hot_path.precision).",
        choices=("auto", "fp32", "bf16", "tf32"),
    )
    channels_last: str = option(
        "auto", "Run the step networks and batches in channels_last memory format (same values up to kernel "
        "rounding): 'on', 'off', or 'auto' = on for CPU, where together with real_chunk it made the DM step "
        "1.69x faster (docs/benchmarks.md), off elsewhere.",
        choices=("auto", "on", "off"))
    real_chunk: int = option(
        -1, "Most real images per (no-grad) forward pass of a batch-independent step network (no BatchNorm "
        "using batch statistics), and per pass of a first-order real gradient that objectives accumulate "
        "(gradient matching's class-collective side); the outputs are the same up to rounding and the peak "
        "memory drops. -1 = auto: 256 on CPU "
        "(smaller activations run faster there: docs/benchmarks.md), the whole batch on other devices; "
        "0 = always the whole batch.",
        validator=attrs.validators.ge(-1))
    compile: str = option(
        "auto", "Run the step networks' forward passes (and a model queue's training) through torch.compile "
        "(same values up to kernel rounding; the first steps pay the compilation): 'on', 'off', or 'auto' = on "
        "for a CPU with a C++ compiler, where it made the DM and IDM steps faster (docs/benchmarks.md), off "
        "elsewhere. Objectives that differentiate through the network's gradients "
        "(gradient matching) need double backward, which compiled code lacks: 'auto' then runs only their "
        "first-order passes (the real side) compiled and 'on' is an error. Under 'auto' a backbone whose compiled code fails runs eagerly, with one warning; 'on' "
        "raises the error.",
        choices=("auto", "on", "off"))
    repeats: int = option(
        1, "Independent synthetic sets to distil and evaluate (the papers' num_exp): set k uses seed "
        "derive_seed(seed, 'repeat', k) (set 0 the recipe's seed) and lives in OUT/set-k; eval.json then holds "
        "every set's result and the pooled mean ± std over all sets' models (and baselines). 1 = one plain run.",
        validator=positive)
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


@attrs.define(frozen=True)
class PaperValue:
    """A published result: mean ± std (in the evaluator's metric, e.g. accuracy in percent)."""

    mean: float
    std: float


@attrs.define(frozen=True, kw_only=True)
class PaperConfig:
    """The published numbers a recipe reproduces (table ``[paper]``), keyed by images per class.

    ``source`` names the paper, ``table`` the table/row; ``ipc`` maps an IPC to ``{mean, std}``. ``ddcore run``
    prints the value for the run's ``synset.ipc`` beside the result and ``eval.json`` carries it.
    """

    source: str
    table: str = ""
    ipc: dict[int, PaperValue] = attrs.field(factory=dict)
    note: str = ""

    def value_for(self, ipc: Optional[int]) -> Optional[PaperValue]:
        return self.ipc.get(ipc) if ipc is not None else None


SECTIONS = ("data", "backbone", "synset", "sampler", "optimizer", "eval")
DEFAULTS: dict[str, Any] = {
    "backbone": "ConvNet",
    "synset": {"name": "pixels", "ipc": 10},
    "sampler": "random_init",
    "optimizer": {"name": "sgd", "lr": 1.0, "momentum": 0.5},
}
#: ``[eval] baselines`` when the recipe does not set it
DEFAULT_BASELINES: tuple[str, ...] = ("random",)
TOP_KEYS = ("name", "plugins", "seed", "device", "real", "run", "augment", "objective", "paper", "by_ipc", *SECTIONS)


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
    paper: Optional[PaperConfig] = None
    file: Optional[str] = None
    #: ``(ipc, recipe mapping)`` for every other ``[by_ipc.N]``: what ``--set synset.ipc=N`` would resolve, so
    #: :func:`validate` checks those settings too (a typo at IPC 50 fails ``recipe check`` at IPC 10)
    ipc_variants: tuple = ()
    #: ``[eval] baselines``: same-budget baseline sets the engine builds and evaluates (engine-owned key)
    baselines: tuple[str, ...] = ()
    #: top-level tables outside :data:`TOP_KEYS`, by name: plugin-owned (kind ``table``), checked by :func:`validate`
    tables: tuple[str, ...] = ()

    @property
    def ipc(self) -> Optional[int]:
        """``synset.ipc`` when the parameterization has that option (else ``None``)."""
        value = self.synset.options.get("ipc")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def paper_value(self) -> Optional[PaperValue]:
        """The published value for this recipe's IPC, if the recipe has a ``[paper]`` table covering it."""
        return self.paper.value_for(self.ipc) if self.paper is not None else None

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
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"cannot read recipe ({exc.strerror or exc})", file=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise RecipeError(f"not a TOML text file (byte {exc.start} is not UTF-8)", file=str(path)) from exc
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
    variants = _by_ipc_variants(data)
    _apply_by_ipc(data, overrides, file=file)
    for key in data:
        # any other table may belong to a plugin (kind "table"): validate() knows the registry and decides
        if key not in TOP_KEYS and not isinstance(data[key], dict):
            raise RecipeError(f"unknown key; allowed keys: {', '.join(sorted(TOP_KEYS))} (or a table a plugin "
                              f"registers)", file=file, key=key)
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
        if not math.isfinite(weight):
            raise RecipeError(f"expected a finite number, got {weight!r}", file=file, key=f"{key}.weight")
        objectives.append(ObjectiveRef(r, float(weight)))
    if not objectives:
        raise RecipeError("a recipe needs at least one [[objective]] table", file=file, key="objective")

    baselines: tuple[str, ...] = ()
    if isinstance(resolved.get("eval"), dict) and "name" in resolved["eval"]:
        value = resolved["eval"].get("baselines", list(DEFAULT_BASELINES))
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise RecipeError(f"expected an array of baseline names, got {value!r}", file=file, key="eval.baselines")
        baselines = tuple(value)
    elif isinstance(resolved.get("eval"), str):
        baselines = DEFAULT_BASELINES

    plugins = resolved.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise RecipeError("expected an array of distribution names", file=file, key="plugins")
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
        eval=_without(ref("eval", required=False), "baselines"),
        baselines=baselines,
        augment=tuple(ComponentRef.parse(a, key=f"augment[{i}]", file=file) for i, a in enumerate(ref_list("augment"))),
        objective=tuple(objectives),
        real=structure(RealConfig, resolved.get("real"), key="real", file=file),
        run=structure(RunConfig, resolved.get("run"), key="run", file=file),
        raw=resolved,
        paper=_parse_paper(resolved.get("paper"), file=file) if "paper" in resolved else None,
        ipc_variants=variants,
        tables=tuple(key for key in resolved if key not in TOP_KEYS),
        file=file,
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parse_paper(value: Any, *, file: Optional[str]) -> PaperConfig:
    """Structure ``[paper]``: ``source`` (str), ``table``/``note`` (str), ``ipc.<N> = {mean, std}``."""
    import math

    if not isinstance(value, dict):
        raise RecipeError(f"expected a table, got {type(value).__name__} {value!r}", file=file, key="paper")
    allowed = ("source", "table", "ipc", "note")
    for k in value:
        if k not in allowed:
            raise RecipeError(f"unknown key; allowed keys: {', '.join(allowed)}", file=file, key=f"paper.{k}")
    if "source" not in value:
        raise RecipeError("missing required key (expected str: the paper the values come from)", file=file,
                          key="paper.source")
    for k in ("source", "table", "note"):
        if k in value and not isinstance(value[k], str):
            raise RecipeError(f"expected str, got {type(value[k]).__name__} {value[k]!r}", file=file, key=f"paper.{k}")
    table = value.get("ipc", {})
    if not isinstance(table, dict):
        raise RecipeError("expected a table of [paper.ipc.N] tables with mean and std", file=file, key="paper.ipc")
    values: dict[int, PaperValue] = {}
    for ipc_text, entry in table.items():
        key = f"paper.ipc.{ipc_text}"
        if not (isinstance(ipc_text, str) and ipc_text.isdigit() and int(ipc_text) > 0):
            raise RecipeError("expected a positive integer (images per class) as the key", file=file, key=key)
        if not isinstance(entry, dict) or set(entry) - {"mean", "std"} or "mean" not in entry:
            raise RecipeError("expected a table {mean = float, std = float}", file=file, key=key)
        for k in ("mean", "std"):
            v = entry.get(k, 0.0)
            if not _is_number(v) or not math.isfinite(v) or v < 0:
                raise RecipeError(f"expected a finite number >= 0, got {v!r}", file=file, key=f"{key}.{k}")
        values[int(ipc_text)] = PaperValue(float(entry["mean"]), float(entry.get("std", 0.0)))
    return PaperConfig(source=value["source"], table=value.get("table", ""), ipc=values, note=value.get("note", ""))


def _by_ipc_variants(data: dict) -> tuple:
    """``(N, mapping)`` per ``[by_ipc.N]`` other than the recipe's own IPC: the recipe as ``synset.ipc = N``."""
    table = data.get("by_ipc")
    if not isinstance(table, dict):
        return ()
    synset = data.get("synset", DEFAULTS["synset"])
    ipc = synset.get("ipc", DEFAULTS["synset"]["ipc"]) if isinstance(synset, dict) else None
    out = []
    for ipc_text in table:
        if isinstance(ipc_text, str) and ipc_text.isdigit() and int(ipc_text) != ipc and isinstance(synset, dict):
            variant = copy.deepcopy(data)
            variant["synset"] = {**copy.deepcopy(synset), "ipc": int(ipc_text)}
            out.append((int(ipc_text), variant))
    return tuple(out)


def _apply_by_ipc(data: dict, overrides, *, file: Optional[str]) -> None:
    """``[by_ipc.N]``: the recipe's settings for IPC N, applied when ``synset.ipc`` is N.

    Each entry is ``"key.path" = value`` (the ``--set`` syntax). They override the recipe's own values (the
    recipe's main tables hold one IPC's settings; ``by_ipc`` says what the official code does at the others),
    but not a ``--set`` of the same key. The table is consumed: the resolved recipe holds the applied values.
    """
    table = data.pop("by_ipc", None)
    if table is None:
        return
    if not isinstance(table, dict):
        raise RecipeError("expected a table of [by_ipc.N] tables", file=file, key="by_ipc")
    synset = data.get("synset", DEFAULTS["synset"])
    ipc = synset.get("ipc", DEFAULTS["synset"]["ipc"]) if isinstance(synset, dict) else None
    explicit = set()
    for item in overrides:
        try:
            explicit.add(tuple(_split_path(item.partition("=")[0].strip())))
        except ValueError:
            pass
    chosen = None
    for ipc_text, entries in table.items():
        key = f"by_ipc.{ipc_text}"
        if not (ipc_text.isdigit() and int(ipc_text) > 0):
            raise RecipeError("expected a positive integer (images per class) as the key", file=file, key=key)
        if not isinstance(entries, dict):
            raise RecipeError('expected a table of "key.path" = value entries', file=file, key=key)
        for path in entries:
            try:
                parts = _split_path(path)
            except ValueError:
                raise RecipeError("cannot parse key path", file=file, key=f"{key}.{path!r}") from None
            if not parts or parts[0] in ("by_ipc", "paper") or parts[:2] == ["synset", "ipc"]:
                raise RecipeError("by_ipc cannot set synset.ipc, paper or by_ipc", file=file, key=f"{key}.{path!r}")
        if ipc is not None and int(ipc_text) == ipc:
            chosen = entries
    if chosen is None:
        return
    for path, value in chosen.items():
        if tuple(_split_path(path)) in explicit:
            continue  # --set wins over the recipe's per-IPC value
        _set_path(data, path, value, file=file)

def _without(r: Optional[ComponentRef], key: str) -> Optional[ComponentRef]:
    """``r`` minus an engine-owned option (the component's config never sees it)."""
    if r is None or key not in r.options:
        return r
    return attrs.evolve(r, options={k: v for k, v in r.options.items() if k != key})


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
    _set_path(data, path.strip(), _parse_value(text.strip()), file=file, item=item)


def _set_path(data: dict, path: str, value: Any, *, file: Optional[str] = None, item: Optional[str] = None) -> None:
    """Set ``value`` at ``path`` (``a.b[1].c``) in the recipe mapping ``data``."""
    item = item if item is not None else f"{path}={value!r}"
    try:
        parts = _split_path(path)
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
    """Check every component name and structure every component's options; return configs by key path.

    Nested components (options declared with ``option(kind=...)``, e.g. ``synset.init``) are checked too, so
    ``ddcore recipe check`` finds what the run would only find while building.
    """
    configs = {}
    for kind, key, r in recipe.components():
        entry = registry.get(kind, r.name, key=f"{key}.name", file=recipe.file)
        configs[key] = entry.structure(r.options, key=key, file=recipe.file)
        _validate_nested(configs[key], key, registry, recipe.file)
    if recipe.eval is not None:
        # a typo in a baseline name fails here, before hours of distillation, not at the final evaluation
        factory = registry.get("parameterization", recipe.synset.name).factory
        kinds_of = getattr(factory, "baseline_kinds", None)
        allowed = tuple(kinds_of(configs["synset"])) if kinds_of is not None else None
        for i, kind in enumerate(recipe.baselines):
            if allowed is not None and kind not in allowed:
                raise RecipeError(f"unknown baseline {kind!r} for parameterization '{recipe.synset.name}'; "
                                  f"allowed: {', '.join(allowed) or '(none)'}", file=recipe.file,
                                  key=f"eval.baselines[{i}]")
    for name in recipe.tables:
        known = registry.names("table")
        if name not in known:
            plugin_tables = ", ".join(known) or "(none registered)"
            raise RecipeError(f"unknown key; allowed keys: {', '.join(sorted(TOP_KEYS))}; tables registered by "
                              f"plugins: {plugin_tables}{registry.unavailable()}", file=recipe.file, key=name)
        configs[name] = registry.get("table", name).structure(recipe.raw[name], key=name, file=recipe.file)
    for ipc, variant in recipe.ipc_variants:
        # the settings of every other [by_ipc.N] are checked as the recipe resolves at that IPC
        try:
            validate(attrs.evolve(parse_recipe(variant, file=recipe.file), ipc_variants=()), registry)
        except RecipeError as exc:
            raise RecipeError(f"at synset.ipc = {ipc} (by_ipc.{ipc}): {exc.detail}", file=recipe.file,
                              key=exc.key) from exc
    return configs


def _validate_nested(config: Any, key: str, registry, file: Optional[str]) -> None:
    """Structure the nested component options of a structured config (recursively), naming their key paths."""
    from ddcore.config import component_kind_of, structure as structure_options

    if not attrs.has(type(config)):
        return
    for field in attrs.fields(type(config)):
        value = getattr(config, field.name)
        path = f"{key}.{field.name}"
        kind = component_kind_of(field)
        items = list(enumerate(value)) if isinstance(value, (list, tuple)) else [(None, value)]
        for index, item in items:
            item_key = path if index is None else f"{path}[{index}]"
            if kind is not None and isinstance(item, (str, ComponentRef)):
                ref = ComponentRef.parse(item, key=item_key, file=file)
                if kind == "backbone" and ref.name == "backbone" and not ref.options:
                    continue  # the recipe's own [backbone], checked as a slot
                sub_key = item_key if isinstance(item, str) else f"{item_key}.name"
                entry = registry.get(kind, ref.name, key=sub_key, file=file)
                nested = structure_options(entry.config, ref.options, key=item_key, file=file)
                _validate_nested(nested, item_key, registry, file)
            elif attrs.has(type(item)):
                _validate_nested(item, item_key, registry, file)
