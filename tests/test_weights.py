"""Weights: our safetensors + sidecar, official ViTPose / MMPose 1.x checkpoints, backbone initialisation."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed
from torch import nn

from humanvision.errors import DataError
from humanvision.models import create_model
from humanvision.models.weights import (
    convert_vitpose_checkpoint,
    load_backbone_weights,
    load_model,
    load_weights,
    read_sidecar,
    save_weights,
    to_official_vitpose,
)

torch.set_num_threads(1)


def _model(name="vitpose_tiny", **kwargs):
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    for p in model.head.parameters():  # O(1) outputs so comparisons mean something
        nn.init.normal_(p, std=0.2)
    for m in model.modules():  # non-trivial running statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def _official(model, slot0_scale=0.3):
    """Official-layout state dict whose pos-embed slot 0 is non-zero (split out of the patch slots)."""
    sd = to_official_vitpose(model)
    pos = sd["backbone.pos_embed"]
    slot = torch.randn(1, 1, pos.shape[-1]) * slot0_scale
    sd["backbone.pos_embed"] = torch.cat([slot, pos[:, 1:] - slot], dim=1)
    return sd


# Checkpoint names as documented (pose2d.md 2.8): the official ViTPose repo (MMPose 0.x) and MMPose 1.x, whose
# backbone is mmpretrain's VisionTransformer (patch_embed.projection, layers.i.{ln1, attn.qkv, attn.proj, ln2,
# ffn.layers.0.0, ffn.layers.1}, final norm ln1; pre_norm is an Identity for ViTPose) and whose head is head.*.
_DOC = {
    "vitpose": {"patch": "backbone.patch_embed.proj", "block": "backbone.blocks.{}.", "ln1": "norm1", "ln2": "norm2",
                "fc1": "mlp.fc1", "fc2": "mlp.fc2", "norm": "backbone.last_norm", "head": "keypoint_head"},
    "mmpose1": {"patch": "backbone.patch_embed.projection", "block": "backbone.layers.{}.", "ln1": "ln1",
                "ln2": "ln2", "fc1": "ffn.layers.0.0", "fc2": "ffn.layers.1", "norm": "backbone.ln1", "head": "head"},
}
_TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "head_channels": 16}  # vitpose_tiny, smaller


def _documented_checkpoint(layout, grid, decoder="classic", d=32, depth=2, deconv=16, joints=17, seed=0):
    """A ViTPose state dict built by hand from the documented names and shapes, random values.

    ``pos_embed`` is ``(1, 1 + N, D)`` for 0.x (slot 0: the cls slot added to every token) and ``(1, N, D)`` for
    1.x (mmpretrain ``with_cls_token=False``: no extra token), ``N = grid[0] * grid[1]``.
    """
    gen = torch.Generator().manual_seed(seed)

    def r(*shape, std=0.2):
        return torch.randn(*shape, generator=gen) * std

    n = _DOC[layout]
    tokens = grid[0] * grid[1] + (layout == "vitpose")
    sd = {f"{n['patch']}.weight": r(d, 3, 16, 16, std=0.05), f"{n['patch']}.bias": r(d),
          "backbone.pos_embed": r(1, tokens, d, std=0.5)}
    for i in range(depth):
        b = n["block"].format(i)
        for ln in (n["ln1"], n["ln2"]):
            sd[f"{b}{ln}.weight"], sd[f"{b}{ln}.bias"] = 1 + r(d), r(d)
        sd[f"{b}attn.qkv.weight"], sd[f"{b}attn.qkv.bias"] = r(3 * d, d), r(3 * d)
        sd[f"{b}attn.proj.weight"], sd[f"{b}attn.proj.bias"] = r(d, d), r(d)
        sd[f"{b}{n['fc1']}.weight"], sd[f"{b}{n['fc1']}.bias"] = r(4 * d, d), r(4 * d)
        sd[f"{b}{n['fc2']}.weight"], sd[f"{b}{n['fc2']}.bias"] = r(d, 4 * d), r(d)
    sd[f"{n['norm']}.weight"], sd[f"{n['norm']}.bias"] = 1 + r(d), r(d)
    h = n["head"]
    if decoder == "classic":
        for j, cin in ((0, d), (3, deconv)):
            sd[f"{h}.deconv_layers.{j}.weight"] = r(cin, deconv, 4, 4)
            bn = f"{h}.deconv_layers.{j + 1}."
            sd[bn + "weight"], sd[bn + "bias"] = 1 + r(deconv), r(deconv)
            sd[bn + "running_mean"], sd[bn + "running_var"] = r(deconv), 0.5 + torch.rand(deconv, generator=gen)
            sd[bn + "num_batches_tracked"] = torch.tensor(100)
        sd[f"{h}.final_layer.weight"], sd[f"{h}.final_layer.bias"] = r(joints, deconv, 1, 1), r(joints)
    else:
        sd[f"{h}.final_layer.weight"], sd[f"{h}.final_layer.bias"] = r(joints, d, 3, 3), r(joints)
    return sd


def _reference_pos(pos, slot0, src_grid, grid):
    """The ``(rows, cols, D)`` embedding a ``grid`` model adds to its patch tokens, from the documented tensor:
    ``slot0`` "add" (0.x: added to every token), "skip" (a cls token's) or None. Another grid: bicubic resampling
    of the 2-D patch grid (align_corners=False, as ViTPose, mmpretrain and timm), slot 0 added afterwards."""
    d = pos.shape[-1]
    patch = (pos[:, 1:] if slot0 else pos).reshape(1, *src_grid, d)
    if tuple(src_grid) != tuple(grid):
        patch = F.interpolate(patch.permute(0, 3, 1, 2), size=grid, mode="bicubic", align_corners=False)
        patch = patch.permute(0, 2, 3, 1)
    return patch[0] + (pos[0, :1] if slot0 == "add" else 0)


def _official_forward(sd, x, num_heads, layout="vitpose", src_grid=None):
    """Reference ViTPose forward written from the brief (pose2d.md 2.1/2.2) on a documented-layout state dict;
    ``src_grid``: the checkpoint's token grid when the input size differs from the checkpoint's."""
    g, n = sd.__getitem__, _DOC[layout]
    t = F.conv2d(x, g(n["patch"] + ".weight"), g(n["patch"] + ".bias"), stride=16, padding=2)
    b, d, hh, ww = t.shape
    t = t.flatten(2).transpose(1, 2)
    pos = _reference_pos(g("backbone.pos_embed"), "add" if layout == "vitpose" else None, src_grid or (hh, ww),
                         (hh, ww))
    t = t + pos.reshape(1, hh * ww, d)
    i = 0
    while n["block"].format(i) + "attn.qkv.weight" in sd:
        p = n["block"].format(i)
        y = F.layer_norm(t, (d,), g(f"{p}{n['ln1']}.weight"), g(f"{p}{n['ln1']}.bias"), eps=1e-6)
        qkv = F.linear(y, g(p + "attn.qkv.weight"), g(p + "attn.qkv.bias")).reshape(b, -1, 3, num_heads, d // num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * (d // num_heads) ** -0.5).softmax(-1)
        y = (attn @ v).transpose(1, 2).reshape(b, -1, d)
        t = t + F.linear(y, g(p + "attn.proj.weight"), g(p + "attn.proj.bias"))
        y = F.layer_norm(t, (d,), g(f"{p}{n['ln2']}.weight"), g(f"{p}{n['ln2']}.bias"), eps=1e-6)
        y = F.linear(F.gelu(F.linear(y, g(f"{p}{n['fc1']}.weight"), g(f"{p}{n['fc1']}.bias"))),
                     g(f"{p}{n['fc2']}.weight"), g(f"{p}{n['fc2']}.bias"))
        t = t + y
        i += 1
    t = F.layer_norm(t, (d,), g(n["norm"] + ".weight"), g(n["norm"] + ".bias"), eps=1e-6)
    f = t.transpose(1, 2).reshape(b, d, hh, ww)
    h = n["head"]
    if h + ".deconv_layers.0.weight" not in sd:  # simple decoder
        f = F.interpolate(F.relu(f), scale_factor=4, mode="bilinear", align_corners=False)
        return F.conv2d(f, g(h + ".final_layer.weight"), g(h + ".final_layer.bias"), padding=1)
    for j in (0, 3):
        f = F.conv_transpose2d(f, g(f"{h}.deconv_layers.{j}.weight"), stride=2, padding=1)
        bn = f"{h}.deconv_layers.{j + 1}."
        f = F.relu(F.batch_norm(f, g(bn + "running_mean"), g(bn + "running_var"), g(bn + "weight"), g(bn + "bias"),
                                eps=1e-5))
    return F.conv2d(f, g(h + ".final_layer.weight"), g(h + ".final_layer.bias"))


@pytest.mark.parametrize("name", ["vitpose_tiny", "simplebaseline_tiny"])
def test_safetensors_round_trip(name, tmp_path):
    model = _model(name)
    w, h = model.input_size
    x = torch.randn(2, 3, h, w)
    path = save_weights(model, tmp_path / "run" / "model.safetensors", extra={"epoch": 3})
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["model"] == name and meta["model_args"]["skeleton"] == "coco17" and meta["extra"] == {"epoch": 3}
    assert meta["default_cfg"]["input_size"] == [w, h]
    reloaded = load_model(path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x), rtol=0, atol=0)
    fresh = create_model(name).eval()
    report = load_weights(fresh, path)
    assert report.layout == "humanvision" and not report.missing and not report.unexpected
    (tmp_path / "run" / "model.json").unlink()  # the header copy of the metadata is enough
    assert read_sidecar(path)["model"] == name
    with torch.no_grad():
        torch.testing.assert_close(load_model(path).eval()(x), model(x), rtol=0, atol=0)


def test_load_model_keeps_non_default_arguments(tmp_path):
    model = _model("vitpose_tiny", skeleton="mpii16", input_size=(64, 96), decoder="simple")
    path = save_weights(model, tmp_path / "m.safetensors")
    again = load_model(path, grad_checkpointing=True)
    assert again.num_joints == 16 and again.input_size == (64, 96) and again.decoder == "simple"
    assert again.grad_checkpointing


def test_skeleton_mismatch_is_refused(tmp_path):
    path = save_weights(_model("simplebaseline_tiny"), tmp_path / "m.safetensors")
    with pytest.raises(DataError, match="skeleton 'coco17'.*'mpii16'"):
        load_weights(create_model("simplebaseline_tiny", skeleton="mpii16"), path)
    (tmp_path / "m.json").unlink()
    with pytest.raises(DataError, match=r"head\.final_layer\.weight"):
        load_weights(create_model("simplebaseline_tiny", skeleton="mpii16"), path)


def test_official_vitpose_checkpoint_loads_exactly(tmp_path):
    model = _model("vitpose_tiny")
    sd = _official(model)
    assert "backbone.last_norm.weight" in sd and "keypoint_head.deconv_layers.4.running_var" in sd
    assert sd["backbone.pos_embed"].shape == (1, 1 + 8 * 6, 192)
    path = tmp_path / "vitpose.pth"
    torch.save({"meta": {"epoch": 210, "mmcv_version": "1.3.9"}, "state_dict": sd, "optimizer": {}}, path)
    loaded = create_model("vitpose_tiny", weights=path).eval()
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        want = _official_forward(sd, x, num_heads=3)
        torch.testing.assert_close(model(x), want, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(loaded(x), want, atol=1e-5, rtol=1e-4)


def test_official_simple_decoder_and_dropped_cls_token(tmp_path):
    model = _model("vitpose_tiny", decoder="simple")
    sd = _official(model)
    sd["backbone.cls_token"] = torch.zeros(1, 1, 192)
    assert sd["keypoint_head.final_layer.weight"].shape == (17, 192, 3, 3)
    path = tmp_path / "simple.pth"
    torch.save({"state_dict": sd}, path)
    loaded = create_model("vitpose_tiny", decoder="simple").eval()
    report = load_weights(loaded, path)
    assert report.layout == "vitpose" and report.dropped == ["backbone.cls_token"] and not report.resized
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("layout", "decoder"), [("vitpose", "classic"), ("vitpose", "simple"),
                                               ("mmpose1", "classic"), ("mmpose1", "simple")])
@pytest.mark.parametrize("src_grid", [(8, 6), (16, 12)], ids=["same-size", "from-256x192"])
def test_documented_layouts_load_exactly(layout, decoder, src_grid, tmp_path):
    """Hand-built 0.x / 1.x checkpoints (documented names and pos-embed slots) give the reference outputs."""
    sd = _documented_checkpoint(layout, src_grid, decoder)
    path = tmp_path / f"{layout}.pth"
    torch.save({"meta": {"epoch": 210}, "state_dict": sd}, path)
    model = create_model("vitpose_tiny", decoder=decoder, **_TINY).eval()  # 128x96 -> 8x6 grid
    report = load_weights(model, path)
    assert report.layout == layout and report.resized == ([] if src_grid == (8, 6) else ["backbone.pos_embed"])
    want_pos = _reference_pos(sd["backbone.pos_embed"], "add" if layout == "vitpose" else None, src_grid, (8, 6))
    torch.testing.assert_close(model.backbone.pos_embed.detach().reshape(8, 6, 32), want_pos)
    x = torch.randn(2, 3, 128, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = _official_forward(sd, x, num_heads=2, layout=layout, src_grid=src_grid)
        assert want.shape == (2, 17, 32, 24) and want.std() > 0.1
        torch.testing.assert_close(model(x), want, atol=1e-4, rtol=1e-4)


def test_pos_embed_slot_rules(tmp_path):
    """1.x with mmpretrain's cls token: slot 0 is the token's and is dropped; a 0.x file without the documented
    extra slot (or a grid that cannot be inferred) is refused, naming the key, instead of loading a 47x1 grid."""
    model = create_model("vitpose_tiny", **_TINY)
    sd = _documented_checkpoint("mmpose1", (8, 6))
    sd["backbone.cls_token"] = torch.randn(1, 1, 32)
    sd["backbone.pos_embed"] = torch.cat([torch.randn(1, 1, 32), sd["backbone.pos_embed"]], dim=1)
    out, report = convert_vitpose_checkpoint(sd, model)
    assert report.dropped == ["backbone.cls_token"] and not report.resized
    torch.testing.assert_close(out["backbone.pos_embed"], sd["backbone.pos_embed"][:, 1:])
    sd = _documented_checkpoint("vitpose", (8, 6))
    sd["backbone.pos_embed"] = sd["backbone.pos_embed"][:, 1:]  # 48 tokens: 47 after the cls slot
    with pytest.raises(DataError, match=r"47 patch tokens give no plausible grid.*8x6.*47x1.*src_grid"):
        convert_vitpose_checkpoint(sd, model, file="x.pth")
    with pytest.raises(DataError, match=r"x\.pth.*backbone\.pos_embed.*48 patch tokens do not form a 8x5 grid"):
        convert_vitpose_checkpoint(_documented_checkpoint("vitpose", (8, 6)), model, src_grid=(8, 5), file="x.pth")


@pytest.mark.parametrize("cls_token", [True, False], ids=["with-cls", "no-cls"])
def test_backbone_init_pos_embed_slots(cls_token, tmp_path):
    """timm / MAE layout: ``(1, 1 + N, D)`` with a cls token (slot 0 added to every token, as ViTPose does with
    MAE weights), ``(1, N, D)`` without; a 4x4 grid is resampled in 2-D to the model's 8x6."""
    model = create_model("vitpose_tiny", **_TINY)
    gen = torch.Generator().manual_seed(2)
    sd = {k: torch.randn(v.shape, generator=gen) for k, v in model.backbone.state_dict().items()}
    sd["pos_embed"] = torch.randn(1, 16 + cls_token, 32, generator=gen)
    if cls_token:
        sd["cls_token"] = torch.zeros(1, 1, 32)
    path = tmp_path / "timm.safetensors"
    save_file(sd, str(path))
    report = load_backbone_weights(model, path)
    assert report.resized == ["pos_embed"]
    want = _reference_pos(sd["pos_embed"], "add" if cls_token else None, (4, 4), (8, 6))
    torch.testing.assert_close(model.backbone.pos_embed.detach().reshape(8, 6, 32), want)


def test_pos_embed_is_resampled_for_another_input_size(tmp_path):
    model = _model("vitpose_tiny")  # 128x96 -> 8x6 grid
    sd = _official(model)
    folded = sd["backbone.pos_embed"][:, 1:] + sd["backbone.pos_embed"][:, :1]
    path = tmp_path / "vitpose.pth"
    torch.save({"state_dict": sd}, path)
    bigger = create_model("vitpose_tiny", input_size=(128, 160))  # 10x8 grid
    report = load_weights(bigger, path)
    assert report.resized == ["backbone.pos_embed"]
    want = resample_abs_pos_embed(folded, new_size=[10, 8], old_size=[8, 6], num_prefix_tokens=0,
                                  interpolation="bicubic", antialias=False)
    torch.testing.assert_close(bigger.backbone.pos_embed.data, want)
    # A constant embedding stays constant under resampling.
    sd["backbone.pos_embed"] = torch.cat([torch.zeros(1, 1, 192), torch.full((1, 48, 192), 0.5)], dim=1)
    torch.save({"state_dict": sd}, path)
    load_weights(bigger, path)
    torch.testing.assert_close(bigger.backbone.pos_embed.data, torch.full((1, 80, 192), 0.5))
    out, _ = convert_vitpose_checkpoint(sd, bigger, src_grid=(8, 6))
    assert out["backbone.pos_embed"].shape == (1, 80, 192)


def test_key_errors_name_the_keys(tmp_path):
    model = _model("vitpose_tiny")
    sd = to_official_vitpose(model)
    del sd["backbone.blocks.3.mlp.fc1.weight"]
    sd["keypoint_head.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(DataError, match=r"broken\.pth.*blocks\.3\.mlp\.fc1\.weight.*head\.extra\.weight"):
        load_weights(create_model("vitpose_tiny"), path)
    with pytest.warns(UserWarning, match="1 missing and 1 unexpected"):
        report = load_weights(create_model("vitpose_tiny"), path, strict=False)
    assert report.missing == ["backbone.blocks.3.mlp.fc1.weight"] and report.unexpected == ["head.extra.weight"]
    with pytest.raises(DataError, match="shape mismatch.*head.final_layer.weight"):
        load_weights(create_model("vitpose_tiny", skeleton="mpii16"), tmp_path / "broken.pth", strict=False)
    with pytest.raises(DataError, match="not found"):
        load_weights(model, tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=r"junk\.pth.*cannot read checkpoint"):
        load_weights(model, tmp_path / "junk.pth")


def test_mae_encoder_initialises_the_backbone(tmp_path):
    model = create_model("vitpose_tiny", patch_size=16)
    d = 192
    torch.manual_seed(3)
    mae = {k[len("backbone."):]: torch.randn_like(v) for k, v in model.state_dict().items()
           if k.startswith("backbone.") and k != "backbone.pos_embed"}
    mae["patch_embed.proj.weight"] = torch.randn(d, 3, 14, 14)  # ViT-H style 14x14 kernel
    mae["pos_embed"] = torch.cat([torch.zeros(1, 1, d), torch.full((1, 16, d), 0.25)], dim=1)  # 4x4 grid + cls
    mae["cls_token"] = torch.zeros(1, 1, d)
    mae["mask_token"] = torch.zeros(1, 1, d)
    mae["decoder_embed.weight"] = torch.zeros(4, d)
    path = tmp_path / "mae.safetensors"
    save_file(mae, str(path))
    head_before = model.head.final_layer.weight.clone()
    report = load_backbone_weights(model, path)
    kernel = model.backbone.patch_embed.proj.weight.data
    torch.testing.assert_close(kernel[:, :, 1:15, 1:15], mae["patch_embed.proj.weight"])
    assert kernel[:, :, 0].abs().sum() == 0 and kernel[:, :, :, -1].abs().sum() == 0
    torch.testing.assert_close(model.backbone.pos_embed.data, torch.full((1, 48, d), 0.25))
    torch.testing.assert_close(model.backbone.blocks[2].attn.qkv.weight.data, mae["blocks.2.attn.qkv.weight"])
    assert model.backbone.norm.weight.data.eq(1).all()  # MAE norm ignored, as in ViTPose
    assert torch.equal(model.head.final_layer.weight, head_before)
    assert sorted(report.resized) == ["patch_embed.proj.weight", "pos_embed"]
    assert {"cls_token", "mask_token", "decoder_embed.weight", "norm.weight", "norm.bias"} == set(report.dropped)
    assert report.missing == ["backbone.norm.bias", "backbone.norm.weight"] and not report.unexpected
    del mae["blocks.1.norm1.weight"]
    save_file(mae, str(path))
    with pytest.raises(DataError, match=r"blocks\.1\.norm1\.weight"):
        load_backbone_weights(model, path)


def test_cnn_backbone_init_from_timm_layout(tmp_path):
    model = create_model("simplebaseline_tiny")
    sd = {k[len("backbone."):]: torch.rand_like(v.float()).to(v.dtype) for k, v in model.state_dict().items()
          if k.startswith("backbone.")}
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(1000, 256), torch.zeros(1000)
    path = tmp_path / "resnet.pth"
    torch.save(sd, path)
    report = load_backbone_weights(model, path)
    assert sorted(report.dropped) == ["fc.bias", "fc.weight"] and not report.missing
    torch.testing.assert_close(model.backbone.layer3[0].conv1.weight.data, sd["layer3.0.conv1.weight"])
