"""Overlapped batch inference (``humanvision.runtime.pipeline``) and its users: ``PoseEstimator.predict_many`` and
the batched ``humanvision infer`` (issue 15, claim 1)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from humanvision.errors import DataError
from humanvision.runtime.pipeline import Prepared, overlapped

torch.set_num_threads(1)

COUNTS = [2, 0, 3, 1, 5, 0, 0, 4, 1, 1, 7, 2, 0, 3]  # crops per item: none, a few, more than a batch


def _stages(log: list, fail_prepare_at: int | None = None, fail_forward_at: int | None = None, delay: float = 0.0):
    """Item i has COUNTS[i] crops whose values encode (i, j); the model doubles them and records batch sizes."""
    def prepare(i: int) -> Prepared:
        if i == fail_prepare_at:
            raise DataError("cannot read", file=f"item{i}.jpg")
        time.sleep(delay * ((i * 7) % 3))  # workers finish out of order
        n = COUNTS[i]
        return Prepared(np.array([[100.0 * i + j] for j in range(n)]).reshape(n, 1), i)

    def forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        log.append(len(x))
        if fail_forward_at is not None and len(log) == fail_forward_at:
            raise RuntimeError("model failed")
        return 2.0 * x, x[:, 0] + 0.5

    def finish(i: int, out) -> tuple[int, list]:
        return i, None if out is None else [out[0][:, 0].tolist(), out[1].tolist()]

    return prepare, forward, finish


def _expected(i: int):
    n = COUNTS[i]
    return i, None if n == 0 else [[2.0 * (100 * i + j) for j in range(n)], [100 * i + j + 0.5 for j in range(n)]]


@pytest.mark.parametrize("workers", [0, 1, 3])
@pytest.mark.parametrize("batch_size", [1, 4, 32])
def test_order_batches_and_outputs(workers, batch_size):
    log: list = []
    got = list(overlapped(range(len(COUNTS)), *_stages(log, delay=0.002), batch_size=batch_size, workers=workers))
    assert got == [_expected(i) for i in range(len(COUNTS))]
    total = sum(COUNTS)
    # full batches only, except the last one: crops of consecutive items share a batch, an item may span two
    assert sum(log) == total and log[:-1] == [batch_size] * (len(log) - 1) and 0 < log[-1] <= batch_size


@pytest.mark.parametrize("workers", [0, 2])
def test_errors_come_at_their_place_after_earlier_results(workers):
    got: list = []
    with pytest.raises(DataError, match="item6.jpg"):
        for r in overlapped(range(len(COUNTS)), *_stages([], fail_prepare_at=6), batch_size=4, workers=workers):
            got.append(r)  # noqa: PERF402  (keep what came before the error)
    assert got == [_expected(i) for i in range(6)]  # items 0-5 all came, although their last batch was not full

    def source():  # the source itself fails (e.g. a video that cannot be opened)
        yield from range(3)
        raise DataError("cannot open the video", file="clip.mp4")

    got = []
    with pytest.raises(DataError, match="clip.mp4"):
        for r in overlapped(source(), *_stages([]), batch_size=4, workers=workers):
            got.append(r)
    assert got == [_expected(i) for i in range(3)]
    got = []
    with pytest.raises(RuntimeError, match="model failed"):  # second model call: the items of the first came
        for r in overlapped(range(len(COUNTS)), *_stages([], fail_forward_at=2), batch_size=4, workers=workers):
            got.append(r)
    assert got == [_expected(i) for i in range(2)]  # items 0 (2 crops) and 1 (none); item 2 spans batches 1-2
    with pytest.raises(TypeError, match="Prepared"):
        list(overlapped(range(3), lambda i: i, lambda x: x, lambda c, o: o, workers=workers))


def _pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("hv-")]


def test_early_stop_ends_the_threads_and_prefetch_is_bounded():
    prepared = []

    def prepare(i):
        prepared.append(i)
        return Prepared(np.zeros((1, 1)), i)

    def forward(x):
        time.sleep(0.01)
        return x

    gen = overlapped(range(10_000), prepare, forward, lambda c, o: c, batch_size=2, workers=2, prefetch=6)
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    gen.close()
    assert not _pipeline_threads()
    assert len(prepared) < 40  # bounded queues: the readers never run far ahead of the model


def test_torch_tensors_and_tuple_outputs():
    def prepare(i):
        return Prepared(torch.full((i % 3, 2), float(i)), i)

    def forward(x):
        return x.sum(1), x[:, :1]

    got = list(overlapped(range(9), prepare, forward, lambda i, o: (i, o), batch_size=2, workers=1))
    for i, out in got:
        if i % 3 == 0:
            assert out is None
        else:
            assert torch.equal(out[0], torch.full((i % 3,), 2.0 * i)) and out[1].shape == (i % 3, 1)


# --------------------------------------------------------------------------------------- PoseEstimator
@pytest.fixture(scope="module")
def estimator(tmp_path_factory):
    from humanvision.export import export_onnx
    from humanvision.methods.topdown import DataConfig, TopDownPose, build_codec, build_transform
    from humanvision.models import create_model
    from humanvision.runtime import PoseEstimator

    torch.manual_seed(0)
    model = create_model("lateral_tiny").eval()
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    w, h = model.input_size
    with torch.no_grad():  # O(1) heatmaps with distinct maxima (see test_export.py)
        last.weight.mul_(1.0 / model(torch.randn(2, 3, h, w)).std())
    data = DataConfig()
    method = TopDownPose(model, build_codec(model, data), "coco17").eval()
    path = tmp_path_factory.mktemp("onnx") / "pose.onnx"
    export_onnx(method, build_transform(method, data, train=False), path, recipe="test")
    return PoseEstimator(path, batch_size=4)


def _images(tmp_path: Path, n: int = 7) -> tuple[list[Path], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    paths, images = [], []
    for i in range(n):
        img = rng.integers(0, 255, (90 + 10 * i, 120, 3), dtype=np.uint8)
        cv2.circle(img, (60, 45), 20, (255, 255, 255), -1)
        paths.append(tmp_path / f"im{i}.png")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        images.append(img)
    return paths, images


def test_predict_many_equals_one_image_at_a_time(estimator, tmp_path):
    paths, images = _images(tmp_path)
    boxes = [np.array([[5.0, 5, 50, 70], [30, 10, 60, 60], [0, 0, 20, 30]])[: i % 4] for i in range(len(images))]
    for workers in (0, 2):
        items = [(f"k{i}", p, b) for i, (p, b) in enumerate(zip(paths, boxes))]
        got = list(estimator.predict_many(items, workers=workers))
        assert [g[0] for g in got] == [f"k{i}" for i in range(len(images))]
        for (key, b, kp, sc), img, bx in zip(got, images, boxes):
            ref_kp, ref_sc = estimator(img, bx)
            assert kp.shape == (len(bx), 17, 2) and sc.shape == (len(bx), 17)
            np.testing.assert_allclose(kp, ref_kp, atol=1e-3)  # other batch compositions: float noise only
            np.testing.assert_allclose(sc, ref_sc, rtol=1e-4, atol=1e-5)
            np.testing.assert_array_equal(b, bx)
    # paths alone (whole image), arrays (key: position), a detector
    got = list(estimator.predict_many(paths[:3]))
    assert [g[0] for g in got] == paths[:3] and all(g[2].shape == (1, 17, 2) for g in got)
    got = list(estimator.predict_many(images[:2]))
    assert [g[0] for g in got] == [0, 1]
    np.testing.assert_allclose(got[1][2], estimator(images[1])[0], atol=1e-3)

    def detector(image, name):
        return np.array([[10.0, 10, 60, 80], [20, 5, 90, 70]]), np.array([0.9, 0.8])

    (_, b, kp, _), = estimator.predict_many(images[:1], detector=detector)
    np.testing.assert_allclose(b, [[10, 10, 50, 70], [20, 5, 70, 65]])
    np.testing.assert_allclose(kp, estimator(images[0], b)[0], atol=1e-3)


def test_predict_many_names_a_corrupt_file_after_the_good_ones(estimator, tmp_path):
    paths, _ = _images(tmp_path, 4)
    paths[2].write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    got = []
    with pytest.raises(DataError, match="im2.png"):
        for r in estimator.predict_many(paths, workers=2):
            got.append(r[0])
    assert got == paths[:2]


def _tiny_recipe(tmp_path: Path) -> Path:
    """The demo recipe with a random lateral_tiny (weights in tmp_path / "w.safetensors"), fp32."""
    import yaml

    from humanvision.models import create_model
    from humanvision.models.weights import save_weights

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "synthetic_tiny.yaml").read_text())
    cfg["model"] = {"name": "lateral_tiny"}
    cfg["eval"] = {**cfg.get("eval", {}), "precision": "fp32"}
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(cfg))
    torch.manual_seed(0)
    save_weights(create_model("lateral_tiny"), tmp_path / "w.safetensors")
    return config


def test_infer_batched_equals_unbatched(tmp_path):
    """``humanvision infer`` with crops of several images per model call and reading in threads writes the same
    records as one image at a time."""
    import json

    from typer.testing import CliRunner

    from humanvision.cli import app

    config = _tiny_recipe(tmp_path)
    (tmp_path / "images").mkdir()
    paths, _ = _images(tmp_path / "images", 6)
    boxes = [{"image": p.name, "bbox": [5.0 + 20 * j, 5.0 + 3 * i, 50.0, 70.0]}  # none for im0, im3: whole image
             for i, p in enumerate(paths) for j in range(i % 3)]
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    outs = {}
    for tag, args in {"serial": ["--batch-size", "1", "--workers", "0"],
                      "batched": ["--batch-size", "4", "--workers", "2", "--no-overlays"]}.items():
        res = CliRunner().invoke(app, ["infer", str(tmp_path / "images"), "--config", str(config),
                                       "--weights", str(tmp_path / "w.safetensors"), "--boxes",
                                       str(tmp_path / "boxes.json"), "--out", str(tmp_path / tag), *args],
                                 env={"COLUMNS": "250"})
        assert res.exit_code == 0, res.output
        outs[tag] = json.loads((tmp_path / tag / "predictions.json").read_text())
    assert list(outs["serial"]) == [p.name for p in paths] == list(outs["batched"])
    for name, records in outs["serial"].items():
        other = outs["batched"][name]
        assert 1 <= len(records) == len(other)
        for a, b in zip(records, other):
            np.testing.assert_allclose(a["keypoints"], b["keypoints"], atol=2e-3)
    assert len(list((tmp_path / "serial").glob("*_pose.png"))) == 6
    assert not list((tmp_path / "batched").glob("*_pose.png"))  # --no-overlays


def test_infer_bad_device_is_a_named_error(tmp_path):
    """An unusable --device is a one-line error that names the option, not a torch traceback."""
    from typer.testing import CliRunner

    from humanvision.cli import app

    config = _tiny_recipe(tmp_path)
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    for device in ("gpu", "cuda:7" if not torch.cuda.is_available() else "tpu"):
        res = CliRunner().invoke(app, ["infer", str(image), "--config", str(config), "--weights",
                                       str(tmp_path / "w.safetensors"), "--device", device, "--out",
                                       str(tmp_path / "out")], env={"COLUMNS": "250", "NO_COLOR": "1"})
        assert res.exit_code != 0
        text = " ".join(res.output.split())
        assert f"--device: '{device}'" in text and "Traceback" not in text, text
