"""Persistent synthetic identities: person crops for re-identification, pedestrian attributes, text-to-image re-id
and HAP pre-training (pretraining.md B.2, B.9.1, B.9.2, B.9.5).

An :class:`Identity` is a person who keeps a body (:func:`~.body.sample_shape`, adjusted for sex and age) and
clothes (colours from a palette of named colours, patterns, sleeve and trouser length, coat, skirt, boots, long
hair and accessories: hat, glasses, backpack, shoulder bag, handbag) across images; pose, camera, lighting and
background change from image to image. :func:`sample_identity` ``(seed, pid)`` is deterministic and
:func:`render_person_crop` renders one detector-like crop of it.

Attributes (:data:`PA100K_ATTRIBUTES`, PA-100K's 26 names in its official order) follow from the identity:

* expressed: ``Female`` (shorter stature, narrower shoulders, wider hips, mostly long hair, skirts),
  ``AgeOver60`` (grey or white hair), ``Age18-60``, ``AgeLess18`` (a child's stature and head), exactly one age;
  ``Hat``, ``Glasses``, ``HandBag``, ``ShoulderBag``, ``Backpack`` (accessory primitives); ``ShortSleeve`` /
  ``LongSleeve`` (exactly one); ``UpperStride`` (horizontal stripes), ``UpperLogo`` (a printed chest panel on the
  front), ``UpperPlaid`` (checks), ``UpperSplice`` (sleeves in a second colour), at most one; ``LowerStripe``
  (vertical stripes), ``LowerPattern`` (checks); ``LongCoat`` (a coat to the knees, long sleeves);
  ``Trousers`` / ``Shorts`` / ``Skirt&Dress`` (exactly one); ``boots`` (the shanks in the shoe colour);
* per view: ``Front`` / ``Side`` / ``Back``, exactly one per image, from the camera's azimuth relative to the
  direction the pelvis faces (within 45 degrees of the front: Front; of the back: Back; otherwise Side); they
  are 0 in :attr:`Identity.attributes`;
* never expressed, always 0: ``HoldObjectsInFront``.

Crops (:func:`render_person_crop`): one person on the ground at the origin in a sampled pose (or a frame of a
motion clip), seen from a random azimuth, level or from above like a surveillance camera, then framed like a
pedestrian detector: the person's projected box (surface points of every primitive) is grown by 5-15 % in height,
given a detector-like aspect (~1:2, wider when the pose is), shifted by a few percent and mapped onto the whole
crop, so a crop is what cutting that box out of a large image and resizing it to ``size`` would give (the
camera's intrinsics do the cut and the anisotropic resize, rendered directly at the crop's resolution; pixel
``j`` covers ``[j - 0.5, j + 0.5]``). Elevation: 0-35 degrees, distance 3.5-15 m. With
``camera=k`` the background (a random window of the camera's own backdrop), ground colours, light, elevation
(one per camera in 0-25 degrees, +-5 per image), distance and colour cast belong to camera ``k`` of the dataset's
seed: the same identity looks different across cameras, and the images of one camera share its look.

:func:`dress_person` gives scenes the same wardrobe: a posed body of the scene dressed with a random identity's
clothes and accessories, skin tones anywhere from very light to very dark, every primitive labelled with the scene's
instance and the body part under it (clothes over a limb carry the limb's label).

Writers, each in the official layout (see their docstrings): :func:`generate_market1501`,
:func:`generate_pa100k`, :func:`generate_cuhk_pedes`, :func:`generate_person_crops` (LUPerson-like crops with
COCO-17 keypoints and HAP's per-image pose files). Every image depends only on the seed and its index, so
``workers`` never changes the bytes written.
"""

from __future__ import annotations

import colorsys
import functools
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from humanvision.data.io import write_image
from humanvision.data.synthetic.body import (
    JOINT_INDEX,
    PART,
    SEGMENT_NAMES,
    BodyShape,
    PosedBody,
    pose_body,
    sample_pose,
    sample_shape,
)
from humanvision.data.synthetic.motion import Motion, retarget
from humanvision.data.synthetic.parallel import worker_pool
from humanvision.data.synthetic.render import (
    BOX,
    CAPSULE,
    ELLIPSOID,
    PATTERNS,
    Background,
    PrimitiveSet,
    procedural_background,
    render,
)
from humanvision.data.synthetic.scene import PART_NAME, Appearance, _pack, _person_primitives, annotate
from humanvision.data.synthetic.writers import Progress, select_joints
from humanvision.errors import ConfigError
from humanvision.geometry.camera import Camera

__all__ = [
    "COLOURS",
    "PA100K_ATTRIBUTES",
    "SKIN_RAMP",
    "Identity",
    "caption",
    "dress_person",
    "generate_cuhk_pedes",
    "generate_market1501",
    "generate_pa100k",
    "generate_person_crops",
    "identity_sheet",
    "render_person_crop",
    "sample_identity",
    "tokenize",
]

#: PA-100K's attribute names, in the official order of its ``annotation.mat``
PA100K_ATTRIBUTES: tuple[str, ...] = (
    "Female", "AgeOver60", "Age18-60", "AgeLess18", "Front", "Side", "Back", "Hat", "Glasses", "HandBag",
    "ShoulderBag", "Backpack", "HoldObjectsInFront", "ShortSleeve", "LongSleeve", "UpperStride", "UpperLogo",
    "UpperPlaid", "UpperSplice", "LowerStripe", "LowerPattern", "LongCoat", "Trousers", "Shorts", "Skirt&Dress",
    "boots",
)
#: attributes the synthetic world never expresses (always 0)
UNEXPRESSED = ("HoldObjectsInFront",)
VIEW_ATTRIBUTES = ("Front", "Side", "Back")

#: named clothing colours (RGB in [0, 1]); captions use the names
COLOURS: dict[str, tuple[float, float, float]] = {
    "black": (0.07, 0.07, 0.08), "white": (0.92, 0.92, 0.90), "grey": (0.50, 0.50, 0.52),
    "red": (0.80, 0.10, 0.10), "orange": (0.95, 0.50, 0.10), "yellow": (0.95, 0.85, 0.15),
    "green": (0.15, 0.60, 0.20), "blue": (0.15, 0.30, 0.80), "dark blue": (0.08, 0.12, 0.38),
    "purple": (0.50, 0.20, 0.60), "pink": (0.95, 0.55, 0.70), "brown": (0.45, 0.28, 0.12),
    "beige": (0.80, 0.72, 0.55),
}
_UPPER_COLOURS = tuple(COLOURS)
_LOWER_COLOURS = ("black", "dark blue", "blue", "grey", "brown", "beige", "white", "black", "dark blue", "grey")
_SHOE_COLOURS = ("black", "white", "brown", "grey", "black")
_BAG_COLOURS = ("black", "brown", "red", "blue", "grey", "beige")
_SKIN = np.array([[0.96, 0.80, 0.69], [0.90, 0.70, 0.56], [0.78, 0.58, 0.43], [0.58, 0.40, 0.28],
                  [0.38, 0.26, 0.18]])
_HAIR = {"black": (0.08, 0.06, 0.05), "brown": (0.30, 0.19, 0.10), "blond": (0.92, 0.80, 0.50),
         "auburn": (0.45, 0.15, 0.07)}
_OLD_HAIR = {"grey": (0.58, 0.58, 0.58), "white": (0.85, 0.85, 0.83)}
_UPPER_PATTERNS = ("plain", "logo", "stripes", "plaid", "splice")
_SHIRT_PATTERN = {"plain": 0, "logo": 5, "stripes": 1, "plaid": 3, "splice": 0}  # render.PATTERNS indices
_LOWER_PATTERNS = ("plain", "stripes", "checks")
_TROUSER_PATTERN = {"plain": 0, "stripes": 2, "checks": 3}
ACCESSORIES = ("hat", "glasses", "backpack", "shoulder_bag", "handbag")
_COCO = None  # indices of the coco17 joints in body.JOINTS (filled on first use)


