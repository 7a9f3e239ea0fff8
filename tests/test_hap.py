"""HAP pre-training (pretraining.md Part B): MAE pieces against their formulas (sin-cos layout, patch order,
norm-pix loss, align loss, token bookkeeping), the released-checkpoint layout (B.8) written by hand from the brief
and converted to timm / ViTPose with outputs compared to an independent forward, the MAE 14x14 -> 16x8
interpolation (B.7), the person-crop reader's skip policy and CFS subset (B.2), the keypoint-aware augmentation,
and a tiny pre-training run through the engine that resumes exactly.

Tiny widths throughout; the ViT-B layout is checked on the meta device.
"""

from __future__ import annotations

import json
import math
import pickle
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer

from humanvision.data.readers.person_crops import (
    MISSING,
    keypoints_from_predictions,
    read_subset_list,
    scan_person_crops,
)
from humanvision.engine import param_groups, read_log, save_checkpoint
from humanvision.errors import ConfigError, DataError
from humanvision.methods.hap import (
    HAPPretrain,
    PersonCropDataset,
    PersonCropTransform,
    WarmupCosineSchedule,
    align_loss,
    build_method,
    export_encoder,
    is_hap_recipe,
    load_recipe,
    random_resized_crop,
    run_training,
)
from humanvision.models import create_model
from humanvision.models.mae import (
    PoseMAE,
    get_2d_sincos_pos_embed,
    hap_to_timm,
    hap_to_vitpose,
    interpolate_pos_embed,
    load_mae_checkpoint,
    patchify,
    unpatchify,
)

torch.set_num_threads(1)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = {"embed_dim": 32, "depth": 1, "num_heads": 2, "decoder_embed_dim": 16, "decoder_depth": 1,
        "decoder_num_heads": 2}


def tiny_mae(**kw) -> PoseMAE:
    torch.manual_seed(0)
    return create_model("pose_mae_vit_tiny_patch16", **{**TINY, **kw})


