"""Heatmap decoding in numpy: the maths of :mod:`humanvision.codecs.heatmap`, without torch.

The deployable runtime cannot import the torch codecs, so this module repeats their decoding step by step (the same
argmax, sentinel, OpenCV blur kernel as banded matrices, stencils, Newton step with its ``max_step`` guard, all in
float32 like the torch path) and is tested against them (``tests/test_export.py``). Only decoding lives here; the
training targets are made by the torch codecs.

* ``quarter``: argmax + ``0.25 * sign`` of the neighbour differences (MSRA default).
* ``dark``: DARK for MSRA maps (zero-padded max-preserving blur, ``log``, ``+-2`` Hessian stencils).
* ``dark_udp``: DARK-UDP (blur with ``reflect`` or ``zero`` border, ``clip(1e-3, 50)``, ``log``, edge pad,
  ``+-1`` stencils).
* ``none``: the integer argmax.

Locations are then multiplied by the codec stride (heatmap -> input-crop pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import cv2
import numpy as np

__all__ = ["REFINEMENTS", "decode_heatmaps", "flip_back", "gaussian_blur", "heatmap_maximum"]

REFINEMENTS = ("none", "quarter", "dark", "dark_udp")
_EPS32 = np.float32(np.finfo(np.float32).eps)


def flip_back(heatmaps: np.ndarray, flip_index: Sequence[int], shift: bool) -> np.ndarray:
    """Undo a horizontal input flip on ``(B, K, H, W)`` maps: swap left/right channels, reverse the width and,
    for MSRA maps, shift right by one pixel (``h[..., 1:] = h[..., :-1]``)."""
    out = heatmaps[:, list(flip_index), :, ::-1].copy()
    if shift:
        out[..., 1:] = out[..., :-1].copy()
    return out


def heatmap_maximum(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(B, K, H, W)`` -> integer argmax ``(B, K, 2)`` as float ``(x, y)`` and maxima ``(B, K)``; ``-1`` where the
    maximum is <= 0."""
    b, k, _, w = heatmaps.shape
    flat = heatmaps.reshape(b, k, -1)
    idx = flat.argmax(-1)
    vals = np.take_along_axis(flat, idx[..., None], -1)[..., 0]
    locs = np.stack([idx % w, idx // w], -1).astype(heatmaps.dtype)
    locs = np.where((vals > 0)[..., None], locs, np.asarray(-1.0, dtype=heatmaps.dtype))
    return locs, vals


@lru_cache(maxsize=32)
def blur_matrix(n: int, kernel_size: int, border: str) -> np.ndarray:
    """``(n, n)`` float64 matrix ``B`` with ``B @ x`` = 1-D Gaussian blur of ``x`` (OpenCV kernel for sigma 0) with
    the given border (``reflect``: BORDER_REFLECT_101, ... 2 1 | 0 1 2 ... n-1 | n-2 ...; else zeros). Shared with
    :mod:`humanvision.codecs.heatmap` (torch), which imports it from here (numpy only)."""
    k1 = cv2.getGaussianKernel(kernel_size, 0, ktype=cv2.CV_64F).ravel()
    p = kernel_size // 2
    rows = np.repeat(np.arange(n), kernel_size)
    src = (np.arange(n)[:, None] + np.arange(-p, p + 1)[None, :]).ravel()
    wts = np.tile(k1, n)
    if border == "reflect":  # BORDER_REFLECT_101
        period = max(2 * n - 2, 1)
        src = np.mod(src, period)
        src = np.where(src > n - 1, period - src, src)
    else:
        keep = (src >= 0) & (src < n)
        rows, src, wts = rows[keep], src[keep], wts[keep]
    out = np.zeros((n, n))
    np.add.at(out, (rows, src), wts)
    return out


def gaussian_blur(heatmaps: np.ndarray, kernel_size: int, border: str = "zero", keep_max: bool = True) -> np.ndarray:
    """Per-channel Gaussian blur of ``(..., H, W)`` float32 maps (``B_h @ h @ B_w^T``); ``keep_max`` rescales each
    map to its original maximum where both are positive."""
    h, w = heatmaps.shape[-2:]
    dt = heatmaps.dtype
    bh, bw = blur_matrix(h, kernel_size, border).astype(dt), blur_matrix(w, kernel_size, border).astype(dt)
    x = bh @ heatmaps @ bw.T
    if keep_max:
        m0, m1 = heatmaps.max((-2, -1), keepdims=True), x.max((-2, -1), keepdims=True)
        x = np.where((m0 > 0) & (m1 > 0), x * (m0 / np.maximum(m1, dt.type(1e-30))), x)
    return x


def _gather(maps: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``maps[b, k, y, x]`` for ``(B, K)`` integer x, y (clamped to the map)."""
    h, w = maps.shape[-2:]
    idx = np.clip(y, 0, h - 1) * w + np.clip(x, 0, w - 1)
    return np.take_along_axis(maps.reshape(*maps.shape[:2], -1), idx[..., None], -1)[..., 0]


def _newton_step(locs, ok, dx, dy, dxx, dxy, dyy, max_step: float = 1.0) -> np.ndarray:
    """``locs - H^-1 g`` where ``ok``, the determinant is finite and non-zero and the step is at most
    ``max_step`` heatmap pixels on both axes (else the argmax is kept)."""
    det = dxx * dyy - dxy * dxy
    ok = ok & (det != 0) & np.isfinite(det)
    det = np.where(ok, det, np.ones_like(det))
    with np.errstate(invalid="ignore", over="ignore"):
        off = np.stack([(dyy * dx - dxy * dy) / det, (dxx * dy - dxy * dx) / det], -1)
    ok = ok & (np.abs(off) <= max_step).all(-1)
    return locs - np.where(ok[..., None], off, np.zeros_like(off))


def _refine_quarter(locs: np.ndarray, heatmaps: np.ndarray) -> np.ndarray:
    h, w = heatmaps.shape[-2:]
    x, y = locs[..., 0].astype(np.int64), locs[..., 1].astype(np.int64)
    ok = (x > 1) & (x < w - 1) & (y > 1) & (y < h - 1)
    diff = np.stack([_gather(heatmaps, x + 1, y) - _gather(heatmaps, x - 1, y),
                     _gather(heatmaps, x, y + 1) - _gather(heatmaps, x, y - 1)], -1)
    return locs + np.float32(0.25) * np.sign(diff) * ok[..., None]


def _refine_dark(locs: np.ndarray, heatmaps: np.ndarray, kernel_size: int) -> np.ndarray:
    h, w = heatmaps.shape[-2:]
    logh = np.log(np.maximum(gaussian_blur(heatmaps, kernel_size, "zero", keep_max=True), np.float32(1e-10)))
    x, y = locs[..., 0].astype(np.int64), locs[..., 1].astype(np.int64)
    ok = (x > 1) & (x < w - 2) & (y > 1) & (y < h - 2)

    def at(ox: int, oy: int) -> np.ndarray:
        return _gather(logh, x + ox, y + oy)

    c = at(0, 0)
    dx, dy = 0.5 * (at(1, 0) - at(-1, 0)), 0.5 * (at(0, 1) - at(0, -1))
    dxx = 0.25 * (at(2, 0) - 2 * c + at(-2, 0))
    dyy = 0.25 * (at(0, 2) - 2 * c + at(0, -2))
    dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    return _newton_step(locs, ok, dx, dy, dxx, dxy, dyy)


def _refine_dark_udp(locs: np.ndarray, heatmaps: np.ndarray, kernel_size: int, border: str,
                     valid: np.ndarray) -> np.ndarray:
    blurred = gaussian_blur(heatmaps, kernel_size, border, keep_max=border == "zero")
    logp = np.pad(np.log(np.clip(blurred, np.float32(1e-3), np.float32(50.0))), ((0, 0), (0, 0), (1, 1), (1, 1)),
                  mode="edge")
    x, y = locs[..., 0].astype(np.int64) + 1, locs[..., 1].astype(np.int64) + 1

    def at(ox: int, oy: int) -> np.ndarray:
        return _gather(logp, x + ox, y + oy)

    c, xp, xm, yp, ym = at(0, 0), at(1, 0), at(-1, 0), at(0, 1), at(0, -1)
    dxx, dyy = xp - 2 * c + xm + _EPS32, yp - 2 * c + ym + _EPS32
    dxy = 0.5 * (at(1, 1) - xp - yp + 2 * c - xm - ym + at(-1, -1))
    return _newton_step(locs, valid, 0.5 * (xp - xm), 0.5 * (yp - ym), dxx, dxy, dyy)


def decode_heatmaps(heatmaps: np.ndarray, stride: Sequence[float], refine: str, blur_kernel_size: int = 11,
                    blur_border: str = "reflect") -> tuple[np.ndarray, np.ndarray]:
    """``(B, K, H, W)`` heatmaps -> keypoints ``(B, K, 2)`` in input-crop pixels and scores ``(B, K)``
    (float32), with the refinement ``refine`` (one of :data:`REFINEMENTS`)."""
    if refine not in REFINEMENTS:
        raise ValueError(f"unknown heatmap refinement {refine!r}; expected one of {REFINEMENTS}")
    maps = np.ascontiguousarray(heatmaps, dtype=np.float32)
    locs, scores = heatmap_maximum(maps)
    if refine == "quarter":
        locs = _refine_quarter(locs, maps)
    elif refine == "dark":
        locs = _refine_dark(locs, maps, blur_kernel_size)
    elif refine == "dark_udp":
        locs = _refine_dark_udp(locs, maps, blur_kernel_size, blur_border, valid=scores > 0)
    return (locs * np.asarray(stride, dtype=np.float32)).astype(np.float32), scores
