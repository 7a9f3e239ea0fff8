"""Differentiable soft-argmax (integral regression) over 2D heatmaps and 3D volumes (pose3d.md §2.2, §2.4.8).

``p = softmax(beta * h)`` over all spatial cells, then the expectation of the cell coordinates under ``p``.
Coordinates are integer cell indices (no half-pixel offset): column ``x``, row ``y`` and, for volumes
``(D, H, W)``, depth ``z``. Learnable Triangulation uses ``beta = 100`` on 2D heatmaps and ``beta = 1`` on
volumes; its heatmap -> image scaling is ``x * in / hm`` (here: the codec's ``stride``), consistent with a
camera matrix rescaled by the same factor. With an explicit ``coord_volume`` (``(D, H, W, 3)`` world points
per cell, e.g. LT's rotated cuboid grid) the 3D output is ``sum p * coord_volume``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from humanvision.codecs.base import KeypointCodec

__all__ = ["SoftArgmax", "soft_argmax_2d", "soft_argmax_3d"]


def soft_argmax_2d(heatmaps: torch.Tensor, beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(..., H, W)`` logits -> ``(coords (..., 2) as (x, y) cell indices, probabilities (..., H, W))``."""
    if heatmaps.ndim < 2:
        raise ValueError(f"soft_argmax_2d expects (..., H, W), got {tuple(heatmaps.shape)}")
    h, w = heatmaps.shape[-2:]
    p = torch.softmax(beta * heatmaps.flatten(-2), dim=-1).view_as(heatmaps)
    xs = torch.arange(w, dtype=p.dtype, device=p.device)
    ys = torch.arange(h, dtype=p.dtype, device=p.device)
    coords = torch.stack([(p.sum(-2) * xs).sum(-1), (p.sum(-1) * ys).sum(-1)], -1)
    return coords, p


def soft_argmax_3d(volumes: torch.Tensor, beta: float = 1.0,
                   coord_volume: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(..., D, H, W)`` logits -> ``(coords (..., 3), probabilities (..., D, H, W))``.

    Without ``coord_volume`` the coordinates are ``(x, y, z)`` = (W, H, D) cell indices. With it, ``coord_volume``
    is ``(D, H, W, 3)`` shared by all channels, or ``(B, D, H, W, 3)`` per sample for ``volumes (B, K, D, H, W)``,
    and the output is the probability-weighted mean of those points (gradients flow to both inputs).
    """
    if volumes.ndim < 3:
        raise ValueError(f"soft_argmax_3d expects (..., D, H, W), got {tuple(volumes.shape)}")
    d, h, w = volumes.shape[-3:]
    p = torch.softmax(beta * volumes.flatten(-3), dim=-1)
    if coord_volume is None:
        zz, yy, xx = torch.meshgrid(*(torch.arange(n, dtype=p.dtype, device=p.device) for n in (d, h, w)),
                                    indexing="ij")
        grid = torch.stack([xx, yy, zz], -1).reshape(-1, 3)
        coords = p @ grid
    else:
        if coord_volume.shape[-4:] != (d, h, w, 3):
            raise ValueError(f"coord_volume must be (..., {d}, {h}, {w}, 3), got {tuple(coord_volume.shape)}")
        grid = coord_volume.to(p.dtype).flatten(-4, -2)  # (N, 3) or (B, N, 3)
        coords = p @ grid
    return coords, p.view_as(volumes)


class SoftArgmax(KeypointCodec):
    """Integral-regression codec for 2D heatmaps: targets are coordinates, decoding is a soft-argmax.

    ``encode`` returns ``keypoint_labels (N, K, 2)`` (input-crop px, float32) and ``keypoint_weights`` (= visible).
    ``decode_torch(heatmaps (B, K, H, W))`` is differentiable and returns input-crop px ``cells * in / hm`` and a
    score = the maximum raw heatmap value per channel.
    """

    def __init__(self, input_size: Sequence[int], heatmap_size: Sequence[int], beta: float = 100.0) -> None:
        super().__init__(input_size, heatmap_size)
        self.beta = float(beta)
        self.stride = tuple(i / h for i, h in zip(self.input_size, self.heatmap_size))

    def encode(self, keypoints, visible=None) -> dict[str, np.ndarray]:
        kp, vis, single = self._check_keypoints(keypoints, visible)
        labels = np.where(vis[..., None] > 0, kp, 0.0).astype(np.float32)
        weights = (vis > 0).astype(np.float32) * vis
        if single:
            labels, weights = labels[0], weights[0]
        return {"keypoint_labels": labels, "keypoint_weights": weights}

    def decode_torch(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if heatmaps.ndim != 4 or tuple(heatmaps.shape[-2:]) != self.heatmap_size[::-1]:
            raise ValueError(f"SoftArgmax: expected heatmaps (B, K, {self.heatmap_size[1]}, "
                             f"{self.heatmap_size[0]}), got {tuple(heatmaps.shape)}")
        if heatmaps.dtype in (torch.float16, torch.bfloat16):
            heatmaps = heatmaps.float()
        coords, _ = soft_argmax_2d(heatmaps, self.beta)
        return coords * coords.new_tensor(self.stride), heatmaps.flatten(-2).amax(-1)
