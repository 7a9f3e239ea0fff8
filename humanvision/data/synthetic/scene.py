"""Scenes of synthetic people, their cameras and per-view annotations.

A frame is fully determined by ``(config, seed, index)``: every random draw comes from one
``numpy.random.Generator`` seeded with ``[seed, index]``, so frames can be generated in any order, in parallel or
partially, and give the same bytes.

Per view (:class:`View`) the annotations follow :mod:`humanvision.data.sample` conventions:

* ``keypoints_2d`` ``(N, K, 2)``: exactly ``camera.project(joints_world)`` (0-based pixels, pixel ``(i, j)`` is
  the point ``u = j, v = i``), for the ``K = len(JOINTS)`` joints of :data:`~.body.JOINTS`;
* ``visibility`` ``(N, K)`` int in COCO terms: 0 outside the image (or behind the camera), 1 inside but occluded,
  2 visible. A joint is occluded when the rendered depth at its (rounded) pixel is nearer than the joint's depth
  minus the joint's radius (:attr:`~.body.PosedBody.joint_radius`), i.e. some surface other than the joint's own
  body part is in front of it; face points on the far side of the head are hidden by the head itself;
* ``keypoints_cam`` ``(N, K, 3)`` camera-frame mm; ``boxes`` ``(N, 4)`` xywh tight around the visible pixels of
  the person's instance mask (pixel ``j`` covers ``[j - 0.5, j + 0.5]``), ``areas`` their pixel counts;
* ``amodal_boxes`` ``(N, 4)`` xywh (with ``generate_frame(..., amodal=True)``, else None): the same tight box
  around the person's *whole* silhouette, rendered alone (no occluders, no other people, no ground), clipped
  to the image; zeros where the person is not in the image. Human3.6M's boxes are of this kind (they come from
  the unoccluded person mask of background subtraction).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np

from humanvision.data.synthetic.body import (
    PART,
    SEGMENT_NAMES,
    PosedBody,
    pose_body,
    sample_pose,
    sample_shape,
)
from humanvision.data.synthetic.motion import Motion, retarget
from humanvision.data.synthetic.render import (
    BOX,
    CAPSULE,
    ELLIPSOID,
    Background,
    PrimitiveSet,
    procedural_background,
    render,
)
from humanvision.geometry.camera import Camera

__all__ = ["Appearance", "Frame", "SceneConfig", "View", "annotate", "generate_frame", "make_rig",
           "sample_appearance"]


@dataclass
class SceneConfig:
    """What to generate.

    Attributes:
        size: image ``(width, height)``.
        views: number of cameras. 1 = a single view framed on the people; more = a calibrated ring around the
            capture area (``views=4`` is Human3.6M-like: 4 cameras on a ~5 m ring at ~1.5 m height).
        people: ``(min, max)`` people per frame.
        motion: ``None`` for poses sampled within the joint limits, or a list of :class:`Motion` clips.
        pose_diversity: scales the spread of sampled poses.
        occluder_prob: probability of each of up to ``max_occluders`` boxes/poles placed between camera and people.
        max_occluders: upper bound on occluders per frame.
        distortion: give rig cameras a small Human3.6M-like lens distortion (``"h36m"`` model).
        fill: ``(min, max)`` fraction of the shorter image side covered by the people (single view).
        ground: render the ground plane.
        rgb: render colour (False: depth and labels only, faster).
    """

    size: tuple[int, int] = (256, 256)
    views: int = 1
    people: tuple[int, int] = (1, 1)
    motion: list[Motion] | None = None
    pose_diversity: float = 1.0
    occluder_prob: float = 0.25
    max_occluders: int = 2
    distortion: bool = False
    fill: tuple[float, float] = (0.6, 0.9)
    ground: bool = True
    rgb: bool = True


@dataclass
class View:
    """One camera's rendering and annotations (see module docstring)."""

    camera: Camera
    rgb: np.ndarray
    depth: np.ndarray
    parts: np.ndarray
    instances: np.ndarray
    keypoints_2d: np.ndarray
    visibility: np.ndarray
    keypoints_cam: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray
    amodal_boxes: np.ndarray | None = None


@dataclass
class Frame:
    """A generated frame: world joints ``(N, K, 3)`` (mm, z up), the people and one :class:`View` per camera."""

    seed: int
    index: int
    joints_world: np.ndarray
    people: list[PosedBody]
    views: list[View] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- appearance
