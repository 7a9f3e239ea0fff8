"""SMPL body model in pure PyTorch, its file formats read without executing code, and a random stand-in model.

SMPL (Loper et al., "SMPL: A Skinned Multi-Person Linear Model", SIGGRAPH Asia 2015) maps pose ``theta`` (one
rotation per joint, 24 joints) and shape ``beta`` (10 coefficients) to a mesh of 6890 vertices:

1. **shape blend shapes**: ``v_shaped = v_template + shapedirs . beta`` (``shapedirs`` is ``(V, 3, B)``);
2. **joint regression**: the rest joints ``J = J_regressor @ v_shaped`` (``(J, V)``, rows sum to 1);
3. **pose blend shapes**: ``v_posed = v_shaped + posedirs . vec(R_k - I)`` over the 23 non-root joints
   (``posedirs`` is ``(V, 3, 207)``; ``vec`` flattens each 3x3 row-major, joints in order 1..23);
4. **forward kinematics** along ``kintree_table`` (parents before children): ``G_k = G_parent(k) [R_k | J_k -
   J_parent(k)]``, the root ``[R_0 | J_0]``; the posed joints are the translations of ``G_k``;
5. **linear blend skinning**: ``v = sum_k w_vk (G_k - [0 | G_k J_k]) v_posed`` with ``weights`` ``(V, J)``;
   then ``+ transl``.

The model is applied by :class:`SMPL` (an ``nn.Module``; its model arrays are **non-persistent buffers**, so a
trained network's checkpoint never contains the licensed SMPL data). Pose inputs: axis-angle ``(B, J, 3)`` or
``(B, 3 J)``, the 6D representation of Zhou et al. (CVPR 2019) ``(B, J, 6)`` / ``(B, 6 J)``, or rotation matrices
``(B, J, 3, 3)``. Our 6D layout is **the first column of R, then the second** (:func:`matrix_to_rotation_6d`,
:func:`rotation_6d_to_matrix` with Gram-Schmidt); HMR / SPIN checkpoints interleave the two columns (a ``(3, 2)``
reshape) and PyTorch3D uses rows, so regressor weights from those code bases are not interchangeable with ours.
Outputs: vertices ``(B, V, 3)``, joints ``(B, J, 3)`` (the posed kinematic joints) and, when a regressor file is
given (the ``J_regressor_h36m.npy`` of SPIN / 3DCrowdNet, ``(17, 6890)``), H36M-17 joints regressed from the
posed mesh (VideoPose3D order, pelvis at 0: ``h36m17_vp``).

**Files** (SMPL is licensed and cannot ship; read what the user supplies, :func:`read_smpl`):

* the official ``.pkl`` (``basicModel_neutral_lbs_10_207_0_v1.0.0.pkl``, ``basicModel_{f,m}_lbs_...pkl``,
  ``SMPL_NEUTRAL.pkl`` of the smplx layout): a **Python 2 pickle** of a dict with ``v_template (6890, 3)``,
  ``shapedirs (6890, 3, 10)`` (a chumpy ``Ch`` object in the official release), ``posedirs (6890, 3, 207)``,
  ``J_regressor`` (a ``scipy.sparse.csc_matrix (24, 6890)``), ``weights (6890, 24)``, ``kintree_table (2, 24)``
  (row 0 parent ids, the root's 4294967295; row 1 joint ids) and ``f (13776, 3)``. It is read by
  :func:`humanvision.data.io.safe_unpickle` (``encoding="latin1"``) with **exactly** these extra globals
  (:data:`SMPL_PICKLE_GLOBALS`), none of which imports or runs scipy or chumpy:

  - ``scipy.sparse.csc.csc_matrix``, ``scipy.sparse._csc.csc_matrix``, ``scipy.sparse.csc_matrix`` (the module
    paths of old and new scipy): an inert state holder; after loading, its ``data`` / ``indices`` / ``indptr`` /
    ``_shape`` (or ``shape``) are checked and scattered into a dense float64 array with numpy;
  - ``chumpy.ch.Ch``: an inert state holder whose array field ``x`` (else ``r``) is taken after loading;
  - ``copy_reg._reconstructor`` / ``copyreg._reconstructor`` (protocol 0/1 pickles of those two classes) and
    ``__builtin__.object`` / ``builtins.object`` (its base argument): a replacement that builds only the two
    holders above and refuses anything else.

  Everything else (other chumpy classes, any callable) is refused before it is called, with a
  :class:`~humanvision.errors.DataError` naming the file and the global.
* the smplx package's ``.npz`` (``SMPL_NEUTRAL.npz``): the same keys as plain arrays (``J_regressor`` dense),
  read with ``allow_pickle=False``.

:func:`write_random_smpl` writes a small random body model in either layout (tests and the synthetic recipe: no
SMPL file is needed offline); :func:`write_random_h36m_regressor` a matching ``(17, V)`` regressor ``.npy``.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from humanvision.data.io import safe_load_npy, safe_unpickle
from humanvision.errors import DataError

__all__ = [
    "H36M17_EVAL_JOINTS", "H36M17_ROOT", "SMPL", "SMPL_JOINT_NAMES", "SMPL_PARENTS", "SMPL_PICKLE_GLOBALS",
    "SMPLModelData", "SMPLOutput", "batch_rodrigues", "blend_shapes", "forward_kinematics", "linear_blend_skinning",
    "matrix_to_rotation_6d", "pose_to_matrix", "read_joint_regressor", "read_smpl", "rotation_6d_to_matrix",
    "write_random_h36m_regressor", "write_random_smpl",
]

#: the 24 joints, = the ``smpl24`` skeleton
SMPL_JOINT_NAMES = ("pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
                    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar",
                    "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist",
                    "right_wrist", "left_hand", "right_hand")
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
#: the root of the H36M-17 joints regressed from the mesh (pelvis; VideoPose3D order ``h36m17_vp``)
H36M17_ROOT = 0
#: the 14 evaluation joints of the 3DPW / Human3.6M mesh protocol (SPIN's ``H36M_TO_J14`` set, I2L-MeshNet /
#: 3DCrowdNet's ``h36m_eval_joint``): the 17 minus pelvis (0), spine (7) and nose (9)
H36M17_EVAL_JOINTS = (1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 13, 14, 15, 16)

_ROOT_PARENT_IDS = (-1, 4294967295)  # how files mark the root's parent in kintree_table row 0


# --------------------------------------------------------------------------------------- pickles, no code run
class _CSCHolder:
    """Inert stand-in for a pickled ``scipy.sparse.csc_matrix``: keeps the state dict only."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _ChHolder:
    """Inert stand-in for a pickled ``chumpy.ch.Ch``: keeps the state dict only."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


_HOLDERS = (_CSCHolder, _ChHolder)


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copy_reg._reconstructor`` of protocol 0/1 pickles, for the two holders only."""
    if cls not in _HOLDERS or base is not object or state is not None:
        raise pickle.UnpicklingError(f"copy_reg._reconstructor is only allowed for scipy csc matrices and chumpy "
                                     f"Ch objects, got {getattr(cls, '__name__', cls)!r}")
    return cls.__new__(cls)


