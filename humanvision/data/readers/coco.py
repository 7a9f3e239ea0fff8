"""COCO-style keypoint annotations (COCO, AI Challenger, any skeleton) and COCO person-detection results.

Keypoint file layout (``person_keypoints_{train,val}2017.json``, mmpose's ``aic_{train,val}.json``)::

    {"images":      [{"id": int, "file_name": str, "width": int, "height": int}, ...],
     "annotations": [{"id": int, "image_id": int, "category_id": 1, "bbox": [x, y, w, h],
                      "keypoints": [x1, y1, v1, ..., xK, yK, vK], "num_keypoints": int,
                      "area": float, "iscrowd": 0 | 1}, ...],
     "categories":  [{"id": 1, "name": "person", "keypoints": [K names], "skeleton": [...]}]}

``v`` is 0 (not labelled), 1 (labelled, occluded) or 2 (visible). ``num_keypoints``, ``area`` and ``iscrowd``
are optional (defaults: the number of ``v > 0``, ``w * h`` and 0). ``width``/``height`` are required when
boxes are cleaned. ``categories`` is optional; when the person category lists keypoint names their count must
match the skeleton. Images are ``image_root / file_name``.

Detection results (``COCO_val2017_detections_AP_H_56_person.json``): a JSON list of
``{"image_id": int, "category_id": 1, "bbox": [x, y, w, h], "score": float}``; image files and sizes come from
a COCO json's ``images`` section (usually the keypoint annotation file itself).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np

from humanvision.data.io import read_image
from humanvision.data.readers.base import Reader, as_array, load_json, require, resolve_skeleton
from humanvision.data.sample import LazyImage, Sample
from humanvision.errors import DataError
from humanvision.skeletons import Skeleton

__all__ = ["AicKeypoints", "CocoDetections", "CocoKeypoints", "OCHumanKeypoints", "clean_coco_boxes",
           "read_coco_images", "write_occluded_subset"]


def clean_coco_boxes(boxes: np.ndarray, width: np.ndarray, height: np.ndarray,
                     area: np.ndarray | None = None):
    """The mmpose 0.x box cleaning (pose2d.md §1.1), vectorised over ``(M, 4)`` xywh boxes.

    ``x1 = max(0, x)``, ``y1 = max(0, y)``, ``x2 = min(W - 1, x1 + max(0, w - 1))``,
    ``y2 = min(H - 1, y1 + max(0, h - 1))``; a box is kept when ``area > 0`` (if given), ``x2 > x1`` and
    ``y2 > y1``. Returns ``(cleaned (M, 4) xywh = [x1, y1, x2 - x1, y2 - y1], keep (M,) bool)``.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w = np.asarray(width, dtype=np.float64)
    h = np.asarray(height, dtype=np.float64)
    x1 = np.maximum(0.0, b[:, 0])
    y1 = np.maximum(0.0, b[:, 1])
    x2 = np.minimum(w - 1, x1 + np.maximum(0.0, b[:, 2] - 1))
    y2 = np.minimum(h - 1, y1 + np.maximum(0.0, b[:, 3] - 1))
    keep = (x2 > x1) & (y2 > y1)
    if area is not None:
        keep &= np.asarray(area, dtype=np.float64) > 0
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=1), keep


def read_coco_images(data: dict, file: str, need_size: bool) -> tuple[list, list[str], np.ndarray, dict]:
    """Parse the ``images`` section: ``(ids, file_names, sizes (M, 2) [w, h] or -1, id -> position)``."""
    images = require(data, "images", file=file, where="top level")
    if not isinstance(images, list):
        raise DataError("expected a list", file=file, record="top level", field="images")
    ids, names, sizes, pos = [], [], np.full((len(images), 2), -1.0), {}
    for i, im in enumerate(images):
        where = f"image #{i}"
        iid = require(im, "id", file=file, where=where)
        where = f"image {iid}"
        if iid in pos:
            raise DataError("duplicate image id", file=file, record=where, field="id")
        pos[iid] = i
        ids.append(iid)
        names.append(str(require(im, "file_name", file=file, where=where)))
        if need_size or ("width" in im and "height" in im):
            wh = as_array([require(im, "width", file=file, where=where), require(im, "height", file=file,
                                                                               where=where)],
                          (2,), file=file, where=where, field="width/height", dtype=np.float64)
            if (wh <= 0).any():
                raise DataError(f"non-positive image size {wh.tolist()}", file=file, record=where,
                                field="width/height")
            sizes[i] = wh
    return ids, names, sizes, pos


