import numpy as np
import pytest

from humanvision.skeletons import (
    DERIVED_JOINTS,
    SKELETONS,
    Skeleton,
    SkeletonError,
    conversion_plan,
    convert,
    get_skeleton,
    load_skeleton,
)

EXPECTED_K = {"coco17": 17, "mpii16": 16, "h36m17": 17, "h36m17_vp": 17, "aic14": 14, "crowdpose14": 14,
              "lsp14": 14, "mpi_inf_3dhp17": 17, "itop15": 15, "ntu25": 25, "body25": 25, "body25b": 25,
              "flic29": 29, "mpi_inf_3dhp28": 28, "occlusion_person15": 15, "smpl24": 24, "coco18": 18}


@pytest.mark.parametrize("name", sorted(SKELETONS))
def test_builtin_skeleton_is_consistent(name):
    sk = get_skeleton(name)
    assert sk.num_joints == EXPECTED_K[name]
    flip = np.array(sk.flip_index)
    assert sorted(flip.tolist()) == list(range(sk.num_joints))
    assert (flip[flip] == np.arange(sk.num_joints)).all(), "flip must be an involution"
    for i, j in enumerate(flip):  # flipping maps left_* to right_* and keeps centre joints
        a, b = sk.joints[i], sk.joints[j]
        if a.startswith("left_"):
            assert b == "right_" + a[5:]
        elif not a.startswith("right_"):
            assert i == j
    assert set(sk.upper_body) | set(sk.lower_body) == set(range(sk.num_joints))
    assert len(sk.limb_colors) == len(sk.limbs) and len(sk.joint_colors) == sk.num_joints
    # limbs form a connected graph over the joints
    adj = {i: set() for i in range(sk.num_joints)}
    for a, b in sk.limbs:
        adj[a].add(b)
        adj[b].add(a)
    seen, stack = {0}, [0]
    while stack:
        for n in adj[stack.pop()] - seen:
            seen.add(n)
            stack.append(n)
    assert len(seen) == sk.num_joints, f"{name}: limbs do not connect {set(range(sk.num_joints)) - seen}"


def test_known_orders_and_sigmas():
    coco = get_skeleton("coco")
    assert coco.flip_index == (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
    assert coco.sigmas_array[5] == pytest.approx(0.079)
    h36m = get_skeleton("h36m17")
    assert h36m.root == 6 and h36m.joints[6] == "pelvis" and h36m.joints[9] == "head_top"
    assert get_skeleton("mpii16").joints[:6] == ("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee",
                                                "left_ankle")
    assert len(get_skeleton("aic14").sigmas) == 14
    with pytest.raises(SkeletonError, match="defines no OKS sigmas"):
        _ = get_skeleton("mpii16").sigmas_array
    with pytest.raises(SkeletonError, match="unknown skeleton 'cocoa'"):
        get_skeleton("cocoa")


def test_flip_keypoints_with_width():
    coco = get_skeleton("coco17")
    kp = np.random.default_rng(0).uniform(0, 100, (3, 17, 2))
    f = coco.flip(kp, width=100)
    np.testing.assert_allclose(coco.flip(f, width=100), kp)
    np.testing.assert_allclose(f[:, 1, 0], 99 - kp[:, 2, 0])


def test_conversion_round_trips_where_defined():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 17, 3))
    y = convert(x, "coco17", "body25", fill_missing=True)
    np.testing.assert_allclose(convert(y, "body25", "coco17"), x)
    a = rng.normal(size=(2, 14, 2))
    np.testing.assert_allclose(convert(convert(a, "aic14", "crowdpose14"), "crowdpose14", "aic14"), a)
    h = rng.normal(size=(5, 17, 3))
    m = convert(h, "h36m17", "mpi_inf_3dhp17", fill_missing=True)
    back = convert(m, "mpi_inf_3dhp17", "h36m17", fill_missing=True)
    direct = set(get_skeleton("mpi_inf_3dhp17").joints)  # joints copied both ways (not derived) round-trip
    keep = [i for i, n in enumerate(get_skeleton("h36m17").joints) if n in direct]
    assert len(keep) == 15
    np.testing.assert_allclose(back[:, keep], h[:, keep])


# The two Human3.6M-17 orders, written out by hand (pose3d.md section 0 for LT; VideoPose3D / MMPose keep the
# mocap joints 0,1,2,3,6,7,8,12,13,14,15,17,18,19,25,26,27).
# VP index i holds LT joint VP_FROM_LT[i]: 0 pelvis <- 6, 1 right hip <- 2, ..., 9 nose <- 16, 10 head <- 9.
VP_FROM_LT = [6, 2, 1, 0, 3, 4, 5, 7, 8, 16, 9, 13, 14, 15, 12, 11, 10]
# LT index i holds VP joint LT_FROM_VP[i]: 0 right ankle <- 3, ..., 6 pelvis <- 0, ..., 16 nose <- 9.
LT_FROM_VP = [3, 2, 1, 4, 5, 6, 0, 7, 8, 10, 16, 15, 14, 11, 12, 13, 9]


