"""Synthetic datasets for HCMoCo (pretraining.md A.2, A.7.2, A.7.3), written in the official layouts of
:mod:`humanvision.data.readers.ntu` and :mod:`humanvision.data.readers.parsing`.

==================  =============================================================================================
format              layout written under ``out_dir``
==================  =============================================================================================
ntu_hcmoco          ``nturgb+d_rgb_warped_correction/{tag}/WRGB-{n:08d}.jpg`` (n from 1),
                    ``nturgb+d_depth_masked/{tag}/MDepth-{n:08d}.png`` (uint16 mm, only the person's pixels),
                    ``nturgb+d_parsed_skeleton/{tag}/Skeleton-{n - 1:08d}.pkl`` (from 0) and
                    ``NTU_RGBD_samples_with_missing_skeletons.txt``; optional
                    ``nturgb+d_point_cloud/{tag}/PC-{n:08d}.npy`` (``point_cloud_points``)
h36m_parsing        ``protocol_1/{rgb,seg}/{subject}/Synthetic {a}.{camera}/{frame:08d}.png`` (seg: raw part ids),
                    ``flist_2hz_{train,eval}.txt`` (train subjects S1, S5-S8; eval S9, S11; frames 25 apart)
nturgbd_parsing     ``images/{id}.jpg``, ``depth/MDepth-{id}.png``, ``png_annotation_v2/{id}.png`` (raw ids),
                    ``{train,val}_list_v2.txt`` (full) and ``{train,val}_list_v3.txt`` (the first 20%),
                    ``NTURGBD-Parsing-4K_list.txt``
==================  =============================================================================================

The NTU-like frames are single people seen by a Kinect-v2-like depth camera (f = 365 px at 512 px width,
principal point at the image centre, 2.5-3.5 m away); RGB is rendered in the depth camera itself, so the
"warped" RGB is pixel-aligned with the depth by construction and ``rgb_loc`` equals ``d_loc``. Skeletons are the
world's joints in Kinect-25 order (``ntu25``), all 25 of which the world has by name; the approximations are the
world's own joint placements (Kinect's SpineBase = the mid-hip ``pelvis``, SpineMid = ``spine``, SpineShoulder =
the mid-shoulder ``thorax``, Neck = the base of the neck, Head = the head centre, Hand = the palm centre).
``d_loc`` is the depth-image pixel (x, y); ``3d_loc`` is camera-frame metres with y up (x right in the image,
z forward); the Kinect SDK's x sign is not given by the brief. Joints outside the image stay as projected (the
reader marks them invisible).

Parsing labels come from :func:`parsing_labels`: each body-part pixel of the rendered part map gets its coarse
class (:data:`~humanvision.data.readers.parsing.SYNTH_PART_TO_CLASS`), refined along the bones from the pixel's
back-projected surface point (e.g. the first 20% of the upper arm from the shoulder is ``shoulder``, the last
15% ``elbow``), so all 25 classes occur. Label files store the raw Human3.6M ids, as the official ones do.

Everything is deterministic per ``seed``: frame ``i`` depends only on ``(config, seed, i)``; ``workers``
renders in that many processes with the same output.
"""

from __future__ import annotations

import functools
import math
import pickle
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from humanvision.data.io import write_depth, write_image, write_mask
from humanvision.data.readers.ntu import NTU_DEPTH_DIR, NTU_MISSING_SKELETONS, NTU_RGB_DIR, NTU_SKELETON_DIR
from humanvision.data.readers.parsing import (
    PARSING_CLASSES,
    SYNTH_PART_TO_CLASS,
    class_to_raw,
    twenty_percent,
)
from humanvision.data.synthetic.body import JOINT_INDEX, PART_NAMES
from humanvision.data.synthetic.parallel import worker_pool
from humanvision.data.synthetic.scene import Frame, SceneConfig, View, generate_frame
from humanvision.data.synthetic.writers import (
    Progress,
    _config,
    _frames,
    _splits,
    select_joints,
    split_offset,
)
from humanvision.geometry.camera import Camera, unproject_points

__all__ = [
    "H36M_PARSING_CAMERAS",
    "H36M_PARSING_SUBJECTS",
    "NTU_POINT_CLOUD_DIR",
    "generate_h36m_parsing",
    "generate_ntu_hcmoco",
    "generate_nturgbd_parsing",
    "kinect_camera",
    "ntu_tag",
    "parsing_labels",
]

