"""SMPL layer and the 3D pose-and-shape downstream (pretraining.md B.9.4): the official pkl layout read without
chumpy or scipy code (a scipy csc ``J_regressor``, a stand-in chumpy ``Ch`` pickled under ``chumpy.ch``, Python 2
era module paths and protocol 0/1 reconstructors), the smplx npz layout, refused pickles, the model's forward
against independent references (template at zero pose, subtree-only motion with one-hot skinning, a per-vertex
loop of the whole model, smplx when installed), 6D rotations, the mesh metrics against direct computations, the
3DPW ground truth in the camera frame, backbone initialisation from ViTPose (incl. a mixture-of-experts file) and
HAP checkpoints, and a tiny training run through the engine.

All on random body models written in the SMPL file layout (SMPL itself is licensed and not available offline).
"""

from __future__ import annotations

import copyreg
import importlib.util
import json
import math
import pickle
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.sparse
import torch

from humanvision.data.io import write_image
from humanvision.engine import read_log
from humanvision.errors import ConfigError, DataError
from humanvision.methods import mesh3d
from humanvision.models.smpl import (
    H36M17_EVAL_JOINTS,
    SMPL,
    SMPL_PARENTS,
    SMPLModelData,
    matrix_to_rotation_6d,
    read_smpl,
    rotation_6d_to_matrix,
    write_random_h36m_regressor,
    write_random_smpl,
)

