"""ONNX export of re-id and pedestrian-attribute models (``humanvision export`` on their recipes) and the torch-free
person-crop runtime (``humanvision.runtime.ReIDEmbedder`` / ``AttributeClassifier``, issue 15).

The PyTorch reference is the evaluation's own path: ``person_transform`` (resize + normalise) of the image file
and ``ReIDMethod.embed`` / ``AttributeMethod.predict``. Box cuts are checked against pixel ranges written out here,
not against the runtime's own ``cut_box``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from humanvision.cli import app
from humanvision.data.io import read_image, write_image
from humanvision.errors import DataError
from humanvision.export import _draw_person, export_person_onnx
from humanvision.methods import attributes as attr
from humanvision.methods import reid
from humanvision.metrics.reid import reid_distance
from humanvision.models.weights import save_weights
from humanvision.runtime import AttributeClassifier, MetadataError, PoseEstimator, ReIDEmbedder, read_metadata

torch.set_num_threads(1)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ENV = {"COLUMNS": "250", "NO_COLOR": "1"}
SIZE = (64, 32)  # (height, width)


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env=ENV)


def people(folder: Path, n: int = 4, seed: int = 0) -> list[Path]:
    """``n`` PNG person images of different sizes (drawn figures on textured backgrounds)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        img, _ = _draw_person(rng, (int(rng.integers(40, 90)), int(rng.integers(90, 180))))
        paths.append(write_image(folder / f"person_{i}.png", img))
    return paths


@pytest.fixture(scope="module")
def reid_export(tmp_path_factory):
    """A tiny re-id ViT (random weights, 5 training ids) saved as a run's weights and exported by the CLI."""
    tmp = tmp_path_factory.mktemp("reid")
    recipe = reid.load_recipe({"reid": {}, "model": {"name": "reid_vit_tiny_patch16", "img_size": list(SIZE),
                                                     "bnneck": True, "args": {"depth": 2}},
                               "data": {"source": "synthetic"}})
    torch.manual_seed(0)
    method = reid.build_method(recipe, num_classes=5).eval()
    weights = save_weights(method, tmp / "model.safetensors")
    config = tmp / "reid.yaml"
    config.write_text(f"reid: {{}}\nmodel: {{name: reid_vit_tiny_patch16, img_size: [{SIZE[0]}, {SIZE[1]}], "
                      "bnneck: true, args: {depth: 2}}\ndata: {source: synthetic}\n")
    r = invoke("export", config, "--weights", weights, "--out", tmp / "reid.onnx")
    assert r.exit_code == 0, r.output
    assert "features 192-d" in " ".join(r.output.split()) and "max |diff|" in r.output
    return method, tmp / "reid.onnx", tmp


def torch_features(method, image: np.ndarray, interpolation=cv2.INTER_CUBIC) -> np.ndarray:
    x = reid.person_transform(image, SIZE, interpolation=interpolation)[None]
    return method.embed(x).numpy()[0]


def test_reid_runtime_equals_the_pytorch_evaluation(reid_export, tmp_path):
    method, path, _ = reid_export
    meta = read_metadata(path)
    assert meta["format"] == "humanvision.person_crop" and meta["task"] == "reid"
    assert meta["input"]["size"] == [SIZE[1], SIZE[0]] and meta["crop"]["interpolation"] == "bicubic"
    assert meta["output"]["shape"] == ["batch", 192] and meta["parity"]["max_abs_diff"]["realish"] <= 1e-4

    embedder = ReIDEmbedder(path, normalize=False)
    files = people(tmp_path)
    raw = np.stack([embedder(read_image(p))[0] for p in files])  # whole image = the dataset's person crop
    want = np.stack([torch_features(method, read_image(p)) for p in files])
    assert np.abs(raw).max() > 0.1
    np.testing.assert_allclose(raw, want, atol=1e-4, rtol=0)

    unit = ReIDEmbedder(path)  # the export's default: unit-length features
    feats = np.stack([unit(read_image(p))[0] for p in files])
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    ref = reid_distance(torch.from_numpy(want[:2]), torch.from_numpy(want[2:]), "euclidean", normalize=True)
    np.testing.assert_allclose(ReIDEmbedder.distance(raw[:2], raw[2:]), np.asarray(ref), atol=1e-4)


