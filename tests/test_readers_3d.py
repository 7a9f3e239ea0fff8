"""Readers for the sets the weakly supervised 3D pose method (Zhou et al., HG-3D) trains and tests on.

Every fixture is written here in the released format as its documentation describes it (variable and key names,
array shapes, 1- vs 0-based pixels, .mat cell/struct arrays, pickled lists/dicts, a Python 2 pickle written
opcode by opcode); none is produced by a humanvision writer.
"""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from humanvision.data.io import safe_load_npy, safe_unpickle
from humanvision.data.readers import (
    COCO18_TO_MPII16,
    FLIC29_TO_MPII16,
    LSP14_TO_MPII16,
    MPI_INF_3DHP17_TO_MPII16,
    MPI_INF_3DHP28_TO_MPII16,
    OCCLUSION_PERSON15_TO_MPII16,
    FlicFull,
    Human36MEccv,
    LspJoints,
    MpiInf3dhpTest,
    MpiInf3dhpTrain,
    OcclusionPerson,
    ThreeDPW,
)
from humanvision.data.readers.flic import HG_FLIC_TO_MPII_1BASED
from humanvision.errors import DataError
from humanvision.skeletons import SkeletonError, get_skeleton
from humanvision.skeletons.skeleton import JOINT_MAPS, JointMap, get_joint_map, map_joints

RNG = np.random.default_rng(3)


def _raises(fn, *parts: str) -> DataError:
    """Call ``fn``; it must raise a DataError whose message contains every part (file, record, field)."""
    with pytest.raises(DataError) as e:
        fn()
    for p in parts:
        assert p in str(e.value), f"{p!r} not in {str(e.value)!r}"
    return e.value


