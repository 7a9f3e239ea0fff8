"""``humanvision triangulate``: robust vectorised triangulation, calibration and detection readers, the pipeline.

External formats (OpenPose ``--write_json`` files, anipose ``calibration.toml``, COCO results, the Human3.6M labels
dict) are written here from their documented layouts, never by humanvision's own writers.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from humanvision.cli import app
from humanvision.data.readers import Detections2D, read_openpose_folder
from humanvision.errors import ConfigError, DataError
from humanvision.geometry import (
    Camera,
    fundamental_matrix,
    read_anipose_toml,
    read_calibration,
    read_h36m_cameras,
    reprojection_errors,
    triangulate_dlt,
    triangulate_robust,
    write_anipose_toml,
    write_camera_json,
)
from humanvision.methods.triangulate import (
    EXCLUDED,
    STATUS_NAMES,
    TEMPORAL_OUTLIER,
    TOO_FEW_VIEWS,
    USED,
    TriangulateConfig,
    interpolate_gaps,
    load_detections,
    triangulate_sequence,
    write_trc,
)
from humanvision.skeletons import convert, get_skeleton

torch.set_num_threads(1)
RUNNER = CliRunner()
ENV = {"COLUMNS": "250", "NO_COLOR": "1"}

# A standing person (mm, z up, facing -y, right = -x) in the OpenPose BODY_25 order.
BODY25_REST = np.array([
    [0, -80, 1650], [0, 0, 1450], [-190, 0, 1420], [-230, 0, 1130], [-250, -40, 860], [190, 0, 1420],
    [230, 0, 1130], [250, -40, 860], [0, 0, 950], [-110, 0, 950], [-120, -20, 520], [-120, 20, 90],
    [110, 0, 950], [120, -20, 520], [120, 20, 90], [-30, -70, 1680], [30, -70, 1680], [-80, 0, 1660],
    [80, 0, 1660], [130, -130, 20], [170, -110, 20], [120, 50, 30], [-130, -130, 20], [-170, -110, 20],
    [-120, 50, 30]], dtype=np.float64)


# ------------------------------------------------------------------------------------------------- synthetic data
def make_rig(rng: np.random.Generator) -> list[Camera]:
    """Four cameras 4.5 m around the origin at different heights (no two facing each other), with OpenCV lenses."""
    cams = []
    for k, (az, h) in enumerate(zip([0, 70, 140, 215], [1000, 2600, 1400, 2200])):
        a = np.deg2rad(az + rng.uniform(-10, 10))
        eye = [4500 * np.cos(a), 4500 * np.sin(a), h + rng.uniform(-100, 100)]
        f = rng.uniform(1000, 1200)
        K = [[f, 0, 640 + rng.uniform(-20, 20)], [0, f * rng.uniform(0.99, 1.01), 512 + rng.uniform(-20, 20)],
             [0, 0, 1]]
        dist = [rng.uniform(-0.3, -0.2), rng.uniform(0.05, 0.15), rng.uniform(-1e-3, 1e-3), rng.uniform(-1e-3, 1e-3),
                rng.uniform(-0.02, 0.02)]
        cams.append(Camera.look_at(eye, [0, 0, 900], K=K, width=1280, height=1024, dist=dist, name=f"cam{k}"))
    return cams


def make_motion(rng: np.random.Generator, frames: int, rest: np.ndarray = BODY25_REST,
                offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """(F, J, 3) random smooth motion: per-joint sinusoids, a turning body and a wandering root."""
    t = np.arange(frames)[:, None, None] / 30.0
    freq, phase = rng.uniform(0.3, 1.5, (1, *rest.shape)), rng.uniform(0, 2 * np.pi, (1, *rest.shape))
    X = rest[None] + 80 * np.sin(2 * np.pi * freq * t + phase)
    yaw = rng.uniform(-np.pi, np.pi) + 0.5 * np.sin(2 * np.pi * 0.2 * t[:, 0, 0])
    c, s, z, o = np.cos(yaw), np.sin(yaw), np.zeros(frames), np.ones(frames)
    R = np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)
    X = np.einsum("fij,fkj->fki", R, X)
    X[..., 0] += offset[0] + 300 * np.sin(2 * np.pi * 0.1 * t[:, :, 0] + rng.uniform(0, 6))
    X[..., 1] += offset[1] + 200 * np.cos(2 * np.pi * 0.13 * t[:, :, 0] + rng.uniform(0, 6))
    return X


def observe(rng, cams, X, corrupt=0.0, noise=1.0):
    """Distorted 2D detections (F, V, J, 2), scores (F, V, J) and the mask of corrupted (frame, view, joint)."""
    F, J = X.shape[:2]
    uv = np.stack([c.project(X) for c in cams], 1) + rng.normal(size=(F, len(cams), J, 2)) * noise
    bad = rng.random((F, len(cams), J)) < corrupt
    ang, r = rng.uniform(0, 2 * np.pi, bad.sum()), rng.uniform(40, 150, bad.sum())
    uv[bad] += np.stack([r * np.cos(ang), r * np.sin(ang)], -1)
    return uv, rng.uniform(0.5, 1.0, (F, len(cams), J)), bad


def write_openpose(folder: Path, uv: np.ndarray, score: np.ndarray, video: str = "clip") -> Path:
    """OpenPose --write_json files (doc/output.md): {video}_{frame:012d}_keypoints.json, one per frame, with
    people[].pose_keypoints_2d = x0, y0, c0, ...; uv (F, P, J, 2), score (F, P, J); score 0 writes 0, 0, 0."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(uv.shape[0]):
        people = []
        for p in range(uv.shape[1]):
            if not (score[f, p] > 0).any():
                continue
            kp = np.concatenate([uv[f, p], score[f, p, :, None]], -1)
            kp[score[f, p] <= 0] = 0.0
            people.append({"person_id": [-1], "pose_keypoints_2d": [round(float(v), 3) for v in kp.reshape(-1)],
                           "face_keypoints_2d": [], "hand_left_keypoints_2d": [], "hand_right_keypoints_2d": [],
                           "pose_keypoints_3d": [], "face_keypoints_3d": [], "hand_left_keypoints_3d": [],
                           "hand_right_keypoints_3d": []})
        (folder / f"{video}_{f:012d}_keypoints.json").write_text(json.dumps({"version": 1.3, "people": people}))
    return folder