NTU_POINT_CLOUD_DIR = "nturgb+d_point_cloud"
H36M_PARSING_SUBJECTS = {"train": ("S1", "S5", "S6", "S7", "S8"), "eval": ("S9", "S11")}
H36M_PARSING_CAMERAS = ("54138969", "55011271", "58860488", "60457274")
_H36M_SPLIT = {"train": "train", "eval": "eval", "val": "eval", "test": "eval"}
_NTU_PARSING_SPLIT = {"train": "train", "val": "val", "eval": "val", "test": "val"}
#: Kinect v2 depth focal length (px) at 512 px image width.
KINECT_FOCAL_512 = 365.0


# ------------------------------------------------------------------------------------------------- parsing labels
_CLASS = {n: i for i, n in enumerate(PARSING_CLASSES)}
_COARSE = np.array([_CLASS[SYNTH_PART_TO_CLASS[p]] for p in PART_NAMES], dtype=np.uint8)
#: limb part -> (proximal joint, distal joint, [(t upper bound, class), ...]) with t the position of a surface
#: point along the bone (0 at the proximal joint, 1 at the distal one); names are per side.
_LIMB_RULES: dict[str, tuple[str, str, tuple[tuple[float, str], ...]]] = {
    "upper_arm": ("shoulder", "elbow", ((0.2, "shoulder"), (0.85, "arm"), (math.inf, "elbow"))),
    "lower_arm": ("elbow", "wrist", ((0.12, "elbow"), (math.inf, "forearm"))),
    "upper_leg": ("hip", "knee", ((0.15, "hip"), (0.85, "thigh"), (math.inf, "knee"))),
    "lower_leg": ("knee", "ankle", ((0.12, "knee"), (math.inf, "calf"))),
}
#: torso rules: below ``t < 0.1`` of pelvis -> thorax, within 35% of the half hip width of the midline is the
#: crotch, else the hip of that side; ``t >= 0.5`` is the upper spine, and above ``t > 0.8`` beyond 55% of the
#: half shoulder width the shoulder of that side; the rest is the lower spine.
_TORSO_LOW, _TORSO_MID, _TORSO_HIGH, _CROTCH_FRAC, _SHOULDER_FRAC = 0.1, 0.5, 0.8, 0.35, 0.55