RNG = np.random.default_rng(7)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _random_arrays(nv: int = 60, nj: int = 24, nb: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Model arrays in the official key layout (random, not body-like)."""
    rng = np.random.default_rng(seed)
    weights = rng.uniform(0, 1, (nv, nj))
    reg = np.zeros((nj, nv))
    for j in range(nj):
        idx = rng.choice(nv, 4, replace=False)
        reg[j, idx] = rng.uniform(0.2, 1.0, 4)
    reg /= reg.sum(1, keepdims=True)
    return {"v_template": rng.normal(0, 0.3, (nv, 3)), "shapedirs": rng.normal(0, 0.02, (nv, 3, nb)),
            "posedirs": rng.normal(0, 0.01, (nv, 3, 9 * (nj - 1))), "J_regressor": reg,
            "weights": weights / weights.sum(1, keepdims=True),
            "kintree_table": np.array([[4294967295, *SMPL_PARENTS[1:]], list(range(nj))], dtype=np.int64),
            "f": rng.integers(0, nv, (nv, 3)).astype(np.uint32)}


def _assert_same(data: SMPLModelData, arrays: dict[str, np.ndarray]) -> None:
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        np.testing.assert_array_equal(getattr(data, key), arrays[key], err_msg=key)
    np.testing.assert_array_equal(data.faces, arrays["f"].astype(np.int64))
    assert data.parents.tolist() == list(SMPL_PARENTS)


# ------------------------------------------------------------------------------------------------ the files
def _fake_chumpy(monkeypatch) -> type:
    """A class pickled as ``chumpy.ch.Ch`` whose state is what chumpy's ``Ch.__getstate__`` returns (its
    ``__dict__`` minus the weak caches): ``x`` plus bookkeeping."""

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x, np.float64)

        def __getstate__(self):
            return {"_dirty_vars": set(), "_itr": None, "_depends_on_deps": {}, "_make_dense": False,
                    "_make_sparse": False, "x": self.x}

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    pkg, mod = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
    mod.Ch, pkg.ch = Ch, mod
    monkeypatch.setitem(sys.modules, "chumpy", pkg)
    monkeypatch.setitem(sys.modules, "chumpy.ch", mod)
    return Ch


@pytest.mark.parametrize("protocol", [2, 1])
def test_official_pkl_layout_without_chumpy_or_scipy_code(tmp_path, monkeypatch, protocol):
    a = _random_arrays()
    Ch = _fake_chumpy(monkeypatch)
    d = {**a, "shapedirs": Ch(a["shapedirs"]), "J_regressor": scipy.sparse.csc_matrix(a["J_regressor"]),
         "J_regressor_prior": scipy.sparse.csc_matrix(a["J_regressor"]), "bs_style": "lbs", "bs_type": "lrotmin",
         "J": a["J_regressor"] @ a["v_template"], "weights_prior": a["weights"], "pose_training_info": {"n": 1}}
    raw = pickle.dumps(d, protocol=protocol)
    if protocol == 1:  # Python 2 era pickles name copy_reg._reconstructor for new-style objects
        assert b"copy_reg\n_reconstructor" in raw
    path = tmp_path / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    # the scipy of the SMPL release era pickled csc matrices under scipy.sparse.csc (GLOBAL is text: same bytes)
    path.write_bytes(raw.replace(b"scipy.sparse._csc\ncsc_matrix", b"scipy.sparse.csc\ncsc_matrix"))
    assert b"chumpy.ch\nCh" in raw and b"scipy.sparse.csc\ncsc_matrix" in path.read_bytes()
    monkeypatch.delitem(sys.modules, "chumpy.ch")
    monkeypatch.delitem(sys.modules, "chumpy")
    assert importlib.util.find_spec("chumpy") is None  # not importable: the reader cannot be using it
    data = read_smpl(path)
    _assert_same(data, a)
    assert "chumpy" not in sys.modules
    # the same dict under the current scipy module path, and the sparse matrix with duplicate entries summed
    path.write_bytes(raw)
    _assert_same(read_smpl(path), a)


def test_npz_layout_and_random_model_files(tmp_path):
    a = _random_arrays(seed=1)
    np.savez(tmp_path / "SMPL_NEUTRAL.npz", **a)
    _assert_same(read_smpl(tmp_path / "SMPL_NEUTRAL.npz"), a)
    # write_random_smpl: identical arrays in both layouts; the pkl's J_regressor is a scipy csc matrix
    p, q = write_random_smpl(tmp_path / "r.pkl", 150, seed=3), write_random_smpl(tmp_path / "r.npz", 150, seed=3)
    raw = pickle.loads(p.read_bytes())
    assert scipy.sparse.issparse(raw["J_regressor"]) and raw["kintree_table"][0, 0] == 4294967295
    x, y = read_smpl(p), read_smpl(q)
    assert (x.num_vertices, x.num_joints, x.num_betas) == (150, 24, 10)
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "parents", "faces"):
        np.testing.assert_array_equal(getattr(x, key), getattr(y, key))
    np.testing.assert_allclose(x.J_regressor.sum(1), 1.0)
    np.testing.assert_allclose(x.weights.sum(1), 1.0)
    # malformed files name the file and the key
    bad = dict(a)
    del bad["weights"]
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(DataError, match=r"bad\.npz.*field weights.*missing weights"):
        read_smpl(tmp_path / "bad.npz")
    np.savez(tmp_path / "bad.npz", **{**a, "posedirs": a["posedirs"][..., :200]})
    with pytest.raises(DataError, match=r"field posedirs: expected shape \(60, 3, 207\)"):
        read_smpl(tmp_path / "bad.npz")
    with pytest.raises(DataError, match="not found"):
        read_smpl(tmp_path / "missing.pkl")


class _Evil:
    def __reduce__(self):
        import os

        return os.system, ("touch pwned_by_pickle",)


class _Reconstructed:
    """Asks copy_reg._reconstructor to build a class that is not one of the two holders."""

    def __reduce_ex__(self, protocol):
        import collections

        return copyreg._reconstructor, (collections.OrderedDict, object, None)


def test_malicious_pickles_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = _random_arrays()
    import os

    cases = [({**a, "f": _Evil()}, f"refused to load global {os.system.__module__}.system"),
             ({**a, "shapedirs": _Reconstructed()}, "_reconstructor is only allowed for scipy csc matrices")]
    for i, (payload, message) in enumerate(cases):
        path = tmp_path / f"evil{i}.pkl"
        path.write_bytes(pickle.dumps(payload, protocol=2))
        with pytest.raises(DataError, match=f"evil{i}.pkl") as e:
            read_smpl(path)
        assert message in str(e.value)
    assert not (tmp_path / "pwned_by_pickle").exists()
    # a chumpy class other than the plain Ch is refused by name
    raw = pickle.dumps({**a, "shapedirs": a["shapedirs"]}, protocol=2)
    path = tmp_path / "ops.pkl"
    path.write_bytes(raw.replace(b"cnumpy\nndarray\n", b"cchumpy.ch_ops\nadd\n", 1))
    with pytest.raises(DataError, match=r"ops\.pkl.*refused to load global chumpy\.ch_ops\.add"):
        read_smpl(path)


# ---------------------------------------------------------------------------------------------- the forward
@pytest.fixture(scope="module")
def body(tmp_path_factory) -> SMPLModelData:
    return read_smpl(write_random_smpl(tmp_path_factory.mktemp("smpl") / "m.pkl", 120, seed=5))


def test_zero_pose_and_shape_give_the_template(body):
    layer = SMPL(body, dtype=torch.float64)
    assert layer.state_dict() == {}  # the licensed arrays never go into a checkpoint
    for pose in (torch.zeros(2, 72), torch.zeros(2, 24, 3, 3) + torch.eye(3),
                 matrix_to_rotation_6d(torch.eye(3).repeat(2, 24, 1, 1))):
        out = layer(pose, torch.zeros(2, 10))
        torch.testing.assert_close(out.vertices[1], torch.as_tensor(body.v_template), rtol=0, atol=1e-12)
        torch.testing.assert_close(out.joints[0], torch.as_tensor(body.J_regressor @ body.v_template), rtol=0,
                                   atol=1e-12)
    # transl moves everything; betas move the template by shapedirs
    betas = torch.zeros(1, 10, dtype=torch.float64)
    betas[0, 0] = 2.0
    out = layer(torch.zeros(1, 72), betas, transl=torch.tensor([[1.0, 2.0, 3.0]]))
    torch.testing.assert_close(out.vertices[0], torch.as_tensor(body.v_template + 2 * body.shapedirs[:, :, 0])
                               + torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))


def _subtree(j: int) -> set[int]:
    out = {j}
    for i, p in enumerate(SMPL_PARENTS):
        if p in out:
            out.add(i)
    return out


def test_one_joint_rotation_moves_only_its_subtree(body):
    one_hot = np.eye(24)[np.argmax(body.weights, 1)]
    # pose blend shapes off: they are a global corrective, and this is the kinematics test
    data = SMPLModelData(body.v_template, body.shapedirs, np.zeros_like(body.posedirs), body.J_regressor, one_hot,
                         body.parents, body.faces)
    layer = SMPL(data, dtype=torch.float64)
    joint = 4  # left knee: subtree knee, ankle, foot
    sub = _subtree(joint)
    assert sub == {4, 7, 10}
    pose = torch.zeros(1, 24, 3, dtype=torch.float64)
    pose[0, joint] = torch.tensor([0.7, -0.2, 0.3])
    v = layer(pose).vertices[0].numpy()
    moved = np.linalg.norm(v - body.v_template, axis=1) > 1e-9
    owner = np.argmax(one_hot, 1)
    in_sub = np.isin(owner, list(sub))
    assert not moved[~in_sub].any() and moved[in_sub].all()
    # a rigid rotation about the knee's rest position
    J = body.J_regressor @ body.v_template
    R, _ = cv2.Rodrigues(np.array([0.7, -0.2, 0.3]))
    np.testing.assert_allclose(v[in_sub], (body.v_template[in_sub] - J[joint]) @ R.T + J[joint], atol=1e-12)


def _reference_smpl(data: SMPLModelData, pose_aa: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SMPL written as loops from the paper's equations (OpenCV Rodrigues, one vertex at a time)."""
    nv, nj = data.num_vertices, data.num_joints
    rot = [cv2.Rodrigues(pose_aa[j])[0] for j in range(nj)]
    v_shaped = data.v_template.copy()
    for i in range(len(betas)):
        v_shaped += betas[i] * data.shapedirs[:, :, i]
    J = data.J_regressor @ v_shaped
    feat = np.concatenate([(rot[j] - np.eye(3)).reshape(-1) for j in range(1, nj)])
    v_posed = v_shaped + np.einsum("vcp,p->vc", data.posedirs, feat)
    G = [None] * nj
    for j in range(nj):
        local = np.eye(4)
        local[:3, :3] = rot[j]
        local[:3, 3] = J[j] - (J[data.parents[j]] if j else 0.0)
        G[j] = local if j == 0 else G[data.parents[j]] @ local
    joints = np.stack([g[:3, 3] for g in G])
    out = np.zeros((nv, 3))
    for i in range(nv):
        acc = np.zeros(3)
        for k in range(nj):
            acc += data.weights[i, k] * (G[k][:3, :3] @ (v_posed[i] - J[k]) + G[k][:3, 3])
        out[i] = acc
    return out, joints


