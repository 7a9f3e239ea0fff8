"""Person detectors (ONNX YOLOX / RTMDet layouts, torchvision, box files), tracking, One-Euro smoothing, robust
video reading and ``humanvision infer --detector --track --smooth`` on a video.

The ONNX detectors are tiny torch modules exported with exactly the YOLOX / end2end output layouts: constant outputs
(so the decoding can be checked number by number) and a colour-blob "detector" whose boxes are the extents of the
red and of the green pixels (so the boxes of the synthetic video's two people are known).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

from humanvision.cli import app
from humanvision.errors import ConfigError, DataError
from humanvision.runtime.detectors import (
    BoxFileDetector,
    DetectorLayoutError,
    OnnxDetector,
    WholeImageDetector,
    box_iou,
    identify_layout,
    load_detector,
    nms,
)
from humanvision.runtime.tracking import OneEuroFilter, PoseTracker, TrackSmoother, match_pairs, oks_matrix
from humanvision.runtime.video import VideoError, VideoFrames

torch.set_num_threads(1)

ENV = {"COLUMNS": "250", "NO_COLOR": "1"}


def export(module: nn.Module, path: Path, size: tuple[int, int], outputs: list[str]) -> Path:
    """Export ``module`` with a static ``(1, 3, h, w)`` input named ``image``."""
    w, h = size
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.zeros(1, 3, h, w),), str(path), dynamo=False, opset_version=17,
                          input_names=["image"], output_names=outputs)
    return path


class Constant(nn.Module):
    """Outputs fixed tensors whatever the image (the image still feeds the graph)."""

    def __init__(self, *values: torch.Tensor) -> None:
        super().__init__()
        self.values = nn.ParameterList([nn.Parameter(v, requires_grad=False) for v in values])

    def forward(self, x):
        zero = x.mean() * 0
        out = [v + zero.to(v.dtype) if v.is_floating_point() else v + zero.long() for v in self.values]
        return tuple(out) if len(out) > 1 else out[0]


# ----------------------------------------------------------------------------------------------- ONNX layouts
YOLOX_SIZE = (64, 48)  # (w, h): grids 8x6, 4x3, 2x1 (strides 8, 16, 32) -> 48 + 12 + 2 = 62 anchor points


def yolox_raw() -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """A (1, 62, 85) raw YOLOX output with 5 scripted anchor points, and the anchors' (gx, gy, stride)."""
    grid = [(gx, gy, s) for s in (8, 16, 32) for gy in range(48 // s) for gx in range(64 // s)]
    raw = np.zeros((1, len(grid), 85), np.float32)
    raw[0, :, 4] = 0.01  # background objectness
    rows = {  # anchor index: (dx, dy, log w, log h, objectness, person score, class-1 score)
        10: (0.25, 0.5, math.log(2.0), math.log(3.0), 0.9, 0.8, 0.1),   # stride 8, (gx, gy) = (2, 1): kept
        11: (-0.25, 0.5, math.log(2.0), math.log(3.0), 0.9, 0.7, 0.1),  # overlaps 10 (IoU 0.6): NMS drops it
        50: (0.5, 0.0, math.log(1.5), math.log(2.0), 0.95, 0.9, 0.0),   # stride 16, (2, 0): kept
        55: (0.0, 0.0, 0.0, 0.0, 0.9, 0.2, 0.9),                        # a class-1 object: person score 0.18
        61: (0.1, 0.1, 0.0, 0.0, 0.5, 0.5, 0.0),                        # stride 32: score 0.25 < 0.3
    }
    for i, (dx, dy, lw, lh, obj, p, c1) in rows.items():
        raw[0, i, :7] = (dx, dy, lw, lh, obj, p, c1)
    return raw, grid


def yolox_reference(raw: np.ndarray, grid, ratio: float, thr: float, nms_thr: float, image_wh: tuple[int, int]):
    """Plain loop decoding of the scripted rows: (boxes xyxy, scores) in image pixels (clipped), after NMS."""
    dets = []
    for i, (gx, gy, s) in enumerate(grid):
        dx, dy, lw, lh, obj, p = raw[0, i, :6].astype(np.float64)
        score = obj * p
        if score < thr:
            continue
        cx, cy, w, h = (dx + gx) * s, (dy + gy) * s, math.exp(lw) * s, math.exp(lh) * s
        dets.append(([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], score))
    dets.sort(key=lambda d: -d[1])
    kept = []
    for box, score in dets:
        if all(box_iou(box, k)[0, 0] <= nms_thr for k, _ in kept):
            kept.append((box, score))
    boxes = np.array([b for b, _ in kept]) / ratio
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, image_wh[0])
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, image_wh[1])
    return boxes, np.array([s for _, s in kept])


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("detectors")


@pytest.fixture(scope="module")
def yolox_file(onnx_dir):
    raw, _ = yolox_raw()
    return export(Constant(torch.from_numpy(raw)), onnx_dir / "yolox.onnx", YOLOX_SIZE, ["output"])


