"""COCO keypoint evaluation (OKS-based AP/AR), written from the protocol and checked against pycocotools.

Protocol (``COCOeval(gt, dt, iouType="keypoints")`` of pycocotools 2.x; xtcocotools' ``use_area`` switch):

* **Images** are every id of the GT ``images`` list (sorted); **categories** are the ids of the GT
  ``categories`` list (sorted; when the list is absent, the categories used by the annotations). Matching is
  per image and per category. Results whose ``category_id`` is not a GT category are not evaluated (a warning
  says how many).
* **GT ignore flags**: a GT is ignored when ``iscrowd`` is set or its ``num_keypoints`` field is 0. For an
  area range, a GT whose area lies outside ``[lo, hi]`` is ignored as well. Ignored GTs can absorb detections
  (those detections are then ignored too) but never count as misses.
* **Area**: the GT ``area`` field (the segmentation area) both for the OKS scale and for the area ranges
  ``all = [0, 1e10]``, ``medium = [32², 96²]``, ``large = [96², 1e10]``. With ``use_area=False`` (AIC,
  CrowdPose) area := ``0.53·w·h`` of the GT box for both. A detection's area is its ``bbox`` ``w·h`` when the
  result carries a box, else the extent of its keypoints ``(max x − min x)·(max y − min y)`` (the two
  branches of ``COCO.loadRes``).
* **OKS** between a detection and a GT with ``k ≥ 1`` labelled joints (``v > 0``):
  ``mean_{j: v_j>0} exp(−(dx_j² + dy_j²) / (2σ_j)² / (area + eps) / 2)``. For a GT without labelled joints
  the distance is measured to the GT box enlarged by its width/height on each side
  (``[x−w, x+2w] × [y−h, y+2h]``) and the mean runs over all joints.
* **Matching**: per image, detections sorted by descending score (stable: ties keep the result-file order)
  and cut to ``max_dets`` (20). For each OKS threshold ``t ∈ {.50, .55, …, .95}`` and each detection in
  order, the match is the GT with the highest OKS ``≥ t`` among GTs not yet matched (crowd GTs can be matched
  repeatedly), preferring non-ignored GTs over ignored ones; ties go to the later GT. A detection matched to
  an ignored GT, or unmatched with an area outside the range, is ignored. (As in pycocotools, a detection
  matched to a GT whose ``id`` is 0 counts as unmatched in the accumulation: GT ids should start at 1.)
* **Accumulation** per category and area range: detections of all images sorted by descending score (stable
  over the image order, then the per-image rank), cumulative TP/FP, recall ``tp / n_gt``, precision
  ``tp / (tp + fp + eps)`` made monotone from the right, sampled at the 101 recall thresholds ``0:.01:1``
  (0 beyond the reached recall). Settings without non-ignored GT are ``-1`` and excluded from the means.
* **Summary**: AP (mean over thresholds, recall points and categories), AP50, AP75, APm, APl, AR (mean final
  recall over thresholds), AR50, AR75, ARm, ARl, all at ``max_dets``.
* **CrowdPose** (:func:`evaluate_crowdpose`): the same matching with the ``crowdpose14`` sigmas and
  ``use_area=False``; AP, AP50, AP75, AR, AR50, AR75 over all images, plus AP on the easy / medium / hard
  images split by ``images[].crowdIndex`` (each split evaluated on its images alone,
  :func:`restrict_to_images`).

Differences from pycocotools: malformed input raises :class:`~humanvision.errors.DataError` (naming the file,
record and field) instead of a ``KeyError``/``AssertionError``; GT annotations must have unique ids and refer
to listed images; an empty result list is valid (AP 0). xtcocotools additionally drops detections whose
keypoint scores are all 0; we do not (pycocotools does not either).

>>> res = evaluate_coco_keypoints("person_keypoints_val2017.json", "results.json")   # doctest: +SKIP
>>> res.stats["AP"], res.num_images                                                   # doctest: +SKIP
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from humanvision.errors import DataError
from humanvision.skeletons import Skeleton, get_skeleton

__all__ = [
    "CROWDPOSE_STAT_NAMES",
    "CROWD_INDEX_THRESHOLDS",
    "STAT_NAMES",
    "CocoKeypointEvaluator",
    "CocoKeypointGT",
    "CocoKeypointResult",
    "CocoKeypointResults",
    "CrowdPoseResult",
    "evaluate_coco_keypoints",
    "evaluate_crowdpose",
    "keypoint_oks",
    "load_coco_keypoint_gt",
    "load_coco_keypoint_results",
    "read_crowd_index",
    "resolve_sigmas",
    "restrict_to_images",
]

STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
# Same construction as pycocotools (np.arange accumulates rounding error); 0.75 == IOU_THRESHOLDS[5] exactly.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
AREA_RANGES = {"all": (0.0, 1e5**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, 1e5**2)}
_EPS = np.spacing(1.0)
_CHUNK = 1 << 21  # max detections x GTs x joints per OKS block (bounds memory to a few tens of MB)


def resolve_sigmas(skeleton: str | Skeleton | None = "coco17", sigmas: Any = None) -> np.ndarray:
    """Per-joint OKS sigmas ``(K,)``: explicit ``sigmas`` when given, else the skeleton's (name or object)."""
    if sigmas is None:
        if skeleton is None:
            raise ValueError("give a skeleton or explicit sigmas")
        return get_skeleton(skeleton).sigmas_array
    if isinstance(sigmas, (str, Skeleton)):
        return get_skeleton(sigmas).sigmas_array
    arr = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if arr.size == 0 or not np.all(np.isfinite(arr) & (arr > 0)):
        raise ValueError(f"OKS sigmas must be a non-empty list of positive finite numbers, got {sigmas!r}")
    return arr


