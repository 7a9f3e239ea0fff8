"""Speed and memory of the top-down 2D pose method: inference, a training step and the data pipeline.

1. Inference crops/s of ViTPose-B at 256x192 (model forward: crop -> heatmaps, no flip test), batch 1 and 32,
   fp32 and bf16 autocast, eager and ``torch.compile``; every row is also given as a ratio to the fp32, eager,
   batch-1 row measured in the same run (interleaved with it).
2. Training images/s of the synthetic recipe's model (``DEMO_RECIPE``: ``lateral_small`` at 192x144, batch 32: forward,
   JointsMSE loss, backward, AdamW step with the engine's parameter groups) in fp32, fp32 + channels-last, bf16
   autocast and bf16 + channels-last (ratios to fp32; ``benchmarks/precision.py`` adds an AVX2-only run), and its
   peak memory (fp32): on CUDA
   ``torch.cuda.max_memory_allocated``; on CPU the growth of the process's peak RSS (``ru_maxrss``) over the
   training loop, which runs first so that no earlier section has raised the peak.
3. Data pipeline crops/s per worker: ``TopDownDataset`` over a freshly synthesised COCO-format set (the synthetic
   recipe's 256x256 images), training mode (decode + augment + affine crop + heatmap targets) and inference mode,
   in the main process (``num_workers=0``).

Inference configurations are timed in interleaved rounds (robust to a shared machine's changing load) and the
training step by the median over its iterations, after warm-up; CUDA timings synchronise the device.

    python benchmarks/pose2d.py --quick --device cpu
    python benchmarks/pose2d.py --device cuda --out benchmarks/results/pose2d_h100.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], device: torch.device, warmup: int, min_iters: int, min_time: float,
            max_iters: int) -> tuple[float, int]:
    """Seconds per call (the median of the timed calls: robust to other processes on a shared machine) and the
    number of timed calls: ``warmup`` untimed calls, then at least ``min_iters`` and until ``min_time`` seconds
    have passed (at most ``max_iters``)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_iters or (time.perf_counter() - start < min_time and len(times) < max_iters):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), len(times)


def budgets(device: torch.device, quick: bool, batch: int) -> dict:
    """Warm-up calls, rounds and calls per round of one inference configuration."""
    if device.type == "cuda":
        return {"warmup": 5 if quick else 20, "rounds": 5 if quick else 10, "calls": 20 if batch == 1 else 5}
    if batch > 1:  # seconds per call on a CPU
        return {"warmup": 1, "rounds": 2 if quick else 5, "calls": 1}
    return {"warmup": 2, "rounds": 3 if quick else 5, "calls": 2 if quick else 5}


# ------------------------------------------------------------------------------------------------ inference
def bench_inference(device: torch.device, quick: bool, compile_: bool, console) -> list[dict]:
    """All configurations are warmed up (and compiled) first, then timed in interleaved rounds (each round
    times every configuration once), so that a shared machine's changing load hits all of them alike; a
    configuration's time is the median over rounds of its mean seconds per call."""
    from humanvision.models import create_model

    model = create_model("vitpose_base", input_size=(192, 256)).eval().to(device)
    w, h = model.input_size
    compiled = torch.compile(model) if compile_ else None
    configs = []
    for mode in ("eager", "compile") if compile_ else ("eager",):
        for precision in ("fp32", "bf16"):
            for batch in (1, 32):
                net, x = (model if mode == "eager" else compiled), torch.randn(batch, 3, h, w, device=device)

                def step(net=net, x=x, bf16=precision == "bf16") -> None:
                    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                        net(x)

                row = {"model": "vitpose_base", "input": f"{h}x{w}", "mode": mode, "precision": precision,
                       "batch": batch, "times": []}
                configs.append((row, step, budgets(device, quick, batch)))

    for row, step, b in configs:
        label = f"ViTPose-B {row['mode']} {row['precision']} batch {row['batch']}"
        try:
            with console.status(f"warm-up {label}"):
                t0 = time.perf_counter()
                for _ in range(b["warmup"]):
                    step()
                sync(device)
            row["warmup_s"] = time.perf_counter() - t0
        except RuntimeError as e:  # no bf16 kernel, no working compiler (dynamo/inductor errors)
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            console.log(f"{label}: {row['error']}")
    live = [c for c in configs if "error" not in c[0]]
    for r in range(max((b["rounds"] for _, _, b in live), default=0)):
        with console.status(f"timing round {r + 1}"):
            for row, step, b in live:
                if r >= b["rounds"]:
                    continue
                t0 = time.perf_counter()
                for _ in range(b["calls"]):
                    step()
                sync(device)
                row["times"].append((time.perf_counter() - t0) / b["calls"])
    rows = []
    for row, _, b in configs:
        times = row.pop("times")
        if times:
            sec = float(np.median(times))
            row.update(ms_per_batch=1e3 * sec, crops_per_s=row["batch"] / sec, rounds=len(times),
                       calls_per_round=b["calls"], spread=max(times) / min(times))
            console.log(f"ViTPose-B {row['mode']} {row['precision']} batch {row['batch']}: "
                        f"{row['crops_per_s']:.2f} crops/s (max/min over rounds {row['spread']:.2f})")
        rows.append(row)
    base = rows[0]  # eager fp32 batch 1
    for r in rows:
        if "crops_per_s" in r and "crops_per_s" in base:
            r["ratio_vs_fp32_eager_b1"] = r["crops_per_s"] / base["crops_per_s"]
    return rows


