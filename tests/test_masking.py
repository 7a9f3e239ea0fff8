"""HAP pose-guided masking (pretraining.md B.4): properties of :mod:`humanvision.data.masking` and agreement with a
plain-loop reference written here from the B.4 text (per-cell loops, sets, shuffles, a sort with random tie keys).

The block generator's draw order is part of its documented contract (four uniforms per attempt: area, aspect, top,
left), so the reference reproduces it bit for bit from the same seed; the part override and the final sort are
compared by distribution, with independent generators.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from humanvision.data.masking import (
    COCO_PARTS,
    block_mask,
    mask_stats,
    part_cells,
    pose_guided_mask,
    pose_guided_noise,
    random_mask,
)
from humanvision.errors import ConfigError, DataError

# B.4 step 3, written out again from the text
PARTS_B4 = [
    ((0, 1), (0, 2), (1, 2), (1, 3), (2, 4)),  # face
    ((5, 7), (7, 9)),  # left arm
    ((6, 8), (8, 10)),  # right arm
    ((11, 13), (13, 15)),  # left leg
    ((12, 14), (14, 16)),  # right leg
    ((6, 11), (5, 12)),  # upper body
]

# a standing person in a 128 x 256 crop (COCO-17 order: nose, eyes, ears, shoulders, elbows, wrists, hips, knees,
# ankles)
STANDING = np.array([[64, 30], [68, 26], [60, 26], [72, 28], [56, 28], [80, 60], [48, 60], [88, 100], [40, 100],
                     [90, 135], [38, 135], [74, 130], [54, 130], [76, 185], [52, 185], [78, 240], [50, 240]], float)
OUT = -10000.0


def pose(xy: np.ndarray, out: list[int] = ()) -> np.ndarray:
    kps = np.concatenate([np.asarray(xy, float), np.full((len(xy), 1), 0.9)], 1)
    kps[list(out)] = OUT
    return kps


POSES = [
    pose(STANDING),
    pose(STANDING, out=[13, 14, 15, 16]),  # legs cut by the crop
    pose(STANDING[:, ::-1] * [0.5, 2.0]),  # lying across the crop
    pose(STANDING * [1.4, 1.0] - [20, 0], out=[3, 4, 9]),  # wide, some joints out of the crop
]

# every part spans the whole grid: in each part one limb runs from the top-left to the bottom-right corner
FULL_GRID = np.zeros((17, 3))
FULL_GRID[[1, 7, 8, 11, 13, 14], :2] = (127, 255)


# ------------------------------------------------------------------------------------------- plain-loop reference
def ref_block_mask(uniform, H, W, num_masking, min_patches, max_patches, aspect=(0.3, 1 / 0.3), log=None):
    """BEiT MaskingGenerator from B.4: a list-of-lists mask; ``log`` collects every accepted block."""
    mask = [[False] * W for _ in range(H)]
    count = 0
    while count < num_masking:
        remaining = min(num_masking - count, max_patches)
        delta = 0
        for _attempt in range(10):
            area = min_patches + (remaining - min_patches) * uniform()  # random.uniform(min_patches, remaining)
            ar = math.exp(math.log(aspect[0]) + (math.log(aspect[1]) - math.log(aspect[0])) * uniform())
            u_top, u_left = uniform(), uniform()
            h, w = round(math.sqrt(area * ar)), round(math.sqrt(area / ar))
            if w < W and h < H:
                top, left = int(u_top * (H - h + 1)), int(u_left * (W - w + 1))  # randint(0, H - h) etc.
                already = sum(mask[i][j] for i in range(top, top + h) for j in range(left, left + w))
                if 0 < h * w - already <= remaining:
                    for i in range(top, top + h):
                        for j in range(left, left + w):
                            if not mask[i][j]:
                                mask[i][j] = True
                                delta += 1
                    if log is not None:
                        log.append({"area": area, "h": h, "w": w, "new": delta, "remaining": remaining})
            if delta > 0:
                break
        if delta == 0:
            break
        count += delta
    return mask


def ref_part_cells(kps, limbs, H=16, W=8, patch=16):
    cells = set()
    for a, b in limbs:
        xa, ya, xb, yb = kps[a][0], kps[a][1], kps[b][0], kps[b][1]
        if xa < 0 or ya < 0 or xb < 0 or yb < 0:
            continue
        cxa, cya, cxb, cyb = int(xa // patch), int(ya // patch), int(xb // patch), int(yb // patch)
        for cy in range(min(cya, cyb), max(cya, cyb) + 1):
            for cx in range(min(cxa, cxb), max(cxa, cxb) + 1):
                if 0 <= cx < W and 0 <= cy < H:
                    cells.add(cy * W + cx)
    return cells


def ref_noise(kps, rng, H=16, W=8, patch=16, mask_ratio=0.5, num_parts=6):
    """Integer noise of B.4 steps 2-3 (no jitter)."""
    L = H * W
    num_masking = L - int(L * (1 - mask_ratio))
    block = ref_block_mask(rng.random, H, W, num_masking, 12, num_masking)
    noise = [2 if block[y][x] else 0 for y in range(H) for x in range(W)]
    if kps is None:
        return noise
    parts = list(PARTS_B4)
    rng.shuffle(parts)
    n_parts = int(rng.integers(0, num_parts, endpoint=True))
    priority, used = 100, 0
    for part in parts:
        if used >= n_parts:
            break
        cells = sorted(ref_part_cells(kps, part, H, W, patch))
        if not cells:
            continue
        rng.shuffle(cells)
        k = math.floor(len(cells) * rng.uniform(0, 0.3))
        for c in cells[:k]:
            noise[c] = priority
        priority -= 1
        used += 1
    return noise


def ref_mask(noise, rng, len_keep):
    keys = rng.random(len(noise))
    order = sorted(range(len(noise)), key=lambda i: (noise[i], keys[i]))  # ascending, random within a value
    mask = [True] * len(noise)
    for i in order[:len_keep]:
        mask[i] = False
    return mask


def classes(noise: np.ndarray) -> np.ndarray:
    """0 = untouched, 1 = block, 2 = body part."""
    v = np.floor(noise)
    return np.where(v >= 95, 2, np.where(v == 2, 1, 0))


# ----------------------------------------------------------------------------------------------------- the tests
def test_coco_parts_are_those_of_b4():
    assert list(COCO_PARTS) == ["face", "left_arm", "right_arm", "left_leg", "right_leg", "upper_body"]
    assert list(COCO_PARTS.values()) == PARTS_B4


def test_exact_masked_count_default():
    for seed in range(300):
        rng = np.random.default_rng(seed)
        m = pose_guided_mask(POSES[seed % 4], rng)
        assert m.shape == (128,) and m.dtype == bool
        assert m.sum() == 64


@pytest.mark.parametrize("grid, patch, ratio", [((16, 8), 16, 0.75), ((16, 8), 16, 0.3), ((14, 14), 16, 0.75),
                                                ((8, 4), 32, 0.5), ((16, 8), 16, 0.0), ((16, 8), 16, 1.0),
                                                ((16, 8), 16, 0.9)])
def test_masked_count_other_ratios_and_grids(grid, patch, ratio):
    H, W = grid
    L = H * W
    scale = np.array([W * patch / 128, H * patch / 256])
    for seed in range(40):
        rng = np.random.default_rng(seed)
        kps = POSES[seed % 4].copy()
        kps[:, :2] = np.where(kps[:, :2] >= 0, kps[:, :2] * scale, OUT)
        for k in (kps, None):
            m = pose_guided_mask(k, rng, grid=grid, patch_size=patch, mask_ratio=ratio)
            assert m.shape == (L,) and m.sum() == L - int(L * (1 - ratio))
        assert random_mask(L, rng, ratio).sum() == L - int(L * (1 - ratio))


@pytest.mark.parametrize("grid, num, min_p, max_p", [((16, 8), 64, 12, 64), ((16, 8), 64, 12, None),
                                                     ((14, 14), 98, 16, 40), ((16, 8), 100, 4, 20),
                                                     ((16, 8), 7, 12, 7), ((6, 5), 30, 1, None)])
def test_block_mask_equals_the_loop_reference_and_respects_its_rules(grid, num, min_p, max_p):
    H, W = grid
    cap = num if max_p is None else max_p
    for seed in range(150):
        m = block_mask(np.random.default_rng(seed), grid, num, min_p, max_p)
        log: list[dict] = []
        ref = ref_block_mask(np.random.default_rng(seed).random, H, W, num, min_p, cap, log=log)
        assert m.shape == grid and m.dtype == bool
        assert (m == np.array(ref)).all(), f"seed {seed}"
        assert m.sum() <= num  # never exceeds num_masking
        assert m.sum() == sum(b["new"] for b in log)
        for b in log:
            assert b["w"] < W and b["h"] < H  # strict
            assert 0 < b["new"] <= min(b["remaining"], cap)
            # target area ~ U(min_patches, remaining): at least min_patches unless fewer remain
            assert min(min_p, b["remaining"]) <= b["area"] <= max(min_p, b["remaining"])


def test_block_mask_strict_size_limits():
    # w < W and h < H are strict: a one-row or one-column grid can never hold a block
    for seed in range(50):
        assert not block_mask(np.random.default_rng(seed), (1, 8), 4, min_patches=1).any()
        assert not block_mask(np.random.default_rng(seed), (8, 1), 4, min_patches=1).any()
        # on a 2 x 2 grid every block is a single cell
        assert block_mask(np.random.default_rng(seed), (2, 2), 3, min_patches=1).sum() <= 3


def test_block_mask_stops_when_a_call_adds_nothing():
    # square blocks of area 3 are 2 x 2 = 4 > 3 cells: no attempt is ever accepted, the first call returns 0
    assert not block_mask(np.random.default_rng(0), (16, 8), 3, min_patches=3, aspect=(1.0, 1.0)).any()
    counts = [block_mask(np.random.default_rng(s)).sum() for s in range(400)]
    assert 0.5 < np.mean(np.array(counts) == 64) < 1.0  # mostly 64, sometimes stuck below


def test_part_cells_hand_computed():
    kps = np.full((17, 3), OUT)
    kps[5, :2], kps[7, :2] = (20, 40), (60, 90)  # cells (x=1, y=2) and (x=3, y=5)
    expected = [17, 18, 19, 25, 26, 27, 33, 34, 35, 41, 42, 43]  # y * 8 + x for y 2..5, x 1..3
    assert part_cells(kps, COCO_PARTS["left_arm"]).tolist() == expected
    assert part_cells(kps, [(7, 5)]).tolist() == expected  # order of the ends does not matter
    kps[9, :2] = (20, 10)  # wrist at cell (1, 0): adds x 1..3 of y 0..5
    assert part_cells(kps, COCO_PARTS["left_arm"]).tolist() == [1, 2, 3, 9, 10, 11] + expected
    # the right and bottom borders land in the last column / row; a rectangle beyond the grid is empty
    kps[0, :2], kps[1, :2] = (128.0, 256.0), (115.0, 241.0)
    assert part_cells(kps, [(0, 1)]).tolist() == [127]
    kps[0, :2], kps[1, :2] = (140.0, 10.0), (150.0, 20.0)
    assert part_cells(kps, [(0, 1)]).tolist() == []
    # another grid: 14 x 14 with 16 px patches, cell id y * 14 + x
    kps[0, :2], kps[1, :2] = (33.0, 50.0), (40.0, 20.0)  # cells (2, 3) and (2, 1)
    assert part_cells(kps, [(0, 1)], grid=(14, 14)).tolist() == [16, 30, 44]


def test_out_of_bounds_keypoints_skip_only_their_limbs():
    kps = pose(STANDING)
    full = part_cells(kps, COCO_PARTS["left_arm"]).tolist()
    upper = sorted(ref_part_cells(kps, [(5, 7)]))
    assert set(upper) < set(full)
    for bad in ((OUT, OUT), (-1.0, 135.0), (90.0, -0.5)):  # any negative coordinate
        k = kps.copy()
        k[9, :2] = bad
        assert part_cells(k, COCO_PARTS["left_arm"]).tolist() == upper
    k = kps.copy()
    k[7, 0] = OUT  # the elbow is in both limbs: the part is empty
    assert part_cells(k, COCO_PARTS["left_arm"]).size == 0
    assert part_cells(k, COCO_PARTS["right_arm"]).tolist() == part_cells(kps, COCO_PARTS["right_arm"]).tolist()
    # in the full rule: part patches only ever fall inside the rectangles of valid limbs
    k = pose(STANDING, out=[7, 13, 16])
    allowed = set().union(*(ref_part_cells(k, part) for part in PARTS_B4))
    assert allowed == set().union(*(part_cells(k, part).tolist() for part in COCO_PARTS.values()))
    for seed in range(200):
        cls = classes(pose_guided_noise(k, np.random.default_rng(seed)))
        assert set(np.flatnonzero(cls == 2).tolist()) <= allowed


@pytest.mark.parametrize("seed", range(4))
def test_part_cells_equal_the_loop_reference(seed):
    rng = np.random.default_rng(100 + seed)
    for _ in range(100):
        kps = np.c_[rng.uniform(-60, 180, 17), rng.uniform(-60, 300, 17), rng.random(17)]
        for part in PARTS_B4:
            assert part_cells(kps, part).tolist() == sorted(ref_part_cells(kps, part))


def test_priority_order_parts_then_blocks_then_rest():
    seen = {"parts_all_masked": 0, "blocks_partly_kept": 0, "fill_masked": 0}
    for seed in range(400):
        rng = np.random.default_rng(seed)
        kps = POSES[seed % 4].copy()
        kps[:, :2] += np.where(kps[:, :2] >= 0, rng.normal(0, 6, (17, 2)), 0)
        noise = pose_guided_noise(kps, np.random.default_rng(seed))
        mask = pose_guided_mask(kps, np.random.default_rng(seed))
        v = np.floor(noise)
        assert set(np.unique(v).tolist()) <= {0, 2, 95, 96, 97, 98, 99, 100}
        assert (noise - v < 0.5).all()
        # the mask is exactly the 64 largest noise values
        assert set(np.flatnonzero(mask).tolist()) == set(np.argsort(-noise)[:64].tolist())
        cls = classes(noise)
        assert cls[mask].min() >= cls[~mask].max()  # parts before blocks before the rest
        part = cls == 2
        if part.any() and (part & ~mask).any():  # among parts, the first used (highest priority) goes first
            assert v[part & mask].min() >= v[part & ~mask].max()
        n_part, n_block = part.sum(), (cls == 1).sum()
        if n_part <= 64:
            assert mask[part].all()
        if n_block:
            assert mask[cls == 1].all() == (n_part + n_block <= 64)
        seen["parts_all_masked"] += bool(part.any() and mask[part].all())
        seen["blocks_partly_kept"] += bool(n_part + n_block > 64)
        seen["fill_masked"] += bool((mask & (cls == 0)).any())
    assert all(n > 0 for n in seen.values()), seen  # every case of B.4 step 4 occurred


def test_number_of_used_parts_ranges_from_0_to_6():
    # every part spans the whole grid, so the last used part's priority 100 - (n_parts - 1) is never overwritten
    # and shows how many parts were used
    kps = FULL_GRID
    for part in COCO_PARTS.values():
        assert part_cells(kps, part).size == 128
    depth = []
    for seed in range(1400):
        v = np.floor(pose_guided_noise(kps, np.random.default_rng(seed)))
        depth.append(0 if v.max() < 95 else int(101 - v[v >= 95].min()))
    freq = np.bincount(depth, minlength=8) / len(depth)
    assert freq[7:].sum() == 0
    assert (freq[:7] > 0).all(), freq  # 0..6 parts, 0 included (randint(0, 6) is inclusive)
    assert 0.11 < freq[0] < 0.20 and 0.10 < freq[6] < 0.18, freq  # ~1/7 each


def test_a_part_with_cells_counts_as_used_even_if_it_takes_none():
    # face: one cell (0, 0), so floor(1 * U(0, 0.3)) = 0 cells are ever taken; left leg: the whole grid
    kps = np.full((17, 3), OUT)
    kps[0, :2], kps[1, :2] = (3, 3), (10, 12)
    kps[11, :2], kps[13, :2] = (0, 0), (127, 255)
    values = []
    for seed in range(1500):
        noise = pose_guided_noise(kps, np.random.default_rng(seed))
        v = np.floor(noise)
        assert set(np.unique(v[v >= 95]).tolist()) <= {99, 100}
        values.append(v.max())
    values = np.array(values)
    # leg first (1/2) and n_parts >= 1 (6/7) -> 100; face first and n_parts >= 2 (5/7) -> 99; k > 0 w.p. 1 - 1/38.4
    p_take = 1 - 1 / 38.4
    assert abs(np.mean(values == 100) - 0.5 * 6 / 7 * p_take) < 0.04
    assert abs(np.mean(values == 99) - 0.5 * 5 / 7 * p_take) < 0.04


def test_keypoints_none_is_block_mask_only():
    for seed in range(100):
        noise = pose_guided_noise(None, np.random.default_rng(seed))
        assert set(np.unique(np.floor(noise)).tolist()) <= {0, 2}
        # same draws as block_mask first: the block classes equal block_mask from the same seed
        assert ((np.floor(noise) == 2) == block_mask(np.random.default_rng(seed)).ravel()).all()
        m = pose_guided_mask(None, np.random.default_rng(seed))
        assert m.sum() == 64 and m[np.floor(noise) == 2].all()


def test_score_is_never_used_and_runs_are_reproducible():
    kps = POSES[0]
    low = kps.copy()
    low[:, 2] = 0.0
    for seed in range(50):
        a = pose_guided_noise(kps, np.random.default_rng(seed))
        assert (a == pose_guided_noise(low, np.random.default_rng(seed))).all()
        assert (a == pose_guided_noise(kps[:, :2], np.random.default_rng(seed))).all()
        rng = np.random.default_rng(seed)
        v1, v2 = pose_guided_mask(kps, rng), pose_guided_mask(kps, rng)  # two views: independent masks
        rng = np.random.default_rng(seed)
        assert (pose_guided_mask(kps, rng) == v1).all() and (pose_guided_mask(kps, rng) == v2).all()
        assert (v1 != v2).any()
    assert (pose_guided_mask(kps, np.random.default_rng(0)) != pose_guided_mask(kps, np.random.default_rng(1))).any()


def test_distribution_agrees_with_the_loop_reference():
    # "top": cells left at priority 100, fewer when later parts overwrite the first one where they overlap
    n = 2000
    ours, ref = ({"part": [], "block": [], "depth": [], "top": []} for _ in range(2))
    freq_ours, freq_ref = np.zeros(128), np.zeros(128)
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(2)
    for i in range(n):
        kps = (*POSES, FULL_GRID)[i % 5]
        noise = pose_guided_noise(kps, rng_a)
        mask = pose_guided_mask(kps, rng_a)
        freq_ours += mask
        v = np.floor(noise)
        r = np.array(ref_noise(kps.tolist(), rng_b))
        freq_ref += ref_mask(r.tolist(), rng_b, 64)
        for out, x in ((ours, v), (ref, r)):
            out["part"].append((x >= 95).sum())
            out["block"].append((x == 2).sum())
            out["depth"].append(101 - x[x >= 95].min() if (x >= 95).any() else 0)
            out["top"].append((x == 100).sum())
    for key in ours:
        a, b = np.array(ours[key], float), np.array(ref[key], float)
        se = math.sqrt(a.var() / n + b.var() / n)
        assert abs(a.mean() - b.mean()) < 4.5 * se + 1e-9, (key, a.mean(), b.mean(), se)
    assert np.abs(freq_ours / n - freq_ref / n).max() < 0.075  # per-position masking frequency
    assert np.mean(ours["part"]) > 1  # the part override is active


def test_random_mask_is_uniform():
    rng = np.random.default_rng(0)
    masks = np.stack([random_mask(128, rng) for _ in range(2000)])
    assert (masks.sum(1) == 64).all()
    assert np.abs(masks.mean(0) - 0.5).max() < 0.06


def test_mask_stats():
    noise = np.array([[100.2, 2.1, 2.3, 0.4], [0.1, 2.4, 0.2, 99.0]])
    masks = np.array([[True, True, False, False], [False, True, True, True]])
    s = mask_stats(masks, noise)
    assert s["samples"] == 2 and s["masked_fraction"] == 5 / 8
    assert s["part_cells"] == 1 and s["block_cells"] == 1.5 and s["kept_block_cells"] == 0.5
    assert s["masked_fill"] == 0.5 and s["samples_with_parts"] == 1.0
    assert (s["masked_from_parts"], s["masked_from_blocks"], s["masked_from_fill"]) == (2 / 5, 2 / 5, 1 / 5)
    assert mask_stats(masks[0]) == {"samples": 1.0, "masked_fraction": 0.5}


def test_bad_input_raises_named_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(DataError, match="keypoints"):
        pose_guided_mask(np.zeros((5, 3)), rng)
    with pytest.raises(DataError, match="keypoints"):
        pose_guided_mask(np.zeros(17), rng)
    with pytest.raises(DataError, match="keypoints"):
        part_cells(np.zeros((3, 3)), COCO_PARTS["left_leg"])
    with pytest.raises(ConfigError, match="mask_ratio"):
        pose_guided_mask(None, rng, mask_ratio=1.5)
    with pytest.raises(ConfigError, match="grid"):
        pose_guided_mask(None, rng, grid=(0, 8))
    with pytest.raises(ConfigError, match="num_masking"):
        block_mask(rng, (16, 8), 200)
    with pytest.raises(ConfigError, match="num_parts"):
        pose_guided_noise(POSES[0], rng, num_parts=-1)
    # non-finite coordinates are treated as missing, like negative ones
    k = POSES[0].copy()
    k[9, :2] = np.nan
    assert part_cells(k, COCO_PARTS["left_arm"]).tolist() == sorted(ref_part_cells(POSES[0], [(5, 7)]))