# ---------------------------------------------------------------------------------------------------- OKS
def keypoint_oks(dt: np.ndarray, gt: np.ndarray, areas: np.ndarray, sigmas: np.ndarray,
                 gt_boxes: np.ndarray | None = None) -> np.ndarray:
    """OKS between detections and ground truths, as COCOeval computes it (broadcast over leading dims).

    Args:
        dt: ``(..., D, K, 2+)`` detected keypoints (x, y, [score ignored]).
        gt: ``(..., G, K, 3)`` GT keypoints with visibility ``v`` (joints with ``v > 0`` are labelled).
        areas: ``(..., G)`` object scale (GT segment area, or ``0.53·w·h``).
        sigmas: ``(K,)`` per-joint sigmas.
        gt_boxes: ``(..., G, 4)`` GT boxes ``x, y, w, h``; needed only for GTs without labelled joints, whose
            OKS uses the distance to the box enlarged by ``w``/``h`` on each side over all joints. Without
            boxes such GTs get OKS 0.

    Returns:
        ``(..., D, G)`` OKS in ``[0, 1]``; identical poses give exactly 1.
    """
    dt = np.asarray(dt, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    lead = np.broadcast_shapes(dt.shape[:-3], gt.shape[:-3], np.shape(areas)[:-1])
    d, g, k = dt.shape[-3], gt.shape[-3], gt.shape[-2]
    dt = np.broadcast_to(dt, lead + dt.shape[-3:]).reshape(-1, d, k, dt.shape[-1])
    gt = np.broadcast_to(gt, lead + gt.shape[-3:]).reshape(-1, g, k, 3)
    area = np.broadcast_to(np.asarray(areas, dtype=np.float64), lead + (g,)).reshape(-1, g)
    xd, yd = np.ascontiguousarray(dt[..., 0]), np.ascontiguousarray(dt[..., 1])   # (B, D, K)
    labelled = gt[..., 2] > 0                                                      # (B, G, K)
    dx = xd[:, :, None, :] - gt[:, None, :, :, 0]                                  # (B, D, G, K)
    dy = yd[:, :, None, :] - gt[:, None, :, :, 1]
    bi, gi = np.nonzero(~labelled.any(-1))
    if gt_boxes is not None and len(bi):
        # GTs without labelled joints: distance to the GT box enlarged by w/h on each side, over all joints
        box = np.broadcast_to(np.asarray(gt_boxes, dtype=np.float64), lead + (g, 4)).reshape(-1, g, 4)[bi, gi]
        x0, x1 = (box[:, 0] - box[:, 2])[:, None, None], (box[:, 0] + box[:, 2] * 2)[:, None, None]
        y0, y1 = (box[:, 1] - box[:, 3])[:, None, None], (box[:, 1] + box[:, 3] * 2)[:, None, None]
        xs, ys = xd[bi], yd[bi]                                                    # (P, D, K)
        dx[bi, :, gi] = np.maximum(0, x0 - xs) + np.maximum(0, xs - x1)
        dy[bi, :, gi] = np.maximum(0, y0 - ys) + np.maximum(0, ys - y1)
        labelled[bi, gi] = True
    # e = (dx² + dy²) / (2σ)² / (area + eps) / 2 in COCOeval's operation order (bit-identical terms).
    e = np.multiply(dx, dx, out=dx)
    e += np.multiply(dy, dy, out=dy)
    e /= (np.asarray(sigmas, dtype=np.float64) * 2) ** 2
    e /= (area + _EPS)[:, None, :, None]
    e /= 2
    np.negative(e, out=e)
    np.exp(e, out=e)
    e *= labelled[:, None]
    oks = e.sum(-1) / np.maximum(labelled.sum(-1), 1)[:, None, :]
    return oks.reshape(lead + (d, g))


# ---------------------------------------------------------------------------------------------------- input
def _source_name(src: Any) -> str:
    return str(src) if isinstance(src, (str, Path)) else "<in-memory>"


def _read_json(src: Any, what: str) -> Any:
    if not isinstance(src, (str, Path)):
        return src
    path = Path(src)
    if not path.is_file():
        raise DataError(f"{what} file not found", file=str(path))
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON ({e})", file=str(path)) from None


def _check_records(records: Sequence[Any], fields: Sequence[str], file: str, name) -> None:
    """Every record is a mapping holding every field; else a DataError naming the first culprit."""
    for i, r in enumerate(records):
        if not isinstance(r, Mapping):
            raise DataError(f"expected an object, got {type(r).__name__}", file=file, record=name(i, r))
        for f in fields:
            if f not in r:
                raise DataError("missing", file=file, record=name(i, r), field=f)


def _numeric(records: Sequence[Mapping], key: str, width: int | None, file: str, name) -> np.ndarray:
    """Stack ``record[key]`` into a finite float64 array ``(N,)`` or ``(N, width)``; errors name the record.

    Values must be JSON numbers: strings, ``null`` and nested lists are rejected (not silently converted).
    """
    values = [r[key] for r in records]
    shape = (len(values),) if width is None else (len(values), width)
    try:
        arr = np.asarray(values)
        ok = arr.shape == shape and arr.dtype.kind in "fiub"
    except ValueError:  # ragged
        ok = False
    if not ok:
        want = "a number" if width is None else f"a list of {width} numbers"
        for i, v in enumerate(values):
            try:
                a = np.asarray(v)
            except ValueError:
                a = np.asarray(None)
            if a.shape == shape[1:] and a.ndim == 1 and a.dtype.kind not in "fiub":
                j = next(j for j, x in enumerate(v) if not _is_number(x))
                raise DataError(f"expected {want}, got {v[j]!r:.40} at position {j}", file=file,
                                record=name(i, records[i]), field=key)
            if a.shape != shape[1:] or a.dtype.kind not in "fiub":
                got = f"{a.size} values" if a.ndim == 1 and a.dtype.kind in "fiub" else f"{v!r:.80}"
                raise DataError(f"expected {want}, got {got}", file=file, record=name(i, records[i]),
                                field=key)
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr).reshape(len(arr), -1).all(1)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError("contains NaN or infinity", file=file, record=name(i, records[i]), field=key)
    return arr


