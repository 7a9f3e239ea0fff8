"""HCMoCo pre-training (methods/hcmoco.py; pretraining.md Part A: A.2.2-A.2.3, A.4.5, A.5, A.6): recipes and their
validation, the per-epoch cosine against its formula, the 50/50 sampler, the MPII keypoint-only sample against a
hand-computed HRNet crop, and tiny runs through the engine on a tiny synthetic NTU + MPII set written here: bank rows
updated for the seen indices only, bit-identical resumption (weights and bank), stage 2 from stage 1 (weights and
bank, the four losses), the bank-size check, official-checkpoint initialisation and the encoder export.

Tiny model (``hcmoco_tiny``), 64x64 crops, batch 2, CPU.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import default_collate

from humanvision.data.readers.ntu import hcmoco_norm_joints
from humanvision.engine import read_log
from humanvision.errors import ConfigError
from humanvision.geometry.affine import get_affine_matrix
from humanvision.methods import hcmoco as H
from humanvision.methods.hcmoco_losses import CMCMemoryBank
from humanvision.models.hcmoco import TINY_HRNET, HRNetEncoder

torch.set_num_threads(1)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STEPS, BATCH, N_NTU, N_MPII = 3, 2, 12, 8


def _overrides(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.synthetic_dir={data_dir}", f"data.synthetic_ntu={N_NTU}", f"data.synthetic_mpii={N_MPII}",
            "data.synthetic_size=[96, 80]", "data.crop_size=64", "hcmoco.num_negatives=32",
            "hcmoco.num_dense_points=16", "hcmoco.eval_samples=4", f"train.batch_size={BATCH}",
            f"train.max_steps={STEPS}", "train.log_every=1", "train.progress=false", "train.tensorboard=false",
            f"train.output_dir={out}", *extra]


def _recipe(stage: int, data_dir: Path, out: Path, *extra: str) -> H.HCMoCoRecipe:
    return H.load_recipe(CONFIGS / f"hcmoco_tiny_synthetic_stage{stage}.yaml", _overrides(data_dir, out, *extra),
                         unchecked=("hcmoco.init",))


# ================================================================================================== recipes
def test_recipes_load_and_validate(tmp_path):
    w18 = {s: H.load_recipe(CONFIGS / f"hcmoco_hrnet_w18_stage{s}.yaml", unchecked=("data.", "hcmoco."))
           for s in (1, 2)}
    for s, r in w18.items():  # the published settings (A.5)
        t = r.train
        assert (r.hcmoco.stage, r.hcmoco.model, r.hcmoco.skeleton) == (s, "hcmoco_hrnet_w18", "mpii16")
        assert (t.optimizer, t.lr, t.momentum, t.weight_decay, t.schedule, t.epochs) == ("sgd", 0.03, 0.9, 1e-4,
                                                                                       "cosine", 100)
        assert math.isclose(t.lr * t.min_lr_ratio, 3e-5) and t.warmup_iters == 0 and t.warmup_epochs == 0
        assert t.batch_size * 4 == 224 and t.precision == "fp32"
        assert (r.hcmoco.num_negatives, r.hcmoco.temperature, r.hcmoco.momentum, r.hcmoco.num_dense_points) == (
            16384, 0.07, 0.5, 400)
        assert r.hcmoco.lr_schedule == "epoch" and r.hcmoco.decay_all_params
        assert (r.data.keypoint_source, r.data.crop_size, r.data.weighted_sampler) == ("mpii", 320, True)
    assert w18[1].hcmoco.init is None and w18[2].hcmoco.init == Path("runs/hcmoco_hrnet_w18_stage1")
    assert w18[2].data == w18[1].data  # stage 2 trains on the stage-1 data (the bank has a row per sample)
    for s in (1, 2):
        tiny = H.load_recipe(CONFIGS / f"hcmoco_tiny_synthetic_stage{s}.yaml", unchecked=("hcmoco.init",))
        assert tiny.hcmoco.stage == s and tiny.hcmoco.model == "hcmoco_tiny" and tiny.data.source == "synthetic"
        assert H.is_hcmoco_recipe(CONFIGS / f"hcmoco_tiny_synthetic_stage{s}.yaml")
    assert not H.is_hcmoco_recipe(CONFIGS / "hap_vit_tiny_synthetic.yaml")

    base = CONFIGS / "hcmoco_tiny_synthetic_stage1.yaml"
    cases = {
        "hcmoco.stag=2": "unknown key hcmoco.stag",
        "hcmoco.stage=3": "hcmoco.stage",
        "hcmoco.stage=2": "hcmoco.init",  # stage 2 without init
        f"hcmoco.init={tmp_path}": "only stage 2",
        "hcmoco.model=vitpose_base": "hcmoco.model",
        "hcmoco.skeleton=coco13": "hcmoco.skeleton",  # MPII keypoints with the COCO-13 graph
        "train.schedule=step": "train.schedule",
        "train.warmup_iters=10": "warm-up",
        "data.crop_size=100": "data.crop_size",
        "data.keypoint_source=coco": "data.keypoint_source",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
            H.load_recipe(base, [override])
    with pytest.raises(ConfigError, match="hcmoco.init: file not found"):
        H.load_recipe(CONFIGS / "hcmoco_tiny_synthetic_stage2.yaml", [f"hcmoco.init={tmp_path / 'missing'}"])


def test_epoch_cosine_schedule_is_per_epoch():
    epochs, per_epoch, m = 5, 3, 0.001
    s = H.EpochCosineSchedule(0.03, epochs * per_epoch, per_epoch, "cosine", min_lr_ratio=m)
    for it in range(epochs * per_epoch):
        e = it // per_epoch + 1  # PyContrast: adjust_learning_rate(epoch) for epoch = 1..E
        expected = 3e-5 + (0.03 - 3e-5) * (1 + math.cos(math.pi * e / epochs)) / 2
        assert math.isclose(0.03 * s.factor(it), expected, rel_tol=1e-12), it
    assert s.factor(0) < 1.0 and math.isclose(0.03 * s.factor(epochs * per_epoch - 1), 3e-5)
    assert s.factor(0, progress=0.5) == s.factor(2 * per_epoch)  # a time budget: epoch floor(0.5 * 5) + 1 = 3


# ================================================================================================== sampler
def test_weighted_sampler_mixes_half_and_half_and_keeps_the_engine_contract():
    weights = np.concatenate([np.full(10, 90 / 100), np.full(90, 10 / 100)])  # 10 MPII items, then 90 NTU items
    s = H.WeightedMixSampler(weights, seed=3)
    draws = np.concatenate([s.epoch_order(e) for e in range(40)])
    assert s.num_samples == len(s.epoch_order()) == 100
    assert abs((draws < 10).mean() - 0.5) < 0.03  # about 50% of every epoch from each source (A.2.3)
    assert np.array_equal(s.epoch_order(1), H.WeightedMixSampler(weights, seed=3).epoch_order(1))
    assert not np.array_equal(s.epoch_order(0), s.epoch_order(1))
    s.set_epoch(2)
    items = list(s)
    assert [i for i, _ in items] == s.epoch_order(2).tolist()
    seeds = {}
    for i, seed in items:  # repeated draws of an item get their own augmentation seed
        seeds.setdefault(i, []).append(seed)
    assert any(len(v) > 1 for v in seeds.values()) and all(len(set(v)) == len(v) for v in seeds.values())
    ranks = [H.WeightedMixSampler(weights, seed=3, rank=r, world_size=3) for r in range(3)]
    for r in ranks:
        r.set_epoch(2)
    sharded = [list(r) for r in ranks]
    assert all(len(x) == 34 for x in sharded)
    merged = [sharded[k % 3][k // 3] for k in range(102)]
    assert merged[:100] == items  # the rank::world layout of the single-process order (seeds included)
    assert [i for i, _ in merged[100:]] == [i for i, _ in items[:2]]  # padded by repeating the first draws
    ranks[1].set_epoch(2, start=5)
    assert list(ranks[1]) == sharded[1][5:] and len(ranks[1]) == 29
    with pytest.raises(ConfigError):
        H.WeightedMixSampler([0.0, 0.0])


# ================================================================================================== data
@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("hcmoco")
    recipe = _recipe(1, root / "data", root / "unused")
    H.prepare_synthetic(recipe.data, quiet=True)
    dataset = H.build_dataset(recipe)
    return {"root": root, "data": root / "data", "recipe": recipe, "dataset": dataset}


def test_dataset_index_space_and_keypoint_only_sample(synth):
    ds = synth["dataset"]
    assert (ds.num_db, ds.num_ntu, len(ds)) == (N_MPII, N_NTU, N_MPII + N_NTU)
    w = ds.sampling_weights()
    assert np.allclose(w[:N_MPII], N_NTU / len(ds)) and np.allclose(w[N_MPII:], N_MPII / len(ds))
    rng = np.random.default_rng(0)
    for i in (0, N_MPII - 1, N_MPII, len(ds) - 1):  # MPII first, then NTU; index = the bank row
        item = ds.item(i, rng)
        assert item["index"] == i and item["true_depth"] == int(i >= N_MPII)
        assert item["rgbd"].shape == (6, 64, 64) and item["norm_joints"].shape == (16, 2)
        assert bool(item["depth_mask"].any()) == (i >= N_MPII)
        if i < N_MPII:
            assert not item["rgbd"][3:].any() and not item["joints3d"].any()  # depth missing = zeros (pitfall 4)

    # the MPII crop without augmentation against HRNet's crop written by hand: c_y += 15 s, side = 1.25 * 200 s
    db = H.KeypointOnlyHcmoco(ds.db.reader, "mpii", crop_size=64, scale_factor=0.0, rotation_prob=0.0)
    for i in range(N_MPII):
        s = ds.db.reader[i]
        c = s.meta["center"][0].astype(np.float64) + [0.0, 15.0 * s.meta["scale"][0]]
        side = 1.25 * 200.0 * s.meta["scale"][0]
        m_ref = np.array([[64 / side, 0, 32 - c[0] * 64 / side], [0, 64 / side, 32 - c[1] * 64 / side]])
        assert np.allclose(get_affine_matrix(c, [side, side], 0.0, (64, 64)), m_ref, atol=1e-9)
        xy, ann = s.keypoints_2d[0].astype(np.float64), s.visibility[0] > 0
        crop_xy = xy @ m_ref[:, :2].T + m_ref[:, 2]
        inside = ann & (crop_xy >= 0).all(1) & (crop_xy < 64).all(1)
        sample = db.sample(i, 100 + i, np.random.default_rng(i))
        assert sample.index == 100 + i and sample.true_depth == 0 and not sample.depth_mask.any()
        assert np.array_equal(sample.joints_vis, inside.astype(np.int64))
        expected_rc = np.where(inside[:, None], crop_xy[:, ::-1], 0.0)  # (row, col), pitfall 1
        assert np.allclose(sample.original_joints2d, expected_rc, atol=1e-4)
        # SemGCN input from the original joints: (row, col) minus the pelvis (6), / max |value|
        rel = np.where(ann[:, None], xy[:, ::-1] - xy[6, ::-1], 0.0)
        assert np.allclose(sample.norm_joints, rel / np.abs(rel).max(), atol=1e-6)
        assert np.allclose(hcmoco_norm_joints(xy[:, ::-1], ann, 6), sample.norm_joints)


def test_coco_person_becomes_a_coco13_sample(synth, tmp_path):
    """COCO: box -> square x 1.25 (HRNet's _box2cs with aspect 1), COCO-17 -> COCO-13, root = the nose (pitfall 8)."""
    from humanvision.data.readers.coco import CocoKeypoints
    from humanvision.data.readers.ntu import COCO17_TO_COCO13

    image = next((synth["data"] / "mpii" / "images").iterdir())
    rng = np.random.default_rng(1)
    kp = np.column_stack([rng.uniform(30, 60, 17), rng.uniform(25, 55, 17), np.full(17, 2)])
    kp[3] = 0  # left ear not labelled (COCO-13 does not use it)
    kp[15] = [0, 0, 0]  # left ankle not labelled -> COCO-13 joint 5 invisible
    box = [28.0, 20.0, 36.0, 40.0]
    ann = {"images": [{"id": 1, "file_name": image.name, "width": 96, "height": 80}],
           "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": box, "area": 1440.0, "iscrowd": 0,
                            "num_keypoints": 16, "keypoints": kp.reshape(-1).tolist()}],
           "categories": [{"id": 1, "name": "person"}]}
    (tmp_path / "coco.json").write_text(__import__("json").dumps(ann))
    db = H.KeypointOnlyHcmoco(CocoKeypoints(tmp_path / "coco.json", image.parent), "coco", crop_size=64,
                              scale_factor=0.0, rotation_prob=0.0)
    c, side, joints, annotated, _ = db.center_scale(0)
    x, y, w, h = db.reader[0].boxes[0].astype(np.float64)  # the cleaned box
    assert np.allclose(c, [x + w / 2, y + h / 2]) and math.isclose(side, max(w, h) * 1.25)
    assert np.allclose(joints, kp[list(COCO17_TO_COCO13), :2]) and annotated.tolist() == [1] * 5 + [0] + [1] * 7
    sample = db.sample(0, 3, np.random.default_rng(0))
    assert sample.original_joints2d.shape == (13, 2) and sample.joints_vis[5] == 0 and sample.index == 3
    rel = np.where(annotated[:, None], joints[:, ::-1] - joints[6, ::-1], 0.0)  # (row, col) minus the nose
    assert np.allclose(sample.norm_joints, rel / np.abs(rel).max(), atol=1e-6)


