"""The two contexts components see: :class:`BuildContext` (once per run) and :class:`StepContext` (per step)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch
from torch import nn

from ddcore.components import BackboneOutput
from ddcore.hotpath import HotPath
from ddcore.types import DatasetInfo, RealBatch, SynBatch

if TYPE_CHECKING:
    from ddcore.components import Parameterization
    from ddcore.data.store import ClassIndexedData
    from ddcore.recipe import ComponentRef, Recipe
    from ddcore.registry import Registry

__all__ = ["BuildContext", "StepContext", "batch_independent", "derive_seed"]


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed derived from any printable parts (stable across processes and platforms).

    Every seed of a run comes from here (``derive_seed(run seed, purpose, keys...)``): streams derived this way
    do not depend on call order, so resumed and sharded runs draw what the uninterrupted run draws.
    """
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class BuildContext:
    """What a component factory receives besides its config: dataset, device, registry, seeds, caches.

    One instance lives for the whole run. Components may keep a reference to it.
    """

    def __init__(
        self,
        *,
        recipe: "Recipe",
        registry: "Registry",
        info: DatasetInfo,
        device: torch.device,
        seed: int,
        train: "ClassIndexedData",
        test_loader: Callable[[], "ClassIndexedData"],
        cache_dir: Path,
        out_dir: Optional[Path] = None,
        rank: int = 0,
        world_size: int = 1,
        log: Callable[[str], None] = print,
        hot_path: Optional[HotPath] = None,
        progress: bool = False,
    ):
        self.recipe = recipe
        self.registry = registry
        self.info = info
        self.device = device
        self.seed = seed
        self.train = train
        self._test_loader = test_loader
        self._test: Optional["ClassIndexedData"] = None
        self.cache_dir = Path(cache_dir)
        self.out_dir = out_dir
        self.rank = rank
        self.world_size = world_size
        self.log = log
        #: Augmentations of the run, in recipe order (filled by the engine before samplers/objectives).
        self.augmentations: list = []
        #: The run's parameterization, once built (the engine builds it before the sampler and the objectives):
        #: how a sampler or term reaches the synthetic set without knowing which plugin made it.
        self.parameterization: Optional["Parameterization"] = None
        #: Per-run memo of one plugin's own objects (a trained teacher, …). Key it by an object your module owns,
        #: never by a string another plugin must know: other plugins reach your objects through your public
        #: functions.
        self.shared: dict[Any, Any] = {}
        #: The run's resolved speed switches (``[run] channels_last`` / ``real_chunk`` / ``compile``).
        self.hot_path = hot_path if hot_path is not None else HotPath()
        #: Whether the run shows progress (``[run] progress`` / ``--no-progress``); see :meth:`progress_task`.
        self.progress = progress

    # -- data ---------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def test(self) -> "ClassIndexedData":
        """The test split, loaded on first use and kept on the device."""
        if self._test is None:
            self._test = self._test_loader()
        return self._test

    # -- randomness ---------------------------------------------------------------------------------
    def generator(self, purpose: str, *keys: Any, device: Optional[torch.device] = None) -> torch.Generator:
        """A fresh ``torch.Generator`` seeded from (run seed, purpose, keys).

        Streams derived this way do not depend on call order, so a resumed run and a class-sharded run
        draw exactly what the uninterrupted single-process run draws.
        """
        g = torch.Generator(device=device or self.device)
        g.manual_seed(derive_seed(self.seed, purpose, *keys))
        return g

    def seeded(self, purpose: str, *keys: Any):
        """Context manager: the global torch RNG (CPU and current device) seeded for (purpose, keys), then restored.

        Use it around ``nn.Module`` construction, whose initialisers draw from the global RNG.
        """
        devices = [self.device] if self.device.type == "cuda" else []
        ctx = torch.random.fork_rng(devices=devices, device_type=self.device.type if devices else "cuda")

        class _Seeded:
            def __enter__(_self):
                ctx.__enter__()
                torch.manual_seed(derive_seed(self.seed, purpose, *keys))
                return _self

            def __exit__(_self, *exc):
                return ctx.__exit__(*exc)

        return _Seeded()

    def progress_task(self, label: str, total: int, *, unit: str = "models"):
        """A :class:`ddcore._progress.TaskProgress` for a job of ``total`` units (models trained, teachers, ...).

        Call ``advance()`` as units finish and ``close()`` at the end (or use it as a context manager). It
        shows a bar in a terminal and a periodic log line otherwise; it is silent when the run shows no
        progress and on ranks other than 0.
        """
        from ddcore._progress import TaskProgress

        return TaskProgress(label, total, enabled=self.progress and self.rank == 0, log=self.log, unit=unit)

    # -- components ---------------------------------------------------------------------------------
    def make_backbone(
        self, ref: "ComponentRef | str | None" = None, *, num_classes: Optional[int] = None, seed_key: Any = None
    ) -> nn.Module:
        """Build a backbone on the run's device.

        :param ref: a backbone name or ``ComponentRef``; ``None`` means the recipe's ``[backbone]``.
        :param num_classes: classifier outputs (default: the dataset's classes).
        :param seed_key: when given, initialise deterministically from (run seed, ``seed_key``).
        """
        from ddcore.recipe import ComponentRef

        if ref is None:
            ref = self.recipe.backbone
        if isinstance(ref, str):
            ref = ComponentRef(name=ref)
        entry = self.registry.get("backbone", ref.name)
        config = entry.structure(ref.options, key=f"backbone({ref.name})")
        n = self.num_classes if num_classes is None else num_classes
        if seed_key is None:
            net = entry.factory(config, info=self.info, num_classes=n)
        else:
            with self.seeded("backbone", ref.name, seed_key):
                net = entry.factory(config, info=self.info, num_classes=n)
        return net.to(self.device)

    def prepare_net(self, net: nn.Module) -> nn.Module:
        """Put a network that the distillation step trains or runs on the run's hot path, in place; returns it.

        The engine does this for the sampler's step networks (``ctx.nets``). A component that also trains
        networks of its own during the step (a model-queue sampler) calls it once per network, so that those
        passes run in the same memory format and compiled code. Evaluation networks are not prepared.
        """
        return self.hot_path.prepare_net(net)

    def make_component(self, kind: str, ref: "ComponentRef | str", *, key: str = "", **kwargs: Any) -> Any:
        """Build any registered component from a name or ``ComponentRef`` (used by plugins composing others)."""
        from ddcore.recipe import ComponentRef

        if isinstance(ref, str):
            ref = ComponentRef(name=ref)
        entry = self.registry.get(kind, ref.name, key=key)
        config = entry.structure(ref.options, key=key or kind)
        return entry.factory(config, self, **kwargs)

    @property
    def siamese_augmentations(self) -> list:
        return [a for a in self.augmentations if a.kind == "siamese"]

    @property
    def expansions(self) -> list:
        return [a for a in self.augmentations if a.kind == "expansion"]

    def expand(self, syn: SynBatch) -> SynBatch:
        """Apply the run's expansion augmentations (e.g. IDM partition) to a synthetic set."""
        for aug in self.expansions:
            syn = aug.expand(syn)
        return syn

    def augment_random(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Apply the run's siamese augmentations with fresh per-sample parameters (training-time use)."""
        for aug in self.siamese_augmentations:
            x = aug.random(x, generator)
        return x


def batch_independent(net: nn.Module) -> bool:
    """Whether ``net``'s output for an image does not depend on the rest of its batch.

    False when a BatchNorm layer would use batch statistics (train mode, or no running statistics); a net
    can state it with a ``batch_independent`` attribute (for layers this check does not know).
    """
    declared = getattr(net, "batch_independent", None)
    if declared is not None:
        return bool(declared)
    return not any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or not m.track_running_stats)
        for m in net.modules()
    )


