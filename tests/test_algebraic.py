"""Learnable Triangulation's algebraic method (humanvision.methods.algebraic): the weighted DLT, the camera
updates of the crops, the loss, the dataset over the Human3.6M labels (written by the synthetic world), training
steps and the recipes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from humanvision.config import load_config
from humanvision.engine import TrainConfig, Trainer
from humanvision.errors import ConfigError, DataError
from humanvision.geometry import Camera
from humanvision.geometry.camera import project_with_matrix, update_after_crop, update_after_resize
from humanvision.methods import algebraic as alg
from humanvision.methods.algebraic import AlgebraicRecipe

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = {"backbone": "simplebaseline_tiny", "input_size": 64, "confidence_channels": [32, 32]}


def ring_cameras(n: int, size: int = 384, radius: float = 4000.0, seed: int = 0) -> np.ndarray:
    """``(n, 3, 4)`` projection matrices of cameras on a ring looking at the origin (H36M-like: z up, mm)."""
    rng = np.random.default_rng(seed)
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(-0.3, 0.3, n)
    return np.stack([Camera.look_at([radius * np.cos(a), radius * np.sin(a), 1500 + 300 * rng.standard_normal()],
                                    [0, 0, 900], focal=float(rng.uniform(300, 500)), width=size, height=size)
                     .projection_matrix for a in angles])


def tiny_method(**kwargs) -> alg.AlgebraicTriangulation:
    torch.manual_seed(0)
    return alg.build_method(load_config({"model": {**TINY, **kwargs}}, AlgebraicRecipe))


# ------------------------------------------------------------------------------------------- triangulation
def test_dlt_recovers_the_joints_exactly_from_perfect_2d_points():
    rng = np.random.default_rng(1)
    P = np.stack([ring_cameras(4, seed=s) for s in range(3)])  # (B=3, V=4, 3, 4)
    X = rng.uniform([-500, -500, 0], [500, 500, 1800], (3, 17, 3))
    uv = project_with_matrix(X[:, None], P)  # (3, 4, 17, 2)
    w = torch.rand(3, 4, 17, dtype=torch.float64) + 0.1
    out = alg.algebraic_triangulation(torch.from_numpy(P), torch.from_numpy(uv), w)
    assert out.shape == (3, 17, 3) and out.dtype == torch.float64
    assert (out - torch.from_numpy(X)).abs().max() < 1e-6  # mm
    # unweighted, and with one view masked out (weight 0) the remaining three still give the exact point
    w[:, 2] = 0.0
    for weights in (None, w):
        assert (alg.algebraic_triangulation(torch.from_numpy(P), torch.from_numpy(uv), weights)
                - torch.from_numpy(X)).abs().max() < 1e-6


def test_dlt_gradient_reaches_points_and_confidences():
    torch.manual_seed(0)
    P = torch.from_numpy(ring_cameras(3, size=64))
    X = torch.tensor([[100.0, -50.0, 900.0], [0.0, 200.0, 1200.0]], dtype=torch.float64)
    uv = project_with_matrix(X[None], P) + 0.3 * torch.randn(3, 2, 2, dtype=torch.float64)  # noisy: w matters
    uv.requires_grad_(True)
    w = (torch.rand(3, 2, dtype=torch.float64) + 0.5).requires_grad_(True)
    # outputs are world mm (~1000): gradcheck's default step of 1e-6 leaves finite-difference round-off above its
    # 1e-5 bound in about 1 draw of 10 (the analytic gradient matched central differences at 1e-4 to 5e-7 there)
    assert torch.autograd.gradcheck(lambda a, b: alg.algebraic_triangulation(P[None], a[None], b[None]), (uv, w),
                                    eps=1e-4, atol=1e-4)
    out = alg.algebraic_triangulation(P[None], uv[None], w[None])
    out.sum().backward()
    assert uv.grad.abs().sum() > 0 and w.grad.abs().sum() > 0


def test_down_weighting_a_corrupted_view_improves_the_result():
    P = torch.from_numpy(ring_cameras(4))
    X = torch.tensor([[150.0, -80.0, 1000.0]], dtype=torch.float64)
    uv = project_with_matrix(X[None], P).clone()  # (4, 1, 2)
    uv[1, 0] += torch.tensor([100.0, -60.0], dtype=torch.float64)  # view 1 is off by ~117 px
    ones = torch.ones(4, 1, dtype=torch.float64)
    low = ones.clone()
    low[1] = 1e-6
    err_equal = (alg.algebraic_triangulation(P[None], uv[None], ones[None])[0] - X).norm()
    err_low = (alg.algebraic_triangulation(P[None], uv[None], low[None])[0] - X).norm()
    assert err_equal > 50.0 and err_low < 0.05 * err_equal, (err_equal, err_low)
    # the confidences of the method: normalised over the available views, + 1e-5, 0 for a missing view
    raw = torch.tensor([[[0.9], [0.1], [0.5], [0.5]]])
    w = alg.normalize_confidences(raw, torch.tensor([[True, True, True, False]]))
    np.testing.assert_allclose(w[0, :, 0].numpy(), [0.9 / 1.5 + 1e-5, 0.1 / 1.5 + 1e-5, 0.5 / 1.5 + 1e-5, 0.0],
                               rtol=1e-6)


# ------------------------------------------------------------------------------------------------- cameras
def test_camera_update_after_crop_and_resize_matches_the_manual_pixel():
    cam = Camera.look_at([3500, 1200, 1600], [0, 0, 900], focal=1145.0, width=1000, height=1002)
    X = np.array([[120.0, -40.0, 1100.0], [-300.0, 250.0, 300.0]])
    u, v = cam.project(X).T
    box = np.array([410, 180, 650, 420])  # left, top, right, bottom: 240 x 240
    P = update_after_resize(update_after_crop(cam.projection_matrix, box), [240, 240], [96, 128])
    expected = np.stack([(u - 410) * 96 / 240, (v - 180) * 128 / 240], -1)
    np.testing.assert_allclose(project_with_matrix(X, P), expected, atol=1e-9)
    # K gives the same camera; batched torch with per-view boxes and sizes, and the Camera methods agree
    K = update_after_resize(update_after_crop(cam.K, box), [240, 240], [96, 128])
    np.testing.assert_allclose(K @ np.concatenate([cam.R, cam.t[:, None]], 1), P, atol=1e-6)
    boxes = torch.tensor([[410.0, 180, 650, 420], [0, 0, 500, 500]])
    Pb = update_after_resize(update_after_crop(torch.from_numpy(np.stack([cam.projection_matrix] * 2)), boxes),
                             torch.tensor([[240.0, 240], [500, 500]]), torch.tensor([96.0, 128]))
    assert Pb.shape == (2, 3, 4)
    np.testing.assert_allclose(Pb[0].numpy(), P, atol=1e-9)
    np.testing.assert_allclose(Pb[1].numpy(), cam.crop([0, 0, 500, 500]).resize(96, 128).projection_matrix,
                               rtol=1e-12)
    with pytest.raises(DataError, match="field box"):
        update_after_crop(cam.K, [1, 2, 3])


def test_dataset_crop_cameras_project_the_ground_truth_into_the_crop(h36m_data):
    reader = h36m_reader(h36m_data, ["S1"])
    ds = alg.MultiViewCrops(reader, 64)
    item = ds[0]
    sample = reader[0]
    assert item["images"].shape == (3, 3, 64, 64) and item["proj"].shape == (3, 3, 4)
    assert item["view_mask"].all() and item["keypoints_3d"].shape == (17, 3)
    for c, view in enumerate(sample.views):
        top, left, _, right = (int(x) for x in view.meta["bbox_tlbr"])
        side = right - left
        uv = view.camera.project(sample.keypoints_3d[0].astype(np.float64))
        manual = np.stack([(uv[:, 0] - left) * 64 / side, (uv[:, 1] - top) * 64 / side], -1)
        np.testing.assert_allclose(project_with_matrix(item["keypoints_3d"].numpy(), item["proj"][c].numpy()),
                                   manual, atol=1e-6)
        assert ((manual > -2) & (manual < 66)).all()  # the boxes hold the person
    # perfect 2D points in the crops triangulate back to the ground truth
    uv = project_with_matrix(item["keypoints_3d"][None], item["proj"])
    X = alg.algebraic_triangulation(item["proj"][None], uv[None])[0]
    assert (X - item["keypoints_3d"]).abs().max() < 1e-6
    # a box past the image edge is zero-padded
    img = np.full((4, 5, 3), 7, np.uint8)
    crop = alg.crop_image(img, (-2, 1, 4, 7))
    assert crop.shape == (6, 6, 3) and crop[:3, 2:].min() == 7 and crop[:, :2].max() == 0 and crop[3:].max() == 0
    assert alg.square_box((10, 20, 50, 80)) == (20, 0, 80, 60)  # tlbr (h 40, w 60) -> square 60 about (50, 30)


# ------------------------------------------------------------------------------------------------------ loss
def test_mse_smooth_matches_a_hand_computation():
    pred = torch.tensor([[[1.0, 2.0, 3.0], [30.0, 0.0, 0.0]], [[0.0, 0.0, 0.0], [5.0, 5.0, 5.0]]])
    gt = torch.zeros(2, 2, 3)
    valid = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    # d: 1, 4, 9 | 900 -> 900**0.1 * 400**0.9, 0, 0 | 0, 0, 0 | masked; sum / (3 * 3 valid joints)
    big = 900 ** 0.1 * 400 ** 0.9
    expected = (1 + 4 + 9 + big) / 9
    assert alg.mse_smooth_loss(pred, gt, valid, threshold=400.0).item() == pytest.approx(expected, rel=1e-12)
    # plain MSE below the threshold; continuous at it
    assert alg.mse_smooth_loss(pred[:1, :1], gt[:1, :1]).item() == pytest.approx(14 / 3)
    at = torch.full((1, 1, 3), 20.0)
    assert alg.mse_smooth_loss(at + 1e-7, gt[:1, :1]).item() == pytest.approx(400.0, rel=1e-6)


# ---------------------------------------------------------------------------------------- data and model
@pytest.fixture(scope="module")
def h36m_data(tmp_path_factory):
    from humanvision.data.synthetic.writers import generate_h36m

    root = tmp_path_factory.mktemp("lt_h36m")
    generate_h36m(root, 6, size=(160, 160), views=3, subjects=2, actions=2, seed=3)
    return root


def h36m_reader(root: Path, subjects):
    from humanvision.data.readers.h36m import Human36MMultiView

    return Human36MMultiView(root / "human36m-multiview-labels-GTbboxes.npy", root / "processed",
                             subjects=subjects)


def test_model_shapes_and_gradients():
    method = tiny_method()
    P = torch.from_numpy(np.stack([ring_cameras(3, size=64, seed=s) for s in range(2)]))
    batch = {"images": torch.randn(2, 3, 3, 64, 64), "proj": P,
             "view_mask": torch.tensor([[True, True, True], [True, False, True]]),
             "keypoints_3d": torch.rand(2, 17, 3, dtype=torch.float64) * 1000,
             "keypoints_3d_valid": torch.ones(2, 17)}
    out = method.predict(batch["images"], P, batch["view_mask"])
    assert out["heatmaps"].shape == (2, 3, 17, 16, 16) and out["keypoints_2d"].shape == (2, 3, 17, 2)
    assert out["keypoints_3d"].shape == (2, 17, 3) and torch.isfinite(out["keypoints_3d"]).all()
    w = out["confidences"]
    assert w.shape == (2, 3, 17) and (w[1, 1] == 0).all() and (w[0] > 0).all()
    assert torch.allclose(w.sum(1), 1 + 1e-5 * batch["view_mask"].sum(1, keepdim=True).float())
    losses = method(batch)
    assert set(losses) == {"loss", "mpjpe_absolute", "mpjpe_relative"} and losses["loss"].ndim == 0
    losses["loss"].backward()
    for name in ("confidence_head.fc.4.weight", "backbone.head.final_layer.weight"):
        g = dict(method.named_parameters())[name].grad
        assert g is not None and g.abs().sum() > 0, name
    # without confidences there is no head and every available view weighs 1
    plain = tiny_method(use_confidences=False)
    assert plain.confidence_head is None
    assert (plain.predict(batch["images"], P, batch["view_mask"])["confidences"][1].sum(0) == 2).all()


def test_a_few_training_steps_decrease_the_loss(h36m_data, tmp_path):
    ds = alg.MultiViewCrops(h36m_reader(h36m_data, ["S1"]), 64, cache_images=True)
    method = tiny_method()
    batch = torch.utils.data.default_collate([ds[i] for i in range(2)])

    def loss() -> float:  # in training mode: 12 steps are too few for BatchNorm's running statistics
        method.train()
        with torch.no_grad():
            return method(batch)["loss"].item()

    before = loss()
    cfg = TrainConfig(epochs=12, batch_size=2, optimizer="adam", lr=3e-4, weight_decay=0.0, schedule="constant",
                      shuffle=False, log_every=100, progress=False, tensorboard=False, device="cpu", precision="fp32",
                      channels_last=False, save_every=100, output_dir=str(tmp_path / "run"))
    sampler = lambda rank, world: alg.ObjectsPerEpochSampler(len(ds), 2, shuffle=False, rank=rank,
                                                             world_size=world)
    trainer = Trainer(cfg, method, ds, sampler_fn=sampler)
    assert trainer.steps_per_epoch == 1  # 2 objects per epoch of 3 frames
    result = trainer.fit()
    assert result["step"] == 12
    after = loss()
    assert math.isfinite(after) and after < 0.7 * before, (before, after)


def test_objects_per_epoch_sampler_draws_fresh_subsets():
    s = alg.ObjectsPerEpochSampler(10, 4, seed=1)
    first = [i for i, _ in s]
    s.set_epoch(1)
    second = [i for i, _ in s]
    assert len(first) == len(second) == 4 and len(set(first)) == 4 and first != second
    s = alg.ObjectsPerEpochSampler(3, 7, seed=0)  # more objects than frames: permutations back to back
    order = [i for i, _ in s]
    assert len(order) == 7 and sorted(order[:3]) == [0, 1, 2] and sorted(order[3:6]) == [0, 1, 2]
    ranks = [[i for i, _ in alg.ObjectsPerEpochSampler(10, 6, seed=2, rank=r, world_size=2)] for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == sorted(alg.ObjectsPerEpochSampler(10, 6, seed=2).epoch_order().tolist())


def test_run_training_and_evaluation_with_baselines(h36m_data, tmp_path):
    recipe = load_config({
        "model": TINY,
        "data": {"labels": str(h36m_data / "human36m-multiview-labels-GTbboxes.npy"),
                 "root": str(h36m_data / "processed"), "train_subjects": ["S1"], "val_subjects": ["S2"],
                 "objects_per_epoch": 2},
        "train": {"epochs": 1, "batch_size": 2, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0,
                  "progress": False, "tensorboard": False, "device": "cpu", "precision": "fp32",
                  "channels_last": False, "output_dir": str(tmp_path / "run")},
        "eval": {"batch_size": 2, "ransac_threshold": 8.0}}, AlgebraicRecipe)
    result = alg.run_training(recipe, quiet=True)
    assert result["step"] == 1
    m = result["metrics"]
    assert m["count"] == 3.0  # S2's frames
    for prefix in ("", "argmax_dlt_", "ransac_"):
        for kind in ("relative", "absolute"):
            assert math.isfinite(m[f"{prefix}mpjpe_{kind}"]) and m[f"{prefix}mpjpe_{kind}"] > 0
    import json

    saved = json.loads((tmp_path / "run/eval/metrics.json").read_text())
    rel = saved["tables"]["algebraic"]["relative"]
    assert rel["root_joint"] == "pelvis" and set(rel["per_action"]) == {"Synthetic"}  # trials -1/-2 merged
    assert rel["per_action"]["Synthetic"]["count"] == 3 and set(rel["per_subject"]) == {"S2"}
    assert saved["tables"]["ransac"]["absolute"]["mpjpe"] == pytest.approx(m["ransac_mpjpe_absolute"])
    # the trained weights load back into a fresh method
    fresh = alg.build_method(recipe, weights=tmp_path / "run")
    trained = alg.build_method(recipe, weights=tmp_path / "run/last/model.safetensors")
    for a, b in zip(fresh.state_dict().values(), trained.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # `humanvision eval` of the saved recipe gives the same numbers; `infer` says what to use instead
    from typer.testing import CliRunner

    from humanvision.cli import app

    res = CliRunner().invoke(app, ["eval", str(tmp_path / "run/config.yaml"), "--weights", str(tmp_path / "run"),
                                   "--out", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    cli = json.loads((tmp_path / "cli/metrics.json").read_text())
    assert cli["mpjpe_relative"] == pytest.approx(m["mpjpe_relative"], rel=1e-5)
    res = CliRunner().invoke(app, ["infer", str(tmp_path), "--config", str(tmp_path / "run/config.yaml"),
                                   "--weights", str(tmp_path / "run")])
    assert res.exit_code != 0 and "humanvision triangulate" in " ".join(res.output.split())


# --------------------------------------------------------------------------------------------------- recipes
def test_recipes_load():
    h36m = alg.load_recipe(CONFIGS / "lt_algebraic_h36m.yaml", unchecked=("data.", "model.weights"))
    assert alg.is_algebraic_recipe(CONFIGS / "lt_algebraic_h36m.yaml")
    assert h36m.model.input_size == 384 and h36m.model.args == {"backbone": "resnet152"}
    assert h36m.model.use_confidences and h36m.model.heatmap_multiplier == 100.0
    assert (h36m.loss.threshold, h36m.loss.scale_keypoints_3d) == (400.0, 0.1)
    assert (h36m.train.batch_size, h36m.eval.batch_size, h36m.train.optimizer, h36m.train.lr) == (8, 16, "adam", 1e-5)
    assert h36m.data.objects_per_epoch == 15000 and h36m.data.train_subjects == ("S1", "S5", "S6", "S7", "S8")
    assert h36m.data.val_subjects == ("S9", "S11") and h36m.data.with_damaged_actions
    syn = alg.load_recipe(CONFIGS / "lt_algebraic_synthetic.yaml")
    assert syn.data.source == "synthetic" and syn.model.backbone == "simplebaseline_tiny"
    assert not alg.is_algebraic_recipe(CONFIGS / "synthetic_tiny.yaml")


@pytest.mark.parametrize("override, key", [
    ({"model": {"backbone": "no_such_model"}}, "model.backbone"),
    ({"model": {"input_size": 100}}, "model.input_size"),
    ({"model": {"skeleton": "coco17"}}, "model.skeleton"),
    ({"model": {"heatmap_multiplier": 0}}, "model.heatmap_multiplier"),
    ({"model": {"args": {"input_size": [64, 64]}}}, "model.args.input_size"),
    ({"model": {"args": {"deconv_chanels": 3}}}, "model.args.deconv_chanels"),
    ({"model": {"use_confidences": "maybe"}}, "model.use_confidences"),
    ({"data": {"min_views": 1}}, "data.min_views"),
    ({"data": {"bbox_scale": -1.0}}, "data.bbox_scale"),
    ({"data": {"objects_per_epoch": 0}}, "data.objects_per_epoch"),
    ({"data": {"labels": "/nowhere/labels.npy"}}, "data.labels"),
    ({"loss": {"threshold": 0}}, "loss.threshold"),
    ({"eval": {"ransac_threshold": -3}}, "eval.ransac_threshold"),
    ({"triangulation": "volumetric"}, "triangulation"),
    ({"modle": {}}, "modle"),
])
def test_recipe_errors_name_their_keys(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(override, AlgebraicRecipe)


def test_missing_data_paths_are_named_when_training(tmp_path):
    recipe = load_config({"model": TINY, "train": {"output_dir": str(tmp_path / "run"), "device": "cpu"}},
                         AlgebraicRecipe)
    with pytest.raises(ConfigError, match=r"data\.labels"):
        alg.run_training(recipe, quiet=True)
