"""Top-down 2D pose method: flip test, COCO evaluation parity with pycocotools, checkpoint round trip, data items.

All on tiny models at 64x64 crops over a synthetic COCO-format set written once per module.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
import torch

from humanvision.config import load_config
from humanvision.engine import Trainer, read_log
from humanvision.errors import ConfigError
from humanvision.methods.topdown import (
    TopDownDataset,
    TopDownRecipe,
    build_method,
    build_transform,
    eval_reader,
    evaluate_topdown,
    load_method_weights,
    predict_boxes,
    to_coco_results,
    train_reader,
)
from humanvision.metrics.coco import STAT_NAMES, evaluate_coco_keypoints
from humanvision.skeletons import get_skeleton

torch.set_num_threads(1)

TINY_MODELS = ["simplebaseline_tiny", "vitpose_tiny"]
INPUT = 64  # square crops: flips map crop column u to INPUT - 1 - u


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    from humanvision.data.synthetic.writers import generate_coco

    root = tmp_path_factory.mktemp("synthetic_coco")
    generate_coco(root, {"train": 24, "val": 8}, size=(128, 128), seed=0)
    return root


def make_recipe(root, name: str = "simplebaseline_tiny", **data) -> TopDownRecipe:
    return load_config({
        "model": {"name": name, "input_size": [INPUT, INPUT]},
        "data": {"train_ann": str(root / "annotations/person_keypoints_train.json"),
                 "train_images": str(root / "train"),
                 "val_ann": str(root / "annotations/person_keypoints_val.json"),
                 "val_images": str(root / "val"), **data},
        "train": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "device": "cpu", "progress": False,
                  "tensorboard": False, "output_dir": str(root / "runs" / name),
                  "precision": "fp32", "channels_last": False},  # pinned: "auto" measures (tests compare runs)
        "eval": {"batch_size": 8, "precision": "fp32", "channels_last": False},
    }, TopDownRecipe)


def generic_method(name: str, dark: bool = False, seed: int = 0):
    """A random-init method with positive, non-degenerate heatmaps (0.5 +- ~0.1, no float ties between pixels):
    BatchNorm running statistics are calibrated on random inputs and the final 1x1 convolution is rescaled
    (a fresh head outputs ~1e-8, where argmax ties are common and channels with a maximum <= 0 decode to the
    -1 sentinel)."""
    recipe = load_config({"model": {"name": name, "input_size": [INPUT, INPUT]}, "data": {"dark": dark}},
                         TopDownRecipe)
    torch.manual_seed(seed)
    method = build_method(recipe).train()
    with torch.no_grad():
        for _ in range(20):
            method.model(torch.randn(4, 3, INPUT, INPUT))
        method.eval()
        final = method.model.head.final_layer
        x = torch.randn(8, 3, INPUT, INPUT)
        std = method.model(x).std(dim=(0, 2, 3))
        final.weight.mul_((0.1 / std).view(-1, *[1] * (final.weight.ndim - 1)))
        final.bias.sub_(method.model(x).mean(dim=(0, 2, 3)) - 0.5)
    return method


def mirror(kp: torch.Tensor, flip_index) -> torch.Tensor:
    """Keypoints of the mirrored crop: ``x' = w - 1 - x`` (UDP pixel centres) with left/right joints swapped."""
    out = kp[:, list(flip_index)].clone()
    out[..., 0] = INPUT - 1 - out[..., 0]
    return out