def equal_count_masks(b: int, length: int, num_masked: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(b, length, dtype=torch.bool)
    for i in range(b):
        mask[i, torch.randperm(length, generator=g)[:num_masked]] = True
    return mask


# ------------------------------------------------------------------------------------------ the brief's layout
def documented_shapes(d: int, depth: int, dd: int, ddepth: int, grid=(16, 8), p: int = 16) -> dict[str, tuple]:
    """The released checkpoint's ``model`` keys and shapes as listed in B.8 (+ B.3 for the decoder)."""
    n = grid[0] * grid[1]

    def block(prefix: str, w: int) -> dict[str, tuple]:
        return {f"{prefix}norm1.weight": (w,), f"{prefix}norm1.bias": (w,),
                f"{prefix}attn.qkv.weight": (3 * w, w), f"{prefix}attn.qkv.bias": (3 * w,),
                f"{prefix}attn.proj.weight": (w, w), f"{prefix}attn.proj.bias": (w,),
                f"{prefix}norm2.weight": (w,), f"{prefix}norm2.bias": (w,),
                f"{prefix}mlp.fc1.weight": (4 * w, w), f"{prefix}mlp.fc1.bias": (4 * w,),
                f"{prefix}mlp.fc2.weight": (w, 4 * w), f"{prefix}mlp.fc2.bias": (w,)}

    shapes = {"cls_token": (1, 1, d), "pos_embed": (1, 1 + n, d), "patch_embed.proj.weight": (d, 3, p, p),
              "patch_embed.proj.bias": (d,)}
    for i in range(depth):
        shapes.update(block(f"blocks.{i}.", d))
    shapes.update({"norm.weight": (d,), "norm.bias": (d,), "decoder_embed.weight": (dd, d),
                   "decoder_embed.bias": (dd,), "mask_token": (1, 1, dd), "decoder_pos_embed": (1, 1 + n, dd)})
    for j in range(ddepth):
        shapes.update(block(f"decoder_blocks.{j}.", dd))
    shapes.update({"decoder_norm.weight": (dd,), "decoder_norm.bias": (dd,),
                   "decoder_pred.weight": (p * p * 3, dd), "decoder_pred.bias": (p * p * 3,)})
    return shapes


def documented_state(d=32, depth=2, dd=16, ddepth=1, grid=(16, 8), seed=0) -> dict[str, torch.Tensor]:
    """Random tensors for the documented keys; norms near 1, everything else O(0.1) (outputs are not trivial)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in documented_shapes(d, depth, dd, ddepth, grid).items():
        t = torch.randn(shape, generator=g)
        out[k] = 1.0 + 0.1 * t if ("norm" in k and k.endswith("weight")) else 0.1 * t
    return out


def reference_vit(sd: dict[str, torch.Tensor], x: torch.Tensor, heads: int, pos: torch.Tensor, cls: bool = True,
                  padding: int = 0, prefix: str = "") -> torch.Tensor:
    """A ViT forward written out from the brief (pre-norm blocks, exact GELU, LayerNorm eps 1e-6)."""
    w = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    d = w["patch_embed.proj.weight"].shape[0]
    t = F.conv2d(x, w["patch_embed.proj.weight"], w["patch_embed.proj.bias"], stride=16, padding=padding)
    t = t.flatten(2).transpose(1, 2)
    b = t.shape[0]
    if cls:
        t = torch.cat([w["cls_token"].expand(b, -1, -1), t], dim=1)
    t = t + pos
    depth = len({k.split(".")[1] for k in w if k.startswith("blocks.")})

    def ln(z, name):
        return F.layer_norm(z, (d,), w[name + ".weight"], w[name + ".bias"], 1e-6)

    for i in range(depth):
        p = f"blocks.{i}."
        h = ln(t, p + "norm1")
        qkv = (h @ w[p + "attn.qkv.weight"].T + w[p + "attn.qkv.bias"]).reshape(b, -1, 3, heads, d // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // heads), dim=-1)
        o = (att @ v).transpose(1, 2).reshape(b, -1, d)
        t = t + o @ w[p + "attn.proj.weight"].T + w[p + "attn.proj.bias"]
        h = ln(t, p + "norm2")
        h = F.gelu(h @ w[p + "mlp.fc1.weight"].T + w[p + "mlp.fc1.bias"])
        t = t + h @ w[p + "mlp.fc2.weight"].T + w[p + "mlp.fc2.bias"]
    return ln(t, "norm")


def grid_resample(pos: torch.Tensor, old: tuple[int, int], new: tuple[int, int], prefix: int = 1) -> torch.Tensor:
    """B.7 written out: reshape the patch slots to the grid, F.interpolate bicubic, flatten back."""
    d = pos.shape[-1]
    g = pos[:, prefix:].reshape(1, old[0], old[1], d).permute(0, 3, 1, 2)
    g = F.interpolate(g, size=new, mode="bicubic", align_corners=False)
    return torch.cat([pos[:, :prefix], g.permute(0, 2, 3, 1).reshape(1, new[0] * new[1], d)], dim=1)


def test_base_model_matches_the_released_layout():
    """pose_mae_vit_base_patch16's state dict = the B.8 key list with its shapes, nothing more or less."""
    with torch.device("meta"):
        model = create_model("pose_mae_vit_base_patch16")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == documented_shapes(768, 12, 512, 8)
    assert model.blocks[0].norm1.eps == 1e-6 and model.decoder_blocks[0].attn.num_heads == 16
    assert not model.pos_embed.requires_grad and not model.decoder_pos_embed.requires_grad
    assert model.grid_size == (16, 8)
    # the documented base-size dict converts to exactly a timm ViT-B's keys at 256x128 and 384x128 (meta tensors)
    documented = {k: torch.empty(s, device="meta") for k, s in documented_shapes(768, 12, 512, 8).items()}
    for size, grid in (((256, 128), (16, 8)), ((384, 128), (24, 8))):
        with torch.device("meta"):
            vit = VisionTransformer(img_size=size, patch_size=16, embed_dim=768, depth=12, num_heads=12,
                                    num_classes=0)
        conv = hap_to_timm({"epoch": 399, "model": documented}, grid)
        assert {k: tuple(v.shape) for k, v in conv.items()} == {k: tuple(v.shape) for k, v in vit.state_dict().items()}


# ---------------------------------------------------------------------------------------------- MAE pieces
def test_sincos_layout_equals_the_formula():
    d, rows, cols = 16, 4, 3
    table = get_2d_sincos_pos_embed(d, (rows, cols))
    assert table.shape == (1 + rows * cols, d) and np.all(table[0] == 0)
    q = d // 4
    for y in range(rows):
        for x in range(cols):
            row = table[1 + y * cols + x]
            for k in range(q):
                w = 1.0 / 10000 ** (k / q)
                expect = [math.sin(x * w), math.cos(x * w), math.sin(y * w), math.cos(y * w)]
                assert row[[k, q + k, 2 * q + k, 3 * q + k]] == pytest.approx(expect, abs=1e-12)
    model = tiny_mae()
    assert torch.allclose(model.pos_embed[0], torch.from_numpy(get_2d_sincos_pos_embed(32, (16, 8))).float())
    assert torch.allclose(model.decoder_pos_embed[0],
                          torch.from_numpy(get_2d_sincos_pos_embed(16, (16, 8))).float())


def test_patchify_order_and_round_trip():
    imgs = torch.randn(2, 3, 8, 12)
    p = 4
    x = patchify(imgs, p)
    assert x.shape == (2, 6, 48)
    for b in range(2):
        for r in range(2):
            for col in range(3):
                for i in range(p):
                    for j in range(p):
                        for c in range(3):
                            assert x[b, r * 3 + col, (i * p + j) * 3 + c] == imgs[b, c, r * p + i, col * p + j]
    assert torch.equal(unpatchify(x, p, (2, 3)), imgs)


@pytest.mark.parametrize("norm_pix", [True, False])
def test_reconstruction_loss_equals_direct_computation(norm_pix):
    model = tiny_mae(norm_pix_loss=norm_pix)
    g = torch.Generator().manual_seed(1)
    imgs = torch.randn(2, 3, 256, 128, generator=g)
    pred = torch.randn(2, 128, 768, generator=g)
    mask = equal_count_masks(2, 128, 64)
    total, count = 0.0, 0
    for b in range(2):
        for t in range(128):
            if not mask[b, t]:
                continue
            r, c = divmod(t, 8)
            patch = imgs[b, :, r * 16:(r + 1) * 16, c * 16:(c + 1) * 16].permute(1, 2, 0).reshape(-1).double()
            if norm_pix:
                mean = patch.mean()
                var = ((patch - mean) ** 2).sum() / (patch.numel() - 1)  # unbiased
                patch = (patch - mean) / torch.sqrt(var + 1e-6)
            total += ((pred[b, t].double() - patch) ** 2).mean().item()
            count += 1
    assert model.forward_loss(imgs, pred, mask).item() == pytest.approx(total / count, rel=1e-5)


def test_align_loss_equals_brute_force():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(5, 8, generator=g, requires_grad=True), torch.randn(5, 8, generator=g, requires_grad=True)
    t = 0.2
    total = 0.0
    for i in range(5):
        qi = q[i] / q[i].norm()
        logits = [float((qi @ (k[j] / k[j].norm())).detach()) / t for j in range(5)]
        total += -(logits[i] - math.log(sum(math.exp(v) for v in logits)))
    loss = align_loss(q, k, t)
    assert loss.item() == pytest.approx(total / 5 * 2 * t, rel=1e-5)
    loss.backward()
    assert q.grad is not None and q.grad.abs().sum() > 0 and k.grad is None  # keys are stop-grad


def test_encoder_keeps_unmasked_tokens_in_order_and_decoder_restores_it():
    """With no blocks, each output token is a function of its own input token: the encoder's outputs are the
    kept tokens in ascending order, and the decoder puts every kept token and mask token back in its slot."""
    model = tiny_mae(depth=0, decoder_depth=0).eval()
    g = torch.Generator().manual_seed(3)
    imgs = torch.randn(3, 3, 256, 128, generator=g)
    mask = equal_count_masks(3, 128, 80, seed=4)
    with torch.no_grad():
        latent, ids_restore = model.forward_encoder(imgs, mask)
        pred = model.forward_decoder(latent, ids_restore)
        tokens = model.patch_embed(imgs) + model.pos_embed[:, 1:]
        for b in range(3):
            kept = torch.nonzero(~mask[b]).flatten()
            expect = model.norm(torch.cat([model.cls_token[0] + model.pos_embed[0, :1], tokens[b, kept]]))
            assert latent.shape == (3, 1 + 48, 32)
            assert torch.allclose(latent[b], expect, atol=1e-6)
            rank = {int(t): j for j, t in enumerate(kept)}
            for t in range(128):
                x = model.decoder_embed(latent[b, 1 + rank[t]]) if t in rank else model.mask_token[0, 0]
                x = model.decoder_pred(model.decoder_norm(x + model.decoder_pos_embed[0, 1 + t]))
                assert torch.allclose(pred[b, t], x, atol=1e-5)
    with pytest.raises(ValueError, match="same number"):
        model.forward_encoder(imgs, torch.cat([mask[:2], torch.zeros(1, 128, dtype=torch.bool)]))


def test_method_equals_two_separate_views():
    """One batched pass over both views = HAP's two encoder passes: averaged reconstruction, symmetric align."""
    mae = tiny_mae(depth=2)
    method = HAPPretrain(mae, align_weight=0.05, align_temperature=0.2)
    g = torch.Generator().manual_seed(5)
    imgs = torch.randn(4, 3, 256, 128, generator=g)
    masks = torch.stack([equal_count_masks(4, 128, 64, seed=6), equal_count_masks(4, 128, 64, seed=7)], dim=1)
    out = method({"image": imgs, "masks": masks})
    l1, _, lat1 = mae(imgs, masks[:, 0])
    l2, _, lat2 = mae(imgs, masks[:, 1])
    align = align_loss(lat1[:, 0], lat2[:, 0]) + align_loss(lat2[:, 0], lat1[:, 0])
    assert out["loss_rec"].item() == pytest.approx(0.5 * (l1 + l2).item(), rel=1e-5)
    assert out["loss_align"].item() == pytest.approx(align.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(out["loss_rec"].item() + 0.05 * align.item(), rel=1e-5)
    one = method({"image": imgs, "masks": masks[:, :1]})
    assert one["loss_align"].item() == 0.0 and one["loss"].item() == pytest.approx(l1.item(), rel=1e-5)


def test_optimiser_groups_follow_b6():
    method = HAPPretrain(tiny_mae())
    groups = {g["name"]: g for g in param_groups(method, 0.05)}
    decay = set(groups["layer_0_decay"]["param_names"])
    no_decay = set(groups["layer_0_no_decay"]["param_names"])
    assert {"mae.cls_token", "mae.mask_token", "mae.patch_embed.proj.weight", "mae.decoder_pred.weight"} <= decay
    assert {"mae.norm.weight", "mae.blocks.0.attn.qkv.bias", "mae.patch_embed.proj.bias"} <= no_decay
    assert all(not n.endswith("pos_embed") for n in decay | no_decay)
    assert groups["layer_0_decay"]["weight_decay"] == 0.05 and groups["layer_0_no_decay"]["weight_decay"] == 0.0


def test_warmup_cosine_schedule():
    s = WarmupCosineSchedule(lr=1.0, total_iters=100, iters_per_epoch=10, schedule="cosine", warmup_iters=20)
    assert s.factor(0) == 0.0 and s.factor(10) == pytest.approx(0.5) and s.factor(20) == pytest.approx(1.0)
    assert s.factor(60) == pytest.approx(0.5) and s.factor(100) == pytest.approx(0.0, abs=1e-12)
    assert s.factor(30, progress=0.6) == pytest.approx(0.5)  # a time budget moves the curve, not the warm-up


def test_mae_learns_a_fixed_batch():
    """Smooth images: masked patches are predictable from their neighbours; both losses go down."""
    method = HAPPretrain(tiny_mae(depth=2))
    low = torch.randn(4, 3, 4, 2, generator=torch.Generator().manual_seed(8))
    imgs = F.interpolate(low, size=(256, 128), mode="bilinear", align_corners=False)
    masks = torch.stack([equal_count_masks(4, 128, 64, 9), equal_count_masks(4, 128, 64, 10)], 1)
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=3e-3, betas=(0.9, 0.95))
    rec, align = [], []
    for _ in range(15):
        out = method({"image": imgs, "masks": masks})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        rec.append(out["loss_rec"].item())
        align.append(out["loss_align"].item())
    assert rec[-1] < 0.85 * rec[0] and align[-1] < 0.5 * align[0]


# ---------------------------------------------------------------------------------------------- conversions
@pytest.mark.parametrize("wrap", ["released", "mae_prefix", "bare"])
def test_hap_checkpoint_to_timm_vit(wrap):
    sd = documented_state(d=32, depth=2, dd=16, ddepth=1)
    if wrap == "released":
        src = {"epoch": 399, "arch": "pose_mae_vit_base_patch16", "model": sd, "optimizer": {}, "scaler": {}}
    elif wrap == "mae_prefix":
        src = {"model": {"mae." + k: v for k, v in sd.items()}}
    else:
        src = dict(sd)
    x = torch.randn(2, 3, 384, 128, generator=torch.Generator().manual_seed(11))
    for size, grid in (((256, 128), (16, 8)), ((384, 128), (24, 8))):
        conv = hap_to_timm(src, grid)
        assert not any(k.startswith(("decoder", "mask_token")) for k in conv)
        vit = VisionTransformer(img_size=size, patch_size=16, embed_dim=32, depth=2, num_heads=2, num_classes=0)
        vit.load_state_dict(conv, strict=True)
        pos = grid_resample(sd["pos_embed"], (16, 8), grid)
        inp = x[:, :, :size[0]]
        with torch.no_grad():
            ours = vit.forward_features(inp)
        assert torch.allclose(ours, reference_vit(sd, inp, heads=2, pos=pos), atol=1e-5)


def test_hap_checkpoint_to_vitpose(tmp_path):
    sd = documented_state(d=32, depth=2, dd=16, ddepth=1)
    model = create_model("vitpose_tiny", embed_dim=32, depth=2, num_heads=2, input_size=(192, 256)).eval()
    conv = hap_to_vitpose({"model": sd}, (16, 12))
    result = model.load_state_dict(conv, strict=False)
    assert not result.unexpected_keys and all(k.startswith("head.") for k in result.missing_keys)
    pos = grid_resample(sd["pos_embed"], (16, 8), (16, 12))
    folded = pos[:, 1:] + pos[:, :1]  # ViTPose adds the cls slot to every patch token
    assert torch.allclose(model.backbone.pos_embed, folded)
    assert torch.equal(model.backbone.norm.weight, sd["norm.weight"])
    x = torch.randn(1, 3, 256, 192, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        feats = model.forward_features(x)
    ref = reference_vit(sd, x, heads=2, pos=folded, cls=False, padding=2)
    assert torch.allclose(feats, ref.transpose(1, 2).reshape(1, 32, 16, 12), atol=1e-5)
    assert "backbone.norm.weight" not in hap_to_vitpose({"model": sd}, (16, 12), include_norm=False)


def test_mae_imagenet_checkpoint_interpolation_and_load(tmp_path):
    pos = torch.randn(1, 197, 32, generator=torch.Generator().manual_seed(13))
    expect = grid_resample(pos, (14, 14), (16, 8))
    assert torch.allclose(interpolate_pos_embed(pos, (16, 8), (14, 14)), expect, atol=1e-6)
    assert torch.allclose(interpolate_pos_embed(pos, (16, 8)), expect, atol=1e-6)  # square grid inferred
    encoder = {k: v for k, v in documented_state(d=32, depth=1, dd=16, ddepth=1).items()
               if not k.startswith(("decoder", "mask_token"))}
    encoder["pos_embed"] = pos
    path = tmp_path / "mae_pretrain_vit_tiny.pth"
    torch.save({"model": encoder}, path)
    model = tiny_mae()
    dec_before = model.decoder_pred.weight.clone()
    report = load_mae_checkpoint(model, path)
    assert torch.allclose(model.pos_embed, expect, atol=1e-6) and report.resized == ["pos_embed"]
    assert torch.equal(model.blocks[0].mlp.fc1.weight, encoder["blocks.0.mlp.fc1.weight"])
    assert torch.equal(model.decoder_pred.weight, dec_before)
    assert all(k.startswith(("decoder_", "mask_token")) for k in report.missing) and "mask_token" in report.missing
    torch.save({"model": {**encoder, "head.weight": torch.zeros(3, 32)}}, path)
    with pytest.raises(DataError, match="head.weight"):
        load_mae_checkpoint(model, path)
    torch.save({"model": {k: v for k, v in encoder.items() if k != "norm.weight"}}, path)
    with pytest.raises(DataError, match="norm.weight"):
        load_mae_checkpoint(model, path)


# ------------------------------------------------------------------------------------------- person crops
def kp_rows(h: int, w: int, seed: int) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(0, w - 1, 17), rng.uniform(0, h - 1, 17), rng.uniform(0.2, 1, 17)], 1).tolist()


