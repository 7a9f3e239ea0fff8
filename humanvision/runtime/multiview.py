"""Multi-view 3D pose by algebraic triangulation (Learnable Triangulation's ``alg``) from an exported ONNX file:
numpy, OpenCV and onnxruntime only.

``humanvision export`` on an algebraic recipe (``configs/lt_algebraic_*.yaml``) writes the per-view network
(heatmaps and learnt confidences) with the contract of ``MultiViewCrops`` + ``AlgebraicTriangulation.predict``
(format :data:`MULTIVIEW_FORMAT`). :class:`MultiViewTriangulator` reads it and runs, for one person seen by V
calibrated cameras,

    per view: the square integer crop about the person box (side int(scale x longer side), zero outside the image)
    -> INTER_AREA resize -> /255, mean/std -> ONNX heatmaps (+ confidences) -> soft-argmax (softmax of beta x the
    map, expected cell) x stride = crop pixels; the camera's projection matrix moved into the crop ->
    confidences normalised over the available views + 1e-5 (or 1 per view) -> one weighted DLT per joint
    (float64) -> 3D joints in the cameras' world frame,

the same numbers as the PyTorch path. Volumetric and ContextPose exports run whole in the graph
(:class:`VolumetricTriangulator`: the crops, their cameras and a base point in, the 3D joints out).

>>> from humanvision.runtime import MultiViewTriangulator
>>> tri = MultiViewTriangulator("lt_algebraic.onnx")                               # doctest: +SKIP
>>> out = tri(images, boxes, projections)     # V images (None: missing), V xywh boxes, V (3, 4) P  # doctest: +SKIP
>>> out["keypoints_3d"]                        # (J, 3) in the world frame of P  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from humanvision.errors import DataError
from humanvision.runtime.pose import (
    MetadataError,
    check_entries,
    check_format,
    open_session,
    pixel_normalizer,
)

__all__ = ["MULTIVIEW_FORMAT", "MultiViewTriangulator", "VolumetricTriangulator", "check_multiview_metadata",
           "crop_image", "dlt", "square_crop_box"]

MULTIVIEW_FORMAT = "humanvision.multiview"


def check_multiview_metadata(meta: Any, path: str | Path = "<metadata>") -> dict[str, Any]:
    """Validate a multi-view model's metadata (format, version, the keys and values the runtime uses)."""
    check_format(meta, MULTIVIEW_FORMAT, "MultiViewTriangulator", path)
    def entries(meta: dict[str, Any]) -> dict[str, bool]:
        inp, out, crop, dec = meta["input"], meta["output"], meta["crop"], meta.get("decode", {})
        j = len(meta["skeleton"]["joints"])
        checks = {
            "method": meta["method"] in ("algebraic", "volumetric"),
            "input.size": len(inp["size"]) == 2 and int(inp["size"][0]) == int(inp["size"][1]) > 1,
            "input.color": inp["color"] in ("RGB", "BGR"),
            "crop.scale": float(crop["scale"]) > 0,
        }
        if meta["method"] == "algebraic":
            checks.update({"output.shape": len(out["shape"]) == 4 and int(out["shape"][1]) == j,
                           "decode.soft_argmax_beta": float(dec["soft_argmax_beta"]) > 0,
                           "decode.stride": len(dec["stride"]) == 2})
        else:
            checks.update({"output.shape": [int(v) for v in out["shape"]] == [1, j, 3],
                           "input.views": int(inp["views"]) >= 1})
        return checks

    return check_entries(meta, path, entries)


def square_crop_box(box: Sequence[float], scale: float) -> tuple[int, int, int, int]:
    """An xywh person box -> the integer square ``(left, top, right, bottom)`` crop: side ``int(scale x longer
    side)`` about the integer centre (Learnable Triangulation's ``scale_bbox``; the box is rounded to whole pixels
    first)."""
    x, y, w, h = (float(v) for v in box)
    left, top, right, bottom = round(x), round(y), round(x + w), round(y + h)
    side = int(scale * max(right - left, bottom - top))
    cx, cy = (left + right) // 2, (top + bottom) // 2
    x0, y0 = cx - side // 2, cy - side // 2
    return x0, y0, x0 + side, y0 + side


