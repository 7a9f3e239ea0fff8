"""Similarity (Procrustes) alignment of point sets, as used by P-MPJPE (Protocol #2).

``similarity_transform(src, dst)`` is Umeyama's closed form (IEEE TPAMI 1991): it finds ``s, R, t`` minimising
``sum_i w_i || s R src_i + t - dst_i ||^2`` with ``R`` a rotation (``det R = +1``) unless reflections are allowed.
Point sets are (..., N, D) (D = 3 for poses; any D works), batched over leading axes, numpy or torch
(differentiable through the SVD, which is unstable only for degenerate, e.g. collinear, point sets).
"""

from __future__ import annotations

from typing import NamedTuple

from humanvision.errors import DataError
from humanvision.geometry._array import Array, clamp_min, to_common, xp

__all__ = ["Similarity", "apply_similarity", "procrustes_align", "similarity_transform"]


class Similarity(NamedTuple):
    """``x -> s R x + t``: scale (...,), rotation (..., D, D), translation (..., D)."""

    s: Array
    R: Array
    t: Array


def _check_pair(src: Array, dst: Array, weights: Array | None, names: tuple[str, str]) -> None:
    if src.ndim < 2:
        raise DataError(f"expected point sets (..., N, D), got shape {tuple(src.shape)}", field=names[0])
    if tuple(src.shape[-2:]) != tuple(dst.shape[-2:]):
        raise DataError(f"shape {tuple(dst.shape)} does not match {names[0]} {tuple(src.shape)} in (N, D)",
                        field=names[1])
    if weights is not None and (weights.ndim < 1 or weights.shape[-1] != src.shape[-2]):
        raise DataError(f"expected shape (..., N) with N = {src.shape[-2]}, got {tuple(weights.shape)}",
                        field="weights")


def similarity_transform(src: Array, dst: Array, *, scale: bool = True, reflection: bool = False,
                         weights: Array | None = None) -> Similarity:
    """Least-squares similarity ``dst ~ s R src + t`` for point sets (..., N, D) (Umeyama).

    ``scale=False`` fixes ``s = 1`` (rigid alignment). ``reflection=True`` allows ``det R = -1``. ``weights``
    (..., N) are non-negative per-point weights (0 excludes a point, e.g. an invisible joint). A degenerate
    ``src`` (all points equal) gives ``s = 0``.
    """
    src, dst, weights = to_common(src, dst, weights, names=["src", "dst", "weights"])
    _check_pair(src, dst, weights, ("src", "dst"))
    m = xp(src)
    if weights is None:
        weights = m.ones_like(src[..., 0])
    wsum = clamp_min(weights.sum(-1), 1e-12)[..., None]
    wn = weights / wsum  # (..., N), sums to 1
    mu_s = (wn[..., None] * src).sum(-2)
    mu_d = (wn[..., None] * dst).sum(-2)
    xs, xd = src - mu_s[..., None, :], dst - mu_d[..., None, :]
    var_s = (wn * (xs * xs).sum(-1)).sum(-1)
    cov = (xd * wn[..., None]).swapaxes(-1, -2) @ xs  # (..., D, D) = sum_i w_i xd_i xs_i^T
    U, S, Vh = m.linalg.svd(cov)
    if not reflection:
        # Flip the smallest singular direction when U Vh would be a reflection.
        sign = m.sign(m.linalg.det(U) * m.linalg.det(Vh))
        sign = m.where(sign == 0, 1.0, sign)
        flip = m.concatenate([m.ones_like(S[..., :-1]), sign[..., None] * m.ones_like(S[..., -1:])], -1)
    else:
        flip = m.ones_like(S)
    R = (U * flip[..., None, :]) @ Vh
    if scale:
        s = (S * flip).sum(-1) / clamp_min(var_s, 1e-300)
    else:
        s = m.ones_like(var_s)
    t = mu_d - s[..., None] * (R @ mu_s[..., None])[..., 0]
    return Similarity(s, R, t)


def apply_similarity(x: Array, transform: Similarity) -> Array:
    """``s R x + t`` for points (..., N, D) and a batched :class:`Similarity` with matching leading axes."""
    s, R, t = transform
    x, s, R, t = to_common(x, s, R, t, names=["x", "s", "R", "t"])
    return s[..., None, None] * (x @ R.swapaxes(-1, -2)) + t[..., None, :]


def procrustes_align(pred: Array, gt: Array, *, scale: bool = True, reflection: bool = False,
                     weights: Array | None = None, return_transform: bool = False) -> Array | tuple[Array, Similarity]:
    """Align ``pred`` (..., J, 3) to ``gt`` with the best similarity (P-MPJPE's alignment); returns the aligned
    prediction, and the :class:`Similarity` (mapping pred to gt) when ``return_transform``.

    Protocol #2 of Human3.6M aligns each frame separately with scale, rotation and translation, no reflection.
    """
    pred, gt, weights = to_common(pred, gt, weights, names=["pred", "gt", "weights"])
    _check_pair(pred, gt, weights, ("pred", "gt"))
    T = similarity_transform(pred, gt, scale=scale, reflection=reflection, weights=weights)
    aligned = apply_similarity(pred, T)
    return (aligned, T) if return_transform else aligned
