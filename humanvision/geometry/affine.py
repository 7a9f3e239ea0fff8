"""Boxes, (center, scale) and the affine crops of top-down pose estimation.

Conventions (pose2d.md §1.1-§1.3):

* Boxes are ``xywh`` (top-left corner, width, height) or ``xyxy`` in image pixels; arrays are batched over leading
  axes (``(..., 4)``).
* ``scale`` is the side of the crop box **in pixels** (MMPose 1.x). The MMPose 0.x "legacy" scale is
  ``pixels / pixel_std`` with ``pixel_std = 200``; convert with :func:`scale_to_pixel_std` /
  :func:`scale_from_pixel_std`.
* Sizes (``output_size``, ``image_size``) are ``(width, height)``.
* Two affine conventions that must never be mixed inside one model:

  - **non-UDP** (HRNet, PCT; MMPose ``get_affine_transform``): ``q = (out_w / S_w) R(-r) (p - c) + (out_w/2, out_h/2)``.
    Only ``S_w`` is used (the aspect ratio was matched beforehand); box corners ``c -+ S/2`` map to ``(0, 0)`` and
    ``(out_w, out_h)``.
  - **UDP** (ViTPose; MMPose ``get_warp_matrix``): ``q = D (R(r) (p - c) + S/2)`` with
    ``D = diag((out_w-1)/S_w, (out_h-1)/S_h)``; corners map to ``(0, 0)`` and ``(out_w-1, out_h-1)``.

  ``R(t) = [[cos t, -sin t], [sin t, cos t]]`` and ``r`` is in degrees. Note the opposite rotation sign of the two
  conventions (as in the reference code): the same ``r`` turns the crop in opposite directions.

Matrices are computed in closed form in float64 (the reference builds the non-UDP one from three float32 point
pairs, which differs only by rounding).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = [
    "PIXEL_STD",
    "affine_points",
    "bbox_cs_to_xywh",
    "bbox_xywh_to_cs",
    "bbox_xywh_to_xyxy",
    "bbox_xyxy_to_xywh",
    "clip_bbox_xywh",
    "fix_aspect_ratio",
    "get_affine_matrix",
    "invert_affine",
    "scale_from_pixel_std",
    "scale_to_pixel_std",
    "warp_crop",
]

PIXEL_STD = 200.0


def _last_dim(x, n: int, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0 or a.shape[-1] != n:
        raise ValueError(f"{name} must have shape (..., {n}), got {a.shape}")
    return a


def _size(size: Sequence[int] | np.ndarray, name: str) -> np.ndarray:
    s = np.asarray(size, dtype=np.float64)
    if s.shape != (2,) or np.any(s <= 0):
        raise ValueError(f"{name} must be a positive (width, height) pair, got {size!r}")
    return s


# --------------------------------------------------------------------------------------------------- boxes
def bbox_xyxy_to_xywh(bbox) -> np.ndarray:
    """``(..., 4)`` ``x1, y1, x2, y2`` -> ``x, y, w, h`` (``w = x2 - x1``)."""
    b = _last_dim(bbox, 4, "bbox").copy()
    b[..., 2:] -= b[..., :2]
    return b


def bbox_xywh_to_xyxy(bbox) -> np.ndarray:
    """``(..., 4)`` ``x, y, w, h`` -> ``x1, y1, x2, y2`` (``x2 = x + w``)."""
    b = _last_dim(bbox, 4, "bbox").copy()
    b[..., 2:] += b[..., :2]
    return b


def clip_bbox_xywh(bbox, image_size: Sequence[int], legacy: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Clip ``(..., 4)`` xywh boxes to an image of ``image_size = (W, H)``; returns ``(boxes, valid)``.

    ``legacy=True`` (MMPose 0.x COCO loader, used by ViTPose and PCT): ``x1 = max(0, x)``, ``y1 = max(0, y)``,
    ``x2 = min(W-1, x1 + max(0, w-1))``, ``y2 = min(H-1, y1 + max(0, h-1))``. ``legacy=False`` (1.x): ``x1, y1``
    clipped to ``[0, W-1] x [0, H-1]`` and ``x2 = clip(x1 + w, 0, W-1)`` (no ``w-1`` shrink). The result is
    ``(x1, y1, x2-x1, y2-y1)``; ``valid`` is ``x2 > x1 and y2 > y1`` (the loader also requires a positive ``area``
    of the annotation, which is not a box property).
    """
    b = _last_dim(bbox, 4, "bbox")
    w_img, h_img = _size(image_size, "image_size")
    x, y, w, h = np.moveaxis(b, -1, 0)
    if legacy:
        x1, y1 = np.maximum(0.0, x), np.maximum(0.0, y)
        x2 = np.minimum(w_img - 1, x1 + np.maximum(0.0, w - 1))
        y2 = np.minimum(h_img - 1, y1 + np.maximum(0.0, h - 1))
    else:
        x1, y1 = np.clip(x, 0, w_img - 1), np.clip(y, 0, h_img - 1)
        x2, y2 = np.clip(x1 + w, 0, w_img - 1), np.clip(y1 + h, 0, h_img - 1)
    out = np.stack([x1, y1, x2 - x1, y2 - y1], axis=-1)
    return out, (x2 > x1) & (y2 > y1)


