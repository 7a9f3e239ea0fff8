"""Top-down pose post-processing before COCO evaluation: pose rescoring, OKS-NMS and soft-OKS-NMS.

The protocol of the ViTPose/MMPose COCO evaluation (per image, in this order):

1. **Rescore** (:func:`rescore_poses`): ``score = box_score × mean{s_j : s_j > 0.2}`` (0 when no joint score
   exceeds the threshold; GT-box evaluation uses ``box_score = 1``).
2. **OKS-NMS** (:func:`oks_nms`, ``thr = 0.9``): greedy by descending score; a pose is kept when its OKS to
   every already kept pose is ``<= thr``. The OKS between two *predictions* is symmetric in the area,
   ``OKS(a, b) = mean_j exp(−d_j² / (2·(2σ_j)²·((area_a + area_b)/2 + eps)))`` over all joints
   (:func:`pose_oks`), with ``area`` the padded, aspect-fixed crop area ``prod(200·scale)``; where no area is
   known the keypoint-extent box area is used. With ``vis_thr`` only joints whose scores exceed it in *both*
   poses count (MMPose's version of this filter effectively tests only the second pose).
3. :func:`soft_oks_nms` instead decays the scores of overlapping poses (Gaussian ``s·exp(−oks²/thr)`` or
   linear ``s·(1 − oks)`` where ``oks >= thr``) and keeps at most ``max_dets`` poses.

Ties in score are broken by input order (the earlier pose first), so results do not depend on the sort
algorithm.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from humanvision.metrics.coco import resolve_sigmas
from humanvision.skeletons import Skeleton

__all__ = [
    "keypoint_extent_areas",
    "oks_nms",
    "oks_nms_by_image",
    "pose_oks",
    "rescore_poses",
    "soft_oks_nms",
]

_EPS = np.spacing(1.0)


def rescore_poses(box_scores: Any, keypoint_scores: Any, thr: float = 0.2) -> np.ndarray:
    """Pose score ``box_score × mean{s_j : s_j > thr}`` (0 when no joint exceeds ``thr``).

    Args:
        box_scores: ``(...)`` detector scores (1 for GT boxes).
        keypoint_scores: ``(..., K)`` per-joint confidences.
    """
    s = np.asarray(keypoint_scores, dtype=np.float64)
    above = s > thr
    n = above.sum(-1)
    mean = np.where(n > 0, np.where(above, s, 0.0).sum(-1) / np.maximum(n, 1), 0.0)
    return np.asarray(box_scores, dtype=np.float64) * mean


def keypoint_extent_areas(keypoints: Any) -> np.ndarray:
    """Area of the box spanned by the keypoints ``(..., K, 2+) -> (...)`` (fallback scale for OKS-NMS)."""
    k = np.asarray(keypoints, dtype=np.float64)
    span = k[..., :2].max(-2) - k[..., :2].min(-2)
    return span[..., 0] * span[..., 1]


def pose_oks(keypoints: Any, areas: Any = None, *, sigmas: Any = None,
             skeleton: str | Skeleton | None = "coco17", vis_thr: float | None = None) -> np.ndarray:
    """Symmetric OKS matrix ``(N, N)`` between predicted poses ``(N, K, 2|3)`` (column 2: joint scores).

    The scale of a pair is the mean of the two ``areas`` (keypoint-extent areas when ``None``).
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 3 or kp.shape[-1] < 2:
        raise ValueError(f"keypoints must be (N, K, 2|3), got shape {kp.shape}")
    sig = resolve_sigmas(skeleton, sigmas)
    if len(sig) != kp.shape[1]:
        raise ValueError(f"{kp.shape[1]} joints but {len(sig)} OKS sigmas")
    area = keypoint_extent_areas(kp) if areas is None else np.asarray(areas, dtype=np.float64).reshape(-1)
    if area.shape != (kp.shape[0],):
        raise ValueError(f"areas must have one value per pose ({kp.shape[0]}), got shape {area.shape}")
    d2 = ((kp[:, None, :, :2] - kp[None, :, :, :2]) ** 2).sum(-1)           # (N, N, K)
    scale = (area[:, None] + area[None, :]) / 2 + _EPS
    e = d2 / ((sig * 2) ** 2) / scale[..., None] / 2
    if vis_thr is None:
        return np.exp(-e).mean(-1)
    if kp.shape[-1] < 3:
        raise ValueError("vis_thr needs joint scores in keypoints[..., 2]")
    vis = kp[..., 2] > vis_thr
    use = vis[:, None, :] & vis[None, :, :]
    n = use.sum(-1)
    return np.where(n > 0, np.where(use, np.exp(-e), 0.0).sum(-1) / np.maximum(n, 1), 0.0)