def _ids(records: Sequence[Mapping], key: str, file: str, name) -> list:
    out = [r[key] for r in records]
    for i, v in enumerate(out):
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise DataError(f"expected an integer or string id, got {v!r:.80}", file=file,
                            record=name(i, records[i]), field=key)
    return out


@dataclass
class CocoKeypointGT:
    """COCO-format keypoint ground truth as flat arrays (one row per annotation, file order).

    ``image_index`` indexes :attr:`image_ids` (sorted unique ids of the ``images`` list); ``category_index``
    indexes :attr:`category_ids`. ``areas`` holds the ``area`` field (NaN where absent).
    """

    image_ids: list
    category_ids: list
    ann_ids: np.ndarray        # (M,) int64
    image_index: np.ndarray    # (M,) int64
    category_index: np.ndarray  # (M,) int64
    keypoints: np.ndarray      # (M, K, 3)
    boxes: np.ndarray          # (M, 4) x, y, w, h
    areas: np.ndarray          # (M,)
    iscrowd: np.ndarray        # (M,) bool
    num_keypoints: np.ndarray  # (M,) as given (0 marks a GT without keypoints)
    source: str = "<in-memory>"

    def __post_init__(self) -> None:
        self._image_lookup = {v: i for i, v in enumerate(self.image_ids)}

    @property
    def num_joints(self) -> int:
        return self.keypoints.shape[1]

    def image_position(self, image_id: Any) -> int | None:
        return self._image_lookup.get(image_id)


def load_coco_keypoint_gt(src: str | Path | Mapping, num_joints: int, *,
                          require_area: bool = True) -> CocoKeypointGT:
    """Read and validate a COCO keypoint GT file (path) or an already-parsed dict.

    Required: ``images[*].id``; per annotation ``id`` (unique), ``image_id`` (a listed image),
    ``category_id``, ``keypoints`` (``3·num_joints`` finite numbers), ``bbox`` (4 finite numbers),
    ``num_keypoints`` and, when ``require_area``, a finite ``area``. ``iscrowd`` defaults to 0. Errors are
    :class:`DataError` naming the file, the annotation index and id, and the field.
    """
    file = _source_name(src)
    data = _read_json(src, "ground-truth")
    if not isinstance(data, Mapping):
        raise DataError(f"expected a COCO object with 'images' and 'annotations', got {type(data).__name__}",
                        file=file)
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise DataError("missing or not a list", file=file, field=key)
    images, anns = data["images"], data["annotations"]

    def img_name(i, r):
        return f"image {i}"

    _check_records(images, ["id"], file, img_name)
    image_ids = _sorted_ids(_ids(images, "id", file, img_name), file, "images[*].id")
    lookup = {v: i for i, v in enumerate(image_ids)}

    def ann_name(i, r):
        return f"annotation {i}" + (f" (id {r['id']})" if isinstance(r, Mapping) and "id" in r else "")

    required = ["id", "image_id", "category_id", "keypoints", "bbox", "num_keypoints"]
    _check_records(anns, required + (["area"] if require_area else []), file, ann_name)
    ann_ids = _ids(anns, "id", file, ann_name)
    if any(not isinstance(a, int) for a in ann_ids):
        i = next(i for i, a in enumerate(ann_ids) if not isinstance(a, int))
        raise DataError("annotation ids must be integers", file=file, record=ann_name(i, anns[i]), field="id")
    seen: dict[int, int] = {}
    for i, a in enumerate(ann_ids):
        if a in seen:
            raise DataError(f"duplicate id (also annotation {seen[a]})", file=file,
                            record=ann_name(i, anns[i]), field="id")
        seen[a] = i
    image_index = np.empty(len(anns), dtype=np.int64)
    for i, v in enumerate(_ids(anns, "image_id", file, ann_name)):
        pos = lookup.get(v)
        if pos is None:
            raise DataError(f"unknown image id {v!r} (not in 'images')", file=file,
                            record=ann_name(i, anns[i]), field="image_id")
        image_index[i] = pos
    ann_cats = _ids(anns, "category_id", file, ann_name)
    if isinstance(data.get("categories"), list):
        cats = data["categories"]

        def cat_name(i, r):
            return f"category {i}"

        _check_records(cats, ["id"], file, cat_name)
        category_ids = _sorted_ids(_ids(cats, "id", file, cat_name), file, "categories[*].id")
    else:
        category_ids = _sorted_ids(ann_cats, file, "annotations[*].category_id")
    cat_lookup = {c: i for i, c in enumerate(category_ids)}

    k = num_joints
    kpts = _numeric(anns, "keypoints", 3 * k, file, ann_name).reshape(-1, k, 3)
    boxes = _numeric(anns, "bbox", 4, file, ann_name)
    nkp = _numeric(anns, "num_keypoints", None, file, ann_name)
    if require_area:
        areas = _numeric(anns, "area", None, file, ann_name)
    else:
        areas = np.array([r.get("area", np.nan) if _is_number(r.get("area")) else np.nan for r in anns],
                         dtype=np.float64)
    crowd_raw = [r.get("iscrowd", 0) for r in anns]
    for i, c in enumerate(crowd_raw):
        if not _is_number(c):
            raise DataError(f"expected 0 or 1, got {c!r:.80}", file=file, record=ann_name(i, anns[i]),
                            field="iscrowd")
    return CocoKeypointGT(
        image_ids=image_ids,
        category_ids=category_ids,
        ann_ids=np.asarray(ann_ids, dtype=np.int64).reshape(-1),
        image_index=image_index,
        category_index=np.array([cat_lookup.get(c, -1) for c in ann_cats], dtype=np.int64),
        keypoints=kpts,
        boxes=boxes.reshape(-1, 4),
        areas=areas.reshape(-1),
        iscrowd=np.asarray(crowd_raw, dtype=bool).reshape(-1),
        num_keypoints=nkp.reshape(-1),
        source=file,
    )


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating))


