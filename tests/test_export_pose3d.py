"""ONNX export of the monocular 3D networks (``humanvision export`` on a ``zhou3d`` recipe) and the torch-free
``humanvision.runtime.MonocularPose3D``, against the PyTorch path ``monocular3d.predict_image`` (issue 15: every
model family exports).

Both depth heads: the v2 depth map (``resnet_depth_mini``) and the hourglass's per-joint regressor
(``hourglass3d_mini``). The last heatmap convolution is rescaled so that the maps are O(1) with distinct maxima (an
untrained network's maps are nearly flat, where an integer argmax would compare ties).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from humanvision.cli import app
from humanvision.engine.checkpoint import save_checkpoint
from humanvision.errors import DataError
from humanvision.export import _draw_person
from humanvision.methods import monocular3d as m3d
from humanvision.metrics.pose3d import HG_H36M17_EDGES
from humanvision.models import create_model
from humanvision.runtime import MetadataError, MonocularPose3D, PoseEstimator, ReIDEmbedder, read_metadata

torch.set_num_threads(1)
ENV = {"COLUMNS": "250", "NO_COLOR": "1"}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env=ENV)


@pytest.fixture(scope="module", params=["resnet_depth_mini", "hourglass3d_mini"])
def exported(request, tmp_path_factory):
    """(method, onnx path, CLI output) for a run folder of the model saved in the engine's layout."""
    name = request.param
    tmp = tmp_path_factory.mktemp(name)
    torch.manual_seed(0)
    method = m3d.Monocular3DPose(create_model(name, skeleton="mpii16"), weight_3d=0.1).eval()
    last = method.model.head.final_layer if name.startswith("resnet") else method.model.head
    with torch.no_grad():
        last.weight.mul_(1.0 / method.model.forward_pose3d(torch.randn(2, 3, 64, 64))["hm"][-1].std())
        bias = method.model.depth_head.bias if name.startswith("resnet") else None
        if bias is not None:
            bias.normal_(0.0, 0.2)  # a depth per joint: a non-flat 3D pose
    save_checkpoint(tmp / "run" / "last", {k: v.contiguous() for k, v in method.state_dict().items()},
                    meta={"step": 1})
    recipe = {"name": f"zhou3d_{name}", "stage": "2d3d", "init_weights": str(tmp / "stage1"),
              "model": {"name": name},
              "data": {"mpii_train": str(tmp / "mpii.json"), "mpii_images": str(tmp / "images"),
                       "h36m_labels": str(tmp / "labels.npy"), "h36m_root": str(tmp / "processed"),
                       "box_padding": 1.3},
              "loss": {"weight_3d": 0.1}, "eval": {"flip_test": True, "total_bone_length": 4100.0}}
    config = tmp / "recipe.yaml"
    config.write_text(yaml.safe_dump(recipe, sort_keys=False))
    r = invoke("export", config, "--weights", tmp / "run", "--out", tmp / "model.onnx")
    assert r.exit_code == 0, r.output
    return method, tmp / "model.onnx", r.output


def test_export_writes_the_contract(exported):
    method, path, output = exported
    meta = read_metadata(path)
    assert meta["format"] == "humanvision.monocular3d" and meta["crop"]["padding"] == 1.3
    assert meta["joints_3d"]["total_length"] == 4100.0 and meta["joints_3d"]["skeleton"] == "h36m17_vp"
    assert meta["joints_3d"]["from_joints"] == list(m3d.MPII16_TO_H36M17)
    assert meta["decode"]["depth_unit"] == method.depth_unit and meta["decode"]["root"] == m3d.ROOT
    kind = "map" if "resnet" in meta["model"] else "per_joint"
    assert meta["output"]["depth_kind"] == kind
    assert max(meta["parity"]["max_abs_diff"].values()) <= 1e-4
    assert set(meta["parity"]["max_abs_diff"]) == {"random/heatmaps", "random/depth", "realish/heatmaps",
                                                   "realish/depth"}
    assert "heatmaps 16x16" in " ".join(output.split())


@pytest.mark.parametrize("flip", [True, False])
def test_runtime_equals_predict_image(exported, flip):
    method, path, _ = exported
    img, box = _draw_person(np.random.default_rng(5), (150, 120))
    runtime = MonocularPose3D(path, flip_test=flip, batch_size=2)
    for boxes in (None, [box, [box[0] - 30, box[1] + 10, box[2] * 0.7, box[3] * 0.6], [0, 0, 40, 90]]):
        got = runtime(img, boxes)
        want = m3d.predict_image(method, img, boxes, box_padding=1.3, flip_test=flip, total_length=4100.0)
        assert got["joints_3d"].shape == want["joints_3d"].shape == (1 if boxes is None else 3, 17, 3)
        np.testing.assert_allclose(got["boxes"], want["boxes"])
        np.testing.assert_allclose(got["keypoints_2d"], want["keypoints_2d"], atol=1e-6)  # same argmax
        np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-4)
        np.testing.assert_allclose(got["pose_crop"], want["pose_crop"], atol=1e-4)
        np.testing.assert_allclose(got["joints_3d"], want["joints_3d"], atol=0.2)  # mm, of 4100 mm of bones
        e = np.asarray(HG_H36M17_EDGES)
        bones = np.linalg.norm(got["joints_3d"][:, e[:, 0]] - got["joints_3d"][:, e[:, 1]], axis=-1).sum(1)
        np.testing.assert_allclose(bones, 4100.0)
        assert np.abs(got["pose_crop"][..., 2]).max() > 1e-3  # a real depth, not a flat pose
    assert runtime(img, np.zeros((0, 4)))["joints_3d"].shape == (0, 17, 3)


def test_bad_input_and_wrong_runtime(exported, tmp_path):
    _, path, _ = exported
    runtime = MonocularPose3D(path)
    img = np.zeros((40, 30, 3), np.uint8)
    with pytest.raises(DataError, match="w, h > 0") as e:
        runtime(img, [[0, 0, 10, 10], [1, 1, 0, 5]])
    assert "box 1" in str(e.value)
    with pytest.raises(DataError, match=r"\(N, 4\) xywh"):
        runtime(img, [[1, 2, 3]])
    with pytest.raises(DataError, match="uint8 RGB array"):
        runtime(img[..., 0])
    with pytest.raises(MetadataError, match="open it with MonocularPose3D, not PoseEstimator"):
        PoseEstimator(path)
    with pytest.raises(MetadataError, match="open it with MonocularPose3D"):
        ReIDEmbedder(path)


def test_int8_is_refused_for_3d(exported, tmp_path):
    _, path, _ = exported
    config = path.parent / "recipe.yaml"
    r = invoke("export", config, "--weights", path.parent / "run", "--out", tmp_path / "x.onnx", "--int8", "dynamic")
    assert r.exit_code == 1 and "--int8 applies to 2D pose models only" in " ".join(r.output.split())