def end2end_outputs():
    dets = torch.tensor([[[10.0, 12.0, 30.0, 52.0, 0.9], [40.0, 5.0, 60.0, 45.0, 0.6], [0.0, 0.0, 20.0, 20.0, 0.95],
                          [5.0, 5.0, 25.0, 25.0, 0.2]]])
    labels = torch.tensor([[0, 0, 2, 0]])  # the 0.95 box is another class, the 0.2 box is below the threshold
    return dets, labels


def test_yolox_layout_is_identified_and_decoded_exactly(yolox_file):
    det = OnnxDetector(yolox_file)
    assert det.layout == "yolox" and det.input_size == YOLOX_SIZE
    assert len(det._grid) == 62
    image = np.zeros((96, 128, 3), np.uint8)  # ratio min(64 / 128, 48 / 96) = 0.5
    boxes, scores = det(image)
    raw, grid = yolox_raw()
    ref_boxes, ref_scores = yolox_reference(raw, grid, 0.5, 0.3, 0.45, (128, 96))
    assert len(ref_boxes) == 2  # the overlapping, the class-1 and the low-scoring anchors are gone
    assert boxes.dtype == np.float32 and boxes.shape == (2, 4) and scores.shape == (2,)
    np.testing.assert_allclose(boxes, ref_boxes, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-6)
    # anchor 50 (stride 16, cell (2, 0)): cx = 2.5 * 16 = 40, w = 24, cy = 0, h = 32 -> /0.5, clipped at y = 0
    np.testing.assert_allclose(boxes[0], [56.0, 0.0, 104.0, 32.0], atol=1e-4)
    assert scores[0] == pytest.approx(0.95 * 0.9, rel=1e-6)
    # a lower NMS threshold keeps fewer, a higher one keeps the overlapping anchor as well
    assert len(OnnxDetector(yolox_file, nms_thr=0.7)(image)[0]) == 3
    assert len(OnnxDetector(yolox_file, score_thr=0.5)(image)[0]) == 2


def test_yolox_decoded_layout_and_preprocessing(onnx_dir):
    raw = np.zeros((1, 3, 6), np.float32)
    raw[0, 0] = (20.0, 16.0, 10.0, 8.0, 0.9, 0.5)  # cx, cy, w, h in input pixels, objectness, person
    raw[0, 1] = (40.0, 30.0, 12.0, 12.0, 0.2, 0.5)  # 0.1 < 0.3
    raw[0, 2] = (21.0, 16.0, 10.0, 8.0, 0.8, 0.5)   # IoU with row 0 is 0.82: suppressed
    path = export(Constant(torch.from_numpy(raw)), onnx_dir / "decoded.onnx", YOLOX_SIZE, ["output"])
    with pytest.raises(DetectorLayoutError, match="3 anchor points") as e:  # auto: the grid does not fit
        OnnxDetector(path)
    assert str(path) in str(e.value)
    det = OnnxDetector(path, layout="yolox_decoded")
    image = np.zeros((24, 32, 3), np.uint8)  # ratio 2
    boxes, scores = det(image)
    np.testing.assert_allclose(boxes, [[7.5, 6.0, 12.5, 10.0]], atol=1e-5)
    np.testing.assert_allclose(scores, [0.45], rtol=1e-6)
    # letterbox: resized to the top-left corner, 114 elsewhere, BGR order, no normalisation for YOLOX
    image[:, :, 0] = 200  # red
    x, ratio = det.preprocess(image)
    assert ratio == 2.0 and x.shape == (1, 3, 48, 64)
    assert (x[0, 2, :48, :64] == 200).all() and (x[0, 0] == 0).all()  # RGB red is channel 2 in BGR
    x2, ratio2 = det.preprocess(np.zeros((48, 32, 3), np.uint8))  # tall: ratio 1, right part padded
    assert ratio2 == 1.0 and (x2[0, :, :, 32:] == 114).all() and (x2[0, :, :, :32] == 0).all()


@pytest.mark.parametrize("names", [["dets", "labels"], ["out_a", "out_b"]])
def test_end2end_layout(onnx_dir, names):
    path = export(Constant(*end2end_outputs()), onnx_dir / f"e2e_{names[0]}.onnx", (64, 64), names)
    det = OnnxDetector(path, layout="auto")
    assert det.layout == "end2end"
    assert OnnxDetector(path, layout="rtmdet").layout == "end2end"
    np.testing.assert_allclose(det.mean, [103.53, 116.28, 123.675])  # the RTMDet defaults
    boxes, scores = det(np.zeros((128, 96, 3), np.uint8))  # ratio min(64 / 96, 64 / 128) = 0.5
    np.testing.assert_allclose(boxes, [[20.0, 24.0, 60.0, 104.0], [80.0, 10.0, 96.0, 90.0]])  # x2 120 -> width
    np.testing.assert_allclose(scores, [0.9, 0.6], rtol=1e-6)