def write_crops(root: Path, names: list[str], seed: int = 0, size=(64, 128)) -> None:
    rng = np.random.default_rng(seed)
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        img = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        _, buf = cv2.imencode(Path(n).suffix, img)
        buf.tofile(str(root / n))


@pytest.fixture()
def crop_folder(tmp_path):
    root = tmp_path / "crops"
    names = ["a/1.jpg", "a/2.png", "b/3.jpg", "4.jpg", "5.jpg", "6.jpg", "7.png"]
    write_crops(root, names)
    (root / "5.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    table = {"a/1.jpg": kp_rows(128, 64, 1), "a/2.png": kp_rows(128, 64, 2)[:16], "4.jpg": kp_rows(128, 64, 4),
             "5.jpg": kp_rows(128, 64, 5), "6.jpg": None, "7.png": kp_rows(128, 64, 7), "gone.jpg": kp_rows(9, 9, 0)}
    (root / "keypoints.json").write_text(json.dumps(table))
    return root


def test_scan_skips_and_names_bad_keypoints(crop_folder):
    crops = scan_person_crops(crop_folder, "keypoints.json")
    assert crops.names == ["4.jpg", "5.jpg", "7.png", "a/1.jpg"] and crops.paths[3] == crop_folder / "a/1.jpg"
    assert crops.skipped == {"no_keypoints": ["6.jpg", "b/3.jpg"], "bad_keypoints": ["a/2.png"]}
    assert crops.keypoints.shape == (4, 17, 3) and crops.keypoints.dtype == np.float32
    assert np.allclose(crops.keypoints[3], kp_rows(128, 64, 1))
    assert "skipped 3" in crops.summary() and "a/2.png" in crops.summary()
    other = crop_folder.parent / "other.json"
    other.write_text(json.dumps({"elsewhere/1.jpg": kp_rows(9, 9, 0)}))
    with pytest.raises(DataError, match="relative to the image root"):
        scan_person_crops(crop_folder, other)
    other.write_text("{}")
    with pytest.raises(DataError, match="no usable person crop"):
        scan_person_crops(crop_folder, other)


