"""Base classes of the component kinds a recipe combines.

Every component is built by the registry as ``factory(config, build)``: ``config`` is an instance of the
component's own attrs config class (structured from the recipe) and ``build`` is the run's
:class:`ddcore.context.BuildContext`. Subclassing the base classes below is the simplest way to
satisfy the protocol; the engine only relies on the methods documented here.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import TYPE_CHECKING, Any, ClassVar, Hashable, Literal, Optional, Sequence, TypedDict

import torch
from torch import nn

from ddcore.types import SynBatch

if TYPE_CHECKING:
    from ddcore.context import BuildContext, StepContext

__all__ = [
    "Augmentation", "Backbone", "BackboneOutput", "Component", "Coupling", "DataSource", "EvaluationResult",
    "Evaluator", "Expansion", "Init", "ModelResult", "Objective", "Parameterization", "Sampler",
    "SiameseAugmentation", "SynOptimizer", "check_evaluation_result",
]

Coupling = Literal["separable", "shared", "collective"]


# A frozen dataclass, not attrs: torch.compile traces dataclass construction inside a compiled forward_all.
@dataclasses.dataclass(frozen=True)
class BackboneOutput:
    """Everything one forward pass of a backbone yields.

    :ivar embedding: ``[N, D]`` flattened features before the classifier (``net.embed(x)``).
    :ivar feature_map: ``[N, C, h, w]`` output of the last feature block (before flattening).
    :ivar logits: ``[N, K]`` classifier output.
    """

    embedding: torch.Tensor
    feature_map: torch.Tensor
    logits: torch.Tensor


class Backbone(nn.Module):
    """A classification network that exposes its features.

    Subclasses implement :meth:`forward_all`; ``forward`` returns logits and ``embed`` the flattened
    features, so one forward pass can serve several objective terms (see ``StepContext.outputs``).
    """

    #: True when the network keeps running statistics (BatchNorm): vectorised ensembles and
    #: per-class sharding must treat it differently.
    has_running_stats: bool = False

    def forward_all(self, x: torch.Tensor) -> BackboneOutput:
        """Run the network once and return embedding, last feature map and logits."""
        raise TypeError(f"{type(self).__name__} must implement forward_all()")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x).logits

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x).embedding


class Component(abc.ABC):
    """Common base: keeps the structured config and the build context."""

    def __init__(self, config: Any, build: "BuildContext"):
        self.config = config
        self.build = build

    # Components with state that must survive a resume override these two.
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no state but a checkpoint holds {sorted(state)}")


class DataSource(Component):
    """Loads a dataset's splits as uint8 arrays.

    ``load(split)`` returns ``(images, labels)``: ``images`` uint8 ``[N, C, H, W]`` (torch tensor, CPU),
    ``labels`` int64 ``[N]``. ``info()`` returns the :class:`~ddcore.types.DatasetInfo` (without loading
    the pixels when possible).
    """

    @abc.abstractmethod
    def info(self):
        ...

    @abc.abstractmethod
    def load(self, split: Literal["train", "test"]) -> tuple[torch.Tensor, torch.Tensor]:
        ...


class Parameterization(Component, nn.Module):
    """Learnable tensors that materialise into a synthetic set.

    The synthetic set is laid out class-major when it has hard labels: rows ``[c*ipc:(c+1)*ipc]`` of
    every per-image parameter belong to class ``c`` (:meth:`class_index` says so to optimisers).
    """

    def __init__(self, config: Any, build: "BuildContext"):
        nn.Module.__init__(self)
        Component.__init__(self, config, build)

    # The learnable tensors and buffers *are* the state (not Component's empty default).
    state_dict = nn.Module.state_dict
    load_state_dict = nn.Module.load_state_dict

    @abc.abstractmethod
    def materialize(self) -> SynBatch:
        """Return the synthetic set, differentiable w.r.t. the learnable parameters."""
        ...

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups. Keys besides ``params``: ``name`` and optional ``lr_scale``."""
        return [{"name": "all", "params": [p for p in self.parameters() if p.requires_grad]}]

    def storage_floats(self) -> int:
        """Number of floats that must be stored to reproduce :meth:`materialize` (the budget)."""
        return int(sum(t.numel() for t in self.state_dict().values()))

    def class_index(self, param: torch.Tensor) -> Optional[torch.Tensor]:
        """``[param.shape[0]]`` int64 class of each row of ``param``, or ``None`` when rows are not per class."""
        return None

    #: The ``[eval] baselines`` this parameterization can build (checked by ``ddcore recipe check``, before any
    #: data is loaded). Override :meth:`baseline_kinds` when the answer depends on the config.
    baselines: ClassVar[tuple[str, ...]] = ("herding", "random")

    @classmethod
    def baseline_kinds(cls, config: Any) -> tuple[str, ...]:
        """The baseline kinds :meth:`baseline` accepts for ``config`` (default: the class's ``baselines``)."""
        return tuple(cls.baselines)

    def baseline(self, kind: str, budget_images: int, generator: torch.Generator) -> SynBatch:
        """A same-budget baseline set of this parameterization's kind (one of :meth:`baseline_kinds`).

        The default draws real images class-balanced through :func:`ddcore.baselines.select`.
        """
        from ddcore.baselines import select

        return select(kind, self.build, budget_images, generator)


