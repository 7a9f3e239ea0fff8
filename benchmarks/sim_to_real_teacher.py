"""The BlazePose teacher of ``benchmarks/sim_to_real.py``: people and their 2D keypoints on the real images.

Runs INSIDE the teacher environment ``data/real/.venv-teacher`` (mediapipe 0.10.21, which needs ``numpy<2`` and
``protobuf<5``, so it is never a dependency of the project); it imports mediapipe and OpenCV, never humanvision or
torch. ``benchmarks/sim_to_real.py`` builds that environment, prepares the images and calls this script; run by
hand it is

    data/real/.venv-teacher/bin/python benchmarks/sim_to_real_teacher.py --root data/real \\
        [--detections dets.json] [--det-thr 0.3]

It reads ``ROOT/manifest.json`` (written by ``sim_to_real.py``: ``{"images": [{"file", "group", "kind"}, ...]}``,
``kind`` ``pedestrian`` or ``still``) and writes ``ROOT/teacher.json``.

The teacher is BlazePose full (``mediapipe.solutions.pose.Pose(static_image_mode=True, model_complexity=1,
enable_segmentation=True)``, the ``pose_landmark_full.tflite`` that 0.10.21 ships; it ships no lite or heavy landmark
model): 33 landmarks with a visibility each and a person mask, one person per input. The people of an image are
found as follows.

1. Candidates. ``kind: pedestrian`` (the 2x upscaled vtest.avi frames): OpenCV's HOG people detector
   (``cv2.HOGDescriptor_getDefaultPeopleDetector()``, window stride 8, padding 16, scale step 1.05, every box with
   an SVM weight >= ``HOG_MIN_WEIGHT``). ``kind: still``: the whole image is the one candidate. With
   ``--detections FILE`` (a COCO-style detection list ``[{"image_id" | "image" | "file_name", "bbox": [x, y, w,
   h], "score", "category_id"?}]``, the image key being the file name or its stem, e.g. ``vtest_000025`` or
   ``messi5``, boxes in pixels of the prepared images, i.e. of the 2x upscaled frames): the images it names take
   its boxes (score >= ``--det-thr``, category 1 where a category is given) instead.
2. BlazePose on an enlarged crop per box candidate: a square of side ``CROP_SCALE`` x the box's longer side around
   the box centre, cut to the image. (A whole-image candidate is the image itself.)
3. Keep the person when the teacher is confident: at least ``MIN_CONFIDENT_JOINTS`` of the 17 COCO joints have a
   visibility >= ``VISIBILITY_THR`` (a head-and-shoulders portrait has 7), and, for a box candidate, the mean of
   those confident joints lies inside the candidate box (BlazePose found the candidate, not a neighbour in the
   enlarged crop).
4. De-duplicate: of two kept people whose teacher boxes overlap with IoU > ``DEDUP_IOU`` (two candidates on the
   same pedestrian), the one with the higher mean visibility of its COCO joints stays.
5. The teacher's person box (what the model under test is given, and whose height normalises the PCK): the extent
   of the confident landmarks (all 33 with visibility >= ``VISIBILITY_THR``), grown above by ``BOX_GROW_TOP`` of its
   height or, when the eyes and the mouth corners are confident, by ``HEAD_CROWN`` x the distance from the eyes'
   midpoint to the mouth's, whichever is larger (the crown lies about 1.7 eye-mouth distances above the eyes: in a
   close-up the body's extent says little about the head), by ``BOX_GROW_BOTTOM`` of its height below (the soles
   below the heel landmarks) and by ``BOX_GROW_SIDE`` of its longer side left and right, then cut to the image.
   Its height normalises the PCK.
6. The person's mask box (what the model under test is given by default): BlazePose's own person segmentation
   (``enable_segmentation=True``, the same landmark model's mask output, on the same crop) thresholded at
   ``MASK_THR``; of its 8-connected components, the one on which most of the confident COCO joints lie (at least
   half of those inside the crop, else no mask box); the box is that component's extent joined with the confident
   COCO joints, cut to the image. This is how COCO draws a box (the person's visible pixels): a head-and-shoulders
   portrait's box runs to the image border where the torso leaves the picture, while rule 5 stops at the shoulder
   landmarks. ``mask_box`` is null when no component qualifies (the evaluation then uses ``box``).

``teacher.json`` layout (coordinates are pixels of the prepared image file, x right, y down, as MediaPipe's
normalised coordinates times the image size):

    {"format": "humanvision-sim-to-real-teacher/1",
     "teacher": {"mediapipe", "opencv", "numpy", "model", "model_complexity", "thresholds": {...}},
     "blazepose_names": [33 names], "coco17_names": [17 names], "coco17_from_blazepose": [17 indices],
     "inputs": {"manifest_sha1", "detections", "detections_sha1", "script_sha1"},
     "seconds": total, "seconds_per_group": {...},
     "images": [{"file", "group", "kind", "width", "height", "box_source": "hog" | "whole" | "detections",
                 "candidates": n, "people": [
                     {"box": [x, y, w, h], "mask_box": [x, y, w, h] | null, "candidate_box": [x, y, w, h],
                      "score": mean COCO-joint visibility,
                      "landmarks": [[x, y, z, visibility, presence], x 33],   (presence: null, 0.10.21's legacy
                                                                                 pose does not fill it)
                      "keypoints": [[x, y], x 17], "confidence": [17 visibilities]}]}]}

``keypoints`` / ``confidence`` are ``landmarks`` taken at ``coco17_from_blazepose``. Real images are validation
data only: nothing here, and nothing that reads ``teacher.json``, may be used for training.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

# BlazePose's 33 landmarks, in the order of mediapipe's PoseLandmark enum (checked against it at run time).
BLAZEPOSE_NAMES = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index",
    "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)
# COCO-17 (humanvision's coco17 skeleton order). Both use the person's own left and right.
COCO17_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
)
# the BlazePose landmark of each COCO-17 joint
BLAZEPOSE_TO_COCO17 = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)

VISIBILITY_THR = 0.5       # a landmark is confident at visibility >= 0.5
MIN_CONFIDENT_JOINTS = 5   # of the 17 COCO joints, to keep a person
HOG_MIN_WEIGHT = 0.0       # HOG SVM weight of a pedestrian candidate
CROP_SCALE = 1.3           # BlazePose's crop: a square of 1.3 x the candidate box's longer side
DEDUP_IOU = 0.5            # teacher boxes overlapping more are one person
BOX_GROW_TOP, BOX_GROW_BOTTOM, BOX_GROW_SIDE = 0.10, 0.03, 0.05
HEAD_CROWN = 2.0           # crown margin in eye-to-mouth distances
MASK_THR = 0.5             # a pixel belongs to the person at segmentation >= 0.5
FACE = (2, 5, 9, 10)       # left_eye, right_eye, mouth_left, mouth_right
FORMAT = "humanvision-sim-to-real-teacher/1"


def sha1_file(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def teacher_box(landmarks: list[list[float]], width: int, height: int) -> list[float] | None:
    """The person box ``[x, y, w, h]`` from 33 ``[x, y, z, visibility, presence]`` landmarks (rule 5 above), or
    None when fewer than two landmarks are confident or the box has no area inside the image."""
    pts = [(p[0], p[1]) for p in landmarks if p[3] >= VISIBILITY_THR]
    if len(pts) < 2:
        return None
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    h, side = y1 - y0, max(x1 - x0, y1 - y0)
    top = BOX_GROW_TOP * h
    if all(landmarks[i][3] >= VISIBILITY_THR for i in FACE):
        (le, re, ml, mr) = (landmarks[i] for i in FACE)
        eye_mouth = ((le[0] + re[0] - ml[0] - mr[0]) ** 2 + (le[1] + re[1] - ml[1] - mr[1]) ** 2) ** 0.5 / 2
        top = max(top, HEAD_CROWN * eye_mouth)
    x0, x1 = max(0.0, x0 - BOX_GROW_SIDE * side), min(float(width), x1 + BOX_GROW_SIDE * side)
    y0, y1 = max(0.0, y0 - top), min(float(height), y1 + BOX_GROW_BOTTOM * h)
    if x1 <= x0 or y1 <= y0:
        return None
    return [x0, y0, x1 - x0, y1 - y0]


def mask_box(mask, window: tuple[int, int, int, int], landmarks: list[list[float]], width: int,
             height: int) -> list[float] | None:
    """Rule 6: the box ``[x, y, w, h]`` of the segmentation component under the confident COCO joints, joined with
    those joints, or None. ``mask``: the ``(y1 - y0, x1 - x0)`` segmentation of the crop ``window``."""
    import cv2
    import numpy as np

    x0, y0 = window[0], window[1]
    joints = [landmarks[i] for i in BLAZEPOSE_TO_COCO17 if landmarks[i][3] >= VISIBILITY_THR]
    count, labels, stats, _ = cv2.connectedComponentsWithStats((np.asarray(mask) >= MASK_THR).astype(np.uint8), 8)
    hits = []
    for p in joints:
        c, r = int(np.floor(p[0] - x0)), int(np.floor(p[1] - y0))
        if 0 <= r < labels.shape[0] and 0 <= c < labels.shape[1]:
            hits.append(int(labels[r, c]))
    inside = len(hits)
    hits = [h for h in hits if h > 0]
    if count < 2 or not hits:
        return None
    best = max(set(hits), key=hits.count)
    if 2 * hits.count(best) < inside:
        return None
    bx, by, bw, bh = (int(v) for v in stats[best, :4])
    xs = [x0 + bx, x0 + bx + bw] + [p[0] for p in joints]
    ys = [y0 + by, y0 + by + bh] + [p[1] for p in joints]
    left, right = max(0.0, float(min(xs))), min(float(width), float(max(xs)))
    top, bottom = max(0.0, float(min(ys))), min(float(height), float(max(ys)))
    if right <= left or bottom <= top:
        return None
    return [left, top, right - left, bottom - top]


def iou(a: list[float], b: list[float]) -> float:
    """IoU of two ``[x, y, w, h]`` boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def crop_window(box: list[float], width: int, height: int) -> tuple[int, int, int, int]:
    """The enlarged square crop ``(x0, y0, x1, y1)`` (integer pixels, cut to the image) around a candidate box."""
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    half = CROP_SCALE * max(box[2], box[3]) / 2
    x0, y0 = max(0, round(cx - half)), max(0, round(cy - half))
    x1, y1 = min(width, round(cx + half)), min(height, round(cy + half))
    return x0, y0, x1, y1


