"""MPII Human Pose: mmpose's per-person json and the ``mpii_gt_val.mat`` ground truth of the PCKh evaluation.

Json layout (``mpii_train.json``, ``mpii_val.json``; the HRNet ``annot/{train,valid}.json``), a list of
people::

    [{"image": "015601864.jpg", "center": [x, y], "scale": s,
      "joints": [[x, y] x 16], "joints_vis": [0|1 x 16]},
     ...]

``center`` and ``joints`` are **1-based** (MATLAB) pixels, ``scale`` is the person height / 200. The reader
turns them into 0-based pixels (subtracts 1, the mmpose 0.x convention) unless ``one_based=False``. Images are
``image_root / image``. The MPII test json has no ``joints``: read it with ``with_joints=False``.

``mpii_gt_val.mat`` (scipy.io.loadmat): ``dataset_joints`` (16 names), ``jnt_missing (16, N)``,
``pos_gt_src (16, 2, N)`` (1-based pixels) and ``headboxes_src (2, 2, N)`` (top-left and bottom-right
corner, x/y).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from humanvision.data.io import read_image
from humanvision.data.readers.base import Reader, as_array, load_json, require, resolve_skeleton
from humanvision.data.sample import LazyImage, Sample
from humanvision.errors import DataError
from humanvision.skeletons import Skeleton

__all__ = ["MpiiGroundTruth", "MpiiJson", "read_mpii_gt_mat"]

#: MPII's short joint names (``dataset_joints``) in the mpii16 order.
MPII_JOINT_NAMES = ("rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor", "neck", "head", "rwri",
                    "relb", "rsho", "lsho", "lelb", "lwri")


class MpiiJson(Reader):
    """MPII people from mmpose's json, one sample per person.

    Args:
        annotations: the json file. image_root: folder of the images (default: the json's folder).
        skeleton: ``mpii16`` (the json's joint order); the joint count is checked.
        one_based: the json's ``center``/``joints`` are 1-based (true for the official conversion); the
            samples are always 0-based.
        with_joints: False for the test json (no ``joints``/``joints_vis``).

    Samples: ``keypoints_2d (1, 16, 2)`` 0-based, ``visibility`` = ``joints_vis``, ``boxes (1, 4)`` = the
    square of side ``200 * scale`` centred on ``center`` (MPII has no boxes; top-down pipelines should use
    ``meta["center"]``/``meta["scale"]`` and the protocol's ``c_y += 15 s, s *= 1.25``), ``image_id`` = image
    name; ``meta``: ``center (1, 2)`` 0-based, ``scale (1,)`` (height / 200, as stored), ``image``.
    """

    def __init__(self, annotations: str | Path, image_root: str | Path | None = None,
                 skeleton: str | Skeleton = "mpii16", one_based: bool = True,
                 with_joints: bool = True) -> None:
        self.source = f = str(annotations)
        self.skeleton = resolve_skeleton(skeleton, f)
        k = self.skeleton.num_joints
        self.image_root = Path(image_root) if image_root is not None else Path(f).parent
        data = load_json(f)
        if not isinstance(data, list):
            raise DataError(f"expected a JSON list of people, got {type(data).__name__}", file=f)
        n = len(data)
        self.images: list[str] = []
        self.centers = np.zeros((n, 2), np.float32)
        self.scales = np.zeros(n, np.float32)
        self.joints = np.zeros((n, k, 2), np.float32) if with_joints else None
        self.joints_vis = np.zeros((n, k), np.float32) if with_joints else None
        off = 1.0 if one_based else 0.0
        for i, r in enumerate(data):
            where = f"person #{i}"
            self.images.append(str(require(r, "image", file=f, where=where)))
            where = f"person #{i} ({self.images[-1]})"
            self.centers[i] = as_array(require(r, "center", file=f, where=where), (2,), file=f, where=where,
                                       field="center") - off
            self.scales[i] = as_array(require(r, "scale", file=f, where=where), (), file=f, where=where,
                                      field="scale")
            if self.scales[i] <= 0:
                raise DataError(f"scale must be positive, got {self.scales[i]}", file=f, record=where,
                                field="scale")
            if with_joints:
                self.joints[i] = as_array(require(r, "joints", file=f, where=where), (k, 2), file=f,
                                          where=where,
                                          field="joints") - off
                vis = as_array(require(r, "joints_vis", file=f, where=where), (k,), file=f, where=where,
                               field="joints_vis")
                if not np.isin(vis, (0, 1)).all():
                    raise DataError(f"values must be 0 or 1, got {sorted(set(vis.tolist()))}", file=f,
                                    record=where, field="joints_vis")
                self.joints_vis[i] = vis

    def __len__(self) -> int:
        return len(self.images)

    def _get(self, index: int) -> Sample:
        path = str(self.image_root / self.images[index])
        c, s = self.centers[index], self.scales[index]
        box = np.array([[c[0] - 100 * s, c[1] - 100 * s, 200 * s, 200 * s]], np.float32)
        return Sample(
            image=LazyImage(path, read_image), image_path=path,
            keypoints_2d=None if self.joints is None else self.joints[index:index + 1],
            visibility=None if self.joints_vis is None else self.joints_vis[index:index + 1],
            boxes=box, skeleton=self.skeleton.name, source=self.source, index=index,
            image_id=self.images[index],
            meta={"center": self.centers[index:index + 1], "scale": self.scales[index:index + 1],
                  "image": self.images[index]},
        )


@dataclass
class MpiiGroundTruth:
    """The PCKh ground truth of ``mpii_gt_val.mat``, re-ordered person-first.

    Attributes:
        joint_names: the file's ``dataset_joints`` (16 short names, mpii16 order).
        keypoints: ``(N, 16, 2) float64`` ``pos_gt_src``, **1-based** pixels as stored (the protocol compares
            predictions + 1 with these).
        missing: ``(N, 16) bool`` ``jnt_missing`` (only joints with ``missing == False`` are scored).
        headboxes: ``(N, 2, 2) float64`` ``headboxes_src``: ``[:, 0]`` top-left, ``[:, 1]`` bottom-right,
            as (x, y).
    """

    joint_names: list[str]
    keypoints: np.ndarray
    missing: np.ndarray
    headboxes: np.ndarray
    source: str = ""

    def head_sizes(self, sc_bias: float = 0.6) -> np.ndarray:
        """``sc_bias * ||bottom_right - top_left||`` per person (PCKh normaliser, SC_BIAS = 0.6)."""
        return sc_bias * np.linalg.norm(self.headboxes[:, 1] - self.headboxes[:, 0], axis=-1)

    def __len__(self) -> int:
        return len(self.keypoints)


def _names(value) -> list[str]:
    a = np.asarray(value)
    if a.dtype.kind in "US":
        return [str(x).strip() for x in a.ravel()]
    out = []
    for x in a.ravel():
        x = np.asarray(x).ravel()
        out.append(str(x[0]).strip() if x.size else "")
    return out


def read_mpii_gt_mat(path: str | Path, num_joints: int = 16) -> MpiiGroundTruth:
    """Read ``mpii_gt_val.mat`` (scipy.io.loadmat) into a :class:`MpiiGroundTruth`, checking every field."""
    import scipy.io

    f = str(path)
    if not Path(f).is_file():
        raise DataError("file not found", file=f)
    try:
        mat = scipy.io.loadmat(f)
    except (OSError, ValueError, TypeError, IndexError, NotImplementedError,
            scipy.io.matlab.MatReadError) as e:
        raise DataError(f"not a readable MATLAB file ({type(e).__name__}: {e})", file=f) from None
    for key in ("dataset_joints", "jnt_missing", "pos_gt_src", "headboxes_src"):
        if key not in mat:
            raise DataError("missing field", file=f, field=key)
    names = _names(mat["dataset_joints"])
    if len(names) != num_joints:
        raise DataError(f"{len(names)} joint names, expected {num_joints}", file=f, field="dataset_joints")
    pos = np.asarray(mat["pos_gt_src"], dtype=np.float64)
    if pos.ndim != 3 or pos.shape[:2] != (num_joints, 2):
        raise DataError(f"shape {pos.shape}, expected ({num_joints}, 2, N)", file=f, field="pos_gt_src")
    n = pos.shape[2]
    missing = np.asarray(mat["jnt_missing"])
    if missing.shape != (num_joints, n):
        raise DataError(f"shape {missing.shape}, expected ({num_joints}, {n})", file=f, field="jnt_missing")
    heads = np.asarray(mat["headboxes_src"], dtype=np.float64)
    if heads.shape != (2, 2, n):
        raise DataError(f"shape {heads.shape}, expected (2, 2, {n})", file=f, field="headboxes_src")
    keypoints = pos.transpose(2, 0, 1)
    miss = missing.T.astype(bool)
    bad = ~np.isfinite(keypoints).all(-1) & ~miss
    if bad.any():
        p, j = np.argwhere(bad)[0]
        raise DataError(f"non-finite position of joint {j}", file=f, record=f"person {p}", field="pos_gt_src")
    return MpiiGroundTruth(joint_names=names, keypoints=keypoints, missing=miss,
                           headboxes=heads.transpose(2, 0, 1), source=f)