def _coco() -> np.ndarray:
    global _COCO
    if _COCO is None:
        _COCO = select_joints("coco17")
    return _COCO


# --------------------------------------------------------------------------------------------- identities
@dataclass
class Identity:
    """A persistent person (see the module docstring).

    Attributes:
        pid: the identity's number (with the seed it determines everything below).
        shape: the body.
        appearance: what the base renderer draws (skin, hair, shirt, trousers, shoes; patterns; sleeve and
            trouser length).
        female, age: sex and age group (``"child"``, ``"adult"`` or ``"senior"``).
        upper: ``"shirt"`` or ``"coat"``; upper_pattern: one of plain, logo, stripes, plaid, splice.
        lower: ``"trousers"``, ``"shorts"`` or ``"skirt"``; lower_pattern: plain, stripes or checks.
        boots, long_hair: as named.
        accessories: a subset of :data:`ACCESSORIES`.
        colour_names: ``{"shirt", "shirt_b", "lower", "shoes", "hair", "hat", "bag"}`` -> colour name.
        colours: the same keys -> RGB in [0, 1] (jittered palette colours).
        attributes: :data:`PA100K_ATTRIBUTES` -> 0/1 (the view attributes are 0 here).
    """

    pid: int
    shape: BodyShape
    appearance: Appearance
    female: bool
    age: str
    upper: str
    upper_pattern: str
    lower: str
    lower_pattern: str
    boots: bool
    long_hair: bool
    accessories: tuple[str, ...]
    colour_names: dict[str, str]
    colours: dict[str, np.ndarray]
    attributes: dict[str, int] = field(default_factory=dict)

    @property
    def attribute_vector(self) -> np.ndarray:
        """``(26,)`` uint8 in :data:`PA100K_ATTRIBUTES` order."""
        return np.array([self.attributes[a] for a in PA100K_ATTRIBUTES], dtype=np.uint8)


def _pick(rng: np.random.Generator, options: Sequence[str], exclude: str | None = None) -> str:
    opts = [o for o in options if o != exclude]
    return opts[int(rng.integers(len(opts)))]


def _named(rng: np.random.Generator, name: str, table: dict = COLOURS) -> np.ndarray:
    return np.clip(np.array(table[name], dtype=np.float64) + rng.normal(0.0, 0.025, 3), 0.0, 1.0)


def sample_identity(seed: int, pid: int) -> Identity:
    """Identity ``pid`` of the world ``seed`` (deterministic: depends only on ``(seed, pid)``)."""
    if int(pid) < 0 or int(seed) < 0:
        raise ConfigError(f"seed and pid must be >= 0, got seed {seed}, pid {pid}")
    return _draw_identity(np.random.default_rng([int(seed), int(pid), 0x1D]), int(pid))


def _draw_identity(rng: np.random.Generator, pid: int) -> Identity:
    """An identity drawn from ``rng`` (the draws of :func:`sample_identity`, in its order)."""
    female = bool(rng.uniform() < 0.5)
    u = rng.uniform()
    age = "child" if u < 0.08 else "senior" if u > 0.9 else "adult"
    shape = sample_shape(rng)
    if female:
        shape.height = 1480.0 + (shape.height - 1500.0) * 0.65
        shape.shoulder *= 0.92
        shape.hip *= 1.05
        shape.girth *= 0.95
    if age == "child":
        shape.height = 1100.0 + (shape.height - 1480.0) * 0.8
        shape.head *= 1.12
    skin = np.clip(_SKIN[rng.integers(len(_SKIN))] + rng.normal(0, 0.03, 3), 0, 1)
    hair_table = _OLD_HAIR if age == "senior" else _HAIR
    hair_name = _pick(rng, tuple(hair_table))
    long_hair = bool(rng.uniform() < (0.7 if female else 0.08))

    upper = "coat" if rng.uniform() < 0.08 else "shirt"
    long_sleeves = upper == "coat" or bool(rng.uniform() < 0.5)
    upper_pattern = _UPPER_PATTERNS[int(rng.choice(5, p=[0.35, 0.25, 0.15, 0.1, 0.15]))]
    if upper == "coat" and upper_pattern in ("logo", "splice"):
        upper_pattern = "plain"
    if upper == "coat":
        lower = "trousers"
    elif female:
        lower = ("trousers", "shorts", "skirt")[int(rng.choice(3, p=[0.5, 0.15, 0.35]))]
    else:
        lower = "trousers" if rng.uniform() < 0.8 else "shorts"
    lower_pattern = _LOWER_PATTERNS[int(rng.choice(3, p=[0.8, 0.1, 0.1]))]
    boots = bool(rng.uniform() < (0.2 if female else 0.08))
    acc_p = {"hat": 0.15, "glasses": 0.15, "backpack": 0.2, "shoulder_bag": 0.3 if female else 0.12,
             "handbag": 0.15 if female else 0.06}
    accessories = tuple(a for a in ACCESSORIES if rng.uniform() < acc_p[a])

    names = {"shirt": _pick(rng, _UPPER_COLOURS)}
    names["shirt_b"] = _pick(rng, _UPPER_COLOURS, exclude=names["shirt"])
    names["lower"] = _pick(rng, _LOWER_COLOURS)
    names["shoes"] = _pick(rng, _SHOE_COLOURS)
    names["hat"] = _pick(rng, _UPPER_COLOURS)
    names["bag"] = _pick(rng, _BAG_COLOURS)
    colours = {k: _named(rng, v) for k, v in names.items()}
    names["hair"] = hair_name
    colours["hair"] = np.array(hair_table[hair_name], dtype=np.float64)
    lower_b = _named(rng, _pick(rng, _UPPER_COLOURS, exclude=names["lower"]))
    period_shirt = float(rng.uniform(50, 100) if upper_pattern == "stripes" else rng.uniform(50, 90))
    period_lower = float(rng.uniform(30, 50) if lower_pattern == "stripes" else rng.uniform(40, 80))

    appearance = Appearance(
        skin=skin, hair=colours["hair"], shirt=colours["shirt"], shirt_b=colours["shirt_b"],
        trousers=colours["lower"], trousers_b=lower_b, shoes=colours["shoes"],
        shirt_pattern=_SHIRT_PATTERN[upper_pattern], trousers_pattern=_TROUSER_PATTERN[lower_pattern],
        long_sleeves=long_sleeves, long_trousers=lower == "trousers", period_shirt=period_shirt,
        period_trousers=period_lower)
    ident = Identity(int(pid), shape, appearance, female, age, upper, upper_pattern, lower, lower_pattern, boots,
                     long_hair, accessories, names, colours)
    ident.attributes = _attributes(ident)
    return ident


def _attributes(ident: Identity) -> dict[str, int]:
    a = dict.fromkeys(PA100K_ATTRIBUTES, 0)
    a["Female"] = int(ident.female)
    a[{"child": "AgeLess18", "adult": "Age18-60", "senior": "AgeOver60"}[ident.age]] = 1
    for acc, name in (("hat", "Hat"), ("glasses", "Glasses"), ("handbag", "HandBag"),
                      ("shoulder_bag", "ShoulderBag"), ("backpack", "Backpack")):
        a[name] = int(acc in ident.accessories)
    a["LongSleeve" if ident.appearance.long_sleeves else "ShortSleeve"] = 1
    upper = {"stripes": "UpperStride", "logo": "UpperLogo", "plaid": "UpperPlaid", "splice": "UpperSplice"}
    if ident.upper_pattern in upper:
        a[upper[ident.upper_pattern]] = 1
    lower = {"stripes": "LowerStripe", "checks": "LowerPattern"}
    if ident.lower_pattern in lower:
        a[lower[ident.lower_pattern]] = 1
    a["LongCoat"] = int(ident.upper == "coat")
    a[{"trousers": "Trousers", "shorts": "Shorts", "skirt": "Skirt&Dress"}[ident.lower]] = 1
    a["boots"] = int(ident.boots)
    return a


