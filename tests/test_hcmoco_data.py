"""HCMoCo data (pretraining.md A.2, A.7.2, A.7.3): parsing classes and flips, the MPII-16 / COCO-13 tables, the
NTU / Human3.6M-parsing / NTURGBD-Parsing-4K readers on fixtures written here from the documented layouts, the
9-field NTU sample against straightforward references, and writer -> reader round trips."""

from __future__ import annotations

import os
import pickle

import cv2
import numpy as np
import pytest

from humanvision.data.readers import read_h36m_parsing, read_ntu_hcmoco, read_nturgbd_parsing
from humanvision.data.readers.ntu import (
    COCO13_JOINTS,
    COCO13_PARENTS,
    COCO17_TO_COCO13,
    HCMOCO_JOINT_SETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    KINECT_TO_COCO13,
    KINECT_TO_MPII16,
    MPII16_PARENTS,
    hcmoco_norm_joints,
    ntu_crop_params,
    ntu_hcmoco_sample,
    skeleton_file_number,
)
from humanvision.data.readers.parsing import (
    NTURGBD_PARSING_CLASS_WEIGHTS,
    PARSING_CLASSES,
    PARSING_FLIP_PAIRS_RAW,
    PARSING_FLIP_PERM,
    PARSING_RAW_IDS,
    SYNTH_PART_TO_CLASS,
    class_to_raw,
    flip_parsing,
    parsing_depth_input,
    raw_to_class,
    twenty_percent,
)
from humanvision.data.synthetic import (
    FORMATS,
    PART_NAMES,
    SceneConfig,
    generate,
    generate_frame,
    select_joints,
)
from humanvision.data.synthetic.hcmoco import (
    generate_ntu_hcmoco,
    generate_nturgbd_parsing,
    kinect_camera,
    ntu_tag,
    parsing_labels,
)
from humanvision.data.synthetic.writers import split_offset
from humanvision.errors import DataError
from humanvision.skeletons import get_skeleton

RNG = np.random.default_rng(7)
RAW = np.array(PARSING_RAW_IDS)


def _raises(fn, *parts: str) -> DataError:
    """``fn()`` must raise a DataError whose message contains every part."""
    with pytest.raises(DataError) as e:
        fn()
    for p in parts:
        assert p in str(e.value), f"{p!r} not in {str(e.value)!r}"
    return e.value


def _mirror(name: str) -> str:
    if name.startswith("left_"):
        return "right_" + name[5:]
    if name.startswith("right_"):
        return "left_" + name[6:]
    return name


# ================================================================================================ parsing classes
def test_parsing_class_table_and_flip_pairs():
    assert len(PARSING_CLASSES) == len(PARSING_RAW_IDS) == len(NTURGBD_PARSING_CLASS_WEIGHTS) == 25
    assert list(PARSING_RAW_IDS) == sorted(set(PARSING_RAW_IDS)) and PARSING_RAW_IDS[0] == 0
    # the brief's order: raw 46 is the head, 32 the crotch, 1 the right hip, 58 the right forearm
    for raw, name in ((46, "head"), (32, "crotch"), (1, "right_hip"), (6, "left_hip"), (58, "right_forearm")):
        assert PARSING_CLASSES[PARSING_RAW_IDS.index(raw)] == name
    # every raw pair is a left/right pair of classes, and the 10 pairs are exactly the sided classes
    sided = {c for c in PARSING_CLASSES if c != _mirror(c)}
    assert len(PARSING_FLIP_PAIRS_RAW) * 2 == len(sided) == 20
    for a, b in PARSING_FLIP_PAIRS_RAW:
        assert PARSING_CLASSES[PARSING_RAW_IDS.index(b)] == _mirror(PARSING_CLASSES[PARSING_RAW_IDS.index(a)])
    for c, name in enumerate(PARSING_CLASSES):
        assert PARSING_CLASSES[PARSING_FLIP_PERM[c]] == _mirror(name)


def test_flip_parsing_is_an_involution_that_swaps_sides():
    label = RNG.integers(0, 25, (7, 9)).astype(np.uint8)
    label[0, 0] = 255  # ignore stays ignore
    flipped = flip_parsing(label)
    ref = np.array([[PARSING_CLASSES.index(_mirror(PARSING_CLASSES[v])) if v < 25 else v for v in row[::-1]]
                    for row in label], dtype=np.uint8)
    np.testing.assert_array_equal(flipped, ref)
    assert flipped[0, -1] == 255
    np.testing.assert_array_equal(flip_parsing(flipped), label)
    assert not np.array_equal(flipped, label[:, ::-1])  # some classes really changed side


