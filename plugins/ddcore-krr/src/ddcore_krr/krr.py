"""Objective ``krr``: the KRR-ST outer loss (paper eq. 4, official ``algorithms/distill.py``).

With f = the step network's embedding (``ctx.nets[0]``, the pool model in eval mode):

    F_s = [f(X_s), 1]            (m × (d_h+1), with grad)      F_r = [f(X_r), 1]   (b × (d_h+1), no grad)
    K   = F_s F_sᵀ               λ = ridge · tr(K)  (detached; scale-relative ridge of distill.py:41)
    Ŷ_r = F_r F_sᵀ (K + λ I)⁻¹ Y_s                 loss = MSE(Ŷ_r, g_φ(X_r))

The m×m system is solved by Cholesky (default) or ``torch.linalg.solve`` (LU), never an explicit inverse.
Numerics in float32 (see :func:`krr_predict`): Cholesky uses a split form that never builds the 1/λ-sized dual
coefficients; when d < m the identical primal d×d system is solved instead (the m×m kernel is then
rank-deficient); the prediction is invariant to a common rescaling of F_s and F_r (K, λ and F_r F_sᵀ all scale by
c²), so both are divided by the (detached) max-abs entry of F_s first, which keeps K's entries O(1) whatever the
feature magnitudes (the max-abs scale itself never overflows); K is symmetrised; and the relative ridge bounds
cond(K + λI) by 1 + 1/ridge. ``dtype =
"float64"`` solves in double precision when that is not enough.

Real batch: the engine's ``real`` batch (recipe ``real.sampling = "uniform"``, ``batch = 1024`` officially).
``real_augment = "crop_flip"`` applies the official ``aug_tr`` (RandomCrop(pad 4, zero pixels) + h-flip)
to it before both the teacher and f; ``"none"`` uses it as drawn, and then the teacher features come from a
per-training-image table (computed once, indexed by ``RealBatch.indices``) instead of a forward per step.
"""

from __future__ import annotations

from typing import Any, Optional

import attrs
import torch
import torch.nn.functional as F

from ddcore.components import Objective
from ddcore.config import option
from ddcore.errors import RecipeError

from ddcore_krr.teacher import get_teacher


