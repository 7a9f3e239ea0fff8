"""Readers of the official formats, on small fixtures written here in each format."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

import humanvision.data.io as hio
from humanvision.data import (
    H36M_MOCAP_TO_H36M17,
    AicKeypoints,
    CocoDetections,
    CocoKeypoints,
    Human36MMultiView,
    Human36MPoses,
    ItopReader,
    MpiiJson,
    MultiModalReader,
    MultiViewSample,
    Sample,
    read_h36m_cdf,
    read_mpii_gt_mat,
    write_depth,
    write_image,
    write_multimodal_index,
)
from humanvision.errors import DataError
from humanvision.geometry import Camera

RNG = np.random.default_rng(0)


def _dump(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def _raises(fn, *parts: str) -> DataError:
    """Call ``fn``; it must raise a DataError whose message contains every part (file, record, field)."""
    with pytest.raises(DataError) as e:
        fn()
    for p in parts:
        assert p in str(e.value), f"{p!r} not in {str(e.value)!r}"
    return e.value


def collate_loaded(samples):
    """DataLoader collate for the tests: decode each sample's pixels, keep (index, image shape)."""
    return [(s.index, s.load_image().shape if s.image is not None else s.load_depth().shape) for s in samples]


# ================================================================================================ COCO
def _coco_kp(k, n_labelled, rng=RNG, v=2):
    kp = np.zeros((k, 3))
    kp[:n_labelled, :2] = rng.uniform(5, 60, (n_labelled, 2)).round(2)
    kp[:n_labelled, 2] = v
    return kp


def _coco_doc(k=17, names=None):
    images = [{"id": 10, "file_name": "a.png", "width": 64, "height": 48},
              {"id": 11, "file_name": "b.png", "width": 80, "height": 60},
              {"id": 12, "file_name": "c.png", "width": 32, "height": 32}]
    kps = {i: _coco_kp(k, n) for i, n in ((1, 5), (2, 0), (3, 7), (4, 3), (5, 4))}
    kps[1][1, 2] = 1  # labelled but occluded
    anns = [
        {"id": 1, "image_id": 10, "category_id": 1, "bbox": [3.0, 4.0, 20.0, 30.0], "area": 400.0,
         "iscrowd": 0,
         "num_keypoints": 5, "keypoints": kps[1].ravel().tolist()},
        {"id": 2, "image_id": 10, "category_id": 1, "bbox": [1.0, 1.0, 5.0, 5.0], "area": 25.0, "iscrowd": 0,
         "num_keypoints": 0, "keypoints": kps[2].ravel().tolist()},
        # partly outside the 80x60 image: cleaned to x1=0, y1=50, x2=min(79, 0+29)=29, y2=min(59, 50+19)=59
        {"id": 3, "image_id": 11, "category_id": 1, "bbox": [-5.0, 50.0, 30.0, 20.0], "area": 300.0,
         "iscrowd": 0,
         "num_keypoints": 7, "keypoints": kps[3].ravel().tolist()},
        {"id": 4, "image_id": 11, "category_id": 1, "bbox": [10.0, 10.0, 10.0, 10.0], "area": 100.0,
         "iscrowd": 1,
         "num_keypoints": 3, "keypoints": kps[4].ravel().tolist()},
        {"id": 5, "image_id": 11, "category_id": 1, "bbox": [10.0, 10.0, 0.5, 10.0], "area": 5.0,
         "iscrowd": 0,
         "num_keypoints": 4, "keypoints": kps[5].ravel().tolist()},
        # another category
        {"id": 6, "image_id": 10, "category_id": 2, "bbox": [0, 0, 1, 1], "keypoints": []},
    ]
    cat = {"id": 1, "name": "person", "keypoints": names or [f"j{i}" for i in range(k)]}
    return {"images": images, "annotations": anns, "categories": [cat]}, kps


def test_coco_instance_mode_roundtrip_and_0x_cleaning(tmp_path):
    doc, kps = _coco_doc()
    f = _dump(tmp_path / "ann" / "kp.json", doc)
    r = CocoKeypoints(f, image_root=tmp_path / "img")
    # ann 2 (num_keypoints 0), ann 4 (crowd) and ann 5 (box collapses: w - 1 < 0) are dropped; ann 6 other
    # category
    assert len(r) == 2
    a, b = r[0], r[1]
    assert isinstance(a, Sample) and a.validate() is a
    assert a.ann_ids.tolist() == [1] and a.image_id == 10 and b.ann_ids.tolist() == [3] and b.image_id == 11
    np.testing.assert_allclose(a.keypoints_2d[0], kps[1][:, :2], atol=1e-5)
    assert a.visibility[0].tolist() == [1.0] * 5 + [0.0] * 12  # v=1 and v=2 both count as labelled
    assert a.meta["visibility_flags"][0, :5].tolist() == [2, 1, 2, 2, 2]
    np.testing.assert_allclose(a.boxes, [[3, 4, 19, 29]])  # 0.x: x2 = x1 + w - 1
    np.testing.assert_allclose(b.boxes, [[0, 50, 29, 9]])
    assert a.image_path == str(tmp_path / "img" / "a.png") and a.meta["width"] == 64
    assert a.skeleton == "coco17" and a.source == str(f) and r[-1].index == 1


