"""Gaussian heatmap codecs: MSRA (HRNet / SimpleBaseline, with the DARK option) and UDP (ViTPose, DARK-UDP).

Encoding (pose2d.md §2.3), for each joint at input-crop pixel ``p``:

1. ``mu = p / stride`` in heatmap pixels: MSRA ``stride = in / hm``; UDP ``stride = (in - 1) / (hm - 1)``
   (UDP keeps the first and last pixel centres of the crop and of the heatmap aligned).
2. ``mu_int = floor(mu + 0.5)``; window ``[floor(mu_int - 3 sigma), floor(mu_int + 3 sigma + 1))`` per axis
   (13 x 13 for ``sigma = 2``).
3. Weight = visibility. It is 0 when ``visible < 0.5`` or when the window lies entirely outside the map; a joint up
   to ``3 sigma`` heatmap pixels outside keeps weight 1 and gets a truncated Gaussian.
4. Inside the window ``G = exp(-((i - x0)^2 + (j - y0)^2) / (2 sigma^2))``, zero outside; MSRA centres it at the
   integer ``mu_int``; UDP and MSRA with ``unbiased=True`` (DARK's unbiased encoding, Zhang et al. 2020) at
   the sub-pixel ``mu`` (peak ``exp(-|mu - mu_int|^2 / 2 sigma^2)``, 1 on grid points). Several instances are
   combined with a pixel-wise maximum.

Two deliberate deviations from the reference loops, both only for joints outside the crop: the reference rounds
with ``int()`` (truncation toward zero) where we use ``floor``, and it keeps weight 1 (with an all-zero target) when
the window ends exactly at column/row -1; here that joint gets weight 0.

Decoding (pose2d.md §2.6): per-channel argmax, score = maximum of the raw heatmap; where the maximum is <= 0 the
location is the sentinel ``-1`` heatmap pixel (mapped to input pixels like any other location) and no refinement
is applied. Then one of

* ``quarter`` (MSRA default): ``+0.25 * sign(neighbour difference)`` when ``1 < x < W-1`` and ``1 < y < H-1``;
* ``dark`` (MSRA ``unbiased=True``, Zhang et al. 2020): max-preserving zero-padded Gaussian blur,
  ``log(max(h, 1e-10))``, one Newton step with the ``+-1`` gradient and ``+-2`` Hessian stencils, applied only
  when ``1 < x < W-2`` and ``1 < y < H-2``;
* ``dark_udp`` (UDP default): blur, ``clip(h, 1e-3, 50)``, ``log``, edge-pad by 1, Newton step
  ``(Hess + eps I)^-1 grad`` with ``+-1`` stencils everywhere. ``blur_border='reflect'`` is MMPose 0.x / ViTPose
  (cv2 BORDER_REFLECT_101); ``'zero'`` is MMPose 1.x (zero padding, rescaled to the original maximum), which is
  more accurate within ``3 sigma`` of the border.

Heatmap locations map to input-crop pixels by multiplying with the encoder's stride, so ``decode(encode(p)) ~ p``
in the same frame; with UDP this gives the pose2d.md §2.6 back-projection ``c - S/2 + u S / (W - 1)`` once
composed with the crop -> image map.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from humanvision.codecs.base import KeypointCodec
from humanvision.runtime.codec import blur_matrix

__all__ = [
    "MSRAHeatmap",
    "UDPHeatmap",
    "flip_heatmaps",
    "gaussian_blur",
    "heatmap_maximum",
    "refine_dark",
    "refine_dark_udp",
    "refine_quarter_offset",
    "render_gaussian_heatmaps",
]


# -------------------------------------------------------------------------------------------------- encode
def render_gaussian_heatmaps(centers, visible, heatmap_size: Sequence[int], sigma: float,
                             subpixel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Render ``(N, K, 2)`` centres in heatmap pixels into ``(K, H, W)`` float32 maps (max over instances).

    Follows the window and weight rules of the module doc; returns ``(heatmaps, weights (N, K))``.
    """
    mu = np.asarray(centers, dtype=np.float64)
    vis = np.asarray(visible, dtype=np.float32)
    w, h = heatmap_size
    size = np.array([w, h], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        mu_int = np.floor(mu + 0.5)
        lo = np.floor(mu_int - 3 * sigma)
        hi = np.floor(mu_int + 3 * sigma + 1)
        inside = ((lo < size) & (hi > 0)).all(-1)
    valid = (vis >= 0.5) & inside & np.isfinite(mu).all(-1)
    weights = np.where(valid, vis, 0.0).astype(np.float32)
    ctr = np.where(valid[..., None], mu if subpixel else mu_int, 0.0)
    lo, hi = np.where(valid[..., None], lo, 0.0), np.where(valid[..., None], hi, 0.0)

    def axis(n: int, d: int) -> np.ndarray:  # (N, K, n) 1-D Gaussian restricted to the window
        i = np.arange(n, dtype=np.float64)
        g = np.exp(-((i - ctr[..., d, None]) ** 2) / (2 * sigma**2))
        return g * ((i >= lo[..., d, None]) & (i < hi[..., d, None]) & valid[..., None])

    maps = axis(h, 1)[..., :, None] * axis(w, 0)[..., None, :]  # (N, K, H, W)
    return maps.max(axis=0).astype(np.float32), weights


# -------------------------------------------------------------------------------------------------- decode
def _gather(maps: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``maps[b, k, y, x]`` for ``(B, K)`` integer x, y (clamped to the map)."""
    h, w = maps.shape[-2:]
    idx = y.clamp(0, h - 1) * w + x.clamp(0, w - 1)
    return maps.flatten(-2).gather(-1, idx[..., None])[..., 0]


def heatmap_maximum(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, K, H, W)`` -> integer argmax locations ``(B, K, 2)`` as float ``(x, y)`` and maxima ``(B, K)``.

    Locations of channels whose maximum is <= 0 are set to ``-1`` (reference behaviour).
    """
    vals, idx = heatmaps.flatten(-2).max(-1)
    w = heatmaps.shape[-1]
    locs = torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], -1).to(heatmaps.dtype)
    locs = torch.where((vals > 0)[..., None], locs, torch.full_like(locs, -1.0))
    return locs, vals


