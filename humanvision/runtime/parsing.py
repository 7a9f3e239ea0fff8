"""Human parsing (body-part segmentation) from an exported ONNX file: numpy, OpenCV and onnxruntime only.

``humanvision export`` on an ``rgb`` or ``depth`` parsing recipe writes the network's logits with the evaluation's
contract (format :data:`PARSING_FORMAT`). :class:`HumanParser` reads it and runs

    the whole frame -> RGB: bilinear resize to the input, /255, ImageNet mean/std | depth (millimetres): metres
    minus the mean of the nonzero pixels (background 0), nearest resize, 3 channels -> ONNX logits (+ flip test:
    the mirrored frame in the same batch, its left / right classes swapped and flipped back, averaged) ->
    bilinear upsampling to the frame's size (or ``size``) -> argmax,

the same steps as :func:`humanvision.methods.parsing.evaluate_parsing`. An rgbd model's fused output takes both
(``parser(rgb, depth)``).

>>> from humanvision.runtime import HumanParser
>>> parser = HumanParser("parsing.onnx")                 # doctest: +SKIP
>>> labels = parser(image_rgb)                            # (H, W) uint8 class ids  # doctest: +SKIP
>>> overlay = parser.colorize(labels)                     # (H, W, 3) uint8 RGB  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from humanvision.errors import DataError
from humanvision.runtime.pose import (
    check_entries,
    check_format,
    open_session,
    pixel_normalizer,
)

__all__ = ["PARSING_FORMAT", "HumanParser", "check_parsing_metadata"]

PARSING_FORMAT = "humanvision.parsing"


def check_parsing_metadata(meta: Any, path: str | Path = "<metadata>") -> dict[str, Any]:
    """Validate a parsing model's metadata (format, version, the keys and values the runtime uses)."""
    check_format(meta, PARSING_FORMAT, "HumanParser", path)
    def entries(meta: dict[str, Any]) -> dict[str, bool]:
        inp, out, flip = meta["input"], meta["output"], meta["flip_test"]
        k = int(out["shape"][1])
        checks = {
            "modality": meta["modality"] in ("rgb", "depth", "rgbd"),
            "input.size": len(inp["size"]) == 2 and min(int(v) for v in inp["size"]) > 1,
            "input.std": len(inp["std"]) == 3 and min(inp["std"]) > 0,
            "output.shape": len(out["shape"]) == 4 and k > 1,
            "output.classes": len(out["classes"]) == k, "output.palette": len(out["palette"]) == k,
            "flip_test.flip_perm": sorted(flip["flip_perm"]) == list(range(k)),
        }
        return checks

    return check_entries(meta, path, entries)


def center_depth(depth_mm: np.ndarray) -> np.ndarray:
    """``(H, W)`` millimetres -> float32 metres minus the mean of the nonzero pixels; the background stays 0 (as
    ``humanvision.data.readers.parsing.center_depth``)."""
    d = np.asarray(depth_mm, dtype=np.float32) / np.float32(1000.0)
    fg = d != 0
    out = np.zeros_like(d)
    if fg.any():
        out[fg] = d[fg] - d[fg].mean(dtype=np.float64)
    return out


