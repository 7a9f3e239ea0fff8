"""The top-down pipeline: box -> (center, scale) -> augmentation -> affine crop -> tensor + codec targets.

Order and distributions follow pose2d.md §1.4 (MMPose 0.24/0.29, ViTPose and PCT):

1. ``center, scale = bbox_xywh_to_cs(bbox, in_w / in_h, padding)`` (scale in pixels).
2. Random centre shift (p=0.3): ``c += u * 0.16 * S``, ``u ~ U(-1, 1)^2``, drawn per call (PCT / MMPose 0.29;
   ViTPose draws ``+-0.2 (w, h)`` of the raw box once per sample at dataset build, a quirk not reproduced).
3. Horizontal flip (p=0.5): ``x' = img_w - 1 - x``, joints permuted with ``skeleton.flip_index``,
   ``c_x' = img_w - 1 - c_x``. The flip is folded into the crop matrix instead of copying the image; invisible
   joints keep their (flipped) coordinates instead of being zeroed (their weight is 0 either way).
4. Half-body (p=0.3, only when more than 8 joints are visible): upper body with probability ``upper_prob``
   (0.6915 = P(randn < 0.5), the reference quirk) if it has more than 2 visible joints, else lower body if it has
   more than 2, else upper; needs at least 2 joints. ``c`` = mean of the selected joints, box = their extent,
   aspect-fixed, times 1.5.
5. Scale ``S *= clip(1 + 0.5 N(0,1), 0.5, 1.5)``; rotation ``r = clip(40 N(0,1), -80, 80)`` with p=0.6, else 0.
6. Affine crop, UDP or not (:func:`humanvision.geometry.affine.get_affine_matrix`), bilinear, zero border; all
   joints are mapped with the same matrix.
7. Optional photometric ops on the crop (PCT): colour jitter (brightness/contrast/saturation 0.4, hue 0.2, random
   order, like Albumentations ``ColorJitter``), grid dropout (unit 10-40 px, ratio 0.5, random offset, p=0.5).
8. ``/255``, ImageNet mean/std, CHW float32; targets from the codec.

Randomness comes from an ``np.random.Generator`` passed per call (e.g. ``np.random.default_rng((seed, epoch,
index))`` in a dataset's ``__getitem__``), so DataLoader workers are reproducible and independent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from humanvision.errors import DataError
from humanvision.geometry.affine import (
    affine_points,
    bbox_xywh_to_cs,
    fix_aspect_ratio,
    get_affine_matrix,
    warp_crop,
)
from humanvision.skeletons import Skeleton, get_skeleton

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TopDownAugment",
    "TopDownTransform",
    "color_jitter",
    "flip_keypoints",
    "flip_matrix",
    "grid_dropout",
    "half_body_center_scale",
    "keypoints_to_image",
    "normalize_image",
    "random_scale_rotation",
    "random_shift_center",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
UPPER_BODY_PROB = 0.6914624612740131  # P(N(0,1) < 0.5): the reference's `randn() < 0.5`


# --------------------------------------------------------------------------------------------- geometric ops
def flip_keypoints(keypoints, image_width: float, flip_index: Sequence[int],
                   visible=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Horizontal flip of ``(..., K, 2+)`` keypoints: ``x' = image_width - 1 - x`` and joints permuted with
    ``flip_index`` (``visible (..., K)`` permuted alike). Applying it twice is the identity."""
    kp = np.asarray(keypoints, dtype=np.float64)[..., list(flip_index), :].copy()
    kp[..., 0] = image_width - 1 - kp[..., 0]
    vis = None if visible is None else np.asarray(visible)[..., list(flip_index)].copy()
    return kp, vis


def flip_matrix(image_width: float) -> np.ndarray:
    """The 2x3 matrix of ``x' = image_width - 1 - x`` (its own inverse)."""
    return np.array([[-1.0, 0.0, image_width - 1.0], [0.0, 1.0, 0.0]])


