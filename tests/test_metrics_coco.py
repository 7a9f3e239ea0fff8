"""COCO keypoint evaluation: parity with pycocotools COCOeval, OKS properties, input validation, CLI."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest

from humanvision.errors import DataError
from humanvision.metrics.coco import (
    STAT_NAMES,
    CocoKeypointEvaluator,
    evaluate_coco_keypoints,
    keypoint_oks,
    resolve_sigmas,
)
from humanvision.skeletons import get_skeleton


def make_fixture(seed: int, num_joints: int = 17, n_images: int = 24, categories=(1,), with_box=False):
    """Random GT + results: crowd, GT without keypoints, empty images, misses, duplicates, ties, > 20 dets."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(10_000, n_images, replace=False)
    images = [{"id": int(i), "width": 640, "height": 480} for i in ids]
    anns, results = [], []
    ann_id = 1
    for img in images:
        if rng.random() < 0.15:  # an image without GT, sometimes with false positives
            for _ in range(rng.integers(0, 3)):
                kp = np.c_[rng.uniform(0, 640, num_joints), rng.uniform(0, 480, num_joints),
                           rng.random(num_joints)]
                results.append({"image_id": img["id"], "category_id": int(rng.choice(categories)),
                                "keypoints": kp.ravel().tolist(), "score": float(rng.random())})
            continue
        for _ in range(rng.integers(1, 9)):
            cat = int(rng.choice(categories))
            side = float(np.exp(rng.uniform(np.log(12), np.log(280))))  # small, medium and large instances
            w, h = side * rng.uniform(0.5, 1.0), side * rng.uniform(1.0, 1.6)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            gx, gy = rng.uniform(x, x + w, num_joints), rng.uniform(y, y + h, num_joints)
            v = rng.choice([0, 1, 2], num_joints, p=[0.3, 0.2, 0.5])
            r = rng.random()
            if r < 0.1:
                v[:] = 0  # no labelled keypoints: ignored GT, OKS by the enlarged-box rule
            crowd = int(rng.random() < 0.08)
            nkp = int((v > 0).sum())
            if r > 0.97:
                v[:] = 0  # inconsistent on purpose: num_keypoints > 0, nothing labelled (box rule, kept)
                nkp = max(nkp, 3)
            kp = np.c_[gx * (v > 0), gy * (v > 0), v]
            area = w * h * rng.uniform(0.4, 0.9)
            anns.append({"id": ann_id, "image_id": img["id"], "category_id": cat,
                         "keypoints": kp.ravel().tolist(), "num_keypoints": nkp, "bbox": [x, y, w, h],
                         "area": area, "iscrowd": crowd})
            ann_id += 1
            if rng.random() < 0.2:
                continue  # missed instance
            for _ in range(1 + int(rng.random() < 0.2)):  # sometimes a duplicate detection
                noise = rng.normal(0, rng.uniform(0.01, 0.15) * np.sqrt(area), (num_joints, 2))
                dk = np.c_[gx + noise[:, 0], gy + noise[:, 1], rng.random(num_joints)]
                score = round(float(rng.random()), 1)  # coarse scores create ties
                rec = {"image_id": img["id"], "category_id": cat, "keypoints": dk.ravel().tolist(),
                       "score": score}
                if with_box:
                    rec["bbox"] = [x, y, w * rng.uniform(0.9, 1.1), h * rng.uniform(0.9, 1.1)]
                results.append(rec)
    for _ in range(25):  # one image with more than max_dets detections
        kp = np.c_[rng.uniform(0, 640, num_joints), rng.uniform(0, 480, num_joints), rng.random(num_joints)]
        results.append({"image_id": images[-1]["id"], "category_id": int(categories[0]),
                        "keypoints": kp.ravel().tolist(), "score": float(rng.random()) * 0.5})
    if with_box:  # pycocotools takes every result's area from its box once the first result has one
        for rec in results:
            rec.setdefault("bbox", [float(v) for v in rng.uniform(1, 150, 4)])
    order = rng.permutation(len(results))
    results = [results[i] for i in order]
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": c, "name": f"c{c}", "keypoints": [f"j{j}" for j in range(num_joints)]}
                         for c in categories]}
    return gt, results


def pycoco_stats(gt: dict, results: list, sigmas=None) -> np.ndarray:
    """The reference: pycocotools COCOeval(iouType="keypoints") stats (skips the test when not installed)."""
    COCO = pytest.importorskip("pycocotools.coco").COCO
    COCOeval = pytest.importorskip("pycocotools.cocoeval").COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        dt = coco.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco, dt, "keypoints")
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


