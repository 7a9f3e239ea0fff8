"""Speed of robust multi-view triangulation: one vectorised call vs per-frame Python loops, on the same data.

Synthetic, seeded data: ``--frames`` frames of ``--joints`` joints seen by ``--views`` pinhole cameras around the
person, 1 px noise, ``--corrupt`` of the (frame, view, joint) detections moved 40-150 px. Three ways to run
the same algorithm (:func:`humanvision.geometry.triangulate_robust`: pair hypotheses, inlier count, leave-one-out
pruning, Gauss-Newton refinement, one re-selection):

* ``vectorised``: one call over all frames and joints;
* ``per-frame loop``: a Python loop over frames, each call vectorised over the joints of that frame;
* ``per-frame, per-joint loop``: Python loops over frames and joints with the same algorithm written for one
  point at a time (3x3 ``np.linalg.solve``), the way anipose / Pose2Sim structure their triangulation.

The loops must give the same points (max difference reported; the run fails above 1e-6 of the scene size).
Also timed: the whole ``triangulate_sequence`` pipeline (undistortion, temporal check, interpolation, report).
Times are CPU seconds of this process (``time.process_time``; run with ``OMP_NUM_THREADS=1``), so that other
load on a shared machine does not distort the ratios; wall-clock seconds are recorded too.

    python benchmarks/triangulate.py --frames 2000 --out benchmarks/results/triangulate.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np


def synthetic(frames: int, joints: int, views: int, corrupt: float, seed: int):
    from humanvision.geometry import Camera

    rng = np.random.default_rng(seed)
    cams = []
    for k in range(views):
        a = 2 * np.pi * k / views + rng.uniform(-0.2, 0.2)
        eye = [4500 * np.cos(a), 4500 * np.sin(a), rng.uniform(1000, 2600)]
        f = rng.uniform(1000, 1200)
        cams.append(Camera.look_at(eye, [0, 0, 900], K=[[f, 0, 640], [0, f, 512], [0, 0, 1]], width=1280,
                                   height=1024, name=f"cam{k}"))
    rest = rng.normal(size=(joints, 3)) * [200, 100, 450] + [0, 0, 900]
    t = np.arange(frames)[:, None, None] / 30.0
    X = rest + 100 * np.sin(2 * np.pi * rng.uniform(0.2, 1.5, (1, joints, 3)) * t + rng.uniform(0, 6, (1, joints, 3)))
    uv = np.stack([c.project(X) for c in cams], 1) + rng.normal(size=(frames, views, joints, 2))
    bad = rng.random((frames, views, joints)) < corrupt
    ang, r = rng.uniform(0, 2 * np.pi, bad.sum()), rng.uniform(40, 150, bad.sum())
    uv[bad] += np.stack([r * np.cos(ang), r * np.sin(ang)], -1)
    conf = rng.uniform(0.5, 1.0, (frames, views, joints))
    return cams, X, uv, conf


# ----------------------------------------------------------------------------------- one point at a time (baseline)
def _project(P: np.ndarray, X: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = P[:, :, :3] @ X + P[:, :, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.hypot(y[:, 0] / y[:, 2] - uv[:, 0], y[:, 1] / y[:, 2] - uv[:, 1]), y[:, 2]


def _solve(M: np.ndarray, b: np.ndarray) -> np.ndarray:
    a00, a11, a22 = M[0, 0], M[1, 1], M[2, 2]
    det = np.linalg.det(M)
    if not det > 1e-12 * abs(a00 * a11 * a22):
        return np.full(3, np.nan)
    return np.linalg.solve(M, b)


def robust_point(P, uv, w, threshold, min_views, refine_iters=5):
    """The algorithm of triangulate_robust for one joint: P (V, 3, 4), uv (V, 2), w (V,)."""
    V = len(P)
    usable = (w > 0) & np.isfinite(uv).all(-1)
    uv = np.where(usable[:, None], uv, 0.0)
    w = np.where(usable, w, 0.0)
    Pn = P / np.linalg.norm(P[:, 2, :3], axis=-1)[:, None, None]
    r1 = uv[:, 0, None] * Pn[:, 2] - Pn[:, 0]
    r2 = uv[:, 1, None] * Pn[:, 2] - Pn[:, 1]
    Mv = np.einsum("vi,vj->vij", r1[:, :3], r1[:, :3]) + np.einsum("vi,vj->vij", r2[:, :3], r2[:, :3])
    gv = r1[:, :3] * r1[:, 3:] + r2[:, :3] * r2[:, 3:]
    best, best_score = None, -np.inf
    for a, b in combinations(range(V), 2):
        if not (usable[a] and usable[b]):
            continue
        X = _solve(Mv[a] + Mv[b], -(gv[a] + gv[b]))
        if not np.isfinite(X).all():
            continue
        e, z = _project(P, X, uv)
        if (usable & ~(z > 0)).any():
            continue
        good = usable & (z > 0) & (e < threshold)
        n = good.sum()
        score = n - 0.5 * (e[good].sum() / max(n, 1)) / threshold
        if score > best_score:
            best, best_score = good, score
    if best is None:
        return np.full(3, np.nan), np.zeros(V, bool)
    inl = best.copy()
    while inl.sum() >= 3:  # leave-one-out pruning, studentized
        c = w * w * inl
        X_in = _solve((c[:, None, None] * Mv).sum(0), -(c[:, None] * gv).sum(0))
        if np.isfinite(X_in).all() and not _project(P, X_in, uv)[0][inl].max() > threshold / 4:
            break
        stats = np.full(V, -np.inf)
        for v in np.flatnonzero(inl):
            rest = inl.copy()
            rest[v] = False
            c = w * w * rest
            X = _solve((c[:, None, None] * Mv).sum(0), -(c[:, None] * gv).sum(0))
            y = P[:, :, :3] @ X + P[:, :, 3]
            p = y[:, :2] / y[:, 2:]
            Jac = (P[:, :2, :3] - p[:, :, None] * P[:, 2:3, :3]) / y[:, 2, None, None]
            H = sum(Jac[u].T @ Jac[u] for u in np.flatnonzero(rest))
            r = p[v] - uv[v]
            S = np.eye(2) + Jac[v] @ np.stack([_solve(H, Jac[v][0]), _solve(H, Jac[v][1])], 1)
            s = np.sqrt(max(r @ np.linalg.solve(S, r), 0.0)) if y[v, 2] > 0 else np.inf
            stats[v] = s if np.isfinite(X).all() and not np.isnan(s) else -np.inf
        worst = int(stats.argmax())
        if not stats[worst] > threshold:
            break
        inl[worst] = False

    def estimate(inl):
        c = w * w * inl
        X = _solve((c[:, None, None] * Mv).sum(0), -(c[:, None] * gv).sum(0))
        if not (np.isfinite(X).all() and inl.sum() >= 2):
            return np.full(3, np.nan)
        ww = w * inl
        for _ in range(refine_iters):
            y = P[:, :, :3] @ X + P[:, :, 3]
            p = y[:, :2] / y[:, 2:]
            r = p - uv
            Jac = (P[:, :2, :3] - p[:, :, None] * P[:, 2:3, :3]) / y[:, 2, None, None]
            H = np.einsum("v,vki,vkj->ij", ww, Jac, Jac)
            g = np.einsum("v,vki,vk->i", ww, Jac, r)
            Xn = X - _solve(H, g)
            yn = P[:, :, :3] @ Xn + P[:, :, 3]
            cost_n = (ww * ((yn[:, :2] / yn[:, 2:] - uv) ** 2).sum(-1)).sum()
            if not (np.isfinite(cost_n) and cost_n < (ww * (r**2).sum(-1)).sum()):
                break
            X = Xn
        return X

    X = estimate(inl)
    e, z = _project(P, X, uv)
    re = usable & (z > 0) & (e < threshold)
    if (re != inl).any() and re.sum() >= min_views:
        inl, X = re, estimate(re)
    if not (np.isfinite(X).all() and inl.sum() >= min_views):
        return np.full(3, np.nan), np.zeros(V, bool)
    return X, inl


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--joints", type=int, default=25)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--corrupt", type=float, default=0.2)
    p.add_argument("--threshold", type=float, default=15.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="runs of the vectorised and per-frame versions (best "
                                                          "time reported); the per-joint loop runs once")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "triangulate.json")
    args = p.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    from humanvision.data.readers import Detections2D
    from humanvision.geometry import triangulate_robust
    from humanvision.methods.triangulate import TriangulateConfig, triangulate_sequence

    console = Console()
    cams, X_true, uv, conf = synthetic(args.frames, args.joints, args.views, args.corrupt, args.seed)
    P = np.stack([c.projection_matrix for c in cams])
    kw = {"threshold": args.threshold, "min_views": 2}

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

    with console.status("vectorised"):
        vec, t_vec = timed("vectorised", lambda: triangulate_robust(P, uv, conf, **kw).points, args.repeats)
    with console.status("per-frame loop"):
        per_frame, t_frame = timed("per_frame_loop", lambda: np.stack([
            triangulate_robust(P, uv[f], conf[f], **kw).points for f in range(args.frames)]), args.repeats)
    with console.status("per-frame, per-joint loop"):
        scalar, t_scalar = timed("per_frame_per_joint_loop", lambda: np.stack([np.stack([
            robust_point(P, uv[f, :, j], conf[f, :, j], args.threshold, 2)[0] for j in range(args.joints)])
            for f in range(args.frames)]), 1)
    dets = {c.name: Detections2D(np.arange(args.frames), uv[:, v, None], conf[:, v, None], "coco17"
                                 if args.joints == 17 else "body25" if args.joints == 25 else "coco17", c.name)
            for v, c in enumerate(cams)} if args.joints in (17, 25) else None
    t_pipe = None
    if dets is not None:
        with console.status("triangulate_sequence pipeline"):
            _, t_pipe = timed("pipeline", lambda: triangulate_sequence(dets, {c.name: c for c in cams},
                                                                      TriangulateConfig(
                                                                          reprojection_threshold=args.threshold)),
                              args.repeats)

    def diff(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
        same_nan = np.isnan(a).all(-1) == np.isnan(b).all(-1)
        both = ~np.isnan(a).all(-1) & ~np.isnan(b).all(-1)
        return float(np.abs(a[both] - b[both]).max(initial=0.0)), int((~same_nan).sum())

    d_frame, nan_frame = diff(vec, per_frame)
    d_scalar, nan_scalar = diff(vec, scalar)
    err = np.linalg.norm(vec - X_true, axis=-1)
    points = args.frames * args.joints
    scale = float(np.abs(X_true).max())
    agree = d_frame <= 1e-6 * scale and d_scalar <= 1e-6 * scale and nan_frame == 0 and nan_scalar == 0

    table = Table(title=f"robust triangulation: {args.frames} frames x {args.joints} joints x {args.views} views, "
                        f"{args.corrupt:.0%} corrupted detections")
    for col in ("", "CPU time (s)", "points/s", "vectorised speed-up", "max |diff| (mm)"):
        table.add_column(col, justify="right")
    table.add_row("per-frame, per-joint loop", f"{t_scalar:.3f}", f"{points / t_scalar:,.0f}",
                  f"{t_scalar / t_vec:.1f}x", f"{d_scalar:.1e}")
    table.add_row("per-frame loop", f"{t_frame:.3f}", f"{points / t_frame:,.0f}", f"{t_frame / t_vec:.1f}x",
                  f"{d_frame:.1e}")
    table.add_row("vectorised", f"{t_vec:.3f}", f"{points / t_vec:,.0f}", "1.0x", "-")
    if t_pipe is not None:
        table.add_row("whole pipeline (triangulate_sequence)", f"{t_pipe:.3f}", f"{points / t_pipe:,.0f}", "-", "-")
    console.print(table)
    console.print(f"3D error of the vectorised result: median {np.nanmedian(err):.2f} mm, NaN joints "
                  f"{int(np.isnan(err).sum())}/{points}; loops agree: {agree}")

    report = {
        "benchmark": "triangulate_robust",
        "frames": args.frames, "joints": args.joints, "views": args.views, "corrupt": args.corrupt,
        "threshold_px": args.threshold, "seed": args.seed, "repeats": args.repeats,
        "cpu_seconds": {"vectorised": t_vec, "per_frame_loop": t_frame, "per_frame_per_joint_loop": t_scalar,
                        "pipeline": t_pipe},
        "wall_seconds": wall,
        "speedup_vs_per_frame_loop": t_frame / t_vec,
        "speedup_vs_per_frame_per_joint_loop": t_scalar / t_vec,
        "max_abs_difference_mm": {"per_frame_loop": d_frame, "per_frame_per_joint_loop": d_scalar},
        "nan_pattern_differences": {"per_frame_loop": nan_frame, "per_frame_per_joint_loop": nan_scalar},
        "median_error_mm": float(np.nanmedian(err)), "nan_joints": int(np.isnan(err).sum()),
        "agree": agree, "python": platform.python_version(), "numpy": np.__version__,
        "note": "CPU seconds of this process (best of --repeats), single-threaded; ratios are from the same run",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    console.print(f"wrote {args.out}")
    if not agree:
        sys.exit(1)
    return report


if __name__ == "__main__":
    main()