#: the globals an SMPL ``.pkl`` may name beyond :func:`~humanvision.data.io.safe_unpickle`'s numpy / builtin set
SMPL_PICKLE_GLOBALS: dict[tuple[str, str], Any] = {
    ("scipy.sparse.csc", "csc_matrix"): _CSCHolder,
    ("scipy.sparse._csc", "csc_matrix"): _CSCHolder,
    ("scipy.sparse", "csc_matrix"): _CSCHolder,
    ("chumpy.ch", "Ch"): _ChHolder,
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
}


def _csc_to_dense(holder: _CSCHolder, file: str, key: str) -> np.ndarray:
    s = holder.state
    if not isinstance(s, dict):
        raise DataError(f"a csc_matrix whose state is a {type(s).__name__}, not a dict", file=file, field=key)
    shape = s.get("_shape", s.get("shape"))
    missing = [k for k in ("data", "indices", "indptr") if k not in s] + ([] if shape is not None else ["_shape"])
    if missing:
        raise DataError(f"a csc_matrix without {', '.join(missing)}", file=file, field=key)
    try:
        rows, cols = (int(v) for v in shape)
        data = np.asarray(s["data"], dtype=np.float64).reshape(-1)
        indices = np.asarray(s["indices"]).reshape(-1).astype(np.int64)
        indptr = np.asarray(s["indptr"]).reshape(-1).astype(np.int64)
    except (TypeError, ValueError) as e:
        raise DataError(f"a malformed csc_matrix ({e})", file=file, field=key) from None
    if (rows < 0 or cols < 0 or indptr.shape != (cols + 1,) or indptr[0] != 0 or np.any(np.diff(indptr) < 0)
            or indptr[-1] != len(data) or len(indices) != len(data)
            or (len(indices) and (indices.min() < 0 or indices.max() >= rows))):
        raise DataError(f"an inconsistent csc_matrix of shape ({rows}, {cols}): {len(data)} values, indptr "
                        f"{indptr.shape}, row indices outside 0..{rows - 1} or not monotone", file=file, field=key)
    dense = np.zeros((rows, cols), np.float64)
    col_of = np.repeat(np.arange(cols), np.diff(indptr))
    np.add.at(dense, (indices, col_of), data)  # duplicates add up, as in scipy
    return dense