@pytest.mark.parametrize("seed", range(6))
def test_parity_with_pycocotools(seed):
    gt, results = make_fixture(seed)
    ours = evaluate_coco_keypoints(gt, results)
    ref = pycoco_stats(gt, results)
    np.testing.assert_allclose(ours.as_array(), ref, rtol=0, atol=1e-9)
    assert 0 < ours.stats["AP"] < 1 and ours.stats["APm"] > -1 and ours.stats["APl"] > -1  # meaningful
    assert ours.num_images == len(gt["images"]) and ours.num_gt == len(gt["annotations"])
    assert ours.num_detections == len(results) and ours.num_detections_used < len(results)


@pytest.mark.parametrize("seed", [10, 11])
def test_parity_custom_sigmas(seed):
    k = 14
    sigmas = get_skeleton("aic14").sigmas_array
    gt, results = make_fixture(seed, num_joints=k)
    ours = evaluate_coco_keypoints(gt, results, skeleton="aic14")
    np.testing.assert_allclose(ours.as_array(), pycoco_stats(gt, results, sigmas), rtol=0, atol=1e-9)
    # explicit sigmas override the skeleton
    other = np.linspace(0.03, 0.1, k)
    ours2 = evaluate_coco_keypoints(gt, results, skeleton=None, sigmas=other)
    np.testing.assert_allclose(ours2.as_array(), pycoco_stats(gt, results, other), rtol=0, atol=1e-9)


def test_parity_several_categories_and_result_boxes():
    gt, results = make_fixture(20, categories=(1, 3), with_box=True)
    results.append({**results[0], "category_id": 7})  # unknown category: not evaluated (as pycocotools)
    with pytest.warns(UserWarning, match="not a ground-truth category"):
        ours = evaluate_coco_keypoints(gt, results)
    np.testing.assert_allclose(ours.as_array(), pycoco_stats(gt, results), rtol=0, atol=1e-9)
    assert ours.precision.shape == (10, 101, 2, 3) and ours.num_detections == len(results) - 1


def test_use_area_false_is_053_box_area():
    gt, results = make_fixture(30)
    boxed = copy.deepcopy(gt)
    for a in boxed["annotations"]:
        a["area"] = a["bbox"][3] * a["bbox"][2] * 0.53
    ours = evaluate_coco_keypoints(gt, results, use_area=False)
    np.testing.assert_allclose(ours.as_array(), pycoco_stats(boxed, results), rtol=0, atol=1e-9)
    assert not np.allclose(ours.as_array(), evaluate_coco_keypoints(gt, results).as_array())
    # with use_area=False the area field is not needed at all
    for a in gt["annotations"]:
        a.pop("area")
    no_area = evaluate_coco_keypoints(gt, results, use_area=False)
    np.testing.assert_allclose(no_area.as_array(), ours.as_array())
    with pytest.raises(DataError, match="field area"):
        evaluate_coco_keypoints(gt, results, use_area=True)


def test_perfect_results_give_one():
    gt, _ = make_fixture(40)
    for a in gt["annotations"]:
        a["num_keypoints"] = sum(v > 0 for v in a["keypoints"][2::3])  # ignore the inconsistent GTs
    results = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
               for a in gt["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0]
    res = evaluate_coco_keypoints(gt, results)
    np.testing.assert_allclose(res.as_array(), 1.0)


def test_crowd_region_absorbs_detections():
    kp = np.c_[np.linspace(100, 150, 17), np.linspace(100, 220, 17), np.full(17, 2)].ravel().tolist()
    crowd_kp = (np.array(kp) + np.tile([300, 0, 0], 17)).tolist()
    gt = {"images": [{"id": 1}], "categories": [{"id": 1}], "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "keypoints": kp, "num_keypoints": 17,
         "bbox": [100, 100, 50, 120], "area": 5000.0, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "keypoints": crowd_kp, "num_keypoints": 17,
         "bbox": [400, 100, 50, 120], "area": 5000.0, "iscrowd": 1}]}
    results = [{"image_id": 1, "category_id": 1, "keypoints": crowd_kp, "score": 0.9},
               {"image_id": 1, "category_id": 1, "keypoints": crowd_kp, "score": 0.8},
               {"image_id": 1, "category_id": 1, "keypoints": kp, "score": 0.5}]
    res = evaluate_coco_keypoints(gt, results)
    assert res.stats["AP"] == pytest.approx(1.0) and res.stats["AR"] == 1.0 and res.num_gt_ignored == 1
    gt["annotations"][1]["iscrowd"] = 0  # now a regular person: the duplicate is a false positive
    res = evaluate_coco_keypoints(gt, results)
    assert res.stats["AR"] == 1.0 and res.stats["AP"] < 0.99
    np.testing.assert_allclose(res.as_array(), pycoco_stats(gt, results), atol=1e-9)