def load_detections(path: Path, thr: float) -> dict[str, list[list[float]]]:
    """Boxes per image stem from a COCO-style detection list (see the module docstring)."""
    try:
        records = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"error: {path}: cannot read detections: {e}")
    if not isinstance(records, list):
        sys.exit(f"error: {path}: expected a list of {{image_id, bbox, score}}")
    out: dict[str, list[list[float]]] = {}
    for i, r in enumerate(records):
        key = r.get("image", r.get("file_name", r.get("image_id"))) if isinstance(r, dict) else None
        box = r.get("bbox") if isinstance(r, dict) else None
        if key is None or not isinstance(box, list) or len(box) != 4:
            sys.exit(f"error: {path}: detection #{i}: needs 'image_id' (or 'image' / 'file_name') and a 4-number 'bbox'")
        try:
            box = [float(v) for v in box]
            score = float(r.get("score", 1.0))
        except (TypeError, ValueError):
            sys.exit(f"error: {path}: detection #{i}: bbox and score must be numbers")
        if box[2] <= 0 or box[3] <= 0:
            sys.exit(f"error: {path}: detection #{i}: bbox {box} has no area")
        if score < thr or r.get("category_id", 1) != 1:
            continue
        out.setdefault(Path(str(key)).stem, []).append(box)
    return out