# ------------------------------------------------------------------------------------------------ flip test
@pytest.mark.parametrize("name", TINY_MODELS)
def test_flip_test_symmetric_input_gives_symmetric_prediction(name, monkeypatch):
    method = generic_method(name)
    flip_index = method.skeleton.flip_index
    assert method.codec.udp  # the tiny models train with UDP: no heatmap shift on flip-back
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, INPUT, INPUT, generator=g)
    x[..., INPUT // 2:] = x[..., : INPUT // 2].flip(-1)  # mirror the left half
    assert torch.equal(x, x.flip(-1))

    seen = []
    decode = method.codec.decode_torch
    monkeypatch.setattr(method.codec, "decode_torch", lambda h: seen.append(h.clone()) or decode(h))
    kp, scores = method.predict(x, flip_test=True)

    # the flip-averaged heatmaps are symmetric: flip-back (channel swap + width reversal) leaves them unchanged
    (heatmaps,) = seen
    torch.testing.assert_close(method.codec.flip_heatmaps(heatmaps, flip_index), heatmaps, rtol=0, atol=1e-7)
    # so are the decoded keypoints of every left/right pair (a joint that is its own mirror, like the nose, has a
    # mirror-symmetric map whose two equal maxima the argmax breaks arbitrarily)
    paired = [k for k, j in enumerate(flip_index) if j != k]
    assert len(paired) == 16
    torch.testing.assert_close(mirror(kp, flip_index)[:, paired], kp[:, paired], rtol=0, atol=1e-4)
    torch.testing.assert_close(scores[:, list(flip_index)], scores, rtol=0, atol=1e-7)
    assert (scores > 0).all()


@pytest.mark.parametrize("name", TINY_MODELS)
def test_flip_test_prediction_is_mirror_equivariant(name):
    method = generic_method(name)
    flip_index = method.skeleton.flip_index
    x = torch.randn(3, 3, INPUT, INPUT, generator=torch.Generator().manual_seed(2))
    kp, scores = method.predict(x, flip_test=True)
    kp_m, scores_m = method.predict(x.flip(-1), flip_test=True)
    assert (scores > 0).all()
    torch.testing.assert_close(mirror(kp_m, flip_index), kp, rtol=0, atol=1e-4)
    torch.testing.assert_close(scores_m[:, list(flip_index)], scores, rtol=0, atol=1e-7)
    # without the flip test a random model is not equivariant, so the check above can fail
    kp1, _ = method.predict(x, flip_test=False)
    kp1_m, _ = method.predict(x.flip(-1), flip_test=False)
    assert (mirror(kp1_m, flip_index) - kp1).abs().max() > 1.0


# ---------------------------------------------------------------------------------------------- evaluation
def pycocotools_stats(gt_file, results: list[dict], sigmas) -> np.ndarray:
    COCO = pytest.importorskip("pycocotools.coco").COCO
    COCOeval = pytest.importorskip("pycocotools.cocoeval").COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_file))
        dt = coco.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco, dt, "keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two xywh boxes."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def predict_noisy_ground_truth(monkeypatch, method, recipe, det_results, noise: float, seed: int = 0):
    """Make ``method.predict`` return, for each box in ``predict_boxes`` order (the reader's order, one call
    per batch), the ground truth of the person the box covers (best IoU in its image) with Gaussian noise of
    ``noise x sqrt(area)`` px and joint ``i % 17`` of box ``i`` thrown half the box size away, mapped into
    crop pixels with the crop formula of pose2d.md §1.6/§2.6 written out here.

    Returns image ids, noisy image-pixel keypoints ``(M, 17, 2)``, the matched annotation ``(M,)`` and the
    list of batch sizes ``predict`` was called with.
    """
    gt = eval_reader(recipe.data, "coco17")
    boxes = eval_reader(recipe.data, "coco17", det_results)
    dataset = TopDownDataset(boxes, build_transform(method, recipe.data, train=False))
    (in_w, in_h), udp = dataset.transform.input_size, dataset.transform.udp
    rng = np.random.default_rng(seed)
    gt_image = np.array([gt.image_ids[o] for o in gt.owner])
    image_ids, noisy, crops, scores, match = [], [], [], [], []
    for i in range(len(boxes)):
        image_id = boxes.image_ids[boxes.owner[i]]
        people = np.flatnonzero(gt_image == image_id)
        j = people[np.argmax([box_iou(gt.boxes[k], boxes.boxes[i]) for k in people])]
        kp = gt.keypoints[j].astype(np.float64) + noise * np.sqrt(gt.area[j]) * rng.normal(size=(17, 2))
        kp[i % 17] += 0.5 * boxes.boxes[i, 2:].max()
        item = dataset[i]
        (cx, cy), (sw, sh) = item["center"].numpy(), item["scale"].numpy()
        steps = (in_w - 1, in_h - 1) if udp else (in_w, in_h)
        crops.append(np.stack([(kp[:, 0] - cx + sw / 2) * steps[0] / sw,
                               (kp[:, 1] - cy + sh / 2) * steps[1] / sh], -1))
        scores.append(np.where(gt.flags[j] > 0, rng.uniform(0.5, 1.0, 17), rng.uniform(0.0, 0.1, 17)))
        image_ids.append(image_id)
        noisy.append(kp)
        match.append(j)
    crops, scores, calls = torch.from_numpy(np.array(crops)), torch.from_numpy(np.array(scores)), []

    def predict(images: torch.Tensor, flip_test: bool = True):
        start = sum(calls)
        calls.append(len(images))
        return crops[start:start + len(images)], scores[start:start + len(images)]

    monkeypatch.setattr(method, "predict", predict)
    return image_ids, np.array(noisy), np.array(match), calls