def anipose_toml(cams: list[Camera], names: list[str] | None = None) -> str:
    """calibration.toml as anipose writes it: [cam_i] name, size, matrix, distortions, rotation (cv2.Rodrigues of
    R), translation; then [metadata]."""
    out = []
    for i, c in enumerate(cams):
        rvec = cv2.Rodrigues(c.R)[0].ravel()
        out += [f"[cam_{i}]", f'name = "{(names or [c.name for c in cams])[i]}"', f"size = [{c.width}, {c.height}]",
                "matrix = [" + ", ".join("[" + ", ".join(repr(float(v)) for v in row) + "]" for row in c.K) + "]",
                "distortions = [" + ", ".join(repr(float(v)) for v in c.dist) + "]",
                "rotation = [" + ", ".join(repr(float(v)) for v in rvec) + "]",
                "translation = [" + ", ".join(repr(float(v)) for v in c.t) + "]", ""]
    return "\n".join(out + ["[metadata]", "adjusted = false", "error = 0.42", ""])


def invoke(*args):
    return RUNNER.invoke(app, [str(a) for a in args], env=ENV)


# ------------------------------------------------------------------------------------------------- geometry
def test_robust_triangulation_is_exact_batched_and_drops_a_wrong_view():
    rng = np.random.default_rng(0)
    cams = make_rig(rng)
    P = np.stack([c.projection_matrix for c in cams])
    X = make_motion(rng, 6)  # (6, 25, 3)
    uv = np.stack([c.project(X, distort=False) for c in cams], 1)  # exact pinhole pixels (6, 4, 25, 2)
    res = triangulate_robust(P, uv)
    assert res.points.shape == X.shape and res.inliers.shape == uv.shape[:-1] and res.inliers.all()
    np.testing.assert_allclose(res.points, X, atol=1e-6)
    assert np.nanmax(res.errors) < 1e-6

    bad = uv.copy()
    bad[:, 2, :10] += [60.0, -45.0]  # view 2 is 75 px off for joints 0-9
    res = triangulate_robust(P, bad, threshold=15)
    assert not res.inliers[:, 2, :10].any() and res.inliers[:, 2, 10:].all() and res.inliers[:, [0, 1, 3]].all()
    np.testing.assert_allclose(res.points, X, atol=1e-6)
    np.testing.assert_allclose(res.errors[:, 2, :10], 75.0, atol=1e-4)

    # batching over frames (and an extra leading axis) changes nothing; per-frame calls give the same answer
    per_frame = np.stack([triangulate_robust(P, bad[f], threshold=15).points for f in range(len(bad))])
    np.testing.assert_allclose(per_frame, res.points, atol=1e-9)
    res2 = triangulate_robust(P, bad.reshape(2, 3, *bad.shape[1:]), threshold=15, chunk_size=1)
    np.testing.assert_allclose(res2.points.reshape(X.shape), res.points, atol=1e-9)

    # confidence 0 removes a view; fewer than min_views agreeing views give NaN. Two views disagree only across
    # the epipolar line, so move view 2 off the epipolar lines of view 3's points.
    lines = np.concatenate([uv[:, 3], np.ones(uv.shape[:1] + uv.shape[2:3] + (1,))], -1) @ fundamental_matrix(
        P[3], P[2]).T
    normal = lines[..., :2] / np.linalg.norm(lines[..., :2], axis=-1, keepdims=True)
    off = uv.copy()
    off[:, 2, :10] += 40 * normal[:, :10]
    conf = np.ones(uv.shape[:-1])
    conf[:, [0, 1]] = 0.0
    res = triangulate_robust(P, off, conf, min_views=2, threshold=15)
    assert np.isnan(res.points[:, :10]).all() and not res.inliers[:, :, :10].any()  # views 2, 3 disagree
    np.testing.assert_allclose(res.points[:, 10:], X[:, 10:], atol=1e-6)
    assert not np.isfinite(res.errors[:, :, :10]).any()  # no point, no error
    assert np.isnan(triangulate_robust(P, uv, min_views=4, conf=conf).points).all()
    t = triangulate_robust(torch.tensor(P), torch.tensor(uv, dtype=torch.float32))
    assert t.points.dtype == torch.float32 and t.inliers.dtype == torch.bool
    with pytest.raises(DataError) as e:
        triangulate_robust(P, uv, min_views=1)
    assert e.value.field == "min_views"


