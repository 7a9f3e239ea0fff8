"""Real motion for the synthetic body: a BVH reader, the DeepMimic clips of the ``pybullet`` wheel, retargeting.

* :func:`read_bvh` parses the BVH motion-capture format (``HIERARCHY`` with ``ROOT``/``JOINT``/``End Site``,
  ``OFFSET`` and ``CHANNELS``; ``MOTION`` with ``Frames``/``Frame Time``). Rotations are Euler angles in degrees
  composed in the order the channels are listed (``R = R_c1 @ R_c2 @ R_c3``, intrinsic); a joint's world
  position is ``p_parent + G_parent @ (offset + translation)``. End sites are named ``<parent>_end``.
* :func:`load_deepmimic` reads ``pybullet_data/data/motions/humanoid3d_*.txt`` (44 values per frame: dt, root
  position, root quaternion wxyz, then chest, neck, right hip/knee/ankle/shoulder/elbow, left hip/knee/ankle/
  shoulder/elbow; knees and elbows are 1-DoF angles about the joint's z axis) with the joint offsets of
  ``pybullet_data/humanoid/humanoid.urdf``. ``pybullet`` is optional (``pip install pybullet``).
* Both give a :class:`Motion`: per-frame positions of named joints (canonical names), z up.
* :func:`retarget` turns one frame into segment rotations of a :class:`~humanvision.data.synthetic.body.BodyShape`
  by matching bone *directions* (the person keeps its own bone lengths); trunk frames come from the hip and
  shoulder lines, the root trajectory is scaled by the ratio of leg lengths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from humanvision.errors import DataError

__all__ = ["Motion", "deepmimic_clips", "load_deepmimic", "read_bvh", "retarget"]

Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


@dataclass
class Motion:
    """A clip: ``positions`` (F, J, 3) of the joints ``names`` (canonical names where known), z up, any unit."""

    names: tuple[str, ...]
    positions: np.ndarray
    fps: float
    source: str

    def __len__(self) -> int:
        return len(self.positions)

    def joint(self, name: str) -> np.ndarray | None:
        return self.positions[:, self.names.index(name)] if name in self.names else None


# ------------------------------------------------------------------------------------------------ BVH
def _axis_rotation(axis: str, deg: np.ndarray) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    m = {"X": [o, z, z, z, c, -s, z, s, c], "Y": [c, z, s, z, o, z, -s, z, c], "Z": [c, -s, z, s, c, z, z, z, o]}
    return np.stack(m[axis], -1).reshape(a.shape + (3, 3))


def read_bvh(path: str | Path, up: str = "y") -> tuple[Motion, dict[str, str]]:
    """Read a BVH file; returns the :class:`Motion` with canonical joint names and the mapping used.

    ``up`` is the file's up axis (``"y"``, the common case, or ``"z"``); positions are returned z up in the file's
    unit. Joints are named canonically by matching common BVH naming schemes (CMU, Mixamo, Daz, generic);
    unmatched joints keep their BVH name. Malformed files raise :class:`DataError` naming the file and line.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError("file not found", file=str(p))
    lines = p.read_text(errors="replace").splitlines()
    names: list[str] = []
    parents: list[int] = []
    offsets: list[np.ndarray] = []
    channels: list[list[str]] = []
    stack: list[int] = []
    i, last = 0, -1
    while i < len(lines):
        tok = lines[i].split()
        where = f"line {i + 1}"
        if not tok:
            i += 1
            continue
        key = tok[0].upper()
        if key == "MOTION":
            break
        try:
            if key in ("ROOT", "JOINT"):
                names.append(" ".join(tok[1:]) or f"joint{len(names)}")
                parents.append(stack[-1] if stack else -1)
                offsets.append(np.zeros(3))
                channels.append([])
                last = len(names) - 1
            elif key == "END":
                names.append(f"{names[stack[-1]]}_end")
                parents.append(stack[-1])
                offsets.append(np.zeros(3))
                channels.append([])
                last = len(names) - 1
            elif key == "{":
                stack.append(last)
            elif key == "}":
                stack.pop()
            elif key == "OFFSET":
                offsets[last] = np.array([float(v) for v in tok[1:4]])
            elif key == "CHANNELS":
                n = int(tok[1])
                channels[last] = tok[2:2 + n]
                if len(channels[last]) != n:
                    raise ValueError(f"{n} channels announced, {len(channels[last])} listed")
        except (ValueError, IndexError) as e:
            raise DataError(f"malformed HIERARCHY ({e})", file=str(p), record=where, field=key) from None
        i += 1
    if not names or i >= len(lines):
        raise DataError("no HIERARCHY/MOTION section", file=str(p))
    nframes, ftime, rows = None, None, []
    for j in range(i + 1, len(lines)):
        s = lines[j].strip()
        if not s:
            continue
        if s.lower().startswith("frames:"):
            nframes = int(s.split(":")[1])
        elif s.lower().startswith("frame time:"):
            ftime = float(s.split(":")[1])
        else:
            try:
                rows.append(np.array([float(v) for v in s.split()]))
            except ValueError:
                raise DataError("non-numeric motion data", file=str(p), record=f"line {j + 1}") from None
    nch = sum(len(c) for c in channels)
    if nframes is None or ftime is None:
        raise DataError("missing 'Frames:' or 'Frame Time:'", file=str(p), field="MOTION")
    bad = [k for k, r in enumerate(rows) if r.size != nch]
    if bad or len(rows) != nframes:
        raise DataError(f"expected {nframes} frames of {nch} values, got {len(rows)} rows"
                        + (f" (row {bad[0]} has {rows[bad[0]].size})" if bad else ""), file=str(p), field="MOTION")
    data = np.stack(rows) if rows else np.zeros((0, nch))
    F, J = len(data), len(names)
    pos = np.zeros((F, J, 3))
    rot = np.zeros((F, J, 3, 3))
    col = 0
    for j in range(J):
        local_t = np.broadcast_to(offsets[j], (F, 3)).copy()
        R = np.broadcast_to(np.eye(3), (F, 3, 3)).copy()
        for ch in channels[j]:
            v = data[:, col]
            col += 1
            axis, kind = ch[0].upper(), ch[1:].lower()
            if kind == "position":
                local_t[:, "XYZ".index(axis)] += v
            elif kind == "rotation":
                R = R @ _axis_rotation(axis, v)
            else:
                raise DataError(f"unknown channel {ch!r}", file=str(p), record=names[j], field="CHANNELS")
        if parents[j] < 0:
            pos[:, j], rot[:, j] = local_t, R
        else:
            pj = parents[j]
            pos[:, j] = pos[:, pj] + np.einsum("fij,fj->fi", rot[:, pj], local_t)
            rot[:, j] = rot[:, pj] @ R
    if up.lower() == "y":
        pos = pos @ Y_UP_TO_Z_UP.T
    elif up.lower() != "z":
        raise DataError(f"up must be 'y' or 'z', got {up!r}", file=str(p), field="up")
    mapping = _canonical_names(names)
    canon = tuple(mapping.get(n, n) for n in names)
    return Motion(canon, pos, 1.0 / ftime if ftime > 0 else 0.0, str(p)), mapping


