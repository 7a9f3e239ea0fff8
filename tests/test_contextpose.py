"""ContextPose (humanvision.models.contextpose, humanvision.methods.contextpose): the pairwise limb kernels, the
context module's messages against a naive loop, the network's shapes and gradients, the global-attention target,
the total loss, the limb statistics and their file, and a tiny monocular train / eval end to end (pose3d.md §3,
§8 items 11-14)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from humanvision.geometry.volume import coord_volume
from humanvision.methods import contextpose as cp
from humanvision.models import contextpose as cpm
from humanvision.models.v2v import Res3DBlock

LIMBS = cpm.h36m_limbs()
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def stats(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(16, generator=g) * 300 + 100, torch.rand(16, generator=g) * 20 + 5


# ------------------------------------------------------------------------------------ the pairwise kernels
def test_limb_list_is_cps_tree():
    assert LIMBS == ((0, 1), (1, 2), (2, 6), (5, 4), (4, 3), (3, 6), (6, 7), (7, 8), (8, 16), (9, 16), (8, 12),
                     (11, 12), (10, 11), (8, 13), (13, 14), (14, 15))
    assert len({j for e in LIMBS for j in e}) == 17 and len(LIMBS) == 16  # a spanning tree


def test_pairwise_kernels_rows_sphere_symmetry_rotation():
    mu = torch.tensor([300.0, 500.0, 180.0])
    sigma = torch.tensor([10.0, 30.0, 5.0])
    n, spacing = 8, 2500.0 / 15
    k = cpm.pairwise_limb_kernels(mu, sigma, n, spacing, 1500.0)
    assert k.shape == (3, n ** 3, n ** 3) and k.dtype == torch.float32
    torch.testing.assert_close(k.sum(-1), torch.ones(3, n ** 3), atol=1e-5, rtol=0)
    # the direct formula, one row: softmax_k -(d - mu)^2 / (2 T sigma^2 + 0.1)
    p = cpm.grid_positions(n, spacing, dtype=torch.float64)
    q = 123
    d = (p - p[q]).norm(dim=-1)
    for e in range(3):
        ref = torch.softmax(-(d - mu[e].double()) ** 2 / (2 * 1500.0 * sigma[e].double() ** 2 + 0.1), 0)
        torch.testing.assert_close(k[e, q].double(), ref, atol=1e-6, rtol=1e-5)
        # the maximum of every row lies on the mu-sphere: |d - mu| at the argmax is the smallest one available
        dq = torch.cdist(p, p)
        best = (dq - mu[e]).abs().min(-1).values
        at_max = (dq.gather(1, k[e].argmax(-1, keepdim=True).long()).squeeze(1) - mu[e]).abs()
        assert torch.allclose(at_max, best, atol=1e-3)
    # the unnormalised kernel is symmetric: P(q, k) Z_q = P(k, q) Z_k with Z_q = sum_k exp(logit)
    logits = -(torch.cdist(p, p) - 300.0) ** 2 / (2 * 1500.0 * 10.0 ** 2 + 0.1)
    z = torch.logsumexp(logits, -1)
    unnorm = torch.exp(torch.log(k[0].double()) + z[:, None])
    torch.testing.assert_close(unnorm, unnorm.T, atol=1e-6, rtol=1e-4)
    # rotating the grid leaves every value unchanged (it depends on distances only)
    a = 0.7
    rot = torch.tensor([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1.0]])
    kr = cpm.pairwise_limb_kernels(mu, sigma, positions=cpm.grid_positions(n, spacing) @ rot.T + 17.0)
    torch.testing.assert_close(kr, k, atol=1e-5, rtol=1e-4)
    # a block of rows is those rows
    torch.testing.assert_close(cpm.pairwise_limb_kernels(mu, sigma, n, spacing, rows=slice(40, 70)), k[:, 40:70])


def test_kernel_spacing_choices():
    assert cpm.attention_spacing(2500, 64, 16, "cp") == pytest.approx(2500 / 15)  # CP: 166.67 mm
    assert cpm.attention_spacing(2500, 64, 16, "pooled") == pytest.approx(4 * 2500 / 63)  # 158.73 mm
    with pytest.raises(ValueError, match="kernel_spacing"):
        cpm.attention_spacing(2500, 64, 16, "exact")


# --------------------------------------------------------------------------------------------- messages
def naive_messages(weighted, attention, kernels, limbs):
    """The definition, one (b, e, direction, q) at a time (not the batched matmul)."""
    b, _, c, n = weighted.shape
    out = torch.zeros(b, 2 * len(limbs), c, n, dtype=torch.float64)
    for bi in range(b):
        for e, (u, v) in enumerate(limbs):
            for d, (recv, send) in enumerate(((u, v), (v, u))):
                for q in range(n):  # sums over k written out per row
                    num = (kernels[e, q] * weighted[bi, send]).sum(-1)
                    den = (kernels[e, q] * attention[bi, send]).sum()
                    out[bi, 2 * e + d, :, q] = num / den
    return out


def test_messages_match_a_naive_loop_one_hot_and_uniform():
    torch.manual_seed(0)
    limbs = ((0, 1), (1, 2), (1, 3))
    b, j, c, n = 2, 4, 3, 4 ** 3
    kernels = cpm.pairwise_limb_kernels(torch.tensor([300.0, 200.0, 400.0]), torch.tensor([20.0, 10.0, 40.0]),
                                        4, 2500.0 / 15).double()
    g = torch.softmax(torch.randn(b, j, n, dtype=torch.float64) * 3, -1)
    xt = torch.randn(b, j, c, n, dtype=torch.float64)
    h = g[:, :, None] * xt
    m = cpm.limb_messages(h, g, kernels, limbs)
    assert m.shape == (b, 6, c, n)
    torch.testing.assert_close(m, naive_messages(h, g, kernels, limbs))
    # G_v one-hot at k0: every message from v is x~_v(k0), wherever P(q, k0) > 0
    k0 = 37
    one_hot = torch.zeros(b, j, n, dtype=torch.float64)
    one_hot[..., k0] = 1.0
    m = cpm.limb_messages(one_hot[:, :, None] * xt, one_hot, kernels, limbs)
    for e, (u, v) in enumerate(limbs):
        torch.testing.assert_close(m[:, 2 * e], xt[:, v, :, k0, None].expand(b, c, n))  # v -> u
        torch.testing.assert_close(m[:, 2 * e + 1], xt[:, u, :, k0, None].expand(b, c, n))  # u -> v
    # uniform P: every message is the sender's global descriptor s_v = sum_k G_v x~_v
    uniform = torch.full((3, n, n), 1.0 / n, dtype=torch.float64)
    m = cpm.limb_messages(h, g, uniform, limbs)
    s = h.sum(-1)
    for e, (u, v) in enumerate(limbs):
        torch.testing.assert_close(m[:, 2 * e], s[:, v, :, None].expand(b, c, n))


def test_attention_module_update_uses_messages_and_descriptors():
    """out = concat_u C_u z_u + x~, z_u: m_{v->u} in the groups of u's tree neighbours, s_v elsewhere."""
    torch.manual_seed(1)
    limbs = ((0, 1), (1, 2), (1, 3))
    j, c, side = 4, 3, 4
    mod = cpm.AttentionConv3D(j, c, limbs, torch.tensor([300.0, 200.0, 400.0]), torch.tensor([20.0, 10.0, 40.0]))
    for conv in (mod.features, mod.attention, mod.update):
        torch.nn.init.normal_(conv.weight, 0, 0.5)
    x = torch.randn(2, j * c, side, side, side)
    out, g = mod(x)
    assert out.shape == x.shape and g.shape == (2, j, side ** 3)
    torch.testing.assert_close(g.sum(-1), torch.ones(2, j))
    # the reference, written out per joint with the naive messages
    n = side ** 3
    xt = mod.features(x).reshape(2, j, c, n).double()
    ref_g = torch.softmax(mod.attention(x).reshape(2, j, n).double(), -1)
    h = ref_g[:, :, None] * xt
    m = naive_messages(h, ref_g, mod.kernels((side,) * 3, mod.spacing).double(), limbs)
    s = h.sum(-1)
    w = mod.update.weight.reshape(j, c, j * c).double()  # group u: (c out, J c in)
    expected = torch.zeros(2, j, c, n, dtype=torch.float64)
    for u in range(j):
        z = s[:, :, :, None].expand(2, j, c, n).clone()
        for e, (a, bb) in enumerate(limbs):
            if a == u:
                z[:, bb] = m[:, 2 * e]  # m_{bb -> a}
            if bb == u:
                z[:, a] = m[:, 2 * e + 1]  # m_{a -> bb}
        expected[:, u] = torch.einsum("oi,bin->bon", w[u], z.reshape(2, j * c, n))
    expected = expected + xt
    torch.testing.assert_close(out.reshape(2, j, c, n).double(), expected, atol=1e-5, rtol=1e-4)
    # chunked, checkpointed kernels (no cache) give the same output and gradients
    xg = x.clone().requires_grad_(True)
    out, g = mod(xg)
    (out.square().sum() + g.square().sum()).backward()
    grads = [xg.grad.clone()] + [c.weight.grad.clone() for c in (mod.features, mod.attention, mod.update)]
    mod.zero_grad()
    xg.grad = None
    mod.cache_kernels, mod.kernel_chunk = False, 10
    out2, g2 = mod(xg)
    torch.testing.assert_close(out2, out, atol=1e-6, rtol=1e-5)
    (out2.square().sum() + g2.square().sum()).backward()
    grads2 = [xg.grad] + [c.weight.grad for c in (mod.features, mod.attention, mod.update)]
    for a, b in zip(grads, grads2, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------------ the network
def test_contextpose_v2v_shapes_init_and_gradients():
    torch.manual_seed(0)
    mean, std = stats()
    net = cpm.ContextPoseV2V(32, 17, limb_mean=mean, limb_std=std)
    convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))]
    assert net.context.attention in convs and net.context.update in convs
    for m in convs:  # N(0, 1e-3), zero bias, attention convs included
        assert m.weight.std().item() == pytest.approx(1e-3, rel=0.2), m
        assert m.bias is None or (m.bias == 0).all()
    assert net.context.features.groups == 17 and net.context.attention.out_channels == 17
    assert net.context.update.groups == 17 and net.context.update.in_channels == 17 * 51
    x = torch.randn(2, 32, 16, 16, 16)
    vol, g = net(x)
    assert vol.shape == (2, 17, 16, 16, 16) and g.shape == (2, 17, 64)
    torch.testing.assert_close(g.sum(-1), torch.ones(2, 17))
    (vol.square().mean() + (g ** 2).sum()).backward()
    for conv in (net.context.features, net.context.attention, net.context.update, net.front_layers[0].block[0]):
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    # the kernel cache is not in the state dict; the limb statistics are, and loading them resets the cache
    sd = net.state_dict()
    assert "mid_res.attention.limb_mean" in sd and not any("kernel" in k for k in sd)
    assert net.context._kernel_cache is not None
    fresh = cpm.ContextPoseV2V(32, 17)
    with pytest.raises(ValueError, match="limb statistics"):
        fresh(x)
    fresh.load_state_dict(sd)
    assert fresh.context._kernel_cache is None
    fresh.eval(), net.eval()
    torch.testing.assert_close(fresh(x)[0], net(x)[0])
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.randn(1, 32, 10, 10, 10))