def test_leave_one_out_pruning_handles_a_view_hiding_under_the_threshold():
    """Three views, one 40 px off: for most joints the 3-view fit spreads the error below a 25 px threshold in every
    view, so only the leave-one-out test finds the wrong view."""
    rng = np.random.default_rng(3)
    cams = make_rig(rng)[:3]
    P = np.stack([c.projection_matrix for c in cams])
    X = make_motion(rng, 4)
    uv = np.stack([c.project(X, distort=False) for c in cams], 1)
    bad = uv.copy()
    bad[:, 0] += [32.0, -24.0]
    hiding = reprojection_errors(P, bad, triangulate_dlt(P, bad)).max(1) < 25  # (frames, joints)
    assert hiding.mean() > 0.5
    res = triangulate_robust(P, bad, threshold=25)
    assert not res.inliers[:, 0].any() and res.inliers[:, 1:].all()
    np.testing.assert_allclose(res.points, X, atol=1e-6)


def test_fundamental_matrix_epipolar_constraint():
    rng = np.random.default_rng(1)
    cams = make_rig(rng)
    X = make_motion(rng, 1)[0]
    x1 = np.c_[cams[0].project(X, distort=False), np.ones(len(X))]
    x2 = np.c_[cams[2].project(X, distort=False), np.ones(len(X))]
    F = fundamental_matrix(cams[0].projection_matrix, cams[2].projection_matrix)
    lines = x1 @ F.T  # epipolar lines in view 2
    d = np.abs((lines * x2).sum(-1)) / np.hypot(lines[:, 0], lines[:, 1])
    assert d.max() < 1e-6 and abs(np.linalg.norm(F) - 1) < 1e-12
    off = x2 + [0, 20, 0]  # moving a point off the line gives a positive distance
    assert (np.abs((lines * off).sum(-1)) / np.hypot(lines[:, 0], lines[:, 1])).min() > 1


