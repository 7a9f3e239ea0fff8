"""Occlusion benchmarks: the CrowdPose reader and evaluation (AP by crowd index), the OCHuman reader and the
occluded-people subset of a synthetic COCO set."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest

from humanvision.data.readers import (
    CocoKeypoints,
    CrowdPoseKeypoints,
    OCHumanKeypoints,
    write_occluded_subset,
)
from humanvision.errors import DataError
from humanvision.metrics.coco import evaluate_coco_keypoints, evaluate_crowdpose, load_coco_keypoint_gt
from humanvision.skeletons import get_skeleton

CROWDPOSE_NAMES = ["left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist",
                   "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
                   "right_ankle", "head", "neck"]
SIGMAS = np.array([.79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89, .79, .79]) / 10  # official
SHIFT = 0.1275  # x shift in units of sqrt(0.53 w h): OKS ~0.726 with all 14 joints labelled


def crowdpose_fixture():
    """Six images (crowd index 0.05, 0.15 | 0.2, 0.5 | 0.8, 0.95), two people each, plus a crowd region and
    a person without keypoints. Results: perfect on easy images, one person missed on medium images, every
    joint shifted by SHIFT on hard images."""
    rng = np.random.default_rng(3)
    crowd = [0.05, 0.15, 0.2, 0.5, 0.8, 0.95]
    images = [{"id": 100 + i, "file_name": f"{100 + i}.jpg", "width": 640, "height": 480, "crowdIndex": c}
              for i, c in enumerate(crowd)]
    anns, results = [], []
    for i, im in enumerate(images):
        for p in range(2):
            w, h = 60.0 + 40 * p + 10 * i, 150.0 + 30 * p
            x, y = 40.0 + 250 * p, 60.0 + 5 * i
            v = rng.choice([1, 2], 14) if i >= 4 else rng.choice([0, 1, 2], 14, p=[0.2, 0.3, 0.5])
            kp = np.c_[rng.uniform(x, x + w, 14) * (v > 0), rng.uniform(y, y + h, 14) * (v > 0), v]
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": 1, "bbox": [x, y, w, h],
                         "keypoints": kp.ravel().tolist(), "num_keypoints": int((v > 0).sum()), "iscrowd": 0})
            if i == 3 and p == 1:
                continue  # the missed person (medium)
            dt = kp.copy()
            dt[:, 2] = 0.9
            if i >= 4:
                dt[:, 0] += SHIFT * np.sqrt(0.53 * w * h)
            results.append({"image_id": im["id"], "category_id": 1, "keypoints": dt.ravel().tolist(),
                            "score": float(0.5 + 0.1 * p + 0.01 * i)})
    anns.append({"id": len(anns) + 1, "image_id": 103, "category_id": 1, "bbox": [0.0, 0.0, 640.0, 480.0],
                 "keypoints": [0] * 42, "num_keypoints": 0, "iscrowd": 1})
    anns.append({"id": len(anns) + 1, "image_id": 105, "category_id": 1, "bbox": [500.0, 10.0, 30.0, 60.0],
                 "keypoints": [0] * 42, "num_keypoints": 0, "iscrowd": 0})
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": 1, "name": "person", "supercategory": "person", "keypoints": CROWDPOSE_NAMES,
                          "skeleton": [[13, 14], [14, 1], [14, 2]]}]}
    return gt, results


def pycoco(gt: dict, results: list, img_ids=None) -> np.ndarray:
    """pycocotools COCOeval with CrowdPose's sigmas and area := 0.53 w h (its OKS scale), maybe on a subset"""
    COCO = pytest.importorskip("pycocotools.coco").COCO
    COCOeval = pytest.importorskip("pycocotools.cocoeval").COCOeval
    gt = copy.deepcopy(gt)
    for a in gt["annotations"]:
        a["area"] = 0.53 * a["bbox"][2] * a["bbox"][3]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), "keypoints")
        ev.params.kpt_oks_sigmas = SIGMAS
        if img_ids is not None:
            ev.params.imgIds = list(img_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


def test_crowdpose_sigmas_are_the_official_ones():
    np.testing.assert_allclose(get_skeleton("crowdpose14").sigmas_array, SIGMAS)


def test_crowdpose_ap_by_crowd_index_and_parity_with_pycocotools(tmp_path):
    gt, results = crowdpose_fixture()
    # the hard people are found at OKS .50-.70 and missed from .75 on (independent OKS formula)
    for a, r in zip(gt["annotations"][8:12], results[7:11]):
        g, d = np.reshape(a["keypoints"], (14, 3)), np.reshape(r["keypoints"], (14, 3))
        s = 0.53 * a["bbox"][2] * a["bbox"][3]
        d2 = (d[:, 0] - g[:, 0]) ** 2 + (d[:, 1] - g[:, 1]) ** 2
        oks = np.mean(np.exp(-d2 / (2 * s * (2 * SIGMAS) ** 2)))
        assert 0.70 < oks < 0.75
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    res = evaluate_crowdpose(tmp_path / "gt.json", results)
    assert res.split_images == {"easy": 2, "medium": 2, "hard": 2}  # 0.2 -> medium, 0.8 -> hard
    assert res.stats["AP_easy"] == pytest.approx(1.0, abs=1e-12)
    assert res.stats["AP_medium"] == pytest.approx(76 / 101, abs=1e-12)  # recall 3/4 at precision 1
    assert res.stats["AP_hard"] == pytest.approx(0.5, abs=1e-12)  # 5 of 10 OKS thresholds
    ref = pycoco(gt, results)
    ours = [res.stats[k] for k in ("AP", "AP50", "AP75", "AR", "AR50", "AR75")]
    np.testing.assert_allclose(ours, ref[[0, 1, 2, 5, 6, 7]], rtol=0, atol=1e-9)
    assert 0.5 < res.stats["AP"] < 1 and res.overall.max_dets == 20 and not res.overall.use_area
    for split, ids in (("easy", [100, 101]), ("medium", [102, 103]), ("hard", [104, 105])):
        assert res.stats[f"AP_{split}"] == pytest.approx(pycoco(gt, results, ids)[0], abs=1e-9)
    # the paper's bands: 0.15 moves to medium (5 of 6 found there)
    paper = evaluate_crowdpose(gt, results, thresholds=(0.1, 0.8))
    assert paper.split_images == {"easy": 1, "medium": 3, "hard": 2}
    assert paper.stats["AP_medium"] == pytest.approx(84 / 101, abs=1e-12)
    assert paper.stats["AP"] == res.stats["AP"]


def test_crowdpose_evaluation_needs_crowd_index(tmp_path):
    gt, results = crowdpose_fixture()
    loaded = load_coco_keypoint_gt(gt, 14, require_area=False)
    with pytest.raises(ValueError, match="give crowd_index"):
        evaluate_crowdpose(loaded, results)
    ci = {im["id"]: im["crowdIndex"] for im in gt["images"]}
    assert evaluate_crowdpose(loaded, results, crowd_index=ci).stats == evaluate_crowdpose(gt, results).stats
    del ci[105]
    with pytest.raises(DataError, match=r"field crowdIndex: no crowd index for image ids \[105\]"):
        evaluate_crowdpose(loaded, results, crowd_index=ci)
    del gt["images"][3]["crowdIndex"]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    with pytest.raises(DataError, match=r"gt\.json: image 3 \(id 103\): field crowdIndex: missing"):
        evaluate_crowdpose(tmp_path / "gt.json", results)
    gt["images"][3]["crowdIndex"] = "high"
    with pytest.raises(DataError, match="image 3 .*field crowdIndex: expected a number"):
        evaluate_crowdpose(gt, results)


def test_crowdpose_reader(tmp_path):
    gt, _ = crowdpose_fixture()
    path = tmp_path / "crowdpose_val.json"
    path.write_text(json.dumps(gt))
    reader = CrowdPoseKeypoints(path, tmp_path / "images")
    assert reader.skeleton.name == "crowdpose14" and reader.skeleton.num_joints == 14
    assert len(reader) == 12  # the crowd region and the person without keypoints are dropped
    np.testing.assert_allclose(reader.crowd_index, [0.05, 0.15, 0.2, 0.5, 0.8, 0.95])
    s = reader[5]
    a = gt["annotations"][5]
    kp = np.reshape(a["keypoints"], (14, 3))
    np.testing.assert_allclose(s.keypoints_2d[0], kp[:, :2], atol=1e-4)
    np.testing.assert_array_equal(s.visibility[0], np.minimum(kp[:, 2], 1))
    assert s.image_id == a["image_id"] == 102 and s.meta["crowd_index"] == 0.2
    assert s.image_path == str(tmp_path / "images" / "102.jpg")
    by_image = CrowdPoseKeypoints(path, mode="image")
    assert len(by_image) == 6 and len(by_image[3].keypoints_2d) == 3  # crowd region kept in image mode
    assert by_image[5].meta["crowd_index"] == 0.95
    del gt["images"][4]["crowdIndex"]
    path.write_text(json.dumps(gt))
    with pytest.raises(DataError, match=r"crowdpose_val\.json: image 104: field crowdIndex: missing"):
        CrowdPoseKeypoints(path)
    assert len(CocoKeypoints(path, skeleton="crowdpose14")) == 12  # the plain reader does not need it


def test_cli_evaluate_crowdpose(tmp_path):
    from typer.testing import CliRunner

    from humanvision.cli import app

    gt, results = crowdpose_fixture()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    out = tmp_path / "summary.json"
    args = ["evaluate", "crowdpose", "--gt", str(tmp_path / "gt.json"), "--results",
            str(tmp_path / "res.json")]
    run = CliRunner().invoke(app, args + ["--out", str(out)])
    assert run.exit_code == 0, run.output
    assert "easy" in run.output and "hard" in run.output
    summary = json.loads(out.read_text())
    assert summary["stats"]["AP_hard"] == pytest.approx(0.5)
    assert summary["crowd_index_thresholds"] == [0.2, 0.8]
    assert summary["split_images"] == {"easy": 2, "medium": 2, "hard": 2}
    run = CliRunner().invoke(app, args + ["--crowd-index", "0.1,0.8", "--out", str(out)])
    assert run.exit_code == 0 and json.loads(out.read_text())["split_images"]["medium"] == 3
    bad = CliRunner().invoke(app, args + ["--crowd-index", "0.9,0.1"])
    assert bad.exit_code != 0


# ------------------------------------------------------------------------------------------------ OCHuman
def test_ochuman_reader(tmp_path):
    """Two heavily overlapping people in OCHuman's COCO-format file (17 joints, GT boxes)."""
    a = np.array([[200, 80, 2], [205, 75, 2], [195, 75, 1], [0, 0, 0], [188, 78, 2], [220, 120, 2],
                  [180, 120, 1], [230, 160, 2], [175, 160, 1], [235, 195, 2], [170, 195, 1], [215, 200, 2],
                  [190, 200, 2], [218, 260, 1], [188, 260, 1], [220, 320, 1], [186, 320, 1]], dtype=float)
    b = a.copy()
    b[a[:, 2] > 0, :2] += [25, 8]  # the second person stands right behind the first
    b[[0, 1, 2], 2] = 1  # whose head hides the second's face
    doc = {"images": [{"id": 1, "file_name": "000001.jpg", "width": 480, "height": 360}],
           "annotations": [{"id": 1 + i, "image_id": 1, "category_id": 1, "iscrowd": 0,
                            "bbox": [k[:, 0][k[:, 2] > 0].min(), k[:, 1][k[:, 2] > 0].min(), 70.0, 250.0],
                            "area": 9000.0, "num_keypoints": int((k[:, 2] > 0).sum()),
                            "keypoints": k.ravel().tolist()} for i, k in enumerate((a, b))],
           "categories": [{"id": 1, "name": "person", "keypoints": list(get_skeleton("coco17").joints)}]}
    path = tmp_path / "ochuman_coco_format_val_range_0.00_1.00.json"
    path.write_text(json.dumps(doc))
    reader = OCHumanKeypoints(path, tmp_path / "images")
    assert len(reader) == 2 and reader.skeleton.name == "coco17"
    for s, k in zip(reader, (a, b)):
        np.testing.assert_allclose(s.keypoints_2d[0], k[:, :2])
        np.testing.assert_array_equal(s.meta["visibility_flags"][0], k[:, 2])
        assert s.image_path == str(tmp_path / "images" / "000001.jpg")
    assert reader[0].boxes[0, 2] == pytest.approx(69.0)  # 0.x cleaning: w - 1
    both = OCHumanKeypoints(path, mode="image")[0]
    assert both.keypoints_2d.shape == (2, 17, 2) and list(both.ann_ids) == [1, 2]
    results = [{"image_id": 1, "category_id": 1, "keypoints": x["keypoints"], "score": 1.0}
               for x in doc["annotations"]]
    assert evaluate_coco_keypoints(doc, results).stats["AP"] == pytest.approx(1.0)
    doc["annotations"][1]["keypoints"] += [0, 0, 0, 0, 0, 0]  # OCHuman's own 19-joint layout
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match="annotation 2: field keypoints: 57 values, expected 51"):
        OCHumanKeypoints(path)


