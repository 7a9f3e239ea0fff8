"""Pinhole cameras with optional lens distortion.

Conventions (as in Learnable Triangulation, pose3d.md section 0):

* ``x_cam = R @ X_world + t``; world units are millimetres by convention (nothing here depends on the unit).
* Camera frame: x right, y down, z forward (OpenCV). Points with ``z <= 0`` are behind the camera; their
  projections are returned as computed (no masking) and are meaningless.
* ``[u w, v w, w] = K @ x_cam`` without distortion; with distortion the normalised coordinates ``x_cam[:2] / z``
  are distorted first (see :mod:`humanvision.geometry.distortion`). ``P = K [R | t]`` (3x4) ignores distortion.
* Pixel coordinates have no half-pixel offset: pixel ``(i, j)`` of an image is the point ``u = j, v = i``; crops
  subtract the box corner and resizes multiply by the size ratio, as in LT's ``update_after_crop/resize``.

Free functions are batched: points are (..., 3) and camera parameters may carry leading batch axes that line up
with the leading axes of the points (``K`` (*B, 3, 3), ``R`` (*B, 3, 3), ``t`` (*B, 3), ``dist`` (*B, 5) with
points (*B, *N, 3)); they run on numpy arrays and torch tensors (differentiable).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from humanvision.errors import DataError
from humanvision.geometry._array import Array, check_last_dims, eye_like, to_common, xp
from humanvision.geometry.distortion import (
    DIST_MODELS,
    DistModel,
    _align,
    apply_intrinsics,
    distort,
    normalize_pixels,
    undistort,
)

__all__ = [
    "Camera",
    "camera_center",
    "camera_to_world",
    "from_homogeneous",
    "project_points",
    "project_with_matrix",
    "projection_matrix",
    "to_homogeneous",
    "unproject_points",
    "update_after_crop",
    "update_after_resize",
    "world_to_camera",
]


def to_homogeneous(x: Array) -> Array:
    """Append a coordinate 1: (..., D) -> (..., D + 1)."""
    (x,) = to_common(x, names=["x"])
    return xp(x).concatenate([x, xp(x).ones_like(x[..., :1])], -1)


def from_homogeneous(x: Array) -> Array:
    """Divide by the last coordinate and drop it: (..., D + 1) -> (..., D). Points at infinity give inf/nan."""
    (x,) = to_common(x, names=["x"])
    return x[..., :-1] / x[..., -1:]


def world_to_camera(X: Array, R: Array, t: Array) -> Array:
    """``R @ X + t`` for points X (..., 3); R (*B, 3, 3) and t (*B, 3) line up with the leading axes of X."""
    X, R, t = to_common(X, R, t, names=["X", "R", "t"])
    check_last_dims(X, (3,), "X", "(..., 3)")
    check_last_dims(R, (3, 3), "R", "(..., 3, 3)")
    check_last_dims(t, (3,), "t", "(..., 3)")
    return (_align(R, 2, X) @ X[..., None])[..., 0] + _align(t, 1, X)


def camera_to_world(X_cam: Array, R: Array, t: Array) -> Array:
    """Inverse of :func:`world_to_camera`: ``R.T @ (X_cam - t)``."""
    X_cam, R, t = to_common(X_cam, R, t, names=["X_cam", "R", "t"])
    check_last_dims(X_cam, (3,), "X_cam", "(..., 3)")
    check_last_dims(R, (3, 3), "R", "(..., 3, 3)")
    check_last_dims(t, (3,), "t", "(..., 3)")
    return (_align(R, 2, X_cam).swapaxes(-1, -2) @ (X_cam - _align(t, 1, X_cam))[..., None])[..., 0]


def camera_center(R: Array, t: Array) -> Array:
    """Camera centre in world coordinates, ``-R.T @ t`` (..., 3)."""
    R, t = to_common(R, t, names=["R", "t"])
    return -(R.swapaxes(-1, -2) @ t[..., None])[..., 0]


def projection_matrix(K: Array, R: Array | None = None, t: Array | None = None) -> Array:
    """``P = K @ [R | t]`` (..., 3, 4); ``R``/``t`` default to the identity / zero."""
    K, R, t = to_common(K, R, t, names=["K", "R", "t"])
    check_last_dims(K, (3, 3), "K", "(..., 3, 3)")
    m = xp(K)
    if R is None:
        R = m.broadcast_to(eye_like(3, K), K.shape)
    if t is None:
        t = m.zeros_like(R[..., 0])
    Rt = m.concatenate([R, t[..., None]], -1)
    return K @ Rt


def project_with_matrix(X: Array, P: Array) -> Array:
    """Pixels ``from_h(P @ to_h(X))`` (..., 2) for points X (..., 3) and P (*B, 3, 4) aligned with X's leading axes."""
    X, P = to_common(X, P, names=["X", "P"])
    check_last_dims(X, (3,), "X", "(..., 3)")
    check_last_dims(P, (3, 4), "P", "(..., 3, 4)")
    P = _align(P, 2, X)
    y = (P[..., :3] @ X[..., None])[..., 0] + P[..., 3]
    return y[..., :2] / y[..., 2:]