def krr_predict(fs: torch.Tensor, fr: torch.Tensor, ys: torch.Tensor, *, ridge: float = 1e-6, bias: bool = True,
                solver: str = "cholesky", form: str = "auto", dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Kernel ridge regression prediction ``F_r F_sᵀ (F_s F_sᵀ + ridge·tr(F_s F_sᵀ) I)⁻¹ Y_s`` (see module doc).

    :param fs: ``[m, d]`` features of the support (synthetic) set; :param fr: ``[b, d]`` query features;
    :param ys: ``[m, k]`` support targets. :param bias: append a constant-1 feature column (the official code).
    :param solver: ``"cholesky"`` (default) or ``"solve"`` (LU); never an explicit inverse.
    :param form: ``"dual"`` (the m×m kernel system of eq. 4), ``"primal"`` (the equivalent d×d system
        ``F_r (F_sᵀF_s + λI)⁻¹ F_sᵀ Y_s``, push-through identity) or ``"auto"``: primal when d < m, where the m×m
        kernel is rank-deficient and the dual coefficients blow up as 1/λ (catastrophic cancellation in float32).
    :param dtype: compute dtype (default: ``fs``'s).
    :returns: ``[b, k]`` predictions in ``ys``'s dtype.

    With Cholesky the dual form is evaluated as ``(F_r Zᵀ)(L⁻¹ Y_s)`` with ``Z = L⁻¹ F_s`` (``L Lᵀ = K + λI``): ``Z``
    has singular values ≤ 1, so nothing of size 1/λ is ever formed (errors grow like 1/√λ instead of 1/λ).
    """
    out_dtype = ys.dtype
    dtype = dtype or fs.dtype
    fs, fr, y = fs.to(dtype), fr.to(dtype), ys.to(dtype)
    if bias:
        fs = torch.cat([fs, fs.new_ones(fs.shape[0], 1)], 1)
        fr = torch.cat([fr, fr.new_ones(fr.shape[0], 1)], 1)
    scale = fs.detach().abs().amax().clamp_min(torch.finfo(dtype).tiny ** 0.5)  # max-abs: its square cannot overflow
    fs, fr = fs / scale, fr / scale
    m, d = fs.shape
    if form == "auto":
        form = "primal" if d < m else "dual"
    if form not in ("primal", "dual"):
        raise ValueError(f"unknown form {form!r}; expected 'auto', 'primal' or 'dual'")
    if solver not in ("cholesky", "solve"):
        raise ValueError(f"unknown solver {solver!r}; expected 'solve' or 'cholesky'")
    gram = fs.T @ fs if form == "primal" else fs @ fs.T
    gram = 0.5 * (gram + gram.T)
    lam = ridge * torch.diagonal(gram).sum().detach()  # tr(FᵀF) = tr(FFᵀ)
    a = gram + lam * torch.eye(gram.shape[0], dtype=dtype, device=gram.device)
    if form == "primal":
        rhs = fs.T @ y
        w = torch.cholesky_solve(rhs, torch.linalg.cholesky(a)) if solver == "cholesky" else torch.linalg.solve(a, rhs)
        out = fr @ w
    elif solver == "cholesky":
        chol = torch.linalg.cholesky(a)
        z = torch.linalg.solve_triangular(chol, fs, upper=False)
        v = torch.linalg.solve_triangular(chol, y, upper=False)
        out = (fr @ z.T) @ v
    else:
        out = (fr @ fs.T) @ torch.linalg.solve(a, y)
    return out.to(out_dtype)


def crop_flip(x: torch.Tensor, generator: torch.Generator, *, pad: int = 4, fill: Optional[torch.Tensor] = None,
              flip: bool = True) -> torch.Tensor:
    """Per-sample random crop of the ``pad``-padded image back to its size, plus random h-flip; one gather.

    :param fill: ``[C]`` value of the padding (in the images' space; zero *pixels* are ``-mean/std`` once
        normalised); default 0.
    """
    b, c, h, w = x.shape
    if fill is None:
        xp = F.pad(x, (pad, pad, pad, pad))
    else:
        xp = fill.view(1, c, 1, 1).to(x.dtype).expand(b, c, h + 2 * pad, w + 2 * pad).clone()
        xp[:, :, pad:pad + h, pad:pad + w] = x
    dev = generator.device
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    if flip:
        do_flip = (torch.rand(b, generator=generator, device=dev) < 0.5).to(x.device)
        cols = torch.where(do_flip[:, None, None, None], cols.flip(-1), cols)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return xp[bi, ci, rows, cols]


@attrs.define(frozen=True, kw_only=True)
class KRRObjectiveConfig:
    """Options of the ``krr`` objective."""

    ridge: float = option(1e-6, "λ relative to tr(K_ss) (official distill.py:41: 1e-6).",
                          validator=attrs.validators.ge(0.0))
    bias: bool = option(True, "Append a constant-1 column to the features (official code).")
    loss: str = option("mean", "mean = F.mse_loss (official code); half_frobenius = ½‖·‖²_F / b (paper eq. 4, "
                               "per real image).", choices=("mean", "half_frobenius"))
    real_augment: str = option("crop_flip", "Augment the real batch before teacher and model: crop_flip = the "
                                            "official aug_tr (RandomCrop pad 4 + h-flip); none = as drawn (teacher "
                                            "features then come from a cached per-image table).",
                               choices=("crop_flip", "none"))
    solver: str = option("cholesky", "Linear solver: cholesky (split form, see krr_predict) or solve (LU).",
                         choices=("solve", "cholesky"))
    form: str = option("auto", "dual (m×m kernel, eq. 4), primal (d×d, identical result) or auto (primal when "
                               "d < m).", choices=("auto", "dual", "primal"))
    dtype: str = option("float32", "Dtype of the kernel solve.", choices=("float32", "float64"))


class KRRObjective(Objective):
    """KRR-ST outer loss: ridge head on f(X_s) fitted in closed form, evaluated against g_φ on real data."""

    coupling = "collective"  # the m×m solve couples every synthetic pair

    def __init__(self, config: KRRObjectiveConfig, build: Any):
        super().__init__(config, build)
        self.teacher = get_teacher(build)
        info = build.info
        self._zero_pixel = (-torch.tensor(info.mean) / torch.tensor(info.std)).to(build.device)

    def real_inputs(self, ctx: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The (possibly augmented) real images and their teacher features ``[b, d_y]`` (no grad)."""
        real = ctx.real
        if real is None:
            raise RecipeError("objective 'krr' needs a real batch: set real.sampling = \"uniform\"",
                              key="real.sampling")
        if self.config.real_augment == "none":
            return real.images, self.teacher.table(self.build.train)[real.indices]
        x = crop_flip(real.images, ctx.generator("krr-real-augment"), fill=self._zero_pixel)
        return x, self.teacher.features(x)

    def __call__(self, ctx: Any) -> torch.Tensor:
        net = ctx.net
        syn = ctx.syn
        if syn.targets is None:
            raise RecipeError("objective 'krr' needs synthetic targets (use synset name 'krr_pixels')", key="synset")
        fs = ctx.outputs(net, "syn").embedding
        x_real, y_real = self.real_inputs(ctx)
        if self.config.real_augment == "none":
            fr = ctx.outputs(net, "real").embedding
        else:
            with torch.no_grad():
                fr = net.forward_all(x_real).embedding
        dtype = torch.float64 if self.config.dtype == "float64" else torch.float32
        pred = krr_predict(fs.flatten(1), fr.flatten(1), syn.targets, ridge=self.config.ridge, bias=self.config.bias,
                           solver=self.config.solver, form=self.config.form, dtype=dtype)
        if self.config.loss == "mean":
            return F.mse_loss(pred, y_real)
        return 0.5 * (pred - y_real).pow(2).sum() / pred.shape[0]