def test_forward_equals_a_per_vertex_loop(body):
    layer = SMPL(body, dtype=torch.float64)
    pose = RNG.normal(0, 0.6, (2, 24, 3))
    betas = RNG.normal(0, 1, (2, 10))
    out = layer(torch.as_tensor(pose.reshape(2, 72)), torch.as_tensor(betas))
    for b in range(2):
        verts, joints = _reference_smpl(body, pose[b], betas[b])
        np.testing.assert_allclose(out.vertices[b].numpy(), verts, atol=1e-10)
        np.testing.assert_allclose(out.joints[b].numpy(), joints, atol=1e-10)
    # the same pose as 6D and as matrices
    rot = out.rotmats
    for p in (rot, matrix_to_rotation_6d(rot), matrix_to_rotation_6d(rot).reshape(2, 144)):
        torch.testing.assert_close(layer(p, torch.as_tensor(betas)).vertices, out.vertices)
    # fewer betas than the model has: the rest are zero
    torch.testing.assert_close(layer(rot, torch.as_tensor(betas[:, :3])).vertices,
                               layer(rot, torch.as_tensor(np.c_[betas[:, :3], np.zeros((2, 7))])).vertices)
    with pytest.raises(DataError, match=r"pose of shape \(2, 23, 3\)"):
        layer(torch.zeros(2, 23, 3))