_SKIN = np.array([[0.96, 0.80, 0.69], [0.90, 0.70, 0.56], [0.78, 0.58, 0.43], [0.58, 0.40, 0.28],
                  [0.38, 0.26, 0.18]])
_HAIR = np.array([[0.08, 0.06, 0.05], [0.30, 0.19, 0.10], [0.75, 0.60, 0.35], [0.55, 0.55, 0.55],
                  [0.45, 0.15, 0.07]])


def _colour(rng: np.random.Generator, sat=(0.25, 0.9), val=(0.25, 0.95)) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*sat), rng.uniform(*val)))


@dataclass
class Appearance:
    """What a person wears, as the renderer sees it (colours RGB in [0, 1], patterns index
    :data:`~humanvision.data.synthetic.render.PATTERNS`, periods in mm).

    ``shirt_pattern`` applies to the shirt's torso ellipsoids; on the arm capsules the printed chest panel
    (pattern 5) becomes plain. ``long_sleeves`` covers the lower arms with the shirt, ``long_trousers`` the
    lower legs with the trousers (else skin).
    """

    skin: np.ndarray
    hair: np.ndarray
    shirt: np.ndarray
    shirt_b: np.ndarray
    trousers: np.ndarray
    trousers_b: np.ndarray
    shoes: np.ndarray
    shirt_pattern: int
    trousers_pattern: int
    long_sleeves: bool
    long_trousers: bool
    period_shirt: float
    period_trousers: float


def sample_appearance(rng: np.random.Generator) -> Appearance:
    """A random :class:`Appearance` (the draws of the scene's people, in this order)."""
    skin = np.clip(_SKIN[rng.integers(len(_SKIN))] + rng.normal(0, 0.03, 3), 0, 1)
    hair = _HAIR[rng.integers(len(_HAIR))]
    shirt, shirt_b = _colour(rng), _colour(rng)
    trousers, trousers_b = _colour(rng, sat=(0.1, 0.7), val=(0.15, 0.8)), _colour(rng)
    shoes = _colour(rng, sat=(0.0, 0.5), val=(0.05, 0.5))
    shirt_pattern = int(rng.choice([5, 5, 5, 1, 3]))
    trousers_pattern = int(rng.choice([0, 0, 0, 3, 1]))
    long_sleeves, long_trousers = rng.uniform() < 0.5, rng.uniform() < 0.7
    period_shirt, period_trousers = rng.uniform(40, 120), rng.uniform(60, 160)
    return Appearance(skin, hair, shirt, shirt_b, trousers, trousers_b, shoes, shirt_pattern, trousers_pattern,
                      bool(long_sleeves), bool(long_trousers), float(period_shirt), float(period_trousers))


def _person_primitives(body: PosedBody, instance: int, rng: np.random.Generator | None = None,
                       appearance: Appearance | None = None) -> PrimitiveSet:
    """The coloured, textured primitives of one posed person; ``appearance`` given, or drawn from ``rng``."""
    if appearance is None:
        if rng is None:
            raise ValueError("_person_primitives needs an rng or an appearance")
        appearance = sample_appearance(rng)
    ap = appearance
    skin, hair, shirt, shirt_b, shoes = ap.skin, ap.hair, ap.shirt, ap.shirt_b, ap.shoes
    trousers, trousers_b = ap.trousers, ap.trousers_b
    shirt_pattern, trousers_pattern = ap.shirt_pattern, ap.trousers_pattern
    long_sleeves, long_trousers = ap.long_sleeves, ap.long_trousers
    period_shirt, period_trousers = ap.period_shirt, ap.period_trousers
    rows = []
    for pr in body.primitives:
        part = PART_NAME[pr.part]
        seg = SEGMENT_NAMES[pr.segment]
        garment = "skin"
        if part == "head":
            ca, cb, pat = skin, hair, 4
        elif part in ("neck",) or part.endswith("hand"):
            ca, cb, pat = skin, skin, 0
        elif part == "torso":
            garment = "trousers" if seg == "pelvis" else "shirt"
        elif part.endswith("upper_arm") or (part.endswith("lower_arm") and long_sleeves):
            garment = "shirt"
        elif part.endswith("upper_leg") or (part.endswith("lower_leg") and long_trousers):
            garment = "trousers"
        elif part.endswith("foot"):
            ca, cb, pat = shoes, shoes, 0
        else:
            ca, cb, pat = skin, skin, 0
        if garment == "shirt":
            pat = shirt_pattern if (pr.kind == "ellipsoid" or shirt_pattern != 5) else 0
            ca, cb = shirt, shirt_b
        elif garment == "trousers":
            ca, cb, pat = trousers, trousers_b, trousers_pattern
        period = period_shirt if garment == "shirt" else period_trousers
        R = body.rotations[pr.segment]
        if pr.kind == "capsule":
            rows.append((CAPSULE, pr.a, pr.b, pr.radius, np.zeros(3), np.eye(3), np.ones(3), R, pr.a, pr.part,
                         ca, cb, pat, period))
        else:
            rows.append((ELLIPSOID, np.zeros(3), np.zeros(3), 0.0, pr.centre, pr.axes, pr.radii, pr.axes, pr.centre,
                         pr.part, ca, cb, pat, period))
    return _pack(rows, instance)