def hog_candidates(hog, image_bgr) -> list[list[float]]:
    """HOG people boxes ``[x, y, w, h]`` with an SVM weight >= ``HOG_MIN_WEIGHT``."""
    rects, weights = hog.detectMultiScale(image_bgr, winStride=(8, 8), padding=(16, 16), scale=1.05)
    return [[float(v) for v in r] for r, w in zip(rects, list(weights.ravel()) if len(rects) else [])
            if w >= HOG_MIN_WEIGHT]


def run_blazepose(pose, image_rgb, window: tuple[int, int, int, int]):
    """BlazePose on ``image_rgb[y0:y1, x0:x1]``: (33 ``[x, y, z, visibility, presence]`` in image pixels, the
    crop's segmentation mask or None), or None."""
    import numpy as np

    x0, y0, x1, y1 = window
    crop = np.ascontiguousarray(image_rgb[y0:y1, x0:x1])
    res = pose.process(crop)
    if res.pose_landmarks is None:
        return None
    w, h = x1 - x0, y1 - y0
    landmarks = [[x0 + lm.x * w, y0 + lm.y * h, lm.z * w, float(lm.visibility),
                  float(lm.presence) if lm.HasField("presence") else None] for lm in res.pose_landmarks.landmark]
    return landmarks, res.segmentation_mask


