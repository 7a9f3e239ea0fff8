"""Benchmark metrics: PCK/PCKh/EPE/AUC, MPJPE family, 3DHP, ITOP, segmentation, re-id, attributes, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from humanvision.errors import DataError
from humanvision.metrics import (
    ConfusionMatrix,
    attribute_metrics,
    bbox_size_norm,
    confusion_matrix,
    evaluate_3dhp,
    evaluate_mpjpe,
    evaluate_reid,
    head_size_norm,
    hg_mpjpe,
    itop_map,
    joint_errors,
    keypoint_auc,
    keypoint_epe,
    keypoint_pck,
    mpii_pckh,
    mpjpe,
    n_mpjpe,
    normalize_action,
    p_mpjpe,
    read_mpii_gt,
    reid_distance,
    rescale_to_bone_length,
    segmentation_metrics,
    torso_size_norm,
)
from humanvision.metrics.pose3d import HG_H36M17_EDGES


def _random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    q[np.linalg.det(q) < 0, :, 0] *= -1
    return q


# ============================================================================================== 2D: PCK / PCKh
def _mpii_case():
    """Two persons, head sizes 30 px and 60 px (boxes 30x40 and 60x80, SC_BIAS 0.6)."""
    gt = np.tile(np.arange(16, dtype=float)[None, :, None] * [3.0, 2.0], (2, 1, 1)) + 100.0
    headboxes = np.array([[[0, 0], [30, 40]], [[10, 10], [70, 90]]], dtype=float)
    visible = np.ones((2, 16), dtype=bool)
    visible[1, 12] = False
    pred = gt.copy()
    pred[0, 9, 0] += 10.0   # head: 10/30 -> correct
    pred[0, 12, 1] += 20.0  # r_shoulder: 20/30 -> wrong
    pred[0, 13, 0] += 15.0  # l_shoulder: exactly 0.5 -> correct with <=, wrong with <
    pred[0, 6, 0] += 100.0  # pelvis: wrong, but excluded from Mean
    pred[1, 9, 1] += 40.0   # head: 40/60 -> wrong
    pred[1, 12] += 1000.0   # invisible: ignored
    return pred, gt, headboxes, visible


def test_pckh_perfect_is_100():
    _pred, gt, hb, vis = _mpii_case()
    res = mpii_pckh(gt, gt, hb, vis)
    assert all(v == 100.0 for v in res.groups.values())
    assert res.mean == 100.0 and res.mean_at_0_1 == 100.0 and res.auc == 100.0  # '<=': error 0 passes at 0
    assert res.num_samples == 2 and res.count == 2 * 14 - 1  # pelvis/thorax excluded, one invisible joint


def test_pckh_hand_example():
    pred, gt, hb, vis = _mpii_case()
    np.testing.assert_allclose(head_size_norm(hb), [30.0, 60.0])
    res = mpii_pckh(pred, gt, hb, vis, thr=0.5)
    assert res.per_joint["head_top"] == 50.0
    assert res.per_joint["r_shoulder"] == 0.0 and res.joint_count["r_shoulder"] == 1
    assert res.per_joint["l_shoulder"] == 100.0
    assert res.per_joint["pelvis"] == 50.0
    assert res.groups["Head"] == 50.0
    assert res.groups["Shoulder"] == 50.0  # mean of the two per-joint values, not count-weighted
    assert res.groups["Elbow"] == 100.0
    assert res.mean == pytest.approx(100.0 * 25 / 27)  # 27 counted pairs, 2 wrong; pelvis not counted
    strict = mpii_pckh(pred, gt, hb, vis, thr=0.5, inclusive=False)
    assert strict.per_joint["l_shoulder"] == 50.0 and strict.mean == pytest.approx(100.0 * 24 / 27)
    # At 0.1 (3 px / 6 px) all four displaced visible non-pelvis joints are wrong: 23 of 27 correct.
    assert res.mean_at_0_1 == pytest.approx(100.0 * 23 / 27)
    assert res.curve.shape == (51,) and np.all(np.diff(res.curve) >= 0)


def test_pckh_displaced_beyond_threshold_is_zero():
    _, gt, hb, vis = _mpii_case()
    head = head_size_norm(hb)
    angle = np.random.default_rng(0).uniform(0, 2 * np.pi, size=(2, 16))
    step = (0.5 * head + 0.01)[:, None, None] * np.stack([np.cos(angle), np.sin(angle)], -1)
    res = mpii_pckh(gt + step, gt, hb, vis)
    assert res.mean == 0.0 and all(v == 0.0 for v in res.groups.values())


def test_pckh_legacy_mean_at_0_1_reads_threshold_0_11():
    _, gt, hb, vis = _mpii_case()
    pred = gt.copy()
    pred[..., 0] += 0.105 * head_size_norm(hb)[:, None]  # between 0.1 and 0.11 head sizes
    res = mpii_pckh(pred, gt, hb, vis)
    assert res.mean_at_0_1 == 0.0 and res.legacy_mean_at_0_1 == 100.0


def test_pck_normalisers_and_epe():
    gt = np.array([[[0.0, 0.0], [10.0, 0.0], [10.0, 20.0], [0.0, 20.0]]])
    pred = gt + np.array([[[3.0, 4.0], [0.0, 1.0], [0.0, 5.0], [0.0, 0.0]]])
    np.testing.assert_allclose(bbox_size_norm(gt=gt), [20.0])
    np.testing.assert_allclose(bbox_size_norm(bboxes=[[0, 0, 10, 20]]), [20.0])
    res = keypoint_pck(pred, gt, bbox_size_norm(gt=gt), thr=0.2)  # threshold 4 px: errors 5, 1, 5, 0
    assert res.pck == 50.0 and res.count == 4 and list(res.per_joint) == [0.0, 100.0, 0.0, 100.0]
    inclusive = keypoint_pck(pred, gt, 25.0, thr=0.2, inclusive=True)  # 5 px exactly at the threshold
    assert inclusive.pck == 100.0
    per_axis = keypoint_pck(pred, gt, np.array([[10.0, 20.0]]), thr=0.3)  # (0.3,0.2),(0,.05),(0,.25),(0,0)
    assert per_axis.pck == 75.0
    epe = keypoint_epe(pred, gt, mask=[[True, True, False, True]])
    assert epe.epe == pytest.approx((5.0 + 1.0 + 0.0) / 3) and epe.count == 3
    assert np.isnan(epe.per_joint[2])


def test_pck_zero_normaliser_excludes_sample_and_torso():
    from humanvision.skeletons import get_skeleton

    coco = get_skeleton("coco17")
    gt = np.zeros((2, 17, 2))
    gt[:, coco.index("left_shoulder")] = [0.0, 0.0]
    gt[:, coco.index("right_hip")] = [30.0, 40.0]
    mask = np.ones((2, 17), bool)
    mask[1, coco.index("right_hip")] = False
    torso = torso_size_norm(gt, "coco17", mask)
    np.testing.assert_allclose(torso, [50.0, 0.0])
    res = keypoint_pck(gt + 1.0, gt, torso, mask, thr=0.05)  # sample 1 excluded (no torso)
    assert res.count == 17 and res.pck == 100.0 and res.num_samples == 2


def test_keypoint_auc_known_curve():
    gt = np.zeros((4, 3, 2))
    pred = gt + [0.05, 0.0]  # normalised error 0.05 everywhere
    res = keypoint_auc(pred, gt, norm=1.0, num_thrs=20)  # thresholds 0, .05, ..., .95 with '<'
    assert res.auc == pytest.approx(100.0 * 18 / 20) and res.auc_joint_mean == pytest.approx(res.auc)
    assert res.count == 12


def test_pose_input_validation_names_argument():
    gt = np.zeros((2, 16, 2))
    bad = gt.copy()
    bad[1, 3, 0] = np.nan
    with pytest.raises(DataError, match=r"field pred: .*NaN.*sample 1, joint 3"):
        keypoint_pck(bad, gt, 10.0)
    with pytest.raises(DataError, match="field pred"):
        keypoint_pck(np.zeros((2, 15, 2)), gt, 10.0)
    with pytest.raises(DataError, match="field mask"):
        keypoint_pck(gt, gt, 10.0, mask=np.ones((2, 3)))
    with pytest.raises(DataError, match="field headboxes"):
        mpii_pckh(gt, gt, np.zeros((3, 4)))
    # NaN where the joint does not count is accepted (a common missing-joint placeholder).
    vis = np.ones((2, 16), bool)
    vis[1, 3] = False
    res = mpii_pckh(bad, gt, np.tile([[0.0, 0.0, 30.0, 40.0]], (2, 1)), vis)
    assert res.mean == 100.0


def test_read_mpii_gt_mat_and_json(tmp_path):
    from scipy.io import savemat

    _pred, gt, hb, vis = _mpii_case()
    mat = tmp_path / "gt.mat"
    savemat(mat, {"jnt_missing": (~vis).T.astype(np.uint8), "pos_gt_src": gt.transpose(1, 2, 0),
                  "headboxes_src": hb.transpose(1, 2, 0), "dataset_joints": np.array(["x"] * 16)})
    g = read_mpii_gt(mat)
    np.testing.assert_array_equal(g.joints, gt)
    np.testing.assert_array_equal(g.visible, vis)
    np.testing.assert_array_equal(g.headboxes, hb)

    records = [{"image": f"{i}.jpg", "center": [0, 0], "scale": 1.0, "joints": gt[i].tolist(),
                "joints_vis": vis[i].astype(int).tolist()} for i in range(2)]
    js = tmp_path / "valid.json"
    js.write_text(json.dumps(records))
    boxes = tmp_path / "heads.json"
    boxes.write_text(json.dumps({"headboxes": hb.reshape(2, 4).tolist()}))
    g2 = read_mpii_gt(js, boxes)
    np.testing.assert_array_equal(g2.headboxes, hb)
    assert g2.images == ["0.jpg", "1.jpg"]
    g3 = read_mpii_gt(js, mat)  # head boxes from the .mat
    np.testing.assert_array_equal(g3.headboxes, hb)
    with pytest.raises(DataError, match="no head boxes"):
        read_mpii_gt(js)
    records[1]["joints"] = records[1]["joints"][:15]
    js.write_text(json.dumps(records))
    with pytest.raises(DataError, match=r"valid.json: record 1: field joints"):
        read_mpii_gt(js, boxes)


# ============================================================================================== 3D pose
@pytest.fixture()
def poses():
    rng = np.random.default_rng(3)
    gt = rng.normal(size=(40, 17, 3)) * 300.0
    pred = gt + rng.normal(size=gt.shape) * 20.0
    return pred, gt, rng


def test_mpjpe_translation_invariance(poses):
    pred, gt, rng = poses
    shift = rng.normal(size=(40, 1, 3)) * 500.0
    rel = mpjpe(pred, gt, root=6)
    assert mpjpe(pred + shift, gt, root=6) == pytest.approx(rel, rel=1e-12)
    assert mpjpe(pred + shift, gt) > rel + 100.0  # absolute MPJPE sees the translation
    same_root = pred - pred[:, 6:7] + gt[:, 6:7]
    assert mpjpe(same_root, gt) == pytest.approx(mpjpe(same_root, gt, root=6))
    manual = np.linalg.norm((pred - pred[:, 6:7]) - (gt - gt[:, 6:7]), axis=-1).mean()
    assert rel == pytest.approx(manual)


def test_p_mpjpe_similarity_invariance(poses):
    pred, gt, rng = poses
    rot = _random_rotations(40, rng)
    s = rng.uniform(0.5, 2.0, size=(40, 1, 1))
    moved = s * gt @ np.swapaxes(rot, 1, 2) + rng.normal(size=(40, 1, 3)) * 1000.0
    assert p_mpjpe(moved, gt) < 1e-8
    moved_pred = s * pred @ np.swapaxes(rot, 1, 2) + 7.0
    assert p_mpjpe(moved_pred, gt) == pytest.approx(p_mpjpe(pred, gt), rel=1e-9)
    assert p_mpjpe(pred, gt) <= mpjpe(pred, gt, root=6)
    # Masked joints do not influence the fit: corrupt them wildly.
    mask = np.ones((40, 17), bool)
    mask[:, :3] = False
    corrupt = moved.copy()
    corrupt[:, :3] += 1e4
    assert p_mpjpe(corrupt, gt, mask=mask) < 1e-8


def test_n_mpjpe_scale_only(poses):
    _, gt, _ = poses
    rel = gt - gt[:, 6:7]
    assert n_mpjpe(2.5 * rel + 100.0, gt, root=6) < 1e-9
    assert mpjpe(2.5 * rel, gt, root=6) > 100.0


def test_per_action_aggregation_is_frame_weighted():
    gt = np.zeros((30, 17, 3))
    pred = gt.copy()
    pred[:5, :, 0] = 10.0     # Directions-1
    pred[5:20, :, 0] = 20.0   # Directions-2
    pred[20:, :, 0] = 40.0    # Eating 1
    actions = ["Directions-1"] * 5 + ["Directions-2"] * 15 + ["Eating 1"] * 10
    res = evaluate_mpjpe(pred, gt, root=None, actions=actions, subjects=["S9"] * 20 + ["S11"] * 10)
    assert res.per_action["Directions"] == {"mpjpe": pytest.approx(17.5), "count": 20}
    assert res.per_action["Eating"] == {"mpjpe": pytest.approx(40.0), "count": 10}
    assert res.mpjpe == pytest.approx((50 + 300 + 400) / 30)  # total error / total frames
    assert res.action_mean == pytest.approx((17.5 + 40.0) / 2)
    assert res.per_subject["S9"]["mpjpe"] == pytest.approx(17.5) and res.count == 30
    assert res.per_joint["0"] == pytest.approx(25.0)
    unmerged = evaluate_mpjpe(pred, gt, root=None, actions=actions, merge_trials=False)
    assert set(unmerged.per_action) == {"Directions-1", "Directions-2", "Eating 1"}
    assert normalize_action("WalkTogether 2") == "WalkTogether" and normalize_action("Walking_1") == "Walking"
    json.dumps(res.to_dict())


def test_hg_bone_length_protocol(poses):
    _, gt, _ = poses
    gt = gt - gt[:, :1]
    gt = rescale_to_bone_length(gt, HG_H36M17_EDGES, 4000.0)
    lengths = np.linalg.norm(gt[:, [a for a, _ in HG_H36M17_EDGES]] - gt[:, [b for _, b in HG_H36M17_EDGES]], axis=-1)
    np.testing.assert_allclose(lengths.sum(1), 4000.0)
    np.testing.assert_allclose(rescale_to_bone_length(0.01 * gt, HG_H36M17_EDGES), gt)
    res = hg_mpjpe(0.003 * gt + 5.0, gt)  # crop-unit prediction of the same shape: exact after rescaling
    assert res.mpjpe < 1e-9 and res.count == 40


def test_3dhp_pck_auc(poses):
    _, gt, _rng = poses
    seqs = [f"TS{1 + i % 6}" for i in range(40)]
    perfect = evaluate_3dhp(gt, gt, sequences=seqs)
    assert perfect.pck == 100.0 and perfect.num_joints == 14 and perfect.count == 40
    assert perfect.auc == pytest.approx(100.0 * 30 / 31)  # official: error < 0 never holds
    assert evaluate_3dhp(gt, gt, inclusive=True).auc == 100.0
    assert set(perfect.per_subset) == {"GS", "noGS", "Outdoor"}
    assert perfect.per_subset["GS"]["count"] == sum(s in ("TS1", "TS2") for s in seqs)
    assert set(perfect.per_group) == {"Head", "Neck", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle"}

    # Errors uniform on {2.5, 7.5, ..., 147.5} (relative to the pelvis) give AUC exactly 50, PCK 100.
    err = (np.arange(30 * 14) % 30 * 5.0 + 2.5).reshape(30, 14)
    g3 = np.zeros((30, 17, 3))
    p3 = g3.copy()
    p3[:, :14, 0] = err
    res = evaluate_3dhp(p3, g3)
    assert res.auc == pytest.approx(50.0) and res.pck == 100.0
    p3[:, :14, 0] = 150.0  # exactly 150 mm does not count
    assert evaluate_3dhp(p3, g3).pck == 0.0
    valid = np.zeros(30, bool)
    valid[:10] = True
    assert evaluate_3dhp(p3, g3, valid=valid).count == 10
    with pytest.raises(DataError, match="field joints"):
        evaluate_3dhp(np.zeros((2, 14, 3)), np.zeros((2, 14, 3)), root=None, joints=[0, 20])
    assert evaluate_3dhp(np.zeros((2, 14, 3)), np.zeros((2, 14, 3)), root=None, joints=None).pck == 100.0


def test_itop_map():
    gt = np.zeros((4, 15, 3))
    pred = gt.copy()
    pred[:2, 0, 2] = 0.12   # head wrong in 2 of 4 frames
    pred[:, 1, 0] = 0.0999  # neck right everywhere
    pred[0, 2, 1] = 0.10    # exactly 10 cm: wrong
    res = itop_map(pred, gt)
    assert res.per_joint["head"] == 50.0 and res.per_joint["neck"] == 100.0 and res.per_joint["right_shoulder"] == 75
    assert res.map == pytest.approx(100.0 * (60 - 3) / 60) and res.count == 60


def test_3d_validation():
    gt = np.zeros((3, 17, 3))
    bad = gt.copy()
    bad[2, 5, 1] = np.inf
    with pytest.raises(DataError, match=r"field pred: .*sample 2, joint 5"):
        mpjpe(bad, gt)
    with pytest.raises(DataError, match="field pred: shape .* does not match gt shape"):
        mpjpe(gt, np.zeros((3, 16, 3)))
    with pytest.raises(DataError, match="field actions"):
        evaluate_mpjpe(gt, gt, actions=["a"])
    m = np.ones((3, 17), bool)
    m[0, 6] = False
    with pytest.raises(DataError, match="root joint 6"):
        joint_errors(gt, gt, root=6, mask=m)


# ============================================================================================== segmentation
def test_segmentation_hand_example():
    target = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    cm = confusion_matrix(pred, target, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [0, 0, 1]])
    res = segmentation_metrics(cm, ["bg", "a", "b"])
    assert res.iou == {"bg": pytest.approx(50.0), "a": pytest.approx(200 / 3), "b": pytest.approx(100.0)}
    assert res.miou == pytest.approx((50 + 200 / 3 + 100) / 3)
    assert res.pixel_accuracy == pytest.approx(80.0) and res.count == 5
    assert res.mean_accuracy == pytest.approx((50 + 100 + 100) / 3)
    # ignore_index honoured: changing the prediction under the ignored pixel changes nothing.
    pred2 = pred.copy()
    pred2[1, 2] = 2
    np.testing.assert_array_equal(confusion_matrix(pred2, target, 3), cm)


def test_confusion_accumulator_batches_logits_and_errors():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 4, size=(3, 8, 8))
    target[0, :2] = 255
    logits = rng.normal(size=(3, 4, 8, 8))
    acc = ConfusionMatrix(4)
    acc.update(logits[:2], target[:2])
    acc.update(logits[2:].argmax(1), target[2:])
    np.testing.assert_array_equal(acc.matrix, confusion_matrix(logits.argmax(1), target, 4))
    assert acc.compute().count == 3 * 64 - 16
    absent = segmentation_metrics(np.diag([3, 2, 0]))
    assert np.isnan(absent.iou["2"]) and absent.miou == 100.0
    with pytest.raises(DataError, match="field target"):
        confusion_matrix(np.zeros((2, 2), int), np.full((2, 2), 7), 3)
    with pytest.raises(DataError, match="field pred"):
        confusion_matrix(np.full((2, 2), -1), np.zeros((2, 2), int), 3)
    with pytest.raises(DataError, match="field pred"):
        confusion_matrix(np.zeros((2, 3), int), np.zeros((2, 2), int), 3)


# ============================================================================================== re-id
def _reid_reference(dist, qid, gid, qcam, gcam, max_rank):
    """Straightforward per-query loop of the Market-1501 protocol."""
    cmcs, aps, inps = [], [], []
    for i in range(len(qid)):
        order = np.argsort(dist[i], kind="stable")
        kept = [j for j in order if not ((gid[j] == qid[i] and gcam[j] == qcam[i]) or gid[j] == -1)]
        hits = np.array([gid[j] == qid[i] for j in kept], dtype=float)
        if hits.sum() == 0:
            continue
        cmc = np.zeros(max_rank)
        cmc[int(np.argmax(hits)):] = 1.0
        cmcs.append(cmc)
        precisions = [hits[: k + 1].sum() / (k + 1) for k in range(len(hits)) if hits[k]]
        aps.append(np.mean(precisions))
        inps.append(hits.sum() / (np.flatnonzero(hits)[-1] + 1))
    return 100 * np.mean(cmcs, 0), 100 * np.mean(aps), 100 * np.mean(inps), len(cmcs)


def test_reid_matches_bruteforce_reference():
    rng = np.random.default_rng(7)
    qf, gf = rng.normal(size=(37, 8)), rng.normal(size=(120, 8))
    qid, gid = rng.integers(0, 12, 37), rng.integers(-1, 12, 120)
    qcam, gcam = rng.integers(0, 3, 37), rng.integers(0, 3, 120)
    dist = reid_distance(qf, gf)
    unit_q, unit_g = qf / np.linalg.norm(qf, axis=1, keepdims=True), gf / np.linalg.norm(gf, axis=1, keepdims=True)
    np.testing.assert_allclose(dist, np.linalg.norm(unit_q[:, None] - unit_g[None], axis=-1), atol=1e-6)
    dist[:, 5] = dist[:, 6]  # a tie, resolved by gallery order in both implementations
    res = evaluate_reid(dist, qid, gid, qcam, gcam, max_rank=20, block=8)
    cmc, mAP, mINP, n_valid = _reid_reference(dist, qid, gid, qcam, gcam, 20)
    np.testing.assert_allclose(res.cmc, cmc)
    assert res.mAP == pytest.approx(mAP) and res.mINP == pytest.approx(mINP)
    assert res.num_valid_queries == n_valid and res.num_skipped == 37 - n_valid
    assert res.rank1 == pytest.approx(cmc[0]) and res.rank10 == pytest.approx(cmc[9])


def test_reid_hand_example_same_camera_and_junk():
    # Query 0: id 1, camera 1. Query 1: id 3, camera 1, whose only match shares the camera -> skipped.
    dist = np.array([[0.1, 0.2, 0.3, 0.05, 0.5, 0.9],
                     [0.9, 0.8, 0.7, 0.6, 0.5, 0.1]])
    gid = np.array([1, 2, 1, -1, 1, 3])
    gcam = np.array([1, 2, 2, 2, 3, 1])
    res = evaluate_reid(dist, [1, 3], gid, [1, 1], gcam, max_rank=5)
    # Kept ranking for query 0: id2 (0.2), id1 (0.3), id1 (0.5), id3 (0.9) -> matches at ranks 2 and 3.
    assert res.num_valid_queries == 1 and res.num_skipped == 1
    assert res.rank1 == 0.0 and list(res.cmc) == [0.0, 100.0, 100.0, 100.0, 100.0]
    assert res.mAP == pytest.approx(100 * (1 / 2 + 2 / 3) / 2)
    assert res.mINP == pytest.approx(100 * 2 / 3)
    with pytest.raises(DataError, match="no query has a valid gallery match"):
        evaluate_reid(dist[1:], [3], gid, [1], gcam)
    with pytest.raises(DataError, match="field gallery_cams"):
        evaluate_reid(dist, [1, 3], gid, [1, 1], gcam[:5])


# ============================================================================================== attributes
def test_attribute_metrics_hand_example():
    labels = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0]])
    scores = np.array([[0.9, 0.2, 0.4], [0.1, 0.6, 0.8], [0.7, 0.9, 0.3]])
    res = attribute_metrics(scores, labels, attribute_names=["female", "hat", "bag"])
    assert res.label_mA == {"female": pytest.approx(100.0), "hat": pytest.approx(75.0), "bag": pytest.approx(75.0)}
    assert res.mA == pytest.approx(100 * 2.5 / 3)
    assert res.accuracy == pytest.approx(100 * 2 / 3)
    assert res.precision == pytest.approx(100 * 2.5 / 3) and res.recall == pytest.approx(100 * 2.5 / 3)
    assert res.f1 == pytest.approx(100 * 2.5 / 3) and res.count == 3
    with pytest.raises(DataError, match="field labels"):
        attribute_metrics(scores, labels * 2)
    with pytest.raises(DataError, match="field scores"):
        attribute_metrics(scores[:2], labels)


# ============================================================================================== CLI
def test_cli_pckh_and_mpjpe_write_json(tmp_path):
    from scipy.io import savemat
    from typer.testing import CliRunner

    from humanvision.cli import app

    runner = CliRunner()
    pred, gt, hb, vis = _mpii_case()
    mat = tmp_path / "mpii_gt_val.mat"
    savemat(mat, {"jnt_missing": (~vis).T.astype(np.uint8), "pos_gt_src": gt.transpose(1, 2, 0),
                  "headboxes_src": hb.transpose(1, 2, 0)})
    np.save(tmp_path / "pred.npy", pred - 1.0)  # 0-based predictions
    out = tmp_path / "pckh.json"
    r = runner.invoke(app, ["evaluate", "pckh", "--gt", str(mat), "--results", str(tmp_path / "pred.npy"),
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["mean"] == pytest.approx(100 * 25 / 27) and data["groups"]["Head"] == 50.0
    assert data["num_samples"] == 2 and "Shoulder" in r.output

    (tmp_path / "pred.json").write_text(json.dumps({"preds": pred.tolist()}))
    r = runner.invoke(app, ["evaluate", "pckh", "--gt", str(mat), "--results", str(tmp_path / "pred.json"),
                            "--one-based", "--thr", "0.1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["mean"] == pytest.approx(100 * 23 / 27)

    np.save(tmp_path / "short.npy", pred[:1])
    r = runner.invoke(app, ["evaluate", "pckh", "--gt", str(mat), "--results", str(tmp_path / "short.npy")])
    assert r.exit_code == 1 and "short.npy" in r.output

    g3 = np.random.default_rng(0).normal(size=(30, 17, 3)) * 300.0
    p3 = g3.copy()
    p3[:5, :, 0] += 10.0
    p3[5:20, :, 0] += 20.0
    p3[20:, :, 0] += 40.0
    np.save(tmp_path / "gt3.npy", g3)
    np.save(tmp_path / "pred3.npy", p3)
    (tmp_path / "actions.json").write_text(json.dumps(["Directions-1"] * 5 + ["Directions-2"] * 15 + ["Eat 1"] * 10))
    out3 = tmp_path / "mpjpe.json"
    r = runner.invoke(app, ["evaluate", "mpjpe", "--gt", str(tmp_path / "gt3.npy"), "--pred",
                            str(tmp_path / "pred3.npy"), "--absolute", "--actions", str(tmp_path / "actions.json"),
                            "--skeleton", "h36m17", "--out", str(out3)])
    assert r.exit_code == 0, r.output
    d3 = json.loads(out3.read_text())
    assert d3["mpjpe"] == pytest.approx(25.0) and d3["per_action"]["Directions"]["count"] == 20
    assert d3["count"] == 30 and "pelvis" in d3["per_joint"]
    r = runner.invoke(app, ["evaluate", "mpjpe", "--gt", str(tmp_path / "gt3.npy"), "--pred",
                            str(tmp_path / "pred3.npy"), "--procrustes", "--out", str(out3)])
    assert r.exit_code == 0, r.output
    assert json.loads(out3.read_text())["mpjpe"] == pytest.approx(0.0, abs=1e-9)


def test_cli_mpjpe_skeleton_order_sets_and_states_the_root(tmp_path):
    from typer.testing import CliRunner

    from humanvision.cli import app
    from humanvision.skeletons import convert

    runner = CliRunner()
    env = {"COLUMNS": "250", "NO_COLOR": "1"}
    rng = np.random.default_rng(11)
    g_lt = rng.normal(size=(8, 17, 3)) * 300.0
    p_lt = g_lt + rng.normal(size=g_lt.shape) * 20.0
    p_lt[:, 6] += 50.0  # a pelvis error: moves every joint of a pelvis-relative pose
    for order, (g, p) in {"lt": (g_lt, p_lt), "vp": (convert(g_lt, "h36m17", "h36m17_vp"),
                                                      convert(p_lt, "h36m17", "h36m17_vp"))}.items():
        np.save(tmp_path / f"gt_{order}.npy", g)
        np.save(tmp_path / f"pred_{order}.npy", p)
    want = evaluate_mpjpe(p_lt, g_lt, root=6).mpjpe

    def run(order, *extra):
        out = tmp_path / f"{order}.json"
        r = runner.invoke(app, ["evaluate", "mpjpe", "--gt", str(tmp_path / f"gt_{order}.npy"), "--pred",
                                str(tmp_path / f"pred_{order}.npy"), "--out", str(out), *extra], env=env)
        assert r.exit_code == 0, r.output
        return json.loads(out.read_text()), " ".join(r.output.split())

    d, text = run("lt")  # default: learnable-triangulation order, pelvis at 6
    assert (d["skeleton"], d["root"], d["root_joint"]) == ("h36m17", 6, "pelvis")
    assert d["mpjpe"] == pytest.approx(want) and "MPJPE root-relative (root 6 = pelvis)" in text
    d, text = run("vp", "--skeleton", "h36m17_vp")
    assert (d["skeleton"], d["root"], d["root_joint"]) == ("h36m17_vp", 0, "pelvis")
    assert d["mpjpe"] == pytest.approx(want) and "MPJPE root-relative (root 0 = pelvis)" in text
    d, _ = run("vp")  # a VideoPose3D file in the default order: root 6 is its left ankle, another number
    assert d["root_joint"] == "pelvis" and d["mpjpe"] != pytest.approx(want)
    d, text = run("vp", "--skeleton", "h36m17_mmpose", "--root", "3")
    assert (d["root"], d["root_joint"]) == (3, "right_ankle") and "(root 3 = right_ankle)" in text

    r = runner.invoke(app, ["evaluate", "mpjpe", "--help"], env=env)
    help_text = " ".join(r.output.replace("│", " ").split())
    assert "default h36m17 is the learnable-triangulation order (pelvis at index 6)" in help_text
    assert "h36m17_vp" in help_text
