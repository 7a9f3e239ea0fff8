"""The DensePose export (pretraining.md A.6, A.7.1; humanvision/models/detectron2_export.py) and the HRFPN neck
(humanvision/models/hrfpn.py), without detectron2: key names and shapes against a hand-written HRNet-W18 / HRFPN
layout, a file that plain ``pickle`` loads into numpy arrays only (and that names no numpy-2-only module), a
simulation of detectron2's suffix-matching rule, the pyramid's levels and the CLI / ``export_encoders`` hook.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from humanvision.cli import app
from humanvision.errors import DataError
from humanvision.methods import hcmoco as H
from humanvision.models import create_model
from humanvision.models.detectron2_export import (
    detectron2_state,
    export_densepose,
    read_detectron2_checkpoint,
    write_detectron2_checkpoint,
)
from humanvision.models.hcmoco import HRNetEncoder, extract_encoder
from humanvision.models.hrfpn import HRFPN

torch.set_num_threads(1)

W18 = (18, 36, 72, 144)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


# ------------------------------------------------------------------------------------ hand-written expectations
def official_hrnet_layout(channels=W18, modules=(1, 4, 3), blocks=4) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the official HRNetV2 backbone (the layout detectron2's DensePose HRNet and the seg HRNet use;
    A.3.1): stem, layer1 of 4 bottlenecks (64 -> 256), transitions, stages 2-4 of BASIC blocks with fuse layers."""
    keys: dict[str, tuple[int, ...]] = {}

    def conv(name, cout, cin, k):
        keys[f"{name}.weight"] = (cout, cin, k, k)

    def bn(name, c):
        for s in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{name}.{s}"] = (c,)
        keys[f"{name}.num_batches_tracked"] = ()

    conv("conv1", 64, 3, 3), bn("bn1", 64), conv("conv2", 64, 64, 3), bn("bn2", 64)
    cin = 64
    for b in range(4):
        p = f"layer1.{b}"
        conv(f"{p}.conv1", 64, cin, 1), bn(f"{p}.bn1", 64), conv(f"{p}.conv2", 64, 64, 3), bn(f"{p}.bn2", 64)
        conv(f"{p}.conv3", 256, 64, 1), bn(f"{p}.bn3", 256)
        if b == 0:
            conv(f"{p}.downsample.0", 256, 64, 1), bn(f"{p}.downsample.1", 256)
        cin = 256
    pre = [256]
    for s, num_modules in zip((2, 3, 4), modules):
        cur = list(channels[:s])
        t = f"transition{s - 1}"
        for i, c in enumerate(cur):
            if i < len(pre):
                if c != pre[i]:
                    conv(f"{t}.{i}.0", c, pre[i], 3), bn(f"{t}.{i}.1", c)
            else:  # a new branch: strided 3x3 convs from the last one
                conv(f"{t}.{i}.0.0", c, pre[-1], 3), bn(f"{t}.{i}.0.1", c)
        for m in range(num_modules):
            for i, c in enumerate(cur):
                for b in range(blocks):
                    p = f"stage{s}.{m}.branches.{i}.{b}"
                    conv(f"{p}.conv1", c, c, 3), bn(f"{p}.bn1", c), conv(f"{p}.conv2", c, c, 3), bn(f"{p}.bn2", c)
            for i, ci in enumerate(cur):
                for j, cj in enumerate(cur):
                    p = f"stage{s}.{m}.fuse_layers.{i}.{j}"
                    if j > i:  # 1x1 conv + BN, then upsampling
                        conv(f"{p}.0", ci, cj, 1), bn(f"{p}.1", ci)
                    for k in range(i - j):  # j < i: i - j strided 3x3 convs, the last one to c_i
                        cout = ci if k == i - j - 1 else cj
                        conv(f"{p}.{k}.0", cout, cj, 3), bn(f"{p}.{k}.1", cout)
        pre = cur
    return keys


def densepose_hrfpn_layout(channels=W18, out=256, levels=5) -> dict[str, tuple[int, ...]]:
    """Key -> shape of detectron2 DensePose's HRFPN layers (the ``densepose`` style)."""
    keys: dict[str, tuple[int, ...]] = {}

    def bn(name, c):
        for s in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{name}.{s}"] = (c,)
        keys[f"{name}.num_batches_tracked"] = ()

    for i, c in enumerate(channels):
        keys[f"interp_conv.{i}.0.weight"] = (c, c, 4, 4)  # ConvTranspose2d: (in, out, k, k), no bias
        bn(f"interp_conv.{i}.1", c)
    for k in range(levels):
        keys[f"reduction_pooling_conv.{k}.0.weight"] = (out, sum(channels), 2 ** k, 2 ** k)
        keys[f"reduction_pooling_conv.{k}.0.bias"] = (out,)
        bn(f"reduction_pooling_conv.{k}.1", out)
        keys[f"fpn_conv.{k}.weight"] = (out, out, 3, 3)
        keys[f"fpn_conv.{k}.bias"] = (out,)
    return keys


