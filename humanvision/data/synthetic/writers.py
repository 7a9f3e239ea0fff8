"""Write synthetic datasets in the official formats (each loads with its reader in :mod:`humanvision.data.readers`).

=============  ==============================================================================================
format         layout written under ``out_dir``
=============  ==============================================================================================
coco           ``{split}/{id:012d}.png``, ``annotations/person_keypoints_{split}.json`` (coco17; ``area`` = the
               person's visible mask pixels, ``v`` = 0 outside the image, 1 occluded, 2 visible) and
               ``annotations/person_detections_{split}.json`` (the GT boxes with noise and a score; the HRNet
               detection-results layout)
mpii           ``images/{id:06d}.png``, ``annotations/mpii_{split}.json`` (mmpose json, 1-based ``center`` and
               ``joints``, ``scale`` = box side / 200) and ``annotations/mpii_gt_{split}.mat`` (PCKh ground truth)
h36m           ``human36m-multiview-labels-GTbboxes.npy`` (learnable-triangulation labels, h36m17 world mm;
               boxes of the whole, unoccluded person) and
               ``processed/{subject}/{action}/imageSequence[-undistorted]/{camera}/img_{frame+1:06d}.jpg``
               (``imageSequence`` when the rig has lens distortion, read with ``undistorted=False``)
itop           ``ITOP_side_{split}_depth_map.h5`` and ``ITOP_side_{split}_labels.h5`` (320 x 240, f = 1/0.0035)
multimodal     ``index.json`` + ``rgb/``, ``depth/`` (16-bit mm), ``parts/``, ``instances/`` (pixel-aligned)
=============  ==============================================================================================

The HCMoCo formats ``ntu_hcmoco``, ``h36m_parsing`` and ``nturgbd_parsing`` are written by
:mod:`humanvision.data.synthetic.hcmoco` (dispatched by :func:`generate` too).
The person-crop formats ``market1501``, ``pa100k``, ``cuhk_pedes`` and ``person_crops`` (re-id, attributes,
text re-id, HAP pre-training) are written by :mod:`humanvision.data.synthetic.identities` (dispatched
too; ``num_images`` counts identities for market1501 and cuhk_pedes, images for the others).

Every ``generate_*`` function takes ``num_images`` as an int (one split, ``split``) or a dict ``{split: n}``
(e.g. ``{"train": 2000, "val": 200}``); splits draw disjoint frame indices from the same ``seed``, so a dataset
is reproducible byte for byte and its splits never share a frame. ``workers`` (coco, mpii, h36m, multimodal)
renders in that many processes, with the same output. ``progress(done, total)`` is called after every
frame. Each returns a summary dict (files, frames, people, visible joints).
"""

from __future__ import annotations

import functools
import json
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from humanvision.data.io import write_depth, write_image, write_mask
from humanvision.data.synthetic.body import JOINTS, PART
from humanvision.data.synthetic.parallel import worker_pool
from humanvision.data.synthetic.scene import SceneConfig, View, generate_frame, make_rig
from humanvision.geometry.camera import Camera
from humanvision.skeletons import get_skeleton

__all__ = ["FORMATS", "generate", "generate_coco", "generate_h36m", "generate_itop", "generate_mpii",
           "generate_multimodal", "select_joints", "split_offset"]

Progress = Callable[[int, int], None] | None
FORMATS = ("coco", "mpii", "h36m", "itop", "multimodal", "ntu_hcmoco", "h36m_parsing", "nturgbd_parsing",
           "market1501", "pa100k", "cuhk_pedes", "person_crops")


def split_offset(split: str) -> int:
    """First frame index of a split: train 0, val 10^9, test 2 x 10^9, others from a CRC of the name."""
    known = {"train": 0, "val": 1, "test": 2}
    k = known.get(split, 3 + zlib.crc32(split.encode()) % 1000)
    return k * 1_000_000_000


def _splits(num_images: int | dict[str, int], split: str) -> dict[str, int]:
    splits = dict(num_images) if isinstance(num_images, dict) else {split: int(num_images)}
    for s, n in splits.items():
        if int(n) < 0:
            raise ValueError(f"split {s!r}: number of images must be >= 0, got {n}")
    return splits


def select_joints(skeleton: str) -> np.ndarray:
    """Indices into :data:`~humanvision.data.synthetic.body.JOINTS` of a skeleton's joints (by canonical name)."""
    sk = get_skeleton(skeleton)
    missing = [j for j in sk.joints if j not in JOINTS]
    if missing:
        raise ValueError(f"the synthetic body has no joints {missing} of skeleton {sk.name!r}")
    return np.array([JOINTS.index(j) for j in sk.joints])


