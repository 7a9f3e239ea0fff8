"""2D keypoint accuracy: PCK with a chosen normaliser, the exact MPII PCKh protocol, EPE and AUC.

Conventions (all functions):

* ``pred`` and ``gt`` are arrays ``(N, K, D)`` in the same coordinate frame and the same 0/1-based convention.
* ``mask`` ``(N, K)`` marks the (sample, joint) pairs that count; masked-out entries may hold anything, NaN
  included. NaN/inf in a counted entry is an error that names the argument, sample and joint.
* Percentages are in ``[0, 100]``; every result carries the number of (sample, joint) pairs it was computed on.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from humanvision.errors import DataError

__all__ = [
    "MPII_EXCLUDED_FROM_MEAN",
    "MPII_JOINT_GROUPS",
    "MPII_JOINT_NAMES",
    "MPII_SC_BIAS",
    "EPEResult",
    "MPIIGroundTruth",
    "MPIIPCKhResult",
    "PCKAUCResult",
    "PCKResult",
    "bbox_size_norm",
    "head_size_norm",
    "keypoint_auc",
    "keypoint_epe",
    "keypoint_pck",
    "mpii_pckh",
    "read_mpii_gt",
    "torso_size_norm",
]

# MPII-16 order of mpii_gt_val.mat and the mmpose json (pose2d.md section 4.2).
MPII_JOINT_NAMES = ("r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax", "upper_neck",
                    "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist")
MPII_JOINT_GROUPS: dict[str, tuple[int, ...]] = {
    "Head": (9,), "Shoulder": (12, 13), "Elbow": (11, 14), "Wrist": (10, 15), "Hip": (2, 3), "Knee": (1, 4),
    "Ankle": (0, 5),
}
MPII_EXCLUDED_FROM_MEAN = (6, 7)  # pelvis and thorax
MPII_SC_BIAS = 0.6
MPII_THRESHOLDS = np.arange(51) / 100.0  # 0, 0.01, ..., 0.5 (exact decimals, unlike np.arange(0, 0.51, 0.01))


# ---------------------------------------------------------------------------------------------- shared helpers
def _as_array(x: Any, name: str, *, ndim: int | Sequence[int] | None = None, last: int | Sequence[int] | None = None,
              dtype=np.float64) -> np.ndarray:
    """``x`` (array-like or torch tensor) as an array of ``dtype`` with a checked rank and last dimension;
    errors name the argument."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise DataError(f"cannot convert to a {np.dtype(dtype).name} array ({e})", field=name) from None
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if ndims is not None and arr.ndim not in ndims:
        raise DataError(f"expected {' or '.join(map(str, ndims))} dimensions, got shape {arr.shape}", field=name)
    lasts = (last,) if isinstance(last, int) else last
    if lasts is not None and (arr.ndim == 0 or arr.shape[-1] not in lasts):
        raise DataError(f"expected the last dimension in {list(lasts)}, got shape {arr.shape}", field=name)
    return arr


def _same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise DataError(f"shape {a.shape} does not match {name_b} shape {b.shape}", field=name_a)


def _as_mask(mask: Any, shape: tuple[int, ...], name: str = "mask") -> np.ndarray:
    """A boolean mask of ``shape`` (all True when ``mask`` is None)."""
    if mask is None:
        return np.ones(shape, dtype=bool)
    m = np.asarray(mask)
    if m.shape != shape:
        raise DataError(f"expected shape {shape}, got {m.shape}", field=name)
    if m.dtype != bool:
        if not np.all(np.isfinite(m.astype(np.float64))):
            raise DataError("contains NaN or inf", field=name)
        m = m > 0
    return m


def _check_finite(arr: np.ndarray, name: str, mask: np.ndarray | None = None) -> None:
    """Raise a DataError naming ``name`` and the first (sample, joint) with a NaN/inf where ``mask`` is True."""
    bad = ~np.isfinite(arr)
    while bad.ndim > (mask.ndim if mask is not None else 1):
        bad = bad.any(axis=-1)
    if mask is not None:
        bad &= mask
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        what = ", ".join(f"{k} {v}" for k, v in zip(("sample", "joint"), where))
        raise DataError(f"contains NaN or inf ({int(bad.sum())} entries; first at {what})", field=name)


