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


def _official_forward(sd, x, num_heads):
    """Reference ViTPose forward written from the brief (pose2d.md 2.1/2.2), on the official state dict."""
    g = sd.__getitem__
    t = F.conv2d(x, g("backbone.patch_embed.proj.weight"), g("backbone.patch_embed.proj.bias"), stride=16,
                 padding=2)
    b, d, hh, ww = t.shape
    t = t.flatten(2).transpose(1, 2)
    pos = g("backbone.pos_embed")
    t = t + pos[:, 1:] + pos[:, :1]
    i = 0
    while f"backbone.blocks.{i}.norm1.weight" in sd:
        p = f"backbone.blocks.{i}."
        y = F.layer_norm(t, (d,), g(p + "norm1.weight"), g(p + "norm1.bias"), eps=1e-6)
        qkv = F.linear(y, g(p + "attn.qkv.weight"), g(p + "attn.qkv.bias")).reshape(b, -1, 3, num_heads, d // num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * (d // num_heads) ** -0.5).softmax(-1)
        y = (attn @ v).transpose(1, 2).reshape(b, -1, d)
        t = t + F.linear(y, g(p + "attn.proj.weight"), g(p + "attn.proj.bias"))
        y = F.layer_norm(t, (d,), g(p + "norm2.weight"), g(p + "norm2.bias"), eps=1e-6)
        y = F.linear(F.gelu(F.linear(y, g(p + "mlp.fc1.weight"), g(p + "mlp.fc1.bias"))),
                     g(p + "mlp.fc2.weight"), g(p + "mlp.fc2.bias"))
        t = t + y
        i += 1
    t = F.layer_norm(t, (d,), g("backbone.last_norm.weight"), g("backbone.last_norm.bias"), eps=1e-6)
    f = t.transpose(1, 2).reshape(b, d, hh, ww)
    for j in (0, 3):
        h = f"keypoint_head.deconv_layers.{j}.weight"
        f = F.conv_transpose2d(f, g(h), stride=2, padding=1)
        n = f"keypoint_head.deconv_layers.{j + 1}."
        f = F.relu(F.batch_norm(f, g(n + "running_mean"), g(n + "running_var"), g(n + "weight"), g(n + "bias"),
                                eps=1e-5))
    return F.conv2d(f, g("keypoint_head.final_layer.weight"), g("keypoint_head.final_layer.bias"))


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


def test_mmpose1_layout_loads_exactly(tmp_path):
    model = _model("vitpose_tiny")
    renames = [("backbone.patch_embed.proj.", "backbone.patch_embed.projection."), (".norm1.", ".ln1."),
               (".norm2.", ".ln2."), (".mlp.fc1.", ".ffn.layers.0.0."), (".mlp.fc2.", ".ffn.layers.1."),
               ("backbone.last_norm.", "backbone.ln1."), ("keypoint_head.", "head."), ("backbone.blocks.",
                                                                                     "backbone.layers.")]
    sd = {}
    for k, v in _official(model).items():
        for a, b in renames:
            k = k.replace(a, b)
        sd[k] = v
    path = tmp_path / "mmpose1.pth"
    torch.save({"state_dict": sd}, path)
    loaded = create_model("vitpose_tiny").eval()
    assert load_weights(loaded, path).layout == "mmpose1"
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=1e-4)


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
