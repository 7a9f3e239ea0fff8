"""Speed of HAP's pose-guided masking (pretraining.md B.4, pitfall 8): our masks vs a plain-loop version, vs a step.

HAP builds its masks in ``forward`` with Python loops, twice per image. :mod:`humanvision.data.masking` builds them
in the data loader. This script times building the two views' masks of a batch (``--batches``, default 64 and 256
samples of synthetic COCO-17 poses in a 256x128 crop, some keypoints out of the crop at -10000) with

* ``pose_guided_mask``: the library (bit-set block generator, numpy for the rest);
* ``plain loop``: the same rule written the way the B.4 text reads (per-cell loops over a list-of-lists mask,
  Python sets, scalar random draws, a sort with random tie keys), as in the original implementation;
* ``random_mask``: MAE's uniform masking, for scale;

against one training step (forward + backward + AdamW) of a timm ViT (``--model``, default
``vit_small_patch16_224`` at ``img_size=(256, 128)``, ``pretrained=False``) on a tiny batch (``--step-batch``). The
step time is scaled linearly to the batch size to give the ratio masking time / step time per batch; the masks run
on one CPU thread here, as in one data-loader worker. Also checked: every mask masks exactly 64 of 128 patches, and
the library and the plain loop agree in distribution (mean part-masked and block patches per mask, within 4.5
standard errors).

Times are CPU seconds of this process (``time.process_time``, best of ``--repeats``), so that other load on a shared
machine does not distort the ratios; wall-clock seconds are recorded too. Prints a table and writes JSON::

    OMP_NUM_THREADS=1 python benchmarks/hap_masking.py --out benchmarks/results/hap_masking.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

# B.4 step 3, written out again for the plain-loop version
PARTS_B4 = [((0, 1), (0, 2), (1, 2), (1, 3), (2, 4)), ((5, 7), (7, 9)), ((6, 8), (8, 10)), ((11, 13), (13, 15)),
            ((12, 14), (14, 16)), ((6, 11), (5, 12))]

STANDING = np.array([[64, 30], [68, 26], [60, 26], [72, 28], [56, 28], [80, 60], [48, 60], [88, 100], [40, 100],
                     [90, 135], [38, 135], [74, 130], [54, 130], [76, 185], [52, 185], [78, 240], [50, 240]], float)


def synthetic_keypoints(n: int, seed: int) -> np.ndarray:
    """``(n, 17, 3)`` poses: the standing pose scaled, shifted and jittered; keypoints outside the 128x256 crop
    (about a tenth of them) set to -10000 as HAP's loader does."""
    rng = np.random.default_rng(seed)
    centre = np.array([64.0, 128.0])
    xy = (STANDING - centre) * rng.uniform(0.7, 1.3, (n, 1, 2)) + centre + rng.normal(0, 12, (n, 1, 2))
    xy = xy + rng.normal(0, 5, (n, 17, 2))
    flip = rng.random(n) < 0.5
    xy[flip, :, 0] = 127.0 - xy[flip, :, 0]
    out = (xy < 0).any(-1) | (xy[..., 0] >= 128) | (xy[..., 1] >= 256)
    kps = np.concatenate([xy, rng.uniform(0.2, 1.0, (n, 17, 1))], -1)
    kps[out] = -10000.0
    return kps


# ---------------------------------------------------------------------------------------------- plain-loop version
def plain_block_mask(rng, H, W, num_masking, min_patches=12, max_patches=None, aspect=(0.3, 1 / 0.3)):
    max_patches = num_masking if max_patches is None else max_patches
    mask = [[0] * W for _ in range(H)]
    count = 0
    while count < num_masking:
        remaining = min(num_masking - count, max_patches)
        delta = 0
        for _attempt in range(10):
            area = rng.uniform(min_patches, remaining) if remaining >= min_patches else \
                remaining + (min_patches - remaining) * rng.random()
            ar = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))
            h, w = round(math.sqrt(area * ar)), round(math.sqrt(area / ar))
            if w < W and h < H:
                top, left = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
                already = sum(mask[i][j] for i in range(top, top + h) for j in range(left, left + w))
                if 0 < h * w - already <= remaining:
                    for i in range(top, top + h):
                        for j in range(left, left + w):
                            if mask[i][j] == 0:
                                mask[i][j] = 1
                                delta += 1
            if delta > 0:
                break
        if delta == 0:
            break
        count += delta
    return mask


