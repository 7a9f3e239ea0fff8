"""Lens distortion: the OpenCV radial-tangential model and the Human3.6M (Martinez) variant.

Both models take normalised image coordinates ``(x, y) = (X/Z, Y/Z)`` and coefficients stored in OpenCV order
``dist = (k1, k2, p1, p2, k3)`` (a 4-vector means ``k3 = 0``). With ``r^2 = x^2 + y^2`` and
``radial = 1 + k1 r^2 + k2 r^4 + k3 r^6``:

* ``"opencv"`` (``cv2.projectPoints``)::

      x_d = x radial + 2 p1 x y + p2 (r^2 + 2 x^2)
      y_d = y radial + p1 (r^2 + 2 y^2) + 2 p2 x y

* ``"h36m"`` (Martinez ``cameras.py`` / LT ``undistort-h36m.py``; same storage order, different tangential terms)::

      x_d = x radial + p1 x y + p2 (x^2 + r^2)
      y_d = y radial + p2 x y + p1 (y^2 + r^2)

Pixels are ``uv = K[:2, :2] @ (x_d, y_d) + K[:2, 2]`` (``K[2] = (0, 0, 1)``). Undistortion inverts the model with
Newton's method on the analytic 2x2 Jacobian (quadratic convergence; far below 1e-6 px after a few steps for
realistic lenses). The inverse is unique only inside the radius where the model is monotonic; for strong barrel
distortion points far outside the image have no meaningful inverse.

Functions are batched over leading axes; coefficients (..., 5) and K (..., 3, 3) may carry leading batch axes that
align with the leading axes of the points (a camera batch is a prefix of the point batch). They run on numpy arrays
and torch tensors (differentiable).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from humanvision.errors import DataError
from humanvision.geometry._array import Array, check_last_dims, to_common, xp

__all__ = [
    "DIST_MODELS",
    "apply_intrinsics",
    "distort",
    "distort_points",
    "distortion_jacobian",
    "normalize_pixels",
    "undistort",
    "undistort_image",
    "undistort_points",
    "undistortion_maps",
]

DistModel = Literal["opencv", "h36m"]
DIST_MODELS = ("opencv", "h36m")


def _check_model(model: str) -> None:
    if model not in DIST_MODELS:
        raise DataError(f"unknown distortion model {model!r}; expected one of {DIST_MODELS}", field="model")


def _align(param: Array, core_ndim: int, points: Array) -> Array:
    """Reshape a per-camera parameter (*B, *core) so its batch axes B line up with the leading axes of points
    (*B, *P, 2|3): insert singleton axes for the extra point axes P."""
    nb = param.ndim - core_ndim
    extra = points.ndim - 1 - nb
    if extra <= 0:
        return param
    return param.reshape(tuple(param.shape[:nb]) + (1,) * extra + tuple(param.shape[nb:]))


def _coeffs(dist: Array, like: Array) -> tuple[Array, ...]:
    """Split (..., 4|5) coefficients into k1, k2, p1, p2, k3, each aligned with ``like`` (..., 2)."""
    if dist.ndim == 0 or dist.shape[-1] not in (4, 5):
        raise DataError(f"expected distortion coefficients (..., 5) as (k1, k2, p1, p2, k3) or (..., 4), "
                        f"got shape {tuple(dist.shape)}", field="dist")
    d = _align(dist, 1, like)
    k3 = d[..., 4] if d.shape[-1] == 5 else xp(d).zeros_like(d[..., 0])
    return d[..., 0], d[..., 1], d[..., 2], d[..., 3], k3


def distort(xy: Array, dist: Array | None, model: DistModel = "opencv") -> Array:
    """Apply lens distortion to normalised coordinates ``xy`` (..., 2). ``dist=None`` returns ``xy`` unchanged."""
    _check_model(model)
    xy, dist = to_common(xy, dist, names=["xy", "dist"])
    check_last_dims(xy, (2,), "xy", "(..., 2)")
    if dist is None:
        return xy
    k1, k2, p1, p2, k3 = _coeffs(dist, xy)
    x, y = xy[..., 0], xy[..., 1]
    x2, y2, xy_ = x * x, y * y, x * y
    r2 = x2 + y2
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    if model == "opencv":
        xd = x * radial + 2 * p1 * xy_ + p2 * (r2 + 2 * x2)
        yd = y * radial + p1 * (r2 + 2 * y2) + 2 * p2 * xy_
    else:
        xd = x * radial + p1 * xy_ + p2 * (x2 + r2)
        yd = y * radial + p2 * xy_ + p1 * (y2 + r2)
    return xp(xy).stack([xd, yd], -1)


def distortion_jacobian(xy: Array, dist: Array, model: DistModel = "opencv") -> Array:
    """Jacobian ``d distort(xy) / d xy`` (..., 2, 2) (rows: x_d, y_d; columns: x, y)."""
    _check_model(model)
    xy, dist = to_common(xy, dist, names=["xy", "dist"])
    check_last_dims(xy, (2,), "xy", "(..., 2)")
    k1, k2, p1, p2, k3 = _coeffs(dist, xy)
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    g = 2 * k1 + r2 * (4 * k2 + 6 * k3 * r2)  # d radial / d x = g x,  d radial / d y = g y
    if model == "opencv":
        a = radial + g * x * x + 2 * p1 * y + 6 * p2 * x
        b = g * x * y + 2 * p1 * x + 2 * p2 * y
        c = g * x * y + 2 * p1 * x + 2 * p2 * y
        d = radial + g * y * y + 6 * p1 * y + 2 * p2 * x
    else:
        a = radial + g * x * x + p1 * y + 4 * p2 * x
        b = g * x * y + p1 * x + 2 * p2 * y
        c = g * x * y + p2 * y + 2 * p1 * x
        d = radial + g * y * y + p2 * x + 4 * p1 * y
    m = xp(xy)
    return m.stack([m.stack([a, b], -1), m.stack([c, d], -1)], -2)


def undistort(xy_d: Array, dist: Array | None, model: DistModel = "opencv", iters: int = 10) -> Array:
    """Invert :func:`distort` on normalised coordinates (..., 2) with ``iters`` Newton steps from ``x = x_d``.

    A fixed number of steps keeps the torch path differentiable (the steps are unrolled); 10 steps reach machine
    precision for realistic coefficients (|k1| <= 0.5, image radius in normalised units <= 1).
    """
    _check_model(model)
    xy_d, dist = to_common(xy_d, dist, names=["xy_d", "dist"])
    check_last_dims(xy_d, (2,), "xy_d", "(..., 2)")
    if dist is None:
        return xy_d
    m = xp(xy_d)
    xy = xy_d
    for _ in range(iters):
        e = distort(xy, dist, model) - xy_d
        J = distortion_jacobian(xy, dist, model)
        a, b, c, d = J[..., 0, 0], J[..., 0, 1], J[..., 1, 0], J[..., 1, 1]
        det = a * d - b * c
        det = m.where(m.abs(det) < 1e-12, 1e-12, det)  # singular Jacobian: only outside the invertible radius
        step = m.stack([d * e[..., 0] - b * e[..., 1], a * e[..., 1] - c * e[..., 0]], -1) / det[..., None]
        xy = xy - step
    return xy


def apply_intrinsics(xy: Array, K: Array) -> Array:
    """Normalised coordinates (..., 2) -> pixels: ``K[:2, :2] @ xy + K[:2, 2]`` (K (..., 3, 3), batch-prefix)."""
    xy, K = to_common(xy, K, names=["xy", "K"])
    check_last_dims(K, (3, 3), "K", "(..., 3, 3)")
    K = _align(K, 2, xy)
    return (K[..., :2, :2] @ xy[..., None])[..., 0] + K[..., :2, 2]


def normalize_pixels(uv: Array, K: Array) -> Array:
    """Pixels (..., 2) -> normalised coordinates, the inverse of :func:`apply_intrinsics` (any 2x2 part of K)."""
    uv, K = to_common(uv, K, names=["uv", "K"])
    check_last_dims(uv, (2,), "uv", "(..., 2)")
    check_last_dims(K, (3, 3), "K", "(..., 3, 3)")
    K = _align(K, 2, uv)
    a, b, c, d = K[..., 0, 0], K[..., 0, 1], K[..., 1, 0], K[..., 1, 1]
    du, dv = uv[..., 0] - K[..., 0, 2], uv[..., 1] - K[..., 1, 2]
    det = a * d - b * c
    return xp(uv).stack([(d * du - b * dv) / det, (a * dv - c * du) / det], -1)


def distort_points(uv: Array, K: Array, dist: Array | None, model: DistModel = "opencv") -> Array:
    """Ideal (undistorted) pixels (..., 2) -> the pixels where the lens actually images them (same K)."""
    uv, K, dist = to_common(uv, K, dist, names=["uv", "K", "dist"])
    if dist is None:
        return uv
    return apply_intrinsics(distort(normalize_pixels(uv, K), dist, model), K)


def undistort_points(uv: Array, K: Array, dist: Array | None, model: DistModel = "opencv", *, iters: int = 10,
                     new_K: Array | None = None) -> Array:
    """Observed (distorted) pixels (..., 2) -> ideal pinhole pixels.

    The result is expressed with ``new_K`` (default: the same ``K``, as in the H36M undistorted images of LT).
    This matches ``cv2.undistortPoints(uv, K, dist, P=new_K)`` for the OpenCV model, but iterates to convergence.
    """
    uv, K, dist, new_K = to_common(uv, K, dist, new_K, names=["uv", "K", "dist", "new_K"])
    xy = undistort(normalize_pixels(uv, K), dist, model, iters=iters)
    return apply_intrinsics(xy, K if new_K is None else new_K)


def undistortion_maps(K: Array, dist: Array | None, size: tuple[int, int], model: DistModel = "opencv",
                      new_K: Array | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` maps (float32, (H, W) each) that undistort an image of ``size = (W, H)``.

    For every output pixel ``(u, v)`` (integer pixel coordinates, no half-pixel offset): normalise with ``new_K``
    (default ``K``), distort, and map back with ``K``; the result is where to sample the distorted input.
    Compute once per camera and reuse for every frame of a sequence.
    """
    _check_model(model)
    w, h = int(size[0]), int(size[1])
    K = np.asarray(K, dtype=np.float64)
    check_last_dims(K, (3, 3), "K", "(3, 3)")
    new_K = K if new_K is None else np.asarray(new_K, dtype=np.float64)
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64), indexing="xy")
    xy = normalize_pixels(np.stack([u, v], -1), new_K)
    if dist is not None:
        xy = distort(xy, np.asarray(dist, dtype=np.float64), model)
    uv_d = apply_intrinsics(xy, K).astype(np.float32)
    return uv_d[..., 0], uv_d[..., 1]


def undistort_image(img: np.ndarray, K: Array, dist: Array | None, model: DistModel = "opencv", *,
                    new_K: Array | None = None, interpolation: int | None = None,
                    border_value: float = 0.0) -> np.ndarray:
    """Undistort an image (H, W[, C]) with ``cv2.remap``; the output keeps the same K unless ``new_K`` is given.

    This is the LT preprocessing of H36M (``model="h36m"``, bicubic interpolation): projections of world points
    through the undistorted camera (same K, no distortion) land on the right pixels of the output.
    """
    import cv2

    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise DataError(f"expected an image (H, W) or (H, W, C), got shape {img.shape}", field="img")
    interpolation = cv2.INTER_CUBIC if interpolation is None else interpolation
    map_x, map_y = undistortion_maps(K, dist, (img.shape[1], img.shape[0]), model, new_K)
    return cv2.remap(img, map_x, map_y, interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=border_value)