class Init(Component):
    """Initial images for a per-class synthetic set (``real``, ``noise``, plugin-defined)."""

    @abc.abstractmethod
    def __call__(self, counts: list[int], generator: torch.Generator) -> torch.Tensor:
        """Return normalised images ``[sum(counts), C, H, W]``, class-major, ``counts[c]`` for class ``c``."""
        ...


class Sampler(Component):
    """Where a step's networks come from.

    ``nets(step)`` is called at the start of every step and returns the networks the objective terms use
    (``ctx.nets``; ``ctx.net`` is the first). ``after_step(ctx)`` is called after the synthetic update (train
    a queue on real data, a pool on the synthetic set, …). ``info()`` is copied into ``ctx.sampler_info`` (e.g.
    the inner/outer counters of a bi-level loop). A sampler that trains on the synthetic set reads it through
    ``build.parameterization`` (built before the sampler) or ``ctx.updated_synset()`` in ``after_step``.
    """

    @abc.abstractmethod
    def nets(self, step: int) -> list[nn.Module]:
        ...

    def after_step(self, ctx: "StepContext") -> None:
        return None

    def info(self) -> dict[str, Any]:
        return {}


class Objective(Component):
    """One term of the distillation loss; the engine sums ``weight * term(ctx)``.

    ``coupling`` says how the term couples classes, for distributed execution:
    ``"separable"`` (a sum of per-class terms, each depending only on that class's synthetic images, given
    the step network), ``"shared"`` (per-class sums through one shared network; data-parallel is exact),
    ``"collective"`` (needs all classes at once).
    """

    coupling: ClassVar[Coupling] = "shared"
    #: True when the term differentiates through gradients of the step network (``create_graph=True``, e.g.
    #: gradient matching). Compiled code has no double backward, so ``[run] compile = "auto"`` then stays eager
    #: and ``"on"`` is refused.
    double_backward: ClassVar[bool] = False
    #: True only when the term's accuracy under bf16 autocast was measured to match fp32 (paired seeds, as in
    #: docs/reproduction.md). ``[run] precision = "auto"`` uses bf16 on a CPU only if every term of the run says so.
    bf16_safe: ClassVar[bool] = False

    @abc.abstractmethod
    def __call__(self, ctx: "StepContext") -> torch.Tensor:
        ...


class Augmentation(Component):
    """Common base of the two augmentation kinds; subclass :class:`SiameseAugmentation` or :class:`Expansion`."""

    kind: ClassVar[Literal["siamese", "expansion"]]