@pytest.mark.parametrize("boxes", ["gt", "detections"])
def test_evaluate_topdown_equals_pycocotools(coco_dir, tmp_path, boxes, monkeypatch):
    """model -> ``results.json`` -> AP through ``evaluate_topdown``, with a model that predicts noisy ground
    truth (in crop pixels), so that AP is far from 0 and 1 and every result can be traced back to its box."""
    recipe = make_recipe(coco_dir)
    dets = coco_dir / "annotations/person_detections_val.json" if boxes == "detections" else None
    torch.manual_seed(0)
    method = build_method(recipe)
    image_ids, noisy, match, calls = predict_noisy_ground_truth(monkeypatch, method, recipe, dets, noise=0.05)
    metrics = evaluate_topdown(method, recipe, out_dir=tmp_path, det_results=dets)

    num_boxes = len(json.loads(dets.read_text())) if dets else len(eval_reader(recipe.data, "coco17"))
    assert sum(calls) == len(noisy) == num_boxes and len(calls) == -(-num_boxes // recipe.eval.batch_size)
    results = json.loads((tmp_path / "results.json").read_text())
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert 0 < len(results) <= num_boxes
    assert metrics["num_detections"] == len(results)
    assert all(len(r["keypoints"]) == 51 and r["category_id"] == 1 for r in results)
    # every result is the noisy ground truth of one of its image's boxes, back in image pixels (3 decimals)
    for r in results:
        kp = np.asarray(r["keypoints"]).reshape(17, 3)[:, :2]
        same_image = [k for k, iid in enumerate(image_ids) if iid == r["image_id"]]
        assert min(np.abs(noisy[k] - kp).max() for k in same_image) < 1e-3

    ref = pycocotools_stats(recipe.data.val_ann, results, get_skeleton("coco17").sigmas_array)
    np.testing.assert_allclose([metrics[k] for k in STAT_NAMES], ref, rtol=0, atol=1e-9)
    assert 0.2 < metrics["AP"] < 0.95 and 0.2 < metrics["AR"] < 0.95
    if boxes == "gt":
        gt = eval_reader(recipe.data, "coco17")
        assert (match == np.arange(len(gt))).all()  # one box per annotation, in order
        dist = np.linalg.norm(noisy - gt.keypoints, axis=-1)
        labelled = gt.flags > 0
        correct = dist < 0.2 * gt.boxes[:, 2:].max(axis=1)[:, None]
        assert metrics["PCK@0.2"] == pytest.approx(100.0 * correct[labelled].mean(), abs=1e-9)
    else:
        assert "PCK@0.2" not in metrics  # no annotation per detected box


def gt_predictions(reader, noise: float = 0.0, seed: int = 0) -> tuple[dict, list]:
    """``predict_boxes``-style predictions made from the ground truth of a CocoKeypoints reader."""
    rng = np.random.default_rng(seed)
    kp = reader.keypoints.astype(np.float64)
    kp = kp + noise * rng.normal(size=kp.shape) * np.sqrt(reader.area)[:, None, None]
    n, k = kp.shape[:2]
    scores = np.where(reader.flags > 0, rng.uniform(0.5, 1.0, (n, k)), rng.uniform(0.0, 0.1, (n, k)))
    pred = {"keypoints": kp, "scores": scores, "box_scores": np.ones(n), "areas": reader.area * 2.0,
            "indices": np.arange(n)}
    return pred, [reader.image_ids[o] for o in reader.owner]


def test_ground_truth_as_results_gives_ap_1(coco_dir):
    recipe = make_recipe(coco_dir)
    reader = eval_reader(recipe.data, "coco17")
    pred, image_ids = gt_predictions(reader)
    results = to_coco_results(pred, image_ids, "coco17")
    assert len(results) == len(reader)  # OKS-NMS keeps distinct people
    coco = evaluate_coco_keypoints(recipe.data.val_ann, results, skeleton="coco17")
    assert coco.stats["AP"] == 1.0 and coco.stats["AR"] == 1.0
    ref = pycocotools_stats(recipe.data.val_ann, results, get_skeleton("coco17").sigmas_array)
    assert ref[0] == 1.0


def test_rescoring_and_nms_results_equal_pycocotools(coco_dir):
    """Non-trivial numbers: noisy ground truth plus a duplicate of every person shifted by 0.1 px (OKS-NMS drops those that
    overlap) and a few far-off false positives, through ``to_coco_results``."""
    recipe = make_recipe(coco_dir)
    reader = eval_reader(recipe.data, "coco17")
    pred, image_ids = gt_predictions(reader, noise=0.08, seed=3)
    dup = {k: np.concatenate([v, v]) for k, v in pred.items()}
    dup["keypoints"][len(reader):] += 0.1
    dup["scores"][len(reader):] *= 0.9
    fp = {k: v[:3].copy() for k, v in pred.items()}
    fp["keypoints"] = fp["keypoints"][:, ::-1] * 0.5 + 40.0
    both = {k: np.concatenate([dup[k], fp[k]]) for k in pred}
    ids = image_ids * 2 + image_ids[:3]

    kept = to_coco_results(both, ids, "coco17", nms_thr=0.9)
    all_results = to_coco_results(both, ids, "coco17", nms_thr=None)
    assert len(all_results) == len(ids) and len(kept) < len(all_results)
    for results in (kept, all_results):
        ours = evaluate_coco_keypoints(recipe.data.val_ann, results, skeleton="coco17").as_array()
        ref = pycocotools_stats(recipe.data.val_ann, results, get_skeleton("coco17").sigmas_array)
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)
        assert 0.0 < ours[0] < 1.0
    # rescoring: box score x mean of the joint scores above 0.2
    r0 = to_coco_results({k: v[:1] for k, v in pred.items()}, image_ids[:1], "coco17", nms_thr=None)[0]
    s = pred["scores"][0]
    assert r0["score"] == pytest.approx(s[s > 0.2].mean())


