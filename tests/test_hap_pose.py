"""HAP's 2D-pose downstream (pretraining.md B.9.3, pitfall 5): a ViTPose backbone initialised from a checkpoint in
HAP's released layout (B.8), its position embedding resampled from the (16, 8) grid named in the recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from humanvision.config import load_config
from humanvision.errors import DataError
from humanvision.methods.topdown import TopDownRecipe, build_method

D, DEPTH, DEC = 192, 6, 64  # vitpose_tiny's width and depth; a small decoder


def hap_checkpoint(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A checkpoint written from B.8's key list: {'epoch', 'arch', 'model', 'optimizer', 'scaler'}, the encoder
    at 16x8 (+ cls) position slots, the MAE decoder, no 'module.' prefix. Slot 0 is random on purpose (in the
    release it is the zero cls position of sin-cos), so the test sees whether ViTPose's fold is applied."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.02

    m = {"cls_token": r(1, 1, D), "pos_embed": r(1, 129, D), "patch_embed.proj.weight": r(D, 3, 16, 16),
         "patch_embed.proj.bias": r(D), "norm.weight": 1 + r(D), "norm.bias": r(D), "mask_token": r(1, 1, DEC),
         "decoder_embed.weight": r(DEC, D), "decoder_embed.bias": r(DEC), "decoder_pos_embed": r(1, 129, DEC),
         "decoder_norm.weight": 1 + r(DEC), "decoder_norm.bias": r(DEC), "decoder_pred.weight": r(768, DEC),
         "decoder_pred.bias": r(768)}
    for i in range(DEPTH):
        p = f"blocks.{i}."
        m.update({p + "norm1.weight": 1 + r(D), p + "norm1.bias": r(D), p + "attn.qkv.weight": r(3 * D, D),
                  p + "attn.qkv.bias": r(3 * D), p + "attn.proj.weight": r(D, D), p + "attn.proj.bias": r(D),
                  p + "norm2.weight": 1 + r(D), p + "norm2.bias": r(D), p + "mlp.fc1.weight": r(4 * D, D),
                  p + "mlp.fc1.bias": r(4 * D), p + "mlp.fc2.weight": r(D, 4 * D), p + "mlp.fc2.bias": r(D)})
    m.update({f"decoder_blocks.0.{k}": v for k, v in {"norm1.weight": 1 + r(DEC), "attn.qkv.weight": r(3 * DEC, DEC),
                                                      "mlp.fc1.weight": r(4 * DEC, DEC)}.items()})
    torch.save({"epoch": 399, "arch": "pose_mae_vit_base_patch16", "model": m, "optimizer": {}, "scaler": {}}, path)
    return m


def recipe(weights: Path, grid) -> TopDownRecipe:
    return load_config({"model": {"name": "vitpose_tiny", "skeleton": "coco17", "input_size": [192, 256],
                                  "backbone_weights": str(weights), "backbone_grid": grid}}, TopDownRecipe)


def test_vitpose_backbone_from_a_hap_checkpoint(tmp_path: Path):
    m = hap_checkpoint(tmp_path / "hap.pth")
    method = build_method(recipe(tmp_path / "hap.pth", [16, 8]))
    bb = method.model.backbone
    assert tuple(bb.patch_embed.grid_size) == (16, 12)
    # B.8 / pitfall 5: fold slot 0 into the patch slots (ViTPose has no cls token), then bicubic 16x8 -> 16x12
    patches = (m["pos_embed"][:, 1:] + m["pos_embed"][:, :1]).reshape(1, 16, 8, D).permute(0, 3, 1, 2)
    expected = F.interpolate(patches, size=(16, 12), mode="bicubic", align_corners=False)
    expected = expected.permute(0, 2, 3, 1).reshape(1, 16 * 12, D)
    assert torch.allclose(bb.pos_embed, expected, atol=1e-6)
    for i in range(DEPTH):
        assert torch.equal(bb.blocks[i].attn.qkv.weight, m[f"blocks.{i}.attn.qkv.weight"])
        assert torch.equal(bb.blocks[i].mlp.fc2.bias, m[f"blocks.{i}.mlp.fc2.bias"])
    # ViTPose's patch conv has padding 2 (weight-compatible): the 16x16 kernel is taken as it is
    assert torch.equal(bb.patch_embed.proj.weight, m["patch_embed.proj.weight"])
    # HAP's final norm is not loaded (its loader does not remap norm -> last_norm): still the default init
    assert torch.equal(bb.norm.weight, torch.ones(D)) and torch.equal(bb.norm.bias, torch.zeros(D))
    out = method.model(torch.randn(2, 3, 256, 192))
    assert out.shape == (2, 17, 64, 48) and torch.isfinite(out).all()


def test_a_wrong_grid_is_a_named_error(tmp_path: Path):
    hap_checkpoint(tmp_path / "hap.pth")
    with pytest.raises(DataError, match="pos_embed"):
        build_method(recipe(tmp_path / "hap.pth", [12, 12]))


def test_the_published_recipes_load():
    for name in ("hap_vitpose_base_coco_256x192", "hap_vitpose_base_mpii_256x192"):
        r = load_config(Path("configs") / f"{name}.yaml", TopDownRecipe,
                        unchecked=("data.train_ann", "data.train_images", "data.val_ann", "data.val_images",
                                   "data.det_results", "data.val_gt"))
        assert tuple(r.model.backbone_grid) == (16, 8) and r.model.input_size == (192, 256)