def test_coco_options_keep_everything_and_image_mode(tmp_path):
    doc, kps = _coco_doc()
    f = _dump(tmp_path / "kp.json", doc)
    r = CocoKeypoints(f, clean_boxes=False, min_keypoints=0, drop_crowd=False)
    assert len(r) == 5 and r[4].boxes.tolist() == [[10, 10, 0.5, 10]]
    im = CocoKeypoints(f, mode="image", clean_boxes=False)
    assert len(im) == 3
    s10, s11, s12 = im[0], im[1], im[2]
    assert s10.ann_ids.tolist() == [1, 2] and s11.ann_ids.tolist() == [3, 4, 5]
    assert s11.meta["iscrowd"].tolist() == [0, 1, 0]
    assert s12.num_instances == 0 and s12.validate().keypoints_2d.shape == (0, 17, 2)
    np.testing.assert_allclose(s11.keypoints_2d[1], kps[4][:, :2], atol=1e-5)
    assert len(CocoKeypoints(f, mode="image", min_keypoints=1)[0].ann_ids) == 1


def test_aic_and_any_skeleton(tmp_path):
    doc, _kps = _coco_doc(k=14)
    f = _dump(tmp_path / "aic_val.json", doc)
    r = AicKeypoints(f)
    assert r.skeleton.name == "aic14" and r[0].keypoints_2d.shape == (1, 14, 2)
    r[0].validate()
    assert len(CocoKeypoints(f, skeleton="crowdpose14")) == 2
    # a 14-joint file read as COCO: the category check, then the per-annotation count check
    _raises(lambda: CocoKeypoints(f), "aic_val.json", "category 1", "field keypoints", "has 17 joints")
    del doc["categories"]
    f2 = _dump(tmp_path / "nocat.json", doc)
    _raises(lambda: CocoKeypoints(f2), "nocat.json", "annotation 1", "field keypoints",
            "42 values, expected 51")


@pytest.mark.parametrize("mutate, parts", [
    (lambda d: d["annotations"][2].pop("keypoints"), ["annotation 3", "field keypoints", "missing field"]),
    (lambda d: d["annotations"][2].update(bbox=[1, 2, 3]), ["annotation 3", "field bbox", "shape (3,)"]),
    (lambda d: d["annotations"][2].update(image_id=99), ["annotation 3", "field image_id", "99"]),
    (lambda d: d["annotations"][0]["keypoints"].__setitem__(2, 3), ["annotation 1", "field keypoints",
                                                                    "0, 1 or 2"]),
    (lambda d: d["annotations"][0]["keypoints"].__setitem__(0, "x"), ["annotation 1", "field keypoints",
                                                                      "numeric"]),
    (lambda d: d["images"][1].pop("width"), ["image 11", "field width"]),
    (lambda d: d["images"].append(dict(d["images"][0])), ["image 10", "duplicate"]),
    (lambda d: d.pop("annotations"), ["field annotations"]),
    (lambda d: d["annotations"][1].pop("id"), ["annotation #1", "field id"]),
])
def test_coco_malformed_inputs_name_file_record_field(tmp_path, mutate, parts):
    doc, _ = _coco_doc()
    mutate(doc)
    f = _dump(tmp_path / "bad.json", doc)
    _raises(lambda: CocoKeypoints(f), "bad.json", *parts)


def test_coco_bad_files_and_skeleton(tmp_path):
    _raises(lambda: CocoKeypoints(tmp_path / "missing.json"), "missing.json", "file not found")
    (tmp_path / "broken.json").write_text('{"images": [')
    _raises(lambda: CocoKeypoints(tmp_path / "broken.json"), "broken.json", "not valid JSON", "line 1")
    doc, _ = _coco_doc()
    f = _dump(tmp_path / "ok.json", doc)
    _raises(lambda: CocoKeypoints(f, skeleton="nonsense"), "ok.json", "field skeleton", "unknown skeleton")


