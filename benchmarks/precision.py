"""Training speed of the demo model in each precision / memory format, on this CPU and on an AVX2-only one.

For the demo recipe's model (``DEMO_RECIPE``: ``lateral_small`` at 192x144, batch 32) it times a full training
step (forward, JointsMSE loss, backward, AdamW step) and an inference batch (batch 64 with the flip test, as the
demo evaluates) in fp32, fp32 + channels-last, bf16 autocast and bf16 + channels-last, each as a ratio to fp32 in
the same run, and runs the engine's selector (``precision: auto``) to show what it picks and what the measurement
costs at start-up.

With ``--machine both`` (the default) the measurement runs twice in fresh processes: as this CPU is, and with
``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``, which makes a CPU with AVX-512-BF16 / AMX behave like one that
has only AVX2 (bf16 is then emulated). The two go into one table and one JSON file.

    python benchmarks/precision.py            # both settings, ~3 minutes on 2 cores
    python benchmarks/precision.py --machine native --quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from pose2d import cpu_name, measure

AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
OPTIONS = (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True))


def bench_machine(quick: bool, batch: int = 32, eval_batch: int = 64) -> dict:
    from humanvision.cli.pose import DEMO_RECIPE
    from humanvision.engine import build_optimizer, move_to, param_groups
    from humanvision.engine.precision import autocast, candidates, choose, label
    from humanvision.methods.topdown import DataConfig, TopDownPose, build_codec
    from humanvision.models import create_model

    name, (w, h) = DEMO_RECIPE["model"]["name"], DEMO_RECIPE["model"]["input_size"]
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = create_model(name, input_size=(w, h))
    method = TopDownPose(model, build_codec(model, DataConfig()), "coco17").train()
    optimizer = build_optimizer(param_groups(method, 1e-4, None), "adamw", 2e-3)
    hw, hh = model.heatmap_size
    g = torch.Generator().manual_seed(0)
    data = {"image": torch.randn(batch, 3, h, w, generator=g), "heatmaps": torch.rand(batch, 17, hh, hw, generator=g),
            "keypoint_weights": (torch.rand(batch, 17, generator=g) > 0.2).float()}
    crops = torch.randn(eval_batch, 3, h, w, generator=g)
    rows = []
    for precision, cl in OPTIONS:
        method.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        batch_data = move_to(data, cpu, cl)

        def step(batch_data=batch_data, precision=precision) -> None:
            with autocast(cpu, precision):
                loss = method(batch_data)["loss"]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        images = crops.contiguous(memory_format=torch.channels_last) if cl else crops

        def infer(images=images, precision=precision) -> None:
            with torch.no_grad(), autocast(cpu, precision):
                method.predict(images, flip_test=True)

        sec, n = measure(step, cpu, warmup=1, min_iters=2 if quick else 4, min_time=2.0 if quick else 6.0,
                         max_iters=200)
        isec, _ = measure(infer, cpu, warmup=1, min_iters=1 if quick else 3, min_time=1.0 if quick else 4.0,
                          max_iters=100)
        rows.append({"setting": label(precision, cl), "train_images_per_s": batch / sec, "timed_steps": n,
                     "infer_crops_per_s": eval_batch / isec})
        print(f"  {rows[-1]['setting']}: train {batch / sec:.1f} images/s, infer {eval_batch / isec:.1f} crops/s",
              file=sys.stderr, flush=True)
    for r in rows:
        r["train_ratio"] = r["train_images_per_s"] / rows[0]["train_images_per_s"]
        r["infer_ratio"] = r["infer_crops_per_s"] / rows[0]["infer_crops_per_s"]

    # the engine's selector on the same model and batch: forward + backward per candidate, as Trainer does
    method.to(memory_format=torch.contiguous_format)

    def run(precision: str, cl: bool) -> None:
        method.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        with autocast(cpu, precision):
            loss = method(move_to(data, cpu, cl))["loss"]
        loss.backward()
        method.zero_grad(set_to_none=True)

    choice = choose(run, candidates(cpu, "auto", "auto"), batch)
    return {"model": name, "input": f"{h}x{w}", "batch": batch, "eval_batch": eval_batch,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkldnn_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
            "threads": torch.get_num_threads(), "rows": rows, "auto": choice.as_dict() | {"label": choice.label}}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--machine", choices=("both", "native", "avx2"), default="both")
    p.add_argument("--quick", action="store_true", help="fewer timed steps")
    p.add_argument("--json-stdout", action="store_true", help=argparse.SUPPRESS)  # a child process's result
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "precision.json")
    args = p.parse_args(argv)
    if args.json_stdout:
        print(json.dumps(bench_machine(args.quick)))
        return {}

    machines = ("native", "avx2") if args.machine == "both" else (args.machine,)
    results = {}
    for m in machines:
        env = {k: v for k, v in os.environ.items() if k not in AVX2_ENV}
        env.update(AVX2_ENV if m == "avx2" else {})
        print(f"{m}: measuring in a fresh process ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, "--json-stdout", *(["--quick"] if args.quick else [])]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.exit(f"{m}: failed\n{proc.stderr[-3000:]}")
        results[m] = json.loads(proc.stdout.strip().splitlines()[-1]) | {"seconds": time.perf_counter() - t0}

    from rich.console import Console
    from rich.table import Table

    first = next(iter(results.values()))
    table = Table(title=f"{first['model']} {first['input']}: training (batch {first['batch']}) and inference "
                        f"(batch {first['eval_batch']}, flip test) on {cpu_name()}")
    table.add_column("setting")
    for m, r in results.items():
        table.add_column(f"{m} ({r['cpu_capability']}) train images/s", justify="right")
        table.add_column(f"{m} infer crops/s", justify="right")
    for i, (prec, cl) in enumerate(OPTIONS):
        cells = []
        for r in results.values():
            row = r["rows"][i]
            cells += [f"{row['train_images_per_s']:.1f} ({row['train_ratio']:.2f}x)",
                      f"{row['infer_crops_per_s']:.1f} ({row['infer_ratio']:.2f}x)"]
        table.add_row(prec + (" + channels-last" if cl else ""), *cells)
    table.add_row("precision: auto picks",
                  *[c for r in results.values()
                    for c in (f"{r['auto']['label']} ({r['auto']['seconds']:.1f} s to measure)", "")])
    Console().print(table)
    report = {"benchmark": "precision", "cpu": cpu_name(), "load_average": list(os.getloadavg()),
              "torch": torch.__version__, "machines": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
