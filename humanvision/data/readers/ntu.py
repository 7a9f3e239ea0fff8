"""NTU RGB+D 60 as HCMoCo pre-trains on it: calibrated RGB + masked depth + per-frame skeleton pickles, and the
9-field pre-training sample (pretraining.md A.2.1-A.2.3).

Layout (the output of HCMoCo's NTU preprocessing, under ``root``)::

    nturgb+d_rgb_warped_correction/{tag}/WRGB-{n:08d}.jpg     RGB warped into the depth frame (512 x 424),
                                                              n counted from 1
    nturgb+d_depth_masked/{tag}/MDepth-{n:08d}.png            16-bit depth, millimetres, background 0 (n from 1)
    nturgb+d_parsed_skeleton/{tag}/Skeleton-{n - 1:08d}.pkl   one pickle per frame, counted from **0**
    NTU_RGBD_samples_with_missing_skeletons.txt               optional: video tags to exclude (one a line)

``{tag}`` is the video ``SsssCcccPpppRrrrAaaa``. Frame ``WRGB-n`` goes with ``MDepth-n`` and ``Skeleton-(n-1)``
(:func:`skeleton_file_number`). A skeleton pickle is ``{'frame_idx': int, 'joints': [{'body_idx': int,
'3d_loc': 25 x [x, y, z], 'rgb_loc': 25 x [x, y], 'd_loc': 25 x [x, y]}, ...]}`` (lists of floats or numpy
scalars), read with :func:`humanvision.data.io.safe_unpickle` (nothing is executed). Only body 0 is used; its
``d_loc`` (depth-image pixel **(x, y)**, Kinect-25 order = ``ntu25``) are the 2D joints, valid on the warped RGB
too. ``3d_loc`` is Kinect camera space (metres, as stored). The published frame list is missing, so the reader
enumerates every ``WRGB-*.jpg`` (sorted) or reads ``frame_list`` (lines ending in ``{tag}/WRGB-{n:08d}.jpg``).

Validation: an RGB frame and depth map of different sizes raise :class:`DataError` naming both files and sizes;
a non-finite joint or a malformed pickle raises naming the pickle and field; a joint outside the image
(not ``0 <= x < W`` and ``0 <= y < H``) is **marked invisible and counted** (``frame()["out_of_image"]``), the way
a keypoint-only source marks unlabelled joints: it gets ``joints_vis`` 0 and is zeroed in ``norm_joints``.

**The 9-field sample** (:class:`HcmocoSample`, a ``NamedTuple``, so it collates like the original 9-tuple):

=====  ===================  ========================  ==========================================================
index  field                shape / dtype             meaning
=====  ===================  ========================  ==========================================================
0      rgbd                 (6, S, S) float32         RGB /255, ImageNet mean/std; then depth (m, foreground-mean
                                                      centred, background 0) replicated 3x
1      index                int                       dataset index (memory-bank slot)
2      norm_joints          (J, 2) float32            full-frame joints, **(row, col)**, minus the root joint,
                                                      divided by their max |value|; invisible joints 0
3      joints3d             (25, 3) float32           ``3d_loc`` minus Kinect joint 0 (SpineBase), as stored (m)
4      original_joints2d    (J, 2) float32            **(row, col)** in the S x S crop; invisible joints 0
5      joints_vis           (J,) int64                1 if inside the image **and** inside the crop
6      true_depth           int                       1 (NTU has depth; MPII/COCO give 0)
7      depth_mask           (S, S) bool               crop depth > 0 (the foreground)
8      scale                float                     max pairwise distance of visible crop joints (80 if < 2)
=====  ===================  ========================  ==========================================================

``S`` = 320 and ``J`` = 16 (``mpii16``) or 13 (``coco13``), mapped from Kinect-25 by :data:`KINECT_TO_MPII16` /
:data:`KINECT_TO_COCO13`, exactly the original tables (which put Kinect *left* joints in MPII/COCO *right* slots).
Everything on the loss side is (row, col) (pitfall 1); ``d_loc`` and MPII/COCO annotations are (x, y).

NTU augmentation (:func:`ntu_crop_params`, :func:`ntu_hcmoco_sample`): square side from
``RandomResizedCrop.get_params(scale=(0.08, 1.2), ratio=(1, 1))`` on the W x H frame (side ``round(sqrt(s W H))``,
10 tries, else the fallback side ``H``), centre a uniform integer pixel in ``[min, max)`` of the joints' bounding
box per axis, top-left = centre - side // 2 (the crop may leave the frame: zero padding); RGB bilinear, depth
nearest to S x S; joints ``(row - i) / side * S``, ``(col - j) / side * S``. No flip, no colour jitter. The
original's visibility typo (``row < j + w`` in place of ``col < j + w``, pitfall 9) is off by default
(``visibility_typo=True`` replicates it). Random draws come from ``numpy.random.default_rng([seed, epoch,
index])`` (:meth:`NtuHcmoco.set_epoch`), so a sample is reproducible and every epoch crops differently.

The keypoint-only sources (MPII-16, COCO-13) are given here as data: :data:`HCMOCO_JOINT_SETS` holds each set's
joint names, graph parents, root and its index tables from Kinect-25 and from the source's own annotation order.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from humanvision.data.io import read_depth, read_image, safe_unpickle
from humanvision.data.readers.base import Reader
from humanvision.data.readers.parsing import center_depth
from humanvision.errors import DataError
from humanvision.skeletons import get_skeleton

__all__ = [
    "COCO13_JOINTS",
    "COCO13_PARENTS",
    "COCO17_TO_COCO13",
    "HCMOCO_JOINT_SETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KINECT_TO_COCO13",
    "KINECT_TO_MPII16",
    "MPII16_PARENTS",
    "NTU_DEPTH_DIR",
    "NTU_MISSING_SKELETONS",
    "NTU_RGB_DIR",
    "NTU_SKELETON_DIR",
    "HcmocoJointSet",
    "HcmocoSample",
    "NtuHcmoco",
    "hcmoco_norm_joints",
    "ntu_crop_params",
    "ntu_hcmoco_sample",
    "ntu_point_fields",
    "parse_ntu_tag",
    "read_ntu_hcmoco",
    "read_ntu_skeleton",
    "skeleton_file_number",
]

NTU_RGB_DIR = "nturgb+d_rgb_warped_correction"
NTU_DEPTH_DIR = "nturgb+d_depth_masked"
NTU_SKELETON_DIR = "nturgb+d_parsed_skeleton"
NTU_MISSING_SKELETONS = "NTU_RGBD_samples_with_missing_skeletons.txt"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ------------------------------------------------------------------------------------------------- joint sets
#: Kinect-25 (``ntu25``) index of each MPII-16 slot. Kinect *left* joints fill MPII *right* slots (kept as in
#: HCMoCo); the centre slots are pelvis <- SpineBase, thorax <- SpineMid, upper_neck <- Neck, head_top <- Head.
KINECT_TO_MPII16: tuple[int, ...] = (14, 13, 12, 16, 17, 18, 0, 1, 2, 3, 6, 5, 4, 8, 9, 10)
#: Parent of each MPII-16 joint in the SemGCN graph (-1: the root, index 6 = pelvis). The library's only copy of the
#: HCMoCo graphs (``humanvision.models.hcmoco.HCMOCO_PARENTS`` refers to this and :data:`COCO13_PARENTS`).
MPII16_PARENTS: tuple[int, ...] = (1, 2, 6, 6, 3, 4, -1, 6, 7, 8, 11, 12, 8, 8, 13, 14)
#: COCO-reduced-13 joints (head_top holds the nose for COCO).
COCO13_JOINTS: tuple[str, ...] = ("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
                                  "head_top", "right_wrist", "right_elbow", "right_shoulder", "left_shoulder",
                                  "left_elbow", "left_wrist")
#: COCO-17 index of each COCO-13 slot.
COCO17_TO_COCO13: tuple[int, ...] = (16, 14, 12, 11, 13, 15, 0, 10, 8, 6, 5, 7, 9)
#: Kinect-25 index of each COCO-13 slot (left/right swapped like :data:`KINECT_TO_MPII16`; head_top <- Head).
KINECT_TO_COCO13: tuple[int, ...] = (14, 13, 12, 16, 17, 18, 3, 6, 5, 4, 8, 9, 10)
#: Parent of each COCO-13 joint (-1: the root, index 6 = head_top / nose).
COCO13_PARENTS: tuple[int, ...] = (1, 2, 9, 10, 3, 4, -1, 8, 9, 6, 6, 10, 11)


@dataclass(frozen=True)
class HcmocoJointSet:
    """A SemGCN joint set: names, graph ``parents`` (-1 at ``root``), the Kinect-25 index of each joint
    (``from_kinect``) and the index of each joint in the keypoint-only source's own annotation order
    (``from_source``: identity for MPII, :data:`COCO17_TO_COCO13` for COCO)."""

    name: str
    joints: tuple[str, ...]
    parents: tuple[int, ...]
    root: int
    from_kinect: tuple[int, ...]
    from_source: tuple[int, ...]

    @property
    def num_joints(self) -> int:
        return len(self.joints)


HCMOCO_JOINT_SETS: dict[str, HcmocoJointSet] = {
    "mpii16": HcmocoJointSet("mpii16", get_skeleton("mpii16").joints, MPII16_PARENTS, 6, KINECT_TO_MPII16,
                             tuple(range(16))),
    "coco13": HcmocoJointSet("coco13", COCO13_JOINTS, COCO13_PARENTS, 6, KINECT_TO_COCO13, COCO17_TO_COCO13),
}
_JOINT_SET_ALIASES = {"mpii": "mpii16", "coco_reduce": "coco13", "coco13": "coco13", "mpii16": "mpii16"}


def _joint_set(name: str | HcmocoJointSet) -> HcmocoJointSet:
    if isinstance(name, HcmocoJointSet):
        return name
    key = _JOINT_SET_ALIASES.get(str(name).lower())
    if key is None:
        raise DataError(f"unknown HCMoCo joint set {name!r}; expected 'mpii16' or 'coco13'", field="joint_set")
    return HCMOCO_JOINT_SETS[key]


# ------------------------------------------------------------------------------------------------- files
_TAG = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")
_WRGB = re.compile(r"WRGB-(\d{8})\.jpg")


def parse_ntu_tag(tag: str) -> dict[str, int]:
    """``"S001C002P003R001A004"`` -> ``{setup: 1, camera: 2, performer: 3, replication: 1, action: 4}``."""
    m = _TAG.fullmatch(tag)
    if m is None:
        raise DataError(f"{tag!r} is not an NTU video tag SsssCcccPpppRrrrAaaa", field="tag")
    return dict(zip(("setup", "camera", "performer", "replication", "action"), map(int, m.groups())))


def skeleton_file_number(rgb_frame: int) -> int:
    """The ``Skeleton-%08d.pkl`` number of frame ``WRGB-{rgb_frame}`` (RGB counted from 1, skeletons from 0)."""
    if rgb_frame < 1:
        raise DataError(f"WRGB frames are counted from 1, got {rgb_frame}", field="frame")
    return rgb_frame - 1


def _float_array(value: Any, shape: tuple[int, int], *, file: str, field: str) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError("not a numeric (rectangular) array", file=file, record="body 0", field=field) from None
    if a.shape != shape:
        raise DataError(f"shape {a.shape}, expected {shape}", file=file, record="body 0", field=field)
    bad = ~np.isfinite(a)
    if bad.any():
        j = int(np.argwhere(bad)[0][0])
        raise DataError(f"non-finite value at joint {j} ({a[j].tolist()})", file=file, record="body 0", field=field)
    return a.astype(np.float32)


def read_ntu_skeleton(path: str | Path) -> dict[str, Any]:
    """Body 0 of a parsed-skeleton pickle: ``{"frame_idx", "d_loc" (25, 2) (x, y), "3d_loc" (25, 3),
    "rgb_loc" (25, 2) or None, "bodies"}``. Read without executing code; malformed content is a
    :class:`DataError` naming the file and field."""
    f = str(path)
    doc = safe_unpickle(f)
    if not isinstance(doc, dict):
        raise DataError(f"expected a dict, got {type(doc).__name__}", file=f)
    bodies = doc.get("joints")
    if not isinstance(bodies, (list, tuple)):
        raise DataError("missing or not a list", file=f, field="joints")
    if not bodies:
        raise DataError("no body in this frame (HCMoCo uses body 0)", file=f, field="joints")
    body = bodies[0]
    if not isinstance(body, dict):
        raise DataError(f"expected a dict, got {type(body).__name__}", file=f, record="body 0")
    for key in ("d_loc", "3d_loc"):
        if key not in body:
            raise DataError("missing field", file=f, record="body 0", field=key)
    return {"frame_idx": doc.get("frame_idx"), "bodies": len(bodies),
            "d_loc": _float_array(body["d_loc"], (25, 2), file=f, field="d_loc"),
            "3d_loc": _float_array(body["3d_loc"], (25, 3), file=f, field="3d_loc"),
            "rgb_loc": _float_array(body["rgb_loc"], (25, 2), file=f, field="rgb_loc") if "rgb_loc" in body
            else None}


# ------------------------------------------------------------------------------------------------- sample
class HcmocoSample(NamedTuple):
    """One HCMoCo pre-training sample, the 9 fields of A.2.2 in order (see the module docstring)."""

    rgbd: np.ndarray
    index: int
    norm_joints: np.ndarray
    joints3d: np.ndarray
    original_joints2d: np.ndarray
    joints_vis: np.ndarray
    true_depth: int
    depth_mask: np.ndarray
    scale: float


def ntu_crop_params(rng: np.random.Generator, width: int, height: int,
                    joints_xy: np.ndarray) -> tuple[int, int, int]:
    """The NTU square crop ``(top, left, side)`` (A.2.3): side from the ``(0.08, 1.2)`` area rule with aspect 1
    (fallback ``height`` after 10 misses, since W > H), centre uniform in the joints' bounding box."""
    area = width * height
    side = None
    for _ in range(10):
        s = round(math.sqrt(area * rng.uniform(0.08, 1.2)))
        if 0 < s <= width and 0 < s <= height:
            side = s
            break
    if side is None:  # torchvision's fallback for a frame wider than the ratio range: h = height, w = h * 1
        side = min(width, height)
    xy = np.asarray(joints_xy, dtype=np.float64)

    def centre(lo: float, hi: float) -> int:
        a, b = int(lo), int(hi)
        return a if b <= a else int(rng.integers(a, b))

    cx, cy = centre(xy[:, 0].min(), xy[:, 0].max()), centre(xy[:, 1].min(), xy[:, 1].max())
    return cy - side // 2, cx - side // 2, side