# ------------------------------------------------------------------------------------------------- training
def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def bench_training(device: torch.device, quick: bool, console, batch: int = 32) -> dict:
    """The demo recipe's model: fp32, fp32 + channels-last, bf16 autocast, bf16 + channels-last, each as
    a ratio to fp32. Peak memory is measured over the fp32 run, which comes first."""
    from humanvision.cli.pose import DEMO_RECIPE
    from humanvision.codecs import UDPHeatmap
    from humanvision.engine import build_optimizer, move_to, param_groups
    from humanvision.methods.topdown import TopDownPose
    from humanvision.models import create_model

    name, (w, h) = DEMO_RECIPE["model"]["name"], DEMO_RECIPE["model"]["input_size"]
    rss0 = peak_rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        mem0 = torch.cuda.memory_allocated(device)
    out: dict = {"model": name, "input": f"{h}x{w}", "batch": batch, "optimizer": "adamw", "rows": []}
    for precision, channels_last in (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)):
        torch.manual_seed(0)
        model = create_model(name, input_size=(w, h))
        method = TopDownPose(model, UDPHeatmap(model.input_size, model.heatmap_size, sigma=2.0), "coco17")
        method = method.to(device).train()
        if channels_last:
            method.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(param_groups(method, 1e-4, None), "adamw", 2e-3)
        hw, hh = model.heatmap_size
        g = torch.Generator().manual_seed(0)
        data = {"image": torch.randn(batch, 3, h, w, generator=g),
                "heatmaps": torch.rand(batch, 17, hh, hw, generator=g),
                "keypoint_weights": (torch.rand(batch, 17, generator=g) > 0.2).float()}
        data = move_to(data, device, channels_last)

        def step(method=method, optimizer=optimizer, data=data, bf16=precision == "bf16") -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = method(data)["loss"]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        label = f"{precision}{' channels-last' if channels_last else ''}"
        with console.status(f"training step {name} {h}x{w} batch {batch} {label}"):
            sec, n = measure(step, device, warmup=2, min_iters=5 if quick else 20,
                             min_time=3.0 if quick else 10.0, max_iters=1000)
        row = {"precision": precision, "channels_last": channels_last, "ms_per_step": 1e3 * sec,
               "images_per_s": batch / sec, "timed_iters": n}
        if not out["rows"]:
            out["params_m"] = sum(p.numel() for p in method.parameters()) / 1e6
            if device.type == "cuda":
                out["peak_mem_mib"] = (torch.cuda.max_memory_allocated(device) - mem0) / 2**20
                out["peak_mem_kind"] = "torch.cuda.max_memory_allocated (above the memory in use before), fp32"
            else:
                out["peak_mem_mib"] = peak_rss_mib() - rss0
                out["peak_mem_kind"] = "growth of the process peak RSS (ru_maxrss) over model + optimiser + steps, fp32"
        row["ratio_to_fp32"] = row["images_per_s"] / out["rows"][0]["images_per_s"] if out["rows"] else 1.0
        out["rows"].append(row)
        console.log(f"training {label}: {row['images_per_s']:.1f} images/s ({row['ratio_to_fp32']:.2f}x fp32)")
    console.log(f"training peak memory +{out['peak_mem_mib']:.0f} MiB")
    return out


