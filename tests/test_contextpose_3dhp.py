"""ContextPose / the plain volumetric monocular model on MPI-INF-3DHP (humanvision.methods.contextpose, pose3d.md
§3.7, §4.2): the h36m17 -> mpi_inf_3dhp17 table, the test-set crops and cameras (official layout, valid frames,
the cuboid centre of eval.root), PCK@150 / AUC per subset and sequence against a hand computation, `humanvision
eval` end to end, and the frozen-backbone-first schedule (train.freeze_backbone_epochs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from humanvision.config import load_config
from humanvision.errors import ConfigError, DataError
from humanvision.methods import contextpose as cp
from humanvision.methods import volumetric as vol
from humanvision.skeletons import get_skeleton

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = {"backbone": "simplebaseline_tiny", "input_size": 64, "volume_size": 32, "base": "gt"}

# a standing person in the 3DHP test order (camera frame: x right, y down, mm, about the pelvis)
POSE = np.array([[0, -750, 0], [0, -500, 0], [-180, -480, 0], [-250, -230, 20], [-280, 0, 40], [180, -480, 0],
                 [250, -230, 20], [280, 0, 40], [-120, 0, 0], [-130, 430, 10], [-130, 850, 0], [120, 0, 0],
                 [130, 430, 10], [130, 850, 0], [0, 0, 0], [0, -250, 0], [0, -620, 30]], dtype=np.float64)
#: the fixture: sequence -> valid_frame flags (TS1 / TS3 / TS5: one subset each)
LAYOUT = {1: [1, 0], 3: [1], 5: [0, 1]}


def write_3dhp_test(root: Path, layout: dict[int, list[int]] = LAYOUT, seed: int = 0) -> dict[int, dict]:
    """The official test layout (the reader's docstring; tests/test_readers_3d.py writes the same files):
    ``TS{n}/annot_data.mat`` (MATLAB v7.3 = HDF5) with ``annot2 (F, 1, 17, 2)``, ``annot3`` / ``univ_annot3 (F, 1,
    17, 3)`` camera-frame mm and ``valid_frame (F, 1)``, and ``TS{n}/imageSequence/img_%06d.jpg`` at the
    sequence's resolution. ``annot2`` is ``annot3`` projected with the table's intrinsics; ``univ_annot3`` is
    ``annot3`` scaled by 0.95 about the pelvis (a height-normalised stand-in)."""
    import h5py

    rng = np.random.default_rng(seed)
    out = {}
    for n, valid in layout.items():
        (w, h), f, c = cp.THREEDHP_TEST_CAMERAS[n]
        frames = len(valid)
        shift = np.stack([rng.uniform(-300, 300, frames), rng.uniform(-100, 100, frames),
                          rng.uniform(3500, 4500, frames)], 1)
        a3 = POSE[None] + rng.normal(0, 10, (frames, 17, 3)) + shift[:, None]
        a2 = np.stack([f[0] * a3[..., 0] / a3[..., 2] + c[0], f[1] * a3[..., 1] / a3[..., 2] + c[1]], -1)
        univ = a3[:, 14:15] + 0.95 * (a3 - a3[:, 14:15])
        d = root / f"TS{n}"
        (d / "imageSequence").mkdir(parents=True)
        with h5py.File(d / "annot_data.mat", "w") as hf:
            hf["annot2"], hf["annot3"], hf["univ_annot3"] = a2[:, None], a3[:, None], univ[:, None]
            hf["valid_frame"] = np.asarray(valid, np.float64)[:, None]
        for t in range(frames):
            img = np.full((h, w, 3), 90, np.uint8)
            for u, v in a2[t]:
                cv2.circle(img, (int(u), int(v)), 12, (200, 180, 60), -1)
            cv2.imwrite(str(d / "imageSequence" / f"img_{t + 1:06d}.jpg"), img)
        out[n] = {"annot2": a2, "annot3": a3, "univ": univ, "valid": np.asarray(valid, bool)}
    return out


@pytest.fixture(scope="module")
def hp(tmp_path_factory):
    root = tmp_path_factory.mktemp("3dhp_test")
    return root, write_3dhp_test(root)


def tiny_method(context: bool = True) -> cp.ContextPose:
    torch.manual_seed(0)
    method = cp.build_method(load_config({"model": {**TINY, "context": context}}, cp.ContextPoseRecipe))
    if context:
        g = torch.Generator().manual_seed(0)
        method.set_limb_statistics(torch.rand(16, generator=g) * 300 + 100, torch.rand(16, generator=g) * 20 + 5)
    return method


# ------------------------------------------------------------------------------------------ the joint table
def test_h36m17_to_3dhp17_table_by_joint_names():
    h36m, hp17 = get_skeleton("h36m17").joints, get_skeleton("mpi_inf_3dhp17").joints
    table = cp.H36M17_TO_3DHP17
    assert len(table) == 17 and sorted(table) == list(range(17))  # a permutation: every CP joint used once
    renamed = {"neck": "thorax", "head": "nose"}  # 3DHP's neck is H36M's thorax, its head H36M's neck/nose
    for k, name in enumerate(hp17):
        assert h36m[table[k]] == renamed.get(name, name), (k, name, h36m[table[k]])
    assert table[14] == 6 and hp17[14] == "pelvis"  # the metric's root is CP's root
    assert hp17[:14] == ("head_top", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
                         "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip",
                         "left_knee", "left_ankle")  # the official 14 are the first 14


# ------------------------------------------------------------------------------------ crops and cameras
def test_crops_cameras_valid_frames_and_level_world(hp):
    root, data = hp
    ds = cp.ThreeDHPTestCrops(root, 64, sequences=(1, 3, 5))
    assert len(ds) == 3 and ds.sequence_names == ["TS1", "TS3", "TS5"] and ds.frames.tolist() == [0, 0, 1]
    r0 = cp.level_rotation(2)
    np.testing.assert_allclose(r0 @ [0.0, -1.0, 0.0], [0, 0, 1])  # the camera's up is the world's z
    for i, (n, t) in enumerate([(1, 0), (3, 0), (5, 1)]):
        a2, a3 = data[n]["annot2"][t], data[n]["annot3"][t]
        item = ds[i]
        assert item["images"].shape == (1, 3, 64, 64) and item["view_mask"].tolist() == [True]
        np.testing.assert_allclose(item["base_point"].numpy(), r0 @ a3[14], atol=1e-3)  # eval.root: gt (annot3)
        # the crop camera maps the level-world joints onto the crop's annot2 pixels
        proj, box = ds.camera(i)
        x = np.concatenate([a3 @ r0.T, np.ones((17, 1))], 1) @ proj.T
        side = box[2] - box[0]
        np.testing.assert_allclose(x[:, :2] / x[:, 2:], (a2 - box[:2]) * 64 / side, atol=2e-3)
        assert side == int(1.2 * max(np.ceil(a2.max(0)) - np.floor(a2.min(0))))
        np.testing.assert_allclose(ds.gt[i], data[n]["univ"][t], atol=1e-3)  # univ_annot3 is the ground truth
    for name, cam in ds.cameras.items():
        assert cam["source"] == "table" and cam["reprojection_px"] < 1e-3, name
    # fitted intrinsics recover the table's (the fixture's annot2 is a pinhole projection)
    fit = cp.ThreeDHPTestCrops(root, 64, sequences=(1, 5), intrinsics="fit", ground_truth="annot3")
    for n in (1, 5):
        (w, h), f, c = cp.THREEDHP_TEST_CAMERAS[n]
        got = fit.cameras[f"TS{n}"]
        np.testing.assert_allclose([got["fx"], got["fy"], got["cx"], got["cy"]], [*f, *c], rtol=1e-6)
        assert (got["width"], got["height"]) == (w, h)
    np.testing.assert_allclose(fit.gt[1], data[5]["annot3"][1], atol=1e-3)


def test_root_choices(hp, tmp_path):
    root, _ = hp
    noisy = cp.ThreeDHPTestCrops(root, 64, sequences=(1, 3, 5), root_source="gt_noisy", root_noise_mm=30.0,
                                 root_seed=4)
    again = cp.ThreeDHPTestCrops(root, 64, sequences=(5, 3, 1), root_source="gt_noisy", root_noise_mm=30.0,
                                 root_seed=4)
    assert again.sequence_names == ["TS5", "TS3", "TS1"]  # the reader keeps the order asked for
    off = noisy.base - noisy.pelvis
    assert 1 < np.abs(off).max() < 200
    np.testing.assert_allclose(off, (again.base - again.pelvis)[::-1])  # fixed per (sequence, frame)
    file = tmp_path / "roots.npz"
    pelvis = np.array([[1.0, 2.0, 3000.0], [4.0, 5.0, 3500.0], [7.0, 8.0, 4000.0], [0.0, 0.0, 1.0]])
    np.savez(file, sequences=np.array(["TS5", "TS1", "TS3", "TS6"]), frames=np.array([1, 0, 0, 9]), pelvis=pelvis)
    ds = cp.ThreeDHPTestCrops(root, 64, sequences=(1, 3, 5), root_source="file", root_file=file)
    np.testing.assert_allclose(ds.base, pelvis[[1, 2, 0]])  # matched by (sequence, frame), not by position
    np.savez(file, sequences=np.array([1, 3]), frames=np.array([0, 0]), pelvis=pelvis[:2])
    with pytest.raises(DataError, match="TS5 frame 1"):
        cp.ThreeDHPTestCrops(root, 64, sequences=(1, 3, 5), root_source="file", root_file=file)
    with pytest.raises(DataError, match="threedhp_root"):
        cp.ThreeDHPTestCrops(tmp_path / "nowhere", 64)
    for bad, key in (({"root": "gt_noisy"}, "eval.root_noise_mm"), ({"root": "file"}, "eval.root_file"),
                     ({"sequences": [1, 7]}, "eval.sequences"), ({"dataset": "mpi_inf_3dhp"}, "eval.threedhp_root"),
                     ({"bbox_scale": 0.0}, "eval.bbox_scale")):
        with pytest.raises(ConfigError, match=key):
            load_config({"eval": bad}, cp.ContextPoseRecipe)


# --------------------------------------------------------------------------------- the numbers, by hand
def test_pck_auc_per_subset_and_sequence_match_a_hand_computation(hp):
    """Two valid frames (TS1: GS, TS5: Outdoor; their invalid neighbours are skipped) with the model's output
    replaced by the ground truth plus known per-joint errors. Frame 1: 5 joints at 0 mm, 5 at 100, 4 at 200;
    frame 2: 7 at 140, 7 at 160; the pelvis at 0 (plus a whole-body shift, which the pelvis-relative metric
    removes), spine and head (not among the 14) at 500 mm."""
    root, _ = hp
    ds = cp.ThreeDHPTestCrops(root, 64, sequences=(1, 5))
    assert len(ds) == 2
    errors = np.zeros((2, 17))
    errors[0, :14] = [0] * 5 + [100] * 5 + [200] * 4
    errors[1, :14] = [140] * 7 + [160] * 7
    errors[:, 15:] = 500
    direction = np.array([0.6, 0.0, 0.8])
    pred_cam = ds.gt + errors[..., None] * direction + np.array([50.0, -20.0, 30.0])  # test order, camera frame
    pred_h36m = np.empty_like(pred_cam)
    pred_h36m[:, list(cp.H36M17_TO_3DHP17)] = pred_cam  # back to CP's joint order
    pred_world = pred_h36m @ ds.rotation.T
    method = tiny_method()
    calls = []

    def fake_predict(images, proj, base_point, view_mask=None, angle=None):
        i = len(calls)
        calls.append(base_point.clone())
        b = images.shape[0]
        return {"keypoints_3d": torch.from_numpy(pred_world[i:i + b])}

    method.predict = fake_predict
    m = cp.evaluate_3dhp_crops(method, ds, batch_size=4)
    np.testing.assert_allclose(calls[0].numpy(), ds.pelvis @ ds.rotation.T)  # the GT annot3 pelvis, level world
    assert m["count"] == 2.0 and m["dataset"] == "mpi_inf_3dhp"
    gs, outdoor, total = m["per_subset"]["GS"], m["per_subset"]["Outdoor"], m["per_subset"]["ALL"]
    assert set(m["per_subset"]) == {"GS", "Outdoor", "ALL"} and set(m["per_sequence"]) == {"TS1", "TS5"}
    assert gs["pck"] == pytest.approx(100 * 10 / 14) and gs["auc"] == pytest.approx(100 * (5 * 30 + 5 * 10) / 434)
    assert gs["mpjpe"] == pytest.approx(1300 / 14)
    assert outdoor["pck"] == pytest.approx(50.0) and outdoor["auc"] == pytest.approx(100 * 7 * 2 / 434)
    assert outdoor["mpjpe"] == pytest.approx(150.0)
    assert total["pck"] == pytest.approx(100 * 17 / 28) == m["pck"]
    assert total["auc"] == pytest.approx(100 * 214 / 868) == m["auc"]
    assert total["mpjpe"] == pytest.approx(3400 / 28) and total["count"] == 2
    assert m["per_sequence"]["TS1"] == gs and m["per_sequence"]["TS5"] == outdoor
    assert m["base_pelvis_error"] == pytest.approx(0.0, abs=1e-6)
    assert m["protocol"]["root"].startswith("gt: ground-truth pelvis (annot3)")
    table = cp.format_3dhp_table(m)
    assert "GS" in table and "Outdoor" in table and "TS5" in table and f"{100 * 17 / 28:.1f}" in table


# ----------------------------------------------------------------------------------------------- end to end
def write_recipe(path: Path, root: Path, context: bool = True, **eval_keys) -> Path:
    recipe = {"name": "cp_3dhp_test", "triangulation": "contextpose", "model": {**TINY, "context": context},
              "data": {"labels": "/nowhere/labels.npy", "root": "/nowhere/processed"},  # not needed for 3DHP
              "eval": {"batch_size": 2, "dataset": "mpi_inf_3dhp", "threedhp_root": str(root), **eval_keys}}
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_humanvision_eval_on_3dhp_end_to_end(hp, tmp_path):
    from typer.testing import CliRunner

    from humanvision.cli import app

    root, _ = hp
    method = tiny_method()
    torch.save(method.state_dict(), tmp_path / "cp.pth")
    config = write_recipe(tmp_path / "cp.yaml", root, sequences=[1, 3, 5])
    res = CliRunner().invoke(app, ["eval", str(config), "--weights", str(tmp_path / "cp.pth"), "--out",
                                   str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "GS" in res.output and "noGS" in res.output and "Outdoor" in res.output and "ALL" in res.output
    m = json.loads((tmp_path / "out/metrics.json").read_text())
    assert m["count"] == 3 and set(m["per_subset"]) == {"GS", "noGS", "Outdoor", "ALL"}
    assert set(m["per_sequence"]) == {"TS1", "TS3", "TS5"} and m["per_subset"]["noGS"]["count"] == 1
    assert all(math.isfinite(m[k]) for k in ("pck", "auc", "mpjpe")) and 0 <= m["pck"] <= 100
    assert m["protocol"]["root"].startswith("gt:") and m["protocol"]["ground_truth"] == "univ_annot3"
    assert m["base_pelvis_error"] == pytest.approx(0.0, abs=1e-6)
    pred = np.load(tmp_path / "out/predictions.npz")
    assert pred["pred"].shape == (3, 17, 3) and pred["sequences"].tolist() == ["TS1", "TS3", "TS5"]
    # the same numbers through the Python API; a noisy root is reported as such
    recipe = cp.load_recipe(config, unchecked=cp.eval_unchecked(config))
    again = cp.evaluate_weights(recipe, tmp_path / "cp.pth")
    assert again["pck"] == pytest.approx(m["pck"]) and again["auc"] == pytest.approx(m["auc"])
    noisy = cp.load_recipe(config, ["eval.root=gt_noisy", "eval.root_noise_mm=40"],
                           unchecked=cp.eval_unchecked(config))
    n = cp.evaluate_weights(noisy, tmp_path / "cp.pth")
    assert n["base_pelvis_error"] > 1 and "noise" in n["protocol"]["root"]
    # Human3.6M is still the default dataset, and its data paths stay checked there
    assert cp.eval_unchecked(config, ["eval.dataset=h36m"]) == ("model.weights", "model.base_train_predictions")


def test_plain_volumetric_monocular_model_on_3dhp(hp, tmp_path):
    root, _ = hp
    method = tiny_method(context=False)
    assert method.volume_net.context is None
    torch.save(method.state_dict(), tmp_path / "vol.pth")
    config = write_recipe(tmp_path / "vol.yaml", root, context=False, sequences=[3, 5])
    m = cp.evaluate_weights(cp.load_recipe(config, unchecked=cp.eval_unchecked(config)), tmp_path / "vol.pth")
    assert m["count"] == 2 and set(m["per_subset"]) == {"noGS", "Outdoor", "ALL"}
    assert math.isfinite(m["auc"])


# ---------------------------------------------------------------------------------- frozen backbone first
def test_freeze_backbone_switch():
    method = tiny_method()
    method.freeze_backbone(True)
    method.train()
    assert not any(m.training for m in method.backbone.modules()) and method.volume_net.training
    batch = {"images": torch.randn(2, 1, 3, 64, 64), "proj": torch.eye(3, 4, dtype=torch.float64).expand(2, 1, 3, 4),
             "view_mask": torch.ones(2, 1, dtype=torch.bool), "base_point": torch.zeros(2, 3, dtype=torch.float64),
             "keypoints_3d": torch.randn(2, 17, 3, dtype=torch.float64) * 300}
    batch["proj"] = batch["proj"].clone()
    batch["proj"][..., 2, 3] = 3000.0  # the cuboid 3 m in front of the camera
    method(batch)["loss"].backward()
    assert all(p.grad is None for p in method.backbone.parameters())
    assert method.process_features.weight.grad is not None and method.volume_net.output_layer.weight.grad is not None
    method.zero_grad(set_to_none=True)
    method.freeze_backbone(False)
    assert method.backbone.training
    method(batch)["loss"].backward()
    assert method.backbone.backbone.conv1.weight.grad is not None


@pytest.fixture(scope="module")
def h36m(tmp_path_factory):
    from humanvision.data.synthetic.writers import generate_h36m

    root = tmp_path_factory.mktemp("cp_h36m_freeze")
    generate_h36m(root, 4, size=(128, 128), views=2, subjects=1, actions=1, seed=3)
    return root


def freeze_recipe(root: Path, out: Path, epochs: int, freeze: int) -> cp.ContextPoseRecipe:
    return load_config({
        "model": {**TINY, "base": "gt_noisy", "base_noise_mm": 20.0},
        "data": {"labels": str(root / "human36m-multiview-labels-GTbboxes.npy"), "root": str(root / "processed"),
                 "train_subjects": ["S1"], "val_subjects": [], "objects_per_epoch": 2, "cache_images": True},
        "train": {"epochs": epochs, "freeze_backbone_epochs": freeze, "batch_size": 2, "optimizer": "adam",
                  "lr": 1e-2, "weight_decay": 0.0, "progress": False, "tensorboard": False, "device": "cpu",
                  "precision": "fp32", "channels_last": False, "output_dir": str(out)}}, cp.ContextPoseRecipe)


def test_frozen_backbone_epochs_then_end_to_end(h36m, tmp_path):
    from humanvision.engine import seed_everything

    def initial(recipe):  # what run_training starts from: seeded, then built
        seed_everything(recipe.train.seed)
        return {k: v.clone() for k, v in cp.build_method(recipe).state_dict().items()}

    def changed(a: dict, b: dict, prefix: str) -> bool:
        return any(not torch.equal(a[k], b[k]) for k in a if k.startswith(prefix) and "limb_" not in k)

    one = freeze_recipe(h36m, tmp_path / "one", epochs=1, freeze=1)
    init = initial(one)
    assert cp.run_training(one, quiet=True)["step"] == 1
    after = cp.build_method(one, weights=tmp_path / "one").state_dict()
    assert not changed(init, after, "backbone.")  # weights and BatchNorm statistics, exactly
    assert changed(init, after, "volume_net.") and changed(init, after, "process_features.")
    two = freeze_recipe(h36m, tmp_path / "two", epochs=2, freeze=1)
    assert cp.run_training(two, quiet=True)["step"] == 2
    trained = cp.build_method(two, weights=tmp_path / "two").state_dict()
    assert changed(init, trained, "backbone.backbone.conv1.") and changed(init, trained, "backbone.head.deconv")
    assert torch.equal(trained["backbone.head.final_layer.weight"], init["backbone.head.final_layer.weight"])
    # the option is the recipe's; negative is an error, and DDP needs find_unused_parameters
    with pytest.raises(ConfigError, match="train.freeze_backbone_epochs"):
        load_config({"train": {"freeze_backbone_epochs": -1}}, cp.ContextPoseRecipe)


def test_freeze_under_ddp_needs_find_unused_parameters(monkeypatch):
    method = tiny_method()
    cfg = vol.VolumetricTrainConfig(freeze_backbone_epochs=2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="find_unused_parameters"):
        vol.freeze_schedule_sampler_fn(method, cfg, 10, 4)
    make = vol.freeze_schedule_sampler_fn(method, vol.VolumetricTrainConfig(freeze_backbone_epochs=2,
                                                                            find_unused_parameters=True), 10, 4)
    sampler = make(0, 2)
    assert method.backbone_frozen and sampler.num_samples == 2
    sampler.set_epoch(1)
    assert method.backbone_frozen
    sampler.set_epoch(2, start=1)  # a resumed epoch past the frozen phase
    assert not method.backbone_frozen and len(list(sampler)) == 1


def test_transfer_recipe_mirrors_the_h36m_recipe_with_a_frozen_start():
    unchecked = ("data.", "model.weights", "model.base_run")
    transfer = cp.load_recipe(CONFIGS / "contextpose_h36m_to_3dhp.yaml", unchecked=unchecked)
    h36m = cp.load_recipe(CONFIGS / "contextpose_h36m_monocular.yaml", unchecked=unchecked)
    assert transfer.train.freeze_backbone_epochs == 20 and transfer.train.epochs == 60
    assert transfer.train.find_unused_parameters
    assert (transfer.eval.dataset, transfer.eval.root, transfer.eval.ground_truth) == ("mpi_inf_3dhp", "gt",
                                                                                        "univ_annot3")
    assert transfer.model == h36m.model and transfer.data == h36m.data and transfer.loss == h36m.loss
    assert transfer.lr_groups == h36m.lr_groups
    for key in ("batch_size", "optimizer", "lr", "weight_decay", "schedule", "seed", "best_metric"):
        assert getattr(transfer.train, key) == getattr(h36m.train, key), key
    assert h36m.train.freeze_backbone_epochs == 0 and h36m.eval.dataset == "h36m"
