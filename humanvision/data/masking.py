"""HAP's pose-guided masking for masked image modelling (pretraining.md B.4), built in the data loader.

HAP (B.4) masks exactly ``L - len_keep`` of the ``L = H * W`` patches of each view, ``len_keep = int(L * (1 -
mask_ratio))`` (64 of the 16x8 = 128 patches of a 256x128 crop at ratio 0.5), from a per-patch "noise" that is
sorted ascending, the first ``len_keep`` patches being kept:

1. **block mask** (:func:`block_mask`, BEiT's ``MaskingGenerator``): rectangles are added until
   ``num_masking = L - len_keep`` patches are masked or a call of up to 10 attempts adds nothing. Each attempt draws
   a target area ``~ U(min_patches, remaining)``, a log-uniform aspect ratio in ``aspect``, ``h = round(sqrt(area *
   ar))``, ``w = round(sqrt(area / ar))``, requires ``w < W`` and ``h < H`` (strict), draws a top-left corner
   uniformly and is accepted only if it newly masks ``n`` patches with ``0 < n <= remaining``. Block patches get
   noise **2**, all others **0** (HAP's uniform noise is overwritten, pitfall 1: there is no uniform masking);
2. **body-part override** (:func:`pose_guided_noise`): the six :data:`COCO_PARTS` are shuffled and ``n_parts =
   randint(0, num_parts)`` (inclusive: 0 is possible) are *used*, in shuffled order. A part's cells are the union of
   its limb rectangles (:func:`part_cells`); a part with no cells is skipped and does not count. A used part shuffles
   its cells and sets the first ``floor(|cells| * U(0, 0.3))`` of them (possibly none; the part still counts) to the
   current priority, which starts at 100 and drops by one per used part. A later part overwrites an earlier one
   where they overlap (pitfall 2: a small override, not "mask the body");
3. **sort** (:func:`pose_guided_mask`): patches with the largest noise are masked, so part patches (>= 95) go first,
   then block patches (2), then the rest (0).

**Tie-breaking** (pitfall 1). HAP breaks ties inside a value class with ``torch.argsort``'s unspecified order, which
decides *which* block patches survive when blocks and parts exceed ``L - len_keep`` and which 0-valued patches are
masked when the block generator stopped early. Here :func:`pose_guided_noise` adds a jitter ``0.5 * U[0, 1)`` drawn
from the same generator to every patch: smaller than the gap of 1 between classes (0, 2, 95..100), so it only orders
patches *within* a class, uniformly at random, and the result is reproducible per seed.

Keypoints are ``(17, 2|3)`` COCO-17 ``[x, y(, score)]`` in pixels of the augmented input image (``W * patch_size``
wide, ``H * patch_size`` high); the score is never used (pitfall 3). A limb with any negative coordinate is skipped
(HAP marks out-of-bounds keypoints with -10000); non-finite coordinates are treated the same way. Cell ``(x, y) =
(floor(px / patch_size), floor(py / patch_size))``, flat id ``y * W + x``; a limb rectangle is intersected with the
grid (an end on or beyond the right / bottom border stretches it to the last column / row; a rectangle lying
entirely beyond the grid is empty, which HAP's loader never produces since it marks such keypoints -10000).

All randomness comes from the ``numpy.random.Generator`` passed in (pitfall 8: this runs per sample and per view in
the data loader, not in ``forward``). Rectangles are Python-integer bit sets (bit ``y * W + x``), so one 16x8
pose-guided mask takes about 70 us of one CPU core, a third of a plain-loop version (``benchmarks/hap_masking.py``).

>>> rng = np.random.default_rng(0)
>>> kps = np.full((17, 3), -10000.0); kps[[5, 7, 9], :2] = [[40, 60], [30, 100], [20, 140]]
>>> m = pose_guided_mask(kps, rng)
>>> m.shape, int(m.sum())
((128,), 64)
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

from humanvision.errors import ConfigError, DataError

__all__ = ["COCO_PARTS", "block_mask", "mask_stats", "part_cells", "pose_guided_mask", "pose_guided_noise",
           "random_mask"]

COCO_PARTS: dict[str, tuple[tuple[int, int], ...]] = {
    "face": ((0, 1), (0, 2), (1, 2), (1, 3), (2, 4)),
    "left_arm": ((5, 7), (7, 9)),
    "right_arm": ((6, 8), (8, 10)),
    "left_leg": ((11, 13), (13, 15)),
    "right_leg": ((12, 14), (14, 16)),
    "upper_body": ((6, 11), (5, 12)),
}
"""The six body parts of HAP (B.4) as COCO-17 limbs ``(a, b)``; each limb contributes the cell rectangle spanned by
its two keypoints."""

BLOCK_VALUE = 2.0
"""Noise of block-masked patches; unmasked-by-block patches have 0."""
FIRST_PRIORITY = 100.0
"""Noise of the first used body part; each further used part gets one less."""
PART_FRACTION = 0.3
"""A used part masks ``floor(|cells| * U(0, PART_FRACTION))`` of its cells."""
JITTER = 0.5
"""Tie-breaking jitter ``JITTER * U[0, 1)`` added to every patch's noise (< 1, the gap between value classes)."""

