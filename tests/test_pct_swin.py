"""PCT's Swin-V2-style backbone and its stage-0 heatmap model (pose2d.md §3.1, §3.2, §3.9).

Expected values are computed here from the brief's formulas and key tables, not from the model's own helpers.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from timm.layers import DropPath
from torch import nn

from humanvision.codecs import MSRAHeatmap
from humanvision.config import load_config
from humanvision.engine import param_groups
from humanvision.errors import ConfigError, DataError
from humanvision.methods.topdown import TopDownRecipe, build_method
from humanvision.models import create_model
from humanvision.models.pct_swin import (
    PatchMerging,
    PCTSwinHeatmap,
    SwinV2Block,
    SwinV2TransformerRPE2FC,
    load_swin_backbone,
    pct_swin_backbone,
)

torch.set_num_threads(1)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BASE = {"C": 128, "depths": [2, 2, 18, 2], "heads": [4, 8, 16, 32], "windows": [16, 16, 16, 8]}
TINY = {"C": 32, "depths": [2, 2, 2, 2], "heads": [1, 2, 4, 8], "windows": [8, 8, 8, 4]}


# -------------------------------------------------------------------------------------- the brief's rules
def official_backbone_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Backbone state-dict keys and shapes as pose2d.md §3.9 lists them (Linear weights are (out, in))."""
    c0 = cfg["C"]
    out = {"patch_embed.proj.weight": (c0, 3, 4, 4), "patch_embed.proj.bias": (c0,),
           "patch_embed.norm.weight": (c0,), "patch_embed.norm.bias": (c0,)}
    for s, (depth, nh, ws) in enumerate(zip(cfg["depths"], cfg["heads"], cfg["windows"])):
        c = c0 * 2 ** s
        for b in range(depth):
            p = f"layers.{s}.blocks.{b}."
            out.update({
                p + "attn.logit_scale": (nh, 1, 1), p + "attn.q_bias": (c,), p + "attn.v_bias": (c,),
                p + "attn.qkv.weight": (3 * c, c), p + "attn.proj.weight": (c, c), p + "attn.proj.bias": (c,),
                p + "attn.rpe_mlp.0.weight": (512, 2), p + "attn.rpe_mlp.0.bias": (512,),
                p + "attn.rpe_mlp.2.weight": (nh, 512),
                p + "attn.relative_coords_table": (1, 2 * ws - 1, 2 * ws - 1, 2),
                p + "attn.relative_position_index": (ws * ws, ws * ws),
                p + "norm1.weight": (c,), p + "norm1.bias": (c,),
                p + "norm2.weight": (c,), p + "norm2.bias": (c,),
                p + "mlp.fc1.weight": (4 * c, c), p + "mlp.fc1.bias": (4 * c,),
                p + "mlp.fc2.weight": (c, 4 * c), p + "mlp.fc2.bias": (c,),
            })
        if s < len(cfg["depths"]) - 1:
            p = f"layers.{s}.downsample."
            out.update({p + "reduction.weight": (2 * c, 4 * c), p + "norm.weight": (2 * c,),
                        p + "norm.bias": (2 * c,)})
    c_last = c0 * 2 ** (len(cfg["depths"]) - 1)
    out.update({"norm3.weight": (c_last,), "norm3.bias": (c_last,)})
    return out


def pct_layer_rule(name: str, depths: list[int]) -> int:
    """pose2d.md §3.2 (utils/optimzer_ld.py) for official names: stage sizes +1 for the patch merging of
    stages 1-3, n = sum + 2; patch_embed 0; block b of stage s ``b + sum(sizes[:s]) + 1``; the downsample of
    stage s ``sum(sizes[:s + 1])``; the rest n - 1."""
    sizes = [d + 1 for d in depths[:-1]] + [depths[-1]]
    name = name.removeprefix("model.").removeprefix("backbone.")
    if name.startswith("patch_embed."):
        return 0
    if m := re.match(r"layers\.(\d+)\.blocks\.(\d+)\.", name):
        return int(m.group(2)) + sum(sizes[: int(m.group(1))]) + 1
    if m := re.match(r"layers\.(\d+)\.downsample\.", name):
        return sum(sizes[: int(m.group(1)) + 1])
    return sum(sizes) + 2 - 1


