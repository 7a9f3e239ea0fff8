"""3D pose metrics: MPJPE (absolute / root-relative), P-MPJPE, N-MPJPE, the HG bone-length protocol,
MPI-INF-3DHP PCK/AUC and ITOP mAP@10cm.

Arrays are ``(N, J, 3)`` in one unit (millimetres for Human3.6M / 3DHP, metres for ITOP). ``mask`` ``(N, J)``
selects the joints that count; NaN in a counted entry raises a :class:`~humanvision.errors.DataError` naming the
argument. Every result reports the number of samples (frames) it averages over (pose3d.md section 4).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from humanvision.errors import DataError
from humanvision.metrics.pck import _as_mask, _pose_pair, _Result

__all__ = [
    "HG_H36M17_EDGES",
    "ITOP_JOINT_NAMES",
    "THREEDHP_EVAL_JOINTS",
    "THREEDHP_JOINT_GROUPS",
    "THREEDHP_ROOT",
    "THREEDHP_SUBSETS",
    "ITOPResult",
    "MPJPEResult",
    "ThreeDHPResult",
    "align_scale",
    "evaluate_3dhp",
    "evaluate_mpjpe",
    "hg_mpjpe",
    "itop_map",
    "joint_errors",
    "mpjpe",
    "n_mpjpe",
    "normalize_action",
    "p_mpjpe",
    "rescale_to_bone_length",
]

Align = Literal["none", "procrustes", "scale"]

# HG (pytorch-pose-hg-3d v2) evaluation edges in the ECCV'18-challenge H36M-17 order (pose3d.md section 5.7).
HG_H36M17_EDGES = ((3, 2), (2, 1), (1, 0), (0, 4), (4, 5), (5, 6), (0, 7), (7, 8), (8, 10), (16, 15), (15, 14),
                   (14, 8), (8, 11), (11, 12), (12, 13))

# MPI-INF-3DHP test set, 17 joints in the univ_annot3 order of ``get_skeleton("mpi_inf_3dhp17")``.
THREEDHP_ROOT = 14  # pelvis
THREEDHP_EVAL_JOINTS = tuple(range(14))  # head top .. left ankle (official mpii_get_pck_auc_joint_groups)
THREEDHP_JOINT_GROUPS: dict[str, tuple[int, ...]] = {
    "Head": (0,), "Neck": (1,), "Shoulder": (2, 5), "Elbow": (3, 6), "Wrist": (4, 7), "Hip": (8, 11),
    "Knee": (9, 12), "Ankle": (10, 13),
}
THREEDHP_SUBSETS: dict[str, tuple[str, ...]] = {"GS": ("TS1", "TS2"), "noGS": ("TS3", "TS4"),
                                               "Outdoor": ("TS5", "TS6")}
THREEDHP_THRESHOLDS = np.arange(0.0, 151.0, 5.0)  # 0, 5, ..., 150 mm (31 values)

ITOP_JOINT_NAMES = ("head", "neck", "right_shoulder", "left_shoulder", "right_elbow", "left_elbow", "right_hand",
                    "left_hand", "torso", "right_hip", "left_hip", "right_knee", "left_knee", "right_foot",
                    "left_foot")


# ---------------------------------------------------------------------------------------------- alignment
def _root_relative(x: np.ndarray, root: int | None) -> np.ndarray:
    if root is None:
        return x
    if not -x.shape[1] <= root < x.shape[1]:
        raise DataError(f"root index {root} outside 0..{x.shape[1] - 1}", field="root")
    root %= x.shape[1]
    return x - x[:, root:root + 1]


def align_scale(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Scale-only alignment of N-MPJPE (Rhodin et al. 2018): ``s* = <p, g> / <p, p>`` per sample over the valid
    joints, returns ``s* · pred``. Apply to root-relative poses."""
    m = np.ones(pred.shape[:2], bool) if mask is None else mask
    w = m[..., None].astype(pred.dtype)
    num = np.sum(w * pred * gt, axis=(1, 2))
    den = np.sum(w * pred * pred, axis=(1, 2))
    s = np.divide(num, den, out=np.ones_like(num), where=den > 0)
    return pred * s[:, None, None]