_BASES = {
    "hip": ["upleg", "thigh", "hip", "upperleg"],
    "knee": ["leg", "shin", "knee", "lowerleg", "lowleg"],
    "ankle": ["foot", "ankle"],
    "foot": ["toebase", "toe", "toes", "foot_end", "footend"],
    "shoulder": ["arm", "upperarm", "shldr", "uparm", "shoulder"],
    "elbow": ["forearm", "lowerarm", "elbow", "lowarm"],
    "wrist": ["hand", "wrist"],
    "hand_tip": ["hand_end", "handend", "wrist_end"],
}
_CENTRE = {
    "pelvis": ["hips", "pelvis", "hip", "root"],
    "spine": ["spine", "abdomen", "lowerback", "spine1"],
    "thorax": ["chest", "spine2", "upperchest", "spine3", "thorax", "spine1"],
    "neck": ["neck", "neck1", "lowerneck"],
    "head": ["head"],
    "head_top": ["head_end", "headend", "headtop_end", "site"],
}


def _canonical_names(names: list[str]) -> dict[str, str]:
    """Map BVH joint names to canonical names; first candidate present wins, a BVH joint is used once."""
    def norm(n: str) -> str:
        n = n.lower().split(":")[-1]
        return re.sub(r"[^a-z0-9_]", "", n.replace("mixamorig", ""))

    table = {norm(n): n for n in names}
    loose = {k.replace("_", ""): v for k, v in table.items()}
    out: dict[str, str] = {}
    used: set[str] = set()

    def take(canon: str, cands: list[str]) -> None:
        for c in cands:
            for key in (c, c.replace("_", "")):
                src = table.get(key) or loose.get(key)
                if src is not None and src not in used:
                    out[src] = canon
                    used.add(src)
                    return

    for canon, cands in _CENTRE.items():
        take(canon, cands)
    for side, prefixes in (("left", ["left", "l", "l_", "left_"]), ("right", ["right", "r", "r_", "right_"])):
        for role, bases in _BASES.items():
            take(f"{side}_{role}", [pre + b for b in bases for pre in prefixes])
    return out