def test_oks_properties():
    sig = resolve_sigmas("coco17")
    rng = np.random.default_rng(0)
    gt = np.c_[rng.uniform(0, 100, (17, 2)), np.full(17, 2.0)][None]
    assert keypoint_oks(gt[:, :, :2], gt, np.array([5000.0]), sig)[0, 0] == 1.0
    # one labelled shoulder displaced by d at area 1e4: OKS 0.5 at d = sqrt(2 ln2 * 1e4) * 2 sigma ~ 18.6 px
    g = np.zeros((1, 17, 3))
    g[0, 5] = [50, 50, 2]
    d = g[:, :, :2].copy()
    d[0, 5, 0] += np.sqrt(2 * np.log(2) * 1e4) * 2 * 0.079
    np.testing.assert_allclose(keypoint_oks(d, g, np.array([1e4]), sig), 0.5)
    # k labelled, one displaced: (k-1 + exp(-e)) / k
    g2 = gt.copy()
    g2[0, 10:, 2] = 0
    d2 = g2[:, :, :2].copy()
    d2[0, 3, 1] += 7.0
    e = 49.0 / (2 * 0.035) ** 2 / (900.0 + np.spacing(1)) / 2
    np.testing.assert_allclose(keypoint_oks(d2, g2, np.array([900.0]), sig)[0, 0], (9 + np.exp(-e)) / 10)
    # GT without labelled joints: 1 inside the enlarged box, < 1 outside, 0 without a box
    g3 = np.zeros((1, 17, 3))
    box = np.array([[10.0, 10.0, 20.0, 40.0]])
    inside = np.full((1, 17, 2), 45.0)
    assert keypoint_oks(inside, g3, np.array([800.0]), sig, box)[0, 0] == 1.0
    assert keypoint_oks(inside + 100, g3, np.array([800.0]), sig, box)[0, 0] < 1.0
    assert keypoint_oks(inside, g3, np.array([800.0]), sig)[0, 0] == 0.0
    # batched leading dims
    dts, gts = rng.uniform(0, 100, (3, 4, 17, 2)), np.repeat(gt, 5, 0)[None].repeat(3, 0)
    gts[..., :2] += rng.uniform(-5, 5, gts[..., :2].shape)
    many = keypoint_oks(dts, gts, np.full((3, 5), 900.0), sig)
    assert many.shape == (3, 4, 5)
    for b in range(3):  # each batch element is the unbatched call
        np.testing.assert_array_equal(many[b], keypoint_oks(dts[b], gts[b], np.full(5, 900.0), sig))
    assert 0 < many.min() and many.max() < 1