# --------------------------------------------------------------------------------------------- primitives
def _row_ell(centre, axes, radii, part: int, colour, colour_b=None, pattern: int = 0, period: float = 100.0):
    c, M = np.asarray(centre, float), np.asarray(axes, float)
    return (ELLIPSOID, np.zeros(3), np.zeros(3), 0.0, c, M, np.asarray(radii, float), M, c, part, colour,
            colour if colour_b is None else colour_b, pattern, period)


def _row_box(centre, axes, half, part: int, colour):
    c, M = np.asarray(centre, float), np.asarray(axes, float)
    return (BOX, np.zeros(3), np.zeros(3), 0.0, c, M, np.asarray(half, float), M, c, part, colour, colour, 0, 100.0)


def _row_cap(a, b, r: float, part: int, colour):
    a = np.asarray(a, float)
    return (CAPSULE, a, np.asarray(b, float), float(r), np.zeros(3), np.eye(3), np.ones(3), np.eye(3), a, part,
            colour, colour, 0, 100.0)


def _frame_from(z: np.ndarray, x_hint: np.ndarray) -> np.ndarray:
    """Rotation whose third column is ``z`` and first is ``x_hint`` made orthogonal to it."""
    z = z / max(np.linalg.norm(z), 1e-9)
    x = x_hint - (x_hint @ z) * z
    x = x / max(np.linalg.norm(x), 1e-9)
    return np.stack([x, np.cross(z, x), z], 1)


def _identity_primitives(ident: Identity, body: PosedBody, instance: int = 1, labelled: bool = False,
                         hairline: float | None = None) -> PrimitiveSet:
    """The person's primitives: the base renderer's body and clothes, recoloured for splice sleeves, coats, skirts
    and boots, plus the coat / skirt / hair / accessory primitives (accessory parts: hat, hair and glasses
    ``head``, coat and skirt ``torso``, bags 0).

    ``labelled`` gives every primitive the label of the body part under it, for part maps: the coat and the skirt
    become a ``torso`` piece over the hips (down to where the body's own pelvis ends) and one tube per thigh
    labelled with that upper leg; backpacks, shoulder bags and their straps are ``torso``, a handbag is the hand
    holding it. Without it the primitives are the re-id crops' (unchanged).

    ``hairline`` (scenes; the height of the hairline on the head, in units of its vertical semi-axis) gives the head
    a face that survives a close-up (:func:`_face_rows`): the ``face`` texture, a nose, ears and, for short hair
    without a hat, a hair cap over the crown."""
    ap = ident.appearance
    prims = _person_primitives(body, instance, appearance=ap)
    col = ident.colours
    seg_names = [SEGMENT_NAMES[p.segment] for p in body.primitives]
    for i, pr in enumerate(body.primitives):
        part = PART_NAME[pr.part]
        sleeve = part.endswith("upper_arm") or (part.endswith("lower_arm") and ap.long_sleeves)
        if ident.upper_pattern == "splice" and sleeve:
            prims.colour_a[i] = prims.colour_b[i] = ap.shirt_b
            prims.pattern[i] = 0
        if part == "torso" and seg_names[i] == "pelvis" and ident.upper == "coat":
            prims.colour_a[i], prims.colour_b[i] = ap.shirt, ap.shirt_b
            prims.pattern[i] = ap.shirt_pattern
            prims.period[i] = ap.period_shirt
        if part.endswith("upper_leg") and ident.lower == "skirt":
            prims.colour_a[i] = prims.colour_b[i] = ap.skin
            prims.pattern[i] = 0
        if part.endswith("lower_leg") and ident.boots:
            prims.colour_a[i] = prims.colour_b[i] = ap.shoes
            prims.pattern[i] = 0

    H = ident.shape.height
    J = {n: body.joints[JOINT_INDEX[n]] for n in ("pelvis", "left_knee", "right_knee", "left_shoulder",
                                                   "right_shoulder", "left_hand_tip", "right_hand_tip",
                                                   "left_hip", "right_hip")}
    Rp = body.rotations[SEGMENT_NAMES.index("pelvis")]
    head = next(p for p in body.primitives if PART_NAME[p.part] == "head")
    chest = max((p for p in body.primitives if PART_NAME[p.part] == "torso" and SEGMENT_NAMES[p.segment] == "chest"),
                key=lambda p: p.radii[2])
    hc, hM, hr = head.centre, head.axes, head.radii
    cc, cM, cr = chest.centre, chest.axes, chest.radii
    rows = []
    knees = 0.5 * (J["left_knee"] + J["right_knee"])
    thigh = knees - J["pelvis"]
    L = float(np.linalg.norm(thigh))
    g, hip = ident.shape.girth, ident.shape.hip
    if ident.upper == "coat" and not labelled:
        M = _frame_from(-thigh, Rp[:, 0])
        rows.append(_row_ell(J["pelvis"] + 0.45 * thigh, M, (0.105 * H * g * hip, 0.078 * H * g, 0.55 * L + 0.05 * H),
                             PART["torso"], ap.shirt, ap.shirt_b, ap.shirt_pattern if ap.shirt_pattern != 5 else 0,
                             ap.period_shirt))
    if ident.lower == "skirt" and not labelled:
        M = _frame_from(-thigh, Rp[:, 0])
        rows.append(_row_ell(J["pelvis"] + 0.35 * thigh, M, (0.1 * H * g * hip, 0.072 * H * g, 0.4 * L + 0.03 * H),
                             PART["torso"], ap.trousers, ap.trousers_b, ap.trousers_pattern, ap.period_trousers))
    if labelled and (ident.upper == "coat" or ident.lower == "skirt"):
        coat = ident.upper == "coat"
        M = _frame_from(-thigh, Rp[:, 0])
        up = (0.1 * L + 0.05 * H) if coat else (0.05 * L + 0.03 * H)  # above the pelvis, as the one-piece garment
        colours = (ap.shirt, ap.shirt_b, ap.shirt_pattern if ap.shirt_pattern != 5 else 0, ap.period_shirt) if coat \
            else (ap.trousers, ap.trousers_b, ap.trousers_pattern, ap.period_trousers)
        half = 0.5 * (up + 0.2 * L)  # the hip piece ends 0.2 thigh below the pelvis, like the body's pelvis
        centre = J["pelvis"] + (0.2 * L - half) * thigh / max(L, 1e-9)
        rows.append(_row_ell(centre, M, ((0.105 if coat else 0.1) * H * g * hip, (0.078 if coat else 0.072) * H * g,
                                         half), PART["torso"], *colours))
        for side, inward in (("left", 1.0), ("right", -1.0)):
            # one wide ellipsoid per thigh, reaching past the midline: together they look like one garment and
            # the visible seam between the two labels is where their surfaces cross, near the midline
            hip_j, knee_j = J[f"{side}_hip"], J[f"{side}_knee"]
            thigh_s = knee_j - hip_j
            L_s = max(float(np.linalg.norm(thigh_s)), 1e-9)
            d = thigh_s / L_s
            top = hip_j - 0.15 * L * d
            hem = hip_j + ((L_s + 0.06 * H) if coat else (0.75 * L_s + 0.05 * H)) * d
            c = 0.5 * (top + hem) + inward * 0.02 * H * g * hip * Rp[:, 0]
            rows.append(_row_ell(c, _frame_from(-d, Rp[:, 0]),
                                 ((0.075 if coat else 0.07) * H * g * hip, (0.078 if coat else 0.072) * H * g,
                                  0.5 * float(np.linalg.norm(hem - top))),
                                 PART[f"{side}_upper_leg"], *colours))
    if ident.long_hair:
        rows.append(_row_ell(hc + hM @ (hr * np.array([0.0, -0.3, -0.5])), hM, hr * np.array([0.92, 0.6, 0.95]),
                             PART["head"], ap.hair))
    if "hat" in ident.accessories:
        rows.append(_row_ell(hc + hM @ (hr * np.array([0.0, -0.05, 0.45])), hM, hr * np.array([1.1, 1.08, 0.62]),
                             PART["head"], col["hat"]))
        rows.append(_row_ell(hc + hM @ (hr * np.array([0.0, 0.45, 0.42])), hM, hr * np.array([0.85, 1.05, 0.08]),
                             PART["head"], col["hat"]))
    if "glasses" in ident.accessories:
        rows.append(_row_ell(hc + hM @ (hr * np.array([0.0, 0.88, 0.12])), hM, hr * np.array([0.75, 0.16, 0.15]),
                             PART["head"], np.array([0.05, 0.05, 0.06])))
    if hairline is not None:
        k = next(i for i, p in enumerate(body.primitives) if PART_NAME[p.part] == "head")
        prims.pattern[k], prims.period[k] = PATTERNS.index("face"), float(hairline)
        rows += _face_rows(hc, hM, hr, ap.skin, ap.hair, cap=not ident.long_hair and "hat" not in ident.accessories)
    bag = col["bag"]
    strap = 0.006 * H
    carried = PART["torso"] if labelled else 0
    if "backpack" in ident.accessories:
        rows.append(_row_box(cc + cM @ np.array([0.0, -1.3 * cr[1], -0.1 * cr[2]]), cM,
                             (0.7 * cr[0], 0.38 * cr[1], 0.62 * cr[2]), carried, bag))
        for s, side in ((-1.0, "left"), (1.0, "right")):
            top = J[f"{side}_shoulder"] + cM @ np.array([-s * 0.01 * H, -0.005 * H, 0.03 * H])
            front = cc + cM @ (cr * np.array([s * 0.55, 0.82, 0.25]))
            rows.append(_row_cap(top, front, strap, carried, bag))
    if "shoulder_bag" in ident.accessories:
        s, side, other = (1.0, "right", "left") if ident.pid % 2 else (-1.0, "left", "right")
        centre = J[f"{side}_hip"] + Rp @ np.array([s * (0.064 * H * g), -0.02 * H, -0.01 * H])
        half = np.array([0.022 * H, 0.07 * H, 0.055 * H])
        rows.append(_row_box(centre, Rp, half, carried, bag))
        mid = cc + cM @ (cr * np.array([0.0, 1.02, 0.1]))
        rows.append(_row_cap(J[f"{other}_shoulder"] + cM @ np.array([0.0, 0.0, 0.03 * H]), mid, strap, carried, bag))
        rows.append(_row_cap(mid, centre + Rp @ np.array([0.0, 0.0, half[2]]), strap, carried, bag))
    if "handbag" in ident.accessories:
        side = "left" if ident.pid % 2 else "right"
        yaw = Rp[:, 1].copy()
        yaw[2] = 0.0
        M = _frame_from(np.array([0.0, 0.0, 1.0]), np.cross(yaw if np.linalg.norm(yaw) > 1e-6 else
                                                          np.array([0.0, 1.0, 0.0]), [0.0, 0.0, 1.0]))
        half = np.array([0.025 * H, 0.08 * H, 0.065 * H])
        rows.append(_row_box(J[f"{side}_hand_tip"] - np.array([0.0, 0.0, half[2] - 0.01 * H]), M, half,
                             PART[f"{side}_hand"] if labelled else 0, bag))
    if not rows:
        return prims
    return PrimitiveSet.concatenate([prims, _pack(rows, instance)])