_PARTS = tuple(COCO_PARTS.values())


# ------------------------------------------------------------------------------------------------------ checks
def _check_grid(grid: Any) -> tuple[int, int]:
    try:
        H, W = (int(v) for v in grid)
    except (TypeError, ValueError):
        raise ConfigError(f"masking grid must be (height, width) in patches, got {grid!r}") from None
    if H < 1 or W < 1 or (H, W) != tuple(grid):
        raise ConfigError(f"masking grid must be two positive integers (height, width), got {grid!r}")
    return H, W


def _len_keep(num_patches: int, mask_ratio: float) -> int:
    if not 0.0 <= float(mask_ratio) <= 1.0:
        raise ConfigError(f"mask_ratio must be in [0, 1], got {mask_ratio!r}")
    return int(num_patches * (1 - mask_ratio))


def _check_keypoints(keypoints: Any, num_joints: int) -> np.ndarray:
    try:
        kps = np.asarray(keypoints, dtype=np.float64) if keypoints is not None else None
    except (TypeError, ValueError) as e:
        raise DataError(f"keypoints are not numeric: {e}", field="keypoints") from None
    if kps is None or kps.ndim != 2 or kps.shape[0] < num_joints or kps.shape[1] < 2:
        shape = None if kps is None else kps.shape
        raise DataError(f"expected (K >= {num_joints}, 2 or 3) keypoints [x, y(, score)] in pixels, got shape "
                        f"{shape}", field="keypoints")
    return kps[:, :2]


# ------------------------------------------------------------------------------------------------- block mask
@lru_cache(maxsize=16)
def _row_stacks(H: int, W: int) -> tuple[int, ...]:
    """``stacks[h]`` has bit 0 of each of the first ``h`` rows set: a ``w``-wide row times it is an ``h x w`` block."""
    return tuple(sum(1 << (i * W) for i in range(h)) for h in range(H + 1))