def _frame_at(cfg: SceneConfig, seed: int, cameras, amodal: bool, index: int):
    return generate_frame(cfg, seed, index, cameras=cameras, amodal=amodal)


def _frames(cfg: SceneConfig, seed: int, splits: dict[str, int], progress: Progress, cameras=None,
            workers: int = 1, amodal: bool = False):
    """Yield ``(split, i, frame)`` in order; ``workers > 1`` renders in that many processes (frames depend only on
    ``(seed, index)``, so the output is identical for any number of workers). ``amodal`` fills the views'
    ``amodal_boxes``."""
    jobs = [(split, i) for split, n in splits.items() for i in range(n)]
    indices = [split_offset(split) + i for split, i in jobs]
    render = functools.partial(_frame_at, cfg, seed, cameras, amodal)
    if workers > 1 and len(jobs) > 1:
        with worker_pool(min(int(workers), len(jobs))) as pool:  # fork-safe (see synthetic/parallel.py)
            yield from _report(jobs, pool.imap(render, indices, chunksize=4), progress)
    else:
        yield from _report(jobs, map(render, indices), progress)


def _report(jobs: list[tuple[str, int]], frames, progress: Progress):
    for done, ((split, i), frame) in enumerate(zip(jobs, frames, strict=True), 1):
        yield split, i, frame
        if progress is not None:
            progress(done, len(jobs))


def _visible_people(view: View, sel: np.ndarray, min_area: int = 1) -> list[int]:
    return [p for p in range(view.keypoints_2d.shape[0])
            if view.areas[p] >= min_area and (view.visibility[p, sel] > 0).any()]


def _clip_box(box: np.ndarray, w: int, h: int) -> list[float]:
    x0, y0 = max(box[0], 0.0), max(box[1], 0.0)
    x1, y1 = min(box[0] + box[2], float(w)), min(box[1] + box[3], float(h))
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


# ------------------------------------------------------------------------------------------------- COCO
def generate_coco(out_dir: str | Path, num_images: int | dict[str, int], size: tuple[int, int] = (256, 256),
                  seed: int = 0, split: str = "train", config: SceneConfig | None = None,
                  progress: Progress = None, workers: int = 1, **overrides) -> dict:
    """COCO person keypoints (coco17), one image per frame, plus noisy person detections.

    ``config`` (or keyword ``overrides`` of :class:`SceneConfig` fields, e.g. ``people=(1, 3)``) sets the scene;
    ``size`` is ``(width, height)``. Writes ``out/{split}/*.png``, ``out/annotations/person_keypoints_{split}.json``
    and ``out/annotations/person_detections_{split}.json``.
    """
    cfg = _config(config, size, 1, overrides)
    out = Path(out_dir)
    sk = get_skeleton("coco17")
    sel = select_joints("coco17")
    docs = {s: {"images": [], "annotations": []} for s in _splits(num_images, split)}
    dets: dict[str, list] = {s: [] for s in docs}
    ann_id, n_people, n_vis = 0, 0, 0
    for s, i, frame in _frames(cfg, seed, _splits(num_images, split), progress, workers=workers):
        view = frame.views[0]
        W, H = cfg.size
        image_id = i + 1
        name = f"{image_id:012d}.png"
        write_image(out / s / name, view.rgb)
        docs[s]["images"].append({"id": image_id, "file_name": name, "width": W, "height": H})
        noise = np.random.default_rng([int(seed), split_offset(s) + i, 7])
        for p in _visible_people(view, sel):
            ann_id += 1
            v = view.visibility[p, sel]
            kp = np.where((v > 0)[:, None], view.keypoints_2d[p, sel], 0.0)
            box = _clip_box(view.boxes[p], W, H)
            docs[s]["annotations"].append({
                "id": ann_id, "image_id": image_id, "category_id": 1, "bbox": box, "area": float(view.areas[p]),
                "iscrowd": 0, "num_keypoints": int((v > 0).sum()),
                "keypoints": np.concatenate([kp, v[:, None]], 1).reshape(-1).tolist()})
            n_people += 1
            n_vis += int((v == 2).sum())
            cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
            jit = noise.normal(0.0, 1.0, 4)
            bw, bh = box[2] * np.exp(0.08 * jit[2]), box[3] * np.exp(0.08 * jit[3])
            cx, cy = cx + 0.05 * box[2] * jit[0], cy + 0.05 * box[3] * jit[1]
            dets[s].append({"image_id": image_id, "category_id": 1,
                            "bbox": _clip_box(np.array([cx - bw / 2, cy - bh / 2, bw, bh]), W, H),
                            "score": float(np.clip(0.95 - 0.1 * abs(noise.normal()), 0.05, 1.0))})
    categories = [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(sk.joints),
                   "skeleton": [[a + 1, b + 1] for a, b in sk.limbs]}]
    files = []
    for s, doc in docs.items():
        doc["categories"] = categories
        doc["info"] = {"description": "humanvision synthetic people", "seed": int(seed), "split": s}
        files.append(_write_json(out / "annotations" / f"person_keypoints_{s}.json", doc))
        files.append(_write_json(out / "annotations" / f"person_detections_{s}.json", dets[s]))
    return {"format": "coco", "frames": sum(len(d["images"]) for d in docs.values()), "people": n_people,
            "visible_joints": n_vis, "files": [str(f) for f in files]}