def _has_box(r: Mapping) -> bool:
    b = r.get("bbox")
    return b is not None and np.size(b) > 0


def _sorted_ids(ids: list, file: str, what: str) -> list:
    uniq = set(ids)
    if len({type(v) for v in uniq}) > 1:
        raise DataError("ids mix integers and strings", file=file, field=what)
    return sorted(uniq)


@dataclass
class CocoKeypointResults:
    """Keypoint results resolved against a GT: one row per result record (file order)."""

    image_index: np.ndarray     # (R,) int64, into gt.image_ids
    category_index: np.ndarray  # (R,) int64, into gt.category_ids; -1 for a category the GT does not have
    keypoints: np.ndarray       # (R, K, 3)
    scores: np.ndarray          # (R,)
    areas: np.ndarray           # (R,) box area if the result has a bbox, else keypoint extent
    source: str = "<in-memory>"

    @classmethod
    def concatenate(cls, parts: Sequence[CocoKeypointResults], num_joints: int) -> CocoKeypointResults:
        if not parts:
            return cls(*(np.zeros(0, np.int64),) * 2, np.zeros((0, num_joints, 3)), np.zeros(0), np.zeros(0))
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                     ("image_index", "category_index", "keypoints", "scores", "areas")),
                   source=", ".join(dict.fromkeys(p.source for p in parts)))


def load_coco_keypoint_results(src: str | Path | Sequence[Mapping],
                               gt: CocoKeypointGT) -> CocoKeypointResults:
    """Read and validate a result file (path) or list: ``[{image_id, category_id, keypoints, score}, ...]``.

    ``keypoints`` holds ``3·K`` finite numbers ``x, y, s`` (the joint scores ``s`` are not used by the
    metric), ``image_id`` must be a GT image; extra keys are ignored. Errors are :class:`DataError` naming the
    file, the result index and image id, and the field.
    """
    file = _source_name(src)
    data = _read_json(src, "result")
    if not isinstance(data, list):
        raise DataError(f"results must be a list of objects, got {type(data).__name__}", file=file)

    def name(i, r):
        return f"result {i}" + (f" (image_id {r['image_id']!r})" if isinstance(r, Mapping) and "image_id" in r
                                else "")

    _check_records(data, ["image_id", "category_id", "keypoints", "score"], file, name)
    image_index = np.empty(len(data), dtype=np.int64)
    for i, v in enumerate(_ids(data, "image_id", file, name)):
        pos = gt.image_position(v)
        if pos is None:
            raise DataError(f"unknown image id {v!r} (not in the ground truth)", file=file,
                            record=name(i, data[i]), field="image_id")
        image_index[i] = pos
    cat_lookup = {c: i for i, c in enumerate(gt.category_ids)}
    cats = _ids(data, "category_id", file, name)
    k = gt.num_joints
    kpts = _numeric(data, "keypoints", 3 * k, file, name).reshape(-1, k, 3)
    scores = _numeric(data, "score", None, file, name).reshape(-1)
    areas = np.ptp(kpts[..., 0], axis=1) * np.ptp(kpts[..., 1], axis=1)  # keypoint extent, as COCO.loadRes
    has_box = np.array([_has_box(r) for r in data], dtype=bool)
    if has_box.any():
        rows = [data[i] for i in np.flatnonzero(has_box)]
        boxes = _numeric(rows, "bbox", 4, file, lambda j, r: name(int(np.flatnonzero(has_box)[j]), r))
        areas[has_box] = boxes[:, 2] * boxes[:, 3]
    return CocoKeypointResults(
        image_index=image_index,
        category_index=np.array([cat_lookup.get(c, -1) for c in cats], dtype=np.int64),
        keypoints=kpts,
        scores=scores,
        areas=areas,
        source=file,
    )


