"""HCMoCo's parsing downstream tasks (pretraining.md A.7.2, A.7.3, A.7.5, pitfall 12; models/parsing.py,
methods/parsing.py): output shapes at odd sizes, the flip test against the flipped image with its channels
permuted by hand, the evaluation's mIoU against a per-class IoU computed here, the class-weighted CE against its
formula, the training transform, encoder initialisation from flat HRNet / HCMoCo state dicts, a tiny training run
through the engine on a synthetic NTURGBD-Parsing-4K-layout set, and the missing-modality table.

Tiny HRNets (hcmoco_tiny's trunk) on 40-64 px images throughout.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from humanvision.data.io import write_image, write_mask
from humanvision.data.readers.parsing import (
    NTURGBD_PARSING_CLASS_WEIGHTS,
    PARSING_FLIP_PERM,
    PARSING_RAW_IDS,
    Human36MParsing,
    NturgbdParsing,
    center_depth,
    flip_parsing,
)
from humanvision.data.transforms import normalize_image
from humanvision.engine import read_log
from humanvision.errors import ConfigError, DataError
from humanvision.methods import parsing as P
from humanvision.models import create_model
from humanvision.models.hcmoco import TINY_HRNET, HRNetEncoder
from humanvision.models.parsing import ParsingHRNet, RGBDParsingHRNet

torch.set_num_threads(1)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TRAIN = {"precision": "fp32", "channels_last": False, "device": "cpu", "progress": False, "tensorboard": False,
         "log_every": 1, "optimizer": "sgd", "lr": 0.01, "schedule": "poly"}


def _lively(model: nn.Module, seed: int = 0) -> nn.Module:
    """Re-draw every conv with Kaiming init so an untrained model's predictions vary over the image."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
    return model.eval()


# ------------------------------------------------------------------------------------------------ fixtures
def write_h36m_fixture(root: Path, sizes=((40, 48), (44, 44), (36, 52)), seed: int = 0) -> Path:
    """A Human3.6M-parsing folder (official layout) of eval frames with rectangles of random raw part ids."""
    rng = np.random.default_rng(seed)
    lines = []
    for i, (h, w) in enumerate(sizes):
        name = f"S9/Walking 1.54138969/{25 * i:08d}.png"
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        raw = np.zeros((h, w), np.uint8)
        for _ in range(6):
            y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
            raw[y:y + rng.integers(4, 12), x:x + rng.integers(4, 12)] = rng.choice(PARSING_RAW_IDS[1:])
            img[raw > 0] //= 2
        write_image(root / "protocol_1" / "rgb" / name, img)
        write_mask(root / "protocol_1" / "seg" / name, raw)
        lines.append(f"protocol_1/rgb/{name}\n")
    (root / "flist_2hz_eval.txt").write_text("".join(lines))
    (root / "flist_2hz_train.txt").write_text("".join(lines))
    return root


@pytest.fixture(scope="module")
def h36m(tmp_path_factory) -> Path:
    return write_h36m_fixture(tmp_path_factory.mktemp("h36m_parsing"))


NTU_SYNTH = {"synthetic_train": 4, "synthetic_eval": 2, "synthetic_size": [64, 53], "synthetic_seed": 3}


@pytest.fixture(scope="module")
def ntu_dir(tmp_path_factory) -> Path:
    """A synthetic NTURGBD-Parsing-4K set written through the recipe's own first-use path."""
    root = tmp_path_factory.mktemp("ntu_parsing")
    data = P.DataConfig(source="synthetic_nturgbd", synthetic_dir=root, **{k: tuple(v) if isinstance(v, list) else v
                                                                         for k, v in NTU_SYNTH.items()})
    assert P.prepare_synthetic(data, quiet=True) == root
    return root


def ntu_recipe(root: Path, out: Path, modality: str = "depth", model: str = "parsing_hrnet_tiny", **parsing):
    return P.load_recipe({
        "model": {"name": model},
        "parsing": {"modality": modality, **parsing},
        "data": {"source": "synthetic_nturgbd", "synthetic_dir": str(root), **NTU_SYNTH, "base_size": [48, 56],
                 "crop_size": [40, 40]},
        "train": {"epochs": 1, "batch_size": 2, "output_dir": str(out), **TRAIN},
        "eval": {"input_size": [48, 56], "batch_size": 2, "num_vis": 2}})