# ------------------------------------------------------------------------------------------------ DeepMimic
_DM_OFFSETS = {  # humanoid.urdf joint origins in the parent link frame (y up, z right, x forward)
    "chest": ("root", (0.0, 0.944604, 0.0)), "neck": ("chest", (0.0, 0.895576, 0.0)),
    "right_hip": ("root", (0.0, 0.0, 0.339548)), "right_knee": ("right_hip", (0.0, -1.686184, 0.0)),
    "right_ankle": ("right_knee", (0.0, -1.639480, 0.0)),
    "right_shoulder": ("chest", (-0.0962, 0.974, 0.73244)), "right_elbow": ("right_shoulder", (0.0, -1.099152, 0.0)),
    "right_wrist": ("right_elbow", (0.0, -1.035788, 0.0)),
    "left_hip": ("root", (0.0, 0.0, -0.339548)), "left_knee": ("left_hip", (0.0, -1.686184, 0.0)),
    "left_ankle": ("left_knee", (0.0, -1.639480, 0.0)),
    "left_shoulder": ("chest", (-0.0962, 0.974, -0.73244)), "left_elbow": ("left_shoulder", (0.0, -1.099152, 0.0)),
    "left_wrist": ("left_elbow", (0.0, -1.035788, 0.0)),
}
_DM_LAYOUT = [("chest", 4), ("neck", 4), ("right_hip", 4), ("right_knee", 1), ("right_ankle", 4),
              ("right_shoulder", 4), ("right_elbow", 1), ("left_hip", 4), ("left_knee", 1), ("left_ankle", 4),
              ("left_shoulder", 4), ("left_elbow", 1)]
# DeepMimic joint -> canonical name (the chest joint sits low on the trunk: our "spine")
_DM_CANON = {"root": "pelvis", "chest": "spine", "neck": "neck", "head": "head", "thorax": "thorax",
             "right_toe": "right_foot", "left_toe": "left_foot"}


def _pybullet_motion_dir() -> Path:
    try:
        import pybullet_data
    except ImportError:
        raise ImportError("DeepMimic motions need the optional 'pybullet' package (pip install pybullet)") from None
    return Path(pybullet_data.getDataPath()) / "data" / "motions"


def deepmimic_clips() -> list[str]:
    """Names of the humanoid DeepMimic clips shipped with pybullet (``walk``, ``run``, ...); needs pybullet."""
    return sorted(f.stem.removeprefix("humanoid3d_") for f in _pybullet_motion_dir().glob("humanoid3d_*.txt"))


def _quat(q: np.ndarray) -> np.ndarray:
    w, x, y, z = (q / np.linalg.norm(q, axis=-1, keepdims=True)).T
    return np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
                     2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
                     2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1).reshape(-1, 3, 3)


def load_deepmimic(clip: str | Path) -> Motion:
    """A DeepMimic humanoid clip by name (``"walk"``; needs pybullet) or by path to its ``.txt`` file."""
    path = Path(clip)
    if not path.suffix:
        path = _pybullet_motion_dir() / f"humanoid3d_{clip}.txt"
        if not path.is_file():
            raise DataError(f"unknown DeepMimic clip {clip!r}; available: {deepmimic_clips()}", file=str(path))
    from humanvision.data.readers.base import load_json

    data = load_json(path)
    frames = np.asarray(data.get("Frames") if isinstance(data, dict) else None, dtype=np.float64)
    if frames.ndim != 2 or frames.shape[1] != 44:
        raise DataError(f"expected Frames of 44 values, got shape {frames.shape}", file=str(path), field="Frames")
    F = len(frames)
    rot = {"root": _quat(frames[:, 4:8])}
    pos = {"root": frames[:, 1:4]}
    col = 8
    for name, n in _DM_LAYOUT:  # (the wrists are fixed joints: placed below)
        vals = frames[:, col:col + n]
        col += n
        local = _quat(vals) if n == 4 else np.stack([np.cos(vals[:, 0]), -np.sin(vals[:, 0]), 0 * vals[:, 0],
                                                     np.sin(vals[:, 0]), np.cos(vals[:, 0]), 0 * vals[:, 0],
                                                     0 * vals[:, 0], 0 * vals[:, 0], 1 + 0 * vals[:, 0]],
                                                    -1).reshape(F, 3, 3)
        parent, off = _DM_OFFSETS[name]
        pos[name] = pos[parent] + rot[parent] @ np.asarray(off)
        rot[name] = rot[parent] @ local
    for side in ("left", "right"):
        pos[f"{side}_wrist"] = pos[f"{side}_elbow"] + rot[f"{side}_elbow"] @ np.array(_DM_OFFSETS[f"{side}_wrist"][1])
        pos[f"{side}_toe"] = pos[f"{side}_ankle"] + rot[f"{side}_ankle"] @ np.array([0.45, -0.18, 0.0])
    pos["head"] = pos["neck"] + rot["neck"] @ np.array([0.0, 0.7, 0.0])
    pos["thorax"] = pos["chest"] + rot["chest"] @ np.array([-0.0962, 0.974, 0.0])
    names = tuple(_DM_CANON.get(k, k) for k in pos)
    P = np.stack([pos[k] for k in pos], 1) @ Y_UP_TO_Z_UP.T
    dt = float(frames[0, 0]) if frames[0, 0] > 0 else 1 / 30
    return Motion(names, P, 1.0 / dt, str(path))


