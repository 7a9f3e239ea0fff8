"""The sim-to-real check (benchmarks/sim_to_real.py, issue 16): the agreement metric against a plain-loop reference,
the BlazePose -> COCO-17 table, the teacher's box rule, reading teacher.json, and the evaluation end to end with a
tiny random model on generated images. No mediapipe, no network."""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from humanvision.errors import ConfigError, DataError
from humanvision.metrics.agreement import agreement, merge_agreement
from humanvision.skeletons import get_skeleton

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


teacher_mod = _load("sim_to_real_teacher")
s2r = _load("sim_to_real")


# ------------------------------------------------------------------------------------------- the metric
def loop_agreement(pred, teacher, conf, heights, thr, conf_thr, sizes=None):
    """Reference: one (person, joint) at a time."""
    n, k = conf.shape
    correct, count = [0] * k, [0] * k
    for i in range(n):
        for j in range(k):
            if not conf[i, j] >= conf_thr or not heights[i] > 0:
                continue
            tx, ty = teacher[i, j]
            if sizes is not None and not (0 <= tx < sizes[i][0] and 0 <= ty < sizes[i][1]):
                continue
            count[j] += 1
            d = math.hypot(pred[i, j, 0] - tx, pred[i, j, 1] - ty)
            if d / heights[i] < thr:
                correct[j] += 1
    return correct, count


@pytest.mark.parametrize("thr,conf_thr,with_sizes", [(0.1, 0.5, True), (0.05, 0.3, True), (0.2, 0.5, False)])
def test_agreement_matches_loop_reference(thr, conf_thr, with_sizes):
    rng = np.random.default_rng(3)
    n, k = 40, 17
    teacher = rng.uniform(-20, 120, (n, k, 2))  # some joints outside a 100x100 image
    pred = teacher + rng.normal(0, 8, (n, k, 2))
    conf = rng.uniform(0, 1, (n, k))
    heights = rng.uniform(40, 120, n)
    heights[[3, 7]] = [0.0, -5.0]  # boxes without height count nowhere
    sizes = np.tile([100, 100], (n, 1)) if with_sizes else None
    res = agreement(pred, teacher, conf, heights, thr=thr, conf_thr=conf_thr, image_sizes=sizes)
    correct, count = loop_agreement(pred, teacher, conf, heights, thr, conf_thr, sizes)
    assert res["per_joint_count"].tolist() == count
    assert res["per_joint_correct"].tolist() == correct
    assert res["count"] == sum(count) and res["correct"] == sum(correct)
    assert res["pck"] == pytest.approx(sum(correct) / sum(count))
    assert np.allclose(res["per_joint_pck"], [c / m for c, m in zip(correct, count)])
    assert res["people"] == n and res["thr"] == thr and res["conf_thr"] == conf_thr
    assert 0 < res["count"] < n * k  # exclusions happened and something counted


def test_agreement_exclusions_by_hand():
    # one person, box height 100, thr 0.1 -> 10 px; joints: 9 px (correct), exactly 10 px (not: strict <),
    # 30 px (wrong), low confidence (excluded, NaN prediction allowed), outside the image (excluded)
    teacher = np.array([[[50, 50], [50, 50], [50, 50], [50, 50], [-3, 50]]], float)
    pred = np.array([[[59, 50], [50, 60], [80, 50], [np.nan, np.nan], [50, 50]]], float)
    conf = np.array([[0.9, 0.5, 0.99, 0.49, 1.0]])
    res = agreement(pred, teacher, conf, [100.0], thr=0.1, conf_thr=0.5, image_sizes=[[64, 64]])
    assert res["per_joint_count"].tolist() == [1, 1, 1, 0, 0]
    assert res["per_joint_correct"].tolist() == [1, 0, 0, 0, 0]
    assert res["count"] == 3 and res["correct"] == 1 and res["pck"] == pytest.approx(1 / 3)
    assert np.isnan(res["per_joint_pck"][3]) and np.isnan(res["per_joint_pck"][4])
    # without image sizes the outside joint counts (and is 53 px off)
    res = agreement(pred, teacher, conf, [100.0])
    assert res["per_joint_count"].tolist() == [1, 1, 1, 0, 1] and res["correct"] == 1
    # nothing counted: NaN, not an error
    assert math.isnan(agreement(pred, teacher, np.zeros((1, 5)), [100.0])["pck"])