def crop_image(image: np.ndarray, box: Sequence[int]) -> np.ndarray:
    """``image[top:bottom, left:right]`` of an integer ``(left, top, right, bottom)`` box, zero outside the image
    (PIL's ``Image.crop``; also the training crops of :class:`humanvision.methods.algebraic.MultiViewCrops`)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    h, w = image.shape[:2]
    out = np.zeros((y1 - y0, x1 - x0, *image.shape[2:]), image.dtype)
    a0, b0, a1, b1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if a1 > a0 and b1 > b0:
        out[b0 - y0:b1 - y0, a0 - x0:a1 - x0] = image[b0:b1, a0:a1]
    return out


def dlt(P: np.ndarray, uv: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted DLT: ``P (V, 3, 4)``, ``uv (V, J, 2)``, ``w (V, J)`` -> ``(J, 3)`` float64 (NaN where fewer than two
    views have a weight): per joint the rows ``w (u P3 - P1)``, ``w (v P3 - P2)``, the right singular vector of the
    smallest singular value."""
    P, uv, w = np.asarray(P, np.float64), np.asarray(uv, np.float64), np.asarray(w, np.float64)
    rows = uv[..., None] * P[:, None, 2:3, :] - P[:, None, 0:2, :]  # (V, J, 2, 4)
    rows = rows * w[..., None, None]
    a = rows.transpose(1, 0, 2, 3).reshape(uv.shape[1], -1, 4)  # (J, 2V, 4)
    x = np.linalg.svd(a, full_matrices=False)[2][:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):  # under-determined joints: replaced by NaN below
        out = x[:, :3] / x[:, 3:]
    out[(w != 0).sum(0) < 2] = np.nan
    return out