def test_h36m_regressor_joints(body, tmp_path):
    path = write_random_h36m_regressor(tmp_path / "J_regressor_h36m.npy", body, seed=1)
    r = np.load(path)
    assert r.shape == (17, body.num_vertices)
    layer = SMPL(body, h36m_regressor=path, dtype=torch.float64)
    out = layer(torch.as_tensor(RNG.normal(0, 0.4, (1, 72))), transl=torch.ones(1, 3, dtype=torch.float64))
    np.testing.assert_allclose(out.joints_h36m[0].numpy(), r @ out.vertices[0].numpy(), atol=1e-12)
    np.save(tmp_path / "wrong.npy", r[:, :-1])
    with pytest.raises(DataError, match=r"wrong\.npy: 119 vertices, but the body model has 120"):
        SMPL(body, h36m_regressor=tmp_path / "wrong.npy")


def test_rotation_6d_round_trip():
    from humanvision.geometry.rotation import random_rotation

    R = torch.as_tensor(np.asarray(random_rotation(50, rng=np.random.default_rng(0))))
    six = matrix_to_rotation_6d(R)
    torch.testing.assert_close(six, torch.cat([R[..., :, 0], R[..., :, 1]], -1))  # the first two columns
    torch.testing.assert_close(rotation_6d_to_matrix(six), R, rtol=0, atol=1e-12)
    x = torch.randn(50, 6, dtype=torch.float64)  # any (non-degenerate) 6 numbers give a rotation
    M = rotation_6d_to_matrix(x)
    torch.testing.assert_close(M.transpose(-1, -2) @ M, torch.eye(3, dtype=torch.float64).expand(50, 3, 3))
    torch.testing.assert_close(torch.linalg.det(M), torch.ones(50, dtype=torch.float64))
    torch.testing.assert_close(rotation_6d_to_matrix(matrix_to_rotation_6d(M)), M)
    # Gram-Schmidt keeps the first column's direction and the plane of the first two
    torch.testing.assert_close(M[..., :, 0], x[:, :3] / x[:, :3].norm(dim=-1, keepdim=True))