def plain_pose_guided_mask(kps, rng, H=16, W=8, patch=16, mask_ratio=0.5, num_parts=6):
    """(mask list of L bools, integer noise list)."""
    L = H * W
    len_keep = int(L * (1 - mask_ratio))
    block = plain_block_mask(rng, H, W, L - len_keep)
    noise = [2 if block[y][x] else 0 for y in range(H) for x in range(W)]
    parts = list(PARTS_B4)
    rng.shuffle(parts)
    n_parts = int(rng.integers(0, num_parts + 1))
    priority, used = 100, 0
    for part in parts:
        if used >= n_parts:
            break
        cells = set()
        for a, b in part:
            xa, ya, xb, yb = kps[a][0], kps[a][1], kps[b][0], kps[b][1]
            if xa < 0 or ya < 0 or xb < 0 or yb < 0:
                continue
            cxa, cya, cxb, cyb = int(xa // patch), int(ya // patch), int(xb // patch), int(yb // patch)
            for cy in range(min(cya, cyb), max(cya, cyb) + 1):
                for cx in range(min(cxa, cxb), max(cxa, cxb) + 1):
                    if 0 <= cx < W and 0 <= cy < H:
                        cells.add(cy * W + cx)
        if not cells:
            continue
        cells = list(cells)
        rng.shuffle(cells)
        for c in cells[:int(len(cells) * rng.uniform(0, 0.3))]:
            noise[c] = priority
        priority -= 1
        used += 1
    order = sorted(range(L), key=lambda i: (noise[i], rng.random()))
    mask = [True] * L
    for i in order[:len_keep]:
        mask[i] = False
    return mask, noise


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[64, 256], help="batch sizes (samples; 2 views each)")
    p.add_argument("--views", type=int, default=2)
    p.add_argument("--model", default="vit_small_patch16_224", help="timm model for the training step")
    p.add_argument("--step-batch", type=int, default=4, help="batch of the timed training step")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the training step")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "hap_masking.json")
    args = p.parse_args(argv)

    import timm
    import torch
    from rich.console import Console
    from rich.table import Table

    from humanvision.data.masking import mask_stats, pose_guided_mask, pose_guided_noise, random_mask

    console = Console()
    wall: dict[str, float] = {}

    def timed(name, fn, repeats):
        times, walls, out = [], [], None
        for _ in range(max(1, repeats)):
            t0, w0 = time.process_time(), time.perf_counter()
            out = fn()
            times.append(time.process_time() - t0)
            walls.append(time.perf_counter() - w0)
        wall[name] = min(walls)
        return out, min(times)

    rows, checks = [], {}
    for B in args.batches:
        kps = synthetic_keypoints(B, args.seed + B)
        kps_list = kps.tolist()

        def ours(kps=kps, B=B):
            rng = np.random.default_rng(args.seed)
            return np.stack([[pose_guided_mask(kps[b], rng) for _ in range(args.views)] for b in range(B)])

        def plain(kps_list=kps_list, B=B):
            rng = np.random.default_rng(args.seed)
            return [[plain_pose_guided_mask(kps_list[b], rng) for _ in range(args.views)] for b in range(B)]

        def mae(B=B):
            rng = np.random.default_rng(args.seed)
            return np.stack([[random_mask(128, rng) for _ in range(args.views)] for _ in range(B)])

        with console.status(f"B={B}: pose_guided_mask"):
            m_ours, t_ours = timed(f"pose_guided_mask_B{B}", ours, args.repeats)
        with console.status(f"B={B}: plain loop"):
            m_plain, t_plain = timed(f"plain_loop_B{B}", plain, args.repeats)
        with console.status(f"B={B}: random_mask"):
            m_mae, t_mae = timed(f"random_mask_B{B}", mae, args.repeats)
        # exact counts and agreement in distribution (noise from independent draws of the same rule)
        rng = np.random.default_rng(args.seed + 1)
        noise = np.stack([pose_guided_noise(kps[b], rng) for b in range(B) for _ in range(args.views)])
        plain_noise = np.array([n for per in m_plain for _, n in per], float)
        plain_masks = np.array([m for per in m_plain for m, _ in per])
        ok_count = bool((m_ours.sum(-1) == 64).all() and (plain_masks.sum(-1) == 64).all()
                        and (m_mae.sum(-1) == 64).all())
        agree = True
        for name, a, b in (("part", noise >= 95, plain_noise >= 95), ("block", np.floor(noise) == 2,
                                                                      plain_noise == 2)):
            a, b = a.sum(1).astype(float), b.sum(1).astype(float)
            se = math.sqrt(a.var() / len(a) + b.var() / len(b))
            agree &= bool(abs(a.mean() - b.mean()) <= 4.5 * se + 1e-9)
        masks = np.zeros(noise.shape, dtype=bool)
        np.put_along_axis(masks, np.argsort(-noise, axis=1)[:, :64], True, axis=1)  # the 64 largest values
        stats = mask_stats(masks, noise)
        checks[B] = {"exact_64_of_128": ok_count, "agree_with_plain_loop": agree, "stats": stats,
                     "plain_loop_part_cells": float((plain_noise >= 95).sum(1).mean()),
                     "ours_part_cells": float((noise >= 95).sum(1).mean())}
        rows.append((B, t_ours, t_plain, t_mae))

    # one training step of a ViT at 256x128 on a tiny batch
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    model = timm.create_model(args.model, img_size=(256, 128), pretrained=False, num_classes=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(args.step_batch, 3, 256, 128)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model(x).float().pow(2).mean()
        loss.backward()
        opt.step()
        return float(loss.detach())

    with console.status(f"training step of {args.model}"):
        step()  # warm-up
        _, t_step = timed("train_step", step, args.repeats)
    step_per_sample = t_step / args.step_batch

    masks_per_batch = {B: B * args.views for B, *_ in rows}
    table = Table(title=f"HAP masks ({args.views} views/sample, 16x8, ratio 0.5) vs a {args.model} step")
    for col in ("batch", "masks", "CPU s", "masks/s", "speed-up", "mask/step"):
        table.add_column(col, justify="right")
    results = {}
    for B, t_ours, t_plain, t_mae in rows:
        n = masks_per_batch[B]
        step_B = step_per_sample * B
        for name, t in (("ours", t_ours), ("plain loop", t_plain), ("MAE random", t_mae)):
            table.add_row(str(B), name, f"{t:.4f}", f"{n / t:,.0f}", f"{t_plain / t:.1f}x", f"{t / step_B:.2%}")
        results[B] = {"cpu_seconds": {"pose_guided_mask": t_ours, "plain_loop": t_plain, "random_mask": t_mae},
                      "masks_per_second": {"pose_guided_mask": n / t_ours, "plain_loop": n / t_plain,
                                           "random_mask": n / t_mae},
                      "speedup_vs_plain_loop": t_plain / t_ours,
                      "estimated_step_cpu_seconds": step_B,
                      "masking_over_step": {"pose_guided_mask": t_ours / step_B, "plain_loop": t_plain / step_B}}
    console.print(table)
    console.print(f"training step: {t_step:.3f} CPU s for batch {args.step_batch} ({step_per_sample * 1e3:.1f} ms "
                  f"per sample, scaled linearly to each batch)")
    ok = all(c["exact_64_of_128"] and c["agree_with_plain_loop"] for c in checks.values())
    for B, c in checks.items():
        s = c["stats"]
        console.print(f"B={B}: exact 64/128: {c['exact_64_of_128']}; part cells per mask {c['ours_part_cells']:.2f} "
                      f"(plain loop {c['plain_loop_part_cells']:.2f}), agree: {c['agree_with_plain_loop']}; masked "
                      f"from parts {s['masked_from_parts']:.1%}, blocks {s['masked_from_blocks']:.1%}, fill "
                      f"{s['masked_from_fill']:.1%}")

    report = {
        "benchmark": "hap_masking", "views": args.views, "grid": [16, 8], "mask_ratio": 0.5,
        "model": args.model, "step_batch": args.step_batch, "threads": args.threads, "seed": args.seed,
        "repeats": args.repeats, "train_step_cpu_seconds": t_step, "train_step_cpu_seconds_per_sample":
            step_per_sample, "batches": {str(B): r for B, r in results.items()},
        "checks": {str(B): c for B, c in checks.items()}, "wall_seconds": wall, "ok": ok,
        "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
        "timm": timm.__version__,
        "note": "CPU seconds of this process (best of --repeats); masks on one thread; step time scaled linearly "
                "from --step-batch to each batch",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    console.print(f"wrote {args.out}")
    if not ok:
        sys.exit(1)
    return report


if __name__ == "__main__":
    main()