def test_hap_pose_files_layout(crop_folder, tmp_path):
    pose_dir = tmp_path / "pose"
    pose_dir.mkdir()

    def save(stem, kp):
        arr = np.empty(1, dtype=object)
        arr[0] = [{"keypoints": np.asarray(kp, np.float32), "bbox": np.zeros(5, np.float32)}]
        np.save(pose_dir / f"{stem}.npy", arr, allow_pickle=True)

    save("1", kp_rows(128, 64, 1))
    save("2", np.zeros((17, 2)))  # wrong shape
    save("4", kp_rows(128, 64, 4))
    save("5", kp_rows(128, 64, 5))
    (pose_dir / "7.npy").write_bytes(b"garbage")  # unreadable
    crops = scan_person_crops(crop_folder, pose_dir)
    assert crops.names == ["4.jpg", "5.jpg", "a/1.jpg"]
    assert crops.skipped == {"no_keypoints": ["6.jpg", "b/3.jpg"], "bad_keypoints": ["7.png", "a/2.png"]}
    assert np.allclose(crops.keypoints[2], kp_rows(128, 64, 1), atol=1e-4)


def test_cfs_list_is_an_ordered_prefix(crop_folder, tmp_path):
    order = ["7.png", "a/1.jpg", "missing.jpg", "5.jpg", "4.jpg", "6.jpg", "a/2.png", "b/3.jpg"]
    path = tmp_path / "cfs_list.pkl"
    path.write_bytes(pickle.dumps(order))
    assert read_subset_list(path, 0.5) == order[:4]
    crops = scan_person_crops(crop_folder, "keypoints.json", subset_list=path, ratio=0.5)
    assert crops.names == ["7.png", "a/1.jpg", "5.jpg"]  # list order kept, not sorted
    assert crops.skipped == {"missing_image": ["missing.jpg"]}
    rand = read_subset_list(path, 0.5, mode="random", seed=3)
    assert len(rand) == 4 and rand == [n for n in order if n in rand]
    assert rand == read_subset_list(path, 0.5, mode="random", seed=3)
    path.write_bytes(pickle.dumps({"not": "a list"}))
    with pytest.raises(DataError, match="list of relative file names"):
        read_subset_list(path)


