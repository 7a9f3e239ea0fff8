"""``humanvision eval / infer`` for the monocular 3D recipes (Zhou et al., pose3d.md §5.7 and §5.8): a tiny v2
network saved as a run folder in the engine's checkpoint layout, synthetic Human3.6M-layout data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from humanvision.cli import app
from humanvision.data.io import read_image
from humanvision.engine.checkpoint import save_checkpoint
from humanvision.methods import monocular3d as m3d
from humanvision.metrics.pose3d import HG_H36M17_EDGES
from humanvision.models import create_model

torch.set_num_threads(1)
RUNNER = CliRunner()
ENV = {"COLUMNS": "250", "NO_COLOR": "1"}  # rich wraps error messages at the terminal width
MPII_OF = np.asarray(m3d.MPII16_TO_H36M17)
KEPT = [j for j in range(17) if j not in (7, 9)]  # h36m17_vp joints taken as is from MPII-16 (spine, nose: midpoints)


def invoke(*args):
    return RUNNER.invoke(app, [str(a) for a in args], env=ENV)


def clean(text: str) -> str:
    return " ".join(text.split())


def bone_total(pose: np.ndarray) -> np.ndarray:
    e = np.asarray(HG_H36M17_EDGES)
    return np.linalg.norm(pose[..., e[:, 0], :] - pose[..., e[:, 1], :], axis=-1).sum(-1)


@pytest.fixture(scope="module")
def h36m(tmp_path_factory):
    from humanvision.data.synthetic.writers import generate_h36m

    root = tmp_path_factory.mktemp("h36m")
    generate_h36m(root, 6, size=(256, 256), views=2, subjects=2, actions=2)
    return root


def recipe_dict(tmp: Path, h36m: Path) -> dict:
    """A stage-2 recipe whose MPII set and previous-stage weights do not exist: eval and infer use neither."""
    return {"name": "zhou3d_test", "stage": "2d3d", "init_weights": str(tmp / "stage1_run"),
            "model": {"name": "resnet_depth_mini"},
            "data": {"mpii_train": str(tmp / "mpii/mpii_train.json"), "mpii_images": str(tmp / "mpii/images"),
                     "h36m_labels": str(h36m / "human36m-multiview-labels-GTbboxes.npy"),
                     "h36m_root": str(h36m / "processed"), "h36m_train_subjects": ["S1"],
                     "h36m_val_subjects": ["S2"], "h36m_val_every": 1},
            "loss": {"weight_3d": 0.1},
            "train": {"device": "cpu", "precision": "fp32", "channels_last": False, "num_workers": 0,
                      "output_dir": str(tmp / "run")},
            "eval": {"batch_size": 4, "flip_test": True}}


@pytest.fixture(scope="module")
def run(h36m, tmp_path_factory):
    """(recipe file, run folder with last/model.safetensors holding the method's ``model.*`` keys, the method)."""
    tmp = tmp_path_factory.mktemp("zhou3d")
    config = tmp / "zhou3d_test.yaml"
    config.write_text(yaml.safe_dump(recipe_dict(tmp, h36m), sort_keys=False))
    torch.manual_seed(0)
    method = m3d.Monocular3DPose(create_model("resnet_depth_mini", skeleton="mpii16"), weight_3d=0.1)
    with torch.no_grad():
        method.model.depth_head.bias.normal_(0.0, 0.2)  # a depth per joint (crop widths): a non-flat 3D pose
    save_checkpoint(tmp / "run" / "last", {k: v.contiguous() for k, v in method.state_dict().items()},
                    meta={"step": 1})
    return config, tmp / "run", method.eval()


@pytest.fixture(scope="module")
def person(h36m, tmp_path_factory):
    """One S2 frame (256 x 256, one person) as a stand-alone image file."""
    pytest.importorskip("matplotlib")
    src = min((h36m / "processed" / "S2").rglob("*.jpg"))
    dst = tmp_path_factory.mktemp("images") / "person.jpg"
    shutil.copy(src, dst)
    return dst


def check_record(r: dict, total: float = 4000.0) -> tuple[np.ndarray, np.ndarray]:
    """The contract of one person's record; returns (joints_3d, keypoints_2d)."""
    j3, kp = np.asarray(r["joints_3d"]), np.asarray(r["keypoints_2d"])
    assert r["skeleton_3d"] == "h36m17_vp" and r["skeleton_2d"] == "mpii16"
    assert j3.shape == (17, 3) and kp.shape == (16, 2) and np.asarray(r["scores"]).shape == (16,)
    assert np.all(j3[0] == 0.0)  # pelvis-relative
    assert bone_total(j3) == pytest.approx(total, abs=0.2)  # metric_skeleton's 15 bones, mm (2-decimal rounding)
    # the 3D x, y and the 2D keypoints come from the same heatmap argmax: x, y (image axes) are the keypoints
    # relative to the pelvis times one scale (weak perspective), y down
    rel = kp[MPII_OF[KEPT]] - kp[6]
    k = float((j3[KEPT, :2] * rel).sum() / (rel * rel).sum())
    assert k > 0
    np.testing.assert_allclose(j3[KEPT, :2], k * rel, atol=0.05 * k + 0.02)
    assert np.ptp(j3[:, 2]) > 1.0  # a depth per joint, not a flat pose
    return j3, kp


# ----------------------------------------------------------------------------------------------------- infer
def test_infer_image_writes_overlay_3d_plot_and_joints(run, person, tmp_path):
    config, run_dir, method = run
    out = tmp_path / "out"
    result = invoke("infer", person, "--config", config, "--weights", run_dir, "--out", out)
    assert result.exit_code == 0, result.output
    assert "1 image(s)/frame(s)" in clean(result.output)
    assert read_image(out / "person_pose3d.png").shape == (256, 256 + 256, 3)  # overlay | one 3D panel
    preds = json.loads((out / "predictions.json").read_text())
    assert list(preds) == ["person.jpg"] and len(preds["person.jpg"]) == 1
    r = preds["person.jpg"][0]
    j3, kp = check_record(r)
    assert r["bbox"] == [0.0, 0.0, 256.0, 256.0]  # no boxes: the whole image (the seed's demo crop)
    assert (kp >= 0).all() and (kp < 256).all()
    # the CLI ran --weights on the whole-image crop: the same as the method from Python
    ref = m3d.predict_image(method, read_image(person), flip_test=True)
    np.testing.assert_allclose(j3, ref["joints_3d"][0], atol=0.006)
    np.testing.assert_allclose(kp, ref["keypoints_2d"][0], atol=0.006)


def test_infer_boxes_one_panel_per_person(run, person, tmp_path):
    config, run_dir, method = run
    boxes = [[20.0, 10.0, 100.0, 120.0], [130.0, 100.0, 90.0, 140.0]]
    box_file = tmp_path / "boxes.json"
    box_file.write_text(json.dumps([{"image": person.name, "bbox": b, "score": 0.8} for b in boxes]))
    out = tmp_path / "out"
    result = invoke("infer", person, "--config", config, "--weights", run_dir, "--boxes", box_file, "--out", out)
    assert result.exit_code == 0, result.output
    assert read_image(out / "person_pose3d.png").shape == (256, 256 * 3, 3)  # overlay | 2 panels
    records = json.loads((out / "predictions.json").read_text())["person.jpg"]
    assert [r["bbox"] for r in records] == boxes and [r["box_score"] for r in records] == [0.8, 0.8]
    ref = m3d.predict_image(method, read_image(person), np.array(boxes), box_padding=1.25)
    for i, (r, (x, y, w, h)) in enumerate(zip(records, boxes)):
        j3, kp = check_record(r)
        half = 1.25 * max(w, h) / 2  # argmax keypoints lie in the padded square crop of their box
        assert (np.abs(kp - [x + w / 2, y + h / 2]) <= half + 1e-6).all()
        np.testing.assert_allclose(j3, ref["joints_3d"][i], atol=0.006)

    box_file.write_text(json.dumps([{"image": person.name, "bbox": [5, 5, 0, 40]}]))
    result = invoke("infer", person, "--config", config, "--weights", run_dir, "--boxes", box_file, "--out", out)
    assert result.exit_code == 1 and "person.jpg" in clean(result.output) and "box #0" in clean(result.output)
    assert "Traceback" not in result.output


def test_infer_video_mp4_and_per_frame_json(run, person, tmp_path):
    import cv2

    config, run_dir, _ = run
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (256, 256))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write mp4v")
    frame = cv2.imread(str(person))
    for _ in range(3):
        writer.write(frame)
    writer.release()
    box_file = tmp_path / "boxes.json"  # two people in frame 1 only: every frame gets two 3D panels
    box_file.write_text(json.dumps([{"image_id": "clip_000001", "bbox": b} for b in ([0, 0, 128, 256],
                                                                                      [128, 0, 128, 256])]))
    out = tmp_path / "out"
    result = invoke("infer", video, "--config", config, "--weights", run_dir, "--boxes", box_file, "--out", out)
    assert result.exit_code == 0, result.output
    preds = json.loads((out / "predictions.json").read_text())
    assert list(preds) == [f"clip.mp4#{i}" for i in range(3)]
    assert [len(v) for v in preds.values()] == [1, 2, 1]
    for records in preds.values():
        for r in records:
            check_record(r)
    cap = cv2.VideoCapture(str(out / "clip_pose3d.mp4"))
    sizes = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        sizes.append(img.shape[:2])
    cap.release()
    assert sizes == [(256, 256 * 3)] * 3


