"""Mocap poses (pybullet's DeepMimic clips on the synthetic body) as a COCO keypoint file without images."""

from __future__ import annotations

import contextlib
import io
import json

import cv2
import numpy as np
import pytest

from humanvision.data.readers import CocoKeypoints
from humanvision.errors import DataError


@pytest.fixture(scope="module")
def mocap_set(tmp_path_factory):
    pytest.importorskip("pybullet")
    from humanvision.data.synthetic.mocap import generate_mocap_coco

    out = tmp_path_factory.mktemp("mocap")
    summary = generate_mocap_coco(out, {"train": 6, "val": 4}, size=(160, 128), seed=5, views=2)
    return out, summary


def _load(out, split):
    return json.loads((out / "annotations" / f"person_keypoints_{split}.json").read_text())


def test_mocap_file_loads_in_our_reader_and_pycocotools(mocap_set):
    out, summary = mocap_set
    train = _load(out, "train")
    assert len(train["images"]) == 12 and summary["frames"] == 20
    assert len(train["annotations"]) == 12  # the cameras frame the person: one annotation per image
    reader = CocoKeypoints(out / "annotations" / "person_keypoints_train.json", out / "train")
    assert len(reader) == 12 and reader.skeleton.name == "coco17"
    for s, a in zip(reader, train["annotations"]):
        kp = np.reshape(a["keypoints"], (17, 3))
        np.testing.assert_allclose(s.keypoints_2d[0], kp[:, :2], atol=1e-3)
        np.testing.assert_array_equal(s.meta["visibility_flags"][0], kp[:, 2])
    flags = np.concatenate([np.reshape(a["keypoints"], (17, 3))[:, 2] for a in train["annotations"]])
    assert set(flags.tolist()) <= {0, 1, 2} and (flags == 2).mean() > 0.4
    assert (flags == 1).any()  # self-occlusion

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(out / "annotations" / "person_keypoints_val.json"))
        dets = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
                for a in coco.dataset["annotations"]]
        ev = COCOeval(coco, coco.loadRes(dets), "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert len(coco.getImgIds()) == 8 and ev.stats[0] == pytest.approx(1.0)


def test_keypoints_are_projections_of_the_3d_joints_and_inside_the_boxes(mocap_set):
    out, _ = mocap_set
    for split in ("train", "val"):
        doc = _load(out, split)
        images = {im["id"]: im for im in doc["images"]}
        for a in doc["annotations"]:
            im = images[a["image_id"]]
            cam = im["camera"]
            X = np.asarray(a["keypoints_3d"], dtype=np.float64)
            rvec = cv2.Rodrigues(np.asarray(cam["R"], dtype=np.float64))[0]
            uv = cv2.projectPoints(X, rvec, np.asarray(cam["t"], dtype=np.float64),
                                   np.asarray(cam["K"], dtype=np.float64), None)[0].reshape(17, 2)
            kp = np.reshape(a["keypoints"], (17, 3))
            lab = kp[:, 2] > 0
            assert lab.sum() == a["num_keypoints"] > 0
            np.testing.assert_allclose(kp[lab, :2], uv[lab], atol=1e-6)
            assert (kp[~lab, :2] == 0).all()
            x, y, w, h = a["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= im["width"] and y + h <= im["height"]
            assert (kp[lab, 0] >= x).all() and (kp[lab, 0] <= x + w).all()
            assert (kp[lab, 1] >= y).all() and (kp[lab, 1] <= y + h).all()
            assert 0 < a["area"] <= w * h + 1e-6
            # a real body: shoulders apart, every joint above the ground plane
            assert np.linalg.norm(X[5] - X[6]) > 150 and X[:, 2].min() > -1.0


def test_held_out_clips_and_determinism(mocap_set, tmp_path):
    from humanvision.data.synthetic.mocap import DEFAULT_VAL_CLIPS, generate_mocap_coco

    out, summary = mocap_set
    train, val = _load(out, "train"), _load(out, "val")
    train_clips = {im["clip"] for im in train["images"]}
    val_clips = {im["clip"] for im in val["images"]}
    assert val_clips <= set(DEFAULT_VAL_CLIPS) and not train_clips & set(DEFAULT_VAL_CLIPS)
    assert set(summary["clips"]["val"]) == set(DEFAULT_VAL_CLIPS)
    assert train["info"]["clips"] == summary["clips"]["train"]
    # two views of one pose: same 3D joints, different cameras
    a, b = train["annotations"][:2]
    assert a["keypoints_3d"] == b["keypoints_3d"]
    assert train["images"][0]["camera"] != train["images"][1]["camera"]
    again = tmp_path / "again"
    generate_mocap_coco(again, {"train": 6, "val": 4}, size=(160, 128), seed=5, views=2)
    for split in ("train", "val"):
        assert (again / "annotations" / f"person_keypoints_{split}.json").read_bytes() == \
            (out / "annotations" / f"person_keypoints_{split}.json").read_bytes()
    other = generate_mocap_coco(tmp_path / "other", 6, size=(160, 128), seed=6, views=2)
    first = _load(tmp_path / "other", "train")["annotations"][0]
    assert first["keypoints"] != train["annotations"][0]["keypoints"]
    assert other["clips"]["train"] == summary["clips"]["train"]
    with pytest.raises(DataError, match="held-out clips \\['nosuch'\\]"):
        generate_mocap_coco(tmp_path / "bad", 1, val_clips=("nosuch",))


def test_the_pose_comes_from_the_clip_frame_on_the_synthetic_body():
    pytest.importorskip("pybullet")
    from humanvision.data.synthetic import BodyShape, load_deepmimic, select_joints
    from humanvision.data.synthetic.mocap import mocap_sample, pose_mocap_body

    clips = [load_deepmimic(c) for c in ("walk", "cartwheel", "crawl")]
    sample = mocap_sample(clips, seed=1, index=3, size=(128, 128))
    again = pose_mocap_body(clips[sample.motion_index], sample.frame, sample.body.shape)
    np.testing.assert_array_equal(sample.body.joints, again.joints)
    view = sample.views[0]
    np.testing.assert_allclose(view.keypoints, view.camera.project(sample.body.joints), atol=1e-9)

    # different clips (and frames) give different poses of one body; one frame gives one pose
    sel = select_joints("coco17")
    shape = BodyShape()

    def pose(clip, frame):
        j = pose_mocap_body(clip, frame, shape).joints[sel]
        return j - j.mean(0)

    np.testing.assert_array_equal(pose(clips[0], 5), pose(clips[0], 5))
    pairs = ((0, 1), (0, 2), (1, 2))
    diffs = [np.linalg.norm(pose(clips[i], 5) - pose(clips[j], 5), axis=1).mean() for i, j in pairs]
    assert min(diffs) > 100  # mm per joint
    assert np.linalg.norm(pose(clips[0], 0) - pose(clips[0], 15), axis=1).mean() > 20  # a walk moves


def test_cli_synth_mocap_coco(tmp_path):
    pytest.importorskip("pybullet")
    from typer.testing import CliRunner

    from humanvision.cli import app

    run = CliRunner().invoke(app, ["synth", "--format", "mocap_coco", "--num", "3", "--val", "2", "--size",
                                   "96x96", "--seed", "2", "--out", str(tmp_path)])
    assert run.exit_code == 0, run.output
    assert "spinkick" in run.output and not list(tmp_path.rglob("*.png"))  # no images, no contact sheet
    train = _load(tmp_path, "train")
    assert len(train["images"]) == 3 and len(_load(tmp_path, "val")["images"]) == 2
    assert train["images"][0]["width"] == 96 and train["info"]["seed"] == 2