@pytest.mark.slow
def test_contextpose_v2v_at_cp_size():
    """§8.11 at CP's size: (B, 32, 64³) -> (B, 17, 64³) and attention (B, 17, 4096) whose rows sum to 1."""
    mean, std = stats()
    net = cpm.ContextPoseV2V(32, 17, limb_mean=mean, limb_std=std, cache_kernels=False, kernel_chunk=512).eval()
    with torch.no_grad():
        vol, g = net(torch.randn(1, 32, 64, 64, 64))
    assert vol.shape == (1, 17, 64, 64, 64) and g.shape == (1, 17, 4096)
    torch.testing.assert_close(g.sum(-1), torch.ones(1, 17))


# ---------------------------------------------------------------------------- the attention target and loss


def test_attention_grids_cp_and_pooled():
    base = torch.tensor([[100.0, -200.0, 900.0]], dtype=torch.float64)
    angle = torch.tensor([0.4], dtype=torch.float64)
    fine = coord_volume(base, 2500.0, 32, angle=angle)
    aux = cp.attention_grid(base, 2500.0, 32, angle=angle, mode="cp")
    assert aux.shape == (1, 8, 8, 8, 3)
    torch.testing.assert_close(aux, fine[:, ::4, ::4, ::4])  # CP: aux point i = fine point 4i
    pooled = cp.attention_grid(base, 2500.0, 32, angle=angle, mode="pooled")
    torch.testing.assert_close(pooled[0, 2, 5, 1], fine[0, 8:12, 20:24, 4:8].reshape(-1, 3).mean(0))  # 4i + 1.5
    # sigma: 2 aux spacings = 2 x 4 x 2500 / 63 = 317.46 mm at CP's 64^3
    assert 2 * 4 * 2500 / 63 == pytest.approx(317.46, abs=0.01)


