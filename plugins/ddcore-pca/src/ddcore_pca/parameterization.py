"""Parameterization ``pca``: images and target representations as trainable bases x trainable coefficients.

Boost-SSDD §3.2: ``X_s = D(C^x B^x, s)`` and ``Y_s = C^y B^y`` with

* ``B^x`` ``[U, c, h/s, w/s]``: the first U principal components of the (normalised) training images at reduced
  resolution (streamed exact PCA, see :mod:`ddcore_pca.pca`);
* ``C^x`` ``[m, U]``: projections of m random real images (downscaled) on ``B^x``;
* ``B^y`` ``[V, d_y]``: the first V principal components of the teacher's features of the training split;
* ``C^y`` ``[m, V]``: projections of the teacher's features of the same m images;
* ``D``: bilinear upsampling by the factor s.

All four tensors are trainable (the paper trains bases and coefficients). ``mode = "supervised"`` drops the
representation half and lays the m images out class-major with hard labels, so the parameterization serves
DM/IDM-style objectives too (``class_index`` marks the coefficient rows of each class; the bases are shared).
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

import attrs
import torch
from torch import nn

from ddcore.components import Parameterization
from ddcore.config import non_negative, option, positive
from ddcore.errors import RecipeError
from ddcore.types import SynBatch
from ddcore_krr.teacher import TeacherConfig

from ddcore_pca import pca as pca_ops
from ddcore_pca.storage import StoragePlan, plan_storage
from ddcore_pca.teacher import TeacherFeatures, resolve_teacher

MODES = ("ssl", "supervised")
BASIS_INITS = ("pca", "real", "random")
COEF_INITS = ("projection", "random")


@attrs.define(frozen=True, kw_only=True)
class PCAConfig:
    """Options of the ``pca`` parameterization."""

    mode: str = option("ssl", "'ssl': images + learned target representations (Boost-SSDD); 'supervised': images "
                       "with hard labels, class-major (for DM/IDM).", choices=MODES)
    budget: int = option(0, "Storage budget N in full-resolution images (floats = N*c*h*w); m, U, V are derived "
                         "from it (U = V = 2N capped by dimension). Supervised: N = ipc * classes. 0: give m.",
                         validator=non_negative)
    m: int = option(0, "Number of synthetic images; 0 derives it from `budget`. Supervised: a multiple of the "
                    "class count.", validator=non_negative)
    num_bases_x: int = option(0, "U, image bases; 0 = min(2N, c*h/s*w/s) (paper Table 5).", validator=non_negative)
    num_bases_y: int = option(0, "V, representation bases; 0 = min(2N, d_y) (paper Table 5).",
                              validator=non_negative)
    scale: int = option(2, "Basis down-scaling factor s (paper: 2 at 32 px, 4 at 64 px).", validator=positive)
    center: bool = option(False, "Classical centred PCA (stores and adds the means) instead of the paper's "
                          "X = C B with no mean term (top singular vectors of the raw rows).")
    pca_images: int = option(0, "Fit the bases on this many random training images; 0 = the whole split.",
                             validator=non_negative)
    pca_method: str = option("auto", "'gram' (exact, streamed d x d second moment), 'lowrank' "
                             "(torch.pca_lowrank on <= 20000 rows), 'auto' (gram when d <= 8192).",
                             choices=("auto", "gram", "lowrank"))
    chunk: int = option(1024, "Images per chunk when streaming the split through PCA / the teacher.",
                        validator=positive)
    basis_init: str = option("pca", "Table 4 ablation: 'pca' (principal components), 'real' (orthonormalised "
                             "random real images), 'random' (orthonormalised Gaussian).", choices=BASIS_INITS)
    coef_init: str = option("projection", "Table 4 ablation: 'projection' of m real images, or 'random' "
                            "(Gaussian with the projections' per-column std).", choices=COEF_INITS)
    train_bases: bool = option(True, "Train the bases as well as the coefficients (paper: yes).")
    basis_lr_scale: float = option(1.0, "Learning-rate multiplier of the bases' parameter group.")
    teacher: TeacherConfig = option(factory=TeacherConfig, doc="ssl mode: ddcore-krr's teacher options (table "
                                    "[synset.teacher]: path, or Barlow Twins settings); one teacher per run, shared "
                                    "with the KRR objective and evaluators.")


class PCAParameterization(Parameterization):
    """Trainable PCA bases and coefficients of images (and of target representations in ssl mode)."""

    #: number of augmented views whose targets this class stores (0 here; the augmented subclass sets it).
    num_views: int = 0

    def __init__(self, config: PCAConfig, build):
        super().__init__(config, build)
        info = build.info
        c, h, w = info.image_shape
        s = config.scale
        if h % s or w % s:
            raise RecipeError(f"image size {h}x{w} is not divisible by scale {s}", key="synset.scale")
        self.image_size = (h, w)
        self.basis_shape = (c, h // s, w // s)
        basis_dim = c * (h // s) * (w // s)
        self.supervised = config.mode == "supervised"
        self.teacher: Optional[TeacherFeatures] = None if self.supervised else resolve_teacher(build, config.teacher)
        rep_dim = 0 if self.supervised else self.teacher.dim
        self.plan: StoragePlan = plan_storage(
            floats_per_image=info.floats_per_image, basis_dim=basis_dim, rep_dim=rep_dim,
            budget_images=config.budget, m=config.m, num_bases_x=config.num_bases_x,
            num_bases_y=config.num_bases_y, center=config.center,
            num_classes=build.num_classes if self.supervised else 0, **self._plan_extras(),
        )
        m, u, v = self.plan.m, self.plan.num_bases_x, self.plan.num_bases_y
        device = build.device

        # -- which real images initialise the coefficients ------------------------------------------------
        gen = build.generator("pca-init")
        if self.supervised:
            ipc = m // build.num_classes
            smallest = min(build.train.class_counts)
            if ipc > smallest:
                raise RecipeError(f"the budget gives {ipc} images per class but a class has only {smallest} training "
                                  f"images to initialise them from; lower budget/m or raise num_bases_x",
                                  key="synset.budget")
            init_idx = build.train.random_indices_per_class([ipc] * build.num_classes, gen)
            self.register_buffer("labels", torch.arange(build.num_classes, device=device).repeat_interleave(ipc))
        else:
            n = int(build.train.images.shape[0])
            if m > n:
                raise RecipeError(f"m = {m} exceeds the {n} training images", key="synset.m")
            init_idx = torch.randperm(n, generator=gen, device=gen.device)[:m].to(build.train.images.device)
            self.labels = None
        self.init_indices = init_idx
        init_images = self._normalised(init_idx)  # [m, c, h, w]

        # -- image bases and coefficients --------------------------------------------------------------------
        comps = self._image_components(u, init_images)
        with torch.no_grad():
            coef_x = pca_ops.project(pca_ops.downscale(init_images, s), comps.basis.to(device),
                                     None if comps.mean is None else comps.mean.to(device))
            if config.coef_init == "random":
                coef_x = torch.randn(coef_x.shape, generator=build.generator("pca-coef-x"), device=gen.device
                                     ).to(device) * coef_x.std(0, keepdim=True)
        self.basis_x = nn.Parameter(comps.basis.to(device).reshape(u, *self.basis_shape).contiguous(),
                                    requires_grad=config.train_bases)
        self.coef_x = nn.Parameter(coef_x.contiguous())
        self.register_buffer("mean_x", None if comps.mean is None else comps.mean.to(device))

        # -- representation bases and coefficients (ssl) ----------------------------------------------------
        if not self.supervised:
            rep = self._feature_components(v)
            self.init_features = self.teacher(init_images)  # [m, d_y]
            with torch.no_grad():
                coef_y = pca_ops.project(self.init_features, rep.basis.to(device),
                                         None if rep.mean is None else rep.mean.to(device))
                if config.coef_init == "random":
                    coef_y = torch.randn(coef_y.shape, generator=build.generator("pca-coef-y"), device=gen.device
                                         ).to(device) * coef_y.std(0, keepdim=True)
            self.basis_y = nn.Parameter(rep.basis.to(device).contiguous(), requires_grad=config.train_bases)
            self.coef_y = nn.Parameter(coef_y.contiguous())
            self.register_buffer("mean_y", None if rep.mean is None else rep.mean.to(device))
        else:
            self.basis_y = None
            self.coef_y = None
            self.mean_y = None
        self._init_images = init_images
        build.log(f"[pca] {self.describe_storage()}")

    # ------------------------------------------------------------------------------------------------------
    def _plan_extras(self) -> dict[str, Any]:
        """Extra arguments of :func:`plan_storage` (augmentation views); overridden by subclasses."""
        return {}

    def _normalised(self, idx: torch.Tensor) -> torch.Tensor:
        train = self.build.train
        return train.normalize(train.images[idx.to(train.images.device)]).to(self.build.device).float()

    def _fit_indices(self) -> torch.Tensor:
        n = int(self.build.train.images.shape[0])
        k = self.config.pca_images
        if k and k < n:
            g = self.build.generator("pca-fit")
            return torch.randperm(n, generator=g, device=g.device)[:k].cpu()
        return torch.arange(n)

    def _chunks(self, fn) -> Iterator[torch.Tensor]:
        idx = self._fit_indices()
        for start in range(0, idx.numel(), self.config.chunk):
            with torch.no_grad():
                yield fn(self._normalised(idx[start:start + self.config.chunk]))

    def _image_components(self, u: int, init_images: torch.Tensor) -> pca_ops.Components:
        cfg = self.config
        dim = int(torch.Size(self.basis_shape).numel())
        key = ("ddcore_pca.image_components", self.build.seed, dim, u, cfg.scale, cfg.center, cfg.pca_images,
               cfg.pca_method, cfg.basis_init)
        cached = self.build.shared.get(key)
        if cached is not None:
            return cached
        if cfg.basis_init == "pca":
            comps = pca_ops.fit_components(self._chunks(lambda x: pca_ops.downscale(x, cfg.scale)), dim, u,
                                           center=cfg.center, method=cfg.pca_method,
                                           generator=self.build.generator("pca-lowrank", device=torch.device("cpu")))
        else:
            comps = _orthonormal_basis(self, u, dim, init_images)
        self.build.shared[key] = comps
        return comps

    def _feature_components(self, v: int) -> pca_ops.Components:
        cfg = self.config
        key = ("ddcore_pca.feature_components", self.build.seed, self.teacher.key, v, cfg.center, cfg.pca_images,
               cfg.pca_method, cfg.basis_init)
        cached = self.build.shared.get(key)
        if cached is not None:
            return cached
        if cfg.basis_init == "pca":
            comps = pca_ops.fit_components(self._chunks(self.teacher), self.teacher.dim, v, center=cfg.center,
                                           method=cfg.pca_method,
                                           generator=self.build.generator("pca-lowrank-y", device=torch.device("cpu")))
        else:
            g = self.build.generator("pca-random-basis-y", device=torch.device("cpu"))
            basis = torch.linalg.qr(torch.randn(self.teacher.dim, v, generator=g)).Q.T.contiguous()
            comps = pca_ops.Components(basis=basis, variance=torch.ones(v), mean=None)
        self.build.shared[key] = comps
        return comps

    # -- the synthetic set ----------------------------------------------------------------------------------
    def base_images(self) -> torch.Tensor:
        """``X_s = D(C^x B^x (+mean), s)``: ``[m, c, h, w]`` in normalised space."""
        flat = pca_ops.reconstruct(self.coef_x, self.basis_x, self.mean_x)
        return pca_ops.upsample(flat.view(-1, *self.basis_shape), self.image_size)

    def targets_of(self, coefficients: torch.Tensor) -> torch.Tensor:
        """Target representations ``C B^y (+mean)`` of any ``[..., V]`` coefficients."""
        out = coefficients @ self.basis_y
        return out if self.mean_y is None else out + self.mean_y

    def materialize(self) -> SynBatch:
        images = self.base_images()
        if self.supervised:
            return SynBatch(images=images, labels=self.labels)
        return SynBatch(images=images, targets=self.targets_of(self.coef_y))

    def param_groups(self) -> list[dict[str, Any]]:
        coefs = [p for p in (self.coef_x, self.coef_y) if p is not None]
        groups = [{"name": "coefficients", "params": coefs}]
        bases = [p for p in (self.basis_x, self.basis_y) if p is not None and p.requires_grad]
        if bases:
            groups.append({"name": "bases", "params": bases, "lr_scale": self.config.basis_lr_scale})
        return groups

    def class_index(self, param: torch.Tensor) -> Optional[torch.Tensor]:
        if self.supervised and param is self.coef_x:
            return self.labels
        return None

    # -- storage ------------------------------------------------------------------------------------------
    def storage_breakdown(self) -> dict[str, int]:
        """Floats stored per part (what must be saved to reproduce the final set)."""
        parts = {"basis_x": self.basis_x.numel(), "coef_x": self.coef_x.numel()}
        if self.mean_x is not None:
            parts["mean_x"] = self.mean_x.numel()
        if not self.supervised:
            parts["basis_y"] = self.basis_y.numel()
            parts["coef_y"] = self.coef_y.numel()
            if self.mean_y is not None:
                parts["mean_y"] = self.mean_y.numel()
        return parts

    def storage_floats(self) -> int:
        return int(sum(self.storage_breakdown().values()))

    def image_equivalents(self) -> float:
        return self.storage_floats() / self.build.info.floats_per_image

    def describe_storage(self) -> str:
        p = self.plan
        budget = f"budget {p.budget_images} images = {p.budget_images * p.floats_per_image} floats; " \
            if p.budget_images else ""
        parts = ", ".join(f"{k} {v}" for k, v in self.storage_breakdown().items())
        return (f"{budget}m = {p.m}, U = {p.num_bases_x}, V = {p.num_bases_y}; stores {self.storage_floats()} floats "
                f"= {self.image_equivalents():.2f} images ({parts})")

    # -- baselines --------------------------------------------------------------------------------------------
    @classmethod
    def baseline_kinds(cls, config: PCAConfig) -> tuple[str, ...]:
        """Supervised: the core's kinds; ssl: ddcore-krr's ``random`` / ``kmeans`` pairs with teacher targets."""
        if config.mode == "supervised":
            return Parameterization.baselines
        from ddcore_krr.parameterization import KRRPixels

        return KRRPixels.baselines

    def baseline(self, kind: str, budget_images: int, generator: torch.Generator) -> SynBatch:
        """Same-storage baselines: supervised -> the core's class-balanced selection; ssl -> ``random`` / ``kmeans``
        real images with teacher targets, as many pairs as fit in this set's floats (ddcore-krr's rule)."""
        if self.supervised:
            return super().baseline(kind, budget_images, generator)
        from ddcore_pca.teacher import ssl_baseline

        return ssl_baseline(self.build, self.teacher, kind, budget_images, generator)


def _orthonormal_basis(param: PCAParameterization, u: int, dim: int, init_images: torch.Tensor) -> pca_ops.Components:
    """Table 4 variants I/II: orthonormalised random Gaussian rows, or orthonormalised random real images."""
    g = param.build.generator("pca-random-basis", device=torch.device("cpu"))
    if param.config.basis_init == "random":
        raw = torch.randn(dim, u, generator=g)
    else:
        n = int(param.build.train.images.shape[0])
        idx = torch.randperm(n, generator=g)[:u]
        raw = pca_ops.downscale(param._normalised(idx), param.config.scale).reshape(u, -1).T.cpu()
    basis = torch.linalg.qr(raw).Q.T.contiguous()
    return pca_ops.Components(basis=basis, variance=torch.ones(u), mean=None)
