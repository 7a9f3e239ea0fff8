"""ONNX export (``humanvision export``) and the torch-free runtime (``humanvision.runtime``).

The tiny models' last convolution is rescaled so that their heatmaps are O(1) with distinct maxima (an untrained
model's maps are ~1e-5 and nearly flat, which would make keypoint comparisons meaningless).
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from humanvision.cli import app
from humanvision.codecs import MSRAHeatmap, UDPHeatmap
from humanvision.data.transforms import keypoints_to_image
from humanvision.errors import DataError
from humanvision.export import ParityError, _draw_person, check_parity, export_onnx, write_metadata
from humanvision.methods.topdown import DataConfig, TopDownPose, build_codec, build_transform
from humanvision.models import create_model
from humanvision.models.weights import save_weights
from humanvision.runtime import MetadataError, PoseEstimator, decode_heatmaps, read_metadata

torch.set_num_threads(1)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ENV = {"COLUMNS": "250", "NO_COLOR": "1"}

#: (model, crop/codec convention, DARK) -> the refinement the runtime must reproduce
VARIANTS = {
    "lateral_udp_dark": ("lateral_tiny", True, True),        # dark_udp (reflect border), the ViTPose default
    "vitpose_udp_plain": ("vitpose_tiny", True, False),      # UDP argmax
    "lateral_msra_dark": ("lateral_tiny", False, True),      # DARK (HRNet recipe)
    "lateral_msra_quarter": ("lateral_tiny", False, False),  # quarter offset (PCT stage 0)
}


def make_method(name: str, udp: bool, dark: bool, seed: int = 0) -> tuple[TopDownPose, object]:
    torch.manual_seed(seed)
    model = create_model(name).eval()
    model.default_cfg.update(udp=udp, codec="udp_heatmap" if udp else "msra_heatmap")
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    w, h = model.input_size
    with torch.no_grad():
        last.weight.mul_(1.0 / model(torch.randn(2, 3, h, w)).std())
    data = DataConfig(dark=dark)
    method = TopDownPose(model, build_codec(model, data), "coco17").eval()
    return method, build_transform(method, data, train=False)


def scene(seed: int = 1):
    img, box = _draw_person(np.random.default_rng(seed), (160, 200))
    boxes = np.array([box, [box[0] - 40, box[1] + 10, box[2] * 0.8, box[3] * 0.7], [5.0, 7.0, 60.0, 30.0]])
    return img, boxes


def torch_path(method, transform, image, boxes, flip_test: bool):
    """The PyTorch inference path of ``humanvision infer`` / ``predict_boxes`` in fp32."""
    crops, centers, scales = [], [], []
    for b in boxes:
        x, _, meta = transform(image, bbox=b)
        crops.append(x)
        centers.append(meta["center"])
        scales.append(meta["scale"])
    kp, sc = method.predict(torch.stack(crops), flip_test=flip_test)
    kp = keypoints_to_image(kp.double().numpy(), np.asarray(centers), np.asarray(scales), transform.input_size,
                            transform.udp)
    return kp, sc.double().numpy(), torch.stack(crops).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One export per variant, made on first use."""
    root, cache = tmp_path_factory.mktemp("onnx"), {}

    def get(key: str, flip_in_graph: bool = False):
        if (key, flip_in_graph) not in cache:
            method, transform = make_method(*VARIANTS[key])
            path = root / f"{key}{'_fig' if flip_in_graph else ''}.onnx"
            report = export_onnx(method, transform, path, flip_in_graph=flip_in_graph, recipe="test")
            cache[key, flip_in_graph] = (method, transform, path, report)
        return cache[key, flip_in_graph]

    return get


# ------------------------------------------------------------------------------------------------- decoding
@pytest.mark.parametrize("codec", [
    UDPHeatmap((96, 128), (24, 32), dark=True, blur_border="reflect"),
    UDPHeatmap((96, 128), (24, 32), dark=True, blur_border="zero"),
    UDPHeatmap((96, 128), (24, 32), dark=False),
    MSRAHeatmap((96, 128), (24, 32), unbiased=True),
    MSRAHeatmap((96, 128), (24, 32), unbiased=False),
], ids=["dark_udp_reflect", "dark_udp_zero", "udp_argmax", "msra_dark", "msra_quarter"])
def test_numpy_decoding_equals_torch_codec(codec):
    rng = np.random.default_rng(0)
    kp = rng.uniform([-4, -4], [100, 132], (6, 17, 2))  # some joints near or beyond the crop border
    maps = np.stack([codec.encode(k)["heatmaps"] for k in kp])
    maps = maps * rng.uniform(0.3, 1.0, (6, 17, 1, 1)) + rng.normal(0, 0.02, maps.shape)
    maps[0, :3] = -np.abs(maps[0, :3])  # channels without a positive maximum: the -1 sentinel
    maps = maps.astype(np.float32)
    ref_kp, ref_sc = codec.decode(maps)
    refine = {("udp", True): "dark_udp", ("udp", False): "none", ("msra", True): "dark", ("msra", False): "quarter"}
    name = refine["udp" if codec.udp else "msra", getattr(codec, "dark", getattr(codec, "unbiased", False))]
    got_kp, got_sc = decode_heatmaps(maps, codec.stride, name, codec.blur_kernel_size,
                                     getattr(codec, "blur_border", "zero"))
    assert np.abs(got_kp - ref_kp).max() < 1e-4
    np.testing.assert_array_equal(got_sc, ref_sc)
    assert (got_kp[0, :3] == -np.asarray(codec.stride, dtype=np.float32)).all()  # sentinel, mapped like the rest
    if name != "none":  # the refinement really moved the points off the integer grid
        assert np.abs(got_kp[1:] / np.asarray(codec.stride) - np.round(got_kp[1:] / np.asarray(codec.stride))).max() > 0.1


