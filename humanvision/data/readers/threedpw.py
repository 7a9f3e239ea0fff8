"""3DPW (von Marcard et al.): ``sequenceFiles/{train,validation,test}/*.pkl`` + ``imageFiles/<sequence>/``.

Layout: one **Python 2** pickle per sequence (read with :func:`humanvision.data.io.safe_unpickle`,
``encoding="latin1"``, no code executed) holding a dict (the dataset's README)::

    sequence          str
    jointPositions    list per actor of (N, 72): 24 SMPL joints x (x, y, z), world frame, metres
    poses2d           list per actor of (N, 3, 18): OpenPose COCO-18 detections, rows x, y, confidence
                      (the README calls it ``poses2D``)
    cam_poses         (N, 4, 4) world -> camera extrinsics (metres), one per image
    cam_intrinsics    (3, 3) K
    campose_valid     list per actor of (N,): the camera pose is aligned with the image
    genders           list per actor of 'm' / 'f' (README: ``gender``)
    img_frame_ids, poses, trans, betas, ... (not used here)

Frame ``t`` of the per-image arrays is ``imageFiles/<sequence>/image_%05d.jpg`` of ``t``. Samples use the
``smpl24`` joints; ``get_joint_map("smpl24", "mpii16")`` maps them to MPII (humanvision's map, **not** HG-3D's
route through the SMPL mesh and the H36M J-regressor, which needs the SMPL model). The 2D detections
(``coco18``) map with ``get_joint_map("coco18", "mpii16")`` as HG-3D does (upper neck = head top = nose).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from humanvision.data.io import read_image, safe_unpickle
from humanvision.data.readers._checks import check_finite_keypoints
from humanvision.data.readers.base import Reader, as_array, resolve_skeleton
from humanvision.data.sample import LazyImage, Sample
from humanvision.errors import DataError
from humanvision.skeletons import Skeleton
from humanvision.skeletons.skeleton import get_joint_map

__all__ = ["COCO18_TO_MPII16", "SMPL24_TO_MPII16", "ThreeDPW"]

#: HG-3D's map of 3DPW's 2D detections ``coco18 -> mpii16`` (upper neck and head top <- nose, approximate).
COCO18_TO_MPII16 = get_joint_map("coco18", "mpii16")
#: humanvision's map of the SMPL joints ``smpl24 -> mpii16`` (head top <- SMPL head centre, approximate).
SMPL24_TO_MPII16 = get_joint_map("smpl24", "mpii16")


def _per_actor(d: dict, keys: Sequence[str], *, file: str) -> tuple[str, list]:
    for key in keys:
        if key in d:
            v = d[key]
            if not isinstance(v, (list, tuple)):
                raise DataError(f"expected a list with one entry per actor, got {type(v).__name__}", file=file,
                                field=key)
            return key, list(v)
    raise DataError("missing field", file=file, field=keys[0])


class ThreeDPW(Reader):
    """3DPW people, one sample per (sequence, actor, image).

    Args:
        sequences: a ``sequenceFiles/<split>`` folder, one ``.pkl`` file, or a list of them.
        image_root: the ``imageFiles`` folder (default: ``imageFiles`` next to ``sequenceFiles``).
        only_valid_camera: drop images whose ``campose_valid`` is false.
        min_joints, conf_threshold: drop images with fewer than ``min_joints`` detections above
            ``conf_threshold`` (HG-3D/VIBE drop those with <= 6 above 0.3, the default); 0 keeps all.
        every_n: keep every n-th image of each actor.

    Samples: ``keypoints_3d (1, 24, 3)`` camera-frame mm (``R X + t`` of ``cam_poses``, x1000),
    ``keypoints_2d (1, 24, 2)`` their projection with ``K``, ``visibility`` 1 in front of the camera,
    ``camera`` (intrinsics ``K``, identity extrinsics: the 3D joints are already in its frame), ``identity`` =
    ``"<sequence>/<actor>"``, ``image_id`` = ``"<sequence>/image_%05d"``; ``meta``: ``poses2d (1, 18, 3)`` (the
    OpenPose COCO-18 detections, x, y, confidence; skeleton ``meta["poses2d_skeleton"] = "coco18"``),
    ``cam_pose (4, 4)`` as stored (metres), ``sequence``, ``actor``, ``frame``, ``gender``.
    A non-finite 3D joint (e.g. NaN depth) is a :class:`DataError` naming the file, actor and frame.
    """

    def __init__(self, sequences: str | Path | Sequence[str | Path], image_root: str | Path | None = None,
                 only_valid_camera: bool = True, min_joints: int = 7, conf_threshold: float = 0.3,
                 every_n: int = 1, skeleton: str | Skeleton = "smpl24") -> None:
        if isinstance(sequences, (str, Path)):
            p = Path(sequences)
            files = sorted(p.glob("*.pkl")) if p.is_dir() else [p]
            if p.is_dir() and not files:
                raise DataError("no *.pkl sequence files", file=str(p))
            self.source = str(p)
        else:
            files = [Path(x) for x in sequences]
            self.source = str(files[0].parent) if files else ""
        self.skeleton = resolve_skeleton(skeleton, self.source)
        k = self.skeleton.num_joints
        if image_root is None:
            first = files[0] if files else Path(".")
            image_root = first.parent.parent.parent / "imageFiles"
        self.image_root = Path(image_root)
        self.files: list[str] = []
        self.seq_names: list[str] = []
        self.K: list[np.ndarray] = []
        self.cam_poses: list[np.ndarray] = []
        self.joints: list[list[np.ndarray]] = []  # [sequence][actor] (N, 24, 3) world metres
        self.poses2d: list[list[np.ndarray]] = []  # [sequence][actor] (N, 18, 3)
        self.genders: list[list[str]] = []
        self.cameras: list[Any] = []
        index = []
        for si, path in enumerate(files):
            f = str(path)
            d = safe_unpickle(f, encoding="latin1")
            if not isinstance(d, dict):
                raise DataError(f"expected a dict, got {type(d).__name__}", file=f)
            name = str(d.get("sequence", path.stem))
            kp_key, jp = _per_actor(d, ("jointPositions",), file=f)
            p2_key, p2 = _per_actor(d, ("poses2d", "poses2D"), file=f)
            cv_key, cv = _per_actor(d, ("campose_valid",), file=f)
            genders = d.get("genders", d.get("gender", [""] * len(jp)))
            for key, v in ((p2_key, p2), (cv_key, cv)):
                if len(v) != len(jp):
                    raise DataError(f"{len(v)} actors, but jointPositions has {len(jp)}", file=f, field=key)
            if "cam_poses" not in d:
                raise DataError("missing field", file=f, field="cam_poses")
            cam_poses = as_array(d["cam_poses"], (None, 4, 4), file=f, where=None, field="cam_poses",
                                 dtype=np.float64)
            n = len(cam_poses)
            if "cam_intrinsics" not in d:
                raise DataError("missing field", file=f, field="cam_intrinsics")
            K = as_array(d["cam_intrinsics"], (3, 3), file=f, where=None, field="cam_intrinsics", dtype=np.float64)
            from humanvision.geometry import Camera

            try:
                cam = Camera(K=K, name=name)
            except DataError as e:
                raise DataError(str(e), file=f, field="cam_intrinsics") from None
            seq_joints, seq_2d = [], []
            for a in range(len(jp)):
                where = f"actor {a}"
                j = as_array(jp[a], (n, k * 3), file=f, where=where, field=kp_key, dtype=np.float64,
                             finite=False).reshape(n, k, 3)
                check_finite_keypoints(j, file=f, field=kp_key, record=lambda t, a=a: f"actor {a} frame {t}")
                q = as_array(p2[a], (n, 3, 18), file=f, where=where, field=p2_key, finite=False)
                q = np.nan_to_num(q.transpose(0, 2, 1), nan=0.0)  # (N, 18, 3); undetected -> 0 confidence
                valid = np.asarray(cv[a]).reshape(-1)
                if valid.shape != (n,):
                    raise DataError(f"shape {np.shape(cv[a])}, expected ({n},)", file=f, record=where, field=cv_key)
                keep = np.ones(n, bool)
                if only_valid_camera:
                    keep &= valid.astype(bool)
                if min_joints > 0:
                    keep &= (q[:, :, 2] > conf_threshold).sum(1) >= min_joints
                frames = np.flatnonzero(keep)[::max(1, int(every_n))]
                index += [(si, a, int(t)) for t in frames]
                seq_joints.append(j.astype(np.float32))
                seq_2d.append(q.astype(np.float32))
            self.files.append(f)
            self.seq_names.append(name)
            self.K.append(K)
            self.cam_poses.append(cam_poses)
            self.cameras.append(cam)
            self.joints.append(seq_joints)
            self.poses2d.append(seq_2d)
            self.genders.append([str(g) for g in genders])
        self.index = np.asarray(index, np.int64).reshape(-1, 3)

    def __len__(self) -> int:
        return len(self.index)

    def _get(self, index: int) -> Sample:
        si, a, t = (int(v) for v in self.index[index])
        name = self.seq_names[si]
        pose = self.cam_poses[si][t]
        world = self.joints[si][a][t].astype(np.float64)
        cam = (world @ pose[:3, :3].T + pose[:3, 3]) * 1000.0
        z = cam[:, 2]
        front = z > 1e-6
        uvw = cam @ self.K[si].T
        uv = np.where(front[:, None], uvw[:, :2] / np.where(front, z, 1.0)[:, None], 0.0)
        path = str(self.image_root / name / f"image_{t:05d}.jpg")
        genders = self.genders[si]
        return Sample(
            image=LazyImage(path, read_image), image_path=path, keypoints_2d=uv[None].astype(np.float32),
            visibility=front[None].astype(np.float32), keypoints_3d=cam[None].astype(np.float32),
            visibility_3d=np.ones((1, len(cam)), np.float32), keypoints_3d_frame="camera",
            camera=self.cameras[si], identity=f"{name}/{a}", skeleton=self.skeleton.name,
            source=self.files[si], index=index, image_id=f"{name}/image_{t:05d}",
            attributes={"sequence": name, "actor": a},
            meta={"poses2d": self.poses2d[si][a][t][None], "poses2d_skeleton": "coco18", "cam_pose": pose.copy(),
                  "sequence": name, "actor": a, "frame": t, "gender": genders[a] if a < len(genders) else ""})