def test_infer_corrupt_image_and_bad_weights_are_named_errors(run, person, tmp_path):
    config, run_dir, _ = run
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    result = invoke("infer", person, bad, "--config", config, "--weights", run_dir, "--out", out)
    # the infer policy: an unreadable input stops the command with an error naming it; earlier outputs stay
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "broken.png" in clean(result.output) and "cannot decode" in clean(result.output)
    assert (out / "person_pose3d.png").is_file()

    result = invoke("infer", person, "--config", config, "--weights", tmp_path / "nowhere", "--out", out)
    assert result.exit_code == 1 and "weights: file not found" in clean(result.output)
    result = invoke("infer", person, "--config", config, "--weights", config, "--out", out)
    assert result.exit_code == 1 and "not a safetensors weights file" in clean(result.output)
    # 2D-only weights (no depth head) initialise stage 1, but are not a 3D model to run
    state = {k: v.contiguous() for k, v in run[2].state_dict().items() if not k.startswith("model.depth_head")}
    save_checkpoint(tmp_path / "run2d" / "last", state)
    result = invoke("infer", person, "--config", config, "--weights", tmp_path / "run2d", "--out", out)
    assert result.exit_code == 1 and "missing keys" in clean(result.output) and "depth_head" in result.output
    result = invoke("infer", person, "--config", config, "--weights", run_dir, "--coco-ann", config, "--out", out)
    assert result.exit_code == 1 and "--coco-ann" in clean(result.output)