def person_record(landmarks: list[list[float]], candidate: list[float] | None, width: int,
                  height: int, mask=None, window: tuple[int, int, int, int] | None = None) -> dict | None:
    """The kept person (rules 3, 5 and 6) or None."""
    kp = [landmarks[i] for i in BLAZEPOSE_TO_COCO17]
    conf = [p[3] for p in kp]
    confident = [p for p in kp if p[3] >= VISIBILITY_THR]
    if len(confident) < MIN_CONFIDENT_JOINTS:
        return None
    if candidate is not None:
        mx = sum(p[0] for p in confident) / len(confident)
        my = sum(p[1] for p in confident) / len(confident)
        if not (candidate[0] <= mx <= candidate[0] + candidate[2] and candidate[1] <= my <= candidate[1] + candidate[3]):
            return None
    box = teacher_box(landmarks, width, height)
    if box is None:
        return None
    r = lambda v: None if v is None else round(float(v), 3)
    mbox = None if mask is None else mask_box(mask, window, landmarks, width, height)
    return {"box": [r(v) for v in box], "mask_box": None if mbox is None else [r(v) for v in mbox],
            "candidate_box": None if candidate is None else [r(v) for v in candidate],
            "score": round(sum(conf) / len(conf), 4), "landmarks": [[r(v) for v in p] for p in landmarks],
            "keypoints": [[r(p[0]), r(p[1])] for p in kp], "confidence": [r(c) for c in conf]}


