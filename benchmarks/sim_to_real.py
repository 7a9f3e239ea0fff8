"""Sim-to-real check: how well a pose model trained on the synthetic world agrees with a real teacher on real photos.

Issue 16. The only real images of people that exist offline carry no labels, so BlazePose (mediapipe 0.10.21, a
model trained on real people) stands in for the annotator, and the measure is *agreement with the teacher*: PCK at
0.1 x the teacher's person-box height over the joints the teacher is confident about and that lie inside the image
(:func:`humanvision.metrics.agreement.agreement`). Real images are for validation only: never train on them (nothing
in the project reads ``data/real/`` for training, and nothing may).

The whole procedure (one command; every step is cached and idempotent, so a second run only evaluates):

1. Data (``data/real/``, gitignored). ``apt-get download opencv-doc`` into a temporary folder and ``dpkg -x`` it
   (no root needed) -> ``stills/messi5.jpg``, ``stills/basketball1.png``, ``stills/basketball2.png`` and
   ``video/vtest.avi`` from ``usr/share/doc/opencv-doc/examples/data/``; ``stills/astronaut.png`` and
   ``stills/camera.png`` from the scikit-image wheel of the teacher environment; ``stills/grace_hopper.jpg`` from
   matplotlib's sample data. The pedestrians are every ``--every``-th frame of vtest.avi (default 12: frames 0, 12,
   ..., 792, 67 frames of 768x576, ~270 pedestrians kept by the teacher), upscaled 2x with ``cv2.INTER_CUBIC`` to 1536x1152
   (``pedestrians/vtest_{frame:06d}.png``): the teacher and the model both see the upscaled frames, and every
   coordinate is in their pixels. ``manifest.json`` lists the images and their groups.
2. The teacher environment ``data/real/.venv-teacher``: ``python3 -m venv`` + ``pip install mediapipe==0.10.21
   "numpy<2" "protobuf<5" scikit-image`` (needs PyPI once; mediapipe 0.10.21 has wheels for CPython 3.9-3.12,
   ``--teacher-python`` picks another interpreter). Never a dependency of the project.
3. The teacher: ``benchmarks/sim_to_real_teacher.py`` runs in that environment (its docstring has the rules:
   people from OpenCV's HOG people detector on the pedestrian frames, the whole image for the stills, or a
   ``--detections`` file; BlazePose on an enlarged crop per person; confidence thresholds; de-duplication; the
   person box = the confident landmarks' extent, grown; the mask box = the extent of BlazePose's own person
   segmentation) and writes ``data/real/teacher.json``. It reruns only when
   the images, the detection file or the teacher script change (or with ``--rerun-teacher``).
4. Evaluation, in the project environment: each model (a top-down 2D recipe on the COCO-17 skeleton, with its
   weights) predicts every teacher person from a box (the recipe's crop padding, flip test as ``eval.flip_test``,
   fp32 on ``--device``), exactly as ``humanvision infer`` does with ``--boxes``. ``--boxes mask`` (default): the
   person's mask box, the extent of its visible pixels as a COCO box or a person detector draws it (a portrait's
   box runs to the image border); ``--boxes landmarks``: the landmark box (it stops at the last confident
   landmark, e.g. the shoulders of a portrait). Either way the PCK is normalised by the landmark box's height, so
   the two choices are scored on the same scale.
   Results: a table per image group (pedestrians, the stills pooled, each still) x model, a per-joint table
   (pedestrians and stills), ``benchmarks/results/sim_to_real.json``, and under ``benchmarks/results/sim_to_real/``
   an overlay per still and a mosaic of the pedestrians per model (teacher green, model magenta).

Usage:

    python benchmarks/sim_to_real.py --config configs/synthetic_tiny.yaml --weights runs/synthetic_tiny
    python benchmarks/sim_to_real.py --model configs/synthetic_tiny.yaml runs/old old \\
                                     --model configs/synthetic_tiny.yaml runs/new new
    python benchmarks/sim_to_real.py --prepare-only          # data, teacher environment and teacher.json only
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from humanvision.errors import ConfigError, DataError
from humanvision.metrics.agreement import agreement, merge_agreement

HERE = Path(__file__).resolve().parent
TEACHER_SCRIPT = HERE / "sim_to_real_teacher.py"
TEACHER_PACKAGES = ("mediapipe==0.10.21", "numpy<2", "protobuf<5", "scikit-image")
TEACHER_FORMAT = "humanvision-sim-to-real-teacher/1"
OPENCV_DOC_DIR = "usr/share/doc/opencv-doc/examples/data"
OPENCV_DOC_FILES = {"messi5.jpg": "stills", "basketball1.png": "stills", "basketball2.png": "stills",
                    "vtest.avi": "video"}
STILLS = ("astronaut", "grace_hopper", "messi5", "basketball1", "basketball2", "camera")  # table order
STILL_FILES = {"astronaut": "astronaut.png", "camera": "camera.png", "grace_hopper": "grace_hopper.jpg",
               "messi5": "messi5.jpg", "basketball1": "basketball1.png", "basketball2": "basketball2.png"}
UPSCALE = 2
NUM_JOINTS = 17
TEACHER_COLOR, MODEL_COLOR = (40, 200, 40), (230, 40, 230)
BOX_CHOICES = ("mask", "landmarks")


def _load_teacher_module():
    """``sim_to_real_teacher`` (its tables and thresholds; it imports mediapipe only inside ``main``)."""
    spec = importlib.util.spec_from_file_location("sim_to_real_teacher", TEACHER_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sha1(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------- 1-2. data and environment
def ensure_teacher_env(root: Path, python: str = "python3") -> Path:
    """The teacher environment's interpreter: ``root/.venv-teacher`` created once with :data:`TEACHER_PACKAGES`
    (a marker file records a finished install; an interrupted one is redone). Exits with a clear message when the
    venv or pip fails."""
    venv = root / ".venv-teacher"
    exe = venv / "bin" / "python"
    marker = venv / ".humanvision-teacher"
    if marker.is_file() and marker.read_text().split("\n") == list(TEACHER_PACKAGES) and exe.exists():
        return exe
    root.mkdir(parents=True, exist_ok=True)
    print(f"building the teacher environment {venv} ({' '.join(TEACHER_PACKAGES)}; once, needs PyPI) ...",
          flush=True)
    steps = [[python, "-m", "venv", str(venv)],
             [str(exe), "-m", "pip", "install", "--disable-pip-version-check", "-q", *TEACHER_PACKAGES]]
    for cmd in steps:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except OSError as e:
            sys.exit(f"error: cannot run {cmd[0]}: {e} (--teacher-python names the interpreter for the venv)")
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-12:])
            sys.exit(f"error: building the teacher environment failed: {' '.join(cmd)}\n{tail}\n"
                     "The teacher needs mediapipe==0.10.21 from PyPI, which has wheels for CPython 3.9-3.12 only "
                     "(--teacher-python picks another interpreter); delete the folder and run again after fixing.")
    marker.write_text("\n".join(TEACHER_PACKAGES))
    return exe


def _run(cmd: list[str], cwd: str) -> None:
    """Run a data-preparation command; exit with its error output when it fails."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as e:
        sys.exit(f"error: cannot run {cmd[0]}: {e} (the pedestrians and messi5 come from Debian's opencv-doc)")
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed (run 'apt-get update' first?):\n{proc.stderr.strip()[-800:]}")


