"""Speed and memory of the synthetic renderer (CPU, numpy).

Cases: 256x256 single-view frames (RGB + depth + parts + instance mask + keypoints, 1-2 people, occluders) in one
process and in 2 worker processes (frames are independent, seeded by index), and a 4-view 1000x1000 rig with
Human3.6M-like lens distortion (rays cached per camera, as for a fixed rig). Reports frames/s and the peak resident
memory of the process; the goal is >= 50 frames/s at 256x256 on 2 cores.

    python benchmarks/synthetic.py [--frames 200] [--rig-frames 6]

Prints a table and writes ``benchmarks/results/synthetic.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from humanvision.data.synthetic import SceneConfig, generate_frame

SMALL = SceneConfig(size=(256, 256), people=(1, 2))
RIG = SceneConfig(size=(1000, 1000), views=4, distortion=True)


def _chunk(args: tuple[int, int]) -> int:
    start, n = args
    for i in range(start, start + n):
        generate_frame(SMALL, 0, i)
    return n


def _rate(cfg: SceneConfig, n: int, start: int = 0) -> float:
    generate_frame(cfg, 0, start)  # warm-up (ray cache, imports)
    t = time.perf_counter()
    for i in range(start + 1, start + 1 + n):
        generate_frame(cfg, 0, i)
    return n / (time.perf_counter() - t)


def _parallel_rate(n: int, workers: int) -> float:
    per = n // workers
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_chunk, [(10_000 + k, 2) for k in range(workers)]))  # start workers, warm up
        t = time.perf_counter()
        done = sum(pool.map(_chunk, [(k * per, per) for k in range(workers)]))
        return done / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--rig-frames", type=int, default=6)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "synthetic.json"))
    a = ap.parse_args()
    results = {
        "single_256_fps_1proc": _rate(SMALL, a.frames),
        "single_256_fps_2proc": _parallel_rate(a.frames, 2),
        "rig_4x1000_frames_per_s": _rate(RIG, a.rig_frames),
    }
    results["rig_4x1000_views_per_s"] = 4 * results["rig_4x1000_frames_per_s"]
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["goal_256_fps"] = 50.0
    results["env"] = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()}
    from rich.console import Console
    from rich.table import Table

    table = Table(title="humanvision synthetic renderer (CPU)")
    table.add_column("case")
    table.add_column("value", justify="right")
    table.add_row("256x256 single view, 1 process (frames/s)", f"{results['single_256_fps_1proc']:.1f}")
    table.add_row("256x256 single view, 2 processes (frames/s)", f"{results['single_256_fps_2proc']:.1f}")
    table.add_row("4-view 1000x1000 rig, distorted (frames/s)", f"{results['rig_4x1000_frames_per_s']:.2f}")
    table.add_row("peak resident memory (MB)", f"{results['peak_rss_mb']:.0f}")
    Console().print(table)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
