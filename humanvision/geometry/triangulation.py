"""Multi-view triangulation: confidence-weighted DLT (Learnable Triangulation's algebraic method) and RANSAC.

Layout (one batch convention for every function here):

* ``P``    (..., V, 3, 4)  projection matrices ``K [R | t]`` of the V views (pixels of the images that ``uv`` lives
  in, e.g. the 384x384 crops of LT, and undistorted).
* ``uv``   (..., V, J, 2)  2D points of J joints in each view.
* ``conf`` (..., V, J)     optional non-negative per-view, per-joint weights; views with weight 0 (or non-finite
  ``uv``, e.g. NaN for a missing detection) are ignored.
* result   (..., J, 3)     3D points.

Leading axes broadcast. Joints seen by fewer than two usable views cannot be triangulated and come back as NaN.
"""

from __future__ import annotations

from itertools import combinations
from typing import NamedTuple

import numpy as np
import torch

from humanvision.errors import DataError
from humanvision.geometry._array import Array, check_last_dims, to_common, xp
from humanvision.geometry.camera import project_with_matrix

__all__ = ["RansacResult", "reprojection_errors", "triangulate_dlt", "triangulate_ransac"]


def _check(P: Array, uv: Array, conf: Array | None) -> tuple[int, ...]:
    """Validate the layout; returns the broadcast batch shape. Errors name the offending argument."""
    check_last_dims(P, (3, 4), "P", "(..., V, 3, 4)")
    if P.ndim < 3:
        raise DataError(f"expected shape (..., V, 3, 4), got {tuple(P.shape)}", field="P")
    if uv.ndim < 3 or uv.shape[-1] != 2:
        raise DataError(f"expected shape (..., V, J, 2), got {tuple(uv.shape)}", field="uv")
    V = P.shape[-3]
    if uv.shape[-3] != V:
        raise DataError(f"has {uv.shape[-3]} views (axis -3 of {tuple(uv.shape)}) but P has {V} "
                        f"(axis -3 of {tuple(P.shape)})", field="uv")
    if V < 2:
        raise DataError(f"triangulation needs at least 2 views, got {V}", field="P")
    shapes = {"P": tuple(P.shape[:-3]), "uv": tuple(uv.shape[:-3])}
    if conf is not None:
        if conf.ndim < 2 or tuple(conf.shape[-2:]) != tuple(uv.shape[-3:-1]):
            raise DataError(f"expected shape (..., V, J) = (..., {V}, {uv.shape[-2]}) matching uv, "
                            f"got {tuple(conf.shape)}", field="conf")
        shapes["conf"] = tuple(conf.shape[:-2])
    try:
        return tuple(np.broadcast_shapes(*shapes.values()))
    except ValueError:
        raise DataError(f"leading (batch) axes do not broadcast: {shapes}", field="uv") from None


def _prepare(uv: Array, conf: Array | None) -> tuple[Array, Array]:
    """Zero the weight (and the coordinates) of unusable observations: conf == 0 or non-finite uv."""
    m = xp(uv)
    finite = m.isfinite(uv).all(-1)
    uv = m.where(finite[..., None], uv, 0.0)
    w = m.ones_like(uv[..., 0]) if conf is None else conf
    return uv, m.where(finite & (w != 0), w, 0.0)


def _stand_in(A: Array) -> Array:
    """A (2V, 4) matrix with singular values 4, 3, 2, 1, in A's backend/dtype."""
    d = np.zeros((A.shape[-2], 4))
    d[:4] = np.diag([4.0, 3.0, 2.0, 1.0])
    return torch.as_tensor(d, dtype=A.dtype, device=A.device) if isinstance(A, torch.Tensor) else d