def block_mask(rng: np.random.Generator, grid: tuple[int, int] = (16, 8), num_masking: int = 64,
               min_patches: int = 12, max_patches: int | None = None,
               aspect: tuple[float, float] = (0.3, 1 / 0.3)) -> np.ndarray:
    """BEiT's block ``MaskingGenerator`` (B.4 step 2): an ``(H, W)`` bool mask with at most ``num_masking`` True.

    ``max_patches`` (default ``num_masking``) caps what one block may add. The outer loop stops when
    ``num_masking`` patches are masked or when one call of up to 10 attempts adds nothing. Each attempt draws four
    uniforms ``u`` from ``rng`` in this order: ``area = min_patches + (cap - min_patches) * u0`` (Python's
    ``random.uniform``, so ``area`` lies in ``[cap, min_patches]`` once fewer than ``min_patches`` remain), ``ar =
    exp(log(aspect[0]) + (log(aspect[1]) - log(aspect[0])) * u1)``, ``top = floor(u2 * (H - h + 1))``, ``left =
    floor(u3 * (W - w + 1))``; ``cap = min(num_masking - masked, max_patches)``. Uniforms are drawn from ``rng``
    in chunks, so ``rng`` may be advanced past the last one used.
    """
    H, W = _check_grid(grid)
    if not 0 <= int(num_masking) <= H * W:
        raise ConfigError(f"num_masking must be in [0, {H * W}] for grid {grid}, got {num_masking!r}")
    if min_patches < 0:
        raise ConfigError(f"min_patches must be >= 0, got {min_patches!r}")
    if aspect[0] <= 0 or aspect[1] <= 0:
        raise ConfigError(f"aspect ratios must be positive, got {aspect!r}")
    num_masking = int(num_masking)
    cap_max = num_masking if max_patches is None else int(max_patches)
    log_lo, log_span = math.log(aspect[0]), math.log(aspect[1]) - math.log(aspect[0])
    stacks = _row_stacks(H, W)
    mask, count = 0, 0  # mask: bit y * W + x set when cell (y, x) is masked
    u: list[float] = []
    i = 0
    while count < num_masking:
        cap = min(num_masking - count, cap_max)
        delta = 0
        for _ in range(10):
            if i + 4 > len(u):
                u, i = rng.random(128).tolist(), 0
            area = min_patches + (cap - min_patches) * u[i]
            ar = math.exp(log_lo + log_span * u[i + 1])
            h, w = round(math.sqrt(area * ar)), round(math.sqrt(area / ar))
            if w < W and h < H:
                top, left = int(u[i + 2] * (H - h + 1)), int(u[i + 3] * (W - w + 1))
                block = (((1 << w) - 1) << left) * stacks[h] << (top * W)
                new = (block & ~mask).bit_count()
                if 0 < new <= cap:
                    mask |= block
                    delta = new
            i += 4
            if delta:
                break
        if not delta:
            break
        count += delta
    out = np.zeros(H * W, dtype=bool)
    out[_bits_to_ids(mask, H * W)] = True
    return out.reshape(H, W)