def test_keypoints_from_infer_predictions(crop_folder, tmp_path):
    def rec(seed, score):
        return {"image_id": 0, "category_id": 1, "keypoints": np.ravel(kp_rows(128, 64, seed)).tolist(),
                "score": score}

    preds = {"1.jpg": [rec(1, 0.4), rec(11, 0.9), rec(12, 0.9)], "3.jpg": [], "clip.mp4#0": [rec(2, 1.0)]}
    src = tmp_path / "predictions.json"
    src.write_text(json.dumps(preds))
    out = tmp_path / "kp.json"
    counts = keypoints_from_predictions(src, out, image_root=crop_folder)
    assert counts == {"images": 2, "with_person": 1, "no_person": 1, "video_frames": 1}
    table = json.loads(out.read_text())
    assert table == {"a/1.jpg": kp_rows(128, 64, 11), "b/3.jpg": None}  # highest score, the first of a tie
    crops = scan_person_crops(crop_folder, out)
    assert crops.names == ["a/1.jpg"]
    preds["1.jpg"] = [{"keypoints": [1.0] * 48, "score": 1.0}]
    src.write_text(json.dumps(preds))
    with pytest.raises(DataError, match="17 x 3"):
        keypoints_from_predictions(src, out)


def test_transform_moves_keypoints_with_the_pixels():
    h, w = 200, 90
    image = np.zeros((h, w, 3), np.uint8)
    kp = np.full((17, 3), MISSING, np.float32)
    kp[:4] = [[20, 30, 0.9], [70, 150, 0.5], [45, 100, 0.7], [88, 198, 0.3]]
    kp[4] = [-5, 40, 0.9]  # outside the image before the transform
    for x, y, _ in kp[:3]:
        image[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2] = 255
    for seed in range(6):
        rng = np.random.default_rng(seed)
        t = PersonCropTransform((256, 128), hflip=0.5)
        img, out = t(image, kp, rng)
        assert img.shape == (3, 256, 128) and out.dtype == np.float32
        assert np.all(out[4:] == MISSING)
        pixels = (img.numpy()[0] * 0.229 + 0.485) > 0.5
        for x, y, s in out[:3]:
            if x == MISSING:
                continue
            assert 0 <= x < 128 and 0 <= y < 256 and s in kp[:3, 2]
            yi, xi = round(float(y)), round(float(x))
            assert pixels[max(yi - 2, 0):yi + 3, max(xi - 2, 0):xi + 3].any()  # the marker moved with it
    rng = np.random.default_rng(0)
    for _ in range(50):
        top, left, ch, cw = random_resized_crop(h, w, rng, (0.8, 1.0), (0.375, 0.6667))
        assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w
    flip = PersonCropTransform((200, 90), scale=(1.0, 1.0), ratio=(0.45, 0.45), hflip=1.0)
    _, out = flip(image, kp, np.random.default_rng(0))
    assert np.allclose(out[:3, 0], 90 - 1 - kp[:3, 0]) and np.allclose(out[:3, 1], kp[:3, 1])