def test_agreement_errors_name_the_input():
    good = np.zeros((2, 17, 2)), np.zeros((2, 17, 2)), np.ones((2, 17)), np.ones(2)
    with pytest.raises(DataError, match="teacher_conf"):
        agreement(good[0], good[1], np.ones((2, 16)), good[3])
    with pytest.raises(DataError, match="box_heights"):
        agreement(good[0], good[1], good[2], np.ones(3))
    with pytest.raises(DataError, match="pred"):
        agreement(np.zeros((2, 17)), good[1], good[2], good[3])
    pred = good[0].copy()
    pred[1, 4] = np.nan
    with pytest.raises(DataError, match="person 1, joint 4"):
        agreement(pred, good[1], good[2], good[3])


def test_merge_equals_agreement_on_all_people():
    rng = np.random.default_rng(0)
    t = rng.uniform(0, 100, (9, 17, 2))
    p = t + rng.normal(0, 6, t.shape)
    c, h = rng.uniform(0, 1, (9, 17)), rng.uniform(50, 100, 9)
    whole = agreement(p, t, c, h)
    merged = merge_agreement([agreement(p[:4], t[:4], c[:4], h[:4]), agreement(p[4:], t[4:], c[4:], h[4:])])
    for key in ("correct", "count", "people"):
        assert merged[key] == whole[key]
    assert merged["pck"] == pytest.approx(whole["pck"])
    assert merged["per_joint_count"].tolist() == whole["per_joint_count"].tolist()
    assert merged["per_joint_correct"].tolist() == whole["per_joint_correct"].tolist()


# --------------------------------------------------------------------------------- the teacher's tables
def test_blazepose_to_coco17_table():
    table = teacher_mod.BLAZEPOSE_TO_COCO17
    assert list(table) == [0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28]
    coco = get_skeleton("coco17")
    assert teacher_mod.COCO17_NAMES == coco.joints
    assert len(teacher_mod.BLAZEPOSE_NAMES) == 33
    # the BlazePose landmark of each COCO joint has the COCO joint's name: same joint, same side
    assert [teacher_mod.BLAZEPOSE_NAMES[i] for i in table] == list(coco.joints)
    for a, b in coco.flip_pairs:  # left/right pairs map to BlazePose's left/right pairs
        na, nb = teacher_mod.BLAZEPOSE_NAMES[table[a]], teacher_mod.BLAZEPOSE_NAMES[table[b]]
        assert na.startswith("left_") and nb == "right_" + na[len("left_"):]
    assert teacher_mod.BLAZEPOSE_NAMES.index("left_ankle") == 27 and teacher_mod.BLAZEPOSE_NAMES[15] == "left_wrist"


def test_teacher_script_never_imports_the_project():
    tree = ast.parse((BENCH / "sim_to_real_teacher.py").read_text())
    modules = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not modules & {"humanvision", "torch", "timm"}
    assert "mediapipe" in modules  # ...but runs BlazePose (inside main, so the tables import without it)


def _landmarks(points: dict[int, tuple[float, float, float]]) -> list[list[float]]:
    lms = [[0.0, 0.0, 0.0, 0.1, None] for _ in range(33)]  # not confident
    for i, (x, y, v) in points.items():
        lms[i] = [x, y, 0.0, v, None]
    return lms


