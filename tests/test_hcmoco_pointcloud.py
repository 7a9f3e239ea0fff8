"""HCMoCo's point-cloud variant (pretraining.md A.3.4, ``--arch HRNetPN``) end to end: the recipe switch and model
entries, the NTUSeg point fields (original-frame pixel coordinates, frame size, depth mean) against the crop and the
A.3.4 back-projection by hand, foreground-only sampling with replacement, the dense depth map against a brute-force
3-NN inverse-distance interpolation, missing depth masked as for the depth HRNet, repeatable evaluation, and a tiny
stage 1 -> stage 2 run through the losses with the point-encoder export.

Tiny models (``hcmoco_pn_tiny``), a tiny synthetic NTU + MPII set written here, 64x64 crops, CPU.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import default_collate

from humanvision.data.readers.ntu import ntu_crop_params
from humanvision.engine import read_log
from humanvision.errors import ConfigError, DataError
from humanvision.methods import hcmoco as H
from humanvision.methods.hcmoco_losses import hcmoco_loss
from humanvision.models import create_model
from humanvision.models.hcmoco import TINY_POINTNET, HCMoCoPN, is_point_cloud_model
from humanvision.models.pointnet2 import PointNet2MSG, hcmoco_point_cloud

torch.set_num_threads(1)

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "hcmoco_pn_tiny_synthetic_stage1.yaml"
N_NTU, N_MPII, S = 12, 8, 64


def _overrides(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.synthetic_dir={data_dir}", f"data.synthetic_ntu={N_NTU}", f"data.synthetic_mpii={N_MPII}",
            "data.synthetic_size=[96, 80]", f"data.crop_size={S}", "hcmoco.num_negatives=32",
            "hcmoco.num_dense_points=16", "hcmoco.eval_samples=4", "hcmoco.model_args.num_points=96",
            "train.batch_size=2", "train.max_steps=2", "train.log_every=1", "train.progress=false",
            "train.tensorboard=false", f"train.output_dir={out}", *extra]


def _recipe(data_dir: Path, out: Path, *extra: str) -> H.HCMoCoRecipe:
    return H.load_recipe(CONFIG, _overrides(data_dir, out, *extra), unchecked=("hcmoco.init",))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("hcmoco_pn")
    recipe = _recipe(root / "data", root / "unused")
    H.prepare_synthetic(recipe.data, quiet=True)
    plain = _recipe(root / "data", root / "unused", "hcmoco.model=hcmoco_tiny", "hcmoco.depth_encoder=hrnet",
                    "hcmoco.model_args={}")
    H.prepare_synthetic(plain.data, quiet=True)
    return {"root": root, "recipe": recipe, "dataset": H.build_dataset(recipe), "plain": H.build_dataset(plain)}


def _batch(ds: H.HcmocoDataset, indices: list[int]) -> dict:
    return default_collate([ds.item(i, np.random.default_rng([7, i])) for i in indices])


def _ntu_with_foreground(ds: H.HcmocoDataset, count: int, least: int = 50) -> list[int]:
    """The first ``count`` NTU indices whose crop (drawn as :func:`_batch` draws it) has ``least`` foreground
    pixels (a random crop may miss the person)."""
    found = [i for i in range(ds.num_db, len(ds))
             if int(ds.item(i, np.random.default_rng([7, i]))["depth_mask"].sum()) >= least]
    assert len(found) >= count
    return found[:count]


# ================================================================================================= recipe, model
def test_recipe_switch_and_model_entries(synth):
    r = synth["recipe"]
    assert (r.hcmoco.model, r.hcmoco.depth_encoder) == ("hcmoco_pn_tiny", "pointnet")
    assert synth["dataset"].point_cloud and not synth["plain"].point_cloud
    assert is_point_cloud_model("hcmoco_hrnet_w18_pn") and not is_point_cloud_model("hcmoco_hrnet_w18")
    with pytest.raises(ConfigError, match="hcmoco.depth_encoder"):
        _recipe(synth["root"], synth["root"], "hcmoco.depth_encoder=hrnet")
    with pytest.raises(ConfigError, match="hcmoco.depth_encoder"):
        _recipe(synth["root"], synth["root"], "hcmoco.model=hcmoco_tiny", "hcmoco.model_args={}")
    with torch.device("meta"):
        full = create_model("hcmoco_hrnet_w18_pn", skeleton="mpii16")
    assert isinstance(full, HCMoCoPN) and full.num_points == 4096 and full.encoder1.channels == (18, 36, 72, 144)
    assert [sa.npoint for sa in full.encoder2.sa] == [4096, 1024, 256, 64] and full.encoder2.out_channels == 128
    assert full.encoder2.sa[0].radii == (0.025, 0.125) and full.encoder2.sa[3].radii == (0.5, 1.0)
    assert tuple(full.head2[0].weight.shape) == (128, 128) and tuple(full.head1[0].weight.shape) == (128, 270)
    conv, bn = full.encoder2_linear[0], full.encoder2_linear[1]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (128, 128, (1,)) and bn.num_features == 128
    tiny = create_model("hcmoco_pn_tiny", skeleton="mpii16", dense_heads=False)
    assert not hasattr(tiny, "encoder2_linear") and tiny.num_points == 256
    assert not any(k.startswith("encoder2.") and "linear" in k for k in tiny.state_dict())


# ============================================================================================= the point fields
def test_point_fields_follow_the_crop_and_the_a34_formula(synth):
    ds, plain = synth["dataset"], synth["plain"]
    i = ds.num_db + 3
    item, ref = ds.item(i, np.random.default_rng(5)), plain.item(i, np.random.default_rng(5))
    assert set(item) - set(ref) == {"grid_rc", "frame_hw", "depth_mean"}
    for k, v in ref.items():  # the 9 fields are unchanged by the variant (same draws)
        assert torch.equal(torch.as_tensor(item[k]), torch.as_tensor(v)), k
    frame = ds.ntu.frame(i - ds.num_db)
    depth_mm = frame["depth"]
    H0, W0 = depth_mm.shape
    assert item["frame_hw"].tolist() == [H0, W0] and item["grid_rc"].shape == (2, S, S)
    grid = item["grid_rc"].numpy().astype(int)
    mask = item["depth_mask"].numpy()
    assert mask.sum() > 20
    rows, cols = grid[0][mask], grid[1][mask]
    z_frame = depth_mm[rows, cols] / 1000.0  # the measured depth of each foreground pixel's source pixel
    assert (z_frame > 0).all()
    centred = item["rgbd"][3].numpy()[mask]
    np.testing.assert_allclose(centred + float(item["depth_mean"]), z_frame, atol=1e-5)
    assert math.isclose(float(item["depth_mean"]), float(z_frame.mean()), rel_tol=1e-5)
    # A.3.4 by hand for every foreground pixel: X = (row - H0/2) z 0.0035, Y = (W0/2 - col) z 0.0035, Z = z - mean
    b = default_collate([item])
    cloud = hcmoco_point_cloud(b["rgbd"][:, 3], b["grid_rc"], b["frame_hw"], b["depth_mean"], b["depth_mask"], 10)
    px = cloud.pixels[0].numpy().reshape(S, S, 3)[mask]
    hand = np.stack([(rows - H0 / 2) * z_frame * 0.0035, (W0 / 2 - cols) * z_frame * 0.0035,
                     z_frame - float(item["depth_mean"])], -1)
    np.testing.assert_allclose(px, hand, atol=1e-5)
    # the grid is the source pixel of the nearest resize: the pixel nearest to top + (i + 0.5) side / S - 0.5
    # (cv2's fixed point: within 1/1024 px); outside the frame floor(top + (i + 0.5) side / S)
    top, left, side = ntu_crop_params(np.random.default_rng(5), W0, H0, frame["d_loc"])
    centre_r = top + (np.arange(S) + 0.5) * side / S
    centre_c = left + (np.arange(S) + 0.5) * side / S
    assert (grid[0] == grid[0][:, :1]).all() and (grid[1] == grid[1][:1]).all()  # rows / cols of a regular grid
    assert top < 0 or left < 0 or top + side > H0 or left + side > W0  # this crop leaves the frame: both cases
    for g, centre, n in ((grid[0][:, 0], centre_r, H0), (grid[1][0], centre_c, W0)):
        inside = (centre >= 0) & (centre < n)
        assert inside.any()
        assert np.abs(g[inside] - (centre[inside] - 0.5)).max() <= 0.5 + 1 / 512
        assert (g[~inside] == np.floor(centre[~inside])).all()
    # keypoint-only items: no depth, all-zero fields
    mpii = ds.item(0, np.random.default_rng(0))
    assert mpii["true_depth"] == 0 and not mpii["grid_rc"].any() and float(mpii["depth_mean"]) == 0.0


def test_sampling_is_foreground_only_with_replacement(synth):
    ds = synth["dataset"]
    b = _batch(ds, [0, *_ntu_with_foreground(ds, 2)])  # MPII (no depth), two NTU crops
    g = torch.Generator().manual_seed(0)
    cloud = hcmoco_point_cloud(b["rgbd"][:, 3], b["grid_rc"], b["frame_hw"], b["depth_mean"], b["depth_mask"], 400,
                               generator=g)
    assert cloud.points.shape == (3, 400, 3) and cloud.pixels.shape == (3, S * S, 3)
    assert cloud.valid.tolist() == [False, True, True]
    assert not cloud.points[0].any() and not cloud.index[0].any()
    for k in (1, 2):
        fg = b["depth_mask"][k].reshape(-1)
        assert bool(fg[cloud.index[k]].all())  # foreground only
        assert torch.equal(cloud.points[k], cloud.pixels[k][cloud.index[k]])
        assert len(set(cloud.index[k].tolist())) < 400 or int(fg.sum()) >= 400
    # uniform with replacement over a 3-pixel mask: 3000 draws, each pixel ~1000 (binomial sd ~26)
    mask = torch.zeros(1, S, S, dtype=torch.bool)
    mask[0, 5, 7] = mask[0, 20, 30] = mask[0, 63, 0] = True
    few = hcmoco_point_cloud(b["rgbd"][1:2, 3], b["grid_rc"][1:2], b["frame_hw"][1:2], b["depth_mean"][1:2], mask,
                             3000, generator=torch.Generator().manual_seed(1))
    counts = torch.bincount(few.index[0], minlength=S * S)
    assert set(few.index[0].tolist()) == {5 * S + 7, 20 * S + 30, 63 * S} and all(
        850 < int(counts[p]) < 1150 for p in (5 * S + 7, 20 * S + 30, 63 * S))
    with pytest.raises(DataError, match="grid_rc"):
        hcmoco_point_cloud(b["rgbd"][:, 3], b["grid_rc"][:, :1], b["frame_hw"], b["depth_mean"], b["depth_mask"], 4)


# ============================================================================================ the dense depth map
def test_dense_depth_map_is_the_3nn_interpolation_of_the_point_features(synth):
    ds = synth["dataset"]
    torch.manual_seed(0)
    model = create_model("hcmoco_pn_tiny", skeleton="mpii16", num_points=128).eval()
    b = _batch(ds, [0, *_ntu_with_foreground(ds, 1)])
    with torch.no_grad():
        out = model(b["rgbd"][:, :3], b["rgbd"][:, 3:], b["norm_joints"], grid_rc=b["grid_rc"],
                    frame_hw=b["frame_hw"], depth_mean=b["depth_mean"], depth_mask=b["depth_mask"],
                    generator=torch.Generator().manual_seed(3))
        feats = model.encoder2_linear(model.encoder2(out["points"])).double()  # (B, C, P)
    assert out["dense_depth"].shape == out["dense_rgb"].shape == (2, 32, S // 4, S // 4)
    cloud = hcmoco_point_cloud(b["rgbd"][:, 3], b["grid_rc"], b["frame_hw"], b["depth_mean"], b["depth_mask"], 128,
                               generator=torch.Generator().manual_seed(3))
    assert torch.equal(cloud.points, out["points"])
    checked = 0
    for k in range(2):
        pixels = cloud.pixels[k].double().reshape(S, S, 3)
        for i in range(S // 4):
            for j in range(S // 4):
                p = pixels[i * 4, j * 4]  # PyTorch's nearest resize keeps pixel floor(i * S / (S/4))
                d = (out["points"][k].double() - p).norm(dim=1)
                order = torch.sort(d).values
                if order[3] - order[2] < 1e-6 * (1 + order[2]) and not torch.isclose(order[2], order[3], atol=0):
                    continue  # a near-tie between the 3rd and 4th distinct neighbours: float32 may pick either
                nn3 = torch.topk(d, 3, largest=False)
                w = 1.0 / (nn3.values + 1e-8)
                ref = (feats[k][:, nn3.indices] * (w / w.sum())).sum(1)
                np.testing.assert_allclose(out["dense_depth"][k, :, i, j].double().numpy(), ref.numpy(), atol=2e-4,
                                           rtol=1e-4)
                checked += 1
    assert checked > 2 * (S // 4) ** 2 * 0.9


# ======================================================================================= missing depth, the losses
def test_missing_depth_is_masked_like_the_depth_hrnet(synth):
    ds = synth["dataset"]
    method = H.build_method(_recipe(synth["root"], synth["root"], "hcmoco.stage=2", "hcmoco.init=/nowhere"), len(ds),
                            init=False)
    torch.manual_seed(0)
    b = _batch(ds, [1, *_ntu_with_foreground(ds, 2)])  # an MPII person (true_depth 0) and two NTU crops
    out = method.encode(b)
    assert not out["points"][0].any() and out["points"][1].abs().sum() > 0
    f_depth, dense_depth = out["f_depth"], out["dense_depth"]
    f_depth.retain_grad()
    dense_depth.retain_grad()
    bank_before = method.bank.memory_2.clone()
    losses = hcmoco_loss(method.bank, out["f_rgb"], f_depth, out["f_kp"], b["index"], b["true_depth"], stage=2,
                         dense_rgb=out["dense_rgb"], dense_depth=dense_depth, joint_feats=out["kp"],
                         joints_rc=b["original_joints2d"], visible=b["joints_vis"], depth_mask=b["depth_mask"],
                         num_points=16, temperature=0.07)
    terms = ["sample_12", "sample_21", "sample_23", "sample_32", "dense_rd", "dense_dr", "joint_depth"]
    assert all(math.isfinite(float(losses[k].detach())) and float(losses[k].detach()) > 0 for k in terms)
    sum(losses[k] for k in terms).backward()
    # the depth terms never see the sample without depth (only L_scl's denominators do, as with the HRNet)
    assert float(f_depth.grad[0].abs().max()) == 0.0 and float(dense_depth.grad[0].abs().max()) == 0.0
    assert float(f_depth.grad[1:].abs().max()) > 0 and float(dense_depth.grad[1:].abs().max()) > 0
    # ... but its depth feature is still written to the bank (pitfall 4)
    assert not torch.equal(method.bank.memory_2[1], bank_before[1])
    with pytest.raises(DataError, match="grid_rc"):
        method.encode({k: v for k, v in b.items() if k != "grid_rc"})


def test_evaluation_is_repeatable_and_leaves_the_global_rng_alone(synth):
    ds = synth["dataset"]
    method = H.build_method(synth["recipe"], len(ds), init=False)
    idx = H.eval_indices(ds, 4)
    state = torch.get_rng_state()
    a = H.retrieval_metrics(method, ds, idx, batch_size=2)
    b = H.retrieval_metrics(method, ds, idx, batch_size=2)
    assert a == b and set(a) == {"top1_rgb_depth", "top1_rgb_kp", "top1_depth_kp", "chance"}
    assert torch.equal(torch.get_rng_state(), state) and method.training


# ================================================================================ training, stage 2, export
def test_tiny_stage1_then_stage2_through_the_losses_and_export(synth):
    root = synth["root"]
    s1, s2 = root / "s1", root / "s2"
    H.run_training(_recipe(root / "data", s1), quiet=True)
    logs = read_log(s1, "train")
    assert [r["step"] for r in logs] == [1, 2]
    for r in logs:
        terms = [r[f"sample_{p}"] for p in ("12", "21", "23", "32", "13", "31")]
        assert all(math.isfinite(v) and v > 0 for v in terms) and math.isclose(r["loss"], sum(terms), rel_tol=1e-5)
    recipe2 = _recipe(root / "data", s2, "hcmoco.stage=2", f"hcmoco.init={s1}")
    method = H.build_method(recipe2, len(synth["dataset"]), init=False)
    report = H.load_stage1(method, s1)
    assert report["new"] == sorted(k for k in method.model.state_dict() if k.startswith(("encoder1_linear.",
                                                                                          "encoder2_linear.")))
    H.run_training(recipe2, quiet=True)
    for r in read_log(s2, "train"):
        terms = ["sample", "dense_rd", "dense_dr", "joint_rgb", "joint_depth", "scl"]
        assert all(math.isfinite(r[k]) and r[k] > 0 for k in terms)
        assert math.isclose(r["loss"], sum(r[k] for k in terms), rel_tol=1e-5)
    paths = H.export_encoders(s2, root / "export")
    assert sorted(paths) == ["point", "rgb"] and paths["point"].name == "point_encoder.pth"
    flat = torch.load(paths["point"], map_location="cpu", weights_only=True)
    state = load_file(s2 / "last" / "model.safetensors")
    expected = {k[len("model.encoder2."):]: v for k, v in state.items() if k.startswith("model.encoder2.")}
    assert flat.keys() == expected.keys() and all(torch.equal(flat[k], expected[k]) for k in flat)
    assert "sa.0.mlps.0.0.weight" in flat and "fp.0.mlp.0.weight" in flat
    PointNet2MSG(**TINY_POINTNET).load_state_dict(flat, strict=True)