def suffix_match(model_keys, ckpt_keys) -> dict[str, str]:
    """detectron2's matching heuristic as documented: checkpoint key ``c`` matches model key ``m`` when ``m == c``
    or ``m`` ends with ``"." + c``; each model key takes its longest match; a checkpoint key taken by two model keys
    is an error. Returns checkpoint key -> model key."""
    ckpt = set(ckpt_keys)
    taken: dict[str, str] = {}
    for m in model_keys:
        parts = m.split(".")  # c == m or m ends with "." + c  <=>  c is one of m's dot-suffixes
        cands = [s for s in (".".join(parts[i:]) for i in range(len(parts))) if s in ckpt]
        if not cands:
            continue
        best = max(cands, key=len)
        assert sum(len(c) == len(best) for c in cands) == 1
        assert best not in taken, f"{best} matches both {taken.get(best)} and {m}"
        taken[best] = m
    return taken


# ----------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def w18(tmp_path_factory):
    torch.manual_seed(0)
    flat = HRNetEncoder("hrnet_w18").state_dict()
    path = export_densepose(flat, tmp_path_factory.mktemp("d2") / "rgb_encoder_densepose.pkl")
    return {"flat": flat, "path": path}


# ----------------------------------------------------------------------------------------------------- tests
def test_hrnet_w18_keys_and_shapes_are_the_official_layout_under_backbone_bottom_up(w18):
    with open(w18["path"], "rb") as f:
        ckpt = pickle.load(f)
    assert set(ckpt) == {"model", "__author__", "matching_heuristics"}
    assert ckpt["__author__"] == "humanvision" and ckpt["matching_heuristics"] is True
    expected = {"backbone.bottom_up." + k: s for k, s in official_hrnet_layout().items()}
    got = {k: tuple(v.shape) for k, v in ckpt["model"].items()}
    assert sorted(set(got) ^ set(expected)) == [] and got == expected
    assert len(got) == len(w18["flat"])
    for k, v in w18["flat"].items():
        arr = ckpt["model"]["backbone.bottom_up." + k]
        assert arr.dtype == v.numpy().dtype and np.array_equal(arr, v.numpy())


def test_file_loads_with_plain_pickle_into_numpy_arrays_only(w18):
    seen = set()

    class Recording(pickle.Unpickler):
        def find_class(self, module, name):
            seen.add((module, name))
            return super().find_class(module, name)

    data = w18["path"].read_bytes()
    ckpt = Recording(io.BytesIO(data), encoding="latin1").load()  # as detectron2 reads .pkl files
    assert all(type(v) is np.ndarray and v.flags.writeable for v in ckpt["model"].values())
    assert all(isinstance(k, str) for k in ckpt["model"])
    # only globals that numpy 1.x and 2.x both have (numpy 2's own pickles name numpy._core)
    assert seen == {("numpy", "ndarray"), ("numpy", "dtype"), ("builtins", "bytearray")}
    ours = read_detectron2_checkpoint(w18["path"])  # the restricted reader agrees
    assert ours.keys() == ckpt["model"].keys() and all(np.array_equal(ours[k], ckpt["model"][k]) for k in ours)
    assert ckpt["model"]["backbone.bottom_up.bn1.num_batches_tracked"].shape == ()


def test_suffix_matching_maps_every_hrnet_key_to_exactly_its_model_key(w18):
    layout = official_hrnet_layout()
    model = {"backbone.bottom_up." + k: s for k, s in layout.items()}
    model.update({"backbone." + k: s for k, s in densepose_hrfpn_layout().items()})
    model.update({"proposal_generator.rpn_head.conv.weight": (256, 256, 3, 3),
                  "roi_heads.box_head.fc1.weight": (1024, 12544), "roi_heads.box_predictor.cls_score.weight": (2, 1024),
                  "roi_heads.densepose_head.decoder_p1.weight": (256, 256, 3, 3), "pixel_mean": (3, 1, 1)})
    ckpt = read_detectron2_checkpoint(w18["path"])
    taken = suffix_match(model, ckpt)
    assert set(taken) == set(ckpt)  # every exported key is used, once
    assert all(m == c for c, m in taken.items())  # ... by exactly its own model key
    assert all(tuple(ckpt[c].shape) == model[m] for c, m in taken.items())
    # A.6's flat file (no prefix) relies on the suffix rule alone, and it maps the same way
    flat_taken = suffix_match(model, list(layout))
    assert set(flat_taken) == set(layout) and all(m == "backbone.bottom_up." + c for c, m in flat_taken.items())