def triangulate_dlt(P: Array, uv: Array, conf: Array | None = None) -> Array:
    """Confidence-weighted linear (DLT) triangulation, as LT's algebraic triangulation (pose3d.md section 2.3).

    For each joint, ``A = [w_c (u_c P_c^3 - P_c^1); w_c (v_c P_c^3 - P_c^2)]_c`` (2V x 4); the solution is the right
    singular vector of the smallest singular value, de-homogenised. ``conf`` are the weights ``w`` as given (LT
    feeds ``sigmoid / sum_views + 1e-5``); None means 1. Everything is batched into one SVD of shape
    (..., J, 2V, 4), computed in float64 (the result has the input dtype); in torch the gradient flows through the
    SVD to ``uv``, ``conf`` and ``P``. The solution is invariant to rescaling any ``P_c`` or all weights of a joint
    when the 2D points are exact; with noise the weights set each view's influence.
    """
    P, uv, conf = to_common(P, uv, conf, names=["P", "uv", "conf"])
    _check(P, uv, conf)
    m = xp(uv)
    out_dtype = uv.dtype
    P, uv, conf = (None if a is None else (a.double() if m is torch else a.astype(np.float64)) for a in (P, uv, conf))
    uv, w = _prepare(uv, conf)
    rows = uv[..., None] * P[..., None, 2:3, :] - P[..., None, 0:2, :]  # (..., V, J, 2, 4)
    rows = rows * w[..., None, None]
    A = rows.swapaxes(-4, -3)  # (..., J, V, 2, 4)
    A = A.reshape(tuple(A.shape[:-3]) + (2 * A.shape[-3], 4))
    valid = (w != 0).sum(-2) >= 2  # (..., J)
    # Under-determined joints get a well-conditioned stand-in (distinct singular values) so the batched SVD and its
    # backward stay finite; their result is replaced by NaN below.
    A = m.where(valid[..., None, None], A, _stand_in(A))
    Vh = m.linalg.svd(A, full_matrices=False)[2]
    Xh = Vh[..., -1, :]
    X = Xh[..., :3] / Xh[..., 3:]
    X = m.where(valid[..., None], X, float("nan"))
    return X.to(out_dtype) if m is torch else X.astype(out_dtype)


def reprojection_errors(P: Array, uv: Array, X: Array) -> Array:
    """Pixel distances ``|| proj(P_c, X_j) - uv_cj ||`` (..., V, J) for X (..., J, 3) (layout of the module)."""
    P, uv, X = to_common(P, uv, X, names=["P", "uv", "X"])
    batch = _check(P, uv, None)
    check_last_dims(X, (uv.shape[-2], 3), "X", f"(..., J={uv.shape[-2]}, 3)")
    try:
        batch = tuple(np.broadcast_shapes(batch, tuple(X.shape[:-2])))
    except ValueError:
        raise DataError(f"leading axes {tuple(X.shape[:-2])} do not broadcast with {batch}", field="X") from None
    m = xp(X)
    P = m.broadcast_to(P, batch + tuple(P.shape[-3:]))
    X = m.broadcast_to(X, batch + tuple(X.shape[-2:]))
    proj = project_with_matrix(X[..., None, :, :], P)  # camera axes (..., V) line up with X[..., None] (..., 1, J)
    d = proj - uv
    return xp(d).sqrt((d * d).sum(-1))


class RansacResult(NamedTuple):
    """Output of :func:`triangulate_ransac`."""

    points: Array  # (..., J, 3)
    inliers: Array  # (..., V, J) bool: views used for each joint's final estimate
    errors: Array  # (..., V, J) reprojection error in pixels of the final points in every view