def test_unknown_layout_is_a_named_error(onnx_dir):
    path = export(Constant(torch.zeros(1, 100, 4)), onnx_dir / "boxes_only.onnx", (64, 64), ["boxes"])
    with pytest.raises(DetectorLayoutError) as e:
        OnnxDetector(path)
    msg = str(e.value)
    assert str(path) in msg and "boxes (1, 100, 4)" in msg and "yolox" in msg and "end2end" in msg
    three = export(Constant(torch.zeros(1, 10, 4), torch.zeros(1, 10, 3), torch.zeros(1, 10)),
                   onnx_dir / "three.onnx", (64, 64), ["a", "b", "c"])
    with pytest.raises(DetectorLayoutError, match=r"a \(1, 10, 4\), b \(1, 10, 3\), c \(1, 10\)"):
        OnnxDetector(three)
    assert identify_layout([("x", [None, None, 85])]) == "yolox"  # symbolic dims are fine
    with pytest.raises(DetectorLayoutError, match=r"x \(\?, \?, \?\)"):
        identify_layout([("x", [None, None, None])])
    with pytest.raises(DataError, match="not found"):
        OnnxDetector(onnx_dir / "missing.onnx")


def test_nms_and_iou_reference():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, (30, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 30, (30, 2))], 1)
    scores = rng.uniform(size=30)
    keep = nms(boxes, scores, 0.4)
    # reference: a box is kept iff no kept higher-scoring box overlaps it by more than 0.4
    ref = []
    for i in np.argsort(-scores):
        inter = [max(0, min(boxes[i, 2], boxes[k, 2]) - max(boxes[i, 0], boxes[k, 0]))
                 * max(0, min(boxes[i, 3], boxes[k, 3]) - max(boxes[i, 1], boxes[k, 1])) for k in ref]
        areas = [(boxes[k, 2] - boxes[k, 0]) * (boxes[k, 3] - boxes[k, 1]) for k in ref]
        a = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
        if all(t / (a + b - t) <= 0.4 for t, b in zip(inter, areas)):
            ref.append(int(i))
    assert keep.tolist() == ref and 3 < len(ref) < 30