def random_shift_center(center, scale, rng: np.random.Generator, factor: float = 0.16,
                        prob: float = 0.3) -> np.ndarray:
    """With probability ``prob``: ``center + u * factor * scale``, ``u ~ U(-1, 1)^2`` (scale in pixels)."""
    center = np.asarray(center, dtype=np.float64)
    if rng.random() < prob:
        center = center + rng.uniform(-1.0, 1.0, 2) * factor * np.asarray(scale, dtype=np.float64)
    return center


def half_body_center_scale(keypoints, visible, upper_body: Sequence[int], aspect_ratio: float,
                           rng: np.random.Generator, padding: float = 1.5,
                           upper_prob: float = UPPER_BODY_PROB) -> tuple[np.ndarray, np.ndarray] | None:
    """The half-body box of step 4 in the module doc, as ``(center, scale px)``; ``None`` when fewer than two
    joints are selected. The caller applies the probability and the "more than 8 visible" gate."""
    kp = np.asarray(keypoints, dtype=np.float64)[:, :2]
    vis = np.asarray(visible) > 0
    upper_mask = np.zeros(len(kp), dtype=bool)
    upper_mask[list(upper_body)] = True
    upper, lower = kp[vis & upper_mask], kp[vis & ~upper_mask]
    if rng.random() < upper_prob and len(upper) > 2:
        sel = upper
    elif len(lower) > 2:
        sel = lower
    else:
        sel = upper
    if len(sel) < 2:
        return None
    wh = fix_aspect_ratio(sel.max(0) - sel.min(0), aspect_ratio)
    return sel.mean(0), wh * padding


def random_scale_rotation(scale, rng: np.random.Generator, scale_factor: float = 0.5, rot_factor: float = 40.0,
                          rot_prob: float = 0.6) -> tuple[np.ndarray, float]:
    """``scale * clip(1 + sf N, 1 - sf, 1 + sf)`` and, with probability ``rot_prob``,
    ``clip(rf N, -2 rf, 2 rf)`` degrees (else 0)."""
    s = np.asarray(scale, dtype=np.float64) * np.clip(1 + scale_factor * rng.standard_normal(),
                                                      1 - scale_factor, 1 + scale_factor)
    rot = float(np.clip(rot_factor * rng.standard_normal(), -2 * rot_factor, 2 * rot_factor))
    return s, rot if rng.random() < rot_prob else 0.0


def keypoints_to_image(keypoints_crop, center, scale, input_size: Sequence[int], udp: bool,
                       rotation=0.0) -> np.ndarray:
    """Map ``(..., K, 2)`` input-crop pixels back to image pixels with the exact inverse of the crop affine.

    For ``rotation = 0`` and an aspect-matched scale this is pose2d.md §1.6/§2.6: non-UDP
    ``x = c_x - S_w/2 + u S_w / in_w``; UDP ``x = c_x - S_w/2 + u S_w / (in_w - 1)`` (same for y). ``center``,
    ``scale`` ``(..., 2)`` and ``rotation`` ``(...)`` are batched like the keypoints.
    """
    m = get_affine_matrix(center, scale, rotation, input_size, udp=udp, inv=True)
    return affine_points(keypoints_crop, m)


# ------------------------------------------------------------------------------------------- photometric ops
def color_jitter(image: np.ndarray, rng: np.random.Generator, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.4, hue: float = 0.2) -> np.ndarray:
    """Random brightness, contrast, saturation and hue on an ``(H, W, 3)`` uint8 RGB image, in random order.

    Factors ``U(1 - b, 1 + b)``; contrast blends with the mean grey level, saturation with the grey image, hue
    shifts the HSV hue by ``U(-hue, hue)`` of a full turn. Values are clipped to [0, 255] after each step.
    """
    img = image.astype(np.float32)
    ops = []
    if brightness > 0:
        ops.append(("b", rng.uniform(1 - brightness, 1 + brightness)))
    if contrast > 0:
        ops.append(("c", rng.uniform(1 - contrast, 1 + contrast)))
    if saturation > 0:
        ops.append(("s", rng.uniform(1 - saturation, 1 + saturation)))
    if hue > 0:
        ops.append(("h", rng.uniform(-hue, hue)))
    for i in rng.permutation(len(ops)):
        name, f = ops[i]
        if name == "b":
            img = img * f
        elif name == "c":
            mean = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY).mean()
            img = img * f + mean * (1 - f)
        elif name == "s":
            gray = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
            img = img * f + gray[..., None] * (1 - f)
        else:
            hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV)
            hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + round(f * 180)) % 180).astype(np.uint8)
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32)
        img = np.clip(img, 0, 255)
    return np.round(img).astype(np.uint8)