class _MultiViewModel:
    """What both multi-view runtimes share: the session, the metadata of method :attr:`method` and the per-view
    crops with their crop-frame cameras."""

    method = ""

    def __init__(self, model: str | Path, *, providers: Sequence[str] | None = None,
                 session_options: Any = None) -> None:
        self.path = Path(model)
        self.session, self.providers, self.metadata = open_session(self.path, providers, session_options,
                                                                   check_multiview_metadata)
        m = self.metadata
        if m["method"] != self.method:
            other = {"algebraic": "MultiViewTriangulator", "volumetric": "VolumetricTriangulator"}[m["method"]]
            raise MetadataError(f"this is a {m['method']} model; open it with {other}", file=str(self.path),
                                field="metadata.method")
        self.input_name = m["input"]["name"]
        self.size = int(m["input"]["size"][0])
        self.joint_names = list(m["skeleton"]["joints"])
        self._bgr = m["input"]["color"] == "BGR"
        self._scale, self._offset = pixel_normalizer(m["input"])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, model={self.metadata.get('model')!r}, "
                f"input={self.size}, providers={self.providers})")

    def _views(self, images: Sequence[Any], boxes: Sequence[Any], projections: Any
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Crops of the available views, their mask, crop boxes and crop-frame projection matrices."""
        v = len(images)
        P = np.asarray(projections, dtype=np.float64)
        if P.shape != (v, 3, 4) or not np.isfinite(P).all():
            raise DataError(f"expected ({v}, 3, 4) finite projection matrices for {v} views, got "
                            f"{np.shape(projections)}", field="projections")
        if len(boxes) != v:
            raise DataError(f"{len(boxes)} boxes for {v} views", field="boxes")
        s = self.size
        mask = np.array([img is not None for img in images])
        crops = np.zeros((v, 3, s, s), np.float32)
        ltrb = np.zeros((v, 4), np.int64)
        crop_p = P.copy()
        for c, (img, box) in enumerate(zip(images, boxes, strict=True)):
            if img is None:
                continue
            if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise DataError(f"expected an (H, W, 3) uint8 RGB array, got {type(img).__name__} "
                                f"{getattr(img, 'shape', '')}", record=f"view {c}", field="images")
            b = np.asarray(box, np.float64) if box is not None else None
            if b is None or b.shape != (4,) or not np.isfinite(b).all() or b[2] <= 0 or b[3] <= 0:
                raise DataError(f"expected a finite xywh box with w, h > 0, got {box}", record=f"view {c}",
                                field="boxes")
            ltrb[c] = square_crop_box(b, float(self.metadata["crop"]["scale"]))
            x0, y0, x1, y1 = ltrb[c]
            if x1 <= x0:
                raise DataError(f"the box {b.tolist()} gives an empty crop", record=f"view {c}", field="boxes")
            crop = cv2.resize(crop_image(img, ltrb[c]), (s, s), interpolation=cv2.INTER_AREA)
            if self._bgr:
                crop = crop[..., ::-1]
            crops[c] = (crop.astype(np.float32) * self._scale + self._offset).transpose(2, 0, 1)
            k = np.array([[s / (x1 - x0), 0.0, 0.0], [0.0, s / (y1 - y0), 0.0], [0.0, 0.0, 1.0]])
            k[:2, 2] = -k[[0, 1], [0, 1]] * np.array([x0, y0])
            crop_p[c] = k @ P[c]
        return crops, mask, ltrb, crop_p


class MultiViewTriangulator(_MultiViewModel):
    """An algebraic-triangulation model exported by ``humanvision export``, on onnxruntime.

    Args:
        model: the ``.onnx`` file.
        providers, session_options: as :class:`~humanvision.runtime.PoseEstimator`.

    ``__call__(images, boxes, projections)``: ``images`` V ``(H, W, 3)`` uint8 RGB arrays (``None`` for a view
    without the person), ``boxes`` V xywh person boxes (``None`` with the missing views), ``projections`` ``(V, 3,
    4)`` camera matrices ``K [R | t]`` of the full images -> ``keypoints_3d (J, 3)`` (world frame of the
    matrices), ``keypoints_2d (V, J, 2)`` crop pixels, ``weights (V, J)`` (the DLT weights), ``crop_boxes (V, 4)``
    (ltrb, zeros for missing views) and ``crop_projections (V, 3, 4)``.
    """

    method = "algebraic"

    def __init__(self, model: str | Path, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        m = self.metadata
        self.output_names = [m["output"]["name"]] + ([m["output"]["confidences"]] if m["output"]["confidences"]
                                                     else [])

    def soft_argmax(self, heatmaps: np.ndarray) -> np.ndarray:
        """``(..., J, h, w)`` -> crop pixels ``(..., J, 2)``: expected cell of softmax(beta x map), times stride."""
        d = self.metadata["decode"]
        hh, hw = heatmaps.shape[-2:]
        z = np.asarray(heatmaps, np.float64).reshape(*heatmaps.shape[:-2], -1) * float(d["soft_argmax_beta"])
        p = np.exp(z - z.max(-1, keepdims=True))
        p = (p / p.sum(-1, keepdims=True)).reshape(heatmaps.shape)
        cells = np.stack([(p.sum(-2) * np.arange(hw)).sum(-1), (p.sum(-1) * np.arange(hh)).sum(-1)], -1)
        return cells * np.asarray(d["stride"], np.float64)

    def __call__(self, images: Sequence[Any], boxes: Sequence[Any], projections: Any) -> dict[str, np.ndarray]:
        crops, mask, ltrb, crop_p = self._views(images, boxes, projections)
        if mask.sum() < 2:
            raise DataError(f"triangulation needs at least two views with the person, got {int(mask.sum())}",
                            field="images")
        v, j = len(images), len(self.joint_names)
        outs = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(crops[mask])})
        uv = np.zeros((v, j, 2))
        uv[mask] = self.soft_argmax(outs[0])
        if len(outs) == 2:
            raw = np.zeros((v, j))
            raw[mask] = outs[1]
            weights = (raw / np.maximum(raw.sum(0, keepdims=True), 1e-12) + float(
                self.metadata["decode"]["confidence_eps"])) * mask[:, None]
        else:
            weights = np.repeat(mask[:, None].astype(np.float64), j, 1)
        return {"keypoints_3d": dlt(crop_p, uv, weights), "keypoints_2d": uv, "weights": weights,
                "crop_boxes": ltrb, "crop_projections": crop_p}


class VolumetricTriangulator(_MultiViewModel):
    """A volumetric (Learnable Triangulation ``vol``) or ContextPose model exported by ``humanvision export``, on
    onnxruntime. The whole method is the graph (2D network, unprojection into the cuboid about the base point,
    aggregation over views, V2V and the 3D soft-argmax), for the fixed number of cameras it was exported for
    (``metadata["input"]["views"]``; a camera without the person is masked out).

    ``__call__(images, boxes, projections, base_point)``: as :class:`MultiViewTriangulator`, plus ``base_point (3,)``,
    the cuboid's centre in the world frame (the pelvis, e.g. from a :class:`MultiViewTriangulator` run, whose
    ``keypoints_3d[root]`` is LT's base point) -> ``keypoints_3d (J, 3)`` float64 world, ``crop_boxes``,
    ``crop_projections``.
    """

    method = "volumetric"

    def __init__(self, model: str | Path, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.views = int(self.metadata["input"]["views"])

    def __call__(self, images: Sequence[Any], boxes: Sequence[Any], projections: Any,
                 base_point: Any) -> dict[str, np.ndarray]:
        if len(images) != self.views:
            raise DataError(f"this model was exported for {self.views} cameras, got {len(images)} images (pass "
                            "None for a camera without the person, or export again with --views)", field="images")
        base = np.asarray(base_point, dtype=np.float64).reshape(-1)
        if base.shape != (3,) or not np.isfinite(base).all():
            raise DataError(f"expected a finite (3,) base point, got {np.shape(base_point)}", field="base_point")
        crops, mask, ltrb, crop_p = self._views(images, boxes, projections)
        if not mask.any():
            raise DataError("no view shows the person", field="images")
        names = [i.name for i in self.session.get_inputs()]
        feed = dict(zip(names, (crops[None], crop_p[None], base[None], mask[None]), strict=True))
        out = self.session.run([self.metadata["output"]["name"]], feed)[0]
        return {"keypoints_3d": np.asarray(out[0], np.float64), "crop_boxes": ltrb, "crop_projections": crop_p}