def coords_formula(d: float, pretrain_window: int) -> float:
    """``t = sign(D') log2(|D'| + 1) / log2(8)``, ``D' = 8 D / (pretrain_ws - 1)`` (norm8_log_bylayer)."""
    dp = 8.0 * d / (pretrain_window - 1)
    return math.copysign(math.log2(abs(dp) + 1.0) / math.log2(8.0), dp) if dp else 0.0


# ---------------------------------------------------------------------------------------------------- shapes
def test_tiny_model_shapes_and_interface():
    model = create_model("pct_swin_tiny_hmp").eval()
    assert isinstance(model, PCTSwinHeatmap) and isinstance(model.backbone, SwinV2TransformerRPE2FC)
    assert model.input_size == (128, 128) and model.heatmap_size == (32, 32)
    cfg = model.default_cfg
    assert (cfg["udp"], cfg["codec"], cfg["sigma"], cfg["layer_decay"]) == (False, "msra_heatmap", 2.0, 0.9)
    assert model.backbone.out_channels == 256
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        feats = model.forward_features(x)
        heatmaps = model(x)
        torch.testing.assert_close(model.backbone(x), feats)
    assert feats.shape == (2, 256, 4, 4) and heatmaps.shape == (2, 17, 32, 32)
    assert torch.isfinite(heatmaps).all()
    with pytest.raises(ValueError, match=r"built for 128x128 .* got \(96, 128\)"):
        model.backbone(torch.randn(1, 3, 96, 128))


def test_grad_checkpointing_and_argument_errors():
    torch.manual_seed(0)
    model = create_model("pct_swin_tiny_hmp", backbone_args={"depths": (1, 2, 1, 1)}).eval()
    for p in model.head.parameters():
        nn.init.normal_(p, std=0.2)
    x = torch.randn(1, 3, 128, 128, requires_grad=True)
    ref = model(x)
    ref.sum().backward()
    ref_grad, x.grad = x.grad.clone(), None
    model.set_grad_checkpointing(True)
    assert all(stage.grad_checkpointing for stage in model.backbone.layers)
    out = model(x)
    out.sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(x.grad, ref_grad)
    with pytest.raises(ValueError, match="backbone argument 'depth' is not an argument"):
        create_model("pct_swin_tiny_hmp", backbone_args={"depth": 2})
    with pytest.raises(ValueError, match=r"input_size \(100, 128\) must be divisible by 32"):
        create_model("pct_swin_tiny_hmp", input_size=(100, 128))
    with pytest.raises(ValueError, match="unknown PCT Swin variant 'small'"):
        create_model("pct_swin_tiny_hmp", backbone="small")
    with pytest.raises(ValueError, match="num_heads has 3 entries for 4 stages"):
        pct_swin_backbone("tiny", num_heads=(1, 2, 4))


def test_base_forward_at_256_and_variants():
    """The published Base at 256x256 on CPU: (B, 1024, 8, 8) features, 64x64 heatmaps (pose2d.md §6, 15)."""
    torch.manual_seed(0)
    model = create_model("pct_swin_base_hmp").eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 256, 256))
        heatmaps = model.forward_head(feats)
    assert feats.shape == (1, 1024, 8, 8) and heatmaps.shape == (1, 17, 64, 64)
    assert torch.isfinite(heatmaps).all()
    backbone = model.backbone
    assert 86.0 < sum(p.numel() for p in backbone.parameters()) / 1e6 < 88.0
    blocks = [[(blk.window, blk.shift) for blk in stage.blocks] for stage in backbone.layers]
    assert blocks == [[(16, 0), (16, 8)], [(16, 0), (16, 8)], [(16, 0)] * 18, [(8, 0), (8, 0)]]
    assert backbone.layers[2].blocks[-1].drop_path.drop_prob == pytest.approx(0.3 * 21 / 23)
    assert backbone.layers[3].blocks[-1].drop_path.drop_prob == pytest.approx(0.3)
    head = model.head.deconv_layers
    assert [type(m).__name__ for m in head] == ["ConvTranspose2d", "BatchNorm2d", "ReLU"] * 3
    assert head[0].weight.shape == (1024, 256, 4, 4)
    assert model.head.final_layer.weight.shape == (17, 256, 1, 1)
    with torch.device("meta"):
        large, huge = create_model("pct_swin_large_hmp"), create_model("pct_swin_huge_hmp")
    assert large.backbone.out_channels == 1536 and huge.backbone.out_channels == 2048
    assert [len(s.blocks) for s in huge.backbone.layers] == [2, 2, 42, 2]
    assert huge.backbone.layers[3].blocks[0].attn.num_heads == 64
    assert (large.default_cfg["layer_decay"], huge.default_cfg["layer_decay"]) == (0.9, 0.95)
    assert huge.backbone.layers[3].blocks[-1].drop_path.drop_prob == pytest.approx(0.55)


