"""int8 quantisation of exported pose models (``humanvision.export.quantize_onnx``, ``humanvision export --int8``).

The tiny model's heatmaps are rescaled to O(1) (see test_export.py), but an untrained model still has several
near-equal maxima per map, so int8 noise moves some argmaxes far: measured on lateral_tiny (UDP + DARK), the
heatmaps move by <= 3% of their peak (dynamic ~2%, static ~3%), the median keypoint by 0 px and 70-85% of the
keypoints by <= 1 px. The bounds below are looser than these numbers but fail on a broken quantisation (wrong
preprocessing of the calibration crops, an unquantised or garbled graph).
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from typer.testing import CliRunner

from humanvision.cli import app
from humanvision.errors import DataError
from humanvision.export import QuantizationError, _draw_person, export_onnx, quantize_onnx
from humanvision.models.weights import save_weights
from humanvision.runtime import MetadataError, PoseEstimator, read_metadata

sys.path.insert(0, str(Path(__file__).parent))
from test_export import ENV, make_method, scene

HEATMAP_REL = 0.12  # max |int8 - fp32| heatmap difference / max |fp32 heatmap|
WITHIN_1PX = 0.6  # share of keypoints that move by <= 1 px (crop pixels)


def images(n: int = 6, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([_draw_person(rng, (192, 256))[0] for _ in range(n)])


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    method, transform = make_method("lateral_tiny", True, True)
    return export_onnx(method, transform, tmp_path_factory.mktemp("q") / "model.onnx", recipe="test").path


def int8_ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node} & {
        "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "QLinearConv"}


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_quantized_file_keeps_contract_and_runs(fp32, tmp_path, mode):
    dst = tmp_path / f"model.{mode}.onnx"
    report = quantize_onnx(fp32, dst, mode, images() if mode == "static" else None, verbose=False)
    assert report.path == dst and dst.stat().st_size < 0.5 * fp32.stat().st_size  # int8 weights
    assert int8_ops(dst)  # really quantised
    ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    meta, ref = read_metadata(dst), read_metadata(fp32)
    q = meta.pop("quantization")
    assert meta == ref  # the fp32 contract, unchanged
    assert q["mode"] == mode and q["source"] == "model.onnx"
    if mode == "static":  # 6 images, whole-image crops, plus their mirror images (flip test on by default)
        assert q["calibration_crops"] == 12 and "calibration" in q["parity"]["heatmap_max_abs_diff"]
    p = q["parity"]
    assert p == report.parity and p["batch_sizes"]["drawn"] == 4
    for k, d in p["heatmap_max_abs_diff"].items():
        assert 0 < d <= HEATMAP_REL * p["reference_max_abs"][k], (k, d)
        assert p["keypoint_median_diff_px"][k] <= 1.0 and p["keypoint_within_1px"][k] >= WITHIN_1PX, (k, p)
    # the runtime runs the int8 file unchanged, near the fp32 one (image pixels)
    image, boxes = scene()
    ref_kp, _ = PoseEstimator(fp32)(image, boxes)
    kp, sc = PoseEstimator(dst)(image, boxes)
    assert kp.shape == ref_kp.shape == (3, 17, 2) and sc.shape == (3, 17)
    d = np.linalg.norm(kp - ref_kp, axis=-1)
    assert np.median(d) <= 1.0 and (d <= 2.0).mean() >= WITHIN_1PX, d


def test_static_calibration_from_folder_and_crops(fp32, tmp_path):
    folder = tmp_path / "calib"
    folder.mkdir()
    for i, img in enumerate(images(3)):
        cv2.imwrite(str(folder / f"{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    (folder / "notes.txt").write_text("ignored")
    a = quantize_onnx(fp32, tmp_path / "a.onnx", "static", folder, verbose=False)
    assert a.metadata["quantization"]["calibration_crops"] == 6
    # the same images as normalised crops (the runtime's preprocessing) give the same calibration, hence the
    # same file
    est = PoseEstimator(fp32, flip_test=False)
    crops = np.concatenate([est.preprocess(img)[0] for img in images(3)])
    b = quantize_onnx(fp32, tmp_path / "b.onnx", "static", crops, verbose=False)
    ga, gb = (onnx.load(str(p)).graph for p in (a.path, b.path))
    assert [i.SerializeToString() for i in ga.initializer] == [i.SerializeToString() for i in gb.initializer]


def test_named_errors(fp32, tmp_path):
    with pytest.raises(QuantizationError, match="calibration"):
        quantize_onnx(fp32, tmp_path / "s.onnx", "static")
    with pytest.raises(DataError, match="not found"):
        quantize_onnx(tmp_path / "missing.onnx", tmp_path / "m.onnx")
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(fp32.read_bytes()[:1000])
    with pytest.raises(DataError, match="corrupt.onnx"):
        quantize_onnx(bad, tmp_path / "c.onnx")
    plain = tmp_path / "plain.onnx"
    proto = onnx.load(str(fp32))
    del proto.metadata_props[:]
    onnx.save(proto, str(plain))
    with pytest.raises(MetadataError, match="no humanvision metadata"):
        quantize_onnx(plain, tmp_path / "p.onnx")
    with pytest.raises(DataError, match="no images"):
        quantize_onnx(fp32, tmp_path / "e.onnx", "static", tmp_path)
    with pytest.raises(DataError, match="calibration_images"):
        quantize_onnx(fp32, tmp_path / "e.onnx", "static", np.zeros((2, 5, 5), np.float32))
    assert not any((tmp_path / n).exists() for n in ("s.onnx", "m.onnx", "c.onnx", "p.onnx", "e.onnx"))


def test_cli_int8(tmp_path):
    method, _ = make_method("lateral_tiny", True, True)
    weights = save_weights(method.model, tmp_path / "w" / "model.safetensors")
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text(yaml.safe_dump({"name": "tiny_export", "model": {"name": "lateral_tiny", "skeleton": "coco17"},
                                   "data": {"source": "coco", "val_ann": str(tmp_path / "missing.json")}}))
    out = tmp_path / "out" / "model.onnx"
    base = ["export", str(cfg), "--weights", str(weights), "--out", str(out)]
    res = CliRunner().invoke(app, [*base, "--int8", "static"], env=ENV)
    assert res.exit_code == 1 and "--calibration" in res.output and not out.exists()
    res = CliRunner().invoke(app, [*base, "--int8", "dynamic"], env=ENV)
    assert res.exit_code == 0, res.output
    q = out.with_name("model.int8.onnx")
    assert "int8 (dynamic)" in res.output and "within 1 px" in res.output
    assert read_metadata(q)["quantization"]["mode"] == "dynamic"
    assert PoseEstimator(q)(*scene())[0].shape == (3, 17, 2)