def _write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, separators=(",", ":")))
    return path


def _config(config: SceneConfig | None, size, views: int, overrides: dict) -> SceneConfig:
    from dataclasses import replace

    cfg = config if config is not None else SceneConfig()
    return replace(cfg, size=(int(size[0]), int(size[1])), views=int(views), **overrides)


# ------------------------------------------------------------------------------------------------- MPII
MPII_JOINT_NAMES = ("rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor", "neck", "head", "rwri",
                    "relb", "rsho", "lsho", "lelb", "lwri")


def generate_mpii(out_dir: str | Path, num_images: int | dict[str, int], size: tuple[int, int] = (256, 256),
                  seed: int = 0, split: str = "train", config: SceneConfig | None = None,
                  progress: Progress = None, workers: int = 1, **overrides) -> dict:
    """MPII in mmpose's json (one record per person, 1-based pixels) plus ``mpii_gt_{split}.mat``.

    ``joints_vis`` is 1 for joints inside the image (MPII labels occluded joints too); ``jnt_missing`` is its
    complement. The head box is the square centred between ``upper_neck`` and ``head_top`` whose side is their
    2D distance (so PCKh's head size, 0.6 x its diagonal, follows the head's projected length).
    """
    import scipy.io

    cfg = _config(config, size, 1, overrides)
    out = Path(out_dir)
    sel = select_joints("mpii16")
    recs: dict[str, list] = {s: [] for s in _splits(num_images, split)}
    heads: dict[str, list] = {s: [] for s in recs}
    n_vis = 0
    for s, i, frame in _frames(cfg, seed, _splits(num_images, split), progress, workers=workers):
        view = frame.views[0]
        name = f"{split_offset(s) // 1_000_000_000}{i:06d}.png"
        write_image(out / "images" / name, view.rgb)
        for p in _visible_people(view, sel):
            v = (view.visibility[p, sel] > 0).astype(int)
            kp = view.keypoints_2d[p, sel]
            box = view.boxes[p]
            centre = box[:2] + box[2:] / 2
            recs[s].append({"image": name, "center": (centre + 1).tolist(), "scale": float(max(box[2:]) / 200),
                            "joints": np.where(v[:, None] > 0, kp + 1, 0.0).tolist(), "joints_vis": v.tolist()})
            top, neck = view.keypoints_2d[p, JOINTS.index("head_top")], view.keypoints_2d[p, JOINTS.index("upper_neck")]
            c, half = (top + neck) / 2, np.linalg.norm(top - neck) / 2
            heads[s].append(np.stack([c - half, c + half]) + 1)
            n_vis += int(v.sum())
    files = []
    for s, people in recs.items():
        files.append(_write_json(out / "annotations" / f"mpii_{s}.json", people))
        n = len(people)
        pos = np.array([r["joints"] for r in people], dtype=np.float64).reshape(n, 16, 2)
        vis = np.array([r["joints_vis"] for r in people], dtype=np.float64).reshape(n, 16)
        names = np.empty((1, 16), dtype=object)
        names[0, :] = MPII_JOINT_NAMES
        mat = out / "annotations" / f"mpii_gt_{s}.mat"
        scipy.io.savemat(str(mat), {"dataset_joints": names, "jnt_missing": (1 - vis).T,
                                    "pos_gt_src": pos.transpose(1, 2, 0),
                                    "headboxes_src": np.array(heads[s], dtype=np.float64).reshape(n, 2, 2)
                                    .transpose(1, 2, 0)}, do_compression=True)
        files.append(mat)
    return {"format": "mpii", "frames": sum(_splits(num_images, split).values()),
            "people": sum(len(r) for r in recs.values()), "visible_joints": n_vis, "files": [str(f) for f in files]}