# ------------------------------------------------------------------------------------------------- attention
def _randomise_block(block: SwinV2Block) -> None:
    """O(1) weights everywhere, per-head logit scales on both sides of the log 100 clamp."""
    torch.manual_seed(3)
    for p in block.parameters():
        nn.init.normal_(p, std=0.5)
    heads = block.attn.num_heads
    scales = [math.log(5.0), math.log(300.0)] + [math.log(20.0)] * (heads - 2)
    scales = torch.tensor(scales, dtype=torch.float64)
    block.attn.logit_scale.data = scales.view(heads, 1, 1)
    nn.init.normal_(block.norm1.weight, mean=1.0, std=0.2)
    nn.init.normal_(block.norm2.weight, mean=1.0, std=0.2)


def reference_block(block: SwinV2Block, x: torch.Tensor, pretrain_window: int, use_mask: bool = True
                    ) -> torch.Tensor:
    """The block of pose2d.md §3.2 written as plain loops over windows, heads, queries and keys.

    Shifted windows: the window grid is laid on the map rolled by ``-s``, i.e. rolled position ``(p, q)``
    holds the token of ``((p + s) % H, (q + s) % W)``; tokens from different regions ``[0, H - ws)``,
    ``[H - ws, H - s)``, ``[H - s, H)`` (per axis, rolled coordinates) get -100.
    """
    _, h, w, c = x.shape
    ws, s, attn = block.window, block.shift, block.attn
    nh = attn.num_heads
    hd = c // nh
    wq, wk, wv = attn.qkv.weight.split(c)
    w1, b1, w2 = attn.rpe_mlp[0].weight, attn.rpe_mlp[0].bias, attn.rpe_mlp[2].weight

    def region(p: int, size: int) -> int:
        return 0 if p < size - ws else 1 if p < size - s else 2

    def rpe(dr: int, dc: int) -> torch.Tensor:
        t = torch.tensor([coords_formula(dr, pretrain_window), coords_formula(dc, pretrain_window)],
                         dtype=x.dtype)
        return 16 * torch.sigmoid(w2 @ torch.relu(w1 @ t + b1))

    mixed = torch.zeros_like(x)
    for wr in range(h // ws):
        for wc in range(w // ws):
            cells = [(wr * ws + i, wc * ws + j) for i in range(ws) for j in range(ws)]
            orig = [((p + s) % h, (q + s) % w) for p, q in cells]
            tokens = torch.stack([x[0, p, q] for p, q in orig])
            q_all, k_all, v_all = tokens @ wq.T + attn.q_bias, tokens @ wk.T, tokens @ wv.T + attn.v_bias
            out = torch.zeros(len(cells), c, dtype=x.dtype)
            for head in range(nh):
                sl = slice(head * hd, (head + 1) * hd)
                scale = math.exp(min(attn.logit_scale[head].item(), math.log(100.0)))
                for a, (pa, qa) in enumerate(cells):
                    logits = []
                    for b, (pb, qb) in enumerate(cells):
                        qv, kv = q_all[a, sl], k_all[b, sl]
                        cos = (qv @ kv) / (qv.norm() * kv.norm())
                        bias = rpe(pa - pb, qa - qb)[head]
                        same = (region(pa, h), region(qa, w)) == (region(pb, h), region(qb, w))
                        mask = 0.0 if (s == 0 or same or not use_mask) else -100.0
                        logits.append(cos * scale + bias + mask)
                    prob = torch.softmax(torch.stack(logits), 0)
                    out[a, sl] = (prob[:, None] * v_all[:, sl]).sum(0)
            out = out @ attn.proj.weight.T + attn.proj.bias
            for a, (p, q) in enumerate(orig):
                mixed[0, p, q] = out[a]
    y = x + F.layer_norm(mixed, (c,), block.norm1.weight, block.norm1.bias, eps=1e-6)
    mlp = block.mlp.fc2(F.gelu(block.mlp.fc1(y)))
    return y + F.layer_norm(mlp, (c,), block.norm2.weight, block.norm2.bias, eps=1e-6)


@pytest.mark.parametrize("shift", [False, True], ids=["regular", "shifted"])
def test_block_matches_plain_loop_reference(shift):
    block = SwinV2Block(dim=8, num_heads=2, resolution=(8, 8), window=4, pretrain_window=3, shift=shift)
    block = block.double().eval()
    _randomise_block(block)
    # the float32 table buffer is checked against the formula elsewhere; here it is exact (1e-9 comparison)
    r = range(-3, 4)
    exact = [[[coords_formula(dr, 3), coords_formula(dc, 3)] for dc in r] for dr in r]
    block.attn.relative_coords_table = torch.tensor([exact], dtype=torch.float64)
    assert block.shift == (2 if shift else 0)
    x = torch.randn(1, 8, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        got = block(x)
        want = reference_block(block, x, pretrain_window=3)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
        if shift:  # the mask matters: the same loops without it give another answer
            assert set(block.attn_mask.unique().tolist()) == {0.0, -100.0}
            assert (reference_block(block, x, 3, use_mask=False) - got).abs().max() > 1e-2
        else:
            assert block.attn_mask is None


def test_patch_merging_concatenates_in_the_documented_order():
    """out[i, j] = LN(W [x[2i, 2j], x[2i+1, 2j], x[2i, 2j+1], x[2i+1, 2j+1]]), (row, column), no bias."""
    torch.manual_seed(0)
    merge = PatchMerging(4).double()
    nn.init.normal_(merge.norm.weight, mean=1.0, std=0.3)
    nn.init.normal_(merge.norm.bias, std=0.3)
    assert merge.reduction.weight.shape == (8, 16) and merge.reduction.bias is None
    x = torch.randn(1, 4, 6, 4, dtype=torch.float64)
    with torch.no_grad():
        got = merge(x)
        for i in range(2):
            for j in range(3):
                cat = torch.cat([x[0, 2 * i, 2 * j], x[0, 2 * i + 1, 2 * j], x[0, 2 * i, 2 * j + 1],
                                 x[0, 2 * i + 1, 2 * j + 1]])
                want = merge.reduction.weight @ cat
                want = F.layer_norm(want, (8,), merge.norm.weight, merge.norm.bias, eps=1e-6)
                torch.testing.assert_close(got[0, i, j], want, rtol=1e-12, atol=1e-12)


def test_layernorm_and_attention_run_in_fp32_under_low_precision():
    torch.manual_seed(0)
    block = SwinV2Block(dim=16, num_heads=2, resolution=(8, 8), window=4, pretrain_window=3, shift=True)
    block.eval()
    x = torch.randn(2, 8, 8, 16)
    with torch.no_grad():
        ref = block(x)
        low = block.to(torch.bfloat16)(x.to(torch.bfloat16))
        ln = block.norm1(x.to(torch.bfloat16) * 50)
    assert low.dtype == torch.bfloat16 and ln.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, atol=0.1, rtol=0.05)
    ln_ref = F.layer_norm((x.to(torch.bfloat16) * 50).float(), (16,), block.norm1.weight.float(),
                          block.norm1.bias.float(), eps=1e-6)
    torch.testing.assert_close(ln.float(), ln_ref.to(torch.bfloat16).float())


def test_relative_coords_table_and_index_follow_the_formula():
    with torch.device("meta"):
        base = create_model("pct_swin_base_hmp").backbone
    assert base.layers[0].blocks[0].attn.relative_coords_table.shape == (1, 31, 31, 2)
    backbone = pct_swin_backbone("tiny", window_size=(16, 8, 8, 4), pretrain_window_size=(12, 6, 6, 3),
                                 img_size=256)
    attn = backbone.layers[0].blocks[0].attn
    table = attn.relative_coords_table
    assert table.shape == (1, 31, 31, 2)
    for i in range(31):
        for j in range(31):
            want = (coords_formula(i - 15, 12), coords_formula(j - 15, 12))  # (row, column) offset
            assert table[0, i, j].tolist() == pytest.approx(want, abs=1e-6), (i, j)
    bound = math.log2(8 * 15 / 11 + 1) / 3  # pose2d.md §6 item 15: about 1.19
    assert table.abs().max().item() == pytest.approx(bound, abs=1e-6)
    assert bound == pytest.approx(1.19, abs=0.01)
    index = attn.relative_position_index
    assert index.shape == (256, 256)
    for a, b in [(0, 0), (0, 255), (255, 0), (17, 200), (100, 37)]:
        (ra, ca), (rb, cb) = divmod(a, 16), divmod(b, 16)
        assert index[a, b].item() == (ra - rb + 15) * 31 + (ca - cb + 15)
    assert backbone.layers[3].blocks[0].attn.relative_coords_table[0, 0, 0, 0].item() == pytest.approx(
        coords_formula(-3, 3), abs=1e-6)  # stage 4 normalised by its own pre-training window (3)


def test_shift_rule_and_window_clipping():
    """Shifts only in odd blocks of use_shift stages; a window >= its map is clipped to it, never shifts."""
    backbone = pct_swin_backbone("tiny", use_shift=(True, True, True, True), window_size=(8, 8, 16, 8),
                                 pretrain_window_size=(6, 6, 12, 6))  # 128x128: maps 32, 16, 8, 4
    got = [[(blk.window, blk.shift) for blk in stage.blocks] for stage in backbone.layers]
    assert got == [[(8, 0), (8, 4)], [(8, 0), (8, 4)], [(8, 0), (8, 0)], [(4, 0), (4, 0)]]
    assert backbone.layers[2].blocks[1].attn.relative_coords_table.shape == (1, 15, 15, 2)
    assert backbone.layers[2].blocks[1].attn_mask is None
    mask = backbone.layers[0].blocks[1].attn_mask  # 32x32 map, 16 windows of 64 tokens
    assert mask.shape == (16, 64, 64) and set(mask.unique().tolist()) == {0.0, -100.0}
    # regions split at rows / columns 24 (= 32 - 8) and 28 (= 32 - 4): only the 3 x 3 top-left windows
    # hold a single region
    pure = {i for i in range(16) if (mask[i] == 0).all()}
    assert pure == {r * 4 + c for r in range(3) for c in range(3)}


# ------------------------------------------------------------------------------------------------- weights
def test_state_dict_keys_are_the_official_ones_and_load_strictly(tmp_path):
    with torch.device("meta"):
        base = create_model("pct_swin_base_hmp")
    shapes = {k: tuple(v.shape) for k, v in base.backbone.state_dict().items()}
    assert shapes == official_backbone_shapes(BASE)
    model = create_model("pct_swin_tiny_hmp")
    shapes = official_backbone_shapes(TINY)
    torch.manual_seed(1)
    state = {k: torch.randn(s) for k, s in shapes.items()}
    for k, s in shapes.items():
        if k.endswith("relative_position_index"):
            state[k] = torch.randint(0, 10, s)
    model.backbone.load_state_dict(state, strict=True)
    for k, v in model.backbone.state_dict().items():
        torch.testing.assert_close(v, state[k], msg=k)
    # an official PCT heatmap checkpoint (mmcv: backbone.* + keypoint_head.*) loads through create_model
    official = {f"backbone.{k}": v for k, v in state.items()}
    for k, v in model.head.state_dict().items():
        official[f"keypoint_head.{k}"] = torch.rand_like(v.float()).to(v.dtype)
    path = tmp_path / "swin_tiny_hmp.pth"
    torch.save({"meta": {}, "state_dict": official}, path)
    loaded = create_model("pct_swin_tiny_hmp", weights=path)
    torch.testing.assert_close(loaded.backbone.layers[2].blocks[1].attn.rpe_mlp[2].weight,
                               state["layers.2.blocks.1.attn.rpe_mlp.2.weight"])
    torch.testing.assert_close(loaded.head.final_layer.weight, official["keypoint_head.final_layer.weight"])


def _simmim_state() -> dict[str, torch.Tensor]:
    """A SimMIM-style checkpoint: ``encoder.`` backbone keys without the relative-position buffers and norm3,
    plus SimMIM's mask token and decoder."""
    torch.manual_seed(2)
    buffers = ("relative_coords_table", "relative_position_index")
    state = {f"encoder.{k}": torch.randn(s) for k, s in official_backbone_shapes(TINY).items()
             if not (k.startswith("norm3.") or k.endswith(buffers))}
    state["encoder.mask_token"] = torch.zeros(1, 1, 32)
    state["decoder.0.weight"] = torch.randn(3 * 32 * 32, 256, 1, 1)
    state["decoder.0.bias"] = torch.zeros(3072)
    return state


def test_simmim_loader_reports_expected_missing_keys(tmp_path, caplog):
    model = create_model("pct_swin_tiny_hmp")
    tables = {k: v.clone() for k, v in model.backbone.state_dict().items() if "relative" in k}
    state = _simmim_state()
    path = tmp_path / "simmim_swin_tiny.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, path)
    with caplog.at_level("INFO", logger="humanvision.models.pct_swin"):
        report = load_swin_backbone(model, path)
    expected_missing = sorted([*tables, "norm3.bias", "norm3.weight"])
    assert report.missing == expected_missing and len(tables) == 2 * 8
    assert report.dropped == ["decoder.0.bias", "decoder.0.weight", "encoder.mask_token"]
    assert report.unexpected == []
    assert "missing as expected: 18" in caplog.text and str(path) in caplog.text
    torch.testing.assert_close(model.backbone.layers[1].blocks[1].attn.qkv.weight,
                               state["encoder.layers.1.blocks.1.attn.qkv.weight"])
    assert (model.backbone.norm3.weight == 1).all() and (model.backbone.norm3.bias == 0).all()
    for k, v in tables.items():  # recomputed from the window sizes, never taken from a file
        assert torch.equal(model.backbone.state_dict()[k], v), k


def test_recipe_initialises_the_backbone_from_simmim(tmp_path, capsys):
    """model.backbone_weights: stage 0 starts from SimMIM weights through the recipe (pose2d.md §3.1)."""
    state = _simmim_state()
    path = tmp_path / "simmim_swin_tiny.pth"
    torch.save({"model": state}, path)
    recipe = {"model": {"name": "pct_swin_tiny_hmp", "input_size": [128, 128], "backbone_weights": str(path)}}
    method = build_method(load_config(recipe, TopDownRecipe))
    torch.testing.assert_close(method.model.backbone.layers[3].blocks[0].attn.qkv.weight,
                               state["encoder.layers.3.blocks.0.attn.qkv.weight"])
    out = capsys.readouterr().out
    assert "18 keys missing as expected" in out and "3 keys of the file not used" in out
    with pytest.raises(ConfigError, match="model.backbone_weights: file not found"):
        load_config({"model": {"name": "pct_swin_tiny_hmp", "backbone_weights": str(tmp_path / "x.pth")}},
                    TopDownRecipe)


def test_simmim_loader_refuses_other_mismatches():
    model = create_model("pct_swin_tiny_hmp")
    good = _simmim_state()
    extra = {**good, "encoder.layers.0.blocks.0.attn.foo": torch.zeros(1)}
    with pytest.raises(DataError, match=r"field encoder\.layers\.0\.blocks\.0\.attn\.foo: keys not in"):
        load_swin_backbone(model, extra)
    missing = {k: v for k, v in good.items() if k != "encoder.layers.1.blocks.0.attn.qkv.weight"}
    with pytest.raises(DataError, match=r"missing from the file: layers\.1\.blocks\.0\.attn\.qkv\.weight"):
        load_swin_backbone(model, missing)
    bad = {**good, "encoder.layers.3.blocks.0.attn.logit_scale": torch.zeros(4, 1, 1)}
    with pytest.raises(DataError, match=r"logit_scale: file \(4, 1, 1\) vs model \(8, 1, 1\)"):
        load_swin_backbone(model, bad)
    simmim_norm = {"encoder.norm.weight": torch.ones(256), "encoder.norm.bias": torch.ones(256)}
    with pytest.raises(DataError, match=r"keys not in the Swin backbone: norm\.bias, norm\.weight"):
        load_swin_backbone(model, {**good, **simmim_norm})
    report = load_swin_backbone(model, {**good, "encoder.norm.weight": torch.ones(256)}, ignore=("norm.",))
    assert "encoder.norm.weight" in report.dropped
    # the backbone of a PCT heatmap / stage-II checkpoint: backbone.* kept, the rest dropped
    pct = {k.replace("encoder.", "backbone."): v for k, v in good.items() if k.startswith("encoder.layers")}
    pct.update({k.replace("encoder.", "backbone."): v for k, v in good.items() if "patch_embed" in k})
    pct.update({"backbone.norm3.weight": torch.full((256,), 2.0), "backbone.norm3.bias": torch.zeros(256),
                "keypoint_head.final_layer.weight": torch.zeros(17, 256, 1, 1),
                "extra_backbone.norm3.weight": torch.zeros(256)})
    report = load_swin_backbone(model.backbone, pct)
    assert report.missing == sorted(k for k in model.backbone.state_dict() if "relative" in k)
    assert report.dropped == ["extra_backbone.norm3.weight", "keypoint_head.final_layer.weight"]
    assert (model.backbone.norm3.weight == 2).all()


# ------------------------------------------------------------------------------------------- optimisation
@pytest.mark.parametrize(("name", "depths", "n"), [("pct_swin_base_hmp", [2, 2, 18, 2], 29),
                                                   ("pct_swin_huge_hmp", [2, 2, 42, 2], 53),
                                                   ("pct_swin_tiny_hmp", [2, 2, 2, 2], 13)])
def test_layer_ids_follow_the_pct_swin_rule(name, depths, n):
    with torch.device("meta"):
        model = create_model(name)
    assert model.num_layers == n
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.9)
    seen = set()
    for g in groups:
        for p in g["param_names"]:
            assert g["layer_id"] == pct_layer_rule(p, depths), p
            assert g["lr_scale"] == pytest.approx(0.9 ** (n - 1 - pct_layer_rule(p, depths)), rel=1e-12), p
            seen.add(p)
    assert seen == {p for p, t in model.named_parameters() if t.requires_grad}
    ids = {model.layer_id(p) for p, _ in model.named_parameters()}
    assert ids == set(range(n))  # every id used once at least: 0 ... n - 1
    if name == "pct_swin_base_hmp":  # sizes [3, 3, 19, 2]
        merging = [model.layer_id(f"backbone.layers.{s}.downsample.reduction.weight") for s in range(3)]
        assert merging == [3, 6, 25]
        assert model.layer_id("backbone.layers.3.blocks.1.mlp.fc2.weight") == 27
        assert model.layer_id("head.final_layer.weight") == model.layer_id("backbone.norm3.weight") == 28


def test_no_weight_decay_follows_the_brief():
    with torch.device("meta"):
        model = create_model("pct_swin_base_hmp")
    nwd = model.no_weight_decay()
    p = "backbone.layers.1.blocks.1."
    for name in (p + "attn.rpe_mlp.0.weight", p + "attn.rpe_mlp.2.weight", p + "attn.logit_scale",
                 p + "attn.q_bias", p + "attn.v_bias", p + "attn.proj.bias", p + "norm1.weight",
                 "backbone.layers.0.downsample.norm.bias", "backbone.patch_embed.proj.bias",
                 "head.final_layer.bias"):
        assert name in nwd, name
    for name in (p + "attn.qkv.weight", p + "attn.proj.weight", p + "mlp.fc1.weight",
                 "backbone.layers.0.downsample.reduction.weight", "backbone.patch_embed.proj.weight",
                 "head.deconv_layers.0.weight", "head.final_layer.weight"):
        assert name not in nwd, name
    decay = {n: g["weight_decay"] for g in param_groups(model, 0.05, 0.9) for n in g["param_names"]}
    assert decay[p + "attn.rpe_mlp.2.weight"] == decay[p + "attn.logit_scale"] == 0.0
    assert decay[p + "attn.qkv.weight"] == decay["head.final_layer.weight"] == 0.05


def test_frozen_stages():
    def trainable(m: nn.Module) -> set[str]:
        return {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("layers") else "")
                for n, p in m.named_parameters() if p.requires_grad}

    stages = {"layers.0", "layers.1", "layers.2", "layers.3"}
    assert trainable(pct_swin_backbone("tiny")) == {"patch_embed", *stages}
    assert trainable(pct_swin_backbone("tiny", frozen_stages=0)) == stages
    assert trainable(pct_swin_backbone("tiny", frozen_stages=3)) == {"layers.2", "layers.3"}
    frozen = pct_swin_backbone("tiny", frozen_stages=5, drop_path_rate=0.5)
    assert trainable(frozen) == set() and not frozen.norm3.weight.requires_grad
    frozen.train()
    assert frozen.training and not any(m.training for m in [frozen.patch_embed, *frozen.layers, frozen.norm3])
    assert not any(m.training for m in frozen.modules() if isinstance(m, DropPath))
    x = torch.randn(2, 3, 128, 128)
    torch.testing.assert_close(frozen(x), frozen(x))  # no drop path in frozen stages
    model = create_model("pct_swin_tiny_hmp", backbone_args={"frozen_stages": 5})
    names = [n for g in param_groups(model, 0.05, 0.9) for n in g["param_names"]]
    assert names and all(n.startswith("head.") for n in names)
    with pytest.raises(ValueError, match="frozen_stages"):
        pct_swin_backbone("tiny", frozen_stages=6)