def _fetch_opencv_doc(root: Path) -> None:
    """messi5, basketball1/2 and vtest.avi from Debian's opencv-doc (``apt-get download`` + ``dpkg -x``)."""
    missing = [n for n, sub in OPENCV_DOC_FILES.items() if not (root / sub / n).is_file()]
    if not missing:
        return
    print("fetching opencv-doc (apt-get download, ~96 MB) for " + ", ".join(missing), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        _run(["apt-get", "download", "opencv-doc"], tmp)
        debs = sorted(Path(tmp).glob("opencv-doc_*.deb"))
        if not debs:
            sys.exit("error: apt-get download opencv-doc wrote no .deb")
        _run(["dpkg", "-x", str(debs[-1]), str(Path(tmp) / "x")], tmp)
        for name in missing:
            src = Path(tmp) / "x" / OPENCV_DOC_DIR / name
            if not src.is_file():
                sys.exit(f"error: opencv-doc has no {OPENCV_DOC_DIR}/{name}")
            (root / OPENCV_DOC_FILES[name]).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, root / OPENCV_DOC_FILES[name] / name)


def _package_file(python: Path | str, module: str, rel: str) -> Path:
    """A file shipped inside ``module``'s installed package, as the given interpreter sees it."""
    code = f"import {module}, pathlib; print(pathlib.Path({module}.__file__).parent)"
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"error: {python} cannot import {module}: {proc.stderr.strip()[-400:]}")
    return Path(proc.stdout.strip()) / rel


