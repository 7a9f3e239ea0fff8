"""Forward throughput of an exported model on onnxruntime vs the same model in PyTorch eager, fp32, on the CPU.

For the demo model (``lateral_small`` at 192x144, the synthetic recipe's) and ViTPose-S (classic decoder, 256x192),
each exported by :func:`humanvision.export.export_onnx` (which also checks parity, reported in the table), the
model forward (normalised crops -> heatmaps, no flip test, no decoding) is timed at batch 1 and 32 in PyTorch eager
(``torch.no_grad``, fp32, contiguous memory) and in onnxruntime (CPU provider, default graph optimisations), in
interleaved rounds of one call each, after one warm-up call each. Both run with the same number of intra-op
threads (``--threads``, default 1). Times are the medians of this process's CPU seconds per call
(``time.process_time``, robust to other load on a shared machine; with several threads it sums them) and of the
wall-clock seconds; the ratio is PyTorch time / onnxruntime time in the same run (> 1: onnxruntime is faster).
Weights are random (speed does not depend on them).

int8 rows (``--int8 dynamic static``, the default; ``--int8`` alone skips them): the fp32 file quantised by
:func:`humanvision.export.quantize_onnx` (static: calibrated on 16 crops of drawn people made by the model's
inference transform), timed in the same interleaved rounds against the fp32 onnxruntime session (ratio = fp32
time / int8 time, > 1: int8 is faster), with the keypoint differences of its parity report (crop pixels; random
weights have near-equal heatmap maxima, so the max is dominated by argmax jumps: the median and the share within
1 px say more).

    OMP_NUM_THREADS=1 python benchmarks/export.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

MODELS = (("lateral_small", (144, 192)), ("vitpose_small", (192, 256)))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def timed(fn) -> tuple[float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c0, time.perf_counter() - w0


def interleaved(runs: dict, rounds: int) -> dict[str, np.ndarray]:
    """One warm-up call of each function, then ``rounds`` rounds of one call each, interleaved: per name the
    median ``(cpu_s, wall_s)`` of its calls."""
    for fn in runs.values():
        fn()
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
    for _ in range(rounds):
        for k, fn in runs.items():
            times[k].append(timed(fn))
    return {k: np.median(np.array(v), axis=0) for k, v in times.items()}


def bench_int8(report, transform, modes: list[str], batches: list[int], rounds: int, so, tmp: Path,
               fp32_session) -> list[dict]:
    """int8 (``modes``) vs fp32 onnxruntime forward time of one exported model, and the keypoint differences."""
    import onnxruntime as ort

    from humanvision.export import quantize_onnx, realish_crops

    name, (w, h) = report.metadata["model"], report.metadata["input"]["size"]
    calib = realish_crops(transform, n=16, seed=1).numpy()
    rows = []
    for mode in modes:
        q = quantize_onnx(report.path, tmp / f"{report.path.stem}.{mode}.int8.onnx", mode,
                          calib if mode == "static" else None, verbose=False)
        session = ort.InferenceSession(str(q.path), so, providers=["CPUExecutionProvider"])
        p = q.parity
        for batch in batches:
            xn = np.random.default_rng(batch).standard_normal((batch, 3, h, w)).astype(np.float32)
            runs = {"fp32": lambda xn=xn: fp32_session.run(None, {"input": xn}),
                    "int8": lambda xn=xn, s=session: s.run(None, {"input": xn})}
            med = interleaved(runs, rounds)
            row = {"model": name, "input": f"{h}x{w}", "batch": batch, "mode": mode, "rounds": rounds,
                   "fp32_cpu_s": float(med["fp32"][0]), "int8_cpu_s": float(med["int8"][0]),
                   "fp32_wall_s": float(med["fp32"][1]), "int8_wall_s": float(med["int8"][1]),
                   "int8_mib": q.path.stat().st_size / 2**20, "fp32_mib": report.path.stat().st_size / 2**20,
                   "heatmap_max_abs_diff": max(p["heatmap_max_abs_diff"].values()),
                   "keypoint_max_abs_diff_px": max(p["keypoint_max_abs_diff_px"].values()),
                   "keypoint_median_diff_px": max(p["keypoint_median_diff_px"].values()),
                   "keypoint_within_1px": min(p["keypoint_within_1px"].values())}
            row["ratio_cpu"] = row["fp32_cpu_s"] / row["int8_cpu_s"]
            row["ratio_wall"] = row["fp32_wall_s"] / row["int8_wall_s"]
            rows.append(row)
            print(f"  {name} int8 {mode} batch {batch}: {row['ratio_cpu']:.2f}x fp32 onnxruntime, keypoints max "
                  f"|diff| {row['keypoint_max_abs_diff_px']:.3g} px", file=sys.stderr, flush=True)
    return rows


def bench_model(name: str, size: tuple[int, int], batches: list[int], rounds: int, threads: int,
                tmp: Path, int8: list[str] = ()) -> tuple[list[dict], list[dict]]:
    import onnxruntime as ort

    from humanvision.export import export_onnx
    from humanvision.methods.topdown import DataConfig, TopDownPose, build_codec, build_transform
    from humanvision.models import create_model

    torch.manual_seed(0)
    model = create_model(name, input_size=size).eval()
    data = DataConfig()
    method = TopDownPose(model, build_codec(model, data), "coco17").eval()
    transform = build_transform(method, data, train=False)
    report = export_onnx(method, transform, tmp / f"{name}.onnx")
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(report.path), so, providers=["CPUExecutionProvider"])
    w, h = size
    rows = []
    for batch in batches:
        x = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(batch))
        xn = x.numpy()

        def run_torch(x=x) -> None:
            with torch.no_grad():
                model(x)

        def run_ort(xn=xn) -> None:
            session.run(None, {"input": xn})

        med = interleaved({"torch": run_torch, "ort": run_ort}, rounds)  # (cpu, wall)
        row = {"model": name, "input": f"{h}x{w}", "batch": batch, "rounds": rounds,
               "torch_cpu_s": float(med["torch"][0]), "ort_cpu_s": float(med["ort"][0]),
               "torch_wall_s": float(med["torch"][1]), "ort_wall_s": float(med["ort"][1]),
               "parity_max_abs_diff": max(report.parity["max_abs_diff"].values()),
               "export_seconds": report.seconds}
        row["torch_crops_per_cpu_s"] = batch / row["torch_cpu_s"]
        row["ort_crops_per_cpu_s"] = batch / row["ort_cpu_s"]
        row["ratio_cpu"] = row["torch_cpu_s"] / row["ort_cpu_s"]
        row["ratio_wall"] = row["torch_wall_s"] / row["ort_wall_s"]
        rows.append(row)
        print(f"  {name} batch {batch}: torch {row['torch_crops_per_cpu_s']:.1f} crops/CPU-s, onnxruntime "
              f"{row['ort_crops_per_cpu_s']:.1f} ({row['ratio_cpu']:.2f}x)", file=sys.stderr, flush=True)
    return rows, bench_int8(report, transform, list(int8), batches, rounds, so, tmp, session)


def main(argv: list[str] | None = None) -> dict:
    import onnxruntime as ort
    from rich.console import Console
    from rich.table import Table

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--rounds", type=int, default=3, help="timed calls per setting (interleaved)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of both runtimes")
    p.add_argument("--int8", nargs="*", choices=["dynamic", "static"], default=["dynamic", "static"],
                   help="int8 modes to compare with fp32 onnxruntime (none: --int8 alone)")
    p.add_argument("--models", nargs="+", default=[m for m, _ in MODELS], help="a subset of the models")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "export.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows, int8_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, size in MODELS:
            if name in args.models:
                r, q = bench_model(name, size, args.batches, args.rounds, args.threads, Path(tmp), args.int8)
                rows, int8_rows = rows + r, int8_rows + q
    table = Table(title=f"forward, fp32, {args.threads} thread(s), {cpu_name()}: PyTorch eager vs onnxruntime "
                        "(median of interleaved rounds)")
    for col in ("model", "input", "batch", "PyTorch crops/CPU-s", "onnxruntime crops/CPU-s", "ratio (CPU time)",
                "ratio (wall)", "parity max |diff|"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(r["model"], r["input"], str(r["batch"]), f"{r['torch_crops_per_cpu_s']:.2f}",
                      f"{r['ort_crops_per_cpu_s']:.2f}", f"{r['ratio_cpu']:.2f}x", f"{r['ratio_wall']:.2f}x",
                      f"{r['parity_max_abs_diff']:.1e}")
    Console(width=150).print(table)
    if int8_rows:
        table = Table(title=f"forward, {args.threads} thread(s): onnxruntime int8 vs fp32 (ratio = fp32 time / int8 "
                            "time), keypoint differences in crop pixels")
        for col in ("model", "batch", "int8", "ratio (CPU time)", "ratio (wall)", "MiB int8 / fp32",
                    "heatmap max |diff|", "kp max |diff|", "kp median", "kp within 1 px"):
            table.add_column(col, justify="left" if col == "model" else "right")
        for r in int8_rows:
            table.add_row(r["model"], str(r["batch"]), r["mode"], f"{r['ratio_cpu']:.2f}x", f"{r['ratio_wall']:.2f}x",
                          f"{r['int8_mib']:.1f} / {r['fp32_mib']:.1f}", f"{r['heatmap_max_abs_diff']:.2g}",
                          f"{r['keypoint_max_abs_diff_px']:.3g}", f"{r['keypoint_median_diff_px']:.2g}",
                          f"{100 * r['keypoint_within_1px']:.0f}%")
        Console(width=150).print(table)
    report = {"benchmark": "export", "cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__,
              "onnxruntime": ort.__version__, "load_average": list(os.getloadavg()), "rows": rows, "int8_rows": int8_rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