def project_points(X: Array, K: Array, R: Array | None = None, t: Array | None = None,
                   dist: Array | None = None, model: DistModel = "opencv") -> Array:
    """Project points X (..., 3) to pixels (..., 2).

    ``X`` is in world coordinates when ``R``/``t`` are given, otherwise in the camera frame. ``dist`` applies lens
    distortion with ``model`` ("opencv" matches ``cv2.projectPoints``; "h36m" is the Martinez variant).
    """
    X, K, R, t, dist = to_common(X, K, R, t, dist, names=["X", "K", "R", "t", "dist"])
    check_last_dims(X, (3,), "X", "(..., 3)")
    if R is not None or t is not None:
        if R is None or t is None:
            raise DataError("R and t must be given together", field="R" if R is None else "t")
        X = world_to_camera(X, R, t)
    xy = distort(X[..., :2] / X[..., 2:], dist, model)
    return apply_intrinsics(xy, K)


def unproject_points(uv: Array, depth: Array, K: Array, R: Array | None = None, t: Array | None = None,
                     dist: Array | None = None, model: DistModel = "opencv", iters: int = 10) -> Array:
    """Back-project pixels (..., 2) at camera-frame depth ``z`` (broadcast with uv[..., 0]) to 3D points (..., 3).

    Undistorts first (``dist``/``model``); returns world points when ``R``/``t`` are given, camera points otherwise.
    """
    uv, depth, K, R, t, dist = to_common(uv, depth, K, R, t, dist, names=["uv", "depth", "K", "R", "t", "dist"])
    check_last_dims(uv, (2,), "uv", "(..., 2)")
    xy = undistort(normalize_pixels(uv, K), dist, model, iters=iters)
    z = xp(uv).broadcast_to(depth, xy.shape[:-1])
    X = xp(uv).stack([xy[..., 0] * z, xy[..., 1] * z, z], -1)
    if R is not None or t is not None:
        if R is None or t is None:
            raise DataError("R and t must be given together", field="R" if R is None else "t")
        X = camera_to_world(X, R, t)
    return X


def _check_camera_matrix(M: Array) -> None:
    if M.ndim < 2 or M.shape[-2] != 3 or M.shape[-1] not in (3, 4):
        raise DataError(f"expected K (..., 3, 3) or P (..., 3, 4), got {tuple(M.shape)}", field="M")