# --------------------------------------------------------------------------------------------- checkpoints
def test_trainer_checkpoint_reloads_identically(coco_dir, tmp_path):
    recipe = make_recipe(coco_dir, augment="none")
    recipe.train.output_dir = str(tmp_path / "run")
    recipe.train.max_steps = 2
    torch.manual_seed(0)
    method = build_method(recipe)
    dataset = TopDownDataset(train_reader(recipe.data, "coco17"), build_transform(method, recipe.data, train=True))
    summary = Trainer(recipe.train, method, dataset).fit()
    assert summary["step"] == 2 and len(read_log(tmp_path / "run", "train")) >= 1

    val = TopDownDataset(eval_reader(recipe.data, "coco17"), build_transform(method, recipe.data, train=False))
    x = torch.stack([val[i]["image"] for i in range(4)])
    method.eval()
    expected = method.predict(x, flip_test=True)
    for weights in (tmp_path / "run", tmp_path / "run" / "last" / "model.safetensors"):
        torch.manual_seed(123)  # a different random init, replaced by the checkpoint
        loaded = build_method(recipe, weights=weights).eval()
        for a, b in zip(loaded.state_dict().values(), method.state_dict().values(), strict=True):
            assert torch.equal(a, b)
        got = loaded.predict(x, flip_test=True)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    fresh = build_method(recipe).eval()
    assert not torch.equal(fresh.model(x), method.model(x))

    with pytest.raises(ConfigError, match="no model.safetensors"):
        load_method_weights(fresh, tmp_path)
    with pytest.raises(ConfigError, match="file not found"):
        load_method_weights(fresh, tmp_path / "missing.safetensors")


