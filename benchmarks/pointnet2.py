"""Speed of the pure-PyTorch PointNet++ operators: batched vectorised calls vs loops, on the same points.

Seeded points, uniform in a 1 m cube: ``--batch`` clouds of ``--points`` points, ``--centres`` farthest-point
centres, ``--nsample`` neighbours within ``--radius`` (defaults: 8 x 2048 -> 512 centres, 32 neighbours within
0.2 m, about 68 points per ball, so the first-32-in-index-order truncation is exercised). Three ways to compute the
same result (:mod:`humanvision.models.pointnet2`):

* ``vectorised``: one call over the batch (FPS loops over the ``--centres`` picks only; ball query is distances +
  mask + ``topk`` over all centres);
* ``per-sample loop``: a Python loop over the clouds, each call vectorised (how code without batch support runs);
* ``scalar loop``: the CUDA kernels' algorithm written for one point at a time in Python (FPS: running minimum
  distances and an argmax scan; ball query: scan points in index order, stop at ``nsample``, pad with the first
  found). Run on cloud 0 only and scaled by ``--batch`` (stated in the table), so the default run stays short.

All three must give identical indices (the run fails otherwise; the scalar loops compute in float64 and are
compared with the vectorised ops run on float64 copies of cloud 0). Times are CPU seconds of this process
(``time.process_time``, best of ``--repeats``; ``--threads`` torch threads, default 1) so that other load on a
shared machine does not distort the ratios; wall-clock seconds are recorded too. ``--device cuda`` times the
vectorised and per-sample versions on the GPU (wall clock, synchronised); the scalar loop always runs on the CPU.

    python benchmarks/pointnet2.py --out benchmarks/results/pointnet2.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch


def fps_scalar(xyz: list[tuple[float, float, float]], npoint: int) -> list[int]:
    """Farthest point sampling of one cloud, one point at a time (start at index 0)."""
    dist = [1e10] * len(xyz)
    out, far = [], 0
    for _ in range(npoint):
        out.append(far)
        cx, cy, cz = xyz[far]
        best, best_i = -1.0, 0
        for k, (x, y, z) in enumerate(xyz):
            d = (x - cx) * (x - cx) + (y - cy) * (y - cy) + (z - cz) * (z - cz)
            dist[k] = min(dist[k], d)
            if dist[k] > best:
                best, best_i = dist[k], k
        far = best_i
    return out


def ball_query_scalar(xyz: list[tuple[float, float, float]], centres: list[tuple[float, float, float]], r2: float,
                      nsample: int) -> list[list[int]]:
    """Ball query of one cloud, one centre and one point at a time (the CUDA kernel's loop)."""
    out = []
    for cx, cy, cz in centres:
        row, cnt = [0] * nsample, 0
        for k, (x, y, z) in enumerate(xyz):
            d2 = (x - cx) * (x - cx) + (y - cy) * (y - cy) + (z - cz) * (z - cz)
            if d2 < r2:
                if cnt == 0:
                    row = [k] * nsample
                row[cnt] = k
                cnt += 1
                if cnt >= nsample:
                    break
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--points", type=int, default=2048)
    p.add_argument("--centres", type=int, default=512)
    p.add_argument("--nsample", type=int, default=32)
    p.add_argument("--radius", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="runs of the vectorised and per-sample versions (best "
                                                          "time reported); the scalar loop runs once")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda (vectorised and per-sample versions)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "pointnet2.json")
    args = p.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    from humanvision.models.pointnet2 import ball_query, farthest_point_sample, gather_points

    torch.set_num_threads(args.threads)
    console = Console()
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(args.seed)
    xyz = torch.rand(args.batch, args.points, 3, generator=gen).to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}

    def timed(name, fn, repeats):
        times, walls, out = [], [], None
        for _ in range(max(1, repeats)):
            sync()
            t0, w0 = time.process_time(), time.perf_counter()
            out = fn()
            sync()
            times.append(time.process_time() - t0)
            walls.append(time.perf_counter() - w0)
        wall[name], cpu[name] = min(walls), min(times)
        return out

    b, m, k, r = args.batch, args.centres, args.nsample, args.radius
    if device.type == "cuda":  # warm-up: kernels and allocator
        farthest_point_sample(xyz, 8)
        ball_query(xyz, xyz[:, :8], r, k)
    with console.status("farthest point sampling"):
        fps_vec = timed("fps_vectorised", lambda: farthest_point_sample(xyz, m), args.repeats)
        fps_loop = timed("fps_per_sample_loop", lambda: torch.cat([farthest_point_sample(xyz[i:i + 1], m)
                                                                   for i in range(b)]), args.repeats)
        cloud0 = [tuple(map(float, q)) for q in xyz[0].double().cpu().numpy()]
        fps_py = timed("fps_scalar_loop_cloud0", lambda: fps_scalar(cloud0, m), 1)
    centres = gather_points(xyz.transpose(1, 2), fps_vec).transpose(1, 2).contiguous()
    r2 = r * r  # float64, as ball_query on float64 points
    with console.status("ball query"):
        bq_vec = timed("ball_query_vectorised", lambda: ball_query(xyz, centres, r, k), args.repeats)
        bq_loop = timed("ball_query_per_sample_loop", lambda: torch.cat([
            ball_query(xyz[i:i + 1], centres[i:i + 1], r, k) for i in range(b)]), args.repeats)
        c0 = [tuple(map(float, q)) for q in centres[0].double().cpu().numpy()]
        bq_py = timed("ball_query_scalar_loop_cloud0", lambda: ball_query_scalar(cloud0, c0, r2, k), 1)

    # The scalar loops compute in float64 (Python floats): compare them with the vectorised ops on float64 copies
    # of cloud 0 (same arithmetic); the batched and per-sample float32 runs must agree exactly with each other.
    x64, c64 = xyz[:1].double().cpu(), centres[:1].double().cpu()
    fps_agree = torch.equal(fps_vec, fps_loop) and farthest_point_sample(x64, m)[0].tolist() == fps_py
    bq_agree = torch.equal(bq_vec, bq_loop) and ball_query(x64, c64, r, k)[0].tolist() == bq_py
    inside = int((((c64[0, :, None] - x64[0, None]) ** 2).sum(-1) < r2).sum())
    agree = fps_agree and bq_agree

    table = Table(title=f"PointNet++ operators: {b} clouds x {args.points} points -> {m} centres, "
                        f"{k} neighbours within {r} ({inside / m:.0f} per ball on average), {args.device}")
    for col in ("", "CPU time (s)" if device.type == "cpu" else "wall time (s)", "vectorised speed-up", "agree"):
        table.add_column(col, justify="right")
    key = cpu if device.type == "cpu" else wall
    for op, agree_op in (("fps", fps_agree), ("ball_query", bq_agree)):
        t_vec = key[f"{op}_vectorised"]
        t_py = cpu[f"{op}_scalar_loop_cloud0"] * b
        table.add_row(f"{op}: scalar Python loop (cloud 0 x {b})", f"{t_py:.3f}", f"{t_py / t_vec:,.0f}x",
                      str(agree_op))
        t_loop = key[f"{op}_per_sample_loop"]
        table.add_row(f"{op}: per-sample loop", f"{t_loop:.3f}", f"{t_loop / t_vec:.1f}x", str(agree_op))
        table.add_row(f"{op}: vectorised", f"{t_vec:.3f}", "1.0x", "-")
    console.print(table)
    console.print(f"all indices agree: {agree}")

    report = {
        "benchmark": "pointnet2_operators",
        "batch": b, "points": args.points, "centres": m, "nsample": k, "radius": r, "seed": args.seed,
        "repeats": args.repeats, "threads": args.threads, "device": args.device,
        "mean_points_per_ball": inside / m,
        "cpu_seconds": cpu, "wall_seconds": wall,
        "scalar_loop_scaling": f"scalar loops ran on cloud 0 only; speed-ups multiply their time by {b}",
        "speedup_vs_per_sample_loop": {op: key[f"{op}_per_sample_loop"] / key[f"{op}_vectorised"]
                                       for op in ("fps", "ball_query")},
        "speedup_vs_scalar_loop": {op: cpu[f"{op}_scalar_loop_cloud0"] * b / key[f"{op}_vectorised"]
                                   for op in ("fps", "ball_query")},
        "agree": {"fps": fps_agree, "ball_query": bq_agree},
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "note": "best of --repeats; CPU seconds of this process on cpu, synchronised wall seconds on cuda; "
                "ratios are from the same run",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    console.print(f"wrote {args.out}")
    if not agree:
        sys.exit(1)
    return report


if __name__ == "__main__":
    main()
