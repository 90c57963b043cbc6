"""Base classes of the component kinds a recipe combines.

Every component is built by the registry as ``factory(config, build)``: ``config`` is an instance of the
component's own attrs config class (structured from the recipe) and ``build`` is the run's
:class:`ddcore.context.BuildContext`. Subclassing the base classes below is the simplest way to
satisfy the protocol; the engine only relies on the methods documented here.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Optional

import torch
from torch import nn

from ddcore.types import SynBatch

if TYPE_CHECKING:
    from ddcore.context import BuildContext, StepContext

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

    def baseline(self, kind: str, budget_images: int, generator: torch.Generator) -> SynBatch:
        """A same-budget baseline set of this parameterization's kind (``"random"``, ``"herding"``, …).

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
    a queue on real data, a pool on the synthetic set, …). ``info()`` is copied into ``ctx.info`` (e.g. the
    inner/outer counters of a bi-level loop).
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

    @abc.abstractmethod
    def __call__(self, ctx: "StepContext") -> torch.Tensor:
        ...


class Augmentation(Component):
    """An augmentation of the synthetic (and, for siamese ones, real) batches.

    ``kind = "siamese"``: parameters are drawn once per group (class) with :meth:`sample` and replayed on
    the real and the synthetic batch with :meth:`apply`; :meth:`random` augments with fresh per-sample
    parameters (training of evaluation networks).

    ``kind = "expansion"``: a deterministic, differentiable map of the synthetic set (:meth:`expand`), applied
    after ``materialize()`` while distilling *and* before training evaluation networks.
    """

    kind: ClassVar[Literal["siamese", "expansion"]] = "siamese"

    def sample(self, num_groups: int, generator: torch.Generator, device: torch.device) -> Any:
        raise TypeError(f"{type(self).__name__} is a {self.kind} augmentation: it has no sample()")

    def apply(self, x: torch.Tensor, params: Any, groups: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} is a {self.kind} augmentation: it has no apply()")

    def random(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} is a {self.kind} augmentation: it has no random()")

    def expand(self, syn: SynBatch) -> SynBatch:
        raise TypeError(f"{type(self).__name__} is a {self.kind} augmentation: it has no expand()")


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


class Evaluator(Component):
    """Judges a synthetic set; returns a JSON-able dict.

    The result has ``"metric"`` (e.g. ``"accuracy"``), ``"per_model"``: ``{name: {"mean", "std", "values"}}``
    and ``"mean"``/``"std"`` over all models. ``evaluate`` receives the *expanded* synthetic set (expansion
    augmentations already applied), detached.
    """

    @abc.abstractmethod
    def evaluate(self, synset: SynBatch, *, seed: int) -> dict[str, Any]:
        ...