# ------------------------------------------------------------------------------------------------- calibration
def test_anipose_toml_reader_matches_opencv_and_round_trips(tmp_path):
    rng = np.random.default_rng(2)
    cams = make_rig(rng)
    path = tmp_path / "calibration.toml"
    path.write_text(anipose_toml(cams, names=["A", "B", "C", "D"]))
    read = read_calibration(path)
    assert list(read) == ["A", "B", "C", "D"]
    X = make_motion(rng, 1)[0]
    for cam, src in zip(read.values(), cams):
        assert cam.dist_model == "opencv" and cam.image_size == (1280, 1024)
        np.testing.assert_allclose(cam.R, src.R, atol=1e-12)
        rvec = cv2.Rodrigues(src.R)[0]
        ref, _ = cv2.projectPoints(X, rvec, src.t, np.asarray(src.K), np.asarray(src.dist))
        np.testing.assert_allclose(cam.project(X), ref[:, 0], atol=1e-6)  # same pixels as OpenCV
    # our writer round-trips through the reader
    again = read_anipose_toml(write_anipose_toml(read, tmp_path / "again.toml", metadata={"error": 0.5}))
    for a, b in zip(again.values(), read.values()):
        for k in ("K", "R", "t", "dist"):
            np.testing.assert_allclose(getattr(a, k), getattr(b, k), atol=1e-9)
    assert list(again) == list(read)
    # camera JSON round trip
    js = read_calibration(write_camera_json(read, tmp_path / "cams.json"))
    np.testing.assert_allclose(js["C"].projection_matrix, read["C"].projection_matrix)


def test_anipose_toml_errors_name_the_table_and_field(tmp_path):
    good = anipose_toml(make_rig(np.random.default_rng(0))[:2])
    cases = [
        (good.replace("translation = [", "translation_ = ["), "[cam_0]", "translation"),
        (good.replace('name = "cam1"', 'name = "cam1"\nfisheye = true'), "[cam_1]", "fisheye"),
        (good.replace("distortions = [", "distortions = [0.0, 0.0, 0.0, ", 1), "[cam_0]", "distortions"),
        (good.replace("rotation = [", "rotation = [1.0, ", 1), "[cam_0]", "rotation"),
    ]
    for text, record, field in cases:
        p = tmp_path / "bad.toml"
        p.write_text(text)
        with pytest.raises(DataError) as e:
            read_anipose_toml(p)
        assert (e.value.file, e.value.record, e.value.field) == (str(p), record, field), str(e.value)
    p.write_text("[cam_0\nname = 1")
    with pytest.raises(DataError, match="not valid TOML"):
        read_calibration(p)
    with pytest.raises(DataError, match="unknown calibration format"):
        read_calibration(tmp_path / "cams.yaml") if (tmp_path / "cams.yaml").write_text("x") else None


def test_h36m_labels_cameras(tmp_path):
    """The labels dict of pose3d.md 1.3: cameras (subjects, cameras) with R, t (3, 1), K, dist (H36M model)."""
    cam_dtype = np.dtype([("R", np.float32, (3, 3)), ("t", np.float32, (3, 1)), ("K", np.float32, (3, 3)),
                          ("dist", np.float32, (5,))])
    cams = np.zeros((2, 4), dtype=cam_dtype)
    rig = make_rig(np.random.default_rng(4))
    for s in range(2):
        for c, cam in enumerate(rig):
            cams[s, c] = (cam.R, cam.t[:, None] + 100 * s, cam.K, [-0.2, 0.24, -1e-3, -1e-3, 0.0])
    table = np.zeros(1, dtype=[("subject_idx", np.int8), ("action_idx", np.int8), ("frame_idx", np.int16),
                               ("keypoints", np.float32, (17, 3)), ("bbox_by_camera_tlbr", np.int16, (4, 4))])
    labels = {"subject_names": ["S1", "S9"], "camera_names": ["54138969", "55011271", "58860488", "60457274"],
              "action_names": ["Directions-1"], "cameras": cams, "table": table}
    path = tmp_path / "labels.npy"
    np.save(path, labels, allow_pickle=True)
    read = read_h36m_cameras(path, "S9")
    assert list(read) == labels["camera_names"]
    c = read["58860488"]
    assert c.dist_model == "h36m" and c.is_distorted
    np.testing.assert_allclose(c.t, rig[2].t + 100, atol=1e-3)
    with pytest.raises(DataError, match="unknown subject 'S2'"):
        read_h36m_cameras(path, "S2")