def _ch_to_array(holder: _ChHolder, file: str, key: str) -> np.ndarray:
    s = holder.state
    if isinstance(s, dict):
        for name in ("x", "r"):
            if isinstance(s.get(name), np.ndarray):
                return s[name]
    fields = sorted(s) if isinstance(s, dict) else type(s).__name__
    raise DataError(f"a chumpy Ch object without an array field x or r (fields: {fields}); only plain Ch arrays "
                    "can be read without chumpy", file=file, field=key)


def _plain(value: Any, file: str, key: str) -> Any:
    if isinstance(value, _CSCHolder):
        return _csc_to_dense(value, file, key)
    if isinstance(value, _ChHolder):
        return _ch_to_array(value, file, key)
    return value


# ------------------------------------------------------------------------------------------------ the model
@dataclass
class SMPLModelData:
    """The arrays of one body model (numpy, float64 / int64), validated at construction.

    ``v_template (V, 3)``, ``shapedirs (V, 3, B)``, ``posedirs (V, 3, 9 (J - 1))``, ``J_regressor (J, V)`` dense,
    ``weights (V, J)``, ``parents (J,)`` (root -1, every parent before its child), ``faces (F, 3)``; ``source``
    names the file in errors."""

    v_template: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    weights: np.ndarray
    parents: np.ndarray
    faces: np.ndarray
    source: str = "<arrays>"

    def __post_init__(self) -> None:
        f = self.source
        arrays = {}
        for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
            try:
                a = np.asarray(getattr(self, key), dtype=np.float64)
            except (TypeError, ValueError) as e:
                raise DataError(f"not a numeric array ({e})", file=f, field=key) from None
            if not np.isfinite(a).all():
                raise DataError("non-finite values", file=f, field=key)
            arrays[key] = a
        v = arrays["v_template"]
        if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] < 1:
            raise DataError(f"expected (V, 3), got {v.shape}", file=f, field="v_template")
        nv = v.shape[0]
        parents = np.asarray(self.parents).astype(np.int64).reshape(-1)
        nj = len(parents)
        expect = {"shapedirs": (nv, 3, None), "posedirs": (nv, 3, 9 * (nj - 1)), "J_regressor": (nj, nv),
                  "weights": (nv, nj)}
        for key, shape in expect.items():
            a = arrays[key]
            if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
                want = "(" + ", ".join("B" if s is None else str(s) for s in shape) + ")"
                raise DataError(f"expected shape {want} for {nv} vertices and {nj} joints, got {a.shape}", file=f,
                                field=key)
        if nj < 1 or parents[0] != -1 or any(not 0 <= parents[i] < i for i in range(1, nj)):
            raise DataError(f"kintree parents {parents.tolist()} must start with the root (-1) and list every "
                            "parent before its child", file=f, field="kintree_table")
        faces = np.asarray(self.faces)
        if faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype.kind not in "iu":
            raise DataError(f"expected integer faces (F, 3), got {faces.dtype} {faces.shape}", file=f, field="f")
        faces = faces.astype(np.int64)
        if faces.size and (faces.min() < 0 or faces.max() >= nv):
            raise DataError(f"face vertex indices outside 0..{nv - 1}", file=f, field="f")
        for key, a in arrays.items():
            setattr(self, key, a)
        self.parents, self.faces = parents, faces

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def num_joints(self) -> int:
        return len(self.parents)

    @property
    def num_betas(self) -> int:
        return self.shapedirs.shape[2]