# ------------------------------------------------------------------------------------------------- H36M
def _square_tlbr(box: np.ndarray, w: int, h: int) -> list[int]:
    """Human3.6M ``collect-bboxes``: square the tight box about its centre (new top/left = round(c - long/2))."""
    if box[2] <= 0 or box[3] <= 0:
        return [0, 0, 0, 0]
    left, top, right, bottom = box[0] + 0.5, box[1] + 0.5, box[0] + box[2] - 0.5, box[1] + box[3] - 0.5
    side = max(right - left, bottom - top)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    t, le, n = round(cy - side / 2), round(cx - side / 2), round(side)
    return [t, le, t + n, le + n]


def generate_h36m(out_dir: str | Path, num_images: int, size: tuple[int, int] = (1000, 1000), seed: int = 0,
                  views: int = 4, subjects: int = 1, actions: int = 1, config: SceneConfig | None = None,
                  progress: Progress = None, workers: int = 1, **overrides) -> dict:
    """Human3.6M-like multi-view frames with learnable-triangulation labels (one person, a fixed ring rig).

    Frames are spread over ``subjects`` (``S1``, ``S2``, ...) and ``actions`` (``Synthetic-1``, ...); every
    subject shares the dataset's calibrated rig (``views`` cameras named ``cam0``...). Read back with
    ``Human36MMultiView(out/"human36m-multiview-labels-GTbboxes.npy", out/"processed", undistorted=not
    distortion)``. ``bbox_by_camera_tlbr`` is the squared box of the person's whole silhouette, ignoring
    occluders (amodal, like Human3.6M's boxes from the unoccluded person mask, by which the 3D methods crop),
    clipped to the image before squaring; (0, 0, 0, 0) where the person is outside the image.
    """
    overrides.setdefault("people", (1, 1))
    cfg = _config(config, size, views, overrides)
    if cfg.people != (1, 1):
        raise ValueError("the Human3.6M format holds one person per frame; use people=(1, 1)")
    out = Path(out_dir)
    cams = make_rig(views, cfg.size, np.random.default_rng([int(seed), 2**31 - 1]), distortion=cfg.distortion)
    sel = select_joints("h36m17")
    sub_names = [f"S{k + 1}" for k in range(subjects)]
    act_names = [f"Synthetic-{k + 1}" for k in range(actions)]
    cam_names = [c.name for c in cams]
    folder = "imageSequence" if cfg.distortion else "imageSequence-undistorted"
    n = int(num_images)
    rows = []
    for _, i, frame in _frames(cfg, seed, {"train": n}, progress, cameras=cams, workers=workers, amodal=True):
        s, a = i * subjects // max(n, 1), (i * subjects * actions // max(n, 1)) % actions
        fidx = i
        bbs = []
        for view in frame.views:
            write_image(out / "processed" / sub_names[s] / act_names[a] / folder / view.camera.name /
                        f"img_{fidx + 1:06d}.jpg", view.rgb)
            bbs.append(_square_tlbr(view.amodal_boxes[0], *cfg.size))
        rows.append((s, a, fidx, frame.joints_world[0, sel].astype(np.float32), np.array(bbs, dtype=np.int16)))
    n_cam = len(cams)
    cam_dtype = np.dtype([("R", np.float32, (3, 3)), ("t", np.float32, (3, 1)), ("K", np.float32, (3, 3)),
                          ("dist", np.float32, (5,))])
    cam_arr = np.zeros((subjects, n_cam), dtype=cam_dtype)
    for si in range(subjects):
        for ci, c in enumerate(cams):
            cam_arr[si, ci] = (c.R, c.t.reshape(3, 1), c.K, np.zeros(5) if c.dist is None else c.dist)
    table_dtype = np.dtype([("subject_idx", np.int8), ("action_idx", np.int8), ("frame_idx", np.int16),
                            ("keypoints", np.float32, (17, 3)), ("bbox_by_camera_tlbr", np.int16, (n_cam, 4))])
    table = np.array(rows, dtype=table_dtype)
    labels = {"subject_names": sub_names, "camera_names": cam_names, "action_names": act_names,
              "cameras": cam_arr, "table": table}
    path = out / "human36m-multiview-labels-GTbboxes.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, labels, allow_pickle=True)
    return {"format": "h36m", "frames": n, "views": n_cam, "people": n, "files": [str(path)],
            "image_root": str(out / "processed"), "undistorted": not cfg.distortion}