def _align_procrustes(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Similarity (s, R, t) Procrustes alignment of ``pred`` onto ``gt`` per sample, fitted on the valid joints
    only (weights 0 elsewhere), no reflection (Protocol #2)."""
    from humanvision.geometry.procrustes import procrustes_align

    weights = None if mask.all() else mask.astype(np.float64)
    return np.asarray(procrustes_align(pred, gt, weights=weights), dtype=np.float64)


def joint_errors(pred: Any, gt: Any, *, root: int | None = None, align: Align = "none",
                 mask: Any = None) -> np.ndarray:
    """Per-joint Euclidean errors ``(N, J)`` (NaN where ``mask`` is False).

    ``root`` subtracts that joint from both poses first (root-relative, Protocol #1); ``align`` then applies
    ``"scale"`` (N-MPJPE) or ``"procrustes"`` (similarity transform, P-MPJPE / Protocol #2; ``root`` is irrelevant
    there since the translation is fitted) to the prediction.
    """
    p, g, m = _pose_pair(pred, gt, mask, dims=(3,))
    p, g = _root_relative(p, root), _root_relative(g, root)
    if root is not None and not m[:, root].all():
        raise DataError(f"the root joint {root} must be valid in every sample "
                        f"(first invalid at sample {int(np.argmin(m[:, root]))})", field="mask")
    if align == "scale":
        p = align_scale(p, g, m)
    elif align == "procrustes":
        p = _align_procrustes(p, g, m)
    elif align != "none":
        raise DataError(f"unknown alignment {align!r}; use 'none', 'scale' or 'procrustes'", field="align")
    return np.where(m, np.linalg.norm(p - g, axis=-1), np.nan)


def _sample_errors(err: np.ndarray) -> np.ndarray:
    """Per-sample mean over valid joints (NaN for samples without valid joints)."""
    valid = ~np.isnan(err)
    cnt = valid.sum(axis=1)
    out = np.full(err.shape[0], np.nan)
    np.divide(np.where(valid, err, 0.0).sum(axis=1), cnt, out=out, where=cnt > 0)
    return out


def mpjpe(pred: Any, gt: Any, *, root: int | None = None, mask: Any = None) -> float:
    """Mean per-joint position error: mean over samples of the mean joint distance (``root`` for root-relative)."""
    return float(np.nanmean(_sample_errors(joint_errors(pred, gt, root=root, mask=mask))))


def p_mpjpe(pred: Any, gt: Any, *, mask: Any = None) -> float:
    """Procrustes-aligned MPJPE (similarity transform fitted per sample; Protocol #2)."""
    return float(np.nanmean(_sample_errors(joint_errors(pred, gt, align="procrustes", mask=mask))))


def n_mpjpe(pred: Any, gt: Any, *, root: int | None = None, mask: Any = None) -> float:
    """Scale-normalised MPJPE: root-relative (when ``root`` is given), then the optimal scale only."""
    return float(np.nanmean(_sample_errors(joint_errors(pred, gt, root=root, align="scale", mask=mask))))


# ---------------------------------------------------------------------------------------------- H36M protocol
_TRIAL = re.compile(r"[\s_-]*\d+$")


def normalize_action(name: str) -> str:
    """Merge Human3.6M trials: ``"Directions-1"``, ``"Directions 2"``, ``"Walking_1"`` -> ``"Directions"``/...

    Only a trailing trial number is removed (the subaction index of the LT labels).
    """
    base = _TRIAL.sub("", str(name).strip())
    return base or str(name).strip()


@dataclass
class MPJPEResult(_Result):
    """MPJPE with its protocol.

    ``mpjpe`` is the frame-weighted average (total error / number of samples, LT/CP's ``Average``);
    ``action_mean`` the unweighted mean of the per-action values (what many papers tabulate). ``per_action`` and
    ``per_subject`` map names to ``{"mpjpe", "count"}``; ``per_joint`` maps joint names (or indices) to errors.
    ``root`` / ``root_joint``: index and name of the joint subtracted from both poses (None when none was).
    """

    mpjpe: float
    count: int
    num_joints: int
    protocol: str
    per_joint: dict[str, float]
    per_action: dict[str, dict[str, float]]
    action_mean: float | None
    per_subject: dict[str, dict[str, float]]
    root: int | None = None
    root_joint: str | None = None


def _group_means(sample_err: np.ndarray, labels: Sequence[Any] | None, n: int, name: str) -> dict:
    if labels is None:
        return {}
    labels = [str(a) for a in labels]
    if len(labels) != n:
        raise DataError(f"{len(labels)} labels for {n} samples", field=name)
    keys, inv = np.unique(np.asarray(labels), return_inverse=True)
    inv = inv.reshape(-1)
    valid = ~np.isnan(sample_err)
    tot = np.bincount(inv[valid], weights=sample_err[valid], minlength=len(keys))
    cnt = np.bincount(inv[valid], minlength=len(keys))
    return {str(k): {"mpjpe": float(t / c) if c else float("nan"), "count": int(c)}
            for k, t, c in zip(keys, tot, cnt)}


def _joint_names(joint_names: Sequence[str] | None, j: int) -> list[str]:
    if joint_names is not None and len(joint_names) != j:
        raise DataError(f"{len(joint_names)} names for {j} joints", field="joint_names")
    return [str(x) for x in joint_names] if joint_names is not None else [str(i) for i in range(j)]


def _root_label(root: int | None, names: Sequence[str]) -> str:
    """``"root 6 = pelvis"`` (``"root 6"`` when the joints are unnamed); ``root`` is a valid index."""
    if root is None:
        return ""
    root %= len(names)
    return f"root {root}" if names[root] == str(root) else f"root {root} = {names[root]}"


def _mpjpe_result(err: np.ndarray, protocol: str, actions, subjects, merge_trials: bool,
                  joint_names: Sequence[str] | None, root: int | None = None) -> MPJPEResult:
    n, j = err.shape
    sample = _sample_errors(err)
    valid = ~np.isnan(sample)
    names = _joint_names(joint_names, j)
    with np.errstate(invalid="ignore"):
        pj = np.nanmean(np.where(np.isnan(err), np.nan, err), axis=0) if n else np.full(j, np.nan)
    if actions is not None and merge_trials:
        actions = [normalize_action(a) for a in actions]
    per_action = _group_means(sample, actions, n, "actions")
    act_vals = [v["mpjpe"] for v in per_action.values() if v["count"]]
    return MPJPEResult(
        mpjpe=float(sample[valid].mean()) if valid.any() else float("nan"), count=int(valid.sum()), num_joints=j,
        protocol=protocol, per_joint=dict(zip(names, map(float, pj))), per_action=per_action,
        action_mean=float(np.mean(act_vals)) if act_vals else None,
        per_subject=_group_means(sample, subjects, n, "subjects"),
        root=None if root is None else root % j, root_joint=None if root is None else names[root],
    )


def evaluate_mpjpe(pred: Any, gt: Any, *, root: int | None = 6, align: Align = "none", mask: Any = None,
                   actions: Sequence[str] | None = None, subjects: Sequence[Any] | None = None,
                   merge_trials: bool = True, joint_names: Sequence[str] | None = None) -> MPJPEResult:
    """Human3.6M-style MPJPE evaluation (learnable-triangulation / ContextPose ``evaluate``, pose3d.md 4.1).

    Per sample ``e_n = mean_j ||pred_nj - gt_nj||`` after the protocol's normalisation:

    * ``root=6, align="none"``: root-relative MPJPE (Protocol #1, the number LT/CP report; root 6 = pelvis in the
      LT H36M-17 order ``h36m17``; the VideoPose3D / MMPose order ``h36m17_vp`` has the pelvis at 0);
      ``root=None``: absolute MPJPE in world coordinates.
    * ``align="procrustes"``: P-MPJPE (Protocol #2); ``align="scale"``: N-MPJPE (after root subtraction).

    The protocol string and ``root`` / ``root_joint`` of the result name the root joint (by ``joint_names``).

    ``actions`` (one per sample) gives the per-action table; with ``merge_trials`` the trials ``X-1``/``X-2`` are
    merged by summing errors and counts. ``mpjpe`` ("Average") is frame-weighted over all samples, not the mean
    of the action means (reported separately as ``action_mean``). ``subjects`` gives the per-subject table.
    """
    root = root if align != "procrustes" else None
    err = joint_errors(pred, gt, root=root, align=align, mask=mask)
    label = _root_label(root, _joint_names(joint_names, err.shape[1]))
    if align == "procrustes":
        protocol = "P-MPJPE (Procrustes: scale, rotation, translation)"
    elif align == "scale":
        protocol = f"N-MPJPE ({label}, scale-only)" if root is not None else "N-MPJPE (scale-only)"
    else:
        protocol = f"MPJPE root-relative ({label})" if root is not None else "MPJPE absolute"
    return _mpjpe_result(err, protocol, actions, subjects, merge_trials, joint_names, root)


def rescale_to_bone_length(pose: Any, limbs: Sequence[tuple[int, int]], total_length: float = 4000.0) -> np.ndarray:
    """Scale each pose ``(N, J, 3)`` so that the summed length of ``limbs`` equals ``total_length``
    (HG evaluation, pose3d.md 4.3 / 5.7; 4000 mm in v2, 4296.99 mm in branch ``hg3d``)."""
    p = _pose_pair(pose, pose, None, dims=(3,))[0]
    lim = np.asarray(limbs, dtype=np.int64).reshape(-1, 2)
    if lim.size == 0 or lim.min() < 0 or lim.max() >= p.shape[1]:
        raise DataError(f"limbs must index joints 0..{p.shape[1] - 1}", field="limbs")
    total = np.linalg.norm(p[:, lim[:, 0]] - p[:, lim[:, 1]], axis=-1).sum(axis=1)
    if np.any(total <= 0):
        raise DataError(f"pose {int(np.argmax(total <= 0))} has zero total bone length", field="pose")
    return p * (total_length / total)[:, None, None]


def hg_mpjpe(pred: Any, gt: Any, *, limbs: Sequence[tuple[int, int]] = HG_H36M17_EDGES,
             total_length: float = 4000.0, root: int = 0, actions: Sequence[str] | None = None,
             subjects: Sequence[Any] | None = None, joint_names: Sequence[str] | None = None) -> MPJPEResult:
    """The HG (Zhou et al. ICCV'17 code) protocol: both poses root-relative, the prediction rescaled to a fixed
    total bone length (``total_length`` over ``limbs``), no rotation alignment. Defaults: ECCV'18 H36M-17 order,
    root 0, the 15 edges and 4000 mm of v2. The result is not a metric-scale MPJPE (pose3d.md 9)."""
    p, g, _ = _pose_pair(pred, gt, None, dims=(3,))
    p = rescale_to_bone_length(_root_relative(p, root), limbs, total_length)
    err = joint_errors(p, _root_relative(g, root))
    label = _root_label(root, _joint_names(joint_names, err.shape[1]))
    return _mpjpe_result(err, f"HG bone-length {total_length:g} ({label})", actions, subjects, True,
                         joint_names, root)


# ---------------------------------------------------------------------------------------------- MPI-INF-3DHP
@dataclass
class ThreeDHPResult(_Result):
    """MPI-INF-3DHP PCK@``threshold`` (percent of joints with error strictly below it), AUC (mean PCK over
    0:5:150 mm, x100) and MPJPE, overall and per subset (GS / noGS / Outdoor), per sequence and per joint group.
    ``count`` is the number of frames."""

    pck: float
    auc: float
    mpjpe: float
    count: int
    num_joints: int
    threshold: float
    per_subset: dict[str, dict[str, float]]
    per_sequence: dict[str, dict[str, float]]
    per_group: dict[str, dict[str, float]]
    thresholds: np.ndarray
    curve: np.ndarray


def _sequence_name(s: Any) -> str:
    t = str(s).strip()
    return f"TS{int(t)}" if t.isdigit() else t


def _pck_auc(err: np.ndarray, thr: float, thresholds: np.ndarray, inclusive: bool) -> tuple[float, float, np.ndarray]:
    e = err[~np.isnan(err)]
    if e.size == 0:
        return float("nan"), float("nan"), np.full(len(thresholds), np.nan)
    cmp = np.less_equal if inclusive else np.less
    curve = 100.0 * cmp(e[None], thresholds[:, None]).mean(axis=1)
    return float(100.0 * cmp(e, thr).mean()), float(curve.mean()), curve


def evaluate_3dhp(pred: Any, gt: Any, *, sequences: Sequence[Any] | None = None, valid: Any = None,
                  root: int | None = THREEDHP_ROOT, joints: Sequence[int] | None = THREEDHP_EVAL_JOINTS,
                  threshold: float = 150.0, thresholds: Sequence[float] | None = None,
                  inclusive: bool = False) -> ThreeDHPResult:
    """MPI-INF-3DHP test protocol (official ``mpii_compute_3d_pck.m``; pose3d.md 4.2).

    Args:
        pred, gt: ``(N, 17, 3)`` in mm, univ_annot3 order (``mpi_inf_3dhp17``).
        sequences: one of ``TS1 .. TS6`` (or 1..6) per frame; enables the GS (TS1-2), noGS (TS3-4) and Outdoor
            (TS5-6) subsets and the per-sequence table.
        valid: ``(N,)`` valid-frame flags (``valid_frame``); invalid frames are dropped.
        root: both poses are made relative to this joint (pelvis 14); None if they already are.
        joints: the evaluated joints; default the official 14 (head top .. ankles); None for all.
        inclusive: the official code counts ``error < t`` so a perfect prediction has AUC ``100 * 30/31``
            (threshold 0 never passes); ``inclusive=True`` uses ``<=``.
    """
    p, g, _ = _pose_pair(pred, gt, None, dims=(3,))
    n = p.shape[0]
    keep = np.ones(n, dtype=bool) if valid is None else _as_mask(valid, (n,), "valid")
    p, g = _root_relative(p, root), _root_relative(g, root)
    if joints is not None:
        idx = np.asarray(joints, dtype=np.int64)
        if idx.size == 0 or idx.min() < 0 or idx.max() >= p.shape[1]:
            raise DataError(f"joint indices must lie in 0..{p.shape[1] - 1} (pass joints=None to evaluate all)",
                            field="joints")
        p, g = p[:, idx], g[:, idx]
        if idx.tolist() == list(THREEDHP_EVAL_JOINTS):
            groups = THREEDHP_JOINT_GROUPS
        else:
            groups = {str(int(i)): (k,) for k, i in enumerate(idx)}
    else:
        groups = {str(i): (i,) for i in range(p.shape[1])}
    err = np.linalg.norm(p - g, axis=-1)[keep]
    thrs = THREEDHP_THRESHOLDS if thresholds is None else np.asarray(thresholds, dtype=np.float64)

    def summary(e: np.ndarray) -> dict[str, float]:
        pck, auc, _ = _pck_auc(e, threshold, thrs, inclusive)
        return {"pck": pck, "auc": auc, "mpjpe": float(e.mean()) if e.size else float("nan"), "count": len(e)}

    per_subset: dict[str, dict[str, float]] = {}
    per_sequence: dict[str, dict[str, float]] = {}
    if sequences is not None:
        seq = [_sequence_name(s) for s in sequences]
        if len(seq) != n:
            raise DataError(f"{len(seq)} sequence labels for {n} frames", field="sequences")
        seq_arr = np.asarray(seq)[keep]
        for name in sorted(set(seq_arr.tolist())):
            per_sequence[name] = summary(err[seq_arr == name])
        for name, members in THREEDHP_SUBSETS.items():
            sel = np.isin(seq_arr, members)
            if sel.any():
                per_subset[name] = summary(err[sel])
    pck, auc, curve = _pck_auc(err, threshold, thrs, inclusive)
    per_group = {}
    for name, cols in groups.items():
        gp, ga, _ = _pck_auc(err[:, list(cols)], threshold, thrs, inclusive)
        per_group[name] = {"pck": gp, "auc": ga}
    return ThreeDHPResult(pck=pck, auc=auc, mpjpe=float(err.mean()) if err.size else float("nan"),
                          count=int(keep.sum()), num_joints=int(p.shape[1]), threshold=float(threshold),
                          per_subset=per_subset, per_sequence=per_sequence, per_group=per_group, thresholds=thrs,
                          curve=curve)


# ---------------------------------------------------------------------------------------------- ITOP
@dataclass
class ITOPResult(_Result):
    """ITOP mAP@``threshold``: percent of (frame, joint) pairs with 3D error strictly below ``threshold`` (m)."""

    map: float
    per_joint: dict[str, float]
    threshold: float
    count: int
    num_samples: int


def itop_map(pred: Any, gt: Any, *, threshold: float = 0.10, mask: Any = None,
             joint_names: Sequence[str] = ITOP_JOINT_NAMES) -> ITOPResult:
    """ITOP "mAP@10cm" (A2J / HCMoCo, pretraining.md A.7.4): the fraction of (frame, joint) pairs whose
    Euclidean 3D error is ``< threshold`` metres, over the 15 joints, and the per-joint accuracies (percent)."""
    err = joint_errors(pred, gt, mask=mask)
    if len(joint_names) != err.shape[1]:
        raise DataError(f"{len(joint_names)} joint names for {err.shape[1]} joints", field="joint_names")
    valid = ~np.isnan(err)
    ok = np.where(valid, err, np.inf) < threshold
    cnt = valid.sum(axis=0)
    per = np.full(err.shape[1], np.nan)
    np.divide(100.0 * ok.sum(axis=0), cnt, out=per, where=cnt > 0)
    total = int(valid.sum())
    return ITOPResult(map=float(100.0 * ok.sum() / total) if total else float("nan"),
                      per_joint={str(k): float(v) for k, v in zip(joint_names, per)}, threshold=float(threshold),
                      count=total, num_samples=int(err.shape[0]))
