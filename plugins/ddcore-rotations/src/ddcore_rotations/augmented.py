"""Parameterization ``pca_augmented``: the ``pca`` set expanded by predefined views with per-view targets.

Boost-SSDD §3.3/§3.4. ``materialize()`` returns all ``m (A+1)`` pairs, view-major:

* images ``X~_s = [X_s; τ_1(X_s); ...; τ_A(X_s)]`` with ``X_s = D(C^x B^x, s)`` (gradients flow through τ_a, D);
* targets, while distilling: ``[C^y B^y; C_1^y B^y; ...; C_A^y B^y]`` — the per-view coefficients ``C_a^y``
  ``[A, m, V]`` are trainable parameters (in ``param_groups``), initialised by projecting teacher features of the
  augmented init images;
* targets, once :meth:`finalize` has run (after distillation): the *stored* form selected by ``targets``
  (Table 11): ``same`` ``Y_s`` for every view; ``bias`` ``(C^y + β_a) B^y`` with ``β_a`` the mean shift;
  ``approx`` ``Y_s + Q_a(C^y) B^y`` with the approximation networks Q_a (``V -> h -> V``); ``ideal`` the trained
  ``C_a^y B^y`` themselves (stores ``A m V`` more floats: the paper's over-budget upper bound).

Why a parameterization and not an expansion augmentation: the optimiser only sees ``param_groups()``, and the
``C_a^y`` must be optimised together with the images. (The plain ``predefined_views`` expansion of this plugin
repeats targets/labels unchanged, for other parameterizations.)

"After distillation" is the engine's ``ddcore_step_end`` of the last step (this plugin's hook calls
:meth:`finalize`), which comes before the final evaluation and the saved artefacts; ``ddcore_run_started`` on an
already finished run and ``ddcore_run_finished`` call it too (idempotent). Evaluations in the middle of a run
(``run.eval_every``) see the distillation-time targets (``C_a^y``, i.e. "ideal").
"""

from __future__ import annotations

from typing import Any

import attrs
import torch
from torch import nn

from ddcore.config import option, positive
from ddcore.errors import RecipeError
from ddcore.types import SynBatch
from ddcore_pca import pca as pca_ops
from ddcore_pca.parameterization import PCAConfig, PCAParameterization
from ddcore_pca.storage import TARGET_MODES

from ddcore_rotations.approx import ApproximationNets, fit_approximation
from ddcore_rotations.views import expand_names, make_view

AUG_TARGET_INITS = ("paper", "real", "reconstruction")


def _views_validator(instance, attribute, value) -> None:
    expand_names(tuple(value))  # raises ValueError with the offending name


@attrs.define(frozen=True, kw_only=True)
class PCAAugmentedConfig(PCAConfig):
    """Options of ``pca_augmented`` (all ``pca`` options plus the views and their targets)."""

    views: tuple[str, ...] = option(("rotation",), "Predefined views: sets 'rotation' (90/180/270), 'jigsaw' "
                                    "(lr, tb, both), 'crop' (5 crops) or single views (rot90, jigsaw_lr, crop_center, "
                                    "...); [] = no views (the plain pca set).", validator=_views_validator)
    crop: int = option(0, "Crop side for the crop views; 0 = 20/32 of the image side (paper: 20 at 32 px).")
    targets: str = option("approx", "Stored targets of the augmented views (Table 11): same | bias | approx | ideal.",
                          choices=TARGET_MODES)
    hidden: int = option(4, "Hidden width h of each approximation network (paper: 4 for CIFAR-100, 16 at 64 px).",
                         validator=positive)
    approx_epochs: int = option(3000, "Full-batch Adam steps fitting the approximation networks (not in the paper).",
                                validator=positive)
    approx_lr: float = option(1e-3, "Adam learning rate of the approximation networks (not in the paper).")
    aug_target_init: str = option(
        "paper", "Images whose teacher features initialise C_a^y (and C^y): 'paper' = C^y from the real init images, "
        "C_a^y from the views of the PCA-reconstructed init images (the paper's text); 'real' = both from the real "
        "images; 'reconstruction' = both from the reconstructed images.", choices=AUG_TARGET_INITS)


