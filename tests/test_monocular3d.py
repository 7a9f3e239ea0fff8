"""Weakly supervised monocular 3D pose (Zhou et al. ICCV'17): models, losses, fusion sampler, §5.7 conversion,
dataset targets, recipes, and a short training run through the engine (pose3d.md §5, §8 items 19-21, 25)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset, DataLoader

from humanvision.config import load_config
from humanvision.data.sample import Sample
from humanvision.engine import TrainConfig
from humanvision.engine.logging import read_log
from humanvision.errors import ConfigError, DataError
from humanvision.methods import monocular3d as m3d
from humanvision.methods.monocular3d import (
    GEOMETRY_BONES,
    GEOMETRY_GROUPS,
    GEOMETRY_WEIGHTS,
    H36M17_TO_MPII16,
    MPII16_TO_H36M17,
    FusionSampler,
    LossConfig,
    Monocular3DDataset,
    Monocular3DPose,
    Monocular3DRecipe,
    decode_pose_crop,
    depth_loss,
    fusion_trainer,
    geometry_loss,
    load_init_weights,
    metric_skeleton,
    pose3d_metrics,
    read_depth,
)
from humanvision.metrics.pose3d import HG_H36M17_EDGES
from humanvision.models import create_model
from humanvision.models.simple_baseline import SimpleBaseline
from humanvision.skeletons import get_skeleton

torch.set_num_threads(1)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def mini(name: str, **kw):
    torch.manual_seed(0)
    return create_model(name, skeleton="mpii16", **kw)


# ------------------------------------------------------------------------------------------------- models
@pytest.mark.parametrize("stacks", [1, 2, 3])
def test_hourglass_outputs_one_heatmap_per_stack_and_fc_depth(stacks):
    model = mini("hourglass3d_mini", num_stacks=stacks).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model.forward_pose3d(x)
        hm = model(x)
    assert len(out["hm"]) == stacks and all(h.shape == (2, 16, 16, 16) for h in out["hm"])
    assert out["depth"].shape == (2, 16) and torch.isfinite(out["depth"]).all()
    torch.testing.assert_close(hm, out["hm"][-1])  # forward(x) is the 2D contract: the last stack's heatmaps
    assert len(model.backbone.heads) == stacks - 1 and model.default_cfg["depth_unit"] == 0.5


def test_resnet_depth_outputs_hm_and_depth_maps():
    model = mini("resnet_depth_mini").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model.forward_pose3d(x)
        hm = model(x)
    assert len(out["hm"]) == 1 and out["hm"][0].shape == (2, 16, 16, 16) and out["depth"].shape == (2, 16, 16, 16)
    torch.testing.assert_close(hm, out["hm"][0])
    assert model.default_cfg["depth_unit"] == 1.0 and model.depth_head.bias.abs().sum() == 0
    assert 0 < model.depth_head.weight.std() < 0.002  # N(0, 0.001)


def test_published_networks_have_the_brief_shapes():
    with torch.device("meta"):
        hg = create_model("hourglass3d_2stack", skeleton="mpii16")
        v2 = create_model("resnet_depth_50", skeleton="mpii16")
        x = torch.empty(1, 3, 256, 256)
        out_hg, out_v2 = hg.forward_pose3d(x), v2.forward_pose3d(x)
    assert [tuple(h.shape) for h in out_hg["hm"]] == [(1, 16, 64, 64)] * 2 and tuple(out_hg["depth"].shape) == (1, 16)
    assert hg.depth_head.fc.in_features == 4 * 4 * 256 and len(hg.depth_head.blocks) == 4
    assert len(hg.depth_head.blocks[0]) == 2 and len(hg.backbone.stacks[0].residuals) == 2
    res = hg.backbone.stacks[0].hourglass.up[0]  # pre-activation: BN before each conv, identity skip at 256 -> 256
    assert isinstance(res.skip, torch.nn.Identity) and res.bn1.num_features == 256 and res.conv1.out_channels == 128
    assert tuple(out_v2["hm"][0].shape) == (1, 16, 64, 64) and tuple(out_v2["depth"].shape) == (1, 16, 64, 64)
    assert tuple(v2.depth_head.weight.shape) == (16, 256, 1, 1) and v2.depth_head.bias is not None
    assert [type(x).__name__ for x in v2.head.deconv_layers] == ["ConvTranspose2d", "BatchNorm2d", "ReLU"] * 3


def test_hourglass_rejects_input_it_cannot_pool():
    with pytest.raises(ValueError, match="divisible"):
        create_model("hourglass3d_mini", skeleton="mpii16", input_size=(72, 72))


def test_simplebaseline_weights_initialise_the_v2_network(tmp_path):
    from safetensors.torch import save_file

    args = {"backbone": "resnet18", "deconv_channels": 32, "udp": False,
            "backbone_args": {"layers": (1, 1, 1, 1), "channels": (32, 64, 128, 256), "stem_width": 32,
                              "output_stride": 16}}
    torch.manual_seed(3)
    sb = SimpleBaseline("mpii16", (64, 64), **args)
    save_file({k: v.contiguous() for k, v in sb.state_dict().items()}, tmp_path / "stage1.safetensors")
    method = Monocular3DPose(mini("resnet_depth_mini"))
    depth_before = method.model.depth_head.weight.clone()
    load_init_weights(method, tmp_path / "stage1.safetensors")
    torch.testing.assert_close(method.model.head.final_layer.weight, sb.head.final_layer.weight)
    torch.testing.assert_close(method.model.depth_head.weight, depth_before)  # missing: keeps its init
    save_file({"bogus.weight": torch.zeros(1)}, tmp_path / "bad.safetensors")
    with pytest.raises(ConfigError, match="init_weights .*missing keys"):
        load_init_weights(method, tmp_path / "bad.safetensors")
    with pytest.raises(ConfigError, match="init_weights: file not found"):
        load_init_weights(method, tmp_path / "nope.safetensors")


# ------------------------------------------------------------------------------------ the geometry loss
def closed_form_gradient(xy, d, vis, has_3d, weight_var):
    """§5.4: dL/dd_a = weight_var w_e^2 (l_e - E_g)(d_a - d_b) / (n_g l_e B), summed over the bones at a."""
    B = d.shape[0]
    grad = np.zeros_like(d)
    for b in range(B):
        if has_3d[b]:
            continue
        for g in range(4):
            es = [e for e, (i, j) in enumerate(GEOMETRY_BONES) if GEOMETRY_GROUPS[e] == g and vis[b, i] and vis[b, j]]
            if not es:
                continue
            lengths = {e: GEOMETRY_WEIGHTS[e] * math.sqrt(((xy[b, GEOMETRY_BONES[e][0]] - xy[b, GEOMETRY_BONES[e][1]])
                                                           ** 2).sum() + (d[b, GEOMETRY_BONES[e][0]]
                                                                          - d[b, GEOMETRY_BONES[e][1]]) ** 2)
                       for e in es}
            mean = sum(lengths.values()) / len(es)
            for e in es:
                i, j = GEOMETRY_BONES[e]
                c = weight_var * GEOMETRY_WEIGHTS[e] ** 2 * (lengths[e] - mean) / (len(es) * lengths[e] * B)
                grad[b, i] += c * (d[b, i] - d[b, j])
                grad[b, j] -= c * (d[b, i] - d[b, j])
    return grad


def test_geometry_loss_gradient_equals_closed_form():
    rng = np.random.default_rng(0)
    B = 6
    xy = rng.uniform(0, 1, (B, 16, 2))
    d = rng.normal(0, 0.2, (B, 16))
    vis = rng.random((B, 16)) > 0.2
    has_3d = np.array([False, True, False, False, True, False])
    dt = torch.tensor(d, requires_grad=True)
    loss = 0.01 * geometry_loss(torch.tensor(xy), dt, torch.tensor(vis), torch.tensor(has_3d))
    loss.backward()
    want = closed_form_gradient(xy, d, vis, has_3d, 0.01)
    assert dt.grad.dtype == torch.float64 and torch.isfinite(dt.grad).all() and np.abs(want).max() > 1e-5
    np.testing.assert_allclose(dt.grad.numpy(), want, rtol=1e-10, atol=1e-14)
    assert dt.grad[torch.tensor(has_3d)].abs().max() == 0  # 3D samples: no geometry gradient
    assert torch.autograd.gradcheck(lambda z: geometry_loss(torch.tensor(xy), z, torch.tensor(vis),
                                                            torch.tensor(has_3d)), (dt.detach().requires_grad_(),))


def consistent_pose(rng) -> np.ndarray:
    """A random 3D MPII-16 pose whose weighted bone lengths are equal within each group."""
    def step(start, length):
        v = rng.normal(size=3)
        return start + length * v / np.linalg.norm(v)

    p = rng.normal(size=(16, 3))
    thigh, upper_arm = 0.4, 0.3
    shin, forearm = thigh / GEOMETRY_WEIGHTS[0], upper_arm / GEOMETRY_WEIGHTS[4]
    p[6] = 0.0
    p[2], p[3] = step(p[6], 0.15), step(p[6], 0.15)
    p[1], p[4] = step(p[2], thigh), step(p[3], thigh)
    p[0], p[5] = step(p[1], shin), step(p[4], shin)
    p[12], p[13] = step(p[8], 0.2), step(p[8], 0.2)
    p[11], p[14] = step(p[12], upper_arm), step(p[13], upper_arm)
    p[10], p[15] = step(p[11], forearm), step(p[14], forearm)
    return p


def test_geometry_loss_is_zero_iff_group_ratios_are_equal():
    rng = np.random.default_rng(1)
    poses = np.stack([consistent_pose(rng) for _ in range(3)])
    xy, d = torch.tensor(poses[..., :2]), torch.tensor(poses[..., 2])
    vis, two_d = torch.ones(3, 16), torch.zeros(3, dtype=torch.bool)
    assert geometry_loss(xy, d, vis, two_d).item() < 1e-14
    assert geometry_loss(xy, d + 0.37, vis, two_d).item() < 1e-14  # invariant to a common depth offset
    # lengthen one bone per group (move a leaf joint, or the limb chain below the bone): the loss becomes positive
    for moved, (a, b) in (((0,), (0, 1)), ((10,), (10, 11)), ((3, 4, 5), (3, 6)), ((13, 14, 15), (13, 8))):
        bad = poses.copy()
        bad[:, list(moved)] += 0.1 * (bad[:, a] - bad[:, b])[:, None]
        loss = geometry_loss(torch.tensor(bad[..., :2]), torch.tensor(bad[..., 2]), vis, two_d).item()
        assert loss > 1e-5, (a, b)
    bad = poses.copy()
    bad[:, 0, 2] += 0.2  # a depth change alone breaks the leg ratios
    assert geometry_loss(torch.tensor(bad[..., :2]), torch.tensor(bad[..., 2]), vis, two_d).item() > 1e-5
    # the same poses as 3D samples (depth-supervised) get no geometry loss at all
    assert geometry_loss(torch.tensor(bad[..., :2]), torch.tensor(bad[..., 2]), vis,
                         torch.ones(3, dtype=torch.bool)).item() == 0.0


def test_geometry_loss_value_matches_the_formula():
    # legs only: l = (1.0085885 * 2, 1, 1, 1.0085885 * 1) -> E = mean, L = sum (l - E)^2 / (2 * 4), divided by B = 2
    xy = torch.zeros(2, 16, 2)
    d = torch.zeros(2, 16, dtype=torch.float64)
    for j, y in enumerate([0.0, 2.0, 3.0, 4.0, 5.0, 6.0]):  # joints 0..5 on a vertical line
        xy[0, j, 1] = y
    vis = torch.zeros(2, 16)
    vis[0, :6] = 1
    lengths = np.array([1.0085885 * 2, 1.0, 1.0, 1.0085885])
    want = ((lengths - lengths.mean()) ** 2).sum() / 8 / 2
    got = geometry_loss(xy, d, vis, torch.zeros(2, dtype=torch.bool)).item()
    assert got == pytest.approx(want, rel=1e-6)


# ---------------------------------------------------------------------------------------- the depth loss
@pytest.mark.parametrize("kind", ["smooth_l1", "l2"])
def test_depth_loss_ignores_2d_samples(kind):
    rng = np.random.default_rng(2)
    pred = torch.tensor(rng.normal(size=(4, 16)), requires_grad=True)
    target = torch.tensor(rng.normal(0, 0.3, (4, 16)))
    mask = torch.tensor(rng.random((4, 16)) > 0.3)
    has_3d = torch.tensor([True, False, True, False])
    loss = depth_loss(pred, target, mask, has_3d, kind)
    loss.backward()
    grad = pred.grad.clone()
    sel = (mask & has_3d[:, None]).numpy()
    diff = (pred.detach() - target).numpy()[sel]
    if kind == "smooth_l1":
        want = np.where(np.abs(diff) < 1, 0.5 * diff ** 2, np.abs(diff) - 0.5).sum() / (sel.sum() + 1e-4)
    else:
        want = (diff ** 2).sum() / 16 / 4
    assert loss.item() == pytest.approx(want, rel=1e-6)
    assert grad[~has_3d].abs().max() == 0 and grad[has_3d].abs().max() > 0
    # 2D-only samples' targets (NaN, huge) change nothing
    t2 = target.clone()
    t2[1] = float("nan")
    t2[3] = 1e6
    pred.grad = None
    loss2 = depth_loss(pred, t2, mask, has_3d, kind)
    loss2.backward()
    assert loss2.item() == loss.item() and torch.equal(pred.grad, grad)


def synthetic_batch(seed: int = 0, size: int = 64) -> dict:
    rng = np.random.default_rng(seed)
    b, hm = 4, size // 4
    kp = rng.uniform(1, hm - 2, (b, 16, 2))
    yy, xx = np.mgrid[0:hm, 0:hm]
    heat = np.exp(-((xx[None, None] - np.round(kp[..., 0, None, None])) ** 2
                    + (yy[None, None] - np.round(kp[..., 1, None, None])) ** 2) / 8.0)
    depth = rng.normal(0, 0.1, (b, 16))
    has_3d = np.array([True, False, True, False])
    depth[~has_3d] = np.nan  # 2D-only samples have no depth
    return {"image": torch.tensor(rng.normal(size=(b, 3, size, size)), dtype=torch.float32),
            "heatmaps": torch.tensor(heat, dtype=torch.float32), "keypoints": torch.tensor(kp, dtype=torch.float32),
            "visible": torch.ones(b, 16), "depth": torch.tensor(depth, dtype=torch.float32),
            "has_3d": torch.tensor(has_3d), "index": torch.tensor([10, 11, 12, 13])}


@pytest.mark.parametrize("name", ["resnet_depth_mini", "hourglass3d_mini"])
def test_method_depth_of_2d_samples_affects_neither_loss_nor_gradients(name):
    method = Monocular3DPose(mini(name), weight_3d=0.1, weight_var=0.01,
                             depth_loss="smooth_l1" if "resnet" in name else "l2").train()
    grads = []
    outs = []
    for fill in (float("nan"), 123.0):
        batch = synthetic_batch()
        batch["depth"][~batch["has_3d"]] = fill
        torch.manual_seed(0)
        method.zero_grad()
        out = method(batch)
        out["loss"].backward()
        outs.append(out)
        grads.append([p.grad.clone() for p in method.parameters() if p.grad is not None])
    assert set(outs[0]) == {"loss", "loss_hm", "loss_depth", "loss_geometry"}
    for k in outs[0]:
        assert torch.isfinite(outs[0][k]) and outs[0][k].item() == outs[1][k].item(), k
    assert outs[0]["loss_depth"] > 0 and outs[0]["loss_geometry"] > 0
    assert all(torch.equal(a, b) for a, b in zip(grads[0], grads[1], strict=True))


def test_nan_depth_of_a_3d_sample_names_the_sample():
    method = Monocular3DPose(mini("resnet_depth_mini"), weight_3d=0.1)
    batch = synthetic_batch()
    batch["depth"][2, 5] = float("nan")  # sample 2 (dataset index 12) is a 3D sample
    with pytest.raises(DataError, match=r"sample 12: field depth: .*joint 5"):
        method(batch)


def test_read_depth_gathers_at_the_given_locations():
    d = torch.randn(2, 16, 8, 8)
    loc = torch.randint(0, 8, (2, 16, 2))
    want = torch.stack([torch.stack([d[b, j, loc[b, j, 1], loc[b, j, 0]] for j in range(16)]) for b in range(2)])
    torch.testing.assert_close(read_depth(d, loc), want)
    fc = torch.randn(2, 16)
    assert read_depth(fc, loc) is fc


# --------------------------------------------------------------------------------------------- sampler
def test_fusion_sampler_sizes_redraw_and_determinism():
    s = FusionSampler(50, 20, ratio_3d=1.0, seed=3)
    assert s.num_subset == 20 and len(s) == 40
    order0 = [i for i, _ in s]
    assert len(order0) == 40
    assert sorted(i for i in order0 if i >= 50) == list(range(50, 70))  # every 2D sample once
    sub0 = [i for i in order0 if i < 50]
    assert len(set(sub0)) == 20 and min(sub0) >= 0
    s.set_epoch(1)
    order1 = [i for i, _ in s]
    assert {i for i in order1 if i < 50} != set(sub0)  # a new 3D subset each epoch
    again = FusionSampler(50, 20, ratio_3d=1.0, seed=3)
    assert list(again) == list(FusionSampler(50, 20, ratio_3d=1.0, seed=3)) and [i for i, _ in again] == order0
    again.set_epoch(1)
    assert [i for i, _ in again] == order1
    other = FusionSampler(50, 20, ratio_3d=1.0, seed=4)
    assert [i for i, _ in other] != order0
    assert FusionSampler(50, 20, ratio_3d=0.5).num_subset == 10
    assert FusionSampler(50, 20, ratio_3d=0).num_subset == 50  # <= 0: all of 3D
    assert FusionSampler(50, 20, ratio_3d=10).num_subset == 50  # capped at |3D|
    # resumable and shardable like the engine's sampler
    s.set_epoch(1, start=7)
    assert [i for i, _ in s] == order1[7:]
    r0, r1 = (FusionSampler(50, 20, 0.55, seed=3, rank=r, world_size=2, with_seeds=False) for r in (0, 1))
    assert r0.num_items == 31 and len(r0) == len(r1) == 16  # padded by repetition to 32
    full = np.resize(r0.epoch_order(0), 32)
    assert list(r0) == full[0::2].tolist() and list(r1) == full[1::2].tolist()


def test_fusion_sampler_drives_a_dataloader_over_the_concat_dataset():
    data_3d, data_2d = list(range(100, 130)), list(range(200, 210))
    concat = ConcatDataset([data_3d, data_2d])
    sampler = FusionSampler(len(data_3d), len(data_2d), ratio_3d=0.5, with_seeds=False)
    seen = torch.cat(list(DataLoader(concat, batch_size=3, sampler=sampler))).tolist()
    assert len(seen) == 15 and sum(v >= 200 for v in seen) == 10 and sum(v < 200 for v in seen) == 5


# ---------------------------------------------------------------------------- §5.7 network output -> skeleton
def test_joint_maps_round_trip():
    assert [MPII16_TO_H36M17[H36M17_TO_MPII16[k]] for k in range(16)] == list(range(16))
    assert [h for h in range(17) if H36M17_TO_MPII16[MPII16_TO_H36M17[h]] != h] == [9]  # the nose is derived
    mpii, h36m = get_skeleton("mpii16").joints, get_skeleton("h36m17_vp").joints
    limbs = [j for j in range(16) if mpii[j].split("_")[-1] in ("ankle", "knee", "hip", "wrist", "elbow", "shoulder")]
    assert len(limbs) == 12 and all(h36m[H36M17_TO_MPII16[j]] == mpii[j] for j in limbs + [6])  # same names
    assert all(mpii[MPII16_TO_H36M17[h]] == h36m[h] for h in range(17) if h36m[h] in {mpii[j] for j in limbs})
    # the seed's shifted torso: MPII thorax <- H36M spine, upper neck <- H36M thorax, head top <- head top
    assert [h36m[H36M17_TO_MPII16[j]] for j in (7, 8, 9)] == ["spine", "thorax", "head_top"]


def known_h36m_pose() -> np.ndarray:
    """H36M-17 (ECCV'18 order) camera-frame pose in mm on a 20 mm grid in x, y, spine and nose midpoints."""
    rng = np.random.default_rng(5)
    g = np.zeros((17, 3))
    g[:, :2] = rng.integers(-12, 13, (17, 2)) * 2
    g[0, :2] = 0
    g[:, 2] = rng.normal(0, 150, 17)
    g[0, 2] = 0
    g[7] = (g[0] + g[8]) / 2
    g[9] = (g[8] + g[10]) / 2
    g[:, :2] *= 20.0  # 20 mm per heatmap pixel
    return g


@pytest.mark.parametrize("head", ["map", "fc"])
def test_network_output_to_metric_skeleton(head):
    gt = known_h36m_pose()
    mm_per_px, size = 20.0, 64
    crop_mm = mm_per_px * size  # one crop width
    mpii = gt[list(H36M17_TO_MPII16)]
    px = (mpii[:, :2] / mm_per_px + 32).astype(int)
    hm = torch.zeros(1, 16, size, size)
    hm[0, torch.arange(16), torch.tensor(px[:, 1]), torch.tensor(px[:, 0])] = 1.0
    z = torch.tensor(mpii[:, 2] / crop_mm)
    if head == "map":
        depth = torch.full((1, 16, size, size), 9.0)  # wrong everywhere except at the argmax
        depth[0, torch.arange(16), torch.tensor(px[:, 1]), torch.tensor(px[:, 0])] = z.float()
        unit = 1.0
    else:
        depth, unit = (2 * z)[None].float(), 0.5  # half-crop units of the FC head
    pose = decode_pose_crop(hm, depth, unit)
    torch.testing.assert_close(pose[0], torch.tensor((mpii - mpii[6]) / crop_mm), atol=1e-7, rtol=0)
    out = metric_skeleton(pose, 4000.0)
    total = np.linalg.norm(gt[[a for a, _ in HG_H36M17_EDGES]] - gt[[b for _, b in HG_H36M17_EDGES]], axis=-1).sum()
    np.testing.assert_allclose(out[0], gt * 4000.0 / total, atol=1e-3)
    bones = np.linalg.norm(out[0][[a for a, _ in HG_H36M17_EDGES]] - out[0][[b for _, b in HG_H36M17_EDGES]], axis=-1)
    assert bones.sum() == pytest.approx(4000.0, abs=1e-6)
    np.testing.assert_allclose(metric_skeleton(pose * 3.7), out, atol=1e-9)  # scale-free input
    metrics = pose3d_metrics(out, gt[None])
    assert metrics["mpjpe_p1"] < 1e-3 and metrics["mpjpe_p2"] < 1e-3 and metrics["count"] == 1
    want_hg = abs(1 - 4000.0 / total) * np.linalg.norm(gt, axis=-1).mean()
    assert metrics["mpjpe_hg"] == pytest.approx(want_hg, rel=1e-6)


def test_metric_skeleton_overwrites_spine_and_nose():
    p = np.random.default_rng(0).normal(size=(2, 16, 3))
    q = m3d.mpii16_to_h36m17(p)
    np.testing.assert_allclose(q[:, 7], (q[:, 0] + q[:, 8]) / 2)
    np.testing.assert_allclose(q[:, 9], (q[:, 8] + q[:, 10]) / 2)
    np.testing.assert_allclose(q[:, 10], p[:, 9])  # head top
    out = metric_skeleton(p)
    assert np.abs(out[:, 0]).max() < 1e-9  # pelvis at the origin


def test_predict_flip_test_swaps_left_and_right_depths():
    model = mini("hourglass3d_mini").eval()
    method = Monocular3DPose(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = model.forward_pose3d(x), model.forward_pose3d(x.flip(-1))
    out = method.predict(x, flip_test=True)
    idx = list(get_skeleton("mpii16").flip_index)
    torch.testing.assert_close(out["depth"], 0.5 * (a["depth"] + b["depth"][:, idx]))
    assert out["pose_crop"].shape == (1, 16, 3) and out["pose_crop"][0, 6].abs().max() == 0


# ---------------------------------------------------------------------------------------------- dataset
def person(rng, center=(48.0, 48.0), scale=1.5):
    """Camera-frame MPII-16 joints (mm) and their weak-perspective 2D projection (pixels, scale px/mm)."""
    x3 = rng.normal(0, 10, (16, 3)) + np.array([0, 0, 3000.0])
    kp = scale * (x3[:, :2] - x3[6, :2]) + np.asarray(center)
    return x3, kp


def samples(rng, n: int, has_3d: bool, size: int = 96) -> list[Sample]:
    out = []
    for i in range(n):
        x3, kp = person(rng)
        img = np.zeros((size, size, 3), np.uint8)
        for j, (u, v) in enumerate(np.round(kp).astype(int)):
            img[max(v - 1, 0):v + 2, max(u - 1, 0):u + 2] = (40 + 13 * j, 255 - 9 * j, 120)
        lo, hi = kp.min(0), kp.max(0)
        out.append(Sample(image=img, keypoints_2d=kp[None].astype(np.float32), visibility=np.ones((1, 16), np.float32),
                          keypoints_3d=x3[None].astype(np.float32) if has_3d else None,
                          keypoints_3d_frame="camera" if has_3d else None,
                          boxes=np.array([[*lo, *(hi - lo)]], np.float32), skeleton="mpii16", source="synthetic",
                          image_id=i))
    return out


def test_dataset_targets_crop_units_and_flip():
    rng = np.random.default_rng(0)
    (s,) = samples(rng, 1, has_3d=True)
    ds = Monocular3DDataset([s], has_3d=True, train=False, input_size=64, heatmap_size=16)
    item = ds[0]
    x, y, w, h = s.boxes[0].astype(np.float64)
    side, c = max(w, h) * 1.25, np.array([x + w / 2, y + h / 2])
    kp_hm = ((s.keypoints_2d[0] - c) * 64 / side + 32) / 4
    np.testing.assert_allclose(item["keypoints"].numpy(), kp_hm, atol=1e-4)
    x3 = s.keypoints_3d[0].astype(np.float64)
    np.testing.assert_allclose(item["depth"].numpy(), (x3[:, 2] - x3[6, 2]) * 1.5 / side, atol=1e-5)
    assert item["has_3d"] and item["visible"].sum() == 16 and item["heatmaps"].shape == (16, 16, 16)
    peak = item["heatmaps"].flatten(1).argmax(1)
    np.testing.assert_array_equal(peak.numpy(), (np.floor(kp_hm[:, 1] + 0.5) * 16 + np.floor(kp_hm[:, 0] + 0.5)))
    assert torch.isnan(item["gt_3d"]).all()  # not an H36M joint set: no H36M ground truth

    flip = Monocular3DDataset([s], has_3d=True, train=True, input_size=64, heatmap_size=16, scale_factor=0.0,
                              rot_prob=0.0, flip_prob=1.0)
    np.random.seed(0)
    f = flip[0]
    idx = list(get_skeleton("mpii16").flip_index)
    torch.testing.assert_close(f["depth"], item["depth"][idx])
    torch.testing.assert_close(f["keypoints"][:, 0], 16 - item["keypoints"][idx, 0], atol=1e-4, rtol=0)
    torch.testing.assert_close(f["keypoints"][:, 1], item["keypoints"][idx, 1], atol=1e-4, rtol=0)

    two_d = Monocular3DDataset(samples(rng, 1, has_3d=False), has_3d=False, train=False, input_size=64,
                               heatmap_size=16)[0]
    assert torch.isnan(two_d["depth"]).all() and not two_d["has_3d"]


def test_dataset_h36m_world_frame_sample():
    from humanvision.geometry import Camera

    rng = np.random.default_rng(1)
    K = np.array([[1000.0, 0, 500], [0, 1000.0, 500], [0, 0, 1]])
    cam = Camera(K=K, R=np.eye(3), t=np.array([0.0, 0.0, 4000.0]))
    world = rng.normal(0, 300, (17, 3)) * np.array([1.0, 1.0, 0.3])
    s = Sample(image=np.zeros((1000, 1000, 3), np.uint8), keypoints_3d=world[None].astype(np.float32),
               keypoints_3d_frame="world", camera=cam, boxes=np.array([[300, 300, 400, 400]], np.float32),
               skeleton="h36m17", source="h36m", image_id="S9/x")
    item = Monocular3DDataset([s], has_3d=True, train=False, input_size=64, heatmap_size=16)[0]
    from humanvision.skeletons import convert

    vp = convert(world + np.array([0, 0, 4000.0]), "h36m17", "h36m17_vp")
    np.testing.assert_allclose(item["gt_3d"].numpy(), vp - vp[0], atol=1e-2)
    mpii = vp[list(H36M17_TO_MPII16)]
    rel = mpii[:, 2] - mpii[6, 2]
    b = item["depth"].numpy()[rel != 0] * (400 * 1.25) / rel[rel != 0]  # depth = (Z - Z_pelvis) * b / side
    assert b.std() < 1e-4 * b.mean()  # one scale for all joints
    assert b.mean() == pytest.approx(1000.0 / mpii[6, 2], rel=0.03)  # ~ f / Z: pixels per mm at the person


# ---------------------------------------------------------------------------------------------- recipes
def test_recipe_stages_and_init_weights(tmp_path):
    with pytest.raises(ConfigError, match="init_weights: stage '2d3d' starts from the weights of stage '2d'"):
        Monocular3DRecipe(stage="2d3d", loss=LossConfig(weight_3d=0.1))
    with pytest.raises(ConfigError, match=r"init_weights: file not found: .*nowhere\.safetensors"):
        load_config({"stage": "geometry", "init_weights": str(tmp_path / "nowhere.safetensors"),
                     "loss": {"weight_3d": 0.1, "weight_var": 0.01}}, Monocular3DRecipe)
    with pytest.raises(ConfigError, match="weight_3d"):
        Monocular3DRecipe(stage="2d", loss=LossConfig(weight_3d=0.1))
    with pytest.raises(ConfigError, match="weight_var"):
        load_config({"stage": "geometry", "init_weights": str(tmp_path), "loss": {"weight_3d": 0.1}},
                    Monocular3DRecipe)
    with pytest.raises(ConfigError, match="model.skeleton"):
        load_config({"model": {"name": "resnet_depth_mini", "skeleton": "coco17"}}, Monocular3DRecipe)
    with pytest.raises(ConfigError, match="model.name"):
        load_config({"model": {"name": "resnet_dept_mini"}}, Monocular3DRecipe)
    # a stage-1 checkpoint of this method (keys model.*) starts stage 2
    stage1 = Monocular3DPose(mini("hourglass3d_mini"))
    from safetensors.torch import save_file

    (tmp_path / "run" / "last").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in stage1.state_dict().items()}, tmp_path / "run/last/model.safetensors")
    recipe = load_config({"stage": "2d3d", "init_weights": str(tmp_path / "run"), "loss": {"weight_3d": 0.1},
                          "model": {"name": "hourglass3d_mini"}}, Monocular3DRecipe)
    method = m3d.build_method(recipe)
    for a, b in zip(method.state_dict().values(), stage1.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert method.weight_3d == 0.1 and method.weight_var == 0.0


# the published recipes (the CPU-sized zhou3d_mini_synthetic_* load in test_monocular3d_ablation.py)
CONFIG_FILES = sorted(p for p in CONFIGS.glob("zhou3d_*.yaml") if "synthetic" not in p.stem)


def test_there_are_recipes_for_both_versions_and_all_stages():
    names = {p.stem for p in CONFIG_FILES}
    assert len(names) == 6 and all(any(n.startswith(f"zhou3d_{v}_stage{k}") for n in names)
                                   for v in ("resnet50", "hourglass") for k in (1, 2, 3))


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
def test_config_loads(path):
    recipe = m3d.load_recipe(path, unchecked=("data.", "init_weights"))
    stage = {"1": "2d", "2": "2d3d", "3": "geometry"}[path.stem.split("stage")[1][0]]
    assert recipe.stage == stage and recipe.model.skeleton == "mpii16"
    assert (recipe.init_weights is None) == (stage == "2d")
    want = {"2d": (0.0, 0.0), "2d3d": (0.1, 0.0), "geometry": (0.1, 0.01)}[stage]
    assert (recipe.loss.weight_3d, recipe.loss.weight_var) == want
    if "resnet50" in path.stem:
        assert recipe.model.name == "resnet_depth_50" and recipe.loss.depth_loss == "smooth_l1"
        assert recipe.eval.total_bone_length == 4000.0
    else:
        assert recipe.model.name == "hourglass3d_2stack" and recipe.loss.depth_loss == "l2"


# --------------------------------------------------------------------------------------------- training
def test_fusion_training_through_the_engine_decreases_the_loss(tmp_path):
    """The method's forward(batch) is the engine's loss dict: the engine (with the fusion sampler) trains a small
    v2 network on 4 synthetic 3D + 4 2D people, and every loss term falls on those samples."""
    from torch.utils.data import default_collate

    rng = np.random.default_rng(0)
    kw = {"train": True, "input_size": 64, "heatmap_size": 16, "scale_factor": 0.0, "rot_prob": 0.0,
          "flip_prob": 0.0}
    data_3d = Monocular3DDataset(samples(rng, 4, has_3d=True), has_3d=True, **kw)
    data_2d = Monocular3DDataset(samples(rng, 4, has_3d=False), has_3d=False, **kw)
    batch = default_collate([data_3d[i] for i in range(4)] + [data_2d[i] for i in range(4)])
    torch.manual_seed(0)
    method = Monocular3DPose(create_model("resnet_depth_mini", skeleton="mpii16"), weight_3d=0.1, weight_var=0.01)

    def losses() -> dict[str, float]:
        with torch.no_grad():
            return {k: v.item() for k, v in method(batch).items()}

    before = losses()
    cfg = TrainConfig(epochs=16, batch_size=4, optimizer="adam", lr=5e-3, weight_decay=0.0, schedule="constant",
                      log_every=1, progress=False, tensorboard=False, output_dir=str(tmp_path / "run"),
                      device="cpu", precision="fp32", channels_last=False, save_every=100)
    trainer = fusion_trainer(cfg, method, data_3d, data_2d, ratio_3d=1.0)
    assert trainer.steps_per_epoch == 2  # (4 drawn 3D + 4 2D) / 4
    result = trainer.fit()
    after = losses()
    log = read_log(tmp_path / "run", "train")
    assert result["step"] == 32 and len(log) == 32
    assert {"loss_hm", "loss_depth", "loss_geometry"} <= set(log[0])
    assert all(math.isfinite(r["loss_depth"]) for r in log) and sum(r["loss_depth"] > 0 for r in log) > 16
    assert after["loss"] < 0.7 * before["loss"], (before, after)
    assert after["loss_hm"] < 0.8 * before["loss_hm"] and after["loss_depth"] < 0.2 * before["loss_depth"]
    assert after["loss_geometry"] < 0.5 * before["loss_geometry"], (before, after)


def test_run_training_stage_1_then_2_on_synthetic_mpii_and_h36m(tmp_path):
    """``run_training``: stage 2d on MPII, then stage 2d3d from its weights on the MPII + H36M fusion (the
    multi-view labels read one sample per frame and camera), each evaluated on H36M validation (§5.7 metrics)."""
    from humanvision.data.synthetic.writers import generate_h36m, generate_mpii

    generate_mpii(tmp_path / "mpii", 6, size=(128, 128))
    generate_h36m(tmp_path / "h36m", 4, size=(256, 256), views=2, subjects=2)
    base = {"model": {"name": "resnet_depth_mini"},
            "data": {"mpii_train": str(tmp_path / "mpii/annotations/mpii_train.json"),
                     "mpii_images": str(tmp_path / "mpii/images"),
                     "h36m_labels": str(tmp_path / "h36m/human36m-multiview-labels-GTbboxes.npy"),
                     "h36m_root": str(tmp_path / "h36m/processed"), "h36m_train_subjects": ["S1"],
                     "h36m_val_subjects": ["S2"], "h36m_val_every": 1},
            "train": {"epochs": 1, "batch_size": 2, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0,
                      "schedule": "constant", "progress": False, "tensorboard": False, "device": "cpu",
                      "precision": "fp32", "channels_last": False, "output_dir": str(tmp_path / "run1")},
            "eval": {"batch_size": 4}}
    first = m3d.run_training(load_config(base, Monocular3DRecipe))
    assert first["step"] == 3  # 6 MPII people, batch 2
    stage2 = {**base, "stage": "2d3d", "init_weights": str(tmp_path / "run1"), "loss": {"weight_3d": 0.1},
              "train": {**base["train"], "output_dir": str(tmp_path / "run2")}}
    second = m3d.run_training(load_config(stage2, Monocular3DRecipe))
    assert second["step"] == 5  # min(4 S1 views, 1.0 x 6) 3D + 6 2D samples, batch 2
    metrics = second["metrics"]
    assert {"mpjpe_hg", "mpjpe_p1", "mpjpe_p2"} <= set(metrics) and all(math.isfinite(v) for v in metrics.values())
    import json

    saved = json.loads((tmp_path / "run2/eval/metrics.json").read_text())
    assert saved["count"] == 4 and saved["mpjpe_hg"] == pytest.approx(metrics["mpjpe_hg"])  # 2 S2 frames x 2 views


def test_cli_train_refuses_a_stage_without_its_previous_weights(tmp_path):
    """`humanvision train` takes the stage recipes; a stage whose init_weights are missing fails at once, naming the
    key and the file (before any data is read); `eval` names the missing validation labels."""
    from typer.testing import CliRunner

    from humanvision.cli import app

    cfg = CONFIGS / "zhou3d_resnet50_stage3_geometry.yaml"
    res = CliRunner().invoke(app, ["train", str(cfg), "--set", f"init_weights={tmp_path / 'stage2'}"])
    out = " ".join(res.output.split())  # rich wraps long lines
    assert res.exit_code != 0 and "init_weights: file not found" in out and "stage2" in out
    assert m3d.is_monocular3d_recipe(cfg) and not m3d.is_monocular3d_recipe(CONFIGS / "synthetic_tiny.yaml")
    res = CliRunner().invoke(app, ["eval", str(cfg), "--weights", str(cfg)])  # no Human3.6M data here
    assert res.exit_code != 0 and "data.h36m_labels: file not found" in " ".join(res.output.split())