# -------------------------------------------------------------------------------------------- data / boxes
def test_dataset_items_and_predict_boxes(coco_dir):
    recipe = make_recipe(coco_dir, dark=False)
    torch.manual_seed(0)
    method = build_method(recipe)
    train = TopDownDataset(train_reader(recipe.data, "coco17"), build_transform(method, recipe.data, train=True))
    np.random.seed(0)
    item = train[0]
    assert item["image"].shape == (3, INPUT, INPUT) and item["image"].dtype == torch.float32
    assert tuple(item["heatmaps"].shape) == (17, 16, 16)
    assert tuple(item["keypoint_weights"].shape) == (17,)
    batch = torch.utils.data.default_collate([train[i] for i in range(4)])
    loss = method.train()(batch)["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0

    reader = eval_reader(recipe.data, "coco17")
    val = TopDownDataset(reader, build_transform(method, recipe.data, train=False))
    pred = predict_boxes(method, val, batch_size=3, flip_test=True)
    n = len(reader)
    assert pred["keypoints"].shape == (n, 17, 2) and pred["scores"].shape == (n, 17)
    np.testing.assert_array_equal(pred["indices"], np.arange(n))
    np.testing.assert_array_equal(pred["box_scores"], np.ones(n))
    # argmax decoding keeps every joint with a positive maximum inside its padded, aspect-fixed box
    x, y, w, h = reader.boxes.T.astype(np.float64)
    half = 0.5 * 1.25 * np.maximum(w, h)[:, None] + 1e-3
    ok = pred["scores"] > 0
    assert ok.mean() > 0.5
    dx = np.abs(pred["keypoints"][..., 0] - (x + w / 2)[:, None])
    dy = np.abs(pred["keypoints"][..., 1] - (y + h / 2)[:, None])
    assert (dx[ok] <= half.repeat(17, 1)[ok]).all() and (dy[ok] <= half.repeat(17, 1)[ok]).all()


def test_image_cache_gives_identical_items(coco_dir):
    recipe = make_recipe(coco_dir, augment="light")
    method = build_method(recipe)
    reader = train_reader(recipe.data, "coco17")
    plain = TopDownDataset(reader, build_transform(method, recipe.data, train=True))
    cached = TopDownDataset(reader, build_transform(method, recipe.data, train=True), cache_images=True)
    for rep in range(2):  # the second pass reads every image from the cache
        for i in range(len(reader)):
            np.random.seed(100 * rep + i)
            a = plain[i]
            np.random.seed(100 * rep + i)
            b = cached[i]
            for key in a:
                torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert len(cached.cache) == len({reader[i].image_id for i in range(len(reader))})
    assert plain.cache is None