# ---------------------------------------------------------------------------------------------------- result
@dataclass(frozen=True)
class CocoKeypointResult:
    """Outcome of a COCO keypoint evaluation.

    ``stats`` maps :data:`STAT_NAMES` to the ten summary numbers (pycocotools ``COCOeval.stats`` order; -1
    where undefined). ``precision`` is ``(T=10, R=101, C, A=3)`` and ``recall`` ``(T, C, A)`` (areas
    all/medium/large; -1 where a category/area has no non-ignored GT). Counts: images, GT annotations of the
    evaluated categories (``num_gt``, of which ``num_gt_ignored`` are crowd or without keypoints), result
    records evaluated (``num_detections``) and kept after the per-image ``max_dets`` cut
    (``num_detections_used``).
    """

    stats: dict[str, float]
    num_images: int
    num_gt: int
    num_gt_ignored: int
    num_detections: int
    num_detections_used: int
    precision: np.ndarray = field(repr=False)
    recall: np.ndarray = field(repr=False)
    use_area: bool = True
    max_dets: int = 20

    def as_array(self) -> np.ndarray:
        """The ten numbers in pycocotools ``stats`` order."""
        return np.array([self.stats[k] for k in STAT_NAMES])

    def counts(self) -> dict[str, int]:
        return {"images": self.num_images, "gt_instances": self.num_gt, "gt_ignored": self.num_gt_ignored,
                "detections": self.num_detections, "detections_used": self.num_detections_used}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the ten stats, the counts and the protocol options."""
        return {"stats": {k: float(v) for k, v in self.stats.items()}, "counts": self.counts(),
                "use_area": self.use_area, "max_dets": self.max_dets}


# ---------------------------------------------------------------------------------------------------- core
def _last_argmax(vals: np.ndarray) -> np.ndarray:
    """Index of the last maximum along the last axis."""
    return vals.shape[-1] - 1 - np.argmax(vals[..., ::-1], axis=-1)


def _match_block(oks: np.ndarray, dvalid: np.ndarray, ignore: np.ndarray, crowd: np.ndarray,
                 gt_id_zero: np.ndarray, thr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy COCO matching of ``n`` image-category groups with ``G`` GTs each, all thresholds at once.

    Args: ``oks (n, D, G)`` (detections in score order), ``dvalid (n, D)``, ``ignore (n, A, G)``,
    ``crowd (n, G)``, ``gt_id_zero (n, G)``, ``thr (T,)``. Returns ``matched, ignored``, each
    ``(n, D, A, T)``.
    """
    n, d, g = oks.shape
    a, t = ignore.shape[1], thr.shape[0]
    taken = np.zeros((n, a, t, g), dtype=bool)
    matched = np.zeros((n, d, a, t), dtype=bool)
    ignored = np.zeros((n, d, a, t), dtype=bool)
    ign = ignore[:, :, None, :]
    free_if_crowd = crowd[:, None, None, :]
    zero_id = gt_id_zero[:, None, None, :]
    cols = np.arange(g)
    for r in range(d):
        o = oks[:, r, None, None, :]
        cand = (o >= thr[:, None]) & (~taken | free_if_crowd) & dvalid[:, r, None, None, None]
        regular, on_ignored = cand & ~ign, cand & ign
        has_regular = regular.any(-1)
        best = np.where(has_regular, _last_argmax(np.where(regular, o, -np.inf)),
                        _last_argmax(np.where(on_ignored, o, -np.inf)))
        found = has_regular | on_ignored.any(-1)
        hit = (cols == best[..., None]) & found[..., None]  # (n, A, T, G) one-hot of the match
        taken |= hit
        matched[:, r] = found & ~(hit & zero_id).any(-1)
        ignored[:, r] = (hit & ign).any(-1)
    return matched, ignored


