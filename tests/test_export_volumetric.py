"""ONNX export of the volumetric methods (Learnable Triangulation's ``vol`` and ContextPose) and the torch-free
``humanvision.runtime.VolumetricTriangulator`` (issue 15), against ``predict`` (without rotation) on the crops of
``MultiViewCrops``, on synthetic frames in the Human3.6M multi-view layout.

The whole method is one graph of fixed shapes (one frame of V crops, their crop cameras, the base point and the view
mask); the runtime makes the crops and crop cameras from the full images, boxes and full-image cameras.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from test_export_multiview import user_inputs
from typer.testing import CliRunner

from humanvision.cli import app
from humanvision.data.readers.h36m import Human36MMultiView
from humanvision.errors import DataError
from humanvision.methods import algebraic as alg
from humanvision.methods import contextpose as cp
from humanvision.methods import volumetric as vol
from humanvision.models.weights import save_weights
from humanvision.runtime import MetadataError, MultiViewTriangulator, VolumetricTriangulator, read_metadata

torch.set_num_threads(1)
ENV = {"COLUMNS": "250", "NO_COLOR": "1"}
VIEWS = 3


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env=ENV)


@pytest.fixture(scope="module")
def h36m(tmp_path_factory):
    from humanvision.data.synthetic.writers import generate_h36m

    root = tmp_path_factory.mktemp("vol_h36m")
    generate_h36m(root, 2, size=(160, 160), views=VIEWS, subjects=1, actions=1, seed=4)
    return Human36MMultiView(root / "human36m-multiview-labels-GTbboxes.npy", root / "processed")


@pytest.fixture(scope="module", params=["volumetric_softmax", "volumetric_conf", "contextpose"])
def exported(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    model = {"backbone": "simplebaseline_tiny", "input_size": 64, "volume_size": 32, "base": "gt",
             "cuboid_side": 2000.0}
    if request.param == "volumetric_conf":
        model.update(aggregation="conf", confidence_channels=[32, 32])
    kind = "contextpose" if request.param == "contextpose" else "volumetric"
    recipe = {"name": f"{request.param}_test", "triangulation": kind, "model": model, "data": {"bbox_scale": 1.1}}
    config = tmp / "recipe.yaml"
    config.write_text(yaml.safe_dump(recipe))
    module = cp if kind == "contextpose" else vol
    torch.manual_seed(0)
    method = module.build_method(module.load_recipe(config, unchecked=("data.",))).eval()
    for m in method.modules():  # ContextPose's limb-length prior (a checkpoint carries it)
        if hasattr(m, "set_limb_statistics") and hasattr(m, "limb_mean"):
            e = m.limb_mean.shape[0]
            m.set_limb_statistics(torch.linspace(200.0, 450.0, e), torch.full((e,), 30.0))
    with torch.no_grad():  # peaked volumes: each joint's soft-argmax lands somewhere else in the cuboid
        for m in method.volume_net.modules():
            if isinstance(m, torch.nn.Conv3d):
                torch.nn.init.kaiming_normal_(m.weight)
        method.volume_net.output_layer.weight.mul_(5.0)
    weights = save_weights(method, tmp / "model.safetensors")
    r = invoke("export", config, "--weights", weights, "--out", tmp / "vol.onnx", "--views", VIEWS)
    assert r.exit_code == 0, r.output
    return method, tmp / "vol.onnx", config, r.output


def test_runtime_equals_predict(exported, h36m):
    method, path, _, output = exported
    meta = read_metadata(path)
    assert meta["method"] == "volumetric" and meta["input"]["views"] == VIEWS and meta["crop"]["scale"] == 1.1
    assert meta["volume"]["cuboid_side"] == 2000.0 and "32^3 over 2000 mm" in " ".join(output.split())
    runtime = VolumetricTriangulator(path)
    crops = alg.MultiViewCrops(h36m, 64, bbox_scale=1.1)
    for index in range(len(h36m)):
        item = crops[index]
        base = torch.from_numpy(np.asarray(h36m[index].keypoints_3d[0][alg.ROOT], np.float64))[None]
        base = base + torch.tensor([[40.0, -30.0, 20.0]], dtype=torch.float64)  # not exactly the pelvis
        with torch.no_grad():
            want = method.predict(item["images"][None], item["proj"][None], base, item["view_mask"][None],
                                  angle=torch.zeros(1, dtype=torch.float64))["keypoints_3d"][0].numpy()
        got = runtime(*user_inputs(h36m, index), base[0].numpy())
        np.testing.assert_allclose(got["crop_projections"], item["proj"].numpy(), rtol=1e-9, atol=1e-6)
        np.testing.assert_allclose(got["keypoints_3d"], want, atol=0.05)  # mm
        assert np.ptp(got["keypoints_3d"], axis=0).max() > 10  # the joints differ: not a constant output


def test_a_missing_camera_and_bad_input(exported, h36m):
    method, path, _, _ = exported
    runtime = VolumetricTriangulator(path)
    images, boxes, proj = user_inputs(h36m, 0)
    base = np.asarray(h36m[0].keypoints_3d[0][alg.ROOT], np.float64)
    item = alg.MultiViewCrops(h36m, 64, bbox_scale=1.1)[0]
    imgs = item["images"].clone()
    imgs[2] = 0
    with torch.no_grad():
        want = method.predict(imgs[None], item["proj"][None], torch.from_numpy(base)[None],
                              torch.tensor([[True, True, False]]),
                              angle=torch.zeros(1, dtype=torch.float64))["keypoints_3d"][0].numpy()
    got = runtime([*images[:2], None], [*boxes[:2], None], proj, base)
    np.testing.assert_allclose(got["keypoints_3d"], want, atol=0.05)
    with pytest.raises(DataError, match="exported for 3 cameras, got 2 images"):
        runtime(images[:2], boxes[:2], proj[:2], base)
    with pytest.raises(DataError, match=r"finite \(3,\) base point"):
        runtime(images, boxes, proj, [0.0, np.nan, 1.0])
    with pytest.raises(DataError, match="no view shows the person"):
        runtime([None] * 3, [None] * 3, proj, base)
    with pytest.raises(MetadataError, match="open it with VolumetricTriangulator"):
        MultiViewTriangulator(path)