def _along(X: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = b - a
    return (X - a) @ d / max(float(d @ d), 1e-9)


def _lateral(X: np.ndarray, origin: np.ndarray, left: np.ndarray, right: np.ndarray,
             axis: np.ndarray) -> tuple[np.ndarray, float]:
    """Signed distance of points right of ``origin`` along the left -> right direction (made orthogonal to
    ``axis``), and half the left-right distance."""
    u = right - left
    half = 0.5 * float(np.linalg.norm(u))
    ax = axis / max(float(np.linalg.norm(axis)), 1e-9)
    u = u - (u @ ax) * ax
    u = u / max(float(np.linalg.norm(u)), 1e-9)
    return (X - origin) @ u, half


def parsing_labels(view: View) -> np.ndarray:
    """The 25-class parsing map ``(H, W) uint8`` of a rendered view (module docstring): background 0 (also for
    occluders and the ground), every body-part pixel its class, refined along the bones of its own person."""
    parts = view.parts
    out = _COARSE[parts]
    cam = view.camera
    dist = cam.dist if cam.is_distorted else None
    J = JOINT_INDEX
    for p in range(view.keypoints_cam.shape[0]):
        rows, cols = np.nonzero((view.instances == p + 1) & (parts > 0))
        if not len(rows):
            continue
        uv = np.stack([cols, rows], -1).astype(np.float64)
        X = np.asarray(unproject_points(uv, view.depth[rows, cols].astype(np.float64), cam.K, dist=dist,
                                        model=cam.dist_model))
        kc = view.keypoints_cam[p]
        names = np.asarray(PART_NAMES)[parts[rows, cols]]
        cls = out[rows, cols].copy()
        for side in ("left", "right"):
            for part, (a, b, rules) in _LIMB_RULES.items():
                m = names == f"{side}_{part}"
                if not m.any():
                    continue
                t = _along(X[m], kc[J[f"{side}_{a}"]], kc[J[f"{side}_{b}"]])
                c = np.full(len(t), _CLASS[f"{side}_{rules[-1][1]}"], dtype=np.uint8)
                for bound, name in reversed(rules[:-1]):
                    c[t < bound] = _CLASS[f"{side}_{name}"]
                cls[m] = c
        m = names == "torso"
        if m.any():
            pelvis, thorax = kc[J["pelvis"]], kc[J["thorax"]]
            Xt = X[m]
            t = _along(Xt, pelvis, thorax)
            lat_h, half_h = _lateral(Xt, pelvis, kc[J["left_hip"]], kc[J["right_hip"]], thorax - pelvis)
            lat_s, half_s = _lateral(Xt, thorax, kc[J["left_shoulder"]], kc[J["right_shoulder"]], thorax - pelvis)
            c = np.where(t >= _TORSO_MID, _CLASS["upper_spine"], _CLASS["lower_spine"]).astype(np.uint8)
            low = t < _TORSO_LOW
            c[low] = np.where(np.abs(lat_h[low]) < _CROTCH_FRAC * half_h, _CLASS["crotch"],
                              np.where(lat_h[low] > 0, _CLASS["right_hip"], _CLASS["left_hip"]))
            high = (t > _TORSO_HIGH) & (np.abs(lat_s) > _SHOULDER_FRAC * half_s)
            c[high] = np.where(lat_s[high] > 0, _CLASS["right_shoulder"], _CLASS["left_shoulder"])
            cls[m] = c
        out[rows, cols] = cls
    return out


# ------------------------------------------------------------------------------------------------- frames
def kinect_camera(rng: np.random.Generator, size: tuple[int, int]) -> Camera:
    """A Kinect-v2-like depth camera (f = 365 px at 512 px width, centred principal point) 2.5-3.5 m from a
    person standing at the origin, 0.8-1.3 m high, aimed at the body's middle."""
    W, H = size
    f = KINECT_FOCAL_512 * W / 512.0
    az, dist = rng.uniform(0, 2 * np.pi), rng.uniform(2500, 3500)
    eye = np.array([dist * np.cos(az), dist * np.sin(az), rng.uniform(800, 1300)])
    K = [[f, 0, W / 2.0], [0, f, H / 2.0], [0, 0, 1]]
    return Camera.look_at(eye, np.array([0.0, 0.0, rng.uniform(750, 1000)]), K=K, width=W, height=H, name="kinect")


def _kinect_frame(cfg: SceneConfig, seed: int, index: int) -> Frame:
    cam = kinect_camera(np.random.default_rng([int(seed), int(index), 11]), cfg.size)
    return generate_frame(cfg, seed, index, cameras=[cam])


def _kinect_frames(cfg: SceneConfig, seed: int, indices: list[int], progress: Progress,
                   workers: int = 1) -> Iterator[Frame]:
    """Frames ``indices`` seen by per-frame Kinect cameras, in order (``workers`` processes, same output)."""
    render = functools.partial(_kinect_frame, cfg, seed)
    if workers > 1 and len(indices) > 1:
        with worker_pool(min(int(workers), len(indices))) as pool:
            yield from _counted(pool.imap(render, indices, chunksize=4), len(indices), progress)
    else:
        yield from _counted(map(render, indices), len(indices), progress)


def _counted(frames: Iterable[Frame], total: int, progress: Progress) -> Iterator[Frame]:
    for done, frame in enumerate(frames, 1):
        yield frame
        if progress is not None:
            progress(done, total)


def ntu_tag(video: int) -> str:
    """The NTU-style tag of synthetic video ``video`` (0-based): cameras cycle 1-3, performers 1-40, setups
    count up every 120 videos (``S001C001P001R001A001``, ``S001C002P001R001A001``, ...)."""
    s, rest = divmod(int(video), 120)
    p, c = divmod(rest, 3)
    return f"S{s + 1:03d}C{c + 1:03d}P{p + 1:03d}R001A001"


def _write_point_cloud(path: Path, depth_mm: np.ndarray, camera: Camera, num_points: int, seed: int,
                       index: int) -> None:
    """``num_points`` foreground points sampled with replacement and back-projected with the camera's intrinsics
    (:func:`humanvision.models.pointnet2.depth_to_points`), ``(P, 3) float32`` camera-frame metres; ``(0, 3)``
    for a frame without foreground. The sampling is seeded by ``(seed, index)``."""
    import torch

    from humanvision.models.pointnet2 import depth_to_points

    pts = np.zeros((0, 3), np.float32)
    if (depth_mm > 0).any():
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(index))
        sample = depth_to_points(torch.from_numpy(depth_mm.astype(np.float32)), camera.K, num_points=num_points,
                                 generator=gen)
        pts = sample.points.numpy().astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, pts)


def _masked_depth(view: View) -> np.ndarray:
    """NTU's masked depth: the person's pixels only (occluders, ground and background are 0)."""
    return np.where(view.instances == 1, view.depth, 0.0).astype(np.float32)