# ---------------------------------------------------------------------------------------------------- model
@pytest.mark.parametrize("size", [(64, 64), (47, 61), (33, 90)])
def test_parsing_model_output_shapes(size):
    model = create_model("parsing_hrnet_tiny").eval()
    rgbd = create_model("parsing_rgbd_hrnet_tiny").eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert tuple(model(x).shape) == (2, 25, *size)
        feats = model.forward_features(x)
        out = rgbd.forward_modes(x, x.clone())
        assert tuple(rgbd(rgb=x, mode="rgb").shape) == (2, 25, *size)  # no depth needed for the RGB output
    assert feats.shape[1] == 120 and feats.shape[-2:] == model.encoder(x)[0].shape[-2:]
    assert {k: tuple(v.shape) for k, v in out.items()} == {m: (2, 25, *size) for m in ("fused", "rgb", "depth")}
    with pytest.raises(DataError, match="depth"):
        rgbd(rgb=x, mode="fused")


def test_full_size_models_on_meta_device():
    with torch.device("meta"):
        w18 = create_model("parsing_hrnet_w18")
        w32 = create_model("parsing_hrnet_w32", num_classes=25)
        rgbd = create_model("parsing_rgbd_hrnet_w18")
        out = w18(torch.empty(1, 3, 473, 473))
    assert tuple(out.shape) == (1, 25, 473, 473)
    assert [tuple(w18.head[i].weight.shape) for i in (0, 1, 3)] == [(270, 270, 1, 1), (270,), (25, 270, 1, 1)]
    assert w18.head[0].bias is not None and w32.head[3].weight.shape == (25, 480, 1, 1)
    assert rgbd.encoder1_linear.weight.shape == (128, 270, 1, 1) and rgbd.seg_head[0].bias is None
    assert rgbd.seg_head[3].weight.shape == (25, 128, 1, 1)
    assert all(m.momentum == 0.01 for m in w18.modules() if isinstance(m, nn.BatchNorm2d))


def test_flip_test_is_the_average_with_the_flipped_image_channels_swapped():
    model = _lively(create_model("parsing_hrnet_tiny"))
    method = P.ParsingMethod(model, "rgb").eval()
    x = torch.randn(2, 3, 40, 52)
    with torch.no_grad():
        got = method.predict({"image": x}, flip=True)["rgb"]
        plain, flipped = model(x), model(x.flip(-1))
    want = torch.empty_like(plain)
    for c in range(25):  # channel c of the flipped prediction belongs to class PARSING_FLIP_PERM[c]
        want[:, c] = 0.5 * (plain[:, c] + flipped[:, PARSING_FLIP_PERM[c]].flip(-1))
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got, plain, atol=1e-4)
    # rgbd: both inputs flipped
    rgbd = _lively(create_model("parsing_rgbd_hrnet_tiny"))
    m2 = P.ParsingMethod(rgbd, "rgbd").eval()
    d = torch.randn(2, 3, 40, 52)
    with torch.no_grad():
        got2 = m2.predict({"rgb": x, "depth": d}, ["fused"], flip=True)["fused"]
        a, b = rgbd(x, d, "fused"), rgbd(x.flip(-1), d.flip(-1), "fused")
    want2 = 0.5 * (a + b[:, list(PARSING_FLIP_PERM)].flip(-1))
    assert torch.allclose(got2, want2, atol=1e-6)


# ----------------------------------------------------------------------------------------------------- loss
def test_class_weighted_ce_equals_the_formula():
    torch.manual_seed(0)
    logits = torch.randn(2, 25, 5, 6)
    label = torch.randint(0, 25, (2, 5, 6))
    label[0, :2] = 255
    w = torch.tensor(NTURGBD_PARSING_CLASS_WEIGHTS)
    logp = logits.log_softmax(1)
    num = den = 0.0
    for b in range(2):
        for i in range(5):
            for j in range(6):
                y = int(label[b, i, j])
                if y != 255:
                    num += -float(w[y] * logp[b, y, i, j])
                    den += float(w[y])
    assert float(P.parsing_loss(logits, label, w)) == pytest.approx(num / den, rel=1e-5)
    plain = -logp.gather(1, label.clamp(max=24)[:, None])[:, 0][label != 255].mean()
    assert float(P.parsing_loss(logits, label)) == pytest.approx(float(plain), rel=1e-5)
    assert float(P.parsing_loss(logits, torch.full_like(label, 255), w)) == 0.0  # no counted pixel: 0, not NaN