# ------------------------------------------------------------------------------------------ other detectors
def test_box_file_and_whole_image_detectors(tmp_path):
    image = np.zeros((40, 60, 3), np.uint8)
    boxes, scores = WholeImageDetector()(image)
    np.testing.assert_array_equal(boxes, [[0, 0, 60, 40]])
    # COCO detection results: person category only, numeric ids match numeric file stems
    dets = [{"image_id": 139, "category_id": 1, "bbox": [1, 2, 10, 20], "score": 0.5},
            {"image_id": 139, "category_id": 1, "bbox": [5, 5, 10, 10], "score": 0.9},
            {"image_id": 139, "category_id": 3, "bbox": [5, 5, 10, 10], "score": 0.99},
            {"image_id": 7, "category_id": 1, "bbox": [0, 0, 4, 4], "score": 0.1}]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    det = BoxFileDetector(tmp_path / "dets.json", score_thr=0.2)
    boxes, scores = det(image, name="000000000139.jpg")
    np.testing.assert_allclose(boxes, [[5, 5, 15, 15], [1, 2, 11, 22]])
    np.testing.assert_allclose(scores, [0.9, 0.5])
    assert len(det(image, name="000000000007.jpg")[0]) == 0  # below score_thr
    assert len(det(image, name="other.png")[0]) == 0
    assert len(BoxFileDetector(tmp_path / "dets.json", missing="whole")(image, name="other.png")[0]) == 1
    with pytest.raises(DataError, match="name"):
        det(image)
    # COCO ground truth: boxes by file name, crowd annotations left out
    gt = {"images": [{"id": 3, "file_name": "a/b/frame.jpg"}],
          "annotations": [{"image_id": 3, "category_id": 1, "bbox": [2, 3, 4, 5], "iscrowd": 0},
                          {"image_id": 3, "category_id": 1, "bbox": [0, 0, 50, 30], "iscrowd": 1}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    boxes, scores = load_detector(tmp_path / "gt.json")(image, name="frame.jpg")
    np.testing.assert_allclose(boxes, [[2, 3, 6, 8]])
    np.testing.assert_allclose(scores, [1.0])
    # infer's --boxes file with video frame names
    (tmp_path / "boxes.json").write_text(json.dumps([{"image": "clip_000004", "bbox": [1, 1, 5, 5]}]))
    assert len(load_detector(tmp_path / "boxes.json")(image, name="clip_000004")[0]) == 1
    (tmp_path / "bad.json").write_text(json.dumps([{"image_id": 1, "bbox": [1, 2, 3]}]))
    with pytest.raises(DataError, match="box #0") as e:
        BoxFileDetector(tmp_path / "bad.json")
    assert "bad.json" in str(e.value)
    with pytest.raises(DataError, match="torchvision"):
        load_detector("torchvision:fasterrcnn_resnet50_fpn:w.pth")
    with pytest.raises(DataError, match="detector not found"):
        load_detector(tmp_path / "nothing.onnx")


TV_NAME = "fasterrcnn_mobilenet_v3_large_fpn"
TV_ARGS = {"min_size": 64, "max_size": 96}


@pytest.fixture(scope="module")
def torchvision_weights(tmp_path_factory):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(TV_NAME, weights=None, weights_backbone=None, num_classes=3, **TV_ARGS)
    with torch.no_grad():  # a random model with a person bias: both labels at 64-96 px, all persons at 800 px
        model.roi_heads.box_predictor.cls_score.bias[1] += 0.3
    path = tmp_path_factory.mktemp("tv") / "frcnn.pth"
    torch.save(model.state_dict(), path)
    return model.eval(), path


def test_torchvision_detector_matches_the_model(torchvision_weights):
    from humanvision.models.detectors import TorchvisionDetector, build_detector

    model, path = torchvision_weights
    det = build_detector(f"torchvision:{TV_NAME}:{path}", score_thr=0.0, **TV_ARGS)
    assert isinstance(det, TorchvisionDetector) and det.num_classes == 3  # read from the weights
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
    boxes, scores = det(image)
    with torch.no_grad():
        ref = model([torch.from_numpy(image).permute(2, 0, 1).float() / 255])[0]
    person = (ref["labels"] == 1).numpy()
    order = np.argsort(-ref["scores"].numpy()[person], kind="stable")
    assert person.sum() > 0 and len(boxes) == person.sum()
    ref_boxes = ref["boxes"].numpy()[person][order]
    ref_boxes = ref_boxes[(ref_boxes[:, 2] > ref_boxes[:, 0]) & (ref_boxes[:, 3] > ref_boxes[:, 1])]
    np.testing.assert_allclose(boxes, ref_boxes, atol=1e-4)
    np.testing.assert_allclose(scores, np.sort(ref["scores"].numpy()[person])[::-1], atol=1e-6)
    other = TorchvisionDetector(TV_NAME, path, person_label=2, score_thr=0.0, **TV_ARGS)(image)[1]
    assert len(other) > 0  # another label, other boxes
    np.testing.assert_allclose(other, np.sort(ref["scores"].numpy()[(ref["labels"] == 2).numpy()])[::-1], atol=1e-6)
    with pytest.raises(ConfigError, match="unknown torchvision detection model"):
        build_detector(f"torchvision:yolo_v99:{path}")
    with pytest.raises(ConfigError, match="torchvision:NAME:WEIGHTS"):
        build_detector("torchvision:only_a_name")
    with pytest.raises(DataError, match="not weights of") as e:
        TorchvisionDetector("ssdlite320_mobilenet_v3_large", path)
    assert str(path) in str(e.value)
    with pytest.raises(DataError, match="weights file not found"):
        TorchvisionDetector(TV_NAME, path.parent / "missing.pth")


# ------------------------------------------------------------------------------------------------- tracking
TEMPLATE = np.random.default_rng(3).uniform(0.1, 0.9, (17, 2))  # a pose, in box-relative coordinates


def person(x: float, y: float, w: float = 60.0, h: float = 150.0):
    """(box xyxy, keypoints (17, 2)) of a person whose box starts at (x, y)."""
    return np.array([x, y, x + w, y + h]), np.array([x, y]) + TEMPLATE * (w, h)


def script(frame: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Who is seen at ``frame``: A walks right and B walks left along the same line, 8 px a frame, crossing between
    frames 7 and 8 (where B's new box is nearer A's last one than A's own: 4 px vs 8 px); B is occluded at frames
    14-16; C enters at frame 12; A leaves the scene after frame 20 and comes back at frame 30."""
    seen = {}
    if frame <= 20 or frame >= 30:
        seen["A"] = person(10 + 8 * frame if frame <= 20 else 10, 20)
    if not 14 <= frame <= 16:
        seen["B"] = person(134 - 8 * frame, 20)
    if frame >= 12:
        seen["C"] = person(300, 100 + 2 * frame, 50, 120)
    return seen


@pytest.mark.parametrize("matching", ["hungarian", "greedy"])
@pytest.mark.parametrize("metric", ["oks", "iou", "oks_iou"])
def test_tracker_keeps_ids_through_crossing_and_occlusion(matching, metric):
    tracker = PoseTracker(metric=metric, matching=matching, max_age=5)
    rng = np.random.default_rng(0)
    ids: dict[str, list[int]] = {"A": [], "B": [], "C": []}
    for frame in range(36):
        seen = script(frame)
        names = list(seen)
        rng.shuffle(names)  # the detection order carries no identity
        boxes = np.array([seen[n][0] for n in names])
        kps = np.array([seen[n][1] for n in names])
        out = tracker.update(boxes, kps, np.ones(kps.shape[:2]), frame=frame)
        assert len(set(out.tolist())) == len(out)  # one track per detection
        for n, i in zip(names, out):
            ids[n].append(int(i))
    assert ids["B"] == [ids["B"][0]] * len(ids["B"])  # through the crossing and the 3-frame occlusion
    assert ids["C"] == [ids["C"][0]] * len(ids["C"]) and ids["C"][0] == 2  # a new person: the next new id
    a_first, a_back = ids["A"][:21], ids["A"][21:]
    assert a_first == [a_first[0]] * 21 and a_first[0] != ids["B"][0]
    assert a_back == [3] * len(a_back)  # gone for 9 frames > max_age 5: a new id


def test_tracker_without_motion_loses_the_crossing():
    """The same crossing with a tracker that does not predict motion swaps A and B (the test above is not easy)."""
    tracker = PoseTracker(metric="oks", motion=False, max_age=5)
    first, after = None, None
    for frame in range(14):
        seen = script(frame)
        out = tracker.update(np.array([seen["B"][0], seen["A"][0]]), np.array([seen["B"][1], seen["A"][1]]),
                             frame=frame)
        first = out if frame == 0 else first
        after = out
    assert after[0] != first[0] or after[1] != first[1]


def test_match_pairs_hungarian_vs_greedy():
    s = np.array([[0.9, 0.8], [0.85, 0.1]])
    assert match_pairs(s, 0.3, "greedy") == [(0, 0)]  # then row 1 only has 0.1 < 0.3
    assert sorted(match_pairs(s, 0.3, "hungarian")) == [(0, 1), (1, 0)]  # 1.65 > 0.9
    assert match_pairs(np.zeros((0, 3)), 0.3) == []
    assert match_pairs(np.array([[0.2]]), 0.3, "hungarian") == []


def test_oks_matrix_equals_pose_oks():
    from humanvision.metrics.nms import pose_oks
    from humanvision.skeletons import get_skeleton

    rng = np.random.default_rng(1)
    kp = rng.uniform(0, 100, (5, 17, 3))
    kp[..., 2] = rng.uniform(0, 1, (5, 17))
    areas = rng.uniform(500, 3000, 5)
    sig = np.asarray(get_skeleton("coco17").sigmas_array)
    vis = kp[..., 2] > 0.3
    ours = oks_matrix(kp, kp, areas, areas, sig, vis, vis)
    np.testing.assert_allclose(ours, pose_oks(kp, areas, sigmas=sig, vis_thr=0.3), rtol=1e-12)


def one_euro_reference(xs, ts, min_cutoff, beta, d_cutoff):
    """The One-Euro filter written sample by sample for one scalar signal (Casiez et al. 2012)."""
    def alpha(cutoff, dt):
        return 1.0 / (1.0 + 1.0 / (2 * math.pi * cutoff) / dt)

    out, x_hat, dx_hat = [xs[0]], xs[0], 0.0
    for i in range(1, len(xs)):
        dt = ts[i] - ts[i - 1]
        dx = (xs[i] - x_hat) / dt
        dx_hat = alpha(d_cutoff, dt) * dx + (1 - alpha(d_cutoff, dt)) * dx_hat
        a = alpha(min_cutoff + beta * abs(dx_hat), dt)
        x_hat = a * xs[i] + (1 - a) * x_hat
        out.append(x_hat)
    return np.array(out)


def test_one_euro_equals_the_scalar_loop():
    rng = np.random.default_rng(0)
    ts = np.cumsum(rng.uniform(0.02, 0.05, 40))  # an irregular frame rate
    signal = np.cumsum(rng.normal(0, 3, (40, 4, 2)), axis=0)
    f = OneEuroFilter(min_cutoff=0.7, beta=0.3, d_cutoff=1.5)
    ours = np.stack([f(x, t) for x, t in zip(signal, ts)])
    for j in range(4):
        for c in range(2):
            ref = one_euro_reference(signal[:, j, c], ts, 0.7, 0.3, 1.5)
            np.testing.assert_allclose(ours[:, j, c], ref, rtol=1e-12, atol=1e-12)
    # without timestamps the filter steps 1 / freq
    g, h = OneEuroFilter(0.7, 0.3, 1.5, freq=25.0), OneEuroFilter(0.7, 0.3, 1.5)
    np.testing.assert_allclose([g(x) for x in signal[:5]], [h(x, i / 25.0) for i, x in enumerate(signal[:5])])
    with pytest.raises(DataError, match="not after"):
        h(signal[0], 0.0)


def test_one_euro_reduces_jitter_and_beta_reduces_lag():
    rng = np.random.default_rng(1)
    t = np.arange(120) / 30.0
    noisy = 50.0 + rng.normal(0, 2.0, (120, 17, 2))
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    smooth = np.stack([f(x, ti) for x, ti in zip(noisy, t)])
    ratio = smooth[30:].std() / noisy[30:].std()
    a = 1 / (1 + 30 / (2 * math.pi))  # beta 0: an exponential average with this weight at 30 fps, min_cutoff 1 Hz
    assert ratio < 0.4 and abs(ratio - math.sqrt(a / (2 - a))) < 0.05  # its noise gain: sqrt(a / (2 - a)) = 0.31
    assert abs(smooth[30:].mean() - 50.0) < 0.5
    ramp = 100.0 * t  # 100 px/s
    lag = {}
    for beta in (0.0, 0.1):
        g = OneEuroFilter(1.0, beta)
        lag[beta] = float(np.mean(ramp[60:] - np.array([g(x, ti) for x, ti in zip(ramp, t)])[60:]))
    assert 0 < lag[0.1] < 0.5 * lag[0.0]
    assert lag[0.0] == pytest.approx(100.0 / (2 * math.pi), rel=0.05)  # a first-order low-pass lags v / (2 pi fc)


def test_track_smoother_filters_each_track_alone():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, (10, 3, 2)), rng.normal(5, 1, (10, 3, 2))
    sm = TrackSmoother(min_cutoff=1.0, beta=0.1)
    both = [sm([7, 9], np.stack([a[i], b[i]]), i / 30.0) for i in range(10)]
    fa = OneEuroFilter(1.0, 0.1)
    np.testing.assert_allclose(np.stack(both)[:, 0], [fa(a[i], i / 30.0) for i in range(10)])
    fresh = sm([9], b[:1] + 100, 5.0)  # after a gap longer than max_gap: a new filter, the raw value
    np.testing.assert_allclose(fresh, b[:1] + 100)


# ---------------------------------------------------------------------------------------------------- video
VIDEO_SIZE, VIDEO_FRAMES, VIDEO_FPS = (160, 96), 24, 10.0


def truth_boxes(frame: int) -> dict[str, list[float]]:
    """xyxy boxes of the drawn people: red walks right (y 10-60), green walks left below it (y 40-88), drawn over
    red; they cross around frame 13."""
    xr, xg = 8 + 5 * frame, 136 - 5 * frame
    return {"red": [xr, 10, xr + 17, 61], "green": [xg, 40, xg + 17, 89]}


def write_video(path: Path) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), VIDEO_FPS, VIDEO_SIZE)
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG AVI")
    for f in range(VIDEO_FRAMES):
        img = np.full((VIDEO_SIZE[1], VIDEO_SIZE[0], 3), 40, np.uint8)
        b = truth_boxes(f)
        cv2.rectangle(img, (b["red"][0], 10), (b["red"][0] + 16, 60), (0, 0, 255), -1)  # BGR
        cv2.rectangle(img, (b["green"][0], 40), (b["green"][0] + 16, 88), (0, 255, 0), -1)
        writer.write(img)
    writer.release()
    return path


class ColourBlobs(nn.Module):
    """An end2end-layout "detector": the box of the red pixels and the box of the green pixels (BGR input with the
    runtime's default RTMDet normalisation, undone here); an absent colour gives an empty box that the runtime
    drops."""

    def box(self, mask, score):
        h, w = mask.shape[-2:]
        xs = torch.arange(w, dtype=torch.float32).view(1, 1, w).expand(mask.shape)
        ys = torch.arange(h, dtype=torch.float32).view(1, h, 1).expand(mask.shape)
        big, neg = torch.full_like(xs, 1e4), torch.full_like(xs, -1.0)
        x1, x2 = torch.where(mask, xs, big).amin((1, 2)), torch.where(mask, xs, neg).amax((1, 2)) + 1
        y1, y2 = torch.where(mask, ys, big).amin((1, 2)), torch.where(mask, ys, neg).amax((1, 2)) + 1
        return torch.stack([x1, y1, x2, y2, torch.full_like(x1, score)], -1)

    def forward(self, x):
        x = x * torch.tensor([57.375, 57.12, 58.395]).view(1, 3, 1, 1) + torch.tensor([103.53, 116.28, 123.675]).view(
            1, 3, 1, 1)
        b, g, r = x[:, 0], x[:, 1], x[:, 2]
        red = (r > 150) & (g < 100) & (b < 100)
        green = (g > 150) & (r < 100) & (b < 100)
        dets = torch.stack([self.box(red, 0.9), self.box(green, 0.8)], 1)
        return dets, (dets[..., 0] * 0).long()


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    write_video(root / "walk.avi")
    export(ColourBlobs(), root / "blobs.onnx", VIDEO_SIZE, ["dets", "labels"])
    return root


def who(box, frame: int) -> str:
    t = truth_boxes(frame)
    return max(t, key=lambda k: box_iou(box, t[k])[0, 0])


def test_colour_blob_detector_finds_the_drawn_people(video_dir):
    det = OnnxDetector(video_dir / "blobs.onnx")
    frames = VideoFrames(video_dir / "walk.avi")
    assert frames.fps == VIDEO_FPS and frames.frames_expected == VIDEO_FRAMES
    for index, image in frames:
        boxes, scores = det(image)
        assert len(boxes) == 2 and scores.tolist() == pytest.approx([0.9, 0.8])
        t = truth_boxes(index)
        assert box_iou(boxes[1], t["green"])[0, 0] > 0.8  # green is never occluded
        if abs(index - 13) > 2:
            assert box_iou(boxes[0], t["red"])[0, 0] > 0.8
    assert frames.stats == {"frames_read": 24, "frames_expected": 24, "frames_skipped": 0, "missing_frames": [],
                            "read_failures": 0, "truncated": False}


def damaged(video_dir: Path, kind: str) -> Path:
    """``truncated``: the AVI cut inside frame 15; ``corrupt``: frame 8's JPEG headers zeroed."""
    data = bytearray((video_dir / "walk.avi").read_bytes())
    soi = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]  # JPEG starts
    assert len(soi) == VIDEO_FRAMES
    if kind == "truncated":
        data = data[:soi[15] + 100]
    else:
        data[soi[8] + 2:soi[8] + 300] = bytes(298)
    path = video_dir / f"{kind}.avi"
    path.write_bytes(bytes(data))
    return path


def test_damaged_videos_keep_every_good_frame(video_dir):
    frames = VideoFrames(damaged(video_dir, "truncated"))
    assert [i for i, _ in frames] == list(range(15))
    s = frames.stats
    assert (s["frames_read"], s["frames_skipped"], s["truncated"]) == (15, 9, True)
    assert s["missing_frames"] == list(range(15, 24))
    frames = VideoFrames(damaged(video_dir, "corrupt"))
    got = [i for i, _ in frames]
    assert got == [i for i in range(24) if i != 8]  # the frames after the corrupt one keep their index
    assert frames.stats["missing_frames"] == [8] and frames.stats["truncated"] is False
    # an MP4 cut short has lost its index (written at the end): a named error
    mp4 = video_dir / "cut.mp4"
    writer = cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, VIDEO_SIZE)
    for image in (np.zeros((96, 160, 3), np.uint8),) * 5:
        writer.write(image)
    writer.release()
    mp4.write_bytes(mp4.read_bytes()[: mp4.stat().st_size // 2])
    with pytest.raises(VideoError, match="cannot open") as e:
        VideoFrames(mp4)
    assert str(mp4) in str(e.value)


def test_runtime_tracking_pipeline_imports_no_torch(video_dir, tmp_path):
    """Detector + pose + tracker + One-Euro over the video in a process where torch cannot be imported."""
    code = f"""
import json, sys
for name in ("torch", "torchvision", "timm"):
    sys.modules[name] = None  # any import of them now raises ImportError
import numpy as np
from humanvision.runtime import OnnxDetector, PoseTracker, TrackSmoother, track_video

template = np.random.default_rng(3).uniform(0.1, 0.9, (17, 2))
def pose(image, boxes):  # a stand-in pose model: the template in each box
    b = np.asarray(boxes)
    return b[:, None, :2] + template * b[:, None, 2:], np.ones((len(b), 17))

det = OnnxDetector({str(video_dir / 'blobs.onnx')!r})
tracks = track_video({str(video_dir / 'corrupt.avi')!r}, pose, det, smoother=TrackSmoother())
tracks.write("tracks.json")
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "timm", "torchvision")
                and sys.modules[m] is not None)
print(json.dumps({{"loaded": loaded}}))
"""
    damaged(video_dir, "corrupt")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["loaded"] == []
    out = json.loads((tmp_path / "tracks.json").read_text())
    assert out["video"] == "corrupt.avi" and out["fps"] == VIDEO_FPS and out["frames_skipped"] == 1
    assert [f["frame"] for f in out["frames"]] == [i for i in range(24) if i != 8]
    ids: dict[str, set] = {"red": set(), "green": set()}
    for f in out["frames"]:
        assert f["time"] == pytest.approx(f["frame"] / VIDEO_FPS) and len(f["people"]) == 2
        for p in f["people"]:
            x, y, w, h = p["bbox"]
            ids[who([x, y, x + w, y + h], f["frame"])].add(p["track_id"])
            assert len(p["keypoints"]) == 17 and len(p["keypoints"][0]) == 3
    assert ids == {"red": {0}, "green": {1}}  # through the crossing and the lost frame
    assert out["smoothing"]["filter"] == "one_euro"


# ------------------------------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def pose_recipe(tmp_path_factory):
    """A random-weight lateral_tiny pose recipe (fp32, no flip test) and its weights file."""
    from humanvision.models import create_model
    from humanvision.models.weights import save_weights

    root = tmp_path_factory.mktemp("pose")
    torch.manual_seed(0)
    weights = save_weights(create_model("lateral_tiny").eval(), root / "w" / "model.safetensors")
    recipe = {"name": "tiny_track", "model": {"name": "lateral_tiny", "skeleton": "coco17"},
              "data": {"source": "coco", "val_ann": str(root / "missing.json")},
              "eval": {"flip_test": False, "precision": "fp32", "channels_last": False}}
    config = root / "recipe.yaml"
    config.write_text(yaml.safe_dump(recipe))
    return config, weights


def infer(*args):
    return CliRunner().invoke(app, ["infer", *[str(a) for a in args]], env=ENV)


def test_infer_video_with_detector_tracks_and_smooths(pose_recipe, video_dir, tmp_path):
    config, weights = pose_recipe
    out = tmp_path / "out"
    res = infer(video_dir / "walk.avi", "--config", config, "--weights", weights, "--detector",
                video_dir / "blobs.onnx", "--smooth", "--out", out)
    assert res.exit_code == 0, res.output
    tracks = json.loads((out / "walk_tracks.json").read_text())
    assert tracks["video"] == "walk.avi" and tracks["frames_read"] == 24 and tracks["frames_skipped"] == 0
    assert tracks["smoothing"]["filter"] == "one_euro" and tracks["tracker"]["metric"] == "oks_iou"
    assert [f["frame"] for f in tracks["frames"]] == list(range(24))
    ids: dict[str, set] = {"red": set(), "green": set()}
    for f in tracks["frames"]:
        if abs(f["frame"] - 13) > 2:
            assert len(f["people"]) == 2  # OKS-NMS may merge the two poses only where the people overlap
        for p in f["people"]:
            x, y, w, h = p["bbox"]
            ids[who([x, y, x + w, y + h], f["frame"])].add(p["track_id"])
    assert len(ids["red"]) == len(ids["green"]) == 1 and ids["red"] != ids["green"]
    preds = json.loads((out / "predictions.json").read_text())
    assert sorted(preds, key=lambda k: int(k.split("#")[1])) == [f"walk.avi#{i}" for i in range(24)]
    for i, f in enumerate(tracks["frames"]):  # the records carry the same ids and (smoothed) keypoints
        recs = preds[f"walk.avi#{i}"]
        assert sorted(r["track_id"] for r in recs) == sorted(p["track_id"] for p in f["people"])
        for r in recs:
            p = next(p for p in f["people"] if p["track_id"] == r["track_id"])
            np.testing.assert_allclose(np.reshape(r["keypoints"], (-1, 3))[:, :2], np.array(p["keypoints"])[:, :2],
                                       atol=0.01)
    cap = cv2.VideoCapture(str(out / "walk_pose.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 24
    assert json.loads((out / "videos.json").read_text())["walk.avi"]["frames_read"] == 24


def test_infer_damaged_videos_keep_good_frames(pose_recipe, video_dir, tmp_path):
    config, weights = pose_recipe
    out = tmp_path / "out"
    cut, corrupt = damaged(video_dir, "truncated"), damaged(video_dir, "corrupt")
    res = infer(cut, corrupt, "--config", config, "--weights", weights, "--detector", video_dir / "blobs.onnx",
                "--out", out)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "15 frame(s) read, 9 unreadable frame(s) skipped (the file ends early)" in text
    assert "23 frame(s) read, 1 unreadable frame(s) skipped" in text and "38 image(s)/frame(s)" in text
    stats = json.loads((out / "videos.json").read_text())
    assert stats["truncated.avi"]["missing_frames"] == list(range(15, 24))
    assert stats["corrupt.avi"]["missing_frames"] == [8]
    preds = json.loads((out / "predictions.json").read_text())
    assert sum(k.startswith("truncated.avi#") for k in preds) == 15 and "corrupt.avi#8" not in preds
    tracks = json.loads((out / "corrupt_tracks.json").read_text())
    assert tracks["frames_skipped"] == 1 and tracks["smoothing"] is None and len(tracks["frames"]) == 23


def test_infer_detector_options_and_errors(pose_recipe, video_dir, torchvision_weights, onnx_dir, tmp_path):
    config, weights = pose_recipe
    frame = next(iter(VideoFrames(video_dir / "walk.avi")))[1]
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), frame[..., ::-1])
    # an image with an ONNX detector: one record per person; --no-track on a video: no track ids
    res = infer(image, video_dir / "walk.avi", "--config", config, "--weights", weights, "--detector",
                video_dir / "blobs.onnx", "--no-track", "--out", tmp_path / "a")
    assert res.exit_code == 0, res.output
    preds = json.loads((tmp_path / "a" / "predictions.json").read_text())
    assert len(preds["frame.png"]) == 2 and len(preds) == 25
    assert not any("track_id" in r for rs in preds.values() for r in rs)
    assert not list((tmp_path / "a").glob("*_tracks.json"))
    # a torchvision detector (random weights, default sizes): every person box it finds above --det-thr
    _, tv = torchvision_weights
    res = infer(image, "--config", config, "--weights", weights, "--detector", f"torchvision:{TV_NAME}:{tv}",
                "--det-thr", "0.0", "--out", tmp_path / "b")
    assert res.exit_code == 0, res.output
    assert 1 <= len(json.loads((tmp_path / "b" / "predictions.json").read_text())["frame.png"]) <= 100
    # errors name the file / option, without a traceback
    bad = export(Constant(torch.zeros(1, 100, 4)), tmp_path / "boxes_only.onnx", (64, 64), ["boxes"])
    res = infer(image, "--config", config, "--weights", weights, "--detector", bad, "--out", tmp_path / "c")
    assert res.exit_code == 1 and "unknown detector output layout" in " ".join(res.output.split())
    assert str(bad) in "".join(res.output.split()) or bad.name in res.output
    assert "Traceback" not in res.output
    res = infer(image, "--config", config, "--weights", weights, "--smooth", "--no-track", "--out", tmp_path / "d")
    assert res.exit_code == 1 and "--smooth" in res.output