PART_NAME = {v: k for k, v in PART.items()}


def _pack(rows: list[tuple], instance: int) -> PrimitiveSet:
    cols = list(zip(*rows))
    return PrimitiveSet(
        kind=np.array(cols[0], dtype=np.int64), a=np.array(cols[1], float), b=np.array(cols[2], float),
        radius=np.array(cols[3], float), centre=np.array(cols[4], float), axes=np.array(cols[5], float),
        radii=np.array(cols[6], float), frame=np.array(cols[7], float), origin=np.array(cols[8], float),
        part=np.array(cols[9], dtype=np.uint8), instance=np.full(len(rows), instance, dtype=np.uint8),
        colour_a=np.array(cols[10], float), colour_b=np.array(cols[11], float),
        pattern=np.array(cols[12], dtype=np.int64), period=np.array(cols[13], float))


def _occluders(rng: np.random.Generator, cfg: SceneConfig, eyes: list[np.ndarray],
               people_xy: np.ndarray) -> PrimitiveSet | None:
    rows = []
    for _ in range(cfg.max_occluders):
        if rng.uniform() >= cfg.occluder_prob:
            continue
        eye = eyes[int(rng.integers(len(eyes)))]
        target = people_xy[int(rng.integers(len(people_xy)))]
        d = target - eye[:2]
        dist = np.linalg.norm(d)
        along = rng.uniform(0.35, 0.75) * dist
        pos_xy = eye[:2] + d / max(dist, 1e-9) * along + np.array([-d[1], d[0]]) / max(dist, 1e-9) * \
            rng.uniform(-350, 350)
        yaw = rng.uniform(0, np.pi)
        R = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1.0]])
        ca, cb = _colour(rng), _colour(rng)
        if rng.uniform() < 0.7:
            half = np.array([rng.uniform(150, 450), rng.uniform(150, 450), rng.uniform(200, 700)])
            c = np.array([pos_xy[0], pos_xy[1], half[2]])
            rows.append((BOX, np.zeros(3), np.zeros(3), 0.0, c, R, half, R, c, 0, ca, cb,
                         int(rng.choice([0, 3])), rng.uniform(80, 250)))
        else:
            r = rng.uniform(40, 130)
            a = np.array([pos_xy[0], pos_xy[1], 0.0])
            b = a + np.array([0, 0, rng.uniform(1500, 2600)])
            rows.append((CAPSULE, a, b, r, np.zeros(3), np.eye(3), np.ones(3), R, a, 0, ca, cb,
                         int(rng.choice([0, 1])), rng.uniform(80, 250)))
    return _pack(rows, 0) if rows else None


