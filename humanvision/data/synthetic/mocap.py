"""Motion-capture poses as a COCO keypoint file without images (pose priors, PCT tokenizers, 2D-3D lifting).

Each sample poses the synthetic body (:mod:`~humanvision.data.synthetic.body`, a random adult shape) with one
frame of a DeepMimic clip (:func:`~humanvision.data.synthetic.motion.load_deepmimic`, retargeted by bone
directions), so its 17 COCO keypoints come from the same body model as the synthetic images; it is then
seen by ``views`` random cameras of the single-view scene code (random azimuth around the person, elevation
-5 to 30 degrees, horizontal field of view 40-70 degrees, distance so that the person fills 60-90 % of the
shorter image side). The person is rendered alone (depth only, no image is written) for:

* ``v``: 2 visible, 1 hidden by the person's own body (the depth test of
  :func:`~humanvision.data.synthetic.scene.annotate`), 0 outside ``[0, W] x [0, H]`` (then ``x = y = 0``);
* ``bbox``: the tight box of the person's silhouette, grown to hold every labelled keypoint, clipped to the
  image; ``area``: the silhouette's pixel count.

Annotations also carry ``keypoints_3d`` (the 17 joints, world mm, z up) and image records ``camera``
(:meth:`~humanvision.geometry.camera.Camera.to_dict`), ``clip``, ``frame`` and ``view``: the keypoints are
exactly ``camera.project(keypoints_3d)``. Held-out clips: the ``train`` split draws from every clip except
``val_clips``; every other split (``val``, ``test``) draws only from ``val_clips``, so a model can be
evaluated on motions it never saw. Sample ``i`` of split ``s`` depends only on ``(seed, s, i)`` and the
clip lists.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from humanvision.data.synthetic.body import BodyShape, PosedBody, pose_body, sample_shape
from humanvision.data.synthetic.motion import Motion, deepmimic_clips, load_deepmimic, retarget
from humanvision.data.synthetic.render import Background, render
from humanvision.data.synthetic.scene import SceneConfig, _person_primitives, _single_camera, annotate
from humanvision.data.synthetic.writers import select_joints, split_offset
from humanvision.errors import DataError
from humanvision.geometry.camera import Camera
from humanvision.skeletons import get_skeleton

__all__ = ["DEFAULT_VAL_CLIPS", "MocapSample", "MocapView", "generate_mocap_coco", "mocap_sample",
           "pose_mocap_body"]

#: clips held out for validation by default: each has a relative in the training clips (dance_a,
#: getup_faceup, spin and kick), so validation measures generalisation to unseen motions of known kinds
DEFAULT_VAL_CLIPS = ("dance_b", "getup_facedown", "spinkick")


def pose_mocap_body(motion: Motion, frame: int, shape: BodyShape, yaw_deg: float = 0.0) -> PosedBody:
    """The body of ``shape`` in the pose of ``motion[frame]``, pelvis above the origin, not below z = 0."""
    rot, root = retarget(motion, int(frame), shape, yaw_deg=yaw_deg)
    return pose_body(shape, global_rotations=rot, root_position=np.array([0.0, 0.0, root[2]]), ground="lift")


@dataclass
class MocapView:
    """One camera's annotation of a :class:`MocapSample` (all joints of :data:`~.body.JOINTS`)."""

    camera: Camera
    keypoints: np.ndarray   # (J, 2) pixels, camera.project(body.joints)
    visibility: np.ndarray  # (J,) 0 outside the image, 1 self-occluded, 2 visible
    box: np.ndarray         # (4,) xywh silhouette box (zeros when the person is not in the image)
    area: int               # silhouette pixels


@dataclass
class MocapSample:
    """Sample: ``motion_index`` into the clip list, ``frame`` of that clip, the posed body, its views."""

    motion_index: int
    frame: int
    body: PosedBody
    views: list[MocapView]


def mocap_sample(motions: Sequence[Motion], seed: int, index: int, size: tuple[int, int] = (256, 256),
                 views: int = 1, fill: tuple[float, float] = (0.6, 0.9)) -> MocapSample:
    """Sample ``index`` of the stream ``seed`` drawn from ``motions`` (uniform over all their frames).

    Deterministic: depends only on ``(seed, index)``, the clips and the arguments.
    """
    lengths = np.array([len(m) for m in motions])
    if not len(motions) or lengths.min() < 1:
        raise ValueError("mocap_sample needs at least one clip, each with at least one frame")
    rng = np.random.default_rng([int(seed), int(index), 13])
    k = int(rng.integers(lengths.sum()))
    mi = int(np.searchsorted(np.cumsum(lengths), k, side="right"))
    frame = k - int(lengths[:mi].sum())
    body = pose_mocap_body(motions[mi], frame, sample_shape(rng))
    cfg = SceneConfig(size=(int(size[0]), int(size[1])), fill=fill)
    W, H = cfg.size
    prims = _person_primitives(body, 1, rng)
    out = []
    for _ in range(int(views)):
        cam = _single_camera(rng, cfg, body.joints[None])
        r = render(prims, cam, Background(np.zeros((H, W, 3), np.float32), ground=False),
                   np.array([0.0, 0.0, 1.0]), rgb=False)
        kp, vis, _, boxes, areas = annotate(cam, r.depth, r.instances, body.joints[None],
                                            body.joint_radius[None])
        kp, vis = kp[0], vis[0]
        inside = (kp[:, 0] >= 0) & (kp[:, 0] <= W) & (kp[:, 1] >= 0) & (kp[:, 1] <= H)
        out.append(MocapView(cam, kp, np.where(inside, vis, 0), boxes[0], int(areas[0])))
    return MocapSample(mi, frame, body, out)