def grid_dropout(image: np.ndarray, rng: np.random.Generator, unit_size: tuple[int, int] = (10, 40),
                 ratio: float = 0.5, fill: int = 0) -> np.ndarray:
    """Zero a regular grid of square holes: unit ``d ~ U{unit_size}`` px, hole ``int(d * ratio)`` px, grid offset
    uniform in ``[0, d - hole]`` per axis (Albumentations ``GridDropout(random_offset=True)``)."""
    d = int(rng.integers(unit_size[0], unit_size[1] + 1))
    hole = int(d * ratio)
    if hole <= 0:
        return image
    ox, oy = rng.integers(0, d - hole + 1, size=2)
    h, w = image.shape[:2]
    mx = (np.arange(w) >= ox) & ((np.arange(w) - ox) % d < hole)
    my = (np.arange(h) >= oy) & ((np.arange(h) - oy) % d < hole)
    out = image.copy()
    out[my[:, None] & mx[None, :]] = fill
    return out


def normalize_image(image: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """``(H, W, 3)`` uint8 RGB -> ``(3, H, W)`` float32 ``(x / 255 - mean) / std``.

    Done in numpy with one fused scale/offset per channel: per-sample torch ops in DataLoader workers pay
    intra-op thread start-up on every call (measured 100+ ms per crop on a loaded 2-core machine vs < 1 ms here).
    """
    scale = 1.0 / (255.0 * np.asarray(std, dtype=np.float32))
    offset = -np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32)
    x = image.astype(np.float32) * scale + offset
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


# ------------------------------------------------------------------------------------------------- pipeline
@dataclass
class TopDownAugment:
    """Training augmentation settings (probabilities and limits); defaults are the ViTPose/PCT geometric recipe
    without photometric ops. ``TopDownAugment.pct()`` adds PCT's colour jitter and grid dropout."""

    shift_factor: float = 0.16
    shift_prob: float = 0.3
    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_visible: int = 8  # half-body needs strictly more visible joints than this
    half_body_padding: float = 1.5
    upper_prob: float = UPPER_BODY_PROB
    scale_factor: float = 0.5
    rot_factor: float = 40.0
    rot_prob: float = 0.6
    color_jitter: tuple[float, float, float, float] | None = None  # brightness, contrast, saturation, hue
    grid_dropout_prob: float = 0.0
    grid_unit_size: tuple[int, int] = (10, 40)
    grid_ratio: float = 0.5

    @classmethod
    def vitpose(cls) -> TopDownAugment:
        return cls()

    @classmethod
    def pct(cls) -> TopDownAugment:
        return cls(color_jitter=(0.4, 0.4, 0.4, 0.2), grid_dropout_prob=0.5)

    @classmethod
    def none(cls) -> TopDownAugment:
        """No augmentation (train-mode targets with the test-time crop)."""
        return cls(shift_prob=0.0, flip_prob=0.0, half_body_prob=0.0, scale_factor=0.0, rot_prob=0.0)