# ------------------------------------------------------------------------------------------------- detections
def test_openpose_folder_reader(tmp_path):
    rng = np.random.default_rng(5)
    uv = rng.uniform(0, 1000, (4, 2, 25, 2))
    sc = rng.uniform(0.1, 1.0, (4, 2, 25))
    sc[1, 1] = 0  # frame 1: one person; frame 3: nobody
    sc[3] = 0
    sc[0, 0, 7] = 0  # an undetected part is written 0, 0, 0
    folder = write_openpose(tmp_path / "cam_a_json", uv, sc)
    (folder / "clip_000000000002_keypoints.json").rename(folder / "clip_000000000010_keypoints.json")
    d = read_openpose_folder(folder)
    assert d.skeleton == "body25" and d.keypoints.shape == (4, 2, 25, 2)
    assert d.frames.tolist() == [0, 1, 3, 10]
    np.testing.assert_allclose(d.keypoints[0, 1], uv[0, 1], atol=1e-3)
    np.testing.assert_allclose(d.scores[3], sc[2], atol=1e-3)  # file 10 holds frame 2's people (3 decimals)
    assert np.isnan(d.keypoints[0, 0, 7]).all() and d.scores[0, 0, 7] == 0
    assert np.isnan(d.keypoints[1, 1]).all() and np.isnan(d.keypoints[2]).all() and not d.scores[2].any()
    assert read_openpose_folder(folder, layout="body25b").skeleton == "body25b"
    with pytest.raises(DataError, match="'coco17' has 17 keypoints but the file has 25"):
        read_openpose_folder(folder, layout="coco17")
    # a file with 18 keypoints among 25-keypoint files is named
    bad = folder / "clip_000000000020_keypoints.json"
    bad.write_text(json.dumps({"version": 1.3, "people": [{"pose_keypoints_2d": [1.0] * 54}]}))
    with pytest.raises(DataError) as e:
        read_openpose_folder(folder)
    assert e.value.file == str(bad) and e.value.field == "pose_keypoints_2d" and "mixed layouts" in str(e.value)
    bad.write_text('{"version": 1.3, "people": [')
    with pytest.raises(DataError, match="not valid JSON") as e:
        read_openpose_folder(folder)
    assert e.value.file == str(bad)
    bad.write_text(json.dumps({"version": 1.3}))
    with pytest.raises(DataError) as e:
        read_openpose_folder(folder)
    assert e.value.field == "people"
    # COCO-18 layout (OpenPose's COCO model) is recognised by its count
    d18 = read_openpose_folder(write_openpose(tmp_path / "c18", uv[:, :, :18], sc[:, :, :18]))
    assert d18.skeleton == "coco18"


def test_coco_results_and_infer_predictions(tmp_path):
    rng = np.random.default_rng(6)
    kp = np.concatenate([rng.uniform(0, 500, (3, 17, 2)), rng.uniform(0.2, 1, (3, 17, 1))], -1)
    results = [{"image_id": i, "category_id": 1, "keypoints": kp[k].ravel().tolist(), "score": 0.9}
               for k, i in enumerate((5, 2, 9))]
    (tmp_path / "results.json").write_text(json.dumps(results))
    d = load_detections(tmp_path / "results.json")
    assert d.skeleton == "coco17" and d.frames.tolist() == [2, 5, 9]
    np.testing.assert_allclose(d.keypoints[0, 0], kp[1, :, :2])
    preds = {f"walk.mp4#{i}": [results[k]] for k, i in enumerate((3, 0, 1))}
    (tmp_path / "cam2").mkdir()
    (tmp_path / "cam2" / "predictions.json").write_text(json.dumps(preds))
    d = load_detections(tmp_path / "cam2")
    assert d.frames.tolist() == [0, 1, 3]
    np.testing.assert_allclose(d.scores[2, 0], kp[0, :, 2])
    with pytest.raises(DataError) as e:
        load_detections(tmp_path / "missing")
    assert e.value.file == str(tmp_path / "missing")