def test_teacher_box_rule():
    # confident: nose (50, 40), left ankle (60, 240), right heel (40, 250); extent x 40..60, y 40..250 (h 210)
    lms = _landmarks({0: (50, 40, 0.9), 27: (60, 240, 0.8), 30: (40, 250, 0.5), 15: (500, 500, 0.49)})
    x, y, w, h = teacher_mod.teacher_box(lms, 1000, 1000)
    assert (x, y) == pytest.approx((40 - 0.05 * 210, 40 - 0.10 * 210))
    assert (x + w, y + h) == pytest.approx((60 + 0.05 * 210, 250 + 0.03 * 210))
    # cut to the image
    x, y, w, h = teacher_mod.teacher_box(lms, 65, 200)
    assert (x + w, y + h) == (65.0, 200.0) and y == pytest.approx(19.0)
    # a close-up with a confident face: the crown margin is 2 eye-mouth distances (eyes y=100, mouth y=130 -> 60)
    face = {2: (90, 100, 0.9), 5: (110, 100, 0.9), 9: (95, 130, 0.9), 10: (105, 130, 0.9), 11: (60, 200, 0.9),
            12: (140, 200, 0.9)}
    x, y, w, h = teacher_mod.teacher_box(_landmarks(face), 1000, 1000)
    assert y == pytest.approx(100 - 60) and y + h == pytest.approx(200 + 0.03 * 100)
    assert teacher_mod.teacher_box(_landmarks({0: (5, 5, 0.9)}), 100, 100) is None  # one landmark: no box


def test_person_record_and_dedup():
    pts = {i: (100 + 3 * i, 50 + 6 * i, 0.9) for i in teacher_mod.BLAZEPOSE_TO_COCO17}
    lms = _landmarks(pts)
    p = teacher_mod.person_record(lms, [80, 30, 200, 300], 1000, 1000)
    assert p is not None and len(p["keypoints"]) == 17 and p["confidence"] == [0.9] * 17
    assert p["keypoints"][9] == [100 + 3 * 15, 50 + 6 * 15]  # COCO left wrist = landmark 15
    assert teacher_mod.person_record(lms, [600, 600, 50, 50], 1000, 1000) is None  # a neighbour's pose
    few = _landmarks({i: pts[i] for i in (0, 2, 5, 7)})  # 4 confident COCO joints < 5
    assert teacher_mod.person_record(few, None, 1000, 1000) is None
    a = {"box": [0, 0, 10, 10], "score": 0.5}
    b = {"box": [1, 1, 10, 10], "score": 0.9}
    c = {"box": [50, 50, 10, 10], "score": 0.1}
    assert teacher_mod.iou(a["box"], b["box"]) == pytest.approx(81 / 119)
    assert teacher_mod.dedup([a, b, c]) == [b, c]


def test_mask_box_rule():
    # a 200x200 crop at (100, 50): the person's component (crop rows 20..149, cols 40..89) and a larger neighbour
    # (cols 120..199, every row); the mask's values straddle the 0.5 threshold
    window = (100, 50, 300, 250)
    mask = np.full((200, 200), 0.2, np.float32)
    mask[20:150, 40:90] = 0.5  # exactly the threshold: the person
    mask[:, 120:] = 0.8
    pts = {0: (160, 80, 0.9), 11: (150, 100, 0.9), 12: (180, 100, 0.9),  # on the person
           15: (195, 120, 0.9),  # left wrist off the mask: the box still holds it
           16: (250, 100, 0.9),  # right wrist on the neighbour (outvoted 3 to 1)
           27: (90, 230, 0.3)}   # an unconfident ankle counts nowhere
    lms = _landmarks(pts)
    x, y, w, h = teacher_mod.mask_box(mask, window, lms, 1000, 1000)
    # x: the component 140..190 joined with the joints 150..250; y: the component 70..200 with the joints 80..120
    assert (x, y, x + w, y + h) == pytest.approx((140, 70, 250, 200))
    # cut to the image
    x, y, w, h = teacher_mod.mask_box(mask, window, lms, 200, 180)
    assert (x + w, y + h) == (200.0, 180.0)
    # the neighbour wins the vote -> its component (crop cols 120..199 -> image 220..300, rows 0..199 -> 50..250)
    # joined with every confident joint
    lms = _landmarks({**pts, 13: (260, 60, 0.9), 14: (280, 240, 0.9), 23: (230, 200, 0.9), 24: (290, 90, 0.9)})
    x, y, w, h = teacher_mod.mask_box(mask, window, lms, 1000, 1000)
    assert (x, y, x + w, y + h) == pytest.approx((150, 50, 300, 250))  # x from the left shoulder
    # the component needs at least half of the confident joints inside the crop
    split = {0: (160, 80, 0.9), 11: (150, 100, 0.9), 15: (195, 120, 0.9), 16: (250, 100, 0.9),
             8: (10, 10, 0.9)}  # the right ear lies outside the crop: not counted
    assert teacher_mod.mask_box(mask, window, _landmarks(split), 1000, 1000) is not None  # 2 of 4: exactly half
    split[7] = (105, 60, 0.9)  # the left ear inside the crop, off the mask: 2 of 5
    assert teacher_mod.mask_box(mask, window, _landmarks(split), 1000, 1000) is None
    assert teacher_mod.mask_box(np.zeros((200, 200)), window, _landmarks(pts), 1000, 1000) is None  # empty mask
    # person_record writes it (rounded), or null without a mask
    p = teacher_mod.person_record(_landmarks({**pts, 5: (170, 90, 0.9), 6: (175, 90, 0.9)}), None, 1000, 1000,
                                  mask, window)
    assert p["mask_box"] == [140.0, 70.0, 110.0, 130.0]
    assert teacher_mod.person_record(_landmarks({**pts, 5: (170, 90, 0.9)}), None, 1000, 1000)["mask_box"] is None