# ============================================================================================ engine runs
@pytest.fixture(scope="module")
def stage1(synth) -> dict:
    """Run A: STEPS uninterrupted steps. Run B: 1 step, then resumed to STEPS."""
    root = synth["root"]
    a = _recipe(1, synth["data"], root / "a")
    summary = H.run_training(a, quiet=True)
    b = _recipe(1, synth["data"], root / "b", "train.max_steps=1")
    H.run_training(b, quiet=True)
    b_resumed = _recipe(1, synth["data"], root / "b")
    H.run_training(b_resumed, resume=True, quiet=True)
    return {"a": root / "a", "b": root / "b", "summary": summary, "recipe": a}


def test_stage1_loss_is_finite_and_only_seen_bank_rows_move(synth, stage1):
    assert stage1["summary"]["step"] == STEPS and stage1["summary"]["samples"] == len(synth["dataset"])
    logs = read_log(stage1["a"], "train")
    assert [r["step"] for r in logs] == list(range(1, STEPS + 1))
    for r in logs:
        terms = [r[f"sample_{p}"] for p in ("12", "21", "23", "32", "13", "31")]
        assert all(math.isfinite(v) and v > 0 for v in terms) and math.isclose(r["loss"], sum(terms), rel_tol=1e-5)
        assert "dense_rd" not in r  # stage 1: the sample-level loss only (A.4.5)
        e1 = 0.001 + 0.999 * (1 + math.cos(math.pi / 10)) / 2  # epoch 1 of 10 of the per-epoch cosine
        assert math.isclose(r["lr"], 0.03 * e1, rel_tol=1e-9)
    state = load_file(stage1["a"] / "last" / "model.safetensors")
    n = len(synth["dataset"])
    start = CMCMemoryBank(n, 32, seed=0)  # the bank's initial rows (hcmoco.bank_seed = 0)
    order = H.WeightedMixSampler(synth["dataset"].sampling_weights(), seed=0).epoch_order(0)
    seen = set(order[:STEPS * BATCH].tolist())
    assert 0 < len(seen) < n
    for m in (1, 2, 3):
        bank = state[f"bank.memory_{m}"]
        assert bank.shape == (n, 32)
        moved = {i for i in range(n) if not torch.equal(bank[i], start.memory(m)[i])}
        assert moved == seen, m
        assert torch.allclose(bank.norm(dim=1), torch.ones(n), atol=1e-5)


