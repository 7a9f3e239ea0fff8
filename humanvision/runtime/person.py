"""Person re-identification and pedestrian attributes from exported ONNX files: numpy, OpenCV and onnxruntime only.

``humanvision export`` on a re-id or attribute recipe writes a *person-crop* model (format
:data:`PERSON_FORMAT`): the whole person box is cut out of the image and stretched to the model's input (no aspect
fix, no padding: how Market-1501 / MSMT17 / PA-100K crops are fed to these models), then

    box (xywh) -> pixel rows / columns floor(x) .. ceil(x + w), clipped to the image -> resize to the input
    (bicubic for re-id, bilinear for attributes: the PyTorch evaluation's interpolation) -> /255, mean/std, NCHW
    float32 -> ONNX -> re-id: the test feature (B, E) | attributes: sigmoid scores (B, A),

the same numbers as the PyTorch evaluation (``humanvision.methods.reid.person_transform`` + ``ReIDMethod.embed`` /
``AttributeMethod.predict``) on the same crop. A box that covers the whole image (the default) feeds the image as
it is, which is what a dataset of person crops needs.

>>> from humanvision.runtime import AttributeClassifier, ReIDEmbedder
>>> reid = ReIDEmbedder("reid.onnx")                                  # doctest: +SKIP
>>> feats = reid(image_rgb, boxes=[[x, y, w, h], ...])                 # (N, E), unit length  # doctest: +SKIP
>>> dist = reid.distance(query_feats, gallery_feats)                   # (Q, G)  # doctest: +SKIP
>>> attrs = AttributeClassifier("attributes.onnx")                     # doctest: +SKIP
>>> attrs.labels(attrs(image_rgb))                                     # [{"Female": True, ...}]  # doctest: +SKIP
"""

from __future__ import annotations

import math
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

__all__ = ["INTERPOLATIONS", "PERSON_FORMAT", "TASKS", "AttributeClassifier", "PersonCropModel", "ReIDEmbedder",
           "check_person_metadata", "cut_box"]

PERSON_FORMAT = "humanvision.person_crop"
#: what each task's graph outputs
TASKS = {"reid": "embedding", "attributes": "sigmoid_scores"}
INTERPOLATIONS = {"bicubic": cv2.INTER_CUBIC, "bilinear": cv2.INTER_LINEAR}


def check_person_metadata(meta: Any, path: str | Path = "<metadata>") -> dict[str, Any]:
    """Validate a person-crop model's metadata (format, version, the keys and values the runtime uses)."""
    check_format(meta, PERSON_FORMAT, "ReIDEmbedder / AttributeClassifier", path)
    def entries(meta: dict[str, Any]) -> dict[str, bool]:
        inp, crop, out, task = meta["input"], meta["crop"], meta["output"], meta["task"]
        size = [int(v) for v in inp["size"]]
        checks = {
            "task": task in TASKS,
            "input.size": len(size) == 2 and min(size) > 1,
            "input.mean": len(inp["mean"]) == 3, "input.std": len(inp["std"]) == 3 and min(inp["std"]) > 0,
            "input.color": inp["color"] in ("RGB", "BGR"),
            "crop.method": crop["method"] == "cut_resize",
            "crop.interpolation": crop["interpolation"] in INTERPOLATIONS,
            "output.kind": out["kind"] == TASKS.get(task),
            "output.shape": len(out["shape"]) == 2 and int(out["shape"][1]) > 0,
        }
        if task == "attributes":
            checks["output.attributes"] = len(out["attributes"]) == int(out["shape"][1])
            checks["output.threshold"] = 0.0 < float(out["threshold"]) < 1.0
        return checks

    return check_entries(meta, path, entries)


