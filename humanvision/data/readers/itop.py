"""ITOP (side or top view): depth maps and 15-joint labels from the official ``.h5`` files.

See pretraining.md A.7.4.

Layout (h5py)::

    ITOP_{side,top}_{train,test}_depth_map.h5
        id      (N,)            bytes, "PP_FFFFF" (person PP, frame FFFFF)
        data    (N, 240, 320)   float16 depth in metres
    ITOP_{side,top}_{train,test}_labels.h5
        id                      (N,)            the same ids, in the same order
        is_valid                (N,)            1 when the frame's labels are usable
        visible_joints          (N, 15)         0/1
        image_coordinates       (N, 15, 2)      pixel (x, y)
        real_world_coordinates  (N, 15, 3)      metres, camera frame, x right, **y up**, z forward
        segmentation            (N, 240, 320)   int8, -1 background, j = body part of joint j (optional)

Joints are in the ``itop15`` order. The sensor is treated as a pinhole with ``f = 1 / 0.0035`` px and
principal point (160, 120), the constants of ITOP's back-projection ``X = (x - 160) z 0.0035``,
``Y = (120 - y) z 0.0035``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from humanvision.data.readers.base import Reader, resolve_skeleton
from humanvision.data.sample import LazyImage, Sample
from humanvision.errors import DataError
from humanvision.skeletons import Skeleton

__all__ = ["ITOP_FOCAL", "ITOP_PRINCIPAL_POINT", "ItopReader"]

ITOP_FOCAL = 1.0 / 0.0035
ITOP_PRINCIPAL_POINT = (160.0, 120.0)
_LABEL_FIELDS = {"id": (), "is_valid": (), "visible_joints": (15,), "image_coordinates": (15, 2),
                 "real_world_coordinates": (15, 3)}
_HANDLES: dict[tuple[int, str], object] = {}


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("reading ITOP .h5 files needs h5py: pip install 'humanvision[3d]'") from None
    return h5py


def _open(path: str):
    """An h5py file opened once per process (h5py handles must not cross a fork)."""
    key = (os.getpid(), path)
    h = _HANDLES.get(key)
    if h is None or not h.id.valid:
        h5py = _h5py()
        if not Path(path).is_file():
            raise DataError("file not found", file=path)
        try:
            h = _HANDLES[key] = h5py.File(path, "r")
        except OSError as e:
            raise DataError(f"not a readable HDF5 file ({e})", file=path) from None
    return h


def _read_h5(path: str, names: tuple[str, ...], optional: tuple[str, ...] = (), shapes_only: bool = False):
    """Read whole datasets (or only their shapes) from an h5 file; a missing file or dataset is a DataError."""
    h5py = _h5py()
    if not Path(path).is_file():
        raise DataError("file not found", file=path)
    try:
        with h5py.File(path, "r") as h:
            out = {}
            for name in names + optional:
                if name not in h:
                    if name in optional:
                        continue
                    raise DataError("missing dataset", file=path, field=name)
                out[name] = h[name].shape if shapes_only else h[name][()]
            return out
    except OSError as e:
        raise DataError(f"not a readable HDF5 file ({e})", file=path) from None


def _read_itop_depth(path: str, index: int) -> np.ndarray:
    """Depth map ``index`` of an ITOP depth file as ``(240, 320) float32`` millimetres."""
    d = np.asarray(_open(path)["data"][index], dtype=np.float32) * 1000.0
    if d.ndim != 2:
        raise DataError(f"depth map has shape {d.shape}, expected (H, W)", file=path, record=f"frame {index}",
                        field="data")
    return np.nan_to_num(d, nan=0.0, posinf=0.0, neginf=0.0)


def _read_itop_segmentation(path: str, index: int) -> np.ndarray:
    """Segmentation ``index`` as ``(240, 320) int32``: 0 background, ``j + 1`` the part of joint ``j``."""
    return np.asarray(_open(path)["segmentation"][index], dtype=np.int32) + 1


class ItopReader(Reader):
    """ITOP frames: lazy depth (mm), 2D and 3D ``itop15`` joints, lazy part segmentation.

    Args:
        depth: the ``*_depth_map.h5`` file. labels: the ``*_labels.h5`` file.
        only_valid: keep frames with ``is_valid == 1`` (train 17,991 / test 4,863 side-view frames).
        every_n: keep every n-th of those frames (the data-efficiency settings keep every 10th ... 1000th).
        opencv_axes: negate ITOP's y so 3D joints are in the OpenCV camera frame (x right, y down, z forward),
            consistent with ``camera``; distances (mAP@10cm) are unchanged. False keeps ITOP's y-up axes.

    Samples: ``depth`` (lazy ``(240, 320) float32`` mm), ``keypoints_2d (1, 15, 2)``, ``visibility`` =
    ``visible_joints``, ``keypoints_3d (1, 15, 3)`` camera-frame mm, ``camera`` (pinhole f = 1/0.0035),
    ``part_mask`` (lazy, 0 = background, ``j + 1`` = part of joint ``j``; absent if the file has no
    segmentation), ``identity`` = person number, ``image_id`` = the ITOP id; ``meta``: ``frame`` (row in the
    files), ``axes``.
    """

    def __init__(self, depth: str | Path, labels: str | Path, only_valid: bool = True, every_n: int = 1,
                 opencv_axes: bool = True, skeleton: str | Skeleton = "itop15") -> None:
        self.depth_file, self.source = str(depth), str(labels)
        f = self.source
        self.skeleton = resolve_skeleton(skeleton, f)
        if self.skeleton.num_joints != 15:
            raise DataError(f"ITOP has 15 joints, {self.skeleton.name!r} has {self.skeleton.num_joints}",
                            file=f, field="skeleton")
        arrays = _read_h5(f, tuple(_LABEL_FIELDS))
        self.has_segmentation = bool(_read_h5(f, (), optional=("segmentation",)))
        depth_ids = _read_h5(self.depth_file, ("id",))["id"]
        depth_shape = _read_h5(self.depth_file, (), optional=("data",), shapes_only=True).get("data")
        n = len(arrays["id"])
        for name, tail in _LABEL_FIELDS.items():
            if arrays[name].shape != (n, *tail):
                raise DataError(f"shape {arrays[name].shape}, expected {(n, *tail)}", file=f, field=name)
        if depth_shape is None or len(depth_shape) != 3 or depth_shape[0] != n:
            raise DataError("missing dataset" if depth_shape is None else
                            f"shape {depth_shape}, expected ({n}, H, W) to match the {n} labels",
                            file=self.depth_file, field="data")
        ids = np.array([i.decode() if isinstance(i, bytes) else str(i) for i in arrays["id"]])
        dids = np.array([i.decode() if isinstance(i, bytes) else str(i) for i in depth_ids])
        if len(dids) != n or (dids != ids).any():
            r = int(np.flatnonzero(dids != ids)[0]) if len(dids) == n else min(n, len(dids))
            raise DataError(f"depth and label files list different frames (first difference at row {r})",
                            file=self.depth_file, record=f"frame {r}", field="id")
        valid = arrays["is_valid"].astype(bool) if only_valid else np.ones(n, dtype=bool)
        rows = np.flatnonzero(valid)[::max(1, int(every_n))]
        kp2 = arrays["image_coordinates"][rows].astype(np.float32)
        kp3 = arrays["real_world_coordinates"][rows].astype(np.float64) * 1000.0
        vis = arrays["visible_joints"][rows].astype(np.float32)
        for name, v in (("image_coordinates", kp2), ("real_world_coordinates", kp3)):
            bad = ~np.isfinite(v).all(axis=(1, 2))
            if bad.any():
                r = int(rows[np.flatnonzero(bad)[0]])
                raise DataError("non-finite coordinates in a valid frame", file=f,
                                record=f"frame {r} ({ids[r]})",
                                field=name)
        if not np.isin(vis, (0, 1)).all():
            raise DataError("values must be 0 or 1", file=f, field="visible_joints")
        self.opencv_axes = bool(opencv_axes)
        if self.opencv_axes:
            kp3[..., 1] *= -1
        self.rows, self.ids = rows, ids[rows]
        self.keypoints_2d, self.keypoints_3d, self.visibility = kp2, kp3.astype(np.float32), vis
        self.image_size = (int(depth_shape[2]), int(depth_shape[1]))

    def __len__(self) -> int:
        return len(self.rows)

    def camera(self):
        """The pinhole :class:`humanvision.geometry.Camera` implied by ITOP's back-projection constants."""
        from humanvision.geometry import Camera

        (cx, cy), f = ITOP_PRINCIPAL_POINT, ITOP_FOCAL
        K = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]])
        return Camera(K=K, R=np.eye(3), t=np.zeros(3), dist=None, dist_model="opencv",
                      width=self.image_size[0],
                      height=self.image_size[1], name="itop")

    def _get(self, index: int) -> Sample:
        row, iid = int(self.rows[index]), str(self.ids[index])
        person = iid.split("_")[0]
        sel = slice(index, index + 1)
        return Sample(
            depth=LazyImage(self.depth_file, _read_itop_depth, row), depth_path=self.depth_file,
            keypoints_2d=self.keypoints_2d[sel], visibility=self.visibility[sel],
            keypoints_3d=self.keypoints_3d[sel], visibility_3d=np.ones((1, 15), np.float32),
            keypoints_3d_frame="camera", camera=self.camera(),
            part_mask=LazyImage(self.source, _read_itop_segmentation, row) if self.has_segmentation else None,
            identity=int(person) if person.isdigit() else person, skeleton=self.skeleton.name,
            source=self.source, index=index, image_id=iid,
            meta={"frame": row, "axes": "x right, y down, z forward" if self.opencv_axes else
                  "x right, y up, z forward (ITOP)"},
        )