def fix_aspect_ratio(wh, aspect_ratio: float) -> np.ndarray:
    """Grow ``(..., 2)`` box sizes to ``w / h == aspect_ratio``: if ``w > a h`` then ``h = w / a`` else ``w = a h``.

    The box only grows, so the person stays inside the crop (the model's aspect is ``in_w / in_h``).
    """
    if not aspect_ratio > 0:
        raise ValueError(f"aspect_ratio must be positive, got {aspect_ratio}")
    s = _last_dim(wh, 2, "wh").copy()
    w, h = s[..., 0], s[..., 1]
    wide = w > aspect_ratio * h
    s[..., 0] = np.where(wide, w, aspect_ratio * h)
    s[..., 1] = np.where(wide, w / aspect_ratio, h)
    return s


def bbox_xywh_to_cs(bbox, aspect_ratio: float | None = None, padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """``(..., 4)`` xywh boxes -> ``center (..., 2)``, ``scale (..., 2)`` in pixels.

    ``center = (x + w/2, y + h/2)``; the size is aspect-fixed with :func:`fix_aspect_ratio` when ``aspect_ratio``
    (``in_w / in_h``) is given, then multiplied by ``padding`` (1.25 for training and ViTPose testing, 1.12 for
    PCT testing). ``bbox_xywh_to_cs([10, 20, 30, 80], 0.75)`` gives ``c = (25, 60)``, ``s = (75, 100)`` px,
    i.e. ``(0.375, 0.5)`` in pixel_std units.
    """
    b = _last_dim(bbox, 4, "bbox")
    center = b[..., :2] + 0.5 * b[..., 2:]
    wh = b[..., 2:]
    if aspect_ratio is not None:
        wh = fix_aspect_ratio(wh, aspect_ratio)
    return center, wh * padding


def bbox_cs_to_xywh(center, scale, padding: float = 1.0) -> np.ndarray:
    """Inverse of :func:`bbox_xywh_to_cs` up to the aspect fix: ``wh = scale / padding``, ``xy = center - wh/2``."""
    c, s = _last_dim(center, 2, "center"), _last_dim(scale, 2, "scale")
    wh = s / padding
    return np.concatenate(np.broadcast_arrays(c - 0.5 * wh, wh), axis=-1)


def scale_to_pixel_std(scale_px, pixel_std: float = PIXEL_STD) -> np.ndarray:
    """Pixel scale -> MMPose 0.x scale (``pixels / 200``)."""
    return np.asarray(scale_px, dtype=np.float64) / pixel_std


def scale_from_pixel_std(scale, pixel_std: float = PIXEL_STD) -> np.ndarray:
    """MMPose 0.x scale (box side / 200; MPII ``scale`` = person height / 200) -> pixels."""
    return np.asarray(scale, dtype=np.float64) * pixel_std


# -------------------------------------------------------------------------------------------------- affine
def get_affine_matrix(center, scale, rot_deg, output_size: Sequence[int], udp: bool = False,
                      inv: bool = False) -> np.ndarray:
    """The 2x3 matrix mapping image pixels to crop pixels (``inv=True``: crop -> image); batched ``(..., 2, 3)``.

    Args:
        center: ``(..., 2)`` box centre in image pixels.
        scale: ``(..., 2)`` box size ``S`` in pixels (aspect-fixed for non-UDP: only ``S_w`` is used).
        rot_deg: ``(...)`` rotation in degrees (sign convention differs between UDP and non-UDP, see module doc).
        output_size: crop size ``(out_w, out_h)``.
        udp: UDP (``get_warp_matrix``) instead of the non-UDP ``get_affine_transform`` convention.
        inv: return the inverse map (crop -> image).
    """
    c, s = _last_dim(center, 2, "center"), _last_dim(scale, 2, "scale")
    r = np.deg2rad(np.asarray(rot_deg, dtype=np.float64))
    out_w, out_h = _size(output_size, "output_size")
    c, s, r = np.broadcast_arrays(c, s, r[..., None])
    r = r[..., 0]
    if np.any(s <= 0):
        raise ValueError("scale must be positive")
    cs, sn = np.cos(r), np.sin(r)
    a = np.empty(r.shape + (2, 2))
    if udp:
        dx, dy = (out_w - 1) / s[..., 0], (out_h - 1) / s[..., 1]
        a[..., 0, 0], a[..., 0, 1] = dx * cs, -dx * sn
        a[..., 1, 0], a[..., 1, 1] = dy * sn, dy * cs
        out_c = np.array([(out_w - 1) / 2, (out_h - 1) / 2])
    else:
        k = out_w / s[..., 0]
        a[..., 0, 0], a[..., 0, 1] = k * cs, k * sn
        a[..., 1, 0], a[..., 1, 1] = -k * sn, k * cs
        out_c = np.array([out_w / 2, out_h / 2])
    t = out_c - np.einsum("...ij,...j->...i", a, c)
    m = np.concatenate([a, t[..., None]], axis=-1)
    return invert_affine(m) if inv else m


def invert_affine(matrix) -> np.ndarray:
    """Inverse of ``(..., 2, 3)`` affine matrices (``p = A^-1 (q - t)``)."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape[-2:] != (2, 3):
        raise ValueError(f"affine matrix must have shape (..., 2, 3), got {m.shape}")
    a_inv = np.linalg.inv(m[..., :2])
    t = -np.einsum("...ij,...j->...i", a_inv, m[..., 2])
    return np.concatenate([a_inv, t[..., None]], axis=-1)


def affine_points(points, matrix) -> np.ndarray:
    """Apply ``(2, 3)`` or batched ``(..., 2, 3)`` matrices to ``(..., N, 2)`` points (batch axes broadcast)."""
    p = _last_dim(points, 2, "points")
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape[-2:] != (2, 3):
        raise ValueError(f"affine matrix must have shape (..., 2, 3), got {m.shape}")
    if p.ndim == 1:
        return m[..., :2] @ p + m[..., 2]
    return p @ np.swapaxes(m[..., :2], -1, -2) + m[..., None, :, 2]


def warp_crop(image: np.ndarray, matrix, output_size: Sequence[int]) -> np.ndarray:
    """Warp an ``(H, W[, C])`` image into an ``output_size = (w, h)`` crop with a 2x3 image -> crop matrix.

    ``cv2.warpAffine`` with bilinear interpolation and a constant 0 border (the reference's settings).
    """
    w, h = (int(v) for v in _size(output_size, "output_size"))
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (2, 3):
        raise ValueError(f"warp_crop takes one (2, 3) matrix, got {m.shape}")
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
