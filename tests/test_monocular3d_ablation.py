"""benchmarks/monocular3d_ablation.py (issue 12: Zhou et al.'s two claims in miniature): its metrics (bone-length
asymmetry, Protocol-#1 scaling, PCK) against plain reference implementations, the 3D subset selection and tiling,
the CPU-sized synthetic recipes, and one tiny end-to-end arm pair (equal steps; arm A sees no 2D sample)."""

from __future__ import annotations

import argparse
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from humanvision.errors import ConfigError
from humanvision.methods import monocular3d as m3d
from humanvision.metrics.pose3d import HG_H36M17_EDGES
from humanvision.skeletons import get_skeleton

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("monocular3d_ablation", ROOT / "benchmarks/monocular3d_ablation.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

H36M = get_skeleton("h36m17_vp").joints


def random_poses(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 300.0, (n, 17, 3))


# ---------------------------------------------------------------------------------------------------- metrics
def test_paired_bones_are_right_left_mirrors_of_the_geometry_loss_bones():
    for right, left in bench.PAIRED_BONES:
        r, le = [H36M[j] for j in right], [H36M[j] for j in left]
        assert [n.replace("right_", "left_") for n in r] == le and any(n.startswith("right_") for n in r)
    # the same bones as the geometry loss's groups, mapped MPII-16 -> H36M-17
    to_h36m = {mpii: h for h, mpii in enumerate(m3d.MPII16_TO_H36M17) if h not in (7, 9, 10)}
    geometry = {frozenset(to_h36m[j] for j in bone) for bone in m3d.GEOMETRY_BONES}
    assert geometry == {frozenset(b) for pair in bench.PAIRED_BONES for b in pair}


def test_bone_asymmetry_against_a_loop():
    poses = random_poses(5)
    want = []
    for p in poses:
        diffs = [abs(np.linalg.norm(p[r[0]] - p[r[1]]) - np.linalg.norm(p[le[0]] - p[le[1]]))
                 for r, le in bench.PAIRED_BONES]
        want.append(sum(diffs) / len(diffs))
    np.testing.assert_allclose(bench.bone_asymmetry(poses), want, rtol=1e-12)


def test_bone_asymmetry_is_zero_for_a_mirrored_pose_and_sees_one_longer_forearm():
    p = random_poses(1, 3)[0]
    flip = list(get_skeleton("h36m17_vp").flip_index)
    sym = p.copy()
    sym[flip] = p * [-1.0, 1.0, 1.0]  # the mirror image with left and right swapped ...
    sym = (sym + p) / 2  # ... averaged with the pose: every right bone's mirror is its left bone
    sym[[0, 7, 8, 9, 10], 0] = 0.0
    assert bench.bone_asymmetry(sym[None])[0] == pytest.approx(0.0, abs=1e-9)
    longer = sym.copy()
    d = longer[16] - longer[15]  # right wrist 30 mm further along the right forearm
    longer[16] += 30.0 * d / np.linalg.norm(d)
    assert bench.bone_asymmetry(longer[None])[0] == pytest.approx(30.0 / 6)


def test_scale_to_ground_truth_matches_the_bone_total_and_removes_the_root():
    pred, gt = random_poses(4, 1) + 50.0, random_poses(4, 2)
    out = bench.scale_to_ground_truth(pred, gt)
    e = np.asarray(HG_H36M17_EDGES)

    def total(x):
        return np.linalg.norm(x[:, e[:, 0]] - x[:, e[:, 1]], axis=-1).sum(1)

    np.testing.assert_allclose(out[:, 0], 0.0, atol=1e-9)
    np.testing.assert_allclose(total(out), total(gt), rtol=1e-12)
    k = total(gt) / total(pred - pred[:, :1])
    np.testing.assert_allclose(out, (pred - pred[:, :1]) * k[:, None, None], rtol=1e-12)


def test_pck_against_a_loop():
    rng = np.random.default_rng(0)
    pred, gt = rng.uniform(0, 16, (6, 16, 2)), rng.uniform(0, 16, (6, 16, 2))
    pred[:, :8] = gt[:, :8] + rng.normal(0, 0.5, (6, 8, 2))
    vis = (rng.random((6, 16)) > 0.2).astype(np.float32)
    for thr, joints in ((0.8, bench.ACC_JOINTS), (1.6, bench.ACC_JOINTS), (1.6, None)):
        hits = total = 0
        for n in range(6):
            for j in (joints if joints is not None else range(16)):
                if vis[n, j] > 0:
                    total += 1
                    hits += np.hypot(*(pred[n, j] - gt[n, j])) <= thr
        assert bench.pck(pred, gt, vis, thr, joints) == pytest.approx(100.0 * hits / total)
    assert math.isnan(bench.pck(pred, gt, np.zeros((6, 16)), 1.0))


# ----------------------------------------------------------------------------------------------- the subset
def test_select_subset_takes_distinct_frames_first():
    frames = np.repeat(np.arange(10), 4)  # 10 frames x 4 cameras
    idx = bench.select_subset(frames, 7, seed=3)
    assert len(idx) == 7 and np.all(np.diff(idx) > 0) and len(np.unique(frames[idx])) == 7
    np.testing.assert_array_equal(idx, bench.select_subset(frames, 7, seed=3))
    assert not np.array_equal(idx, bench.select_subset(frames, 7, seed=4))
    idx = bench.select_subset(frames, 25, seed=0)  # more crops than frames: 2 or 3 cameras of every frame
    counts = np.bincount(frames[idx], minlength=10)
    assert len(np.unique(idx)) == 25 and counts.min() == 2 and counts.max() == 3
    np.testing.assert_array_equal(bench.select_subset(frames, 40), np.arange(40))
    for n in (0, 41):
        with pytest.raises(ConfigError, match="--train-3d"):
            bench.select_subset(frames, n)


def test_tile_repeats_every_index_evenly():
    idx = np.array([3, 8, 11, 20, 31])
    out = bench.tile(idx, 23, seed=1)
    counts = {int(i): int((out == i).sum()) for i in idx}
    assert len(out) == 23 and set(out.tolist()) == set(idx.tolist()) and sorted(counts.values()) == [4, 4, 5, 5, 5]
    np.testing.assert_array_equal(out[:5], out[5:10])  # one permutation, repeated


# ------------------------------------------------------------------------------------------------- recipes
@pytest.mark.parametrize("kind", list(bench.RECIPES))
def test_synthetic_recipes_load(kind):
    path = ROOT / bench.RECIPES[kind]
    recipe = m3d.load_recipe(path, unchecked=("data.", "init_weights"))
    want = {"stage1": ("2d", 0.0, 0.0), "fusion": ("2d3d", 0.1, 0.0), "geometry": ("geometry", 0.1, 0.01)}[kind]
    assert (recipe.stage, recipe.loss.weight_3d, recipe.loss.weight_var) == want
    assert recipe.model.name == "resnet_depth_mini" and tuple(recipe.model.input_size) == (64, 64)
    assert recipe.train.precision == "fp32" and recipe.train.num_workers == 0 and recipe.train.batch_size == 32
    assert "synthetic_zhou3d_mpii" in str(recipe.data.mpii_train)
    if kind != "stage1":
        assert recipe.data.h36m_train_subjects == ("S1",) and recipe.data.h36m_val_subjects == ("S2", "S3")


# --------------------------------------------------------------------------------------------- end to end
def test_arms_train_equal_steps_and_evaluate(tmp_path):
    """Two tiny arms from one initialisation: exactly the asked steps each; arm A (3D only) never computes the
    geometry loss (no 2D sample), arm B does; the held-out metrics are finite over every S2/S3 crop."""
    from safetensors.torch import save_file

    args = argparse.Namespace(images_2d=6, frames_3d=6, world_seed_2d=1, world_seed_3d=0, motion_2d="random",
                              workers=1, data_dir=tmp_path / "data", val_every=1, train_3d=4, subset_seed=0)
    paths = bench.write_data(args)
    assert paths["written"] == [True, True] and bench.write_data(args)["written"] == [False, False]
    common = [*bench.data_overrides(paths, args), "train.batch_size=4", "train.log_every=1"]
    data = bench.build_data(bench.load("fusion", common, unchecked=("init_weights",)), args)
    assert data["counts"]["crops_3d_pool"] == 8 and data["counts"]["crops_3d_train"] == 4  # S1: 2 frames x 4 cams
    assert data["counts"]["crops_val"] == 16 and data["counts"]["frames_3d_train"] == 2
    torch.manual_seed(0)
    init = tmp_path / "init.safetensors"
    method = m3d.build_method(bench.load("stage1", common))
    save_file({k: v.contiguous() for k, v in method.state_dict().items()}, str(init))
    results = {}
    for arm, use_2d in (("A", False), ("B", True)):
        recipe = bench.load("fusion", [*common, f"init_weights={init}", f"train.output_dir={tmp_path / arm}"])
        method, stats = bench.train(recipe, data, use_2d=use_2d, steps=3, fraction_3d=0.5, seed=0)
        assert stats["steps"] == 3 and stats["cpu_minutes"] > 0
        results[arm] = stats
    assert results["A"]["train_loss_geometry"] == 0.0 and results["B"]["train_loss_geometry"] > 0.0
    metrics = bench.evaluate(method, data["val"], batch_size=8)
    assert metrics["count"] == 16
    assert all(math.isfinite(metrics[k]) for k in bench.METRICS)
    assert metrics["asymmetry_gt_mm"] < 1e-3  # the synthetic bodies are symmetric