# --------------------------------------------------------------------------------------------- cameras
def make_rig(n: int, size: tuple[int, int], rng: np.random.Generator | None = None, radius: float = 5000.0,
             height: float = 1500.0, target: tuple[float, float, float] = (0.0, 0.0, 900.0),
             distortion: bool = False) -> list[Camera]:
    """A ring of ``n`` cameras looking at ``target`` (Human3.6M-like for ``n = 4``: azimuths 45, 135, 225, 315
    degrees, ~5 m radius, ~1.5 m high, focal ~1.15 x image width). With ``rng`` positions, heights, aim and
    focal lengths are jittered; with ``distortion`` each camera gets small "h36m"-model coefficients."""
    W, H = size
    cams = []
    for k in range(n):
        j = rng.uniform(-1, 1, 6) if rng is not None else np.zeros(6)
        az = np.deg2rad(45.0 + 360.0 * k / n + 8.0 * j[0])
        rad, hgt = radius * (1 + 0.08 * j[1]), height * (1 + 0.15 * j[2])
        eye = np.array([rad * np.cos(az), rad * np.sin(az), hgt])
        tgt = np.asarray(target, float) + np.array([150 * j[3], 150 * j[4], 100 * j[5]])
        focal = 1.145 * W * (1 + (0.04 * j[0] if rng is not None else 0.0))
        dist = None
        if distortion:
            dj = rng.uniform(-1, 1, 5) if rng is not None else np.zeros(5)
            dist = [-0.2 + 0.03 * dj[0], 0.2 + 0.05 * dj[1], -0.001 + 0.001 * dj[2], 0.001 * dj[3],
                    -0.003 + 0.003 * dj[4]]
        cams.append(Camera.look_at(eye, tgt, focal=focal, width=W, height=H, dist=dist, dist_model="h36m",
                                   name=f"cam{k}"))
    return cams


def _single_camera(rng: np.random.Generator, cfg: SceneConfig, joints: np.ndarray) -> Camera:
    W, H = cfg.size
    lo, hi = joints.reshape(-1, 3).min(0) - 150, joints.reshape(-1, 3).max(0) + 150
    centre = 0.5 * (lo + hi)
    rb = 0.5 * np.linalg.norm(hi - lo)
    hfov = np.deg2rad(rng.uniform(40, 70))
    focal = 0.5 * W / np.tan(0.5 * hfov)
    fill = rng.uniform(*cfg.fill)
    D = focal * rb / (fill * 0.5 * min(W, H))
    az, el = rng.uniform(0, 2 * np.pi), np.deg2rad(rng.uniform(-5, 30))
    eye = centre + D * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    eye[2] = max(eye[2], 300.0)
    slack = max(0.0, 1 - fill) * rb
    target = centre + rng.uniform(-0.5, 0.5, 3) * slack
    return Camera.look_at(eye, target, focal=focal, width=W, height=H, name="cam0")


# --------------------------------------------------------------------------------------------- frames
def _place_people(rng: np.random.Generator, cfg: SceneConfig) -> list[PosedBody]:
    n = int(rng.integers(cfg.people[0], cfg.people[1] + 1))
    spread = 0.0 if n == 1 else 900.0 * np.sqrt(n)
    placed: list[np.ndarray] = []
    bodies = []
    for _ in range(n):
        for _attempt in range(50):
            xy = rng.uniform(-spread, spread, 2) if n > 1 else np.zeros(2)
            if all(np.linalg.norm(xy - q) > 800 for q in placed):
                break
        placed.append(xy)
        shape = sample_shape(rng)
        yaw = rng.uniform(0, 360)
        if cfg.motion:
            clip = cfg.motion[int(rng.integers(len(cfg.motion)))]
            rot, root = retarget(clip, int(rng.integers(len(clip))), shape, yaw_deg=yaw)
            body = pose_body(shape, global_rotations=rot, root_position=np.array([xy[0], xy[1], root[2]]),
                             ground="lift")
        else:
            c, s = np.cos(np.deg2rad(yaw)), np.sin(np.deg2rad(yaw))
            tilt = np.deg2rad(rng.normal(0, 4, 2))
            Rt = np.array([[1, 0, 0], [0, np.cos(tilt[0]), -np.sin(tilt[0])], [0, np.sin(tilt[0]), np.cos(tilt[0])]])
            Rr = np.array([[np.cos(tilt[1]), 0, np.sin(tilt[1])], [0, 1, 0], [-np.sin(tilt[1]), 0, np.cos(tilt[1])]])
            root = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ Rt @ Rr
            body = pose_body(shape, sample_pose(rng, cfg.pose_diversity), root_rotation=root,
                             root_position=np.array([xy[0], xy[1], 0.0]), ground="touch")
        bodies.append(body)
    return bodies