class HumanParser:
    """A human-parsing network exported by ``humanvision export``, on onnxruntime.

    Args:
        model: the ``.onnx`` file.
        flip_test: average with the mirrored frame (``None``: the exported default, the recipe's
            ``eval.flip_test``).
        providers, session_options: as :class:`~humanvision.runtime.PoseEstimator`.

    ``__call__(frame, depth=None, size=None) -> (H, W) uint8`` class ids at the frame's size (or ``size = (h,
    w)``): ``frame`` an ``(H, W, 3)`` uint8 RGB image (rgb models) or an ``(H, W)`` depth map in millimetres (depth
    models); an rgbd model takes the RGB ``frame`` and its pixel-aligned ``depth``.
    :meth:`logits` gives the upsampled ``(K, H, W)`` float32 scores; :attr:`classes` names the ids.
    """

    def __init__(self, model: str | Path, *, flip_test: bool | None = None, providers: Sequence[str] | None = None,
                 session_options: Any = None) -> None:
        self.path = Path(model)
        self.session, self.providers, self.metadata = open_session(self.path, providers, session_options,
                                                                   check_parsing_metadata)
        m = self.metadata
        self.modality = m["modality"]
        self.input_name, self.output_name = m["input"]["name"], m["output"]["name"]
        self.depth_name = m["input"].get("depth_input", {}).get("name")
        self.input_size = tuple(int(v) for v in m["input"]["size"])  # (w, h)
        self.classes = list(m["output"]["classes"])
        self.palette = np.asarray(m["output"]["palette"], dtype=np.uint8)
        self.flip_perm = [int(i) for i in m["flip_test"]["flip_perm"]]
        self.flip_test = bool(m["flip_test"]["default"]) if flip_test is None else bool(flip_test)
        self._scale, self._offset = pixel_normalizer(m["input"])

    def __repr__(self) -> str:
        return (f"HumanParser({str(self.path)!r}, model={self.metadata.get('model')!r}, modality={self.modality}, "
                f"input_size={self.input_size}, classes={len(self.classes)}, flip_test={self.flip_test})")

    def preprocess(self, frame: np.ndarray, depth: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The network inputs of one frame, ``{input name: (1, 3, h, w) float32}``: an rgb or depth model's one
        input, or an rgbd model's RGB ``frame`` and its pixel-aligned ``depth`` (millimetres)."""
        if self.modality == "rgbd":
            if depth is None:
                raise DataError("an rgbd model needs the depth map too: parser(rgb, depth)", field="depth")
            if np.shape(depth)[:2] != np.shape(frame)[:2]:
                raise DataError(f"rgb is {np.shape(frame)[:2]} but depth {np.shape(depth)[:2]}; they must be "
                                "pixel-aligned", field="depth")
            return {self.input_name: self._plane(frame, "rgb"), self.depth_name: self._plane(depth, "depth")}
        if depth is not None:
            raise DataError(f"this {self.modality} model takes one input, got a depth map too", field="depth")
        return {self.input_name: self._plane(frame, self.modality)}

    def _plane(self, frame: np.ndarray, kind: str) -> np.ndarray:
        w, h = self.input_size
        f = np.asarray(frame) if isinstance(frame, np.ndarray) else frame
        if kind == "rgb":
            if not isinstance(f, np.ndarray) or f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8 \
                    or 0 in f.shape:
                raise DataError(f"expected an (H, W, 3) uint8 RGB image, got {_describe(frame)}", field="image")
            img = f if f.shape[:2] == (h, w) else cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR)
            x = img.astype(np.float32) * self._scale + self._offset
            return np.ascontiguousarray(x.transpose(2, 0, 1)[None])
        if not isinstance(f, np.ndarray) or f.ndim != 2 or 0 in f.shape or not np.issubdtype(f.dtype, np.number) \
                or not np.isfinite(f).all():
            raise DataError(f"expected an (H, W) finite depth map in millimetres, got {_describe(frame)}",
                            field="depth")
        d = center_depth(f)
        d = d if d.shape == (h, w) else cv2.resize(d, (w, h), interpolation=cv2.INTER_NEAREST)
        return np.ascontiguousarray(np.repeat(d[None, None], 3, axis=1))

    def network_logits(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """``(1, K, h', w')`` logits of preprocessed inputs, flip-averaged with the flip test."""
        if not self.flip_test:
            return self.session.run([self.output_name], feed)[0].astype(np.float32)
        both = self.session.run([self.output_name], {k: np.concatenate([x, x[..., ::-1]]) for k, x in feed.items()})
        both = both[0].astype(np.float32)
        return np.float32(0.5) * (both[:1] + both[1:, self.flip_perm, :, ::-1])

    def logits(self, frame: np.ndarray, depth: np.ndarray | None = None, size: tuple[int, int] | None = None
               ) -> np.ndarray:
        """``(K, H, W)`` float32 logits upsampled (bilinear, half-pixel centres) to the frame's size or ``size``."""
        feed = self.preprocess(frame, depth)
        h, w = (np.asarray(frame).shape[:2] if size is None else (int(size[0]), int(size[1])))
        z = self.network_logits(feed)[0]
        if z.shape[1:] == (h, w):
            return z
        return np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR) for c in z])

    def __call__(self, frame: np.ndarray, depth: np.ndarray | None = None, size: tuple[int, int] | None = None
                 ) -> np.ndarray:
        return self.logits(frame, depth, size).argmax(0).astype(np.uint8)

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """``(H, W)`` class ids -> ``(H, W, 3)`` uint8 RGB in the export's palette."""
        lab = np.asarray(labels)
        if lab.ndim != 2 or lab.size and (lab.min() < 0 or lab.max() >= len(self.palette)):
            raise DataError(f"expected (H, W) class ids in 0..{len(self.palette) - 1}", field="labels")
        return self.palette[lab.astype(np.int64)]


def _describe(x: Any) -> str:
    return f"{type(x).__name__} {getattr(x, 'shape', '')} {getattr(x, 'dtype', '')}".strip()