def _image_field(images: list, key: str, file: str) -> np.ndarray:
    """A required finite number ``images[i][key]`` of every image, as a float64 array."""
    out = np.empty(len(images))
    for i, im in enumerate(images):
        where = f"image {im.get('id', f'#{i}')}"
        out[i] = as_array(require(im, key, file=file, where=where), (), file=file, where=where, field=key,
                          dtype=np.float64)
    return out


def _group(owner: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Order of items grouped by owner (stable) and the ``(n_groups + 1)`` offsets into it."""
    order = np.argsort(owner, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=n_groups))])
    return order, offsets


class CocoKeypoints(Reader):
    """COCO-style keypoint annotations for any skeleton (``coco17`` by default; ``aic14``, ``crowdpose14``).

    Args:
        annotations: the json file. image_root: folder holding ``file_name`` (default: the json's folder).
        skeleton: joint set; each annotation must have ``3 * K`` keypoint values.
        mode: ``"instance"`` (one sample per person, top-down training) or ``"image"`` (one sample per image
            with all its people, images without people included).
        clean_boxes: apply :func:`clean_coco_boxes` and drop people whose box is empty (mmpose 0.x).
        min_keypoints: drop people with fewer labelled joints (0.x drops ``num_keypoints == 0`` and all-zero
            keypoints: ``min_keypoints=1``). Default 1 in instance mode, 0 in image mode.
        drop_crowd: drop ``iscrowd`` annotations. Default True in instance mode, False in image mode.
        category_id: the person category; other categories are ignored.

    Samples: ``keypoints_2d (N, K, 2)``, ``visibility = min(1, v)``, ``boxes (N, 4)`` (cleaned if asked),
    ``ann_ids``, ``image_id``, lazy ``image``; ``meta``: ``visibility_flags`` (raw ``v``, int8), ``area``,
    ``iscrowd``, ``num_keypoints``, ``width``, ``height``, ``file_name`` and one entry per
    :attr:`image_fields`.
    """

    #: numeric per-image fields a subclass requires (json key -> meta key), kept in :attr:`image_extras`
    image_fields: ClassVar[dict[str, str]] = {}

    def __init__(self, annotations: str | Path, image_root: str | Path | None = None,
                 skeleton: str | Skeleton = "coco17", mode: str = "instance", clean_boxes: bool = True,
                 min_keypoints: int | None = None, drop_crowd: bool | None = None,
                 category_id: int = 1) -> None:
        self.source = str(annotations)
        f = self.source
        if mode not in ("instance", "image"):
            raise ValueError(f"mode must be 'instance' or 'image', got {mode!r}")
        self.mode = mode
        self.skeleton = resolve_skeleton(skeleton, f)
        k = self.skeleton.num_joints
        self.image_root = Path(image_root) if image_root is not None else Path(f).parent
        min_keypoints = (1 if mode == "instance" else 0) if min_keypoints is None else int(min_keypoints)
        drop_crowd = (mode == "instance") if drop_crowd is None else bool(drop_crowd)

        data = load_json(f)
        if not isinstance(data, dict):
            raise DataError("expected a JSON object with 'images' and 'annotations'", file=f)
        self.image_ids, self.file_names, self.image_sizes, pos = read_coco_images(data, f,
                                                                                  need_size=clean_boxes)
        self.image_extras = {m: _image_field(data["images"], key, f) for key, m in self.image_fields.items()}
        for cat in data.get("categories") or []:
            if (isinstance(cat, dict) and cat.get("id") == category_id and "keypoints" in cat
                    and len(cat["keypoints"]) != k):
                raise DataError(f"{len(cat['keypoints'])} keypoint names, but skeleton "
                                f"{self.skeleton.name!r} has {k} joints", file=f,
                                record=f"category {category_id}", field="keypoints")

        anns = require(data, "annotations", file=f, where="top level")
        if not isinstance(anns, list):
            raise DataError("expected a list", file=f, record="top level", field="annotations")
        kps, boxes, ids, owner, area, crowd, nkp = [], [], [], [], [], [], []
        for i, a in enumerate(anns):
            where = f"annotation #{i}"
            aid = require(a, "id", file=f, where=where)
            where = f"annotation {aid}"
            if a.get("category_id", category_id) != category_id:
                continue
            iid = require(a, "image_id", file=f, where=where)
            if iid not in pos:
                raise DataError(f"image_id {iid!r} is not in 'images'", file=f, record=where,
                                field="image_id")
            kp = require(a, "keypoints", file=f, where=where)
            if not isinstance(kp, list) or len(kp) != 3 * k:
                n = len(kp) if isinstance(kp, list) else type(kp).__name__
                raise DataError(f"{n} values, expected {3 * k} (3 x {k} joints of {self.skeleton.name!r})",
                                file=f, record=where, field="keypoints")
            kp = as_array(kp, (3 * k,), file=f, where=where, field="keypoints", dtype=np.float64)
            box = as_array(require(a, "bbox", file=f, where=where), (4,), file=f, where=where, field="bbox",
                           dtype=np.float64)
            flags = kp[2::3]
            if not np.isin(flags, (0, 1, 2)).all():
                raise DataError(f"visibility flags must be 0, 1 or 2, got {sorted(set(flags.tolist()))}",
                                file=f, record=where, field="keypoints")
            kps.append(kp)
            boxes.append(box)
            ids.append(aid)
            owner.append(pos[iid])
            area.append(float(a.get("area", box[2] * box[3])))
            crowd.append(int(a.get("iscrowd", 0)))
            nkp.append(int(a.get("num_keypoints", (flags > 0).sum())))

        m = len(kps)
        kp_arr = np.asarray(kps, dtype=np.float64).reshape(m, k, 3)
        box_arr = np.asarray(boxes, dtype=np.float64).reshape(m, 4)
        owner_arr = np.asarray(owner, dtype=np.int64)
        area_arr = np.asarray(area, dtype=np.float64)
        crowd_arr = np.asarray(crowd, dtype=np.int8)
        nkp_arr = np.asarray(nkp, dtype=np.int64)
        keep = np.ones(m, dtype=bool)
        if clean_boxes:
            wh = self.image_sizes[owner_arr]
            box_arr, ok = clean_coco_boxes(box_arr, wh[:, 0], wh[:, 1], area_arr)
            keep &= ok
        if min_keypoints > 0:
            labelled = np.minimum((kp_arr[:, :, 2] > 0).sum(1), nkp_arr)
            keep &= (labelled >= min_keypoints) & (np.abs(kp_arr).max(axis=(1, 2), initial=0) > 0)
        if drop_crowd:
            keep &= crowd_arr == 0

        self.keypoints = kp_arr[keep, :, :2].astype(np.float32)
        self.flags = kp_arr[keep, :, 2].astype(np.int8)
        self.boxes = box_arr[keep].astype(np.float32)
        ann_ids = np.asarray(ids) if ids else np.zeros(0, dtype=np.int64)
        self.ann_ids = (ann_ids.astype(np.int64) if ann_ids.dtype.kind in "iuf" else ann_ids)[keep]
        self.owner = owner_arr[keep]
        self.area = area_arr[keep].astype(np.float32)
        self.iscrowd = crowd_arr[keep]
        self.num_keypoints = nkp_arr[keep]
        if mode == "image":
            self._order, self._offsets = _group(self.owner, len(self.image_ids))

    def __len__(self) -> int:
        return len(self.keypoints) if self.mode == "instance" else len(self.image_ids)

    def _get(self, index: int) -> Sample:
        if self.mode == "instance":
            sel = np.array([index])
            img = int(self.owner[index])
        else:
            sel = self._order[self._offsets[index]:self._offsets[index + 1]]
            img = index
        path = str(self.image_root / self.file_names[img])
        ann_ids = self.ann_ids[sel]
        w, h = self.image_sizes[img]
        return Sample(
            image=LazyImage(path, read_image), image_path=path,
            keypoints_2d=self.keypoints[sel], visibility=np.minimum(self.flags[sel], 1).astype(np.float32),
            boxes=self.boxes[sel], skeleton=self.skeleton.name, source=self.source, index=index,
            image_id=self.image_ids[img], ann_ids=ann_ids,
            meta={"visibility_flags": self.flags[sel], "area": self.area[sel], "iscrowd": self.iscrowd[sel],
                  "num_keypoints": self.num_keypoints[sel], "file_name": self.file_names[img],
                  "width": None if w < 0 else int(w), "height": None if h < 0 else int(h),
                  **{m: float(v[img]) for m, v in self.image_extras.items()}},
        )


class AicKeypoints(CocoKeypoints):
    """AI Challenger keypoints in mmpose's COCO-style json (``aic_train.json``/``aic_val.json``), 14 joints.

    Same layout and options as :class:`CocoKeypoints`; only the default skeleton differs (``aic14``). AIC has
    no usable ``area`` (its evaluation uses ``0.53 * w * h`` of the GT box).
    """

    def __init__(self, annotations: str | Path, image_root: str | Path | None = None,
                 skeleton: str | Skeleton = "aic14", **kwargs) -> None:
        super().__init__(annotations, image_root, skeleton=skeleton, **kwargs)


class OCHumanKeypoints(CocoKeypoints):
    """OCHuman (Pose2Seg, CVPR'19) in its COCO-format keypoint files: 17 COCO joints (``coco17``).

    Files: ``ochuman_coco_format_val_range_0.00_1.00.json`` and
    ``ochuman_coco_format_test_range_0.00_1.00.json`` (``range_0.00_1.00``: every instance, whatever its
    overlap with other people) in ``annotations/``, images in ``images/`` beside it (pass ``image_root``).
    Layout and options are those of :class:`CocoKeypoints`; OCHuman's own ``ochuman.json`` (19 joints, its
    own layout) is not this format.

    Protocol: OCHuman is a test-only benchmark of heavily occluded people. There is **no training set**:
    models are trained elsewhere (COCO) and evaluated on the **val** and the **test** file separately with
    the COCO keypoint AP and the COCO sigmas (``humanvision evaluate coco``); top-down methods crop the
    **ground-truth boxes** (ViTPose's OCHuman table), so no detection file is involved.
    """

    def __init__(self, annotations: str | Path, image_root: str | Path | None = None,
                 skeleton: str | Skeleton = "coco17", **kwargs) -> None:
        super().__init__(annotations, image_root, skeleton=skeleton, **kwargs)


def write_occluded_subset(annotations: str | Path, out: str | Path, min_fraction: float = 0.5,
                          others: str = "ignore") -> dict:
    """Write a COCO keypoint file for AP on mostly occluded people only.

    A person is *occluded* when more than ``min_fraction`` of its labelled joints (``v > 0``) have ``v = 1``
    (the synthetic writer's flag for a joint inside the image hidden by another surface). The output keeps
    every image, category and occluded person unchanged. With ``others="ignore"`` the other people stay with
    ``num_keypoints = 0``, the ignore flag of COCOeval (pycocotools and :mod:`humanvision.metrics.coco`):
    they absorb the detections on them without counting as misses, and :class:`CocoKeypoints` skips them
    (``min_keypoints=1``), so GT-box predictions cover the occluded people only; ``others="drop"`` removes
    them (predictions on them then count as false positives). ``iscrowd`` regions are kept as they are.

    Returns ``{"file", "images", "people", "occluded"}`` (``people``: non-crowd annotations read).
    """
    if others not in ("ignore", "drop"):
        raise ValueError(f"others must be 'ignore' or 'drop', got {others!r}")
    f = str(annotations)
    data = load_json(f)
    if not isinstance(data, dict):
        raise DataError("expected a JSON object with 'images' and 'annotations'", file=f)
    anns = require(data, "annotations", file=f, where="top level")
    if not isinstance(anns, list):
        raise DataError("expected a list", file=f, record="top level", field="annotations")
    occluded = np.zeros(len(anns), dtype=bool)
    crowd = np.zeros(len(anns), dtype=bool)
    for i, a in enumerate(anns):
        where = f"annotation {a.get('id', f'#{i}') if isinstance(a, dict) else f'#{i}'}"
        kp = as_array(require(a, "keypoints", file=f, where=where), (None,), file=f, where=where,
                      field="keypoints", dtype=np.float64)
        if kp.size % 3:
            raise DataError(f"{kp.size} values, not a multiple of 3", file=f, record=where, field="keypoints")
        v = kp[2::3]
        occluded[i] = (v == 1).sum() > min_fraction * (v > 0).sum()
        crowd[i] = bool(a.get("iscrowd", 0))
    keep = occluded | crowd
    if others == "drop":
        new_anns = [a for a, k in zip(anns, keep) if k]
    else:
        new_anns = [a if k else {**a, "num_keypoints": 0} for a, k in zip(anns, keep)]
    info = dict(data.get("info") or {})
    info["occluded_subset"] = {"source": f, "min_fraction": float(min_fraction), "others": others}
    doc = {**data, "annotations": new_anns, "info": info}
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, separators=(",", ":")))
    return {"file": str(path), "images": len(data.get("images") or []), "people": int((~crowd).sum()),
            "occluded": int((occluded & ~crowd).sum())}


class CocoDetections(Reader):
    """Person detections (``[{image_id, category_id, bbox, score}, ...]``) for top-down inference.

    Args:
        detections: the detection json (a list). images: a COCO json whose ``images`` section gives
            ``file_name``/``width``/``height`` (usually the keypoint annotation file).
        image_root: folder holding ``file_name`` (default: the images json's folder).
        skeleton: joint set the pose model predicts (recorded on the samples).
        score_threshold: keep detections with ``score >= score_threshold`` (0.x ``det_bbox_thr``, default 0).
        category_id: keep only this category (1 = person).
        mode: ``"instance"`` (one sample per box, in file order) or ``"image"`` (all boxes of an image).

    Samples: lazy ``image``, ``boxes (N, 4)`` xywh as detected (not cleaned), ``scores (N,)``, ``image_id``,
    no keypoints; ``meta``: ``width``, ``height``, ``file_name``, ``detection_index`` (positions in the file).
    """

    def __init__(self, detections: str | Path, images: str | Path, image_root: str | Path | None = None,
                 skeleton: str | Skeleton = "coco17", score_threshold: float = 0.0, category_id: int = 1,
                 mode: str = "instance") -> None:
        self.source = str(detections)
        f = self.source
        if mode not in ("instance", "image"):
            raise ValueError(f"mode must be 'instance' or 'image', got {mode!r}")
        self.mode = mode
        self.skeleton = resolve_skeleton(skeleton, f)
        self.image_root = Path(image_root) if image_root is not None else Path(images).parent
        img_data = load_json(images)
        if not isinstance(img_data, dict):
            raise DataError("expected a COCO JSON object with 'images'", file=str(images))
        self.image_ids, self.file_names, self.image_sizes, pos = read_coco_images(img_data, str(images),
                                                                                  False)

        dets = load_json(f)
        if not isinstance(dets, list):
            raise DataError(f"expected a JSON list of detections, got {type(dets).__name__}", file=f)
        boxes, scores, owner, kept = [], [], [], []
        for i, d in enumerate(dets):
            where = f"detection #{i}"
            if require(d, "category_id", file=f, where=where) != category_id:
                continue
            iid = require(d, "image_id", file=f, where=where)
            if iid not in pos:
                raise DataError(f"image_id {iid!r} is not in the images of {images}", file=f, record=where,
                                field="image_id")
            box = as_array(require(d, "bbox", file=f, where=where), (4,), file=f, where=where, field="bbox")
            score = as_array(require(d, "score", file=f, where=where), (), file=f, where=where, field="score")
            if float(score) < score_threshold:
                continue
            boxes.append(box)
            scores.append(float(score))
            owner.append(pos[iid])
            kept.append(i)
        self.boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(scores, dtype=np.float32)
        self.owner = np.asarray(owner, dtype=np.int64)
        self.detection_index = np.asarray(kept, dtype=np.int64)
        if mode == "image":
            self._order, self._offsets = _group(self.owner, len(self.image_ids))

    def __len__(self) -> int:
        return len(self.boxes) if self.mode == "instance" else len(self.image_ids)

    def _get(self, index: int) -> Sample:
        if self.mode == "instance":
            sel, img = np.array([index]), int(self.owner[index])
        else:
            sel, img = self._order[self._offsets[index]:self._offsets[index + 1]], index
        path = str(self.image_root / self.file_names[img])
        w, h = self.image_sizes[img]
        return Sample(
            image=LazyImage(path, read_image), image_path=path, boxes=self.boxes[sel],
            scores=self.scores[sel],
            skeleton=self.skeleton.name, source=self.source, index=index, image_id=self.image_ids[img],
            meta={"file_name": self.file_names[img], "detection_index": self.detection_index[sel],
                  "width": None if w < 0 else int(w), "height": None if h < 0 else int(h)},
        )
