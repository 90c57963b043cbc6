"""Storage accounting of a PCA-parameterized set, and the budget rule N images -> (U, V, m).

The budget convention of Boost-SSDD (§4 "Storage Budget", Appendix A.1, Table 5) is "the floats of N
full-resolution images": ``N * c * h * w``. Everything stored counts against it: image bases ``U x d_b``,
representation bases ``V x d_y``, coefficients ``m x (U + V)``, and the per-augmentation extras (approximation
networks ``A * (V*h + h + h*V + V)``; bias vectors ``A * V``). The paper's rule of thumb is ``U = V = 2N``,
capped by the dimension of the space (``d_b`` for images, ``d_y`` for representations); Table 5 overrides
it for N >= 1000 (U = 500/700, V = 500), which a recipe expresses by giving U and V explicitly. ``m`` is not
stated in the paper; it follows as the largest count that fits (facts §7: CIFAR-100, N = 100 -> m = 114).

Hard labels (supervised mode) are integers and, as everywhere in the DD literature, not counted.
"""

from __future__ import annotations

from typing import Optional

import attrs

from ddcore.errors import RecipeError

#: target modelling of augmented views (Boost-SSDD Table 11) -> what is stored besides C^y.
TARGET_MODES = ("same", "bias", "approx", "ideal")


def approximation_floats(num_aug: int, dim: int, hidden: int) -> int:
    """Weights of A two-layer MLPs ``dim -> hidden -> dim`` (with biases)."""
    return num_aug * (dim * hidden + hidden + hidden * dim + dim)


def target_extra_floats(mode: str, num_aug: int, dim: int, hidden: int, m: int) -> int:
    """Floats stored for the targets of the A augmented views under ``mode`` (see :data:`TARGET_MODES`)."""
    if num_aug == 0 or dim == 0 or mode == "same":
        return 0
    if mode == "bias":
        return num_aug * dim
    if mode == "approx":
        return approximation_floats(num_aug, dim, hidden)
    if mode == "ideal":
        return num_aug * m * dim
    raise ValueError(f"unknown target mode {mode!r}; expected one of {', '.join(TARGET_MODES)}")


@attrs.define(frozen=True)
class StoragePlan:
    """Sizes of a PCA set and the floats it stores.

    :ivar m: number of synthetic images (rows of the coefficient matrices).
    :ivar num_bases_x: U.  :ivar num_bases_y: V (0 in supervised mode).
    :ivar total_floats: everything stored; ``image_equivalents = total_floats / floats_per_image``.
    """

    m: int
    num_bases_x: int
    num_bases_y: int
    floats_per_image: int
    basis_x_floats: int
    basis_y_floats: int
    coefficient_floats: int
    extra_floats: int
    mean_floats: int
    budget_images: Optional[int]

    @property
    def total_floats(self) -> int:
        return self.basis_x_floats + self.basis_y_floats + self.coefficient_floats + self.extra_floats + self.mean_floats

    @property
    def image_equivalents(self) -> float:
        return self.total_floats / self.floats_per_image



def plan_storage(
    *,
    floats_per_image: int,
    basis_dim: int,
    rep_dim: int,
    budget_images: int = 0,
    m: int = 0,
    num_bases_x: int = 0,
    num_bases_y: int = 0,
    num_aug: int = 0,
    target_mode: str = "approx",
    hidden: int = 4,
    center: bool = False,
    num_classes: int = 0,
    key: str = "synset",
) -> StoragePlan:
    """Derive ``(U, V, m)`` from a budget of ``budget_images`` full-resolution images, or check an explicit ``m``.

    :param basis_dim: ``d_b = c * h/s * w/s``.  :param rep_dim: ``d_y`` (0: no representation, supervised).
    :param num_classes: when > 0 (supervised), ``m`` is rounded down to a multiple of it (class-major layout).
    :param target_mode: how augmented targets are stored; ``"ideal"`` stores ``A*m*V`` floats and is the paper's
        over-budget upper bound, so ``m`` is derived as for ``"approx"`` and the plan then exceeds the budget.
    :raises RecipeError: when the budget cannot hold the bases plus one image (per class) of coefficients.
    """
    if budget_images <= 0 and m <= 0:
        raise RecipeError("give either a storage budget (images) or an explicit m", key=f"{key}.budget")
    rule = 2 * budget_images if budget_images > 0 else 2 * m
    u = num_bases_x or min(rule, basis_dim)
    v = (num_bases_y or min(rule, rep_dim)) if rep_dim > 0 else 0
    if u > basis_dim:
        raise RecipeError(f"U = {u} image bases exceed the basis dimension {basis_dim}", key=f"{key}.num_bases_x")
    if v > rep_dim:
        raise RecipeError(f"V = {v} representation bases exceed the representation dimension {rep_dim}",
                          key=f"{key}.num_bases_y")
    mean_floats = (basis_dim + (rep_dim if v else 0)) if center else 0
    fixed = u * basis_dim + v * rep_dim + mean_floats
    fixed_mode = "approx" if target_mode == "ideal" else target_mode
    fixed += target_extra_floats(fixed_mode, num_aug, v, hidden, 0)
    if m <= 0:
        budget = budget_images * floats_per_image
        per_image = u + v
        m = (budget - fixed) // per_image
        if num_classes > 0:
            m = (m // num_classes) * num_classes
        if m < max(1, num_classes):
            raise RecipeError(
                f"a budget of {budget_images} images ({budget} floats) cannot hold the {fixed} floats of "
                f"bases/extras (U={u}, V={v}) plus {max(1, num_classes)} coefficient row(s) of {per_image} floats; "
                f"raise the budget or lower num_bases_x/num_bases_y",
                key=f"{key}.budget",
            )
    elif num_classes > 0 and m % num_classes:
        raise RecipeError(f"m = {m} is not a multiple of the {num_classes} classes", key=f"{key}.m")
    extra = target_extra_floats(target_mode, num_aug, v, hidden, m)
    return StoragePlan(
        m=int(m),
        num_bases_x=int(u),
        num_bases_y=int(v),
        floats_per_image=int(floats_per_image),
        basis_x_floats=int(u * basis_dim),
        basis_y_floats=int(v * rep_dim),
        coefficient_floats=int(m * (u + v)),
        extra_floats=int(extra),
        mean_floats=int(mean_floats),
        budget_images=budget_images or None,
    )