def _refine(P: np.ndarray, uv: np.ndarray, w: np.ndarray, X: np.ndarray, iters: int) -> np.ndarray:
    """Weighted Gauss-Newton on the reprojection error ``sum_c w_c ||proj(P_c, X) - uv_c||^2`` (numpy).

    P (..., V, 3, 4), uv (..., V, J, 2), w (..., V, J), X (..., J, 3). A step is kept only where it lowers the cost.
    """
    Pj = P[..., None, :, :]  # (..., V, 1, 3, 4)

    def linearise(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Residuals (..., V, J, 2), their Jacobians w.r.t. X (..., V, J, 2, 3) and the cost (..., J)."""
        y = (Pj[..., :3] @ X[..., None, :, :, None])[..., 0] + Pj[..., 3]  # (..., V, J, 3)
        z = y[..., 2:]
        proj = y[..., :2] / z
        r = proj - uv
        jac = (Pj[..., :2, :3] - proj[..., :, None] * Pj[..., 2:3, :3]) / z[..., None]
        return r, jac, (w * (r * r).sum(-1)).sum(-2)

    r, jac, cost = linearise(X)
    for _ in range(iters):
        jtw = jac.swapaxes(-1, -2) * w[..., None, None]
        H = (jtw @ jac).sum(-4)  # (..., J, 3, 3)
        g = (jtw @ r[..., None]).sum(-4)  # (..., J, 3, 1)
        H = H + np.eye(3) * (1e-12 * np.trace(H, axis1=-2, axis2=-1)[..., None, None] + 1e-300)
        X_new = X - np.linalg.solve(H, g)[..., 0]
        r_new, jac_new, cost_new = linearise(X_new)
        better = np.isfinite(cost_new) & (cost_new < cost)
        if not better.any():
            break
        X = np.where(better[..., None], X_new, X)
        r = np.where(better[..., None, :, None], r_new, r)
        jac = np.where(better[..., None, :, None, None], jac_new, jac)
        cost = np.where(better, cost_new, cost)
    return X


def triangulate_ransac(P: Array, uv: Array, conf: Array | None = None, *, threshold: float = 30.0,
                       max_hypotheses: int | None = None, refine: bool = True, refine_iters: int = 10,
                       rng: np.random.Generator | int | None = None) -> RansacResult:
    """Robust triangulation that picks inlier views per joint by reprojection error, then refines on them.

    1. Hypotheses: each pair of usable views is DLT-triangulated (all ``V(V-1)/2`` pairs, or ``max_hypotheses``
       pairs drawn without replacement with ``rng``); LT draws 10 random pairs.
    2. A view is an inlier of a hypothesis if its reprojection error ``||Δ||`` is below ``threshold`` pixels (LT
       uses ``0.5 ||Δ|| < 15``, i.e. the default 30 here). The hypothesis with most inliers wins (ties: lower mean
       inlier error).
    3. The winner's inliers are DLT-triangulated with ``conf`` as weights, then (``refine``) polished by weighted
       Gauss-Newton on the reprojection error (LT uses scipy's Huber ``least_squares``; we drop the Huber loss
       because outliers are already excluded).

    Joints whose best hypothesis has fewer than two inliers fall back to all usable views (``inliers`` says so).
    Runs in numpy (not differentiable); torch inputs give torch outputs on the same device.
    """
    is_torch = any(isinstance(a, torch.Tensor) for a in (P, uv, conf))
    ref = next(a for a in (uv, P, conf) if isinstance(a, torch.Tensor)) if is_torch else None
    P, uv, conf = (None if a is None else np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a,
                                                      dtype=np.float64) for a in (P, uv, conf))
    batch = _check(P, uv, conf)
    V, J = P.shape[-3], uv.shape[-2]
    P = np.broadcast_to(P, batch + (V, 3, 4))
    uv, w = _prepare(np.broadcast_to(uv, batch + (V, J, 2)), conf)
    w = np.broadcast_to(w, batch + (V, J))
    usable = w != 0

    pairs = list(combinations(range(V), 2))
    if max_hypotheses is not None and max_hypotheses < len(pairs):
        pick = np.random.default_rng(rng).choice(len(pairs), size=max_hypotheses, replace=False)
        pairs = [pairs[i] for i in np.sort(pick)]
    idx = np.asarray(pairs)  # (H, 2)
    X_hyp = triangulate_dlt(P[..., idx, :, :], uv[..., idx, :, :], usable[..., idx, :].astype(np.float64))
    err = reprojection_errors(P[..., None, :, :, :], uv[..., None, :, :, :], X_hyp)  # (..., H, V, J)
    inl = usable[..., None, :, :] & np.isfinite(err) & (err < threshold)
    count = inl.sum(-2)  # (..., H, J)
    mean_err = np.where(inl, err, 0.0).sum(-2) / np.maximum(count, 1)
    score = count - 0.5 * mean_err / threshold  # the tie-break term is < 0.5, so it never overrides a count
    best = score.argmax(-2)  # (..., J)
    inliers = np.take_along_axis(inl, best[..., None, None, :], axis=-3)[..., 0, :, :]  # (..., V, J)
    inliers = np.where(inliers.sum(-2, keepdims=True) >= 2, inliers, usable)

    w_in = w * inliers
    X = triangulate_dlt(P, uv, w_in)
    if refine:
        ok = np.isfinite(X).all(-1)
        X = np.where(ok[..., None], _refine(P, uv, w_in, np.where(ok[..., None], X, 0.0), refine_iters), X)
    errors = reprojection_errors(P, uv, X)
    if ref is not None:
        X, inliers, errors = (torch.as_tensor(a, device=ref.device) for a in (X, inliers, errors))
        X, errors = X.to(ref.dtype), errors.to(ref.dtype)
    return RansacResult(X, inliers, errors)