def _resized_crop(img: np.ndarray, top: int, left: int, side: int, out: int, interpolation: int) -> np.ndarray:
    """Crop ``[top, top + side) x [left, left + side)`` (zero outside the image) resized to ``out x out``."""
    s = side / out
    M = np.array([[s, 0.0, left + 0.5 * s - 0.5], [0.0, s, top + 0.5 * s - 0.5]])
    return cv2.warpAffine(img, M, (out, out), flags=interpolation | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def hcmoco_norm_joints(joints_rc: np.ndarray, visible: np.ndarray, root: int) -> np.ndarray:
    """SemGCN input: (row, col) joints minus the root joint, divided by the max |value| (so in [-1, 1]);
    invisible joints are 0 (A.2.2). All-zero input stays zero."""
    j = np.asarray(joints_rc, dtype=np.float32) - np.asarray(joints_rc, dtype=np.float32)[root]
    j = np.where(np.asarray(visible, bool)[:, None], j, 0.0).astype(np.float32)
    m = float(np.abs(j).max(initial=0.0))
    return j / m if m > 0 else j


def ntu_hcmoco_sample(frame: dict[str, Any], index: int, rng: np.random.Generator,
                      joint_set: str | HcmocoJointSet = "mpii16", crop_size: int = 320,
                      visibility_typo: bool = False, crop: tuple[int, int, int] | None = None) -> HcmocoSample:
    """The 9-field sample of an NTU frame (:meth:`NtuHcmoco.frame`'s dict) with A.2.3's crop and normalisation.
    ``crop``: the ``(top, left, side)`` of :func:`ntu_crop_params` when the caller drew it (with the same ``rng``,
    the sample is then the same); ``rng`` is used for nothing else."""
    js = _joint_set(joint_set)
    rgb, depth = frame["rgb"], frame["depth"]
    H, W = depth.shape
    kin = frame["d_loc"]
    top, left, side = ntu_crop_params(rng, W, H, kin) if crop is None else crop
    sel = np.asarray(js.from_kinect)
    xy = kin[sel].astype(np.float64)
    in_image = frame["in_image"][sel]
    rows, cols = xy[:, 1], xy[:, 0]
    col_end = (rows if visibility_typo else cols) < left + side  # the typo tests the row against left + side
    vis = in_image & (rows >= top) & (rows < top + side) & (cols >= left) & col_end
    S = int(crop_size)
    rc = np.stack([(rows - top) / side * S, (cols - left) / side * S], 1)
    rc = np.where(vis[:, None], rc, 0.0).astype(np.float32)
    rgb_c = _resized_crop(rgb, top, left, side, S, cv2.INTER_LINEAR).astype(np.float32) / 255.0
    rgb_c = (rgb_c - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    depth_c = _resized_crop(depth, top, left, side, S, cv2.INTER_NEAREST)
    d = center_depth(depth_c)
    rgbd = np.concatenate([rgb_c.transpose(2, 0, 1), np.repeat(d[None], 3, 0)], 0).astype(np.float32)
    full_rc = np.stack([rows, cols], 1)
    loc3d = frame["3d_loc"]
    pts = rc[vis].astype(np.float64)
    scale = float(np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)).max()) if len(pts) >= 2 else 80.0
    return HcmocoSample(rgbd=rgbd, index=int(index), norm_joints=hcmoco_norm_joints(full_rc, in_image, js.root),
                        joints3d=(loc3d - loc3d[0]).astype(np.float32), original_joints2d=rc,
                        joints_vis=vis.astype(np.int64), true_depth=1, depth_mask=depth_c > 0, scale=scale)


