"""ONNX export of Learnable Triangulation's algebraic method (``humanvision export`` on a
``triangulation: algebraic`` recipe) and the torch-free ``humanvision.runtime.MultiViewTriangulator``, against the
PyTorch path (``MultiViewCrops`` + ``AlgebraicTriangulation.predict``) on synthetic frames in the Human3.6M
multi-view layout (issue 15).

The runtime gets what a user has: the full camera images, a person box per view and each camera's full-image
projection matrix; it must make the same crops, crop cameras, 2D points, weights and 3D joints.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from humanvision.cli import app
from humanvision.data.readers.h36m import Human36MMultiView
from humanvision.errors import DataError
from humanvision.methods import algebraic as alg
from humanvision.models.weights import save_weights
from humanvision.runtime import MetadataError, MultiViewTriangulator, PoseEstimator, read_metadata
from humanvision.runtime.multiview import dlt

torch.set_num_threads(1)
ENV = {"COLUMNS": "250", "NO_COLOR": "1"}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env=ENV)


@pytest.fixture(scope="module")
def h36m(tmp_path_factory):
    from humanvision.data.synthetic.writers import generate_h36m

    root = tmp_path_factory.mktemp("lt_h36m")
    generate_h36m(root, 3, size=(160, 160), views=3, subjects=1, actions=1, seed=3)
    return Human36MMultiView(root / "human36m-multiview-labels-GTbboxes.npy", root / "processed")


@pytest.fixture(scope="module", params=[True, False], ids=["alg", "alg_no_conf"])
def exported(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("alg")
    recipe = {"name": "lt_alg_test", "triangulation": "algebraic",
              "model": {"backbone": "simplebaseline_tiny", "input_size": 64, "confidence_channels": [32, 32],
                        "use_confidences": request.param},
              "data": {"bbox_scale": 1.2}}
    config = tmp / "alg.yaml"
    config.write_text(yaml.safe_dump(recipe))
    torch.manual_seed(0)
    method = alg.build_method(alg.load_recipe(config)).eval()
    last = method.backbone.head.final_layer
    with torch.no_grad():  # peaked maps: soft-argmax points spread over the crop, not all at its centre
        last.weight.mul_(0.05 / method.backbone(torch.randn(2, 3, 64, 64)).std())
    weights = save_weights(method, tmp / "model.safetensors")
    r = invoke("export", config, "--weights", weights, "--out", tmp / "alg.onnx")
    assert r.exit_code == 0, r.output
    return method, tmp / "alg.onnx", config, r.output


def user_inputs(h36m, index: int):
    """What a user passes: full images, xywh boxes and full-image projection matrices, per view."""
    sample = h36m[index]
    images, boxes, proj = [], [], []
    for view in sample.views:
        top, left, bottom, right = (int(v) for v in view.meta["bbox_tlbr"])
        images.append(view.load_image())
        boxes.append([left, top, right - left, bottom - top])
        proj.append(view.camera.projection_matrix)
    return images, boxes, np.stack(proj)


def test_runtime_equals_predict(exported, h36m):
    method, path, _, output = exported
    meta = read_metadata(path)
    assert meta["format"] == "humanvision.multiview" and meta["crop"]["scale"] == 1.2
    assert (meta["output"]["confidences"] is not None) == method.use_confidences
    assert "weighted DLT in the runtime" in " ".join(output.split())
    runtime = MultiViewTriangulator(path)
    crops = alg.MultiViewCrops(h36m, 64, bbox_scale=1.2)
    for index in range(len(h36m)):
        item = crops[index]
        with torch.no_grad():
            want = method.predict(item["images"][None], item["proj"][None], item["view_mask"][None])
        got = runtime(*user_inputs(h36m, index))
        np.testing.assert_allclose(got["crop_projections"], item["proj"].numpy(), rtol=1e-9, atol=1e-6)
        np.testing.assert_allclose(got["keypoints_2d"], want["keypoints_2d"][0].numpy(), atol=2e-3)
        np.testing.assert_allclose(got["weights"], want["confidences"][0].numpy(), atol=1e-5)
        np.testing.assert_allclose(got["keypoints_3d"], want["keypoints_3d"][0].numpy(), atol=0.5)  # mm
        assert np.ptp(got["keypoints_2d"][..., 0]) > 5  # points spread over the crop


def test_a_missing_view_gets_no_weight(exported, h36m):
    method, path, _, _ = exported
    runtime = MultiViewTriangulator(path)
    images, boxes, proj = user_inputs(h36m, 0)
    images[1], boxes[1] = None, None
    item = alg.MultiViewCrops(h36m, 64, bbox_scale=1.2)[0]
    mask = torch.tensor([True, False, True])
    imgs = item["images"].clone()
    imgs[1] = 0
    with torch.no_grad():
        want = method.predict(imgs[None], item["proj"][None], mask[None])
    got = runtime(images, boxes, proj)
    assert (got["weights"][1] == 0).all() and (got["crop_boxes"][1] == 0).all()
    np.testing.assert_allclose(got["keypoints_3d"], want["keypoints_3d"][0].numpy(), atol=0.5)
    with pytest.raises(DataError, match="at least two views"):
        runtime([images[0], None, None], [boxes[0], None, None], proj)


def test_dlt_recovers_exact_points():
    rng = np.random.default_rng(0)
    X = rng.uniform(-500, 500, (5, 3)) + [0, 0, 4000]
    P = np.stack([np.hstack([np.eye(3) * [f, f, 1], np.array([[t], [0.0], [0.0]])]) for f, t in
                  ((500, 0), (400, 300), (600, -200))])
    P[:, :2, 2] = 80.0
    uv = np.einsum("vij,kj->vki", P, np.hstack([X, np.ones((5, 1))]))
    uv = uv[..., :2] / uv[..., 2:]
    np.testing.assert_allclose(dlt(P, uv, rng.uniform(0.2, 1.0, (3, 5))), X, atol=1e-6)
    w = np.ones((3, 5))
    w[1:, 2] = 0  # joint 2 seen by one view only
    out = dlt(P, uv, w)
    assert np.isnan(out[2]).all() and np.isfinite(np.delete(out, 2, 0)).all()


def test_bad_input_and_wrong_runtime(exported, h36m):
    _, path, config, _ = exported
    runtime = MultiViewTriangulator(path)
    images, boxes, proj = user_inputs(h36m, 0)
    with pytest.raises(DataError, match=r"\(3, 3, 4\) finite projection matrices"):
        runtime(images, boxes, proj[:2])
    bad = list(boxes)
    bad[2] = [0, 0, -5, 10]
    with pytest.raises(DataError, match="w, h > 0") as e:
        runtime(images, bad, proj)
    assert "view 2" in str(e.value)
    with pytest.raises(DataError, match="uint8 RGB array"):
        runtime([images[0].astype(np.float32), *images[1:]], boxes, proj)
    with pytest.raises(MetadataError, match="open it with MultiViewTriangulator, not PoseEstimator"):
        PoseEstimator(path)
    r = invoke("export", config, "--weights", path.parent / "model.safetensors", "--out", path.parent / "x.onnx",
               "--int8", "dynamic")
    assert r.exit_code == 1 and "--int8 applies to 2D pose models only" in " ".join(r.output.split())
