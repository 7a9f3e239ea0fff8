"""Human3.6M: the learnable-triangulation multi-view labels and the raw ``*.cdf`` pose files.

**Multi-view labels** (``human36m-multiview-labels-GTbboxes.npy``, pose3d.md §1.3): ``np.save`` of a dict::

    subject_names  ['S1', 'S5', 'S6', 'S7', 'S8', 'S9', 'S11']
    camera_names   ['54138969', '55011271', '58860488', '60457274']
    action_names   ['Directions-1', 'Directions-2', ..., 'WalkingTogether-2']
    cameras        structured array (n_subjects, n_cameras), fields R (3,3), t (3,1), K (3,3), dist (5,)
                   world -> camera x_cam = R X + t (mm); dist = (k1, k2, p1, p2, k3) of the H36M model
    table          structured array (n_frames,), fields subject_idx, action_idx, frame_idx (0-based),
                   keypoints (17, 3) world mm in the h36m17 order, bbox_by_camera_tlbr (n_cameras, 4)
                   (top, left, bottom, right); a view whose box has no height ((0,0,0,0)) is missing

Images live under the processed tree
``root/{subject}/{action}/imageSequence[-undistorted]/{camera}/img_{frame_idx + 1:06d}.jpg``. Undistorted
images keep the same ``K`` (LT ``undistort-h36m.py``), so their cameras carry no distortion; raw
``imageSequence`` frames get ``dist`` with the ``"h36m"`` model.

**Raw pose files** (``root/{subject}/MyPoseFeatures/{kind}/{Action} {n}[.{camera}].cdf``): one zVariable
``Pose`` with ``T x 32 x D`` values (50 Hz); ``D3_Positions`` are world mm, ``D3_Positions_mono`` camera-frame
mm (one file per camera), ``D2_Positions`` pixels. :func:`read_h36m_cdf` converts the 32 mocap joints to
``h36m17`` with the indices ``(3, 2, 1, 6, 7, 8, 0, 12, 13, 15, 27, 26, 25, 17, 18, 19, 14)`` (pose3d.md §0).

**ECCV'18 challenge caches** (integral-human-pose's
``HM36_eccv_challenge_{Train,Val}_w288xh384_keypoint_jnt_bbox_db.pkl``, pose3d.md §5.6), read by
:class:`Human36MEccv` with :func:`humanvision.data.io.safe_unpickle` (no code executed): a pickled **list** with
one dict per image ``{Train,Val}/IMG/%05d.jpg`` (entry i is image ``i + 1``)::

    joints_3d           (18, 3)  [img_x, img_y, (Z - Z_root) * s]: pixels and depth in pixel units
    joints_3d_vis       (18, 3)  1 (optional)
    joints_3d_relative  (18, 3)  camera-frame mm minus the root
    center_x, center_y, width, height   keypoint box, aspect 288:384, x1.25
    bone_len, s, rot (2, 2), t (2,)     total bone length; the similarity fitted between GT xy and a detection
    image, flip_pairs, parent_ids       (optional; ``image`` is the writer's absolute path)

The 18 joints are the integral order root, R hip/knee/ankle, L hip/knee/ankle, torso, neck, nose, head,
L shoulder/elbow/wrist, R shoulder/elbow/wrist, thorax; the first 17 are ``h36m17_vp`` (spine = torso, thorax =
neck, head_top = head), the 18th is the mid-shoulder point. The map to ``mpii16`` is
``get_joint_map("h36m17_vp", "mpii16")`` (HG-3D's ``h36m_to_mpii``).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from humanvision.data.io import read_image, safe_load_npy, safe_unpickle
from humanvision.data.readers._checks import check_finite_keypoints
from humanvision.data.readers.base import Reader, as_array, require, resolve_skeleton
from humanvision.data.sample import LazyImage, MultiViewSample, Sample
from humanvision.errors import DataError
from humanvision.skeletons import Skeleton

__all__ = [
    "H36M_DAMAGED_ACTIONS",
    "H36M_IMAGE_SIZES",
    "H36M_MOCAP_TO_H36M17",
    "Human36MEccv",
    "Human36MMultiView",
    "Human36MPoses",
    "Human36MViews",
    "read_h36m_cdf",
]

#: 32 mocap joints -> h36m17 (learnable-triangulation order).
H36M_MOCAP_TO_H36M17 = (3, 2, 1, 6, 7, 8, 0, 12, 13, 15, 27, 26, 25, 17, 18, 19, 14)
#: Sequences whose mocap is known to be misaligned; dropped when ``with_damaged_actions=False``.
H36M_DAMAGED_ACTIONS = {("S9", "Greeting-2"), ("S9", "SittingDown-2"), ("S9", "Waiting-1")}
#: Video frame size (width, height) of each H36M camera (the same after undistortion).
H36M_IMAGE_SIZES = {"54138969": (1000, 1002), "55011271": (1000, 1000), "58860488": (1000, 1000),
                    "60457274": (1000, 1002)}

_TABLE_FIELDS = {"subject_idx": (), "action_idx": (), "frame_idx": (), "keypoints": None,
                 "bbox_by_camera_tlbr": None}
_CAMERA_FIELDS = {"R": ((3, 3),), "t": ((3, 1), (3,)), "K": ((3, 3),), "dist": ((5,), (4,))}


def _names(labels: dict, key: str, f: str) -> list[str]:
    if key not in labels:
        raise DataError("missing field", file=f, field=key)
    try:
        return [str(x) for x in labels[key]]
    except TypeError:
        raise DataError("expected a list of names", file=f, field=key) from None


class Human36MMultiView(Reader):
    """Multi-view Human3.6M frames from the learnable-triangulation labels file; one sample per frame.

    Args:
        labels: the ``.npy`` labels file. root: the ``processed/`` folder of images.
        subjects: subject names to keep (train ``S1,S5,S6,S7,S8``; test ``S9,S11``); default all.
        undistorted: read ``imageSequence-undistorted`` (LT default) and give cameras without distortion.
        with_damaged_actions: keep :data:`H36M_DAMAGED_ACTIONS` (every shipped LT/CP config does).
        every_n: keep every n-th frame after filtering (``retain_every_n_frames_in_test``).
        min_views: drop frames with fewer available views.
        skeleton: the labels' joint set (``h36m17``); the keypoint count is checked.

    Returns :class:`MultiViewSample`: ``keypoints_3d (1, 17, 3)`` world mm (``visibility_3d`` all ones),
    ``views`` only for present cameras (each with lazy ``image``, ``camera`` world->camera, ``boxes (1, 4)``
    xywh from the TLBR box, the same world keypoints), ``identity`` = subject, ``attributes`` subject/action,
    ``meta``: ``frame_idx``, ``row`` (table row), ``view_mask`` (present cameras among ``camera_names``).
    """

    def __init__(self, labels: str | Path, root: str | Path, subjects: Sequence[str] | None = None,
                 undistorted: bool = True, with_damaged_actions: bool = True, every_n: int = 1,
                 min_views: int = 1, skeleton: str | Skeleton = "h36m17", image_ext: str = "jpg") -> None:
        self.source = f = str(labels)
        self.root = Path(root)
        self.undistorted, self.image_ext = bool(undistorted), image_ext.lstrip(".")
        self.skeleton = resolve_skeleton(skeleton, f)
        k = self.skeleton.num_joints
        if not Path(f).is_file():
            raise DataError("file not found", file=f)
        labels_dict = safe_load_npy(f)  # a pickled dict, read without executing code
        if not isinstance(labels_dict, dict):
            raise DataError(f"expected a dict, got {type(labels_dict).__name__}", file=f)
        self.subject_names = _names(labels_dict, "subject_names", f)
        self.camera_names = _names(labels_dict, "camera_names", f)
        self.action_names = _names(labels_dict, "action_names", f)
        n_sub, n_cam, n_act = len(self.subject_names), len(self.camera_names), len(self.action_names)

        cams = labels_dict.get("cameras")
        if cams is None:
            raise DataError("missing field", file=f, field="cameras")
        cams = np.asarray(cams)
        if cams.shape != (n_sub, n_cam):
            raise DataError(f"shape {cams.shape}, expected ({n_sub} subjects, {n_cam} cameras)", file=f,
                            field="cameras")
        self.cameras: dict[str, np.ndarray] = {}
        for name, shapes in _CAMERA_FIELDS.items():
            if cams.dtype.names is None or name not in cams.dtype.names:
                raise DataError(f"structured array has no field {name!r}", file=f, field="cameras")
            v = np.asarray(cams[name], dtype=np.float64)
            if v.shape[2:] not in shapes:
                raise DataError(f"per-camera shape {v.shape[2:]}, expected one of {list(shapes)}", file=f,
                                field=f"cameras.{name}")
            if not np.isfinite(v).all():
                raise DataError("non-finite values", file=f, field=f"cameras.{name}")
            self.cameras[name] = v.reshape(n_sub, n_cam, *shapes[0])
        if self.cameras["dist"].shape[-1] == 4:
            self.cameras["dist"] = np.concatenate([self.cameras["dist"], np.zeros((n_sub, n_cam, 1))], -1)
        self._cameras = [[self._make_camera(s, c, f) for c in range(n_cam)] for s in range(n_sub)]

        table = labels_dict.get("table")
        if table is None:
            raise DataError("missing field", file=f, field="table")
        table = np.asarray(table)
        for name in _TABLE_FIELDS:
            if table.dtype.names is None or name not in table.dtype.names:
                raise DataError(f"structured array has no field {name!r}", file=f, field="table")
        kp = np.asarray(table["keypoints"], dtype=np.float32)
        if kp.ndim != 3 or kp.shape[1:] != (k, 3):
            raise DataError(f"per-frame shape {kp.shape[1:]}, expected ({k}, 3) for skeleton "
                            f"{self.skeleton.name!r}", file=f, field="table.keypoints")
        bb = np.asarray(table["bbox_by_camera_tlbr"], dtype=np.int64)
        if bb.shape[1:] != (n_cam, 4):
            raise DataError(f"per-frame shape {bb.shape[1:]}, expected ({n_cam}, 4)", file=f,
                            field="table.bbox_by_camera_tlbr")
        sub = np.asarray(table["subject_idx"], dtype=np.int64)
        act = np.asarray(table["action_idx"], dtype=np.int64)
        frame = np.asarray(table["frame_idx"], dtype=np.int64)
        checks = (("subject_idx", sub, n_sub), ("action_idx", act, n_act), ("frame_idx", frame, None))
        for name, v, hi in checks:
            bad = (v < 0) | (v >= hi) if hi is not None else v < 0
            if bad.any():
                r = int(np.flatnonzero(bad)[0])
                raise DataError(f"value {v[r]} out of range" + (f" 0..{hi - 1}" if hi else ""), file=f,
                                record=f"table row {r}", field=f"table.{name}")
        bad = ~np.isfinite(kp).all(axis=(1, 2))
        if bad.any():
            raise DataError("non-finite keypoints", file=f, record=f"table row {int(np.flatnonzero(bad)[0])}",
                            field="table.keypoints")

        keep = np.ones(len(table), dtype=bool)
        if subjects is not None:
            unknown = sorted(set(subjects) - set(self.subject_names))
            if unknown:
                raise DataError(f"unknown subjects {unknown}; the file has {self.subject_names}", file=f,
                                field="subject_names")
            keep &= np.isin(sub, [self.subject_names.index(s) for s in subjects])
        if not with_damaged_actions:
            for s, a in H36M_DAMAGED_ACTIONS:
                if s in self.subject_names and a in self.action_names:
                    keep &= ~((sub == self.subject_names.index(s)) & (act == self.action_names.index(a)))
        present = (bb[:, :, 2] - bb[:, :, 0]) > 0  # LT skips a view whose box has no height
        keep &= present.sum(1) >= min_views
        rows = np.flatnonzero(keep)[::max(1, int(every_n))]
        self.rows = rows
        self.subject_idx, self.action_idx, self.frame_idx = sub[rows], act[rows], frame[rows]
        self.keypoints, self.bboxes_tlbr, self.present = kp[rows], bb[rows], present[rows]

    def __len__(self) -> int:
        return len(self.rows)

    def image_path(self, subject: str, action: str, camera: str, frame_idx: int) -> Path:
        folder = "imageSequence-undistorted" if self.undistorted else "imageSequence"
        return self.root / subject / action / folder / camera / f"img_{frame_idx + 1:06d}.{self.image_ext}"

    def _make_camera(self, subject_idx: int, camera_idx: int, file: str):
        from humanvision.geometry import Camera

        name = self.camera_names[camera_idx]
        c = {key: v[subject_idx, camera_idx] for key, v in self.cameras.items()}
        w, h = H36M_IMAGE_SIZES.get(name, (None, None))
        try:
            return Camera(K=c["K"], R=c["R"], t=c["t"].reshape(3),
                          dist=None if self.undistorted else c["dist"],
                          dist_model="h36m", width=w, height=h, name=name)
        except DataError as e:
            raise DataError(str(e), file=file,
                            record=f"subject {self.subject_names[subject_idx]} camera {name}",
                            field=f"cameras.{e.field}" if e.field else "cameras") from None

    def camera(self, subject_idx: int, camera_idx: int):
        """The :class:`humanvision.geometry.Camera` of one (subject, camera) pair for this reader's images
        (world -> camera; no distortion when ``undistorted``, else the ``"h36m"`` model)."""
        return self._cameras[subject_idx][camera_idx]

    def _get(self, index: int) -> MultiViewSample:
        s, a, fr = int(self.subject_idx[index]), int(self.action_idx[index]), int(self.frame_idx[index])
        subject, action = self.subject_names[s], self.action_names[a]
        kp = self.keypoints[index][None]
        ones = np.ones(kp.shape[:2], np.float32)
        views, names = [], []
        for c in np.flatnonzero(self.present[index]):
            cam = self.camera_names[c]
            top, left, bottom, right = self.bboxes_tlbr[index, c].tolist()
            path = str(self.image_path(subject, action, cam, fr))
            views.append(Sample(
                image=LazyImage(path, read_image), image_path=path, camera=self.camera(s, int(c)),
                boxes=np.array([[left, top, right - left, bottom - top]], np.float32),
                keypoints_3d=kp, visibility_3d=ones, keypoints_3d_frame="world", identity=subject,
                attributes={"subject": subject, "action": action}, skeleton=self.skeleton.name,
                source=self.source, index=index, image_id=f"{subject}/{action}/{cam}/{fr + 1:06d}",
                meta={"camera": cam, "frame_idx": fr, "bbox_tlbr": self.bboxes_tlbr[index, c]}))
            names.append(cam)
        return MultiViewSample(
            views=views, view_names=names, keypoints_3d=kp, visibility_3d=ones, skeleton=self.skeleton.name,
            source=self.source, index=index, identity=subject,
            attributes={"subject": subject, "action": action},
            meta={"frame_idx": fr, "row": int(self.rows[index]), "view_mask": self.present[index].copy()})



class Human36MViews(Reader):
    """The same labels as :class:`Human36MMultiView`, one single-view sample per (frame, present camera).

    What a 2D network trains on (LT fine-tunes its 2D backbone on Human3.6M crops) and what ContextPose validates
    on (its single-view expansion, pose3d.md §3.1). Arguments are :class:`Human36MMultiView`'s. Each sample is
    that view's :class:`Sample` plus ``keypoints_2d (1, K, 2)``, the 3D joints projected through the view's camera
    (image pixels; distorted when the images are), and ``visibility (1, K)``: 1 inside the image, 0 outside or
    behind the camera. ``keypoints (M, K, 2)``, ``flags (M, K)`` (COCO-style 2 / 0) and ``boxes (M, 4)`` (xywh) hold all of them
    for metrics; ``frame_index (M,)`` / ``camera_index (M,)`` say which frame and camera each sample is.
    """

    def __init__(self, labels: str | Path, root: str | Path, **kwargs) -> None:
        self.frames = Human36MMultiView(labels, root, **kwargs)
        self.source, self.skeleton = self.frames.source, self.frames.skeleton
        f = self.frames
        self.frame_index, self.camera_index = (a.astype(np.int64) for a in np.nonzero(f.present))
        kp3d = f.keypoints.astype(np.float64)
        n, k = len(self.frame_index), f.skeleton.num_joints
        self.keypoints = np.zeros((n, k, 2), np.float32)
        self.flags = np.zeros((n, k), np.int64)
        self.boxes = np.zeros((n, 4), np.float32)
        for s in np.unique(f.subject_idx):
            for c in range(len(f.camera_names)):
                sel = np.flatnonzero((f.subject_idx[self.frame_index] == s) & (self.camera_index == c))
                if not len(sel):
                    continue
                cam = f.camera(int(s), c)
                X = kp3d[self.frame_index[sel]]
                depth = np.asarray(cam.depth(X), np.float64)
                uv = np.asarray(cam.project(X), np.float64)
                inside = np.isfinite(uv).all(-1) & (depth > 0)
                if cam.image_size is not None:
                    w, h = cam.image_size
                    inside &= (uv[..., 0] >= 0) & (uv[..., 0] < w) & (uv[..., 1] >= 0) & (uv[..., 1] < h)
                self.keypoints[sel] = np.where(inside[..., None], uv, 0.0)
                self.flags[sel] = np.where(inside, 2, 0)
        top, left, bottom, right = np.moveaxis(f.bboxes_tlbr[self.frame_index, self.camera_index], -1, 0)
        self.boxes[:] = np.stack([left, top, right - left, bottom - top], -1)

    def __len__(self) -> int:
        return len(self.frame_index)

    @property
    def subjects(self) -> list[str]:
        return [self.frames.subject_names[int(s)] for s in self.frames.subject_idx[self.frame_index]]

    @property
    def actions(self) -> list[str]:
        return [self.frames.action_names[int(a)] for a in self.frames.action_idx[self.frame_index]]

    def _get(self, index: int) -> Sample:
        frame, c = int(self.frame_index[index]), int(self.camera_index[index])
        views = self.frames[frame]
        view = views.views[views.view_names.index(self.frames.camera_names[c])]
        view.keypoints_2d = self.keypoints[index][None].copy()
        view.visibility = (self.flags[index][None] > 0).astype(np.float32)
        view.index = index
        view.meta.update(frame=frame, camera_index=c, view_mask=views.meta["view_mask"])
        return view


# --------------------------------------------------------------------------- raw .cdf pose files
_KIND_DIMS = {"D3_Positions": (3, "world"), "D3_Positions_mono": (3, "camera"),
              "D3_Positions_mono_universal": (3, "camera"), "D2_Positions": (2, None)}


_CDF_ERRORS = (OSError, ValueError, IndexError, KeyError, struct.error)


def _cdf_pose(path: str):
    try:
        import cdflib
    except ImportError:
        raise ImportError("reading Human3.6M .cdf files needs cdflib: pip install 'humanvision[3d]'") \
            from None
    if not Path(path).is_file():
        raise DataError("file not found", file=path)
    try:
        cdf = cdflib.CDF(path)
        names = cdf.cdf_info().zVariables + cdf.cdf_info().rVariables
    except _CDF_ERRORS as e:
        raise DataError(f"not a readable CDF file ({type(e).__name__}: {e})", file=path) from None
    if "Pose" not in names:
        raise DataError(f"no variable 'Pose' (variables: {names})", file=path, field="Pose")
    return cdf


def read_h36m_cdf(path: str | Path, joints: str = "h36m17", dims: int = 3) -> np.ndarray:
    """Read a Human3.6M ``*.cdf`` pose file as ``(T, 17, dims) float32`` (``joints="h36m17"``) or
    ``(T, 32, dims)`` (``joints="mocap32"``); ``dims`` is 3 for ``D3_*`` files (mm) and 2 for ``D2_Positions``
    (pixels)."""
    f = str(path)
    try:
        raw = np.asarray(_cdf_pose(f).varget("Pose"), dtype=np.float64)
    except _CDF_ERRORS as e:
        raise DataError(f"cannot read the data ({type(e).__name__}: {e})", file=f, field="Pose") from None
    if raw.size % (32 * dims):
        raise DataError(f"{raw.size} values are not a whole number of frames of 32 x {dims} joints", file=f,
                        field="Pose")
    pose = raw.reshape(-1, 32, dims)
    if joints == "mocap32":
        return pose.astype(np.float32)
    if joints != "h36m17":
        raise ValueError(f"joints must be 'h36m17' or 'mocap32', got {joints!r}")
    return pose[:, list(H36M_MOCAP_TO_H36M17)].astype(np.float32)


@lru_cache(maxsize=2)
def _cached_poses(path: str, dims: int) -> np.ndarray:
    # one worker reads frames of the same file in sequence; keep the decoded file (a few MB) for the next
    # frame
    return read_h36m_cdf(path, "h36m17", dims)


_FILE_RE = re.compile(r"^(?P<action>[^.]+?)(?:\.(?P<camera>\d+))?\.cdf$")


class Human36MPoses(Reader):
    """Frames of the raw Human3.6M pose files, converted to ``h36m17``; one sample per (file, frame).

    Args:
        root: the folder holding ``S1``, ``S5``, ... (each with ``MyPoseFeatures/{kind}/*.cdf``), or a list of
            ``.cdf`` files (then ``subject`` is the grand-grandparent folder name).
        kind: ``D3_Positions`` (world mm), ``D3_Positions_mono`` / ``D3_Positions_mono_universal``
            (camera-frame mm) or ``D2_Positions`` (pixels).
        subjects: subject folders to keep (default all). every_n: keep every n-th frame (50 Hz source).

    Samples: ``keypoints_3d (1, 17, 3)`` with ``keypoints_3d_frame`` world/camera (or ``keypoints_2d`` for
    ``D2_Positions``), ``identity`` = subject, ``attributes`` subject/action(/camera), ``meta`` ``frame``.
    Constructing reads only each file's header (frame count).
    """

    def __init__(self, root: str | Path | Sequence[str | Path], kind: str = "D3_Positions",
                 subjects: Sequence[str] | None = None, every_n: int = 1, skeleton: str | Skeleton = "h36m17"
                 ) -> None:
        if kind not in _KIND_DIMS:
            raise ValueError(f"kind must be one of {sorted(_KIND_DIMS)}, got {kind!r}")
        self.kind = kind
        self.dims, self.frame = _KIND_DIMS[kind]
        self.skeleton = resolve_skeleton(skeleton, None)
        if self.skeleton.num_joints != len(H36M_MOCAP_TO_H36M17):
            raise DataError(f"Human3.6M pose files convert to 17 joints, skeleton {self.skeleton.name!r} has "
                            f"{self.skeleton.num_joints}", field="skeleton")
        if isinstance(root, (str, Path)):
            self.source = str(root)
            files = sorted(Path(root).glob(f"*/MyPoseFeatures/{kind}/*.cdf"))
            if not files:
                raise DataError(f"no files matching */MyPoseFeatures/{kind}/*.cdf", file=self.source)
        else:
            files = [Path(p) for p in root]
            self.source = str(files[0].parents[3]) if files and len(files[0].parents) > 3 else ""
        self.files, self.subjects, self.actions, self.cams, counts = [], [], [], [], []
        for p in files:
            subject = p.parents[2].name if len(p.parents) > 2 else ""
            if subjects is not None and subject not in subjects:
                continue
            m = _FILE_RE.match(p.name)
            if m is None:
                raise DataError("file name is not '{Action}[.{camera}].cdf'", file=str(p))
            info = _cdf_pose(str(p)).varinq("Pose")
            values = (info.Last_Rec + 1) * int(np.prod(info.Dim_Sizes or [1])) * info.Num_Elements
            if values % (32 * self.dims):
                raise DataError(f"{values} values are not whole frames of 32 x {self.dims} joints",
                                file=str(p), field="Pose")
            self.files.append(str(p))
            self.subjects.append(subject)
            self.actions.append(m["action"])
            self.cams.append(m["camera"])
            counts.append(values // (32 * self.dims))
        step = max(1, int(every_n))
        per_file = [np.arange(0, c, step) for c in counts]
        empty = [np.zeros(0, np.int64)]
        self.file_idx = np.concatenate([np.full(len(r), i) for i, r in enumerate(per_file)] or empty)
        self.frame_idx = np.concatenate(per_file or empty)

    def __len__(self) -> int:
        return len(self.frame_idx)

    def _get(self, index: int) -> Sample:
        fi, t = int(self.file_idx[index]), int(self.frame_idx[index])
        path = self.files[fi]
        pose = _cached_poses(path, self.dims)
        if t >= len(pose):
            raise DataError(f"frame {t} beyond the {len(pose)} frames in the file", file=path, field="Pose")
        kp = pose[t][None].copy()
        attrs = {"subject": self.subjects[fi], "action": self.actions[fi]}
        if self.cams[fi] is not None:
            attrs["camera"] = self.cams[fi]
        ones = np.ones(kp.shape[:2], np.float32)
        common = {"skeleton": self.skeleton.name, "source": path, "index": index,
                  "identity": self.subjects[fi],
                  "attributes": attrs, "meta": {"frame": t, "kind": self.kind}}
        if self.dims == 2:
            return Sample(keypoints_2d=kp, visibility=ones, **common)
        return Sample(keypoints_3d=kp, visibility_3d=ones, keypoints_3d_frame=self.frame, **common)


# --------------------------------------------------------------------------- ECCV'18 challenge caches
class Human36MEccv(Reader):
    """Human3.6M ECCV'18-challenge images with the integral-human-pose cache; one sample per image.

    Args:
        db: the ``HM36_eccv_challenge_*_keypoint_jnt_bbox_db.pkl`` cache. image_root: the ``{Train,Val}/IMG``
            folder (entry ``i`` is ``%05d.jpg`` of ``i + 1``, as the cache's writer and HG-3D name them).
        every_n: keep every n-th entry (HG-3D validates on every 10th unless ``--full_test``).
        skeleton: ``h36m17_vp`` (the first 17 of the 18 integral joints).

    Samples: ``keypoints_2d (1, 17, 2)`` = ``joints_3d[:17, :2]`` (pixels as stored), ``visibility`` from
    ``joints_3d_vis`` (ones if absent), ``keypoints_3d (1, 17, 3)`` = ``joints_3d_relative[:17]`` (camera-frame
    mm, **root-relative**), ``boxes`` = the cached box (centre +- size / 2), ``image_id`` = ``"%05d"``; ``meta``:
    ``joints_3d_image (1, 17, 3)`` (``[u, v, depth in pixel units]``, HG-3D's 3D target), ``thorax`` (the 18th
    joint of ``joints_3d``), ``thorax_relative``, ``center (1, 2)``, ``size`` (``max(width, height)``, HG-3D's
    crop size), ``bone_len``, ``s``, ``root_relative = True``, ``entry``.
    A non-finite depth or 3D joint is a :class:`DataError` naming the file and entry.
    """

    def __init__(self, db: str | Path, image_root: str | Path, every_n: int = 1,
                 skeleton: str | Skeleton = "h36m17_vp") -> None:
        self.source = f = str(db)
        self.image_root = Path(image_root)
        self.skeleton = resolve_skeleton(skeleton, f)
        k = self.skeleton.num_joints
        if k != 17:
            raise DataError(f"the ECCV'18 cache has 17 (+ thorax) joints, skeleton {self.skeleton.name!r} has {k}",
                            file=f, field="skeleton")
        entries = safe_unpickle(f)
        if not isinstance(entries, list):
            raise DataError(f"expected a list of entries, got {type(entries).__name__}", file=f)
        n = len(entries)
        img = np.zeros((n, 18, 3), np.float64)
        rel = np.zeros((n, 18, 3), np.float64)
        self.vis = np.ones((n, 17), np.float32)
        self.boxes = np.zeros((n, 4), np.float32)
        self.bone_len = np.full(n, np.nan, np.float32)
        self.s = np.full(n, np.nan, np.float32)
        for i, r in enumerate(entries):
            where = f"entry {i}"
            img[i] = as_array(require(r, "joints_3d", file=f, where=where), (18, 3), file=f, where=where,
                              field="joints_3d", dtype=np.float64, finite=False)
            rel[i] = as_array(require(r, "joints_3d_relative", file=f, where=where), (18, 3), file=f, where=where,
                              field="joints_3d_relative", dtype=np.float64, finite=False)
            if "joints_3d_vis" in r:
                v = as_array(r["joints_3d_vis"], (18, None), file=f, where=where, field="joints_3d_vis")
                self.vis[i] = np.clip(v[:17, 0], 0, 1)
            cx, cy, w, h = (float(as_array(require(r, key, file=f, where=where), (), file=f, where=where,
                                           field=key)) for key in ("center_x", "center_y", "width", "height"))
            if w <= 0 or h <= 0:
                raise DataError(f"box size ({w}, {h}) must be positive", file=f, record=where,
                                field="width" if w <= 0 else "height")
            self.boxes[i] = (cx - w / 2, cy - h / 2, w, h)
            for key, out in (("bone_len", self.bone_len), ("s", self.s)):
                if key in r:
                    out[i] = as_array(r[key], (), file=f, where=where, field=key)
        check_finite_keypoints(img, file=f, field="joints_3d", record=lambda i: f"entry {i}")
        check_finite_keypoints(rel, file=f, field="joints_3d_relative", record=lambda i: f"entry {i}")
        rows = np.arange(0, n, max(1, int(every_n)))
        self.rows = rows
        self.joints_image = img.astype(np.float32)
        self.joints_relative = rel.astype(np.float32)

    def __len__(self) -> int:
        return len(self.rows)

    def _get(self, index: int) -> Sample:
        e = int(self.rows[index])
        name = f"{e + 1:05d}"
        path = str(self.image_root / f"{name}.jpg")
        img, rel, box = self.joints_image[e], self.joints_relative[e], self.boxes[e]
        return Sample(
            image=LazyImage(path, read_image), image_path=path, keypoints_2d=img[None, :17, :2].copy(),
            visibility=self.vis[e:e + 1], keypoints_3d=rel[None, :17].copy(),
            visibility_3d=np.ones((1, 17), np.float32), keypoints_3d_frame="camera", boxes=box[None].copy(),
            skeleton=self.skeleton.name, source=self.source, index=index, image_id=name,
            meta={"joints_3d_image": img[None, :17].copy(), "thorax": img[17].copy(),
                  "thorax_relative": rel[17].copy(), "center": (box[:2] + box[2:] / 2)[None],
                  "size": float(box[2:].max()), "bone_len": float(self.bone_len[e]), "s": float(self.s[e]),
                  "root_relative": True, "entry": e})