def _grace_hopper(teacher_python: Path) -> Path:
    try:
        import matplotlib

        return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    except ImportError:  # the teacher environment has matplotlib too (a mediapipe dependency)
        return _package_file(teacher_python, "matplotlib", "mpl-data/sample_data/grace_hopper.jpg")


def _pedestrian_frames(root: Path, every: int) -> list[dict]:
    """Every ``every``-th frame of ``video/vtest.avi``, 2x upscaled (cv2.INTER_CUBIC), as PNGs (written once)."""
    import cv2

    from humanvision.data.io import write_image
    from humanvision.runtime.video import VideoFrames

    out = root / "pedestrians"
    entries, todo = [], []
    reader = VideoFrames(root / "video" / "vtest.avi")
    wanted = range(0, reader.frames_expected or 795, every)
    for i in wanted:
        f = out / f"vtest_{i:06d}.png"
        entries.append({"file": str(f.relative_to(root)), "group": "pedestrians", "kind": "pedestrian", "frame": i})
        if not f.is_file():
            todo.append(i)
    if todo:
        print(f"extracting {len(todo)} vtest.avi frames (every {every}th, 2x upscaled)", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        need = set(todo)
        for i, frame in reader:
            if i in need:
                big = cv2.resize(frame, None, fx=UPSCALE, fy=UPSCALE, interpolation=cv2.INTER_CUBIC)
                write_image(out / f"vtest_{i:06d}.png", big)
                need.discard(i)
        if need:
            sys.exit(f"error: {root / 'video/vtest.avi'}: frames {sorted(need)[:5]} could not be read")
    return entries


def prepare_data(root: Path, every: int, teacher_python: Path) -> Path:
    """Steps 1: the images under ``root`` and ``root/manifest.json`` (rewritten only when its content changes, so
    the teacher does not rerun). Returns the manifest's path."""
    if every < 1:
        raise ConfigError(f"--every: must be >= 1, got {every}")
    _fetch_opencv_doc(root)
    stills = root / "stills"
    stills.mkdir(parents=True, exist_ok=True)
    sources = {"astronaut": lambda: _package_file(teacher_python, "skimage", "data/astronaut.png"),
               "camera": lambda: _package_file(teacher_python, "skimage", "data/camera.png"),
               "grace_hopper": lambda: _grace_hopper(teacher_python)}
    for name, src in sources.items():
        dst = stills / STILL_FILES[name]
        if not dst.is_file():
            path = src()
            if not path.is_file():
                sys.exit(f"error: {path} not found (the {name} image)")
            shutil.copyfile(path, dst)
    images = [{"file": f"stills/{STILL_FILES[n]}", "group": n, "kind": "still"} for n in STILLS]
    images += _pedestrian_frames(root, every)
    manifest = root / "manifest.json"
    text = json.dumps({"pedestrian_every": every, "pedestrian_upscale": UPSCALE, "images": images}, indent=1)
    if not manifest.is_file() or manifest.read_text() != text:
        manifest.write_text(text)
    return manifest


def run_teacher(root: Path, teacher_python: Path, detections: Path | None = None, det_thr: float = 0.3,
                force: bool = False) -> Path:
    """Step 3: ``root/teacher.json``, recomputed when missing, when its inputs (manifest, detection file, teacher
    script) changed, or with ``force``."""
    out = root / "teacher.json"
    want = {"manifest_sha1": _sha1(root / "manifest.json"),
            "detections": None if detections is None else str(detections),
            "detections_sha1": None if detections is None else _sha1(detections),
            "script_sha1": _sha1(TEACHER_SCRIPT)}
    if not force and out.is_file():
        try:
            have = json.loads(out.read_text())
            if have.get("inputs") == want and have["teacher"]["thresholds"].get("det_thr") == (
                    det_thr if detections is not None else None):
                return out
        except (json.JSONDecodeError, KeyError, TypeError):
            pass
    cmd = [str(teacher_python), str(TEACHER_SCRIPT), "--root", str(root), "--out", str(out)]
    if detections is not None:
        cmd += ["--detections", str(detections), "--det-thr", str(det_thr)]
    print("running the BlazePose teacher: " + " ".join(cmd), flush=True)
    env = dict(os.environ, GLOG_minloglevel="2", TF_CPP_MIN_LOG_LEVEL="2")
    if subprocess.run(cmd, env=env, check=False).returncode != 0:
        sys.exit("error: the teacher failed (see above)")
    return out


# ---------------------------------------------------------------------------------------------- teacher.json
@dataclass
class TeacherImage:
    """One image of ``teacher.json``: ``boxes`` ``(P, 4)`` xywh (the landmark boxes, the PCK's scale),
    ``mask_boxes`` ``(P, 4)`` (the segmentation boxes; a person without one, or a teacher file written before
    them, has its landmark box there), ``keypoints`` ``(P, 17, 2)`` and ``confidence`` ``(P, 17)`` (COCO-17 order,
    pixels of the image file)."""

    file: str
    group: str
    kind: str
    width: int
    height: int
    boxes: np.ndarray
    keypoints: np.ndarray
    confidence: np.ndarray
    mask_boxes: np.ndarray | None = None

    def input_boxes(self, which: str) -> np.ndarray:
        """The boxes the model is given: ``mask`` or ``landmarks``."""
        check_boxes(which)
        return self.boxes if which == "landmarks" or self.mask_boxes is None else self.mask_boxes


def check_boxes(which: str) -> None:
    """``--boxes`` is one of :data:`BOX_CHOICES` (a ConfigError otherwise)."""
    if which not in BOX_CHOICES:
        raise ConfigError(f"--boxes: one of {', '.join(BOX_CHOICES)}, got {which!r}")


def _numbers(value: Any, shape: tuple[int, ...], path: str, record: str, fld: str) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError("not numbers", file=path, record=record, field=fld) from None
    if a.shape != shape:
        raise DataError(f"expected shape {shape}, got {a.shape}", file=path, record=record, field=fld)
    if not np.isfinite(a).all():
        raise DataError("non-finite value", file=path, record=record, field=fld)
    return a


def read_teacher(path: str | Path) -> list[TeacherImage]:
    """The images and people of a ``teacher.json`` (layout: ``benchmarks/sim_to_real_teacher.py``); errors name the
    file, image / person and field."""
    path = str(path)
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read the teacher file: {e}", file=path) from None
    if not isinstance(data, dict) or data.get("format") != TEACHER_FORMAT:
        raise DataError(f"not a teacher file (format {TEACHER_FORMAT!r} expected)", file=path, field="format")
    if not isinstance(data.get("images"), list):
        raise DataError("expected a list", file=path, field="images")
    images = []
    for i, im in enumerate(data["images"]):
        rec = f"images[{i}]"
        if not isinstance(im, dict):
            raise DataError("expected an object", file=path, record=rec)
        for key in ("file", "group", "kind", "width", "height", "people"):
            if key not in im:
                raise DataError("missing", file=path, record=rec, field=key)
        rec = f"image {im['file']}"
        if not isinstance(im["people"], list):
            raise DataError("expected a list", file=path, record=rec, field="people")
        try:
            width, height = int(im["width"]), int(im["height"])
        except (TypeError, ValueError):
            raise DataError("width / height must be integers", file=path, record=rec) from None
        boxes, mask_boxes, kps, confs = [], [], [], []
        for j, p in enumerate(im["people"]):
            prec = f"{rec}, person {j}"
            if not isinstance(p, dict):
                raise DataError("expected an object", file=path, record=prec)
            for key in ("box", "keypoints", "confidence"):
                if key not in p:
                    raise DataError("missing", file=path, record=prec, field=key)
            box = _numbers(p["box"], (4,), path, prec, "box")
            if box[2] <= 0 or box[3] <= 0:
                raise DataError(f"box {box.tolist()} has no area", file=path, record=prec, field="box")
            boxes.append(box)
            mbox = p.get("mask_box")
            if mbox is not None:
                mbox = _numbers(mbox, (4,), path, prec, "mask_box")
                if mbox[2] <= 0 or mbox[3] <= 0:
                    raise DataError(f"box {mbox.tolist()} has no area", file=path, record=prec, field="mask_box")
            mask_boxes.append(box if mbox is None else mbox)
            kps.append(_numbers(p["keypoints"], (NUM_JOINTS, 2), path, prec, "keypoints"))
            confs.append(_numbers(p["confidence"], (NUM_JOINTS,), path, prec, "confidence"))
        images.append(TeacherImage(
            file=str(im["file"]), group=str(im["group"]), kind=str(im["kind"]), width=width, height=height,
            boxes=np.array(boxes).reshape(-1, 4), keypoints=np.array(kps).reshape(-1, NUM_JOINTS, 2),
            confidence=np.array(confs).reshape(-1, NUM_JOINTS), mask_boxes=np.array(mask_boxes).reshape(-1, 4)))
    return images


def teacher_counts(images: list[TeacherImage]) -> dict[str, dict[str, int]]:
    """Images and people per group (``stills``: every still pooled)."""
    out: dict[str, dict[str, int]] = {}
    for im in images:
        for g in (im.group, "stills") if im.kind == "still" else (im.group,):
            c = out.setdefault(g, {"images": 0, "people": 0})
            c["images"] += 1
            c["people"] += len(im.boxes)
    return out


# --------------------------------------------------------------------------------------------- 4. evaluation
def load_model(config: str | Path, weights: str | Path, device: str = "cpu"):
    """``(method, transform, flip_test)`` of a top-down 2D recipe (heatmap or PCT stage II) and its weights, as
    ``humanvision infer`` builds them. A model on another skeleton than COCO-17 is a ConfigError."""
    import torch  # noqa: F401  (the methods need it)

    from humanvision.cli.pose import _load_recipe
    from humanvision.methods import pct
    from humanvision.methods.topdown import TopDownRecipe, build_method, build_transform

    recipe = _load_recipe(Path(config), [], unchecked=("data.", "model.weights", "model.backbone_weights"))
    if pct.is_pct_recipe(recipe):
        pct.require_classifier(recipe, "sim_to_real")
        build_method, build_transform = pct.build_method, pct.build_transform
    elif not isinstance(recipe, TopDownRecipe):
        raise ConfigError(f"{config}: not a top-down 2D pose recipe (the teacher gives 2D COCO-17 keypoints)")
    method = build_method(recipe, weights=weights).eval().to(device)
    if method.skeleton.name != "coco17" or len(method.skeleton.joints) != NUM_JOINTS:
        raise ConfigError(f"{config}: the model predicts the {method.skeleton.name} skeleton; the teacher "
                          "comparison needs coco17 (model.skeleton)")
    return method, build_transform(method, recipe.data, train=False), bool(recipe.eval.flip_test)


def predict_people(method, transform, image: np.ndarray, boxes: np.ndarray, flip_test: bool = True,
                   record: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Keypoints ``(P, K, 2)`` in image pixels and scores ``(P, K)`` of the people in ``boxes`` (xywh)."""
    import torch

    from humanvision.data.transforms import keypoints_to_image

    if len(boxes) == 0:
        k = len(method.skeleton.joints)
        return np.zeros((0, k, 2)), np.zeros((0, k))
    crops, centers, scales = [], [], []
    for box in boxes:
        img, _, meta = transform(image, bbox=np.asarray(box, dtype=np.float64), record=record)
        crops.append(img)
        centers.append(meta["center"])
        scales.append(meta["scale"])
    device = next(method.parameters()).device
    with torch.no_grad():
        kp, sc = method.predict(torch.stack(crops).to(device), flip_test=flip_test)
    kp_img = keypoints_to_image(kp.double().cpu().numpy(), np.asarray(centers), np.asarray(scales),
                                transform.input_size, transform.udp)
    return kp_img, sc.double().cpu().numpy()


def evaluate_model(method, transform, images: list[TeacherImage], root: Path, flip_test: bool = True,
                   thr: float = 0.1, conf_thr: float = 0.5, boxes: str = "mask") -> dict[str, Any]:
    """Predict every teacher person from its ``boxes`` box (``mask`` or ``landmarks``) and score it, at the
    landmark box's height: ``{"groups": {group: agreement dict}, "predictions": {file: (P, 17, 2)}}``; groups are
    each image group and ``stills`` (every still pooled)."""
    from humanvision.data.io import read_image

    per_group: dict[str, list[dict]] = {}
    predictions: dict[str, np.ndarray] = {}
    for im in images:
        image = read_image(root / im.file)
        if image.shape[:2] != (im.height, im.width):
            raise DataError(f"image is {image.shape[1]}x{image.shape[0]}, the teacher saw {im.width}x{im.height}",
                            file=str(root / im.file))
        kp, _ = predict_people(method, transform, image, im.input_boxes(boxes), flip_test, record=im.file)
        predictions[im.file] = kp
        if len(im.boxes) == 0:
            continue
        res = agreement(kp, im.keypoints, im.confidence, im.boxes[:, 3], thr=thr, conf_thr=conf_thr,
                        image_sizes=np.tile([im.width, im.height], (len(im.boxes), 1)))
        per_group.setdefault(im.group, []).append(res)
        if im.kind == "still":
            per_group.setdefault("stills", []).append(res)
    return {"groups": {g: merge_agreement(r) for g, r in per_group.items()}, "predictions": predictions}


# ---------------------------------------------------------------------------------------------- 5. reporting
def _draw_pair(image: np.ndarray, pred: np.ndarray, teacher: np.ndarray, conf: np.ndarray, conf_thr: float,
               radius: int | None = None, thickness: int | None = None) -> np.ndarray:
    """The teacher's confident joints (green) and the model's joints (magenta) on ``image``."""
    from humanvision.skeletons import get_skeleton
    from humanvision.viz import draw_skeleton

    sk = get_skeleton("coco17")
    k, nl = len(sk.joints), len(sk.limbs)
    out = draw_skeleton(image, teacher, sk, scores=conf, threshold=conf_thr, radius=radius, thickness=thickness,
                        joint_colors=[TEACHER_COLOR] * k, limb_colors=[TEACHER_COLOR] * nl)
    return draw_skeleton(out, pred, sk, scores=np.ones(pred.shape[:-1]), threshold=0.0, radius=radius,
                         thickness=thickness, joint_colors=[MODEL_COLOR] * k, limb_colors=[MODEL_COLOR] * nl)


def _legend(image: np.ndarray, name: str) -> np.ndarray:
    """``image`` with a two-line legend in its top-left corner: teacher (green), ``name`` (magenta)."""
    import cv2

    out = image.copy()
    scale = max(0.4, image.shape[1] / 1000)
    lines = [("teacher (BlazePose)", TEACHER_COLOR), (name, MODEL_COLOR)]
    (tw, th), base = cv2.getTextSize(max((t for t, _ in lines), key=len), cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    step = th + base + 4
    cv2.rectangle(out, (0, 0), (tw + 10, step * len(lines) + 6), (255, 255, 255), -1)
    for i, (text, color) in enumerate(lines):
        cv2.putText(out, text, (5, 4 + th + i * step), cv2.FONT_HERSHEY_SIMPLEX, scale, color, max(1, round(scale)),
                    cv2.LINE_AA)
    return out


def write_pictures(name: str, images: list[TeacherImage], predictions: dict[str, np.ndarray], root: Path,
                   out_dir: Path, conf_thr: float = 0.5, mosaic_people: int = 48, boxes: str = "mask") -> list[Path]:
    """``{name}_{still}.png`` per still with people and their input boxes, and ``{name}_pedestrians.png`` (the
    first ``mosaic_people`` pedestrians, each cropped around its teacher box at 192 px height): teacher green,
    model magenta."""
    import cv2

    from humanvision.data.io import read_image, write_image
    from humanvision.viz import draw_boxes, make_grid

    out_dir.mkdir(parents=True, exist_ok=True)
    written, tiles = [], []
    for im in images:
        pred = predictions.get(im.file)
        if pred is None or len(im.boxes) == 0:
            continue
        image = read_image(root / im.file)
        if im.kind == "still":
            vis = draw_boxes(image, im.input_boxes(boxes), color=TEACHER_COLOR)
            vis = _draw_pair(vis, pred, im.keypoints, im.confidence, conf_thr)
            written.append(write_image(out_dir / f"{name}_{im.group}.png", _legend(vis, name)))
            continue
        for p in range(len(im.boxes)):
            if len(tiles) >= mosaic_people:
                break
            x, y, w, h = im.boxes[p]
            x0, y0 = int(max(0, x - 0.15 * w)), int(max(0, y - 0.1 * h))
            x1, y1 = int(min(im.width, x + 1.15 * w)), int(min(im.height, y + 1.1 * h))
            k = 192.0 / max(1, y1 - y0)
            crop = cv2.resize(image[y0:y1, x0:x1], (max(1, round((x1 - x0) * k)), 192), interpolation=cv2.INTER_AREA)
            shift = np.array([x0, y0])
            tiles.append(_draw_pair(crop, (pred[p] - shift) * k, (im.keypoints[p] - shift) * k, im.confidence[p],
                                    conf_thr, radius=3, thickness=2))
    if tiles:
        written.append(write_image(out_dir / f"{name}_pedestrians.png", _legend(make_grid(tiles, ncols=12), name)))
    return written


def _jsonable(res: dict[str, Any], joints: tuple[str, ...]) -> dict[str, Any]:
    f = lambda v: None if not np.isfinite(v) else round(float(v), 4)
    return {"pck": f(res["pck"]), "correct": res["correct"], "count": res["count"], "people": res["people"],
            "per_joint": {j: {"pck": f(res["per_joint_pck"][i]), "count": int(res["per_joint_count"][i])}
                          for i, j in enumerate(joints)}}


def group_order(groups: set[str]) -> list[str]:
    """pedestrians, stills (pooled), the stills in :data:`STILLS` order, then anything else."""
    head = ["pedestrians", "stills", *STILLS]
    return [g for g in head if g in groups] + sorted(groups - set(head))


def print_tables(results: dict[str, Any], counts: dict[str, dict[str, int]]) -> None:
    from rich.console import Console
    from rich.table import Table

    thr, conf_thr = results["thr"], results["conf_thr"]
    models = results["models"]
    console = Console()
    t = Table(title=f"agreement with the BlazePose teacher, PCK@{thr:g} x landmark-box height (joints counted)",
              caption=f"counted: teacher joints with visibility >= {conf_thr:g} inside the image; "
                      f"people: the teacher's; the model's boxes: {results.get('boxes', 'landmarks')}")
    t.add_column("group")
    t.add_column("people", justify="right")
    for m in models:
        t.add_column(m["name"], justify="right")
    for g in group_order(set(counts)):
        row = [g, str(counts[g]["people"])]
        for m in models:
            r = m["groups"].get(g)
            row.append("-" if r is None or r["pck"] is None else f"{r['pck']:.3f} ({r['count']})")
        t.add_row(*row)
    console.print(t)
    joints = results["joints"]
    t = Table(title=f"per joint PCK@{thr:g} (pedestrians / stills pooled)")
    t.add_column("joint", no_wrap=True)
    for m in models:
        for g in ("pedestrians", "stills"):
            t.add_column(f"{m['name']} {g}", justify="right")
    for j in joints:
        row = [j]
        for m in models:
            for g in ("pedestrians", "stills"):
                r = m["groups"].get(g)
                v = None if r is None else r["per_joint"][j]
                row.append("-" if v is None or v["pck"] is None else f"{v['pck']:.2f} ({v['count']})")
        t.add_row(*row)
    console.print(t)


def compare(models: list[tuple[str, Path, Path]], teacher_file: Path, root: Path, thr: float = 0.1,
            conf_thr: float = 0.5, device: str = "cpu", vis_dir: Path | None = None,
            boxes: str = "mask") -> dict[str, Any]:
    """Evaluate ``(name, config, weights)`` models against ``teacher_file`` from ``boxes`` boxes (``mask`` or
    ``landmarks``): the results dict of ``sim_to_real.json`` (pictures under ``vis_dir`` when given)."""
    from humanvision.skeletons import get_skeleton

    check_boxes(boxes)  # before any model loads
    images = read_teacher(teacher_file)
    joints = get_skeleton("coco17").joints
    teacher_meta = json.loads(Path(teacher_file).read_text())
    results: dict[str, Any] = {
        "thr": thr, "conf_thr": conf_thr, "boxes": boxes, "joints": list(joints),
        "teacher": {"file": str(teacher_file), "counts": teacher_counts(images),
                    "seconds": teacher_meta.get("seconds"), "seconds_per_group": teacher_meta.get("seconds_per_group"),
                    **{k: teacher_meta.get("teacher", {}).get(k) for k in ("mediapipe", "opencv", "thresholds")}},
        "models": [],
    }
    for name, config, weights in models:
        t0 = time.perf_counter()
        method, transform, flip = load_model(config, weights, device)
        ev = evaluate_model(method, transform, images, root, flip_test=flip, thr=thr, conf_thr=conf_thr,
                            boxes=boxes)
        entry = {"name": name, "config": str(config), "weights": str(weights), "flip_test": flip,
                 "seconds": round(time.perf_counter() - t0, 2),
                 "groups": {g: _jsonable(r, joints) for g, r in ev["groups"].items()}}
        if vis_dir is not None:
            entry["pictures"] = [str(p) for p in write_pictures(name, images, ev["predictions"], root, vis_dir,
                                                                conf_thr, boxes=boxes)]
        results["models"].append(entry)
    return results


def _models(a: argparse.Namespace) -> list[tuple[str, Path, Path]]:
    models = []
    if (a.config is None) != (a.weights is None):
        raise ConfigError("--config and --weights go together")
    if a.config is not None:
        models.append((a.name or Path(a.weights).stem, Path(a.config), Path(a.weights)))
    elif a.name is not None:
        raise ConfigError("--name names the model of --config / --weights")
    for vals in a.model or []:
        if len(vals) not in (2, 3):
            raise ConfigError(f"--model takes CONFIG WEIGHTS [NAME], got {vals}")
        models.append((vals[2] if len(vals) == 3 else Path(vals[1]).stem, Path(vals[0]), Path(vals[1])))
    names = [m[0] for m in models]
    if len(set(names)) != len(names):
        raise ConfigError(f"model names must differ (NAME of --model, --name): {names}")
    for name, config, weights in models:
        if not config.is_file():
            raise ConfigError(f"{name}: config not found: {config}")
        if not weights.exists():
            raise ConfigError(f"{name}: weights not found: {weights}")
    return models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Real images are validation only: never train on them.")
    ap.add_argument("--config", help="Recipe of the model (a top-down 2D recipe on coco17).")
    ap.add_argument("--weights", help="Its weights: a run folder or a weights file.")
    ap.add_argument("--name", help="Its name in the tables (default: the weights' name).")
    ap.add_argument("--model", nargs="+", action="append", metavar="CONFIG WEIGHTS [NAME]",
                    help="Another model (repeatable): recipe, weights and an optional name.")
    ap.add_argument("--prepare-only", action="store_true", help="Data, teacher environment and teacher.json only.")
    ap.add_argument("--root", type=Path, default=Path("data/real"), help="Cache of the real images (gitignored).")
    ap.add_argument("--every", type=int, default=12, help="Pedestrians: every N-th frame of vtest.avi.")
    ap.add_argument("--detections", type=Path, help="COCO-style person detections to use as the teacher's "
                    "candidates for the images they name (keys: file stems, boxes in prepared-image pixels).")
    ap.add_argument("--det-thr", type=float, default=0.3, help="Score threshold of --detections.")
    ap.add_argument("--rerun-teacher", action="store_true", help="Recompute teacher.json.")
    ap.add_argument("--teacher-python", default="python3", help="Interpreter that creates the teacher venv.")
    ap.add_argument("--thr", type=float, default=0.1, help="PCK threshold (fraction of the box height).")
    ap.add_argument("--boxes", choices=BOX_CHOICES, default="mask",
                    help="The model's person boxes: the teacher's segmentation extent (mask, a detector-like box) "
                         "or its landmark extent (landmarks). The PCK scale is the landmark box either way.")
    ap.add_argument("--conf-thr", type=float, default=0.5, help="Teacher visibility threshold.")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "sim_to_real.json")
    ap.add_argument("--vis-dir", type=Path, default=HERE / "results" / "sim_to_real")
    a = ap.parse_args()
    try:
        models = _models(a)
        if not models and not a.prepare_only:
            raise ConfigError("give a model (--config + --weights, or --model CONFIG WEIGHTS [NAME]) or "
                              "--prepare-only")
        if a.every < 1:
            raise ConfigError(f"--every: must be >= 1, got {a.every}")
        if a.detections is not None and not a.detections.is_file():
            raise ConfigError(f"--detections: file not found: {a.detections}")
    except ConfigError as e:
        ap.error(str(e))
    from humanvision.errors import HumanVisionError

    root = a.root
    try:
        teacher_python = ensure_teacher_env(root, a.teacher_python)
        prepare_data(root, a.every, teacher_python)
        teacher_file = run_teacher(root, teacher_python, a.detections, a.det_thr, force=a.rerun_teacher)
        images = read_teacher(teacher_file)
    except HumanVisionError as e:
        sys.exit(f"error: {e}")
    counts = teacher_counts(images)
    meta = json.loads(teacher_file.read_text())
    print(f"teacher: {sum(len(i.boxes) for i in images)} people in {len(images)} images "
          f"({meta.get('seconds')} s when computed): "
          + ", ".join(f"{g} {c['people']}" for g, c in ((g, counts[g]) for g in group_order(set(counts)))))
    if a.prepare_only:
        return
    try:
        results = compare(models, teacher_file, root, a.thr, a.conf_thr, a.device, a.vis_dir, a.boxes)
    except HumanVisionError as e:
        sys.exit(f"error: {e}")
    results["env"] = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=1))
    print_tables(results, counts)
    print(f"-> {a.out}, pictures in {a.vis_dir}")


if __name__ == "__main__":
    main()
