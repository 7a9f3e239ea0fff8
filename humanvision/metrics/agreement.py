"""Agreement of a pose model with a teacher model on unlabelled images: PCK against the teacher's keypoints.

Real photographs of people exist offline but carry no labels; a strong pose model (the BlazePose teacher of
``benchmarks/sim_to_real.py``) stands in for the annotator. The measure is PCK (pose2d.md section 4: a joint is
correct when its distance to the reference is below ``thr`` times a normaliser), with

* the reference: the teacher's keypoint, counted only where the teacher is confident (``teacher_conf >=
  conf_thr``) and, when ``image_sizes`` are given, where the teacher's keypoint lies inside the image (the teacher
  extrapolates joints the image does not show);
* the normaliser: the height of the person box the model was given (the teacher's box), so ``thr = 0.1`` is a
  tenth of the person's box height;
* strict ``<`` like :func:`humanvision.metrics.keypoint_pck` (mmpose convention); people with a box height
  ``<= 0`` count nowhere.

Pure numpy. The result is a plain dict (overall and per-joint PCK in ``[0, 1]``, with the counts they rest on).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from humanvision.errors import DataError

__all__ = ["agreement", "merge_agreement"]


def _array(x: Any, name: str, shape: tuple) -> np.ndarray:
    """``x`` as float64 with a checked shape (``None`` entries are free); errors name the argument."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(f"not numeric: {e}", field=name) from None
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
        want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
        raise DataError(f"expected shape {want}, got {a.shape}", field=name)
    return a


def agreement(pred: Any, teacher: Any, teacher_conf: Any, box_heights: Any, thr: float = 0.1,
              conf_thr: float = 0.5, image_sizes: Any = None) -> dict[str, Any]:
    """PCK of ``pred`` against the teacher's confident keypoints, normalised by the box height.

    Args:
        pred: ``(N, K, 2)`` the model's keypoints in image pixels (one row per person).
        teacher: ``(N, K, 2)`` the teacher's keypoints in the same pixels.
        teacher_conf: ``(N, K)`` the teacher's per-joint confidence (BlazePose: landmark visibility).
        box_heights: ``(N,)`` the height of each person's box in pixels.
        thr: the PCK threshold as a fraction of the box height.
        conf_thr: teacher joints with ``teacher_conf < conf_thr`` are not counted.
        image_sizes: optional ``(N, 2)`` (width, height) of each person's image: teacher joints outside
            ``[0, width) x [0, height)`` are not counted.

    Returns:
        ``pck`` (overall, over every counted (person, joint); NaN when nothing counts), ``correct`` and ``count``
        (ints), ``per_joint_pck`` ``(K,)`` (NaN where a joint never counts), ``per_joint_correct`` and
        ``per_joint_count`` ``(K,)`` int arrays, ``people`` (N), ``thr`` and ``conf_thr``. A counted entry with
        a non-finite prediction is an error naming the person and joint; a counted entry never depends on
        entries that do not count (those may hold NaN).
    """
    p = _array(pred, "pred", (None, None, 2))
    n, k = p.shape[:2]
    t = _array(teacher, "teacher", (n, k, 2))
    c = _array(teacher_conf, "teacher_conf", (n, k))
    h = _array(box_heights, "box_heights", (n,))
    if not thr > 0:
        raise DataError(f"must be > 0, got {thr}", field="thr")
    counted = (c >= conf_thr) & np.isfinite(t).all(-1) & (np.isfinite(h) & (h > 0))[:, None]
    if image_sizes is not None:
        s = _array(image_sizes, "image_sizes", (n, 2))
        inside = ((t[..., 0] >= 0) & (t[..., 0] < s[:, None, 0]) & (t[..., 1] >= 0) & (t[..., 1] < s[:, None, 1]))
        counted &= inside
    bad = counted & ~np.isfinite(p).all(-1)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataError(f"non-finite prediction {p[i, j].tolist()} at a counted joint", field="pred",
                        record=f"person {i}, joint {j}")
    with np.errstate(invalid="ignore", over="ignore"):  # entries that do not count may hold NaN / inf
        dist = np.linalg.norm(np.where(counted[..., None], p - t, 0.0), axis=-1)
    norm = np.where(h > 0, h, 1.0)[:, None]
    correct = counted & (dist / norm < thr)
    per_count = counted.sum(0).astype(np.int64)
    per_correct = correct.sum(0).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_pck = np.where(per_count > 0, per_correct / np.maximum(per_count, 1), np.nan)
    count, right = int(per_count.sum()), int(per_correct.sum())
    return {"pck": right / count if count else float("nan"), "correct": right, "count": count,
            "per_joint_pck": per_pck, "per_joint_correct": per_correct, "per_joint_count": per_count,
            "people": int(n), "thr": float(thr), "conf_thr": float(conf_thr)}


def merge_agreement(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool several :func:`agreement` results (same ``K``, ``thr`` and ``conf_thr``) by adding their counts: the
    result equals :func:`agreement` on the concatenated people."""
    if not parts:
        raise DataError("nothing to merge", field="parts")
    k = len(parts[0]["per_joint_count"])
    if any(len(r["per_joint_count"]) != k or r["thr"] != parts[0]["thr"] or r["conf_thr"] != parts[0]["conf_thr"]
           for r in parts):
        raise DataError("results differ in joints, thr or conf_thr", field="parts")
    per_count = np.sum([r["per_joint_count"] for r in parts], axis=0).astype(np.int64)
    per_correct = np.sum([r["per_joint_correct"] for r in parts], axis=0).astype(np.int64)
    per_pck = np.where(per_count > 0, per_correct / np.maximum(per_count, 1), np.nan)
    count, right = int(per_count.sum()), int(per_correct.sum())
    return {"pck": right / count if count else float("nan"), "correct": right, "count": count,
            "per_joint_pck": per_pck, "per_joint_correct": per_correct, "per_joint_count": per_count,
            "people": int(sum(r["people"] for r in parts)), "thr": parts[0]["thr"], "conf_thr": parts[0]["conf_thr"]}