def cut_box(image: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """The pixels of ``image`` under the xywh ``box``: rows ``floor(y) .. ceil(y + h)`` and columns ``floor(x) ..
    ceil(x + w)`` (a fractional box grows to whole pixels), clipped to the image. A box outside the image is a
    :class:`DataError`."""
    x, y, w, h = (float(v) for v in box)
    ih, iw = image.shape[:2]
    x0, y0 = max(0, math.floor(x)), max(0, math.floor(y))
    x1, y1 = min(iw, math.ceil(x + w)), min(ih, math.ceil(y + h))
    if x1 <= x0 or y1 <= y0:
        raise DataError(f"box {[x, y, w, h]} has no pixels inside the {iw}x{ih} image", field="boxes")
    return image[y0:y1, x0:x1]


class PersonCropModel:
    """A person-crop model exported by ``humanvision export`` (re-id or attributes), on onnxruntime.

    Args:
        model: the ``.onnx`` file.
        providers: onnxruntime execution providers (default CPU).
        batch_size: crops per onnxruntime call.
        session_options: an ``onnxruntime.SessionOptions``.

    ``__call__(image, boxes=None)``: ``image`` an ``(H, W, 3)`` uint8 RGB array, ``boxes`` ``(N, 4)`` xywh person
    boxes (default: the whole image) -> the graph's outputs ``(N, D)`` float32 (see the subclasses).
    """

    task: str | None = None  # the subclass's task; None accepts either

    def __init__(self, model: str | Path, *, providers: Sequence[str] | None = None, batch_size: int = 64,
                 session_options: Any = None) -> None:
        self.path = Path(model)
        self.session, self.providers, self.metadata = open_session(self.path, providers, session_options,
                                                                   check_person_metadata)
        m = self.metadata
        if self.task is not None and m["task"] != self.task:
            other = {"reid": "ReIDEmbedder", "attributes": "AttributeClassifier"}[m["task"]]
            raise MetadataError(f"this is a {m['task']} model, not a {self.task} model; open it with {other}",
                                file=str(self.path), field="metadata.task")
        self.input_name, self.output_name = m["input"]["name"], m["output"]["name"]
        self.input_size = tuple(int(v) for v in m["input"]["size"])
        self.interpolation = INTERPOLATIONS[m["crop"]["interpolation"]]
        self.batch_size = max(1, int(batch_size))
        self._bgr = m["input"]["color"] == "BGR"
        self._scale, self._offset = pixel_normalizer(m["input"])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, model={self.metadata.get('model')!r}, input_size="
                f"{self.input_size}, outputs={self.dim}, providers={self.providers})")

    @property
    def dim(self) -> int:
        """Width of the output (feature dimension or number of attributes)."""
        return int(self.metadata["output"]["shape"][1])

    def preprocess(self, image: np.ndarray, boxes: Any = None) -> np.ndarray:
        """``(N, 3, H, W)`` float32 normalised crops of the boxes (default: the whole image)."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            desc = f"{type(image).__name__} {getattr(image, 'shape', '')} {getattr(image, 'dtype', '')}"
            raise DataError(f"expected an (H, W, 3) uint8 RGB array, got {desc}", field="image")
        if boxes is None:
            boxes = [[0.0, 0.0, float(image.shape[1]), float(image.shape[0])]]
        b = np.asarray(boxes, dtype=np.float64)
        b = b[None] if b.shape == (4,) else b
        if b.ndim != 2 or b.shape[1] != 4:
            raise DataError(f"expected (N, 4) xywh boxes, got shape {np.shape(boxes)}", field="boxes")
        w, h = self.input_size
        crops = np.empty((len(b), 3, h, w), dtype=np.float32)
        for i, box in enumerate(b):
            if not (np.isfinite(box).all() and box[2] > 0 and box[3] > 0):
                raise DataError(f"expected finite (x, y, w, h) with w, h > 0, got {box.tolist()}",
                                record=f"box {i}", field="boxes")
            crop = cv2.resize(np.ascontiguousarray(cut_box(image, box)), (w, h), interpolation=self.interpolation)
            if self._bgr:
                crop = crop[..., ::-1]
            crops[i] = (crop.astype(np.float32) * self._scale + self._offset).transpose(2, 0, 1)
        return crops

    def run(self, crops: np.ndarray) -> np.ndarray:
        """Normalised crops -> the graph's output ``(N, D)`` float32, in batches of ``batch_size``."""
        if len(crops) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate([
            self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(crops[i:i + self.batch_size])})[0]
            for i in range(0, len(crops), self.batch_size)]).astype(np.float32)

    def __call__(self, image: np.ndarray, boxes: Any = None) -> np.ndarray:
        return self.run(self.preprocess(image, boxes))


class ReIDEmbedder(PersonCropModel):
    """A re-identification model: ``__call__(image, boxes=None) -> (N, E)`` features, unit length when the export
    says the model's features are compared normalised (``output.normalize``; ``normalize=False`` gives the raw
    ones). :meth:`distance` is the model's retrieval distance (Euclidean between unit-length features)."""

    task = "reid"

    def __init__(self, model: str | Path, *, normalize: bool | None = None, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        out = self.metadata["output"]
        self.normalize = bool(out.get("normalize", True)) if normalize is None else bool(normalize)

    def __call__(self, image: np.ndarray, boxes: Any = None) -> np.ndarray:
        feats = super().__call__(image, boxes)
        return _unit(feats) if self.normalize else feats

    @staticmethod
    def distance(query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
        """``(Q, G)`` Euclidean distances between unit-length ``query`` and ``gallery`` features (normalised
        here, as the PyTorch evaluation's ``reid_distance(..., normalize=True)``)."""
        q, g = _unit(np.asarray(query, np.float64)), _unit(np.asarray(gallery, np.float64))
        d2 = (q * q).sum(1)[:, None] + (g * g).sum(1)[None] - 2.0 * q @ g.T
        return np.sqrt(np.maximum(d2, 0.0))


class AttributeClassifier(PersonCropModel):
    """A pedestrian-attribute model: ``__call__(image, boxes=None) -> (N, A)`` sigmoid scores in the order of
    :attr:`attributes`; :meth:`labels` thresholds them (positive above the recipe's ``attributes.threshold``, as the evaluation)."""

    task = "attributes"

    def __init__(self, model: str | Path, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.attributes = list(self.metadata["output"]["attributes"])
        self.threshold = float(self.metadata["output"]["threshold"])

    def labels(self, scores: np.ndarray, threshold: float | None = None) -> list[dict[str, bool]]:
        """One ``{attribute: present}`` dict per row of ``scores``."""
        t = self.threshold if threshold is None else float(threshold)
        s = np.asarray(scores).reshape(-1, len(self.attributes))
        return [{a: bool(v > t) for a, v in zip(self.attributes, row, strict=True)} for row in s]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12).astype(x.dtype)