def test_body25b_skeleton_and_conversion_to_coco17():
    b = get_skeleton("body_25b")
    assert b.num_joints == 25 and b.joints[17:19] == ("upper_neck", "head_top")
    assert b.flip_index[:5] == (0, 2, 1, 4, 3) and b.flip_index[19:] == (22, 23, 24, 19, 20, 21)
    kp = np.arange(50.0).reshape(25, 2)
    np.testing.assert_array_equal(convert(kp, "body25b", "coco17"), kp[:17])  # COCO's order comes first
    out = convert(kp, "body25", "coco17")
    np.testing.assert_array_equal(out[[0, 5, 6, 15, 16]], kp[[0, 5, 2, 14, 11]])


# ------------------------------------------------------------------------------------------------- time helpers
def test_interpolate_gaps_and_trc(tmp_path):
    t = np.arange(12, dtype=float)
    X = np.stack([t, 2 * t, -t], -1)[:, None, :]  # (12, 1, 3)
    holes = X.copy()
    holes[[0, 3, 4, 7, 8, 9, 10], 0] = np.nan  # edge (0), a 2-gap (3-4) and a 4-gap (7-10)
    filled, mask = interpolate_gaps(holes, max_gap=3)
    assert mask[:, 0].tolist() == [i in (3, 4) for i in range(12)]
    np.testing.assert_allclose(filled[3:5], X[3:5])
    assert np.isnan(filled[[0, 7, 8, 9, 10]]).all()
    assert interpolate_gaps(holes, max_gap=4)[1][7:11].all()

    pts = np.array([[[1.0, 2.0, 3.0], [np.nan] * 3]])  # 1 frame, 2 markers
    path = write_trc(tmp_path / "a.trc", pts, ["nose", "neck"], np.array([5]), rate=50, units="mm", up="z")
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == ["PathFileType", "4", "(X/Y/Z)", "a.trc"]
    assert lines[2].split("\t") == ["50", "50", "1", "2", "mm", "50", "1", "1"]
    assert lines[3].split("\t")[:3] == ["Frame#", "Time", "nose"] and lines[4].split("\t")[2:5] == ["X1", "Y1", "Z1"]
    assert lines[6].split("\t") == ["1", "0.000000", "1.000000", "3.000000", "-2.000000", "NaN", "NaN", "NaN"]