def test_ga_target_sums_to_one_and_peaks_at_the_nearest_aux_voxel():
    torch.manual_seed(0)
    base = torch.tensor([[0.0, 0.0, 900.0], [500.0, 300.0, 1000.0]], dtype=torch.float64)
    angle = torch.tensor([0.0, 1.1], dtype=torch.float64)
    aux = cp.attention_grid(base, 2500.0, 64, angle=angle)  # (2, 16, 16, 16, 3)
    gt = base[:, None] + (torch.rand(2, 17, 3, dtype=torch.float64) - 0.5) * 2000
    t = cp.ga_target(aux, gt, 317.46)
    assert t.shape == (2, 17, 4096)
    torch.testing.assert_close(t.sum(-1), torch.ones(2, 17, dtype=torch.float64))
    nearest = torch.cdist(gt, aux.reshape(2, -1, 3)).argmin(-1)
    assert torch.equal(t.argmax(-1), nearest)
    # the definition, one entry
    d2 = ((aux.reshape(2, -1, 3)[1] - gt[1, 5]) ** 2).sum(-1)
    torch.testing.assert_close(t[1, 5], torch.softmax(-d2 / (2 * 317.46 ** 2), 0))


def test_total_loss_weights_and_fp32_attention_term():
    torch.manual_seed(0)
    b, j, s = 2, 17, 8
    base = torch.zeros(b, 3, dtype=torch.float64)
    coords = coord_volume(base, 2500.0, s)
    aux = cp.attention_grid(base, 2500.0, s)
    gt = torch.rand(b, j, 3, dtype=torch.float64) * 1000 - 500
    pred = gt + torch.randn(b, j, 3, dtype=torch.float64) * 30
    probs = torch.softmax(torch.randn(b, j, s ** 3), -1).reshape(b, j, s, s, s)
    attention = torch.softmax(torch.randn(b, j, (s // 4) ** 3), -1)
    out = cp.contextpose_loss(pred, gt, probs, coords, attention, aux, scale_keypoints_3d=0.1, ce_weight=0.01,
                              ga_weight=1e6, ga_sigma=100.0)
    mae = (0.1 * (pred - gt)).abs().mean()
    from humanvision.methods.volumetric import volumetric_ce_loss

    ce = volumetric_ce_loss(probs, coords, gt)
    ga = ((attention.double() - cp.ga_target(aux, gt, 100.0)) ** 2).mean()
    assert out["loss_mae"].item() == pytest.approx(mae.item(), rel=1e-6)
    assert out["loss_ce"].item() == pytest.approx(ce.item(), rel=1e-6)
    assert out["loss_ga"].item() == pytest.approx(ga.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(mae.item() + 0.01 * ce.item() + 1e6 * ga.item(), rel=1e-5)
    assert out["loss"].dtype == torch.float32
    # under bf16 autocast (and with a bf16 attention map) the attention term is still computed in fp32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = cp.contextpose_loss(pred, gt, probs, coords, attention.bfloat16(), aux, ga_sigma=100.0)
    ref = ((attention.bfloat16().double() - cp.ga_target(aux, gt, 100.0)) ** 2).mean()
    assert amp["loss_ga"].dtype == torch.float32 and amp["loss_ga"].item() == pytest.approx(ref.item(), rel=1e-5)
    assert amp["loss_ga"].item() > 0


def test_bone_length_error_by_hand():
    gt = np.random.default_rng(0).normal(size=(3, 17, 3)) * 300
    pred = gt.copy()
    assert np.allclose(cp.bone_length_error(pred, gt), 0)
    pred = gt * 1.1 + 40.0  # translation does not change lengths; scaling by 1.1 adds 10% to each
    expected = 0.1 * cp.limb_lengths(gt).mean(-1)
    np.testing.assert_allclose(cp.bone_length_error(pred, gt), expected, rtol=1e-12)
    torch.testing.assert_close(cp.bone_length_error(torch.from_numpy(pred), torch.from_numpy(gt)),
                               torch.from_numpy(expected))


# ------------------------------------------------------------------------------------------ limb statistics
@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_limb_statistics_match_numpy_and_round_trip(tmp_path, suffix):
    if suffix == ".h5":
        pytest.importorskip("h5py")
    pts = np.random.default_rng(1).normal(size=(50, 17, 3)) * 200
    mean, std = cp.limb_statistics(pts)
    direct = np.stack([np.linalg.norm(pts[:, a] - pts[:, b], axis=-1) for a, b in LIMBS], 1)
    np.testing.assert_allclose(mean, direct.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, direct.std(0), rtol=1e-12)
    f = cp.save_limb_statistics(tmp_path / f"mean_and_std_limb_length{suffix}", mean, std)
    m2, s2 = cp.load_limb_statistics(f)
    np.testing.assert_array_equal(m2, mean)
    np.testing.assert_array_equal(s2, std)


def test_bad_limb_statistics_files_are_named(tmp_path):
    from humanvision.errors import DataError

    np.savez(tmp_path / "a.npz", mean=np.ones(16))
    with pytest.raises(DataError, match=r"a\.npz.*std|std.*a\.npz"):
        cp.load_limb_statistics(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", mean=np.ones(15), std=np.ones(15))
    with pytest.raises(DataError, match="b.npz"):
        cp.load_limb_statistics(tmp_path / "b.npz")
    (tmp_path / "c.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="c.h5"):
        cp.load_limb_statistics(tmp_path / "c.h5")
    with pytest.raises(DataError, match="nowhere.npz"):
        cp.load_limb_statistics(tmp_path / "nowhere.npz")


# ----------------------------------------------------------------------------------- the monocular setting
def test_one_view_collate_keeps_one_common_camera():
    def item(mask, draw):
        v = len(mask)
        return {"images": torch.arange(v, dtype=torch.float32)[:, None, None, None].expand(v, 3, 4, 4).clone(),
                "proj": torch.zeros(v, 3, 4, dtype=torch.float64), "view_mask": torch.tensor(mask),
                "keypoints_3d": torch.zeros(17, 3), "view_draw": draw}

    batch = cp.one_view_collate([item([True, True, False, True], 0.99), item([True, True, True, True], 0.1)])
    assert batch["images"].shape == (2, 1, 3, 4, 4) and batch["view_mask"].all()
    assert batch["camera"].tolist() == [3, 3] and (batch["images"][:, 0, 0, 0, 0] == 3).all()  # common: 0, 1, 3
    batch = cp.one_view_collate([item([True, True, False, True], 0.0), item([True, True, True, True], 0.9)])
    assert batch["camera"].tolist() == [0, 0]
    # no common camera: each item one of its own
    batch = cp.one_view_collate([item([True, False, False], 0.7), item([False, True, True], 0.7)])
    assert batch["camera"].tolist() == [0, 2] and "view_draw" not in batch


# ----------------------------------------------------------------------------------------------- end to end
TINY = {"backbone": "simplebaseline_tiny", "input_size": 64, "volume_size": 32, "base": "gt_noisy",
        "base_noise_mm": 20.0}


@pytest.fixture(scope="module")
def h36m_data(tmp_path_factory):
    from humanvision.data.synthetic.writers import generate_h36m

    root = tmp_path_factory.mktemp("cp_h36m")
    generate_h36m(root, 6, size=(160, 160), views=3, subjects=2, actions=2, seed=3)
    return root


def tiny_recipe(root, out, **model):
    from humanvision.config import load_config

    return load_config({
        "model": {**TINY, **model},
        "data": {"labels": str(root / "human36m-multiview-labels-GTbboxes.npy"), "root": str(root / "processed"),
                 "train_subjects": ["S1"], "val_subjects": ["S2"], "objects_per_epoch": 2, "cache_images": True},
        "train": {"epochs": 1, "batch_size": 2, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0,
                  "progress": False, "tensorboard": False, "device": "cpu", "precision": "fp32",
                  "channels_last": False, "output_dir": str(out)},
        "eval": {"batch_size": 4}}, cp.ContextPoseRecipe)


def test_single_view_validation_set_expands_frames_by_camera(h36m_data, tmp_path):
    recipe = tiny_recipe(h36m_data, tmp_path / "run")
    train, val = cp.build_datasets(recipe)
    frames = val.frames
    assert len(val) == int(np.asarray(frames.reader.present).sum()) and len(val) == 3 * len(frames)
    item = val[4]
    f, c = int(val.frame_index[4]), int(val.camera_index[4])
    full = frames[f]
    assert item["images"].shape == (1, 3, 64, 64) and torch.equal(item["images"][0], full["images"][c])
    assert torch.equal(item["proj"][0], full["proj"][c]) and torch.equal(item["base_point"], full["base_point"])
    # without the image cache the one view is cropped alone, to the same pixels
    frames.crops.cache = None
    uncached = val[4]
    torch.testing.assert_close(uncached["images"], item["images"])
    torch.testing.assert_close(uncached["keypoints_3d"], item["keypoints_3d"])
    assert val.subjects[4] == frames.subjects[f] and set(val.subjects) == {"S2"}
    assert "view_draw" in train[0] and train[0]["images"].shape[0] == 3


def test_train_step_and_evaluation_end_to_end(h36m_data, tmp_path):
    import json

    recipe = tiny_recipe(h36m_data, tmp_path / "run")
    result = cp.run_training(recipe, quiet=True)
    assert result["step"] == 1
    m = result["metrics"]
    assert m["count"] == 9.0 and m["frames"] == 3.0  # S2: 3 frames x 3 cameras
    for key in ("mpjpe_relative", "mpjpe_absolute", "bone_length_error", "base_pelvis_error"):
        assert math.isfinite(m[key]) and m[key] > 0, key
    assert m["base_pelvis_error"] < 100  # N(0, 20 mm) per coordinate
    # the limb statistics of S1 were written, and are the network's
    stats_file = cp.default_limb_statistics_file(tmp_path / "run")
    mean, std = cp.load_limb_statistics(stats_file)
    train, _ = cp.build_datasets(recipe, train=True)
    ref_mean, ref_std = cp.limb_statistics(train.reader.keypoints)
    np.testing.assert_allclose(mean, ref_mean)
    np.testing.assert_allclose(std, ref_std)
    saved = json.loads((tmp_path / "run/eval/metrics.json").read_text())
    rel = saved["tables"]["contextpose"]["relative"]
    assert rel["per_action"]["Synthetic"]["count"] == 9 and set(rel["per_subject"]) == {"S2"}
    # the run loads back (its limb statistics with it) and `humanvision eval` gives the same numbers
    fresh = cp.build_method(recipe, weights=tmp_path / "run")
    np.testing.assert_allclose(fresh.volume_net.context.limb_mean.numpy(), mean, rtol=1e-6)
    from typer.testing import CliRunner

    from humanvision.cli import app

    res = CliRunner().invoke(app, ["eval", str(tmp_path / "run/config.yaml"), "--weights", str(tmp_path / "run"),
                                   "--out", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    cli = json.loads((tmp_path / "cli/metrics.json").read_text())
    assert cli["mpjpe_relative"] == pytest.approx(m["mpjpe_relative"], rel=1e-5)
    assert cli["bone_length_error"] == pytest.approx(m["bone_length_error"], rel=1e-5)


def test_gradients_reach_the_attention_convs_from_the_full_loss(h36m_data, tmp_path):
    recipe = tiny_recipe(h36m_data, tmp_path / "run", kernel_spacing="pooled", attention_grid="pooled")
    torch.manual_seed(0)
    method = cp.build_method(recipe)
    train, _ = cp.build_datasets(recipe)
    method.set_limb_statistics(*cp.limb_statistics(train.reader.keypoints))
    batch = cp.one_view_collate([train[0], train[1]])
    losses = method(batch)
    assert {"loss", "loss_mae", "loss_ce", "loss_ga", "mpjpe_relative", "bone_length_error"} <= set(losses)
    losses["loss"].backward()
    ctx = method.volume_net.context
    for conv in (ctx.attention, ctx.features, ctx.update, method.process_features):
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert method.ga_sigma == pytest.approx(2 * 4 * 2500 / 31)


def test_recipes_load_and_errors_name_keys():
    from humanvision.config import load_config
    from humanvision.errors import ConfigError

    h36m = cp.load_recipe(CONFIGS / "contextpose_h36m_monocular.yaml",
                          unchecked=("data.", "model.weights", "model.base_run"))
    assert cp.is_contextpose_recipe(CONFIGS / "contextpose_h36m_monocular.yaml")
    m = h36m.model
    assert (m.input_size, m.volume_size, m.cuboid_side, m.temperature) == (384, 64, 2500.0, 1500.0)
    assert m.args == {"backbone": "resnet152"} and m.base == "algebraic" and m.kernel_spacing == "cp"
    assert (h36m.loss.ce_weight, h36m.loss.ga_weight, h36m.loss.scale_keypoints_3d) == (0.01, 1e6, 0.1)
    assert (h36m.lr_groups.backbone, h36m.lr_groups.volume_net, h36m.lr_groups.process_features) == (1e-4, 1e-3, 1e-3)
    assert (h36m.train.batch_size, h36m.eval.batch_size, h36m.data.objects_per_epoch) == (4, 8, 15000)
    syn = cp.load_recipe(CONFIGS / "contextpose_synthetic.yaml")
    assert syn.data.synthetic_dir == cp.alg.load_recipe(CONFIGS / "lt_algebraic_synthetic.yaml").data.synthetic_dir
    assert not cp.is_contextpose_recipe(CONFIGS / "lt_algebraic_synthetic.yaml")
    for override, key in (({"model": {"kernel_spacing": "true"}}, "model.kernel_spacing"),
                          ({"model": {"aggregation": "conf"}}, "model.aggregation"),
                          ({"model": {"limb_statistics": "/nowhere.h5"}}, "model.limb_statistics"),
                          ({"loss": {"ga_sigma_voxels": 0}}, "loss.ga_sigma_voxels"),
                          ({"triangulation": "volumetric"}, "triangulation")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(override, cp.ContextPoseRecipe)


def test_cp_backbone_weights_with_lt_key_names_load_into_the_2d_network(tmp_path):
    """CP's ``backbone_weights.pth``: LT key names under ``module.backbone.`` (no final layer needed)."""
    from humanvision.config import load_config

    recipe = load_config({"model": {**TINY}}, cp.ContextPoseRecipe)
    torch.manual_seed(3)
    source = cp.build_method(recipe).backbone.state_dict()
    lt = {}
    for k, v in source.items():
        if k.startswith("backbone."):
            lt["module.backbone." + k.removeprefix("backbone.")] = v
        elif k.startswith("head.deconv_layers."):
            lt["module.backbone." + k.removeprefix("head.")] = v
    torch.save(lt, tmp_path / "backbone_weights.pth")
    torch.manual_seed(4)
    method = cp.build_method(recipe, weights=tmp_path / "backbone_weights.pth")
    for k, v in method.backbone.state_dict().items():
        if "final_layer" not in k:
            assert torch.equal(v, source[k]), k
    assert not method.limb_statistics_set  # the rest is trained from scratch, statistics included


def test_without_the_context_module_is_the_same_network_with_a_plain_block(h36m_data, tmp_path):
    """``model.context: false`` (the claim's ablation): a Res3D block instead of the context module, no attention,
    no attention loss, no limb statistics; everything else (layers, init, the MAE and CE terms) unchanged."""
    torch.manual_seed(0)
    plain = cpm.ContextPoseV2V(32, 17, context=False)
    assert plain.context is None and isinstance(plain.mid_res, Res3DBlock)
    full_names = {k for k in cpm.ContextPoseV2V(32, 17).state_dict() if not k.startswith("mid_res.")}
    assert {k for k in plain.state_dict() if not k.startswith("mid_res.")} == full_names
    vol, g = plain(torch.randn(2, 32, 16, 16, 16))
    assert vol.shape == (2, 17, 16, 16, 16) and g is None
    recipe = tiny_recipe(h36m_data, tmp_path / "run", context=False)
    result = cp.run_training(recipe, quiet=True)
    assert result["step"] == 1 and math.isfinite(result["metrics"]["bone_length_error"])
    assert not cp.default_limb_statistics_file(tmp_path / "run").exists()
    method = cp.build_method(recipe, weights=tmp_path / "run")
    train, _ = cp.build_datasets(recipe)
    batch = cp.one_view_collate([train[0], train[1]])
    out = method(batch)
    assert float(out["loss_ga"]) == 0.0
    torch.testing.assert_close(out["loss"], out["loss_mae"] + 0.01 * out["loss_ce"])
