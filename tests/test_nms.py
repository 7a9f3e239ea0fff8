"""OKS-NMS, soft-OKS-NMS and pose rescoring (pose2d.md §4.1, test ideas 10 and 11)."""

from __future__ import annotations

import numpy as np
import pytest

from humanvision.metrics.nms import (
    keypoint_extent_areas,
    oks_nms,
    oks_nms_by_image,
    pose_oks,
    rescore_poses,
    soft_oks_nms,
)
from humanvision.skeletons import get_skeleton

SIG = get_skeleton("coco17").sigmas_array


def _pose(rng, n=1):
    return np.concatenate([rng.uniform(0, 200, (n, 17, 2)), rng.uniform(0.3, 1, (n, 17, 1))], -1)


def _shift_for_oks(target: float, area: float) -> float:
    """Shift of every joint giving a pair OKS ``target`` when all joints use sigma ``SIG[0]``."""
    return float(np.sqrt(-np.log(target) * 2 * area * (2 * SIG[0]) ** 2))


def test_rescore():
    s = np.full((2, 17), 0.1)
    s[0, :2] = [0.9, 0.5]
    np.testing.assert_allclose(rescore_poses(np.array([0.8, 0.6]), s), [0.8 * 0.7, 0.0])
    assert rescore_poses(1.0, np.array([0.2, 0.3, 0.25])) == pytest.approx(0.275)  # strictly above thr


def test_pose_oks_matches_formula():
    rng = np.random.default_rng(0)
    kp = _pose(rng, 3)
    areas = np.array([900.0, 1600.0, 2500.0])
    oks = pose_oks(kp, areas)
    i, j = 0, 2
    d2 = ((kp[i, :, :2] - kp[j, :, :2]) ** 2).sum(-1)
    want = np.mean(np.exp(-d2 / (2 * (2 * SIG) ** 2 * ((areas[i] + areas[j]) / 2 + np.spacing(1)))))
    np.testing.assert_allclose(oks[i, j], want, rtol=1e-12)
    np.testing.assert_allclose(oks, oks.T)
    np.testing.assert_array_equal(np.diag(oks), 1.0)
    # vis_thr keeps only joints confident in both poses
    kp2 = kp.copy()
    kp2[1, :10, 2] = 0.0
    part = pose_oks(kp2, areas, vis_thr=0.2)
    use = np.arange(10, 17)
    d2 = ((kp[0, use, :2] - kp[1, use, :2]) ** 2).sum(-1)
    want = np.mean(np.exp(-d2 / (2 * (2 * SIG[use]) ** 2 * 1250.0)))
    np.testing.assert_allclose(part[0, 1], want, rtol=1e-9)
    assert keypoint_extent_areas(np.array([[[0, 0], [4, 3]]]))[0] == 12.0


def test_oks_nms_identical_and_threshold():
    rng = np.random.default_rng(1)
    a = _pose(rng)[0]
    area = 4000.0
    # identical poses: only the higher-scoring one survives
    keep = oks_nms(np.stack([a, a]), np.array([0.3, 0.8]), np.array([area, area]))
    np.testing.assert_array_equal(keep, [1])
    # a copy shifted so that OKS is just under / just over 0.9
    for target, n_kept in ((0.89, 2), (0.91, 1)):
        b = a.copy()
        b[:, 0] += _shift_for_oks(target, area)
        kp = np.stack([a, b])
        kp_oks = pose_oks(kp, np.array([area, area]), sigmas=np.full(17, SIG[0]))[0, 1]
        assert kp_oks == pytest.approx(target)
        keep = oks_nms(kp, np.array([0.9, 0.5]), np.array([area, area]), sigmas=np.full(17, SIG[0]))
        assert len(keep) == n_kept and keep[0] == 0


def test_oks_nms_greedy_chain_and_order_independence():
    rng = np.random.default_rng(2)
    base = _pose(rng)[0]
    area = 4000.0
    sig = np.full(17, SIG[0])
    step = _shift_for_oks(0.95, area)
    # A -- B -- C on a line: OKS(A,B) = OKS(B,C) > 0.9, OKS(A,C) < 0.9. Greedy from A suppresses B, keeps C.
    kp = np.stack([base, base + [step, 0, 0], base + [2 * step, 0, 0], _pose(rng)[0]])
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    areas = np.full(4, area)
    np.testing.assert_array_equal(oks_nms(kp, scores, areas, sigmas=sig), [0, 2, 3])
    perm = rng.permutation(4)
    kept = oks_nms(kp[perm], scores[perm], areas[perm], sigmas=sig)
    np.testing.assert_array_equal(np.sort(perm[kept]), [0, 2, 3])
    # by image: groups do not interact
    ids = np.array([7, 7, 3, 3])
    two = np.stack([base, base, base, base])
    np.testing.assert_array_equal(oks_nms_by_image(ids, two, scores, areas), [0, 2])
    assert len(oks_nms(np.zeros((0, 17, 3)), np.zeros(0))) == 0


def test_soft_oks_nms():
    rng = np.random.default_rng(3)
    a = _pose(rng)[0]
    far = _pose(rng)[0] + 500
    kp = np.stack([a, a, far])
    scores = np.array([0.9, 0.8, 0.5])
    areas = np.full(3, 3000.0)
    keep, new = soft_oks_nms(kp, scores, areas, thr=0.9)
    # the duplicate is decayed by exp(-1/0.9) and falls behind the far pose
    np.testing.assert_array_equal(keep, [0, 2, 1])
    np.testing.assert_allclose(new, [0.9, 0.5, 0.8 * np.exp(-1 / 0.9)], rtol=1e-6)
    keep, new = soft_oks_nms(kp, scores, areas, thr=0.9, method="linear")
    np.testing.assert_array_equal(keep, [0, 2, 1])
    np.testing.assert_allclose(new[2], 0.0, atol=1e-12)  # identical pose: 1 - oks = 0
    keep, _ = soft_oks_nms(kp, scores, areas, max_dets=2)
    assert len(keep) == 2
    with pytest.raises(ValueError, match="method"):
        soft_oks_nms(kp, scores, areas, method="hard")
