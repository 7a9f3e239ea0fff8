"""A2J on ITOP (pretraining.md A.7.4, HCMoCo pitfall 11): anchors, loss, decoding, back-projection, the data
pipeline, the data-efficiency subsets, backbone initialisation and a tiny run through the engine."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from humanvision.data.readers.itop import ITOP_FOCAL, ItopReader
from humanvision.errors import ConfigError, DataError
from humanvision.methods.a2j import (
    DATA_EFFICIENCY,
    ITOP_PIXEL_SCALE,
    A2JDataset,
    a2j_loss,
    crop_affine,
    crop_to_image,
    itop_backproject,
    load_recipe,
    read_boxes,
    read_split,
    run_training,
    subset_indices,
)
from humanvision.models import create_model
from humanvision.models.a2j import A2J_ANCHOR_OFFSETS, a2j_decode, anchor_grid, flatten_head
from humanvision.models.hcmoco import TINY_HRNET, HRNetEncoder

h5py = pytest.importorskip("h5py")

# itop15 joints of a standing person, (X, Y) metres relative to the torso, ITOP axes (y up)
_POSE = np.array([[0.0, 0.55], [0.0, 0.4], [-0.18, 0.38], [0.18, 0.38], [-0.22, 0.12], [0.22, 0.12],
                  [-0.24, -0.1], [0.24, -0.1], [0.0, 0.1], [-0.1, -0.1], [0.1, -0.1], [-0.1, -0.45],
                  [0.1, -0.45], [-0.1, -0.8], [0.1, -0.8]])


def _write_itop(root: Path, split: str, n: int, seed: int) -> None:
    """``n`` ITOP side-view frames in the official layout: a wall at 4 m and one disk per joint at its depth;
    image coordinates are the exact projections of the real-world ones (f = 1 / 0.0035, centre (160, 120))."""
    rng = np.random.default_rng(seed)
    depth = np.full((n, 240, 320), 4.0, np.float32)
    kp3 = np.zeros((n, 15, 3), np.float32)
    vv, uu = np.mgrid[0:240, 0:320]
    for i in range(n):
        z = rng.uniform(2.2, 3.0) + rng.uniform(-0.08, 0.08, 15)
        xy = _POSE + rng.normal(0, 0.02, (15, 2)) + [rng.uniform(-0.3, 0.3), 0.0]
        kp3[i] = np.concatenate([xy, z[:, None]], 1)
        for j in np.argsort(-z):  # far joints first
            x, y = xy[j, 0] / (z[j] * 0.0035) + 160, 120 - xy[j, 1] / (z[j] * 0.0035)
            depth[i][(uu - x) ** 2 + (vv - y) ** 2 < 36] = z[j]
    kp2 = np.stack([kp3[..., 0] / (kp3[..., 2] * 0.0035) + 160, 120 - kp3[..., 1] / (kp3[..., 2] * 0.0035)], -1)
    ids = np.array([f"{i // 1000:02d}_{i % 1000:05d}".encode() for i in range(n)], dtype="S8")
    with h5py.File(root / f"ITOP_side_{split}_depth_map.h5", "w") as h:
        h.create_dataset("id", data=ids)
        h.create_dataset("data", data=depth.astype(np.float16))
    with h5py.File(root / f"ITOP_side_{split}_labels.h5", "w") as h:
        h.create_dataset("id", data=ids)
        h.create_dataset("is_valid", data=np.ones(n, np.uint8))
        h.create_dataset("visible_joints", data=np.ones((n, 15), np.uint8))
        h.create_dataset("image_coordinates", data=kp2.astype(np.float32))
        h.create_dataset("real_world_coordinates", data=kp3)


@pytest.fixture(scope="module")
def itop_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("itop")
    _write_itop(root, "train", 12, seed=1)
    _write_itop(root, "test", 4, seed=2)
    return root


def _recipe(root: Path, out: Path, **data) -> dict:
    return {"name": "a2j_test", "model": {"name": "a2j_hrnet_tiny", "args": {"head_width": 8, "head_convs": 1}},
            "a2j": {"input_size": 32},
            "data": {"source": "itop", "root": str(root), "train_box_pad": [10, 10], "test_box_pad": [10, 10],
                     **data},
            "train": {"epochs": 1, "batch_size": 4, "optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-4,
                      "schedule": "step", "milestones": [10], "gamma": 0.2, "precision": "fp32",
                      "channels_last": False, "output_dir": str(out), "progress": False, "tensorboard": False,
                      "best_metric": "mAP"},
            "eval": {"batch_size": 4, "num_vis": 2}}


# ----------------------------------------------------------------------------------------------------- anchors
def test_anchor_grid_positions_and_order():
    h, w = 2, 3
    anchors = anchor_grid(h, w)
    assert anchors.shape == (w * h * 9, 2)
    o = A2J_ANCHOR_OFFSETS
    assert o == (1.0, 2.0, 3.0)
    for wi in range(w):
        for hi in range(h):
            for i in range(3):
                for k in range(3):
                    n = (wi * h + hi) * 9 + 3 * i + k
                    assert anchors[n].tolist() == [4 * hi + o[i], 4 * wi + o[k]]
    # 288 x 288 input: 72 x 72 cells x 9 = 46,656 anchors
    assert create_model("a2j_hrnet_tiny", input_size=288).anchors.shape == (46656, 2)


def test_head_layout_matches_anchor_order():
    """A head value at cell (h, w), anchor a, joint j lands on the anchor inside that cell."""
    j_num, h, w = 2, 3, 4
    out = torch.zeros(1, 9 * j_num * 2, h, w)
    for a in range(9):
        for j in range(j_num):
            for c in range(2):
                out[0, (a * j_num + j) * 2 + c] = torch.arange(h * w, dtype=torch.float32).reshape(h, w) * 1000 \
                    + a * 100 + j * 10 + c
    flat = flatten_head(out, j_num, 2)[0]
    anchors = anchor_grid(h, w)
    for n in range(flat.shape[0]):
        code = int(flat[n, 1, 1])
        cell, a = divmod(code, 1000)[0], (code % 1000) // 100
        hi, wi = divmod(cell, w)
        assert code % 100 == 11
        assert (4 * hi < anchors[n, 0] < 4 * hi + 4) and (4 * wi < anchors[n, 1] < 4 * wi + 4)
        assert n % 9 == a


# -------------------------------------------------------------------------------------------------------- loss
def _smooth_l1(d: float, beta: float) -> float:
    return 0.5 * d * d / beta if abs(d) < beta else abs(d) - 0.5 * beta


def _loop_loss(cls, off, dep, anchors, txy, td, softmax_over="anchors"):
    b_num, n_num, j_num = cls.shape
    total = 0.0
    for b in range(b_num):
        w = np.zeros((n_num, j_num))
        for j in range(j_num):
            for n in range(n_num):
                if softmax_over == "anchors":
                    w[n, j] = math.exp(cls[b, n, j]) / sum(math.exp(cls[b, m, j]) for m in range(n_num))
                else:
                    w[n, j] = math.exp(cls[b, n, j]) / sum(math.exp(cls[b, n, k]) for k in range(j_num))
        l_anchor = l_xy = l_d = 0.0
        for j in range(j_num):
            for c in range(2):
                pa = sum(w[n, j] * anchors[n, c] for n in range(n_num))
                pxy = sum(w[n, j] * (anchors[n, c] + off[b, n, j, c]) for n in range(n_num))
                l_anchor += _smooth_l1(txy[b, j, c] - pa, 1.0) / (2 * j_num)
                l_xy += _smooth_l1(txy[b, j, c] - pxy, 1.0) / (2 * j_num)
            pd = sum(w[n, j] * dep[b, n, j] for n in range(n_num))
            l_d += _smooth_l1(td[b, j] - pd, 3.0) / j_num
        total += (1.0 * l_anchor + 3.0 * (0.5 * l_xy + l_d)) / b_num
    return total


def test_loss_matches_explicit_loops_softmax_over_anchors():
    g = torch.Generator().manual_seed(0)
    b, n, j = 2, 9 * 2, 3
    cls = torch.randn(b, n, j, generator=g, dtype=torch.float64) * 2
    off = torch.randn(b, n, j, 2, generator=g, dtype=torch.float64) * 3
    dep = torch.randn(b, n, j, generator=g, dtype=torch.float64) * 5
    anchors = anchor_grid(1, 2).double()
    txy = torch.rand(b, j, 2, generator=g, dtype=torch.float64) * 8
    td = torch.randn(b, j, generator=g, dtype=torch.float64) * 6
    got = a2j_loss(cls, off, dep, anchors, txy, td)
    args = [t.numpy() for t in (cls, off, dep, anchors, txy, td)]
    want = _loop_loss(*args)
    assert got["loss"].item() == pytest.approx(want, rel=1e-5)
    # the fixture tells the two softmax axes apart: a loss normalising over joints would fail the check above
    assert abs(_loop_loss(*args, softmax_over="joints") - want) > 1e-2 * abs(want)
    assert got["loss"].item() == pytest.approx(got["loss_anchor"].item() + 3 * got["loss_reg"].item(), rel=1e-6)
    assert got["loss_reg"].item() == pytest.approx(0.5 * got["loss_xy"].item() + got["loss_depth"].item(),
                                                   rel=1e-6)


def test_decode_one_hot_response():
    anchors = anchor_grid(3, 3)
    n, j = anchors.shape[0], 4
    cls = torch.full((1, n, j), -1e4)
    off = torch.randn(1, n, j, 2)
    dep = torch.randn(1, n, j)
    picks = [5, 17, 40, 80]
    for jj, a in enumerate(picks):
        cls[0, a, jj] = 50.0
    dec = a2j_decode(cls, off, dep, anchors)
    for jj, a in enumerate(picks):
        assert torch.allclose(dec["xy"][0, jj], anchors[a] + off[0, a, jj], atol=1e-5)
        assert torch.allclose(dec["anchor_xy"][0, jj], anchors[a], atol=1e-5)
        assert dec["depth"][0, jj].item() == pytest.approx(dep[0, a, jj].item(), abs=1e-5)
    assert torch.allclose(dec["weights"].sum(1), torch.ones(1, j))


# -------------------------------------------------------------------------------------------------- geometry
def test_backprojection_constants():
    assert ITOP_PIXEL_SCALE == 0.0035 and ITOP_PIXEL_SCALE == pytest.approx(1.0 / ITOP_FOCAL)
    p = itop_backproject(np.array([160.0, 170.0]), np.array([120.0, 100.0]), np.array([2.0, 2.0]))
    np.testing.assert_allclose(p, [[0.0, 0.0, 2.0], [10 * 2 * 0.0035, 20 * 2 * 0.0035, 2.0]], atol=1e-12)
    t = itop_backproject(torch.tensor([0.0]), torch.tensor([240.0]), torch.tensor([3.0]))
    assert torch.allclose(t, torch.tensor([[-160 * 3 * 0.0035, -120 * 3 * 0.0035, 3.0]]))


def test_crop_affine_roundtrip():
    box = (40.0, 20.0, 140.0, 220.0)
    for angle, scale in ((0.0, 1.0), (12.0, 0.7)):
        m = crop_affine(box, 288, angle, scale)
        xy = np.array([[40.0, 20.0], [140.0, 220.0], [90.0, 120.0]])
        uv = xy @ m[:, :2].T + m[:, 2]
        if angle == 0.0:
            np.testing.assert_allclose(uv, [[0, 0], [288, 288], [144, 144]], atol=1e-9)
        back = crop_to_image(torch.from_numpy(uv[None, :, ::-1].copy()), torch.from_numpy(m[None]))
        np.testing.assert_allclose(back[0].numpy(), xy, atol=1e-6)


def test_dataset_targets_and_perfect_prediction(itop_root):
    """(row, col) targets, the x50 depth target, the depth preprocessing, and a perfect prediction mapped back
    through the box, z = d / 50 + mean and the 0.0035 back-projection recovers the 3D ground truth."""
    reader = ItopReader(itop_root / "ITOP_side_test_depth_map.h5", itop_root / "ITOP_side_test_labels.h5",
                        opencv_axes=False)
    kp = reader.keypoints_2d
    boxes = np.concatenate([kp.min(1) - 10, kp.max(1) + 10], 1)
    ds = A2JDataset(reader, np.arange(len(reader)), boxes, 64)
    item = ds[0]
    assert item["image"].shape == (3, 64, 64) and torch.equal(item["image"][0], item["image"][2])
    m = item["affine"].double().numpy()
    uv = kp[0].astype(np.float64) @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(item["target_xy"].numpy(), uv[:, ::-1], atol=1e-4)  # (row, col)
    z = reader.keypoints_3d[0, :, 2] / 1000.0
    mean = float(item["mean"])
    np.testing.assert_allclose(item["target_depth"].numpy(), (z - mean) * 50, atol=1e-3)
    img = item["image"][0].numpy()
    assert not (img + mean > z.max() + 0.05 + 1e-3).any()  # the 4 m wall was zeroed, then shifted by -mean
    assert np.isclose(img, -mean, atol=1e-6).sum() > 0
    fg = ~np.isclose(img, -mean, atol=1e-6)
    assert abs(float(img[fg].mean())) < 1e-4  # centred on the mean of the nonzero pixels
    batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    xy = crop_to_image(batch["target_xy"], batch["affine"])
    zz = batch["target_depth"].double() / 50 + batch["mean"].double()[:, None]
    pred = itop_backproject(xy[..., 0], xy[..., 1], zz)
    assert torch.allclose(pred, batch["joints_3d"].double(), atol=2e-3)


def test_boxes_from_file(itop_root, tmp_path):
    import pickle

    reader = ItopReader(itop_root / "ITOP_side_train_depth_map.h5", itop_root / "ITOP_side_train_labels.h5",
                        opencv_axes=False)
    per_frame = [np.array([[i, 2.0, 100.0 + i, 200.0], [0, 0, 1, 1]]) for i in range(len(reader))]
    path = tmp_path / "boxes.pkl"
    path.write_bytes(pickle.dumps(per_frame))
    boxes = read_boxes(path, reader)
    assert boxes.shape == (12, 4) and boxes[3].tolist() == [3.0, 2.0, 103.0, 200.0]  # the first box
    path.write_bytes(pickle.dumps(per_frame[:5]))
    with pytest.raises(DataError, match="5 boxes for 12"):
        read_boxes(path, reader)


# ------------------------------------------------------------------------------------------ data efficiency
def test_data_efficiency_subsets(itop_root, tmp_path):
    sizes = {f: len(subset_indices(17991, f)) for f in DATA_EFFICIENCY}
    assert sizes == {1.0: 17991, 0.1: 1800, 0.01: 180, 0.005: 90, 0.002: 36, 0.001: 18}
    a, b = subset_indices(17991, 0.005), subset_indices(17991, 0.005)
    assert np.array_equal(a, b) and a[0] == 0 and (np.diff(a) == 200).all()
    with pytest.raises(ConfigError, match="train_fraction"):
        subset_indices(100, 0.05)
    recipe = load_recipe(_recipe(itop_root, tmp_path / "run", train_fraction=0.1))
    _, idx, boxes = read_split(recipe, "train")
    assert idx.tolist() == [0, 10] and boxes.shape == (2, 4)
    with pytest.raises(ConfigError, match="train_fraction"):
        load_recipe(_recipe(itop_root, tmp_path / "run", train_fraction=0.3))


# ---------------------------------------------------------------------------------------------- recipes
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_recipes():
    from humanvision.methods.a2j import is_a2j_recipe

    r = load_recipe(CONFIGS / "hcmoco_a2j_itop_side.yaml", unchecked=("model.init", "data."))
    t, a, d = r.train, r.a2j, r.data
    assert (r.model.name, a.input_size, a.depth_scale, a.depth_margin, a.threshold) == \
        ("a2j_hrnet_w18", 288, 50.0, 0.05, 0.10)
    assert (a.anchor_weight, a.regress_weight, a.xy_weight, a.beta_xy, a.beta_depth) == (1.0, 3.0, 0.5, 1.0, 3.0)
    assert (t.optimizer, t.lr, t.weight_decay, t.batch_size, t.epochs, t.schedule, t.milestones, t.gamma) == \
        ("adam", 3.5e-4, 1e-4, 12, 50, "step", (10, 20, 30, 40), 0.2)
    assert (t.eval_every, t.best_metric) == (1, "mAP")
    assert (d.train_box_pad, d.test_box_pad, d.box_jitter, d.rotation, d.scale) == \
        ((25.0, 15.0), (0.0, 0.0), 10, 15.0, (0.5, 1.5))
    tiny = load_recipe(CONFIGS / "a2j_tiny_synthetic.yaml")
    assert tiny.model.name == "a2j_hrnet_tiny" and tiny.data.source == "synthetic"
    assert all(is_a2j_recipe(CONFIGS / f"{n}.yaml") for n in ("hcmoco_a2j_itop_side", "a2j_tiny_synthetic"))
    assert not is_a2j_recipe(CONFIGS / "parsing_tiny_synthetic_depth.yaml")
    with pytest.raises(ConfigError, match="not an A2J model"):
        load_recipe({"a2j": {}, "model": {"name": "hcmoco_tiny"}, "data": {"source": "synthetic"}})
    with pytest.raises(ConfigError, match="data.root"):
        load_recipe({"a2j": {}})


# ------------------------------------------------------------------------------------------------- init
def test_init_from_flat_hrnet_state_dict(tmp_path):
    enc = HRNetEncoder("hrnet_w18", hrnet_args=TINY_HRNET)
    with torch.no_grad():
        for p in enc.parameters():
            p.normal_()
    path = tmp_path / "depth_encoder.pth"
    torch.save(enc.state_dict(), path)
    model = create_model("a2j_hrnet_tiny", input_size=32)
    heads = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    report = model.init_backbone(path)
    assert report.loaded == len(enc.state_dict()) and report.dropped == []
    for k, v in enc.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v), k
    for k, v in model.state_dict().items():
        if not k.startswith("backbone."):
            assert torch.equal(v, heads[k])
    sd = enc.state_dict()
    sd.pop("stage4.0.fuse_layers.0.1.0.weight")
    torch.save(sd, path)
    with pytest.raises(DataError, match="missing"):
        create_model("a2j_hrnet_tiny", input_size=32).init_backbone(path)


# ---------------------------------------------------------------------------------------------- training
def test_tiny_training_run(itop_root, tmp_path):
    out = tmp_path / "run"
    summary = run_training(load_recipe(_recipe(itop_root, out)), quiet=True)
    assert summary["step"] == 3  # 12 frames / batch 4
    metrics = summary["metrics"]
    assert 0.0 <= metrics["mAP"] <= 100.0 and "acc_head" in metrics and metrics["num_frames"] == 4
    assert (out / "eval" / "a2j.png").is_file() and (out / "eval" / "metrics.json").is_file()
    assert summary["best"]["metric"] == "mAP"
    from humanvision.engine.logging import read_log

    train = read_log(out, "train")
    assert train and all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in train)
    assert {"loss_anchor", "loss_reg", "loss_xy", "loss_depth"} <= set(train[-1])