def dedup(people: list[dict]) -> list[dict]:
    """Rule 4: greedy by score, drop a person whose box overlaps a kept one by IoU > ``DEDUP_IOU``."""
    kept: list[dict] = []
    for p in sorted(people, key=lambda p: -p["score"]):
        if all(iou(p["box"], q["box"]) <= DEDUP_IOU for q in kept):
            kept.append(p)
    return kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("data/real"), help="Folder with manifest.json and the images.")
    ap.add_argument("--out", type=Path, default=None, help="Output json (default ROOT/teacher.json).")
    ap.add_argument("--detections", type=Path, default=None, help="COCO-style person detections json.")
    ap.add_argument("--det-thr", type=float, default=0.3, help="Score threshold of --detections.")
    a = ap.parse_args()

    import cv2
    import mediapipe as mp
    import numpy as np

    names = tuple(lm.name.lower() for lm in mp.solutions.pose.PoseLandmark)
    if names != BLAZEPOSE_NAMES:
        sys.exit(f"error: mediapipe {mp.__version__}: PoseLandmark order {names} is not the expected one")
    manifest_path = a.root / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        images = manifest["images"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        sys.exit(f"error: {manifest_path}: not a manifest written by sim_to_real.py: {e!r}")
    dets = load_detections(a.detections, a.det_thr) if a.detections is not None else {}
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    out_images, per_group = [], {}
    t_all = time.perf_counter()
    with mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=True) as pose:
        for entry in images:
            t0 = time.perf_counter()
            path = a.root / entry["file"]
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                sys.exit(f"error: {path}: cannot read the image (run benchmarks/sim_to_real.py --prepare-only)")
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            height, width = rgb.shape[:2]
            stem = Path(entry["file"]).stem
            if stem in dets:
                source, candidates = "detections", dets[stem]
            elif entry["kind"] == "pedestrian":
                source, candidates = "hog", hog_candidates(hog, bgr)
            else:
                source, candidates = "whole", [None]
            people = []
            for cand in candidates:
                window = (0, 0, width, height) if cand is None else crop_window(cand, width, height)
                if window[2] - window[0] < 8 or window[3] - window[1] < 8:
                    continue
                found = run_blazepose(pose, rgb, window)
                if found is not None and (p := person_record(found[0], cand, width, height, found[1],
                                                              window)) is not None:
                    people.append(p)
            people = dedup(people)
            out_images.append({"file": entry["file"], "group": entry["group"], "kind": entry["kind"],
                               "width": width, "height": height, "box_source": source,
                               "candidates": len(candidates), "people": people})
            per_group[entry["group"]] = per_group.get(entry["group"], 0.0) + time.perf_counter() - t0
            print(f"{entry['file']}: {len(candidates)} candidate(s) ({source}), {len(people)} kept", flush=True)
    seconds = time.perf_counter() - t_all
    script = Path(__file__).resolve()
    result = {
        "format": FORMAT,
        "teacher": {"mediapipe": mp.__version__, "opencv": cv2.__version__, "numpy": np.__version__,
                    "model": "BlazePose full (mediapipe/modules/pose_landmark/pose_landmark_full.tflite), "
                             "solutions.pose.Pose(static_image_mode=True, model_complexity=1, "
                             "enable_segmentation=True)",
                    "model_complexity": 1,
                    "thresholds": {"visibility": VISIBILITY_THR, "min_confident_joints": MIN_CONFIDENT_JOINTS,
                                   "hog_min_weight": HOG_MIN_WEIGHT, "crop_scale": CROP_SCALE,
                                   "dedup_iou": DEDUP_IOU, "box_grow_top": BOX_GROW_TOP,
                                   "box_grow_bottom": BOX_GROW_BOTTOM, "box_grow_side": BOX_GROW_SIDE,
                                   "head_crown": HEAD_CROWN, "mask": MASK_THR,
                                   "det_thr": a.det_thr if a.detections is not None else None}},
        "blazepose_names": list(BLAZEPOSE_NAMES), "coco17_names": list(COCO17_NAMES),
        "coco17_from_blazepose": list(BLAZEPOSE_TO_COCO17),
        "inputs": {"manifest_sha1": sha1_file(manifest_path),
                   "detections": None if a.detections is None else str(a.detections),
                   "detections_sha1": None if a.detections is None else sha1_file(a.detections),
                   "script_sha1": sha1_file(script)},
        "seconds": round(seconds, 2), "seconds_per_group": {k: round(v, 2) for k, v in per_group.items()},
        "images": out_images,
    }
    out = a.out or a.root / "teacher.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(out)
    kept = sum(len(im["people"]) for im in out_images)
    print(f"teacher: {kept} people in {len(out_images)} images, {seconds:.1f} s -> {out}")


if __name__ == "__main__":
    main()