def update_after_crop(M: Array, box: Array) -> Array:
    """Intrinsics ``K`` (..., 3, 3) or a projection matrix ``P`` (..., 3, 4) of an image -> those of its crop
    ``box`` (..., 4) = ``(left, top, right, bottom)`` pixels (LT's ``update_after_crop``, pose3d.md 1.5 step 3).

    ``M' = [[1, 0, -left], [0, 1, -top], [0, 0, 1]] @ M``: for K, ``c_x -= left`` and ``c_y -= top``; a pixel
    ``(u, v)`` of the image is ``(u - left, v - top)`` of the crop (no half-pixel term). Batched over leading
    axes (numpy or torch, differentiable); ``right``/``bottom`` are not used (a crop does not scale).
    """
    M, box = to_common(M, box, names=["M", "box"])
    _check_camera_matrix(M)
    check_last_dims(box, (4,), "box", "(..., 4) = (left, top, right, bottom)")
    m = xp(M)
    r0 = M[..., 0, :] - box[..., 0:1] * M[..., 2, :]
    r1 = M[..., 1, :] - box[..., 1:2] * M[..., 2, :]
    return m.stack([r0, r1, m.broadcast_to(M[..., 2, :], r0.shape)], -2)


def update_after_resize(M: Array, old_size: Array, new_size: Array) -> Array:
    """``K`` (..., 3, 3) or ``P`` (..., 3, 4) of an image of ``old_size`` (..., 2) = ``(width, height)`` -> those
    of the image resized to ``new_size`` (..., 2) (LT's ``update_after_resize``, pose3d.md 1.5 step 4).

    ``M' = diag(W'/W, H'/H, 1) @ M``: for K, ``f_x, c_x *= W'/W`` and ``f_y, c_y *= H'/H`` (LT's convention, no
    pixel-centre term; see :meth:`Camera.scale` for the cv2 one). Batched (numpy or torch, differentiable).
    """
    M, old_size, new_size = to_common(M, old_size, new_size, names=["M", "old_size", "new_size"])
    _check_camera_matrix(M)
    check_last_dims(old_size, (2,), "old_size", "(..., 2) = (width, height)")
    check_last_dims(new_size, (2,), "new_size", "(..., 2) = (width, height)")
    if (old_size <= 0).any():
        raise DataError("sizes must be positive", field="old_size")
    m = xp(M)
    s = new_size / old_size  # (..., 2)
    r0 = M[..., 0, :] * s[..., 0:1]
    r1 = M[..., 1, :] * s[..., 1:2]
    return m.stack([r0, r1, m.broadcast_to(M[..., 2, :], r0.shape)], -2)


def _matrix(value: Any, shape: tuple[int, ...], field: str, file: str | None, record: str | None) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(f"expected numbers, got {value!r} ({e})", file=file, record=record, field=field) from None
    # A vector may come as a column or row matrix (H36M labels store t as (3, 1)).
    if a.shape != shape and not (len(shape) == 1 and a.shape in ((shape[0], 1), (1, shape[0]))):
        raise DataError(f"expected shape {shape}, got {a.shape}", file=file, record=record, field=field)
    a = a.reshape(shape)
    if not np.isfinite(a).all():
        raise DataError("contains non-finite values", file=file, record=record, field=field)
    return a


def _validated(K: Any, R: Any, t: Any, dist: Any, dist_model: str, width: Any, height: Any,
               file: str | None = None, record: str | None = None) -> dict[str, Any]:
    """Checked and converted camera fields; errors name the file, record and field."""
    K = _matrix(K, (3, 3), "K", file, record)
    if not np.allclose(K[2], (0.0, 0.0, 1.0), atol=1e-9):
        raise DataError(f"last row must be (0, 0, 1), got {K[2].tolist()}", file=file, record=record, field="K")
    if abs(K[0, 0] * K[1, 1] - K[0, 1] * K[1, 0]) < 1e-12:
        raise DataError("the 2x2 focal part is singular", file=file, record=record, field="K")
    R = _matrix(R, (3, 3), "R", file, record)
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0:
        raise DataError("not a rotation matrix (R R^T != I or det < 0)", file=file, record=record, field="R")
    t = _matrix(t, (3,), "t", file, record)
    if dist is not None:
        d = np.asarray(dist, dtype=np.float64).reshape(-1)
        if d.size not in (4, 5) or not np.isfinite(d).all():
            raise DataError(f"expected 5 finite coefficients (k1, k2, p1, p2, k3) or 4, got {d.tolist()}",
                            file=file, record=record, field="dist")
        dist = np.concatenate([d, np.zeros(5 - d.size)])
    if dist_model not in DIST_MODELS:
        raise DataError(f"unknown distortion model {dist_model!r}; expected one of {DIST_MODELS}",
                        file=file, record=record, field="dist_model")
    sizes = {}
    for field, v in (("width", width), ("height", height)):
        if v is not None and (not float(v).is_integer() or int(v) <= 0):
            raise DataError(f"expected a positive integer, got {v!r}", file=file, record=record, field=field)
        sizes[field] = None if v is None else int(v)
    return dict(K=K, R=R, t=t, dist=dist, dist_model=dist_model, **sizes)