def test_raw_ids_map_to_classes_and_unknown_ids_are_named(tmp_path):
    classes = RNG.integers(0, 25, (6, 5))
    raw = class_to_raw(classes)
    np.testing.assert_array_equal(raw, RAW[classes])
    np.testing.assert_array_equal(raw_to_class(raw), classes)
    bad = raw.copy()
    bad[2, 3] = 5  # 5 is not a Human3.6M part id
    e = _raises(lambda: raw_to_class(bad, file="x/seg.png"), "x/seg.png", "[5]")
    assert e.file == "x/seg.png"


def test_synthetic_parts_map_to_classes_on_their_own_side():
    assert set(SYNTH_PART_TO_CLASS) == set(PART_NAMES)  # every rendered part id 0..15 has a class
    for part, cls in SYNTH_PART_TO_CLASS.items():
        assert cls in PARSING_CLASSES
        assert (part.split("_")[0] if part != _mirror(part) else None) == \
            (cls.split("_")[0] if cls != _mirror(cls) else None)
    # refined labels of rendered frames: each part pixel lands in a class that part can become
    allowed = {"background": {"background"}, "head": {"head"}, "neck": {"head"},
               "torso": {"crotch", "left_hip", "right_hip", "lower_spine", "upper_spine", "left_shoulder",
                         "right_shoulder"}}
    for s in ("left", "right"):
        allowed.update({f"{s}_upper_arm": {f"{s}_shoulder", f"{s}_arm", f"{s}_elbow"},
                        f"{s}_lower_arm": {f"{s}_elbow", f"{s}_forearm"}, f"{s}_hand": {f"{s}_hand"},
                        f"{s}_upper_leg": {f"{s}_hip", f"{s}_thigh", f"{s}_knee"},
                        f"{s}_lower_leg": {f"{s}_knee", f"{s}_calf"}, f"{s}_foot": {f"{s}_foot"}})
    seen = set()
    for i in range(3):
        view = generate_frame(SceneConfig(size=(128, 128), people=(1, 2)), 0, i).views[0]
        lab = parsing_labels(view)
        assert lab.dtype == np.uint8 and lab.shape == view.parts.shape
        assert (lab[view.parts == 0] == 0).all() and (lab[view.parts > 0] > 0).all()
        for pid, part in enumerate(PART_NAMES):
            got = {PARSING_CLASSES[c] for c in np.unique(lab[view.parts == pid])}
            assert got <= allowed[part], (part, got)
        seen |= set(np.unique(lab).tolist())
    assert seen == set(range(25))  # the refinement expresses every class


# ================================================================================================ joint tables
def test_kinect_mpii_coco_tables_are_consistent():
    ntu, mpii, coco = (get_skeleton(n).joints for n in ("ntu25", "mpii16", "coco17"))
    centre = {"pelvis": "pelvis", "thorax": "spine", "upper_neck": "neck", "head_top": "head"}
    for slot, k in enumerate(KINECT_TO_MPII16):
        name = mpii[slot]
        # Kinect *left* joints fill MPII *right* slots (kept as in HCMoCo); the spine maps by the brief's table
        assert ntu[k] == centre.get(name, _mirror(name)), (slot, ntu[k])
    assert HCMOCO_JOINT_SETS["mpii16"].joints == mpii
    # COCO-13 from Kinect is the MPII map restricted to the 13 shared slots
    assert KINECT_TO_COCO13 == tuple(KINECT_TO_MPII16[mpii.index(n)] for n in COCO13_JOINTS)
    for slot, k in enumerate(COCO17_TO_COCO13):
        assert coco[k] == ("nose" if COCO13_JOINTS[slot] == "head_top" else COCO13_JOINTS[slot])
    for js, parents in ((HCMOCO_JOINT_SETS["mpii16"], MPII16_PARENTS), (HCMOCO_JOINT_SETS["coco13"], COCO13_PARENTS)):
        assert js.parents == parents and len(parents) == js.num_joints == len(js.from_kinect)
        assert [j for j, p in enumerate(parents) if p < 0] == [js.root] == [6]
        for j in range(js.num_joints):  # a tree: every joint reaches the root
            seen, k = set(), j
            while parents[k] >= 0:
                assert k not in seen
                seen.add(k)
                k = parents[k]
            assert k == js.root
        # left/right symmetric graph
        idx = {n: i for i, n in enumerate(js.joints)}
        edges = {frozenset((js.joints[j], js.joints[p])) for j, p in enumerate(parents) if p >= 0}
        assert {frozenset(map(_mirror, e)) for e in edges} == edges
        assert all(_mirror(n) in idx for n in js.joints)