def _face_rows(hc: np.ndarray, hM: np.ndarray, hr: np.ndarray, skin: np.ndarray, hair: np.ndarray, cap: bool
               ) -> list[tuple]:
    """A nose and two ears (skin) and optionally a hair cap on the head ellipsoid (centre ``hc``, axes ``hM``: x to
    the person's right, y forward, z up; semi-axes ``hr``). All are labelled ``head``. The nose's tip stands 0.06 of
    the head's depth in front of the ``nose`` joint and each ear is centred just outside its ``*_ear`` joint, so
    the COCO face points stay on visible surface within their depth tolerance."""
    nose_dir = np.array([0.0, 1.0, -0.18]) / np.linalg.norm([0.0, 1.0, -0.18])
    rows = [_row_ell(hc + hM @ (hr * (nose_dir + np.array([0.0, -0.08, 0.08]))), hM, hr * np.array([0.15, 0.14, 0.24]),
                     PART["head"], skin)]
    for sx in (-1.0, 1.0):
        ear_dir = np.array([sx, -0.05, 0.0]) / np.linalg.norm([1.0, 0.05, 0.0])
        rows.append(_row_ell(hc + hM @ (hr * ear_dir * 1.02), hM, hr * np.array([0.1, 0.2, 0.3]), PART["head"],
                             skin * 0.93))
    if cap:
        rows.append(_row_ell(hc + hM @ (hr * np.array([0.0, -0.12, 0.1])), hM, hr * np.array([1.04, 0.98, 0.97]),
                             PART["head"], hair))
    return rows


#: skin tones from very light to very dark (RGB in [0, 1]); :func:`dress_person` draws anywhere along this ramp
SKIN_RAMP = np.array([[0.98, 0.87, 0.78], [0.96, 0.80, 0.69], [0.90, 0.70, 0.56], [0.78, 0.58, 0.43],
                      [0.58, 0.40, 0.28], [0.38, 0.26, 0.18], [0.24, 0.16, 0.11]])


def _skin_tone(rng: np.random.Generator) -> np.ndarray:
    """A skin colour anywhere along :data:`SKIN_RAMP` (linear interpolation), with a small undertone jitter."""
    t = rng.uniform(0.0, len(SKIN_RAMP) - 1.0)
    k = min(int(t), len(SKIN_RAMP) - 2)
    tone = SKIN_RAMP[k] + (t - k) * (SKIN_RAMP[k + 1] - SKIN_RAMP[k])
    return np.clip(tone * (1.0 + rng.normal(0.0, 0.03, 3)), 0.0, 1.0)


def dress_person(body: PosedBody, instance: int, rng: np.random.Generator, faces: bool = False) -> PrimitiveSet:
    """Dress a posed body with a random look, for scenes: the body's primitives plus clothes and accessories.

    The look is an identity drawn from ``rng`` (:func:`sample_identity`'s rules: shirt or coat, long or short
    sleeves, trousers, shorts or a skirt, patterns, boots, long hair, hat, glasses, backpack, shoulder bag,
    handbag, named colours) with a skin tone anywhere from very light to very dark (:data:`SKIN_RAMP`); the garments
    are sized on ``body`` itself. Every primitive carries ``instance`` and the label of the body part under it
    (``labelled`` :func:`_identity_primitives`: coat and skirt split into a hip piece, ``torso``, and one piece per
    thigh, that upper leg; bags ``torso``, a handbag the hand holding it), so part maps stay exact.

    Args:
        body: a posed body (:func:`~humanvision.data.synthetic.body.pose_body`).
        instance: the person's instance id in the scene (1..255).
        rng: every draw comes from it (deterministic given its state).
        faces: give the head a face for close-ups (:func:`_face_rows`; the hairline's height is drawn from ``rng``
            after the look, so the look itself does not change).
    """
    if not 0 < int(instance) < 256:
        raise ConfigError(f"instance must be 1..255 (uint8 instance maps, 0 is background), got {instance}")
    ident = _draw_identity(rng, int(instance))
    ident.shape = body.shape  # garments follow the body actually posed
    ident.appearance.skin = _skin_tone(rng)
    return _identity_primitives(ident, body, instance=int(instance), labelled=True,
                                hairline=float(rng.uniform(0.3, 0.7)) if faces else None)


# --------------------------------------------------------------------------------------------- crops
@dataclass
class _CameraStyle:
    """What stays fixed for one camera of a dataset (see :func:`_camera_style`)."""

    backdrop: np.ndarray  # (2H, 2W, 3) float32; each image shows a random (H, W) window
    ground: bool
    ground_colours: np.ndarray
    tile: float
    elevation: float  # degrees
    distance: float  # mm
    light: np.ndarray
    ambient: float
    diffuse: float
    gains: np.ndarray  # (3,) colour cast