def test_coco_detections(tmp_path):
    doc, _ = _coco_doc()
    gt = _dump(tmp_path / "kp.json", doc)
    dets = [{"image_id": 10, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.9},
            {"image_id": 11, "category_id": 1, "bbox": [5, 6, 7, 8], "score": 0.2},
            {"image_id": 11, "category_id": 2, "bbox": [0, 0, 1, 1], "score": 1.0},
            {"image_id": 11, "category_id": 1, "bbox": [9, 9, 9, 9], "score": 0.7}]
    f = _dump(tmp_path / "dets.json", dets)
    r = CocoDetections(f, gt)
    assert len(r) == 3 and r[1].scores.tolist() == pytest.approx([0.2])
    assert r[2].boxes.tolist() == [[9, 9, 9,
                                    9]] and r[2].image_id == 11 and r[2].meta["detection_index"] == [3]
    assert r[0].image_path == str(tmp_path / "a.png") and r[0].keypoints_2d is None
    r[0].validate()
    thr = CocoDetections(f, gt, score_threshold=0.5)
    assert [s.scores[0] for s in thr] == pytest.approx([0.9, 0.7])
    per_image = CocoDetections(f, gt, mode="image")
    assert [s.num_instances for s in per_image] == [1, 2, 0]
    _raises(lambda: CocoDetections(_dump(tmp_path / "d2.json", dets + [{"image_id": 5, "category_id": 1,
                                                                         "bbox": [0, 0, 1, 1], "score": 1}]),
                                                                         gt),
            "d2.json", "detection #4", "field image_id")
    _raises(lambda: CocoDetections(_dump(tmp_path / "d3.json", [{"image_id": 10, "category_id": 1,
                                                                 "bbox": [0, 0, 1, 1]}]),
                                   gt), "d3.json", "detection #0", "field score")
    _raises(lambda: CocoDetections(_dump(tmp_path / "d4.json", {"x": 1}), gt), "d4.json",
            "expected a JSON list")


# ================================================================================================ lazy +
# workers
def test_reader_with_1000_images_decodes_nothing(tmp_path, monkeypatch):
    images = [{"id": i, "file_name": f"{i:06d}.jpg", "width": 100, "height": 100} for i in range(1000)]
    anns = [{"id": i, "image_id": i, "category_id": 1, "bbox": [10, 10, 50, 50], "area": 2500.0,
             "keypoints": _coco_kp(17, 3).ravel().tolist()} for i in range(1000)]
    f = _dump(tmp_path / "big.json", {"images": images, "annotations": anns})
    calls = []
    monkeypatch.setattr(hio.cv2, "imdecode", lambda *a: calls.append(a))
    monkeypatch.setattr(hio.np, "fromfile", lambda *a, **k: calls.append(a))
    r = CocoKeypoints(f, image_root=tmp_path / "nowhere")
    assert len(r) == 1000
    samples = [r[i] for i in range(len(r))]
    pickle.loads(pickle.dumps(r))
    assert calls == [] and all(s.is_lazy for s in samples)
    monkeypatch.undo()
    _raises(samples[5].load_image, str(tmp_path / "nowhere" / "000005.jpg"), "file not found")


def test_dataloader_workers_iterate_readers(tmp_path):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    doc, _ = _coco_doc()
    for im in doc["images"]:
        write_image(tmp_path / im["file_name"], np.zeros((im["height"], im["width"], 3), np.uint8))
    r = CocoKeypoints(_dump(tmp_path / "kp.json", doc), mode="image")
    itop = ItopReader(*_write_itop(tmp_path)[:2])
    for reader, shapes in ((r, {0: (48, 64, 3), 1: (60, 80, 3), 2: (32, 32, 3)}), (itop, None)):
        loader = torch.utils.data.DataLoader(reader, batch_size=2, num_workers=2, collate_fn=collate_loaded)
        got = dict(x for batch in loader for x in batch)
        assert sorted(got) == list(range(len(reader)))
        if shapes:
            assert got == shapes
        else:
            assert set(got.values()) == {(24, 32)}


# ================================================================================================ MPII
def _mpii_records():
    recs = []
    for i in range(3):
        joints = RNG.uniform(10, 200, (16, 2)).round(1)
        vis = (RNG.uniform(size=16) > 0.3).astype(int)
        recs.append({"image": f"{i:09d}.jpg", "center": [100.0 + i, 80.0], "scale": 1.5 + i,
                     "joints": joints.tolist(), "joints_vis": vis.tolist()})
    return recs


def test_mpii_json_one_based_to_zero_based(tmp_path):
    recs = _mpii_records()
    f = _dump(tmp_path / "annot" / "mpii_val.json", recs)
    r = MpiiJson(f, image_root=tmp_path / "images")
    assert len(r) == 3 and r.skeleton.name == "mpii16"
    s = r[1].validate()
    np.testing.assert_allclose(s.keypoints_2d[0], np.array(recs[1]["joints"]) - 1, atol=1e-4)
    assert s.visibility[0].tolist() == recs[1]["joints_vis"]
    np.testing.assert_allclose(s.meta["center"], [[100.0, 79.0]])
    assert s.meta["scale"].tolist() == [2.5]
    np.testing.assert_allclose(s.boxes, [[100 - 250, 79 - 250, 500, 500]])
    assert s.image_path == str(tmp_path / "images" / "000000001.jpg") and s.image_id == "000000001.jpg"
    z = MpiiJson(f, one_based=False)[1]
    np.testing.assert_allclose(z.keypoints_2d[0], recs[1]["joints"], atol=1e-4)
    test = MpiiJson(_dump(tmp_path / "test.json", [{"image": "x.jpg", "center": [5, 5], "scale": 1.0}]),
                    with_joints=False)
    assert test[0].keypoints_2d is None and test[0].validate().boxes.shape == (1, 4)


