"""ONNX export of human-parsing models (``humanvision export`` on an rgb or depth parsing recipe) and the
torch-free ``humanvision.runtime.HumanParser``, against the evaluation's own path (``ParsingImages`` resize,
``ParsingMethod.predict`` with the flip test, bilinear upsampling to the frame, argmax; issue 15).

Frames in the official layouts: Human3.6M parsing (RGB) and the synthetic NTURGBD-Parsing-4K depth maps (uint16
millimetres, as the reader returns them), both from tests/test_parsing.py's fixtures.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from test_parsing import NTU_SYNTH, _lively, write_h36m_fixture
from typer.testing import CliRunner

from humanvision.cli import app
from humanvision.data.readers.parsing import PARSING_CLASSES, Human36MParsing, NturgbdParsing
from humanvision.errors import DataError
from humanvision.methods import parsing as P
from humanvision.models import create_model
from humanvision.models.weights import save_weights
from humanvision.runtime import HumanParser, MetadataError, PoseEstimator, read_metadata

torch.set_num_threads(1)
ENV = {"COLUMNS": "250", "NO_COLOR": "1"}
INPUT = [48, 56]  # (h, w) of the network input


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env=ENV)


def exported(tmp, modality: str, data: dict, flip: bool = True):
    """A lively tiny HRNet parsing method saved as weights, its recipe and the CLI's export of it."""
    method = P.ParsingMethod(_lively(create_model("parsing_hrnet_tiny")), modality).eval()
    weights = save_weights(method, tmp / "model.safetensors")
    config = tmp / f"parsing_{modality}.yaml"
    config.write_text(yaml.safe_dump({"name": f"parsing_{modality}", "model": {"name": "parsing_hrnet_tiny"},
                                      "parsing": {"modality": modality}, "data": data,
                                      "eval": {"input_size": INPUT, "flip_test": flip}}))
    r = invoke("export", config, "--weights", weights, "--out", tmp / f"{modality}.onnx")
    assert r.exit_code == 0, r.output
    return method, tmp / f"{modality}.onnx", config, r.output


def reference(method: P.ParsingMethod, item: dict, size: tuple[int, int], flip: bool) -> np.ndarray:
    """The evaluation's logits at ``size``: predict (flip-averaged) on the resized input, bilinear upsampling."""
    with torch.no_grad():
        out = method.predict({"image": item["image"][None]}, flip=flip)[method.modality]
        return F.interpolate(out.float(), size=size, mode="bilinear", align_corners=False)[0].numpy()


def check_equal(got_logits: np.ndarray, want_logits: np.ndarray, labels: np.ndarray) -> None:
    tol = 1e-5 * max(1.0, float(np.abs(want_logits).max()))  # fp32: relative to the logits' scale
    np.testing.assert_allclose(got_logits, want_logits, atol=tol, rtol=0)
    want = want_logits.argmax(0)
    top2 = np.sort(want_logits, 0)[-2:]
    clear = (top2[1] - top2[0]) > 10 * tol  # pixels whose two best classes are not tied within the tolerance
    assert clear.mean() > 0.95 and (labels[clear] == want[clear]).all()
    assert len(np.unique(want)) > 3  # a lively model: several classes over the frame


@pytest.mark.parametrize("flip", [True, False])
def test_rgb_parser_equals_the_evaluation(tmp_path, flip):
    root = write_h36m_fixture(tmp_path / "h36m")
    method, path, _, output = exported(tmp_path, "rgb", {"source": "h36m", "root": str(root)}, flip)
    assert "logits" in output and "max |diff|" in output
    meta = read_metadata(path)
    assert meta["format"] == "humanvision.parsing" and meta["modality"] == "rgb"
    assert meta["flip_test"]["default"] is flip and meta["output"]["classes"] == list(PARSING_CLASSES)
    parser = HumanParser(path)
    reader = Human36MParsing(root, "eval")
    for i in range(len(reader)):
        frame = reader.load(i)["image"]
        item = P.ParsingImages(reader, "rgb", tuple(INPUT))[i]
        want = reference(method, item, frame.shape[:2], flip)
        got = parser.logits(frame)
        labels = parser(frame)
        assert labels.shape == frame.shape[:2] and labels.dtype == np.uint8
        check_equal(got, want, labels)
    colours = parser.colorize(labels)
    assert colours.shape == (*frame.shape[:2], 3) and (colours[labels == 0] == 0).all()  # background black