class SiameseAugmentation(Augmentation):
    """An augmentation applied alike to the real and the synthetic batch of a step (DSA).

    Parameters are drawn once per group (class) with :meth:`sample` and replayed on the real and the synthetic
    batch with :meth:`apply`; :meth:`random` augments with fresh per-sample parameters (training of evaluation
    networks).
    """

    kind: ClassVar[Literal["siamese"]] = "siamese"

    @abc.abstractmethod
    def sample(self, num_groups: int, generator: torch.Generator, device: torch.device) -> Any:
        """Parameters for ``num_groups`` groups, drawn from ``generator``."""

    @abc.abstractmethod
    def apply(self, x: torch.Tensor, params: Any, groups: torch.Tensor) -> torch.Tensor:
        """``x`` augmented with the parameters of each row's group (differentiable w.r.t. ``x``)."""

    @abc.abstractmethod
    def random(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``x`` augmented with fresh per-sample parameters."""


class Expansion(Augmentation):
    """A deterministic, differentiable map of the synthetic set (IDM's partition, predefined views).

    :meth:`expand` is applied after ``materialize()`` while distilling *and* before training evaluation networks.
    """

    kind: ClassVar[Literal["expansion"]] = "expansion"

    @abc.abstractmethod
    def expand(self, syn: SynBatch) -> SynBatch:
        """The expanded synthetic set (more or transformed images, labels and groups to match)."""


class SynOptimizer(Component):
    """Updates the parameterization's tensors from their gradients.

    The engine calls ``prepare()`` before ``materialize()`` (a look-ahead point, e.g. the class-sequential
    update of IDM), then ``zero_grad()``, ``backward``, ``step()``. Built from ``(config, build, param_groups,
    parameterization, total_steps)``.
    """

    def prepare(self) -> None:
        return None

    @abc.abstractmethod
    def zero_grad(self) -> None:
        ...

    @abc.abstractmethod
    def step(self) -> None:
        ...

    @property
    @abc.abstractmethod
    def lr(self) -> float:
        """Current learning rate of the first parameter group (for logging)."""


class ModelResult(TypedDict):
    """One model's (or architecture's) scores in an :class:`EvaluationResult`."""

    mean: float
    std: float
    values: list[float]


class EvaluationResult(TypedDict, total=False):
    """What :meth:`Evaluator.evaluate` returns: JSON-able, written to ``eval.json``.

    Required: ``metric`` (what the numbers are, e.g. ``"accuracy"`` in percent), ``mean`` and ``std`` over all
    ``num_models`` trained models, ``per_model`` (name → :class:`ModelResult`). An evaluator may add keys of its
    own (``headline``, ``seconds``, …).
    """

    metric: str
    mean: float
    std: float
    num_models: int
    per_model: dict[str, ModelResult]


REQUIRED_RESULT_KEYS = ("metric", "mean", "std", "num_models", "per_model")


def check_evaluation_result(result: Any, who: str = "evaluator") -> None:
    """Raise ``TypeError`` naming ``who`` when ``result`` does not follow :class:`EvaluationResult`."""
    if not isinstance(result, dict):
        raise TypeError(f"{who}: evaluate() must return a dict (EvaluationResult), got {type(result).__name__}")
    missing = [k for k in REQUIRED_RESULT_KEYS if k not in result]
    if missing:
        raise TypeError(f"{who}: the evaluation result lacks {', '.join(missing)} (see ddcore.EvaluationResult)")
    if not all(isinstance(result[k], (int, float)) and math.isfinite(result[k]) for k in ("mean", "std")):
        raise TypeError(f"{who}: mean and std must be finite numbers, got {result['mean']!r}, {result['std']!r}")
    for name, model in result["per_model"].items():
        if not (isinstance(model, dict) and {"mean", "std", "values"} <= set(model)):
            raise TypeError(f"{who}: per_model[{name!r}] must hold mean, std and values")


class Evaluator(Component):
    """Judges a synthetic set: trains ``num_models`` models on it and scores them.

    The contract, in two ways to fulfil it:

    * **sharded** (preferred): implement :meth:`units` (the independent pieces of one evaluation, e.g.
      ``(architecture, model index)``) and :meth:`evaluate_units` (the score of each given unit). The base class
      then provides :meth:`evaluate`, and a distributed run deals the units to its ranks. :meth:`summarize`
      turns the scores into the result; its default groups units by their first element.
    * **whole**: override :meth:`evaluate` alone (a distributed run then evaluates on every rank).

    ``evaluate`` receives the *expanded* synthetic set (expansion augmentations already applied), detached, and
    returns an :class:`EvaluationResult`. Same-budget baselines (``[eval] baselines``) belong to the engine: it
    builds them through the parameterization and evaluates them with this same evaluator.
    """

    #: what the scores are (``EvaluationResult.metric``)
    metric: ClassVar[str] = "accuracy"

    @property
    def sharded(self) -> bool:
        """True when the subclass implements the unit methods (so a distributed run can split the work)."""
        return type(self).units is not Evaluator.units

    def units(self) -> list[Hashable]:
        """The independent pieces of one evaluation, e.g. ``[(arch, i) for arch in models for i in range(n)]``."""
        raise NotImplementedError(f"{type(self).__name__} implements neither evaluate() nor units() and "
                                  "evaluate_units() (see ddcore.Evaluator)")

    def evaluate_units(self, synset: SynBatch, *, seed: int, units: Sequence[Hashable]) -> list[float]:
        """The score of each of ``units``, in that order; a unit's score must not depend on the other units."""
        raise NotImplementedError(f"{type(self).__name__} implements units() but not evaluate_units()")

    def summarize(self, synset: SynBatch, results: Sequence[tuple[Hashable, float]]) -> EvaluationResult:
        """The result from every unit's score (``(unit, score)`` in :meth:`units` order).

        The default groups units by their first element (or the unit itself when it is not a tuple) into
        ``per_model``.
        """
        per_model: dict[str, ModelResult] = {}
        every: list[float] = []
        for unit, value in results:
            name = str(unit[0] if isinstance(unit, (tuple, list)) else unit)
            per_model.setdefault(name, {"mean": 0.0, "std": 0.0, "values": []})["values"].append(float(value))
            every.append(float(value))
        for model in per_model.values():
            model["mean"], model["std"] = _mean_std(model["values"])
        mean, std = _mean_std(every)
        return {"metric": self.metric, "mean": mean, "std": std, "num_models": len(every), "per_model": per_model}

    def evaluate(self, synset: SynBatch, *, seed: int) -> EvaluationResult:
        """Score ``synset``: by default every unit through :meth:`evaluate_units`, then :meth:`summarize`."""
        units = list(self.units())
        values = self.evaluate_units(synset, seed=seed, units=units)
        return self.summarize(synset, list(zip(units, values)))


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population std (numpy's default, as the DC papers report)."""
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