def test_reid_runtime_cuts_boxes_to_whole_pixels(reid_export):
    method, path, _ = reid_export
    img, _ = _draw_person(np.random.default_rng(3), (120, 160))
    embedder = ReIDEmbedder(path, normalize=False, batch_size=1)
    boxes = [[10.3, 5.7, 40.2, 80.1],   # rows 5..85, columns 10..50 (floor of the start, ceil of the end)
             [-20.0, 100.0, 60.0, 90.0],  # leaves the image left and bottom: columns 0..39, rows 100..159
             [0.0, 0.0, 120.0, 160.0]]    # the whole image
    got = embedder(img, boxes)
    cuts = [img[5:86, 10:51], img[100:160, 0:40], img]
    want = np.stack([torch_features(method, c) for c in cuts])
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    np.testing.assert_allclose(embedder(img), got[2:], atol=1e-6, rtol=0)  # no boxes = the whole image

    with pytest.raises(DataError, match="no pixels inside the 120x160 image"):
        embedder(img, [[200.0, 10.0, 30.0, 30.0]])
    with pytest.raises(DataError, match=r"w, h > 0") as e:
        embedder(img, [[0, 0, 10, 10], [5, 5, 0, 10]])
    assert "box 1" in str(e.value)
    with pytest.raises(DataError, match=r"\(N, 4\) xywh boxes"):
        embedder(img, [[1, 2, 3]])
    with pytest.raises(DataError, match="uint8 RGB array"):
        embedder(img.astype(np.float32))
    assert embedder(img, np.zeros((0, 4))).shape == (0, 192)


def test_person_files_and_pose_files_name_their_runtime(reid_export):
    _, path, _ = reid_export
    with pytest.raises(MetadataError, match="open it with ReIDEmbedder or AttributeClassifier, not PoseEstimator"):
        PoseEstimator(path)
    with pytest.raises(MetadataError, match="this is a reid model, not a attributes model; open it with ReIDEmbedder"):
        AttributeClassifier(path)


def test_person_export_refuses_int8_and_wrong_attribute_names(reid_export, tmp_path):
    _, _, tmp = reid_export
    r = invoke("export", tmp / "reid.yaml", "--weights", tmp / "model.safetensors", "--out", tmp_path / "x.onnx",
               "--int8", "dynamic")
    assert r.exit_code == 1 and "--int8 applies to pose models only" in " ".join(r.output.split())
    model = attr.AttributeMethod(attr.AttributeViT(num_classes=3, img_size=SIZE, depth=1), np.full(3, 0.5))
    with pytest.raises(Exception, match="3 attribute scores but 2 attribute names"):
        export_person_onnx(model, tmp_path / "a.onnx", task="attributes", size=SIZE, interpolation="bilinear",
                           attributes=["a", "b"])


def test_attribute_export_through_the_cli(tmp_path):
    """Train two steps on a PA-100K-layout folder, export with the CLI, and compare the runtime's scores and labels
    with ``AttributeMethod.predict`` on the evaluation's crops."""
    from test_reid_attributes import ATTRS, write_pa100k

    from humanvision.data.readers.attributes import read_pa100k

    root = write_pa100k(tmp_path / "pa100k")
    config = tmp_path / "attr.yaml"
    config.write_text("attributes: {threshold: 0.4}\nmodel: {name: attr_vit_tiny_patch16, img_size: [64, 48], "
                      f"args: {{depth: 2}}}}\ndata: {{source: pa100k, root: {root}}}\n"
                      f"train: {{epochs: 1, max_steps: 2, batch_size: 4, precision: fp32, channels_last: false, "
                      f"device: cpu, output_dir: {tmp_path / 'run'}, progress: false, tensorboard: false, "
                      "eval_every: 100}\n")
    r = invoke("train", config)
    assert r.exit_code == 0, r.output
    r = invoke("export", config, "--weights", tmp_path / "run", "--out", tmp_path / "attr.onnx")
    assert r.exit_code == 0, r.output
    assert "3 attributes, positive above 0.4" in " ".join(r.output.split())

    classifier = AttributeClassifier(tmp_path / "attr.onnx")
    assert classifier.attributes == ATTRS and classifier.threshold == pytest.approx(0.4)
    recipe = attr.load_recipe(config)
    data = read_pa100k(root)
    method = attr.build_method(recipe, 3, weights=tmp_path / "run").eval()
    ds = attr.AttributeImages(data, "test", (64, 48))
    with torch.no_grad():
        want = method.predict(torch.stack([ds[i]["image"] for i in range(len(ds))])).numpy()
    got = np.concatenate([classifier(read_image(p)) for p in ds.paths])
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    labels = classifier.labels(got)
    assert [list(d.values()) for d in labels] == (want > 0.4).tolist() and list(labels[0]) == ATTRS
    with pytest.raises(MetadataError, match="open it with AttributeClassifier"):
        ReIDEmbedder(tmp_path / "attr.onnx")