@pytest.mark.parametrize("mutate, parts", [
    (lambda r: r[1].update(joints=r[1]["joints"][:15]), ["person #1 (000000001.jpg)", "field joints",
                                                         "(15, 2)"]),
    (lambda r: r[2].pop("joints_vis"), ["person #2", "field joints_vis", "missing"]),
    (lambda r: r[0]["joints_vis"].__setitem__(0, 2), ["person #0", "field joints_vis", "0 or 1"]),
    (lambda r: r[0].update(scale=-1), ["person #0", "field scale", "positive"]),
    (lambda r: r[0].update(center=[1, 2, 3]), ["person #0", "field center"]),
])
def test_mpii_json_malformed(tmp_path, mutate, parts):
    recs = _mpii_records()
    mutate(recs)
    f = _dump(tmp_path / "bad_mpii.json", recs)
    _raises(lambda: MpiiJson(f), "bad_mpii.json", *parts)
    _raises(lambda: MpiiJson(f, skeleton="coco17"), "bad_mpii.json")


def _mpii_mat(n=4):
    import scipy.io  # noqa: F401

    names = ["rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor", "neck", "head", "rwri", "relb",
             "rsho", "lsho", "lelb", "lwri"]
    cells = np.empty((1, 16), dtype=object)
    for i, nme in enumerate(names):
        cells[0, i] = np.array([nme])
    pos = RNG.uniform(1, 300, (16, 2, n))
    missing = (RNG.uniform(size=(16, n)) > 0.8).astype(np.uint8)
    heads = np.stack([RNG.uniform(0, 50, (2, n)), RNG.uniform(60, 120, (2, n))])  # (corner, xy, n)
    return {"dataset_joints": cells, "jnt_missing": missing, "pos_gt_src": pos, "headboxes_src": heads}, names


def test_mpii_gt_mat_roundtrip(tmp_path):
    import scipy.io

    mat, names = _mpii_mat()
    scipy.io.savemat(tmp_path / "mpii_gt_val.mat", mat)
    gt = read_mpii_gt_mat(tmp_path / "mpii_gt_val.mat")
    assert gt.joint_names == names and len(gt) == 4
    np.testing.assert_allclose(gt.keypoints[2], mat["pos_gt_src"][:, :, 2])
    assert gt.missing.shape == (4, 16) and gt.missing.dtype == bool
    np.testing.assert_array_equal(gt.missing, mat["jnt_missing"].T.astype(bool))
    diag = mat["headboxes_src"][1, :, 3] - mat["headboxes_src"][0, :, 3]
    assert gt.head_sizes()[3] == pytest.approx(0.6 * np.hypot(*diag))
    # names stored as a char matrix instead of a cell array read the same
    scipy.io.savemat(tmp_path / "chars.mat", {**mat, "dataset_joints": np.array(names)})
    assert read_mpii_gt_mat(tmp_path / "chars.mat").joint_names == names


@pytest.mark.parametrize("key, value, parts", [
    ("pos_gt_src", None, ["field pos_gt_src", "missing"]),
    ("pos_gt_src", np.zeros((16, 3, 4)), ["field pos_gt_src", "(16, 2, N)"]),
    ("jnt_missing", np.zeros((16, 5)), ["field jnt_missing", "(16, 4)"]),
    ("headboxes_src", np.zeros((2, 2, 3)), ["field headboxes_src", "(2, 2, 4)"]),
    ("dataset_joints", np.array(["a", "b"]), ["field dataset_joints", "2 joint names"]),
])
def test_mpii_gt_mat_malformed(tmp_path, key, value, parts):
    import scipy.io

    mat, _ = _mpii_mat()
    if value is None:
        del mat[key]
    else:
        mat[key] = value
    scipy.io.savemat(tmp_path / "gt.mat", mat)
    _raises(lambda: read_mpii_gt_mat(tmp_path / "gt.mat"), "gt.mat", *parts)


def test_mpii_gt_mat_not_a_mat_file(tmp_path):
    (tmp_path / "junk.mat").write_bytes(b"this is not matlab")
    _raises(lambda: read_mpii_gt_mat(tmp_path / "junk.mat"), "junk.mat", "not a readable MATLAB file")


