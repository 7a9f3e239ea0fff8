"""A2J depth-map 3D pose from an exported ONNX file (numpy, OpenCV and onnxruntime only).

``humanvision export`` on an A2J recipe (``configs/hcmoco_a2j_itop_side.yaml``, ``configs/a2j_tiny_synthetic.yaml``)
writes the network *with its anchor decoding* (softmax over the anchors, the weighted sums of anchor + offset and of
the anchors' depths; cheap next to the heads) and the whole ITOP evaluation contract of
:func:`humanvision.methods.a2j.evaluate_a2j` (format :data:`A2J_FORMAT`). :class:`A2JPose` reads it and runs, per
person box,

    box ``(x1, y1, x2, y2)`` padded by the recipe's ``data.test_box_pad`` and clipped to the image -> the crop affine
    (the box stretched onto ``S x S``) -> ``cv2.warpAffine`` nearest, border 0 -> pixels deeper than the far clip set
    to 0 -> minus the mean of the nonzero pixels (background 0 or ``-mean``) -> ONNX: ``joints_crop (N, J, 2)``
    ``(row, col)`` crop pixels and ``depth (N, J)`` network units -> image ``(x, y)`` through the inverse affine,
    ``z = depth / depth_scale + mean`` -> ITOP's back-projection ``X = (x - 160) z 0.0035``, ``Y = (120 - y) z
    0.0035``, ``Z = z``,

the same numbers as the PyTorch evaluation (``A2JDataset`` + ``A2JMethod.predict`` + ``crop_to_image`` +
``itop_backproject``), up to ``predict``'s own float32 rounding of the anchor sums (the graph decodes in float64:
~2e-4 crop pixels at 96 px, ~1.5e-2 at 288 px). The evaluation's far clip is ``max(ground-truth joint z) + depth_margin`` (A2J's code does
that at test time too): pass ``joints_z`` to reproduce it, or a ``max_depth`` of your own (e.g. from a person
segmentation); with neither, every nonzero pixel in the crop counts (the network was trained with the clip, so
expect worse numbers on a scene with a near background).

>>> from humanvision.runtime import A2JPose
>>> a2j = A2JPose("a2j_itop.onnx")                                  # doctest: +SKIP
>>> out = a2j(depth_m, boxes=[[x1, y1, x2, y2]], max_depth=3.5)      # doctest: +SKIP
>>> out["joints_3d"]                                                 # (N, 15, 3) metres, ITOP axes  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from humanvision.errors import DataError
from humanvision.runtime.pose import check_entries, check_format, open_session

__all__ = ["A2J_FORMAT", "A2JPose", "check_a2j_metadata"]

A2J_FORMAT = "humanvision.a2j"


def check_a2j_metadata(meta: Any, path: str | Path = "<metadata>") -> dict[str, Any]:
    """Validate an A2J model's metadata (format, version, the keys and values the runtime uses)."""
    check_format(meta, A2J_FORMAT, "A2JPose", path)
    def entries(meta: dict[str, Any]) -> dict[str, bool]:
        inp, out, crop, dep, dec, cam, sk = (meta[k] for k in ("input", "output", "crop", "depth", "decode",
                                                              "camera", "skeleton"))
        k = len(sk["joints"])
        checks = {
            "input.size": len(inp["size"]) == 2 and int(inp["size"][0]) == int(inp["size"][1]) > 1,
            "input.shape": list(inp["shape"][1:]) == [1, int(inp["size"][1]), int(inp["size"][0])],
            "output.shape": list(out["shape"][1:]) == [k, 2] and list(out["depth_shape"][1:]) == [k],
            "output.order": out["order"] == "row, col",
            "crop.padding": len(crop["padding"]) == 2 and min(float(p) for p in crop["padding"]) >= 0,
            "crop.min_size": float(crop["min_size"]) > 0,
            "depth.margin": float(dep["margin"]) >= 0,
            "depth.zero_background": isinstance(dep["zero_background"], bool),
            "decode.depth_scale": float(dec["depth_scale"]) > 0, "decode.in_graph": dec["in_graph"] is True,
            "camera.image_size": len(cam["image_size"]) == 2 and min(int(v) for v in cam["image_size"]) > 0,
            "camera.principal_point": len(cam["principal_point"]) == 2,
            "camera.pixel_scale": float(cam["pixel_scale"]) > 0,
            "skeleton.limbs": all(0 <= int(i) < k for limb in sk["limbs"] for i in limb),
        }
        return checks

    return check_entries(meta, path, entries)