@functools.lru_cache(maxsize=64)
def _camera_style(seed: int, camera: int, width: int, height: int) -> _CameraStyle:
    rng = np.random.default_rng([int(seed), int(camera), 0xCA])
    backdrop = procedural_background(rng, 2 * width, 2 * height)
    ground_colours = np.stack([np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.35),
                                                            rng.uniform(0.3, 0.75))) for _ in range(2)])
    el, az = np.deg2rad(rng.uniform(25, 80)), rng.uniform(0, 2 * np.pi)
    light = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    return _CameraStyle(backdrop, bool(rng.uniform() < 0.85), ground_colours, float(rng.uniform(300, 1200)),
                        float(rng.uniform(0, 25)), float(rng.uniform(5000, 12000)), light,
                        float(rng.uniform(0.35, 0.55)), float(rng.uniform(0.45, 0.7)),
                        rng.uniform(0.85, 1.15, 3).astype(np.float32))


def _pose(ident: Identity, rng: np.random.Generator, motion: Sequence[Motion] | None) -> PosedBody:
    yaw = rng.uniform(0, 360)
    if motion:
        clip = motion[int(rng.integers(len(motion)))]
        rot, root = retarget(clip, int(rng.integers(len(clip))), ident.shape, yaw_deg=yaw)
        return pose_body(ident.shape, global_rotations=rot, root_position=np.array([0.0, 0.0, root[2]]),
                         ground="lift")
    c, s = np.cos(np.deg2rad(yaw)), np.sin(np.deg2rad(yaw))
    root = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    return pose_body(ident.shape, sample_pose(rng, 0.8), root_rotation=root, ground="touch")


def _surface_points(prims: PrimitiveSet) -> tuple[np.ndarray, np.ndarray]:
    """Points on (or around) every primitive, and a radius to add around each (capsule ends)."""
    dirs = np.array([[x, y, z] for x in (-1, 0, 1) for y in (-1, 0, 1) for z in (-1, 0, 1) if (x, y, z) != (0, 0, 0)],
                    dtype=np.float64)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    pts, rad = [], []
    for i in range(len(prims)):
        if prims.kind[i] == CAPSULE:
            pts += [prims.a[i], prims.b[i]]
            rad += [prims.radius[i]] * 2
        else:
            local = dirs * prims.radii[i] if prims.kind[i] == ELLIPSOID else \
                np.sign(dirs) * prims.radii[i]
            pts += list(prims.centre[i] + local @ prims.axes[i].T)
            rad += [0.0] * len(dirs)
    return np.array(pts), np.array(rad)


def _render_crop(ident: Identity, rng: np.random.Generator, size: tuple[int, int],
                 motion: Sequence[Motion] | None, style: _CameraStyle | None, junk: bool = False):
    """Render one crop; returns ``(rgb, keypoints (17, 3) [x, y, v], attributes, extras)``."""
    W, H = int(size[0]), int(size[1])
    body = _pose(ident, rng, motion)
    prims = _identity_primitives(ident, body)
    lo, hi = body.joints.min(0), body.joints.max(0)
    target = 0.5 * (lo + hi)
    az = rng.uniform(0, 2 * np.pi)
    if style is None:
        el, dist = np.deg2rad(rng.uniform(0, 35)), rng.uniform(3500, 15000)
    else:
        el = np.deg2rad(np.clip(style.elevation + rng.uniform(-5, 5), -2, 40))
        dist = style.distance * rng.uniform(0.85, 1.15)
    eye = target + dist * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    f0 = 1000.0
    cam0 = Camera.look_at(eye, target, K=[[f0, 0, 0], [0, f0, 0], [0, 0, 1]], width=W, height=H)
    pts, rad = _surface_points(prims)
    uv = np.asarray(cam0.project(pts))
    z = np.asarray(cam0.world_to_camera(pts))[:, 2]
    pad = f0 * rad / np.maximum(z, 1.0)
    x0, y0 = (uv[:, 0] - pad).min(), (uv[:, 1] - pad).min()
    x1, y1 = (uv[:, 0] + pad).max(), (uv[:, 1] + pad).max()
    w, h = x1 - x0, y1 - y0
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    if junk:  # a bad detection: part of the person, off-centre
        h_d = h * rng.uniform(0.3, 0.6)
        w_d = h_d * (W / H) * rng.uniform(0.8, 1.2)
        cx += rng.uniform(-0.5, 0.5) * w
        cy += rng.uniform(-0.35, 0.35) * h
    else:
        h_d = h * rng.uniform(1.05, 1.15)
        w_d = max(w * rng.uniform(1.05, 1.2), h_d * (W / H) * rng.uniform(0.85, 1.1))
        cx += rng.normal(0.0, 0.03) * w_d
        cy += rng.normal(0.0, 0.02) * h_d
    sx, sy = W / w_d, H / h_d
    bx0, by0 = cx - 0.5 * w_d, cy - 0.5 * h_d
    K = [[f0 * sx, 0.0, -bx0 * sx - 0.5], [0.0, f0 * sy, -by0 * sy - 0.5], [0.0, 0.0, 1.0]]
    cam = Camera.look_at(eye, target, K=K, width=W, height=H)

    if style is None:
        backdrop = procedural_background(rng, W, H)
        ground_cols = np.stack([np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.4),
                                                             rng.uniform(0.3, 0.75))) for _ in range(2)])
        le, la = np.deg2rad(rng.uniform(25, 80)), rng.uniform(0, 2 * np.pi)
        light = np.array([np.cos(le) * np.cos(la), np.cos(le) * np.sin(la), np.sin(le)])
        bg = Background(backdrop, ground=bool(rng.uniform() < 0.8), ground_colours=ground_cols,
                        tile=float(rng.uniform(300, 1200)))
        ambient, diffuse, gains = rng.uniform(0.35, 0.55), rng.uniform(0.45, 0.7), None
    else:
        oy, ox = int(rng.integers(H + 1)), int(rng.integers(W + 1))
        bg = Background(style.backdrop[oy:oy + H, ox:ox + W], ground=style.ground,
                        ground_colours=style.ground_colours, tile=style.tile)
        ambient = style.ambient * rng.uniform(0.9, 1.1)
        diffuse = style.diffuse * rng.uniform(0.9, 1.1)
        light, gains = style.light, style.gains
    out = render(prims, cam, bg, light, ambient, diffuse)
    rgb = out.rgb
    if gains is not None:
        rgb = np.clip(rgb.astype(np.float32) * gains + 0.5, 0, 255).astype(np.uint8)
    kp, vis, _, _, _ = annotate(cam, out.depth, out.instances, body.joints[None], body.joint_radius[None])
    sel = _coco()
    keypoints = np.concatenate([kp[0, sel], vis[0, sel, None]], 1).astype(np.float64)

    facing = body.rotations[0][:, 1][:2]
    to_cam = (eye - body.joints[JOINT_INDEX["pelvis"]])[:2]
    cosang = facing @ to_cam / max(np.linalg.norm(facing) * np.linalg.norm(to_cam), 1e-9)
    angle = np.degrees(np.arccos(np.clip(cosang, -1.0, 1.0)))
    attrs = dict(ident.attributes)
    attrs["Front" if angle < 45 else "Back" if angle > 135 else "Side"] = 1
    return rgb, keypoints, attrs, {"camera": cam, "parts": out.parts, "instances": out.instances,
                                   "view_angle": float(angle)}


def _render(ident: Identity, seed: int, index: int, size: tuple[int, int], motion: list[Motion] | None,
            camera: int | None, junk: bool = False):
    rng = np.random.default_rng([seed, ident.pid, index, 0 if camera is None else camera + 1, 0xC0])
    style = None if camera is None else _camera_style(seed, int(camera), int(size[0]), int(size[1]))
    return _render_crop(ident, rng, size, motion, style, junk=junk)