# ------------------------------------------------------------------------------------------------- claim 3
def test_claim3_four_distorted_cameras_with_20_percent_corrupted_detections(tmp_path):
    """120 frames of random BODY_25 motion seen by 4 cameras with OpenCV lens distortion, 1 px noise, and 20% of
    the (frame, camera, joint) detections moved 40-150 px. Stated bound: mean 3D error < 8 mm and 99% of joints
    within 30 mm (1 px of noise is ~4 mm at 4.5 m), at most 3 of 3000 joints missing (a joint dropped in the first
    or last frame cannot be interpolated); >= 99% of the corrupted detections flagged (excluded, or their joint
    dropped) and >= 97% of the exclusions are corrupted detections."""
    rng = np.random.default_rng(11)
    cams = make_rig(rng)
    X = make_motion(rng, 120)
    uv, score, bad = observe(rng, cams, X, corrupt=0.2)
    for v, c in enumerate(cams):
        write_openpose(tmp_path / "dets" / f"{c.name}_json", uv[:, v, None], score[:, v, None])
    (tmp_path / "calibration.toml").write_text(anipose_toml(cams))
    out = tmp_path / "out"
    run = invoke("triangulate", tmp_path / "dets", "--calibration", tmp_path / "calibration.toml", "--out", out,
                 "--fps", 30, "--plot")
    assert run.exit_code == 0, run.output
    points = np.load(out / "points3d.npy")
    assert points.shape == (120, 1, 25, 3)
    err = np.linalg.norm(points[:, 0] - X, axis=-1)
    assert np.isnan(err).sum() <= 3
    err = err[np.isfinite(err)]
    assert err.mean() < 8.0 and np.percentile(err, 99) < 30.0, (err.mean(), np.percentile(err, 99), err.max())

    obs = np.load(out / "observations.npz")
    status = obs["status"][:, 0]  # (F, V, J)
    flagged = np.isin(status, [EXCLUDED, TOO_FEW_VIEWS, TEMPORAL_OUTLIER])
    assert flagged[bad].mean() >= 0.99, np.bincount(status[bad], minlength=6)
    assert bad[status == EXCLUDED].mean() >= 0.97
    assert (status[~bad] == USED).mean() >= 0.98
    report = json.loads((out / "report.json").read_text())
    for v, c in enumerate(cams):
        assert report["per_camera"][c.name]["excluded"] == int((status[:, v] == EXCLUDED).sum())
        assert report["per_camera"][c.name]["mean_reprojection_px"] < 2.0  # 1 px noise, in the distorted image
    assert report["status_counts"]["excluded"] == int((status == EXCLUDED).sum()) > 0.15 * bad.sum()
    assert sum(report["status_counts"].values()) == status.size and set(report["status_counts"]) == set(STATUS_NAMES)
    assert report["joints_missing"] <= 3 and report["frames"] == 120 and report["joints_temporal_outliers"] > 0
    trc = (out / "points3d.trc").read_text().splitlines()
    assert len(trc) == 6 + 120 and trc[2].split("\t")[2:5] == ["120", "25", "mm"]
    assert (out / "skeleton.png").stat().st_size > 1000 and "excluded" in run.output

    # without robustness (a huge threshold keeps every view), the same data is far off: the exclusion matters
    dets = {c.name: load_detections(tmp_path / "dets" / f"{c.name}_json") for c in cams}
    naive = triangulate_sequence(dets, {c.name: c for c in cams},
                                 TriangulateConfig(reprojection_threshold=1e6, jump_threshold=0))
    assert np.linalg.norm(naive.points[:, 0] - X, axis=-1).mean() > 3 * err.mean()