# ================================================================================================ NTU fixtures
def _write_ntu(root, videos: dict[str, int], size=(96, 80), d_loc=None, missing=()):
    """The preprocessed NTU layout, written by hand: WRGB-n.jpg / MDepth-n.png (n from 1) and Skeleton-(n-1).pkl
    holding lists of numpy float32 scalars (as HCMoCo's parser writes them). Returns {(tag, n): (d_loc, 3d)}."""
    W, H = size
    truth = {}
    for tag, n_frames in videos.items():
        for n in range(1, n_frames + 1):
            rgb = RNG.integers(0, 256, (H, W, 3)).astype(np.uint8)
            depth = np.zeros((H, W), np.uint16)
            depth[H // 4: 3 * H // 4, W // 4: 3 * W // 4] = RNG.integers(2000, 3000, (3 * H // 4 - H // 4,
                                                                                    3 * W // 4 - W // 4))
            for sub, name, img in (("nturgb+d_rgb_warped_correction", f"WRGB-{n:08d}.jpg", rgb[..., ::-1]),
                                   ("nturgb+d_depth_masked", f"MDepth-{n:08d}.png", depth)):
                (root / sub / tag).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / sub / tag / name), img)
            if tag in missing:
                continue
            xy = (RNG.uniform([10, 10], [W - 10, H - 10], (25, 2)) if d_loc is None else d_loc).astype(np.float32)
            loc3d = RNG.normal(0, 1, (25, 3)).astype(np.float32)
            doc = {"frame_idx": n - 1, "joints": [{"body_idx": 0, "3d_loc": [list(r) for r in loc3d],
                                                   "rgb_loc": [list(r * 3.75) for r in xy],
                                                   "d_loc": [list(r) for r in xy]}]}
            (root / "nturgb+d_parsed_skeleton" / tag).mkdir(parents=True, exist_ok=True)
            with open(root / "nturgb+d_parsed_skeleton" / tag / f"Skeleton-{n - 1:08d}.pkl", "wb") as f:
                pickle.dump(doc, f)
            truth[(tag, n)] = (xy, loc3d)
    (root / "NTU_RGBD_samples_with_missing_skeletons.txt").write_text("".join(f"{t}\n" for t in missing))
    return truth


def test_ntu_reader_layout_frame_offset_and_missing_videos(tmp_path):
    a, b, gone = "S001C001P001R001A001", "S002C003P008R002A060", "S001C002P005R002A008"
    truth = _write_ntu(tmp_path, {a: 3, b: 2, gone: 2}, missing=(gone,))
    r = read_ntu_hcmoco(tmp_path)
    assert len(r) == 5 and r.excluded == [gone]
    assert r.frames == [(a, 1), (a, 2), (a, 3), (b, 1), (b, 2)]
    assert skeleton_file_number(1) == 0
    _raises(lambda: skeleton_file_number(0), "counted from 1")
    for i, (tag, n) in enumerate(r.frames):
        p = r.paths(i)
        assert p["rgb"].endswith(f"{tag}/WRGB-{n:08d}.jpg") and p["depth"].endswith(f"{tag}/MDepth-{n:08d}.png")
        assert p["skeleton"].endswith(f"{tag}/Skeleton-{n - 1:08d}.pkl")
        f = r.frame(i)
        np.testing.assert_array_equal(f["d_loc"], truth[(tag, n)][0])  # WRGB n <-> Skeleton n-1, not n
        np.testing.assert_array_equal(f["3d_loc"], truth[(tag, n)][1])
        assert f["rgb"].shape == (80, 96, 3) and f["depth"].dtype == np.float32 and f["out_of_image"] == 0
    # without the list every video is read; an explicit frame list picks frames by '<tag>/WRGB-n.jpg'
    assert len(read_ntu_hcmoco(tmp_path, missing_skeletons=False)) == 7
    lst = tmp_path / "flist.txt"
    lst.write_text(f"/data/ntu/nturgb+d_rgb_warped_correction/{b}/WRGB-00000002.jpg\n\n{a}/WRGB-00000001.jpg\n")
    r2 = read_ntu_hcmoco(tmp_path, frame_list=lst)
    assert r2.frames == [(b, 2), (a, 1)]
    lst.write_text(f"{a}/RGB-00000001.png\n")
    _raises(lambda: read_ntu_hcmoco(tmp_path, frame_list=lst), "flist.txt", "line 1")