def ntu_point_fields(frame: dict[str, Any], crop: tuple[int, int, int], crop_size: int = 320
                     ) -> dict[str, np.ndarray]:
    """The NTUSeg sample's extra fields that the point-cloud variant needs (A.2.2, A.3.4) for the crop ``(top,
    left, side)`` of ``frame``:

    * ``grid_rc`` ``(2, S, S) float32``: the original-frame (row, col) of every crop pixel (the code's
      ``grid_xy``, here in (row, col) order): the source pixel the depth's nearest resize takes (the same warp run
      on index maps, so depth and coordinates always belong to the same pixel); outside the frame, where the crop
      is zero-padded, ``floor(top + (i + 0.5) side / S)`` (and the same for columns);
    * ``frame_hw`` ``(2,) float32``: (H0, W0) of the frame;
    * ``depth_mean`` ``() float32``: the foreground mean (metres) that the sample's depth had subtracted (0 without
      foreground), so ``depth + depth_mean`` is the measured depth on the foreground.
    """
    top, left, side = (int(v) for v in crop)
    S = int(crop_size)
    depth = frame["depth"]
    H, W = depth.shape
    rows = np.broadcast_to(np.arange(1, H + 1, dtype=np.float32)[:, None], (H, W))
    cols = np.broadcast_to(np.arange(1, W + 1, dtype=np.float32)[None, :], (H, W))
    r = _resized_crop(np.ascontiguousarray(rows), top, left, side, S, cv2.INTER_NEAREST)
    c = _resized_crop(np.ascontiguousarray(cols), top, left, side, S, cv2.INTER_NEAREST)
    centres = (np.arange(S, dtype=np.float64) + 0.5) * side / S
    inside = (r > 0) & (c > 0)
    grid = np.stack([np.where(inside, r - 1, np.floor(top + centres)[:, None]),
                     np.where(inside, c - 1, np.floor(left + centres)[None, :])]).astype(np.float32)
    d = _resized_crop(depth, top, left, side, S, cv2.INTER_NEAREST).astype(np.float32) / 1000.0
    fg = d != 0
    mean = float(d[fg].mean(dtype=np.float64)) if fg.any() else 0.0
    return {"grid_rc": grid, "frame_hw": np.array([H, W], np.float32), "depth_mean": np.float32(mean)}