# ------------------------------------------------------------------------------------------------- recipes
@pytest.mark.parametrize(("variant", "lr", "wd", "decay", "drop_path"), [
    ("base", 5e-4, 0.05, 0.9, 0.3), ("large", 3.33e-4, 0.0625, 0.9, 0.5), ("huge", 2.5e-4, 0.1, 0.95, 0.55)])
def test_hmp_recipes_hold_the_published_values(variant, lr, wd, decay, drop_path):
    path = CONFIGS / f"pct_{variant}_hmp.yaml"
    data = yaml.safe_load(path.read_text())
    paths = ("train_ann", "train_images", "val_ann", "val_images", "det_results")
    overrides = [f"data.{k}=null" for k in paths if not Path(data["data"][k]).exists()]
    recipe = load_config(path, TopDownRecipe, overrides)
    t = recipe.train
    assert (t.optimizer, t.lr, t.weight_decay, t.layer_decay) == ("adamw", lr, wd, decay)
    assert (t.schedule, t.warmup_iters, t.warmup_ratio, t.min_lr_ratio) == ("cosine", 500, 0.001, 1e-5)
    assert (t.epochs, t.batch_size) == (150, 32)
    d = recipe.data
    assert (d.augment, d.padding, d.sigma, d.dark) == ("pct", 1.25, 2.0, False) and recipe.eval.flip_test
    assert recipe.model.args == {"drop_path_rate": drop_path}
    with torch.device("meta"):
        method = build_method(recipe)
    codec = method.codec
    assert isinstance(codec, MSRAHeatmap) and not codec.unbiased and not codec.udp and codec.sigma == 2.0
    assert codec.input_size == (256, 256) and codec.heatmap_size == (64, 64)
    # quarter-offset decoding: a peak at (10, 20) whose right and lower neighbours are the larger ones
    # moves by +0.25 heatmap px on both axes
    maps = torch.zeros(1, 17, 64, 64)
    maps[0, 0, 20, 10], maps[0, 0, 20, 11], maps[0, 0, 21, 10] = 1.0, 0.5, 0.5
    locs, _ = codec.decode_torch(maps)
    assert locs[0, 0].tolist() == pytest.approx([(10 + 0.25) * 4, (20 + 0.25) * 4])
