"""ONNX export of A2J (depth-map 3D pose on ITOP: ``humanvision.methods.a2j.export_onnx``) and the torch-free
``humanvision.runtime.A2JPose``, against the evaluation's own path: ``A2JDataset`` (box padding and clipping,
``preprocess``) + ``A2JMethod.predict`` + ``crop_to_image`` + ``itop_backproject``, i.e. ``evaluate_a2j``'s
``_predict_all`` (issue 15: every model family exports).

Frames: ITOP side views in the official ``.h5`` layout from tests/test_a2j.py's writer (a wall at 4 m, a disk per
joint), boxes from the joints as ``read_split`` makes them without a box file. The tiny A2J's last head
convolutions are rescaled so that the anchor responses are peaked and the offsets / depths O(pixels) / O(units)
(at the N(0, 0.01) initialisation the softmax is nearly uniform and every joint decodes to the crop centre).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from test_a2j import _write_itop

from humanvision.errors import ConfigError, DataError
from humanvision.export import export_a2j_onnx
from humanvision.methods import a2j as A
from humanvision.metrics.pose3d import itop_map
from humanvision.models.weights import save_weights
from humanvision.runtime import A2JPose, MetadataError, MonocularPose3D, PoseEstimator, read_metadata
from humanvision.runtime.a2j import check_a2j_metadata

torch.set_num_threads(1)
PAD = [10.0, 6.0]


@pytest.fixture(scope="module")
def itop_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("itop_a2j")
    _write_itop(root, "train", 2, seed=1)
    _write_itop(root, "test", 5, seed=2)
    return root


def _lively(method: A.A2JMethod, x: torch.Tensor) -> A.A2JMethod:
    """Rescale the heads' last convolutions: logits std 3, offsets std 4 px, depths std 5 units (random biases)."""
    m = method.model
    torch.manual_seed(1)
    with torch.no_grad():
        out = m(x)
        for head, key, target in ((m.cls_head, "cls", 3.0), (m.offset_head, "offset", 4.0),
                                  (m.depth_head, "depth", 5.0)):
            head[-1].weight.mul_(target / out[key].std())
            head[-1].bias.normal_(0.0, target / 2)
    return method


@pytest.fixture(scope="module", params=[False, True], ids=["minus_mean_background", "zero_background"])
def exported(request, itop_root, tmp_path_factory):
    """(recipe, method, test dataset, onnx path, export report): a lively tiny A2J saved as weights and exported by
    ``a2j.export_onnx`` (which loads the weights like ``humanvision eval``)."""
    tmp = tmp_path_factory.mktemp("a2j_export")
    recipe = A.load_recipe({"name": "a2j_export_test",
                            "model": {"name": "a2j_hrnet_tiny", "args": {"head_width": 8, "head_convs": 1}},
                            "a2j": {"input_size": 48, "zero_background": request.param},
                            "data": {"source": "itop", "root": str(itop_root), "test_box_pad": PAD}})
    torch.manual_seed(0)
    method = A.build_method(recipe).eval()
    dataset = A.build_dataset(recipe, "test")
    _lively(method, torch.stack([dataset[i]["image"] for i in range(len(dataset))]))
    weights = save_weights(method, tmp / "model.safetensors")
    report = A.export_onnx(recipe, weights, tmp / "a2j.onnx")
    return recipe, method, dataset, tmp / "a2j.onnx", report


