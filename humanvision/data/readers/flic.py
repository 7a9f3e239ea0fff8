"""FLIC-full: ``examples.mat`` + ``images/``.

Layout (scipy.io.loadmat): variable ``examples``, a ``1 x N`` struct array (N = 20,928 in FLIC-full) with the
fields ``coords`` (**2 x 29**: row 0 x, row 1 y; MATLAB 1-based pixels; NaN where a point is not labelled),
``filepath`` (image name under ``images/``), ``istrain``, ``istest`` (0/1), ``torsobox`` (1 x 4, x1 y1 x2 y2),
``imgdims`` (height, width, channels), ``moviename``, ``currframe``, ``isbad``, ``isunchecked``. The 29 points are
in FLIC's ``lookupPart`` order (skeleton ``flic29``); FLIC-full labels only eyes, nose, shoulders, elbows,
wrists and hips.

HG-3D's ``flic_full.py`` has two index bugs (pose3d.md 5.6 and 9), fixed here:

* its ``flic_to_mpii = [12,11,10,7,8,9,19,21,18,17,6,5,4,1,2,3]`` are MATLAB **1-based** indices used as
  0-based ones (so every MPII joint took the next FLIC point: right ankle <- leye, right wrist <- lhip, ...).
  :data:`FLIC29_TO_MPII16` (``get_joint_map("flic29", "mpii16")``) is the same map 0-based:
  ``[11,10,9,6,7,8,18,20,17,16,5,4,3,0,1,2]``.
* its centre/scale code takes the extent of the ``2 x 29`` ``coords`` as if it were ``29 x 2`` points. Here
  ``coords`` is transposed to ``(29, 2)`` first and the extent is taken over the labelled points (the LSP rule:
  centre = middle of the extent, ``scale = (y_max - y_min + 4) / 368``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from humanvision.data.io import read_image
from humanvision.data.readers._matlab import load_mat, mat_struct_field
from humanvision.data.readers.base import Reader, resolve_skeleton
from humanvision.data.readers.lsp import keypoint_extent_box
from humanvision.data.sample import LazyImage, Sample
from humanvision.errors import DataError
from humanvision.skeletons import Skeleton
from humanvision.skeletons.skeleton import get_joint_map

__all__ = ["FLIC29_TO_MPII16", "HG_FLIC_TO_MPII_1BASED", "FlicFull"]

#: HG-3D's ``flic_to_mpii`` as written in ``flic_full.py`` (1-based MATLAB indices; kept for reference only).
HG_FLIC_TO_MPII_1BASED = (12, 11, 10, 7, 8, 9, 19, 21, 18, 17, 6, 5, 4, 1, 2, 3)
#: The fixed correspondence ``flic29 -> mpii16`` (0-based; head top <- nose is marked approximate).
FLIC29_TO_MPII16 = get_joint_map("flic29", "mpii16")


def _text(value) -> str:
    a = np.asarray(value).ravel()
    return str(a[0]).strip() if a.size else ""


def _flag(value, *, file: str, record: str, field: str) -> bool:
    a = np.asarray(value).ravel()
    if a.size != 1 or a.dtype.kind not in "iufb" or a[0] not in (0, 1):
        raise DataError(f"expected a 0/1 scalar, got {a.tolist()[:4]}", file=file, record=record, field=field)
    return bool(a[0])


class FlicFull(Reader):
    """FLIC-full people, one sample per example.

    Args:
        examples: ``examples.mat``. image_root: the image folder (default ``<examples dir>/images``).
        split: ``None`` (all), ``"train"`` (``istrain``) or ``"test"`` (``istest``).
        one_based: ``coords`` are 1-based (true for the released file); samples are 0-based.

    Samples: ``keypoints_2d (1, 29, 2)`` (0 where not labelled), ``visibility`` 1 for labelled points, ``boxes``
    the extent of the labelled points, ``image_id`` = ``filepath``; ``meta``: ``center (1, 2)``, ``scale (1,)``,
    ``torsobox`` (x1, y1, x2, y2, 0-based, or absent), ``moviename``, ``currframe``, ``example`` (0-based
    position in ``examples``).
    """

    def __init__(self, examples: str | Path, image_root: str | Path | None = None, split: str | None = None,
                 one_based: bool = True, skeleton: str | Skeleton = "flic29") -> None:
        self.source = f = str(examples)
        self.skeleton = resolve_skeleton(skeleton, f)
        k = self.skeleton.num_joints
        if split not in (None, "train", "test"):
            raise ValueError(f"split must be None, 'train' or 'test', got {split!r}")
        self.image_root = Path(image_root) if image_root is not None else Path(f).parent / "images"
        ex = load_mat(f, ["examples"])["examples"]
        if ex.dtype.names is None:
            raise DataError(f"expected a struct array, got dtype {ex.dtype}", file=f, field="examples")
        off = 1.0 if one_based else 0.0
        n = ex.size
        joints = np.zeros((n, k, 2), np.float64)
        keep = np.zeros(n, bool)
        self.files: list[str] = []
        self.movies: list[str] = []
        self.frames = np.full(n, -1, np.int64)
        self.torsoboxes = np.full((n, 4), np.nan, np.float32)
        for i in range(n):
            where = f"example {i}"
            coords = mat_struct_field(ex, i, "coords", file=f, record=where)
            if coords.shape != (2, k) or coords.dtype.kind not in "fiu":
                raise DataError(f"shape {coords.shape} dtype {coords.dtype}, expected numeric (2, {k}) (row 0 x, "
                                "row 1 y)", file=f, record=where, field="coords")
            joints[i] = coords.T - off  # the fix: (2, 29) -> (29, 2) points before anything else
            self.files.append(_text(mat_struct_field(ex, i, "filepath", file=f, record=where)))
            if not self.files[-1]:
                raise DataError("empty image name", file=f, record=where, field="filepath")
            where = f"example {i} ({self.files[-1]})"
            if split is not None:
                keep[i] = _flag(mat_struct_field(ex, i, "istrain" if split == "train" else "istest", file=f,
                                                 record=where),
                                file=f, record=where, field="istrain" if split == "train" else "istest")
            else:
                keep[i] = True
            names = ex.dtype.names
            if "torsobox" in names:
                tb = np.asarray(ex.ravel()[i]["torsobox"], dtype=np.float64).ravel()
                if tb.size != 4:
                    raise DataError(f"{tb.size} values, expected 4 (x1 y1 x2 y2)", file=f, record=where,
                                    field="torsobox")
                self.torsoboxes[i] = tb - off
            self.movies.append(_text(ex.ravel()[i]["moviename"]) if "moviename" in names else "")
            if "currframe" in names and np.asarray(ex.ravel()[i]["currframe"]).size:
                self.frames[i] = int(np.asarray(ex.ravel()[i]["currframe"]).ravel()[0])
        if np.isinf(joints).any():
            i, j = np.argwhere(np.isinf(joints).any(-1))[0]
            raise DataError(f"infinite coordinate of point {j}", file=f, record=f"example {i}", field="coords")
        labelled = np.isfinite(joints).all(-1)
        self.joints = np.where(labelled[..., None], joints, 0.0).astype(np.float32)
        self.labelled = labelled.astype(np.float32)
        self.centers, self.scales, self.boxes = keypoint_extent_box(self.joints, labelled)
        self.rows = np.flatnonzero(keep)

    def __len__(self) -> int:
        return len(self.rows)

    def _get(self, index: int) -> Sample:
        r = int(self.rows[index])
        path = str(self.image_root / self.files[r])
        meta = {"center": self.centers[r:r + 1], "scale": self.scales[r:r + 1], "moviename": self.movies[r],
                "currframe": int(self.frames[r]), "example": r}
        if np.isfinite(self.torsoboxes[r]).all():
            meta["torsobox"] = self.torsoboxes[r].copy()
        return Sample(image=LazyImage(path, read_image), image_path=path, keypoints_2d=self.joints[r:r + 1],
                      visibility=self.labelled[r:r + 1], boxes=self.boxes[r:r + 1], skeleton=self.skeleton.name,
                      source=self.source, index=index, image_id=self.files[r], meta=meta)