def gaussian_blur(heatmaps: torch.Tensor, kernel_size: int, border: str = "zero",
                  keep_max: bool = True) -> torch.Tensor:
    """Per-channel Gaussian blur of ``(..., H, W)`` maps with OpenCV's kernel for ``sigma=0``
    (``sigma = 0.3 ((k - 1)/2 - 1) + 0.8``, i.e. 2.0 for ``k=11``), as two banded matrix products.

    ``border='zero'`` zero-pads (MMPose DARK); ``'reflect'`` mirrors without repeating the edge (cv2 default
    BORDER_REFLECT_101). ``keep_max`` rescales each map to its original maximum (where both are positive).
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"blur kernel size must be odd and positive, got {kernel_size}")
    if border not in ("zero", "reflect"):
        raise ValueError(f"blur border must be 'zero' or 'reflect', got {border!r}")
    h, w = heatmaps.shape[-2:]
    bh = torch.from_numpy(blur_matrix(h, kernel_size, border)).to(heatmaps)
    bw = torch.from_numpy(blur_matrix(w, kernel_size, border)).to(heatmaps)
    x = bh @ heatmaps @ bw.T
    if keep_max:
        m0, m1 = heatmaps.amax((-2, -1), keepdim=True), x.amax((-2, -1), keepdim=True)
        x = torch.where((m0 > 0) & (m1 > 0), x * (m0 / m1.clamp_min(1e-30)), x)
    return x


def refine_quarter_offset(locs: torch.Tensor, heatmaps: torch.Tensor) -> torch.Tensor:
    """MSRA 'default' refinement: shift by ``0.25 * sign`` of the neighbour differences (interior only)."""
    h, w = heatmaps.shape[-2:]
    x, y = locs[..., 0].long(), locs[..., 1].long()
    ok = (x > 1) & (x < w - 1) & (y > 1) & (y < h - 1)
    diff = torch.stack([_gather(heatmaps, x + 1, y) - _gather(heatmaps, x - 1, y),
                        _gather(heatmaps, x, y + 1) - _gather(heatmaps, x, y - 1)], -1)
    return locs + 0.25 * torch.sign(diff) * ok[..., None]


def _newton_step(locs, ok, dx, dy, dxx, dxy, dyy, max_step: float = 1.0) -> torch.Tensor:
    """``locs - H^-1 g`` for the symmetric 2x2 Hessians, where ``ok`` and the determinant is non-zero.

    A step longer than ``max_step`` heatmap pixels on either axis is not taken (the argmax is kept): around a true
    Gaussian peak the step is below 0.5 px, while on near-flat maps (an untrained model) the unbounded Newton step
    of the reference can throw a joint hundreds of pixels away.
    """
    det = dxx * dyy - dxy * dxy
    ok = ok & (det != 0) & torch.isfinite(det)
    det = torch.where(ok, det, torch.ones_like(det))
    off = torch.stack([(dyy * dx - dxy * dy) / det, (dxx * dy - dxy * dx) / det], -1)
    ok = ok & (off.abs() <= max_step).all(-1)
    return locs - torch.where(ok[..., None], off, torch.zeros_like(off))


def refine_dark(locs: torch.Tensor, heatmaps: torch.Tensor, kernel_size: int = 11) -> torch.Tensor:
    """DARK (distribution-aware) refinement for MSRA heatmaps (module doc)."""
    h, w = heatmaps.shape[-2:]
    logh = gaussian_blur(heatmaps, kernel_size, "zero", keep_max=True).clamp_min(1e-10).log()
    x, y = locs[..., 0].long(), locs[..., 1].long()
    ok = (x > 1) & (x < w - 2) & (y > 1) & (y < h - 2)

    def at(ox: int, oy: int) -> torch.Tensor:
        return _gather(logh, x + ox, y + oy)

    c = at(0, 0)
    dx, dy = 0.5 * (at(1, 0) - at(-1, 0)), 0.5 * (at(0, 1) - at(0, -1))
    dxx = 0.25 * (at(2, 0) - 2 * c + at(-2, 0))
    dyy = 0.25 * (at(0, 2) - 2 * c + at(0, -2))
    dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    return _newton_step(locs, ok, dx, dy, dxx, dxy, dyy)


def refine_dark_udp(locs: torch.Tensor, heatmaps: torch.Tensor, kernel_size: int = 11,
                    border: str = "reflect", valid: torch.Tensor | None = None) -> torch.Tensor:
    """DARK-UDP refinement (module doc); ``valid`` (B, K) limits it to channels with a positive maximum."""
    blurred = gaussian_blur(heatmaps, kernel_size, border, keep_max=border == "zero")
    logp = F.pad(blurred.clamp(1e-3, 50.0).log(), (1, 1, 1, 1), mode="replicate")
    x, y = locs[..., 0].long() + 1, locs[..., 1].long() + 1

    def at(ox: int, oy: int) -> torch.Tensor:
        return _gather(logp, x + ox, y + oy)

    c, xp, xm, yp, ym = at(0, 0), at(1, 0), at(-1, 0), at(0, 1), at(0, -1)
    eps = torch.finfo(torch.float32).eps
    dxx, dyy = xp - 2 * c + xm + eps, yp - 2 * c + ym + eps
    dxy = 0.5 * (at(1, 1) - xp - yp + 2 * c - xm - ym + at(-1, -1))
    ok = torch.ones_like(c, dtype=torch.bool) if valid is None else valid
    return _newton_step(locs, ok, 0.5 * (xp - xm), 0.5 * (yp - ym), dxx, dxy, dyy)


def flip_heatmaps(heatmaps, flip_index: Sequence[int], shift: bool = False):
    """Undo a horizontal input flip on ``(..., K, H, W)`` heatmaps (numpy or torch): swap left/right channels
    with ``flip_index``, reverse the width and, for non-UDP (MSRA) maps, shift right by one pixel
    (``h[..., 1:] = h[..., :-1]``; MMPose ``shift_heatmap``)."""
    idx = list(flip_index)
    if isinstance(heatmaps, torch.Tensor):
        out = heatmaps[..., idx, :, :].flip(-1)
        if shift:
            out = torch.cat([out[..., :1], out[..., :-1]], -1)
        return out
    out = np.asarray(heatmaps)[..., idx, :, ::-1].copy()
    if shift:
        out[..., 1:] = out[..., :-1].copy()
    return out


# -------------------------------------------------------------------------------------------------- codecs
class _GaussianHeatmap(KeypointCodec):
    udp: bool

    @property
    def subpixel(self) -> bool:
        """Whether targets are centred at the sub-pixel ``mu`` (else at the integer ``mu_int``)."""
        return self.udp

    def __init__(self, input_size: Sequence[int], heatmap_size: Sequence[int], sigma: float = 2.0) -> None:
        super().__init__(input_size, heatmap_size)
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.sigma = float(sigma)
        (iw, ih), (hw, hh) = self.input_size, self.heatmap_size
        if self.udp:
            self.stride = ((iw - 1) / (hw - 1), (ih - 1) / (hh - 1))
        else:
            self.stride = (iw / hw, ih / hh)

    def encode(self, keypoints, visible=None) -> dict[str, np.ndarray]:
        """``keypoints (N, K, 2)`` input-crop px -> ``heatmaps (K, H, W)``, ``keypoint_weights (N, K)``."""
        kp, vis, single = self._check_keypoints(keypoints, visible)
        heatmaps, weights = render_gaussian_heatmaps(kp / np.asarray(self.stride), vis, self.heatmap_size,
                                                     self.sigma, subpixel=self.subpixel)
        return {"heatmaps": heatmaps, "keypoint_weights": weights[0] if single else weights}

    def _check_maps(self, heatmaps: torch.Tensor) -> torch.Tensor:
        if heatmaps.ndim != 4 or tuple(heatmaps.shape[-2:]) != self.heatmap_size[::-1]:
            raise ValueError(f"{type(self).__name__}: expected heatmaps (B, K, {self.heatmap_size[1]}, "
                             f"{self.heatmap_size[0]}), got {tuple(heatmaps.shape)}")
        return heatmaps.float() if heatmaps.dtype in (torch.float16, torch.bfloat16) else heatmaps

    def to_input(self, locs: torch.Tensor) -> torch.Tensor:
        """Heatmap pixels -> input-crop pixels (multiply by the stride)."""
        return locs * locs.new_tensor(self.stride)

    def flip_heatmaps(self, heatmaps, flip_index: Sequence[int]):
        """Flip-back of heatmaps predicted on a flipped input (shifted by one pixel for MSRA, not for UDP)."""
        return flip_heatmaps(heatmaps, flip_index, shift=not self.udp)


class MSRAHeatmap(_GaussianHeatmap):
    """Gaussian heatmaps with ``stride = in / hm``: integer-centred targets decoded by quarter offset or, with
    ``unbiased=True``, DARK: targets centred at the sub-pixel location (unbiased encoding) decoded by the DARK
    Taylor step (``blur_kernel_size`` 11 for sigma 2, 17 for sigma 3). See the module doc."""

    udp = False

    def __init__(self, input_size: Sequence[int], heatmap_size: Sequence[int], sigma: float = 2.0,
                 unbiased: bool = False, blur_kernel_size: int = 11) -> None:
        super().__init__(input_size, heatmap_size, sigma)
        self.unbiased, self.blur_kernel_size = bool(unbiased), int(blur_kernel_size)

    @property
    def subpixel(self) -> bool:
        return self.unbiased

    def decode_torch(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        heatmaps = self._check_maps(heatmaps)
        locs, scores = heatmap_maximum(heatmaps)
        if self.unbiased:
            locs = refine_dark(locs, heatmaps, self.blur_kernel_size)
        else:
            locs = refine_quarter_offset(locs, heatmaps)
        return self.to_input(locs), scores


class UDPHeatmap(_GaussianHeatmap):
    """Unbiased-data-processing Gaussian heatmaps (ViTPose): sub-pixel centres, ``stride = (in-1)/(hm-1)``;
    decode by DARK-UDP (``dark=True``, kernel ``blur_kernel_size``) or plain argmax. See the module doc."""

    udp = True

    def __init__(self, input_size: Sequence[int], heatmap_size: Sequence[int], sigma: float = 2.0,
                 dark: bool = True, blur_kernel_size: int = 11, blur_border: str = "reflect") -> None:
        super().__init__(input_size, heatmap_size, sigma)
        if blur_border not in ("reflect", "zero"):
            raise ValueError(f"blur_border must be 'reflect' (MMPose 0.x) or 'zero' (1.x), got {blur_border!r}")
        self.dark, self.blur_kernel_size, self.blur_border = bool(dark), int(blur_kernel_size), blur_border

    def decode_torch(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        heatmaps = self._check_maps(heatmaps)
        locs, scores = heatmap_maximum(heatmaps)
        if self.dark:
            locs = refine_dark_udp(locs, heatmaps, self.blur_kernel_size, self.blur_border, valid=scores > 0)
        return self.to_input(locs), scores