def test_h36m_lt_and_videopose_orders():
    lt, vp = get_skeleton("h36m17_lt"), get_skeleton("h36m17_vp")
    assert lt is get_skeleton("h36m17") and get_skeleton("h36m17_mmpose") is vp
    assert (lt.root, lt.joints[lt.root]) == (6, "pelvis") and (vp.root, vp.joints[vp.root]) == (0, "pelvis")
    assert vp.joints[:4] == ("pelvis", "right_hip", "right_knee", "right_ankle")
    assert vp.joints[9:12] == ("nose", "head_top", "left_shoulder") and vp.joints[16] == "right_wrist"
    # flips: right leg 1-3 <-> left leg 4-6, left arm 11-13 <-> right arm 14-16, centre joints stay
    assert vp.flip_index == (0, 4, 5, 6, 1, 2, 3, 7, 8, 9, 10, 14, 15, 16, 11, 12, 13)
    assert {frozenset(x) for x in vp.limb_names()} == {frozenset(x) for x in lt.limb_names()}
    assert len(vp.limbs) == 16

    x = np.random.default_rng(7).normal(size=(4, 17, 3)) * 300.0
    to_vp = convert(x, "h36m17", "h36m17_vp")
    np.testing.assert_array_equal(to_vp, x[:, VP_FROM_LT])
    np.testing.assert_array_equal(convert(to_vp, "h36m17_vp", "h36m17_lt"), x)
    np.testing.assert_array_equal(convert(to_vp, "h36m17_vp", "h36m17"), to_vp[:, LT_FROM_VP])
    w, missing = conversion_plan("h36m17", "h36m17_vp")
    assert missing == [] and (w.sum(0) == 1).all() and (w.sum(1) == 1).all()  # a permutation


def test_derived_joints_and_visibility():
    coco = get_skeleton("coco17")
    x = np.zeros((17, 2))
    x[coco.index("left_hip")] = (10, 20)
    x[coco.index("right_hip")] = (30, 40)
    x[coco.index("left_shoulder")] = (10, 0)
    x[coco.index("right_shoulder")] = (30, 0)
    vis = np.ones(17)
    vis[coco.index("right_hip")] = 0
    out, v = convert(x, "coco17", "h36m17", visible=vis, fill_missing=True)
    h = get_skeleton("h36m17")
    np.testing.assert_allclose(out[h.index("pelvis")], (20, 30))
    np.testing.assert_allclose(out[h.index("thorax")], (20, 0))
    np.testing.assert_allclose(out[h.index("spine")], (20, 15))
    assert v[h.index("pelvis")] == 0 and v[h.index("thorax")] == 1 and v[h.index("head_top")] == 0
    assert "pelvis" in DERIVED_JOINTS


def test_conversion_error_names_missing_joints():
    with pytest.raises(SkeletonError, match=r"cannot produce h36m17 joints \['head_top'\] from coco17"):
        convert(np.zeros((17, 2)), "coco17", "h36m17")
    with pytest.raises(SkeletonError, match=r"expected \[\.\.\., 17, D\]"):
        convert(np.zeros((16, 2)), "coco17", "mpii16", fill_missing=True)
    _, missing = conversion_plan("mpii16", "coco17")
    assert set(missing) == {"nose", "left_eye", "right_eye", "left_ear", "right_ear"}


def test_custom_skeleton_from_yaml(tmp_path):
    p = tmp_path / "hand.yaml"
    p.write_text(
        "name: tripod\n"
        "joints: [top, left_foot, right_foot, center]\n"
        "limbs: [[top, center], [center, left_foot], [center, right_foot]]\n"
        "sigmas: [0.05, 0.08, 0.08, 0.1]\n"
        "root: center\n")
    sk = get_skeleton(str(p))
    assert sk.num_joints == 4 and sk.root == 3 and sk.flip_index == (0, 2, 1, 3)
    assert sk.sigmas_array.tolist() == [0.05, 0.08, 0.08, 0.1]
    assert load_skeleton(sk.to_dict()).joints == sk.joints
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\njoints: [a, b]\nlimbs: [[a, c]]\n")
    with pytest.raises(SkeletonError, match=r"bad.yaml: 'limbs' refers to unknown joint 'c'"):
        load_skeleton(bad)
    bad.write_text("name: x\njoints: [a, b]\ncolour: red\n")
    with pytest.raises(SkeletonError, match=r"unknown key\(s\) \['colour'\]"):
        load_skeleton(bad)
    with pytest.raises(SkeletonError, match="2 sigmas for 3 joints"):
        Skeleton("x", ("a", "b", "c"), (), sigmas=(0.1, 0.1))
    with pytest.raises(SkeletonError, match="'left_x' has no 'right_x'"):
        Skeleton("x", ("left_x", "b"), ())