def _parents_from_kintree(kintree: Any, file: str) -> np.ndarray:
    k = np.asarray(kintree)
    if k.ndim != 2 or k.shape[0] != 2 or k.dtype.kind not in "iuf":
        raise DataError(f"expected a (2, J) integer array, got {k.dtype} {k.shape}", file=file,
                        field="kintree_table")
    k = k.astype(np.int64)
    ids = {int(j): i for i, j in enumerate(k[1])}
    parents = []
    for i, p in enumerate(k[0]):
        p = int(p)
        if p in _ROOT_PARENT_IDS and i == 0:
            parents.append(-1)
        elif p in ids:
            parents.append(ids[p])
        else:
            raise DataError(f"joint {i}: parent id {p} is not a joint id", file=file, field="kintree_table")
    return np.asarray(parents, np.int64)


def _from_dict(d: Mapping[str, Any], file: str) -> SMPLModelData:
    keys = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
    missing = [k for k in keys if k not in d]
    if missing:
        raise DataError(f"not an SMPL model file: missing {', '.join(missing)}", file=file, field=missing[0])
    vals = {k: _plain(d[k], file, k) for k in keys}
    return SMPLModelData(v_template=vals["v_template"], shapedirs=vals["shapedirs"], posedirs=vals["posedirs"],
                         J_regressor=vals["J_regressor"], weights=vals["weights"],
                         parents=_parents_from_kintree(vals["kintree_table"], file), faces=np.asarray(vals["f"]),
                         source=file)


def read_smpl(path: str | Path) -> SMPLModelData:
    """Read an SMPL model file: the official ``.pkl`` (Python 2 pickle, chumpy / scipy objects read as plain arrays
    without importing either, see the module docstring) or the smplx ``.npz``. Any other suffix, a missing key, a
    refused global or an inconsistent shape is a :class:`DataError` naming the file and key."""
    p = Path(path)
    if not p.is_file():
        raise DataError("SMPL model file not found (SMPL is licensed: download it from smpl.is.tue.mpg.de)",
                        file=str(p))
    if p.suffix == ".pkl":
        d = safe_unpickle(p, encoding="latin1", extra_globals=SMPL_PICKLE_GLOBALS)
        if not isinstance(d, dict):
            raise DataError(f"expected a dict, got {type(d).__name__}", file=str(p))
        return _from_dict(d, str(p))
    if p.suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
        except ValueError as e:  # object arrays need pickle: refused
            raise DataError(f"cannot read the npz without pickle ({e})", file=str(p)) from None
        except (OSError, EOFError) as e:
            raise DataError(f"not a readable npz ({e})", file=str(p)) from None
        return _from_dict(d, str(p))
    raise DataError("expected an SMPL .pkl or .npz file", file=str(p))


def read_joint_regressor(path: str | Path, num_vertices: int | None = None) -> np.ndarray:
    """A ``(K, V)`` vertex-to-joint regressor ``.npy`` (``J_regressor_h36m.npy``: ``(17, 6890)``) as float64; a
    wrong vertex count is a :class:`DataError`."""
    r = safe_load_npy(path)
    if not isinstance(r, np.ndarray) or r.ndim != 2 or r.dtype.kind not in "iuf":
        raise DataError(f"expected a (K, V) numeric array, got {getattr(r, 'dtype', type(r).__name__)} "
                        f"{getattr(r, 'shape', '')}", file=str(path))
    if num_vertices is not None and r.shape[1] != num_vertices:
        raise DataError(f"{r.shape[1]} vertices, but the body model has {num_vertices}", file=str(path))
    if not np.isfinite(r).all():
        raise DataError("non-finite values", file=str(path))
    return r.astype(np.float64)


# ---------------------------------------------------------------------------------------------- rotations
def batch_rodrigues(rvec: torch.Tensor) -> torch.Tensor:
    """Axis-angle ``(..., 3)`` -> rotation matrices ``(..., 3, 3)`` (:func:`humanvision.geometry.rotation.
    axis_angle_to_matrix`: Taylor series near 0, finite gradients)."""
    from humanvision.geometry.rotation import axis_angle_to_matrix

    return axis_angle_to_matrix(rvec)


