"""Top-down pose estimation from an exported ONNX file: numpy, OpenCV and onnxruntime only (no torch, no timm).

``humanvision export`` writes the whole preprocessing and decoding contract into the ONNX file's ``metadata_props``
(key ``humanvision``, JSON; :data:`METADATA_VERSION`). :class:`PoseEstimator` reads it and runs

    boxes (xywh; default the whole image) -> (center, scale): aspect-fixed to the input, times the padding ->
    affine crop (UDP or not, bilinear, zero border) -> /255, mean/std, NCHW float32 -> ONNX heatmaps
    (+ flip test: the mirrored crops in the same batch, flipped back and averaged) -> heatmap decoding
    (:mod:`humanvision.runtime.codec`) -> the inverse crop affine -> keypoints in image pixels + scores,

the same steps and numbers as the PyTorch path (``TopDownTransform`` + ``TopDownPose.predict`` +
``keypoints_to_image``; pose2d.md §1.2-§1.3, §2.6).

>>> from humanvision.runtime import PoseEstimator
>>> pose = PoseEstimator("vitpose_small.onnx")             # doctest: +SKIP
>>> keypoints, scores = pose(image_rgb, boxes=[[x, y, w, h]])  # (N, K, 2) image px, (N, K)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from humanvision.errors import DataError
from humanvision.runtime.codec import REFINEMENTS, decode_heatmaps, flip_back

__all__ = ["FORMAT", "METADATA_KEY", "METADATA_VERSION", "MetadataError", "PoseEstimator", "affine_matrix",
           "boxes_to_center_scale", "check_metadata", "read_metadata", "read_rgb"]

METADATA_KEY = "humanvision"
FORMAT = "humanvision.topdown_heatmap"
METADATA_VERSION = 1  # the contract this runtime understands; bump on any incompatible change


class MetadataError(DataError):
    """An ONNX file without humanvision's metadata, or with metadata this version cannot read."""