def test_dataset_masks_and_corrupt_image_policy(crop_folder, tmp_path):
    crops = scan_person_crops(crop_folder, "keypoints.json")
    log = tmp_path / "bad.tsv"
    ds = PersonCropDataset(crops, PersonCropTransform(), masking="pose", num_views=2, max_bad_fraction=0.5,
                           bad_log=log)
    np.random.seed(0)
    item = ds[0]
    assert item["image"].shape == (3, 256, 128) and item["masks"].shape == (2, 128)
    assert item["masks"].dtype == torch.bool and item["masks"].sum(1).tolist() == [64, 64]
    np.random.seed(0)
    assert torch.equal(ds[0]["masks"], item["masks"])  # the masks are a function of the sample's seed
    rnd = PersonCropDataset(crops, PersonCropTransform(), masking="random", num_views=1)
    assert rnd[0]["masks"].shape == (1, 128) and rnd[0]["masks"].sum() == 64
    bad = crops.names.index("5.jpg")
    with pytest.warns(UserWarning, match="5.jpg"):
        item = ds[bad]
    assert item["index"] != bad and ds.bad_images.keys() == {"5.jpg"}
    assert log.read_text().startswith("5.jpg\t")
    strict = PersonCropDataset(crops, PersonCropTransform(), max_bad_fraction=0.0)
    with warnings.catch_warnings(), pytest.raises(DataError, match="max_bad_fraction"):
        warnings.simplefilter("ignore")
        strict[bad]