# ------------------------------------------------------------------------------------------------------ eval
def reference_metrics(method, config: Path) -> dict:
    """§5.7 recomputed here: predictions -> metric skeleton, then the three protocols with plain numpy."""
    recipe = m3d.load_recipe(config, unchecked=("data.mpii", "init_weights"))
    val = m3d.validation_dataset(recipe, 64, 16)
    items = [val[i] for i in range(len(val))]
    with torch.no_grad():
        out = method.predict(torch.stack([it["image"] for it in items]), flip_test=True)
    pred = m3d.metric_skeleton(out["pose_crop"], 4000.0)
    gt = np.stack([it["gt_3d"].double().numpy() for it in items])
    gt = gt - gt[:, :1]
    hg = np.linalg.norm(pred - gt, axis=-1).mean()
    p1_pred = pred * (bone_total(gt) / bone_total(pred))[:, None, None]
    p1 = np.linalg.norm(p1_pred - gt, axis=-1).mean()
    errs = []
    for p, g in zip(pred, gt):  # Umeyama similarity p -> g
        pc, gc = p - p.mean(0), g - g.mean(0)
        u, s, vt = np.linalg.svd(gc.T @ pc)
        d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
        r = u @ d @ vt
        scale = (s * np.diag(d)).sum() / (pc ** 2).sum()
        errs.append(np.linalg.norm(scale * pc @ r.T + g.mean(0) - g, axis=-1).mean())
    return {"mpjpe_hg": hg, "mpjpe_p1": p1, "mpjpe_p2": float(np.mean(errs)), "count": len(items)}