# ----------------------------------------------------------------------------------------------------- data
def test_augment_pads_crops_and_flips_with_the_label_swap():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    depth = rng.random((30, 40)).astype(np.float32)
    label = rng.choice(np.arange(25, dtype=np.uint8), (30, 40))
    kw = {"base_size": (20, 20), "crop_size": (24, 24), "scale_factor": 0}  # scale 0.5: 10 x 10, padded to 24
    a, la = P.augment({"rgb": rgb, "depth": depth}, label, np.random.default_rng(5), flip_prob=0.0, **kw)
    b, lb = P.augment({"rgb": rgb, "depth": depth}, label, np.random.default_rng(5), flip_prob=1.0, **kw)
    assert a["rgb"].shape == (24, 24, 3) and a["depth"].shape == (24, 24) and la.shape == (24, 24)
    assert (la[10:] == 255).all() and (la[:, 10:] == 255).all() and (la[:10, :10] < 25).all()
    assert (a["rgb"][10:] == 0).all() and (a["depth"][:, 10:] == 0).all()
    np.testing.assert_array_equal(lb, flip_parsing(la))
    np.testing.assert_array_equal(b["rgb"], a["rgb"][:, ::-1])
    np.testing.assert_array_equal(b["depth"], a["depth"][:, ::-1])
    scales = {P.augment({"rgb": rgb}, label, np.random.default_rng(s), (20, 20), (8, 8))[0]["rgb"].shape
              for s in range(40)}
    assert scales == {(8, 8, 3)}


def test_label_resize_rules_pitfall_12():
    lab = np.array([[0, 20], [0, 20]], np.uint8)
    near = P.resize_label(lab, (2, 8), "nearest")
    lin = P.resize_label(lab, (2, 8), "linear_exact")
    assert set(np.unique(near)) == {0, 20}
    assert set(np.unique(lin)) - {0, 20}  # class ids interpolated: ids of other classes appear at the boundary
    np.testing.assert_array_equal(lin, cv2.resize(lab, (8, 2), interpolation=cv2.INTER_LINEAR_EXACT))
    assert P.resize_label(lab, (2, 2), "linear_exact") is lab and P.resize_label(lab, None) is lab


def test_depth_items_are_the_centred_depth(ntu_dir):
    reader = NturgbdParsing(ntu_dir, "val", with_rgb=False)
    raw = reader.load(0)
    h, w = raw["depth"].shape
    item = P.ParsingImages(reader, "depth", (h, w))[0]
    want = center_depth(raw["depth"])
    assert item["image"].shape == (3, h, w) and torch.equal(item["image"][0], torch.from_numpy(want))
    assert torch.equal(item["image"][0], item["image"][2]) and (item["image"][0][raw["depth"] == 0] == 0).all()
    assert torch.equal(item["label"], torch.from_numpy(raw["label"].astype(np.int64)))


