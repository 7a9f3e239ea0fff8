"""A parametric articulated human body: kinematic tree, anthropometric proportions, joint limits and volume.

Conventions
-----------
* Units are **millimetres**. The body frame (and the world) has **z up**; at rest the body faces **+y** and its
  right side is **+x** (so ``left_*`` joints have negative x at rest). The rest pose stands upright with the arms
  hanging down.
* The body is 15 rigid **segments** (pelvis, chest, head, upper/lower arms, hands, thighs, shanks, feet). Each
  segment rotates about its origin joint; a pose is one local rotation per segment (relative to its parent, in the
  parent's frame) plus the root (pelvis) rotation and position. Local rotations are built from three angles in
  degrees, ``R = Rx(a0) @ Ry(a1) @ Rz(a2)``: ``a0`` flexion about the lateral axis, ``a1`` sideways
  (ab/adduction), ``a2`` twist about the rest bone axis. For left limbs a positive ``a1`` moves the limb away from
  the body; right limbs use the mirrored angles (``a1``, ``a2`` negated), so one table of limits serves both.
* :data:`JOINTS` is a superset of the joints of every built-in skeleton (coco17, mpii16, h36m17, itop15, lsp14,
  aic14, crowdpose14, mpi_inf_3dhp17, ntu25, body25), named with the canonical names of
  :mod:`humanvision.skeletons`, so any joint set is obtained by name (:data:`SYNTH_SKELETON` and
  :func:`humanvision.skeletons.convert`). ``pelvis`` is exactly the mid-point of the hips, ``thorax`` the mid-point
  of the shoulders and ``torso`` the mid-point of pelvis and thorax (the :data:`~humanvision.skeletons.DERIVED_JOINTS`
  conventions); nose, eyes, ears and ``head_top`` lie on the head's surface.
* Volume: each segment carries capsules (limbs, neck) and ellipsoids (head, torso, hands, feet), each with a
  body-part label (:data:`PART_NAMES`), so rendered part maps and depth are meaningful.
* Proportions follow adult segment-length ratios (Drillis & Contini; fractions of the stature ``H``), with
  per-person variation of stature (1.50-1.95 m), limb lengths, shoulder/hip width and girth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from humanvision.skeletons import Skeleton

__all__ = [
    "JOINTS",
    "JOINT_LIMITS",
    "PART_NAMES",
    "SEGMENTS",
    "SYNTH_SKELETON",
    "BodyShape",
    "PosedBody",
    "Primitive",
    "euler_to_matrix",
    "pose_body",
    "sample_pose",
    "sample_shape",
]

# --------------------------------------------------------------------------------------------- names and tables
PART_NAMES: tuple[str, ...] = (
    "background", "head", "neck", "torso", "left_upper_arm", "right_upper_arm", "left_lower_arm", "right_lower_arm",
    "left_hand", "right_hand", "left_upper_leg", "right_upper_leg", "left_lower_leg", "right_lower_leg", "left_foot",
    "right_foot",
)
PART = {n: i for i, n in enumerate(PART_NAMES)}

#: segment name -> (parent segment, origin joint). Order is topological (parents first).
SEGMENTS: dict[str, tuple[str | None, str]] = {
    "pelvis": (None, "pelvis"),
    "chest": ("pelvis", "spine"),
    "head": ("chest", "neck"),
    "left_upper_arm": ("chest", "left_shoulder"),
    "left_lower_arm": ("left_upper_arm", "left_elbow"),
    "left_hand": ("left_lower_arm", "left_wrist"),
    "right_upper_arm": ("chest", "right_shoulder"),
    "right_lower_arm": ("right_upper_arm", "right_elbow"),
    "right_hand": ("right_lower_arm", "right_wrist"),
    "left_upper_leg": ("pelvis", "left_hip"),
    "left_lower_leg": ("left_upper_leg", "left_knee"),
    "left_foot": ("left_lower_leg", "left_ankle"),
    "right_upper_leg": ("pelvis", "right_hip"),
    "right_lower_leg": ("right_upper_leg", "right_knee"),
    "right_foot": ("right_lower_leg", "right_ankle"),
}
SEGMENT_NAMES = tuple(SEGMENTS)

# Rest positions of the joints of a left/centre body in units of the stature H (ground at z = 0), and the segment
# each joint is attached to. Right joints mirror the left ones (x -> -x).
_FACE_DIRS = {  # directions (head frame, unit-sphere space) of the face points on the head ellipsoid
    "nose": (0.0, 1.0, -0.18), "left_eye": (-0.36, 0.9, 0.12), "left_ear": (-1.0, -0.05, 0.0), "head_top": (0, 0, 1),
}
_HEAD_RADII = (0.046, 0.056, 0.065)
_JOINT_SEGMENT = {
    "pelvis": "pelvis", "left_hip": "pelvis", "spine": "chest", "thorax": "chest", "left_shoulder": "chest",
    "neck": "head", "upper_neck": "head", "head": "head", "nose": "head", "left_eye": "head", "left_ear": "head",
    "head_top": "head", "left_elbow": "left_upper_arm", "left_wrist": "left_lower_arm", "left_hand": "left_hand",
    "left_hand_tip": "left_hand", "left_thumb": "left_hand", "left_knee": "left_upper_leg",
    "left_ankle": "left_lower_leg", "left_heel": "left_foot", "left_foot": "left_foot", "left_big_toe": "left_foot",
    "left_small_toe": "left_foot",
}
_JOINT_SEGMENT.update({"right_" + n[5:]: s.replace("left_", "right_") for n, s in _JOINT_SEGMENT.items()
                       if n.startswith("left_")})
_JOINT_SEGMENT["torso"] = "chest"  # recomputed as mid(pelvis, thorax) after posing


def _rest_left(shape: BodyShape) -> dict[str, np.ndarray]:
    """Rest positions of the centre and left joints in units of the stature (ground z = 0, facing +y)."""
    ankle = 0.045
    knee = ankle + 0.240 * shape.shank
    hip = knee + 0.245 * shape.thigh
    thorax = hip + 0.285 * shape.torso
    neck = thorax + 0.02
    elbow = thorax - 0.186 * shape.arm
    wrist = elbow - 0.146 * shape.forearm
    sx, hx, hs = -0.10 * shape.shoulder, -0.052 * shape.hip, shape.head
    p = {
        "pelvis": (0.0, 0.0, hip), "left_hip": (hx, 0.0, hip), "spine": (0.0, -0.005, hip + 0.09 * shape.torso),
        "thorax": (0.0, -0.01, thorax), "left_shoulder": (sx, -0.01, thorax), "neck": (0.0, -0.006, neck),
        "upper_neck": (0.0, 0.0, neck + 0.043 * hs), "head": (0.0, 0.012 * hs, neck + 0.10 * hs),
        "left_elbow": (sx, -0.01, elbow), "left_wrist": (sx, -0.01, wrist), "left_hand": (sx, -0.005, wrist - 0.05),
        "left_hand_tip": (sx, 0.0, wrist - 0.098), "left_thumb": (sx + 0.006, 0.028, wrist - 0.031),
        "left_knee": (hx, 0.004, knee), "left_ankle": (hx, -0.004, ankle), "left_heel": (hx, -0.032, 0.010),
        "left_foot": (hx, 0.082, 0.012), "left_big_toe": (hx + 0.01, 0.115, 0.012),
        "left_small_toe": (hx - 0.016, 0.100, 0.010),
    }
    return {k: np.array(v, dtype=np.float64) for k, v in p.items()}


# Joint order: the canonical superset (centre joints, then left/right pairs).
JOINTS: tuple[str, ...] = (
    "pelvis", "spine", "torso", "thorax", "neck", "upper_neck", "head", "head_top", "nose",
    "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand", "left_hand_tip", "right_hand_tip", "left_thumb",
    "right_thumb", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel",
    "right_heel", "left_foot", "right_foot", "left_big_toe", "right_big_toe", "left_small_toe", "right_small_toe",
)
JOINT_INDEX = {n: i for i, n in enumerate(JOINTS)}

SYNTH_SKELETON = Skeleton(
    name="synthetic39",
    joints=JOINTS,
    limbs=tuple((JOINT_INDEX[a], JOINT_INDEX[b]) for a, b in [
        ("pelvis", "spine"), ("spine", "thorax"), ("thorax", "neck"), ("neck", "upper_neck"),
        ("upper_neck", "head"), ("head", "head_top"), ("nose", "left_eye"), ("nose", "right_eye"),
        ("left_eye", "left_ear"), ("right_eye", "right_ear"),
        *[(f"{s}_{a}", f"{s}_{b}") for s in ("left", "right") for a, b in [
            ("shoulder", "elbow"), ("elbow", "wrist"), ("wrist", "hand"), ("hand", "hand_tip"), ("wrist", "thumb"),
            ("hip", "knee"), ("knee", "ankle"), ("ankle", "heel"), ("ankle", "foot"), ("foot", "big_toe"),
            ("foot", "small_toe")]],
        ("thorax", "left_shoulder"), ("thorax", "right_shoulder"), ("pelvis", "left_hip"), ("pelvis", "right_hip"),
    ]),
    root=JOINT_INDEX["pelvis"],
    description="humanvision synthetic body: superset of the built-in joint sets, canonical names",
)

# Joint-angle limits in degrees (a0, a1, a2) per segment, written for the left side (right is mirrored) and the
# pose prior (mean, std) used by :func:`sample_pose`.
JOINT_LIMITS: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "chest": ((-45, 20), (-25, 25), (-35, 35)),
    "head": ((-45, 40), (-30, 30), (-75, 75)),
    "upper_arm": ((-60, 180), (-10, 170), (-80, 80)),
    "lower_arm": ((0, 150), (0, 0), (-80, 80)),
    "hand": ((-70, 70), (-25, 35), (0, 0)),
    "upper_leg": ((-30, 120), (-15, 45), (-40, 40)),
    "lower_leg": ((-150, 0), (0, 0), (-10, 10)),
    "foot": ((-45, 25), (-15, 15), (0, 0)),
}
_PRIOR: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "chest": ((-5, 0, 0), (10, 8, 12)),
    "head": ((0, 0, 0), (12, 10, 30)),
    "upper_arm": ((10, 18, 0), (40, 30, 30)),
    "lower_arm": ((35, 0, 0), (40, 0, 30)),
    "hand": ((0, 0, 0), (20, 10, 0)),
    "upper_leg": ((8, 6, 0), (25, 8, 12)),
    "lower_leg": ((-18, 0, 0), (28, 0, 3)),
    "foot": ((0, 0, 0), (10, 5, 0)),
}


def _kind(segment: str) -> str:
    return segment.removeprefix("left_").removeprefix("right_")


def euler_to_matrix(angles_deg: np.ndarray) -> np.ndarray:
    """``Rx(a0) @ Ry(a1) @ Rz(a2)`` for angles ``[..., 3]`` in degrees; returns ``[..., 3, 3]``."""
    a = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    c, s = np.cos(a), np.sin(a)
    one, zero = np.ones_like(a[..., 0]), np.zeros_like(a[..., 0])
    rx = np.stack([one, zero, zero, zero, c[..., 0], -s[..., 0], zero, s[..., 0], c[..., 0]], -1)
    ry = np.stack([c[..., 1], zero, s[..., 1], zero, one, zero, -s[..., 1], zero, c[..., 1]], -1)
    rz = np.stack([c[..., 2], -s[..., 2], zero, s[..., 2], c[..., 2], zero, zero, zero, one], -1)
    shape = a.shape[:-1] + (3, 3)
    return rx.reshape(shape) @ ry.reshape(shape) @ rz.reshape(shape)


def _mirror(angles: np.ndarray) -> np.ndarray:
    return angles * np.array([1.0, -1.0, -1.0])


# --------------------------------------------------------------------------------------------- shape
@dataclass
class BodyShape:
    """Anthropometric parameters of one person.

    ``height`` is the stature in mm; the factors multiply the reference proportions (1 = average adult):
    ``arm``/``forearm``/``thigh``/``shank`` lengths, ``torso`` length, ``shoulder``/``hip`` widths, ``head`` size,
    and ``girth`` (limb and trunk thickness).
    """

    height: float = 1750.0
    arm: float = 1.0
    forearm: float = 1.0
    thigh: float = 1.0
    shank: float = 1.0
    torso: float = 1.0
    shoulder: float = 1.0
    hip: float = 1.0
    head: float = 1.0
    girth: float = 1.0


def sample_shape(rng: np.random.Generator) -> BodyShape:
    """An adult body: stature U(1500, 1950) mm, segment factors ~ N(1, 0.04), widths N(1, 0.06), girth U(0.85, 1.3)."""
    n = rng.normal(1.0, 1.0, size=8)
    return BodyShape(
        height=float(rng.uniform(1500.0, 1950.0)),
        arm=float(1 + 0.04 * np.clip(n[0], -2, 2)), forearm=float(1 + 0.04 * np.clip(n[1], -2, 2)),
        thigh=float(1 + 0.04 * np.clip(n[2], -2, 2)), shank=float(1 + 0.04 * np.clip(n[3], -2, 2)),
        torso=float(1 + 0.04 * np.clip(n[4], -2, 2)), shoulder=float(1 + 0.06 * np.clip(n[5], -2, 2)),
        hip=float(1 + 0.06 * np.clip(n[6], -2, 2)), head=float(1 + 0.03 * np.clip(n[7], -2, 2)),
        girth=float(rng.uniform(0.85, 1.3)),
    )


@dataclass
class Primitive:
    """A capsule (segment ``a``-``b``, ``radius``) or an ellipsoid (``centre``, rotation ``axes``, ``radii``).

    Coordinates are in the frame of whoever holds the primitive (segment frame at rest, world after posing).
    ``part`` is the body-part label, ``segment`` the index of the carrying segment (texture frame).
    """

    kind: str  # "capsule" | "ellipsoid"
    part: int
    segment: int
    a: np.ndarray = field(default_factory=lambda: np.zeros(3))
    b: np.ndarray = field(default_factory=lambda: np.zeros(3))
    radius: float = 0.0
    centre: np.ndarray = field(default_factory=lambda: np.zeros(3))
    axes: np.ndarray = field(default_factory=lambda: np.eye(3))
    radii: np.ndarray = field(default_factory=lambda: np.ones(3))


def _rest_geometry(shape: BodyShape) -> tuple[dict[str, np.ndarray], list[Primitive], dict[str, float]]:
    """Rest joint positions (mm, body frame, ground z=0), primitives (rest, body frame) and per-joint radii (mm)."""
    H = shape.height
    pos = _rest_left(shape)
    head_r = np.array(_HEAD_RADII) * shape.head
    for face, d in _FACE_DIRS.items():
        u = np.array(d, dtype=np.float64)
        pos[face] = pos["head"] + head_r * u / np.linalg.norm(u)
    for n in list(pos):
        if n.startswith("left_"):
            pos["right_" + n[5:]] = pos[n] * np.array([-1.0, 1.0, 1.0])
    pos = {n: v * H for n, v in pos.items()}
    pos["torso"] = 0.5 * (pos["pelvis"] + pos["thorax"])

    g = shape.girth
    seg = {n: i for i, n in enumerate(SEGMENT_NAMES)}
    prims: list[Primitive] = []

    def ell(part, segname, centre, radii, axes=None):
        prims.append(Primitive("ellipsoid", PART[part], seg[segname], centre=np.asarray(centre, float),
                               radii=np.asarray(radii, float), axes=np.eye(3) if axes is None else axes))

    def cap(part, segname, a, b, r):
        prims.append(Primitive("capsule", PART[part], seg[segname], a=np.asarray(a, float), b=np.asarray(b, float),
                               radius=float(r)))

    p = pos
    ell("torso", "pelvis", p["pelvis"] + H * np.array([0, -0.004, 0.03]),
        H * np.array([0.090 * g * shape.hip, 0.062 * g, 0.080]))
    ell("torso", "chest", p["spine"] + H * np.array([0, -0.004, 0.0]), H * np.array([0.085 * g, 0.058 * g, 0.09]))
    chest_c = 0.5 * (p["spine"] + p["thorax"]) + H * np.array([0, 0.0, 0.035])
    ell("torso", "chest", chest_c, H * np.array([0.098 * g * shape.shoulder, 0.064 * g, 0.125 * shape.torso]))
    cap("neck", "head", p["neck"], p["upper_neck"] + H * np.array([0, 0, 0.012]), 0.029 * H * g ** 0.5)
    ell("head", "head", p["head"], H * head_r)
    radii = {"upper_arm": 0.024, "lower_arm": 0.019, "upper_leg": 0.036, "lower_leg": 0.027}
    for s in ("left", "right"):
        sx = -1.0 if s == "left" else 1.0
        cap(f"{s}_upper_arm", f"{s}_upper_arm", p[f"{s}_shoulder"], p[f"{s}_elbow"], radii["upper_arm"] * H * g)
        cap(f"{s}_lower_arm", f"{s}_lower_arm", p[f"{s}_elbow"], p[f"{s}_wrist"], radii["lower_arm"] * H * g)
        ell(f"{s}_hand", f"{s}_hand", 0.5 * (p[f"{s}_wrist"] + p[f"{s}_hand_tip"]) + H * np.array([0, 0.004, 0]),
            H * np.array([0.013, 0.027 * g ** 0.5, 0.052]))
        cap(f"{s}_upper_leg", f"{s}_upper_leg", p[f"{s}_hip"], p[f"{s}_knee"], radii["upper_leg"] * H * g)
        cap(f"{s}_lower_leg", f"{s}_lower_leg", p[f"{s}_knee"], p[f"{s}_ankle"], radii["lower_leg"] * H * g)
        ell(f"{s}_foot", f"{s}_foot", p[f"{s}_ankle"] + H * np.array([0.002 * sx, 0.043, -0.023]),
            H * np.array([0.025, 0.078, 0.022]))

    # Tolerance of the depth test per joint: how deep inside the body volume the joint can lie (mm).
    jr = {"pelvis": 0.09, "spine": 0.07, "torso": 0.07, "thorax": 0.07, "neck": 0.035, "upper_neck": 0.035,
          "head": 0.065, "shoulder": 0.06, "elbow": 0.028, "wrist": 0.024, "hand": 0.03, "hand_tip": 0.02,
          "thumb": 0.02, "hip": 0.07, "knee": 0.04, "ankle": 0.032, "heel": 0.03, "foot": 0.03, "big_toe": 0.03,
          "small_toe": 0.03, "head_top": 0.015, "nose": 0.015, "eye": 0.015, "ear": 0.015}
    joint_radius = {n: jr[n.removeprefix("left_").removeprefix("right_")] * H * max(g, 1.0) for n in JOINTS}
    return pos, prims, joint_radius


# --------------------------------------------------------------------------------------------- pose
def sample_pose(rng: np.random.Generator, diversity: float = 1.0) -> np.ndarray:
    """Local joint angles ``(15, 3)`` in degrees (order :data:`SEGMENT_NAMES`; the pelvis row is unused).

    Each angle is drawn from a clipped normal around a relaxed standing pose (``_PRIOR``; ``diversity`` scales the
    standard deviations), then clipped to :data:`JOINT_LIMITS`; right limbs draw independently with mirrored signs.
    """
    angles = np.zeros((len(SEGMENT_NAMES), 3))
    for i, name in enumerate(SEGMENT_NAMES[1:], start=1):
        k = _kind(name)
        mean, std = (np.array(v, dtype=np.float64) for v in _PRIOR[k])
        lo, hi = (np.array([lim[j] for lim in JOINT_LIMITS[k]], dtype=np.float64) for j in (0, 1))
        a = np.clip(mean + diversity * std * rng.standard_normal(3), lo, hi)
        angles[i] = _mirror(a) if name.startswith("right_") else a
    return angles


def clip_to_limits(angles: np.ndarray) -> np.ndarray:
    """Clip local angles ``(15, 3)`` (degrees) to :data:`JOINT_LIMITS` (right limbs through the mirror)."""
    out = np.array(angles, dtype=np.float64)
    for i, name in enumerate(SEGMENT_NAMES[1:], start=1):
        lim = np.array(JOINT_LIMITS[_kind(name)], dtype=np.float64)
        a = _mirror(out[i]) if name.startswith("right_") else out[i]
        a = np.clip(a, lim[:, 0], lim[:, 1])
        out[i] = _mirror(a) if name.startswith("right_") else a
    return out


@dataclass
class PosedBody:
    """A posed person in world coordinates.

    Attributes:
        joints: ``(len(JOINTS), 3)`` world positions (mm).
        joint_radius: ``(len(JOINTS),)`` depth-test tolerance per joint (mm): how far inside the body volume the
            joint may lie below the visible surface.
        rotations: ``(15, 3, 3)`` global segment rotations; origins ``(15, 3)`` segment origins (world).
        primitives: the body volume in world coordinates (see :class:`Primitive`).
        shape: the :class:`BodyShape`.
    """

    joints: np.ndarray
    joint_radius: np.ndarray
    rotations: np.ndarray
    origins: np.ndarray
    primitives: list[Primitive]
    shape: BodyShape


def pose_body(shape: BodyShape, local: np.ndarray | None = None, root_rotation: np.ndarray | None = None,
              root_position: np.ndarray | None = None, global_rotations: np.ndarray | None = None,
              ground: str = "touch") -> PosedBody:
    """Forward kinematics: place the body's joints and primitives in the world.

    Args:
        shape: the person's :class:`BodyShape`.
        local: ``(15, 3)`` local angles in degrees (see module doc); ignored when ``global_rotations`` is given.
        root_rotation: ``(3, 3)`` world rotation of the pelvis segment (identity: facing +y).
        root_position: ``(3,)`` world position of the pelvis.
        ground: ``"touch"``: only x, y of ``root_position`` are used and the body is moved vertically so that its
            lowest surface point touches the ground plane ``z = 0``; ``"lift"``: the body is raised only if it
            would go through the ground (jumps stay in the air); ``"none"``: placed as given.
        global_rotations: ``(15, 3, 3)`` world rotations of all segments (used by motion retargeting).
    """
    rest, rest_prims, jrad = _rest_geometry(shape)
    nseg = len(SEGMENT_NAMES)
    if global_rotations is None:
        loc = euler_to_matrix(np.zeros((nseg, 3)) if local is None else local)
        loc[0] = np.eye(3) if root_rotation is None else np.asarray(root_rotation, dtype=np.float64)
        rot = np.zeros((nseg, 3, 3))
        for i, name in enumerate(SEGMENT_NAMES):
            parent = SEGMENTS[name][0]
            rot[i] = loc[i] if parent is None else rot[SEGMENT_NAMES.index(parent)] @ loc[i]
    else:
        rot = np.asarray(global_rotations, dtype=np.float64)
    origins = np.zeros((nseg, 3))
    for i, name in enumerate(SEGMENT_NAMES):
        parent, joint = SEGMENTS[name]
        if parent is None:
            origins[i] = 0.0
        else:
            pi = SEGMENT_NAMES.index(parent)
            origins[i] = origins[pi] + rot[pi] @ (rest[joint] - rest[SEGMENTS[parent][1]])
    seg_of = _JOINT_SEGMENT
    joints = np.zeros((len(JOINTS), 3))
    for j, name in enumerate(JOINTS):
        if name == "torso":
            continue
        si = SEGMENT_NAMES.index(seg_of[name])
        joints[j] = origins[si] + rot[si] @ (rest[name] - rest[SEGMENTS[seg_of[name]][1]])
    joints[JOINT_INDEX["torso"]] = 0.5 * (joints[JOINT_INDEX["pelvis"]] + joints[JOINT_INDEX["thorax"]])

    prims = []
    for pr in rest_prims:
        R, o, ro = rot[pr.segment], origins[pr.segment], rest[SEGMENTS[SEGMENT_NAMES[pr.segment]][1]]
        if pr.kind == "capsule":
            prims.append(Primitive("capsule", pr.part, pr.segment, a=o + R @ (pr.a - ro), b=o + R @ (pr.b - ro),
                                   radius=pr.radius))
        else:
            prims.append(Primitive("ellipsoid", pr.part, pr.segment, centre=o + R @ (pr.centre - ro),
                                   axes=R @ pr.axes, radii=pr.radii.copy()))
    shift = np.zeros(3) if root_position is None else np.asarray(root_position, dtype=np.float64).copy()
    if ground == "touch":
        shift[2] = -lowest_point(prims)
    elif ground == "lift":
        shift[2] = max(shift[2], -lowest_point(prims))
    elif ground != "none":
        raise ValueError(f"ground must be 'touch', 'lift' or 'none', got {ground!r}")
    joints += shift
    origins += shift
    for pr in prims:
        pr.a, pr.b, pr.centre = pr.a + shift, pr.b + shift, pr.centre + shift
    radius = np.array([jrad[n] for n in JOINTS])
    return PosedBody(joints, radius, rot, origins, prims, shape)


def lowest_point(prims: list[Primitive]) -> float:
    """Exact minimum z over the surfaces of capsules and ellipsoids."""
    zs = []
    for p in prims:
        if p.kind == "capsule":
            zs.append(min(p.a[2], p.b[2]) - p.radius)
        else:
            zs.append(p.centre[2] - float(np.sqrt(((p.axes[2] * p.radii) ** 2).sum())))
    return float(min(zs))
