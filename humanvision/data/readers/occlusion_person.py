"""Occlusion-Person (UnrealCV, Zhang et al.): ``unrealcv_{train,validation}.pkl`` + ``images/``.

Layout (a pickle, read with :func:`humanvision.data.io.safe_unpickle`, no code executed): a **list** of
dicts, one per (frame, camera) image (the dataset README's "Data Description")::

    image           str            e.g. "a05_sa01_s14_sce00/00_000000.jpg" (relative to the image folder)
    joints_2d       (15, 2)        pixels (x, y)
    joints_3d       (15, 3)        camera frame
    joints_gt       (15, 3)        global frame                         (optional)
    joints_vis      (15, 1)        1 = inside the image
    joints_vis_2d   (15, 1)        1 = inside the image and not occluded  (optional)
    center (2,), scale (2,)        box centre, box size / 200
    box (4,)                       x1, y1, x2, y2                        (optional)
    video_id, image_id, subject, action, subaction, camera_id (0-7), camera (dict), source

Joints are in the ``occlusion_person15`` order (hip, right leg, left leg, belly, neck, left arm, right arm).
The map to ``mpii16`` is ``get_joint_map("occlusion_person15", "mpii16")``: thorax = mid-shoulders, upper neck
<- neck and, as HG-3D does, head top <- neck (copied; marked approximate).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from humanvision.data.io import read_image, safe_unpickle
from humanvision.data.readers._checks import check_finite_keypoints
from humanvision.data.readers.base import Reader, as_array, require, resolve_skeleton
from humanvision.data.sample import LazyImage, Sample
from humanvision.errors import DataError
from humanvision.skeletons import Skeleton
from humanvision.skeletons.skeleton import get_joint_map

__all__ = ["OCCLUSION_PERSON15_TO_MPII16", "OcclusionPerson"]

#: The HG-3D correspondence ``occlusion_person15 -> mpii16`` (head top <- neck is marked approximate).
OCCLUSION_PERSON15_TO_MPII16 = get_joint_map("occlusion_person15", "mpii16")


def _flags(value: Any, k: int, *, file: str, where: str, field: str) -> np.ndarray:
    a = as_array(value, (None,) * np.ndim(value), file=file, where=where, field=field)
    if a.ndim == 2 and a.shape[0] == k:
        a = a[:, 0]
    if a.shape != (k,):
        raise DataError(f"shape {np.shape(value)}, expected ({k},) or ({k}, 1)", file=file, record=where,
                        field=field)
    return np.clip(a, 0, 1)


class OcclusionPerson(Reader):
    """Occlusion-Person images, one sample per item of the annotation list.

    Args:
        annotations: ``unrealcv_train.pkl`` / ``unrealcv_validation.pkl``. image_root: the folder the ``image``
            paths are relative to (default ``<annotation dir>/images``).
        unit_scale: multiplies ``joints_3d`` / ``joints_gt`` to give millimetres (1.0 takes them as mm; the
            README does not state the unit).

    Samples: ``keypoints_2d (1, 15, 2)``, ``visibility`` = ``joints_vis`` (inside the image), ``keypoints_3d
    (1, 15, 3)`` camera frame, ``boxes`` from ``box`` (else ``center`` +- ``scale * 100``), ``identity`` =
    subject, ``attributes`` subject/action/subaction/camera_id/video_id, ``image_id`` = ``image``; ``meta``:
    ``center (1, 2)``, ``scale (1, 2)`` (as stored, x200 px), ``occluded (1, 15)`` (in the image but not
    ``joints_vis_2d``) when present, ``joints_gt (1, 15, 3)`` when present, ``item``.
    A non-finite 3D joint (e.g. NaN depth) is a :class:`DataError` naming the file and item.
    """

    def __init__(self, annotations: str | Path, image_root: str | Path | None = None, unit_scale: float = 1.0,
                 skeleton: str | Skeleton = "occlusion_person15") -> None:
        self.source = f = str(annotations)
        self.skeleton = resolve_skeleton(skeleton, f)
        k = self.skeleton.num_joints
        self.image_root = Path(image_root) if image_root is not None else Path(f).parent / "images"
        items = safe_unpickle(f)
        if not isinstance(items, list):
            raise DataError(f"expected a list of items, got {type(items).__name__}", file=f)
        n = len(items)
        self.images: list[str] = []
        self.kp2d = np.zeros((n, k, 2), np.float32)
        self.kp3d = np.zeros((n, k, 3), np.float64)
        self.vis = np.zeros((n, k), np.float32)
        self.occluded: np.ndarray | None = np.zeros((n, k), np.float32)
        self.gt: np.ndarray | None = np.zeros((n, k, 3), np.float64)
        self.centers = np.zeros((n, 2), np.float32)
        self.scales = np.zeros((n, 2), np.float32)
        self.boxes = np.zeros((n, 4), np.float32)
        self.attrs: list[dict[str, Any]] = []
        for i, r in enumerate(items):
            where = f"item {i}"
            self.images.append(str(require(r, "image", file=f, where=where)))
            where = f"item {i} ({self.images[-1]})"
            self.kp2d[i] = as_array(require(r, "joints_2d", file=f, where=where), (k, 2), file=f, where=where,
                                    field="joints_2d")
            j3 = require(r, "joints_3d", file=f, where=where)
            self.kp3d[i] = as_array(j3, (k, 3), file=f, where=where, field="joints_3d", dtype=np.float64,
                                    finite=False)
            self.vis[i] = _flags(require(r, "joints_vis", file=f, where=where), k, file=f, where=where,
                                 field="joints_vis")
            if self.occluded is not None and "joints_vis_2d" in r:
                v2 = _flags(r["joints_vis_2d"], k, file=f, where=where, field="joints_vis_2d")
                self.occluded[i] = self.vis[i] * (1 - v2)
            else:
                self.occluded = None
            if self.gt is not None and "joints_gt" in r:
                self.gt[i] = as_array(r["joints_gt"], (k, 3), file=f, where=where, field="joints_gt",
                                      dtype=np.float64)
            else:
                self.gt = None
            self.centers[i] = as_array(require(r, "center", file=f, where=where), (2,), file=f, where=where,
                                       field="center")
            sc = as_array(require(r, "scale", file=f, where=where), (None,) * np.ndim(r["scale"]), file=f,
                          where=where, field="scale").reshape(-1)
            if sc.size not in (1, 2) or (sc <= 0).any():
                raise DataError(f"expected one or two positive values, got {sc.tolist()}", file=f, record=where,
                                field="scale")
            self.scales[i] = np.broadcast_to(sc, (2,))
            if "box" in r:
                b = as_array(r["box"], (4,), file=f, where=where, field="box")
                self.boxes[i] = (b[0], b[1], b[2] - b[0], b[3] - b[1])
            else:
                c, s = self.centers[i], self.scales[i] * 200.0
                self.boxes[i] = (c[0] - s[0] / 2, c[1] - s[1] / 2, s[0], s[1])
            if (self.boxes[i, 2:] < 0).any():
                raise DataError(f"box {self.boxes[i].tolist()} has a negative size", file=f, record=where,
                                field="box")
            self.attrs.append({key: (v.item() if isinstance(v, np.generic) else v) for key, v in r.items()
                               if key in ("subject", "action", "subaction", "camera_id", "video_id", "image_id")})
        check_finite_keypoints(self.kp3d, file=f, field="joints_3d", record=lambda i: f"item {i} ({self.images[i]})")
        self.kp3d = (self.kp3d * float(unit_scale)).astype(np.float32)
        if self.gt is not None:
            self.gt = (self.gt * float(unit_scale)).astype(np.float32)

    def __len__(self) -> int:
        return len(self.images)

    def _get(self, index: int) -> Sample:
        path = str(self.image_root / self.images[index])
        meta: dict[str, Any] = {"center": self.centers[index:index + 1], "scale": self.scales[index:index + 1],
                                "item": index}
        if self.occluded is not None:
            meta["occluded"] = self.occluded[index:index + 1]
        if self.gt is not None:
            meta["joints_gt"] = self.gt[index:index + 1]
        attrs = dict(self.attrs[index])
        return Sample(
            image=LazyImage(path, read_image), image_path=path, keypoints_2d=self.kp2d[index:index + 1],
            visibility=self.vis[index:index + 1], keypoints_3d=self.kp3d[index:index + 1],
            visibility_3d=np.ones((1, self.skeleton.num_joints), np.float32), keypoints_3d_frame="camera",
            boxes=self.boxes[index:index + 1], identity=attrs.get("subject"), attributes=attrs,
            skeleton=self.skeleton.name, source=self.source, index=index, image_id=self.images[index], meta=meta)
