"""Principal components that scale past memory, and the resolution maps of the image parameterization.

Two ways to get the first ``k`` components of an ``[n, d]`` row set that arrives in chunks:

* ``"gram"`` (default for ``d <= dense_limit``): accumulate the ``d x d`` second-moment matrix (and the row sum)
  in float64 chunk by chunk, then one ``eigh``. Exact, memory ``O(d^2)`` whatever ``n`` is; for the paper's
  3x16x16 image bases ``d = 768`` and for 512-d teacher features ``d = 512``, so this is the normal path.
* ``"lowrank"``: ``torch.pca_lowrank`` on (a uniform subsample of at most ``max_rows``) rows, for large ``d``
  where a ``d x d`` matrix does not fit.

``center=False`` gives the top right singular vectors of the *raw* rows, i.e. the rank-``k`` basis that minimises
``||X - X B^T B||`` with no mean term. That is exactly the form ``X_s = C B`` of Boost-SSDD (no mean is
stored), which is why it is the default of the parameterization. ``center=True`` gives classical PCA (the
caller must then store and add the mean).
"""

from __future__ import annotations

from typing import Iterable, Optional

import attrs
import torch
import torch.nn.functional as F

#: Above this dimension the Gram path is refused in "auto" mode and pca_lowrank is used.
DENSE_LIMIT = 8192


@attrs.define
class Components:
    """The result of a PCA fit.

    :ivar basis: ``[k, d]`` float32, orthonormal rows, sorted by decreasing variance, sign-normalised (the
        largest-magnitude entry of every row is positive) so results are reproducible.
    :ivar variance: ``[k]`` the second moment (``center=False``) or variance along each row.
    :ivar mean: ``[d]`` the row mean when centred, else ``None``.
    """

    basis: torch.Tensor
    variance: torch.Tensor
    mean: Optional[torch.Tensor]


def _normalise_signs(basis: torch.Tensor) -> torch.Tensor:
    idx = basis.abs().argmax(dim=1)
    signs = torch.sign(basis.gather(1, idx[:, None]))
    signs[signs == 0] = 1
    return basis * signs


class StreamedPCA:
    """Exact PCA from chunks: accumulates ``sum x`` and ``sum x x^T`` in float64."""

    def __init__(self, dim: int, *, center: bool = False):
        self.dim = dim
        self.center = center
        self.count = 0
        self._sum = torch.zeros(dim, dtype=torch.float64)
        self._gram = torch.zeros(dim, dim, dtype=torch.float64)

    def update(self, rows: torch.Tensor) -> None:
        """Add ``[n, dim]`` rows (any device/dtype; accumulated on the CPU in float64)."""
        rows = rows.detach().reshape(rows.shape[0], -1)
        if rows.shape[1] != self.dim:
            raise ValueError(f"StreamedPCA expects rows of dimension {self.dim}, got {rows.shape[1]}")
        r = rows.to(dtype=torch.float64)
        self._gram += (r.T @ r).cpu()
        self._sum += r.sum(0).cpu()
        self.count += int(rows.shape[0])

    def components(self, k: int) -> Components:
        if self.count == 0:
            raise ValueError("StreamedPCA.components() called before any update()")
        if not 1 <= k <= self.dim:
            raise ValueError(f"cannot take {k} components of a {self.dim}-dimensional space")
        moment = self._gram / self.count
        mean = None
        if self.center:
            mean64 = self._sum / self.count
            moment = moment - torch.outer(mean64, mean64)
            mean = mean64.float()
        evals, evecs = torch.linalg.eigh(moment)
        order = torch.argsort(evals, descending=True)[:k]
        basis = _normalise_signs(evecs[:, order].T.contiguous()).float()
        return Components(basis=basis, variance=evals[order].clamp_min(0).float(), mean=mean)


def lowrank_components(rows: torch.Tensor, k: int, *, center: bool = False, niter: int = 4,
                       generator: Optional[torch.Generator] = None) -> Components:
    """Randomised PCA (``torch.pca_lowrank``) of ``[n, d]`` rows; for dimensions too large for a Gram matrix."""
    rows = rows.detach().reshape(rows.shape[0], -1).float()
    n, d = rows.shape
    if not 1 <= k <= min(n, d):
        raise ValueError(f"cannot take {k} components of {n} rows of dimension {d}")
    mean = rows.mean(0) if center else None
    # pca_lowrank draws from the global RNG; fork it so the caller's stream is untouched and the result seeded.
    with torch.random.fork_rng(devices=[]):
        if generator is not None:
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        _, s, v = torch.pca_lowrank(rows, q=min(k + 8, n, d), center=center, niter=niter)
    basis = _normalise_signs(v[:, :k].T.contiguous())
    return Components(basis=basis, variance=(s[:k] ** 2) / max(n - 1, 1), mean=mean)


def fit_components(chunks: Iterable[torch.Tensor], dim: int, k: int, *, center: bool = False,
                   method: str = "auto", max_rows: int = 20000,
                   generator: Optional[torch.Generator] = None) -> Components:
    """First ``k`` principal components of rows that arrive as ``chunks`` (each ``[n_i, ...]`` flattening to ``dim``).

    :param method: ``"gram"`` (exact, streamed), ``"lowrank"`` (randomised, on at most ``max_rows`` rows) or
        ``"auto"`` (gram when ``dim <= DENSE_LIMIT``).
    """
    if method == "auto":
        method = "gram" if dim <= DENSE_LIMIT else "lowrank"
    if method == "gram":
        acc = StreamedPCA(dim, center=center)
        for chunk in chunks:
            acc.update(chunk)
        return acc.components(k)
    if method == "lowrank":
        kept: list[torch.Tensor] = []
        total = 0
        for chunk in chunks:
            chunk = chunk.detach().reshape(chunk.shape[0], -1).float().cpu()
            kept.append(chunk)
            total += chunk.shape[0]
        rows = torch.cat(kept)
        if rows.shape[0] > max_rows:
            idx = torch.randperm(rows.shape[0], generator=generator)[:max_rows]
            rows = rows[idx]
        return lowrank_components(rows, k, center=center, generator=generator)
    raise ValueError(f"unknown PCA method {method!r}; expected auto, gram or lowrank")


def project(rows: torch.Tensor, basis: torch.Tensor, mean: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Coefficients ``[n, k]`` of ``rows`` (flattened) on orthonormal ``basis`` ``[k, d]``."""
    flat = rows.reshape(rows.shape[0], -1)
    if mean is not None:
        flat = flat - mean
    return flat @ basis.T


def reconstruct(coefficients: torch.Tensor, basis: torch.Tensor, mean: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``[n, d]`` rows ``C B (+ mean)``."""
    out = coefficients @ basis.reshape(basis.shape[0], -1)
    return out if mean is None else out + mean


def downscale(images: torch.Tensor, scale: int) -> torch.Tensor:
    """Reduce ``[n, C, H, W]`` images by an integer ``scale`` (antialiased bilinear, the inverse of :func:`upsample`)."""
    if scale == 1:
        return images
    h, w = images.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"image size {h}x{w} is not divisible by the basis scale factor {scale}")
    return F.interpolate(images, size=(h // scale, w // scale), mode="bilinear", align_corners=False,
                         antialias=True)


def upsample(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The paper's ``D(., s)``: bilinear upsampling of ``[n, C, h, w]`` to ``size`` (differentiable, linear)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False)