def test_resume_gives_bit_identical_weights_and_bank(stage1):
    a = load_file(stage1["a"] / "last" / "model.safetensors")
    b = load_file(stage1["b"] / "last" / "model.safetensors")
    assert a.keys() == b.keys() and {"bank.memory_1", "bank.memory_2", "bank.memory_3"} <= a.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    assert [r["loss"] for r in read_log(stage1["a"], "train")] == [r["loss"] for r in read_log(stage1["b"], "train")]


def test_stage2_starts_from_stage1_weights_and_bank_and_runs_four_losses(synth, stage1):
    n = len(synth["dataset"])
    recipe = _recipe(2, synth["data"], synth["root"] / "s2", f"hcmoco.init={stage1['a']}", "train.max_steps=1")
    s1 = load_file(stage1["a"] / "last" / "model.safetensors")
    method = H.build_method(recipe, n)
    assert method.stage == 2 and method.model.dense_heads
    ours = method.state_dict()
    for k, v in s1.items():  # every stage-1 tensor, the bank included, is loaded unchanged
        assert torch.equal(ours[k], v), k
    assert sorted(set(ours) - set(s1)) == ["model.encoder1_linear.bias", "model.encoder1_linear.weight",
                                           "model.encoder2_linear.bias", "model.encoder2_linear.weight"]
    # the bank size must equal the dataset size; the message names both
    with pytest.raises(ConfigError, match=rf"has {n} rows .* this dataset has {n + 3} samples"):
        H.build_method(recipe, n + 3)
    # an official checkpoint ({'model': module.*, 'contrast': memory_*}) gives the same initialisation
    official = {"model": {"module." + k[len("model."):]: v for k, v in s1.items() if k.startswith("model.")},
                "contrast": {k[len("bank."):]: v for k, v in s1.items() if k.startswith("bank.")}, "epoch": 100}
    torch.save(official, synth["root"] / "official.pth")
    other = H.build_method(recipe, n, init=False)
    report = H.load_stage1(other, synth["root"] / "official.pth")
    assert len(report["new"]) == 4
    assert all(torch.equal(other.state_dict()[k], v) for k, v in s1.items())

    summary = H.run_training(recipe, quiet=True)
    assert summary["step"] == 1
    (log,) = read_log(synth["root"] / "s2", "train")
    terms = ["sample", "dense_rd", "dense_dr", "joint_rgb", "joint_depth", "scl"]
    assert all(math.isfinite(log[k]) and log[k] > 0 for k in terms)
    assert math.isclose(log["loss"], sum(log[k] for k in terms), rel_tol=1e-5)  # all weights 1 (pitfall 7)
    assert math.isclose(log["lr"], 0.03 * (0.001 + 0.999 * (1 + math.cos(math.pi / 10)) / 2), rel_tol=1e-9)


