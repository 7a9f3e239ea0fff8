"""Monocular 3D pose from an exported ONNX file (numpy, OpenCV and onnxruntime only).

``humanvision export`` on a monocular 3D recipe (``configs/zhou3d_*.yaml``) writes the network's heatmaps and depths
with the contract of :func:`humanvision.methods.monocular3d.predict_image` (format :data:`POSE3D_FORMAT`).
:class:`MonocularPose3D` reads it and runs, per person box,

    square crop centred on the box (side ``padding`` x the longer box side; no boxes: the whole image, centred,
    side max(W, H)) -> non-UDP affine, bilinear, zero border -> /255, mean/std -> ONNX heatmaps + depths (+ flip
    test: the mirrored crops in the same batch, both flipped back and averaged) -> integer heatmap argmax, the
    depth read there -> pelvis-relative pose in crop widths -> MPII-16 to Human3.6M-17 (spine and nose as
    midpoints) scaled to ``total_length`` mm of bones; the 2D argmax mapped back through the crop,

the same numbers as the PyTorch path.

>>> from humanvision.runtime import MonocularPose3D
>>> pose3d = MonocularPose3D("zhou3d.onnx")                      # doctest: +SKIP
>>> out = pose3d(image_rgb, boxes=[[x, y, w, h]])                # doctest: +SKIP
>>> out["joints_3d"]                                             # (N, 17, 3) mm, pelvis at 0  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from humanvision.errors import DataError
from humanvision.runtime.codec import flip_back
from humanvision.runtime.pose import (
    affine_matrix,
    check_entries,
    check_format,
    open_session,
    pixel_normalizer,
)

__all__ = ["POSE3D_FORMAT", "MonocularPose3D", "check_pose3d_metadata"]

POSE3D_FORMAT = "humanvision.monocular3d"


def check_pose3d_metadata(meta: Any, path: str | Path = "<metadata>") -> dict[str, Any]:
    """Validate a monocular 3D model's metadata (format, version, the keys and values the runtime uses)."""
    check_format(meta, POSE3D_FORMAT, "MonocularPose3D", path)
    def entries(meta: dict[str, Any]) -> dict[str, bool]:
        inp, out, crop, dec, sk, j3 = (meta[k] for k in ("input", "output", "crop", "decode", "skeleton",
                                                          "joints_3d"))
        k = len(sk["joints"])
        checks = {
            "input.size": len(inp["size"]) == 2 and int(inp["size"][0]) == int(inp["size"][1]) > 1,
            "input.std": len(inp["std"]) == 3 and min(inp["std"]) > 0,
            "output.shape": len(out["shape"]) == 4 and int(out["shape"][1]) == k,
            "output.depth_kind": out["depth_kind"] in ("map", "per_joint"),
            "crop.padding": float(crop["padding"]) > 0, "crop.udp": crop["udp"] is False,
            "decode.root": 0 <= int(dec["root"]) < k, "decode.depth_unit": float(dec["depth_unit"]) > 0,
            "skeleton.flip_index": sorted(sk["flip_index"]) == list(range(k)),
            "joints_3d.from_joints": all(0 <= int(i) < k for i in j3["from_joints"])
            and len(j3["from_joints"]) == len(j3["joints"]),
            "joints_3d.bones": all(0 <= int(i) < len(j3["joints"]) for b in j3["bones"] for i in b),
            "joints_3d.total_length": float(j3["total_length"]) > 0,
        }
        return checks

    return check_entries(meta, path, entries)