# ----------------------------------------------------------------------------------------------- evaluation
def _direct_miou(method: P.ParsingMethod, reader: Human36MParsing, size, label_size=None, rule="nearest"):
    """Per-class IoU written out: resize, normalise, flip-averaged logits, upsample to the label, argmax."""
    inter, union = np.zeros(25), np.zeros(25)
    for i in range(len(reader)):
        s = reader.load(i)
        img = cv2.resize(s["image"], (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        x = normalize_image(img)[None]
        with torch.no_grad():
            a = method.model(x)
            b = method.model(x.flip(-1))[:, list(PARSING_FLIP_PERM)].flip(-1)
        t = s["label"]
        if label_size is not None:
            t = cv2.resize(t, (label_size[1], label_size[0]),
                           interpolation=cv2.INTER_LINEAR_EXACT if rule == "linear_exact" else cv2.INTER_NEAREST)
        logits = F.interpolate((a + b) / 2, size=t.shape, mode="bilinear", align_corners=False)
        p = logits[0].argmax(0).numpy()
        for c in range(25):
            inter[c] += ((p == c) & (t == c)).sum()
            union[c] += ((p == c) | (t == c)).sum()
    iou = inter[union > 0] / union[union > 0] * 100
    return float(iou.mean()), float(np.sum(inter / np.maximum(union, 1) * 100) / 25)


@pytest.mark.parametrize("label_size,rule", [(None, "nearest"), ((50, 46), "linear_exact")])
def test_evaluation_miou_equals_per_class_iou(h36m, tmp_path, label_size, rule):
    method = P.ParsingMethod(_lively(create_model("parsing_hrnet_tiny")), "rgb").eval()
    reader = Human36MParsing(h36m, "eval")
    cfg = P.EvalConfig(input_size=(48, 40), label_size=label_size, label_resize=rule, flip_test=True,
                       batch_size=2, num_vis=2)
    ds = P.ParsingImages(reader, "rgb", cfg.input_size, cfg.label_size, cfg.label_resize)
    got = P.evaluate_parsing(method, ds, cfg, tmp_path, device="cpu")
    miou, miou_zero = _direct_miou(method, reader, (48, 40), label_size, rule)
    assert got["mIoU"] == pytest.approx(miou, abs=1e-4)
    assert got["mIoU_absent_zero"] == pytest.approx(miou_zero, abs=1e-4)
    assert 0 < got["mIoU"] < 100 and got["num_images"] == 3
    pixels = sum(h * w for h, w in ((40, 48), (44, 44), (36, 52))) if label_size is None else 3 * 50 * 46
    assert got["count"] == pixels
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert len(saved["iou"]) == 25 and "background" in saved["iou"] and saved["settings"]["label_resize"] == rule
    assert (tmp_path / "parsing.png").is_file()


# -------------------------------------------------------------------------------------------------- init
def test_init_from_flat_hrnet_and_hcmoco_state_dicts(tmp_path):
    torch.manual_seed(1)
    src = HRNetEncoder("hrnet_w18", hrnet_args=TINY_HRNET, init="timm")
    flat = {**src.state_dict(), "incre_modules.0.0.conv1.weight": torch.zeros(1), "classifier.weight": torch.zeros(2)}
    torch.save(flat, tmp_path / "imagenet_like.pth")
    model = create_model("parsing_hrnet_tiny")
    head = {k: v.clone() for k, v in model.head.state_dict().items()}
    report = model.init_encoder(tmp_path / "imagenet_like.pth")
    ours = model.encoder.state_dict()
    assert ours.keys() == src.state_dict().keys()
    assert all(torch.equal(ours[k], v) for k, v in src.state_dict().items())
    assert report.layout == "flat" and report.loaded == len(ours)
    assert report.dropped == ["classifier.weight", "incre_modules.0.0.conv1.weight"]
    assert all(torch.equal(model.head.state_dict()[k], v) for k, v in head.items())
    assert len(report.left) == len(head)
    # a whole HCMoCo checkpoint: the recipe picks encoder2 for depth
    hc = create_model("hcmoco_tiny", skeleton="mpii16")
    torch.save({"model": {f"module.{k}": v for k, v in hc.state_dict().items()}, "epoch": 1}, tmp_path / "hc.pth")
    recipe = P.load_recipe({"model": {"name": "parsing_hrnet_tiny", "init": str(tmp_path / "hc.pth")},
                            "parsing": {"modality": "depth"}, "data": {"source": "synthetic_nturgbd"}})
    method = P.build_method(recipe)
    assert all(torch.equal(method.model.encoder.state_dict()[k], v) for k, v in hc.encoder2.state_dict().items())
    # rgbd: both encoders and the dense projections from the HCMoCo checkpoint
    rgbd = create_model("parsing_rgbd_hrnet_tiny")
    rep = rgbd.init_encoders(tmp_path / "hc.pth")
    for name in ("encoder1", "encoder2", "encoder1_linear", "encoder2_linear"):
        mine, theirs = getattr(rgbd, name).state_dict(), getattr(hc, name).state_dict()
        assert all(torch.equal(mine[k], v) for k, v in theirs.items())
    assert all(k.startswith("seg_head.") for k in rep.left) and rep.left
    # our own HCMoCo pre-training run folder: model.* keys beside the memory bank in last/model.safetensors
    from safetensors.torch import save_file

    (tmp_path / "run" / "last").mkdir(parents=True)
    save_file({**{f"model.{k}": v.contiguous() for k, v in hc.state_dict().items()},
               "bank.memory_1": torch.zeros(4, 128)}, str(tmp_path / "run" / "last" / "model.safetensors"))
    from_run = create_model("parsing_hrnet_tiny")
    rep = from_run.init_encoder(tmp_path / "run", "encoder1")
    assert rep.layout == "hcmoco:encoder1" and "bank.memory_1" not in rep.dropped
    assert all(torch.equal(from_run.encoder.state_dict()[k], v) for k, v in hc.encoder1.state_dict().items())
    # a missing trunk key is an error naming it
    del flat["conv1.weight"]
    with pytest.raises(DataError, match="HRNet keys missing"):
        create_model("parsing_hrnet_tiny").init_encoder(flat)


# ------------------------------------------------------------------------------------------------ training
@pytest.mark.parametrize("modality", ["depth", "rgbd"])
def test_tiny_training_run_through_the_engine(ntu_dir, tmp_path, modality):
    if modality == "depth":  # A.7.3: depth input, class-weighted CE
        recipe = ntu_recipe(ntu_dir, tmp_path / "run", class_weights="nturgbd", weight_decay_all=True)
    else:  # A.7.5 cross-modality supervision: RGB supervised, depth reported as mIoU
        recipe = ntu_recipe(ntu_dir, tmp_path / "run", modality="rgbd", model="parsing_rgbd_hrnet_tiny",
                            supervise="rgb", test_mode="depth", class_weights="nturgbd")
    summary = P.run_training(recipe, quiet=True)
    assert summary["step"] == 2  # 4 frames, batch 2, 1 epoch
    losses = [r["loss"] for r in read_log(tmp_path / "run", "train")]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    m = summary["metrics"]
    assert {"mIoU", "mIoU_absent_zero", "pixel_accuracy", "mean_accuracy"} <= set(m) and 0.0 <= m["mIoU"] <= 100
    if modality == "rgbd":
        assert {"mIoU_fused", "mIoU_rgb", "mIoU_depth"} <= set(m) and m["mIoU"] == m["mIoU_depth"]
    ev = tmp_path / "run" / "eval"
    assert len(json.loads((ev / "metrics.json").read_text())["iou"]) == 25 and (ev / "parsing.png").is_file()
    again = P.evaluate_weights(recipe, tmp_path / "run", out_dir=tmp_path / "ev")
    assert again["mIoU"] == pytest.approx(m["mIoU"], abs=1e-4)
    if modality == "rgbd":
        assert [r["mIoU"] for r in again["versatility"]] == pytest.approx([m[f"mIoU_{k}"] for k in
                                                                           ("fused", "rgb", "depth")], abs=1e-4)
        assert (tmp_path / "ev" / "versatility.txt").is_file()


def test_missing_modality_evaluation_returns_both_rows(ntu_dir, tmp_path):
    recipe = ntu_recipe(ntu_dir, tmp_path / "run", modality="rgbd", model="parsing_rgbd_hrnet_tiny",
                        supervise="fused")
    method = P.build_method(recipe).eval()
    _lively(method.model)
    ds = P.ParsingImages(NturgbdParsing(ntu_dir, "val"), "rgbd", (48, 56))
    rows = P.evaluate_versatility(method, ds, recipe.eval, tmp_path / "ev", device="cpu")
    assert [r["setting"] for r in rows] == ["RGB + depth", "depth removed", "RGB removed"]
    assert [r["inputs"] for r in rows] == ["rgb+depth", "rgb", "depth"]
    assert all(0.0 <= r["mIoU"] <= 100.0 for r in rows)
    rgb_only = P.evaluate_parsing(method, ds, recipe.eval, modes=["rgb"], device="cpu")
    assert rows[1]["mIoU"] == pytest.approx(rgb_only["mIoU"], abs=1e-6)
    table = P.versatility_table(rows)
    assert "depth removed" in table and "RGB removed" in table
    assert json.loads((tmp_path / "ev" / "versatility.json").read_text()) == rows
    zeros = P.evaluate_versatility(method, ds, recipe.eval, device="cpu", missing="zeros")
    assert [r["output"] for r in zeros] == ["fused"] * 3 and zeros[0]["mIoU"] == pytest.approx(rows[0]["mIoU"])
    single = P.ParsingMethod(create_model("parsing_hrnet_tiny"), "depth")
    with pytest.raises(ConfigError, match="does not match the model"):
        P.ParsingMethod(create_model("parsing_hrnet_tiny"), "rgbd")
    with pytest.raises(ConfigError, match="RGB-D"):
        P.evaluate_versatility(single, ds)


# -------------------------------------------------------------------------------------------------- recipes
def test_published_recipes():
    unchecked = ("model.init", "data.root")
    h = P.load_recipe(CONFIGS / "hcmoco_parsing_h36m_rgb.yaml", unchecked=unchecked)
    t = h.train
    assert (h.model.name, h.parsing.modality, h.parsing.weights(), h.data.crop_size, h.data.scale_factor) == \
        ("parsing_hrnet_w18", "rgb", None, (473, 473), 11)
    assert (t.optimizer, t.lr, t.momentum, t.weight_decay, t.schedule, t.power, t.epochs, t.batch_size) == \
        ("sgd", 0.007, 0.9, 5e-4, "poly", 0.9, 50, 20)
    assert (h.eval.input_size, h.eval.label_size, h.eval.label_resize, h.eval.flip_test) == \
        ((473, 473), (1000, 1000), "linear_exact", True)
    d = P.load_recipe(CONFIGS / "hcmoco_parsing_nturgbd_depth.yaml", unchecked=unchecked)
    assert d.parsing.weights() == NTURGBD_PARSING_CLASS_WEIGHTS and d.train.epochs == 150
    assert (d.train.batch_size, d.eval.label_resize, d.eval.label_size) == (40, "nearest", (1000, 1000))
    for name in ("hcmoco_parsing_h36m_rgb", "hcmoco_parsing_nturgbd_depth", "parsing_tiny_synthetic_rgb",
                 "parsing_tiny_synthetic_depth"):
        assert P.is_parsing_recipe(CONFIGS / f"{name}.yaml")
        P.load_recipe(CONFIGS / f"{name}.yaml", unchecked=unchecked)


def test_recipe_errors():
    base = {"data": {"source": "synthetic_nturgbd"}}
    with pytest.raises(ConfigError, match="Human3.6M parsing has RGB only"):
        P.load_recipe({"parsing": {"modality": "depth"}, "data": {"source": "synthetic_h36m"}})
    with pytest.raises(ConfigError, match="parsing_rgbd_hrnet"):
        P.load_recipe({"parsing": {"modality": "rgbd"}, "model": {"name": "parsing_hrnet_tiny"}, **base})
    with pytest.raises(ConfigError, match="class_weights"):
        P.load_recipe({"parsing": {"class_weights": [1.0, 2.0]}, **base})
    with pytest.raises(ConfigError, match="not a parsing model"):
        P.load_recipe({"parsing": {}, "model": {"name": "hcmoco_tiny"}, **base})
    with pytest.raises(ConfigError, match="data.root"):
        P.load_recipe({"parsing": {}, "data": {"source": "h36m"}})
    with pytest.raises(ConfigError, match="model.init: file not found"):
        P.load_recipe({"parsing": {}, "model": {"init": "/nonexistent/rgb_encoder.pth"}, **base})
    assert isinstance(create_model("parsing_hrnet_tiny"), ParsingHRNet)
    assert isinstance(create_model("parsing_rgbd_hrnet_tiny"), RGBDParsingHRNet)


def test_frozen_encoders_train_the_shared_head_only():
    method = P.ParsingMethod(create_model("parsing_rgbd_hrnet_tiny"), "rgbd", supervise="rgb",
                             freeze_encoders=True).train()
    assert not method.model.encoder1.training and not method.model.encoder1_linear.training
    assert method.model.seg_head.training
    x = torch.randn(2, 3, 40, 40)
    out = method({"rgb": x, "depth": x, "label": torch.randint(0, 25, (2, 40, 40))})
    out["loss"].backward()
    assert all(p.grad is None for p in method.model.encoder1.parameters())
    assert all(p.grad is None for p in method.model.encoder2.parameters())  # not run for the RGB output
    assert all(p.grad is not None for p in method.model.seg_head.parameters())