# ------------------------------------------------------------------------------------------------ recipes
def tiny_recipe(root: Path, out: Path, **train) -> dict:
    return {"name": "hap_test",
            "pretrain": {"model": "pose_mae_vit_tiny_patch16", "model_args": dict(TINY), "masking": "pose",
                         "snapshot_every": 2, "snapshot_samples": 2},
            "data": {"source": "folder", "root": str(root), "keypoints": str(root / "keypoints.json"),
                     "max_bad_fraction": 0.5},
            "train": {"epochs": 2, "batch_size": 2, "lr": 1e-3, "betas": [0.9, 0.95], "warmup_epochs": 1,
                      "precision": "fp32", "channels_last": False, "progress": False, "tensorboard": False,
                      "log_every": 1, "output_dir": str(out), **train}}


def test_tiny_pretraining_resumes_exactly(crop_folder, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the corrupt 5.jpg is replaced (tested above)
        full = run_training(load_recipe(tiny_recipe(crop_folder, tmp_path / "full")), quiet=True)
        part = run_training(load_recipe(tiny_recipe(crop_folder, tmp_path / "part", max_steps=2)), quiet=True)
        assert part["step"] == 2
        resumed = run_training(load_recipe(tiny_recipe(crop_folder, tmp_path / "part")), resume=True, quiet=True)
    assert full["step"] == resumed["step"] == 4 and full["skipped"] == {"no_keypoints": 2, "bad_keypoints": 1}
    a = load_file(tmp_path / "full/last/model.safetensors")
    b = load_file(tmp_path / "part/last/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = read_log(tmp_path / "full", "train")
    assert len(log) == 4 and all(math.isfinite(r["loss"]) and math.isfinite(r["loss_align"]) for r in log)
    assert all(r["masked_fraction"] == 0.5 for r in log)
    assert (tmp_path / "full/snapshots/step_0000002.png").is_file()
    assert (tmp_path / "full/snapshots/step_0000004.png").is_file()
    assert json.loads((tmp_path / "full/skipped.json").read_text())["bad_keypoints"] == ["a/2.png"]
    # the run's checkpoint exports to a timm ViT (mae.* keys stripped), here resampled to 384x128
    enc = export_encoder(tmp_path / "full", tmp_path / "enc.safetensors", grid=(24, 8))
    state = load_file(enc)
    vit = VisionTransformer(img_size=(384, 128), patch_size=16, embed_dim=32, depth=1, num_heads=2, num_classes=0)
    vit.load_state_dict(state, strict=True)
    assert torch.allclose(state["pos_embed"], grid_resample(a["mae.pos_embed"], (16, 8), (24, 8)), atol=1e-6)


def test_export_refuses_a_non_vit(tmp_path):
    save_checkpoint(tmp_path / "run/last", {"mae.pos_embed": torch.zeros(1, 129, 8), "mae.foo": torch.zeros(2)})
    with pytest.raises(DataError, match="not a ViT encoder"):
        export_encoder(tmp_path / "run", tmp_path / "x.safetensors")


HAP_CONFIGS = ["hap_vit_base_luperson.yaml", "hap_vit_tiny_synthetic.yaml", "mae_vit_tiny_synthetic.yaml"]


@pytest.mark.parametrize("name", HAP_CONFIGS)
def test_recipes_load_and_build(name):
    path = CONFIGS / name
    assert is_hap_recipe(path)
    recipe = load_recipe(path, unchecked=("data.", "pretrain.init"))
    with torch.device("meta"):
        method = build_method(recipe, pretrained=False)
    assert isinstance(method.mae, PoseMAE) and method.mae.grid_size == (16, 8)
    t, p = recipe.train, recipe.pretrain
    assert (t.optimizer, t.betas, t.weight_decay, t.schedule, p.lr_schedule) == ("adamw", (0.9, 0.95), 0.05,
                                                                                 "cosine", "mae")
    assert p.mask_ratio == 0.5 and p.norm_pix_loss
    if name.startswith("hap_vit_base"):
        assert (p.model, p.masking, p.two_views, p.align_weight, p.align_temperature) == (
            "pose_mae_vit_base_patch16", "pose", True, 0.05, 0.2)
        assert (p.blr, p.init_grid, t.epochs, t.warmup_epochs, t.batch_size, t.precision) == (
            1.5e-4, (14, 14), 400, 40.0, 256, "fp16")
        assert (recipe.data.subset_ratio, recipe.data.subset_mode, recipe.data.scale, recipe.data.ratio) == (
            0.5, "ordered", (0.8, 1.0), (0.375, 0.6667))
    if name.startswith("mae_"):
        assert p.masking == "random" and not p.two_views


def test_recipe_validation(tmp_path):
    with pytest.raises(ConfigError, match="pretrain.model"):
        load_recipe({"pretrain": {"model": "vitpose_base"}, "data": {"source": "synthetic"}})
    with pytest.raises(ConfigError, match="data.keypoints"):
        load_recipe({"pretrain": {}, "data": {"root": str(tmp_path)}})
    with pytest.raises(ConfigError, match="pretrain.init: file not found"):
        load_recipe({"pretrain": {"init": str(tmp_path / "nope.pth")}, "data": {"source": "synthetic"}})
    with pytest.raises(ConfigError, match="train.schedule"):
        load_recipe({"pretrain": {}, "data": {"source": "synthetic"}, "train": {"schedule": "step"}})
    assert not is_hap_recipe(CONFIGS / "synthetic_tiny.yaml")


ALIGN_SCRIPT = '''
import json, sys
import torch
import torch.distributed as dist
from humanvision.methods.hap import align_loss

torch.set_num_threads(1)
dist.init_process_group("gloo", init_method="env://")
r = dist.get_rank()
g = torch.Generator().manual_seed(0)
q, k = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
qr = q[3 * r:3 * r + 3].clone().requires_grad_()
kr = k[3 * r:3 * r + 3].clone().requires_grad_()
loss = align_loss(qr, kr, 0.2)
loss.backward()
print("RESULT", json.dumps({"loss": loss.item(), "grad": qr.grad.tolist(), "kgrad": kr.grad is None}), flush=True)
dist.barrier()
dist.destroy_process_group()
'''


@pytest.mark.slow
def test_align_loss_gathers_keys_across_ranks(tmp_path):
    """2 gloo processes x 3 rows == 1 process x 6 rows: keys gathered in rank order, labels arange(B) + B * rank;
    the ranks' mean loss is the global loss and each rank's query gradient is W x the global one (DDP averages)."""
    import os
    import socket
    import subprocess
    import sys

    script = tmp_path / "align.py"
    script.write_text(ALIGN_SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    procs = [subprocess.Popen([sys.executable, str(script)], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    results = []
    for r, proc in enumerate(procs):
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"rank {r}:\n{out[-3000:]}"
        results.append(json.loads(next(line for line in out.splitlines() if line.startswith("RESULT"))[7:]))
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(6, 8, generator=g).requires_grad_(), torch.randn(6, 8, generator=g)
    loss = align_loss(q, k, 0.2)
    loss.backward()
    assert 0.5 * (results[0]["loss"] + results[1]["loss"]) == pytest.approx(loss.item(), rel=1e-6)
    for r in range(2):
        assert torch.allclose(torch.tensor(results[r]["grad"]), 2 * q.grad[3 * r:3 * r + 3], atol=1e-6)
        assert results[r]["kgrad"]