def _box(view: MocapView, sel: np.ndarray, W: int, H: int) -> list[float]:
    """Silhouette box grown to the labelled keypoints, clipped to the image (xywh)."""
    lab = view.visibility[sel] > 0
    pts = view.keypoints[sel][lab]
    b = view.box
    x0, y0 = min(b[0], pts[:, 0].min()), min(b[1], pts[:, 1].min())
    x1, y1 = max(b[0] + b[2], pts[:, 0].max()), max(b[1] + b[3], pts[:, 1].max())
    x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(W)), min(y1, float(H))
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def _clip_name(m: Motion) -> str:
    return Path(m.source).stem.removeprefix("humanoid3d_")


def generate_mocap_coco(out_dir: str | Path, num_images: int | dict[str, int],
                        size: tuple[int, int] = (256, 256), seed: int = 0, split: str = "train",
                        views: int = 1, clips: Sequence[str | Motion] | None = None,
                        val_clips: Sequence[str] = DEFAULT_VAL_CLIPS,
                        progress: Callable[[int, int], None] | None = None) -> dict:
    """Write ``out/annotations/person_keypoints_{split}.json`` of mocap poses (see the module docstring).

    Args:
        num_images: samples per split (an int for ``split``, or ``{"train": n, "val": m}``); each sample is
            seen by ``views`` cameras, one image record each (``num_images * views`` records).
        size: ``(width, height)`` of the virtual images.
        clips: DeepMimic clip names or paths, or :class:`Motion` objects (default: every clip of pybullet).
        val_clips: names held out of ``train``; the other splits draw only from them.
        progress: ``progress(done, total)`` after every sample.

    Returns a summary dict (``files``, ``frames`` = image records, ``people``, ``visible_joints``, ``clips``
    per split). Needs ``pybullet`` for clips given by name.
    """
    motions = [c if isinstance(c, Motion) else load_deepmimic(c) for c in (clips or deepmimic_clips())]
    names = [_clip_name(m) for m in motions]
    unknown = sorted(set(val_clips) - set(names))
    if unknown:
        raise DataError(f"held-out clips {unknown} are not among the clips {names}", field="val_clips")
    splits = dict(num_images) if isinstance(num_images, dict) else {split: int(num_images)}
    pools = {s: [i for i, n in enumerate(names) if (n in val_clips) != (s == "train")] for s in splits}
    empty = [s for s, p in pools.items() if not p and splits[s] > 0]
    if empty:
        raise DataError(f"split {empty[0]!r} has no clips (clips {names}, held out {list(val_clips)})",
                        field="val_clips")
    W, H = int(size[0]), int(size[1])
    sk = get_skeleton("coco17")
    sel = select_joints("coco17")
    total, done, ann_id, n_vis, files = sum(splits.values()), 0, 0, 0, []
    for s, n in splits.items():
        pool = [motions[i] for i in pools[s]]
        images, anns = [], []
        for i in range(int(n)):
            sample = mocap_sample(pool, seed, split_offset(s) + i, (W, H), views)
            joints = sample.body.joints[sel]
            for vi, view in enumerate(sample.views):
                image_id = i * views + vi + 1
                images.append({"id": image_id, "file_name": f"{image_id:012d}.png", "width": W, "height": H,
                               "clip": names[pools[s][sample.motion_index]], "frame": sample.frame,
                               "view": vi, "camera": view.camera.to_dict()})
                v = view.visibility[sel]
                if view.area == 0 or not (v > 0).any():
                    continue
                ann_id += 1
                kp = np.where((v > 0)[:, None], view.keypoints[sel], 0.0)
                anns.append({"id": ann_id, "image_id": image_id, "category_id": 1,
                             "bbox": _box(view, sel, W, H), "area": float(view.area), "iscrowd": 0,
                             "num_keypoints": int((v > 0).sum()),
                             "keypoints": np.concatenate([kp, v[:, None]], 1).reshape(-1).tolist(),
                             "keypoints_3d": joints.tolist()})
                n_vis += int((v == 2).sum())
            done += 1
            if progress is not None:
                progress(done, total)
        doc = {"images": images, "annotations": anns,
               "categories": [{"id": 1, "name": "person", "supercategory": "person",
                               "keypoints": list(sk.joints),
                               "skeleton": [[a + 1, b + 1] for a, b in sk.limbs]}],
               "info": {"description": "humanvision mocap poses (DeepMimic clips, synthetic body), no images",
                        "seed": int(seed), "split": s, "views": int(views),
                        "clips": [names[j] for j in pools[s]]}}
        path = Path(out_dir) / "annotations" / f"person_keypoints_{s}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, separators=(",", ":")))
        files.append(str(path))
    return {"format": "mocap_coco", "frames": total * int(views), "people": ann_id, "visible_joints": n_vis,
            "files": files, "clips": {s: [names[j] for j in pools[s]] for s in splits}}