def test_depth_parser_equals_the_evaluation(tmp_path):
    from humanvision.methods.parsing import prepare_synthetic

    data = {"source": "synthetic_nturgbd", "synthetic_dir": str(tmp_path / "ntu"), **NTU_SYNTH}
    recipe_data = P.DataConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
    root = prepare_synthetic(recipe_data, quiet=True)
    method, path, _, _ = exported(tmp_path, "depth", data)
    parser = HumanParser(path)
    reader = NturgbdParsing(root, "val", with_rgb=False)
    for i in range(len(reader)):
        depth = reader.load(i)["depth"]
        assert (depth == 0).any() and depth.max() > 500  # millimetres (the reader gives float32), background 0
        item = P.ParsingImages(reader, "depth", tuple(INPUT))[i]
        check_equal(parser.logits(depth), reference(method, item, depth.shape, True), parser(depth))
    assert parser(depth, size=(20, 30)).shape == (20, 30)
    with pytest.raises(DataError, match=r"\(H, W\) finite depth map"):
        parser(np.zeros((10, 10, 3), np.uint8))


def test_bad_input_and_wrong_runtime(tmp_path):
    root = write_h36m_fixture(tmp_path / "h36m")
    _, path, config, _ = exported(tmp_path, "rgb", {"source": "h36m", "root": str(root)})
    parser = HumanParser(path)
    with pytest.raises(DataError, match="uint8 RGB image"):
        parser(np.zeros((10, 10), np.uint16))
    with pytest.raises(DataError, match="this rgb model takes one input"):
        parser(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10)))
    with pytest.raises(DataError, match="class ids in 0..24"):
        parser.colorize(np.full((3, 3), 30))
    with pytest.raises(MetadataError, match="open it with HumanParser, not PoseEstimator"):
        PoseEstimator(path)
    r = invoke("export", config, "--weights", tmp_path / "model.safetensors", "--out", tmp_path / "x.onnx",
               "--int8", "static", "--calibration", tmp_path)
    assert r.exit_code == 1 and "--int8 applies to 2D pose models only" in " ".join(r.output.split())


@pytest.mark.parametrize("test_mode", ["fused", "depth"])
def test_rgbd_parser_equals_the_evaluation(tmp_path, test_mode):
    """An rgbd recipe exports its test_mode output: ``fused`` takes RGB and depth (two graph inputs), ``depth`` the
    depth encoder alone (a depth model)."""
    from humanvision.methods.parsing import prepare_synthetic

    data = {"source": "synthetic_nturgbd", "synthetic_dir": str(tmp_path / "ntu"), **NTU_SYNTH}
    root = prepare_synthetic(P.DataConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}),
                             quiet=True)
    method = P.ParsingMethod(_lively(create_model("parsing_rgbd_hrnet_tiny")), "rgbd").eval()
    weights = save_weights(method, tmp_path / "model.safetensors")
    config = tmp_path / "rgbd.yaml"
    config.write_text(yaml.safe_dump({"name": "parsing_rgbd", "model": {"name": "parsing_rgbd_hrnet_tiny"},
                                      "parsing": {"modality": "rgbd", "test_mode": test_mode}, "data": data,
                                      "eval": {"input_size": INPUT}}))
    r = invoke("export", config, "--weights", weights, "--out", tmp_path / "rgbd.onnx")
    assert r.exit_code == 0, r.output
    meta = read_metadata(tmp_path / "rgbd.onnx")
    assert meta["output_mode"] == test_mode and meta["modality"] == ("rgbd" if test_mode == "fused" else "depth")
    parser = HumanParser(tmp_path / "rgbd.onnx")
    reader = NturgbdParsing(root, "val", with_rgb=True)
    ds = P.ParsingImages(reader, "rgbd", tuple(INPUT))
    for i in range(len(reader)):
        sample = reader.load(i)
        item = ds[i]
        with torch.no_grad():
            out = method.predict({"rgb": item["rgb"][None], "depth": item["depth"][None]}, (test_mode,), flip=True)
            want = F.interpolate(out[test_mode].float(), size=sample["depth"].shape, mode="bilinear",
                                 align_corners=False)[0].numpy()
        if test_mode == "fused":
            check_equal(parser.logits(sample["image"], sample["depth"]), want, parser(sample["image"], sample["depth"]))
        else:
            check_equal(parser.logits(sample["depth"]), want, parser(sample["depth"]))
    if test_mode == "fused":
        with pytest.raises(DataError, match="needs the depth map too"):
            parser(sample["image"])
        with pytest.raises(DataError, match="pixel-aligned"):
            parser(sample["image"], sample["depth"][:-1])