def _as_motions(motion: Motion | Sequence[Motion] | None) -> list[Motion] | None:
    if motion is None:
        return None
    return [motion] if isinstance(motion, Motion) else list(motion)


def render_person_crop(identity: Identity, seed: int, index: int, size: tuple[int, int] = (128, 256),
                       motion: Motion | Sequence[Motion] | None = None, camera: int | None = None
                       ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Render image ``index`` of ``identity`` (deterministic in ``(seed, identity.pid, index, camera)``).

    Args:
        identity: from :func:`sample_identity`.
        seed: the dataset's seed.
        index: the image's number (any int; different indices give different poses, cameras, light).
        size: ``(width, height)`` of the crop (re-id crops are ~1:2).
        motion: ``None`` for a sampled standing / walking pose, or DeepMimic / BVH clips
            (:func:`~humanvision.data.synthetic.motion.load_deepmimic`): a random frame of a random clip.
        camera: ``None`` for a random background, light and camera; ``k`` for camera ``k``'s fixed style (see
            the module docstring).

    Returns:
        ``rgb`` ``(H, W, 3)`` uint8; ``keypoints`` ``(17, 3)`` COCO-17 ``[x, y, v]`` in crop pixels (``v`` 2
        visible, 1 occluded by the person's own body or accessories, 0 outside the crop or behind the camera;
        ``x, y`` are the true projection in every case); the attributes of this view
        (:data:`PA100K_ATTRIBUTES` -> 0/1, exactly one of Front / Side / Back).
    """
    rgb, kp, attrs, _ = _render(identity, int(seed), int(index), size, _as_motions(motion), camera)
    return rgb, kp, attrs


# --------------------------------------------------------------------------------------------- rendering jobs
@functools.lru_cache(maxsize=4096)
def _identity(seed: int, pid: int) -> Identity:
    return sample_identity(seed, pid)


def _crop_job(seed: int, size: tuple[int, int], motion: list[Motion] | None,
              job: tuple[int, int, int | None, bool]) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Render one ``(pid, index, camera, junk)`` job (module level, so worker processes can run it)."""
    pid, index, camera, junk = job
    rgb, kp, attrs, _ = _render(_identity(seed, pid), seed, index, size, motion, camera, junk)
    return rgb, kp, attrs


def _render_all(seed: int, size: tuple[int, int], motion, jobs: list[tuple], workers: int,
                progress: Progress) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, int]]]:
    """Yield the rendered jobs in order (``workers`` processes; the output does not depend on it)."""
    fn = functools.partial(_crop_job, int(seed), (int(size[0]), int(size[1])), _as_motions(motion))
    if workers > 1 and len(jobs) > 1:
        with worker_pool(min(int(workers), len(jobs))) as pool:
            yield from _count(pool.imap(fn, jobs, chunksize=8), len(jobs), progress)
    else:
        yield from _count(map(fn, jobs), len(jobs), progress)


def _count(results: Iterable, total: int, progress: Progress):
    for done, r in enumerate(results, 1):
        yield r
        if progress is not None:
            progress(done, total)


def _count_arg(value: Any, what: str) -> int:
    if isinstance(value, dict) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ConfigError(f"{what} must be one integer >= 1 (this format fixes its own splits), got {value!r}")
    return int(value)


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    if len(size) != 2 or min(int(size[0]), int(size[1])) < 8:
        raise ConfigError(f"size must be (width, height) with both >= 8, got {tuple(size)}")
    return int(size[0]), int(size[1])


def _split_counts(n: int, split: Sequence[float]) -> tuple[int, int, int]:
    fr = np.asarray(split, dtype=np.float64)
    if fr.shape != (3,) or (fr < 0).any() or abs(fr.sum() - 1.0) > 1e-6:
        raise ConfigError(f"split must be three non-negative fractions (train, val, test) summing to 1, got "
                          f"{tuple(split)}")
    n_train = round(float(n * fr[0]))
    n_val = min(round(float(n * fr[1])), n - n_train)
    return n_train, n_val, n - n_train - n_val


def _write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, separators=(",", ":")))
    return path


# --------------------------------------------------------------------------------------------- Market-1501
MARKET_NAME = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")


def generate_market1501(out_dir: str | Path, num_train_ids: int = 100, num_test_ids: int | None = None,
                        cameras: int = 6, images_per_id_camera: tuple[int, int] = (1, 3), seed: int = 0,
                        distractors: int | None = None, junk: int | None = None, size: tuple[int, int] = (64, 128),
                        motion: Motion | Sequence[Motion] | None = None, progress: Progress = None,
                        workers: int = 1) -> dict:
    """Market-1501 layout: ``bounding_box_train/``, ``bounding_box_test/`` (the gallery) and ``query/``.

    File names are Market's ``{pid:04d}_c{cam}s{seq}_{frame:06d}_{det:02d}.jpg`` (regex :data:`MARKET_NAME`):
    ``cam`` 1..``cameras``, ``seq`` 1..6, ``frame`` a frame number increasing per camera and sequence (unique
    per camera), ``det`` the detection's number in that frame (01-03; 00 for queries, Market's hand-drawn
    boxes). Crops are ``size`` (Market: 64 x 128) JPEGs rendered with :func:`render_person_crop`'s camera
    styles (camera ``c`` uses style ``c - 1``).

    * ``num_train_ids`` training and ``num_test_ids`` (default: as many) test identities; their pids are a
      random partition of ``1 .. train + test`` (sorted within each set), so train and test are disjoint and
      neither is contiguous.
    * Every identity appears in 2..``cameras`` random cameras with ``images_per_id_camera`` (inclusive range)
      images in each: training ids in ``bounding_box_train``, test ids in ``bounding_box_test``.
    * ``query``: one extra image per test id and camera it appears in (so each query has a gallery match of
      the same pid in another camera).
    * The gallery also holds ``distractors`` images of pid ``0000`` (each a different person outside both
      sets) and ``junk`` images of pid ``-1`` (``-1_c...``: badly framed crops of test or distractor people,
      ignored by the evaluation protocol); both default to the number of test ids.

    Returns a summary (counts, ``pids`` per set, ``files``: the three folders).
    """
    if cameras < 2 or cameras > 9:
        raise ConfigError(f"cameras must be 2..9 (one digit in Market names), got {cameras}")
    lo, hi = (int(v) for v in images_per_id_camera)
    if lo < 1 or hi < lo:
        raise ConfigError(f"images_per_id_camera must be (min, max) with 1 <= min <= max, got "
                          f"{tuple(images_per_id_camera)}")
    n_train = _count_arg(num_train_ids, "num_train_ids")
    n_test = n_train if num_test_ids is None else _count_arg(num_test_ids, "num_test_ids")
    distractors = n_test if distractors is None else int(distractors)
    junk = n_test if junk is None else int(junk)
    if min(distractors, junk) < 0 or n_train + n_test + int(distractors) > 9999:
        raise ConfigError(f"distractors and junk must be >= 0, with at most 9999 ids and distractors, got "
                          f"{n_train} + {n_test} ids, {distractors} distractors, {junk} junk")
    size = _check_size(size)
    rng = np.random.default_rng([int(seed), 0x3A7])
    perm = rng.permutation(np.arange(1, n_train + n_test + 1))
    train_ids, test_ids = sorted(perm[:n_train].tolist()), sorted(perm[n_train:].tolist())
    frames = np.zeros((cameras, 6), dtype=np.int64)

    def name(pid_text: str, cam: int, det: int) -> str:
        seq = int(rng.integers(6))
        frames[cam, seq] += int(rng.integers(5, 80))
        return f"{pid_text}_c{cam + 1}s{seq + 1}_{int(frames[cam, seq]):06d}_{det:02d}.jpg"

    jobs: list[tuple[str, str, int, int | None, bool]] = []  # folder, name, appearance pid, camera, junk
    for folder, ids in (("bounding_box_train", train_ids), ("bounding_box_test", test_ids)):
        for pid in ids:
            cams = np.sort(rng.choice(cameras, size=int(rng.integers(2, cameras + 1)), replace=False))
            for cam in cams.tolist():
                for _ in range(int(rng.integers(lo, hi + 1))):
                    jobs.append((folder, name(f"{pid:04d}", cam, int(rng.integers(1, 4))), pid, cam, False))
                if folder == "bounding_box_test":
                    jobs.append(("query", name(f"{pid:04d}", cam, 0), pid, cam, False))
    first_distractor = n_train + n_test + 1
    for k in range(int(distractors)):
        cam = int(rng.integers(cameras))
        jobs.append(("bounding_box_test", name("0000", cam, int(rng.integers(1, 4))), first_distractor + k, cam,
                     False))
    pool = test_ids + list(range(first_distractor, first_distractor + int(distractors)))
    for _ in range(int(junk)):
        cam = int(rng.integers(cameras))
        pid = int(pool[int(rng.integers(len(pool)))]) if pool else first_distractor
        jobs.append(("bounding_box_test", name("-1", cam, int(rng.integers(1, 4))), pid, cam, True))

    out = Path(out_dir)
    folders = ("bounding_box_train", "bounding_box_test", "query")
    for f in folders:
        (out / f).mkdir(parents=True, exist_ok=True)
    render_jobs = [(pid, index, cam, bad) for index, (_, _, pid, cam, bad) in enumerate(jobs)]
    counts = dict.fromkeys(folders, 0)
    for (folder, fname, *_), (rgb, _, _) in zip(jobs, _render_all(seed, size, motion, render_jobs, workers,
                                                                     progress), strict=True):
        write_image(out / folder / fname, rgb)
        counts[folder] += 1
    return {"format": "market1501", "train_ids": n_train, "test_ids": n_test, "cameras": cameras,
            "train_images": counts["bounding_box_train"], "gallery_images": counts["bounding_box_test"],
            "query_images": counts["query"], "distractors": int(distractors), "junk": int(junk),
            "frames": len(jobs), "pids": {"train": train_ids, "test": test_ids},
            "files": [str(out / f) for f in folders]}


