"""Speed of COCO keypoint evaluation: humanvision.metrics.coco vs pycocotools COCOeval, in the same run.

Synthetic, seeded data: ``--images`` images with ``--people`` GT persons each (areas spanning small to large,
some crowd and some without keypoints) and results made by perturbing the GT (misses, duplicates, false
positives). Both evaluators start from the same in-memory GT dict and result list (pycocotools: index +
loadRes + evaluate + accumulate + summarize; ours: validation/loading + evaluation). The ten summary numbers
must agree to 1e-9.

    python benchmarks/metrics.py --images 5000 --people 20 --out benchmarks/results/metrics.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np


def synthetic_coco(images: int, people: int, seed: int = 0, num_joints: int = 17) -> tuple[dict, list]:
    rng = np.random.default_rng(seed)
    k, n = num_joints, images * people
    image_of = np.repeat(np.arange(1, images + 1), people)
    side = np.exp(rng.uniform(np.log(16), np.log(300), n))
    w, h = side * rng.uniform(0.5, 1.0, n), side * rng.uniform(1.0, 1.6, n)
    x, y = rng.uniform(0, 1000, n), rng.uniform(0, 1000, n)
    gx = x[:, None] + w[:, None] * rng.random((n, k))
    gy = y[:, None] + h[:, None] * rng.random((n, k))
    v = rng.choice([0, 1, 2], (n, k), p=[0.25, 0.15, 0.6])
    v[rng.random(n) < 0.05] = 0
    crowd = rng.random(n) < 0.02
    area = w * h * rng.uniform(0.4, 0.9, n)
    gkp = np.stack([gx * (v > 0), gy * (v > 0), v], -1).reshape(n, -1)
    anns = [{"id": i + 1, "image_id": int(image_of[i]), "category_id": 1, "keypoints": gkp[i].tolist(),
             "num_keypoints": int((v[i] > 0).sum()), "bbox": [x[i], y[i], w[i], h[i]], "area": float(area[i]),
             "iscrowd": int(crowd[i])} for i in range(n)]
    # results: 85% of persons detected, 10% of those twice, plus 2 false positives per image
    src = np.flatnonzero(rng.random(n) < 0.85)
    src = np.concatenate([src, src[rng.random(len(src)) < 0.1]])
    m = len(src)
    noise = rng.normal(0, 1, (m, k, 2)) * (rng.uniform(0.005, 0.06, m) * np.sqrt(area[src]))[:, None, None]
    dkp = np.stack([gx[src] + noise[..., 0], gy[src] + noise[..., 1], rng.random((m, k))], -1)
    fp_img = np.repeat(np.arange(1, images + 1), 2)
    fkp = np.stack([rng.uniform(0, 1200, (len(fp_img), k)), rng.uniform(0, 1200, (len(fp_img), k)),
                    rng.random((len(fp_img), k))], -1)
    kp = np.concatenate([dkp, fkp]).reshape(-1, 3 * k)
    img = np.concatenate([image_of[src], fp_img])
    score = np.round(rng.random(len(img)), 3)
    order = rng.permutation(len(img))
    results = [{"image_id": int(img[i]), "category_id": 1, "keypoints": kp[i].tolist(),
                "score": float(score[i])} for i in order]
    gt = {"images": [{"id": i, "width": 1300, "height": 1300} for i in range(1, images + 1)],
          "annotations": anns, "categories": [{"id": 1, "name": "person"}]}
    return gt, results


def run_ours(gt: dict, results: list) -> tuple[np.ndarray, dict]:
    from humanvision.metrics.coco import CocoKeypointEvaluator

    t0 = time.perf_counter()
    ev = CocoKeypointEvaluator(gt)
    ev.add(results)
    t1 = time.perf_counter()
    res = ev.evaluate()
    t2 = time.perf_counter()
    return res.as_array(), {"load_s": t1 - t0, "evaluate_s": t2 - t1, "total_s": t2 - t0}


def run_pycocotools(gt: dict, results: list) -> tuple[np.ndarray, dict]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, results = copy.deepcopy(gt), copy.deepcopy(results)  # loadRes/evaluate modify their input
    with contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        dt = coco.loadRes(results)
        t1 = time.perf_counter()
        ev = COCOeval(coco, dt, "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        t2 = time.perf_counter()
    return np.asarray(ev.stats), {"load_s": t1 - t0, "evaluate_s": t2 - t1, "total_s": t2 - t0}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--people", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="runs of our evaluator (the best time is reported)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "metrics.json")
    args = p.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    from humanvision.metrics.coco import STAT_NAMES

    console = Console()
    with console.status("generating synthetic data"):
        gt, results = synthetic_coco(args.images, args.people, args.seed)
    with console.status("humanvision evaluator"):
        runs = [run_ours(gt, results) for _ in range(max(1, args.repeats))]
        ours, t_ours = min(runs, key=lambda r: r[1]["total_s"])
    with console.status("pycocotools COCOeval (slow)"):
        ref, t_ref = run_pycocotools(gt, results)
    max_diff = float(np.abs(ours - ref).max())
    identical = bool(max_diff <= 1e-9)

    table = Table(title=f"COCO keypoint evaluation: {args.images} images x {args.people} people, "
                        f"{len(results)} results")
    for col in ("", "load (s)", "evaluate (s)", "total (s)", "speed-up"):
        table.add_column(col, justify="right")
    table.add_row("pycocotools", *(f"{t_ref[k]:.2f}" for k in ("load_s", "evaluate_s", "total_s")), "1.0x")
    table.add_row("humanvision", *(f"{t_ours[k]:.2f}" for k in ("load_s", "evaluate_s", "total_s")),
                  f"{t_ref['total_s'] / t_ours['total_s']:.1f}x")
    console.print(table)
    console.print(f"AP {ours[0]:.4f} / pycocotools {ref[0]:.4f}; max |difference| over the 10 numbers: "
                  f"{max_diff:.1e} -> {'identical' if identical else 'MISMATCH'}")

    report = {
        "benchmark": "coco_keypoint_eval",
        "images": args.images, "people_per_image": args.people, "results": len(results), "seed": args.seed,
        "pycocotools": t_ref, "humanvision": t_ours,
        "speedup_total": t_ref["total_s"] / t_ours["total_s"],
        "speedup_evaluate": t_ref["evaluate_s"] / t_ours["evaluate_s"],
        "stats_humanvision": dict(zip(STAT_NAMES, ours.tolist(), strict=True)),
        "stats_pycocotools": dict(zip(STAT_NAMES, ref.tolist(), strict=True)),
        "max_abs_difference": max_diff, "identical": identical,
        "python": platform.python_version(), "numpy": np.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    console.print(f"wrote {args.out}")
    if not identical:
        sys.exit(1)
    return report


if __name__ == "__main__":
    main()