# ------------------------------------------------------------------------------------------------- ITOP
ITOP_SIZE = (320, 240)
#: synthetic body part -> ITOP segmentation label (index of the itop15 joint the part belongs to)
_ITOP_PART = {"head": "head", "neck": "neck", "torso": "torso", "upper_arm": "shoulder", "lower_arm": "elbow",
              "hand": "hand", "upper_leg": "hip", "lower_leg": "knee", "foot": "foot"}


def _itop_part_lut() -> np.ndarray:
    itop = get_skeleton("itop15").joints
    lut = np.full(256, -1, dtype=np.int8)
    for name, label in PART.items():
        if name == "background":
            continue
        side, _, kind = name.partition("_") if name.startswith(("left_", "right_")) else ("", "", name)
        target = _ITOP_PART[kind]
        lut[label] = itop.index(f"{side}_{target}" if side and target not in ("head", "neck", "torso") else target)
    return lut


def _itop_camera(rng: np.random.Generator, target: np.ndarray) -> Camera:
    f = 1.0 / 0.0035
    az, dist = rng.uniform(0, 2 * np.pi), rng.uniform(2300, 3300)
    eye = np.array([target[0] + dist * np.cos(az), target[1] + dist * np.sin(az), rng.uniform(900, 1500)])
    K = [[f, 0, 160.0], [0, f, 120.0], [0, 0, 1]]
    aim = target + np.array([0, 0, rng.uniform(-150, 150)])
    return Camera.look_at(eye, aim, K=K, width=ITOP_SIZE[0], height=ITOP_SIZE[1], name="itop")


def generate_itop(out_dir: str | Path, num_images: int | dict[str, int], seed: int = 0, split: str = "train",
                  config: SceneConfig | None = None, progress: Progress = None, **overrides) -> dict:
    """ITOP side-view-like depth frames (320 x 240, the ITOP intrinsics), one person in front of the sensor.

    ``real_world_coordinates`` are camera-frame metres with ITOP's axes (x right, **y up**, z forward), depth is
    float16 metres (0 = nothing), ``segmentation`` maps each body part to the itop15 joint it belongs to
    (upper arm -> shoulder, lower arm -> elbow, thigh -> hip, shank -> knee; -1 background).
    """
    import h5py

    overrides.setdefault("people", (1, 1))
    cfg = _config(config, ITOP_SIZE, 1, overrides)
    out = Path(out_dir)
    sel = select_joints("itop15")
    lut = _itop_part_lut()
    files = []
    total = sum(_splits(num_images, split).values())
    done = 0
    for s, n in _splits(num_images, split).items():
        off = split_offset(s)
        ids, depth, seg, vis, kp2, kp3 = [], [], [], [], [], []
        for i in range(n):
            cam = _itop_camera(np.random.default_rng([int(seed), off + i, 11]), np.array([0.0, 0.0, 900.0]))
            view = generate_frame(cfg, seed, off + i, cameras=[cam]).views[0]
            ids.append(f"{i // 1000:02d}_{i % 1000:05d}".encode())
            depth.append((view.depth / 1000.0).astype(np.float16))
            seg.append(np.where(view.instances == 1, lut[view.parts], -1).astype(np.int8))
            vis.append((view.visibility[0, sel] == 2).astype(np.uint8))
            kp2.append(view.keypoints_2d[0, sel].astype(np.float32))
            kc = view.keypoints_cam[0, sel] / 1000.0
            kp3.append((kc * np.array([1.0, -1.0, 1.0])).astype(np.float32))
            done += 1
            if progress is not None:
                progress(done, total)
        dpath = out / f"ITOP_side_{s}_depth_map.h5"
        lpath = out / f"ITOP_side_{s}_labels.h5"
        out.mkdir(parents=True, exist_ok=True)
        H, W = ITOP_SIZE[1], ITOP_SIZE[0]
        with h5py.File(dpath, "w") as h:
            h.create_dataset("id", data=np.array(ids, dtype="S8"))
            h.create_dataset("data", data=np.array(depth, dtype=np.float16).reshape(n, H, W))
        with h5py.File(lpath, "w") as h:
            h.create_dataset("id", data=np.array(ids, dtype="S8"))
            h.create_dataset("is_valid", data=np.ones(n, dtype=np.uint8))
            h.create_dataset("visible_joints", data=np.array(vis, dtype=np.uint8).reshape(n, 15))
            h.create_dataset("image_coordinates", data=np.array(kp2, dtype=np.float32).reshape(n, 15, 2))
            h.create_dataset("real_world_coordinates", data=np.array(kp3, dtype=np.float32).reshape(n, 15, 3))
            h.create_dataset("segmentation", data=np.array(seg, dtype=np.int8).reshape(n, H, W))
        files += [dpath, lpath]
    return {"format": "itop", "frames": total, "people": total, "files": [str(f) for f in files]}


