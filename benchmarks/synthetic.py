"""Speed and memory of the synthetic renderer (CPU, numpy), and what each scene preset produces.

Cases: 256x256 single-view frames (RGB + depth + parts + instance mask + keypoints, 1-2 people, occluders) in one
process and in 2 worker processes (frames are independent, seeded by index), and a 4-view 1000x1000 rig with
Human3.6M-like lens distortion (rays cached per camera, as for a fixed rig). Reports frames/s and the peak resident
memory of the process; the goal is >= 50 frames/s at 256x256 on 2 cores.

Presets (:mod:`humanvision.data.synthetic.presets`): frames/s of each at its own size and views (``legacy`` is
today's ``SceneConfig()``, 256x256), one process, with photo backdrops from ``--backgrounds`` (default
``data/backgrounds`` when it exists, else procedural ones), and :func:`preset_statistics` of each (person box
height / image height, truncated fraction, people per image, overlaps, coco17 joint visibility; multi-view presets
count ``--stats-frames / views`` frames).

    python benchmarks/synthetic.py [--frames 200] [--rig-frames 6] [--preset-frames 40] [--stats-frames 200]
                                   [--backgrounds DIR]

Prints tables and writes ``benchmarks/results/synthetic.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from humanvision.data.synthetic import SceneConfig, generate_frame
from humanvision.data.synthetic.backgrounds import DEFAULT_BACKGROUNDS
from humanvision.data.synthetic.presets import PRESETS, preset_statistics, scene_config

SMALL = SceneConfig(size=(256, 256), people=(1, 2))
RIG = SceneConfig(size=(1000, 1000), views=4, distortion=True)


def _chunk(args: tuple[int, int]) -> int:
    start, n = args
    for i in range(start, start + n):
        generate_frame(SMALL, 0, i)
    return n


def _rate(cfg: SceneConfig, n: int, start: int = 0) -> float:
    generate_frame(cfg, 0, start)  # warm-up (ray cache, imports, background photos)
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


def _presets(frames: int, rig_frames: int, stats_frames: int, backgrounds: Path | None) -> tuple[dict, dict]:
    speed, stats = {}, {}
    for name, preset in PRESETS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no background folder": recorded in the JSON instead
            cfg = scene_config(name, backgrounds=backgrounds if preset.photos else None)
        n = frames if cfg.views == 1 else rig_frames
        fps = _rate(cfg, n)
        speed[name] = {"frames_per_s": fps, "views_per_s": fps * cfg.views, "size": list(cfg.size),
                       "views": cfg.views, "frames": n,
                       "backgrounds": str(cfg.backgrounds) if cfg.backgrounds is not None else None}
        stats[name] = preset_statistics(cfg, n=max(stats_frames // cfg.views, 1))
    return speed, stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--rig-frames", type=int, default=6)
    ap.add_argument("--preset-frames", type=int, default=40)
    ap.add_argument("--stats-frames", type=int, default=200)
    ap.add_argument("--backgrounds", type=Path, default=DEFAULT_BACKGROUNDS if DEFAULT_BACKGROUNDS.is_dir() else None)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "synthetic.json"))
    a = ap.parse_args()
    results = {
        "single_256_fps_1proc": _rate(SMALL, a.frames),
        "single_256_fps_2proc": _parallel_rate(a.frames, 2),
        "rig_4x1000_frames_per_s": _rate(RIG, a.rig_frames),
    }
    results["rig_4x1000_views_per_s"] = 4 * results["rig_4x1000_frames_per_s"]
    results["presets"], results["preset_statistics"] = _presets(a.preset_frames, a.rig_frames, a.stats_frames,
                                                                a.backgrounds)
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["goal_256_fps"] = 50.0
    results["env"] = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()}
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 120))
    table = Table(title="humanvision synthetic renderer (CPU)")
    table.add_column("case")
    table.add_column("value", justify="right")
    table.add_row("256x256 single view, 1 process (frames/s)", f"{results['single_256_fps_1proc']:.1f}")
    table.add_row("256x256 single view, 2 processes (frames/s)", f"{results['single_256_fps_2proc']:.1f}")
    table.add_row("4-view 1000x1000 rig, distorted (frames/s)", f"{results['rig_4x1000_frames_per_s']:.2f}")
    for name, r in results["presets"].items():
        where = "photos" if r["backgrounds"] else "procedural"
        table.add_row(f"preset {name}: {r['views']} x {r['size'][0]}x{r['size'][1]}, {where}, 1 process "
                      f"(frames/s)", f"{r['frames_per_s']:.2f}")
    table.add_row("peak resident memory (MB)", f"{results['peak_rss_mb']:.0f}")
    console.print(table)

    st = Table(title="scene presets: person box height / image height, truncated, close-ups (box >= 0.9 H), people "
                     "per image, overlapping (IoU >= 0.1), coco17 joints visible / occluded / outside")
    for col in ("preset", "box h/H p10-50-90", "trunc.", "close", "ppl/img", "overlap", "vis/occ/out"):
        st.add_column(col, justify="right" if col != "preset" else "left")
    for name, s in results["preset_statistics"].items():
        q = s["box_height"]["p10_p25_p50_p75_p90"]
        j = s["joints"]
        st.add_row(name, f"{q[0]:.2f}-{q[2]:.2f}-{q[4]:.2f}", f"{s['truncated']:.0%}", f"{s['close_ups']:.0%}",
                   f"{s['people_per_image']['mean']:.2f}", f"{s['overlapping']:.0%}",
                   f"{j['visible']:.0%}/{j['occluded']:.0%}/{j['outside']:.0%}")
    console.print(st)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