def _single_person(config: SceneConfig | None, size, overrides: dict, fmt: str) -> SceneConfig:
    overrides.setdefault("people", (1, 1))
    cfg = _config(config, size, 1, overrides)
    if cfg.people != (1, 1):
        raise ValueError(f"the {fmt} format holds one person per frame; use people=(1, 1)")
    return cfg


# ------------------------------------------------------------------------------------------------- NTU RGB+D
def generate_ntu_hcmoco(out_dir: str | Path, num_frames: int, size: tuple[int, int] = (512, 424), seed: int = 0,
                        frames_per_video: int = 8, missing_videos: int = 0, point_cloud_points: int = 0,
                        config: SceneConfig | None = None, progress: Progress = None, workers: int = 1,
                        **overrides) -> dict:
    """NTU RGB+D frames in HCMoCo's preprocessed layout (module docstring), ``frames_per_video`` per video tag.

    ``missing_videos`` more videos get RGB and depth but no skeletons and are listed in
    ``NTU_RGBD_samples_with_missing_skeletons.txt`` (the reader excludes them). ``point_cloud_points > 0`` also
    writes that many foreground points per frame (sampled with replacement, camera-frame metres; A.3.4) as
    ``nturgb+d_point_cloud/{tag}/PC-{n:08d}.npy`` (not part of the official layout; the reader ignores it).
    """
    cfg = _single_person(config, size, overrides, "ntu_hcmoco")
    n, fpv = int(num_frames), int(frames_per_video)
    if n < 0 or fpv < 1 or missing_videos < 0:
        raise ValueError("num_frames and missing_videos must be >= 0 and frames_per_video >= 1")
    out = Path(out_dir)
    sel = select_joints("ntu25")
    n_videos = math.ceil(n / fpv)
    missing = [ntu_tag(n_videos + k) for k in range(int(missing_videos))]
    indices = list(range(n)) + [n + k for k in range(len(missing) * fpv)]
    files, out_of_image = [], 0
    for k, frame in enumerate(_kinect_frames(cfg, seed, indices, progress, workers)):
        video, num = (k // fpv, k % fpv + 1) if k < n else (n_videos + (k - n) // fpv, (k - n) % fpv + 1)
        tag = ntu_tag(video)
        view = frame.views[0]
        depth = _masked_depth(view)
        write_image(out / NTU_RGB_DIR / tag / f"WRGB-{num:08d}.jpg", view.rgb)
        write_depth(out / NTU_DEPTH_DIR / tag / f"MDepth-{num:08d}.png", depth)
        if point_cloud_points > 0:
            _write_point_cloud(out / NTU_POINT_CLOUD_DIR / tag / f"PC-{num:08d}.npy", depth, view.camera,
                               int(point_cloud_points), int(seed), indices[k])
        if k >= n:
            continue
        d_loc = view.keypoints_2d[0, sel].astype(np.float32)
        loc3d = (view.keypoints_cam[0, sel] * np.array([1.0, -1.0, 1.0]) / 1000.0).astype(np.float32)
        H, W = depth.shape
        out_of_image += int(((d_loc[:, 0] < 0) | (d_loc[:, 0] >= W) | (d_loc[:, 1] < 0) | (d_loc[:, 1] >= H)).sum())
        doc = {"frame_idx": num - 1, "joints": [{"body_idx": 0, "3d_loc": [list(r) for r in loc3d],
                                                 "rgb_loc": [list(r) for r in d_loc], "d_loc": [list(r) for r in d_loc]}]}
        path = out / NTU_SKELETON_DIR / tag / f"Skeleton-{num - 1:08d}.pkl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            pickle.dump(doc, f)
    out.mkdir(parents=True, exist_ok=True)
    listed = out / NTU_MISSING_SKELETONS
    listed.write_text("".join(f"{t}\n" for t in missing))
    files.append(listed)
    return {"format": "ntu_hcmoco", "frames": n, "videos": n_videos, "people": n, "missing_videos": len(missing),
            "out_of_image_joints": out_of_image, "root": str(out), "files": [str(f) for f in files]}


# ------------------------------------------------------------------------------------------------- Human3.6M parsing
def generate_h36m_parsing(out_dir: str | Path, num_images: int | dict[str, int], size: tuple[int, int] = (256, 256),
                          seed: int = 0, split: str = "train", frames_per_sequence: int = 4,
                          config: SceneConfig | None = None, progress: Progress = None, workers: int = 1,
                          **overrides) -> dict:
    """Human3.6M RGB parsing in the ``protocol_1`` layout (module docstring); splits ``train`` / ``eval``
    (``val``/``test`` are written as ``eval``). Sequence ``k`` of a split is subject ``k mod S`` of the split's
    subjects, camera ``(k // S) mod 4``, action ``k // 4S + 1``; its frames are numbered 0, 25, 50, ..."""
    cfg = _single_person(config, size, overrides, "h36m_parsing")
    splits: dict[str, int] = {}
    for s, k in _splits(num_images, split).items():
        if s not in _H36M_SPLIT:
            raise ValueError(f"unknown split {s!r}; expected 'train' or 'eval'")
        splits[_H36M_SPLIT[s]] = splits.get(_H36M_SPLIT[s], 0) + k
    out = Path(out_dir)
    fps = int(frames_per_sequence)
    lines: dict[str, list[str]] = {s: [] for s in splits}
    for s, i, frame in _frames(cfg, seed, splits, progress, workers=workers):
        subs = H36M_PARSING_SUBJECTS[s]
        seq = i // fps
        subject = subs[seq % len(subs)]
        camera = H36M_PARSING_CAMERAS[(seq // len(subs)) % 4]
        name = f"{subject}/Synthetic {seq // (4 * len(subs)) + 1}.{camera}/{(i % fps) * 25:08d}.png"
        view = frame.views[0]
        write_image(out / "protocol_1" / "rgb" / name, view.rgb)
        write_mask(out / "protocol_1" / "seg" / name, class_to_raw(parsing_labels(view)))
        lines[s].append(f"protocol_1/rgb/{name}")
    files = []
    for s, ls in lines.items():
        path = out / f"flist_2hz_{s}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{ln}\n" for ln in ls))
        files.append(path)
    return {"format": "h36m_parsing", "frames": sum(splits.values()), "people": sum(splits.values()),
            "root": str(out), "files": [str(f) for f in files]}


# ------------------------------------------------------------------------------------------------- Parsing-4K
def generate_nturgbd_parsing(out_dir: str | Path, num_images: int | dict[str, int],
                             size: tuple[int, int] = (512, 424), seed: int = 0, split: str = "train",
                             config: SceneConfig | None = None, progress: Progress = None, workers: int = 1,
                             **overrides) -> dict:
    """NTURGBD-Parsing-4K-like depth + RGB + raw-id labels (module docstring); splits ``train`` / ``val``
    (``eval``/``test`` are written as ``val``). Each image is its own video (:func:`ntu_tag`, counted over the
    splits in order) at frame ``F030`` ... ``F110``; ``*_list_v3.txt`` hold the first 20% of ``*_list_v2.txt``."""
    cfg = _single_person(config, size, overrides, "nturgbd_parsing")
    splits: dict[str, int] = {}
    for s, k in _splits(num_images, split).items():
        if s not in _NTU_PARSING_SPLIT:
            raise ValueError(f"unknown split {s!r}; expected 'train' or 'val'")
        splits[_NTU_PARSING_SPLIT[s]] = splits.get(_NTU_PARSING_SPLIT[s], 0) + k
    out = Path(out_dir)
    jobs = [(s, i) for s, k in splits.items() for i in range(k)]
    indices = [split_offset(s) + i for s, i in jobs]
    lines: dict[str, list[str]] = {s: [] for s in splits}
    for k, ((s, _), frame) in enumerate(zip(jobs, _kinect_frames(cfg, seed, indices, progress, workers),
                                             strict=True)):
        fid = f"{ntu_tag(k)}F{30 + 10 * (k % 9):03d}"
        view = frame.views[0]
        write_image(out / "images" / f"{fid}.jpg", view.rgb)
        write_depth(out / "depth" / f"MDepth-{fid}.png", _masked_depth(view))
        write_mask(out / "png_annotation_v2" / f"{fid}.png", class_to_raw(parsing_labels(view)))
        lines[s].append(f"images/{fid}.jpg")
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for s, ls in lines.items():
        for version, entries in (("v2", ls), ("v3", twenty_percent(ls))):
            path = out / f"{s}_list_{version}.txt"
            path.write_text("".join(f"{ln}\n" for ln in entries))
            files.append(path)
    every = out / "NTURGBD-Parsing-4K_list.txt"
    every.write_text("".join(f"{Path(ln).stem}\n" for s in lines for ln in lines[s]))
    files.append(every)
    return {"format": "nturgbd_parsing", "frames": len(jobs), "people": len(jobs), "root": str(out),
            "files": [str(f) for f in files]}
