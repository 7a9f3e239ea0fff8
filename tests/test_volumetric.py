"""Learnable Triangulation's volumetric method (humanvision.methods.volumetric) and its parts: the cuboid grid, the
unprojection and aggregation (humanvision.geometry.volume), LT's V2V (humanvision.models.v2v), the 3D soft-argmax
with world coordinates, the MAE and VolumetricCE losses, base points, training / evaluation through the engine and
the CLI, and the mapping of an LT volumetric checkpoint (pose3d.md §2.4-§2.6, §8 items 7-11 and 15)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from humanvision.codecs.integral import soft_argmax_3d
from humanvision.config import load_config
from humanvision.errors import ConfigError, DataError
from humanvision.geometry import Camera
from humanvision.geometry.camera import project_with_matrix
from humanvision.geometry.volume import (
    aggregate_volumes,
    aux_volume,
    coord_volume,
    rotate_about_axis,
    unproject_features,
)
from humanvision.methods import algebraic as alg
from humanvision.methods import volumetric as vol
from humanvision.methods.volumetric import VolumetricRecipe
from humanvision.models.v2v import Basic3DBlock, Res3DBlock, Upsample3DBlock, V2VModel

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = {"backbone": "simplebaseline_tiny", "input_size": 64, "volume_size": 32, "base": "gt"}


def ring_cameras(n: int, size: int = 64, focal: float = 40.0, radius: float = 4000.0) -> np.ndarray:
    """``(n, 3, 4)`` cameras on a ring looking at (0, 0, 900) (H36M-like: z up, mm), ``size`` px crops."""
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False) + 0.2
    return np.stack([Camera.look_at([radius * np.cos(a), radius * np.sin(a), 1500.0], [0, 0, 900], focal=focal,
                                    width=size, height=size).projection_matrix for a in angles])


def tiny_method(**model) -> vol.VolumetricTriangulation:
    torch.manual_seed(0)
    return vol.build_method(load_config({"model": {**TINY, **model}}, VolumetricRecipe))


def tiny_batch(b: int = 2, v: int = 3) -> dict:
    torch.manual_seed(1)
    P = torch.from_numpy(np.stack([ring_cameras(v)] * b))
    gt = torch.rand(b, 17, 3, dtype=torch.float64) * torch.tensor([600.0, 600, 1600]).double() \
        + torch.tensor([-300.0, -300, 100]).double()
    return {"images": torch.randn(b, v, 3, 64, 64), "proj": P, "view_mask": torch.ones(b, v, dtype=torch.bool),
            "keypoints_3d": gt, "keypoints_3d_valid": torch.ones(b, 17),
            "base_point": gt[:, 6] + torch.tensor([30.0, -20.0, 10.0]).double()}


# ------------------------------------------------------------------------------------ the grid (§8 item 8)
def test_coord_volume_corners_spacing_and_rotation():
    base = torch.tensor([[100.0, -200.0, 900.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    g = coord_volume(base, 2500.0, 64)
    assert g.shape == (2, 64, 64, 64, 3) and g.dtype == torch.float64
    assert torch.allclose(g[:, 0, 0, 0], base - 1250) and torch.allclose(g[:, 63, 63, 63], base + 1250)
    d = 2500 / 63
    assert torch.allclose(g[0, 1, 0, 0] - g[0, 0, 0, 0], torch.tensor([d, 0, 0]).double())  # axis 0 is x ('ij')
    assert torch.allclose(g[0, 0, 1, 0] - g[0, 0, 0, 0], torch.tensor([0, d, 0]).double())
    assert torch.allclose(g[0, 0, 0, 1] - g[0, 0, 0, 0], torch.tensor([0, 0, d]).double())
    angle = torch.tensor([0.7, -2.1], dtype=torch.float64)
    r = coord_volume(base, 2500.0, 64, angle=angle)
    assert torch.allclose(r[..., 2], g[..., 2])  # rotation about z keeps every z
    assert torch.allclose(rotate_about_axis(base[:, None], base, angle), base[:, None])  # and the base fixed
    idx = torch.randint(0, 64 ** 3, (200,))
    a, b2 = g[0].reshape(-1, 3)[idx], r[0].reshape(-1, 3)[idx]
    dist = lambda x: (x[:, None] - x[None]).norm(dim=-1)
    assert torch.allclose(dist(a), dist(b2), atol=1e-9)  # an isometry
    # about z by +90 degrees: x -> y (right-handed)
    p = rotate_about_axis(torch.tensor([[[1.0, 0.0, 5.0]]]), torch.zeros(1, 3), torch.tensor([math.pi / 2]))
    assert torch.allclose(p, torch.tensor([[[0.0, 1.0, 5.0]]]), atol=1e-6)
    # ContextPose's aux grid: same origin, aux point i = fine point 4i, also rotated
    aux = aux_volume(base, 2500.0, 64, 16, angle=angle)
    assert aux.shape == (2, 16, 16, 16, 3)
    assert torch.allclose(aux, r[:, ::4, ::4, ::4], atol=1e-9)
    assert torch.allclose(aux_volume(base, 2500.0)[:, 1, 0, 0] - aux_volume(base, 2500.0)[:, 0, 0, 0],
                          torch.tensor([4 * d, 0, 0]).double().expand(2, 3))


# ---------------------------------------------------------------------------- 3D soft-argmax (§8 item 7)
def test_soft_argmax_3d_with_world_coordinates():
    base = torch.tensor([[50.0, 20.0, 900.0]], dtype=torch.float64)
    coords = coord_volume(base, 2500.0, 32).float()
    logits = torch.full((1, 2, 32, 32, 32), -1e4)
    logits[0, 0, 3, 17, 30] = 0.0  # one-hot
    logits[0, 1, 1, 2, 3] = math.log(0.25)  # a mixture of two deltas, weights 0.25 / 0.75
    logits[0, 1, 20, 10, 5] = math.log(0.75)
    out, p = soft_argmax_3d(logits, 1.0, coords)
    assert out.shape == (1, 2, 3) and p.shape == logits.shape
    assert torch.allclose(out[0, 0], coords[0, 3, 17, 30], atol=1e-3)
    assert torch.allclose(out[0, 1], 0.25 * coords[0, 1, 2, 3] + 0.75 * coords[0, 20, 10, 5], atol=1e-3)
    # a fixed volume on a grid rotated about b by R gives b + R (X - b)
    logits = torch.randn(1, 3, 32, 32, 32, dtype=torch.float64)  # fp64: world mm summed over 32^3 voxels
    angle = torch.tensor([1.1], dtype=torch.float64)
    x0, _ = soft_argmax_3d(logits, 1.0, coords.double())
    x1, _ = soft_argmax_3d(logits, 1.0, coord_volume(base, 2500.0, 32, angle=angle))
    assert torch.allclose(x1, rotate_about_axis(x0, base, angle), atol=1e-6)


# ---------------------------------------------------------------------------- unprojection (§8 item 9)
def test_unprojection_of_an_affine_map_is_exact_with_the_w_minus_1_normalisation():
    h, w = 12, 16  # not square: x and y must not be swapped
    alpha, beta, gamma = torch.tensor([1.0, -0.5]), torch.tensor([0.3, 2.0]), torch.tensor([5.0, 1.0])
    vv, uu = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    fmap = alpha[:, None, None] * uu + beta[:, None, None] * vv + gamma[:, None, None]  # (C, h, w): f(u, v)
    base = torch.tensor([[0.0, 0.0, 900.0]], dtype=torch.float64)
    far = Camera.look_at([4000.0, 1000.0, 1500.0], [0, 0, 900], focal=10.0, width=w, height=h).projection_matrix
    inside = Camera.look_at([0.0, 0.0, 900.0], [1000.0, 300.0, 900.0], focal=6.0, width=w, height=h).projection_matrix
    proj = torch.from_numpy(np.stack([far, inside]))[None]  # (1, 2, 3, 4): the second camera sits in the cuboid
    coords = coord_volume(base, 2500.0, 16)
    features = fmap[None, None].expand(1, 2, 2, h, w).contiguous()
    out = unproject_features(features, proj, coords)
    assert out.shape == (1, 2, 2, 16, 16, 16) and out.dtype == torch.float32

    X = coords.reshape(-1, 3)
    Xh = torch.cat([X, torch.ones_like(X[:, :1])], 1)
    checked = behind_seen = 0
    for c in range(2):
        uvw = Xh @ proj[0, c].T
        depth = uvw[:, 2]
        u, v = uvw[:, 0] / depth, uvw[:, 1] / depth
        vals = out[0, c].reshape(2, -1).double()
        ok = (depth > 0) & (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
        expected = alpha[:, None].double() * u + beta[:, None].double() * v + gamma[:, None].double()
        assert torch.allclose(vals[:, ok], expected[:, ok], atol=1e-3), c
        far_out = (depth <= 0) | (u < -1) | (u > w) | (v < -1) | (v > h)
        assert (vals[:, far_out] == 0).all(), c
        checked += int(ok.sum())
        behind_seen += int((depth <= 0).sum())
        if c == 0:  # LT's /W normalisation at align_corners=True samples the wrong place
            g = torch.stack([2 * u / w - 1, 2 * v / h - 1], -1).float()[None, None]
            lt = F.grid_sample(fmap[None], g, align_corners=True)[0, :, 0].double()
            assert (lt[:, ok] - expected[:, ok]).abs().max() > 0.3
    assert checked > 500 and behind_seen > 1000  # both regimes are exercised
    # a masked view is all zeros, the other unchanged
    masked = unproject_features(features, proj, coords, torch.tensor([[True, False]]))
    assert (masked[0, 1] == 0).all() and torch.equal(masked[0, 0], out[0, 0])
    # gradients reach the features
    feats = features.clone().requires_grad_(True)
    unproject_features(feats, proj, coords).sum().backward()
    assert feats.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- aggregation (§8 item 10)
def test_aggregation_over_views():
    torch.manual_seed(0)
    one = torch.randn(2, 1, 3, 4, 4, 4)
    assert torch.allclose(aggregate_volumes(one, "softmax"), one[:, 0])  # softmax over one view: the identity
    same = one.expand(2, 4, 3, 4, 4, 4)
    assert torch.allclose(aggregate_volumes(same, "sum"), 4 * one[:, 0], atol=1e-6)
    assert torch.allclose(aggregate_volumes(same, "softmax"), one[:, 0], atol=1e-6)
    assert torch.allclose(aggregate_volumes(same, "max"), one[:, 0])
    w = torch.rand(2, 4, 3) + 0.1
    assert torch.allclose(aggregate_volumes(same, "conf_norm", weights=w), one[:, 0], atol=1e-6)
    # against a straightforward per-voxel reference
    vols = torch.randn(2, 3, 3, 4, 4, 4)
    s = torch.exp(vols) / torch.exp(vols).sum(1, keepdim=True)
    assert torch.allclose(aggregate_volumes(vols, "softmax"), (s * vols).sum(1), atol=1e-6)
    w3 = torch.rand(2, 3, 3)
    ref = sum(w3[:, c, :, None, None, None] * vols[:, c] for c in range(3))
    assert torch.allclose(aggregate_volumes(vols, "conf", weights=w3), ref, atol=1e-6)
    # a masked view takes no part, whatever it holds
    mask = torch.tensor([[True, False, True], [True, True, True]])
    junk = vols.clone()
    junk[0, 1] = 1e3
    for method in ("sum", "max", "softmax"):
        got = aggregate_volumes(junk, method, view_mask=mask)[0]
        assert torch.allclose(got, aggregate_volumes(vols[:1, [0, 2]], method)[0], atol=1e-5), method
    got = aggregate_volumes(junk, "conf_norm", weights=w3, view_mask=mask)[0]
    assert torch.allclose(got, aggregate_volumes(vols[:1, [0, 2]], "conf_norm", weights=w3[:1, [0, 2]])[0], atol=1e-5)
    with pytest.raises(ValueError, match="weights"):
        aggregate_volumes(vols, "conf")
    with pytest.raises(ValueError, match="aggregation"):
        aggregate_volumes(vols, "mean")


# ------------------------------------------------------------------------------------ V2V (§8 item 11)
def test_v2v_shapes_blocks_and_init():
    torch.manual_seed(0)
    net = V2VModel(32, 17)
    y = net(torch.randn(2, 32, 32, 32, 32))
    assert y.shape == (2, 17, 32, 32, 32)
    # the 64^3 contract of LT, shapes only (meta tensors: no compute)
    meta = V2VModel(32, 17).to("meta")
    assert meta(torch.empty(5, 32, 64, 64, 64, device="meta")).shape == (5, 17, 64, 64, 64)
    with pytest.raises(ValueError, match="divisible by 32"):
        net(torch.randn(2, 32, 16, 16, 16))
    # blocks
    x = torch.randn(2, 4, 6, 6, 6)
    assert Basic3DBlock(4, 8, 7)(x).shape == (2, 8, 6, 6, 6)
    assert Upsample3DBlock(4, 8)(x).shape == (2, 8, 12, 12, 12)
    r = Res3DBlock(4, 4)
    assert len(list(r.skip_con.parameters())) == 0  # identity skip
    assert Res3DBlock(4, 8)(x).shape == (2, 8, 6, 6, 6) and (Res3DBlock(4, 8)(x) >= 0).all()
    # every (transposed) conv has a bias, initialised to zero; weights are xavier-normal (std ~ sqrt(2/(fi+fo)))
    convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))]
    assert all(m.bias is not None and (m.bias == 0).all() for m in convs)
    first = net.front_layers[0].block[0].weight  # 32 -> 16, k7: fan_in 32*343, fan_out 16*343
    assert first.std().item() == pytest.approx(math.sqrt(2 / (48 * 343)), rel=0.05)
    names = {n for n, _ in net.named_children()}
    assert names == {"front_layers", "encoder_decoder", "back_layers", "output_layer"}
    enc = net.encoder_decoder
    assert [enc.encoder_res1.res_branch[0].out_channels, enc.encoder_res2.res_branch[0].out_channels,
            enc.encoder_res5.res_branch[0].out_channels] == [64, 128, 128]
    assert enc.decoder_upsample1.block[0].out_channels == 32 and enc.decoder_upsample2.block[0].out_channels == 64


# ---------------------------------------------------------------------------------------------------- losses
def test_volumetric_ce_one_hot_uniform_and_normalisation():
    base = torch.tensor([[0.0, 0.0, 900.0]], dtype=torch.float64)
    angle = torch.tensor([0.4], dtype=torch.float64)
    coords = coord_volume(base, 2500.0, 32, angle=angle)
    gt = torch.tensor([[[100.0, -40.0, 700.0], [-500.0, 300.0, 1500.0]]], dtype=torch.float64)
    # the nearest voxel of the rotated grid, by brute force
    d = ((coords.reshape(1, -1, 1, 3) - gt[:, None]) ** 2).sum(-1)  # (1, N, J)
    nearest = d.argmin(1)[0]
    probs = torch.zeros(1, 2, 32 ** 3, dtype=torch.float64)
    probs[0, 0, nearest[0]] = 1.0
    probs[0, 1, nearest[1]] = 1.0
    probs = probs.reshape(1, 2, 32, 32, 32)
    assert vol.volumetric_ce_loss(probs, coords, gt).item() == pytest.approx(-math.log(1 + 1e-6), abs=1e-12)
    wrong = probs.roll(1, dims=-1)  # the mass one voxel off: -log(1e-6)
    assert vol.volumetric_ce_loss(wrong, coords, gt).item() == pytest.approx(-math.log(1e-6), rel=1e-9)
    # uniform: -log(1/N + 1e-6), which is log(N) up to the 1e-6 (10.365 vs 10.397 at 32^3)
    uniform = torch.full((1, 2, 32, 32, 32), 1 / 32 ** 3, dtype=torch.float64)
    expected = -math.log(1 / 32 ** 3 + 1e-6)
    assert vol.volumetric_ce_loss(uniform, coords, gt).item() == pytest.approx(expected, rel=1e-9)
    # 64^3, LT's size: log(64^3) = 12.48 without the 1e-6; with it 12.24 (pose3d.md §8.15 quotes the former)
    c64 = coord_volume(base, 2500.0, 64)
    u64 = torch.full((1, 1, 64, 64, 64), 1 / 64 ** 3, dtype=torch.float64)
    got = vol.volumetric_ce_loss(u64, c64, gt[:, :1]).item()
    assert got == pytest.approx(-math.log(1 / 64 ** 3 + 1e-6), rel=1e-9) and abs(got - math.log(64 ** 3)) < 0.25
    # divided by B * J, invalid joints included
    valid = torch.tensor([[1.0, 0.0]])
    assert vol.volumetric_ce_loss(uniform, coords, gt, valid).item() == pytest.approx(expected / 2, rel=1e-9)


def test_mae_matches_a_hand_computation():
    pred = torch.tensor([[[1.0, -2.0, 3.0], [10.0, 0.0, 0.0]], [[0.0, 0.0, 0.5], [5.0, 5.0, 5.0]]])
    gt = torch.zeros(2, 2, 3)
    valid = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    assert vol.mae_loss(pred, gt, valid).item() == pytest.approx((6 + 10 + 0.5) / 9)
    assert vol.mae_loss(pred, gt).item() == pytest.approx((6 + 10 + 0.5 + 15) / 12)
    assert vol.mae_loss(pred, gt, torch.zeros(2, 2)).item() == 0.0  # max(1, sum m)


# --------------------------------------------------------------------------------------------------- model
def test_model_shapes_gradients_rotation_and_param_groups():
    method = tiny_method()
    batch = tiny_batch()
    method.eval()
    out = method.predict(batch["images"], batch["proj"], batch["base_point"], batch["view_mask"])
    assert out["keypoints_3d"].shape == (2, 17, 3) and out["keypoints_3d"].dtype == torch.float64
    assert out["volumes"].shape == (2, 17, 32, 32, 32) and out["coord_volumes"].shape == (2, 32, 32, 32, 3)
    assert torch.allclose(out["volumes"].sum((-3, -2, -1)), torch.ones(2, 17))
    assert (out["angle"] == 0).all()  # no rotation at evaluation
    # the prediction is the probability-weighted mean of the world grid
    ref = torch.einsum("bjn,bnc->bjc", out["volumes"].reshape(2, 17, -1).double(),
                       out["coord_volumes"].reshape(2, -1, 3))
    assert torch.allclose(out["keypoints_3d"], ref, atol=1e-2)
    # the cameras go to the feature map (crop 64 -> features 16: K rows 1-2 x 1/4)
    Pf = method.feature_proj(batch["proj"])
    X = batch["keypoints_3d"][:, None]
    assert torch.allclose(project_with_matrix(X, Pf), project_with_matrix(X, batch["proj"]) / 4, atol=1e-9)
    method.train()
    out = method.predict(batch["images"], batch["proj"], batch["base_point"], batch["view_mask"])
    assert (out["angle"] != 0).all()  # random rotation about z in training
    assert torch.allclose(out["coord_volumes"][..., 2], coord_volume(batch["base_point"], 2500.0, 32)[..., 2])
    losses = method(batch)
    assert set(losses) == {"loss", "loss_mae", "loss_ce", "mpjpe_absolute", "mpjpe_relative"}
    assert losses["loss"].item() == pytest.approx(losses["loss_mae"].item() + 0.01 * losses["loss_ce"].item(),
                                                  rel=1e-5)
    losses["loss"].backward()
    params = dict(method.named_parameters())
    for name in ("backbone.backbone.conv1.weight", "backbone.head.deconv_layers.0.weight", "process_features.weight",
                 "volume_net.front_layers.0.block.0.weight", "volume_net.output_layer.weight"):
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0, name
    assert params["backbone.head.final_layer.weight"].grad is None  # frozen and unused
    recipe = load_config({"model": TINY, "train": {"lr": 2e-3}}, VolumetricRecipe)
    groups = vol.volumetric_param_groups(method, 0.0, recipe.lr_groups, recipe.train.lr)
    scale = {}
    for g in groups:
        for n in g["param_names"]:
            scale[n] = g["lr_scale"]
    assert "backbone.head.final_layer.weight" not in scale
    assert scale["backbone.backbone.conv1.weight"] * 2e-3 == pytest.approx(1e-4)
    assert scale["process_features.weight"] * 2e-3 == pytest.approx(1e-3)
    assert scale["volume_net.output_layer.bias"] * 2e-3 == pytest.approx(1e-3)
    assert len(scale) == sum(p.requires_grad for p in method.parameters())


def test_single_view_root_relative_switch_and_conf_aggregation():
    batch = tiny_batch(b=2, v=1)
    plain, switched = tiny_method(), tiny_method()
    switched.root_relative_single_view = True
    for m in (plain, switched):
        m.eval()  # angle 0, BatchNorm statistics fixed: both see the same prediction
    pred = plain.predict(batch["images"], batch["proj"], batch["base_point"])["keypoints_3d"]
    gt = batch["keypoints_3d"]

    def rel(x):  # LT: joint 6 off every other joint, joint 6 itself stays absolute
        y = x - x[:, 6:7]
        y[:, 6] = x[:, 6]
        return y

    with torch.no_grad():
        assert plain(batch)["loss_mae"].item() == pytest.approx(vol.mae_loss(pred * 0.1, gt * 0.1).item(), rel=1e-5)
        assert switched(batch)["loss_mae"].item() == pytest.approx(
            vol.mae_loss(rel(pred) * 0.1, rel(gt) * 0.1).item(), rel=1e-5)
        # with several views the switch does nothing
        multi = tiny_batch(b=2, v=2)
        assert switched(multi)["loss"].item() == pytest.approx(plain(multi)["loss"].item(), rel=1e-6)
    conf = tiny_method(aggregation="conf_norm", confidence_channels=[16, 16])
    out = conf.predict(*(tiny_batch()[k] for k in ("images", "proj", "base_point")))
    assert out["confidences"].shape == (2, 3, 32) and out["keypoints_3d"].shape == (2, 17, 3)


# --------------------------------------------------------------------------------------- LT checkpoint
def to_lt_key(key: str) -> str:
    """Our key -> LT's, written from the documented layout (pose3d.md §2.1, §2.4): the MSRA pose ResNet directly
    under ``backbone.``, the conf head as ``backbone.vol_confidences`` (features / head), ``process_features`` as a
    one-conv Sequential, V2V under ``volume_net`` with its own names."""
    for ours, lt in (("backbone.backbone.", "backbone."), ("backbone.head.", "backbone."),
                     ("confidence_head.features.", "backbone.vol_confidences.features."),
                     ("confidence_head.fc.", "backbone.vol_confidences.head."),
                     ("process_features.", "process_features.0.")):
        if key.startswith(ours):
            return lt + key[len(ours):]
    return key


def test_lt_checkpoint_mapping(tmp_path):
    source = tiny_method(aggregation="conf", confidence_channels=[16, 16])
    for p in source.state_dict().values():  # distinct values everywhere (BN statistics too)
        p.copy_(torch.randn_like(p.float()).to(p.dtype) if p.is_floating_point() else p + 3)
    lt = {to_lt_key(k): v.clone() for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    for key in ("backbone.conv1.weight", "backbone.bn1.running_var", "backbone.layer1.0.conv1.weight",
                "backbone.layer4.0.downsample.0.weight", "backbone.deconv_layers.0.weight",
                "backbone.deconv_layers.1.running_mean", "backbone.deconv_layers.3.weight", "backbone.final_layer.bias",
                "backbone.vol_confidences.features.0.weight", "backbone.vol_confidences.head.4.weight",
                "process_features.0.weight", "process_features.0.bias",
                "volume_net.front_layers.0.block.0.weight", "volume_net.front_layers.1.skip_con.0.weight",
                "volume_net.front_layers.2.res_branch.4.running_var",
                "volume_net.encoder_decoder.encoder_res1.res_branch.3.weight",
                "volume_net.encoder_decoder.mid_res.res_branch.0.bias",
                "volume_net.encoder_decoder.decoder_res5.res_branch.1.weight",
                "volume_net.encoder_decoder.decoder_upsample1.block.0.weight",
                "volume_net.encoder_decoder.skip_res5.res_branch.4.running_var",
                "volume_net.back_layers.0.res_branch.0.weight", "volume_net.back_layers.2.block.1.weight",
                "volume_net.output_layer.weight"):
        assert key in lt, key
    lt["backbone.alg_confidences.features.0.weight"] = torch.zeros(3)  # the algebraic head: dropped
    path = tmp_path / "weights.pth"
    torch.save({f"module.{k}": v for k, v in lt.items()}, path)  # as saved from DataParallel
    target = tiny_method(aggregation="conf", confidence_channels=[16, 16])
    vol.load_weights_into(target, path)
    mine = target.state_dict()
    for k, v in source.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(mine[k], v), k
    converted, dropped = vol.convert_lt_checkpoint(lt)
    assert dropped == ["backbone.alg_confidences.features.0.weight"] and "process_features.weight" in converted
    bad = dict(lt, **{"volume_net.extra.weight": torch.zeros(1), "backbone.mystery.weight": torch.zeros(1)})
    with pytest.raises(DataError, match="backbone.mystery.weight"):
        vol.convert_lt_checkpoint(bad)
    torch.save({k: v for k, v in lt.items() if k != "volume_net.output_layer.weight"}, tmp_path / "short.pth")
    with pytest.raises(DataError, match=r"volume_net\.output_layer\.weight"):
        vol.load_weights_into(tiny_method(aggregation="conf", confidence_channels=[16, 16]), tmp_path / "short.pth")


# ----------------------------------------------------------------------------- data, training, evaluation
@pytest.fixture(scope="module")
def h36m_data(tmp_path_factory):
    from humanvision.data.synthetic.writers import generate_h36m

    root = tmp_path_factory.mktemp("lt_vol_h36m")
    generate_h36m(root, 6, size=(160, 160), views=3, subjects=2, actions=2, seed=3)
    return root


def data_section(root: Path, **extra) -> dict:
    return {"labels": str(root / "human36m-multiview-labels-GTbboxes.npy"), "root": str(root / "processed"),
            "train_subjects": ["S1"], "val_subjects": ["S2"], "objects_per_epoch": 2, **extra}


def train_section(out: Path) -> dict:
    return {"epochs": 1, "batch_size": 2, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "progress": False,
            "tensorboard": False, "device": "cpu", "precision": "fp32", "channels_last": False,
            "output_dir": str(out)}


def test_train_step_evaluation_and_cli(h36m_data, tmp_path):
    model = {**TINY, "base": "gt_noisy", "base_noise_mm": 20.0, "base_seed": 5}
    recipe = load_config({"triangulation": "volumetric", "model": model, "data": data_section(h36m_data),
                          "train": train_section(tmp_path / "run"), "eval": {"batch_size": 2}}, VolumetricRecipe)
    result = vol.run_training(recipe, quiet=True)
    assert result["step"] == 1
    m = result["metrics"]
    assert m["count"] == 3.0  # S2's frames
    assert all(math.isfinite(m[k]) and m[k] > 0 for k in ("mpjpe_relative", "mpjpe_absolute"))
    # the noisy pelvis is fixed per labels-table row: N(0, 20 mm) from base_seed, indexed by the row
    reader = alg.build_datasets(recipe)[1].reader
    noise = np.random.default_rng(5).normal(0.0, 20.0, (int(reader.rows.max()) + 1, 3))[reader.rows]
    assert m["base_pelvis_error"] == pytest.approx(np.linalg.norm(noise, axis=1).mean(), rel=1e-9)
    saved = json.loads((tmp_path / "run/eval/metrics.json").read_text())
    rel = saved["tables"]["volumetric"]["relative"]
    assert rel["root_joint"] == "pelvis" and set(rel["per_action"]) == {"Synthetic"} and set(rel["per_subject"]) == {"S2"}
    assert saved["tables"]["volumetric"]["absolute"]["mpjpe"] == pytest.approx(m["mpjpe_absolute"])
    # the trained weights load back
    fresh = vol.build_method(recipe, weights=tmp_path / "run")
    trained = vol.build_method(recipe, weights=tmp_path / "run/last/model.safetensors")
    for a, b in zip(fresh.state_dict().values(), trained.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    from typer.testing import CliRunner

    from humanvision.cli import app

    res = CliRunner().invoke(app, ["eval", str(tmp_path / "run/config.yaml"), "--weights", str(tmp_path / "run"),
                                   "--out", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    cli = json.loads((tmp_path / "cli/metrics.json").read_text())
    assert cli["mpjpe_relative"] == pytest.approx(m["mpjpe_relative"], rel=1e-5)
    res = CliRunner().invoke(app, ["infer", str(tmp_path), "--config", str(tmp_path / "run/config.yaml"),
                                   "--weights", str(tmp_path / "run")])
    assert res.exit_code != 0 and "volumetric triangulation" in " ".join(res.output.split())


def test_algebraic_base_points_from_a_run_and_from_files(h36m_data, tmp_path):
    from humanvision.methods.algebraic import AlgebraicRecipe

    alg_recipe = load_config({"model": {"backbone": "simplebaseline_tiny", "input_size": 64,
                                        "confidence_channels": [32, 32]},
                              "data": data_section(h36m_data, val_subjects=[]),
                              "train": train_section(tmp_path / "alg")}, AlgebraicRecipe)
    alg.run_training(alg_recipe, quiet=True)
    model = {**TINY, "base": "algebraic", "base_run": str(tmp_path / "alg")}
    recipe = load_config({"model": model, "data": data_section(h36m_data)}, VolumetricRecipe)
    _, val = vol.build_datasets(recipe, cache_dir=tmp_path / "base", train=False)
    direct = vol.predict_algebraic_pelvis(tmp_path / "alg", val.crops)
    assert val.points.shape == (3, 3) and np.allclose(val.points, direct)
    batch = torch.utils.data.default_collate([val[i] for i in range(2)])
    assert torch.allclose(batch["base_point"], torch.from_numpy(direct[:2]))
    cache = np.load(tmp_path / "base/val.npz")
    assert (cache["indexes"] == val.reader.rows).all()  # labels-table rows, LT's train.pkl / val.pkl layout
    # the same predictions as a file, shuffled, with explicit row indexes (and LT's (N, 17, 3) layout)
    kp = np.zeros((3, 17, 3))
    kp[:, 6] = direct
    order = [2, 0, 1]
    np.savez(tmp_path / "val.npz", keypoints_3d=kp[order], indexes=val.reader.rows[order])
    recipe = load_config({"model": {**TINY, "base": "algebraic", "base_val_predictions": str(tmp_path / "val.npz")},
                          "data": data_section(h36m_data)}, VolumetricRecipe)
    assert np.allclose(vol.base_points(recipe, val.crops, "val"), direct)
    np.savez(tmp_path / "pos.npz", keypoints_3d=direct[order], indexes=np.array(order))
    recipe.model.base_val_predictions, recipe.model.base_index = tmp_path / "pos.npz", "position"
    assert np.allclose(vol.base_points(recipe, val.crops, "val"), direct)
    np.savez(tmp_path / "short.npz", keypoints_3d=direct[:2], indexes=val.reader.rows[:2])
    recipe.model.base_val_predictions, recipe.model.base_index = tmp_path / "short.npz", "row"
    with pytest.raises(DataError, match=f"no prediction for index {val.reader.rows[2]}"):
        vol.base_points(recipe, val.crops, "val")
    with pytest.raises(ConfigError, match="model.base_train_predictions"):
        vol.base_points(recipe, val.crops, "train")
    # an algebraic run also initialises the 2D network (its confidence head is not used)
    init = vol.build_method(recipe, weights=tmp_path / "alg")
    trained = alg.build_method(alg_recipe, weights=tmp_path / "alg")
    for k, v in trained.backbone.state_dict().items():
        assert torch.equal(init.backbone.state_dict()[k], v), k


# --------------------------------------------------------------------------------------------------- recipes
def test_recipes_load():
    h36m = vol.load_recipe(CONFIGS / "lt_volumetric_h36m.yaml", unchecked=("data.", "model.weights", "model.base_run"))
    assert vol.is_volumetric_recipe(CONFIGS / "lt_volumetric_h36m.yaml")
    assert not alg.is_algebraic_recipe(CONFIGS / "lt_volumetric_h36m.yaml")
    assert not vol.is_volumetric_recipe(CONFIGS / "lt_algebraic_h36m.yaml")
    m = h36m.model
    assert (m.input_size, m.cuboid_side, m.volume_size, m.aggregation, m.volume_multiplier) == (384, 2500.0, 64,
                                                                                                "softmax", 1.0)
    assert m.args == {"backbone": "resnet152"} and m.base == "algebraic" and m.feature_channels == 32
    assert (h36m.train.batch_size, h36m.eval.batch_size, h36m.train.optimizer) == (5, 10, "adam")
    lrs = h36m.lr_groups
    assert (lrs.backbone, lrs.process_features, lrs.volume_net) == (1e-4, 1e-3, 1e-3)
    assert (h36m.loss.scale_keypoints_3d, h36m.loss.ce_weight, h36m.loss.root_relative_single_view) == (0.1, 0.01,
                                                                                                        False)
    assert h36m.data.objects_per_epoch == 15000 and h36m.data.val_subjects == ("S9", "S11")
    syn = vol.load_recipe(CONFIGS / "lt_volumetric_synthetic.yaml")
    syn_alg = alg.load_recipe(CONFIGS / "lt_algebraic_synthetic.yaml")
    assert syn.model.backbone == "simplebaseline_tiny" and syn.model.base == "gt_noisy"
    for key in ("source", "synthetic_dir", "synthetic_frames", "synthetic_size", "synthetic_views",
                "synthetic_subjects", "synthetic_actions", "synthetic_seed"):  # the algebraic recipe's set
        assert getattr(syn.data, key) == getattr(syn_alg.data, key), key


@pytest.mark.parametrize("override, key", [
    ({"modle": {}}, "modle"),
    ({"triangulation": "algebraic"}, "triangulation"),
    ({"model": {"backbone": "no_such_model"}}, "model.backbone"),
    ({"model": {"volume_size": 48}}, "model.volume_size"),
    ({"model": {"volume_size": "big"}}, "model.volume_size"),
    ({"model": {"cuboid_side": "2500mm"}}, "model.cuboid_side"),
    ({"model": {"aggregation": "mean"}}, "model.aggregation"),
    ({"model": {"rotation": "yes"}}, "model.rotation"),
    ({"model": {"vertical_axis": 3}}, "model.vertical_axis"),
    ({"model": {"base": "pelvis"}}, "model.base"),
    ({"model": {"base": "gt_noisy"}}, "model.base_noise_mm"),
    ({"model": {"base": "gt", "base_noise_mm": 5.0}}, "model.base_noise_mm"),
    ({"model": {"base": "gt", "base_run": "."}}, "model.base_run"),
    ({"model": {"base_run": "/nowhere/run"}}, "model.base_run"),
    ({"model": {"feature_chanels": 32}}, "model.feature_chanels"),
    ({"loss": {"ce_weight": -1.0}}, "loss.ce_weight"),
    ({"lr_groups": {"backbone": -1e-4}}, "lr_groups.backbone"),
    ({"lr_groups": {"v2v": 1e-3}}, "lr_groups.v2v"),
    ({"data": {"min_views": 1}}, "data.min_views"),
])
def test_recipe_errors_name_their_keys(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(override, VolumetricRecipe)


def test_an_algebraic_base_without_a_source_is_named_before_training(tmp_path):
    recipe = load_config({"model": {**TINY, "base": "algebraic"},
                          "train": {"output_dir": str(tmp_path / "run"), "device": "cpu"}}, VolumetricRecipe)
    with pytest.raises(ConfigError, match=r"model\.base_run"):
        vol.run_training(recipe, quiet=True)
    assert not (tmp_path / "run").exists()
    recipe = load_config({"model": TINY, "train": {"output_dir": str(tmp_path / "run"), "channels_last": True}},
                         VolumetricRecipe)
    with pytest.raises(ConfigError, match=r"train\.channels_last"):  # Conv3d weights are 5-D
        vol.run_training(recipe, quiet=True)