# ================================================================================================ Human3.6M
def _rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _h36m_labels(n_frames=6):
    subjects, cams = ["S1", "S9"], ["54138969", "55011271", "58860488", "60457274"]
    actions = ["Directions-1", "Greeting-2", "Walking-1"]
    cam_dtype = [("R", np.float32, (3, 3)), ("t", np.float32, (3, 1)), ("K", np.float32, (3, 3)),
                 ("dist", np.float32, 5)]
    cameras = np.empty((2, 4), dtype=cam_dtype)
    for s in range(2):
        for c in range(4):
            cameras[s, c]["R"] = _rotation(RNG)
            cameras[s, c]["t"] = RNG.uniform(-500, 500, (3, 1)) + [[0], [0], [5000]]
            cameras[s, c]["K"] = [[1145.0 + c, 0, 512.5], [0, 1144.0, 515.4], [0, 0, 1]]
            cameras[s, c]["dist"] = RNG.normal(0, 0.01, 5)
    table_dtype = [("subject_idx", np.int8), ("action_idx", np.int8), ("frame_idx", np.int16),
                   ("keypoints", np.float32, (17, 3)), ("bbox_by_camera_tlbr", np.int16, (4, 4))]
    table = np.empty(n_frames, dtype=table_dtype)
    table["subject_idx"] = [0, 0, 0, 1, 1, 1]
    table["action_idx"] = [0, 0, 2, 1, 1, 0]
    table["frame_idx"] = [0, 5, 3, 0, 1, 7]
    table["keypoints"] = RNG.uniform(-800, 800, (n_frames, 17, 3))
    bb = np.tile(np.array([100, 200, 500, 600], np.int16), (n_frames, 4, 1))
    bb[:, :, 0] += np.arange(4, dtype=np.int16)  # distinct tops per camera
    bb[1, 2] = 0  # frame 1: camera 58860488 missing
    bb[5] = 0  # frame 5: every view missing -> dropped
    table["bbox_by_camera_tlbr"] = bb
    return {"subject_names": subjects, "camera_names": cams, "action_names": actions, "cameras": cameras,
            "table": table}


def test_h36m_multiview_labels_roundtrip(tmp_path):
    labels = _h36m_labels()
    np.save(tmp_path / "human36m-multiview-labels-GTbboxes.npy", labels)
    f = tmp_path / "human36m-multiview-labels-GTbboxes.npy"
    r = Human36MMultiView(f, tmp_path / "processed")
    assert len(r) == 5  # the frame with no view is dropped
    s = r[1]
    assert isinstance(s, MultiViewSample) and s.validate() is s
    assert s.view_names == ["54138969", "55011271", "60457274"] and s.meta["view_mask"].tolist() == [1, 1, 0,
                                                                                                     1]
    np.testing.assert_allclose(s.keypoints_3d[0], labels["table"]["keypoints"][1])
    v = s.views[2]
    assert v.image_path == str(tmp_path / "processed" / "S1" / "Directions-1" / "imageSequence-undistorted" /
                               "60457274" / "img_000006.jpg")
    assert v.boxes.tolist() == [[200, 103, 400, 397]]  # tlbr (103, 200, 500, 600) -> xywh
    cam = labels["cameras"][0, 3]
    np.testing.assert_allclose(v.camera.K, cam["K"], rtol=1e-6)
    np.testing.assert_allclose(v.camera.R, cam["R"], atol=1e-6)
    np.testing.assert_allclose(v.camera.t, cam["t"][:, 0], rtol=1e-6)
    assert v.camera.dist is None and v.camera.name == "60457274" and (v.camera.width,
                                                                      v.camera.height) == (1000, 1002)
    # the world keypoints project through the view's camera exactly as x = K (R X + t)
    X = s.keypoints_3d[0].astype(np.float64)
    xc = X @ cam["R"].T.astype(np.float64) + cam["t"][:, 0]
    uv = xc @ cam["K"].T.astype(np.float64)
    np.testing.assert_allclose(v.camera.project(X), uv[:, :2] / uv[:, 2:], rtol=1e-5)
    assert s.identity == "S1" and s.attributes["action"] == "Directions-1" and s.meta["frame_idx"] == 5

    raw = Human36MMultiView(f, tmp_path, undistorted=False)
    c = raw[0].views[0].camera
    assert raw[0].views[0].image_path.endswith("S1/Directions-1/imageSequence/54138969/img_000001.jpg")
    assert c.dist_model == "h36m" and np.allclose(c.dist, labels["cameras"][0, 0]["dist"])


def test_h36m_multiview_filters(tmp_path):
    np.save(tmp_path / "labels.npy", _h36m_labels())
    f = tmp_path / "labels.npy"
    assert len(Human36MMultiView(f, tmp_path, subjects=["S9"])) == 2
    assert len(Human36MMultiView(f, tmp_path, subjects=["S9"], with_damaged_actions=False)) == 0
    assert len(Human36MMultiView(f, tmp_path, min_views=4)) == 4
    assert Human36MMultiView(f, tmp_path, every_n=2).rows.tolist() == [0, 2, 4]
    _raises(lambda: Human36MMultiView(f, tmp_path, subjects=["S2"]), "labels.npy", "unknown subjects ['S2']")
    r = pickle.loads(pickle.dumps(Human36MMultiView(f, tmp_path)))
    assert len(r[0].views) == 4