def test_eval_writes_protocol_metrics_per_action(run, tmp_path):
    config, run_dir, method = run
    result = invoke("eval", config, "--weights", run_dir, "--out", tmp_path / "eval")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    ref = reference_metrics(method, config)
    assert ref["count"] > 2 and metrics["count"] == ref["count"]  # every S2 frame x 2 cameras
    for key in ("mpjpe_hg", "mpjpe_p1", "mpjpe_p2"):
        assert metrics[key] == pytest.approx(ref[key], rel=1e-5), key
        # synthetic actions Synthetic-1 / Synthetic-2 are trials of one action, merged as H36M's are
        assert metrics[f"per_action_{key.split('_')[1]}"] == {"Synthetic": pytest.approx(metrics[key])}
    assert metrics["per_action_count"] == {"Synthetic": ref["count"]}
    assert metrics["subjects"] == ["S2"] and metrics["total_bone_length"] == 4000.0 and metrics["flip_test"]
    text = clean(result.output)
    assert "mpjpe_hg" in text and "mpjpe_p2" in text and "per action" in text and "Synthetic" in text


def test_eval_needs_the_h36m_validation_set_and_takes_no_detections(run, tmp_path):
    config, run_dir, _ = run
    data = yaml.safe_load(config.read_text())
    result = invoke("eval", config, "--weights", run_dir, "--dets", config)
    assert result.exit_code == 1 and "--dets" in clean(result.output)
    stage1 = {**data, "stage": "2d", "loss": {"weight_3d": 0.0}}
    stage1.pop("init_weights")
    for key in ("h36m_labels", "h36m_root"):
        stage1["data"] = {k: v for k, v in data["data"].items() if k != key}
        cfg = tmp_path / "stage1.yaml"
        cfg.write_text(yaml.safe_dump(stage1))
        result = invoke("eval", cfg, "--weights", run_dir)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert f"data.{key}: evaluation reads the Human3.6M validation subjects ['S2']" in clean(result.output)


@pytest.mark.slow
def test_two_process_infer_equals_single_process(run, person, tmp_path, single_and_two_ranks):
    """``torchrun --nproc_per_node 2 -m humanvision.cli infer`` with a monocular 3D recipe: each rank takes a block
    of the files, rank 0 merges predictions.json in input order (as for 2D recipes, test_infer_shard.py)."""
    config, run_dir, _ = run
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("b.jpg", "a.jpg", "c.jpg"):
        shutil.copy(person, inputs / name)
    single_and_two_ranks(["infer", inputs, "--config", config, "--weights", run_dir], tmp_path / "single",
                         tmp_path / "sharded")
    one, two = tmp_path / "single", tmp_path / "sharded"
    assert (two / "predictions.json").read_text() == (one / "predictions.json").read_text()  # key order too
    assert list(json.loads((one / "predictions.json").read_text())) == ["a.jpg", "b.jpg", "c.jpg"]
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())  # no parts left