# --------------------------------------------------------------------------------------- occluded subset
def test_occluded_subset_of_synthetic_val(tmp_path):
    from humanvision.data.synthetic import generate_coco

    generate_coco(tmp_path, {"val": 4}, size=(96, 96), seed=1, people=(2, 3), occluder_prob=1.0)
    full_path = tmp_path / "annotations" / "person_keypoints_val.json"
    full = json.loads(full_path.read_text())
    flags = [np.array(x["keypoints"][2::3]) for x in full["annotations"]]
    occluded = [bool((v == 1).sum() > 0.5 * (v > 0).sum()) for v in flags]
    assert 0 < sum(occluded) < len(occluded)  # the fixture has both kinds of people

    sub_path = tmp_path / "occluded.json"
    summary = write_occluded_subset(full_path, sub_path)
    assert summary == {"file": str(sub_path), "images": 4, "people": len(occluded), "occluded": sum(occluded)}
    sub = json.loads(sub_path.read_text())
    assert sub["images"] == full["images"] and len(sub["annotations"]) == len(full["annotations"])
    for a, b, occ in zip(full["annotations"], sub["annotations"], occluded):
        assert b == (a if occ else {**a, "num_keypoints": 0})
    reader = CocoKeypoints(sub_path, tmp_path / "val", clean_boxes=False)
    occluded_ids = [a["id"] for a, occ in zip(full["annotations"], occluded) if occ]
    assert reader.ann_ids.tolist() == occluded_ids  # top-down GT-box inference sees the occluded people only

    def result(a, shift):
        kp = np.reshape(a["keypoints"], (17, 3)) + [shift, 0, 0]
        return {"image_id": a["image_id"], "category_id": 1, "keypoints": kp.ravel().tolist(), "score": 1.0}

    perfect = [result(a, 0.0) for a in full["annotations"]]
    assert evaluate_coco_keypoints(sub_path, perfect).stats["AP"] == pytest.approx(1.0)  # others absorbed
    wrong_on_occluded = [result(a, 30.0 if occ else 0.0) for a, occ in zip(full["annotations"], occluded)]
    assert evaluate_coco_keypoints(sub_path, wrong_on_occluded).stats["AP"] == 0.0
    assert evaluate_coco_keypoints(full_path, wrong_on_occluded).stats["AP"] > 0.2
    dropped = write_occluded_subset(full_path, tmp_path / "dropped.json", others="drop")
    assert len(json.loads((tmp_path / "dropped.json").read_text())["annotations"]) == dropped["occluded"]
    # the non-occluded people's detections now count as false positives
    assert evaluate_coco_keypoints(tmp_path / "dropped.json", perfect).stats["AP"] < 1.0
