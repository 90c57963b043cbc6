"""Distributed execution of one run under ``torchrun`` (``torch.distributed``), chosen from the objectives' coupling.

Launch with ``torchrun --nproc_per_node N -m ddcore run RECIPE`` (see ``docs/scaling.md``). When ``WORLD_SIZE > 1``
the engine calls :func:`init_from_env` (backend ``nccl`` on CUDA, ``gloo`` on CPU; each rank on ``cuda:LOCAL_RANK``)
and :meth:`Distributed.configure` picks one of three modes from the objectives' ``coupling`` (or ``[run]
distributed`` when set):

``class_sharded`` (every term ``"separable"``)
    Classes are split into contiguous blocks, one per rank. Each rank draws the real batch for all classes with the
    run's generator and keeps its classes' rows (``sample_per_class(classes=...)``), keeps only its classes' rows of
    the expanded synthetic batch (siamese augmentation parameters are still sampled for all groups, then indexed
    by group), and so computes the loss terms of its classes only. Gradients reach only its own rows: no
    communication per step. Parameters that are not per class (``class_index(p) is None``) get their gradients
    all-reduced (none for ``pixels``). The synthetic set (and the optimiser's per-row state) is merged before
    every evaluation, checkpoint and at the end: each row is taken from the rank that owns its class (a masked
    sum, exact in floating point).

``data_parallel`` (some term ``"shared"``, none ``"collective"``)
    The same class split of the loss, but every step the gradients of *all* synthetic parameters are summed
    over ranks (one flattened ``all_reduce``), so every rank applies the full update and holds the whole,
    identical synthetic set (samplers that train their networks on it stay in step). Exact when the objective
    is a sum of per-class terms (what ``"shared"`` declares), up to the order of a floating-point sum.

``replicated`` (some term ``"collective"``)
    A collective term (e.g. a kernel-ridge solve over every synthetic pair) needs every class at once, and
    splitting its real batch is exact only if the term is a plain sum over real samples, which the coupling
    flag does not say. Every rank therefore runs the whole step (same seeds ⇒ identical synthetic sets, no
    communication): the distillation is exact but not faster; evaluation is still sharded.

Evaluation is sharded in every mode: the evaluator's units (architecture × model index) are dealt round-robin to
the ranks and the per-unit results gathered (evaluators exposing ``units``/``evaluate_units``/``summarize``; any
other evaluator simply runs on every rank). Only rank 0 writes artefacts.

Per-step networks must not mix classes through batch statistics (BatchNorm in train mode): a class-restricted
batch would normalise differently from the single-process batch, so both sharded modes refuse such networks.
"""

from __future__ import annotations

import atexit
import os
from typing import TYPE_CHECKING, Any, Optional, Sequence

import torch
from torch import nn

from ddcore.errors import RecipeError, UserError

if TYPE_CHECKING:
    from ddcore.engine import Run
    from ddcore.types import SynBatch

__all__ = ["choose_mode", "class_shards", "Distributed", "env_world", "init_from_env", "MODES", "shutdown"]

MODES = ("auto", "class_sharded", "data_parallel", "replicated")


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the variables ``torchrun`` sets (``(0, 1, 0)`` when absent)."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def init_from_env(device: torch.device) -> tuple["Distributed", torch.device]:
    """Join the process group ``torchrun`` describes (if ``WORLD_SIZE > 1``) and pick this rank's device.

    Returns the :class:`Distributed` helper (inactive for a single process) and the device to run on: ``cuda``
    becomes ``cuda:LOCAL_RANK``.
    """
    rank, world, local_rank = env_world()
    if world <= 1:
        return Distributed(), device
    import torch.distributed as dist

    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://")
        # Tear the group down before interpreter finalisation: a gloo group left to static destructors can
        # abort the process ("terminate called without an active exception") after a successful run.
        atexit.register(_destroy_group)
    return Distributed(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                       backend=dist.get_backend()), device


