"""The distillation step's speed switches (``[run] channels_last``, ``real_chunk``, ``compile``), resolved per device.

A recipe says ``"auto"`` / ``-1`` and :meth:`HotPath.resolve` turns that into what measured fastest on the run's
device (``docs/benchmarks.md``). None of the switches changes what is computed, only how: the outputs agree with the
plain fp32 NCHW eager step up to kernel rounding.

The engine applies them to the step's networks and batches; a component that trains networks of its own inside the
step (e.g. a model-queue sampler) passes them through :meth:`ddcore.context.BuildContext.prepare_net` so they run
the same way.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import warnings
from typing import TYPE_CHECKING, Callable

import attrs
import torch
from torch import nn

from ddcore.components import BackboneOutput

if TYPE_CHECKING:
    from ddcore.recipe import RunConfig

__all__ = ["can_compile", "compile_backbone", "CPU_REAL_CHUNK", "HotPath", "is_compiled", "wants_compile"]

#: ``[run] real_chunk = -1`` on a CPU: most real images per no-grad forward pass.
CPU_REAL_CHUNK = 256


@attrs.define(frozen=True)
class HotPath:
    """The resolved switches of one run.

    :ivar channels_last: step networks and image batches in ``torch.channels_last`` memory format.
    :ivar real_chunk: most real images per no-grad forward of a batch-independent net (0 = whole batch).
    :ivar compile: step networks' ``forward_all`` run through ``torch.compile`` (see :func:`compile_backbone`).
    :ivar compile_first_order: passes that are differentiated once at most run compiled through
        :meth:`first_order`, also when ``compile`` is off because an objective needs double backward (gradient
        matching's real side).
    :ivar precision: the step's arithmetic, ``"fp32"``, ``"bf16"`` (autocast of the objective terms) or ``"tf32"``.
    """

    channels_last: bool = False
    real_chunk: int = 0
    compile: bool = False
    compile_first_order: bool = False
    precision: str = "fp32"
    #: a compile failure is raised (``compile = "on"``) rather than answered by running that class eagerly
    strict: bool = True
    #: which compiled-code cache the prepared networks share (see :func:`compile_backbone`)
    scope: str = "step"

    @classmethod
    def resolve(cls, run: "RunConfig", device: torch.device) -> "HotPath":
        """The switches of ``[run]`` with ``"auto"`` / ``-1`` decided for ``device``."""
        on_cpu = device.type == "cpu"
        return cls(
            channels_last=run.channels_last == "on" or (run.channels_last == "auto" and on_cpu),
            real_chunk=(CPU_REAL_CHUNK if on_cpu else 0) if run.real_chunk < 0 else run.real_chunk,
            compile=wants_compile(run.compile, device),
            compile_first_order=wants_compile(run.compile, device),
            strict=run.compile == "on",
            precision=("bf16" if on_cpu else "fp32") if run.precision == "auto" else run.precision,
        )

    def prepare_net(self, net: nn.Module) -> nn.Module:
        """Apply the switches to a network the step runs or trains (in place, idempotent); returns ``net``."""
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        if self.compile:
            compile_backbone(net, self.scope, strict=self.strict)
        return net

    def first_order(self, net: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """``net``'s forward (logits) for a pass that is differentiated at most once (no ``create_graph``
        through it): compiled when ``compile_first_order`` is on and ``net`` has ``forward_all``, else ``net``.

        An objective that needs double backward on one side only (gradient matching: the synthetic side) runs
        its other side through this; the compiled code (scope ``"<scope>:first_order"``) treats the parameters
        as inputs, so gradients with respect to them flow as through ``net``.
        """
        cls = type(net)
        if not self.compile_first_order or is_compiled(net) or getattr(cls, "forward_all", None) is None:
            return net
        scope = f"{self.scope}:first_order"
        fn = _compiled_forward_all(cls, scope) if self.strict else _forward_or_eager(cls, scope)
        return lambda x: fn(net, x).logits

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """An image batch in the memory format the prepared networks expect."""
        if self.channels_last and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images


def wants_compile(choice: str, device: torch.device) -> bool:
    """A ``compile`` option (``"on"`` / ``"off"`` / ``"auto"``) decided for ``device``: ``"auto"`` is on for a CPU
    that can compile, where it measured faster (docs/benchmarks.md), and off elsewhere until measured there."""
    return choice == "on" or (choice == "auto" and device.type == "cpu" and can_compile(device))


def can_compile(device: torch.device) -> bool:
    """Whether torch.compile's default backend can build kernels for ``device`` here: a C++ compiler for a CPU,
    Triton for CUDA. ``"auto"`` switches check it, so a machine without a compiler just stays eager."""
    if device.type == "cpu":
        names = [os.environ.get("CXX"), "g++", "c++", "clang++"]
        return any(shutil.which(n) for n in names if n)
    if device.type == "cuda":
        return importlib.util.find_spec("triton") is not None
    return False


# Compiled functions per (backbone class, scope). A fresh network of the same architecture (DM draws one every step)
# reuses the compiled code, because dynamo treats the module's parameters as inputs rather than constants.
_COMPILED: dict[tuple[type, str], Callable] = {}


def _compiled_forward_all(cls: type, scope: str) -> Callable:
    fn = _COMPILED.get((cls, scope))
    if fn is None:
        def forward_all(self, x):
            out = cls.forward_all(self, x)
            # Outputs that are views of one another (a flattened channels_last map, MLP's [:, :, None, None]
            # map) are cloned inside the graph: AOTAutograd regenerates aliased outputs by replaying the view,
            # which fails for a non-viewable flatten of a channels_last map (torch 2.14); inside the graph the
            # copy fuses into the producing kernel.
            if not isinstance(out, BackboneOutput):
                return out
            return BackboneOutput(**{f.name: _own(getattr(out, f.name)) for f in dataclasses.fields(out)})

        # Dynamo keeps a bounded list of compiled variants (grad mode, shapes, memory format, ...) per code
        # object, then falls back to eager. A code object per (class, scope) gives the distillation step and
        # the evaluation networks separate budgets instead of one shared by everything that runs a ConvNet.
        forward_all.__code__ = forward_all.__code__.replace()
        forward_all.__qualname__ = f"{cls.__qualname__}.forward_all[{scope}]"
        fn = _COMPILED[(cls, scope)] = torch.compile(forward_all)
    return fn


def _own(value):
    return value.clone() if isinstance(value, torch.Tensor) else value


# (class, scope) pairs whose compiled code failed under a non-strict (``"auto"``) switch: they now run eagerly.
_FELL_BACK: set[tuple[type, str]] = set()
_TOLERANT: dict[tuple[type, str], Callable] = {}


def _forward_or_eager(cls: type, scope: str) -> Callable:
    """The compiled ``forward_all`` of ``cls``, falling back to eager for good when compiled code fails.

    A failure is the compiler's when the eager call succeeds; an error of the network itself (a wrong shape,
    out of memory) is raised again by the eager call. Used by ``compile = "auto"``, so that a machine on which
    torch.compile breaks (no Python headers, an inductor bug) still runs, with one warning.
    """
    key = (cls, scope)
    if key in _TOLERANT:
        return _TOLERANT[key]
    compiled = _compiled_forward_all(cls, scope)

    def forward_all(self, x):
        if key in _FELL_BACK:
            return cls.forward_all(self, x)
        try:
            return compiled(self, x)
        except Exception as exc:  # noqa: BLE001 - re-raised below unless eager succeeds
            out = cls.forward_all(self, x)
            _FELL_BACK.add(key)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            warnings.warn(f"torch.compile of {cls.__name__}.forward_all failed ({type(exc).__name__}: {first[:200]}); "
                          f"running it eagerly from now on (compile = 'auto'; 'on' raises the error, 'off' "
                          "does not compile)", RuntimeWarning, stacklevel=2)
            return out

    _TOLERANT[key] = forward_all
    return forward_all


def compile_backbone(net: nn.Module, scope: str = "step", strict: bool = True) -> nn.Module:
    """Route ``net.forward_all`` (and so ``net(x)``) through ``torch.compile``, in place; returns ``net``.

    The compiled function is shared by every instance of ``type(net)`` compiled with the same ``scope`` (the
    distillation step and the evaluation use separate ones). Networks without ``forward_all`` (plain
    ``nn.Module``) get :meth:`torch.nn.Module.compile`. Calling it again is a no-op. The compiled code supports
    one level of autograd, not double backward (``create_graph=True`` through the network). With
    ``strict=False`` a failure of the compiled code makes the class run eagerly from then on, with a warning.
    """
    if is_compiled(net):
        return net
    cls = type(net)
    if getattr(cls, "forward_all", None) is None:
        net.compile()
    else:
        # an instance attribute shadows the class method for this network only
        fn = _compiled_forward_all(cls, scope) if strict else _forward_or_eager(cls, scope)
        object.__setattr__(net, "forward_all", fn.__get__(net, cls))
    object.__setattr__(net, "_ddcore_compiled", True)
    return net


def is_compiled(net: nn.Module) -> bool:
    """Whether :func:`compile_backbone` was applied to ``net``."""
    return bool(net.__dict__.get("_ddcore_compiled", False))