# --------------------------------------------------------------------------------------------- data pipeline
def bench_data(quick: bool, console) -> dict:
    from humanvision.cli.pose import DEMO_RECIPE
    from humanvision.config import load_config
    from humanvision.methods.topdown import (
        TopDownDataset,
        TopDownRecipe,
        build_method,
        build_transform,
        eval_reader,
        prepare_synthetic,
        train_reader,
    )

    n_train, n_val = (24, 8) if quick else (96, 32)
    min_time = 2.0 if quick else 10.0
    with tempfile.TemporaryDirectory() as tmp:
        recipe = load_config(DEMO_RECIPE, TopDownRecipe, [
            f"data.synthetic_dir={tmp}", f"data.synthetic_train={n_train}", f"data.synthetic_val={n_val}"])
        with console.status(f"synthesising {n_train + n_val} images"):
            t0 = time.perf_counter()
            prepare_synthetic(recipe.data, quiet=True)
            synth_s = time.perf_counter() - t0
        method = build_method(recipe)
        out = {"recipe": recipe.name, "image_size": list(recipe.data.synthetic_size),
               "input": f"{method.model.input_size[1]}x{method.model.input_size[0]}", "num_workers": 0,
               "synthesis_images_per_s": (n_train + n_val) / synth_s}
        for mode, reader in (("train", train_reader(recipe.data, "coco17")),
                             ("inference", eval_reader(recipe.data, "coco17"))):
            dataset = TopDownDataset(reader, build_transform(method, recipe.data, train=mode == "train"))
            np.random.seed(0)
            dataset[0]  # warm-up: first-call costs (codec tables, imports)
            # whole passes over the dataset (every item re-reads and re-decodes its image) for min_time seconds
            with console.status(f"data pipeline ({mode}, {len(dataset)} crops)"):
                n, sec = _passes(dataset, min_time)
            out[f"{mode}_crops"] = len(dataset)
            out[f"{mode}_crops_timed"] = n
            out[f"{mode}_crops_per_s"] = n / sec
            console.log(f"data pipeline {mode}: {n / sec:.1f} crops/s per worker")
            if mode == "train":  # the recipe's cache_images: decoded images kept after a first (untimed) pass
                cached = TopDownDataset(reader, build_transform(method, recipe.data, train=True), cache_images=True)
                _passes(cached, 0.0)
                with console.status(f"data pipeline (train, cached images, {len(cached)} crops)"):
                    n, sec = _passes(cached, min_time)
                out["train_cached_crops_per_s"] = n / sec
                console.log(f"data pipeline train, cached images: {n / sec:.1f} crops/s per worker")
    return out


def _passes(dataset, min_time: float) -> tuple[int, float]:
    """Whole passes over ``dataset`` until ``min_time`` seconds have gone (at least one): (items, seconds)."""
    n, t0 = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - t0 < min_time:
        for i in range(len(dataset)):
            dataset[i]
        n += len(dataset)
    return n, time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------------- main
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="few iterations, no torch.compile")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "pose2d.json")
    args = p.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    console = Console()
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()

    training = bench_training(device, args.quick, console)  # first: the CPU peak-RSS delta needs a low peak
    inference = bench_inference(device, args.quick, compile_=not args.quick, console=console)
    data = bench_data(args.quick, console)

    title = f"ViTPose-B 256x192 inference on {name} ({device.type}, {torch.get_num_threads()} threads)"
    table = Table(title=title)
    for col in ("mode", "precision", "batch", "ms / batch", "crops / s", "vs fp32 eager b1", "max/min rounds"):
        table.add_column(col, justify="right")
    for r in inference:
        if "error" in r:
            table.add_row(r["mode"], r["precision"], str(r["batch"]), "-", r["error"][:40], "-", "-")
        else:
            table.add_row(r["mode"], r["precision"], str(r["batch"]), f"{r['ms_per_batch']:.1f}",
                          f"{r['crops_per_s']:.2f}", f"{r.get('ratio_vs_fp32_eager_b1', float('nan')):.2f}x",
                          f"{r['spread']:.2f}")
    console.print(table)

    table = Table(title="training step and data pipeline")
    table.add_column("")
    table.add_column("value", justify="right")
    for r in training["rows"]:
        layout = " channels-last" if r["channels_last"] else ""
        table.add_row(f"train {training['model']} {training['input']} b{training['batch']} {r['precision']}{layout}",
                      f"{r['images_per_s']:.1f} images/s ({r['ms_per_step']:.0f} ms/step, "
                      f"{r['ratio_to_fp32']:.2f}x fp32)")
    table.add_row("train peak memory (fp32)", f"+{training['peak_mem_mib']:.0f} MiB")
    table.add_row(f"data pipeline, train mode ({data['train_crops']} crops)",
                  f"{data['train_crops_per_s']:.1f} crops/s per worker")
    table.add_row("data pipeline, train mode, cached images",
                  f"{data['train_cached_crops_per_s']:.1f} crops/s per worker")
    table.add_row(f"data pipeline, inference mode ({data['inference_crops']} crops)",
                  f"{data['inference_crops_per_s']:.1f} crops/s per worker")
    table.add_row("synthetic data generation", f"{data['synthesis_images_per_s']:.1f} images/s")
    console.print(table)

    report = {"benchmark": "pose2d", "quick": args.quick, "device": device.type, "device_name": name,
              "threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "load_average": list(os.getloadavg()), "torch": torch.__version__, "python": platform.python_version(),
              "inference": inference, "training": training, "data": data}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    console.print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
