"""Contract tests over every registered pose model (CPU, reduced configs, no weights)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from humanvision.errors import ConfigError
from humanvision.models import (
    PoseModel,
    _registry,
    create_model,
    is_model,
    layer_decay_param_groups,
    list_models,
    model_entrypoint,
    register_model,
)
from humanvision.skeletons import SkeletonError

torch.set_num_threads(1)

# pre-training models (models/mae.py, models/hcmoco.py) are not heatmap models
NOT_POSE = ["pose_mae_*", "hcmoco_*", "reid_*", "attr_*", "t2i_*", "parsing_*", "a2j_*", "smpl_*", "mesh3d_*"]
ALL = list_models(exclude=NOT_POSE)  # the 2D / 3D pose models (pre-training and downstream families: own tests)
TINY = list_models("*tiny", exclude=["*swin*", *NOT_POSE])


def reduced_kwargs(name: str) -> dict:
    """Keyword overrides that make any registered model cheap enough for a CPU contract test."""
    if name.endswith("tiny") and "swin" not in name:
        return {}
    if name.startswith("vitpose"):
        return {"depth": 1, "input_size": (64, 96)}
    if "swin" in name:
        return {"input_size": (64, 96), "backbone_args": {"depths": (1, 1, 1, 1)}}
    return {"input_size": (64, 64)}


def build(name: str, **kwargs) -> PoseModel:
    torch.manual_seed(0)
    return create_model(name, **{**reduced_kwargs(name), **kwargs})


def randomize_head(model: PoseModel) -> None:
    """Give the head O(1) weights (the reference init, std 0.001, makes every output ~1e-6)."""
    torch.manual_seed(1)
    for p in model.head.parameters():
        nn.init.normal_(p, std=0.2)


def test_registry_lists_every_family():
    expected = {"vitpose_tiny", "vitpose_small", "vitpose_base", "vitpose_large", "vitpose_huge",
                "vitpose_base_simple", "hrnet_w32", "hrnet_w48", "simplebaseline_resnet50",
                "simplebaseline_swin_base", "simplebaseline_tiny", "lateral_tiny", "lateral_resnet18"}
    assert expected <= set(ALL)
    assert list_models("vitpose_b*") == ["vitpose_base", "vitpose_base_simple"]
    assert "vitpose_base" not in list_models("vitpose_*", exclude="*base*")
    assert is_model("hrnet_w32") and not is_model("hrnet_w33")


def test_unknown_model_names_close_matches():
    with pytest.raises(ConfigError, match="vitpose_base"):
        create_model("vitpose_bsae")
    with pytest.raises(ConfigError, match="unknown model 'zzz'"):
        model_entrypoint("zzz")


def test_register_model_warns_on_overwrite():
    def _hv_test_model(skeleton="coco17", **kwargs):
        return nn.Identity()

    try:
        register_model(_hv_test_model)
        assert is_model("_hv_test_model")
        with pytest.warns(UserWarning, match="re-registered"):
            register_model(_hv_test_model)
    finally:
        _registry._model_entrypoints.pop("_hv_test_model", None)
        _registry._model_to_module.pop("_hv_test_model", None)


# Backbone parameter counts of the brief (pose2d.md 2.1) and of the HRNet / SimpleBaseline papers.
PARAMS_M = {"lateral_resnet18": (11.1, 11.3), 
    "vitpose_small": (21.0, 22.5), "vitpose_base": (85.0, 87.0), "vitpose_large": (302.0, 305.0),
    "vitpose_huge": (629.0, 634.0),
}
TOTAL_M = {"vitpose_base": (86.0, 90.5), "vitpose_base_simple": (85.5, 86.5), "hrnet_w32": (28.0, 29.0),
           "hrnet_w48": (63.0, 64.0), "simplebaseline_resnet50": (33.5, 34.5)}


@pytest.mark.parametrize("name", ALL)
def test_full_size_builds_on_meta_device(name):
    with torch.device("meta"):
        model = create_model(name)
    total = sum(p.numel() for p in model.parameters()) / 1e6
    backbone = sum(p.numel() for p in model.backbone.parameters()) / 1e6
    if name in PARAMS_M:
        lo, hi = PARAMS_M[name]
        assert lo <= backbone <= hi, f"{name}: backbone {backbone:.1f}M"
    if name in TOTAL_M:
        lo, hi = TOTAL_M[name]
        assert lo <= total <= hi, f"{name}: {total:.1f}M"
    assert model.heatmap_size == (model.input_size[0] // 4, model.input_size[1] // 4)
    assert model.default_cfg["model"] == name and model.model_name == name


def test_vitpose_architecture_matches_brief():
    with torch.device("meta"):
        m = create_model("vitpose_base")
    vit = m.backbone
    assert m.input_size == (192, 256) and m.heatmap_size == (48, 64)
    assert vit.patch_embed.proj.padding == (2, 2) and vit.patch_embed.grid_size == (16, 12)
    assert vit.pos_embed.shape == (1, 192, 768) and vit.cls_token is None
    assert vit.blocks[0].norm1.eps == 1e-6 and vit.norm.eps == 1e-6
    assert vit.blocks[0].attn.qkv.bias is not None
    assert vit.blocks[-1].drop_path1.drop_prob == pytest.approx(0.3)
    assert isinstance(vit.blocks[0].drop_path1, nn.Identity)  # linear from 0
    deconv = m.head.deconv_layers
    assert [type(x).__name__ for x in deconv] == ["ConvTranspose2d", "BatchNorm2d", "ReLU"] * 2
    assert deconv[0].weight.shape == (768, 256, 4, 4) and m.head.final_layer.weight.shape == (17, 256, 1, 1)
    assert m.default_cfg["udp"] is True and m.default_cfg["layer_decay"] == 0.75
    with torch.device("meta"):
        s = create_model("vitpose_small_simple")
    assert s.backbone.blocks[0].attn.num_heads == 12 and s.head.final_layer.weight.shape == (17, 384, 3, 3)


@pytest.mark.parametrize("name", ALL)
def test_forward_contract(name):
    model = build(name).eval()
    randomize_head(model)
    w, h = model.input_size
    x = torch.randn(2, 3, h, w)
    with torch.no_grad():
        feats = model.forward_features(x)
        out = model(x)
        again = model.forward_head(feats)
    assert out.shape == (2, model.num_joints, model.heatmap_size[1], model.heatmap_size[0])
    assert torch.isfinite(out).all() and out.abs().max() > 0
    torch.testing.assert_close(out, again)
    assert feats.ndim == 4 and feats.shape[0] == 2
    ids = {n: model.layer_id(n) for n, _ in model.named_parameters()}
    assert min(ids.values()) == 0 and max(ids.values()) == model.num_layers - 1
    nwd = model.no_weight_decay()
    assert all(n in nwd for n, p in model.named_parameters() if p.ndim == 1)
    assert "head.final_layer.weight" not in nwd


def test_layer_ids_follow_the_vit_and_swin_rules():
    m = build("vitpose_tiny")
    assert m.num_layers == 6 + 2
    assert m.layer_id("backbone.patch_embed.proj.weight") == 0 and m.layer_id("backbone.pos_embed") == 0
    assert m.layer_id("backbone.blocks.0.attn.qkv.weight") == 1
    assert m.layer_id("backbone.blocks.5.mlp.fc2.bias") == 6
    assert m.layer_id("backbone.norm.weight") == 7 and m.layer_id("head.final_layer.weight") == 7
    s = create_model("simplebaseline_swin_tiny", input_size=(64, 96))  # depths 2, 2, 6, 2 (+ 3 patch mergings)
    assert s.num_layers == 12 + 3 + 2
    assert s.layer_id("backbone.layers.0.blocks.1.attn.qkv.weight") == 2
    assert s.layer_id("backbone.layers.1.downsample.reduction.weight") == 3
    assert s.layer_id("backbone.layers.1.blocks.0.attn.qkv.weight") == 4
    assert s.layer_id("backbone.layers.2.downsample.reduction.weight") == 6
    assert s.layer_id("backbone.layers.3.blocks.1.mlp.fc1.weight") == 15
    assert s.layer_id("head.final_layer.weight") == 16


def test_layer_decay_param_groups():
    m = build("vitpose_tiny")
    groups = layer_decay_param_groups(m, weight_decay=0.1, layer_decay=0.5)
    names = [n for g in groups for n in g["param_names"]]
    assert sorted(names) == sorted(n for n, _ in m.named_parameters())
    by_name = {n: g for g in groups for n in g["param_names"]}
    assert by_name["backbone.patch_embed.proj.weight"]["lr_scale"] == pytest.approx(0.5 ** 7)
    assert by_name["backbone.blocks.2.attn.qkv.weight"]["lr_scale"] == pytest.approx(0.5 ** 4)
    assert by_name["head.final_layer.weight"]["lr_scale"] == 1.0
    assert by_name["head.final_layer.weight"]["weight_decay"] == 0.1
    assert by_name["backbone.pos_embed"]["weight_decay"] == 0.0
    assert by_name["backbone.blocks.0.norm1.weight"]["weight_decay"] == 0.0
    m.backbone.patch_embed.requires_grad_(False)
    assert not any("patch_embed" in n for g in layer_decay_param_groups(m, 0.1) for n in g["param_names"])


@pytest.mark.parametrize("name", TINY)
def test_gradients_reach_every_parameter(name):
    model = build(name).train()
    randomize_head(model)
    # timm's zero_init_last starts residual branches at 0 (their grads are 0 at step 0 by design); this test
    # is about connectivity, so make every norm scale non-zero first.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
    w, h = model.input_size
    out = model(torch.randn(2, 3, h, w))
    (out * torch.randn_like(out)).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"no gradient for {no_grad[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", TINY + ["hrnet_w32"])
def test_grad_checkpointing_gives_identical_results(name):
    model = build(name).eval()
    randomize_head(model)
    w, h = model.input_size
    x = torch.randn(1, 3, h, w, requires_grad=True)
    ref = model(x)
    ref.sum().backward()
    ref_grad = x.grad.clone()
    x.grad = None
    model.set_grad_checkpointing(True)
    out = model(x)
    out.sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(x.grad, ref_grad)


@pytest.mark.parametrize("name", TINY)
def test_other_skeleton_changes_output_channels(name):
    model = build(name, skeleton="mpii16")
    w, h = model.input_size
    assert model(torch.randn(1, 3, h, w)).shape[1] == 16 == model.num_joints
    assert model.skeleton == "mpii16" and model.model_args["skeleton"] == "mpii16"


@pytest.mark.parametrize("name", TINY)
def test_compiles_without_graph_breaks(name):
    model = build(name).eval()
    w, h = model.input_size
    x = torch.randn(1, 3, h, w)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.parametrize("name", TINY)
def test_onnx_export_matches_onnxruntime(name, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = build(name).eval()
    randomize_head(model)
    w, h = model.input_size
    x = torch.randn(2, 3, h, w)
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["heatmaps"], dynamic_axes={"input": {0: "batch"}, "heatmaps": {0: "batch"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x3 = torch.randn(3, 3, h, w)
    (got,) = session.run(None, {"input": x3.numpy()})
    with torch.no_grad():
        want = model(x3).numpy()
    assert got.shape == want.shape and abs(want).max() > 1e-2
    torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(want), atol=1e-4, rtol=1e-4)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="divisible by patch_size"):
        create_model("vitpose_tiny", input_size=(100, 128))
    with pytest.raises(ValueError, match="decoder"):
        create_model("vitpose_tiny", decoder="fancy")
    with pytest.raises(ValueError, match="divisible by 32"):
        create_model("simplebaseline_tiny", input_size=(96, 120))
    with pytest.raises(SkeletonError, match="nope"):
        create_model("vitpose_tiny", skeleton="nope")


def test_lateral_stride_2_heatmaps():
    model = build("lateral_tiny", heatmap_stride=2, decoder_channels=16).eval()
    assert model.heatmap_size == (48, 64) and model.default_cfg["heatmap_size"] == (48, 64)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 128, 96))
    assert out.shape == (2, 17, 64, 48) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="no stride-3 feature map"):
        build("lateral_tiny", heatmap_stride=3, input_size=(96, 96))


# ----------------------------------------------------------------------------------------------- model args
@pytest.mark.parametrize("name", ALL)
def test_check_model_args_knows_every_entry_point(name):
    from humanvision.models import check_model_args

    check_model_args(name, {})
    check_model_args(name, {"input_size": (64, 64)})
    msg = rf"model\.args\.bogus_arg: not an argument of {name}; accepted: .*input_size"
    with pytest.raises(ConfigError, match=msg):
        check_model_args(name, {"bogus_arg": 1})


def test_create_model_rejects_a_misspelt_argument_before_building():
    with pytest.raises(ConfigError, match=r"model\.args\.drop_path_rat: not an argument of vitpose_small "
                                          r"\(did you mean drop_path_rate\?\)"):
        create_model("vitpose_small", drop_path_rat=0.1)
    with pytest.raises(ConfigError, match=r"model\.args\.decoder_chanels: .*did you mean decoder_channels"):
        create_model("lateral_tiny", decoder_chanels=16)


def test_register_model_with_explicit_model_cls():
    from humanvision.models import check_model_args

    @register_model(model_cls=nn.Linear)
    def _hv_test_linear(skeleton="coco17", **kwargs):
        return nn.Linear(**kwargs)

    try:
        check_model_args("_hv_test_linear", {"in_features": 3, "out_features": 2})
        with pytest.raises(ConfigError, match=r"model\.args\.in_feature: .*\(did you mean in_features\?\)"):
            create_model("_hv_test_linear", in_feature=3, out_features=2)
        assert create_model("_hv_test_linear", in_features=3, out_features=2).weight.shape == (2, 3)
    finally:
        _registry._model_entrypoints.pop("_hv_test_linear", None)
        _registry._model_to_module.pop("_hv_test_linear", None)
        _registry._model_classes.pop("_hv_test_linear", None)