def test_hrfpn_levels_shapes_and_the_paper_layout_by_hand():
    torch.manual_seed(0)
    feats = [torch.randn(1, c, 80 // 2 ** i, 80 // 2 ** i) for i, c in enumerate(W18)]  # a 320x320 image
    paper = HRFPN(W18).eval()
    out = paper(feats)
    assert list(out) == ["p1", "p2", "p3", "p4", "p5"] and paper.strides == {"p1": 4, "p2": 8, "p3": 16, "p4": 32,
                                                                               "p5": 64}
    assert [tuple(v.shape) for v in out.values()] == [(1, 256, n, n) for n in (80, 40, 20, 10, 5)]
    x = torch.cat([feats[0]] + [F.interpolate(f, size=(80, 80), mode="bilinear", align_corners=False)
                                for f in feats[1:]], 1)
    x = F.conv2d(x, paper.reduction_conv.weight, paper.reduction_conv.bias)
    for k in range(5):
        level = F.avg_pool2d(x, 2 ** k, 2 ** k) if k else x
        ref = F.conv2d(level, paper.fpn_conv[k].weight, paper.fpn_conv[k].bias, padding=1)
        assert torch.allclose(out[f"p{k + 1}"], ref, atol=1e-5)
    assert {k: tuple(v.shape) for k, v in paper.state_dict().items()} == {
        "reduction_conv.weight": (256, 270, 1, 1), "reduction_conv.bias": (256,),
        **{f"fpn_conv.{k}.{s}": (256, 256, 3, 3) if s == "weight" else (256,) for k in range(5)
           for s in ("weight", "bias")}}
    dp = HRFPN(W18, style="densepose").eval()
    assert {k: tuple(v.shape) for k, v in dp.state_dict().items()} == densepose_hrfpn_layout()
    # transposed convs give 83, 82, 80, 76 px, cropped to 76; levels 76, 38, 19, 9, 4, cropped to 4 * 2^(4-k)
    assert [tuple(v.shape) for v in dp(feats).values()] == [(1, 256, n, n) for n in (64, 32, 16, 8, 4)]
    with pytest.raises(DataError, match="branch maps"):
        dp(feats[:3])


def test_neck_export_is_seeded_and_matches_the_densepose_neck(w18, tmp_path):
    state = torch.get_rng_state()
    a = export_densepose(w18["flat"], tmp_path / "a.pkl", neck=True, seed=3, out_channels=64)
    b = export_densepose(w18["flat"], tmp_path / "b.pkl", neck=True, seed=3, out_channels=64)
    assert torch.equal(torch.get_rng_state(), state)
    ca, cb = read_detectron2_checkpoint(a), read_detectron2_checkpoint(b)
    assert ca.keys() == cb.keys() and all(np.array_equal(ca[k], cb[k]) for k in ca)
    neck = {k[len("backbone."):]: tuple(v.shape) for k, v in ca.items() if not k.startswith("backbone.bottom_up.")}
    assert neck == densepose_hrfpn_layout(out=64)
    model = {"backbone.bottom_up." + k: s for k, s in official_hrnet_layout().items()}
    model.update({"backbone." + k: s for k, s in densepose_hrfpn_layout(out=64).items()})
    taken = suffix_match(model, ca)
    assert set(taken) == set(ca) and all(m == c for c, m in taken.items())
    given = HRFPN(W18, 32, style="densepose")
    c = read_detectron2_checkpoint(export_densepose(w18["flat"], tmp_path / "c.pkl", neck=given))
    assert np.array_equal(c["backbone.fpn_conv.0.weight"], given.fpn_conv[0].weight.detach().numpy())


def test_bad_inputs_are_named_errors(w18, tmp_path):
    prefixed = {"encoder1." + k: v for k, v in w18["flat"].items()}
    with pytest.raises(DataError, match="stage4.0.branches"):
        detectron2_state(prefixed)
    with pytest.raises(DataError, match="prefixed key"):
        detectron2_state({**w18["flat"], "module.extra": torch.zeros(1)})
    with pytest.raises(DataError, match=r"\.pkl"):
        write_detectron2_checkpoint(tmp_path / "x.pth", {})
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"model": {"a": [1, 2]}, "__author__": "x"}))
    with pytest.raises(DataError, match="not a numpy array"):
        read_detectron2_checkpoint(bad)


def test_export_encoders_and_cli_write_the_densepose_file(tmp_path):
    torch.manual_seed(0)
    model = create_model("hcmoco_tiny", skeleton="mpii16")
    official = tmp_path / "ckpt_epoch_100.pth"  # an official-style pre-training checkpoint
    torch.save({"model": {"module." + k: v for k, v in model.state_dict().items()}}, official)
    paths = H.export_encoders(official, tmp_path / "export", densepose=True)
    assert sorted(paths) == ["densepose", "depth", "rgb"] and paths["densepose"].name == "rgb_encoder_densepose.pkl"
    rgb = extract_encoder(model.state_dict(), "encoder1")
    ckpt = read_detectron2_checkpoint(paths["densepose"])
    assert ckpt.keys() == {"backbone.bottom_up." + k for k in rgb}
    assert all(np.array_equal(ckpt["backbone.bottom_up." + k], v.numpy()) for k, v in rgb.items())
    result = CliRunner().invoke(app, ["export", str(CONFIGS / "hcmoco_tiny_synthetic_stage1.yaml"), "--weights",
                                      str(official), "--out", str(tmp_path / "cli"), "--densepose"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli" / "rgb_encoder_densepose.pkl").is_file() and "densepose:" in result.output