@pytest.mark.parametrize("mutate, parts", [
    (lambda d: d.pop("cameras"), ["field cameras", "missing"]),
    (lambda d: d.update(table=d["table"][["subject_idx", "action_idx", "frame_idx", "keypoints"]]),
     ["field table", "bbox_by_camera_tlbr"]),
    (lambda d: d["table"]["subject_idx"].__setitem__(3, 5), ["table row 3", "field table.subject_idx",
                                                             "0..1"]),
    (lambda d: d["cameras"]["R"].__setitem__((1, 2), np.eye(3) * 2), ["subject S9 camera 58860488",
                                                                      "cameras.R"]),
    (lambda d: d.update(camera_names=d["camera_names"][:3]), ["field cameras", "(2 subjects, 3 cameras)"]),
])
def test_h36m_multiview_malformed(tmp_path, mutate, parts):
    labels = _h36m_labels()
    mutate(labels)
    np.save(tmp_path / "bad_labels.npy", labels)
    _raises(lambda: Human36MMultiView(tmp_path / "bad_labels.npy", tmp_path), "bad_labels.npy", *parts)


def test_h36m_multiview_keypoint_count_checked(tmp_path):
    labels = _h36m_labels()
    t = labels["table"]
    dt = [(n, t.dtype[n].base, t.dtype[n].shape) for n in t.dtype.names]
    dt[3] = ("keypoints", np.float32, (16, 3))
    t16 = np.empty(len(t), dtype=dt)
    for n in t.dtype.names:
        t16[n] = t[n][:, :16] if n == "keypoints" else t[n]
    labels["table"] = t16
    np.save(tmp_path / "k16.npy", labels)
    _raises(lambda: Human36MMultiView(tmp_path / "k16.npy", tmp_path), "k16.npy", "field table.keypoints",
            "(16, 3)", "expected (17, 3)")
    (tmp_path / "notnpy.npy").write_bytes(b"garbage")
    _raises(lambda: Human36MMultiView(tmp_path / "notnpy.npy", tmp_path), "notnpy.npy", "not an .npy file")


def _write_cdf(path: Path, pose: np.ndarray) -> Path:
    from cdflib.cdfwrite import CDF

    path.parent.mkdir(parents=True, exist_ok=True)
    data = pose.reshape(1, len(pose), -1)  # H36M stores one record of shape (T, 32 * D)
    c = CDF(str(path), delete=True)
    c.write_var({"Variable": "Pose", "Data_Type": CDF.CDF_DOUBLE, "Num_Elements": 1, "Rec_Vary": True,
                 "Dim_Sizes": list(data.shape[1:])}, var_data=data)
    c.close()
    return path


def test_h36m_cdf_conversion_and_reader(tmp_path):
    pytest.importorskip("cdflib")
    mocap = RNG.uniform(-1000, 1000, (7, 32, 3))
    root = tmp_path / "h36m"
    f1 = _write_cdf(root / "S1" / "MyPoseFeatures" / "D3_Positions" / "Directions 1.cdf", mocap)
    _write_cdf(root / "S5" / "MyPoseFeatures" / "D3_Positions" / "Walking.cdf", mocap[:3])
    _write_cdf(root / "S1" / "MyPoseFeatures" / "D3_Positions_mono" / "Directions 1.54138969.cdf", mocap[:2])
    h17 = read_h36m_cdf(f1)
    assert h17.shape == (7, 17, 3) and h17.dtype == np.float32
    np.testing.assert_allclose(h17, mocap[:, list(H36M_MOCAP_TO_H36M17)], rtol=1e-6)
    np.testing.assert_allclose(h17[:, 6], mocap[:, 0], rtol=1e-6)  # pelvis is mocap joint 0
    np.testing.assert_allclose(h17[:, 9], mocap[:, 15], rtol=1e-6)  # head top is mocap joint 15
    assert read_h36m_cdf(f1, joints="mocap32").shape == (7, 32, 3)

    r = Human36MPoses(root)
    assert len(r) == 10
    s = r[8].validate()
    assert s.attributes == {"subject": "S5", "action": "Walking"} and s.meta["frame"] == 1
    assert s.keypoints_3d_frame == "world"
    np.testing.assert_allclose(s.keypoints_3d[0], h17[1], rtol=1e-6)
    assert len(Human36MPoses(root, subjects=["S1"], every_n=3)) == 3
    mono = Human36MPoses(root, kind="D3_Positions_mono")
    assert len(mono) == 2 and mono[0].keypoints_3d_frame == "camera"
    assert mono[0].attributes["camera"] == "54138969"
    assert len(pickle.loads(pickle.dumps(r))) == 10

    d2 = _write_cdf(tmp_path / "x" / "S1" / "MyPoseFeatures" / "D2_Positions" / "Sit.cdf", mocap[:, :, :2])
    p2 = Human36MPoses([d2], kind="D2_Positions")
    np.testing.assert_allclose(p2[0].keypoints_2d[0], mocap[0, list(H36M_MOCAP_TO_H36M17), :2], rtol=1e-6)