def test_teacher_env_failures_are_clear(tmp_path):
    with pytest.raises(SystemExit, match="cannot run .*--teacher-python"):
        s2r.ensure_teacher_env(tmp_path / "real", python=str(tmp_path / "no-such-python"))
    fake = tmp_path / "fakepython"  # makes a "venv" whose pip fails like an offline PyPI
    fake.write_text("#!/bin/sh\nmkdir -p \"$3/bin\"\nprintf '#!/bin/sh\\necho ERROR: No matching distribution "
                    "found for mediapipe==0.10.21 >&2\\nexit 1\\n' > \"$3/bin/python\"\n"
                    "chmod +x \"$3/bin/python\"\n")
    fake.chmod(0o755)
    with pytest.raises(SystemExit, match=r"(?s)building the teacher environment failed.*No matching distribution"
                                         r".*CPython 3.9-3.12"):
        s2r.ensure_teacher_env(tmp_path / "real", python=str(fake))
    assert not (tmp_path / "real" / ".venv-teacher" / ".humanvision-teacher").exists()  # retried next time


# ------------------------------------------------------------------------------------------ teacher.json
def _person(box, kps, conf):
    return {"box": box, "candidate_box": None, "score": 0.9, "landmarks": [], "keypoints": kps, "confidence": conf}


def _teacher_json(images: list[dict]) -> dict:
    return {"format": "humanvision-sim-to-real-teacher/1", "teacher": {"mediapipe": "0.10.21", "thresholds": {}},
            "seconds": 1.5, "images": images}