def test_ntu_skeleton_pickles_are_unpickled_safely(tmp_path):
    tag = "S001C001P001R001A001"
    _write_ntu(tmp_path, {tag: 2})
    marker = tmp_path / "pwned"

    class RunsShell:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    evil = tmp_path / "nturgb+d_parsed_skeleton" / tag / "Skeleton-00000001.pkl"
    evil.write_bytes(pickle.dumps({"frame_idx": 1, "joints": [RunsShell()]}))
    r = read_ntu_hcmoco(tmp_path)
    r.frame(0)  # the untouched frame still reads
    _raises(lambda: r.frame(1), str(evil), "refused", "system")
    _raises(lambda: r[1], str(evil), "system")
    assert not marker.exists(), "the pickled os.system call was executed"
    evil.write_bytes(pickle.dumps({"frame_idx": 1, "joints": []}))
    _raises(lambda: r.frame(1), str(evil), "no body")
    evil.write_bytes(pickle.dumps({"frame_idx": 1, "joints": [{"d_loc": [[0.0, 0.0]] * 24, "3d_loc": [[0.0] * 3] * 25}]}))
    _raises(lambda: r.frame(1), str(evil), "d_loc", "(24, 2)")
    evil.write_bytes(pickle.dumps({"frame_idx": 1, "joints": [{"d_loc": [[float("nan"), 0.0]] * 25,
                                                               "3d_loc": [[0.0] * 3] * 25}]}))
    _raises(lambda: r.frame(1), str(evil), "d_loc", "non-finite", "joint 0")


def test_ntu_depth_and_rgb_of_different_sizes_are_refused(tmp_path):
    tag = "S001C001P001R001A001"
    _write_ntu(tmp_path, {tag: 1})
    depth = tmp_path / "nturgb+d_depth_masked" / tag / "MDepth-00000001.png"
    cv2.imwrite(str(depth), np.full((80, 64), 2500, np.uint16))
    rgb = tmp_path / "nturgb+d_rgb_warped_correction" / tag / "WRGB-00000001.jpg"
    r = read_ntu_hcmoco(tmp_path)
    e = _raises(lambda: r.frame(0), str(depth), "64x80", str(rgb), "96x80")
    assert e.field == "depth"
    _raises(lambda: r[0], str(depth), str(rgb))


def test_ntu_joints_outside_the_image_are_invisible_and_counted(tmp_path):
    tag = "S001C001P001R001A001"
    xy = RNG.uniform([10, 10], [86, 70], (25, 2)).astype(np.float32)
    xy[14] = (-3.0, 40.0)   # Kinect AnkleLeft -> MPII slot 0 (r-ankle)
    xy[10] = (50.0, 80.0)   # WristRight, y == H is outside -> MPII slot 15 (l-wrist)
    _write_ntu(tmp_path, {tag: 1}, d_loc=xy)
    r = read_ntu_hcmoco(tmp_path)
    f = r.frame(0)
    assert f["out_of_image"] == 2 and np.flatnonzero(~f["in_image"]).tolist() == [10, 14]
    for _ in range(5):
        s = ntu_hcmoco_sample(f, 0, RNG, "mpii16", crop_size=64)
        assert s.joints_vis[0] == 0 and s.joints_vis[15] == 0
        assert (s.norm_joints[[0, 15]] == 0).all() and (s.original_joints2d[[0, 15]] == 0).all()


# ================================================================================================ the 9-field sample
class _FixedRng:
    """A generator stand-in: ``uniform`` returns ``area_fraction``, ``integers(a, b)`` returns ``a + offset``
    (clipped into [a, b))."""

    def __init__(self, area_fraction: float, offset: int = 0) -> None:
        self.f, self.offset = area_fraction, offset

    def uniform(self, lo, hi):
        return self.f

    def integers(self, lo, hi):
        return min(lo + self.offset, hi - 1)


def _frame(W=96, H=80, xy=None):
    rgb = RNG.integers(0, 256, (H, W, 3)).astype(np.uint8)
    depth = np.where(RNG.uniform(size=(H, W)) < 0.6, RNG.integers(1500, 4000, (H, W)), 0).astype(np.float32)
    xy = RNG.uniform([5, 5], [W - 5, H - 5], (25, 2)).astype(np.float32) if xy is None else xy
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < W) & (xy[:, 1] >= 0) & (xy[:, 1] < H)
    return {"rgb": rgb, "depth": depth, "d_loc": xy, "3d_loc": RNG.normal(0, 1, (25, 3)).astype(np.float32),
            "in_image": inside}


