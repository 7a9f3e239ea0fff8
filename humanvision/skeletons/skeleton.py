"""The :class:`Skeleton` record, the built-in joint sets and conversion between sets by joint name."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from humanvision.errors import HumanVisionError

__all__ = [
    "DERIVED_JOINTS",
    "JOINT_MAPS",
    "SKELETONS",
    "JointMap",
    "Skeleton",
    "SkeletonError",
    "conversion_plan",
    "convert",
    "get_joint_map",
    "get_skeleton",
    "load_skeleton",
    "map_joints",
    "register_skeleton",
]

# Colours (RGB) by body side, as in the common MMPose palette: left green, right orange, centre blue.
SIDE_COLORS = {"left": (0, 255, 0), "right": (255, 128, 0), "center": (51, 153, 255)}
# Words that put a joint on the lower body (half-body augmentation); everything else is upper body.
_LOWER_WORDS = ("hip", "knee", "ankle", "foot", "toe", "heel", "pelvis")


class SkeletonError(HumanVisionError, ValueError):
    """A skeleton definition is inconsistent or a conversion cannot produce the requested joints."""


def _side(name: str) -> str:
    if name.startswith("left_"):
        return "left"
    if name.startswith("right_"):
        return "right"
    return "center"


@dataclass(frozen=True, eq=False)
class Skeleton:
    """A joint set described as data.

    Attributes:
        name: identifier (``coco17``).
        joints: canonical joint names, in the order of the dataset's arrays.
        limbs: pairs of joint indices drawn as bones (and used by bone-length losses).
        sigmas: per-joint OKS sigmas, or ``None`` where the set defines none.
        root: index of the root joint (pelvis where the set has one) or ``None``.
        flip_pairs: left/right index pairs; derived from ``left_*``/``right_*`` names when not given.
        upper_body / lower_body: index sets used by half-body augmentation; derived from names when not given.
        description: where the order comes from.

    Derived (read-only): ``flip_index`` (the permutation applied after a horizontal flip), ``joint_colors`` and
    ``limb_colors`` (RGB by body side).
    """

    name: str
    joints: tuple[str, ...]
    limbs: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...] | None = None
    root: int | None = None
    flip_pairs: tuple[tuple[int, int], ...] | None = None
    upper_body: tuple[int, ...] | None = None
    lower_body: tuple[int, ...] | None = None
    description: str = ""
    flip_index: tuple[int, ...] = field(init=False)
    joint_colors: tuple[tuple[int, int, int], ...] = field(init=False)
    limb_colors: tuple[tuple[int, int, int], ...] = field(init=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        joints = tuple(str(j) for j in self.joints)
        set_(self, "joints", joints)
        k = len(joints)
        if k == 0:
            raise SkeletonError(f"skeleton {self.name!r}: no joints")
        dup = sorted({j for j in joints if joints.count(j) > 1})
        if dup:
            raise SkeletonError(f"skeleton {self.name!r}: duplicate joint names {dup}")
        limbs = tuple((int(a), int(b)) for a, b in self.limbs)
        for a, b in limbs:
            if not (0 <= a < k and 0 <= b < k):
                raise SkeletonError(f"skeleton {self.name!r}: limb ({a}, {b}) refers to a joint outside 0..{k - 1}")
        set_(self, "limbs", limbs)
        if self.sigmas is not None:
            sig = tuple(float(s) for s in self.sigmas)
            if len(sig) != k:
                raise SkeletonError(f"skeleton {self.name!r}: {len(sig)} sigmas for {k} joints")
            if any(not np.isfinite(s) or s <= 0 for s in sig):
                raise SkeletonError(f"skeleton {self.name!r}: sigmas must be positive and finite")
            set_(self, "sigmas", sig)
        if self.root is not None and not 0 <= int(self.root) < k:
            raise SkeletonError(f"skeleton {self.name!r}: root {self.root} outside 0..{k - 1}")

        if self.flip_pairs is None:
            pairs = []
            for i, n in enumerate(joints):
                if n.startswith("left_"):
                    mate = "right_" + n[len("left_"):]
                    if mate not in joints:
                        raise SkeletonError(f"skeleton {self.name!r}: {n!r} has no {mate!r} to flip with")
                    pairs.append((i, joints.index(mate)))
                elif n.startswith("right_") and "left_" + n[len("right_"):] not in joints:
                    raise SkeletonError(f"skeleton {self.name!r}: {n!r} has no left counterpart to flip with")
            set_(self, "flip_pairs", tuple(pairs))
        else:
            set_(self, "flip_pairs", tuple((int(a), int(b)) for a, b in self.flip_pairs))
        flip = list(range(k))
        for a, b in self.flip_pairs:
            flip[a], flip[b] = b, a
        if sorted(flip) != list(range(k)):
            raise SkeletonError(f"skeleton {self.name!r}: flip pairs do not form a permutation")
        set_(self, "flip_index", tuple(flip))

        if self.lower_body is None:
            set_(self, "lower_body", tuple(i for i, n in enumerate(joints) if any(w in n for w in _LOWER_WORDS)))
        if self.upper_body is None:
            set_(self, "upper_body", tuple(i for i in range(k) if i not in self.lower_body))
        set_(self, "joint_colors", tuple(SIDE_COLORS[_side(n)] for n in joints))
        limb_colors = []
        for a, b in limbs:
            sides = {_side(joints[a]), _side(joints[b])} - {"center"}
            limb_colors.append(SIDE_COLORS[sides.pop() if len(sides) == 1 else "center"])
        set_(self, "limb_colors", tuple(limb_colors))

    # ------------------------------------------------------------------ access
    @property
    def num_joints(self) -> int:
        return len(self.joints)

    def __len__(self) -> int:
        return len(self.joints)

    def __repr__(self) -> str:
        return f"Skeleton({self.name!r}, {self.num_joints} joints)"

    def index(self, joint: str) -> int:
        """Index of a joint by name, with an error naming the skeleton and its joints."""
        try:
            return self.joints.index(joint)
        except ValueError:
            raise SkeletonError(f"skeleton {self.name!r} has no joint {joint!r}; it has {list(self.joints)}") from None

    def indices(self, joints: Iterable[str]) -> list[int]:
        return [self.index(j) for j in joints]

    @property
    def sigmas_array(self) -> np.ndarray:
        """OKS sigmas as a float64 array; raises if the set defines none."""
        if self.sigmas is None:
            raise SkeletonError(f"skeleton {self.name!r} defines no OKS sigmas")
        return np.asarray(self.sigmas, dtype=np.float64)

    def limb_names(self) -> list[tuple[str, str]]:
        return [(self.joints[a], self.joints[b]) for a, b in self.limbs]

    def flip(self, keypoints: np.ndarray, width: float | None = None) -> np.ndarray:
        """Re-order joints after a horizontal image flip (``[..., K, D]``); with ``width`` also map ``x -> width-1-x``."""
        out = np.asarray(keypoints)[..., list(self.flip_index), :].copy()
        if width is not None:
            out[..., 0] = width - 1 - out[..., 0]
        return out

    def to_dict(self) -> dict[str, Any]:
        """The YAML/JSON form understood by :func:`load_skeleton` (joints referred to by name)."""
        j = self.joints
        d: dict[str, Any] = {
            "name": self.name,
            "joints": list(j),
            "limbs": [[j[a], j[b]] for a, b in self.limbs],
            "flip_pairs": [[j[a], j[b]] for a, b in self.flip_pairs],
        }
        if self.sigmas is not None:
            d["sigmas"] = list(self.sigmas)
        if self.root is not None:
            d["root"] = j[self.root]
        if self.description:
            d["description"] = self.description
        return d


def _make(name: str, joints: Sequence[str], limbs: Sequence[tuple[str, str]], *, sigmas=None, root=None,
          description: str = "") -> Skeleton:
    idx = {n: i for i, n in enumerate(joints)}
    return Skeleton(
        name=name,
        joints=tuple(joints),
        limbs=tuple((idx[a], idx[b]) for a, b in limbs),
        sigmas=sigmas,
        root=idx[root] if root is not None else None,
        description=description,
    )


def _arm_leg_limbs(prefixes=("left", "right"), hand="wrist", foot="ankle"):
    out = []
    for s in prefixes:
        out += [(f"{s}_shoulder", f"{s}_elbow"), (f"{s}_elbow", f"{s}_{hand}"),
                (f"{s}_hip", f"{s}_knee"), (f"{s}_knee", f"{s}_{foot}")]
    return out


COCO_SIGMAS = (.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062, .107, .107, .087, .087, .089, .089)

COCO17 = _make(
    "coco17",
    ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
     "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
     "right_ankle"],
    _arm_leg_limbs() + [("left_shoulder", "right_shoulder"), ("left_hip", "right_hip"),
                        ("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"), ("nose", "left_eye"),
                        ("nose", "right_eye"), ("left_eye", "left_ear"), ("right_eye", "right_ear"),
                        ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder")],
    sigmas=COCO_SIGMAS,
    description="COCO person keypoints (2017)",
)

MPII16 = _make(
    "mpii16",
    ["right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis", "thorax",
     "upper_neck", "head_top", "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
     "left_wrist"],
    _arm_leg_limbs() + [("left_hip", "pelvis"), ("right_hip", "pelvis"), ("pelvis", "thorax"),
                        ("thorax", "upper_neck"), ("upper_neck", "head_top"), ("thorax", "left_shoulder"),
                        ("thorax", "right_shoulder")],
    root="pelvis",
    description="MPII Human Pose (mmpose json / mpii_gt_val.mat order)",
)

# Human3.6M 17 joints come in two orders of the same joints (named alike, so convert() permutes between them):
# learnable-triangulation / ContextPose (pelvis at 6) and VideoPose3D / MMPose (pelvis at 0). ContextPose's
# limb list (pose3d.md section 0), a tree over the 17 joints, serves both.
_H36M_LIMBS = [
    ("right_ankle", "right_knee"), ("right_knee", "right_hip"), ("right_hip", "pelvis"),
    ("left_ankle", "left_knee"), ("left_knee", "left_hip"), ("left_hip", "pelvis"), ("pelvis", "spine"),
    ("spine", "thorax"), ("thorax", "nose"), ("head_top", "nose"), ("thorax", "right_shoulder"),
    ("right_elbow", "right_shoulder"), ("right_wrist", "right_elbow"), ("thorax", "left_shoulder"),
    ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
]

H36M17 = _make(
    "h36m17",
    ["right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis", "spine", "thorax",
     "head_top", "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
     "nose"],
    _H36M_LIMBS,
    root="pelvis",
    description="Human3.6M 17 joints in the learnable-triangulation order (alias h36m17_lt; mocap indices "
                "3,2,1,6,7,8,0,12,13,15,27,26,25,17,18,19,14), pelvis at 6; joint 16 is H36M's 'Neck/Nose'",
)

H36M17_VP = _make(
    "h36m17_vp",
    ["pelvis", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "spine",
     "thorax", "nose", "head_top", "left_shoulder", "left_elbow", "left_wrist", "right_shoulder",
     "right_elbow", "right_wrist"],
    _H36M_LIMBS,
    root="pelvis",
    description="Human3.6M 17 joints in the VideoPose3D / MMPose order (alias h36m17_mmpose; mocap indices "
                "0,1,2,3,6,7,8,12,13,14,15,17,18,19,25,26,27), pelvis at 0; joint 9 is H36M's 'Neck/Nose', "
                "joint 10 its 'Head'",
)

AIC14 = _make(
    "aic14",
    ["right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist", "right_hip",
     "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "head_top", "neck"],
    _arm_leg_limbs() + [("head_top", "neck"), ("neck", "left_shoulder"), ("neck", "right_shoulder"),
                        ("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"), ("left_hip", "right_hip")],
    sigmas=(.01388152, .01515228, .01057665, .01417709, .01497891, .01402144, .03909642, .03686941, .01981803,
            .03843971, .03412318, .02415081, .01291456, .01236173),
    description="AI Challenger keypoints (mmpose-converted COCO-style json)",
)

CROWDPOSE14 = _make(
    "crowdpose14",
    ["left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
     "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "head_top", "neck"],
    _arm_leg_limbs() + [("head_top", "neck"), ("neck", "left_shoulder"), ("neck", "right_shoulder"),
                        ("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"), ("left_hip", "right_hip")],
    sigmas=(.079, .079, .072, .072, .062, .062, .107, .107, .087, .087, .089, .089, .079, .079),
    description="CrowdPose",
)

LSP14 = _make(
    "lsp14",
    ["right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist", "right_elbow",
     "right_shoulder", "left_shoulder", "left_elbow", "left_wrist", "neck", "head_top"],
    _arm_leg_limbs() + [("neck", "head_top"), ("neck", "left_shoulder"), ("neck", "right_shoulder"),
                        ("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"), ("left_hip", "right_hip")],
    description="Leeds Sports Pose",
)

MPI_INF_3DHP17 = _make(
    "mpi_inf_3dhp17",
    ["head_top", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
     "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "pelvis",
     "spine", "head"],
    _arm_leg_limbs() + [("head_top", "head"), ("head", "neck"), ("neck", "left_shoulder"),
                        ("neck", "right_shoulder"), ("neck", "spine"), ("spine", "pelvis"), ("pelvis", "left_hip"),
                        ("pelvis", "right_hip")],
    root="pelvis",
    description="MPI-INF-3DHP test-set 17 joints (univ_annot3 order)",
)

ITOP15 = _make(
    "itop15",
    ["head", "neck", "right_shoulder", "left_shoulder", "right_elbow", "left_elbow", "right_hand", "left_hand",
     "torso", "right_hip", "left_hip", "right_knee", "left_knee", "right_foot", "left_foot"],
    _arm_leg_limbs(hand="hand", foot="foot") + [("head", "neck"), ("neck", "left_shoulder"),
                                                 ("neck", "right_shoulder"), ("neck", "torso"),
                                                 ("torso", "left_hip"), ("torso", "right_hip")],
    root="torso",
    description="ITOP depth dataset (side and top views)",
)

NTU25 = _make(
    "ntu25",
    ["pelvis", "spine", "neck", "head", "left_shoulder", "left_elbow", "left_wrist", "left_hand", "right_shoulder",
     "right_elbow", "right_wrist", "right_hand", "left_hip", "left_knee", "left_ankle", "left_foot", "right_hip",
     "right_knee", "right_ankle", "right_foot", "thorax", "left_hand_tip", "left_thumb", "right_hand_tip",
     "right_thumb"],
    _arm_leg_limbs() + [("pelvis", "spine"), ("spine", "thorax"), ("thorax", "neck"), ("neck", "head"),
                        ("thorax", "left_shoulder"), ("thorax", "right_shoulder"), ("left_wrist", "left_hand"),
                        ("right_wrist", "right_hand"), ("left_hand", "left_hand_tip"), ("left_wrist", "left_thumb"),
                        ("right_hand", "right_hand_tip"), ("right_wrist", "right_thumb"), ("pelvis", "left_hip"),
                        ("pelvis", "right_hip"), ("left_ankle", "left_foot"), ("right_ankle", "right_foot")],
    root="pelvis",
    description="NTU RGB+D / Kinect v2 (spine_base = pelvis, spine_mid = spine, spine_shoulder = thorax)",
)

BODY25 = _make(
    "body25",
    ["nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
     "pelvis", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye",
     "left_eye", "right_ear", "left_ear", "left_big_toe", "left_small_toe", "left_heel", "right_big_toe",
     "right_small_toe", "right_heel"],
    _arm_leg_limbs() + [("nose", "neck"), ("neck", "left_shoulder"), ("neck", "right_shoulder"), ("neck", "pelvis"),
                        ("pelvis", "left_hip"), ("pelvis", "right_hip"), ("nose", "left_eye"), ("nose", "right_eye"),
                        ("left_eye", "left_ear"), ("right_eye", "right_ear"), ("left_ankle", "left_big_toe"),
                        ("left_big_toe", "left_small_toe"), ("left_ankle", "left_heel"),
                        ("right_ankle", "right_big_toe"), ("right_big_toe", "right_small_toe"),
                        ("right_ankle", "right_heel")],
    root="pelvis",
    description="OpenPose BODY_25 (MidHip = pelvis)",
)

BODY25B = _make(
    "body25b",
    ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
     "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
     "right_ankle", "upper_neck", "head_top", "left_big_toe", "left_small_toe", "left_heel", "right_big_toe",
     "right_small_toe", "right_heel"],
    _arm_leg_limbs() + [("left_shoulder", "right_shoulder"), ("left_hip", "right_hip"),
                        ("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"), ("nose", "left_eye"),
                        ("nose", "right_eye"), ("left_eye", "left_ear"), ("right_eye", "right_ear"),
                        ("upper_neck", "head_top"), ("upper_neck", "nose"), ("upper_neck", "left_shoulder"),
                        ("upper_neck", "right_shoulder"), ("left_ankle", "left_big_toe"),
                        ("left_big_toe", "left_small_toe"), ("left_ankle", "left_heel"),
                        ("right_ankle", "right_big_toe"), ("right_big_toe", "right_small_toe"),
                        ("right_ankle", "right_heel")],
    description="OpenPose BODY_25B (experimental models of openpose_train): COCO's 17 keypoints in COCO order, "
                "then UpperNeck, HeadTop and the six foot points of BODY_25",
)

# --------------------------------------------------------------------------- joint sets of the 3D-pose seed's datasets
FLIC29 = _make(
    "flic29",
    ["left_shoulder", "left_elbow", "left_wrist", "right_shoulder", "right_elbow", "right_wrist", "left_hip",
     "left_knee", "left_ankle", "right_hip", "right_knee", "right_ankle", "left_eye", "right_eye", "left_ear",
     "right_ear", "nose", "thorax", "pelvis", "head", "torso", "left_upper_arm_mid", "right_upper_arm_mid",
     "left_lower_arm_mid", "right_lower_arm_mid", "left_upper_leg_mid", "right_upper_leg_mid",
     "left_lower_leg_mid", "right_lower_leg_mid"],
    [(f"{s}_{a}", f"{s}_{b}") for s in ("left", "right") for a, b in [
        ("shoulder", "upper_arm_mid"), ("upper_arm_mid", "elbow"), ("elbow", "lower_arm_mid"),
        ("lower_arm_mid", "wrist"), ("hip", "upper_leg_mid"), ("upper_leg_mid", "knee"), ("knee", "lower_leg_mid"),
        ("lower_leg_mid", "ankle")]]
    + [("thorax", "left_shoulder"), ("thorax", "right_shoulder"), ("pelvis", "left_hip"), ("pelvis", "right_hip"),
       ("thorax", "torso"), ("torso", "pelvis"), ("thorax", "nose"), ("nose", "left_eye"), ("nose", "right_eye"),
       ("left_eye", "left_ear"), ("right_eye", "right_ear"), ("nose", "head")],
    root="pelvis",
    description="FLIC / FLIC-full examples.mat 29 points (lookupPart order lsho, lelb, lwri, rsho, relb, rwri, "
                "lhip, lkne, lank, rhip, rkne, rank, leye, reye, lear, rear, nose, msho, mhip, mear, mtorso, "
                "mluarm, mruarm, mllarm, mrlarm, mluleg, mruleg, mllleg, mrlleg); msho = thorax, mhip = pelvis, "
                "mear = head, mtorso = torso, m[lr][ul]{arm,leg} = limb mid-points. FLIC-full labels only the "
                "eyes, nose, shoulders, elbows, wrists and hips; the rest are NaN",
)

MPI_INF_3DHP28 = _make(
    "mpi_inf_3dhp28",
    ["spine3", "spine4", "spine2", "spine", "pelvis", "neck", "head", "head_top", "left_clavicle", "left_shoulder",
     "left_elbow", "left_wrist", "left_hand", "right_clavicle", "right_shoulder", "right_elbow", "right_wrist",
     "right_hand", "left_hip", "left_knee", "left_ankle", "left_foot", "left_toe", "right_hip", "right_knee",
     "right_ankle", "right_foot", "right_toe"],
    [("pelvis", "spine"), ("spine", "spine2"), ("spine2", "spine3"), ("spine3", "spine4"), ("spine4", "neck"),
     ("neck", "head"), ("head", "head_top")]
    + [(f"{s}_{a}", f"{s}_{b}") for s in ("left", "right") for a, b in [
        ("clavicle", "shoulder"), ("shoulder", "elbow"), ("elbow", "wrist"), ("wrist", "hand"), ("hip", "knee"),
        ("knee", "ankle"), ("ankle", "foot"), ("foot", "toe")]]
    + [("spine4", "left_clavicle"), ("spine4", "right_clavicle"), ("pelvis", "left_hip"), ("pelvis", "right_hip")],
    root="pelvis",
    description="MPI-INF-3DHP training set, all 28 joints of annot2/annot3/univ_annot3 (mpii_get_joint_set "
                "order: spine3, spine4, spine2, spine, pelvis, neck, head, head_top, then clavicle, shoulder, "
                "elbow, wrist, hand of the left and right arm, then hip, knee, ankle, foot, toe of each leg)",
)

OCCLUSION_PERSON15 = _make(
    "occlusion_person15",
    ["pelvis", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "spine", "neck",
     "left_shoulder", "left_elbow", "left_wrist", "right_shoulder", "right_elbow", "right_wrist"],
    _arm_leg_limbs() + [("pelvis", "right_hip"), ("pelvis", "left_hip"), ("pelvis", "spine"), ("spine", "neck"),
                        ("neck", "left_shoulder"), ("neck", "right_shoulder")],
    root="pelvis",
    description="Occlusion-Person (UnrealCV) 15 joints: the Human3.6M integral order without nose and head "
                "(hip, right leg, left leg, belly = spine, neck, left arm, right arm); flip index "
                "0,4,5,6,1,2,3,7,8,12,13,14,9,10,11",
)

SMPL24 = _make(
    "smpl24",
    ["pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle", "right_ankle",
     "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head", "left_shoulder",
     "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand"],
    [("pelvis", "left_hip"), ("pelvis", "right_hip"), ("pelvis", "spine1"), ("spine1", "spine2"),
     ("spine2", "spine3"), ("spine3", "neck"), ("neck", "head"), ("spine3", "left_collar"),
     ("spine3", "right_collar"), ("left_collar", "left_shoulder"), ("right_collar", "right_shoulder")]
    + [(f"{s}_{a}", f"{s}_{b}") for s in ("left", "right") for a, b in [
        ("shoulder", "elbow"), ("elbow", "wrist"), ("wrist", "hand"), ("hip", "knee"), ("knee", "ankle"),
        ("ankle", "foot")]],
    root="pelvis",
    description="SMPL kinematic-tree joints (3DPW jointPositions, 24 x 3 per frame)",
)

COCO18 = _make(
    "coco18",
    ["nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
     "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye", "left_eye",
     "right_ear", "left_ear"],
    _arm_leg_limbs() + [("nose", "neck"), ("neck", "left_shoulder"), ("neck", "right_shoulder"),
                        ("neck", "left_hip"), ("neck", "right_hip"), ("nose", "left_eye"), ("nose", "right_eye"),
                        ("left_eye", "left_ear"), ("right_eye", "right_ear")],
    description="OpenPose COCO-18 (COCO's 17 keypoints plus neck = mid-shoulders, OpenPose order); 3DPW poses2d",
)

SKELETONS: dict[str, Skeleton] = {
    s.name: s
    for s in (COCO17, MPII16, H36M17, H36M17_VP, AIC14, CROWDPOSE14, LSP14, MPI_INF_3DHP17, ITOP15, NTU25,
              BODY25, BODY25B, FLIC29, MPI_INF_3DHP28, OCCLUSION_PERSON15, SMPL24, COCO18)
}
_ALIASES = {"coco": "coco17", "mpii": "mpii16", "h36m": "h36m17", "human36m": "h36m17", "h36m17_lt": "h36m17",
            "h36m17_mmpose": "h36m17_vp", "h36m17_videopose": "h36m17_vp", "aic": "aic14",
            "crowdpose": "crowdpose14", "lsp": "lsp14", "3dhp": "mpi_inf_3dhp17", "mpi_inf_3dhp": "mpi_inf_3dhp17",
            "itop": "itop15", "ntu": "ntu25", "openpose": "body25", "body_25": "body25", "body_25b": "body25b",
            "flic": "flic29", "flic_full": "flic29", "mpi_inf_3dhp_train": "mpi_inf_3dhp28",
            "occlusion_person": "occlusion_person15", "smpl": "smpl24", "openpose18": "coco18"}


def register_skeleton(skeleton: Skeleton, overwrite: bool = False) -> Skeleton:
    """Make a (custom) skeleton available to :func:`get_skeleton` under its name."""
    if skeleton.name in SKELETONS and not overwrite and SKELETONS[skeleton.name] is not skeleton:
        raise SkeletonError(f"a skeleton named {skeleton.name!r} is already registered")
    SKELETONS[skeleton.name] = skeleton
    return skeleton


def get_skeleton(name: str | Skeleton | Path) -> Skeleton:
    """A built-in or registered skeleton by name (``coco17``, ``coco``, ...), or a YAML file path."""
    if isinstance(name, Skeleton):
        return name
    key = str(name)
    if key.endswith((".yaml", ".yml", ".json")):
        return load_skeleton(key)
    key = _ALIASES.get(key.lower(), key.lower())
    if key not in SKELETONS:
        raise SkeletonError(f"unknown skeleton {name!r}; known: {sorted(SKELETONS)} (or a path to a YAML file)")
    return SKELETONS[key]


def load_skeleton(source: str | Path | dict, register: bool = False) -> Skeleton:
    """Declare a skeleton from YAML (a path or an already-parsed mapping).

    Keys: ``name`` and ``joints`` (required); ``limbs`` and ``flip_pairs`` as pairs of joint names; ``sigmas``
    (one per joint); ``root`` (a joint name); ``upper_body``/``lower_body`` (joint names); ``description``.
    Unknown keys and unknown joint names are errors that name the file and the key.
    """
    where = "<mapping>"
    if isinstance(source, dict):
        data = source
    else:
        import yaml

        path = Path(source)
        where = str(path)
        if not path.is_file():
            raise SkeletonError(f"skeleton file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise SkeletonError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise SkeletonError(f"{where}: a skeleton must be a mapping with 'name' and 'joints'")
    allowed = {"name", "joints", "limbs", "flip_pairs", "sigmas", "root", "upper_body", "lower_body", "description"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SkeletonError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    for key in ("name", "joints"):
        if key not in data:
            raise SkeletonError(f"{where}: missing required key {key!r}")
    joints = data["joints"]
    if not isinstance(joints, list) or not all(isinstance(j, str) for j in joints):
        raise SkeletonError(f"{where}: 'joints' must be a list of joint names")
    idx = {n: i for i, n in enumerate(joints)}

    def ids(key: str, names) -> Any:
        try:
            if key in ("upper_body", "lower_body"):
                return tuple(idx[n] for n in names)
            return tuple((idx[a], idx[b]) for a, b in names)
        except KeyError as e:
            raise SkeletonError(f"{where}: {key!r} refers to unknown joint {e.args[0]!r}") from None
        except (TypeError, ValueError):
            raise SkeletonError(f"{where}: {key!r} must be a list of joint-name pairs") from None

    root = data.get("root")
    if root is not None and root not in idx:
        raise SkeletonError(f"{where}: 'root' refers to unknown joint {root!r}")
    sk = Skeleton(
        name=str(data["name"]),
        joints=tuple(joints),
        limbs=ids("limbs", data.get("limbs", [])),
        sigmas=data.get("sigmas"),
        root=idx[root] if root is not None else None,
        flip_pairs=ids("flip_pairs", data["flip_pairs"]) if "flip_pairs" in data else None,
        upper_body=ids("upper_body", data["upper_body"]) if "upper_body" in data else None,
        lower_body=ids("lower_body", data["lower_body"]) if "lower_body" in data else None,
        description=str(data.get("description", "")),
    )
    return register_skeleton(sk, overwrite=True) if register else sk


# --------------------------------------------------------------------------- conversion between joint sets
#: Joints that can be computed from others when a set lacks them: name -> (source joints averaged, convention).
#: Conversion first copies joints with the same name, then applies these rules (recursively).
DERIVED_JOINTS: dict[str, tuple[tuple[str, ...], str]] = {
    "pelvis": (("left_hip", "right_hip"), "mid-hips (H36M, MPII, BODY_25 MidHip, NTU spine_base)"),
    "thorax": (("left_shoulder", "right_shoulder"), "mid-shoulders (MPII thorax, H36M thorax, NTU spine_shoulder)"),
    "neck": (("left_shoulder", "right_shoulder"), "mid-shoulders (OpenPose neck convention)"),
    "spine": (("pelvis", "thorax"), "mid pelvis-thorax (H36M spine, NTU spine_mid)"),
    "torso": (("pelvis", "thorax"), "mid pelvis-thorax (ITOP torso)"),
    "head": (("left_ear", "right_ear"), "mid-ears (head centre, 3DHP/ITOP/NTU head)"),
    "left_hand": (("left_wrist",), "wrist position (ITOP/NTU hand, approximate)"),
    "right_hand": (("right_wrist",), "wrist position (ITOP/NTU hand, approximate)"),
    "left_foot": (("left_ankle",), "ankle position (ITOP/NTU foot, approximate)"),
    "right_foot": (("right_ankle",), "ankle position (ITOP/NTU foot, approximate)"),
}


def _resolve(name: str, src: Skeleton, depth: int = 0) -> dict[int, float] | None:
    if name in src.joints:
        return {src.joints.index(name): 1.0}
    if depth > 4 or name not in DERIVED_JOINTS:
        return None
    parts = DERIVED_JOINTS[name][0]
    weights: dict[int, float] = {}
    for p in parts:
        w = _resolve(p, src, depth + 1)
        if w is None:
            return None
        for i, v in w.items():
            weights[i] = weights.get(i, 0.0) + v / len(parts)
    return weights


def conversion_plan(src: str | Skeleton, dst: str | Skeleton) -> tuple[np.ndarray, list[str]]:
    """Linear map ``W`` (K_dst, K_src) with ``dst = W @ src``, and the destination joints that cannot be produced."""
    s, d = get_skeleton(src), get_skeleton(dst)
    w = np.zeros((d.num_joints, s.num_joints), dtype=np.float64)
    missing = []
    for j, name in enumerate(d.joints):
        r = _resolve(name, s)
        if r is None:
            missing.append(name)
            continue
        for i, v in r.items():
            w[j, i] = v
    return w, missing


def convert(keypoints: np.ndarray, src: str | Skeleton, dst: str | Skeleton, visible: np.ndarray | None = None,
            fill_missing: bool = False):
    """Convert ``keypoints`` (``[..., K_src, D]``, D = 2 or 3) from one joint set to another by joint name.

    Joints with the same name are copied; the others are derived by :data:`DERIVED_JOINTS`. A joint that can be
    produced neither way raises :class:`SkeletonError` naming it, unless ``fill_missing`` (then it is zero and
    invisible). With ``visible`` (``[..., K_src]``) the converted visibility is returned too: a derived joint is
    visible only when all its sources are.
    """
    s, d = get_skeleton(src), get_skeleton(dst)
    kp = np.asarray(keypoints)
    if kp.ndim < 2 or kp.shape[-2] != s.num_joints:
        raise SkeletonError(
            f"convert {s.name}->{d.name}: keypoints have shape {kp.shape}, expected [..., {s.num_joints}, D]")
    w, missing = conversion_plan(s, d)
    if missing and not fill_missing:
        raise SkeletonError(
            f"cannot produce {d.name} joints {missing} from {s.name} (joints {list(s.joints)}); "
            "pass fill_missing=True to leave them empty")
    out = np.einsum("ji,...id->...jd", w, kp.astype(np.float64)).astype(kp.dtype if kp.dtype.kind == "f" else np.float64)
    if visible is None:
        return out
    vis = np.asarray(visible, dtype=np.float64)
    if vis.shape != kp.shape[:-1]:
        raise SkeletonError(f"convert {s.name}->{d.name}: visible has shape {vis.shape}, expected {kp.shape[:-1]}")
    used = w > 0  # (Kd, Ks)
    # a destination joint is as visible as the least visible of its sources (0 when it cannot be produced)
    big = np.where(used, vis[..., None, :], np.inf)
    out_vis = big.min(axis=-1)
    out_vis[..., ~used.any(axis=1)] = 0.0
    return out, out_vis.astype(np.asarray(visible).dtype)


# --------------------------------------------------------------------------- explicit dataset joint maps
@dataclass(frozen=True, eq=False)
class JointMap:
    """An explicit correspondence from one joint set to another, as a dataset's loader defines it.

    :func:`convert` maps joints by canonical name. Some training recipes use a correspondence that
    differs from that, e.g. HG-3D feeds LSP's ``neck`` to MPII's ``upper_neck``. Such a recipe is
    written down as a :class:`JointMap`.

    Attributes:
        src, dst: skeleton names.
        sources: one entry per ``dst`` joint: the ``src`` indices whose mean gives it (empty: not available).
        approximate: ``dst`` indices filled with a *different* anatomical point (e.g. head-top <- nose). They are
            kept by default, as the recipe does; ``apply(..., approximate="drop")`` makes them invisible.
        description: where the correspondence comes from.
    """

    src: str
    dst: str
    sources: tuple[tuple[int, ...], ...]
    approximate: tuple[int, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        s, d = get_skeleton(self.src), get_skeleton(self.dst)
        srcs = tuple(tuple(int(i) for i in group) for group in self.sources)
        if len(srcs) != d.num_joints:
            raise SkeletonError(f"joint map {s.name}->{d.name}: {len(srcs)} entries for {d.num_joints} joints")
        for j, group in enumerate(srcs):
            if any(not 0 <= i < s.num_joints for i in group):
                raise SkeletonError(f"joint map {s.name}->{d.name}: {d.joints[j]!r} refers to a joint outside "
                                    f"0..{s.num_joints - 1}")
        approx = tuple(int(j) for j in self.approximate)
        if any(not 0 <= j < d.num_joints for j in approx):
            raise SkeletonError(f"joint map {s.name}->{d.name}: approximate joint outside 0..{d.num_joints - 1}")
        object.__setattr__(self, "src", s.name)
        object.__setattr__(self, "dst", d.name)
        object.__setattr__(self, "sources", srcs)
        object.__setattr__(self, "approximate", approx)

    def __repr__(self) -> str:
        return f"JointMap({self.src!r} -> {self.dst!r})"

    @property
    def indices(self) -> tuple[int, ...]:
        """Per ``dst`` joint its single ``src`` index, -1 where it is a mean of several or not available."""
        return tuple(g[0] if len(g) == 1 else -1 for g in self.sources)

    def matrix(self) -> np.ndarray:
        """``W`` (K_dst, K_src) with ``dst = W @ src``."""
        w = np.zeros((len(self.sources), get_skeleton(self.src).num_joints))
        for j, group in enumerate(self.sources):
            for i in group:
                w[j, i] += 1.0 / len(group)
        return w

    def apply(self, keypoints: np.ndarray, visible: np.ndarray | None = None, approximate: str = "keep"):
        """Map ``keypoints`` (``[..., K_src, D]``) to ``[..., K_dst, D]``; with ``visible`` (``[..., K_src]``) also
        return the visibility, the minimum over each joint's sources (0 where unavailable, and for
        :attr:`approximate` joints when ``approximate="drop"``). Unavailable joints are 0."""
        if approximate not in ("keep", "drop"):
            raise ValueError(f"approximate must be 'keep' or 'drop', got {approximate!r}")
        kp = np.asarray(keypoints)
        k = get_skeleton(self.src).num_joints
        if kp.ndim < 2 or kp.shape[-2] != k:
            raise SkeletonError(f"joint map {self.src}->{self.dst}: keypoints have shape {kp.shape}, expected "
                                f"[..., {k}, D]")
        out = np.einsum("ji,...id->...jd", self.matrix(), kp.astype(np.float64))
        out = out.astype(kp.dtype if kp.dtype.kind == "f" else np.float64)
        if visible is None:
            return out
        vis = np.asarray(visible, dtype=np.float64)
        if vis.shape != kp.shape[:-1]:
            raise SkeletonError(f"joint map {self.src}->{self.dst}: visible has shape {vis.shape}, expected "
                                f"{kp.shape[:-1]}")
        out_vis = np.zeros(vis.shape[:-1] + (len(self.sources),))
        for j, group in enumerate(self.sources):
            if group and not (approximate == "drop" and j in self.approximate):
                out_vis[..., j] = vis[..., list(group)].min(axis=-1)
        return out, out_vis.astype(np.float32)


def _joint_map(src: Skeleton, dst: Skeleton, by_name: dict[str, tuple[str, ...] | str], *,
               approximate: Sequence[str] = (), description: str = "") -> JointMap:
    """A :class:`JointMap`: ``dst`` joints absent from ``by_name`` come from the ``src`` joint of the same name."""
    sources = []
    for name in dst.joints:
        spec = by_name.get(name, name)
        names = (spec,) if isinstance(spec, str) else tuple(spec)
        sources.append(tuple(src.index(n) for n in names))
    return JointMap(src.name, dst.name, tuple(sources), tuple(dst.index(n) for n in approximate), description)


_MID_HIPS = ("left_hip", "right_hip")
_MID_SHOULDERS = ("left_shoulder", "right_shoulder")

#: Dataset joint maps to ``mpii16``, keyed by (src, dst) skeleton names; :func:`get_joint_map` looks them up.
JOINT_MAPS: dict[tuple[str, str], JointMap] = {(m.src, m.dst): m for m in (
    _joint_map(LSP14, MPII16, {"pelvis": _MID_HIPS, "thorax": _MID_SHOULDERS, "upper_neck": "neck"},
               description="HG-3D lsp_extended: pelvis = mid-hips, thorax = mid-shoulders, LSP neck -> upper "
                           "neck, visibility multiplied (pose3d.md 5.6)"),
    _joint_map(FLIC29, MPII16, {"thorax": "torso", "upper_neck": "thorax", "head_top": "nose"},
               approximate=("head_top",),
               description="HG-3D flic_full's flic_to_mpii [12,11,10,7,8,9,19,21,18,17,6,5,4,1,2,3] read as the "
                           "1-based MATLAB indices it is (0-based: 11,10,9,6,7,8,18,20,17,16,5,4,3,0,1,2): pelvis <- "
                           "mhip, thorax <- mtorso, upper neck <- msho, head top <- nose (pose3d.md 5.6, 9)"),
    _joint_map(OCCLUSION_PERSON15, MPII16, {"thorax": _MID_SHOULDERS, "upper_neck": "neck", "head_top": "neck"},
               approximate=("head_top",),
               description="HG-3D occlusion_person: thorax = mid-shoulders, head top = neck copied (pose3d.md 5.6)"),
    _joint_map(MPI_INF_3DHP28, MPII16, {"thorax": "spine", "upper_neck": "neck"},
               description="HG-3D mpii3d train: [25,24,23,18,19,20,4,3,5,7,16,15,14,9,10,11] (pose3d.md 5.6)"),
    _joint_map(MPI_INF_3DHP17, MPII16, {"thorax": "spine", "upper_neck": "neck"},
               description="HG-3D mpii3d val/test: [10,9,8,11,12,13,14,15,1,0,4,3,2,5,6,7] (pose3d.md 5.6)"),
    _joint_map(H36M17_VP, MPII16, {"thorax": "spine", "upper_neck": "thorax"},
               description="HG-3D h36m (ECCV'18 challenge, integral order = h36m17_vp): h36m_to_mpii "
                           "[3,2,1,4,5,6,0,7,8,10,16,15,14,11,12,13]; torso -> thorax, neck -> upper neck, head -> "
                           "head top, nose dropped (pose3d.md 5.6)"),
    _joint_map(COCO18, MPII16, {"pelvis": _MID_HIPS, "thorax": _MID_SHOULDERS, "upper_neck": "nose",
                                "head_top": "nose"},
               approximate=("upper_neck", "head_top"),
               description="HG-3D threedpw 2D keypoints: pelvis and thorax are means, upper neck and head top "
                           "are both the nose (pose3d.md 5.6, 9)"),
    _joint_map(SMPL24, MPII16, {"thorax": _MID_SHOULDERS, "upper_neck": "neck", "head_top": "head"},
               approximate=("head_top",),
               description="humanvision's map of 3DPW's SMPL joints (not the seed's H36M J-regressor route, which "
                           "needs the SMPL mesh): thorax = mid SMPL shoulders, upper neck <- SMPL neck, head top "
                           "<- SMPL head centre"),
)}


def get_joint_map(src: str | Skeleton, dst: str | Skeleton) -> JointMap:
    """The registered :class:`JointMap` from ``src`` to ``dst`` (see :data:`JOINT_MAPS`)."""
    key = (get_skeleton(src).name, get_skeleton(dst).name)
    if key not in JOINT_MAPS:
        raise SkeletonError(f"no joint map {key[0]}->{key[1]}; known: {sorted(f'{a}->{b}' for a, b in JOINT_MAPS)}"
                            "; convert() maps joints by name")
    return JOINT_MAPS[key]


def map_joints(keypoints: np.ndarray, src: str | Skeleton, dst: str | Skeleton, visible: np.ndarray | None = None,
               approximate: str = "keep"):
    """Apply the registered :class:`JointMap` ``src -> dst`` (:meth:`JointMap.apply`)."""
    return get_joint_map(src, dst).apply(keypoints, visible, approximate)