def test_read_teacher_fixture(tmp_path):
    kps = [[10 + j, 20 + 2 * j] for j in range(17)]
    doc = _teacher_json([
        {"file": "pedestrians/a.png", "group": "pedestrians", "kind": "pedestrian", "width": 96, "height": 80,
         "box_source": "hog", "candidates": 3,
         "people": [_person([5, 6, 30, 60], kps, [0.9] * 17), _person([50, 4, 30, 70], kps, [0.2] * 17)]},
        {"file": "stills/b.png", "group": "b", "kind": "still", "width": 64, "height": 64, "box_source": "whole",
         "candidates": 1, "people": []},
    ])
    path = tmp_path / "teacher.json"
    path.write_text(json.dumps(doc))
    images = s2r.read_teacher(path)
    assert [im.file for im in images] == ["pedestrians/a.png", "stills/b.png"]
    a, b = images
    assert a.boxes.shape == (2, 4) and a.keypoints.shape == (2, 17, 2) and a.confidence.shape == (2, 17)
    assert a.keypoints[1, 16].tolist() == [26, 52] and a.boxes[1].tolist() == [50, 4, 30, 70]
    assert b.boxes.shape == (0, 4) and b.keypoints.shape == (0, 17, 2) and (b.width, b.height) == (64, 64)
    assert s2r.teacher_counts(images) == {"pedestrians": {"images": 1, "people": 2},
                                          "b": {"images": 1, "people": 0}, "stills": {"images": 1, "people": 0}}

    # mask boxes: a teacher file written before them, or a person without one, gives its landmark box
    assert a.input_boxes("mask").tolist() == a.boxes.tolist() == a.input_boxes("landmarks").tolist()
    doc["images"][0]["people"][0]["mask_box"] = [1, 2, 40, 70]
    doc["images"][0]["people"][1]["mask_box"] = None
    path.write_text(json.dumps(doc))
    a = s2r.read_teacher(path)[0]
    assert a.input_boxes("mask").tolist() == [[1, 2, 40, 70], [50, 4, 30, 70]]
    assert a.input_boxes("landmarks").tolist() == [[5, 6, 30, 60], [50, 4, 30, 70]]
    with pytest.raises(ConfigError, match="--boxes: one of mask, landmarks, got 'detector'"):
        a.input_boxes("detector")
    doc["images"][0]["people"][1]["mask_box"] = [50, 4, 0, 70]
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"image pedestrians/a.png, person 1: field mask_box: box .* has no area"):
        s2r.read_teacher(path)
    doc["images"][0]["people"][1]["mask_box"] = None

    doc["images"][0]["people"][1]["keypoints"] = kps[:16]
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"image pedestrians/a.png, person 1: field keypoints: expected shape"):
        s2r.read_teacher(path)
    del doc["images"][1]["width"]
    doc["images"][0]["people"][1]["keypoints"] = kps
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"images\[1\]: field width: missing"):
        s2r.read_teacher(path)
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match="format"):
        s2r.read_teacher(path)


# ---------------------------------------------------------------------------------------------- end to end
def _tiny_model(tmp_path: Path, skeleton: str = "coco17") -> tuple[Path, Path]:
    import torch
    from safetensors.torch import save_file

    from humanvision.config import load_config
    from humanvision.methods.topdown import TopDownRecipe, build_method

    recipe = {"name": "tiny", "model": {"name": "lateral_tiny", "skeleton": skeleton, "input_size": [48, 64]},
              "data": {"source": "synthetic", "augment": "flip"}, "eval": {"flip_test": True}}
    config = tmp_path / f"tiny_{skeleton}.yaml"
    config.write_text(yaml.safe_dump(recipe))
    torch.manual_seed(0)
    method = build_method(load_config(recipe, TopDownRecipe))
    weights = tmp_path / f"tiny_{skeleton}.safetensors"
    save_file({k: v.contiguous() for k, v in method.state_dict().items()}, str(weights))
    return config, weights