# ------------------------------------------------------------------------------------------------- claim 4
@pytest.fixture(scope="module")
def small_recording(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(12)
    cams = make_rig(rng)
    X = make_motion(rng, 20)
    uv, score, _ = observe(rng, cams, X)
    score[5:8, 1:] = 0.05  # frames 5-7: only camera 0 is confident
    score[10, 2:] = 0.0  # frame 10: cameras 2 and 3 see nobody
    score[10, 1, :5] = 0.0  # ... and camera 1 misses joints 0-4
    for v, c in enumerate(cams):
        write_openpose(root / f"{c.name}_json", uv[:, v, None], score[:, v, None])
    (root / "calibration.toml").write_text(anipose_toml(cams))
    return root, cams, X


def test_claim4_camera_sets_must_match(small_recording, tmp_path):
    root, cams, _ = small_recording
    sources = [f"{c.name}={root / (c.name + '_json')}" for c in cams]
    # a calibrated camera without detections
    run = invoke("triangulate", *sources[:3], "-c", root / "calibration.toml", "-o", tmp_path / "a")
    assert run.exit_code == 1 and "calibrated camera(s) ['cam3'] have no detections" in " ".join(run.output.split())
    # detections of a camera that is not calibrated
    run = invoke("triangulate", *sources, "camX=" + str(root / "cam0_json"), "-c", root / "calibration.toml",
                 "-o", tmp_path / "b")
    assert run.exit_code == 1 and "camera(s) ['camX'] are not in the calibration" in " ".join(run.output.split())
    # --cameras restricts the calibration to the detections at hand
    run = invoke("triangulate", *sources[:3], "-c", root / "calibration.toml", "-o", tmp_path / "c",
                 "--cameras", "cam0,cam1,cam2")
    assert run.exit_code == 0, run.output
    dets = {c.name: load_detections(root / f"{c.name}_json") for c in cams}
    with pytest.raises(DataError) as e:
        triangulate_sequence({"cam0": dets["cam0"]}, {"cam0": cams[0]})
    assert "at least 2 cameras" in str(e.value)


def test_claim4_mismatched_layouts(small_recording):
    root, cams, X = small_recording
    dets = {c.name: load_detections(root / f"{c.name}_json") for c in cams}
    d = dets["cam2"]
    kp, sc = convert(np.nan_to_num(d.keypoints), "body25", "coco17", visible=d.scores)
    dets["cam2"] = Detections2D(d.frames, kp, sc.astype(float), "coco17", "cam2 as coco17")
    with pytest.raises(DataError) as e:
        triangulate_sequence(dets, {c.name: c for c in cams})
    msg = str(e.value)
    assert "mismatched keypoint layouts" in msg and "camera cam2: coco17 (17 keypoints" in msg
    assert "camera cam0: body25 (25 keypoints" in msg
    res = triangulate_sequence(dets, {c.name: c for c in cams}, TriangulateConfig(skeleton="coco17"))
    assert res.skeleton == "coco17" and res.points.shape == (20, 1, 17, 3)
    ref = convert(X, "body25", "coco17")
    assert np.nanmean(np.linalg.norm(res.points[:, 0] - ref, axis=-1)) < 10


def test_claim4_frames_with_fewer_than_two_usable_views_are_nan_and_counted(small_recording):
    root, cams, X = small_recording
    dets = {c.name: load_detections(root / f"{c.name}_json") for c in cams}
    res = triangulate_sequence(dets, {c.name: c for c in cams}, TriangulateConfig(max_gap=0, jump_threshold=0))
    finite = np.isfinite(res.points[:, 0]).all(-1)  # (F, J)
    assert not finite[5:8].any() and not finite[10, :5].any()
    assert finite[10, 5:].all() and finite[[0, 1, 2, 3, 4, 8, 9, 11]].all()
    r = res.report
    assert r["frames_too_few_views"] == 3 and r["joints_too_few_views"] == 3 * 25 + 5
    assert r["frames_without_3d"] == 3 and r["joints_missing"] == 3 * 25 + 5
    st = res.status[:, 0]
    assert (st[5:8, 0] == TOO_FEW_VIEWS).all() and (st[5:8, 1:] == STATUS_NAMES.index("low_likelihood")).all()
    assert (st[10, 2:] == STATUS_NAMES.index("missing")).all()
    assert np.isnan(res.reprojection[5:8]).all()
    # with interpolation the gaps are filled (3 and 1 frames) and counted
    filled = triangulate_sequence(dets, {c.name: c for c in cams}, TriangulateConfig(max_gap=3, jump_threshold=0))
    assert np.isfinite(filled.points).all() and filled.report["joints_interpolated"] == 3 * 25 + 5
    assert np.linalg.norm(filled.points[5:8, 0] - X[5:8], axis=-1).mean() < 30


def test_config_validation():
    with pytest.raises(ConfigError, match="min_cameras=1"):
        TriangulateConfig(min_cameras=1)
    with pytest.raises(ConfigError, match="likelihood_threshold=1.5"):
        TriangulateConfig(likelihood_threshold=1.5)


# ------------------------------------------------------------------------------------------------- several people
def test_two_people_are_associated_across_views_and_tracked():
    rng = np.random.default_rng(13)
    cams = make_rig(rng)
    people = [make_motion(rng, 30, offset=(-700, 0)), make_motion(rng, 30, offset=(700, 300))]
    obs = [observe(rng, cams, X) for X in people]
    uv = np.stack([o[0] for o in obs], 2)  # (F, V, 2 people, J, 2)
    sc = np.stack([o[1] for o in obs], 2)
    swap = rng.random((30, 4)) < 0.5  # each camera lists the people in its own, varying order
    uv[swap] = uv[swap][:, ::-1]
    sc[swap] = sc[swap][:, ::-1]
    dets = {c.name: Detections2D(np.arange(30), uv[:, v], sc[:, v], "body25", c.name) for v, c in enumerate(cams)}
    res = triangulate_sequence(dets, {c.name: c for c in cams})
    assert res.points.shape == (30, 2, 25, 3) and res.report["unassociated_detections"] == 0
    # each track follows one person in every frame (no identity switch)
    d = np.stack([[np.linalg.norm(res.points[:, k] - X, axis=-1).mean(-1) for X in people] for k in range(2)])
    match = d.argmin(1)  # (2 tracks, frames) -> person
    assert (match[0] == match[0, 0]).all() and (match[1] == 1 - match[0, 0]).all()
    assert d.min(1).max() < 10  # mm, every frame
    assert (res.status == USED).mean() > 0.99