def annotate(camera: Camera, depth: np.ndarray, instances: np.ndarray, joints: np.ndarray,
             radius: np.ndarray) -> tuple[np.ndarray, ...]:
    """Keypoints, COCO visibility, camera-frame joints, boxes and areas of ``N`` people in one view.

    ``joints`` (N, K, 3) world mm, ``radius`` (N, K) depth-test tolerance. See the module docstring.
    """
    H, W = depth.shape
    kp = np.asarray(camera.project(joints), dtype=np.float64)
    kc = np.asarray(camera.world_to_camera(joints), dtype=np.float64)
    inside = (kc[..., 2] > 0) & (kp[..., 0] >= -0.5) & (kp[..., 0] < W - 0.5) & (kp[..., 1] >= -0.5) \
        & (kp[..., 1] < H - 0.5) & np.isfinite(kp).all(-1)
    u = np.clip(np.rint(np.nan_to_num(kp[..., 0])), 0, W - 1).astype(np.int64)
    v = np.clip(np.rint(np.nan_to_num(kp[..., 1])), 0, H - 1).astype(np.int64)
    d = depth[v, u]
    occluded = (d > 0) & (d < kc[..., 2] - radius)
    vis = np.where(inside, np.where(occluded, 1, 2), 0).astype(np.int64)
    n = joints.shape[0]
    boxes = np.zeros((n, 4))
    areas = np.zeros(n, dtype=np.int64)
    for i in range(n):
        boxes[i], areas[i] = _mask_box(instances == i + 1)
    return kp, vis, kc, boxes, areas


def _mask_box(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """xywh box tight around the pixels of a boolean mask (pixel ``j`` covers ``[j - 0.5, j + 0.5]``) and
    their count; zeros for an empty mask."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return np.zeros(4), 0
    box = np.array([xs.min() - 0.5, ys.min() - 0.5, xs.max() - xs.min() + 1.0, ys.max() - ys.min() + 1.0])
    return box, len(xs)


def _silhouette_box(person: PrimitiveSet, camera: Camera) -> np.ndarray:
    """xywh box of one person's whole silhouette: the person rendered alone (no occluders, no ground)."""
    H, W = camera.height, camera.width
    alone = render(person, camera, Background(np.zeros((H, W, 3), np.float32), ground=False),
                   np.array([0.0, 0.0, 1.0]), rgb=False)
    return _mask_box(alone.instances > 0)[0]


def generate_frame(cfg: SceneConfig, seed: int, index: int, cameras: list[Camera] | None = None,
                   amodal: bool = False) -> Frame:
    """Generate frame ``index`` of the dataset seeded by ``seed`` (deterministic; see module docstring).

    ``cameras`` overrides the configured cameras (e.g. one fixed rig for a whole multi-view dataset).
    ``amodal`` also fills each view's ``amodal_boxes`` (one extra depth-only render per person and view).
    """
    rng = np.random.default_rng([int(seed), int(index)])
    W, H = cfg.size
    bodies = _place_people(rng, cfg)
    joints = np.stack([b.joints for b in bodies])
    radius = np.stack([b.joint_radius for b in bodies])
    if cameras is None:
        if cfg.views == 1:
            cameras = [_single_camera(rng, cfg, joints)]
        else:  # one fixed, calibrated rig per dataset (seed), as in a capture studio
            cameras = make_rig(cfg.views, cfg.size, np.random.default_rng([int(seed), 2**31 - 1]),
                               distortion=cfg.distortion)
    prims = [_person_primitives(b, i + 1, rng) for i, b in enumerate(bodies)]
    occ = _occluders(rng, cfg, [c.center for c in cameras], joints[:, 0, :2])
    if occ is not None:
        prims.append(occ)
    scene = PrimitiveSet.concatenate(prims)
    el, az = np.deg2rad(rng.uniform(25, 80)), rng.uniform(0, 2 * np.pi)
    light = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    ambient, diffuse = rng.uniform(0.35, 0.55), rng.uniform(0.45, 0.7)
    ground_cols = np.stack([_colour(rng, sat=(0.0, 0.4), val=(0.3, 0.75)) for _ in range(2)])
    tile = rng.uniform(300, 1000)
    frame = Frame(int(seed), int(index), joints, bodies)
    for cam in cameras:
        bg = Background(procedural_background(rng, W, H) if cfg.rgb else np.zeros((H, W, 3), np.float32),
                        ground=cfg.ground, ground_colours=ground_cols, tile=tile)
        out = render(scene, cam, bg, light, ambient, diffuse, rgb=cfg.rgb)
        kp, vis, kc, boxes, areas = annotate(cam, out.depth, out.instances, joints, radius)
        view = View(cam, out.rgb, out.depth, out.parts, out.instances, kp, vis, kc, boxes, areas)
        if amodal:
            view.amodal_boxes = np.stack([_silhouette_box(person, cam) for person in prims[:len(bodies)]])
        frame.views.append(view)
    return frame