def test_h36m_cdf_malformed(tmp_path):
    pytest.importorskip("cdflib")
    bad = _write_cdf(tmp_path / "S1" / "MyPoseFeatures" / "D3_Positions" / "Odd.cdf", RNG.normal(size=(2,
                                                                                                       95)))
    _raises(lambda: read_h36m_cdf(bad), "Odd.cdf", "field Pose", "whole number of frames")
    _raises(lambda: Human36MPoses(tmp_path), "Odd.cdf", "field Pose")
    junk = tmp_path / "junk.cdf"
    junk.write_bytes(b"definitely not a CDF file")
    _raises(lambda: read_h36m_cdf(junk), "junk.cdf", "not a readable CDF file")
    from cdflib.cdfwrite import CDF

    c = CDF(str(tmp_path / "other.cdf"), delete=True)
    c.write_var({"Variable": "Angles", "Data_Type": CDF.CDF_DOUBLE, "Num_Elements": 1, "Rec_Vary": True,
                 "Dim_Sizes": [3]}, var_data=np.zeros((1, 3)))
    c.close()
    _raises(lambda: read_h36m_cdf(tmp_path / "other.cdf"), "other.cdf", "field Pose", "no variable 'Pose'")
    _raises(lambda: Human36MPoses(tmp_path / "empty"), "empty", "no files matching")


# ================================================================================================ ITOP
def _write_itop(folder: Path, n=5, drop=None, rename=None, n_joints=15, ids_differ=False):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(1)
    ids = np.array([f"{p:02d}_{i:05d}".encode() for p, i in zip([0, 0, 3, 3, 4][:n], range(n))])
    z = rng.uniform(2.0, 3.5, (n, n_joints))
    px = rng.uniform(40, 280, (n, n_joints))
    py = rng.uniform(30, 210, (n, n_joints))
    world = np.stack([(px - 160) * z * 0.0035, (120 - py) * z * 0.0035, z], -1).astype(np.float32)
    labels = {"id": ids, "is_valid": np.array([1, 0, 1, 1, 1][:n], np.uint8),
              "visible_joints": (rng.uniform(size=(n, n_joints)) > 0.2).astype(np.int16),
              "image_coordinates": np.stack([px, py], -1).round().astype(np.int16),
              "real_world_coordinates": world,
              "segmentation": rng.integers(-1, 15, (n, 24, 32)).astype(np.int8)}
    for k in drop or ():
        labels.pop(k)
    for a, b in (rename or {}).items():
        labels[b] = labels.pop(a)
    depth = (np.arange(n * 24 * 32).reshape(n, 24, 32) % 7 * 0.5 + 1.0).astype(np.float16)  # exact in float16
    folder.mkdir(parents=True, exist_ok=True)
    lp, dp = folder / "ITOP_side_test_labels.h5", folder / "ITOP_side_test_depth_map.h5"
    with h5py.File(lp, "w") as h:
        for k, v in labels.items():
            h[k] = v
    with h5py.File(dp, "w") as h:
        h["id"] = ids[::-1] if ids_differ else ids
        h["data"] = depth
    return dp, lp, labels, depth


def test_itop_roundtrip(tmp_path):
    dp, lp, labels, depth = _write_itop(tmp_path)
    r = ItopReader(dp, lp)
    assert len(r) == 4 and r.rows.tolist() == [0, 2, 3, 4]  # frame 1 is not valid
    s = r[1]
    assert s.is_lazy and s.image is None
    s.load()
    s.validate()
    assert s.depth.dtype == np.float32 and s.depth.shape == (24, 32)
    np.testing.assert_array_equal(s.depth, depth[2].astype(np.float32) * 1000)
    np.testing.assert_array_equal(s.part_mask, labels["segmentation"][2].astype(np.int32) + 1)
    np.testing.assert_array_equal(s.keypoints_2d[0], labels["image_coordinates"][2])
    np.testing.assert_array_equal(s.visibility[0], labels["visible_joints"][2])
    w = labels["real_world_coordinates"][2].astype(np.float64) * 1000
    np.testing.assert_allclose(s.keypoints_3d[0], w * [1, -1, 1], rtol=1e-5)  # mm, OpenCV y down
    assert s.identity == 3 and s.image_id == "03_00002" and s.keypoints_3d_frame == "camera"
    # the camera projects the (OpenCV-axes) joints onto the labelled pixels
    np.testing.assert_allclose(s.camera.project(s.keypoints_3d[0]), labels["image_coordinates"][2], atol=0.51)
    up = ItopReader(dp, lp, only_valid=False, opencv_axes=False)
    assert len(up) == 5
    np.testing.assert_allclose(up[2].keypoints_3d[0], w, rtol=1e-5)
    assert ItopReader(dp, lp, every_n=2).rows.tolist() == [0, 3]