def _descending(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-scores, kind="stable")


def oks_nms(keypoints: Any, scores: Any, areas: Any = None, *, thr: float = 0.9, sigmas: Any = None,
            skeleton: str | Skeleton | None = "coco17", vis_thr: float | None = None) -> np.ndarray:
    """Greedy OKS-NMS over the poses of one image; returns kept indices, highest score first.

    Args:
        keypoints: ``(N, K, 2|3)``; scores: ``(N,)``; areas: ``(N,)`` crop areas (keypoint extent if
            ``None``).
        thr: a pose is suppressed when its OKS to a kept, higher-scoring pose exceeds ``thr``.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(s) == 0:
        return np.zeros(0, dtype=np.int64)
    oks = pose_oks(keypoints, areas, sigmas=sigmas, skeleton=skeleton, vis_thr=vis_thr)
    if oks.shape[0] != len(s):
        raise ValueError(f"{oks.shape[0]} poses but {len(s)} scores")
    suppressed = np.zeros(len(s), dtype=bool)
    keep = []
    for i in _descending(s):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= oks[i] > thr
    return np.asarray(keep, dtype=np.int64)


def soft_oks_nms(keypoints: Any, scores: Any, areas: Any = None, *, thr: float = 0.9,
                 method: Literal["gaussian", "linear"] = "gaussian", max_dets: int = 20, sigmas: Any = None,
                 skeleton: str | Skeleton | None = "coco17",
                 vis_thr: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Soft OKS-NMS: repeatedly keep the best remaining pose and decay the others by their OKS to it.

    Decay: ``gaussian``: ``s · exp(−oks² / thr)``; ``linear``: ``s · (1 − oks)`` for ``oks >= thr``.
    Returns ``(keep, new_scores)``: at most ``max_dets`` indices in the order they were kept and their
    decayed scores (non-increasing).
    """
    if method not in ("gaussian", "linear"):
        raise ValueError(f"method must be 'gaussian' or 'linear', got {method!r}")
    s = np.asarray(scores, dtype=np.float64).reshape(-1).copy()
    if len(s) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    oks = pose_oks(keypoints, areas, sigmas=sigmas, skeleton=skeleton, vis_thr=vis_thr)
    if oks.shape[0] != len(s):
        raise ValueError(f"{oks.shape[0]} poses but {len(s)} scores")
    alive = np.ones(len(s), dtype=bool)
    keep, kept_scores = [], []
    for _ in range(min(max_dets, len(s))):
        cand = np.where(alive, s, -np.inf)
        i = int(np.argmax(cand))  # first maximum: ties keep input order
        keep.append(i)
        kept_scores.append(s[i])
        alive[i] = False
        o = oks[i]
        if method == "gaussian":
            s = np.where(alive, s * np.exp(-(o**2) / thr), s)
        else:
            s = np.where(alive & (o >= thr), s * (1 - o), s)
    return np.asarray(keep, dtype=np.int64), np.asarray(kept_scores)


def oks_nms_by_image(image_ids: Any, keypoints: Any, scores: Any, areas: Any = None, *, thr: float = 0.9,
                     sigmas: Any = None, skeleton: str | Skeleton | None = "coco17",
                     vis_thr: float | None = None) -> np.ndarray:
    """:func:`oks_nms` applied per image to a flat batch; returns kept indices into the batch (sorted)."""
    ids = np.asarray(image_ids).reshape(-1)
    kp = np.asarray(keypoints, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    ar = None if areas is None else np.asarray(areas, dtype=np.float64).reshape(-1)
    if not (len(ids) == len(kp) == len(s)) or (ar is not None and len(ar) != len(s)):
        raise ValueError("image_ids, keypoints, scores (and areas) must have the same length")
    order = np.argsort(ids, kind="stable")
    bounds = np.flatnonzero(ids[order][1:] != ids[order][:-1]) + 1
    keep = []
    for idx in np.split(order, bounds) if len(ids) else []:
        k = oks_nms(kp[idx], s[idx], None if ar is None else ar[idx], thr=thr, sigmas=sigmas,
                    skeleton=skeleton, vis_thr=vis_thr)
        keep.append(idx[k])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)