def test_exported_encoders_load_strictly_into_hrnet_encoder(synth, stage1):
    paths = H.export_encoders(stage1["a"], synth["root"] / "export")
    assert sorted(p.name for p in paths.values()) == ["depth_encoder.pth", "rgb_encoder.pth"]
    state = load_file(stage1["a"] / "last" / "model.safetensors")
    for name, which in (("rgb", "encoder1"), ("depth", "encoder2")):
        flat = torch.load(paths[name], map_location="cpu", weights_only=True)
        expected = {k[len(f"model.{which}."):]: v for k, v in state.items() if k.startswith(f"model.{which}.")}
        assert flat.keys() == expected.keys() and all(torch.equal(flat[k], expected[k]) for k in flat)
        assert "conv1.weight" in flat and "stage4.1.fuse_layers.0.1.0.weight" in flat  # flat HRNet keys (A.6)
        HRNetEncoder("hrnet_w18", hrnet_args=TINY_HRNET).load_state_dict(flat, strict=True)


def test_retrieval_metrics_equal_a_direct_computation(synth, stage1):
    ds = synth["dataset"]
    method = H.build_method(stage1["recipe"], len(ds), init=False)
    assert {f"bank.memory_{m}" for m in (1, 2, 3)} == set(method._ddp_params_and_buffers_to_ignore)
    idx = H.eval_indices(ds, 4)
    assert len(idx) == 4 and all(ds.is_ntu(i) for i in idx) and H.eval_indices(ds, 100) == list(range(8, 20))
    method.train()
    got = H.retrieval_metrics(method, ds, idx, batch_size=3, seed=5)
    assert method.training  # restored
    method.eval()
    with torch.no_grad():
        out = method.encode(default_collate([ds.item(i, np.random.default_rng([5, i])) for i in idx]))
    hits = {k: float(np.mean([int((out[a][r] @ out[b].T).argmax()) == r for r in range(4)]))
            for k, a, b in (("top1_rgb_depth", "f_rgb", "f_depth"), ("top1_rgb_kp", "f_rgb", "f_kp"),
                            ("top1_depth_kp", "f_depth", "f_kp"))}
    assert got == {**hits, "chance": 0.25}