def test_ntu_crop_area_rule_and_centre():
    W, H = 96, 80
    xy = np.array([[20.5, 30.2], [70.9, 61.7]] + [[40.0, 40.0]] * 23, np.float32)
    assert ntu_crop_params(_FixedRng(0.08), W, H, xy)[2] == round(np.sqrt(0.08 * W * H))
    assert ntu_crop_params(_FixedRng(0.5), W, H, xy)[2] == round(np.sqrt(0.5 * W * H))
    # sides above the frame height never fit: 10 misses fall back to a side of H (W > H)
    assert ntu_crop_params(_FixedRng(1.2), W, H, xy)[2] == H
    top, left, side = ntu_crop_params(_FixedRng(0.5, offset=3), W, H, xy)
    assert (left + side // 2, top + side // 2) == (20 + 3, 30 + 3)
    rng = np.random.default_rng(0)
    for _ in range(200):  # centres are integers in [min, max) of the joints' box
        top, left, side = ntu_crop_params(rng, W, H, xy)
        assert 20 <= left + side // 2 < 70 and 30 <= top + side // 2 < 61
        assert side <= H


def _padded_crop(img, top, left, side):
    pad = side + 2
    big = np.pad(img, ((pad, pad), (pad, pad)) + ((0, 0),) * (img.ndim - 2))
    return big[top + pad: top + pad + side, left + pad: left + pad + side]


@pytest.mark.parametrize("joint_set", ["mpii16", "coco13"])
def test_ntu_sample_fields_match_a_reference(joint_set):
    js = HCMOCO_JOINT_SETS[joint_set]
    xy = RNG.uniform([8, 8], [90, 74], (25, 2)).astype(np.float32)
    xy[js.from_kinect[0]] = (6.0, 6.0)    # the box minimum: the crop centre is (12, 12), the crop [-8, 32)^2
    xy[js.from_kinect[2]] = (25.0, 20.0)  # inside the crop
    xy[js.from_kinect[3]] = (60.0, 50.0)  # outside the crop
    xy[js.from_kinect[1]] = (200.0, 10.0)  # outside the image: invisible everywhere
    f = _frame(xy=xy)
    S = 40  # crop side 40 == output size: the crop is a plain (zero-padded) copy
    rng = _FixedRng(40 ** 2 / (96 * 80), offset=6)
    top, left, side = ntu_crop_params(_FixedRng(40 ** 2 / (96 * 80), offset=6), 96, 80, f["d_loc"])
    assert side == S
    s = ntu_hcmoco_sample(f, 11, rng, joint_set, crop_size=S)
    assert isinstance(s, tuple) and len(s) == 9 and s._fields[0] == "rgbd" and s._fields[-1] == "scale"
    J = js.num_joints
    assert s.rgbd.shape == (6, S, S) and s.rgbd.dtype == np.float32
    assert s.norm_joints.shape == s.original_joints2d.shape == (J, 2) and s.joints_vis.shape == (J,)
    assert s.index == 11 and s.true_depth == 1 and s.depth_mask.shape == (S, S)
    # RGB: crop /255, ImageNet mean/std (padding is 0 before normalisation)
    rgb_ref = (_padded_crop(f["rgb"], top, left, side) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(s.rgbd[:3].transpose(1, 2, 0), rgb_ref, atol=1e-5)
    # depth: metres, minus the foreground mean, background exactly 0, 3 identical channels
    dc = _padded_crop(f["depth"], top, left, side) / 1000.0
    fg = dc > 0
    np.testing.assert_array_equal(s.depth_mask, fg)
    d_ref = np.where(fg, dc - dc[fg].mean(), 0.0)
    for c in (3, 4, 5):
        np.testing.assert_allclose(s.rgbd[c], d_ref, atol=1e-5)
    assert (s.rgbd[3][~fg] == 0).all()
    # joints: (row, col) in the crop, visible = in the image and in the crop, invisible = 0
    xy = f["d_loc"][list(js.from_kinect)].astype(np.float64)
    inside = (xy[:, 1] >= top) & (xy[:, 1] < top + side) & (xy[:, 0] >= left) & (xy[:, 0] < left + side)
    vis = inside & f["in_image"][list(js.from_kinect)]
    assert vis[1] == 0 and 0 < vis.sum() < J
    np.testing.assert_array_equal(s.joints_vis, vis.astype(int))
    rc = np.stack([(xy[:, 1] - top) / side * S, (xy[:, 0] - left) / side * S], 1)
    np.testing.assert_allclose(s.original_joints2d, np.where(vis[:, None], rc, 0), atol=1e-4)
    # norm_joints: full-frame (row, col) minus the root, / max |.|, annotated-invisible joints 0 (crop-independent)
    full = np.stack([xy[:, 1], xy[:, 0]], 1) - np.array([xy[js.root, 1], xy[js.root, 0]])
    full[~f["in_image"][list(js.from_kinect)]] = 0
    np.testing.assert_allclose(s.norm_joints, full / np.abs(full).max(), atol=1e-6)
    assert np.abs(s.norm_joints).max() == pytest.approx(1.0)
    np.testing.assert_allclose(s.joints3d, f["3d_loc"] - f["3d_loc"][0], atol=1e-6)
    pts = rc[vis]
    assert s.scale == pytest.approx(max(np.linalg.norm(p - q) for p in pts for q in pts))
    # a crop 2x smaller than the output scales the joints by 2
    s2 = ntu_hcmoco_sample(f, 11, _FixedRng(40 ** 2 / (96 * 80), offset=6), joint_set, crop_size=2 * S)
    np.testing.assert_allclose(s2.original_joints2d, 2 * s.original_joints2d, atol=1e-4)


def test_ntu_visibility_typo_and_default_scale():
    xy = np.full((25, 2), 40.0, np.float32)
    xy[14] = (90.0, 30.0)  # MPII slot 0: column right of a crop [0, 40) x [0, 40), row inside
    f = _frame(xy=xy)
    top, left = 0, 0

    class Rng(_FixedRng):
        def integers(self, lo, hi):
            return 20

    kw = {"joint_set": "mpii16", "crop_size": 40}
    ok = ntu_hcmoco_sample(f, 0, Rng(40 ** 2 / (96 * 80)), **kw)
    typo = ntu_hcmoco_sample(f, 0, Rng(40 ** 2 / (96 * 80)), visibility_typo=True, **kw)
    assert ntu_crop_params(Rng(40 ** 2 / (96 * 80)), 96, 80, xy) == (top, left, 40)
    assert ok.joints_vis[0] == 0 and typo.joints_vis[0] == 1  # the original tests row < left + side
    # all other MPII joints sit at (40, 40), just outside [0, 40): none visible -> the default scale 80
    assert ok.joints_vis.sum() == 0 and ok.scale == 80.0
    assert (hcmoco_norm_joints(np.zeros((16, 2)), np.ones(16, bool), 6) == 0).all()


def test_ntu_reader_samples_are_deterministic_per_epoch(tmp_path):
    _write_ntu(tmp_path, {"S001C001P001R001A001": 2})
    r = read_ntu_hcmoco(tmp_path, crop_size=32, seed=3)
    a, b = r[1], r[1]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    crops = set()
    for epoch in range(4):
        r.set_epoch(epoch)
        crops.add(r[1].rgbd.tobytes())
    assert len(crops) == 4
    coco = read_ntu_hcmoco(tmp_path, joint_set="coco13", crop_size=32)[0]
    assert coco.norm_joints.shape == (13, 2) and coco.joints_vis.shape == (13,)


# ================================================================================================ Human3.6M parsing
def _write_h36m_parsing(root, split_lines: dict[str, list[str]], size=(48, 40)):
    W, H = size
    labels = {}
    for split, lines in split_lines.items():
        (root / f"flist_2hz_{split}.txt").write_text("".join(f"{ln}\n" for ln in lines))
        for ln in lines:
            img = root / ln
            seg = root / ln.replace("/rgb/", "/seg/")
            img.parent.mkdir(parents=True, exist_ok=True)
            seg.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(img), RNG.integers(0, 256, (H, W, 3)).astype(np.uint8))
            raw = RAW[RNG.integers(0, 25, (H, W))].astype(np.uint8)
            cv2.imwrite(str(seg), raw)
            labels[ln] = raw
    return labels


def test_h36m_parsing_reader(tmp_path):
    train = ["protocol_1/rgb/S1/Directions 1.54138969/00000000.png",
             "protocol_1/rgb/S5/Walking 2.60457274/00000025.png"]
    raw = _write_h36m_parsing(tmp_path, {"train": train, "eval": ["protocol_1/rgb/S9/Eating.55011271/00000050.png"]})
    r = read_h36m_parsing(tmp_path, "train")
    assert len(r) == 2 and len(read_h36m_parsing(tmp_path, "eval")) == 1
    s = r[1]
    assert s.image_id == "S5/Walking 2.60457274/00000025.png" and s.identity == "S5"
    assert s.meta["label_path"] == str(tmp_path / "protocol_1/seg/S5/Walking 2.60457274/00000025.png")
    d = r.load(1)
    ref = np.vectorize({int(v): c for c, v in enumerate(PARSING_RAW_IDS)}.get)(raw[train[1]])
    np.testing.assert_array_equal(d["label"], ref)
    assert d["image"].shape == (40, 48, 3) and d["label"].dtype == np.uint8
    # an id outside the raw table, a label of another size, a list line without rgb/ are all named
    seg = tmp_path / train[0].replace("/rgb/", "/seg/")
    bad = raw[train[0]].copy()
    bad[3, 4] = 20
    cv2.imwrite(str(seg), bad)
    _raises(lambda: r.load(0), str(seg), "[20]")
    cv2.imwrite(str(seg), np.zeros((40, 47), np.uint8))
    _raises(lambda: r.load(0), str(seg), "47x40", "48x40")
    (tmp_path / "flist_2hz_train.txt").write_text(train[0] + "\nS1/x/00000000.png\n")
    _raises(lambda: read_h36m_parsing(tmp_path, "train"), "flist_2hz_train.txt", "line 2")
    _raises(lambda: read_h36m_parsing(tmp_path, "nope"), "unknown split")


# ================================================================================================ Parsing-4K
def _write_parsing_4k(root, lists: dict[str, list[str]], size=(64, 48), rgb_size=None):
    W, H = size
    ids = sorted({i for ids in lists.values() for i in ids})
    for sub in ("images", "depth", "png_annotation_v2"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in ids:
        rw, rh = rgb_size or size
        cv2.imwrite(str(root / "images" / f"{i}.jpg"), RNG.integers(0, 256, (rh, rw, 3)).astype(np.uint8))
        cv2.imwrite(str(root / "depth" / f"MDepth-{i}.png"), RNG.integers(0, 4000, (H, W)).astype(np.uint16))
        cv2.imwrite(str(root / "png_annotation_v2" / f"{i}.png"), RAW[RNG.integers(0, 25, (H, W))].astype(np.uint8))
    for name, entries in lists.items():
        (root / name).write_text("".join(f"images/{i}.jpg\n" for i in entries))


def test_nturgbd_parsing_reader_full_and_20_percent(tmp_path):
    ids = [f"S001C00{c}P00{p}R001A0{a}F0{f}" for c, p, a, f in
           ((1, 1, 10, 60), (2, 3, 22, 40), (3, 4, 49, 50), (1, 5, 31, 30), (2, 6, 17, 70))]
    val = ["S023C002P056R002A091F040"]
    _write_parsing_4k(tmp_path, {"train_list_v2.txt": ids, "train_list_v3.txt": twenty_percent(ids),
                                 "val_list_v2.txt": val, "val_list_v3.txt": val})
    full = read_nturgbd_parsing(tmp_path, "train")
    few = read_nturgbd_parsing(tmp_path, "train", "20%")
    assert [s.image_id for s in full] == ids and [s.image_id for s in few] == ids[:1]
    assert len(read_nturgbd_parsing(tmp_path, "val", "20%")) == 1
    # the published 20% lists are the first int(0.2 n) lines: 392 of 1963
    assert len(twenty_percent(list(range(1963)))) == 392 and twenty_percent(ids) == ids[:1]
    s = full[2]
    assert s.attributes == {"setup": 1, "camera": 3, "performer": 4, "replication": 1, "action": 49, "frame": 50}
    assert s.depth_path == str(tmp_path / "depth" / f"MDepth-{ids[2]}.png")
    d = full.load(2)
    assert d["depth"].shape == d["label"].shape == (48, 64) and d["image"].shape == (48, 64, 3)
    raw = cv2.imread(str(tmp_path / "png_annotation_v2" / f"{ids[2]}.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(RAW[d["label"]], raw)
    # depth-task input: metres, minus the mean of the nonzero pixels, background 0, 3 channels
    x = parsing_depth_input(d["depth"])
    m = d["depth"] / 1000.0
    ref = np.where(m != 0, m - m[m != 0].mean(), 0.0)
    assert x.shape == (3, 48, 64)
    for c in range(3):
        np.testing.assert_allclose(x[c], ref, atol=1e-6)
    _raises(lambda: read_nturgbd_parsing(tmp_path, "train", "50%"), "unknown subset")
    (tmp_path / "train_list_v2.txt").write_text("images/S001C001.jpg\n")
    _raises(lambda: read_nturgbd_parsing(tmp_path, "train"), "train_list_v2.txt", "line 1", "S001C001")


def test_nturgbd_parsing_depth_rgb_size_mismatch(tmp_path):
    fid = "S001C001P001R001A001F060"
    _write_parsing_4k(tmp_path, {"train_list_v2.txt": [fid]}, size=(64, 48), rgb_size=(80, 48))
    r = read_nturgbd_parsing(tmp_path, "train")
    depth, rgb = tmp_path / "depth" / f"MDepth-{fid}.png", tmp_path / "images" / f"{fid}.jpg"
    _raises(lambda: r.load(0), str(depth), "64x48", str(rgb), "80x48")
    assert read_nturgbd_parsing(tmp_path, "train", with_rgb=False).load(0)["depth"].shape == (48, 64)


# ================================================================================================ round trips
def test_ntu_writer_round_trip(tmp_path):
    assert {"ntu_hcmoco", "h36m_parsing", "nturgbd_parsing"} <= set(FORMATS)
    size = (96, 80)
    summary = generate_ntu_hcmoco(tmp_path, 5, size=size, seed=4, frames_per_video=2, missing_videos=1,
                                  point_cloud_points=32)
    assert summary["frames"] == 5 and summary["videos"] == 3
    r = read_ntu_hcmoco(tmp_path, crop_size=48)
    assert len(r) == 5 and r.excluded == [ntu_tag(3)]
    assert [t for t, _ in r.frames] == [ntu_tag(0)] * 2 + [ntu_tag(1)] * 2 + [ntu_tag(2)]
    sel = select_joints("ntu25")
    cfg = SceneConfig(size=size)
    for i in range(5):
        cam = kinect_camera(np.random.default_rng([4, i, 11]), size)
        view = generate_frame(cfg, 4, i, cameras=[cam]).views[0]
        f = r.frame(i)
        np.testing.assert_allclose(f["d_loc"], view.keypoints_2d[0, sel], atol=1e-3)
        np.testing.assert_allclose(f["3d_loc"], view.keypoints_cam[0, sel] * [1, -1, 1] / 1000, atol=1e-5)
        np.testing.assert_array_equal(f["depth"], np.rint(np.where(view.instances == 1, view.depth, 0)))
        assert f["rgb"].shape == (80, 96, 3)
        s = r[i]
        assert s.rgbd.shape == (6, 48, 48) and s.norm_joints.shape == (16, 2)
        # the point clouds back-project the masked depth through the Kinect intrinsics
        tag, n = r.frames[i]
        pts = np.load(tmp_path / "nturgb+d_point_cloud" / tag / f"PC-{n:08d}.npy")
        assert pts.shape == (32, 3) and pts.dtype == np.float32
        uv = pts[:, :2] / pts[:, 2:] * np.diag(cam.K)[:2] + cam.K[:2, 2]
        rows, cols = np.rint(uv[:, 1]).astype(int), np.rint(uv[:, 0]).astype(int)
        np.testing.assert_allclose(pts[:, 2] * 1000, f["depth"][rows, cols], atol=0.51)  # file: rounded mm
    # deterministic for a seed, whatever the number of workers
    generate_ntu_hcmoco(tmp_path / "again", 2, size=size, seed=4, frames_per_video=2, workers=2)
    for sub, name in (("nturgb+d_parsed_skeleton", "Skeleton-00000001.pkl"), ("nturgb+d_depth_masked",
                                                                               "MDepth-00000002.png")):
        assert (tmp_path / sub / ntu_tag(0) / name).read_bytes() == \
            (tmp_path / "again" / sub / ntu_tag(0) / name).read_bytes()


def test_parsing_writers_round_trip(tmp_path):
    size = (64, 64)
    generate("h36m_parsing", tmp_path / "h36m", {"train": 3, "val": 2}, size=size, seed=1, frames_per_sequence=2)
    cfg = SceneConfig(size=size)
    for split, subjects in (("train", {"S1", "S5", "S6", "S7", "S8"}), ("eval", {"S9", "S11"})):
        r = read_h36m_parsing(tmp_path / "h36m", split)
        assert len(r) == (3 if split == "train" else 2)
        for i in range(len(r)):
            s = r[i]
            assert s.identity in subjects and int(s.attributes["frame"]) == (i % 2) * 25
            view = generate_frame(cfg, 1, split_offset(split) + i).views[0]
            d = r.load(i)
            np.testing.assert_array_equal(d["label"], parsing_labels(view))
            np.testing.assert_array_equal(d["image"], view.rgb)  # png: lossless
    size = (96, 80)
    generate_nturgbd_parsing(tmp_path / "p4k", {"train": 6, "val": 5}, size=size, seed=2)
    cfg = SceneConfig(size=size)
    k = 0
    for split, n in (("train", 6), ("val", 5)):
        full = read_nturgbd_parsing(tmp_path / "p4k", split)
        few = read_nturgbd_parsing(tmp_path / "p4k", split, "20%")
        assert len(full) == n and [s.image_id for s in few] == [s.image_id for s in full][: int(0.2 * n)]
        for i in range(n):
            cam = kinect_camera(np.random.default_rng([2, split_offset(split) + i, 11]), size)
            view = generate_frame(cfg, 2, split_offset(split) + i, cameras=[cam]).views[0]
            d = full.load(i)
            assert full[i].image_id.startswith(ntu_tag(k))
            np.testing.assert_array_equal(d["label"], parsing_labels(view))
            np.testing.assert_array_equal(d["depth"], np.rint(np.where(view.instances == 1, view.depth, 0)))
            k += 1