def rotation_6d_to_matrix(x: torch.Tensor) -> torch.Tensor:
    """6D rotation ``(..., 6)`` = (first column, second column), not necessarily orthonormal -> ``(..., 3, 3)``
    by Gram-Schmidt: ``b1 = a1 / |a1|``, ``b2 = normalise(a2 - (b1 . a2) b1)``, ``b3 = b1 x b2`` (the columns)."""
    if x.shape[-1] != 6:
        raise DataError(f"expected (..., 6), got {tuple(x.shape)}", field="pose")
    a1, a2 = x[..., :3], x[..., 3:]
    b1 = F.normalize(a1, dim=-1, eps=1e-8)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1, eps=1e-8)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rotation_6d(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(..., 3, 3)`` -> ``(..., 6)``: the first column, then the second."""
    return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)


def pose_to_matrix(pose: torch.Tensor, num_joints: int) -> torch.Tensor:
    """Any supported pose layout -> ``(B, J, 3, 3)``: matrices ``(B, J, 3, 3)``, 6D ``(B, J, 6)`` or ``(B, 6 J)``,
    axis-angle ``(B, J, 3)`` or ``(B, 3 J)``."""
    j = num_joints
    s = tuple(pose.shape)
    if len(s) == 4 and s[1:] == (j, 3, 3):
        return pose
    if len(s) == 3 and s[1:] == (j, 6) or len(s) == 2 and s[1] == 6 * j:
        return rotation_6d_to_matrix(pose.reshape(s[0], j, 6))
    if len(s) == 3 and s[1:] == (j, 3) or len(s) == 2 and s[1] == 3 * j:
        return batch_rodrigues(pose.reshape(s[0], j, 3))
    raise DataError(f"pose of shape {s}: expected axis-angle (B, {j}, 3) / (B, {3 * j}), 6D (B, {j}, 6) / "
                    f"(B, {6 * j}) or matrices (B, {j}, 3, 3)", field="pose")


# ------------------------------------------------------------------------------------------ the four steps
def blend_shapes(betas: torch.Tensor, shapedirs: torch.Tensor) -> torch.Tensor:
    """``(B, L) x (V, 3, L)`` -> the vertex offsets ``(B, V, 3)``."""
    return torch.einsum("bl,vcl->bvc", betas, shapedirs)


def forward_kinematics(rotmats: torch.Tensor, joints: torch.Tensor, parents: torch.Tensor | list[int]
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pose the skeleton: local rotations ``(B, J, 3, 3)`` about the rest joints ``(B, J, 3)``.

    Returns the posed joints ``(B, J, 3)`` and the skinning transforms ``(B, J, 4, 4)``: ``G_k`` with its
    translation reduced by ``R_k^world J_k`` (so they map rest-pose points, not points relative to the joint)."""
    parents = [int(p) for p in parents]
    b, j = joints.shape[:2]
    rel = joints.clone()
    rel[:, 1:] = joints[:, 1:] - joints[:, parents[1:]]
    local = torch.zeros(b, j, 4, 4, dtype=rotmats.dtype, device=rotmats.device)
    local[..., :3, :3] = rotmats
    local[..., :3, 3] = rel
    local[..., 3, 3] = 1.0
    chain = [local[:, 0]]
    for i in range(1, j):
        chain.append(chain[parents[i]] @ local[:, i])
    world = torch.stack(chain, dim=1)
    posed = world[..., :3, 3]
    offset = (world[..., :3, :3] @ joints[..., None])[..., 0]
    skin = torch.cat([world[..., :3, :3], (posed - offset)[..., None]], dim=-1)
    bottom = torch.zeros(b, j, 1, 4, dtype=world.dtype, device=world.device)
    bottom[..., 0, 3] = 1.0
    return posed, torch.cat([skin, bottom], dim=-2)


def linear_blend_skinning(vertices: torch.Tensor, weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """``v'_i = sum_k w_ik T_k [v_i; 1]``: vertices ``(B, V, 3)``, weights ``(V, J)``, transforms ``(B, J, 4, 4)``
    -> ``(B, V, 3)``."""
    b, j = transforms.shape[:2]
    t = (weights @ transforms[..., :3, :].reshape(b, j, 12)).view(b, -1, 3, 4)  # (B, V, 3, 4)
    return (t[..., :3] @ vertices[..., None])[..., 0] + t[..., 3]


@dataclass
class SMPLOutput:
    """``vertices (B, V, 3)``, ``joints (B, J, 3)`` (posed kinematic joints), ``rotmats (B, J, 3, 3)``,
    ``joints_h36m (B, 17, 3)`` when the layer has an H36M regressor (else None); metres, model frame + transl."""

    vertices: torch.Tensor
    joints: torch.Tensor
    rotmats: torch.Tensor
    joints_h36m: torch.Tensor | None = None


class SMPL(nn.Module):
    """The SMPL layer (module docstring). ``forward(pose, betas=None, transl=None)`` -> :class:`SMPLOutput`.

    Args:
        model: :class:`SMPLModelData` or a model file (:func:`read_smpl`).
        h36m_regressor: ``J_regressor_h36m.npy`` (a path) or a ``(17, V)`` array; adds ``joints_h36m``.
        num_betas: use the first ``num_betas`` shape components (default: all in the file).
        dtype: of the buffers (float32; float64 for exactness tests).

    ``betas`` may have fewer columns than ``num_betas`` (the rest are zero). The model arrays are non-persistent
    buffers: ``state_dict()`` is empty, ``.to(device)`` moves them.
    """

    def __init__(self, model: SMPLModelData | str | Path, *, h36m_regressor: str | Path | np.ndarray | None = None,
                 num_betas: int | None = None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        data = model if isinstance(model, SMPLModelData) else read_smpl(model)
        nb = data.num_betas if num_betas is None else int(num_betas)
        if not 1 <= nb <= data.num_betas:
            raise DataError(f"num_betas {nb}: the model has {data.num_betas} shape components", file=data.source)
        self.num_vertices, self.num_joints, self.num_betas = data.num_vertices, data.num_joints, nb
        self.parents: list[int] = data.parents.tolist()
        self.source = data.source

        def buf(name: str, a: np.ndarray, dt: torch.dtype = dtype) -> None:
            self.register_buffer(name, torch.as_tensor(np.ascontiguousarray(a), dtype=dt), persistent=False)

        buf("v_template", data.v_template)
        buf("shapedirs", data.shapedirs[..., :nb])
        buf("posedirs", data.posedirs.reshape(-1, data.posedirs.shape[2]).T)  # (9 (J - 1), 3 V)
        buf("J_regressor", data.J_regressor)
        buf("lbs_weights", data.weights)
        buf("faces", data.faces, torch.int64)
        if h36m_regressor is not None:
            r = (read_joint_regressor(h36m_regressor, self.num_vertices)
                 if isinstance(h36m_regressor, (str, Path)) else np.asarray(h36m_regressor, np.float64))
            if r.ndim != 2 or r.shape[1] != self.num_vertices:
                raise DataError(f"expected a (K, {self.num_vertices}) regressor, got {r.shape}",
                                field="h36m_regressor")
            buf("h36m_regressor", r)
        else:
            self.h36m_regressor = None

    def forward(self, pose: torch.Tensor, betas: torch.Tensor | None = None,
                transl: torch.Tensor | None = None) -> SMPLOutput:
        rot = pose_to_matrix(pose.to(self.v_template.dtype), self.num_joints)
        b = rot.shape[0]
        if betas is None:
            betas = rot.new_zeros(b, self.num_betas)
        betas = betas.to(rot.dtype)
        if betas.ndim != 2 or betas.shape[0] != b or betas.shape[1] > self.num_betas:
            raise DataError(f"betas of shape {tuple(betas.shape)}: expected (B, <= {self.num_betas}) with B = {b}",
                            field="betas")
        v_shaped = self.v_template + blend_shapes(betas, self.shapedirs[..., :betas.shape[1]])
        rest = torch.einsum("jv,bvc->bjc", self.J_regressor, v_shaped)
        eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
        pose_feature = (rot[:, 1:] - eye).reshape(b, -1)
        v_posed = v_shaped + (pose_feature @ self.posedirs).view(b, -1, 3)
        joints, transforms = forward_kinematics(rot, rest, self.parents)
        verts = linear_blend_skinning(v_posed, self.lbs_weights, transforms)
        if transl is not None:
            if tuple(transl.shape) != (b, 3):
                raise DataError(f"transl of shape {tuple(transl.shape)}: expected ({b}, 3)", field="transl")
            t = transl.to(rot.dtype)[:, None]
            verts, joints = verts + t, joints + t
        h36m = None
        if self.h36m_regressor is not None:
            h36m = torch.einsum("kv,bvc->bkc", self.h36m_regressor, verts)
        return SMPLOutput(vertices=verts, joints=joints, rotmats=rot, joints_h36m=h36m)


# ------------------------------------------------------------------------------------ a random stand-in model
# Approximate rest joints of a 1.7 m person (metres; y up, the body faces +z, its left on +x), and per joint the
# bone end its vertices spread along and their radius.
_REST_JOINTS = np.array([
    [0.00, 0.00, 0.00], [0.06, -0.09, 0.00], [-0.06, -0.09, 0.00], [0.00, 0.11, -0.01], [0.10, -0.47, 0.00],
    [-0.10, -0.47, 0.00], [0.00, 0.25, 0.00], [0.09, -0.87, -0.04], [-0.09, -0.87, -0.04], [0.00, 0.30, 0.02],
    [0.11, -0.93, 0.08], [-0.11, -0.93, 0.08], [0.00, 0.51, -0.01], [0.07, 0.42, 0.00], [-0.07, 0.42, 0.00],
    [0.00, 0.58, 0.04], [0.17, 0.45, -0.01], [-0.17, 0.45, -0.01], [0.43, 0.43, -0.03], [-0.43, 0.43, -0.03],
    [0.68, 0.44, -0.03], [-0.68, 0.44, -0.03], [0.76, 0.43, -0.04], [-0.76, 0.43, -0.04]])
_LEAF_ENDS = {10: (0.0, -0.02, 0.10), 11: (0.0, -0.02, 0.10), 15: (0.0, 0.16, 0.0), 22: (0.08, 0.0, 0.0),
              23: (-0.08, 0.0, 0.0)}
_RADIUS = np.array([0.10, 0.07, 0.07, 0.11, 0.05, 0.05, 0.11, 0.04, 0.04, 0.11, 0.03, 0.03, 0.05, 0.05, 0.05,
                    0.08, 0.045, 0.045, 0.04, 0.04, 0.03, 0.03, 0.03, 0.03])


def _random_model_arrays(num_vertices: int, num_betas: int, seed: int) -> dict[str, np.ndarray]:
    nj = len(SMPL_PARENTS)
    if num_vertices < 4 * nj:
        raise ValueError(f"num_vertices must be >= {4 * nj} (4 per joint), got {num_vertices}")
    if num_betas < 1:
        raise ValueError(f"num_betas must be >= 1, got {num_betas}")
    rng = np.random.default_rng(seed)
    children = {p: i for i, p in reversed(list(enumerate(SMPL_PARENTS))) if p >= 0}  # first child
    ends = np.array([_REST_JOINTS[children[k]] if k in children else _REST_JOINTS[k] + np.array(_LEAF_ENDS[k])
                     for k in range(nj)])
    length = np.linalg.norm(ends - _REST_JOINTS, axis=1) + _RADIUS
    owner = np.concatenate([np.repeat(np.arange(nj), 4),
                            rng.choice(nj, num_vertices - 4 * nj, p=length / length.sum())])
    owner = np.sort(owner)
    u = rng.uniform(0.0, 1.0, num_vertices)
    direction = rng.normal(size=(num_vertices, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    radial = _RADIUS[owner, None] * np.sqrt(rng.uniform(0.3, 1.0, (num_vertices, 1)))
    v_template = _REST_JOINTS[owner] + u[:, None] * (ends[owner] - _REST_JOINTS[owner]) + radial * direction
    # skinning: the owner joint, blended with its parent near the bone's start
    weights = np.zeros((num_vertices, nj))
    blend = np.where(np.asarray(SMPL_PARENTS)[owner] >= 0, 0.5 * np.clip((0.3 - u) / 0.3, 0.0, 1.0), 0.0)
    weights[np.arange(num_vertices), owner] = 1.0 - blend
    has_parent = np.asarray(SMPL_PARENTS)[owner] >= 0
    idx = np.flatnonzero(has_parent)
    weights[idx, np.asarray(SMPL_PARENTS)[owner[idx]]] += blend[idx]
    # joint regressor: a random convex combination of the 6 vertices nearest to each rest joint
    regressor = np.zeros((nj, num_vertices))
    for k in range(nj):
        near = np.argsort(np.linalg.norm(v_template - _REST_JOINTS[k], axis=1))[:6]
        w = rng.uniform(0.5, 1.0, len(near))
        regressor[k, near] = w / w.sum()
    # shape: overall scale, width, leg length, then piecewise-smooth random per-part offsets
    shapedirs = np.zeros((num_vertices, 3, num_betas))
    shapedirs[:, :, 0] = 0.06 * v_template
    if num_betas > 1:
        shapedirs[:, 0, 1], shapedirs[:, 2, 1] = 0.08 * v_template[:, 0], 0.08 * v_template[:, 2]
    if num_betas > 2:
        shapedirs[:, 1, 2] = 0.08 * np.minimum(v_template[:, 1] + 0.09, 0.0)
    for i in range(3, num_betas):
        shapedirs[:, :, i] = weights @ rng.normal(0.0, 0.01, (nj, 3))
    # pose blend shapes: small, smooth over the body parts
    posedirs = (weights @ rng.normal(0.0, 0.01, (nj, 3 * 9 * (nj - 1)))).reshape(num_vertices, 3, 9 * (nj - 1))
    # faces: consecutive vertex triples of each part (valid indices; only for the file layout and pictures)
    faces = [(i, i + 1, i + 2) for i in range(num_vertices - 2) if owner[i] == owner[i + 2]]
    kintree = np.array([[4294967295, *SMPL_PARENTS[1:]], list(range(nj))], dtype=np.int64)
    return {"v_template": v_template, "shapedirs": shapedirs, "posedirs": posedirs, "J_regressor": regressor,
            "weights": weights, "kintree_table": kintree, "f": np.asarray(faces, np.uint32)}


def write_random_smpl(path: str | Path, num_vertices: int = 200, *, num_betas: int = 10, seed: int = 0) -> Path:
    """Write a random body model with SMPL's 24-joint kinematic tree in the official layout of ``path``'s suffix:

    * ``.pkl``: a protocol-2 pickle of a dict like the release's (``J_regressor`` a ``scipy.sparse.csc_matrix``,
      ``kintree_table`` with the root's parent 4294967295, ``f`` uint32, ``bs_style`` / ``bs_type``, ``J``);
    * ``.npz``: smplx's layout (plain arrays, dense ``J_regressor``).

    The body is a cloud of ``num_vertices`` points around the bones of a 1.7 m rest skeleton, each skinned to its
    bone (blended with the parent near the joint); ``J_regressor`` averages the 6 vertices nearest each joint;
    ``shapedirs`` has scale, width and leg-length components, then random per-part offsets; ``posedirs`` is small
    and smooth. It is a stand-in for tests and the synthetic recipe, not a human shape space."""
    p = Path(path)
    a = _random_model_arrays(int(num_vertices), int(num_betas), int(seed))
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix == ".npz":
        np.savez(p, **a)
    elif p.suffix == ".pkl":
        import scipy.sparse

        d = dict(a, J_regressor=scipy.sparse.csc_matrix(a["J_regressor"]), bs_style="lbs", bs_type="lrotmin",
                 J=a["J_regressor"] @ a["v_template"])
        buf = io.BytesIO()
        pickle.dump(d, buf, protocol=2)
        p.write_bytes(buf.getvalue())
    else:
        raise ValueError(f"{p}: use a .pkl or .npz suffix")
    return p


#: the SMPL joint each H36M-17 joint (``h36m17_vp`` order) of the random regressor is built around
_H36M_FROM_SMPL = (0, 2, 5, 8, 1, 4, 7, 6, 12, 15, 15, 16, 18, 20, 17, 19, 21)


def write_random_h36m_regressor(path: str | Path, model: SMPLModelData | str | Path, seed: int = 0) -> Path:
    """Write a ``(17, V)`` ``.npy`` regressor for ``model`` standing in for ``J_regressor_h36m.npy``: each H36M
    joint a random convex combination of the 8 vertices nearest a corresponding SMPL rest joint (the head top
    raised 0.1 m above the head)."""
    data = model if isinstance(model, SMPLModelData) else read_smpl(model)
    rng = np.random.default_rng(seed)
    rest = data.J_regressor @ data.v_template
    out = np.zeros((17, data.num_vertices))
    for h, s in enumerate(_H36M_FROM_SMPL):
        target = rest[s] + (np.array([0.0, 0.1, 0.0]) if h == 10 else 0.0)
        near = np.argsort(np.linalg.norm(data.v_template - target, axis=1))[:8]
        w = rng.uniform(0.5, 1.0, len(near))
        out[h, near] = w / w.sum()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    np.save(p, out)
    return p