class PCAAugmented(PCAParameterization):
    """PCA images and targets expanded by A predefined views; per-view targets; approximation networks."""

    def __init__(self, config: PCAAugmentedConfig, build):
        check_views_fit(build, config)
        self.view_names = expand_names(tuple(config.views))
        self.num_views = len(self.view_names)
        super().__init__(config, build)
        self.views = [make_view(n, config.crop) for n in self.view_names]
        a = self.num_views
        self.register_buffer("finalized", torch.zeros((), dtype=torch.bool, device=build.device))
        if self.supervised or a == 0:  # no per-view targets (a == 0: the plain pca set, Table 3 "+Parameterization")
            self.coef_y_views = None
            self.approx = None
            self.register_buffer("view_bias", None)
            return
        m, v = self.coef_y.shape
        with torch.no_grad():
            if config.aug_target_init == "real":
                base = self._init_images
            else:
                base = self.base_images().detach()
            if config.aug_target_init == "reconstruction":
                self.coef_y.copy_(self._project_y(self.teacher(base)))
            view_feats = torch.stack([self.teacher(view(base)) for view in self.views])  # [A, m, d_y]
            coef_views = self._project_y(view_feats.reshape(a * m, -1)).reshape(a, m, v)
        self.coef_y_views = nn.Parameter(coef_views.contiguous())
        with build.seeded("approximation-nets"):
            self.approx = ApproximationNets(a, v, config.hidden).to(build.device)
        self.approx.requires_grad_(False)
        self.register_buffer("view_bias", torch.zeros(a, v, device=build.device))
        self.approx_mse: dict[str, float] = {}
        build.log(f"[pca_augmented] views {', '.join(self.view_names)}; stored targets '{config.targets}'; "
                  f"{self.describe_storage()}")

    def _plan_extras(self) -> dict[str, Any]:
        return {"num_aug": self.num_views, "target_mode": self.config.targets, "hidden": self.config.hidden}

    def _project_y(self, feats: torch.Tensor) -> torch.Tensor:
        return pca_ops.project(feats, self.basis_y.detach(), self.mean_y)

    # -- the synthetic set ----------------------------------------------------------------------------------
    def view_coefficients(self) -> torch.Tensor:
        """``[A, m, V]`` target coefficients of the views: trained ``C_a^y`` before finalize, the stored model after."""
        if not bool(self.finalized) or self.config.targets == "ideal":
            return self.coef_y_views
        c = self.coef_y
        mode = self.config.targets
        if mode == "same":
            return c.unsqueeze(0).expand(self.num_views, -1, -1)
        if mode == "bias":
            return c.unsqueeze(0) + self.view_bias[:, None, :]
        return c.unsqueeze(0) + self.approx(c)

    def materialize(self) -> SynBatch:
        x = self.base_images()
        images = torch.cat([x, *[view(x) for view in self.views]])
        if self.coef_y_views is None and not self.supervised:
            return SynBatch(images=images, targets=self.targets_of(self.coef_y))
        if self.supervised:
            return SynBatch(images=images, labels=self.labels.repeat(self.num_views + 1))
        coefs = torch.cat([self.coef_y.unsqueeze(0), self.view_coefficients()])  # [A+1, m, V]
        return SynBatch(images=images, targets=self.targets_of(coefs).reshape(images.shape[0], -1))

    def param_groups(self) -> list[dict[str, Any]]:
        groups = super().param_groups()
        if self.coef_y_views is not None:
            groups[0]["params"].append(self.coef_y_views)
        return groups

    # -- after distillation -------------------------------------------------------------------------------------
    @torch.no_grad()
    def finalize(self) -> dict[str, float]:
        """Fit the stored model of the view targets (bias / approximation networks) and switch to it. Idempotent."""
        if self.coef_y_views is None:
            self.finalized.fill_(True)
            return {}
        if bool(self.finalized):
            return self.approx_mse
        shifts = (self.coef_y_views - self.coef_y.unsqueeze(0)).detach()  # [A, m, V]
        self.view_bias.copy_(shifts.mean(1))
        mse = {"same": float(shifts.pow(2).mean()), "bias": float((shifts - self.view_bias[:, None]).pow(2).mean())}
        if self.config.targets == "approx":
            g = self.build.generator("approximation-nets", device=torch.device("cpu"))
            mse["approx"] = fit_approximation(self.approx, self.coef_y.detach(), shifts,
                                              epochs=self.config.approx_epochs, lr=self.config.approx_lr, generator=g)
        self.finalized.fill_(True)
        self.approx_mse = mse
        self.build.log("[pca_augmented] finalized view targets '" + self.config.targets + "': shift MSE "
                       + ", ".join(f"{k} {v:.4g}" for k, v in mse.items()))
        return mse

    def unfinalize(self) -> None:
        """Back to the distillation-time targets (the trained ``C_a^y`` are never discarded)."""
        self.finalized.fill_(False)

    # -- storage ------------------------------------------------------------------------------------------------
    def storage_breakdown(self) -> dict[str, int]:
        parts = super().storage_breakdown()
        if getattr(self, "coef_y_views", None) is None:  # also while the base class is still being built
            return parts
        mode = self.config.targets
        if mode == "bias":
            parts["view_bias"] = self.view_bias.numel()
        elif mode == "approx":
            parts["approximation_nets"] = self.approx.num_floats()
        elif mode == "ideal":
            parts["coef_y_views"] = self.coef_y_views.numel()
        return parts


def check_views_fit(build, config: PCAAugmentedConfig) -> None:
    """Fail early (RecipeError) when a view cannot apply to the dataset's images."""
    x = torch.zeros(1, *build.info.image_shape)
    for name in expand_names(tuple(config.views)):
        try:
            make_view(name, config.crop)(x)
        except ValueError as exc:
            raise RecipeError(str(exc), key="synset.views") from exc
