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

EXPECTED_K = {"coco17": 17, "mpii16": 16, "h36m17": 17, "aic14": 14, "crowdpose14": 14, "lsp14": 14,
              "mpi_inf_3dhp17": 17, "itop15": 15, "ntu25": 25, "body25": 25}


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