def _destroy_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shutdown() -> None:
    """Leave the process group cleanly: wait for every rank, then destroy it (no-op for a single process).

    Call it once a run has finished on every rank (``ddcore run`` does); :func:`init_from_env` also registers
    the destroy step with :mod:`atexit` for library users who do not.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def class_shards(num_classes: int, world_size: int) -> list[list[int]]:
    """Contiguous, near-equal blocks of class ids, one per rank (the first ``num_classes % world`` get one more)."""
    base, extra = divmod(num_classes, world_size)
    blocks, start = [], 0
    for r in range(world_size):
        n = base + (1 if r < extra else 0)
        blocks.append(list(range(start, start + n)))
        start += n
    return blocks


def choose_mode(couplings: Sequence[str], requested: str = "auto") -> str:
    """The mode for a run whose objective terms declare ``couplings`` (see the module docstring)."""
    if requested not in MODES:
        raise RecipeError(f"expected one of {', '.join(MODES)}, got {requested!r}", key="run.distributed")
    if requested == "auto":
        if "collective" in couplings:
            return "replicated"
        if all(c == "separable" for c in couplings):
            return "class_sharded"
        return "data_parallel"
    if requested == "class_sharded" and any(c != "separable" for c in couplings):
        raise RecipeError(f"class_sharded needs every objective 'separable' (couplings: {list(couplings)}); "
                          "use auto or data_parallel", key="run.distributed")
    if requested == "data_parallel" and "collective" in couplings:
        raise RecipeError("data_parallel is not exact for a 'collective' objective; use auto or replicated",
                          key="run.distributed")
    return requested


class Distributed:
    """The engine's handle on the process group: mode, own classes, and the few collective operations.

    A default instance (``world_size == 1``) is inactive and every method is a no-op, so the engine calls them
    unconditionally.
    """

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, backend: Optional[str] = None):
        self.rank = rank
        self.world_size = world_size
        self.local_rank = local_rank
        self.backend = backend
        self.mode = "single"
        self.classes: Optional[list[int]] = None
        self._class_ids: Optional[torch.Tensor] = None
        self._syn_rows: dict[tuple, torch.Tensor] = {}
        self._nets_checked = False

    # -- facts ----------------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the rank that writes artefacts and prints (rank 0)."""
        return self.rank == 0

    @property
    def splits_classes(self) -> bool:
        return self.mode in ("class_sharded", "data_parallel")

    def describe(self) -> str:
        if not self.active:
            return "single process"
        own = f", classes {self.classes[0]}..{self.classes[-1]}" if self.classes else ""
        return f"rank {self.rank}/{self.world_size} ({self.backend}), mode {self.mode}{own}"

    # -- setup ----------------------------------------------------------------------------------------
    def configure(self, run: "Run") -> None:
        """Choose the mode from the run's objectives and ``[run] distributed``; compute this rank's classes."""
        if not self.active:
            return
        couplings = [getattr(obj, "coupling", "shared") for _, _, obj in run.objectives]
        mode = choose_mode(couplings, getattr(run.recipe.run, "distributed", "auto"))
        if mode in ("class_sharded", "data_parallel"):
            if run.recipe.real.sampling == "uniform":
                if mode == "class_sharded" and getattr(run.recipe.run, "distributed", "auto") == "class_sharded":
                    raise RecipeError("class_sharded needs real.sampling = 'per_class' or 'none'", key="real.sampling")
                mode = "replicated"  # a uniform real batch cannot be split by class without changing its draw
            elif run.build_ctx.num_classes < self.world_size:
                raise UserError(f"distributed: {self.world_size} ranks but only {run.build_ctx.num_classes} classes "
                                f"to split (use at most {run.build_ctx.num_classes} processes)")
        self.mode = mode
        if self.splits_classes:
            self.classes = class_shards(run.build_ctx.num_classes, self.world_size)[self.rank]
            self._class_ids = torch.tensor(self.classes, dtype=torch.int64, device=run.device)

    # -- per step -------------------------------------------------------------------------------------
    @property
    def real_classes(self) -> Optional[torch.Tensor]:
        """Class ids this rank draws real images of (``None``: all)."""
        return self._class_ids if self.splits_classes else None

    def restrict(self, syn: "SynBatch") -> "SynBatch":
        """This rank's rows of an expanded synthetic batch (the rows whose hard label is one of its classes)."""
        if not self.splits_classes:
            return syn
        labels = syn.labels
        if labels is None or labels.dtype != torch.int64 or labels.ndim != 1:
            raise UserError(f"distributed mode {self.mode} splits the synthetic set by class and needs hard labels; "
                            "set [run] distributed = 'replicated' for this parameterization")
        key = (labels.shape[0], labels.device)
        rows = self._syn_rows.get(key)
        if rows is None:  # labels are fixed for the run: computed once (a host sync on the first step only)
            rows = torch.isin(labels, self._class_ids).nonzero().flatten()
            self._syn_rows[key] = rows
        return syn.index(rows)

    def check_nets(self, nets: Sequence[nn.Module]) -> None:
        """Refuse networks whose train-mode batch statistics would mix classes (checked on the first step)."""
        if self._nets_checked or not self.splits_classes:
            return
        for net in nets:
            bn = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
            if bn:
                raise UserError(
                    f"distributed mode {self.mode}: the step network {type(net).__name__} uses BatchNorm in train "
                    "mode, whose batch statistics span the classes a rank would not see; use an instance-norm "
                    "backbone or set [run] distributed = 'replicated'")
        self._nets_checked = True

    def after_backward(self, parameters: Sequence[torch.Tensor], class_indexed: Sequence[bool]) -> None:
        """Sum gradients over ranks: all of them (data_parallel) or the non-per-class ones (class_sharded)."""
        if self.mode == "data_parallel":
            self._allreduce_grads(list(parameters))
        elif self.mode == "class_sharded":
            shared = [p for p, ci in zip(parameters, class_indexed) if not ci]
            if shared:
                self._allreduce_grads(shared)

    def _allreduce_grads(self, params: list[torch.Tensor]) -> None:
        import torch.distributed as dist

        if not params:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n

    def reduce_logged(self, values: torch.Tensor) -> torch.Tensor:
        """Sum logged per-rank partial losses (class-split modes) at logging time; identity otherwise."""
        if not self.splits_classes:
            return values
        import torch.distributed as dist

        values = values.clone()
        dist.all_reduce(values)
        return values

    # -- synchronisation points -----------------------------------------------------------------------
    def merge(self, run: "Run") -> None:
        """Class-sharded: give every rank the merged synthetic set (each row from its class's owner).

        Also merges the per-row optimiser state of ``torch.optim`` wrappers (attribute ``optim``), so a checkpoint
        written by rank 0 is the single-process state. A masked ``all_reduce`` (adding exact zeros) keeps it exact.
        """
        if self.mode != "class_sharded":
            return
        import torch.distributed as dist

        param = run.parameterization
        optim = getattr(run.optimizer, "optim", None)
        with torch.no_grad():
            for p in param.parameters():
                index = param.class_index(p)
                if index is None:
                    continue
                own = torch.isin(index, self._class_ids)
                tensors = [p]
                if isinstance(optim, torch.optim.Optimizer):
                    tensors += [v for v in optim.state.get(p, {}).values()
                                if isinstance(v, torch.Tensor) and v.shape == p.shape]
                for t in tensors:
                    mask = own.view(-1, *([1] * (t.dim() - 1))).to(t.dtype)
                    merged = t * mask
                    dist.all_reduce(merged)
                    t.copy_(merged)

    def evaluate(self, evaluator: Any, synset: "SynBatch", *, seed: int) -> dict[str, Any]:
        """Evaluate with the units (architecture × model index) dealt round-robin to the ranks, then gathered.

        Every rank returns the same merged result. Evaluators without the unit API run whole on every rank.
        """
        unit_api = getattr(evaluator, "sharded", None)
        if unit_api is None:  # duck-typed evaluators (not ddcore.Evaluator subclasses)
            unit_api = all(hasattr(evaluator, a) for a in ("units", "evaluate_units", "summarize"))
        if not self.active or not unit_api:
            return evaluator.evaluate(synset, seed=seed)
        import torch.distributed as dist

        units = list(evaluator.units())
        mine = units[self.rank::self.world_size]
        values = evaluator.evaluate_units(synset, seed=seed, units=mine) if mine else []
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, list(zip(mine, values)))
        by_unit = {tuple(u): v for part in gathered for u, v in part}
        return evaluator.summarize(synset, [(u, by_unit[tuple(u)]) for u in units])

