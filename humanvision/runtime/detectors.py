"""Person detectors for top-down pose models: numpy, OpenCV and onnxruntime only (no torch).

Every detector is a callable ``detector(image, name=None) -> (boxes (N, 4) xyxy float32 image pixels, scores (N,)
float32)``, sorted by descending score; ``image`` is an ``(H, W, 3)`` uint8 **RGB** array (the convention of
:class:`~humanvision.runtime.PoseEstimator`) and ``name`` the image's file name (only the box-file detector uses
it). :func:`xyxy_to_xywh` turns the boxes into the ``xywh`` boxes the pose estimator takes.

* :class:`OnnxDetector`: a local ONNX detector in one of the common output layouts (below); person class only.
* :class:`BoxFileDetector`: boxes from a file: a COCO detection result list (``[{image_id, category_id, bbox
  xywh, score}]``, e.g. the HRNet release's ``COCO_val2017_detections_AP_H_56_person.json``, pose2d.md §1.5), a
  COCO annotation file (its ground-truth person boxes), or the ``--boxes`` json of ``humanvision infer``
  (``[{image | file_name | image_id, bbox xywh, score}]``).
* :class:`WholeImageDetector`: one box, the whole image (a single centred person).
* torchvision detection models (they need torch): :class:`humanvision.models.detectors.TorchvisionDetector`.

ONNX output layouts (:data:`LAYOUTS`; ``layout="auto"`` reads them from the graph's output shapes):

``yolox``
    One output ``(1, N, 5 + C)``: the raw YOLOX head as the official export writes it (``decode_in_inference``
    off): per anchor point ``[dx, dy, log w, log h, objectness, class_0 ... class_C-1]`` with the objectness and
    class scores already sigmoid-ed; the ``N`` anchor points are the cells of the stride-8, 16 and 32 grids over
    the input, row-major, stride by stride (``N = sum (H/s)(W/s)``). Decoding: ``cx = (dx + gx) s``,
    ``cy = (dy + gy) s``, ``w = exp(log w) s``, ``h = exp(log h) s``; score ``objectness * class_0``; then
    score threshold and greedy NMS (IoU ``nms_thr``).
``yolox_decoded``
    The same single output with boxes already decoded (``decode_in_inference`` on): ``[cx, cy, w, h, obj,
    classes...]`` in input pixels. The shape cannot tell it from ``yolox``: ``auto`` chooses ``yolox``, this one
    must be named.
``end2end``
    Boxes after NMS inside the graph (MMDeploy's "end2end" RTMDet / YOLOX models, as rtmlib ships them):
    ``dets (1, N, 5)`` = ``[x1, y1, x2, y2, score]`` in input pixels and ``labels (1, N)`` integer classes
    (``rtmdet`` is an alias). Only the score threshold is applied.

Preprocessing (not stored in the ONNX file, so it is a constructor argument with per-layout defaults): letterbox
resize keeping the aspect ratio into the input size, image at the top-left corner, the rest filled with
``pad_value`` (114); then ``(pixel - mean) / std`` per channel in the model's channel order. Defaults: YOLOX
``mean 0, std 1``, BGR (the official YOLOX and MMDetection 3 YOLOX); ``end2end`` the RTMDet values ``mean
(103.53, 116.28, 123.675), std (57.375, 57.12, 58.395)``, BGR. Boxes are mapped back by dividing by the resize
ratio and clipped to the image.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from humanvision.errors import DataError

__all__ = ["LAYOUTS", "BoxFileDetector", "Detector", "DetectorLayoutError", "OnnxDetector", "WholeImageDetector",
           "box_iou", "identify_layout", "load_detector", "nms", "xywh_to_xyxy", "xyxy_to_xywh"]

LAYOUTS = ("yolox", "yolox_decoded", "end2end")
_ALIASES = {"rtmdet": "end2end", "mmdeploy": "end2end"}
YOLOX_STRIDES = (8, 16, 32)
RTMDET_MEAN, RTMDET_STD = (103.53, 116.28, 123.675), (57.375, 57.12, 58.395)  # BGR order (mmdet RTMDet)


class Detector(Protocol):
    """``detector(image RGB uint8 (H, W, 3), name=None) -> (boxes (N, 4) xyxy float32, scores (N,) float32)``."""

    def __call__(self, image: np.ndarray, name: str | None = None) -> tuple[np.ndarray, np.ndarray]: ...


class DetectorLayoutError(DataError):
    """An ONNX detector whose outputs match none of the known layouts (names the file and the output shapes)."""


# ---------------------------------------------------------------------------------------------------- boxes
def xyxy_to_xywh(boxes: Any) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def xywh_to_xyxy(boxes: Any) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def box_iou(a: Any, b: Any) -> np.ndarray:
    """IoU matrix ``(N, M)`` of xyxy boxes (areas ``(x2 - x1)(y2 - y1)``, no +1)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms(boxes: Any, scores: Any, iou_thr: float) -> np.ndarray:
    """Greedy NMS: indices of the kept boxes, by descending score (a box is dropped when its IoU with a kept,
    higher-scoring box exceeds ``iou_thr``)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    keep: list[int] = []
    while len(order):
        i = int(order[0])
        keep.append(i)
        if len(order) == 1:
            break
        iou = box_iou(b[i], b[order[1:]])[0]
        order = order[1:][iou <= iou_thr]
    return np.asarray(keep, dtype=np.int64)


def _check_image(image: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{type(image).__name__} {getattr(image, 'shape', '')} {getattr(image, 'dtype', '')}"
        raise DataError(f"expected an (H, W, 3) uint8 RGB array, got {desc}", field="image")
    return image


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)


def _finish(boxes: np.ndarray, scores: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Clip to the image, drop empty boxes, sort by descending score; float32."""
    h, w = shape[:2]
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, 0::2] = np.clip(b[:, 0::2], 0, w)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, h)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]) & np.isfinite(s)
    b, s = b[ok], s[ok]
    order = np.argsort(-s, kind="stable")
    return b[order].astype(np.float32), s[order].astype(np.float32)