# ------------------------------------------------------------------------------------------------- metadata
def read_metadata(path: str | Path) -> dict[str, Any]:
    """The checked pre/post-processing contract of an exported model (``metadata_props['humanvision']``): a pose
    model's, or a person-crop (re-id / attribute) model's, checked by its own rules."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise DataError("ONNX file not found", file=str(path))
    try:
        meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
    except Exception as e:  # noqa: BLE001  (onnxruntime's error types derive from Exception only)
        raise DataError(f"not a readable ONNX model: {e}", file=str(path)) from None
    return _parse_metadata(meta.custom_metadata_map, path, _any_format)


def _any_format(meta: Any, path: str | Path) -> dict[str, Any]:
    from humanvision.runtime.person import PERSON_FORMAT, check_person_metadata
    from humanvision.runtime.pose3d import POSE3D_FORMAT, check_pose3d_metadata

    if isinstance(meta, dict) and meta.get("format") == PERSON_FORMAT:
        return check_person_metadata(meta, path)
    if isinstance(meta, dict) and meta.get("format") == POSE3D_FORMAT:
        return check_pose3d_metadata(meta, path)
    from humanvision.runtime.parsing import PARSING_FORMAT, check_parsing_metadata

    if isinstance(meta, dict) and meta.get("format") == PARSING_FORMAT:
        return check_parsing_metadata(meta, path)
    from humanvision.runtime.multiview import MULTIVIEW_FORMAT, check_multiview_metadata

    if isinstance(meta, dict) and meta.get("format") == MULTIVIEW_FORMAT:
        return check_multiview_metadata(meta, path)
    from humanvision.runtime.a2j import A2J_FORMAT, check_a2j_metadata

    if isinstance(meta, dict) and meta.get("format") == A2J_FORMAT:
        return check_a2j_metadata(meta, path)
    return check_metadata(meta, path)


def open_session(path: Path, providers: Sequence[str] | None, session_options: Any,
                 check: Callable[[Any, str | Path], dict[str, Any]]) -> tuple[Any, list[str], dict[str, Any]]:
    """An onnxruntime session of ``path`` on ``providers`` (default CPU; a requested one that onnxruntime could not
    load is a warning), the providers in use and the file's metadata validated by ``check``, whose input must be
    an input of the graph."""
    import onnxruntime as ort

    if not path.is_file():
        raise DataError("ONNX file not found", file=str(path))
    wanted = list(providers) if providers else ["CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(str(path), sess_options=session_options, providers=wanted)
    except Exception as e:  # noqa: BLE001  (as in read_metadata)
        raise DataError(f"onnxruntime cannot load the model: {e}", file=str(path)) from None
    used = session.get_providers()
    missing = [p for p in wanted if p not in used]
    if missing:
        warnings.warn(f"{path}: onnxruntime runs on {used}, not on {missing} (not available in this onnxruntime "
                      "build or its libraries are missing)", stacklevel=3)
    meta = _parse_metadata(session.get_modelmeta().custom_metadata_map, path, check)
    names = [i.name for i in session.get_inputs()]
    if meta["input"]["name"] not in names:
        raise MetadataError(f"input {meta['input']['name']!r} is not an input of the graph ({names})",
                            file=str(path), field="metadata.input.name")
    return session, used, meta


def _parse_metadata(props: dict[str, str], path: str | Path,
                    check: Callable[[Any, str | Path], dict[str, Any]] | None = None) -> dict[str, Any]:
    text = props.get(METADATA_KEY)
    if text is None:
        raise MetadataError(f"no humanvision metadata (metadata_props key {METADATA_KEY!r}; keys present: "
                            f"{sorted(props) or 'none'}); export the model with `humanvision export`",
                            file=str(path), field="metadata")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise MetadataError(f"invalid JSON: {e}", file=str(path), field="metadata") from None
    return (check or check_metadata)(meta, path)


#: the runtime class of each exported format (named in the error when a file is opened with the wrong one)
RUNTIME_CLASSES = {FORMAT: "PoseEstimator", "humanvision.person_crop": "ReIDEmbedder or AttributeClassifier",
                   "humanvision.monocular3d": "MonocularPose3D", "humanvision.parsing": "HumanParser",
                   "humanvision.multiview": "MultiViewTriangulator",
                   "humanvision.a2j": "A2JPose"}


def check_format(meta: Any, fmt: str, reader: str, path: str | Path) -> None:
    """``meta`` is a dict of format ``fmt`` at :data:`METADATA_VERSION`, else a :class:`MetadataError` (naming the
    runtime class that reads the file's format when it is another humanvision one)."""
    if not isinstance(meta, dict):
        raise MetadataError(f"expected a JSON object, got {type(meta).__name__}", file=str(path), field="metadata")
    got = meta.get("format")
    if got != fmt:
        hint = (f"; open it with {RUNTIME_CLASSES[got]}, not {reader}" if got in RUNTIME_CLASSES else "")
        raise MetadataError(f"unknown format {got!r} (expected {fmt!r}){hint}", file=str(path),
                            field="metadata.format")
    version = meta.get("metadata_version")
    if version != METADATA_VERSION:
        raise MetadataError(f"metadata version {version!r} is not supported by this humanvision (it reads version "
                            f"{METADATA_VERSION}); export again with this version or install the one that wrote it "
                            f"({meta.get('humanvision_version', '?')})", file=str(path),
                            field="metadata.metadata_version")


def check_entries(meta: dict[str, Any], path: str | Path,
                  entries: Callable[[dict[str, Any]], dict[str, bool]]) -> dict[str, Any]:
    """``meta`` when every check of ``entries(meta)`` (``{"key.path": ok}``) holds; a missing or malformed entry or
    the first failed check is a :class:`MetadataError` naming the file and the key."""
    try:
        checks = entries(meta)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise MetadataError(f"missing or malformed entry ({type(e).__name__}: {e})", file=str(path),
                            field="metadata") from None
    for key, ok in checks.items():
        if not ok:
            raise MetadataError("invalid value", file=str(path), field=f"metadata.{key}")
    return meta


def pixel_normalizer(inp: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, offset)`` float32 with ``pixels * scale + offset == (pixels / pixel_scale - mean) / std`` for an
    exported ``input`` block."""
    std = np.asarray(inp["std"], dtype=np.float32)
    return (1.0 / (np.float32(inp.get("pixel_scale", 255.0)) * std),
            -np.asarray(inp["mean"], dtype=np.float32) / std)


def check_metadata(meta: Any, path: str | Path = "<metadata>") -> dict[str, Any]:
    """Validate a metadata dict (format, version, the keys and values the runtime uses); returns it."""
    check_format(meta, FORMAT, "PoseEstimator", path)

    def entries(meta: dict[str, Any]) -> dict[str, bool]:
        inp, crop, codec, sk = meta["input"], meta["crop"], meta["codec"], meta["skeleton"]
        size = [int(v) for v in inp["size"]]
        checks = {
            "input.size": len(size) == 2 and min(size) > 1,
            "input.mean": len(inp["mean"]) == 3, "input.std": len(inp["std"]) == 3 and min(inp["std"]) > 0,
            "input.color": inp["color"] in ("RGB", "BGR"),
            "crop.padding": float(crop["padding"]) > 0, "crop.udp": isinstance(crop["udp"], bool),
            "codec.udp": codec["udp"] == crop["udp"],
            "skeleton.flip_index": sorted(sk["flip_index"]) == list(range(len(sk["joints"]))),
            "flip_test.in_graph": isinstance(meta["flip_test"]["in_graph"], bool),
        }
        if codec["name"] == "keypoints":  # a keypoint model (PCT stage II): crop-pixel keypoints and scores
            checks["output.scores"] = isinstance(meta["output"]["scores"], str)
        else:
            hm = [int(v) for v in codec["heatmap_size"]]
            checks.update({"codec.heatmap_size": len(hm) == 2 and min(hm) > 1,
                           "codec.stride": len(codec["stride"]) == 2, "codec.refine": codec["refine"] in REFINEMENTS})
        return checks

    return check_entries(meta, path, entries)


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as ``(H, W, 3)`` uint8 RGB (grey replicated, alpha dropped); a missing or undecodable file is
    a :class:`DataError` naming it."""
    path = Path(path)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise DataError(f"cannot read the image: {e.strerror or e}", file=str(path)) from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise DataError("not a decodable image (corrupt, truncated or an unknown format)", file=str(path))
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# ------------------------------------------------------------------------------------------------- geometry
def boxes_to_center_scale(boxes: np.ndarray, aspect_ratio: float, padding: float) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 4)`` xywh -> centres ``(N, 2)`` and scales ``(N, 2)`` in pixels: the box grown to ``w / h ==
    aspect_ratio`` (it only grows), times ``padding`` (humanvision.geometry.bbox_xywh_to_cs)."""
    b = np.asarray(boxes, dtype=np.float64)
    center = b[:, :2] + 0.5 * b[:, 2:]
    w, h = b[:, 2], b[:, 3]
    wide = w > aspect_ratio * h
    wh = np.stack([np.where(wide, w, aspect_ratio * h), np.where(wide, w / aspect_ratio, h)], -1)
    return center, wh * padding


def affine_matrix(center: np.ndarray, scale: np.ndarray, input_size: Sequence[int], udp: bool,
                  inv: bool = False) -> np.ndarray:
    """``(N, 2, 3)`` image -> crop matrices without rotation (``inv``: crop -> image), UDP or not
    (humanvision.geometry.get_affine_matrix with ``rot = 0``)."""
    out_w, out_h = float(input_size[0]), float(input_size[1])
    c, s = np.asarray(center, np.float64), np.asarray(scale, np.float64)
    a = np.zeros(c.shape[:-1] + (2, 2))
    if udp:
        a[..., 0, 0], a[..., 1, 1] = (out_w - 1) / s[..., 0], (out_h - 1) / s[..., 1]
        out_c = np.array([(out_w - 1) / 2, (out_h - 1) / 2])
    else:
        a[..., 0, 0] = a[..., 1, 1] = out_w / s[..., 0]
        out_c = np.array([out_w / 2, out_h / 2])
    t = out_c - np.einsum("...ij,...j->...i", a, c)
    if inv:  # p = A^-1 (q - t)
        a = np.linalg.inv(a)
        t = -np.einsum("...ij,...j->...i", a, t)
    return np.concatenate([a, t[..., None]], -1)


# -------------------------------------------------------------------------------------------------- runtime
class PoseEstimator:
    """A top-down heatmap pose model exported by ``humanvision export``, on onnxruntime.

    Args:
        model: the ``.onnx`` file.
        flip_test: average with the horizontally flipped crops (``None``: the exported default, the recipe's
            ``eval.flip_test``). A model exported with the flip test inside the graph always applies it.
        providers: onnxruntime execution providers (default CPU); the ones actually used are in
            :attr:`providers` (a requested one that onnxruntime could not load gives a warning).
        batch_size: crops per onnxruntime call (the flip test doubles it).
        session_options: an ``onnxruntime.SessionOptions`` (threads, optimisation level).

    ``__call__(image, boxes=None) -> (keypoints (N, K, 2) image pixels, scores (N, K))``, float64: ``image`` an
    ``(H, W, 3)`` uint8 RGB array, ``boxes`` ``(N, 4)`` xywh person boxes (default: the whole image).
    """

    def __init__(self, model: str | Path, *, flip_test: bool | None = None, providers: Sequence[str] | None = None,
                 batch_size: int = 32, session_options: Any = None) -> None:
        self.path = Path(model)
        self.session, self.providers, self.metadata = open_session(self.path, providers, session_options,
                                                                   check_metadata)
        m = self.metadata
        self.input_name, self.output_name = m["input"]["name"], m["output"]["name"]
        self.input_size = tuple(int(v) for v in m["input"]["size"])
        self.joint_names = list(m["skeleton"]["joints"])
        self.flip_index = list(m["skeleton"]["flip_index"])
        self.udp = bool(m["crop"]["udp"])
        self.padding = float(m["crop"]["padding"])
        self.flip_in_graph = bool(m["flip_test"]["in_graph"])
        default = bool(m["flip_test"]["default"])
        if self.flip_in_graph and flip_test is False:
            raise ValueError(f"{self.path}: the flip test is part of this graph (exported with --flip-in-graph); "
                             "export without it to switch it off at run time")
        self.flip_test = self.flip_in_graph or (default if flip_test is None else bool(flip_test))
        self.keypoint_model = m["codec"]["name"] == "keypoints"
        self.batch_size = max(1, int(batch_size))
        self._scale, self._offset = pixel_normalizer(m["input"])

    def __repr__(self) -> str:
        return (f"PoseEstimator({str(self.path)!r}, model={self.metadata.get('model')!r}, input_size="
                f"{self.input_size}, skeleton={self.metadata['skeleton']['name']!r}, flip_test={self.flip_test}, "
                f"providers={self.providers})")

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    # ---------------------------------------------------------------------------------------------- steps
    def _check(self, image: Any, boxes: Any) -> np.ndarray:
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            desc = f"{type(image).__name__} {getattr(image, 'shape', '')} {getattr(image, 'dtype', '')}"
            raise DataError(f"expected an (H, W, 3) uint8 {self.metadata['input']['color']} array, got {desc}",
                            field="image")
        h, w = image.shape[:2]
        if boxes is None:
            return np.array([[0.0, 0.0, float(w), float(h)]])
        b = np.asarray(boxes, dtype=np.float64)
        if b.ndim == 1 and b.shape == (4,):
            b = b[None]
        if b.ndim != 2 or b.shape[1] != 4:
            raise DataError(f"expected (N, 4) xywh boxes, got shape {np.shape(boxes)}", field="boxes")
        bad = ~(np.isfinite(b).all(1) & (b[:, 2] > 0) & (b[:, 3] > 0))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"expected finite (x, y, w, h) with w, h > 0, got {b[i].tolist()}", record=f"box {i}",
                            field="boxes")
        return b

    def preprocess(self, image: np.ndarray, boxes: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Crops ``(N, 3, H, W)`` float32 (normalised), centres and scales ``(N, 2)`` (pixels)."""
        b = self._check(image, boxes)
        w, h = self.input_size
        center, scale = boxes_to_center_scale(b, w / h, self.padding)
        mats = affine_matrix(center, scale, self.input_size, self.udp)
        crops = np.empty((len(b), 3, h, w), dtype=np.float32)
        for i, m in enumerate(mats):
            crop = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                  borderValue=0)
            crops[i] = (crop.astype(np.float32) * self._scale + self._offset).transpose(2, 0, 1)
        return crops, center, scale

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(x)})[0]

    def outputs(self, crops: np.ndarray) -> np.ndarray:
        """Normalised crops -> what :meth:`decode` takes: heatmaps (:meth:`heatmaps`), or for a keypoint model
        (``codec.name: keypoints``, PCT stage II) ``(N, K, 3)`` crop-pixel keypoints and scores (flip-averaged with
        the flip test: the mirrored crop's keypoints mirrored back, ``x' = W - 1 - x``, joints swapped)."""
        if not self.keypoint_model:
            return self.heatmaps(crops)
        names = [self.output_name, self.metadata["output"]["scores"]]
        outs = []
        for i in range(0, len(crops), self.batch_size):
            x = crops[i:i + self.batch_size]
            n = len(x)
            batch = np.concatenate([x, x[..., ::-1]]) if self.flip_test else x
            kp, score = (np.asarray(o, np.float32) for o in self.session.run(
                names, {self.input_name: np.ascontiguousarray(batch)}))
            if self.flip_test:
                back = kp[n:, self.flip_index].copy()
                back[..., 0] = np.float32(self.input_size[0] - 1) - back[..., 0]
                kp, score = np.float32(0.5) * (kp[:n] + back), np.float32(0.5) * (score[:n] + score[n:])
            outs.append(np.concatenate([kp, np.repeat(score.reshape(n, 1, 1), kp.shape[1], 1)], -1))
        return np.concatenate(outs)

    def heatmaps(self, crops: np.ndarray) -> np.ndarray:
        """Normalised crops -> ``(N, K, h, w)`` float32 heatmaps (flip-averaged with the flip test)."""
        if self.keypoint_model:
            raise ValueError(f"{self.path}: a keypoint model ({self.metadata['model']}) has no heatmaps; use "
                             "outputs()")
        outs = []
        for i in range(0, len(crops), self.batch_size):
            x = crops[i:i + self.batch_size]
            if not self.flip_test or self.flip_in_graph:
                outs.append(self._run(x).astype(np.float32))
                continue
            both = self._run(np.concatenate([x, x[..., ::-1]])).astype(np.float32)
            n = len(x)
            flipped = flip_back(both[n:], self.flip_index, shift=not self.udp)
            outs.append(np.float32(0.5) * (both[:n] + flipped))
        return np.concatenate(outs)

    def decode(self, heatmaps: np.ndarray, center: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Heatmaps (or a keypoint model's :meth:`outputs`) -> keypoints in image pixels (the inverse crop
        affine) and scores, float64."""
        c = self.metadata["codec"]
        if self.keypoint_model:
            kp, scores = heatmaps[..., :2], heatmaps[..., 2]
        else:
            kp, scores = decode_heatmaps(heatmaps, c["stride"], c["refine"], int(c.get("blur_kernel_size", 11)),
                                         c.get("blur_border", "reflect"))
        inv = affine_matrix(center, scale, self.input_size, self.udp, inv=True)
        kp = kp.astype(np.float64)
        return kp @ np.swapaxes(inv[..., :2], -1, -2) + inv[:, None, :, 2], scores.astype(np.float64)

    def __call__(self, image: np.ndarray, boxes: Any = None) -> tuple[np.ndarray, np.ndarray]:
        crops, center, scale = self.preprocess(image, boxes)
        if len(crops) == 0:
            return np.zeros((0, self.num_joints, 2)), np.zeros((0, self.num_joints))
        return self.decode(self.outputs(crops), center, scale)

    def predict_many(self, images: Iterable, *, detector: Callable | None = None, workers: int = 1,
                     prefetch: int = 0) -> Iterator[tuple[Any, np.ndarray, np.ndarray, np.ndarray]]:
        """Many images with reading, detection, cropping and decoding overlapped with the model
        (:func:`humanvision.runtime.pipeline.overlapped`; crops of consecutive images share batches of
        ``batch_size``). Yields ``(key, boxes (N, 4) xywh, keypoints (N, K, 2), scores (N, K))`` in input order,
        the same numbers as calling the estimator image by image.

        ``images``: file paths (key: the path; read here, in the worker threads), ``(H, W, 3)`` uint8 RGB arrays
        (key: the position), or ``(key, path or array, boxes)`` triples (``boxes`` ``(N, 4)`` xywh or None).
        Images without boxes get ``detector(image, name) -> (xyxy boxes, scores)`` (a
        :class:`~humanvision.runtime.detectors.Detector`), or else the whole image. ``workers=0`` runs the steps
        one after the other. An unreadable file stops the iteration with a :class:`DataError` naming it, after
        the results of the images before it.
        """
        from humanvision.runtime.detectors import xyxy_to_xywh
        from humanvision.runtime.pipeline import Prepared, overlapped

        empty = (np.zeros((0, self.num_joints, 2)), np.zeros((0, self.num_joints)))

        def prepare(item: tuple[int, Any]) -> Prepared:
            index, item = item
            key, image, boxes = (item if isinstance(item, tuple) else
                                 (item, item, None) if isinstance(item, (str, Path)) else (index, item, None))
            if isinstance(image, (str, Path)):
                image = read_rgb(image)
            if boxes is None and detector is not None:
                boxes = xyxy_to_xywh(detector(image, str(key))[0])
            b = self._check(image, boxes)
            crops, center, scale = self.preprocess(image, b)
            return Prepared(crops, (key, b, center, scale))

        def finish(context: tuple, heatmaps: np.ndarray | None) -> tuple:
            key, b, center, scale = context
            return (key, b, *(empty if heatmaps is None else self.decode(heatmaps, center, scale)))

        return overlapped(enumerate(images), prepare, self.outputs, finish, batch_size=self.batch_size,
                          workers=workers, prefetch=prefetch)