class StepContext:
    """Everything objective terms of one step share; memoises network outputs per (net, batch).

    :ivar step: the global step index (0-based).
    :ivar real: the augmented real batch; ``real_raw`` before augmentation.
    :ivar syn: the expanded + augmented synthetic batch; ``syn_raw`` is ``materialize()``'s output.
    :ivar nets: the sampler's networks for this step; ``net`` is the first.
    :ivar sampler_info: the sampler's ``info()`` of this step (e.g. bi-level loop counters).
    :ivar aug_params: one entry per siamese augmentation, the parameters shared by real and syn.
    """

    def __init__(
        self,
        *,
        step: int,
        build: BuildContext,
        real: Optional[RealBatch],
        real_raw: Optional[RealBatch],
        syn: SynBatch,
        syn_raw: SynBatch,
        nets: list[nn.Module],
        sampler_info: dict[str, Any],
        aug_params: list[Any],
        real_chunk: int = 0,
    ):
        self.step = step
        self.build = build
        self.real = real
        self.real_raw = real_raw
        self.syn = syn
        self.syn_raw = syn_raw
        self.nets = nets
        self.sampler_info = sampler_info
        self.aug_params = aug_params
        self.real_chunk = real_chunk
        self.logs: dict[str, torch.Tensor] = {}
        self._outputs: dict[tuple[int, str], BackboneOutput] = {}
        self._materialize: Optional[Callable[[], SynBatch]] = None

    @property
    def net(self) -> nn.Module:
        return self.nets[0]

    @property
    def num_classes(self) -> int:
        return self.build.num_classes

    def generator(self, purpose: str, *keys: Any) -> torch.Generator:
        """A generator for this step's draws of ``purpose`` (see :meth:`BuildContext.generator`)."""
        return self.build.generator(purpose, self.step, *keys)

    def batch(self, which: str) -> torch.Tensor:
        return {"real": self.real, "syn": self.syn, "real_raw": self.real_raw, "syn_raw": self.syn_raw}[
            which
        ].images

    def outputs(self, net: Optional[nn.Module] = None, which: str = "syn") -> BackboneOutput:
        """One forward pass of ``net`` (default ``ctx.net``) on batch ``which``, computed once per step.

        ``which`` is ``"real"``, ``"syn"``, ``"real_raw"`` or ``"syn_raw"``. Real batches are run under
        ``torch.no_grad()`` (their features are targets, never differentiated). All classes go through one
        forward pass, except that a real batch larger than ``real_chunk`` (``[run] real_chunk``) is cut into
        chunks of that many images when ``net`` is :func:`batch_independent`: the outputs are the same, and
        on a CPU the smaller activations are faster than one huge batch.
        """
        net = self.net if net is None else net
        key = (id(net), which)
        out = self._outputs.get(key)
        if out is None:
            x = self.batch(which)
            if which.startswith("real"):
                with torch.no_grad():
                    chunk = self.real_chunk
                    if 0 < chunk < x.shape[0] and batch_independent(net):
                        parts = [net.forward_all(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)]
                        out = BackboneOutput(**{f.name: torch.cat([getattr(p, f.name) for p in parts])
                                                for f in dataclasses.fields(BackboneOutput)})
                    else:
                        out = net.forward_all(x)
            else:
                out = net.forward_all(x)
            self._outputs[key] = out
        return out

    def updated_synset(self) -> SynBatch:
        """The synthetic set *after* this step's optimiser update, detached (for ``Sampler.after_step``)."""
        if self._materialize is None:
            return self.syn_raw.detach()
        with torch.no_grad():
            return self._materialize().detach()

    def log(self, name: str, value: torch.Tensor) -> None:
        """Record a scalar (kept as a tensor: no host sync until the engine logs)."""
        self.logs[name] = value.detach()
