"""Every synthetic format loads with its reader and round-trips keypoints, cameras and boxes."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from humanvision.data.readers import (
    CocoDetections,
    CocoKeypoints,
    Human36MMultiView,
    ItopReader,
    MpiiJson,
    MultiModalReader,
    read_mpii_gt_mat,
)
from humanvision.data.synthetic import (
    JOINTS,
    SceneConfig,
    generate_coco,
    generate_frame,
    generate_h36m,
    generate_itop,
    generate_mpii,
    generate_multimodal,
    select_joints,
)
from humanvision.data.synthetic.writers import split_offset
from humanvision.geometry.camera import Camera


def _frames(n, split="train", **cfg):
    c = SceneConfig(**cfg)
    return [generate_frame(c, 0, split_offset(split) + i) for i in range(n)]


def test_coco_round_trip_and_pycocotools(tmp_path):
    summary = generate_coco(tmp_path, {"train": 3, "val": 2}, size=(128, 96), seed=0, people=(1, 2))
    assert summary["frames"] == 5
    ann = tmp_path / "annotations"
    frames = _frames(3, size=(128, 96), people=(1, 2))
    sel = select_joints("coco17")
    reader = CocoKeypoints(ann / "person_keypoints_train.json", tmp_path / "train", clean_boxes=False)
    assert len(reader) == sum((v.areas > 0).sum() for f in frames for v in f.views)
    k = 0
    for f in frames:
        v = f.views[0]
        for p in np.flatnonzero(v.areas > 0):
            s = reader[k]
            k += 1
            lab = v.visibility[p, sel] > 0
            assert np.abs(s.keypoints_2d[0][lab] - v.keypoints_2d[p, sel][lab]).max() < 1e-3
            assert np.array_equal(s.visibility[0] > 0, lab)
            b = v.boxes[p]
            x0, y0, x1, y1 = max(b[0], 0), max(b[1], 0), min(b[0] + b[2], 128), min(b[1] + b[3], 96)
            assert np.allclose(s.boxes[0], [x0, y0, x1 - x0, y1 - y0], atol=1e-4)
            assert s.load_image().shape == (96, 128, 3)
    raw = json.loads((ann / "person_keypoints_train.json").read_text())
    a0 = raw["annotations"][0]
    assert a0["num_keypoints"] == sum(1 for x in a0["keypoints"][2::3] if x > 0)
    assert set(a0["keypoints"][2::3]) <= {0, 1, 2}
    from pycocotools.coco import COCO

    coco = COCO(str(ann / "person_keypoints_val.json"))
    assert len(coco.getImgIds()) == 2 and coco.loadCats(1)[0]["keypoints"][0] == "nose"
    dets = CocoDetections(ann / "person_detections_val.json", ann / "person_keypoints_val.json", tmp_path / "val")
    res = coco.loadRes(str(ann / "person_detections_val.json"))
    assert len(res.getAnnIds()) == len(json.loads((ann / "person_detections_val.json").read_text())) > 0
    assert len(dets) > 0


def test_mpii_round_trip(tmp_path):
    generate_mpii(tmp_path, 3, size=(128, 128), seed=0, split="val", people=(1, 2))
    frames = _frames(3, "val", size=(128, 128), people=(1, 2))
    reader = MpiiJson(tmp_path / "annotations" / "mpii_val.json", tmp_path / "images")
    gt = read_mpii_gt_mat(tmp_path / "annotations" / "mpii_gt_val.mat")
    sel = select_joints("mpii16")
    people = [(v, p) for f in frames for v in f.views for p in np.flatnonzero(v.areas > 0)]
    assert len(reader) == len(people) == len(gt)
    for k, (v, p) in enumerate(people):
        s = reader[k]
        lab = v.visibility[p, sel] > 0
        assert np.abs(s.keypoints_2d[0][lab] - v.keypoints_2d[p, sel][lab]).max() < 1e-3
        assert np.abs(gt.keypoints[k][lab] - 1 - v.keypoints_2d[p, sel][lab]).max() < 1e-3
        assert np.array_equal(~gt.missing[k], lab)
        centre = v.boxes[p, :2] + v.boxes[p, 2:] / 2
        assert np.allclose(s.meta["center"][0], centre, atol=1e-3)
        assert np.isclose(s.meta["scale"][0], v.boxes[p, 2:].max() / 200, atol=1e-5)
    assert (gt.head_sizes() > 0).all()


def test_h36m_round_trip_with_distortion(tmp_path):
    generate_h36m(tmp_path, 3, size=(160, 160), seed=0, views=3, distortion=True)
    reader = Human36MMultiView(tmp_path / "human36m-multiview-labels-GTbboxes.npy", tmp_path / "processed",
                               undistorted=False)
    assert len(reader) == 3
    from humanvision.data.synthetic.scene import make_rig

    rig = make_rig(3, (160, 160), np.random.default_rng([0, 2**31 - 1]), distortion=True)
    cfg = SceneConfig(size=(160, 160), views=3, distortion=True)
    frames = [generate_frame(cfg, 0, i, cameras=rig, amodal=True) for i in range(3)]
    sel = select_joints("h36m17")
    for i, f in enumerate(frames):
        s = reader[i]
        assert np.abs(s.keypoints_3d[0] - f.joints_world[0, sel]).max() < 1e-2  # float32 mm
        seen = [v for v in f.views if v.amodal_boxes[0, 2] > 0]
        assert len(s.views) == len(seen) > 0
        for sv, view in zip(s.views, seen):
            cam = sv.camera
            assert cam.name == view.camera.name and cam.dist_model == "h36m"
            assert np.allclose(cam.K, view.camera.K, atol=1e-3) and np.allclose(cam.dist, view.camera.dist, atol=1e-6)
            # the stored camera projects the stored 3D joints onto the rendered 2D keypoints
            assert np.abs(cam.project(s.keypoints_3d[0].astype(np.float64)) - view.keypoints_2d[0, sel]).max() < 0.05
            w, h = sv.boxes[0, 2:]
            assert abs(w - h) <= 1 and w >= view.amodal_boxes[0, 2:].max() - 1
            assert sv.load_image().shape == (160, 160, 3)


def _project_h36m(world: np.ndarray, cam) -> np.ndarray:
    """Pixels of world points with a labels-file camera: the pinhole part by ``cv2.projectPoints``, then the
    Human3.6M (Martinez) lens model of pose3d.md §1.4 written out here, independently of the library."""
    K = cam["K"].astype(np.float64)
    rvec = cv2.Rodrigues(cam["R"].astype(np.float64))[0]
    uv = cv2.projectPoints(world.astype(np.float64), rvec, cam["t"].astype(np.float64), K, None)[0][:, 0]
    x, y = (uv[:, 0] - K[0, 2]) / K[0, 0], (uv[:, 1] - K[1, 2]) / K[1, 1]
    k1, k2, p1, p2, k3 = cam["dist"].astype(np.float64)
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    xd = x * radial + p1 * x * y + p2 * (x * x + r2)
    yd = y * radial + p2 * x * y + p1 * (y * y + r2)
    return np.stack([K[0, 0] * xd + K[0, 2], K[1, 1] * yd + K[1, 2]], -1)


@pytest.mark.parametrize("distortion", [False, True])
def test_h36m_boxes_cover_the_whole_person_behind_occluders(tmp_path, distortion):
    """Human3.6M boxes come from the unoccluded person mask: with occluders in every frame, every projected 3D
    joint still lies in its view's box, and the box is no bigger than the joints' extent plus the body around
    them (hands and feet reach ~250 mm past wrists and ankles)."""
    generate_h36m(tmp_path, 4, size=(160, 160), seed=0, views=4, distortion=distortion, occluder_prob=1.0,
                  max_occluders=3)
    labels = np.load(tmp_path / "human36m-multiview-labels-GTbboxes.npy", allow_pickle=True).item()
    assert (labels["cameras"]["dist"] != 0).any() == distortion
    for row in labels["table"]:
        for cam, tlbr in zip(labels["cameras"][row["subject_idx"]], row["bbox_by_camera_tlbr"], strict=True):
            uv = _project_h36m(row["keypoints"], cam)
            assert ((uv > 0) & (uv < 159)).all()  # the person is inside the image: every joint must be boxed
            top, left, bottom, right = tlbr.astype(np.float64)
            assert bottom - top == right - left > 0
            where = (row["frame_idx"], uv, tlbr)
            assert (uv[:, 0] >= left - 1.5).all() and (uv[:, 0] <= right + 1.5).all(), where
            assert (uv[:, 1] >= top - 1.5).all() and (uv[:, 1] <= bottom + 1.5).all(), where
            depth = (row["keypoints"] @ cam["R"].T + cam["t"][:, 0])[:, 2]
            body_px = cam["K"][0, 0] * 250.0 / depth.min()
            assert bottom - top <= np.ptp(uv, axis=0).max() + 2 * body_px + 2


def test_itop_round_trip(tmp_path):
    pytest.importorskip("h5py")
    generate_itop(tmp_path, {"train": 2, "test": 1}, seed=0)
    reader = ItopReader(tmp_path / "ITOP_side_test_depth_map.h5", tmp_path / "ITOP_side_test_labels.h5")
    assert len(reader) == 1
    s = reader[0]
    cam = s.camera
    # the camera implied by ITOP's constants projects the stored camera-frame joints onto the stored 2D joints
    proj = Camera(K=cam.K).project(s.keypoints_3d[0].astype(np.float64))
    assert np.abs(proj - s.keypoints_2d[0]).max() < 0.05  # float32 metres
    depth = s.load_depth()
    assert depth.shape == (240, 320)
    u, v = np.rint(s.keypoints_2d[0]).astype(int).T
    inside = (u >= 0) & (u < 320) & (v >= 0) & (v < 240) & (s.visibility[0] > 0)
    assert inside.sum() >= 4
    assert (np.abs(depth[v[inside], u[inside]] - s.keypoints_3d[0, inside, 2]) < 200).all()
    parts, _ = s.load_masks()
    assert parts.max() <= 15 and (parts > 0).sum() > 100


def test_multimodal_round_trip(tmp_path):
    generate_multimodal(tmp_path, 2, size=(96, 96), seed=0, views=2, people=(1, 2), skeleton="coco17")
    reader = MultiModalReader(tmp_path / "index.json")
    assert len(reader) == 4
    frames = _frames(2, size=(96, 96), views=2, people=(1, 2))
    sel = select_joints("coco17")
    views = [v for f in frames for v in f.views]
    for s, v in zip(reader, views):
        s.load()
        assert np.array_equal(s.depth, np.rint(v.depth)) and np.array_equal(s.image, v.rgb)
        assert np.array_equal(s.part_mask, v.parts) and np.array_equal(s.instance_mask, v.instances)
        assert np.abs(s.keypoints_2d - v.keypoints_2d[:, sel]).max() < 1e-3
        assert np.array_equal(s.meta["visibility_flags"], v.visibility[:, sel])
        assert np.allclose(s.boxes, v.boxes, atol=1e-4)
        assert np.allclose(s.camera.K, v.camera.K) and np.allclose(s.camera.R, v.camera.R)
        # stored 2D = projection of the stored camera-frame 3D joints with the stored camera
        cam = s.camera
        proj = Camera(K=cam.K, dist=cam.dist, dist_model=cam.dist_model).project(s.keypoints_3d.astype(np.float64))
        assert np.abs(proj - s.keypoints_2d).max() < 1e-3
    assert JOINTS  # the superset stays importable from the package


def test_coco_with_worker_processes_is_identical(tmp_path):
    """Rendering in 2 processes writes byte-identical images and annotations, in order, with progress."""
    seen = []
    a = generate_coco(tmp_path / "a", {"train": 4, "val": 2}, size=(96, 64), seed=3)
    b = generate_coco(tmp_path / "b", {"train": 4, "val": 2}, size=(96, 64), seed=3, workers=2,
                      progress=lambda done, total: seen.append((done, total)))
    assert seen == [(k, 6) for k in range(1, 7)]
    assert a["people"] == b["people"] and a["visible_joints"] == b["visible_joints"]
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 4 + 2 + 4
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