def _frame(dataset: A.A2JDataset, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame ``i``'s depth map (m), its raw joint box (before the padding) and joint depths, as the dataset has
    them."""
    frame = int(dataset.indices[i])
    kp2 = dataset.reader.keypoints_2d[frame]
    z = dataset.reader.keypoints_3d[frame].astype(np.float64)[:, 2] / 1000.0
    return dataset.depth(i), np.concatenate([kp2.min(0), kp2.max(0)]).astype(np.float64), z


def test_export_writes_the_contract(exported):
    recipe, method, _, path, report = exported
    meta = read_metadata(path)  # the generic reader dispatches to check_a2j_metadata
    assert meta == report.metadata and meta["format"] == "humanvision.a2j"
    assert meta["model"] == "a2j_hrnet_tiny" and meta["recipe"] == "a2j_export_test"
    assert meta["weights"] == "model.safetensors"
    assert meta["input"]["shape"] == ["batch", 1, 48, 48] and meta["input"]["graph_channels"] == 3
    assert meta["output"]["shape"] == ["batch", 15, 2] and meta["output"]["depth_shape"] == ["batch", 15]
    assert meta["crop"]["padding"] == PAD and meta["crop"]["box_format"] == "xyxy"
    assert meta["depth"]["margin"] == recipe.a2j.depth_margin
    assert meta["depth"]["zero_background"] is recipe.a2j.zero_background
    assert meta["decode"]["depth_scale"] == 50.0 and meta["decode"]["anchors"] == len(method.model.anchors) == 1296
    assert meta["camera"] == {**meta["camera"], "image_size": [320, 240], "principal_point": [160.0, 120.0],
                              "pixel_scale": A.ITOP_PIXEL_SCALE}
    assert meta["skeleton"]["name"] == "itop15" and len(meta["skeleton"]["joints"]) == 15
    parity, peak = meta["parity"]["max_abs_diff"], meta["parity"]["reference_max_abs"]
    assert set(parity) == {f"{k}/{o}" for k in ("random", "realish") for o in ("joints_crop", "depth")}
    assert all(parity[k] <= 1e-4 * max(1.0, peak[k]) for k in parity)  # check_parity's rule
    assert parity["realish/joints_crop"] <= 1e-4 and parity["realish/depth"] <= 1e-4  # crop px, depth units
    assert meta["parity"]["batch_sizes"]["random/depth"] == 3
    assert peak["realish/joints_crop"] > 10  # crop pixels, not a collapsed output


def test_runtime_equals_the_evaluation(exported):
    """Per frame: the runtime's boxes, 2D joints and 3D joints against ``_predict_all`` (the numbers ``evaluate_a2j``
    scores), and the same mAP."""
    _, method, dataset, path, _ = exported
    want = A._predict_all(method, dataset, 2, torch.device("cpu"), "fp32", 0)
    runtime = A2JPose(path)
    got_2d, got_3d = [], []
    for i in range(len(dataset)):
        depth, box, z = _frame(dataset, i)
        out = runtime(depth, box[None], joints_z=z[None])
        np.testing.assert_array_equal(out["boxes"][0], dataset.boxes[i])  # padded and clipped as read_split
        item = dataset[i]
        assert out["mean"][0] == item["mean"].item()
        with torch.no_grad():
            xy = method.predict(item["image"][None])["xy"][0].numpy()
        np.testing.assert_allclose(out["joints_crop"][0], xy, atol=1e-3)  # (row, col) crop pixels
        got_2d.append(out["keypoints_2d"][0])
        got_3d.append(out["joints_3d"][0])
    got_2d, got_3d = np.stack(got_2d), np.stack(got_3d)
    assert np.ptp(got_2d, axis=1).min() > 3  # distinct joints, not a collapsed decoding
    np.testing.assert_allclose(got_2d, want["pred_2d"], rtol=0, atol=2e-3)  # image pixels
    np.testing.assert_allclose(got_3d, want["pred_3d"], rtol=0, atol=1e-5)  # metres
    assert itop_map(got_3d, want["gt_3d"]).map == itop_map(want["pred_3d"], want["gt_3d"]).map


def test_several_boxes_batches_and_far_clips(exported):
    _, _, dataset, path, _ = exported
    depth, box, z = _frame(dataset, 0)
    other = box + [-20.0, 5.0, 10.0, 15.0]
    one = A2JPose(path)(depth, box[None], joints_z=z[None])
    both = A2JPose(path, batch_size=1)(depth, np.stack([box, other]), joints_z=np.stack([z, z]))
    for key in ("boxes", "keypoints_2d", "depth", "joints_3d", "joints_crop", "mean"):
        np.testing.assert_allclose(both[key][:1], one[key], rtol=0, atol=1e-6, err_msg=key)
    assert not np.allclose(both["keypoints_2d"][1], both["keypoints_2d"][0])
    # the evaluation's clip given as a far plane
    far = A2JPose(path)(depth, box[None], max_depth=float(z.max()) + 0.05)
    np.testing.assert_array_equal(far["joints_3d"], one["joints_3d"])
    # no clip: the wall at 4 m enters the crop and moves the centring depth
    free = A2JPose(path)(depth, box[None])
    assert free["mean"][0] > one["mean"][0] + 0.2
    # already padded boxes with box_pad=(0, 0)
    padded = A2JPose(path, box_pad=(0, 0))(depth, one["boxes"], joints_z=z[None])
    np.testing.assert_array_equal(padded["joints_3d"], one["joints_3d"])
    empty = A2JPose(path)(depth, np.zeros((0, 4)))
    assert empty["joints_3d"].shape == (0, 15, 3) and empty["keypoints_2d"].shape == (0, 15, 2)


def test_bad_input_is_a_data_error(exported):
    _, _, dataset, path, _ = exported
    runtime = A2JPose(path)
    depth, box, z = _frame(dataset, 0)
    cases = [
        ((depth.astype(np.uint16), box[None]), {}, "float depth map", "depth"),
        ((depth[:100], box[None]), {}, "240 x 320", "depth"),
        ((depth[..., None], box[None]), {}, "float depth map", "depth"),
        ((np.where(depth > 3.9, np.nan, depth).astype(np.float32), box[None]), {}, "non-finite", "depth"),
        ((depth, [[1, 2, 3]]), {}, r"\(N, 4\) boxes", "boxes"),
        ((depth, [box, [50, 60, 40, 90]]), {}, "x2 >= x1", "box 1"),
        ((depth, [box, [400, 10, 420, 50]]), {}, "empty box", "box 1"),
        ((depth, [[np.inf, 0, 10, 10]]), {}, "finite", "box 0"),
        ((depth, box[None]), {"joints_z": z}, r"\(N, K\) joint depths", "joints_z"),
        ((depth, box[None]), {"joints_z": z[None], "max_depth": 3.0}, "not both", "max_depth"),
        ((depth, box[None]), {"max_depth": -1.0}, "far clips > 0", "max_depth"),
        ((depth, box[None]), {"max_depth": [3.0, 3.0]}, "one per box", "max_depth"),
        ((depth, box[None]), {"max_depth": 0.5}, "no depth reading", "box 0"),
    ]
    for args, kwargs, message, where in cases:
        with pytest.raises(DataError, match=message) as e:
            runtime(*args, **kwargs)
        assert where in str(e.value), (message, str(e.value))
    with pytest.raises(DataError, match="box_pad"):
        A2JPose(path, box_pad=(1, 2, 3))


def test_wrong_runtime_and_bad_metadata(exported):
    _, method, _, path, report = exported
    with pytest.raises(MetadataError, match="open it with A2JPose, not PoseEstimator"):
        PoseEstimator(path)
    with pytest.raises(MetadataError, match="open it with A2JPose, not MonocularPose3D"):
        MonocularPose3D(path)
    meta = report.metadata
    with pytest.raises(MetadataError, match="metadata.camera.pixel_scale"):
        check_a2j_metadata({**meta, "camera": {**meta["camera"], "pixel_scale": 0}})
    with pytest.raises(MetadataError, match="missing or malformed"):
        check_a2j_metadata({k: v for k, v in meta.items() if k != "depth"})
    with pytest.raises(ConfigError, match="opset"):
        export_a2j_onnx(method, path.parent / "x.onnx", opset=11)


def test_runtime_module_imports_without_torch():
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'torchvision', 'timm'):\n"
            "            raise ImportError(name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from humanvision.runtime import A2JPose, A2J_FORMAT\n"
            "from humanvision.runtime.pose import RUNTIME_CLASSES\n"
            "assert RUNTIME_CLASSES[A2J_FORMAT] == 'A2JPose'\n")
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_cli_export_of_an_a2j_recipe(exported, itop_root, tmp_path):
    """``humanvision export`` dispatches A2J recipes (before the generic load: ``model.init`` need not exist)."""
    import yaml
    from typer.testing import CliRunner

    from humanvision.cli import app

    recipe, _, _, path, _ = exported
    config = tmp_path / "a2j.yaml"
    config.write_text(yaml.safe_dump({
        "name": "a2j_cli", "model": {"name": "a2j_hrnet_tiny", "init": str(tmp_path / "absent_encoder.pth"),
                                     "args": {"head_width": 8, "head_convs": 1}},
        "a2j": {"input_size": 48, "zero_background": recipe.a2j.zero_background},
        "data": {"source": "itop", "root": str(itop_root), "test_box_pad": PAD}}))
    env = {"COLUMNS": "250", "NO_COLOR": "1"}
    r = CliRunner().invoke(app, ["export", str(config), "--weights", str(path.parent / "model.safetensors"),
                                 "--out", str(tmp_path / "cli.onnx")], env=env)
    assert r.exit_code == 0, r.output
    assert "ITOP back-projection" in " ".join(r.output.split()) and "max |diff|" in r.output
    assert read_metadata(tmp_path / "cli.onnx")["recipe"] == "a2j_cli"
    r = CliRunner().invoke(app, ["export", str(config), "--weights", str(path.parent / "model.safetensors"),
                                 "--out", str(tmp_path / "x.onnx"), "--int8", "dynamic"], env=env)
    assert r.exit_code == 1 and "--int8 applies to 2D pose models only" in " ".join(r.output.split())