# ------------------------------------------------------------------------------------------------ retargeting
def _align(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Smallest rotation taking direction u to direction v."""
    u, v = u / np.linalg.norm(u), v / np.linalg.norm(v)
    c = float(u @ v)
    w = np.cross(u, v)
    s = np.linalg.norm(w)
    if s < 1e-9:
        if c > 0:
            return np.eye(3)
        perp = np.cross(u, [1.0, 0, 0] if abs(u[0]) < 0.9 else [0, 1.0, 0])
        perp /= np.linalg.norm(perp)
        return 2 * np.outer(perp, perp) - np.eye(3)
    k = w / s
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + s * K + (1 - c) * K @ K


def _frame(right: np.ndarray, up: np.ndarray) -> np.ndarray:
    x = right / np.linalg.norm(right)
    z = up - (up @ x) * x
    z /= np.linalg.norm(z)
    return np.stack([x, np.cross(z, x), z], 1)


def retarget(motion: Motion, frame: int, shape, yaw_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Segment world rotations ``(15, 3, 3)`` and the pelvis position ``(3,)`` (mm, clip-relative xy, height above
    the clip's lowest foot point) of ``motion[frame]`` for a body of ``shape``, turned by ``yaw_deg`` about z.

    Required joints: pelvis, hips, knees, ankles, shoulders, elbows, wrists and one of thorax/neck.
    """
    from humanvision.data.synthetic.body import SEGMENT_NAMES, SEGMENTS, _rest_geometry

    need = ["pelvis"] + [f"{s}_{j}" for s in ("left", "right")
                         for j in ("hip", "knee", "ankle", "shoulder", "elbow", "wrist")]
    missing = [n for n in need if n not in motion.names]
    if missing or not ({"thorax", "neck"} & set(motion.names)):
        raise DataError(f"motion lacks joints {missing or ['thorax or neck']} (has {list(motion.names)})",
                        file=motion.source)
    c, s = np.cos(np.deg2rad(yaw_deg)), np.sin(np.deg2rad(yaw_deg))
    Rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    P = {n: Rz @ motion.positions[frame, i] for i, n in enumerate(motion.names)}
    top = P.get("thorax", P.get("neck"))
    rest, _, _ = _rest_geometry(shape)
    G = {}
    G["pelvis"] = _frame(P["right_hip"] - P["left_hip"], P.get("spine", top) - P["pelvis"])
    G["chest"] = _frame(P["right_shoulder"] - P["left_shoulder"], top - P.get("spine", P["pelvis"]))
    targets = {"head": ("neck", "head" if "head" in P else "head_top")}
    for side in ("left", "right"):
        targets.update({f"{side}_upper_arm": (f"{side}_shoulder", f"{side}_elbow"),
                        f"{side}_lower_arm": (f"{side}_elbow", f"{side}_wrist"),
                        f"{side}_hand": (f"{side}_wrist", f"{side}_hand_tip"),
                        f"{side}_upper_leg": (f"{side}_hip", f"{side}_knee"),
                        f"{side}_lower_leg": (f"{side}_knee", f"{side}_ankle"),
                        f"{side}_foot": (f"{side}_ankle", f"{side}_foot")})
    for seg in SEGMENT_NAMES[2:]:
        parent = SEGMENTS[seg][0]
        a, b = targets[seg]
        if a in P and b in P:
            rest_dir = G[parent] @ (rest[b] - rest[a])
            G[seg] = _align(rest_dir, P[b] - P[a]) @ G[parent]
        else:
            G[seg] = G[parent]
    # scale the trajectory by the ratio of leg lengths; height measured from the clip's lowest foot point
    legs = [np.linalg.norm(motion.positions[0, motion.names.index(f"{s}_{a}")]
                           - motion.positions[0, motion.names.index(f"{s}_{b}")])
            for s in ("left", "right") for a, b in (("hip", "knee"), ("knee", "ankle"))]
    ours = [np.linalg.norm(rest[f"{s}_{a}"] - rest[f"{s}_{b}"]) for s in ("left", "right")
            for a, b in (("hip", "knee"), ("knee", "ankle"))]
    scale = float(np.sum(ours) / max(np.sum(legs), 1e-9))
    feet = [n for n in motion.names if n.endswith(("_ankle", "_foot"))]
    ground = float(min(motion.positions[:, motion.names.index(n), 2].min() for n in feet))
    root = P["pelvis"] * scale
    root[2] = (motion.positions[frame, motion.names.index("pelvis"), 2] - ground) * scale
    return np.stack([G[n] for n in SEGMENT_NAMES]), root