class MonocularPose3D:
    """A monocular 3D pose network exported by ``humanvision export``, on onnxruntime.

    Args:
        model: the ``.onnx`` file.
        flip_test: average with the mirrored crops (``None``: the exported default, the recipe's
            ``eval.flip_test``).
        providers, batch_size, session_options: as :class:`~humanvision.runtime.PoseEstimator`.

    ``__call__(image, boxes=None)`` -> numpy arrays ``boxes (N, 4)``, ``keypoints_2d (N, K, 2)`` image pixels,
    ``scores (N, K)`` (heatmap maxima), ``pose_crop (N, K, 3)`` (pelvis-relative, crop widths) and ``joints_3d
    (N, 17, 3)`` (mm, Human3.6M-17 order, pelvis at 0), as
    :func:`humanvision.methods.monocular3d.predict_image`.
    """

    def __init__(self, model: str | Path, *, flip_test: bool | None = None, providers: Sequence[str] | None = None,
                 batch_size: int = 32, session_options: Any = None) -> None:
        self.path = Path(model)
        self.session, self.providers, self.metadata = open_session(self.path, providers, session_options,
                                                                   check_pose3d_metadata)
        m = self.metadata
        self.input_name = m["input"]["name"]
        self.output_names = [m["output"]["name"], m["output"]["depth_name"]]
        self.size = int(m["input"]["size"][0])
        self.flip_test = bool(m["flip_test"]["default"]) if flip_test is None else bool(flip_test)
        self.flip_index = [int(i) for i in m["skeleton"]["flip_index"]]
        self.joint_names = list(m["skeleton"]["joints"])
        self.batch_size = max(1, int(batch_size))
        self._scale, self._offset = pixel_normalizer(m["input"])

    def __repr__(self) -> str:
        return (f"MonocularPose3D({str(self.path)!r}, model={self.metadata.get('model')!r}, input={self.size}, "
                f"flip_test={self.flip_test}, providers={self.providers})")

    def crop_boxes(self, image: np.ndarray, boxes: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The checked boxes ``(N, 4)``, crop centres ``(N, 2)`` and sides ``(N,)`` (pixels)."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 \
                or 0 in image.shape:
            desc = f"{type(image).__name__} {getattr(image, 'shape', '')} {getattr(image, 'dtype', '')}"
            raise DataError(f"expected an (H, W, 3) uint8 RGB array, got {desc}", field="image")
        h, w = image.shape[:2]
        if boxes is None:
            return np.array([[0.0, 0.0, w, h]]), np.array([[w / 2, h / 2]]), np.array([float(max(h, w))])
        b = np.asarray(boxes, dtype=np.float64)
        if b.size and (b.ndim > 2 or b.shape[-1] != 4):
            raise DataError(f"expected (N, 4) xywh boxes, got shape {np.shape(boxes)}", field="boxes")
        b = b.reshape(-1, 4)
        bad = ~(np.isfinite(b).all(1) & (b[:, 2] > 0) & (b[:, 3] > 0))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"expected finite (x, y, w, h) with w, h > 0, got {b[i].tolist()}", record=f"box {i}",
                            field="boxes")
        return b, b[:, :2] + b[:, 2:] / 2, float(self.metadata["crop"]["padding"]) * b[:, 2:].max(1)

    def _matrices(self, centers: np.ndarray, sides: np.ndarray, inv: bool = False) -> np.ndarray:
        s = self.size
        return affine_matrix(centers, np.repeat(np.asarray(sides, np.float64)[:, None], 2, 1), (s, s), udp=False,
                             inv=inv)

    def preprocess(self, image: np.ndarray, centers: np.ndarray, sides: np.ndarray) -> np.ndarray:
        """Normalised square crops ``(N, 3, S, S)`` (centres ``(N, 2)`` and sides ``(N,)`` in pixels)."""
        s = self.size
        mats = self._matrices(centers, sides)
        crops = np.empty((len(mats), 3, s, s), dtype=np.float32)
        for i, m in enumerate(mats):
            crop = cv2.warpAffine(image, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                  borderValue=0)
            crops[i] = (crop.astype(np.float32) * self._scale + self._offset).transpose(2, 0, 1)
        return crops

    def outputs(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised crops -> heatmaps and depths (flip-averaged with the flip test), float32."""
        hms, deps = [], []
        for i in range(0, len(crops), self.batch_size):
            x = crops[i:i + self.batch_size]
            n = len(x)
            batch = np.concatenate([x, x[..., ::-1]]) if self.flip_test else x
            hm, dep = (np.asarray(o, np.float32) for o in self.session.run(
                self.output_names, {self.input_name: np.ascontiguousarray(batch)}))
            if self.flip_test:
                hm = np.float32(0.5) * (hm[:n] + flip_back(hm[n:], self.flip_index, shift=False))
                back = dep[n:][:, self.flip_index] if dep.ndim == 2 else flip_back(dep[n:], self.flip_index,
                                                                                  shift=False)
                dep = np.float32(0.5) * (dep[:n] + back)
            hms.append(hm)
            deps.append(dep)
        return np.concatenate(hms), np.concatenate(deps)

    def decode(self, heatmaps: np.ndarray, depth: np.ndarray, centers: np.ndarray, sides: np.ndarray
               ) -> dict[str, np.ndarray]:
        """Heatmaps + depths -> ``keypoints_2d``, ``scores``, ``pose_crop`` and ``joints_3d`` (see the class)."""
        d = self.metadata["decode"]
        n, k, _, hw = heatmaps.shape
        flat = heatmaps.reshape(n, k, -1)
        idx = flat.argmax(-1)
        scores = np.take_along_axis(flat, idx[..., None], -1)[..., 0].astype(np.float64)
        loc = np.stack([idx % hw, idx // hw], -1)
        if depth.ndim == 4:
            z = depth[np.arange(n)[:, None], np.arange(k)[None], loc[..., 1], loc[..., 0]]
        else:
            z = depth
        pose = np.concatenate([loc.astype(np.float64) / hw, z.astype(np.float64)[..., None] * d["depth_unit"]], -1)
        pose = pose - pose[:, int(d["root"]):int(d["root"]) + 1]
        inv = self._matrices(centers, sides, inv=True)  # heatmap px -> crop px -> image px
        crop_px = loc.astype(np.float64) * (self.size / hw)
        keypoints = crop_px @ np.swapaxes(inv[..., :2], -1, -2) + inv[:, None, :, 2]
        return {"keypoints_2d": keypoints, "scores": scores, "pose_crop": pose, "joints_3d": self.to_metric(pose)}

    def to_metric(self, pose_crop: np.ndarray) -> np.ndarray:
        """``(N, K, 3)`` crop-width poses -> ``(N, 17, 3)`` mm in the export's 3D skeleton (midpoints overwritten,
        root at 0, bones summing to ``total_length``)."""
        j = self.metadata["joints_3d"]
        q = np.asarray(pose_crop, np.float64)[:, [int(i) for i in j["from_joints"]]].copy()
        for target, a, b in j["midpoints"]:
            q[:, target] = (q[:, a] + q[:, b]) / 2
        q = q - q[:, int(j.get("root", 0)):int(j.get("root", 0)) + 1]
        bones = np.asarray(j["bones"], dtype=np.int64)
        total = np.linalg.norm(q[:, bones[:, 0]] - q[:, bones[:, 1]], axis=-1).sum(1)
        if np.any(total <= 0):
            raise DataError(f"pose {int(np.argmax(total <= 0))} has zero total bone length", field="pose")
        return q * (float(j["total_length"]) / total)[:, None, None]

    def __call__(self, image: np.ndarray, boxes: Any = None) -> dict[str, np.ndarray]:
        b, centers, sides = self.crop_boxes(image, boxes)
        k = len(self.joint_names)
        if len(b) == 0:
            shapes = {"keypoints_2d": (k, 2), "scores": (k,), "pose_crop": (k, 3),
                      "joints_3d": (len(self.metadata["joints_3d"]["joints"]), 3)}
            return {"boxes": b, **{key: np.zeros((0, *s)) for key, s in shapes.items()}}
        return {"boxes": b, **self.decode(*self.outputs(self.preprocess(image, centers, sides)), centers, sides)}
