"""Multi-view triangulation: confidence-weighted DLT (Learnable Triangulation's algebraic method), RANSAC, and
:func:`triangulate_robust` (exhaustive pair hypotheses with per-view exclusion, vectorised over every joint;
the engine of ``humanvision triangulate``); :func:`fundamental_matrix` for epipolar geometry.

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

__all__ = [
    "RansacResult",
    "RobustResult",
    "fundamental_matrix",
    "reprojection_errors",
    "triangulate_dlt",
    "triangulate_ransac",
    "triangulate_robust",
]


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


# ------------------------------------------------------------------------------------------ robust, vectorised
class RobustResult(NamedTuple):
    """Output of :func:`triangulate_robust`."""

    points: Array  # (..., J, 3); NaN where fewer than ``min_views`` views agree
    inliers: Array  # (..., V, J) bool: the views each estimate uses (all False for a NaN joint)
    errors: Array  # (..., V, J) pixel reprojection error of the final point in every view with a finite uv


def _solve3(M: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve symmetric positive semi-definite 3x3 systems ``M x = b`` ((..., 3, 3), (..., 3)) by the adjugate.

    Elementwise arithmetic instead of one LAPACK call per system: for millions of tiny systems this is an order
    of magnitude faster than ``np.linalg.solve``. Near-singular systems (``det`` below ``1e-12`` of the product of
    the diagonal, which bounds it by Hadamard's inequality) give NaN.
    """
    a00, a01, a02 = M[..., 0, 0], M[..., 0, 1], M[..., 0, 2]
    a11, a12, a22 = M[..., 1, 1], M[..., 1, 2], M[..., 2, 2]
    c00, c01, c02 = a11 * a22 - a12 * a12, a02 * a12 - a01 * a22, a01 * a12 - a02 * a11
    c11, c12, c22 = a00 * a22 - a02 * a02, a01 * a02 - a00 * a12, a00 * a11 - a01 * a01
    det = a00 * c00 + a01 * c01 + a02 * c02
    ok = det > 1e-12 * np.abs(a00 * a11 * a22)
    det = np.where(ok, det, 1.0)
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    x = np.stack([c00 * b0 + c01 * b1 + c02 * b2, c01 * b0 + c11 * b1 + c12 * b2,
                  c02 * b0 + c12 * b1 + c22 * b2], -1) / det[..., None]
    return np.where(ok[..., None], x, np.nan)