class TopDownTransform:
    """``(image, keypoints, visible, bbox) -> (image tensor (3, in_h, in_w), target, meta)``.

    Args:
        input_size: network input ``(in_w, in_h)``, e.g. ``(192, 256)``.
        skeleton: the joint set (``flip_index``, ``upper_body``) or its name.
        codec: target encoder (its ``input_size`` must equal ``input_size``; a heatmap codec's UDP-ness must match
            ``udp``), or ``None`` for coordinate targets only.
        train: apply :class:`TopDownAugment`; otherwise only the deterministic crop.
        udp: crop convention (UDP for ViTPose, non-UDP for PCT/HRNet); never mix with the codec's.
        padding: box padding (1.25; PCT tests with 1.12).
        fix_aspect: aspect-fix boxes (and explicit scales) to ``in_w / in_h``.
        augment: augmentation settings (default ``TopDownAugment()``).
        seed: seed of the generator used when a call passes no ``rng``.

    ``target``: ``keypoints`` (K, 2) crop px, ``keypoints_visible`` (K,), plus the codec's outputs
    (``heatmaps`` (K, H, W), ``keypoint_weights`` (K,), ...), all float32 tensors. ``meta``: ``center``, ``scale``
    (px), ``rotation`` (deg), ``flipped``, ``affine`` (the 2x3 image -> crop matrix actually used, flip included),
    ``bbox`` (xywh; NaN when center/scale were given), ``image_size`` (w, h), ``input_size``, ``udp``. Predictions map back with
    ``keypoints_to_image(k, meta["center"], meta["scale"], input_size, udp, meta["rotation"])`` when not flipped.
    """

    def __init__(self, input_size: Sequence[int], skeleton: Skeleton | str, codec=None, train: bool = False,
                 udp: bool = True, padding: float = 1.25, fix_aspect: bool = True,
                 augment: TopDownAugment | None = None, seed: int | None = None,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.skeleton = get_skeleton(skeleton) if not isinstance(skeleton, Skeleton) else skeleton
        self.codec, self.train, self.udp = codec, bool(train), bool(udp)
        if codec is not None:
            if tuple(codec.input_size) != self.input_size:
                raise ValueError(f"codec input_size {codec.input_size} != transform input_size {self.input_size}")
            if getattr(codec, "udp", udp) != udp:
                raise ValueError(f"codec {type(codec).__name__} (udp={codec.udp}) does not match the crop "
                                 f"convention udp={udp}; mixing them biases every prediction (pose2d.md §7)")
        self.padding, self.fix_aspect = float(padding), bool(fix_aspect)
        self.aspect_ratio = self.input_size[0] / self.input_size[1]
        self.augment = augment if augment is not None else TopDownAugment()
        self.mean, self.std = tuple(mean), tuple(std)
        self._rng = np.random.default_rng(seed)

    def __repr__(self) -> str:
        return (f"TopDownTransform(input_size={self.input_size}, skeleton={self.skeleton.name!r}, "
                f"codec={self.codec!r}, train={self.train}, udp={self.udp}, padding={self.padding})")

    # ------------------------------------------------------------------------------------- validation
    def _check(self, image, keypoints, visible, bbox, center, scale, record):
        def err(msg: str, fld: str) -> DataError:
            return DataError(msg, record=record, field=fld)

        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            desc = f"{type(image).__name__} {getattr(image, 'shape', '')} {getattr(image, 'dtype', '')}"
            raise err(f"expected an (H, W, 3) uint8 RGB array, got {desc}", "image")
        k = self.skeleton.num_joints
        kp = vis = None
        if keypoints is not None:
            kp = np.asarray(keypoints, dtype=np.float64)
            if kp.ndim != 2 or kp.shape[0] != k or kp.shape[1] < 2:
                raise err(f"expected ({k}, 2) for skeleton {self.skeleton.name}, got {kp.shape}", "keypoints")
            kp = kp[:, :2].copy()
            vis = np.ones(k, np.float32) if visible is None else np.asarray(visible, dtype=np.float32)
            if vis.shape != (k,):
                raise err(f"expected ({k},), got {vis.shape}", "visible")
            if not np.isfinite(kp[vis > 0]).all():
                raise err("visible joints have non-finite coordinates", "keypoints")
        if center is None or scale is None:
            if bbox is None:
                raise err("give a bbox (x, y, w, h) or both center and scale", "bbox")
            b = np.asarray(bbox, dtype=np.float64)
            if b.shape != (4,) or not np.isfinite(b).all() or b[2] <= 0 or b[3] <= 0:
                raise err(f"expected finite (x, y, w, h) with w, h > 0, got {np.asarray(bbox).tolist()}", "bbox")
            center, scale = bbox_xywh_to_cs(b, self.aspect_ratio if self.fix_aspect else None, self.padding)
        else:
            center, scale = np.asarray(center, np.float64), np.asarray(scale, np.float64)
            if center.shape != (2,) or scale.shape != (2,) or not np.isfinite([*center, *scale]).all() \
                    or (scale <= 0).any():
                raise err(f"expected center (2,) and positive scale (2,), got {center} {scale}", "center/scale")
            if self.fix_aspect:
                scale = fix_aspect_ratio(scale, self.aspect_ratio)
        return kp, vis, center, scale

    # ---------------------------------------------------------------------------------------- call
    def __call__(self, image: np.ndarray, keypoints=None, visible=None, bbox=None, *, center=None, scale=None,
                 rng: np.random.Generator | None = None,
                 record: str | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, Any]]:
        """Crop one instance. ``bbox`` is xywh; or give ``center`` and ``scale`` (px, used as is apart from the
        aspect fix). ``keypoints``/``visible`` may be ``None`` at inference (then ``target`` is empty).
        ``record`` names the sample in errors."""
        kp, vis, center, scale = self._check(image, keypoints, visible, bbox, center, scale, record)
        img_h, img_w = image.shape[:2]
        rot, flipped = 0.0, False
        a, rng = self.augment, rng if rng is not None else self._rng
        if self.train:
            center = random_shift_center(center, scale, rng, a.shift_factor, a.shift_prob)
            if rng.random() < a.flip_prob:
                flipped = True
                center = np.array([img_w - 1 - center[0], center[1]])
                if kp is not None:
                    kp, vis = flip_keypoints(kp, img_w, self.skeleton.flip_index, vis)
            if kp is not None and (vis > 0).sum() > a.half_body_min_visible and rng.random() < a.half_body_prob:
                half = half_body_center_scale(kp, vis, self.skeleton.upper_body, self.aspect_ratio, rng,
                                              a.half_body_padding, a.upper_prob)
                if half is not None:
                    center, scale = half
            scale, rot = random_scale_rotation(scale, rng, a.scale_factor, a.rot_factor, a.rot_prob)

        m = get_affine_matrix(center, scale, rot, self.input_size, udp=self.udp)
        m_img = m
        if flipped:  # crop of the flipped image == crop of the image with (M o flip)
            f = flip_matrix(img_w)
            m_img = np.concatenate([m[:, :2] @ f[:, :2], (m[:, :2] @ f[:, 2] + m[:, 2])[:, None]], axis=1)
        crop = warp_crop(image, m_img, self.input_size)
        if self.train:
            if a.color_jitter is not None:
                crop = color_jitter(crop, rng, *a.color_jitter)
            if a.grid_dropout_prob > 0 and rng.random() < a.grid_dropout_prob:
                crop = grid_dropout(crop, rng, a.grid_unit_size, a.grid_ratio)

        target: dict[str, torch.Tensor] = {}
        if kp is not None:
            kp_crop = affine_points(kp, m)
            target["keypoints"] = torch.from_numpy(kp_crop.astype(np.float32))
            target["keypoints_visible"] = torch.from_numpy(vis.astype(np.float32))
            if self.codec is not None:
                for key, val in self.codec.encode(kp_crop, vis).items():
                    target[key] = torch.from_numpy(np.ascontiguousarray(val, dtype=np.float32))
        meta = {
            "center": center, "scale": scale, "rotation": rot, "flipped": flipped, "affine": m_img,
            "bbox": np.full(4, np.nan) if bbox is None else np.asarray(bbox, dtype=np.float64), "image_size": (img_w, img_h),
            "input_size": self.input_size, "udp": self.udp,
        }
        return normalize_image(crop, self.mean, self.std), target, meta