def test_compare_end_to_end(tmp_path, monkeypatch):
    from humanvision.data.io import write_image

    rng = np.random.default_rng(1)
    root = tmp_path / "real"
    write_image(root / "pedestrians" / "a.png", rng.integers(0, 255, (80, 96, 3), dtype=np.uint8))
    write_image(root / "stills" / "b.png", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    kps = rng.uniform(5, 60, (3, 17, 2))
    kps[0, 3] = [200, 10]  # outside the 96x80 image: not counted
    conf = np.full((3, 17), 0.9)
    conf[1, :5] = 0.1  # the face of person 1 is not confident
    doc = _teacher_json([
        {"file": "pedestrians/a.png", "group": "pedestrians", "kind": "pedestrian", "width": 96, "height": 80,
         "people": [_person([5, 6, 30, 60], kps[0].tolist(), conf[0].tolist()),
                    _person([50, 4, 30, 70], kps[1].tolist(), conf[1].tolist())]},
        {"file": "stills/b.png", "group": "b", "kind": "still", "width": 64, "height": 64,
         "people": [_person([2, 3, 50, 58], kps[2].tolist(), conf[2].tolist())]},
    ])
    teacher = root / "teacher.json"
    teacher.write_text(json.dumps(doc))
    config, weights = _tiny_model(tmp_path)
    vis = tmp_path / "vis"
    res = s2r.compare([("tiny", config, weights)], teacher, root, vis_dir=vis)
    json.dumps(res)  # what sim_to_real.json holds
    assert res["joints"] == list(get_skeleton("coco17").joints) and res["thr"] == 0.1
    assert res["teacher"]["counts"]["pedestrians"] == {"images": 1, "people": 2}
    (model,) = res["models"]
    assert model["name"] == "tiny" and model["flip_test"] is True
    groups = model["groups"]
    assert set(groups) == {"pedestrians", "stills", "b"}
    assert groups["pedestrians"]["count"] == 17 - 1 + 17 - 5 and groups["pedestrians"]["people"] == 2
    assert groups["b"]["count"] == groups["stills"]["count"] == 17
    assert groups["pedestrians"]["per_joint"]["nose"]["count"] == 1
    assert groups["pedestrians"]["per_joint"]["left_ear"]["count"] == 0
    assert groups["pedestrians"]["per_joint"]["left_ear"]["pck"] is None
    for g in groups.values():
        assert set(g["per_joint"]) == set(res["joints"])
        assert 0 <= g["correct"] <= g["count"] and (g["pck"] is None or 0 <= g["pck"] <= 1)
    assert sorted(Path(p).name for p in model["pictures"]) == ["tiny_b.png", "tiny_pedestrians.png"]
    assert all(Path(p).is_file() for p in model["pictures"])

    # the model's boxes: the mask box by default, the landmark box on request; the PCK's scale is the landmark
    # box's height either way
    doc["images"][1]["people"][0]["mask_box"] = [0, 0, 64, 64]
    teacher.write_text(json.dumps(doc))
    seen = []

    def spy(pred, teacher_kp, conf, heights, **kw):
        seen.append(np.asarray(heights).tolist())
        return agreement(pred, teacher_kp, conf, heights, **kw)

    monkeypatch.setattr(s2r, "agreement", spy)
    by_mask = s2r.compare([("tiny", config, weights)], teacher, root)
    assert by_mask["boxes"] == "mask" and seen == [[60.0, 70.0], [58.0]]
    seen.clear()
    by_landmarks = s2r.compare([("tiny", config, weights)], teacher, root, boxes="landmarks")
    assert by_landmarks["boxes"] == "landmarks" and seen == [[60.0, 70.0], [58.0]]
    # the pedestrians (no mask box) are scored alike; the still's predictions come from another crop
    assert by_mask["models"][0]["groups"]["pedestrians"] == by_landmarks["models"][0]["groups"]["pedestrians"]
    method, transform, flip = s2r.load_model(config, weights)
    images = s2r.read_teacher(teacher)
    a = s2r.evaluate_model(method, transform, images, root, flip_test=flip)["predictions"]["stills/b.png"]
    b = s2r.evaluate_model(method, transform, images, root, flip_test=flip, boxes="landmarks")
    assert not np.allclose(a, b["predictions"]["stills/b.png"])
    with pytest.raises(ConfigError, match="--boxes"):
        s2r.compare([("tiny", config, weights)], teacher, root, boxes="hog")

    # the prediction path itself: image pixels for each box
    method, transform, _ = s2r.load_model(config, weights)
    kp, sc = s2r.predict_people(method, transform, np.zeros((64, 64, 3), np.uint8), np.array([[2, 3, 50, 58.0]]))
    assert kp.shape == (1, 17, 2) and sc.shape == (1, 17) and np.isfinite(kp).all()

    # a teacher image that is not the image on disk is an error naming the file
    doc["images"][1]["width"] = 65
    teacher.write_text(json.dumps(doc))
    with pytest.raises(DataError, match="stills/b.png"):
        s2r.compare([("tiny", config, weights)], teacher, root)


def test_model_on_another_skeleton_is_an_error(tmp_path):
    config, weights = _tiny_model(tmp_path, skeleton="mpii16")
    with pytest.raises(ConfigError, match="mpii16.*coco17"):
        s2r.load_model(config, weights)