# ------------------------------------------------------------------------------------------- simple sources
class WholeImageDetector:
    """One box, the whole image, score 1 (the default of ``humanvision infer`` without boxes)."""

    def __call__(self, image: np.ndarray, name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        h, w = _check_image(image).shape[:2]
        return np.array([[0.0, 0.0, w, h]], np.float32), np.ones(1, np.float32)

    def __repr__(self) -> str:
        return "WholeImageDetector()"


def _image_keys(name: str) -> list[str]:
    """The keys a box file may use for an image: its file name, its stem, and the integer of a numeric stem
    (``000000000139.jpg`` -> ``139``, a COCO image id)."""
    p = Path(str(name))
    keys = [p.name, p.stem]
    if p.stem.isdigit():
        keys.append(str(int(p.stem)))
    return keys


class BoxFileDetector:
    """Person boxes read from a json file, looked up by the image's ``name``.

    Accepted files: a COCO detection result list ``[{image_id, category_id, bbox [x, y, w, h], score}]``; a COCO
    annotation file ``{images, annotations}`` (ground-truth boxes of non-crowd ``category_id == person_category``
    annotations, score 1); or ``humanvision infer``'s ``--boxes`` list ``[{image | file_name | image_id, bbox,
    score}]``. Records with another ``category_id`` than ``person_category`` are ignored, and so are boxes scoring
    below ``score_thr``. ``image_id`` matches a numeric file stem (``139`` <- ``000000000139.jpg``) and a video
    frame's name ``{video stem}_{frame:06d}`` matches ``image`` / ``image_id`` keys written that way.

    Args:
        path: the json file.
        score_thr: drop boxes with a lower score.
        person_category: the person ``category_id`` (COCO: 1).
        missing: what an image the file does not mention gets: ``"empty"`` (no person) or ``"whole"`` (the whole
            image, as ``humanvision infer --boxes`` does).
    """

    def __init__(self, path: str | Path, *, score_thr: float = 0.0, person_category: int = 1,
                 missing: str = "empty") -> None:
        if missing not in ("empty", "whole"):
            raise ValueError(f"missing={missing!r}: use 'empty' or 'whole'")
        self.path, self.score_thr, self.missing = Path(path), float(score_thr), missing
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read boxes: {e}", file=str(self.path)) from None
        names: dict[Any, str] = {}
        if isinstance(data, dict) and "annotations" in data:  # COCO ground truth: image_id -> file name
            try:
                names = {im["id"]: Path(im["file_name"]).stem for im in data.get("images", [])}
            except (KeyError, TypeError) as e:
                raise DataError(f"images[] needs id and file_name ({e!r})", file=str(self.path)) from None
            records = [dict(r, score=1.0) for r in data["annotations"]
                       if isinstance(r, dict) and not r.get("iscrowd", 0)]
        elif isinstance(data, list):
            records = data
        else:
            raise DataError("expected a list of {image_id | image | file_name, bbox, score} or a COCO annotation "
                            "file", file=str(self.path))
        self.boxes: dict[str, list[tuple[list[float], float]]] = {}
        for i, r in enumerate(records):
            if not isinstance(r, dict):
                raise DataError(f"expected an object, got {type(r).__name__}", file=str(self.path), record=f"box #{i}")
            key = r.get("image", r.get("file_name", r.get("image_id")))
            bbox = r.get("bbox")
            if key is None or not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                raise DataError("needs 'image' / 'file_name' / 'image_id' and a 4-number 'bbox' [x, y, w, h]",
                                file=str(self.path), record=f"box #{i}")
            if "category_id" in r and int(r["category_id"]) != person_category:
                continue
            try:
                box, score = [float(v) for v in bbox], float(r.get("score", 1.0))
            except (TypeError, ValueError):
                raise DataError(f"non-numeric bbox or score: {bbox}, {r.get('score')}", file=str(self.path),
                                record=f"box #{i}") from None
            if not (np.isfinite(box).all() and box[2] > 0 and box[3] > 0):
                raise DataError(f"expected finite [x, y, w, h] with w, h > 0, got {box}", file=str(self.path),
                                record=f"box #{i}", field="bbox")
            if score < self.score_thr:
                continue
            key = names.get(key, key)
            for k in {str(key), Path(str(key)).stem}:
                self.boxes.setdefault(k, []).append((box, score))

    def __repr__(self) -> str:
        return f"BoxFileDetector({str(self.path)!r}, images={len(self.boxes)}, missing={self.missing!r})"

    def __call__(self, image: np.ndarray, name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        _check_image(image)
        if name is None:
            raise DataError("a box file is looked up by image name: call detector(image, name=...)",
                            file=str(self.path), field="name")
        for key in _image_keys(name):
            if key in self.boxes:
                found = self.boxes[key]
                return _finish(xywh_to_xyxy([b for b, _ in found]), np.array([s for _, s in found]), image.shape)
        if self.missing == "whole":
            return WholeImageDetector()(image)
        return _empty()


# ------------------------------------------------------------------------------------------------------ ONNX
def _dims(shape: Any) -> list[int | None]:
    """An onnxruntime shape with symbolic / unknown dimensions as None."""
    return [d if isinstance(d, int) and d >= 0 else None for d in (shape or [])]


def _describe(outputs: Sequence[tuple[str, list[int | None]]]) -> str:
    return ", ".join(f"{n} ({', '.join('?' if d is None else str(d) for d in s)}{',' if len(s) == 1 else ''})"
                     for n, s in outputs)


def identify_layout(outputs: Sequence[tuple[str, Sequence[int | None]]], path: str | Path = "<detector>") -> str:
    """The layout of a detector from its ``(name, shape)`` outputs (``None`` for a symbolic dimension):
    ``"end2end"`` (``dets (1, N, 5)`` + ``labels (1, N)``, found by these names or shapes) or ``"yolox"`` (one
    ``(1, N, 5 + C)`` output with a static last dimension); else :class:`DetectorLayoutError`."""
    outs = [(n, list(s)) for n, s in outputs]
    by_name = {n: s for n, s in outs}
    if "dets" in by_name and "labels" in by_name:
        return "end2end"
    if len(outs) == 2:
        ranks = sorted((len(s), i) for i, (_, s) in enumerate(outs))
        (r2, _), (r3, i3) = ranks
        if r2 == 2 and r3 == 3 and outs[i3][1][-1] == 5:
            return "end2end"
    if len(outs) == 1:
        s = outs[0][1]
        if len(s) == 3 and s[0] in (1, None) and s[2] is not None and s[2] >= 6:
            return "yolox"
    raise DetectorLayoutError(
        f"unknown detector output layout: outputs {_describe(outs)}; known layouts: 'yolox' (one output (1, N, "
        "5 + C): box, objectness, class scores per anchor point), 'end2end' / 'rtmdet' (dets (1, N, 5) "
        "[x1, y1, x2, y2, score] and labels (1, N)); see humanvision.runtime.detectors",
        file=str(path), field="outputs")


class OnnxDetector:
    """A local ONNX person detector (YOLOX or RTMDet layouts, see the module docstring) on onnxruntime.

    Args:
        model: the ``.onnx`` file.
        layout: ``"auto"`` (from the output shapes), ``"yolox"``, ``"yolox_decoded"``, ``"end2end"`` / ``"rtmdet"``.
        score_thr: keep boxes scoring at least this.
        nms_thr: IoU threshold of the NMS (YOLOX layouts; ``end2end`` graphs have theirs inside).
        input_size: ``(w, h)`` of the network input; default the graph's static input size, else 640 x 640.
        person_class: the person class index (COCO-trained detectors: 0).
        mean, std: per-channel normalisation in the model's channel order (defaults: see the module docstring).
        model_color: ``"BGR"`` (default, as MMDetection / YOLOX models are trained) or ``"RGB"``.
        pad_value: the letterbox fill value.
        strides: the YOLOX grid strides.
        providers, session_options: as for :class:`~humanvision.runtime.PoseEstimator`.

    ``__call__(image RGB uint8, name=None) -> (boxes (N, 4) xyxy float32, scores (N,) float32)``.
    """

    def __init__(self, model: str | Path, *, layout: str = "auto", score_thr: float = 0.3, nms_thr: float = 0.45,
                 input_size: Sequence[int] | None = None, person_class: int = 0,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None, model_color: str = "BGR",
                 pad_value: float = 114.0, strides: Sequence[int] = YOLOX_STRIDES,
                 providers: Sequence[str] | None = None, session_options: Any = None) -> None:
        import onnxruntime as ort

        self.path = Path(model)
        if not self.path.is_file():
            raise DataError("ONNX detector not found", file=str(self.path))
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=session_options,
                                                providers=list(providers) if providers else ["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001  (onnxruntime's error types derive from Exception only)
            raise DataError(f"onnxruntime cannot load the detector: {e}", file=str(self.path)) from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(_dims(inputs[0].shape)) != 4:
            desc = ", ".join(f"{i.name} {tuple(i.shape)}" for i in inputs)
            raise DetectorLayoutError(f"expected one (1, 3, H, W) image input, got {desc}", file=str(self.path),
                                      field="inputs")
        self.input_name = inputs[0].name
        self.outputs = [(o.name, _dims(o.shape)) for o in self.session.get_outputs()]
        layout = _ALIASES.get(layout, layout)
        if layout == "auto":
            layout = identify_layout(self.outputs, self.path)
        elif layout not in LAYOUTS:
            raise ValueError(f"layout={layout!r}: use 'auto' or one of {LAYOUTS + tuple(_ALIASES)}")
        self.layout = layout
        static = _dims(inputs[0].shape)[2:]
        if input_size is not None:
            self.input_size = (int(input_size[0]), int(input_size[1]))
            if None not in static and (static[1], static[0]) != self.input_size:
                raise DataError(f"input_size {self.input_size} (w, h) differs from the graph's fixed input "
                                f"{static[1]}x{static[0]}", file=str(self.path), field="input_size")
        elif None not in static:
            self.input_size = (int(static[1]), int(static[0]))
        else:
            self.input_size = (640, 640)
        self.score_thr, self.nms_thr, self.person_class = float(score_thr), float(nms_thr), int(person_class)
        if model_color not in ("BGR", "RGB"):
            raise ValueError(f"model_color={model_color!r}: use 'BGR' or 'RGB'")
        self.model_color, self.pad_value = model_color, float(pad_value)
        end2end = self.layout == "end2end"
        self.mean = np.asarray(mean if mean is not None else (RTMDET_MEAN if end2end else (0.0,) * 3), np.float32)
        self.std = np.asarray(std if std is not None else (RTMDET_STD if end2end else (1.0,) * 3), np.float32)
        self.strides = tuple(int(s) for s in strides)
        if self.layout == "yolox":
            self._grid = self._make_grid()
            n = self.outputs[0][1][1] if len(self.outputs) == 1 else None
            if n is not None and n != len(self._grid):
                raise DetectorLayoutError(
                    f"YOLOX output has {n} anchor points but a {self.input_size[0]}x{self.input_size[1]} input with "
                    f"strides {self.strides} has {len(self._grid)}; outputs {_describe(self.outputs)} (pass "
                    "input_size / strides, or layout='yolox_decoded' for decoded boxes)", file=str(self.path),
                    field="outputs")

    def __repr__(self) -> str:
        return (f"OnnxDetector({str(self.path)!r}, layout={self.layout!r}, input_size={self.input_size}, "
                f"score_thr={self.score_thr}, nms_thr={self.nms_thr})")

    def _make_grid(self) -> np.ndarray:
        """``(N, 3)`` anchor points ``(gx, gy, stride)``: stride by stride, row-major."""
        w, h = self.input_size
        parts = []
        for s in self.strides:
            gy, gx = np.mgrid[0:h // s, 0:w // s]
            parts.append(np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, s)], -1))
        return np.concatenate(parts).astype(np.float64)

    # ---------------------------------------------------------------------------------------------- steps
    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """Letterbox (top-left, ``pad_value``) + normalisation: ``(1, 3, H, W)`` float32 and the resize ratio."""
        img = _check_image(image)
        if self.model_color == "BGR":
            img = img[..., ::-1]
        w, h = self.input_size
        ih, iw = img.shape[:2]
        ratio = min(w / iw, h / ih)
        nw, nh = max(1, round(iw * ratio)), max(1, round(ih * ratio))
        canvas = np.full((h, w, 3), self.pad_value, np.float32)
        canvas[:nh, :nw] = cv2.resize(np.ascontiguousarray(img), (nw, nh), interpolation=cv2.INTER_LINEAR)
        x = (canvas - self.mean) / self.std
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32), ratio

    def _check_output(self, out: np.ndarray, what: str, rank: int, last: int | None = None) -> np.ndarray:
        if out.ndim != rank or out.shape[0] != 1 or (last is not None and out.shape[-1] != last):
            raise DetectorLayoutError(f"{self.layout} layout expects {what}, got output shapes "
                                      f"{_describe([(n, list(o)) for n, o in self._shapes])}", file=str(self.path),
                                      field="outputs")
        return out[0]

    def decode(self, outputs: Sequence[np.ndarray], ratio: float,
               image_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Raw outputs (in the graph's output order) -> boxes xyxy in image pixels and scores (see the layouts)."""
        self._shapes = [(name, np.shape(o)) for (name, _), o in zip(self.outputs, outputs)]
        if self.layout == "end2end":
            names = [n for n, _ in self.outputs]
            if "dets" in names and "labels" in names:
                dets, labels = outputs[names.index("dets")], outputs[names.index("labels")]
            else:
                dets, labels = sorted(outputs[:2], key=np.ndim, reverse=True)
            dets = self._check_output(np.asarray(dets), "dets (1, N, 5)", 3, 5).astype(np.float64)
            labels = self._check_output(np.asarray(labels), "labels (1, N)", 2)
            if len(labels) != len(dets):
                raise DetectorLayoutError(f"{len(dets)} dets but {len(labels)} labels", file=str(self.path),
                                          field="outputs")
            keep = (labels.astype(np.int64) == self.person_class) & (dets[:, 4] >= self.score_thr)
            return _finish(dets[keep, :4] / ratio, dets[keep, 4], image_shape)
        raw = self._check_output(np.asarray(outputs[0]), "(1, N, 5 + C)", 3).astype(np.float64)
        if raw.shape[1] < 6 + self.person_class:
            raise DetectorLayoutError(f"no class {self.person_class} column in a {raw.shape[1]}-wide output",
                                      file=str(self.path), field="outputs")
        if self.layout == "yolox":
            if len(raw) != len(self._grid):
                raise DetectorLayoutError(f"{len(raw)} anchor points, expected {len(self._grid)} for the input "
                                          f"{self.input_size} and strides {self.strides}", file=str(self.path),
                                          field="outputs")
            g = self._grid
            cxy = (raw[:, :2] + g[:, :2]) * g[:, 2:]
            wh = np.exp(np.minimum(raw[:, 2:4], 20.0)) * g[:, 2:]
        else:
            cxy, wh = raw[:, :2], raw[:, 2:4]
        scores = raw[:, 4] * raw[:, 5 + self.person_class]
        keep = scores >= self.score_thr
        boxes = np.concatenate([cxy - wh / 2, cxy + wh / 2], axis=1)[keep]
        scores = scores[keep]
        kept = nms(boxes, scores, self.nms_thr)
        return _finish(boxes[kept] / ratio, scores[kept], image_shape)

    def __call__(self, image: np.ndarray, name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        x, ratio = self.preprocess(image)
        outputs = self.session.run(None, {self.input_name: x})
        return self.decode(outputs, ratio, image.shape)


# ---------------------------------------------------------------------------------------------- from a spec
def load_detector(spec: str | Path, *, score_thr: float | None = None, **kwargs: Any) -> Detector:
    """A detector from a command-line spec: ``"whole"`` (the whole image), a ``.onnx`` file (:class:`OnnxDetector`,
    ``kwargs`` passed on) or a ``.json`` box file (:class:`BoxFileDetector`). torchvision models need torch:
    :func:`humanvision.models.detectors.build_detector` takes ``torchvision:NAME:WEIGHTS`` as well."""
    text = str(spec)
    if text in ("whole", "none", "image"):
        return WholeImageDetector()
    if text.startswith("torchvision:"):
        raise DataError("torchvision detectors need torch: use humanvision.models.detectors.build_detector",
                        field="detector")
    path = Path(text)
    if not path.is_file():
        raise DataError("detector not found (expected 'whole', an .onnx detector, a .json box file or "
                        "torchvision:NAME:WEIGHTS)", file=text, field="detector")
    thr = {} if score_thr is None else {"score_thr": score_thr}
    if path.suffix.lower() == ".onnx":
        return OnnxDetector(path, **thr, **kwargs)
    if path.suffix.lower() == ".json":
        return BoxFileDetector(path, **thr, **kwargs)
    raise DataError("unknown detector file type (expected .onnx or .json)", file=text, field="detector")