class A2JPose:
    """An A2J depth 3D pose network exported by ``humanvision export``, on onnxruntime.

    Args:
        model: the ``.onnx`` file.
        box_pad: ``(px, py)`` added to every box side before clipping (``None``: the exported
            ``crop.padding``, the recipe's ``data.test_box_pad``; ``(0, 0)`` for boxes padded already).
        providers, batch_size, session_options: as :class:`~humanvision.runtime.PoseEstimator`.

    ``__call__(depth, boxes, *, joints_z=None, max_depth=None)``:

    * ``depth``: ``(H, W)`` float depth map in metres (0 = no reading), at the exported camera's
      ``camera.image_size`` (ITOP: 240 x 320), as the evaluation reads it (``A2JDataset.depth``);
    * ``boxes``: ``(N, 4)`` ``(x1, y1, x2, y2)`` image pixels, before the padding;
    * ``joints_z``: ``(N, K)`` metres, the evaluation's reference: the far clip is ``max(z) + depth.margin`` and the
      centring falls back to ``mean(z)`` when no pixel is left; or ``max_depth``: a far clip in metres, one for all
      boxes or ``(N,)`` (then a box with no reading left is a DataError); neither: no far clip.

    Returns numpy arrays ``boxes (N, 4)`` (padded, clipped: the crops), ``keypoints_2d (N, J, 2)`` image ``(x, y)``
    pixels, ``depth (N, J)`` joint depths (m), ``joints_3d (N, J, 3)`` (m, ITOP's axes: x right, y up, z away from the
    camera), ``joints_crop (N, J, 2)`` ``(row, col)`` crop pixels and ``mean (N,)`` (m, the crops' centring depth),
    as :func:`humanvision.methods.a2j.evaluate_a2j` computes them (``pred_2d``, ``pred_3d``).
    """

    def __init__(self, model: str | Path, *, box_pad: Sequence[float] | None = None,
                 providers: Sequence[str] | None = None, batch_size: int = 32, session_options: Any = None) -> None:
        self.path = Path(model)
        self.session, self.providers, self.metadata = open_session(self.path, providers, session_options,
                                                                   check_a2j_metadata)
        m = self.metadata
        self.input_name = m["input"]["name"]
        self.output_names = [m["output"]["name"], m["output"]["depth_name"]]
        self.size = int(m["input"]["size"][0])
        self.joint_names = list(m["skeleton"]["joints"])
        self.batch_size = max(1, int(batch_size))
        pad = m["crop"]["padding"] if box_pad is None else box_pad
        try:
            self.box_pad = tuple(float(p) for p in pad)
        except (TypeError, ValueError):
            raise DataError(f"expected (px, py), got {box_pad!r}", field="box_pad") from None
        if len(self.box_pad) != 2 or not all(np.isfinite(p) and p >= 0 for p in self.box_pad):
            raise DataError(f"expected (px, py) >= 0, got {box_pad!r}", field="box_pad")
        w, h = (int(v) for v in m["camera"]["image_size"])
        self.image_shape = (h, w)

    def __repr__(self) -> str:
        return (f"A2JPose({str(self.path)!r}, model={self.metadata.get('model')!r}, input={self.size}, "
                f"joints={len(self.joint_names)}, box_pad={self.box_pad}, providers={self.providers})")

    # ------------------------------------------------------------------------------------------------ inputs
    def check_depth(self, depth: Any) -> np.ndarray:
        """The ``(H, W)`` depth map as float32 (as the evaluation's ``preprocess`` casts it)."""
        if not isinstance(depth, np.ndarray) or depth.ndim != 2 or depth.dtype.kind != "f":
            desc = f"{type(depth).__name__} {getattr(depth, 'shape', '')} {getattr(depth, 'dtype', '')}"
            raise DataError(f"expected an (H, W) float depth map in metres (integer millimetres: divide by 1000), "
                            f"got {desc}", field="depth")
        if depth.shape != self.image_shape:
            raise DataError(f"expected the exported camera's {self.image_shape[0]} x {self.image_shape[1]} (H x W) "
                            f"depth map (its intrinsics back-project the joints), got {depth.shape}", field="depth")
        out = np.asarray(depth, dtype=np.float32)
        if not np.isfinite(out).all():
            raise DataError("non-finite depth values (use 0 for pixels without a reading)", field="depth")
        return out

    def check_boxes(self, boxes: Any) -> np.ndarray:
        """``(N, 4)`` float64 boxes padded by ``box_pad`` and clipped to the image, as the evaluation's
        ``read_split``; an inverted, non-finite or (after padding and clipping) under 2 px box is a DataError."""
        try:
            b = np.asarray(boxes, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"expected (N, 4) boxes (x1, y1, x2, y2), got {type(boxes).__name__}",
                            field="boxes") from None
        if b.ndim != 2 or b.shape[1] != 4:
            if b.size == 0:
                return np.zeros((0, 4))
            raise DataError(f"expected (N, 4) boxes (x1, y1, x2, y2), got shape {b.shape}", field="boxes")
        bad = ~(np.isfinite(b).all(1) & (b[:, 2] >= b[:, 0]) & (b[:, 3] >= b[:, 1]))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"expected finite (x1, y1, x2, y2) with x2 >= x1, y2 >= y1, got {b[i].tolist()}",
                            record=f"box {i}", field="boxes")
        h, w = self.image_shape
        px, py = self.box_pad
        out = b.copy()
        out[:, 0] -= px
        out[:, 2] += px
        out[:, 1] -= py
        out[:, 3] += py
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, w - 1)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, h - 1)
        small = float(self.metadata["crop"]["min_size"])
        bad = (out[:, 2] - out[:, 0] < small) | (out[:, 3] - out[:, 1] < small)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"empty box {out[i].round(1).tolist()} after padding by {self.box_pad} and clipping to "
                            f"the {w} x {h} image (from {b[i].tolist()})", record=f"box {i}", field="boxes")
        return out

    def _clips(self, n: int, joints_z: Any, max_depth: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """Per box: the far clip (``inf``: none) and the centring fallback (``None``: a box without readings is an
        error)."""
        if joints_z is not None and max_depth is not None:
            raise DataError("give joints_z (the evaluation's clip) or max_depth, not both", field="max_depth")
        if joints_z is not None:
            try:
                z = np.asarray(joints_z, dtype=np.float64)
            except (TypeError, ValueError):
                raise DataError(f"expected (N, K) joint depths, got {type(joints_z).__name__}",
                                field="joints_z") from None
            if z.ndim != 2 or z.shape[0] != n or z.shape[1] < 1 or not np.isfinite(z).all():
                raise DataError(f"expected finite (N, K) joint depths in metres for N = {n} boxes, got shape "
                                f"{z.shape}", field="joints_z")
            margin = float(self.metadata["depth"]["margin"])
            return (np.array([float(np.max(r)) + margin for r in z]),
                    np.array([float(np.mean(r)) for r in z]))
        if max_depth is None:
            return np.full(n, np.inf), None
        try:
            far = np.broadcast_to(np.asarray(max_depth, dtype=np.float64), (n,)).copy()
        except (TypeError, ValueError):
            raise DataError(f"expected one far clip in metres or one per box ({n}), got shape "
                            f"{np.shape(max_depth)}", field="max_depth") from None
        if not (np.isfinite(far) & (far > 0)).all():
            raise DataError(f"expected finite far clips > 0 m, got {far.tolist()}", field="max_depth")
        return far, None

    def affines(self, boxes: np.ndarray) -> np.ndarray:
        """``(N, 2, 3)`` float64 image -> crop ``(col, row)`` affines: ``u = (x - x1) S / (x2 - x1)``, ``v = (y - y1)
        S / (y2 - y1)`` (``crop_affine`` without rotation or scaling)."""
        s = float(self.size)
        sx, sy = s / (boxes[:, 2] - boxes[:, 0]), s / (boxes[:, 3] - boxes[:, 1])
        m = np.zeros((len(boxes), 2, 3))
        m[:, 0, 0], m[:, 0, 2] = sx, -boxes[:, 0] * sx
        m[:, 1, 1], m[:, 1, 2] = sy, -boxes[:, 1] * sy
        return m

    def preprocess(self, depth: np.ndarray, affines: np.ndarray, far: np.ndarray, fallback: np.ndarray | None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """The network inputs ``(N, 1, S, S)`` float32 (mean-subtracted metres) and the centring means ``(N,)``
        (float64 of the float32 values the evaluation's batches carry)."""
        s = self.size
        zero_bg = bool(self.metadata["depth"]["zero_background"])
        crops = np.empty((len(affines), 1, s, s), dtype=np.float32)
        means = np.empty(len(affines))
        for i, m in enumerate(affines):
            img = cv2.warpAffine(depth, m, (s, s), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                                 borderValue=0.0)
            if np.isfinite(far[i]):
                img[img > float(far[i])] = 0.0
            fg = img > 0
            if fg.any():
                mean = float(img[fg].mean())
            elif fallback is not None:
                mean = float(fallback[i])
            else:
                near = "" if np.isinf(far[i]) else f" within the far clip {far[i]:g} m"
                raise DataError(f"no depth reading (> 0) inside the box{near}; pass joints_z or a larger max_depth",
                                record=f"box {i}", field="depth")
            crops[i, 0] = np.where(fg, img - mean, 0.0 if zero_bg else -mean).astype(np.float32)
            means[i] = np.float64(np.float32(mean))
        return crops, means

    # -------------------------------------------------------------------------------------------- the network
    def outputs(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Crops -> ``joints_crop (N, J, 2)`` ``(row, col)`` and ``depth (N, J)`` network units, float32."""
        xy, dep = [], []
        for i in range(0, len(crops), self.batch_size):
            a, b = self.session.run(self.output_names,
                                    {self.input_name: np.ascontiguousarray(crops[i:i + self.batch_size])})
            xy.append(np.asarray(a, np.float32))
            dep.append(np.asarray(b, np.float32))
        return np.concatenate(xy), np.concatenate(dep)

    def decode(self, joints_crop: np.ndarray, depth: np.ndarray, means: np.ndarray, affines: np.ndarray
               ) -> dict[str, np.ndarray]:
        """Network outputs -> ``keypoints_2d``, ``depth`` (m), ``joints_3d`` (m): the evaluation's ``crop_to_image``
        (the inverse of the float32-rounded affine it batches), ``z = depth / depth_scale + mean`` and
        ``itop_backproject``."""
        cam = self.metadata["camera"]
        a = affines.astype(np.float32).astype(np.float64)
        uv = joints_crop.astype(np.float64)[..., ::-1] - a[:, None, :, 2]
        xy = np.linalg.solve(a[:, None, :, :2], uv[..., None])[..., 0]
        z = depth.astype(np.float64) / float(self.metadata["decode"]["depth_scale"]) + means[:, None]
        (cx, cy), f = (float(v) for v in cam["principal_point"]), float(cam["pixel_scale"])
        x, y = xy[..., 0], xy[..., 1]
        joints = np.stack([(x - cx) * z * f, (cy - y) * z * f, z], axis=-1)
        return {"keypoints_2d": xy, "depth": z, "joints_3d": joints}

    def __call__(self, depth: np.ndarray, boxes: Any, *, joints_z: Any = None, max_depth: Any = None
                 ) -> dict[str, np.ndarray]:
        d = self.check_depth(depth)
        b = self.check_boxes(boxes)
        far, fallback = self._clips(len(b), joints_z, max_depth)
        k = len(self.joint_names)
        if len(b) == 0:
            shapes = {"keypoints_2d": (k, 2), "depth": (k,), "joints_3d": (k, 3), "joints_crop": (k, 2)}
            return {"boxes": b, **{key: np.zeros((0, *s)) for key, s in shapes.items()}, "mean": np.zeros(0)}
        mats = self.affines(b)
        crops, means = self.preprocess(d, mats, far, fallback)
        joints_crop, units = self.outputs(crops)
        return {"boxes": b, **self.decode(joints_crop, units, means, mats), "joints_crop": joints_crop,
                "mean": means}
