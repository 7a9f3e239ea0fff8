"""Leeds Sports Pose (LSP) and LSP-extended (LSPET): ``joints.mat`` + ``images/``.

Layouts (scipy.io.loadmat, variable ``joints``, 14 joints in the ``lsp14`` order: right ankle, right knee,
right hip, left hip, left knee, left ankle, right wrist, right elbow, right shoulder, left shoulder, left elbow,
left wrist, neck, head top)::

    LSP    joints  (3, 14, 2000)   rows x, y, flag;   flag 1 = occluded (HG-3D inverts it with logical_not)
    LSPET  joints  (14, 3, 10000)  columns x, y, flag; flag 1 = visible (used as is)

Coordinates are MATLAB **1-based** pixels. Images are ``images/im%04d.jpg`` (LSP) and ``images/im%05d.jpg``
(LSPET), numbered from 1. HG-3D's split (pose3d.md 5.6): train = all of LSPET + LSP im0001-im1000, validation =
LSP im1001-im2000. Its person box comes from the keypoint extent with ``scale = (y_max - y_min + 4) / 368``.
The map to ``mpii16`` is ``get_joint_map("lsp14", "mpii16")`` (pelvis = mid-hips, thorax = mid-shoulders,
neck -> upper neck; visibility multiplied).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from humanvision.data.io import read_image
from humanvision.data.readers._matlab import load_mat
from humanvision.data.readers.base import Reader, resolve_skeleton
from humanvision.data.sample import LazyImage, Sample
from humanvision.errors import DataError
from humanvision.skeletons import Skeleton
from humanvision.skeletons.skeleton import get_joint_map

__all__ = ["LSP14_TO_MPII16", "LspJoints", "keypoint_extent_box"]

#: The HG-3D correspondence ``lsp14 -> mpii16`` (a :class:`~humanvision.skeletons.skeleton.JointMap`).
LSP14_TO_MPII16 = get_joint_map("lsp14", "mpii16")


def keypoint_extent_box(joints: np.ndarray, use: np.ndarray, pad: float = 4.0, ref: float = 368.0):
    """Centre ``(N, 2)``, scale ``(N,)`` and xywh box ``(N, 4)`` from the extent of the ``use``d joints of each
    person (``joints (N, K, 2)``, ``use (N, K)`` bool): centre = middle of the extent, ``scale = (y_max - y_min +
    pad) / ref`` (HG-3D's LSP rule). A person with no usable joint gets a zero box and scale."""
    u = use[..., None]
    some = use.any(1)[:, None]
    lo = np.where(some, np.where(u, joints, np.inf).min(1), 0.0)
    hi = np.where(some, np.where(u, joints, -np.inf).max(1), 0.0)
    center = ((lo + hi) / 2).astype(np.float32)
    scale = np.where(some[:, 0], (hi[:, 1] - lo[:, 1] + pad) / ref, 0.0).astype(np.float32)
    boxes = np.concatenate([lo, hi - lo], axis=1).astype(np.float32)
    return center, scale, boxes


class LspJoints(Reader):
    """LSP or LSP-extended people, one sample per image.

    Args:
        joints: the ``joints.mat`` file. image_root: folder of the images (default ``<joints dir>/images``).
        variant: ``"lsp"`` (3, 14, N), ``"lspet"`` (14, 3, N) or ``"auto"`` (from the array's shape).
        split: ``None`` (all), ``"train"`` or ``"val"``: LSP's first / second half (im0001-1000 / im1001-2000);
            LSPET is all training data (``"val"`` is an error).
        one_based: the file's pixels are 1-based (true for the released files); samples are 0-based.

    Samples: ``keypoints_2d (1, 14, 2)``; ``visibility`` = 1 for every labelled (finite) joint, following the
    :class:`Sample` convention; ``meta["visible"] (1, 14)`` is the file's visibility flag (LSP's inverted), the
    visibility HG-3D trains with; ``boxes`` the keypoint extent; ``meta`` ``center (1, 2)``, ``scale (1,)``
    (``(y_max - y_min + 4) / 368`` over the labelled joints, for LSPET the visible ones), ``variant``;
    ``image_id`` = ``"im0001"``.
    """

    def __init__(self, joints: str | Path, image_root: str | Path | None = None, variant: str = "auto",
                 split: str | None = None, one_based: bool = True, skeleton: str | Skeleton = "lsp14") -> None:
        self.source = f = str(joints)
        self.skeleton = resolve_skeleton(skeleton, f)
        k = self.skeleton.num_joints
        if variant not in ("auto", "lsp", "lspet"):
            raise ValueError(f"variant must be 'auto', 'lsp' or 'lspet', got {variant!r}")
        if split not in (None, "train", "val"):
            raise ValueError(f"split must be None, 'train' or 'val', got {split!r}")
        self.image_root = Path(image_root) if image_root is not None else Path(f).parent / "images"
        raw = load_mat(f, ["joints"])["joints"]
        if raw.dtype.kind not in "fiub":
            raise DataError(f"dtype {raw.dtype} is not numeric", file=f, field="joints")
        raw = raw.astype(np.float64)
        shapes = {"lsp": (3, k), "lspet": (k, 3)}
        if variant == "auto":
            variant = next((v for v, s in shapes.items() if raw.ndim == 3 and raw.shape[:2] == s), "")
        if raw.ndim != 3 or raw.shape[:2] != shapes.get(variant):
            raise DataError(f"shape {raw.shape}, expected (3, {k}, N) for LSP or ({k}, 3, N) for LSP-extended"
                            + (f" (variant {variant!r})" if variant else ""), file=f, field="joints")
        self.variant = variant
        data = raw.transpose(2, 1, 0) if variant == "lsp" else raw.transpose(2, 0, 1)  # (N, K, 3)
        n = len(data)
        flag = data[..., 2]
        bad = ~np.isin(flag, (0, 1))
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise DataError(f"visibility flag of joint {j} is {flag[i, j]}, expected 0 or 1", file=f,
                            record=f"image {self._name(i)}", field="joints")
        self.visible = (1 - flag if variant == "lsp" else flag).astype(np.float32)
        xy = data[..., :2] - (1.0 if one_based else 0.0)
        labelled = np.isfinite(xy).all(-1)
        self.joints = np.where(labelled[..., None], xy, 0.0).astype(np.float32)
        self.labelled = labelled.astype(np.float32)
        use = labelled & (self.visible > 0) if variant == "lspet" else labelled
        use = np.where(use.any(1, keepdims=True), use, labelled)
        self.centers, self.scales, self.boxes = keypoint_extent_box(self.joints, use)
        if split is None:
            rows = np.arange(n)
        elif variant == "lspet":
            if split == "val":
                raise ValueError("LSP-extended is training data only; the validation split is LSP im1001-2000")
            rows = np.arange(n)
        else:
            rows = np.arange(n)[: n // 2] if split == "train" else np.arange(n)[n // 2:]
        self.rows = rows

    def _name(self, row: int) -> str:
        return f"im{row + 1:04d}" if self.variant == "lsp" else f"im{row + 1:05d}"

    def __len__(self) -> int:
        return len(self.rows)

    def _get(self, index: int) -> Sample:
        r = int(self.rows[index])
        name = self._name(r)
        path = str(self.image_root / f"{name}.jpg")
        return Sample(
            image=LazyImage(path, read_image), image_path=path, keypoints_2d=self.joints[r:r + 1],
            visibility=self.labelled[r:r + 1], boxes=self.boxes[r:r + 1], skeleton=self.skeleton.name,
            source=self.source, index=index, image_id=name,
            meta={"visible": self.visible[r:r + 1], "center": self.centers[r:r + 1],
                  "scale": self.scales[r:r + 1], "variant": self.variant, "row": r},
        )