# ------------------------------------------------------------------------------------------------- reader
def _frame_files(root: Path, frame_list: Path | None) -> list[tuple[str, int]]:
    if frame_list is not None:
        if not frame_list.is_file():
            raise DataError("frame list not found", file=str(frame_list))
        out = []
        for n, line in enumerate(frame_list.read_text().splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            parts = line.replace("\\", "/").split("/")
            m = _WRGB.fullmatch(parts[-1]) if len(parts) >= 2 else None
            if m is None:
                raise DataError(f"expected a line ending in '<tag>/WRGB-%08d.jpg', got {line!r}",
                                file=str(frame_list), record=f"line {n}")
            out.append((parts[-2], int(m.group(1))))
        return out
    rgb_dir = root / NTU_RGB_DIR
    if not rgb_dir.is_dir():
        raise DataError(f"missing folder {NTU_RGB_DIR}/ (the warped RGB frames)", file=str(root))
    out = []
    for video in sorted(p for p in rgb_dir.iterdir() if p.is_dir()):
        for f in sorted(video.iterdir()):
            m = _WRGB.fullmatch(f.name)
            if m is not None:
                out.append((video.name, int(m.group(1))))
    return out


class NtuHcmoco(Reader):
    """NTU RGB+D frames in HCMoCo's preprocessed layout (module docstring), as 9-field pre-training samples.

    Args:
        root: the folder holding ``nturgb+d_rgb_warped_correction/``, ``nturgb+d_depth_masked/`` and
            ``nturgb+d_parsed_skeleton/``.
        joint_set: ``"mpii16"`` (NTU + MPII) or ``"coco13"`` (NTU + COCO).
        frame_list: optional file listing the frames (lines ending in ``{tag}/WRGB-{n:08d}.jpg``); default: every
            ``WRGB-*.jpg`` found, sorted by video and frame.
        missing_skeletons: file of video tags to exclude; default ``root/NTU_RGBD_samples_with_missing_skeletons.txt``
            when it exists (``False``: exclude nothing).
        crop_size: output side S (320). seed: base of the per-sample random draws.
        visibility_typo: replicate the original's crop-visibility typo (pitfall 9).

    ``reader[i]`` is an :class:`HcmocoSample`; :meth:`frame` gives the decoded, validated full frame.
    ``excluded`` holds the tags dropped by the missing-skeleton list.
    """

    def __init__(self, root: str | Path, joint_set: str = "mpii16", frame_list: str | Path | None = None,
                 missing_skeletons: str | Path | bool | None = None, crop_size: int = 320, seed: int = 0,
                 visibility_typo: bool = False) -> None:
        self.root = Path(root)
        self.source = str(self.root)
        self.joint_set = _joint_set(joint_set)
        self.skeleton = get_skeleton("mpii16") if self.joint_set.name == "mpii16" else None
        self.crop_size, self.seed, self.epoch = int(crop_size), int(seed), 0
        self.visibility_typo = bool(visibility_typo)
        if missing_skeletons is None:
            default = self.root / NTU_MISSING_SKELETONS
            missing_skeletons = default if default.is_file() else False
        missing: set[str] = set()
        if missing_skeletons is not False:
            mf = Path(missing_skeletons)  # type: ignore[arg-type]
            if not mf.is_file():
                raise DataError("missing-skeleton list not found", file=str(mf))
            missing = {ln.strip() for ln in mf.read_text().splitlines() if ln.strip()}
        frames = _frame_files(self.root, None if frame_list is None else Path(frame_list))
        for tag, _ in frames:
            try:
                parse_ntu_tag(tag)
            except DataError as e:
                raise DataError(str(e), file=str(frame_list or self.root / NTU_RGB_DIR), record=f"video {tag}") \
                    from None
        self.excluded = sorted({t for t, _ in frames if t in missing})
        self.frames = [(t, n) for t, n in frames if t not in missing]

    def __len__(self) -> int:
        return len(self.frames)

    def set_epoch(self, epoch: int) -> None:
        """Draw different crops in each epoch (the draws of sample ``i`` come from ``(seed, epoch, i)``)."""
        self.epoch = int(epoch)

    def paths(self, index: int) -> dict[str, str]:
        """The RGB, depth and skeleton files of frame ``index`` (``WRGB-n``, ``MDepth-n``, ``Skeleton-(n-1)``)."""
        tag, n = self.frames[index]
        return {"rgb": str(self.root / NTU_RGB_DIR / tag / f"WRGB-{n:08d}.jpg"),
                "depth": str(self.root / NTU_DEPTH_DIR / tag / f"MDepth-{n:08d}.png"),
                "skeleton": str(self.root / NTU_SKELETON_DIR / tag / f"Skeleton-{skeleton_file_number(n):08d}.pkl")}

    def frame(self, index: int) -> dict[str, Any]:
        """Decode and validate frame ``index``: ``rgb (H, W, 3) uint8``, ``depth (H, W) float32`` mm, ``d_loc
        (25, 2)`` (x, y), ``3d_loc (25, 3)``, ``in_image (25,) bool``, ``out_of_image`` (count), ``tag``,
        ``frame`` (the WRGB number) and ``paths``."""
        tag, n = self.frames[index]
        p = self.paths(index)
        rgb, depth = read_image(p["rgb"]), read_depth(p["depth"])
        if rgb.shape[:2] != depth.shape:
            (h, w), (hd, wd) = rgb.shape[:2], depth.shape
            raise DataError(f"depth map {p['depth']} is {wd}x{hd} but RGB frame {p['rgb']} is {w}x{h} (W x H); "
                            "the RGB must be warped into the depth frame", file=p["depth"],
                            record=f"video {tag} frame {n}", field="depth")
        sk = read_ntu_skeleton(p["skeleton"])
        H, W = depth.shape
        xy = sk["d_loc"]
        inside = (xy[:, 0] >= 0) & (xy[:, 0] < W) & (xy[:, 1] >= 0) & (xy[:, 1] < H)
        return {"rgb": rgb, "depth": depth, "d_loc": xy, "3d_loc": sk["3d_loc"], "in_image": inside,
                "out_of_image": int((~inside).sum()), "tag": tag, "frame": n, "paths": p}

    def _get(self, index: int) -> HcmocoSample:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return ntu_hcmoco_sample(self.frame(index), index, rng, self.joint_set, self.crop_size, self.visibility_typo)

    def __repr__(self) -> str:
        return f"NtuHcmoco({self.source!r}, {len(self)} frames, joint_set={self.joint_set.name!r})"


def read_ntu_hcmoco(root: str | Path, joint_set: str = "mpii16", frame_list: str | Path | None = None,
                    missing_skeletons: str | Path | bool | None = None, crop_size: int = 320,
                    seed: int = 0) -> NtuHcmoco:
    """:class:`NtuHcmoco` of ``root`` (HCMoCo's preprocessed NTU RGB+D layout)."""
    return NtuHcmoco(root, joint_set, frame_list, missing_skeletons, crop_size, seed)