# ------------------------------------------------------------------------------------------- export + runtime
@pytest.mark.slow
@pytest.mark.parametrize("name,udp,dark", [("hrnet_w32", False, True), ("vitpose_base", True, True),
                                           ("simplebaseline_swin_tiny", False, False)])
def test_full_size_models_export_and_match(tmp_path, name, udp, dark):
    """The published architectures at their real size (random weights, last layer rescaled): HRNet-W32 with DARK,
    ViTPose-B with DARK-UDP, PCT's stage-0 Swin-T; parity in the export and keypoints through the runtime."""
    method, transform = make_method(name, udp, dark)
    report = export_onnx(method, transform, tmp_path / f"{name}.onnx", recipe="test")
    assert max(report.parity["max_abs_diff"].values()) <= 1e-4
    image, boxes = scene()
    kp, sc = PoseEstimator(report.path, flip_test=True)(image, boxes)
    ref_kp, ref_sc, _ = torch_path(method, transform, image, boxes, True)
    assert np.abs(kp - ref_kp).max() <= 0.05, np.abs(kp - ref_kp).max()
    np.testing.assert_allclose(sc, ref_sc, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("key", list(VARIANTS))
def test_runtime_matches_pytorch_path(exported, key):
    method, transform, path, report = exported(key)
    assert max(report.parity["max_abs_diff"].values()) <= 1e-4
    assert report.parity["batch_sizes"] == {"random": 3, "realish": 2}  # not the traced batch of 2
    image, boxes = scene()
    for flip in (False, True):
        est = PoseEstimator(path, flip_test=flip)
        kp, sc = est(image, boxes)
        ref_kp, ref_sc, ref_crops = torch_path(method, transform, image, boxes, flip)
        crops, _, _ = est.preprocess(image, boxes)
        assert np.abs(crops - ref_crops).max() < 1e-5  # the same crops
        assert kp.shape == (3, 17, 2) and sc.shape == (3, 17)
        assert np.abs(kp - ref_kp).max() <= 0.05, (flip, np.abs(kp - ref_kp).max())
        np.testing.assert_allclose(sc, ref_sc, rtol=1e-4, atol=1e-6)
        assert (sc > 0).mean() > 0.5 and np.ptp(kp[..., 0]) > 10  # real peaks, spread over the boxes
    # whole image (no boxes) and a single box
    kp, _ = PoseEstimator(path)(image)
    h, w = image.shape[:2]
    ref_kp, _, _ = torch_path(method, transform, image, [[0.0, 0.0, w, h]], True)
    assert np.abs(kp - ref_kp).max() <= 0.05
    kp1, _ = PoseEstimator(path)(image, boxes[0])
    assert kp1.shape == (1, 17, 2)


def test_flip_test_inside_the_graph(exported):
    method, transform, path, report = exported("lateral_msra_dark", flip_in_graph=True)
    meta = report.metadata
    assert meta["flip_test"] == {"default": True, "in_graph": True, "shift_heatmap": True}
    image, boxes = scene(2)
    kp, sc = PoseEstimator(path)(image, boxes)
    ref_kp, ref_sc, _ = torch_path(method, transform, image, boxes, True)
    assert np.abs(kp - ref_kp).max() <= 0.05
    np.testing.assert_allclose(sc, ref_sc, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="part of this graph"):
        PoseEstimator(path, flip_test=False)


def test_metadata_contract_and_dynamic_batch(exported):
    import onnx
    import onnxruntime as ort

    import humanvision

    method, _, path, _ = exported("lateral_udp_dark")
    meta = read_metadata(path)
    assert meta["metadata_version"] == 1 and meta["humanvision_version"] == humanvision.__version__
    assert meta["input"]["size"] == [96, 128] and meta["input"]["color"] == "RGB"
    assert meta["input"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert meta["input"]["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert meta["crop"]["padding"] == 1.25 and meta["crop"]["udp"] is True
    c = meta["codec"]
    assert (c["name"], c["heatmap_size"], c["sigma"], c["udp"], c["refine"], c["blur_border"]) == (
        "udp_heatmap", [24, 32], 2.0, True, "dark_udp", "reflect")
    assert c["stride"] == pytest.approx([95 / 23, 127 / 31])
    sk = meta["skeleton"]
    assert sk["name"] == "coco17" and len(sk["joints"]) == 17 and sk["joints"][1] == method.skeleton.joints[1]
    assert sk["flip_index"] == [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
    assert meta["export"]["opset"] == 17 and meta["model"] == "lateral_tiny" and meta["recipe"] == "test"
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 128, 96]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b in (1, 5):
        assert sess.run(None, {"input": np.zeros((b, 3, 128, 96), np.float32)})[0].shape == (b, 17, 32, 24)


# ----------------------------------------------------------------------------------------------- bad inputs
def test_onnx_without_metadata_is_a_named_error(tmp_path):
    path = tmp_path / "plain.onnx"
    model = create_model("lateral_tiny").eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (torch.zeros(1, 3, 128, 96),), str(path), dynamo=False, input_names=["input"],
                          output_names=["heatmaps"])
    for fn in (PoseEstimator, read_metadata):
        with pytest.raises(MetadataError, match="metadata") as e:
            fn(path)
        assert str(path) in str(e.value) and "humanvision export" in str(e.value)
        garbage = tmp_path / "garbage.onnx"
        garbage.write_bytes(b"not a model")
        with pytest.raises(DataError, match="garbage.onnx"):
            fn(garbage)


def test_unknown_metadata_version_is_a_named_error(exported, tmp_path):
    _, _, path, report = exported("lateral_udp_dark")
    bad = tmp_path / "future.onnx"
    bad.write_bytes(path.read_bytes())
    write_metadata(bad, {**report.metadata, "metadata_version": 99})
    with pytest.raises(MetadataError, match="metadata version 99 is not supported") as e:
        PoseEstimator(bad)
    assert str(bad) in str(e.value) and "metadata.metadata_version" in str(e.value)
    write_metadata(bad, {**report.metadata, "codec": {**report.metadata["codec"], "refine": "magic"}})
    with pytest.raises(MetadataError, match="codec.refine"):
        read_metadata(bad)


def test_bad_image_and_boxes(exported):
    _, _, path, _ = exported("lateral_udp_dark")
    est = PoseEstimator(path)
    image, _ = scene()
    with pytest.raises(DataError, match="field image"):
        est(image.astype(np.float32))
    with pytest.raises(ValueError, match=r"box 1: field boxes"):
        est(image, [[0, 0, 10, 10], [0, 0, 0, 10]])
    with pytest.raises(ValueError, match="field boxes"):
        est(image, np.zeros((2, 3)))
    kp, sc = est(image, np.zeros((0, 4)))
    assert kp.shape == (0, 17, 2) and sc.shape == (0, 17)


def test_parity_failure_is_a_clear_error(tmp_path):
    method, transform = make_method("lateral_tiny", True, True)
    path = tmp_path / "m.onnx"
    with pytest.raises(ParityError, match=r"max \|diff\|") as e:
        export_onnx(method, transform, path, tolerance=-1.0)  # nothing passes a negative tolerance
    assert not path.exists() and (tmp_path / "m.onnx.failed").is_file() and "m.onnx.failed" in str(e.value)
    export_onnx(method, transform, path, check=False)
    with torch.no_grad():  # the PyTorch model changes after the export: the check must notice
        next(iter(method.model.parameters())).add_(0.5)
    x = torch.randn(2, 3, 128, 96)
    with pytest.raises(ParityError, match=str(path)):
        check_parity(method.model, path, {"random": x})


# ------------------------------------------------------------------------------------------------------ CLI
def test_cli_export(tmp_path):
    method, _ = make_method("lateral_tiny", True, True)
    weights = save_weights(method.model, tmp_path / "w" / "model.safetensors")
    recipe = {"name": "tiny_export", "model": {"name": "lateral_tiny", "skeleton": "coco17"},
              "data": {"source": "coco", "val_ann": str(tmp_path / "missing.json"), "padding": 1.2},
              "eval": {"flip_test": True}}
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out" / "model.onnx"
    res = CliRunner().invoke(app, ["export", str(cfg), "--weights", str(weights), "--out", str(out), "--no-flip"],
                             env=ENV)
    assert res.exit_code == 0, res.output
    assert "parity" in res.output and "dynamic batch" in res.output
    meta = read_metadata(out)
    assert meta["flip_test"]["default"] is False and meta["crop"]["padding"] == 1.2
    assert meta["recipe"] == "tiny_export" and meta["weights"] == "model.safetensors"
    image, boxes = scene()
    ref_kp, _, _ = torch_path(method, build_transform(method, DataConfig(padding=1.2), train=False), image, boxes,
                              False)
    assert np.abs(PoseEstimator(out)(image, boxes)[0] - ref_kp).max() <= 0.05


def test_parity_is_checked_in_eval_mode(tmp_path):
    """A wrapper built in training mode (torch.onnx.export restores that mode after tracing) is still compared in
    eval mode: BatchNorm's running statistics on both sides, not batch statistics in the PyTorch reference."""
    from humanvision.export import _export_checked

    graph = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    with torch.no_grad():
        graph[1].running_mean.fill_(0.5)
        graph[1].running_var.fill_(4.0)
    graph.train()
    meta = {"model": "conv_bn", "export": {"opset": 17}}
    parity = _export_checked(graph, torch.randn(2, 3, 16, 16), tmp_path / "bn.onnx", meta,
                             lambda: {"random": torch.randn(3, 3, 16, 16)}, 1e-4, "out")
    assert parity["max_abs_diff"]["random"] <= 1e-5 and not graph.training


def test_pct_stage2_exports_as_a_keypoint_model(tmp_path):
    """PCT stage II (Swin -> token classifier -> soft decoding by the frozen tokenizer) through the CLI: parity in
    the export (this failed while the exporter left the head's BatchNorm in training mode for the reference), and
    the runtime's keypoints and scores equal ``PCTClassifierStage.predict`` + the inverse crop, flip test on and
    off."""
    from humanvision.methods import pct

    config = CONFIGS / "pct_tiny_classifier_synthetic.yaml"
    recipe = pct.load_recipe(config, unchecked=("data.", "pct.backbone_weights", "pct.tokenizer_weights"))
    torch.manual_seed(0)
    method = pct.build_method(recipe, pretrained=False).eval()
    weights = save_weights(method, tmp_path / "pct" / "model.safetensors")
    res = CliRunner().invoke(app, ["export", str(config), "--weights", str(weights), "--out",
                                   str(tmp_path / "pct.onnx")], env=ENV)
    assert res.exit_code == 0, res.output
    assert "keypoints (crop pixels" in " ".join(res.output.split())
    meta = read_metadata(tmp_path / "pct.onnx")
    assert meta["codec"]["name"] == "keypoints" and meta["crop"]["padding"] == 1.12 and not meta["crop"]["udp"]
    transform = pct.build_transform(method, recipe.data, train=False)
    image, boxes = scene()
    for flip in (False, True):
        est = PoseEstimator(tmp_path / "pct.onnx", flip_test=flip)
        kp, sc = est(image, boxes)
        ref_kp, ref_sc, _ = torch_path(method, transform, image, boxes, flip)
        assert kp.shape == (3, 17, 2) and np.ptp(kp[..., 0]) > 5
        assert np.abs(kp - ref_kp).max() <= 1e-3, np.abs(kp - ref_kp).max()
        np.testing.assert_allclose(sc, ref_sc, atol=1e-5)
    with pytest.raises(ValueError, match="has no heatmaps"):
        est.heatmaps(np.zeros((1, 3, 128, 128), np.float32))
    stage1 = CONFIGS / "pct_tiny_tokenizer_synthetic.yaml"
    res = CliRunner().invoke(app, ["export", str(stage1), "--weights", str(weights), "--out",
                                   str(tmp_path / "tok.onnx")], env=ENV)
    assert res.exit_code == 1 and "stage-II (classifier) recipe" in " ".join(res.output.split())


# ------------------------------------------------------------------------------------------ torch-free runtime
def test_runtime_imports_and_runs_without_torch(exported, tmp_path):
    method, transform, path, _ = exported("lateral_udp_dark")
    image, boxes = scene(3)
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "boxes.npy", boxes)
    code = f"""
import json, sys
for name in ("torch", "torchvision", "timm"):
    sys.modules[name] = None  # any import of them now raises ImportError
import numpy as np
from humanvision.runtime import PoseEstimator
kp, sc = PoseEstimator({str(path)!r}, flip_test=True)(np.load({str(tmp_path / 'image.npy')!r}),
                                                      np.load({str(tmp_path / 'boxes.npy')!r}))
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "timm", "torchvision")
                and sys.modules[m] is not None)
print(json.dumps({{"kp": kp.tolist(), "sc": sc.tolist(), "loaded": loaded}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["loaded"] == []
    ref_kp, ref_sc, _ = torch_path(method, transform, image, boxes, True)
    assert np.abs(np.array(res["kp"]) - ref_kp).max() <= 0.05
    np.testing.assert_allclose(np.array(res["sc"]), ref_sc, rtol=1e-4, atol=1e-6)