# ------------------------------------------------------------------------------------------------- multi-modal
def generate_multimodal(out_dir: str | Path, num_images: int | dict[str, int], size: tuple[int, int] = (320, 320),
                        seed: int = 0, split: str = "train", views: int = 1, skeleton: str = "mpii16",
                        config: SceneConfig | None = None, progress: Progress = None, workers: int = 1,
                        **overrides) -> dict:
    """Pixel-aligned RGB + depth (mm) + part/instance masks + 2D/3D keypoints (the ``index.json`` layout of
    :mod:`humanvision.data.readers.multimodal`), for contrastive pre-training (HCMoCo-style, ``mpii16`` joints by
    default). With ``views > 1`` every view of a frame is one sample (``attributes`` name the frame and view).
    With several splits, each gets ``index_{split}.json``; a single split writes ``index.json``."""
    from humanvision.data.readers.multimodal import write_multimodal_index

    cfg = _config(config, size, views, overrides)
    out = Path(out_dir)
    sel = select_joints(skeleton)
    splits = _splits(num_images, split)
    samples: dict[str, list] = {s: [] for s in splits}
    n_people = 0
    for s, i, frame in _frames(cfg, seed, splits, progress, workers=workers):
        for vi, view in enumerate(frame.views):
            sid = f"{s}_{i:06d}" + (f"_v{vi}" if len(frame.views) > 1 else "")
            paths = {k: f"{k}/{sid}.png" for k in ("rgb", "depth", "parts", "instances")}
            write_image(out / paths["rgb"], view.rgb)
            write_depth(out / paths["depth"], view.depth)
            write_mask(out / paths["parts"], view.parts)
            write_mask(out / paths["instances"], view.instances)
            people = []
            for p in range(view.keypoints_2d.shape[0]):
                v = view.visibility[p, sel]
                people.append({"keypoints": np.concatenate([view.keypoints_2d[p, sel], v[:, None]], 1).tolist(),
                               "keypoints_3d": view.keypoints_cam[p, sel].tolist(),
                               "box": view.boxes[p].tolist()})
            n_people += len(people)
            samples[s].append({"id": sid, "rgb": paths["rgb"], "depth": paths["depth"],
                               "part_mask": paths["parts"], "instance_mask": paths["instances"],
                               "width": cfg.size[0], "height": cfg.size[1], "camera": view.camera.to_dict(),
                               "attributes": {"source": "humanvision-synthetic", "seed": int(seed), "split": s,
                                              "frame": i, "view": vi, "part_names": list(PART)},
                               "people": people})
    files = []
    for s in splits:
        name = "index.json" if len(splits) == 1 else f"index_{s}.json"
        files.append(write_multimodal_index(out / name, get_skeleton(skeleton).name, samples[s]))
    return {"format": "multimodal", "frames": sum(splits.values()), "people": n_people,
            "files": [str(f) for f in files]}


def generate(fmt: str, out_dir: str | Path, num_images: int | dict[str, int], **kwargs) -> dict:
    """Dispatch to ``generate_{fmt}`` (see :data:`FORMATS`)."""
    # the HCMoCo and the person-crop formats (both modules import this one)
    from humanvision.data.synthetic import hcmoco, identities

    fns = {"coco": generate_coco, "mpii": generate_mpii, "h36m": generate_h36m, "itop": generate_itop,
           "multimodal": generate_multimodal, "ntu_hcmoco": hcmoco.generate_ntu_hcmoco,
           "h36m_parsing": hcmoco.generate_h36m_parsing, "nturgbd_parsing": hcmoco.generate_nturgbd_parsing,
           "market1501": identities.generate_market1501, "pa100k": identities.generate_pa100k,
           "cuhk_pedes": identities.generate_cuhk_pedes, "person_crops": identities.generate_person_crops}
    if fmt not in fns:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    return fns[fmt](out_dir, num_images, **kwargs)