# ------------------------------------------------------------------------------------------------- body parts
def _bits_to_ids(bits: int, L: int) -> np.ndarray:
    """Flat cell ids of the set bits of a grid bit set, ascending."""
    return np.flatnonzero(np.unpackbits(np.frombuffer(bits.to_bytes((L + 7) // 8, "little"), dtype=np.uint8),
                                        count=L, bitorder="little"))


def _keypoint_cells(kps: np.ndarray, H: int, W: int, patch_size: float) -> list[tuple[int, int] | None]:
    """Per keypoint its cell ``(x, y)``, clipped to ``(W, H)`` (just beyond the grid); None if it is skipped."""
    cells = []
    for x, y in kps.tolist():  # plain floats: 17 keypoints are faster in Python than in numpy calls
        ok = 0 <= x < math.inf and 0 <= y < math.inf  # False for negative, NaN and infinite coordinates
        cells.append((int(min(x / patch_size, W)), int(min(y / patch_size, H))) if ok else None)
    return cells


def _limbs_bits(cells: list[tuple[int, int] | None], limbs, H: int, W: int) -> int:
    """Grid bit set (bit ``y * W + x``) of the union of the limbs' cell rectangles, each intersected with the
    grid; a limb with a skipped keypoint adds nothing."""
    stacks = _row_stacks(H, W)
    bits = 0
    for a, b in limbs:
        ca, cb = cells[a], cells[b]
        if ca is None or cb is None:  # any negative coordinate skips the limb
            continue
        x0, x1 = min(ca[0], cb[0]), min(max(ca[0], cb[0]), W - 1)
        y0, y1 = min(ca[1], cb[1]), min(max(ca[1], cb[1]), H - 1)
        if x0 <= x1 and y0 <= y1:  # empty only if the whole rectangle lies beyond the grid
            bits |= (((1 << (x1 - x0 + 1)) - 1) << x0) * stacks[y1 - y0 + 1] << (y0 * W)
    return bits


def part_cells(keypoints: np.ndarray, limbs, grid: tuple[int, int] = (16, 8), patch_size: int = 16) -> np.ndarray:
    """Sorted flat cell ids ``y * W + x`` of the union of the limb rectangles of one part (B.4 step 3).

    ``limbs`` is a sequence of keypoint index pairs, e.g. ``COCO_PARTS["left_arm"]``; a limb with a negative (or
    non-finite) coordinate at either end is skipped.

    >>> kps = np.full((17, 3), -10000.0); kps[5, :2], kps[7, :2] = (20, 40), (60, 50)
    >>> part_cells(kps, COCO_PARTS["left_arm"]).tolist()   # cells x 1..3 of rows 2..3; limb (7, 9) is skipped
    [17, 18, 19, 25, 26, 27]
    """
    H, W = _check_grid(grid)
    pairs = np.asarray(limbs, dtype=np.int64).reshape(-1, 2)
    if pairs.size and pairs.min() < 0:
        raise DataError(f"limb indices must be non-negative, got {pairs.tolist()}", field="limbs")
    kps = _check_keypoints(keypoints, int(pairs.max(initial=-1)) + 1)
    bits = _limbs_bits(_keypoint_cells(kps, H, W, patch_size), pairs.tolist(), H, W)
    return _bits_to_ids(bits, H * W)


def pose_guided_noise(keypoints: np.ndarray | None, rng: np.random.Generator, grid: tuple[int, int] = (16, 8),
                      patch_size: int = 16, mask_ratio: float = 0.5, num_parts: int = 6) -> np.ndarray:
    """HAP's per-patch noise ``(L,) float64`` (B.4 steps 2-3): 0 / 2 (block) / 100, 99, ... (parts) plus the
    tie-breaking jitter ``0.5 * U[0, 1)`` (see the module docstring); the largest values are masked first.

    The block mask is HAP's: ``num_masking = max_patches = L - len_keep``, ``min_patches = 12``, aspect ``[0.3,
    1/0.3]``. ``keypoints=None`` gives the block mask only. Draw order from ``rng``: block mask, part shuffle,
    ``n_parts``, then per used part its fraction and (if it takes any cell) its cell shuffle, then the jitter.
    """
    H, W = _check_grid(grid)
    L = H * W
    num_masking = L - _len_keep(L, mask_ratio)
    if int(num_parts) != num_parts or num_parts < 0:
        raise ConfigError(f"num_parts must be a non-negative integer, got {num_parts!r}")
    noise = block_mask(rng, (H, W), num_masking, min_patches=12, max_patches=num_masking).ravel() * BLOCK_VALUE
    if keypoints is not None:
        cells = _keypoint_cells(_check_keypoints(keypoints, 17), H, W, patch_size)
        order = rng.permutation(len(_PARTS)).tolist()
        n_parts = int(rng.integers(0, int(num_parts) + 1))
        priority, used = FIRST_PRIORITY, 0
        for p in order:
            if used == n_parts:
                break
            bits = _limbs_bits(cells, _PARTS[p], H, W)
            n = bits.bit_count()
            if n == 0:  # no valid limb: the part is skipped and does not count
                continue
            k = int(n * (PART_FRACTION * rng.random()))
            if k:  # a random k-subset of the part's cells (shuffle, take the first k)
                noise[rng.permutation(_bits_to_ids(bits, L))[:k]] = priority
            priority -= 1
            used += 1
    return noise + JITTER * rng.random(L)


def _mask_from_noise(noise: np.ndarray, len_keep: int) -> np.ndarray:
    mask = np.ones(noise.shape[-1], dtype=bool)
    mask[np.argsort(noise)[:len_keep]] = False
    return mask


def pose_guided_mask(keypoints: np.ndarray | None, rng: np.random.Generator, grid: tuple[int, int] = (16, 8),
                     patch_size: int = 16, mask_ratio: float = 0.5, num_parts: int = 6) -> np.ndarray:
    """HAP's pose-guided mask ``(L,) bool`` (True = masked, flat index ``y * W + x``), B.4.

    Exactly ``L - int(L * (1 - mask_ratio))`` patches are masked: those with the largest
    :func:`pose_guided_noise` (body-part patches, then block patches, then the rest; random within a class).
    Call it once per view: each call draws independent block and part randomness from ``rng``.
    """
    H, W = _check_grid(grid)
    noise = pose_guided_noise(keypoints, rng, (H, W), patch_size, mask_ratio, num_parts)
    return _mask_from_noise(noise, _len_keep(H * W, mask_ratio))


def random_mask(num_patches: int, rng: np.random.Generator, mask_ratio: float = 0.5) -> np.ndarray:
    """MAE's uniform random masking ``(num_patches,) bool``: exactly ``num_patches - int(num_patches * (1 -
    mask_ratio))`` True, every subset of that size equally likely."""
    if int(num_patches) != num_patches or num_patches < 1:
        raise ConfigError(f"num_patches must be a positive integer, got {num_patches!r}")
    return _mask_from_noise(rng.random(int(num_patches)), _len_keep(int(num_patches), mask_ratio))


def mask_stats(masks: np.ndarray, noise: np.ndarray | None = None) -> dict[str, float]:
    """Summary of a batch of masks ``(N, L)`` (or one ``(L,)``), e.g. for a progress bar or a sanity check.

    Always: ``samples``, ``masked_fraction`` (mean over samples and patches). With the matching
    :func:`pose_guided_noise` ``(N, L)``, per sample means of ``part_cells`` (patches set by a body part),
    ``block_cells`` (block-masked and not overwritten by a part), ``kept_block_cells`` (block patches that were
    kept because parts and blocks exceeded the masked count), ``masked_fill`` (0-valued patches masked because the
    block generator stopped early), the shares ``masked_from_parts`` / ``masked_from_blocks`` / ``masked_from_fill``
    of all masked patches and ``samples_with_parts`` (fraction of samples with at least one part patch).
    """
    m = np.asarray(masks, dtype=bool)
    m = m[None] if m.ndim == 1 else m
    if m.ndim != 2:
        raise DataError(f"expected masks (N, L), got shape {np.shape(masks)}", field="masks")
    out: dict[str, float] = {"samples": float(m.shape[0]), "masked_fraction": float(m.mean()) if m.size else 0.0}
    if noise is None:
        return out
    v = np.floor(np.asarray(noise, dtype=np.float64))
    v = v[None] if v.ndim == 1 else v
    if v.shape != m.shape:
        raise DataError(f"noise shape {np.shape(noise)} does not match masks {m.shape}", field="noise")
    part, block = v > BLOCK_VALUE, v == BLOCK_VALUE
    fill = ~part & ~block
    total = max(int(m.sum()), 1)
    out.update({
        "part_cells": float(part.sum(1).mean()),
        "block_cells": float(block.sum(1).mean()),
        "kept_block_cells": float((block & ~m).sum(1).mean()),
        "masked_fill": float((fill & m).sum(1).mean()),
        "masked_from_parts": float((part & m).sum() / total),
        "masked_from_blocks": float((block & m).sum() / total),
        "masked_from_fill": float((fill & m).sum() / total),
        "samples_with_parts": float(part.any(1).mean()),
    })
    return out