# ================================================================================================ safe_unpickle
class _RunsShell:
    """Pickles as a call of ``os.system(cmd)``: what a hostile annotation file would contain."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


def test_safe_unpickle_refuses_os_system_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"joints_3d": np.zeros((3, 3)), "x": _RunsShell(f"touch {marker}")})
    assert b"system" in payload  # the call is really in the stream
    f = tmp_path / "evil.pkl"
    f.write_bytes(payload)
    e = _raises(lambda: safe_unpickle(f), str(f), "refused", "system")
    assert e.file == str(f)
    assert not marker.exists(), "the pickled os.system call was executed"
    # the same through a reader and through an object .npy
    _raises(lambda: OcclusionPerson(f), str(f), "system")
    arr = np.empty((), dtype=object)
    arr[()] = {"a": _RunsShell(f"touch {marker}")}
    np.save(tmp_path / "evil.npy", arr, allow_pickle=True)
    _raises(lambda: safe_load_npy(tmp_path / "evil.npy"), "evil.npy", "system")
    assert not marker.exists()


def test_safe_unpickle_loads_numpy_and_containers_every_protocol(tmp_path):
    from collections import Counter, OrderedDict

    obj = {"a": np.arange(12.0).reshape(3, 4), "b": [1, (2, "three"), {4, 5}], "s": np.float64(2.5),
           "i": np.int32(7), "st": np.zeros(2, dtype=[("xy", "f4", (2,)), ("n", "i8")]),
           "o": OrderedDict(k=np.ones(2, bool)), "bytes": b"\x00\xff", "f": np.asfortranarray(np.eye(3))}
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        f = tmp_path / f"p{proto}.pkl"
        f.write_bytes(pickle.dumps(obj, protocol=proto))
        r = safe_unpickle(f)
        np.testing.assert_array_equal(r["a"], obj["a"])
        assert r["b"] == obj["b"] and r["s"] == 2.5 and r["i"] == 7 and r["bytes"] == b"\x00\xff"
        assert r["st"].dtype == obj["st"].dtype and r["o"]["k"].dtype == bool
        np.testing.assert_array_equal(r["f"], np.eye(3))
    f = tmp_path / "counter.pkl"
    f.write_bytes(pickle.dumps(Counter("ab")))
    _raises(lambda: safe_unpickle(f), "counter.pkl", "collections.Counter")
    f.write_bytes(pickle.dumps(obj)[:40])
    _raises(lambda: safe_unpickle(f), "counter.pkl", "not a readable pickle")
    _raises(lambda: safe_unpickle(tmp_path / "missing.pkl"), "missing.pkl", "not found")
    # an .npy dict (np.save of a dict, like the H36M multi-view labels) and a plain .npy
    np.save(tmp_path / "labels.npy", {"table": obj["st"], "names": ["S1"]}, allow_pickle=True)
    d = safe_load_npy(tmp_path / "labels.npy")
    assert d["names"] == ["S1"] and d["table"].dtype.names == ("xy", "n")
    np.save(tmp_path / "plain.npy", np.arange(5))
    np.testing.assert_array_equal(safe_load_npy(tmp_path / "plain.npy"), np.arange(5))


# ================================================================================================ skeletons, maps
# (every joint set's own consistency: tests/test_skeletons.py::test_builtin_skeleton_is_consistent)
def test_known_orders_of_the_new_sets():
    assert get_skeleton("occlusion_person15").flip_index == (0, 4, 5, 6, 1, 2, 3, 7, 8, 12, 13, 14, 9, 10, 11)
    flic = get_skeleton("flic")
    assert flic.joints[:6] == ("left_shoulder", "left_elbow", "left_wrist", "right_shoulder", "right_elbow",
                               "right_wrist") and flic.joints[16:21] == ("nose", "thorax", "pelvis", "head", "torso")
    hp = get_skeleton("mpi_inf_3dhp28")
    assert (hp.joints[4], hp.joints[7], hp.joints[25], hp.root) == ("pelvis", "head_top", "right_ankle", 4)
    # the 17 test joints are the 28 training joints 7,5,14,15,16,9,10,11,23,24,25,18,19,20,4,3,6
    hp17 = get_skeleton("mpi_inf_3dhp17")
    assert [hp.index(n) for n in hp17.joints] == [7, 5, 14, 15, 16, 9, 10, 11, 23, 24, 25, 18, 19, 20, 4, 3, 6]
    smpl = get_skeleton("smpl24")
    assert (smpl.joints[12], smpl.joints[15], smpl.joints[21], smpl.flip_index[1]) == ("neck", "head", "right_wrist", 2)
    assert get_skeleton("coco18").flip_index[:8] == (0, 1, 5, 6, 7, 2, 3, 4)


def test_joint_maps_equal_the_seed_index_lists():
    """pose3d.md 5.6: HG-3D's index lists, 0-based (FLIC's after the fix)."""
    assert MPI_INF_3DHP28_TO_MPII16.indices == (25, 24, 23, 18, 19, 20, 4, 3, 5, 7, 16, 15, 14, 9, 10, 11)
    assert MPI_INF_3DHP17_TO_MPII16.indices == (10, 9, 8, 11, 12, 13, 14, 15, 1, 0, 4, 3, 2, 5, 6, 7)
    assert get_joint_map("h36m17_vp", "mpii16").indices == (3, 2, 1, 4, 5, 6, 0, 7, 8, 10, 16, 15, 14, 11, 12, 13)
    assert FLIC29_TO_MPII16.indices == tuple(i - 1 for i in HG_FLIC_TO_MPII_1BASED)
    assert LSP14_TO_MPII16.sources[6] == (3, 2) and LSP14_TO_MPII16.sources[7] == (9, 8)  # mid-hips/shoulders
    assert OCCLUSION_PERSON15_TO_MPII16.indices[8:10] == (8, 8)  # upper neck and head top <- neck
    assert COCO18_TO_MPII16.indices[8:10] == (0, 0)  # <- nose
    for m in JOINT_MAPS.values():
        assert m.dst == "mpii16" and m.description
    with pytest.raises(SkeletonError, match="no joint map coco17->mpii16"):
        get_joint_map("coco17", "mpii16")
    with pytest.raises(SkeletonError, match="16 entries for 14 joints"):
        JointMap("mpii16", "lsp14", tuple((i,) for i in range(16)))


def test_joint_map_means_visibility_and_approximate_joints():
    kp = RNG.uniform(0, 100, (2, 14, 2))
    vis = np.ones((2, 14))
    vis[1, 3] = 0  # left hip of person 1
    out, v = map_joints(kp, "lsp14", "mpii16", visible=vis)
    np.testing.assert_allclose(out[:, 6], (kp[:, 2] + kp[:, 3]) / 2)  # pelvis
    np.testing.assert_allclose(out[:, 8], kp[:, 12])  # upper neck <- neck
    assert v[0, 6] == 1 and v[1, 6] == 0 and v[1, 3] == 0 and v[1, 2] == 1  # visibility multiplied
    op = RNG.uniform(0, 100, (15, 3))
    o, ov = OCCLUSION_PERSON15_TO_MPII16.apply(op, np.ones(15), approximate="drop")
    np.testing.assert_allclose(o[9], op[8])
    assert ov[9] == 0 and ov[8] == 1 and ov.sum() == 15
    with pytest.raises(SkeletonError, match=r"expected \[\.\.\., 14, D\]"):
        LSP14_TO_MPII16.apply(np.zeros((16, 2)))


# ================================================================================================ LSP / LSPET
def _lsp_mat(path: Path, n: int, extended: bool):
    """LSP: ``joints`` (3, 14, n), rows x, y, occluded-flag; LSPET: (14, 3, n), columns x, y, visible-flag."""
    xy = RNG.uniform(1, 300, (n, 14, 2)).round(2)
    flag = (RNG.uniform(size=(n, 14)) > 0.3).astype(float)
    data = np.concatenate([xy, flag[..., None]], -1)  # (n, 14, 3)
    arr = data.transpose(1, 2, 0) if extended else data.transpose(2, 1, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"joints": arr})
    return xy, flag


def test_lsp_and_lspet_layouts(tmp_path):
    xy, flag = _lsp_mat(tmp_path / "lsp" / "joints.mat", 6, extended=False)
    r = LspJoints(tmp_path / "lsp" / "joints.mat")
    assert r.variant == "lsp" and len(r) == 6 and r.skeleton.name == "lsp14"
    s = r[4].validate()
    np.testing.assert_allclose(s.keypoints_2d[0], xy[4] - 1, atol=1e-4)  # 1-based -> 0-based
    np.testing.assert_array_equal(s.meta["visible"][0], 1 - flag[4])  # LSP's flag is inverted
    assert s.visibility.min() == 1  # every joint is labelled
    assert s.image_path == str(tmp_path / "lsp" / "images" / "im0005.jpg") and s.image_id == "im0005"
    lo, hi = (xy[4] - 1).min(0), (xy[4] - 1).max(0)
    np.testing.assert_allclose(s.meta["center"][0], (lo + hi) / 2, atol=1e-4)
    np.testing.assert_allclose(s.meta["scale"][0], (hi[1] - lo[1] + 4) / 368, atol=1e-6)
    np.testing.assert_allclose(s.boxes[0], [*lo, *(hi - lo)], atol=1e-4)
    assert [x.image_id for x in LspJoints(tmp_path / "lsp" / "joints.mat", split="val")] == \
           ["im0004", "im0005", "im0006"]
    assert len(LspJoints(tmp_path / "lsp" / "joints.mat", split="train")) == 3

    xy2, flag2 = _lsp_mat(tmp_path / "lspet" / "joints.mat", 5, extended=True)
    e = LspJoints(tmp_path / "lspet" / "joints.mat", split="train")
    t = e[2].validate()
    assert e.variant == "lspet" and t.image_id == "im00003"
    np.testing.assert_array_equal(t.meta["visible"][0], flag2[2])  # LSPET's is used as is
    np.testing.assert_allclose(t.keypoints_2d[0], xy2[2] - 1, atol=1e-4)
    with pytest.raises(ValueError, match="training data only"):
        LspJoints(tmp_path / "lspet" / "joints.mat", split="val")
    # MPII-16 as HG-3D builds it: visibility multiplied with the file's flags
    kp, vis = LSP14_TO_MPII16.apply(t.keypoints_2d, t.meta["visible"])
    np.testing.assert_allclose(kp[0, 7], (t.keypoints_2d[0, 8] + t.keypoints_2d[0, 9]) / 2)
    assert vis[0, 7] == flag2[2, 8] * flag2[2, 9]


def test_lsp_malformed(tmp_path):
    f = tmp_path / "joints.mat"
    scipy.io.savemat(f, {"joints": np.zeros((3, 16, 4))})
    _raises(lambda: LspJoints(f), str(f), "field joints", "(3, 14, N)")
    scipy.io.savemat(f, {"joints": np.zeros((14, 3, 4))})
    _raises(lambda: LspJoints(f, variant="lsp"), str(f), "field joints", "variant 'lsp'")
    bad = np.zeros((3, 14, 4))
    bad[2, 5, 1] = 2
    scipy.io.savemat(f, {"joints": bad})
    _raises(lambda: LspJoints(f), str(f), "image im0002", "field joints", "joint 5")
    scipy.io.savemat(f, {"joint": bad})
    _raises(lambda: LspJoints(f), str(f), "field joints", "missing variable")
    f.write_bytes(b"not a mat file")
    _raises(lambda: LspJoints(f), str(f), "MATLAB")


# ================================================================================================ FLIC-full
FLIC_LABELLED = (0, 1, 2, 3, 4, 5, 6, 9, 12, 13, 16)  # lsho lelb lwri rsho relb rwri lhip rhip leye reye nose


def _flic_mat(path: Path, n: int = 4, drop: str | None = None, coords_shape=(2, 29)):
    """``examples``: a 1 x n struct array; ``coords`` 2 x 29 (row 0 x, row 1 y), NaN where not labelled."""
    fields = ["poselet_hit_idx", "moviename", "coords", "filepath", "imgdims", "currframe", "torsobox", "istrain",
              "istest", "isbad", "isunchecked"]
    fields = [f for f in fields if f != drop]
    ex = np.empty((1, n), dtype=[(f, object) for f in fields])
    coords = np.full((n, 2, 29), np.nan)
    for i in range(n):
        coords[i][:, FLIC_LABELLED] = np.stack([RNG.uniform(100, 200, len(FLIC_LABELLED)),
                                                RNG.uniform(300, 500, len(FLIC_LABELLED))]).round(2)
        row = {"poselet_hit_idx": np.zeros((1, 0)), "moviename": np.array(["movie-a"]),
               "coords": coords[i] if coords_shape == (2, 29) else coords[i].T,
               "filepath": np.array([f"movie-a-{i:08d}.jpg"]), "imgdims": np.array([[480.0, 720.0, 3.0]]),
               "currframe": np.array([[float(100 + i)]]), "torsobox": np.array([[10.0, 20.0, 60.0, 120.0]]),
               "istrain": np.array([[i % 2 == 0]], dtype=np.uint8), "istest": np.array([[i % 2]], dtype=np.uint8),
               "isbad": np.array([[0]], dtype=np.uint8), "isunchecked": np.array([[0]], dtype=np.uint8)}
        for f in fields:
            ex[0, i][f] = row[f]
    scipy.io.savemat(path, {"examples": ex})
    return coords


def test_flic_full_fixes_hg3d_index_bugs(tmp_path):
    f = tmp_path / "examples.mat"
    coords = _flic_mat(f)
    r = FlicFull(f)
    assert len(r) == 4 and r.skeleton.name == "flic29"
    s = r[1].validate()
    pts = coords[1].T - 1  # (29, 2), 0-based
    labelled = np.isfinite(pts).all(1)
    np.testing.assert_allclose(s.keypoints_2d[0][labelled], pts[labelled], atol=1e-4)
    assert s.visibility[0].nonzero()[0].tolist() == list(FLIC_LABELLED)
    assert s.image_path == str(tmp_path / "images" / "movie-a-00000001.jpg")
    assert s.meta["currframe"] == 101 and s.meta["moviename"] == "movie-a"
    np.testing.assert_allclose(s.meta["torsobox"], [9, 19, 59, 119])

    # bug 1: flic_to_mpii is 1-based. Read as 0-based it takes the *next* FLIC point (right wrist <- lhip).
    mp, mv = FLIC29_TO_MPII16.apply(s.keypoints_2d, s.visibility)
    mpii = get_skeleton("mpii16")
    flic = get_skeleton("flic29")
    for name in ("right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_wrist", "left_hip"):
        np.testing.assert_allclose(mp[0, mpii.index(name)], pts[flic.index(name)], atol=1e-4)
        assert mv[0, mpii.index(name)] == 1
    buggy = s.keypoints_2d[0, list(HG_FLIC_TO_MPII_1BASED)]
    assert not np.allclose(buggy[mpii.index("right_wrist")], mp[0, mpii.index("right_wrist")])
    np.testing.assert_allclose(mp[0, mpii.index("head_top")], pts[flic.index("nose")], atol=1e-4)
    assert mv[0, mpii.index("right_ankle")] == 0  # not labelled in FLIC-full
    # bug 2: the centre/scale use (29, 2) points (x from row 0, y from row 1 of coords)
    lo, hi = pts[labelled].min(0), pts[labelled].max(0)
    np.testing.assert_allclose(s.meta["center"][0], (lo + hi) / 2, atol=1e-4)
    np.testing.assert_allclose(s.meta["scale"][0], (hi[1] - lo[1] + 4) / 368, atol=1e-6)
    assert 100 <= s.meta["center"][0, 0] <= 200 and 300 <= s.meta["center"][0, 1] <= 500
    np.testing.assert_allclose(s.boxes[0], [*lo, *(hi - lo)], atol=1e-4)
    # splits from the flags
    assert [x.meta["example"] for x in FlicFull(f, split="train")] == [0, 2]
    assert [x.meta["example"] for x in FlicFull(f, split="test")] == [1, 3]


def test_flic_malformed(tmp_path):
    f = tmp_path / "examples.mat"
    _flic_mat(f, drop="coords")
    _raises(lambda: FlicFull(f), str(f), "example 0", "field coords", "missing")
    _flic_mat(f, coords_shape=(29, 2))
    _raises(lambda: FlicFull(f), str(f), "example 0", "field coords", "(2, 29)")
    _flic_mat(f, drop="istest")
    _raises(lambda: FlicFull(f, split="test"), str(f), "field istest")
    scipy.io.savemat(f, {"other": np.zeros(3)})
    _raises(lambda: FlicFull(f), str(f), "field examples")


# ================================================================================================ Occlusion-Person
def _op_items(n=3):
    items = []
    for i in range(n):
        j3 = RNG.uniform(-800, 800, (15, 3))
        j3[:, 2] += 4000
        vis = np.ones((15, 1))
        vis[14] = 0
        vis2d = vis.copy()
        vis2d[3] = 0  # right ankle occluded
        items.append({
            "image": f"a05_sa01_s14_sce00/{i:02d}_000000.jpg", "joints_2d": RNG.uniform(0, 600, (15, 2)),
            "joints_3d": j3, "joints_gt": RNG.uniform(-1000, 1000, (15, 3)), "joints_vis": vis,
            "joints_vis_2d": vis2d, "center": np.array([300.0, 200.0]), "scale": np.array([1.5, 2.0]),
            "box": np.array([150.0, 0.0, 450.0, 400.0]), "video_id": "a05_sa01_s14_sce00", "image_id": i,
            "subject": 14, "action": 5, "subaction": 1, "camera_id": i % 8,
            "camera": {"R": np.eye(3), "T": np.zeros((3, 1)), "fx": 1000.0, "fy": 1000.0, "cx": 300.0, "cy": 200.0},
            "source": "unrealcv"})
    return items


def test_occlusion_person(tmp_path):
    items = _op_items()
    f = tmp_path / "annot" / "unrealcv_validation.pkl"
    f.parent.mkdir()
    f.write_bytes(pickle.dumps(items, protocol=4))
    r = OcclusionPerson(f, image_root=tmp_path / "images")
    assert len(r) == 3 and r.skeleton.name == "occlusion_person15"
    s = r[2].validate()
    np.testing.assert_allclose(s.keypoints_2d[0], items[2]["joints_2d"], atol=1e-3)
    np.testing.assert_allclose(s.keypoints_3d[0], items[2]["joints_3d"], atol=1e-2)
    assert s.keypoints_3d_frame == "camera" and s.visibility[0, 14] == 0 and s.visibility[0, :14].min() == 1
    assert s.meta["occluded"][0].nonzero()[0].tolist() == [3]
    np.testing.assert_allclose(s.boxes[0], [150, 0, 300, 400])
    np.testing.assert_allclose(s.meta["scale"][0], [1.5, 2.0])
    assert s.attributes["camera_id"] == 2 and s.identity == 14
    assert s.image_path == str(tmp_path / "images" / "a05_sa01_s14_sce00" / "02_000000.jpg")
    kp3, _ = OCCLUSION_PERSON15_TO_MPII16.apply(s.keypoints_3d, s.visibility_3d)
    np.testing.assert_allclose(kp3[0, 9], s.keypoints_3d[0, 8])  # head top = neck (HG-3D)
    np.testing.assert_allclose(kp3[0, 7], (s.keypoints_3d[0, 9] + s.keypoints_3d[0, 12]) / 2)
    del items[1]["box"]
    f.write_bytes(pickle.dumps(items))
    np.testing.assert_allclose(OcclusionPerson(f)[1].boxes[0], [300 - 150, 200 - 200, 300, 400])


def test_occlusion_person_nan_depth_and_malformed(tmp_path):
    f = tmp_path / "unrealcv_train.pkl"
    items = _op_items()
    items[2]["joints_3d"][6, 2] = np.nan
    f.write_bytes(pickle.dumps(items))
    _raises(lambda: OcclusionPerson(f), str(f), "item 2", "field joints_3d", "depth", "joint 6")
    for mutate, parts in [
        (lambda it: it[1].pop("joints_3d"), ["item 1", "field joints_3d", "missing"]),
        (lambda it: it[0].update(joints_2d=np.zeros((17, 2))), ["item 0", "field joints_2d", "(15, 2)"]),
        (lambda it: it[0].update(scale=np.array([-1.0, 1.0])), ["item 0", "field scale", "positive"]),
        (lambda it: it[2].update(joints_vis=np.ones((14, 1))), ["item 2", "field joints_vis"]),
    ]:
        items = _op_items()
        mutate(items)
        f.write_bytes(pickle.dumps(items))
        _raises(lambda: OcclusionPerson(f), str(f), *parts)
    f.write_bytes(pickle.dumps({"db": _op_items()}))
    _raises(lambda: OcclusionPerson(f), str(f), "expected a list")


# ================================================================================================ H36M ECCV'18
def _eccv_entries(n=5):
    out = []
    for i in range(n):
        rel = RNG.uniform(-700, 700, (18, 3))
        rel[0] = 0
        img = np.concatenate([RNG.uniform(200, 800, (18, 2)), rel[:, 2:] * 0.9], 1)
        out.append({"image": f"/data/ECCV18_Challenge/Train/IMG/{i + 1:05d}.jpg", "flip_pairs": [[1, 4], [2, 5]],
                    "parent_ids": np.arange(18), "joints_3d": img, "joints_3d_vis": np.ones((18, 3)),
                    "joints_3d_relative": rel, "bone_len": 4500.0 + i, "center_x": 500.0 + i, "center_y": 480.0,
                    "width": 300.0, "height": 400.0, "s": np.float64(0.9), "rot": np.eye(2), "t": np.zeros(2)})
    return out


def test_h36m_eccv_challenge_cache(tmp_path):
    entries = _eccv_entries()
    f = tmp_path / "HM36_eccv_challenge_Train_w288xh384_keypoint_jnt_bbox_db.pkl"
    f.write_bytes(pickle.dumps(entries, pickle.HIGHEST_PROTOCOL))
    r = Human36MEccv(f, tmp_path / "Train" / "IMG")
    assert len(r) == 5 and r.skeleton.name == "h36m17_vp"
    s = r[3].validate()
    e = entries[3]
    np.testing.assert_allclose(s.keypoints_2d[0], e["joints_3d"][:17, :2], atol=1e-3)
    np.testing.assert_allclose(s.keypoints_3d[0], e["joints_3d_relative"][:17], atol=1e-3)
    np.testing.assert_allclose(s.meta["joints_3d_image"][0], e["joints_3d"][:17], atol=1e-3)
    np.testing.assert_allclose(s.meta["thorax"], e["joints_3d"][17], atol=1e-3)
    assert s.image_path == str(tmp_path / "Train" / "IMG" / "00004.jpg") and s.image_id == "00004"
    np.testing.assert_allclose(s.boxes[0], [503 - 150, 480 - 200, 300, 400])
    assert s.meta["size"] == 400 and s.meta["bone_len"] == 4503 and s.meta["s"] == pytest.approx(0.9)
    # HG-3D: pts = joints_3d[h36m_to_mpii]; the nose (9) and thorax (17) are dropped
    kp = map_joints(s.meta["joints_3d_image"], "h36m17_vp", "mpii16")
    np.testing.assert_allclose(kp[0], e["joints_3d"][[3, 2, 1, 4, 5, 6, 0, 7, 8, 10, 16, 15, 14, 11, 12, 13]],
                               atol=1e-3)
    assert [x.meta["entry"] for x in Human36MEccv(f, tmp_path, every_n=2)] == [0, 2, 4]


def test_h36m_eccv_nan_depth_and_malformed(tmp_path):
    f = tmp_path / "db.pkl"
    entries = _eccv_entries()
    entries[2]["joints_3d"][11, 2] = np.nan
    f.write_bytes(pickle.dumps(entries))
    _raises(lambda: Human36MEccv(f, tmp_path), str(f), "entry 2", "field joints_3d", "depth", "joint 11")
    entries = _eccv_entries()
    entries[4]["joints_3d_relative"] = np.zeros((17, 3))
    f.write_bytes(pickle.dumps(entries))
    _raises(lambda: Human36MEccv(f, tmp_path), str(f), "entry 4", "field joints_3d_relative", "(18, 3)")
    entries = _eccv_entries()
    del entries[1]["center_x"]
    f.write_bytes(pickle.dumps(entries))
    _raises(lambda: Human36MEccv(f, tmp_path), str(f), "entry 1", "field center_x", "missing")
    _raises(lambda: Human36MEccv(f, tmp_path, skeleton="mpii16"), str(f), "skeleton")


# ================================================================================================ MPI-INF-3DHP
def _cells(arrays):
    c = np.empty((len(arrays), 1), dtype=object)
    for i, a in enumerate(arrays):
        c[i, 0] = a
    return c


def _hp_train(root: Path, frames=6, subjects=(1,), seqs=(1,)):
    """``annot.mat``: 14 x 1 cell arrays of (frames, 56) / (frames, 84), row-major (x0, y0, x1, y1, ...)."""
    data = {}
    for s in subjects:
        for q in seqs:
            a2 = [RNG.uniform(10, 2000, (frames, 56)) for _ in range(14)]
            a3 = [RNG.uniform(-900, 900, (frames, 84)) + np.tile([0, 0, 4000], 28) for _ in range(14)]
            a2[2][3, 10] = 2100.0  # camera 2, frame 3: a joint outside the 2048 x 2048 image
            d = root / f"S{s}" / f"Seq{q}"
            d.mkdir(parents=True)
            scipy.io.savemat(d / "annot.mat", {"annot2": _cells(a2), "annot3": _cells(a3),
                                               "univ_annot3": _cells([a * 0.9 for a in a3]),
                                               "frames": np.arange(frames)[:, None],
                                               "cameras": np.arange(14)[None]})
            data[(s, q)] = (a2, a3)
    return data


def test_mpi_inf_3dhp_train(tmp_path):
    data = _hp_train(tmp_path)
    r = MpiInf3dhpTrain(tmp_path, subjects=(1,), sequences=(1,), cameras=(0, 2))
    assert len(r) == 6 + 5 and r.skeleton.name == "mpi_inf_3dhp28"  # camera 2 frame 3 dropped
    a2, a3 = data[(1, 1)]
    s = r[9].validate()  # camera 0: indices 0-5; camera 2: frames 0, 1, 2, 4, 5 -> index 9 is frame 4
    assert s.meta == {"frame": 4, "camera": 2, "universal": False} and s.attributes["subject"] == "S1"
    np.testing.assert_allclose(s.keypoints_2d[0], a2[2][4].reshape(28, 2), atol=1e-2)
    np.testing.assert_allclose(s.keypoints_3d[0], a3[2][4].reshape(28, 3), atol=1e-2)
    assert s.image_path == str(tmp_path / "S1" / "Seq1" / "imageFrames" / "video_2" / "frame_000005.jpg")
    u = MpiInf3dhpTrain(tmp_path, subjects=(1,), sequences=(1,), cameras=(0,), universal=True, every_n=2)
    assert [x.meta["frame"] for x in u] == [0, 2, 4]
    np.testing.assert_allclose(u[1].keypoints_3d[0], 0.9 * a3[0][2].reshape(28, 3), atol=1e-2)
    assert len(MpiInf3dhpTrain(tmp_path, subjects=(1,), sequences=(1,), cameras=(2,), drop_outside=False)) == 6
    kp = MPI_INF_3DHP28_TO_MPII16.apply(s.keypoints_3d)
    np.testing.assert_allclose(kp[0], s.keypoints_3d[0, [25, 24, 23, 18, 19, 20, 4, 3, 5, 7, 16, 15, 14, 9, 10, 11]])


def test_mpi_inf_3dhp_train_nan_depth_and_malformed(tmp_path):
    d = tmp_path / "S1" / "Seq1"
    d.mkdir(parents=True)
    a2 = [np.full((4, 56), 50.0) for _ in range(14)]
    a3 = [np.full((4, 84), 100.0) for _ in range(14)]
    a3[1][2, 3 * 7 + 2] = np.nan  # camera 1, frame 2, joint 7: NaN depth
    scipy.io.savemat(d / "annot.mat", {"annot2": _cells(a2), "annot3": _cells(a3)})
    f = str(d / "annot.mat")
    _raises(lambda: MpiInf3dhpTrain(tmp_path, subjects=(1,), sequences=(1,), cameras=(0, 1)), f,
            "camera 1 frame 2", "field annot3", "depth", "joint 7")
    assert len(MpiInf3dhpTrain(tmp_path, subjects=(1,), sequences=(1,), cameras=(0,))) == 4
    _raises(lambda: MpiInf3dhpTrain(tmp_path, subjects=(1,), sequences=(1,), universal=True), f,
            "field univ_annot3", "missing variable")
    _raises(lambda: MpiInf3dhpTrain(tmp_path, subjects=(1,), sequences=(1,), cameras=(14,)), f, "field annot2",
            "camera 14")
    a3[0] = np.zeros((4, 83))
    scipy.io.savemat(d / "annot.mat", {"annot2": _cells(a2), "annot3": _cells(a3)})
    _raises(lambda: MpiInf3dhpTrain(tmp_path, subjects=(1,), sequences=(1,), cameras=(0,)), f, "field annot3",
            "(4, 84)")
    _raises(lambda: MpiInf3dhpTrain(tmp_path, subjects=(2,), sequences=(1,)), "S2", "not found")


def _hp_test(root: Path, n: int, frames=5, nan_at=None):
    """``TS{n}/annot_data.mat`` (MATLAB v7.3 = HDF5): (F, 1, 17, 2/3) arrays and valid_frame (F, 1)."""
    import h5py

    d = root / f"TS{n}"
    d.mkdir(parents=True)
    a2 = RNG.uniform(0, 2000, (frames, 1, 17, 2))
    a3 = RNG.uniform(-900, 900, (frames, 1, 17, 3))
    if nan_at is not None:
        a3[nan_at, 0, 4, 2] = np.nan
    valid = np.array([[1], [0], [1], [1], [0]], dtype=np.float64)[:frames]
    with h5py.File(d / "annot_data.mat", "w") as h:
        h["annot2"], h["annot3"], h["univ_annot3"], h["valid_frame"] = a2, a3, a3 * 1.1, valid
    return a2, a3


def test_mpi_inf_3dhp_test(tmp_path):
    a2, a3 = _hp_test(tmp_path, 1)
    _hp_test(tmp_path, 5)
    r = MpiInf3dhpTest(tmp_path, sequences=(1, 5))
    assert len(r) == 6 and r.skeleton.name == "mpi_inf_3dhp17"
    s = r[1].validate()
    assert s.meta == {"frame": 2, "valid": True, "universal": True}
    assert s.attributes == {"sequence": "TS1", "subset": "GS"} and r[4].attributes["subset"] == "Outdoor"
    np.testing.assert_allclose(s.keypoints_2d[0], a2[2, 0], atol=1e-2)
    np.testing.assert_allclose(s.keypoints_3d[0], 1.1 * a3[2, 0], atol=1e-2)
    assert s.image_path == str(tmp_path / "TS1" / "imageSequence" / "img_000003.jpg")
    every = MpiInf3dhpTest(tmp_path, sequences=(1,), only_valid=False, universal=False)  # HG-3D's val
    assert [x.meta["valid"] for x in every] == [True, False, True, True, False]
    np.testing.assert_allclose(every[1].keypoints_3d[0], a3[1, 0], atol=1e-2)
    kp = MPI_INF_3DHP17_TO_MPII16.apply(s.keypoints_2d)
    np.testing.assert_allclose(kp[0], s.keypoints_2d[0, [10, 9, 8, 11, 12, 13, 14, 15, 1, 0, 4, 3, 2, 5, 6, 7]])


def test_mpi_inf_3dhp_test_nan_depth(tmp_path):
    _hp_test(tmp_path, 2, nan_at=3)
    f = str(tmp_path / "TS2" / "annot_data.mat")
    _raises(lambda: MpiInf3dhpTest(tmp_path, sequences=(2,)), f, "frame 3", "field univ_annot3", "depth", "joint 4")
    _hp_test(tmp_path, 4, nan_at=1)  # frame 1 is not a valid frame: checked only when it is read
    assert len(MpiInf3dhpTest(tmp_path, sequences=(4,))) == 3
    _raises(lambda: MpiInf3dhpTest(tmp_path, sequences=(4,), only_valid=False), "TS4", "frame 1", "depth")
    _raises(lambda: MpiInf3dhpTest(tmp_path, sequences=(3,)), "TS3", "not found")
    Path(f).write_bytes(b"not hdf5")
    _raises(lambda: MpiInf3dhpTest(tmp_path, sequences=(2,)), f, "HDF5")


# ================================================================================================ 3DPW
# A Python 2 pickle (protocol 2), opcode by opcode, as the 3DPW sequence files are: py2 ``str`` (BINSTRING)
# keys and array data, numpy arrays as numpy.core.multiarray._reconstruct + BUILD.
def _p2_str(b: bytes) -> bytes:
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b


def _p2_int(i: int) -> bytes:
    return b"K" + bytes([i]) if 0 <= i < 256 else b"M" + struct.pack("<H", i) if 0 <= i < 65536 else \
        b"J" + struct.pack("<i", i)


def _p2_tuple(items) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _p2_dtype(dt: np.dtype) -> bytes:
    order = dt.str[0] if dt.str[0] in "<>" else "|"
    return (b"cnumpy\ndtype\n" + _p2_tuple([_p2_str(dt.str[1:].encode()), _p2_int(0), _p2_int(1)]) + b"R"
            + _p2_tuple([_p2_int(3), _p2_str(order.encode()), b"N", b"N", b"N", _p2_int(-1), _p2_int(-1),
                         _p2_int(0)]) + b"b")


def _p2(obj) -> bytes:
    if isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        return (b"cnumpy.core.multiarray\n_reconstruct\n"
                + _p2_tuple([b"cnumpy\nndarray\n", _p2_tuple([_p2_int(0)]), _p2_str(b"b")]) + b"R"
                + _p2_tuple([_p2_int(1), _p2_tuple([_p2_int(s) for s in a.shape]), _p2_dtype(a.dtype), b"\x89",
                             _p2_str(a.tobytes())]) + b"b")
    if isinstance(obj, str):
        return _p2_str(obj.encode("latin1"))
    if isinstance(obj, list):
        return b"](" + b"".join(_p2(x) for x in obj) + b"e"
    if isinstance(obj, dict):
        return b"}(" + b"".join(_p2(k) + _p2(v) for k, v in obj.items()) + b"u"
    raise TypeError(type(obj))


def _rot(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _pw_sequence(path: Path, n=4, nan_at=None):
    """A 3DPW sequence file with two actors; data bytes include values above 127 (latin1 matters)."""
    K = np.array([[1961.0, 0, 540.0], [0, 1969.0, 960.0], [0, 0, 1]])
    cam_poses = np.stack([np.block([[_rot(0.1 * t), np.array([[0.1], [0.2], [4.0 + t]])], [np.zeros((1, 3)), 1]])
                          for t in range(n)])
    joints = [RNG.uniform(-0.8, 0.8, (n, 72)) for _ in range(2)]
    if nan_at is not None:
        joints[1][nan_at, 3 * 5 + 2] = np.nan
    p2d = []
    for a in range(2):
        q = np.zeros((n, 3, 18))
        q[:, :2] = RNG.uniform(0, 1000, (n, 2, 18))
        q[:, 2] = 0.9
        p2d.append(q)
    p2d[0][1, 2, :12] = 0.1  # actor 0 frame 1: 6 confident joints -> dropped by the 7-joint rule
    valid = [np.array([1, 1, 0, 1], dtype=bool)[:n], np.ones(n, dtype=bool)]
    seq = {"sequence": path.stem, "betas": [np.zeros(10), np.zeros(10)], "genders": ["m", "f"],
           "poses": [np.zeros((n, 72)), np.zeros((n, 72))], "trans": [np.zeros((n, 3)), np.zeros((n, 3))],
           "jointPositions": joints, "poses2d": p2d, "cam_poses": cam_poses, "cam_intrinsics": K,
           "campose_valid": valid, "img_frame_ids": np.arange(0, 2 * n, 2)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x80\x02" + _p2(seq) + b".")
    return seq


def test_3dpw_python2_sequence_files(tmp_path):
    f = tmp_path / "3DPW" / "sequenceFiles" / "validation" / "courtyard_test_00.pkl"
    seq = _pw_sequence(f)
    raw = safe_unpickle(f, encoding="latin1")
    np.testing.assert_array_equal(raw["jointPositions"][1], seq["jointPositions"][1])
    assert raw["genders"] == ["m", "f"] and raw["campose_valid"][0].dtype == bool
    _raises(lambda: safe_unpickle(f), str(f), "not a readable pickle")  # py2 bytes need latin1

    r = ThreeDPW(f.parent)
    # actor 0: frame 1 has too few detections, frame 2 an invalid camera pose; actor 1 keeps all 4
    assert [(int(a), int(t)) for _, a, t in r.index] == [(0, 0), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3)]
    assert len(ThreeDPW(f, min_joints=0, only_valid_camera=False)) == 8
    s = r[4].validate()  # actor 1, frame 2
    pose = seq["cam_poses"][2]
    world = seq["jointPositions"][1][2].reshape(24, 3)
    cam = (world @ pose[:3, :3].T + pose[:3, 3]) * 1000
    np.testing.assert_allclose(s.keypoints_3d[0], cam, rtol=1e-5, atol=1e-2)
    K = seq["cam_intrinsics"]
    np.testing.assert_allclose(s.keypoints_2d[0, :, 0], K[0, 0] * cam[:, 0] / cam[:, 2] + K[0, 2], rtol=1e-5)
    np.testing.assert_allclose(s.keypoints_2d[0, :, 1], K[1, 1] * cam[:, 1] / cam[:, 2] + K[1, 2], rtol=1e-5)
    np.testing.assert_allclose(s.camera.project(s.keypoints_3d[0]), s.keypoints_2d[0], rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(s.meta["poses2d"][0], seq["poses2d"][1][2].T, atol=1e-3)
    assert s.meta["gender"] == "f" and s.identity == "courtyard_test_00/1" and s.skeleton == "smpl24"
    assert s.image_path == str(tmp_path / "3DPW" / "imageFiles" / "courtyard_test_00" / "image_00002.jpg")
    # MPII-16: HG-3D's 2D map (pelvis/thorax means, upper neck = head top = nose) and the SMPL map
    kp2, v2 = COCO18_TO_MPII16.apply(s.meta["poses2d"][..., :2], s.meta["poses2d"][..., 2] > 0.3)
    np.testing.assert_allclose(kp2[0, 9], s.meta["poses2d"][0, 0, :2])
    np.testing.assert_allclose(kp2[0, 6], (s.meta["poses2d"][0, 8, :2] + s.meta["poses2d"][0, 11, :2]) / 2)
    assert v2[0].min() == 1  # every detection of actor 1 is confident
    _, dropped = COCO18_TO_MPII16.apply(s.meta["poses2d"][..., :2], np.ones((1, 18)), approximate="drop")
    assert dropped[0, 8:10].tolist() == [0, 0] and dropped[0].sum() == 14
    kp3 = map_joints(s.keypoints_3d, "smpl24", "mpii16")
    np.testing.assert_allclose(kp3[0, 0], s.keypoints_3d[0, 8])  # right ankle


def test_3dpw_nan_depth_and_malformed(tmp_path):
    f = tmp_path / "sequenceFiles" / "test" / "downtown_x_00.pkl"
    _pw_sequence(f, nan_at=3)
    _raises(lambda: ThreeDPW(f), str(f), "actor 1 frame 3", "field jointPositions", "depth", "joint 5")
    seq = _pw_sequence(f)
    del seq["cam_poses"]
    f.write_bytes(b"\x80\x02" + _p2(seq) + b".")
    _raises(lambda: ThreeDPW(f), str(f), "field cam_poses", "missing")
    seq = _pw_sequence(f)
    seq["poses2d"] = seq["poses2d"][:1]
    f.write_bytes(b"\x80\x02" + _p2(seq) + b".")
    _raises(lambda: ThreeDPW(f), str(f), "field poses2d", "1 actors")
    seq = _pw_sequence(f)
    seq["jointPositions"][0] = seq["jointPositions"][0][:, :69]
    f.write_bytes(b"\x80\x02" + _p2(seq) + b".")
    _raises(lambda: ThreeDPW(f), str(f), "actor 0", "field jointPositions", "(4, 72)")