def _evaluate(gt: CocoKeypointGT, res: CocoKeypointResults, sigmas: np.ndarray, use_area: bool,
              max_dets: int) -> CocoKeypointResult:
    n_img, n_cat = len(gt.image_ids), len(gt.category_ids)
    ranges = np.array(list(AREA_RANGES.values()))  # (A, 2)
    thr = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)
    n_thr, n_area = len(IOU_THRESHOLDS), len(ranges)

    # ---- ground truth, sorted by (category, image) group, file order inside a group
    gsel = np.flatnonzero(gt.category_index >= 0)
    ggroup = gt.category_index[gsel] * n_img + gt.image_index[gsel]
    order = np.argsort(ggroup, kind="stable")
    gsel, ggroup = gsel[order], ggroup[order]
    g_kpts, g_box = gt.keypoints[gsel], gt.boxes[gsel]
    g_area = gt.areas[gsel] if use_area else g_box[:, 3] * g_box[:, 2] * 0.53
    g_crowd = gt.iscrowd[gsel]
    g_ign_base = g_crowd | (gt.num_keypoints[gsel] == 0)
    g_ignore = g_ign_base[:, None] | (g_area[:, None] < ranges[:, 0]) | (g_area[:, None] > ranges[:, 1])
    g_id_zero = gt.ann_ids[gsel] == 0

    # ---- detections: per group by descending score (stable), cut to max_dets
    dsel = np.flatnonzero(res.category_index >= 0)
    dgroup = res.category_index[dsel] * n_img + res.image_index[dsel]
    order = np.lexsort((dsel, -res.scores[dsel], dgroup))
    dsel, dgroup = dsel[order], dgroup[order]
    first = np.searchsorted(dgroup, dgroup, side="left")
    rank = np.arange(len(dsel)) - first
    keep = rank < max_dets
    dsel, dgroup, rank = dsel[keep], dgroup[keep], rank[keep]
    d_area = res.areas[dsel]
    d_out = (d_area[:, None] < ranges[:, 0]) | (d_area[:, None] > ranges[:, 1])  # (N, A)
    n_det = len(dsel)
    det_matched = np.zeros((n_det, n_area, n_thr), dtype=bool)
    det_ignored = np.zeros((n_det, n_area, n_thr), dtype=bool)

    # ---- matching, in buckets of groups with the same GT count
    groups = np.arange(n_cat * n_img)
    g_start = np.searchsorted(ggroup, groups, side="left")
    g_count = np.searchsorted(ggroup, groups, side="right") - g_start
    d_start = np.searchsorted(dgroup, groups, side="left")
    d_count = np.searchsorted(dgroup, groups, side="right") - d_start
    active = (g_count > 0) & (d_count > 0)
    for g in np.unique(g_count[active]):
        sel = np.flatnonzero(active & (g_count == g))
        dmax = int(d_count[sel].max())
        step = max(1, _CHUNK // (dmax * g * gt.num_joints))
        for c0 in range(0, len(sel), step):
            s = sel[c0:c0 + step]
            gi = g_start[s, None] + np.arange(g)                       # (n, G)
            dr = np.arange(dmax)
            dvalid = dr < d_count[s, None]                              # (n, D)
            di = np.minimum(d_start[s, None] + dr, n_det - 1)
            oks = keypoint_oks(res.keypoints[dsel[di]], g_kpts[gi], g_area[gi], sigmas, g_box[gi])
            ign = g_ignore[gi].transpose(0, 2, 1)                      # (n, A, G)
            m, ig = _match_block(oks, dvalid, ign, g_crowd[gi], g_id_zero[gi], thr)
            det_matched[di[dvalid]] = m[dvalid]
            det_ignored[di[dvalid]] = ig[dvalid]
    det_ignored |= ~det_matched & d_out[:, :, None]

    # ---- accumulation per category and area range
    precision = -np.ones((n_thr, len(RECALL_THRESHOLDS), n_cat, n_area))
    recall = -np.ones((n_thr, n_cat, n_area))
    d_cat, g_cat = dgroup // n_img, ggroup // n_img
    for c in range(n_cat):
        dc = np.flatnonzero(d_cat == c)
        order = dc[np.lexsort((rank[dc], dgroup[dc], -res.scores[dsel[dc]]))]
        gc = g_cat == c
        for a in range(n_area):
            npig = int(np.count_nonzero(~g_ignore[gc, a]))
            if npig == 0:
                continue
            precision[:, :, c, a], recall[:, c, a] = _pr_curve(
                det_matched[order, a].T, det_ignored[order, a].T, npig)
    stats = _summarize(precision, recall)
    return CocoKeypointResult(
        stats=dict(zip(STAT_NAMES, stats, strict=True)), num_images=n_img, num_gt=len(gsel),
        num_gt_ignored=int(g_ign_base.sum()), num_detections=int((res.category_index >= 0).sum()),
        num_detections_used=n_det, precision=precision, recall=recall, use_area=use_area, max_dets=max_dets)


def _pr_curve(matched: np.ndarray, ignored: np.ndarray, npig: int) -> tuple[np.ndarray, np.ndarray]:
    """Interpolated precision ``(T, R)`` and final recall ``(T,)`` from score-sorted ``(T, N)`` flags."""
    tp = np.cumsum(matched & ~ignored, axis=1).astype(np.float64)
    fp = np.cumsum(~matched & ~ignored, axis=1).astype(np.float64)
    n_thr, nd = tp.shape
    if nd == 0:
        return np.zeros((n_thr, len(RECALL_THRESHOLDS))), np.zeros(n_thr)
    rc = tp / npig
    pr = tp / (fp + tp + _EPS)
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # precision envelope from the right
    q = np.zeros((n_thr, len(RECALL_THRESHOLDS)))
    for t in range(n_thr):
        idx = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
        inside = idx < nd
        q[t, inside] = pr[t, idx[inside]]
    return q, rc[:, -1]


def _summarize(precision: np.ndarray, recall: np.ndarray) -> list[float]:
    t50, t75 = (int(np.flatnonzero(IOU_THRESHOLDS == v)[0]) for v in (0.5, 0.75))

    def mean(s: np.ndarray) -> float:
        s = s[s > -1]
        return float(np.mean(s)) if s.size else -1.0

    out = []
    for arr in (precision, recall):
        out += [mean(arr[..., 0]), mean(arr[t50, ..., 0]), mean(arr[t75, ..., 0]), mean(arr[..., 1]),
                mean(arr[..., 2])]
    return out


# ---------------------------------------------------------------------------------------------------- API
class CocoKeypointEvaluator:
    """COCO keypoint AP/AR against one ground truth; results can be added in pieces (e.g. per batch).

    >>> ev = CocoKeypointEvaluator("person_keypoints_val2017.json")          # doctest: +SKIP
    >>> ev.add(batch_results); ev.add("more_results.json")                   # doctest: +SKIP
    >>> ev.evaluate().stats["AP"]                                            # doctest: +SKIP

    Args:
        gt: path to a COCO keypoint json, its parsed dict, or a loaded :class:`CocoKeypointGT`.
        skeleton: joint set giving K and the OKS sigmas (name or :class:`~humanvision.skeletons.Skeleton`).
        sigmas: explicit per-joint sigmas (overrides the skeleton's).
        use_area: ``True`` scales OKS and area ranges by the GT ``area``; ``False`` by ``0.53·w·h`` of the GT
            box.
        max_dets: detections kept per image (by score) before matching; COCO uses 20.
    """

    def __init__(self, gt: str | Path | Mapping | CocoKeypointGT, *,
                 skeleton: str | Skeleton | None = "coco17", sigmas: Any = None, use_area: bool = True,
                 max_dets: int = 20) -> None:
        self.sigmas = resolve_sigmas(skeleton, sigmas)
        self.use_area = bool(use_area)
        if max_dets < 1:
            raise ValueError(f"max_dets must be >= 1, got {max_dets}")
        self.max_dets = int(max_dets)
        if isinstance(gt, CocoKeypointGT):
            if gt.num_joints != len(self.sigmas):
                raise ValueError(f"ground truth has {gt.num_joints} joints but {len(self.sigmas)} sigmas")
            if use_area and np.isnan(gt.areas).any():
                i = int(np.argmax(np.isnan(gt.areas)))
                raise DataError("missing (needed with use_area=True)", file=gt.source,
                                record=f"annotation {i} (id {gt.ann_ids[i]})", field="area")
            self.gt = gt
        else:
            self.gt = load_coco_keypoint_gt(gt, len(self.sigmas), require_area=self.use_area)
        self._parts: list[CocoKeypointResults] = []

    def add(self, results: str | Path | Sequence[Mapping] | CocoKeypointResults) -> None:
        """Add result records (a json path, a list of dicts, or loaded :class:`CocoKeypointResults`)."""
        if not isinstance(results, CocoKeypointResults):
            results = load_coco_keypoint_results(results, self.gt)
        self._parts.append(results)

    def reset(self) -> None:
        self._parts.clear()

    def evaluate(self) -> CocoKeypointResult:
        """Evaluate everything added so far."""
        res = CocoKeypointResults.concatenate(self._parts, self.gt.num_joints)
        dropped = int((res.category_index < 0).sum())
        if dropped:
            warnings.warn(f"{dropped} result(s) have a category_id that is not a ground-truth category "
                          f"{self.gt.category_ids}; they are not evaluated", stacklevel=2)
        return _evaluate(self.gt, res, self.sigmas, self.use_area, self.max_dets)


def evaluate_coco_keypoints(gt: str | Path | Mapping | CocoKeypointGT,
                            results: str | Path | Sequence[Mapping] | CocoKeypointResults, *,
                            skeleton: str | Skeleton | None = "coco17", sigmas: Any = None,
                            use_area: bool = True, max_dets: int = 20) -> CocoKeypointResult:
    """COCO keypoint AP/AR of ``results`` against ``gt`` (see the module docstring for the protocol).

    Equals pycocotools' ``COCOeval(gt, dt, "keypoints")`` summary to floating-point precision (tested to
    1e-9); ``use_area=False`` reproduces xtcocotools' switch for AIC/CrowdPose-style files.
    """
    ev = CocoKeypointEvaluator(gt, skeleton=skeleton, sigmas=sigmas, use_area=use_area, max_dets=max_dets)
    ev.add(results)
    return ev.evaluate()


# ----------------------------------------------------------------------------------------------- CrowdPose
#: CrowdPose's official split of images by crowd index (``crowdposetools`` ``get_type_result(first=0.2,
#: second=0.8)``, kept by xtcocotools' ``keypoints_crowd``): easy ``< 0.2``, medium ``[0.2, 0.8)``,
#: hard ``>= 0.8``.
CROWD_INDEX_THRESHOLDS = (0.2, 0.8)
CROWDPOSE_STAT_NAMES = ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_easy", "AP_medium", "AP_hard")


def restrict_to_images(gt: CocoKeypointGT, results: CocoKeypointResults,
                       image_ids: Sequence[Any]) -> tuple[CocoKeypointGT, CocoKeypointResults]:
    """The ground truth and results of the listed images only (pycocotools' ``params.imgIds = image_ids``).

    Matching is per image, so evaluating the restricted pair equals COCOeval run on that image subset; the
    categories stay those of the full ground truth. Unknown ids raise ``ValueError``.
    """
    pos = [gt.image_position(i) for i in image_ids]
    if any(p is None for p in pos):
        bad = [i for i, p in zip(image_ids, pos) if p is None]
        raise ValueError(f"image ids not in the ground truth: {bad[:5]}")
    keep = np.zeros(len(gt.image_ids), dtype=bool)
    keep[np.asarray(pos, dtype=np.int64)] = True
    new_pos = np.cumsum(keep) - 1
    g, r = keep[gt.image_index], keep[results.image_index]
    sub_gt = CocoKeypointGT(
        image_ids=[gt.image_ids[p] for p in np.flatnonzero(keep)], category_ids=gt.category_ids,
        ann_ids=gt.ann_ids[g], image_index=new_pos[gt.image_index[g]], category_index=gt.category_index[g],
        keypoints=gt.keypoints[g], boxes=gt.boxes[g], areas=gt.areas[g], iscrowd=gt.iscrowd[g],
        num_keypoints=gt.num_keypoints[g], source=gt.source)
    sub_res = CocoKeypointResults(
        image_index=new_pos[results.image_index[r]], category_index=results.category_index[r],
        keypoints=results.keypoints[r], scores=results.scores[r], areas=results.areas[r],
        source=results.source)
    return sub_gt, sub_res


def read_crowd_index(src: str | Path | Mapping) -> dict[Any, float]:
    """``image id -> crowdIndex`` of a CrowdPose json (path or parsed dict); every image must carry one."""
    file = _source_name(src)
    data = _read_json(src, "ground-truth")
    images = data.get("images") if isinstance(data, Mapping) else None
    if not isinstance(images, list):
        raise DataError("missing or not a list", file=file, field="images")

    def name(i, r):
        return f"image {i}" + (f" (id {r['id']})" if isinstance(r, Mapping) and "id" in r else "")

    _check_records(images, ["id", "crowdIndex"], file, name)
    values = _numeric(images, "crowdIndex", None, file, name)
    return dict(zip(_ids(images, "id", file, name), values.tolist(), strict=True))


@dataclass(frozen=True)
class CrowdPoseResult:
    """CrowdPose summary: ``stats`` maps :data:`CROWDPOSE_STAT_NAMES` to numbers (-1 where undefined);
    ``overall`` and ``splits`` (``easy``/``medium``/``hard``) are the underlying COCO evaluations,
    ``split_images`` the image count of each split."""

    stats: dict[str, float]
    overall: CocoKeypointResult
    splits: dict[str, CocoKeypointResult]
    split_images: dict[str, int]
    thresholds: tuple[float, float]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the nine stats, counts, split sizes and thresholds."""
        return {"stats": {k: float(v) for k, v in self.stats.items()}, "counts": self.overall.counts(),
                "split_images": dict(self.split_images), "crowd_index_thresholds": list(self.thresholds),
                "use_area": self.overall.use_area, "max_dets": self.overall.max_dets}


def evaluate_crowdpose(gt: str | Path | Mapping | CocoKeypointGT,
                       results: str | Path | Sequence[Mapping] | CocoKeypointResults, *,
                       crowd_index: Mapping[Any, float] | None = None,
                       thresholds: tuple[float, float] = CROWD_INDEX_THRESHOLDS,
                       skeleton: str | Skeleton | None = "crowdpose14", sigmas: Any = None,
                       use_area: bool = False, max_dets: int = 20) -> CrowdPoseResult:
    """CrowdPose's official keypoint evaluation: AP/AP50/AP75/AR/AR50/AR75 and AP easy/medium/hard.

    Protocol (``crowdposetools.cocoeval``, xtcocotools ``iouType="keypoints_crowd"``): the COCO protocol of
    this module with the CrowdPose sigmas (``crowdpose14``), OKS scale and area ``0.53·w·h`` of the GT box
    (``use_area=False``), ``maxDets=20``, GT ignored when ``iscrowd`` or ``num_keypoints == 0``. AP easy /
    medium / hard is the AP over ``.50:.95`` of the images whose ``images[].crowdIndex`` is ``< t0``, in
    ``[t0, t1)`` and ``>= t1``, each evaluated on its images alone. ``thresholds`` default to the released
    code's ``(0.2, 0.8)``; the CrowdPose paper describes the bands as [0, 0.1], [0.1, 0.8], [0.8, 1], pass
    ``thresholds=(0.1, 0.8)`` for that reading. Differences from the released code: split APs are not
    rounded to 4 decimals, and their mean skips -1 entries (equal for the single person category).

    ``crowd_index`` maps image id to crowd index; by default it is read from the GT file (required when
    ``gt`` is an already-loaded :class:`CocoKeypointGT`).
    """
    lo, hi = (float(t) for t in thresholds)
    if not lo <= hi:
        raise ValueError(f"crowd index thresholds must be increasing, got {thresholds}")
    if crowd_index is None:
        if isinstance(gt, CocoKeypointGT):
            raise ValueError("give crowd_index for an already-loaded ground truth")
        crowd_index = read_crowd_index(gt)  # (a path is parsed twice, so errors name the file)
    ev = CocoKeypointEvaluator(gt, skeleton=skeleton, sigmas=sigmas, use_area=use_area, max_dets=max_dets)
    missing = [i for i in ev.gt.image_ids if i not in crowd_index]
    if missing:
        raise DataError(f"no crowd index for image ids {missing[:5]}", file=ev.gt.source, field="crowdIndex")
    ci = np.array([crowd_index[i] for i in ev.gt.image_ids], dtype=np.float64)
    res = results if isinstance(results, CocoKeypointResults) else load_coco_keypoint_results(results, ev.gt)
    ev.add(res)
    overall = ev.evaluate()
    masks = {"easy": ci < lo, "medium": (ci >= lo) & (ci < hi), "hard": ci >= hi}
    splits = {}
    for name, m in masks.items():
        ids = [ev.gt.image_ids[p] for p in np.flatnonzero(m)]
        splits[name] = _evaluate(*restrict_to_images(ev.gt, res, ids), ev.sigmas, ev.use_area, ev.max_dets)
    s = overall.stats
    stats = {"AP": s["AP"], "AP50": s["AP50"], "AP75": s["AP75"], "AR": s["AR"], "AR50": s["AR50"],
             "AR75": s["AR75"], **{f"AP_{k}": v.stats["AP"] for k, v in splits.items()}}
    return CrowdPoseResult(stats=stats, overall=overall, splits=splits,
                           split_images={k: int(m.sum()) for k, m in masks.items()}, thresholds=(lo, hi))
