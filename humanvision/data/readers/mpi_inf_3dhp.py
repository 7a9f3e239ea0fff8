"""MPI-INF-3DHP (Mehta et al.) in its released layout: training ``annot.mat`` files and test ``annot_data.mat``.

**Training set** ``root/S{1..8}/Seq{1,2}/annot.mat`` (MATLAB v5, scipy.io.loadmat): cell arrays with one cell per
camera (14; ``cameras`` lists their ids 0..13)::

    annot2       {14 x 1} of (F, 56)   28 joints x (x, y) pixels per frame (row-major: x0, y0, x1, y1, ...)
    annot3       {14 x 1} of (F, 84)   28 joints x (x, y, z), camera frame, mm
    univ_annot3  {14 x 1} of (F, 84)   the same on the height-normalised "universal" skeleton
    frames (F, 1), cameras (1, 14)

The 28 joints are ``mpi_inf_3dhp28``. Video frames are read as extracted images,
``root/S{s}/Seq{q}/imageFrames/video_{camera}/frame_%06d.jpg`` of frame + 1 (the extraction script the HG-3D /
VIBE recipe uses; override with ``image_template``). HG-3D trains on S1-S8 x Seq1-2 x cameras
{0, 1, 2, 4, 5, 6, 7, 8} (the defaults) and drops frames with a 2D joint outside the 2048 x 2048 image.

**Test set** ``root/TS{1..6}/annot_data.mat`` (MATLAB v7.3 = HDF5, read with h5py; shapes as h5py gives them)::

    annot2       (F, 1, 17, 2)   pixels
    annot3       (F, 1, 17, 3)   camera frame, mm
    univ_annot3  (F, 1, 17, 3)   universal skeleton, mm (the official evaluation uses this)
    valid_frame  (F, 1)          1 for the frames of the official protocol

with images ``root/TS{n}/imageSequence/img_%06d.jpg`` of frame + 1 and the 17 joints of ``mpi_inf_3dhp17``.
Subsets: GS = TS1-2, noGS = TS3-4, Outdoor = TS5-6. HG-3D's loader ignores ``valid_frame``
(``only_valid=False``); the official protocol keeps valid frames only (the default).

Maps to ``mpii16``: ``get_joint_map("mpi_inf_3dhp28", "mpii16")`` (HG-3D's
``[25,24,23,18,19,20,4,3,5,7,16,15,14,9,10,11]``) and ``get_joint_map("mpi_inf_3dhp17", "mpii16")``
(``[10,9,8,11,12,13,14,15,1,0,4,3,2,5,6,7]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from humanvision.data.io import read_image
from humanvision.data.readers._checks import check_finite_keypoints
from humanvision.data.readers._matlab import load_mat
from humanvision.data.readers.base import Reader, resolve_skeleton
from humanvision.data.sample import LazyImage, Sample
from humanvision.errors import DataError
from humanvision.skeletons import Skeleton
from humanvision.skeletons.skeleton import get_joint_map

__all__ = ["MPI_INF_3DHP17_TO_MPII16", "MPI_INF_3DHP28_TO_MPII16", "MPI_INF_3DHP_TEST_SUBSETS", "MpiInf3dhpTest",
           "MpiInf3dhpTrain"]

MPI_INF_3DHP28_TO_MPII16 = get_joint_map("mpi_inf_3dhp28", "mpii16")
MPI_INF_3DHP17_TO_MPII16 = get_joint_map("mpi_inf_3dhp17", "mpii16")
#: Test sequence -> subset (pose3d.md 4.2).
MPI_INF_3DHP_TEST_SUBSETS = {1: "GS", 2: "GS", 3: "noGS", 4: "noGS", 5: "Outdoor", 6: "Outdoor"}


def _cell(value: np.ndarray, camera: int, *, file: str, field: str) -> np.ndarray:
    cells = np.asarray(value)
    if cells.dtype != object:
        raise DataError(f"expected a cell array (one cell per camera), got dtype {cells.dtype}", file=file,
                        field=field)
    cells = cells.ravel()
    if not 0 <= camera < len(cells):
        raise DataError(f"camera {camera} not in the file's {len(cells)} cameras", file=file, field=field)
    return np.asarray(cells[camera])


class MpiInf3dhpTrain(Reader):
    """MPI-INF-3DHP training frames, one sample per (subject, sequence, camera, frame).

    Args:
        root: the folder holding ``S1`` ... ``S8``. subjects, sequences, cameras: which to read.
        universal: ``keypoints_3d`` from ``univ_annot3`` instead of ``annot3``.
        drop_outside: drop frames with a 2D joint outside ``[0, image_size)`` (HG-3D's rule).
        every_n: keep every n-th frame of each video (SPIN/VIBE keep every 10th).

    Samples: ``keypoints_2d (1, 28, 2)`` pixels as stored, ``visibility`` ones, ``keypoints_3d (1, 28, 3)``
    camera-frame mm, ``identity`` = ``"S1"``, ``attributes`` subject/sequence/camera, ``image_id`` =
    ``"S1/Seq1/video_0/000001"``; ``meta``: ``frame`` (0-based), ``camera``, ``universal``.
    All selected frames are held in memory (about 0.5 kB per frame). A non-finite joint of a selected frame is a
    :class:`DataError` naming the file, camera and frame.
    """

    def __init__(self, root: str | Path, subjects: Sequence[int] = tuple(range(1, 9)),
                 sequences: Sequence[int] = (1, 2), cameras: Sequence[int] = (0, 1, 2, 4, 5, 6, 7, 8), universal: bool = False,
                 drop_outside: bool = True, image_size: int = 2048, every_n: int = 1,
                 image_template: str = "imageFrames/video_{camera}/frame_{frame:06d}.jpg",
                 skeleton: str | Skeleton = "mpi_inf_3dhp28") -> None:
        self.source = str(root)
        self.root = Path(root)
        self.skeleton = resolve_skeleton(skeleton, self.source)
        k = self.skeleton.num_joints
        self.universal, self.image_template = bool(universal), image_template
        key3 = "univ_annot3" if universal else "annot3"
        self.groups: list[tuple[int, int, int, str]] = []  # (subject, sequence, camera, file)
        kp2, kp3, grp, frm = [], [], [], []
        for s in subjects:
            for q in sequences:
                f = str(self.root / f"S{s}" / f"Seq{q}" / "annot.mat")
                mat = load_mat(f, ["annot2", key3])
                for c in cameras:
                    a2 = _cell(mat["annot2"], c, file=f, field="annot2")
                    a3 = _cell(mat[key3], c, file=f, field=key3)
                    if a2.ndim != 2 or a2.shape[1] != 2 * k:
                        raise DataError(f"camera {c}: shape {a2.shape}, expected (frames, {2 * k})", file=f,
                                        field="annot2")
                    if a3.shape != (len(a2), 3 * k):
                        raise DataError(f"camera {c}: shape {a3.shape}, expected ({len(a2)}, {3 * k})", file=f,
                                        field=key3)
                    t = np.arange(0, len(a2), max(1, int(every_n)))
                    p2 = a2[t].astype(np.float64).reshape(-1, k, 2)
                    p3 = a3[t].astype(np.float64).reshape(-1, k, 3)
                    check_finite_keypoints(p3, file=f, field=key3,
                                           record=lambda i, c=c, t=t: f"camera {c} frame {int(t[i])}")
                    check_finite_keypoints(p2, file=f, field="annot2",
                                           record=lambda i, c=c, t=t: f"camera {c} frame {int(t[i])}")
                    if drop_outside:
                        inside = ((p2 >= 0) & (p2 < image_size)).all(axis=(1, 2))
                        t, p2, p3 = t[inside], p2[inside], p3[inside]
                    self.groups.append((int(s), int(q), int(c), f))
                    kp2.append(p2.astype(np.float32))
                    kp3.append(p3.astype(np.float32))
                    grp.append(np.full(len(t), len(self.groups) - 1))
                    frm.append(t)
        empty = np.zeros(0, np.int64)
        self.kp2d = np.concatenate(kp2) if kp2 else np.zeros((0, k, 2), np.float32)
        self.kp3d = np.concatenate(kp3) if kp3 else np.zeros((0, k, 3), np.float32)
        self.group = np.concatenate(grp or [empty]).astype(np.int64)
        self.frame = np.concatenate(frm or [empty]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.frame)

    def _get(self, index: int) -> Sample:
        s, q, c, f = self.groups[int(self.group[index])]
        t = int(self.frame[index])
        rel = self.image_template.format(camera=c, frame=t + 1)
        path = str(self.root / f"S{s}" / f"Seq{q}" / rel)
        ones = np.ones((1, self.skeleton.num_joints), np.float32)
        return Sample(
            image=LazyImage(path, read_image), image_path=path, keypoints_2d=self.kp2d[index:index + 1],
            visibility=ones, keypoints_3d=self.kp3d[index:index + 1], visibility_3d=ones,
            keypoints_3d_frame="camera", identity=f"S{s}", skeleton=self.skeleton.name, source=f, index=index,
            image_id=f"S{s}/Seq{q}/video_{c}/{t + 1:06d}",
            attributes={"subject": f"S{s}", "sequence": f"Seq{q}", "camera": c},
            meta={"frame": t, "camera": c, "universal": self.universal})


def _h5_array(h, name: str, k: int, d: int, *, file: str) -> np.ndarray:
    if name not in h:
        raise DataError(f"missing dataset (the file has {sorted(h.keys())})", file=file, field=name)
    a = np.asarray(h[name][()], dtype=np.float64)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3 or a.shape[1:] != (k, d):
        raise DataError(f"shape {h[name].shape}, expected (frames, 1, {k}, {d})", file=file, field=name)
    return a


class MpiInf3dhpTest(Reader):
    """MPI-INF-3DHP test frames (TS1-TS6), one sample per frame.

    Args:
        root: the ``mpi_inf_3dhp_test_set`` folder holding ``TS1`` ... ``TS6``. sequences: which (1-6).
        only_valid: keep ``valid_frame == 1`` only (the official protocol; HG-3D keeps all).
        universal: ``keypoints_3d`` from ``univ_annot3`` (the official evaluation's skeleton; default) or
            ``annot3``.

    Samples: ``keypoints_2d (1, 17, 2)``, ``visibility`` ones, ``keypoints_3d (1, 17, 3)`` camera-frame mm,
    ``attributes`` sequence (``"TS1"``) and subset (GS / noGS / Outdoor), ``image_id`` = ``"TS1/000001"``;
    ``meta``: ``frame`` (0-based), ``valid`` (the file's ``valid_frame``), ``universal``.
    A non-finite joint of a kept frame (e.g. NaN depth) is a :class:`DataError` naming the file and frame.
    """

    def __init__(self, root: str | Path, sequences: Sequence[int] = (1, 2, 3, 4, 5, 6), only_valid: bool = True,
                 universal: bool = True, skeleton: str | Skeleton = "mpi_inf_3dhp17") -> None:
        try:
            import h5py
        except ImportError:
            raise ImportError("reading MPI-INF-3DHP test files needs h5py: pip install 'humanvision[3d]'") from None
        self.source = str(root)
        self.root = Path(root)
        self.skeleton = resolve_skeleton(skeleton, self.source)
        k = self.skeleton.num_joints
        self.universal = bool(universal)
        key3 = "univ_annot3" if universal else "annot3"
        kp2, kp3, seq, frm, val = [], [], [], [], []
        self.files: dict[int, str] = {}
        for n in sequences:
            f = str(self.root / f"TS{n}" / "annot_data.mat")
            if not Path(f).is_file():
                raise DataError("file not found", file=f)
            try:
                with h5py.File(f, "r") as h:
                    a2 = _h5_array(h, "annot2", k, 2, file=f)
                    a3 = _h5_array(h, key3, k, 3, file=f)
                    if "valid_frame" not in h:
                        raise DataError("missing dataset", file=f, field="valid_frame")
                    valid = np.asarray(h["valid_frame"][()]).reshape(-1)
            except OSError as e:
                raise DataError(f"not a readable HDF5 (MATLAB v7.3) file ({e})", file=f) from None
            if len(a3) != len(a2) or len(valid) != len(a2):
                raise DataError(f"annot2 has {len(a2)} frames, {key3} {len(a3)}, valid_frame {len(valid)}",
                                file=f, field="valid_frame" if len(valid) != len(a2) else key3)
            t = np.flatnonzero(valid > 0) if only_valid else np.arange(len(a2))
            check_finite_keypoints(a3[t], file=f, field=key3, record=lambda i, t=t: f"frame {int(t[i])}")
            check_finite_keypoints(a2[t], file=f, field="annot2", record=lambda i, t=t: f"frame {int(t[i])}")
            self.files[int(n)] = f
            kp2.append(a2[t].astype(np.float32))
            kp3.append(a3[t].astype(np.float32))
            seq.append(np.full(len(t), int(n)))
            frm.append(t)
            val.append(valid[t] > 0)
        empty = np.zeros(0, np.int64)
        self.kp2d = np.concatenate(kp2) if kp2 else np.zeros((0, k, 2), np.float32)
        self.kp3d = np.concatenate(kp3) if kp3 else np.zeros((0, k, 3), np.float32)
        self.seq = np.concatenate(seq or [empty]).astype(np.int64)
        self.frame = np.concatenate(frm or [empty]).astype(np.int64)
        self.valid = np.concatenate(val or [np.zeros(0, bool)])

    def __len__(self) -> int:
        return len(self.frame)

    def _get(self, index: int) -> Sample:
        n, t = int(self.seq[index]), int(self.frame[index])
        path = str(self.root / f"TS{n}" / "imageSequence" / f"img_{t + 1:06d}.jpg")
        ones = np.ones((1, self.skeleton.num_joints), np.float32)
        return Sample(
            image=LazyImage(path, read_image), image_path=path, keypoints_2d=self.kp2d[index:index + 1],
            visibility=ones, keypoints_3d=self.kp3d[index:index + 1], visibility_3d=ones,
            keypoints_3d_frame="camera", skeleton=self.skeleton.name, source=self.files[n], index=index,
            image_id=f"TS{n}/{t + 1:06d}",
            attributes={"sequence": f"TS{n}", "subset": MPI_INF_3DHP_TEST_SUBSETS.get(n, "")},
            meta={"frame": t, "valid": bool(self.valid[index]), "universal": self.universal})