# --------------------------------------------------------------------------------------------- PA-100K
def generate_pa100k(out_dir: str | Path, num_images: int = 1000, seed: int = 0,
                    split: Sequence[float] = (0.8, 0.1, 0.1), size: tuple[int, int] = (128, 256),
                    motion: Motion | Sequence[Motion] | None = None, progress: Progress = None,
                    workers: int = 1) -> dict:
    """PA-100K layout: ``data/000001.jpg ...`` and ``annotation.mat`` (MATLAB v5, ``scipy.io.savemat``).

    Image ``i`` (1-based, 6 digits) shows identity ``i`` of the seed from a random camera (every image a
    different person, as PA-100K is mostly). The first ``split[0]`` of the images are train, then val, then
    test, in file-name order (PA-100K: 80,000 / 10,000 / 10,000). ``annotation.mat`` holds:

    * ``attributes``: 26 x 1 cell of char (:data:`PA100K_ATTRIBUTES`, official order);
    * ``train_images_name``, ``val_images_name``, ``test_images_name``: N x 1 cells of char (file names);
    * ``train_label``, ``val_label``, ``test_label``: N x 26 uint8 0/1, in the attribute order (the view
      attributes of each image's own view; ``HoldObjectsInFront`` is always 0).

    Read with ``scipy.io.loadmat``: ``m["attributes"][i][0][0]`` is a name, ``m["train_images_name"][i][0][0]``
    a file name.
    """
    import scipy.io

    n = _count_arg(num_images, "num_images")
    size = _check_size(size)
    n_train, n_val, n_test = _split_counts(n, split)
    out = Path(out_dir)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    labels = np.zeros((n, len(PA100K_ATTRIBUTES)), dtype=np.uint8)
    jobs = [(i + 1, 0, None, False) for i in range(n)]
    for i, (rgb, _, attrs) in enumerate(_render_all(seed, size, motion, jobs, workers, progress)):
        write_image(out / "data" / names[i], rgb)
        labels[i] = [attrs[a] for a in PA100K_ATTRIBUTES]

    def cell(values: Sequence[str]) -> np.ndarray:
        c = np.empty((len(values), 1), dtype=object)
        for k, v in enumerate(values):
            c[k, 0] = v
        return c

    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
    mat: dict[str, np.ndarray] = {"attributes": cell(PA100K_ATTRIBUTES)}
    for s, (a, b) in bounds.items():
        mat[f"{s}_images_name"] = cell(names[a:b])
        mat[f"{s}_label"] = labels[a:b]
    path = out / "annotation.mat"
    scipy.io.savemat(str(path), mat, format="5")
    return {"format": "pa100k", "frames": n, "train": n_train, "val": n_val, "test": n_test,
            "positive_ratio": dict(zip(PA100K_ATTRIBUTES, labels.mean(0).round(4).tolist(), strict=True)),
            "files": [str(path), str(out / "data")]}


# --------------------------------------------------------------------------------------------- captions
def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def caption(identity: Identity, rng: np.random.Generator, attrs: dict[str, int] | None = None,
            template: int | None = None) -> str:
    """A template sentence describing ``identity`` (sex and age, hair, upper and lower clothes with colours and
    patterns, shoes or boots, accessories; ``attrs`` of a view add "seen from behind" for Back views).
    ``template`` picks one of the templates (default: random)."""
    ident, c = identity, identity.colour_names
    kid, old = ident.age == "child", ident.age == "senior"
    subj = (("girl" if kid else "elderly woman" if old else _pick(rng, ("woman", "lady")))
            if ident.female else ("boy" if kid else "old man" if old else _pick(rng, ("man", "guy"))))
    if rng.uniform() < 0.2:
        subj = _pick(rng, ("person", "pedestrian"))
    pron = "she" if ident.female and subj not in ("person", "pedestrian") else \
        "he" if subj not in ("person", "pedestrian") else "the person"
    hair = f"{'long' if ident.long_hair else 'short'} {c['hair']} hair"
    if ident.upper == "coat":
        upper = f"{_a(c['shirt'])} long coat"
    else:
        sleeve = "long-sleeved" if ident.appearance.long_sleeves else "short-sleeved"
        garment = _pick(rng, ("shirt", "top", "jacket") if ident.appearance.long_sleeves else ("shirt", "t-shirt",
                                                                                                 "top"))
        upper = f"{_a(c['shirt'])} {sleeve} {garment}"
    upper += {"plain": "", "logo": f" with {_a(c['shirt_b'])} logo on the front",
              "stripes": f" with {c['shirt_b']} stripes", "plaid": f" with {_a(c['shirt_b'])} plaid pattern",
              "splice": f" with {c['shirt_b']} sleeves"}[ident.upper_pattern]
    pattern = {"plain": "", "stripes": "striped ", "checks": "checked "}[ident.lower_pattern]
    if ident.lower == "skirt":
        lower = f"{_a(c['lower'])} {pattern}skirt"
    elif ident.lower == "shorts":
        lower = f"{c['lower']} {pattern}shorts"
    else:
        word = "jeans" if c["lower"] in ("blue", "dark blue") and not pattern and rng.uniform() < 0.5 else \
            _pick(rng, ("trousers", "pants"))
        lower = f"{c['lower']} {pattern}{word}"
    shoes = f"{c['shoes']} {'boots' if ident.boots else _pick(rng, ('shoes', 'sneakers'))}"
    acc = []
    if "backpack" in ident.accessories:
        acc.append(f"carrying {_a(c['bag'])} backpack")
    if "shoulder_bag" in ident.accessories:
        acc.append(f"with {_a(c['bag'])} bag over the shoulder")
    if "handbag" in ident.accessories:
        acc.append(f"holding {_a(c['bag'])} handbag")
    if "hat" in ident.accessories:
        acc.append(f"wearing {_a(c['hat'])} {_pick(rng, ('hat', 'cap'))}")
    if "glasses" in ident.accessories:
        acc.append("wearing glasses")
    extra = (", " + ", ".join(acc[:-1]) + (" and " if len(acc) > 1 else "") + acc[-1]) if acc else ""
    templates = (
        f"A {subj} wearing {upper}, {lower} and {shoes}{extra}.",
        f"The {subj} has {hair} and is wearing {upper} and {lower}. {pron.capitalize()} wears {shoes}{extra}.",
        f"This {subj} is dressed in {upper} and {lower}, with {shoes} on{extra}.",
        f"{_a(subj).capitalize()} with {hair} walks in {upper}, {lower} and {shoes}{extra}.",
        f"{_a(subj).capitalize()} in {upper} and {lower}. {pron.capitalize()} has {hair} and {shoes}{extra}.",
    )
    text = templates[int(rng.integers(len(templates))) if template is None else int(template) % len(templates)]
    if attrs is not None and attrs.get("Back") and rng.uniform() < 0.5:
        text += f" The {subj} is seen from behind."
    return text