def test_evaluator_accumulates_batches_and_matches_one_shot():
    gt, results = make_fixture(50)
    ev = CocoKeypointEvaluator(gt)
    ev.add(results[: len(results) // 2])
    ev.add(results[len(results) // 2:])
    np.testing.assert_array_equal(ev.evaluate().as_array(), evaluate_coco_keypoints(gt, results).as_array())
    ev.reset()
    empty = ev.evaluate()
    assert empty.stats["AP"] == 0.0 and empty.stats["AR"] == 0.0 and empty.num_detections == 0


def test_json_files_and_result_dict(tmp_path):
    gt, results = make_fixture(60)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    res = evaluate_coco_keypoints(tmp_path / "gt.json", str(tmp_path / "res.json"))
    np.testing.assert_array_equal(res.as_array(), evaluate_coco_keypoints(gt, results).as_array())
    d = res.as_dict()
    assert list(d["stats"]) == list(STAT_NAMES) and d["counts"]["images"] == len(gt["images"])
    json.dumps(d)


# ------------------------------------------------------------------------------------------- validation
def _small():
    gt, results = make_fixture(70, n_images=4)
    return gt, results


@pytest.mark.parametrize("mutate, pattern", [
    (lambda g: g["annotations"][2].pop("keypoints"),
     r"gt\.json: annotation 2 \(id 3\): field keypoints: missing"),
    (lambda g: g["annotations"][1].__setitem__("keypoints", [0.0] * 50),
     r"annotation 1 \(id 2\): field keypoints: expected a list of 51 numbers, got 50 values"),
    (lambda g: g["annotations"][0]["keypoints"].__setitem__(4, float("nan")),
     r"annotation 0 \(id 1\): field keypoints: contains NaN"),
    (lambda g: g["annotations"][3].__setitem__("image_id", 123456),
     r"annotation 3 \(id 4\): field image_id: unknown"),
    (lambda g: g["annotations"][3].__setitem__("id", 1), r"annotation 3 \(id 1\): field id: duplicate"),
    (lambda g: g["annotations"][0].__setitem__("bbox", [1, 2, "x", 4]), r"annotation 0 \(id 1\): field bbox"),
    (lambda g: g.pop("annotations"), r"gt\.json: field annotations: missing or not a list"),
])
def test_malformed_gt_names_file_record_field(tmp_path, mutate, pattern):
    gt, results = _small()
    mutate(gt)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    with pytest.raises(DataError, match=pattern):
        evaluate_coco_keypoints(path, results)


@pytest.mark.parametrize("mutate, pattern", [
    (lambda r: r[1].pop("score"), r"res\.json: result 1 \(image_id \d+\): field score: missing"),
    (lambda r: r[2].__setitem__("keypoints", r[2]["keypoints"][:-3]),
     r"result 2 \(image_id \d+\): field keypoints: expected a list of 51 numbers, got 48 values"),
    (lambda r: r[0].__setitem__("score", float("nan")),
     r"result 0 \(image_id \d+\): field score: contains NaN"),
    (lambda r: r[3].__setitem__("image_id", -5),
     r"result 3 \(image_id -5\): field image_id: unknown image id -5"),
    (lambda r: r[4].__setitem__("score", None),
     r"result 4 \(image_id \d+\): field score: expected a number, got None"),
    (lambda r: r[0]["keypoints"].__setitem__(7, "12.5"),
     r"result 0 \(image_id \d+\): field keypoints: expected a list of 51 numbers, got .12.5. at position 7"),
    (lambda r: r.__setitem__(1, [1, 2, 3]), r"result 1: expected an object"),
])
def test_malformed_results_name_file_record_field(tmp_path, mutate, pattern):
    gt, results = _small()
    mutate(results)
    path = tmp_path / "res.json"
    path.write_text(json.dumps(results))
    with pytest.raises(DataError, match=pattern):
        evaluate_coco_keypoints(gt, path)


def test_results_not_a_list(tmp_path):
    gt, results = _small()
    path = tmp_path / "res.json"
    path.write_text(json.dumps({"results": results}))
    with pytest.raises(DataError, match=r"res\.json: results must be a list"):
        evaluate_coco_keypoints(gt, path)
    with pytest.raises(DataError, match="not valid JSON"):
        path.write_text("[{")
        evaluate_coco_keypoints(gt, path)


def test_wrong_skeleton_size_is_a_data_error():
    gt, results = _small()
    with pytest.raises(DataError, match="expected a list of 42 numbers, got 51 values"):
        evaluate_coco_keypoints(gt, results, skeleton="aic14")


# ------------------------------------------------------------------------------------------- CLI
def test_cli_writes_summary_json(tmp_path):
    from typer.testing import CliRunner

    from humanvision.cli import app

    gt, results = make_fixture(80)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    out = tmp_path / "summary.json"
    run = CliRunner().invoke(app, ["evaluate", "coco", "--gt", str(tmp_path / "gt.json"), "--results",
                                   str(tmp_path / "res.json"), "--out", str(out)])
    assert run.exit_code == 0, run.output
    assert "OKS .50:.95" in run.output and "AR" in run.output
    summary = json.loads(out.read_text())
    ours = [summary["stats"][k] for k in STAT_NAMES]
    np.testing.assert_allclose(ours, pycoco_stats(gt, results), rtol=0, atol=1e-9)
    assert summary["counts"]["detections"] == len(results)

    bad = CliRunner().invoke(app, ["evaluate", "coco", "--gt", str(tmp_path / "gt.json"), "--results",
                                   str(tmp_path / "gt.json")])
    assert bad.exit_code != 0 and "results must be a list" in bad.output
