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

With ``SceneConfig(visibility="coco")`` a joint that fails the depth test is occluded (1) only when the surface in
front of it belongs to another person, an occluder or the ground, or to a body part of the same person that does not
meet at the joint (:func:`adjacent_parts`): an ankle behind its own foot or shin, a wrist behind its own hand or
forearm, a knee behind its own thigh or shin stay visible (2), as a COCO annotator marks them. Points on the body's
surface (face points, finger and toe tips, heel) have no such excuse: behind their own part they face away. With
``SceneConfig(infer_min_visible=f)`` the hidden joints of a person showing less than ``f`` of its in-image joints are
0 (COCO's "not labelled"): an annotator does not guess a body hidden behind another.

Scene composition and appearance (all opt-in; :class:`SceneConfig`'s defaults reproduce the frames above byte for
byte, and each new feature draws from its own generator ``default_rng([seed, index, 97, stream])``, so switching one
on leaves the draws of everything else unchanged):

* **shots** (single view): each frame frames one *main* person as a full body, an upper body (hips up, legs out of
  the picture, like skimage's astronaut) or a head-and-shoulders close-up (a portrait: chest up, face big, eye
  level, the camera in front of the person), with ``truncation`` shifting the framing so the image border cuts the
  person, ``camera_elevation`` for elevated street cameras, and the other people either spread around (``spread``)
  or in a ``crowd`` (placed just in front of and behind the main person so that they overlap in the image);
* **walking** gaits; photo **backgrounds** (:class:`~.backgrounds.BackgroundBank`, loaded once per process) or a
  plain **studio** backdrop; light ranges, colour temperature and ``shadows``; **outfits**
  (:func:`~.identities.dress_person`); photometric **effects** (:func:`~.photometric.apply_effects`) applied after
  rendering (labels untouched).
"""

from __future__ import annotations

import colorsys
import functools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from humanvision.data.synthetic.body import (
    _JOINT_SEGMENT,
    JOINTS,
    PART,
    SEGMENT_NAMES,
    SEGMENTS,
    BodyShape,
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
from humanvision.errors import ConfigError
from humanvision.geometry.camera import Camera

if TYPE_CHECKING:
    from humanvision.data.synthetic.photometric import ImageEffects

__all__ = ["SHOTS", "Appearance", "Frame", "SceneConfig", "View", "adjacent_parts", "annotate", "generate_frame",
           "make_rig", "sample_appearance", "walking_pose"]

#: the framings of :attr:`SceneConfig.shots`, in order
SHOTS = ("full", "upper", "head")


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

    Composition (single view, ``cameras`` not given; setting any of ``shots``, ``truncation``, ``crowd``,
    ``spread`` or ``camera_elevation`` switches from the framing of all people by ``fill`` to framing one main
    person by a shot):

    Attributes:
        shots: probabilities of the ``(full, upper, head)`` framings (:data:`SHOTS`): the whole body, hips up (legs
            out of the picture), head and shoulders (chest up, a portrait). ``None``: today's framing.
        scale: ``(min, max)`` height of a full-shot main person as a fraction of the image height (log-uniform).
        truncation: probability that the framing shifts so the image border cuts the main person (bottom, sides
            or top), by a fraction ``truncation_amount`` of the person's extent.
        crowd: probability that the other people stand just in front of and behind the main person, overlapping
            it in the image (else they are spread over ``spread``).
        spread: half-width (mm) of the square around the main person where the others stand (default
            ``900 * sqrt(people)``, as today).
        camera_elevation: ``(min, max)`` degrees above the horizon from which full shots look at the main person
            (default ``(-5, 30)``; a street camera ``(15, 40)``). Close-ups are always near eye level.
        portrait_bottom: ``(min, max)`` of where a head-and-shoulders shot's frame ends, in statures below the
            thorax (negative: above it, a face-filling portrait cut at the neck).
        portrait_height: the least height of a head-and-shoulders frame in statures (0.3: head to chest; 0.18
            lets the face fill the frame, as in a passport-style portrait).

    Appearance and labels:

    Attributes:
        walking: probability that a person walks (a gait at a random phase) instead of a sampled pose (ignored
            with ``motion``).
        actions: probability that a person takes instead a pose of real motion capture: a random frame of one of
            ``action_clips`` (DeepMimic clips of the ``pybullet`` wheel: kicks, punches, runs, jumps, spins,
            dances; retargeted to the person's shape, at a random heading; ignored with ``motion``). Needs
            ``pybullet``.
        action_clips: the clips of ``actions`` (:func:`~.motion.deepmimic_clips` lists them; the default takes the
            upright ones: no rolls, crawls, flips or getting up).
        backgrounds: a folder of photos without people (:class:`~.backgrounds.BackgroundBank`, loaded once per
            process), used with probability ``background_prob`` per view instead of the procedural backdrop;
            under a photo the ground plane is kept with probability ``photo_ground``.
        backdrop: ``"procedural"`` (today's) or ``"studio"`` (a plain wall and floor, for the views without a
            photo).
        ambient, diffuse, light_elevation: ``(min, max)`` of the shading weights and of the light's elevation in
            degrees (5-15: a low sun).
        colour_temperature: ``(min, max)`` Kelvin of the light (its colour tints the rendered surfaces); ``None``:
            white.
        shadows: cast shadows from the light (people, occluders, ground).
        clothing: ``"basic"`` (today's shirts and trousers) or ``"outfits"`` (:func:`~.identities.dress_person`:
            coats, skirts, sleeves, hats, bags, skin and hair variety).
        faces: with ``clothing="outfits"``, heads get a face that holds up in a close-up (eyes with whites and
            pupils, brows, lips, a nose, ears, a hair cap over short hair, the hairline's height drawn per person);
            without it the head is today's ellipsoid with painted eyes and mouth.
        effects: photometric effects applied to each rendered view (:class:`~.photometric.ImageEffects`).
        visibility: ``"depth"`` (today's rule) or ``"coco"`` (an annotator's rule; see the module docstring).
        infer_min_visible: a hidden joint keeps its label (1) only on a person with at least this share of its
            in-image joints visible; on a person mostly hidden (behind others, an occluder, the border's cut) its
            hidden joints become unlabelled (0), as a COCO annotator infers hidden joints from the body they see
            and leaves them out where too little shows (:func:`unlabel_hidden`). 0 labels every hidden joint.
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
    # composition
    shots: tuple[float, float, float] | None = None
    scale: tuple[float, float] = (0.3, 0.9)
    truncation: float = 0.0
    truncation_amount: tuple[float, float] = (0.1, 0.45)
    crowd: float = 0.0
    spread: float | None = None
    camera_elevation: tuple[float, float] | None = None
    portrait_bottom: tuple[float, float] = (0.06, 0.14)
    portrait_height: float = 0.3
    # appearance
    walking: float = 0.0
    actions: float = 0.0
    action_clips: tuple[str, ...] = ("run", "jump", "kick", "punch", "spin", "spinkick", "dance_a", "dance_b")
    backgrounds: str | Path | None = None
    background_prob: float = 1.0
    photo_ground: float = 0.0
    backdrop: Literal["procedural", "studio"] = "procedural"
    ambient: tuple[float, float] = (0.35, 0.55)
    diffuse: tuple[float, float] = (0.45, 0.7)
    light_elevation: tuple[float, float] = (25.0, 80.0)
    colour_temperature: tuple[float, float] | None = None
    shadows: bool = False
    clothing: Literal["basic", "outfits"] = "basic"
    faces: bool = False
    effects: ImageEffects | None = None
    # labels
    visibility: Literal["depth", "coco"] = "depth"
    infer_min_visible: float = 0.0

    def __post_init__(self) -> None:
        """Check the new fields' values with errors that name the field."""
        if self.shots is not None:
            p = np.asarray(self.shots, dtype=np.float64)
            if p.shape != (3,) or (p < 0).any() or p.sum() <= 0:
                raise ConfigError(f"SceneConfig.shots: three non-negative probabilities (full, upper, head) with a "
                                  f"positive sum, got {self.shots!r}")
        for name in ("truncation", "crowd", "walking", "actions", "background_prob", "photo_ground",
                     "infer_min_visible"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ConfigError(f"SceneConfig.{name}: a probability in [0, 1], got {getattr(self, name)!r}")
        for name in ("scale", "truncation_amount"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ConfigError(f"SceneConfig.{name}: (min, max) with 0 < min <= max, got {getattr(self, name)!r}")
        lo, hi = self.portrait_bottom
        if not -0.1 <= lo <= hi <= 0.3:
            raise ConfigError(f"SceneConfig.portrait_bottom: (min, max) statures below the thorax with -0.1 <= min "
                              f"<= max <= 0.3, got {self.portrait_bottom!r}")
        if not 0.1 <= self.portrait_height <= 0.6:
            raise ConfigError(f"SceneConfig.portrait_height: statures in [0.1, 0.6], got {self.portrait_height!r}")
        if self.backdrop not in ("procedural", "studio"):
            raise ConfigError(f"SceneConfig.backdrop: 'procedural' or 'studio', got {self.backdrop!r}")
        if self.clothing not in ("basic", "outfits"):
            raise ConfigError(f"SceneConfig.clothing: 'basic' or 'outfits', got {self.clothing!r}")
        if self.faces and self.clothing != "outfits":
            raise ConfigError("SceneConfig.faces: needs clothing='outfits' (the plain clothes keep today's painted "
                              "head)")
        if (isinstance(self.action_clips, str) or not self.action_clips
                or not all(isinstance(c, str) for c in self.action_clips)):
            raise ConfigError(f"SceneConfig.action_clips: a non-empty tuple of DeepMimic clip names, got "
                              f"{self.action_clips!r}")
        if self.visibility not in ("depth", "coco"):
            raise ConfigError(f"SceneConfig.visibility: 'depth' or 'coco', got {self.visibility!r}")

    @property
    def composed(self) -> bool:
        """Whether single views are framed by shots (see the class docstring) rather than today's way."""
        return (self.shots is not None or self.truncation > 0 or self.crowd > 0 or self.spread is not None
                or self.camera_elevation is not None)


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


# --------------------------------------------------------------------------------------------- labels
#: joints on the body's surface: hidden behind their own part, they face away (no adjacency excuse)
_SURFACE_JOINTS = frozenset(f"{s}{n}" for s in ("left_", "right_") for n in (
    "eye", "ear", "hand_tip", "thumb", "heel", "big_toe", "small_toe")) | {"nose", "head_top"}


@functools.cache
def _segment_parts() -> dict[str, frozenset[int]]:
    """Body-part labels carried by each segment (from the primitives of :func:`~.body.pose_body`)."""
    parts: dict[str, set[int]] = {name: set() for name in SEGMENT_NAMES}
    for pr in pose_body(BodyShape()).primitives:
        parts[SEGMENT_NAMES[pr.segment]].add(int(pr.part))
    return {k: frozenset(v) for k, v in parts.items()}


def adjacent_parts(joint: str) -> frozenset[str]:
    """The body parts that meet at ``joint`` (a name of :data:`~.body.JOINTS`), derived from
    :data:`~.body.SEGMENTS`: the parts of the segment the joint belongs to and, where the joint is a segment's
    origin, that segment's and its parent's parts (``left_ankle``: left lower leg and left foot; ``left_hip``:
    torso and left upper leg). Surface points (face points, finger and toe tips, heel) have none.

    With ``visibility="coco"`` a joint behind one of these parts of its own person stays visible."""
    if joint not in JOINTS:
        raise ValueError(f"unknown joint {joint!r}")
    if joint in _SURFACE_JOINTS:
        return frozenset()
    seg = _segment_parts()
    parts = set(seg[_JOINT_SEGMENT[joint]])
    for name, (parent, origin) in SEGMENTS.items():
        if origin == joint:
            parts |= seg[name] | (seg[parent] if parent is not None else set())
    return frozenset(PART_NAME[p] for p in parts)


@functools.cache
def _adjacency() -> np.ndarray:
    """(256, len(JOINTS)) bool: part label ``p`` meets joint ``k`` (labels beyond the body's parts never do)."""
    table = np.zeros((256, len(JOINTS)), dtype=bool)
    for k, name in enumerate(JOINTS):
        for part in adjacent_parts(name):
            table[PART[part], k] = True
    return table


def annotate(camera: Camera, depth: np.ndarray, instances: np.ndarray, joints: np.ndarray,
             radius: np.ndarray, parts: np.ndarray | None = None,
             rule: Literal["depth", "coco"] = "depth") -> tuple[np.ndarray, ...]:
    """Keypoints, COCO visibility, camera-frame joints, boxes and areas of ``N`` people in one view.

    ``joints`` (N, K, 3) world mm, ``radius`` (N, K) depth-test tolerance. ``rule="coco"`` (with the view's
    ``parts`` map and ``K = len(JOINTS)``) excuses a joint hidden only by a part of its own person that meets at
    it (:func:`adjacent_parts`). See the module docstring.
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
    if rule == "coco":
        if parts is None or joints.shape[1] != len(JOINTS):
            raise ValueError("rule='coco' needs the parts map and the joints of JOINTS")
        own = instances[v, u] == np.arange(1, joints.shape[0] + 1)[:, None]
        excused = own & _adjacency()[parts[v, u], np.arange(joints.shape[1])[None, :]]
        occluded &= ~excused
    elif rule != "depth":
        raise ValueError(f"rule must be 'depth' or 'coco', got {rule!r}")
    vis = np.where(inside, np.where(occluded, 1, 2), 0).astype(np.int64)
    n = joints.shape[0]
    boxes = np.zeros((n, 4))
    areas = np.zeros(n, dtype=np.int64)
    for i in range(n):
        boxes[i], areas[i] = _mask_box(instances == i + 1)
    return kp, vis, kc, boxes, areas


def unlabel_hidden(visibility: np.ndarray, min_visible: float) -> np.ndarray:
    """COCO visibility ``(N, K)`` (0 outside, 1 hidden, 2 visible) as an annotator labels it: on a person with
    fewer than ``min_visible`` of its in-image joints visible, the hidden joints become 0 (not labelled). A person
    with no joint in the image stays as it is; ``min_visible <= 0`` changes nothing."""
    vis = np.asarray(visibility)
    inside = (vis > 0).sum(-1)
    share = np.divide((vis == 2).sum(-1), inside, out=np.ones(inside.shape), where=inside > 0)
    few = share < float(min_visible)
    return np.where(few[:, None] & (vis == 1), 0, vis).astype(vis.dtype)


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
    if cfg.walking > 0 and not cfg.motion:
        bodies = _walkers(_stream(seed, index, _WALK), cfg, bodies)
    if cfg.actions > 0 and not cfg.motion:
        bodies = _actors(_stream(seed, index, _ACTION), cfg, bodies)
    shot = None
    if cameras is None and cfg.views == 1 and cfg.composed:
        shot_rng = _stream(seed, index, _SHOT)
        shot = _plan_shot(shot_rng, cfg, bodies)
        bodies = _arrange(_stream(seed, index, _LAYOUT), cfg, bodies, shot)
    joints = np.stack([b.joints for b in bodies])
    radius = np.stack([b.joint_radius for b in bodies])
    if cameras is None:
        if cfg.views == 1:
            cameras = [_single_camera(rng, cfg, joints)]  # drawn in every case: the draws after it stay in place
            if shot is not None:
                cameras = [_shot_camera(shot_rng, cfg, bodies[shot.main], shot)]
        else:  # one fixed, calibrated rig per dataset (seed), as in a capture studio
            cameras = make_rig(cfg.views, cfg.size, np.random.default_rng([int(seed), 2**31 - 1]),
                               distortion=cfg.distortion)
    if cfg.clothing == "outfits":
        for _ in bodies:  # today's clothes are drawn all the same: the draws after them stay in place
            sample_appearance(rng)
        prims = _outfits(_stream(seed, index, _CLOTHING), bodies, cfg.faces)
    else:
        prims = [_person_primitives(b, i + 1, rng) for i, b in enumerate(bodies)]
    occ = _occluders(rng, cfg, [c.center for c in cameras], joints[:, 0, :2])
    if occ is not None and shot is not None:
        occ = _clear_of_camera(occ, cameras[0], shot)
    if occ is not None:
        prims.append(occ)
    scene = PrimitiveSet.concatenate(prims)
    el, az = np.deg2rad(rng.uniform(*cfg.light_elevation)), rng.uniform(0, 2 * np.pi)
    light = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    ambient, diffuse = rng.uniform(*cfg.ambient), rng.uniform(*cfg.diffuse)
    ground_cols = np.stack([_colour(rng, sat=(0.0, 0.4), val=(0.3, 0.75)) for _ in range(2)])
    tile = rng.uniform(300, 1000)
    tint = None
    if cfg.colour_temperature is not None and cfg.rgb:
        tint = _light_colour(float(_stream(seed, index, _LIGHT).uniform(*cfg.colour_temperature)))
    studio = _studio(_stream(seed, index, _STUDIO)) if cfg.backdrop == "studio" and cfg.rgb else None
    if studio is not None:
        ground_cols = studio["floor"]
    # which views show a photo (and keep the ground) is drawn with or without colour, so depth stays the same
    photos = _stream(seed, index, _PHOTO) if cfg.backgrounds is not None else None
    photo_images = _stream(seed, index, _PHOTO_IMAGE) if cfg.backgrounds is not None and cfg.rgb else None
    fx = _stream(seed, index, _EFFECTS) if cfg.effects is not None and cfg.rgb else None
    frame = Frame(int(seed), int(index), joints, bodies)
    for cam in cameras:
        bg = Background(procedural_background(rng, W, H) if cfg.rgb else np.zeros((H, W, 3), np.float32),
                        ground=cfg.ground, ground_colours=ground_cols, tile=tile)
        if studio is not None:
            bg.image = _studio_wall(studio, W, H)
        photo = False
        if photos is not None and photos.uniform() < cfg.background_prob:
            keep_ground = photos.uniform() < cfg.photo_ground
            bg.ground = cfg.ground and bool(keep_ground)
            if photo_images is not None:
                bg.image = _background_bank(cfg.backgrounds).sample(photo_images, W, H)
            photo = True
        if cfg.shadows:
            out = render(scene, cam, bg, light, ambient, diffuse, rgb=cfg.rgb, shadows=True)
        else:
            out = render(scene, cam, bg, light, ambient, diffuse, rgb=cfg.rgb)
        rgb = out.rgb
        if tint is not None or fx is not None:
            rgb = _finish(rgb, out.depth, tint, photo, fx, cfg.effects)
        kp, vis, kc, boxes, areas = annotate(cam, out.depth, out.instances, joints, radius, out.parts,
                                             cfg.visibility)
        if cfg.infer_min_visible > 0:
            vis = unlabel_hidden(vis, cfg.infer_min_visible)
        view = View(cam, rgb, out.depth, out.parts, out.instances, kp, vis, kc, boxes, areas)
        if amodal:
            view.amodal_boxes = np.stack([_silhouette_box(person, cam) for person in prims[:len(bodies)]])
        frame.views.append(view)
    return frame


# --------------------------------------------------------------------------------------------- composition
# the generators of the opt-in features: default_rng([seed, index, _AUX, stream]), one stream per feature
_AUX = 97
_SHOT, _LAYOUT, _WALK, _CLOTHING, _LIGHT, _STUDIO, _PHOTO, _EFFECTS, _PHOTO_IMAGE, _ACTION = range(10)
_SHOT_HFOV = {"full": (40.0, 70.0), "upper": (30.0, 55.0), "head": (20.0, 40.0)}  # degrees
_SHOT_ELEVATION = {"full": (-5.0, 30.0), "upper": (-5.0, 20.0), "head": (-8.0, 12.0)}
_J = {n: i for i, n in enumerate(JOINTS)}


def _stream(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index), _AUX, stream])


def walking_pose(phase: float, stride: float = 1.0, arm_swing: float = 1.0) -> np.ndarray:
    """Local joint angles ``(15, 3)`` (degrees, :func:`~.body.pose_body`'s convention) of a walking gait at
    ``phase`` (radians; the right side half a cycle later): hip flexion ``7.5 + 17.5 sin(phase)`` degrees, the
    knee flexing up to 60 degrees in mid-swing, arms swinging against the legs, a slight counter-rotation of the
    chest. ``stride`` and ``arm_swing`` scale the amplitudes."""
    a = np.zeros((len(SEGMENT_NAMES), 3))
    idx = {n: i for i, n in enumerate(SEGMENT_NAMES)}
    for side, ph in (("left", phase), ("right", phase + np.pi)):
        angles = {
            "upper_leg": (7.5 + 17.5 * stride * np.sin(ph), 3.0, 0.0),
            "lower_leg": (-(5.0 + 55.0 * stride * max(0.0, np.cos(ph + np.pi / 4)) ** 2), 0.0, 0.0),
            "foot": (8.0 * np.sin(ph - 0.5), 0.0, 0.0),
            "upper_arm": (-15.0 * arm_swing * np.sin(ph), 10.0, 0.0),
            "lower_arm": (15.0 + 15.0 * arm_swing * max(0.0, -np.sin(ph)), 0.0, 0.0),
        }
        for kind, v in angles.items():
            v = np.array(v)
            a[idx[f"{side}_{kind}"]] = v * np.array([1.0, -1.0, -1.0]) if side == "right" else v
    a[idx["chest"]] = (-3.0, 0.0, 6.0 * stride * np.sin(phase))
    a[idx["head"]] = (4.0, 0.0, -4.0 * stride * np.sin(phase))
    return a


def _walkers(rng: np.random.Generator, cfg: SceneConfig, bodies: list[PosedBody]) -> list[PosedBody]:
    """Re-pose each person with probability ``cfg.walking`` in a gait (same shape, heading and place)."""
    out = []
    for body in bodies:
        if rng.uniform() < cfg.walking:
            local = walking_pose(rng.uniform(0, 2 * np.pi), rng.uniform(0.6, 1.2), rng.uniform(0.5, 1.3))
            root = body.joints[_J["pelvis"]]
            body = pose_body(body.shape, local, root_rotation=body.rotations[0],
                             root_position=np.array([root[0], root[1], 0.0]), ground="touch")
        out.append(body)
    return out


def _actors(rng: np.random.Generator, cfg: SceneConfig, bodies: list[PosedBody]) -> list[PosedBody]:
    """Re-pose each person with probability ``cfg.actions`` in a frame of a motion-capture clip (same shape and
    place; a random heading)."""
    clips = _action_clips(tuple(cfg.action_clips))
    out = []
    for body in bodies:
        if rng.uniform() < cfg.actions:
            clip = clips[int(rng.integers(len(clips)))]
            rot, root = retarget(clip, int(rng.integers(len(clip))), body.shape, yaw_deg=rng.uniform(0, 360))
            pelvis = body.joints[_J["pelvis"]]
            body = pose_body(body.shape, global_rotations=rot, root_position=np.array([pelvis[0], pelvis[1], root[2]]),
                             ground="lift")
        out.append(body)
    return out


@functools.cache
def _action_clips(names: tuple[str, ...]) -> list[Motion]:
    """The DeepMimic clips ``names``, loaded once per process."""
    from humanvision.data.synthetic.motion import load_deepmimic

    return [load_deepmimic(name) for name in names]


def _moved(body: PosedBody, delta: np.ndarray) -> PosedBody:
    """The same person translated by ``delta`` (3,) mm."""
    prims = [replace(pr, a=pr.a + delta, b=pr.b + delta, centre=pr.centre + delta) for pr in body.primitives]
    return PosedBody(body.joints + delta, body.joint_radius, body.rotations, body.origins + delta, prims,
                     body.shape)


@dataclass
class _Shot:
    """A single-view framing planned before the people are arranged (see :func:`_plan_shot`)."""

    kind: str
    main: int
    azimuth: float  # radians: the camera stands in this direction from the main person
    elevation: float  # radians
    focal: float  # pixels
    distance: float  # mm from the framed region's centre to the camera
    top: float  # world z (mm) of the framed region
    bottom: float
    truncate: str | None  # side of the image that cuts the person
    amount: float  # fraction of the person's extent cut


def _plan_shot(rng: np.random.Generator, cfg: SceneConfig, bodies: list[PosedBody]) -> _Shot:
    """Draw the framing: shot kind, main person, direction, focal length and distance, truncation."""
    W, H = cfg.size
    p = np.asarray(cfg.shots if cfg.shots is not None else (1.0, 0.0, 0.0), dtype=np.float64)
    kind = SHOTS[int(rng.choice(3, p=p / p.sum()))]
    main = int(rng.integers(len(bodies)))
    body = bodies[main]
    J, stature = body.joints, body.shape.height
    if J[_J["head_top"], 2] < J[_J["thorax"], 2] + 0.1 * stature:
        kind = "full"  # not upright (a motion clip's cartwheel): no close-up of it
    top = J[_J["head_top"], 2] + 0.02 * stature
    if kind == "full":
        bottom = min(J[:, 2].min(), 0.0)
        fill = float(np.exp(rng.uniform(*np.log(cfg.scale))))
    elif kind == "upper":  # hips up
        bottom = J[_J["pelvis"], 2] - rng.uniform(0.0, 0.1) * stature
        fill = rng.uniform(0.75, 1.0)
    else:  # head and shoulders: chest up
        bottom = J[_J["thorax"], 2] - rng.uniform(*cfg.portrait_bottom) * stature
        fill = rng.uniform(0.85, 1.1)
    hfov = np.deg2rad(rng.uniform(*_SHOT_HFOV[kind]))
    focal = 0.5 * W / np.tan(0.5 * hfov)
    el_range = cfg.camera_elevation if (kind == "full" and cfg.camera_elevation is not None) else \
        _SHOT_ELEVATION[kind]
    elevation = np.deg2rad(rng.uniform(*el_range))
    if kind == "full":
        azimuth = rng.uniform(0, 2 * np.pi)
    else:  # in front of the person: a portrait sees the face
        fwd = body.rotations[SEGMENT_NAMES.index("chest")] @ np.array([0.0, 1.0, 0.0])
        azimuth = np.arctan2(fwd[1], fwd[0]) + np.deg2rad(rng.uniform(-60, 60))
    top = max(top, bottom + (cfg.portrait_height if kind == "head" else 0.3) * stature)
    distance = focal * (top - bottom) / (fill * H * max(np.cos(elevation), 0.5))
    truncate, amount = None, 0.0
    if rng.uniform() < cfg.truncation:
        if kind == "full":
            truncate = str(rng.choice(["bottom", "left", "right", "top"], p=[0.4, 0.25, 0.25, 0.1]))
            amount = rng.uniform(*cfg.truncation_amount)
        else:  # the bottom is cut already
            truncate = str(rng.choice(["left", "right", "top"], p=[0.4, 0.4, 0.2]))
            amount = 0.5 * rng.uniform(*cfg.truncation_amount)
    return _Shot(kind, main, float(azimuth), float(elevation), float(focal), float(distance), float(top),
                 float(bottom), truncate, float(amount))


def _arrange(rng: np.random.Generator, cfg: SceneConfig, bodies: list[PosedBody], shot: _Shot) -> list[PosedBody]:
    """Place the people other than the main one relative to the planned camera: a crowd (probability
    ``cfg.crowd``) stands just in front of and behind the main person, overlapping it in the image; otherwise
    people spread over ``cfg.spread`` (in depth, at most a third nearer to the camera than the main person;
    sideways within the picture's width). Nobody stands within 1.2 m of the camera or 0.6 m of someone else."""
    if len(bodies) == 1:
        return bodies
    n = len(bodies)
    crowd = rng.uniform() < cfg.crowd
    spread = cfg.spread if cfg.spread is not None else 900.0 * np.sqrt(n)
    away = -np.array([np.cos(shot.azimuth), np.sin(shot.azimuth)])  # horizontal viewing direction
    side = np.array([-away[1], away[0]])
    main_xy = bodies[shot.main].joints[_J["pelvis"], :2]
    reach = shot.distance * np.cos(shot.elevation)  # horizontal camera distance
    near = -(reach - 1200.0)  # nobody nearer to the camera than 1.2 m
    placed = [main_xy]
    out = list(bodies)
    for k in range(n):
        if k == shot.main:
            continue
        for _attempt in range(50):
            if crowd:
                lo = max(-2500.0, near, -0.25 * reach) if shot.kind == "full" else 400.0
                depth = rng.uniform(min(lo, 2500.0), 3000.0)
                lateral = rng.uniform(-1, 1) * 650.0 * max(reach + depth, 300.0) / max(reach, 300.0)
            else:  # within the picture's width (a photographer frames the group)
                depth = rng.uniform(min(max(-spread, near, -0.25 * reach), spread - 300.0), spread)
                half_width = 0.6 * 0.5 * cfg.size[0] / shot.focal * max(reach + depth, 300.0)
                lateral = rng.uniform(-1, 1) * min(spread, half_width)
            xy = main_xy + depth * away + lateral * side
            if all(np.linalg.norm(xy - q) > 600.0 for q in placed):
                break
        placed.append(xy)
        delta = np.array([*(xy - bodies[k].joints[_J["pelvis"], :2]), 0.0])
        out[k] = _moved(bodies[k], delta)
    return out


def _shot_camera(rng: np.random.Generator, cfg: SceneConfig, body: PosedBody, shot: _Shot) -> Camera:
    """The camera of a planned shot: aimed at the framed region, then turned so that the region lands at a random
    place inside the image (or across the border for a truncated shot, or with the bottom cut for close-ups)."""
    W, H = cfg.size
    J = body.joints
    region = J[J[:, 2] >= shot.bottom - 1.0]
    if len(region) < 2:
        region = J
    centre = np.array([*region[:, :2].mean(0), 0.5 * (shot.top + shot.bottom)])
    d = np.array([np.cos(shot.elevation) * np.cos(shot.azimuth), np.cos(shot.elevation) * np.sin(shot.azimuth),
                  np.sin(shot.elevation)])
    eye = centre + shot.distance * d
    eye[2] = max(eye[2], 300.0)
    cam = Camera.look_at(eye, centre, focal=shot.focal, width=W, height=H, name="cam0")
    # the region's pixel extent: its joints, the top and bottom of the frame region, the body's half-width
    ends = np.array([[centre[0], centre[1], shot.top], [centre[0], centre[1], shot.bottom]])
    uv = np.asarray(cam.project(np.concatenate([region, ends])), dtype=np.float64)
    pad = shot.focal * 0.12 * body.shape.height / shot.distance
    u0, u1 = uv[:, 0].min() - pad, uv[:, 0].max() + pad
    v0, v1 = uv[:, 1].min(), uv[:, 1].max()
    w, h = u1 - u0, v1 - v0
    slack_x, slack_y = max(0.0, (W - w) / 2), max(0.0, (H - h) / 2)
    du = W / 2 + rng.uniform(-slack_x, slack_x) * (1.0 if shot.kind == "full" else 0.6) - (u0 + u1) / 2
    if shot.kind == "full":
        dv = H / 2 + rng.uniform(-slack_y, slack_y) - (v0 + v1) / 2
    else:  # the region's bottom at or below the image's bottom: legs (and for portraits the body) cut off
        dv = H + rng.uniform(0.0, 0.08) * H - v1
    if shot.truncate == "left":
        du = -shot.amount * w - u0
    elif shot.truncate == "right":
        du = W + shot.amount * w - u1
    elif shot.truncate == "bottom":
        dv = H + shot.amount * h - v1
    elif shot.truncate == "top":
        dv = -shot.amount * h - v0
    # turn the camera: the pixel (cx - du, cy - dv) becomes the new image centre
    ray = cam.R.T @ np.array([-du / cam.K[0, 0], -dv / cam.K[1, 1], 1.0])
    return Camera.look_at(eye, eye + shot.distance * ray, focal=shot.focal, width=W, height=H, name="cam0")


def _clear_of_camera(occ: PrimitiveSet, camera: Camera, shot: _Shot) -> PrimitiveSet | None:
    """Occluders of a shot: none for close-ups; for full shots only those at least 1.2 m from the camera (one
    closer would fill the picture)."""
    if shot.kind != "full":
        return None
    pos = np.where((occ.kind == CAPSULE)[:, None], occ.a, occ.centre)
    keep = np.linalg.norm((pos - camera.center)[:, :2], axis=1) >= 1200.0
    if not keep.any():
        return None
    return PrimitiveSet(**{f: getattr(occ, f)[keep] for f in PrimitiveSet.__dataclass_fields__})


# --------------------------------------------------------------------------------------------- appearance (opt-in)
def _outfits(rng: np.random.Generator, bodies: list[PosedBody], faces: bool = False) -> list[PrimitiveSet]:
    """``clothing="outfits"``: each person dressed by :func:`~.identities.dress_person` (``faces``: with a
    close-up face)."""
    from humanvision.data.synthetic import identities  # imports this module

    dress = getattr(identities, "dress_person", None)
    if dress is None:
        raise ConfigError("SceneConfig.clothing='outfits' needs identities.dress_person, which this installation "
                          "lacks; use clothing='basic'")
    return [dress(b, i + 1, rng, faces=faces) for i, b in enumerate(bodies)]


_BANKS: dict[str, object] = {}


def _background_bank(folder: str | Path):
    """The :class:`~.backgrounds.BackgroundBank` of a folder, loaded once per process (it warns once about the
    files it skips; a folder without a usable photo is a :class:`~humanvision.errors.DataError`)."""
    key = str(Path(folder).expanduser().resolve())
    bank = _BANKS.get(key)
    if bank is None:
        from humanvision.data.synthetic.backgrounds import BackgroundBank

        bank = _BANKS[key] = BackgroundBank(Path(key))
    return bank


def _light_colour(kelvin: float) -> np.ndarray:
    """RGB gains (mean 1) of a black-body light of ``kelvin`` (a fit of the Planckian locus in sRGB, valid 1000 to
    40000 K; 6500 K is about white)."""
    t = kelvin / 100.0
    r = 255.0 if t <= 66 else 329.698727446 * (t - 60) ** -0.1332047592
    g = 99.4708025861 * np.log(t) - 161.1195681661 if t <= 66 else 288.1221695283 * (t - 60) ** -0.0755148492
    b = 255.0 if t >= 66 else (0.0 if t <= 19 else 138.5177312231 * np.log(t - 10) - 305.0447927307)
    rgb = np.clip(np.array([r, g, b]), 1.0, 255.0)
    return (rgb / rgb.mean()).astype(np.float32)


def _studio(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A plain studio: a dim, slightly tinted wall colour and a dark, nearly uniform floor."""
    wall = np.clip(rng.uniform(0.12, 0.45) * (1 + rng.normal(0, 0.06, 3)), 0, 1)
    g = rng.uniform(0.15, 0.4)
    floor = np.clip(np.stack([g * (1 + rng.normal(0, 0.05, 3)), g * 1.06 * np.ones(3)]), 0, 1)
    return {"wall": wall.astype(np.float32), "floor": floor, "fall": np.float32(rng.uniform(0.6, 1.0))}


def _studio_wall(studio: dict[str, np.ndarray], width: int, height: int) -> np.ndarray:
    """The studio's backdrop for one view: its wall colour, darker towards the top (the lights hang low)."""
    ramp = studio["fall"] + (1 - studio["fall"]) * np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    return np.broadcast_to(studio["wall"] * ramp, (height, width, 3)).astype(np.float32)


def _finish(rgb: np.ndarray, depth: np.ndarray, tint: np.ndarray | None, photo: bool,
            rng: np.random.Generator | None, effects) -> np.ndarray:
    """Light colour on the rendered surfaces (the whole picture unless the backdrop is a photo, which has its own
    light), then the photometric effects; uint8 in and out."""
    img = rgb.astype(np.float32) / 255.0
    if tint is not None:
        if photo:
            img = np.where((depth > 0)[..., None], img * tint, img)
        else:
            img = img * tint
    if rng is not None:
        from humanvision.data.synthetic.photometric import apply_effects

        img = apply_effects(np.clip(img, 0.0, 1.0), rng, effects)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