def _reproject(P: np.ndarray, uv: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel errors and depths (n, H, V, J) of points X (n, H, J, 3) in views P (n, V, 3, 4) against uv (n, V, J, 2).

    Written out coordinate by coordinate on (n, H, V, J) arrays (no batched matmul of tiny matrices).
    """
    Pb = P[:, None, :, None]  # (n, 1, V, 1, 3, 4)
    Xb = X[:, :, None]  # (n, H, 1, J, 3)
    y = [Pb[..., r, 0] * Xb[..., 0] + Pb[..., r, 1] * Xb[..., 1] + Pb[..., r, 2] * Xb[..., 2] + Pb[..., r, 3]
         for r in range(3)]
    with np.errstate(divide="ignore", invalid="ignore"):
        du = y[0] / y[2] - uv[:, None, ..., 0]
        dv = y[1] / y[2] - uv[:, None, ..., 1]
    return np.sqrt(du * du + dv * dv), y[2]


def triangulate_robust(P: Array, uv: Array, conf: Array | None = None, *, threshold: float = 15.0,
                       min_views: int = 2, refine_iters: int = 5, chunk_size: int = 2_000_000) -> RobustResult:
    """Outlier-robust triangulation with per-view exclusion, vectorised over every leading axis and joint.

    The layout is the module's (``P`` (..., V, 3, 4) with ``K[2] = (0, 0, 1)``, so the third projected coordinate is
    the depth; ``uv`` (..., V, J, 2); ``conf`` (..., V, J)); frames, people and joints are all batch axes here.

    1. **Linear solves** use the inhomogeneous DLT: with each ``P_c`` scaled so its third row's rotation part has
       unit norm, the rows ``u P_c^3 - P_c^1`` and ``v P_c^3 - P_c^2`` give 3x3 normal equations that are summed
       over views and solved in closed form (no SVD; the algebraic residual of a view is its depth times its pixel
       error). Row weights are ``conf`` (normal equations ``conf**2``), as in :func:`triangulate_dlt`.
    2. **Hypotheses**: every pair of usable views is solved; a view is an inlier of a hypothesis when the point lies
       in front of it and reprojects within ``threshold`` pixels. The hypothesis with the most inliers wins (ties:
       the lower mean inlier error), as in :func:`triangulate_ransac` but exhaustive and without SVDs.
    3. **Leave-one-out pruning**: a wrong view can stay under the threshold by pulling the estimate towards
       itself, so while a joint has three or more inliers, the view with the largest error against the (linear)
       estimate of the others is dropped if that error exceeds ``threshold``. The error is studentized: divided
       by how well the others pin the point down as seen from that view, so that leaving out a good view of a
       nearly degenerate rest (e.g. two cameras facing each other) does not look like an outlier. Joints whose
       inliers all fit within ``threshold / 4`` skip the test.
    4. **Estimate** on the inliers with ``conf`` weights, polish by weighted Gauss-Newton on the pixel error
       (``refine_iters`` steps), then re-select the inliers once against the refined point (a view within
       ``threshold`` joins, one beyond it leaves) and re-estimate.
    5. Joints with fewer than ``min_views`` inliers are NaN (their ``inliers`` are all False).

    ``errors`` are the reprojection errors of the final points in every view with a finite ``uv`` (whatever its
    confidence), NaN elsewhere. Work is split into chunks of about ``chunk_size`` (hypothesis, view, joint)
    entries to bound memory. Runs in numpy float64; torch inputs give torch outputs on their device.
    """
    if min_views < 2:
        raise DataError(f"must be at least 2, got {min_views}", field="min_views")
    if not threshold > 0:
        raise DataError(f"must be positive, got {threshold}", field="threshold")
    is_torch = any(isinstance(a, torch.Tensor) for a in (P, uv, conf))
    ref = next(a for a in (uv, P, conf) if isinstance(a, torch.Tensor)) if is_torch else None
    P, uv, conf = (None if a is None else np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a,
                                                      dtype=np.float64) for a in (P, uv, conf))
    batch = _check(P, uv, conf)
    V, J = P.shape[-3], uv.shape[-2]
    n = int(np.prod(batch, dtype=np.int64))
    P = np.broadcast_to(P, batch + (V, 3, 4)).reshape(n, V, 3, 4)
    uv = np.broadcast_to(uv, batch + (V, J, 2)).reshape(n, V, J, 2)
    uv, w = _prepare(uv, None if conf is None else np.broadcast_to(conf, batch + (V, J)).reshape(n, V, J))
    pairs = np.asarray(list(combinations(range(V), 2)))  # (H, 2)
    step = max(1, int(chunk_size) // max(1, len(pairs) * V * J))
    X, inl, err = np.empty((n, J, 3)), np.empty((n, V, J), dtype=bool), np.empty((n, V, J))
    for s in range(0, n, step):
        sl = slice(s, min(n, s + step))
        X[sl], inl[sl], err[sl] = _robust_chunk(P[sl], uv[sl], w[sl], pairs, threshold, min_views, refine_iters)
    X, inl, err = X.reshape(batch + (J, 3)), inl.reshape(batch + (V, J)), err.reshape(batch + (V, J))
    if ref is not None:
        X, inl, err = (torch.as_tensor(a, device=ref.device) for a in (X, inl, err))
        X, err = X.to(ref.dtype), err.to(ref.dtype)
    return RobustResult(X, inl, err)


def _robust_chunk(P: np.ndarray, uv: np.ndarray, w: np.ndarray, pairs: np.ndarray, threshold: float,
                  min_views: int, refine_iters: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`triangulate_robust` on flat arrays P (n, V, 3, 4), uv (n, V, J, 2), w (n, V, J); see there."""
    usable = w > 0
    Pn = P / np.linalg.norm(P[:, :, 2, :3], axis=-1)[..., None, None]
    p3 = Pn[:, :, None, 2, :]  # (n, V, 1, 4)
    r1 = uv[..., 0, None] * p3 - Pn[:, :, None, 0, :]  # (n, V, J, 4)
    r2 = uv[..., 1, None] * p3 - Pn[:, :, None, 1, :]
    Mv = r1[..., :3, None] * r1[..., None, :3] + r2[..., :3, None] * r2[..., None, :3]  # (n, V, J, 3, 3)
    gv = r1[..., :3] * r1[..., 3:] + r2[..., :3] * r2[..., 3:]  # (n, V, J, 3)

    # 2. pair hypotheses
    a, b = pairs[:, 0], pairs[:, 1]
    pair_ok = usable[:, a] & usable[:, b]  # (n, H, J)
    Xh = _solve3(Mv[:, a] + Mv[:, b], -(gv[:, a] + gv[:, b]))  # (n, H, J, 3)
    e, z = _reproject(P, uv, Xh)  # (n, H, V, J)
    # A real point lies in front of every camera that detected it, whichever of them are outliers.
    in_front = ~(usable[:, None] & ~(z > 0)).any(2)  # (n, H, J)
    good = usable[:, None] & (z > 0) & (e < threshold)
    count = good.sum(2)
    mean = np.where(good, e, 0.0).sum(2) / np.maximum(count, 1)
    score = np.where(pair_ok & in_front & np.isfinite(Xh).all(-1), count - 0.5 * mean / threshold, -np.inf)
    best = score.argmax(1)  # (n, J)
    inliers = np.take_along_axis(good, best[:, None, None, :], axis=1)[:, 0]  # (n, V, J)
    inliers &= np.isfinite(np.take_along_axis(score, best[:, None], axis=1))  # no valid hypothesis: no inliers

    # 3. leave-one-out pruning: a wrong view can stay within the threshold by pulling the estimate towards itself.
    # While a joint keeps >= 3 inliers, drop the view with the largest studentized leave-one-out error if it
    # exceeds the threshold.
    for _ in range(max(0, P.shape[1] - 2)):
        # Only joints whose inliers do not all fit well are tested: a view within threshold / 4 of the joint fit of
        # the inliers can only exceed the threshold left out when it alone pins the point down (leverage > 0.94).
        cand = inliers.sum(1) >= 3  # (n, J)
        if not cand.any():
            break
        c = w * w * inliers
        X_in = _solve3((c[..., None, None] * Mv).sum(1), -(c[..., None] * gv).sum(1))
        e_in = _reproject(P, uv, X_in[:, None])[0][:, 0]  # (n, V, J)
        cand &= (np.where(inliers, e_in, 0.0).max(1) > threshold / 4) | ~np.isfinite(X_in).all(-1)
        if not cand.any():
            break
        ni, ji = np.nonzero(cand)
        sub = _loo_errors(P[ni], uv[ni, :, ji][:, :, None], w[ni, :, ji][..., None], inliers[ni, :, ji][..., None],
                          Mv[ni, :, ji][:, :, None], gv[ni, :, ji][:, :, None])[..., 0]  # (m, V)
        stat = np.full(inliers.shape, np.nan)
        stat[ni, :, ji] = sub
        stat = np.where(inliers & cand[:, None] & ~np.isnan(stat), stat, -np.inf)
        worst = stat.argmax(1)  # (n, J)
        drop = np.take_along_axis(stat, worst[:, None], 1)[:, 0] > threshold
        if not drop.any():
            break
        inliers = inliers & ~((np.arange(P.shape[1])[None, :, None] == worst[:, None]) & drop[:, None])

    # 4. estimate on the inliers, refine, re-select once, re-estimate
    def estimate(inliers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = (w * w * inliers)[..., None]
        X = _solve3((c[..., None] * Mv).sum(1), -(c * gv).sum(1))  # (n, J, 3)
        ok = np.isfinite(X).all(-1) & (inliers.sum(1) >= 2)
        if refine_iters > 0:
            X = _gauss_newton(P, uv, w * inliers * ok[:, None], np.where(ok[..., None], X, 0.0), refine_iters)
            X = np.where(ok[..., None], X, np.nan)
        e, z = _reproject(P, uv, X[:, None])
        return X, e[:, 0], z[:, 0]

    X, e, z = estimate(inliers)
    reselected = usable & (z > 0) & (e < threshold)
    changed = (reselected != inliers).any(1) & (reselected.sum(1) >= min_views)  # (n, J)
    if changed.any():
        X2, e2, _ = estimate(np.where(changed[:, None], reselected, inliers))
        inliers = np.where(changed[:, None], reselected, inliers)
        X, e = np.where(changed[..., None], X2, X), np.where(changed[:, None], e2, e)

    # 5. accept
    accept = np.isfinite(X).all(-1) & (inliers.sum(1) >= min_views)
    X = np.where(accept[..., None], X, np.nan)
    inliers = inliers & accept[:, None]
    e = np.where(accept[:, None] & np.isfinite(uv).all(-1), e, np.nan)
    return X, inliers, e


def _loo_errors(P: np.ndarray, uv: np.ndarray, w: np.ndarray, inliers: np.ndarray, Mv: np.ndarray,
                gv: np.ndarray) -> np.ndarray:
    """Studentized leave-one-out errors (n, V, J) in pixels: for each view v, the point is solved linearly from the
    other inliers, and v's residual r is scaled by the uncertainty of that point seen from v,
    ``sqrt(r^T (I + J_v H^-1 J_v^T)^-1 r)`` with ``J_v`` v's 2x3 projection Jacobian and ``H = sum_u J_u^T J_u``
    over the other inliers (unit pixel noise). Without the scaling, leaving out a good view of a nearly degenerate
    rest (two cameras facing each other) would look like an outlier. NaN where the rest cannot be solved."""
    c = w * w * inliers
    Mt, gt = (c[..., None, None] * Mv).sum(1), (c[..., None] * gv).sum(1)  # (n, J, 3, 3), (n, J, 3)
    X = _solve3(Mt[:, None] - c[..., None, None] * Mv, -(gt[:, None] - c[..., None] * gv))  # (n, Vout, J, 3)
    Pu = P[:, None, :, None]  # (n, 1, Vu, 1, 3, 4) against X[:, :, None] (n, Vout, 1, J, 3)
    Xb = X[:, :, None]
    y = [(Pu[..., r, :3] * Xb).sum(-1) + Pu[..., r, 3] for r in range(3)]  # (n, Vout, Vu, J)
    with np.errstate(divide="ignore", invalid="ignore"):
        iz = 1.0 / y[2]
        pu, pv = y[0] * iz, y[1] * iz
        ju = (Pu[..., 0, :3] - pu[..., None] * Pu[..., 2, :3]) * iz[..., None]  # (n, Vout, Vu, J, 3)
        jv = (Pu[..., 1, :3] - pv[..., None] * Pu[..., 2, :3]) * iz[..., None]
    others = (inliers[:, None] & ~np.eye(P.shape[1], dtype=bool)[None, :, :, None])[..., None, None]
    H = np.where(others, ju[..., :, None] * ju[..., None, :] + jv[..., :, None] * jv[..., None, :], 0.0).sum(2)
    d = np.arange(P.shape[1])
    ju_v, jv_v = ju[:, d, d], jv[:, d, d]  # (n, V, J, 3): the left-out view's own Jacobian
    ru, rv = pu[:, d, d] - uv[..., 0], pv[:, d, d] - uv[..., 1]
    au, av = _solve3(H, ju_v), _solve3(H, jv_v)  # H^-1 J_v^T, column by column
    s00 = 1 + (ju_v * au).sum(-1)
    s01 = (ju_v * av).sum(-1)
    s11 = 1 + (jv_v * av).sum(-1)
    det = s00 * s11 - s01 * s01
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = (s11 * ru * ru - 2 * s01 * ru * rv + s00 * rv * rv) / det
        out = np.sqrt(np.maximum(stat, 0.0))
    out = np.where(y[2][:, d, d] > 0, out, np.inf)  # a point behind the left-out camera: certainly wrong
    return np.where(np.isfinite(X).all(-1), out, np.nan)


def _gauss_newton(P: np.ndarray, uv: np.ndarray, w: np.ndarray, X: np.ndarray, iters: int) -> np.ndarray:
    """Weighted Gauss-Newton on ``sum_c w_c ||proj(P_c, X) - uv_c||^2`` for P (n, V, 3, 4), uv (n, V, J, 2),
    w (n, V, J), X (n, J, 3), written elementwise (the same model as :func:`_refine`, without batched matmuls of
    tiny matrices). A step is kept only where it lowers the cost; joints with zero weight stay where they are.
    Stops early once no step moves any point by more than 1e-10 of its coordinates."""
    uv = np.where(w[..., None] > 0, uv, 0.0)
    Pb = P[:, :, None]  # (n, V, 1, 3, 4)

    def linearise(X: np.ndarray):
        Xb = X[:, None]  # (n, 1, J, 3)
        y = [Pb[..., r, 0] * Xb[..., 0] + Pb[..., r, 1] * Xb[..., 1] + Pb[..., r, 2] * Xb[..., 2] + Pb[..., r, 3]
             for r in range(3)]
        with np.errstate(divide="ignore", invalid="ignore"):
            iz = 1.0 / y[2]
            pu, pv = y[0] * iz, y[1] * iz
        ru, rv = pu - uv[..., 0], pv - uv[..., 1]
        cost = (w * (ru * ru + rv * rv)).sum(1)  # (n, J)
        ju = (Pb[..., 0, :3] - pu[..., None] * Pb[..., 2, :3]) * iz[..., None]  # (n, V, J, 3)
        jv = (Pb[..., 1, :3] - pv[..., None] * Pb[..., 2, :3]) * iz[..., None]
        return ru, rv, ju, jv, cost

    ru, rv, ju, jv, cost = linearise(X)
    for _ in range(iters):
        wb = w[..., None, None]
        H = (wb * (ju[..., :, None] * ju[..., None, :] + jv[..., :, None] * jv[..., None, :])).sum(1)
        g = (w[..., None] * (ju * ru[..., None] + jv * rv[..., None])).sum(1)
        step = _solve3(H, g)
        if not (np.abs(step) > 1e-10 * (1.0 + np.abs(X))).any():  # converged everywhere (NaN steps: nothing to do)
            break
        X_new = X - step
        ru_n, rv_n, ju_n, jv_n, cost_n = linearise(X_new)
        better = np.isfinite(cost_n) & (cost_n < cost)
        if not better.any():
            break
        X = np.where(better[..., None], X_new, X)
        b2, b3 = better[:, None], better[:, None, :, None]
        ru, rv = np.where(b2, ru_n, ru), np.where(b2, rv_n, rv)
        ju, jv = np.where(b3, ju_n, ju), np.where(b3, jv_n, jv)
        cost = np.where(better, cost_n, cost)
    return X


def fundamental_matrix(P1: Array, P2: Array) -> np.ndarray:
    """The fundamental matrix F (..., 3, 3) of two views with projection matrices P1, P2 (..., 3, 4): a pixel x1 in
    view 1 and its match x2 in view 2 satisfy ``[x2, 1] F [x1, 1]^T = 0``; ``F [x1, 1]`` is x1's epipolar line
    in view 2. ``F = [e2]_x P2 P1^+`` with the epipole ``e2 = P2 C1`` (C1: view 1's centre, P1's null vector),
    scaled to unit Frobenius norm. numpy, float64, batched over leading axes.
    """
    from humanvision.geometry.rotation import skew

    P1, P2 = (np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64) for a in (P1, P2))
    check_last_dims(P1, (3, 4), "P1", "(..., 3, 4)")
    check_last_dims(P2, (3, 4), "P2", "(..., 3, 4)")
    C1 = np.linalg.svd(P1)[2][..., -1, :]  # (..., 4)
    e2 = (P2 @ C1[..., None])[..., 0]
    F = skew(e2) @ P2 @ np.linalg.pinv(P1)
    return F / np.linalg.norm(F, axis=(-2, -1), keepdims=True)