def test_parity_with_smplx(tmp_path):
    smplx = pytest.importorskip("smplx")  # an independent implementation, only as a reference in this test
    (tmp_path / "smpl").mkdir()
    # smplx's SMPL reads the pkl (scipy's own unpickler) and indexes extra joints at vertices up to ~6.8k
    write_random_smpl(tmp_path / "smpl" / "SMPL_NEUTRAL.pkl", 6890, seed=2)
    ref = smplx.create(str(tmp_path), model_type="smpl", gender="neutral", dtype=torch.float64)
    ours = SMPL(tmp_path / "smpl" / "SMPL_NEUTRAL.pkl", dtype=torch.float64)
    pose = torch.as_tensor(RNG.normal(0, 0.5, (3, 72)))
    betas, transl = torch.as_tensor(RNG.normal(0, 1, (3, 10))), torch.as_tensor(RNG.normal(0, 1, (3, 3)))
    r = ref(global_orient=pose[:, :3], body_pose=pose[:, 3:], betas=betas, transl=transl)
    o = ours(pose, betas, transl)
    torch.testing.assert_close(o.vertices, r.vertices, rtol=0, atol=1e-6)  # smplx adds 1e-8 to rotation angles
    torch.testing.assert_close(o.joints, r.joints[:, :24], rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------------- metrics
def _umeyama(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Similarity Procrustes of one pose, written out (Umeyama 1991)."""
    mp, mg = p.mean(0), g.mean(0)
    x, y = p - mp, g - mg
    U, S, Vt = np.linalg.svd(y.T @ x)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt
    s = np.trace(np.diag(S) @ D) / (x ** 2).sum()
    return s * x @ R.T + mg


def test_mesh_errors_equal_direct_computation():
    n, nv = 4, 50
    gt = RNG.normal(0, 0.3, (n, nv, 3))
    pred = gt + RNG.normal(0, 0.05, (n, nv, 3)) + RNG.normal(0, 1, (n, 1, 3))  # plus a global offset
    reg = RNG.uniform(0, 1, (17, nv))
    reg /= reg.sum(1, keepdims=True)
    m = mesh3d.mesh_errors(pred, gt, regressor=reg, root=0, eval_joints=H36M17_EVAL_JOINTS)
    pj, gj = np.einsum("kv,nvc->nkc", reg, pred), np.einsum("kv,nvc->nkc", reg, gt)
    pr, gr = pj - pj[:, :1], gj - gj[:, :1]
    sel = [1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 13, 14, 15, 16]
    mpjpe = np.mean([np.linalg.norm(pr[i, sel] - gr[i, sel], axis=1).mean() for i in range(n)]) * 1000
    pa = np.mean([np.linalg.norm(_umeyama(pr[i, sel], gr[i, sel]) - gr[i, sel], axis=1).mean()
                  for i in range(n)]) * 1000
    pve = np.mean([np.linalg.norm((pred[i] - pj[i, 0]) - (gt[i] - gj[i, 0]), axis=1).mean()
                   for i in range(n)]) * 1000
    assert m["mpjpe"] == pytest.approx(mpjpe, rel=1e-9) and m["pa_mpjpe"] == pytest.approx(pa, rel=1e-7)
    assert m["pve"] == pytest.approx(pve, rel=1e-9) and m["num_samples"] == n
    assert m["pa_mpjpe"] < m["mpjpe"]
    # SMPL-24 joints given directly, root 0, all joints
    js_p, js_g = RNG.normal(0, 0.3, (n, 24, 3)), RNG.normal(0, 0.3, (n, 24, 3))
    m = mesh3d.mesh_errors(pred, gt, pred_joints=js_p, gt_joints=js_g)
    want = np.mean(np.linalg.norm((js_p - js_p[:, :1]) - (js_g - js_g[:, :1]), axis=2)) * 1000
    assert m["mpjpe"] == pytest.approx(want, rel=1e-9)
    assert m["pve"] == pytest.approx(np.mean(np.linalg.norm((pred - js_p[:, :1]) - (gt - js_g[:, :1]), axis=2))
                                     * 1000, rel=1e-9)


# -------------------------------------------------------------------------------------------------- 3DPW
def test_3dpw_ground_truth_in_the_camera_frame(body, tmp_path):
    from humanvision.geometry.rotation import axis_angle_to_matrix

    n = 2
    layer = SMPL(body, dtype=torch.float64)
    poses = RNG.normal(0, 0.3, (n, 72))
    betas = RNG.normal(0, 1, 10)
    trans = np.array([[0.1, 0.2, 0.0], [0.0, 0.1, 0.3]])
    world = layer(torch.as_tensor(poses), torch.as_tensor(betas).expand(n, 10), torch.as_tensor(trans))
    K = np.array([[200.0, 0, 32], [0, 200.0, 48], [0, 0, 1]])
    a = 0.4
    Rc = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    cam_poses = np.stack([np.block([[Rc, np.array([[0.0], [0.0], [5.0]])], [np.zeros((1, 3)), 1]])] * n)
    seq = {"sequence": "s1", "betas": [betas], "genders": ["f"], "poses": [poses], "trans": [trans],
           "jointPositions": [world.joints.numpy().reshape(n, 72)],
           "poses2d": [np.concatenate([np.full((n, 2, 18), 30.0), np.full((n, 1, 18), 0.9)], 1)],
           "cam_poses": cam_poses, "cam_intrinsics": K, "campose_valid": [np.ones(n, bool)]}
    root = tmp_path / "3DPW"
    (root / "sequenceFiles" / "test").mkdir(parents=True)
    (root / "sequenceFiles" / "test" / "s1.pkl").write_bytes(pickle.dumps(seq, protocol=2))
    for t in range(n):
        write_image(root / "imageFiles" / "s1" / f"image_{t:05d}.jpg", np.full((96, 64, 3), 90, np.uint8))
    ds = mesh3d.ThreeDPWMeshes(root / "sequenceFiles" / "test", {"neutral": body}, 32,
                               image_root=root / "imageFiles", with_vertices=True)
    assert len(ds) == n
    item = ds[1]
    # the root orientation rotated into the camera; the mesh and joints then match the camera-frame world mesh
    np.testing.assert_allclose(item["rotmats"][0].numpy(),
                               Rc @ np.asarray(axis_angle_to_matrix(poses[1, :3])), atol=1e-6)
    wv, wj = world.vertices[1].numpy() @ Rc.T, world.joints[1].numpy() @ Rc.T
    np.testing.assert_allclose(item["vertices"].numpy(), wv - wj[:1], atol=1e-5)
    np.testing.assert_allclose(item["joints3d"].numpy(), wj - wj[:1], atol=1e-5)
    assert item["image"].shape == (3, 32, 32) and item["keypoints2d"].abs().max() <= 1 / 1.2 + 1e-5
    # the same mesh errors are zero for a perfect prediction
    m = mesh3d.mesh_errors(item["vertices"][None].numpy(), item["vertices"][None].numpy(),
                           pred_joints=item["joints3d"][None].numpy(), gt_joints=item["joints3d"][None].numpy())
    assert m["mpjpe"] == m["pve"] == 0.0


# ------------------------------------------------------------------------------------------ initialisation
def _tiny_regressor(img: int = 32, dim: int = 32) -> mesh3d.MeshRegressor:
    return mesh3d.MeshRegressor((img, img), embed_dim=dim, depth=1, num_heads=2, drop_path_rate=0.0, feat_dim=16,
                                hidden_dim=16)


def test_init_from_vitpose_with_moe_and_from_hap(tmp_path):
    from timm.layers import resample_abs_pos_embed
    from timm.models.vision_transformer import VisionTransformer

    from humanvision.models import create_model
    from humanvision.models.mae import hap_to_vitpose
    from humanvision.models.weights import to_official_vitpose

    vit = create_model("vitpose_tiny", embed_dim=32, depth=1, num_heads=2, input_size=(32, 48), head_channels=8)
    state = to_official_vitpose(vit)  # keypoint_head.*, backbone.last_norm.*, pos_embed (1, 1 + 3 * 2, D)
    # a ViTPose+ mixture-of-experts file: fc2 = 24 shared rows, expert k = the other 8 rows for dataset k
    fc2w, fc2b = state["backbone.blocks.0.mlp.fc2.weight"], state["backbone.blocks.0.mlp.fc2.bias"]
    state["backbone.blocks.0.mlp.fc2.weight"], state["backbone.blocks.0.mlp.fc2.bias"] = fc2w[:24], fc2b[:24]
    for k, (w, b) in enumerate([(fc2w[24:], fc2b[24:]), (torch.randn(8, 128), torch.randn(8))]):
        state[f"backbone.blocks.0.mlp.experts.{k}.weight"], state[f"backbone.blocks.0.mlp.experts.{k}.bias"] = w, b
    torch.save({"state_dict": state}, tmp_path / "latest.pth")
    model = _tiny_regressor()
    report = mesh3d.init_backbone(model, tmp_path / "latest.pth", grid=(3, 2))
    assert report["kind"] == "vitpose" and report["resized"] == ["backbone.pos_embed"] and len(report["fused"]) == 2
    torch.testing.assert_close(model.backbone.blocks[0].mlp.fc2.weight, fc2w)  # expert 0 fused back
    torch.testing.assert_close(model.backbone.norm.weight, vit.backbone.norm.weight)  # last_norm
    want = resample_abs_pos_embed(vit.backbone.pos_embed, new_size=[2, 2], old_size=[3, 2], num_prefix_tokens=0,
                                  interpolation="bicubic", antialias=False)
    torch.testing.assert_close(model.backbone.pos_embed, want)
    # a shared fc2 without a matching expert is named
    del state["backbone.blocks.0.mlp.experts.0.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(DataError, match=r"broken\.pth.*fc2 has 24 of 32 outputs"):
        mesh3d.init_backbone(_tiny_regressor(), tmp_path / "broken.pth", grid=(3, 2))

    # HAP: a timm encoder with a cls token on the 16x8 grid plus MAE decoder keys
    enc = VisionTransformer(img_size=(256, 128), patch_size=16, embed_dim=32, depth=1, num_heads=2, num_classes=0)
    hap = {f"mae.{k}": v for k, v in enc.state_dict().items()}
    hap["mae.decoder_embed.weight"], hap["mae.mask_token"] = torch.zeros(16, 32), torch.zeros(1, 1, 16)
    torch.save({"model": hap}, tmp_path / "hap.pth")
    model = _tiny_regressor()
    report = mesh3d.init_backbone(model, tmp_path / "hap.pth")
    assert report["kind"] == "hap" and report["resized"] == ["backbone.pos_embed"]
    torch.testing.assert_close(model.backbone.blocks[0].attn.qkv.weight, enc.blocks[0].attn.qkv.weight)
    torch.testing.assert_close(model.backbone.pos_embed,
                               hap_to_vitpose({"model": hap}, (2, 2), (16, 8))["backbone.pos_embed"])
    with pytest.raises(DataError, match=r"hap\.pth.*not a hap ViT of this width"):
        mesh3d.init_backbone(_tiny_regressor(dim=64), tmp_path / "hap.pth")


# ------------------------------------------------------------------------------------------------ training
def _tiny_recipe(tmp_path, **train) -> mesh3d.Mesh3DRecipe:
    return mesh3d.load_recipe({
        "mesh3d": {},
        "model": {"arch": "vit_tiny", "depth": 1, "img_size": [32, 32], "feat_dim": 16, "hidden_dim": 16,
                  "drop_path_rate": 0.0, "init": None},
        "smpl": {"random_dir": str(tmp_path / "smpl"), "random_vertices": 120},
        "data": {"source": "synthetic", "synthetic_train": 8, "synthetic_val": 5},
        "train": {"epochs": 1, "batch_size": 4, "lr": 1e-3, "precision": "fp32", "channels_last": False,
                  "device": "cpu", "output_dir": str(tmp_path / "run"), "progress": False, "tensorboard": False,
                  "log_every": 1, **train}})


def test_synthetic_meshes_are_consistent(tmp_path):
    data = read_smpl(write_random_smpl(tmp_path / "m.npz", 120, seed=0))
    a, b = mesh3d.SyntheticMeshes(data, 3, 32, seed=4), mesh3d.SyntheticMeshes(data, 3, 32, seed=4)
    item = a[2]
    np.testing.assert_array_equal(a.image(2), b.image(2))  # a function of (seed, index)
    out = SMPL(data)(item["rotmats"][None], item["betas"][None])
    torch.testing.assert_close(out.joints[0] - out.joints[0, :1], item["joints3d"], rtol=0, atol=1e-5)
    torch.testing.assert_close(out.vertices[0] - out.joints[0, :1], item["vertices"], rtol=0, atol=1e-5)
    kp = mesh3d.weak_perspective(item["joints3d"][None], a.cams[2:3])[0]
    torch.testing.assert_close(kp, item["keypoints2d"])
    assert kp.abs().max() < 1.0 and a.image(2).shape == (32, 32, 3)  # the person is inside the crop


def test_losses_vanish_for_the_ground_truth_parameters(tmp_path):
    data = read_smpl(write_random_smpl(tmp_path / "m.pkl", 120, seed=0))
    ds = mesh3d.SyntheticMeshes(data, 4, 32, seed=1)
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    model = _tiny_regressor()
    gt = {"pose6d": matrix_to_rotation_6d(batch["rotmats"]), "betas": batch["betas"], "cam": ds.cams[:4]}
    model.forward = lambda images: gt  # a perfect regressor: the dataset's and the losses' conventions agree
    out = mesh3d.Mesh3DMethod(model, SMPL(data)).forward(batch)
    for k in ("loss_joints3d", "loss_keypoints2d", "loss_pose", "loss_betas"):
        assert out[k].item() < 1e-5, k
    assert out["loss"].item() == pytest.approx(0.001 * (batch["betas"] ** 2).mean().item(), abs=1e-5)  # the prior
    # feature sizes of the two pools: flatten keeps the token map's cells (average-pooled to at most 8x8)
    for pool, img, cells in (("flatten", 64, (4, 4)), ("avg", 64, (1, 1)), ("flatten", 160, (8, 8))):
        m = mesh3d.MeshRegressor((img, img), embed_dim=32, depth=1, num_heads=2, feat_dim=1024, pool=pool,
                                 hidden_dim=8)
        assert m.neck[0].out_channels == 1024 // (cells[0] * cells[1]) and m.feat_dim == 1024
        assert m.forward_features(torch.zeros(2, 3, img, img)).shape == (2, 1024)


def test_render_vertices_z_buffer():
    bg = np.zeros((8, 8, 3), np.uint8)
    pts = np.array([[0.0, 0.0, 2.0], [0.0, 0.0, 1.0], [-0.75, -0.75, 5.0]])  # two at the centre pixel (4, 4)
    cols = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]])
    for order in ([0, 1, 2], [1, 0, 2], [2, 1, 0]):
        img = mesh3d.render_vertices(pts[order], cols[order], 8, 1, bg)
        assert img[4, 4].tolist() == [0, 255, 0]  # the nearer point wins whatever the order
        assert img[1, 1].tolist() == [0, 0, 255] and img[0, 0].tolist() == [0, 0, 0]
        # radius 1 is a plus sign: 5 pixels per point (the two centre discs coincide)
        assert int((img.sum(2) > 0).sum()) == 10
    assert bg.sum() == 0  # the background is copied, not drawn on


def test_tiny_regressor_training_run(tmp_path):
    recipe = _tiny_recipe(tmp_path)
    summary = mesh3d.run_training(recipe, quiet=True)
    assert summary["step"] == 2
    metrics = summary["metrics"]
    assert {"mpjpe", "pa_mpjpe", "pve", "mean_params_mpjpe", "mean_params_pve"} <= set(metrics)
    assert all(math.isfinite(v) and v > 0 for v in metrics.values())
    saved = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert saved["joints"] == "h36m14" and saved["num_samples"] == 5  # the random H36M regressor was written
    log = read_log(tmp_path / "run", "train")
    assert len(log) == 2 and all(math.isfinite(r["loss"]) and r["loss_joints3d"] > 0 for r in log)
    from safetensors.torch import load_file

    keys = load_file(tmp_path / "run" / "last" / "model.safetensors").keys()
    assert not any(k.startswith("smpl.") for k in keys) and "model.backbone.pos_embed" in keys
    m = mesh3d.evaluate_weights(recipe, tmp_path / "run", out_dir=tmp_path / "ev")
    assert m["pa_mpjpe"] == pytest.approx(metrics["pa_mpjpe"], rel=1e-5)
    # the backbone lr scale (3DCrowdNet's intended lr_backbone) splits the groups
    method = mesh3d.build_method(recipe)
    groups = mesh3d._param_groups(method, 0.05, 0.1)
    scales = {n: g["lr_scale"] for g in groups for n in g["param_names"]}
    assert scales["model.backbone.blocks.0.attn.qkv.weight"] == 0.1 and scales["model.regressor.0.weight"] == 1.0
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in method.parameters() if p.requires_grad)


def test_recipes():
    tiny = CONFIGS / "smpl_vit_tiny_synthetic.yaml"
    r = mesh3d.load_recipe(tiny)
    assert r.data.source == "synthetic" and r.smpl.model is None and mesh3d.is_mesh3d_recipe(tiny)
    r = mesh3d.load_recipe(CONFIGS / "hap_smpl_3dpw.yaml", unchecked=("model.init", "smpl.", "data.root"))
    assert (r.model.img_size, r.model.drop_path_rate, r.model.init_grid) == ((256, 256), 0.3, (16, 12))
    assert (r.train.optimizer, r.train.momentum, r.train.lr, r.train.epochs, r.train.milestones) == (
        "sgd", 0.0, 1e-3, 11, (10,))
    assert r.mesh3d.eval_joints == "h36m14" and mesh3d.is_mesh3d_recipe(r)
    assert not mesh3d.is_mesh3d_recipe(CONFIGS / "attr_vit_tiny_synthetic.yaml")
    with pytest.raises(ConfigError, match="smpl.model: 3DPW needs the real SMPL model"):
        mesh3d.load_recipe({"mesh3d": {}, "data": {"source": "3dpw", "root": "."}})
    with pytest.raises(ConfigError, match="model.img_size: a square size"):
        mesh3d.load_recipe({"mesh3d": {}, "model": {"img_size": [256, 192]}, "data": {"source": "synthetic"}})