def test_itop_malformed(tmp_path):
    dp, lp, *_ = _write_itop(tmp_path / "a", drop=["visible_joints"])
    _raises(lambda: ItopReader(dp, lp), "ITOP_side_test_labels.h5", "field visible_joints", "missing")
    dp, lp, *_ = _write_itop(tmp_path / "b", n_joints=14)
    _raises(lambda: ItopReader(dp, lp), "ITOP_side_test_labels.h5", "field visible_joints", "(5, 14)")
    dp, lp, *_ = _write_itop(tmp_path / "c", ids_differ=True)
    _raises(lambda: ItopReader(dp, lp), "ITOP_side_test_depth_map.h5", "frame 0", "field id")
    _raises(lambda: ItopReader(tmp_path / "none.h5", lp), "none.h5", "file not found")
    (tmp_path / "junk.h5").write_bytes(b"no hdf5 here")
    _raises(lambda: ItopReader(dp, tmp_path / "junk.h5"), "junk.h5", "not a readable HDF5 file")
    _raises(lambda: ItopReader(dp, lp, skeleton="coco17"), "field skeleton", "15 joints")


# ================================================================================================ multi-modal
def _write_multimodal(root: Path, n=3):
    cam = Camera(K=[[300.0, 0, 16], [0, 300.0, 12], [0, 0, 1]], width=32, height=24, name="kinect")
    samples = []
    for i in range(n):
        rgb = RNG.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        depth = RNG.integers(0, 4000, (24, 32)).astype(np.float32)
        write_image(root / "rgb" / f"{i:06d}.png", rgb)
        write_depth(root / "depth" / f"{i:06d}.png", depth)
        kp = np.concatenate([RNG.uniform(0, 30, (17, 2)), RNG.integers(0, 3, (17, 1))], 1)
        people = [{"keypoints": kp.tolist(), "box": [1, 2, 20, 20],
                   "keypoints_3d": RNG.uniform(-500, 500, (17, 3)).tolist()}]
        samples.append({"id": f"{i:06d}", "rgb": f"rgb/{i:06d}.png", "depth": f"depth/{i:06d}.png",
                        "width": 32,
                        "height": 24, "camera": cam.to_dict(), "identity": i, "people": people,
                        "attributes": {"source": "test"}})
    samples.append({"id": "depth_only", "depth": "depth/000000.png", "people": []})
    return write_multimodal_index(root / "index.json", "coco17", samples), samples


def test_multimodal_roundtrip(tmp_path):
    f, samples = _write_multimodal(tmp_path / "mm")
    r = MultiModalReader(f)
    assert len(r) == 4
    s = r[1]
    assert s.is_lazy
    s.load().validate()
    np.testing.assert_array_equal(s.image, hio.read_image(tmp_path / "mm" / "rgb" / "000001.png"))
    np.testing.assert_array_equal(s.depth, hio.read_depth(tmp_path / "mm" / "depth" / "000001.png"))
    kp = np.asarray(samples[1]["people"][0]["keypoints"])
    np.testing.assert_allclose(s.keypoints_2d[0], kp[:, :2], rtol=1e-6)
    assert s.visibility[0].tolist() == np.minimum(kp[:, 2], 1).tolist()
    np.testing.assert_allclose(s.keypoints_3d[0], samples[1]["people"][0]["keypoints_3d"], rtol=1e-6)
    assert s.boxes.tolist() == [[1, 2, 20, 20]] and s.identity == 1 and s.image_id == "000001"
    assert s.camera.name == "kinect" and s.camera.K[0, 0] == 300 and s.meta["width"] == 32
    d = r[3].load().validate()
    assert d.image is None and d.depth.shape == (24,
                                                 32) and d.num_instances == 0 and d.meta["has_rgb"] is False


@pytest.mark.parametrize("mutate, parts", [
    (lambda d: d["samples"][1].pop("people"), ["sample '000001'", "field people", "missing"]),
    (lambda d: d["samples"][0]["people"][0].update(keypoints=[[0, 0, 1]] * 16),
     ["sample '000000' person 0", "field keypoints", "(16, 3)"]),
    (lambda d: d["samples"][2].update(id="000000"), ["sample '000000'", "duplicate"]),
    (lambda d: d["samples"][0].update(rgb=None, depth=None), ["sample '000000'", "neither"]),
    (lambda d: d["samples"][1]["people"].append({"keypoints": [[0, 0, 0]] * 17}),
     ["sample '000001'", "field keypoints_3d", "1 of 2 people"]),
    (lambda d: d["samples"][0]["camera"].update(K=[[1, 0], [0, 1]]), ["sample '000000' camera", "field K"]),
    (lambda d: d.update(format="other"), ["field format"]),
    (lambda d: d.update(version=2), ["field version", "unsupported"]),
    (lambda d: d.update(skeleton="zzz"), ["field skeleton"]),
])
def test_multimodal_malformed(tmp_path, mutate, parts):
    f, _ = _write_multimodal(tmp_path, n=3)
    doc = json.loads(f.read_text())
    mutate(doc)
    f.write_text(json.dumps(doc))
    _raises(lambda: MultiModalReader(f), "index.json", *parts)


def test_multimodal_missing_image_is_reported_on_load(tmp_path):
    f, _ = _write_multimodal(tmp_path, n=1)
    (tmp_path / "rgb" / "000000.png").unlink()
    s = MultiModalReader(f)[0]  # indexing never touches pixels
    _raises(s.load_image, str(tmp_path / "rgb" / "000000.png"), "file not found")