def _pose_pair(pred: Any, gt: Any, mask: Any, dims: Sequence[int] = (2, 3),
               mask_name: str = "mask") -> tuple[np.ndarray, ...]:
    """Validated ``(pred, gt, mask)`` for ``(N, K, D)`` keypoint arrays (a single ``(K, D)`` pose is promoted).

    Entries outside the mask are set to 0 so that NaN placeholders never reach the arithmetic.
    """
    p = _as_array(pred, "pred", ndim=(2, 3), last=dims)
    g = _as_array(gt, "gt", ndim=(2, 3), last=dims)
    if p.ndim == 2:
        p = p[None]
    if g.ndim == 2:
        g = g[None]
    _same_shape(p, g, "pred", "gt")
    m = _as_mask(mask, p.shape[:2], mask_name)
    _check_finite(p, "pred", m)
    _check_finite(g, "gt", m)
    return np.where(m[..., None], p, 0.0), np.where(m[..., None], g, 0.0), m


def _jsonable(x: Any) -> Any:
    """Plain JSON types: arrays to lists, NaN/inf to None, dataclasses and dicts recursively."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _jsonable(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer, int)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    return x


class _Result:
    """Mixin: ``to_dict()`` gives a JSON-serialisable dict (arrays as lists, NaN as None)."""

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


def _percent(correct: np.ndarray, count: np.ndarray) -> np.ndarray:
    """``100 * correct / count`` with NaN where ``count == 0``."""
    correct, count = np.asarray(correct, np.float64), np.asarray(count, np.float64)
    out = np.full(np.broadcast(correct, count).shape, np.nan)
    np.divide(100.0 * correct, count, out=out, where=count > 0)
    return out


# ---------------------------------------------------------------------------------------------- normalisers
def _norm_array(norm: Any, n: int, d: int) -> np.ndarray:
    """A normaliser as ``(N, 1)`` or ``(N, D)``: a scalar, ``(N,)``, ``(N, 1)`` or ``(N, D)`` per-axis sizes."""
    a = _as_array(norm, "norm", ndim=(0, 1, 2))
    if a.ndim == 0:
        a = np.full((n, 1), float(a))
    elif a.ndim == 1:
        if a.shape[0] != n:
            raise DataError(f"expected {n} values (one per sample), got {a.shape[0]}", field="norm")
        a = a[:, None]
    elif a.shape[0] != n or a.shape[1] not in (1, d):
        raise DataError(f"expected shape ({n},), ({n}, 1) or ({n}, {d}), got {a.shape}", field="norm")
    if np.isnan(a).any():
        raise DataError("contains NaN", field="norm")
    return a


def bbox_size_norm(bboxes: Any = None, gt: Any = None, mask: Any = None) -> np.ndarray:
    """Per-sample PCK normaliser ``max(w, h)`` of the person box, ``(N,)``.

    Args:
        bboxes: ``(N, 4)`` boxes ``[x, y, w, h]``; when None the box is the extent of the valid ``gt`` joints.
        gt: ``(N, K, 2)`` ground-truth keypoints (used only without ``bboxes``).
        mask: ``(N, K)`` valid joints for the extent (default: all).

    Samples without a usable box get 0, which :func:`keypoint_pck` treats as "exclude this sample".
    (Human3.6M 2D in mmpose 0.x: PCK@0.2 of ``max(w, h)``.)
    """
    if bboxes is not None:
        b = _as_array(bboxes, "bboxes", ndim=2, last=4)
        _check_finite(b, "bboxes")
        return np.maximum(np.maximum(b[:, 2], b[:, 3]), 0.0)
    if gt is None:
        raise DataError("either bboxes or gt keypoints are required", field="bboxes")
    g = _as_array(gt, "gt", ndim=3, last=(2, 3))[..., :2]
    m = _as_mask(mask, g.shape[:2])
    _check_finite(g, "gt", m)
    lo = np.where(m[..., None], g, np.inf).min(axis=1)
    hi = np.where(m[..., None], g, -np.inf).max(axis=1)
    size = np.max(hi - lo, axis=1)
    return np.where(m.sum(axis=1) >= 2, size, 0.0)


def torso_size_norm(gt: Any, skeleton: Any = "coco17", mask: Any = None,
                    joints: tuple[str, str] = ("left_shoulder", "right_hip")) -> np.ndarray:
    """Per-sample torso diameter ``||gt[a] - gt[b]||`` for the joint names ``joints`` (default left shoulder to
    right hip, the usual "PCK@torso" definition), ``(N,)``; 0 where either joint is invalid (sample excluded)."""
    from humanvision.skeletons import get_skeleton

    sk = get_skeleton(skeleton)
    a, b = sk.index(joints[0]), sk.index(joints[1])
    g = _as_array(gt, "gt", ndim=3, last=(2, 3))
    if g.shape[1] != sk.num_joints:
        raise DataError(f"{g.shape[1]} joints but skeleton {sk.name!r} has {sk.num_joints}", field="gt")
    m = _as_mask(mask, g.shape[:2])
    ok = m[:, a] & m[:, b]
    _check_finite(g[:, [a, b]], "gt", m[:, [a, b]])
    size = np.linalg.norm(np.where(ok[:, None], g[:, a] - g[:, b], 0.0), axis=-1)
    return np.where(ok, size, 0.0)


def head_size_norm(headboxes: Any, sc_bias: float = MPII_SC_BIAS) -> np.ndarray:
    """MPII head size ``sc_bias * ||br - tl||`` of the head box diagonal, ``(N,)``.

    ``headboxes`` is ``(N, 2, 2)`` (``[[x1, y1], [x2, y2]]`` per person, the transposed ``headboxes_src`` of
    ``mpii_gt_val.mat``) or ``(N, 4)`` ``[x1, y1, x2, y2]``.
    """
    h = _as_array(headboxes, "headboxes", ndim=(2, 3))
    if h.ndim == 2:
        if h.shape[1] != 4:
            raise DataError(f"expected (N, 4) or (N, 2, 2), got {h.shape}", field="headboxes")
        h = h.reshape(-1, 2, 2)
    elif h.shape[1:] != (2, 2):
        raise DataError(f"expected (N, 4) or (N, 2, 2), got {h.shape}", field="headboxes")
    _check_finite(h.reshape(len(h), -1), "headboxes")
    return sc_bias * np.linalg.norm(h[:, 1] - h[:, 0], axis=-1)


# ---------------------------------------------------------------------------------------------- PCK family
@dataclass
class PCKResult(_Result):
    """PCK at one threshold.

    ``pck`` pools all counted (sample, joint) pairs; ``pck_joint_mean`` is the mean of the per-joint values over
    joints with at least one counted pair (mmpose's ``avg_acc``). ``count`` is the number of counted pairs.
    """

    pck: float
    pck_joint_mean: float
    per_joint: np.ndarray
    joint_count: np.ndarray
    count: int
    num_samples: int
    threshold: float


def _normalised_distances(pred: np.ndarray, gt: np.ndarray, norm: np.ndarray, mask: np.ndarray):
    """Distances divided by the normaliser, and the mask with zero/negative-normaliser samples removed."""
    valid_norm = np.all(norm > 0, axis=1)
    safe = np.where(norm > 0, norm, 1.0)
    d = np.linalg.norm((pred - gt) / safe[:, None, :], axis=-1)
    m = mask & valid_norm[:, None]
    return np.where(m, d, np.inf), m


def keypoint_pck(pred: Any, gt: Any, norm: Any, mask: Any = None, thr: float = 0.2, *,
                 inclusive: bool = False) -> PCKResult:
    """Percentage of Correct Keypoints: a joint is correct if ``||(pred - gt) / norm|| < thr``.

    Args:
        pred, gt: ``(N, K, D)`` keypoints.
        norm: the normaliser: a scalar (pixels), ``(N,)`` per-sample sizes (:func:`bbox_size_norm`,
            :func:`torso_size_norm`, :func:`head_size_norm`) or ``(N, D)`` per-axis sizes (mmpose's ``norm_factor``).
            Samples with a normaliser ``<= 0`` are excluded (mmpose convention).
        mask: ``(N, K)`` joints to count (visible / labelled); default all.
        thr: the threshold, in units of the normaliser.
        inclusive: use ``<=`` (MPII's MATLAB convention) instead of ``<`` (mmpose).
    """
    p, g, m = _pose_pair(pred, gt, mask)
    nrm = _norm_array(norm, p.shape[0], p.shape[2])
    d, m = _normalised_distances(p, g, nrm, m)
    ok = (d <= thr) if inclusive else (d < thr)
    correct, count = (ok & m).sum(axis=0), m.sum(axis=0)
    per_joint = _percent(correct, count)
    return PCKResult(
        pck=float(_percent(correct.sum(), count.sum())),
        pck_joint_mean=float(np.nanmean(per_joint)) if (count > 0).any() else float("nan"),
        per_joint=per_joint, joint_count=count, count=int(count.sum()), num_samples=int(p.shape[0]),
        threshold=float(thr),
    )


@dataclass
class PCKAUCResult(_Result):
    """PCK curve over ``thresholds`` and its normalised area (mean of the curve, in percent)."""

    auc: float
    auc_joint_mean: float
    thresholds: np.ndarray
    curve: np.ndarray
    curve_joint_mean: np.ndarray
    count: int
    num_samples: int


def keypoint_auc(pred: Any, gt: Any, norm: Any, mask: Any = None, *, num_thrs: int = 20, max_thr: float = 1.0,
                 inclusive: bool = False) -> PCKAUCResult:
    """Area under the PCK curve: the mean PCK over ``num_thrs`` thresholds ``max_thr * i / num_thrs``,
    ``i = 0 .. num_thrs-1`` (mmpose ``keypoint_auc``; e.g. hands use ``norm=30`` px, ``num_thrs=20``).

    ``auc`` averages the pooled PCK, ``auc_joint_mean`` the mean of per-joint PCKs (mmpose's number).
    """
    if num_thrs < 1:
        raise DataError(f"must be >= 1, got {num_thrs}", field="num_thrs")
    p, g, m = _pose_pair(pred, gt, mask)
    nrm = _norm_array(norm, p.shape[0], p.shape[2])
    d, m = _normalised_distances(p, g, nrm, m)
    thrs = max_thr * np.arange(num_thrs) / num_thrs
    ok = (d[None] <= thrs[:, None, None]) if inclusive else (d[None] < thrs[:, None, None])
    correct, count = (ok & m[None]).sum(axis=1), m.sum(axis=0)  # (T, K), (K,)
    curve = _percent(correct.sum(axis=1), count.sum())
    per_joint = _percent(correct, count[None])
    joint_mean = np.nanmean(per_joint, axis=1) if (count > 0).any() else np.full(num_thrs, np.nan)
    return PCKAUCResult(auc=float(np.mean(curve)), auc_joint_mean=float(np.mean(joint_mean)), thresholds=thrs,
                        curve=curve, curve_joint_mean=joint_mean, count=int(count.sum()),
                        num_samples=int(p.shape[0]))


@dataclass
class EPEResult(_Result):
    """End-point error: mean Euclidean distance (input units, e.g. pixels) over counted joints."""

    epe: float
    per_joint: np.ndarray
    joint_count: np.ndarray
    count: int
    num_samples: int


def keypoint_epe(pred: Any, gt: Any, mask: Any = None) -> EPEResult:
    """End-point error ``mean ||pred - gt||`` over the (sample, joint) pairs in ``mask`` (mmpose ``keypoint_epe``)."""
    p, g, m = _pose_pair(pred, gt, mask)
    d = np.linalg.norm(p - g, axis=-1)
    count = m.sum(axis=0)
    per_joint = np.full(count.shape, np.nan)
    np.divide(d.sum(axis=0), count, out=per_joint, where=count > 0)
    total = int(count.sum())
    return EPEResult(epe=float(d.sum() / total) if total else float("nan"), per_joint=per_joint,
                     joint_count=count, count=total, num_samples=int(p.shape[0]))


# ---------------------------------------------------------------------------------------------- MPII PCKh
@dataclass
class MPIIPCKhResult(_Result):
    """MPII PCKh at ``threshold`` (percent), the official table and the 0..0.5 curve.

    ``groups`` holds Head, Shoulder, Elbow, Wrist, Hip, Knee, Ankle (mean of the left/right per-joint PCKh) and
    Mean (count-weighted over all joints except pelvis and thorax). ``mean_at_0_1`` is the true PCKh@0.1 Mean;
    ``legacy_mean_at_0_1`` is what HRNet / mmpose 0.x print as "Mean@0.1" (row 11 of ``arange(0, 0.51, 0.01)``,
    i.e. threshold 0.11). ``auc`` is the mean of the Mean curve over thresholds 0, 0.01, ..., 0.5.
    ``count`` is the number of (person, joint) pairs entering Mean; ``num_samples`` the number of persons.
    """

    threshold: float
    mean: float
    groups: dict[str, float]
    per_joint: dict[str, float]
    joint_count: dict[str, int]
    mean_at_0_1: float
    legacy_mean_at_0_1: float
    auc: float
    thresholds: np.ndarray
    curve: np.ndarray
    count: int
    num_samples: int


def mpii_pckh(pred: Any, gt: Any, headboxes: Any, visible: Any = None, thr: float = 0.5, *,
              sc_bias: float = MPII_SC_BIAS, inclusive: bool = True) -> MPIIPCKhResult:
    """MPII PCKh with the official protocol (``evalMPII`` / mmpose 0.x ``MPIIDataset.evaluate``).

    A joint is correct if ``||pred - gt|| / head_size <= thr`` with ``head_size = sc_bias * ||br - tl||`` of the
    person's head box (SC_BIAS 0.6); only joints with ``visible`` (``1 - jnt_missing``) count.

    Args:
        pred, gt: ``(N, 16, 2)`` in MPII-16 order (:data:`MPII_JOINT_NAMES`) and the *same* 0/1-based convention
            (the ``.mat`` ground truth is 1-based: add 1 to 0-based predictions first).
        headboxes: ``(N, 2, 2)`` ``[[x1, y1], [x2, y2]]`` or ``(N, 4)``.
        visible: ``(N, 16)``, default all.
        thr: the reported threshold (0.5 for PCKh@0.5).
        inclusive: ``<=`` as in the official code; mmpose 1.x uses ``<`` (pass False).
    """
    p, g, m = _pose_pair(pred, gt, visible, dims=(2,), mask_name="visible")
    if p.shape[1] != 16:
        raise DataError(f"MPII PCKh needs 16 joints in MPII order, got {p.shape[1]}", field="pred")
    head = head_size_norm(headboxes, sc_bias)
    if head.shape[0] != p.shape[0]:
        raise DataError(f"{head.shape[0]} head boxes for {p.shape[0]} persons", field="headboxes")
    bad = (head <= 0) & m.any(axis=1)
    if bad.any():
        raise DataError(f"degenerate (zero-size) head box for a person with visible joints "
                        f"(first at person {int(np.argmax(bad))})", field="headboxes")
    err = np.linalg.norm(p - g, axis=-1) / np.where(head > 0, head, 1.0)[:, None]
    err = np.where(m, err, np.inf)
    count = m.sum(axis=0)  # (16,)
    include = np.ones(16, dtype=bool)
    include[list(MPII_EXCLUDED_FROM_MEAN)] = False

    thrs = np.unique(np.concatenate([MPII_THRESHOLDS, [0.11, float(thr)]]))
    cmp = (err[None] <= thrs[:, None, None]) if inclusive else (err[None] < thrs[:, None, None])
    correct = cmp.sum(axis=1)  # (T, 16)
    per_joint_t = _percent(correct, count[None])
    mean_t = _percent(correct[:, include].sum(axis=1), count[include].sum())

    def at(t: float) -> int:
        return int(np.argmin(np.abs(thrs - t)))

    pj = per_joint_t[at(thr)]
    groups = {name: float(np.mean(pj[list(idx)])) for name, idx in MPII_JOINT_GROUPS.items()}
    groups["Mean"] = float(mean_t[at(thr)])
    curve_idx = [at(t) for t in MPII_THRESHOLDS]
    return MPIIPCKhResult(
        threshold=float(thr), mean=groups["Mean"], groups=groups,
        per_joint={n: float(v) for n, v in zip(MPII_JOINT_NAMES, pj)},
        joint_count={n: int(c) for n, c in zip(MPII_JOINT_NAMES, count)},
        mean_at_0_1=float(mean_t[at(0.1)]), legacy_mean_at_0_1=float(mean_t[at(0.11)]),
        auc=float(np.mean(mean_t[curve_idx])), thresholds=MPII_THRESHOLDS.copy(), curve=mean_t[curve_idx],
        count=int(count[include].sum()), num_samples=int(p.shape[0]),
    )


# ---------------------------------------------------------------------------------------------- MPII files
@dataclass
class MPIIGroundTruth:
    """MPII evaluation ground truth: ``joints (N, 16, 2)`` (1-based pixels, as in ``mpii_gt_val.mat``),
    ``visible (N, 16)`` bool, ``headboxes (N, 2, 2)`` ``[[x1, y1], [x2, y2]]``, ``images`` (names or None)."""

    joints: np.ndarray
    visible: np.ndarray
    headboxes: np.ndarray
    images: list[str] | None = field(default=None)

    def __len__(self) -> int:
        return len(self.joints)


def _read_mat_gt(path: Path) -> dict[str, np.ndarray]:
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        mat = loadmat(str(path))
    except (MatReadError, ValueError, TypeError, OSError) as e:
        raise DataError(f"cannot read as a MATLAB .mat file ({e})", file=str(path)) from None
    return mat


def _headboxes_from_mat(mat: dict, path: Path) -> np.ndarray:
    if "headboxes_src" not in mat:
        raise DataError("missing variable 'headboxes_src' (2, 2, N)", file=str(path), field="headboxes_src")
    h = np.asarray(mat["headboxes_src"], dtype=np.float64)
    if h.ndim != 3 or h.shape[:2] != (2, 2):
        raise DataError(f"expected shape (2, 2, N), got {h.shape}", file=str(path), field="headboxes_src")
    return h.transpose(2, 0, 1)  # (N, corner, xy)


def _headboxes_from_json(data: Any, path: Path) -> np.ndarray:
    if isinstance(data, dict):
        if "headboxes" not in data:
            raise DataError("a JSON object needs a 'headboxes' list", file=str(path), field="headboxes")
        data = data["headboxes"]
    h = np.asarray(data, dtype=np.float64)
    if h.ndim == 2 and h.shape[1] == 4:
        h = h.reshape(-1, 2, 2)
    if h.ndim != 3 or h.shape[1:] != (2, 2):
        raise DataError(f"expected (N, 4) or (N, 2, 2), got {h.shape}", file=str(path), field="headboxes")
    return h


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON ({e})", file=str(path)) from None


def read_mpii_gt(gt: str | Path, headboxes: str | Path | None = None) -> MPIIGroundTruth:
    """Read MPII evaluation ground truth.

    Accepted layouts:

    * ``mpii_gt_val.mat`` style (``scipy.io``): ``jnt_missing (16, N)``, ``pos_gt_src (16, 2, N)``,
      ``headboxes_src (2, 2, N)`` (top-left / bottom-right); complete on its own.
    * the mmpose json: a list of records ``{image, center, scale, joints: 16 x [x, y], joints_vis: 16 x {0,1}}``
      (or ``{"annotations": [...], "headboxes": [...]}``), joints 1-based like the ``.mat``. Head boxes come from
      a ``headbox`` entry per record (``[x1, y1, x2, y2]``), a top-level ``headboxes`` list, or the ``headboxes``
      file: a ``.mat`` with ``headboxes_src`` or a json (list, or object with ``headboxes``) of ``(N, 4)`` or
      ``(N, 2, 2)``.
    """
    gt_path = Path(gt)
    if not gt_path.is_file():
        raise DataError("file not found", file=str(gt_path))
    hb_path = Path(headboxes) if headboxes is not None else None
    if hb_path is not None and not hb_path.is_file():
        raise DataError("file not found", file=str(hb_path))

    if gt_path.suffix.lower() == ".mat":
        mat = _read_mat_gt(gt_path)
        for key in ("jnt_missing", "pos_gt_src"):
            if key not in mat:
                raise DataError(f"missing variable {key!r}", file=str(gt_path), field=key)
        pos = np.asarray(mat["pos_gt_src"], dtype=np.float64)
        missing = np.asarray(mat["jnt_missing"])
        if pos.ndim != 3 or pos.shape[:2] != (16, 2):
            raise DataError(f"expected shape (16, 2, N), got {pos.shape}", file=str(gt_path), field="pos_gt_src")
        if missing.shape != (16, pos.shape[2]):
            raise DataError(f"expected shape (16, {pos.shape[2]}), got {missing.shape}", file=str(gt_path),
                            field="jnt_missing")
        joints, visible = pos.transpose(2, 0, 1), missing.T == 0
        hb = _headboxes_from_mat(mat, gt_path) if hb_path is None else None
        images = None
    else:
        data = _load_json(gt_path)
        hb = None
        records = data
        if isinstance(data, dict):
            if "annotations" not in data:
                raise DataError("a JSON object needs an 'annotations' list", file=str(gt_path), field="annotations")
            records = data["annotations"]
            if "headboxes" in data:
                hb = _headboxes_from_json(data, gt_path)
        if not isinstance(records, list) or not records:
            raise DataError("expected a non-empty list of person records", file=str(gt_path))
        joints = np.zeros((len(records), 16, 2))
        visible = np.zeros((len(records), 16), dtype=bool)
        own_boxes, images = [], []
        for i, rec in enumerate(records):
            where = f"record {i}"
            if not isinstance(rec, dict):
                raise DataError("expected an object", file=str(gt_path), record=where)
            for key in ("joints", "joints_vis"):
                if key not in rec:
                    raise DataError("missing", file=str(gt_path), record=where, field=key)
            try:
                j = np.asarray(rec["joints"], dtype=np.float64)
                v = np.asarray(rec["joints_vis"], dtype=np.float64)
            except (TypeError, ValueError):
                raise DataError("not numeric", file=str(gt_path), record=where, field="joints") from None
            if j.shape != (16, 2):
                raise DataError(f"expected 16 x [x, y], got shape {j.shape}", file=str(gt_path), record=where,
                                field="joints")
            if v.shape != (16,):
                raise DataError(f"expected 16 flags, got shape {v.shape}", file=str(gt_path), record=where,
                                field="joints_vis")
            joints[i], visible[i] = j, v > 0
            images.append(str(rec.get("image", "")))
            if "headbox" in rec:
                box = np.asarray(rec["headbox"], dtype=np.float64).reshape(-1)
                if box.shape != (4,):
                    raise DataError("expected [x1, y1, x2, y2]", file=str(gt_path), record=where, field="headbox")
                own_boxes.append(box.reshape(2, 2))
        if own_boxes:
            if len(own_boxes) != len(records):
                raise DataError("some records have 'headbox' and some do not", file=str(gt_path), field="headbox")
            hb = np.stack(own_boxes)

    if hb_path is not None:
        if hb_path.suffix.lower() == ".mat":
            hb = _headboxes_from_mat(_read_mat_gt(hb_path), hb_path)
        else:
            hb = _headboxes_from_json(_load_json(hb_path), hb_path)
    if hb is None:
        raise DataError("no head boxes: pass a headboxes file (.mat with headboxes_src, or json 'headboxes')",
                        file=str(gt_path), field="headboxes")
    if len(hb) != len(joints):
        raise DataError(f"{len(hb)} head boxes for {len(joints)} persons", file=str(hb_path or gt_path),
                        field="headboxes")
    return MPIIGroundTruth(joints=joints, visible=visible, headboxes=hb, images=images)