@dataclass(eq=False)
class Camera:
    """A calibrated camera: intrinsics ``K``, extrinsics ``R``, ``t`` (``x_cam = R X + t``), optional distortion.

    Attributes:
        K: (3, 3) intrinsics ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` (after an affine crop the 2x2 part may be
            any invertible matrix).
        R: (3, 3) world-to-camera rotation.
        t: (3,) world-to-camera translation (mm by convention); ``(3, 1)`` input is accepted.
        dist: distortion coefficients ``(k1, k2, p1, p2, k3)`` or ``None`` (a 4-vector gets ``k3 = 0``).
        dist_model: "opencv" or "h36m" (Martinez; see :mod:`humanvision.geometry.distortion`).
        width, height: image size in pixels, if known; crops and resizes keep them up to date.
        name: optional identifier (e.g. the H36M camera id ``"54138969"``).

    Methods accept numpy arrays or torch tensors of points (batched over leading axes) and return the same kind.
    Transforming methods (``crop``, ``scale``, ``resize``, ``undistorted``) return new cameras.
    """

    K: np.ndarray
    R: np.ndarray | None = None
    t: np.ndarray | None = None
    dist: np.ndarray | None = None
    dist_model: DistModel = "opencv"
    width: int | None = None
    height: int | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        R = np.eye(3) if self.R is None else self.R
        t = np.zeros(3) if self.t is None else self.t
        fields = _validated(self.K, R, t, self.dist, self.dist_model, self.width, self.height,
                            record=None if self.name is None else f"camera {self.name}")
        for k, v in fields.items():
            object.__setattr__(self, k, v)

    # ----------------------------------------------------------------------------------------------- properties
    @property
    def projection_matrix(self) -> np.ndarray:
        """``P = K [R | t]`` (3, 4); ignores distortion (use it on undistorted pixels)."""
        return self.K @ np.concatenate([self.R, self.t[:, None]], 1)

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates, ``-R.T t``."""
        return -self.R.T @ self.t

    @property
    def is_distorted(self) -> bool:
        """Whether projection applies non-zero distortion coefficients."""
        return self.dist is not None and bool(np.any(self.dist != 0))

    @property
    def image_size(self) -> tuple[int, int] | None:
        """``(width, height)`` or ``None`` when unknown."""
        return None if self.width is None or self.height is None else (self.width, self.height)

    # ----------------------------------------------------------------------------------------------- mapping points
    def world_to_camera(self, X: Array) -> Array:
        """World points (..., 3) -> camera frame."""
        return world_to_camera(X, self.R, self.t)

    def camera_to_world(self, X_cam: Array) -> Array:
        """Camera-frame points (..., 3) -> world."""
        return camera_to_world(X_cam, self.R, self.t)

    def project(self, X: Array, distort: bool = True) -> Array:
        """World points (..., 3) -> pixels (..., 2), with the lens distortion unless ``distort=False``."""
        dist = self.dist if distort and self.is_distorted else None
        return project_points(X, self.K, self.R, self.t, dist, self.dist_model)

    def unproject(self, uv: Array, depth: Array, undistort: bool = True) -> Array:
        """Pixels (..., 2) with camera-frame depth ``z`` (...,) -> world points (..., 3); undistorts first."""
        dist = self.dist if undistort and self.is_distorted else None
        return unproject_points(uv, depth, self.K, self.R, self.t, dist, self.dist_model)

    def depth(self, X: Array) -> Array:
        """Camera-frame depth ``z`` (...,) of world points (..., 3)."""
        return self.world_to_camera(X)[..., 2]

    # ----------------------------------------------------------------------------------------------- new cameras
    def crop(self, region: Any, size: tuple[int, int] | None = None) -> Camera:
        """The camera of a crop of this camera's image.

        ``region`` is either a box ``(x0, y0, x1, y1)`` (LTRB pixels; may extend past the image, as with PIL's
        zero-padded crop), giving ``cx -= x0, cy -= y0`` and size ``(x1 - x0, y1 - y0)``; or an affine matrix
        (2, 3) or (3, 3) mapping this image's pixels to the output's (e.g. from ``cv2.getAffineTransform`` or
        the crop helpers of :mod:`humanvision.geometry.affine`), giving ``K' = A K``, with ``size = (W, H)`` of
        the output. Distortion is unchanged (it acts before K, so the composition is exact).
        """
        A = np.asarray(region, dtype=np.float64)
        if A.shape == (4,):
            x0, y0, x1, y1 = A
            if x1 <= x0 or y1 <= y0:
                raise DataError(f"box must have x1 > x0 and y1 > y0, got {A.tolist()}", field="region")
            M = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
            size = (round(x1 - x0), round(y1 - y0)) if size is None else size
        elif A.shape in ((2, 3), (3, 3)):
            M = np.concatenate([A[:2], [[0.0, 0.0, 1.0]]], 0)
            if A.shape == (3, 3) and not np.allclose(A[2], (0, 0, 1)):
                raise DataError(f"expected an affine matrix (last row 0 0 1), got {A.tolist()}", field="region")
        else:
            raise DataError(f"expected a box (4,) or an affine matrix (2, 3)/(3, 3), got shape {A.shape}",
                            field="region")
        w, h = (None, None) if size is None else (int(size[0]), int(size[1]))
        return replace(self, K=M @ self.K, width=w, height=h)

    def scale(self, sx: float, sy: float | None = None, *, pixel_centers: bool = False) -> Camera:
        """The camera of this image resized by factors ``(sx, sy)`` (``sy`` defaults to ``sx``).

        Default (LT convention): ``u' = sx u``, ``v' = sy v``. With ``pixel_centers=True`` the cv2.resize pixel-centre
        convention ``u' = sx (u + 0.5) - 0.5`` is used instead. Width/height are scaled and rounded.
        """
        sy = sx if sy is None else sy
        if sx <= 0 or sy <= 0:
            raise DataError(f"scale factors must be positive, got ({sx}, {sy})", field="sx" if sx <= 0 else "sy")
        ox, oy = (0.5 * (sx - 1), 0.5 * (sy - 1)) if pixel_centers else (0.0, 0.0)
        M = np.array([[sx, 0.0, ox], [0.0, sy, oy], [0.0, 0.0, 1.0]])
        w = None if self.width is None else round(self.width * sx)
        h = None if self.height is None else round(self.height * sy)
        return replace(self, K=M @ self.K, width=w, height=h)

    def resize(self, width: int, height: int, *, pixel_centers: bool = False) -> Camera:
        """The camera of this image resized to ``(width, height)``; needs the current size."""
        if self.width is None or self.height is None:
            raise DataError("resize needs the current image size; set width and height", field="width")
        cam = self.scale(width / self.width, height / self.height, pixel_centers=pixel_centers)
        return replace(cam, width=int(width), height=int(height))

    def undistorted(self) -> Camera:
        """The camera of the undistorted image (same K, as in LT's H36M preprocessing): ``dist=None``."""
        return replace(self, dist=None)

    # ----------------------------------------------------------------------------------------------- (de)serialise
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (lists of floats)."""
        return {
            "K": self.K.tolist(), "R": self.R.tolist(), "t": self.t.tolist(),
            "dist": None if self.dist is None else self.dist.tolist(), "dist_model": self.dist_model,
            "width": self.width, "height": self.height, "name": self.name,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, file: str | None = None, record: str | None = None) -> Camera:
        """Inverse of :meth:`to_dict`; ``R``/``t``/``dist`` and the rest are optional. Errors name file/record/field."""
        if not isinstance(d, Mapping):
            raise DataError(f"expected a mapping, got {type(d).__name__}", file=file, record=record)
        unknown = set(d) - {"K", "R", "t", "dist", "dist_model", "width", "height", "name"}
        if unknown:
            raise DataError(f"unknown keys {sorted(unknown)}", file=file, record=record)
        if "K" not in d:
            raise DataError("missing", file=file, record=record, field="K")
        name = d.get("name")
        record = record if record is not None else (None if name is None else f"camera {name}")
        fields = _validated(d["K"], d.get("R", np.eye(3)), d.get("t", np.zeros(3)), d.get("dist"),
                            d.get("dist_model", "opencv"), d.get("width"), d.get("height"), file, record)
        return cls(name=None if name is None else str(name), **fields)

    # ----------------------------------------------------------------------------------------------- constructors
    @classmethod
    def look_at(cls, eye: Sequence[float], target: Sequence[float] = (0.0, 0.0, 0.0),
                up: Sequence[float] = (0.0, 0.0, 1.0), K: Any = None, *, focal: float | None = None,
                width: int | None = None, height: int | None = None, dist: Any = None,
                dist_model: DistModel = "opencv", name: str | None = None) -> Camera:
        """A camera at ``eye`` looking at ``target`` with ``up`` (world, default +z as in H36M) pointing up in
        the image (image y axis points down, i.e. along ``-up`` projected onto the image plane).

        Give ``K``, or ``focal`` with ``width``/``height`` (principal point at ``(width / 2, height / 2)``).
        """
        eye, target, up = (np.asarray(v, dtype=np.float64).reshape(3) for v in (eye, target, up))
        z = target - eye
        if np.linalg.norm(z) < 1e-12:
            raise DataError("eye and target coincide", field="target")
        z = z / np.linalg.norm(z)
        x = np.cross(z, up)
        if np.linalg.norm(x) < 1e-9 * np.linalg.norm(up):
            raise DataError("up is parallel to the viewing direction", field="up")
        x = x / np.linalg.norm(x)
        R = np.stack([x, np.cross(z, x), z])
        if K is None:
            if focal is None or width is None or height is None:
                raise DataError("give K, or focal with width and height", field="K")
            K = [[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]]
        return cls(K=K, R=R, t=-R @ eye, dist=dist, dist_model=dist_model, width=width, height=height, name=name)

    @classmethod
    def from_martinez_h5(cls, R: Any, T: Any, f: Any, c: Any, k: Any, p: Any, *, name: str | None = None,
                         width: int | None = None, height: int | None = None) -> Camera:
        """A Human3.6M camera from Martinez's ``cameras.h5`` datasets (``subjectN/cameraM/{R,T,f,c,k,p}``).

        There ``x_cam = R_h5.T @ (X - T)``, so ``R = R_h5.T``, ``t = -R T`` (T is the centre in world mm),
        ``K = [[f_x, 0, c_x], [0, f_y, c_y], [0, 0, 1]]``, ``dist = (k1, k2, p1, p2, k3)`` with the "h36m" model.
        """
        Rw = np.asarray(R, dtype=np.float64).reshape(3, 3).T
        T, f, c = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (T, f, c))
        k, p = np.asarray(k, dtype=np.float64).reshape(3), np.asarray(p, dtype=np.float64).reshape(2)
        K = [[f[0], 0.0, c[0]], [0.0, f[1], c[1]], [0.0, 0.0, 1.0]]
        dist = [k[0], k[1], p[0], p[1], k[2]]
        return cls(K=K, R=Rw, t=-Rw @ T, dist=dist, dist_model="h36m", width=width, height=height, name=name)