def tokenize(text: str) -> list[str]:
    """CUHK-PEDES ``processed_tokens``: lower-case words (hyphenated words kept), punctuation dropped."""
    return re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", text.lower())


# --------------------------------------------------------------------------------------------- CUHK-PEDES
def generate_cuhk_pedes(out_dir: str | Path, num_ids: int = 100, images_per_id: int | tuple[int, int] = (2, 4),
                        seed: int = 0, split: Sequence[float] = (0.8, 0.1, 0.1), size: tuple[int, int] = (128, 256),
                        motion: Motion | Sequence[Motion] | None = None, progress: Progress = None,
                        workers: int = 1) -> dict:
    """CUHK-PEDES layout: ``imgs/`` and ``reid_raw.json``.

    ``reid_raw.json`` is a list, one record per image, ordered by id: ``{"split": "train" | "val" | "test",
    "captions": [2 strings], "file_path": "synth/p{id}_s{n}.jpg" (relative to imgs/), "processed_tokens":
    [[tokens], [tokens]] (:func:`tokenize` of each caption), "id": int}`` (1-based ids). Identities are split by
    id: the first ``split[0]`` of the ids are train, then val, then test. Each id has ``images_per_id`` images
    (an int, or an inclusive ``(min, max)`` range) from random cameras; the two captions of an image are two
    different templates of :func:`caption`.
    """
    n = _count_arg(num_ids, "num_ids")
    lo, hi = (int(images_per_id), int(images_per_id)) if isinstance(images_per_id, int) else \
        (int(images_per_id[0]), int(images_per_id[1]))
    if lo < 1 or hi < lo:
        raise ConfigError(f"images_per_id must be >= 1 (or a (min, max) range), got {images_per_id}")
    size = _check_size(size)
    n_train, n_val, _ = _split_counts(n, split)
    rng = np.random.default_rng([int(seed), 0xC4])
    jobs, meta = [], []
    for pid in range(1, n + 1):
        s = "train" if pid <= n_train else "val" if pid <= n_train + n_val else "test"
        for _ in range(int(rng.integers(lo, hi + 1))):
            meta.append((s, pid, f"synth/p{pid}_s{len(jobs) + 1}.jpg"))
            jobs.append((pid, len(jobs), None, False))
    out = Path(out_dir)
    records = []
    for (s, pid, path), (rgb, _, attrs) in zip(meta, _render_all(seed, size, motion, jobs, workers, progress),
                                               strict=True):
        write_image(out / "imgs" / path, rgb)
        crng = np.random.default_rng([int(seed), pid, len(records), 0xCA9])
        first = int(crng.integers(5))
        second = (first + 1 + int(crng.integers(4))) % 5
        caps = [caption(_identity(seed, pid), crng, attrs, t) for t in (first, second)]
        records.append({"split": s, "captions": caps, "file_path": path,
                        "processed_tokens": [tokenize(t) for t in caps], "id": pid})
    path = _write_json(out / "reid_raw.json", records)
    return {"format": "cuhk_pedes", "ids": n, "frames": len(records),
            "train_ids": n_train, "val_ids": n_val, "test_ids": n - n_train - n_val,
            "files": [str(path), str(out / "imgs")]}


# --------------------------------------------------------------------------------------------- LUPerson-like
def generate_person_crops(out_dir: str | Path, num_images: int, seed: int = 0, size: tuple[int, int] = (128, 256),
                          images_per_id: int = 1, hap_npy: bool = False,
                          motion: Motion | Sequence[Motion] | None = None, progress: Progress = None,
                          workers: int = 1) -> dict:
    """LUPerson-like unlabeled person crops with keypoints, for HAP pre-training (pretraining.md B.2).

    Layout under ``out_dir``:

    * ``images/{i:08d}.jpg``: ``num_images`` crops of ``size``, ``images_per_id`` consecutive images per
      identity, random cameras;
    * ``keypoints.json``: ``{"images/00000000.jpg": [[x, y, score] x 17], ...}``, the true COCO-17 keypoints in
      crop pixels (0-based, pixel centres at integers), ``score`` 1.0 visible, 0.5 occluded (by the person's own
      body or accessories), 0.0 outside the crop (``x, y`` are still the true projection);
    * with ``hap_npy``: ``pose/{i:08d}.npy`` per image (the image's basename without ``.jpg``), HAP's layout:
      ``np.save`` of a 1-element object array holding a list of one dict ``{"bbox": [0, 0, W, H, 1.0],
      "keypoints": (17, 3) float32 [x, y, score]}``, so ``np.load(p, allow_pickle=True)[0][0]["keypoints"]``
      (or :func:`humanvision.data.io.safe_load_npy`) is the ``(17, 3)`` array of ``keypoints.json``.
    """
    n = _count_arg(num_images, "num_images")
    _count_arg(images_per_id, "images_per_id")
    size = _check_size(size)
    out = Path(out_dir)
    jobs = [(i // int(images_per_id) + 1, i, None, False) for i in range(n)]
    score = np.array([0.0, 0.5, 1.0])
    table: dict[str, list] = {}
    for i, (rgb, kp, _) in enumerate(_render_all(seed, size, motion, jobs, workers, progress)):
        rel = f"images/{i:08d}.jpg"
        write_image(out / rel, rgb)
        k = np.concatenate([kp[:, :2], score[kp[:, 2].astype(np.int64), None]], 1).astype(np.float32)
        table[rel] = k.tolist()
        if hap_npy:
            person = {"bbox": np.array([0.0, 0.0, size[0], size[1], 1.0], dtype=np.float32), "keypoints": k}
            arr = np.empty(1, dtype=object)
            arr[0] = [person]
            (out / "pose").mkdir(parents=True, exist_ok=True)
            np.save(out / "pose" / f"{i:08d}.npy", arr, allow_pickle=True)
    path = _write_json(out / "keypoints.json", table)
    files = [str(path), str(out / "images")] + ([str(out / "pose")] if hap_npy else [])
    return {"format": "person_crops", "frames": n, "ids": -(-n // int(images_per_id)), "files": files}


# --------------------------------------------------------------------------------------------- contact sheet
def identity_sheet(path: str | Path, seed: int = 0, num_ids: int = 6, cameras: int = 6,
                   size: tuple[int, int] = (64, 128), motion: Motion | Sequence[Motion] | None = None) -> Path:
    """A PNG grid: one row per identity (pids 1..``num_ids``), one column per camera style."""
    W, H = _check_size(size)
    sheet = np.full((num_ids * (H + 2), cameras * (W + 2), 3), 255, dtype=np.uint8)
    for r in range(num_ids):
        ident = _identity(int(seed), r + 1)
        for c in range(cameras):
            rgb, _, _ = render_person_crop(ident, seed, c, (W, H), motion=motion, camera=c)
            sheet[r * (H + 2):r * (H + 2) + H, c * (W + 2):c * (W + 2) + W] = rgb
    return write_image(Path(path), sheet)
