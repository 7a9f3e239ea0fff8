"""The codec contract shared by every keypoint target representation.

A codec converts keypoints in **input-crop pixels** (the frame of the affine crop fed to the network) to training
targets (``encode``) and network outputs back to input-crop pixels (``decode``). The same object is used by the
data pipeline and by the model's prediction path, so target generation and decoding cannot drift apart.

* ``encode(keypoints (N, K, 2) or (K, 2), visible (N, K) or (K,))`` -> dict of float32 numpy arrays, always with
  ``keypoint_weights`` shaped like ``visible``.
* ``decode(outputs)`` takes numpy ``(K, H, W)`` or batched ``(B, K, H, W)`` and returns numpy
  ``(keypoints (..., K, 2), scores (..., K))``; ``decode_torch`` does the same batched on tensors (any device).
* Sizes are ``(width, height)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch

from humanvision.errors import DataError

__all__ = ["KeypointCodec"]


def _pair(size: Sequence[int], name: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (width, height) pair of ints, got {size!r}") from None
    if w <= 1 or h <= 1:
        raise ValueError(f"{name} must be at least 2x2, got {size!r}")
    return w, h


class KeypointCodec(ABC):
    """Base class: holds ``input_size`` / ``heatmap_size`` ``(w, h)`` and the shared input checks."""

    def __init__(self, input_size: Sequence[int], heatmap_size: Sequence[int]) -> None:
        self.input_size = _pair(input_size, "input_size")
        self.heatmap_size = _pair(heatmap_size, "heatmap_size")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(input_size={self.input_size}, heatmap_size={self.heatmap_size})"

    @abstractmethod
    def encode(self, keypoints, visible=None) -> dict[str, np.ndarray]:
        """Keypoints in input-crop pixels -> training targets (see module doc)."""

    @abstractmethod
    def decode_torch(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Batched network outputs ``(B, K, ...)`` -> ``(keypoints (B, K, 2) input px, scores (B, K))``."""

    def decode(self, outputs) -> tuple[np.ndarray, np.ndarray]:
        """Numpy (or tensor) ``(K, ...)`` / ``(B, K, ...)`` outputs -> numpy ``(keypoints, scores)``."""
        t = torch.as_tensor(np.asarray(outputs) if not isinstance(outputs, torch.Tensor) else outputs)
        single = t.ndim == self._output_ndim - 1
        if t.ndim not in (self._output_ndim - 1, self._output_ndim):
            raise ValueError(f"{type(self).__name__}.decode expects {self._output_ndim - 1} or "
                             f"{self._output_ndim} dims, got shape {tuple(t.shape)}")
        with torch.no_grad():
            kpts, scores = self.decode_torch(t[None] if single else t)
        kpts, scores = kpts.cpu().numpy(), scores.cpu().numpy()
        return (kpts[0], scores[0]) if single else (kpts, scores)

    _output_ndim = 4  # (B, K, H, W)

    @staticmethod
    def _check_keypoints(keypoints, visible) -> tuple[np.ndarray, np.ndarray, bool]:
        """Validate and return ``(keypoints (N, K, 2) float64, visible (N, K) float32, was_single)``."""
        kp = np.asarray(keypoints, dtype=np.float64)
        single = kp.ndim == 2
        if single:
            kp = kp[None]
        if kp.ndim != 3 or kp.shape[-1] < 2:
            raise DataError(f"expected shape (N, K, 2) or (K, 2), got {np.shape(keypoints)}", field="keypoints")
        kp = kp[..., :2]
        if visible is None:
            vis = np.ones(kp.shape[:2], dtype=np.float32)
        else:
            vis = np.asarray(visible, dtype=np.float32)
            if single and vis.ndim == 1:
                vis = vis[None]
            if vis.shape != kp.shape[:2]:
                raise DataError(f"shape {np.shape(visible)} does not match keypoints {np.shape(keypoints)}",
                                field="visible")
        bad = (vis > 0) & ~np.isfinite(kp).all(-1)
        if bad.any():
            n, k = np.argwhere(bad)[0]
            raise DataError(f"visible joint {k} of instance {n} has non-finite coordinates {kp[n, k]}",
                            field="keypoints")
        return kp, vis, single
