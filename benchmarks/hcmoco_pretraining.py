"""HCMoCo's claims in miniature (issue 14, claims 1 and 2): does hierarchical multi-modal contrastive pre-training
(sample-level + dense + sparse structure-aware losses) give better RGB and depth encoders than the sample-level loss
alone, and both better than random initialisation, when labelled data is scarce? And does the pre-trained RGB-D
model still parse when one modality is missing? Everything runs on synthetic people, on equal step budgets.

**Pre-training** (pretraining.md A.4-A.5; ``configs/hcmoco_tiny_synthetic_stage{1,2}.yaml``): ``hcmoco_tiny``
(two tiny HRNets + a tiny SemGCN) on ``--ntu`` synthetic NTU-layout frames (RGB + depth + skeleton) mixed 50/50
with ``--mpii`` synthetic MPII people (RGB + keypoints, depth missing), 128 x 128 crops, batch ``--pretrain-batch``,
a memory bank with 1024 negatives, SGD 0.03 with the per-epoch cosine. Two variants at the **same total steps and
batch**:

* **(b) sample**: stage 1 only (the six sample-level InfoNCE terms) for ``--stage1-steps + --stage2-steps``;
* **(c) full**: stage 1 for ``--stage1-steps``, then stage 2 (A.5: from the stage-1 weights and memory bank, the
  dense heads new, a fresh SGD and the cosine restarted; all four losses) for ``--stage2-steps``.

Steps are rounded to whole epochs of the pre-training set (the cosine is per epoch), the same rounding for both
variants, so their step counts are equal; a stage-2 step costs a little more (dense maps and three more losses),
so the measured minutes are reported too, wall clock and CPU time of the process (other work may share the CPUs). Each run ends with HCMoCo's own check, top-1 cross-modal retrieval among 32
fixed NTU crops (chance 1/32). The RGB encoder (``encoder1``) and the depth encoder (``encoder2``) are exported as
flat HRNet state dicts (A.6, :func:`humanvision.methods.hcmoco.export_encoders`).

**Claim 1, fine-tuning** (A.7.2-A.7.4) in the data-efficiency setting: each task is trained on only ``--labelled``
labelled images (32 by default: 20% of the 160 training frames of the tiny parsing recipes, 16% of the tiny A2J
recipe's 200) and evaluated on ``--eval-images`` others, from (a) random init, (b) and (c) with the same recipe
and the same ``--finetune-steps`` (rounded to whole epochs of the labelled set), for each of ``--seeds``:

* RGB parsing (synthetic Human3.6M layout, ``configs/parsing_tiny_synthetic_rgb.yaml``; RGB encoder): mIoU over the
  25 classes, flip test;
* depth parsing (synthetic NTURGBD-Parsing-4K layout, ``configs/parsing_tiny_synthetic_depth.yaml``, class-weighted
  CE; depth encoder): mIoU;
* depth 3D pose (A2J on synthetic ITOP side view, ``configs/a2j_tiny_synthetic.yaml``; depth encoder): mAP@10cm.

**Claim 2, missing modality** (A.7.5): the RGB-D parsing model (``parsing_rgbd_hrnet_tiny``: both encoders, their
128-d dense projections and one shared head on the L2-normalised maps) is initialised from the whole pre-trained
model ((b): encoders only, a stage-1 model has no dense projections; (c): encoders and projections), trained on the
fused output (max of the two maps, ``supervise: fused``) on the same ``--labelled`` NTURGBD-Parsing-4K-layout frames
and step budget, and the same trained model is evaluated with both inputs, with depth removed and with RGB removed:
``skip`` (the single-modality map through the shared head, HCMoCo's test types 1 and 2) and ``zeros`` (the fused
output with the removed input replaced by zeros).

All runs are fp32 (``--precision``), sequential on one machine; reported metrics are those of the final weights
(no model selection on the evaluation set; the published protocols keep the best epoch), as mean ± std over the
seeds. The synthetic sets are written under ``--data-dir`` on first use, the runs under ``--work``. Prints two
tables and writes JSON (every run's row, with its wall / CPU minutes and training steps per second)::

    python benchmarks/hcmoco_pretraining.py --out benchmarks/results/hcmoco_pretraining.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

PRETRAIN = {1: "configs/hcmoco_tiny_synthetic_stage1.yaml", 2: "configs/hcmoco_tiny_synthetic_stage2.yaml"}
INITS = ("random", "sample", "full")
#: task -> (recipe, the encoder file of a pre-training export it starts from)
TASKS = {"rgb": ("configs/parsing_tiny_synthetic_rgb.yaml", "rgb_encoder.pth"),
         "depth": ("configs/parsing_tiny_synthetic_depth.yaml", "depth_encoder.pth"),
         "a2j": ("configs/a2j_tiny_synthetic.yaml", "depth_encoder.pth"),
         "rgbd": ("configs/parsing_tiny_synthetic_depth.yaml", "hcmoco_model.pth")}


# ------------------------------------------------------------------------------------------------ helpers
def whole_epochs(steps: int, num_items: int, batch_size: int) -> tuple[int, int]:
    """``(epochs, steps per epoch)`` closest to ``steps`` optimiser steps on ``num_items`` items at ``batch_size``
    with the engine's ``drop_last`` (at least one epoch); the run then takes ``epochs * steps_per_epoch`` steps."""
    per_epoch = num_items // batch_size
    if per_epoch < 1:
        raise ValueError(f"{num_items} items make no batch of {batch_size}")
    return max(1, round(steps / per_epoch)), per_epoch


def mean_over_seeds(rows: Sequence[dict], keys: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{key: {"mean", "std", "n"}}`` over ``rows`` for each key present in them (std 0 for a single row;
    the sample standard deviation otherwise)."""
    out = {}
    for key in keys:
        vals = [float(r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        if vals:
            out[key] = {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                        "n": len(vals)}
    return out


def _train_rate(run_dir: Path, batch_size: int) -> float:
    """Median optimiser steps per second of a run's logged training windows (evaluation and saving excluded)."""
    from humanvision.engine import read_log

    rates = [r["images_per_s"] for r in read_log(run_dir, "train") if "images_per_s" in r]
    return statistics.median(rates) / batch_size if rates else float("nan")


def _common(out: Path, epochs: int, seed: int, precision: str) -> list[str]:
    return [f"train.epochs={epochs}", f"train.eval_every={epochs}", f"train.save_every={epochs}",
            f"train.output_dir={out}", f"train.seed={seed}", f"train.precision={precision}",
            "train.channels_last=false", "train.progress=false", "train.tensorboard=false"]


# ---------------------------------------------------------------------------------------------- pre-training
def _pretrain_data(args: argparse.Namespace) -> list[str]:
    return [f"data.synthetic_dir={args.data_dir / 'ntu_mpii'}", f"data.synthetic_ntu={args.ntu}",
            f"data.synthetic_mpii={args.mpii}", f"data.synthetic_seed={args.pretrain_data_seed}",
            f"train.batch_size={args.pretrain_batch}", f"hcmoco.eval_samples={args.retrieval_samples}"]


def pretrain_samples(args: argparse.Namespace) -> int:
    """Items of the pre-training set (= memory-bank rows; the synthetic MPII writer may drop a person, so this can be
    a little under ``--ntu + --mpii``). Writes the synthetic set first if needed."""
    from humanvision.methods import hcmoco

    recipe = hcmoco.load_recipe(PRETRAIN[1], _pretrain_data(args))
    hcmoco.prepare_synthetic(recipe.data, quiet=True)
    return len(hcmoco.build_dataset(recipe))


def pretrain_epochs(args: argparse.Namespace) -> tuple[int, int, int]:
    """``(stage-1 epochs, stage-2 epochs, steps per epoch)`` of the step budgets (same for both variants)."""
    n = pretrain_samples(args)
    e1, per = whole_epochs(args.stage1_steps, n, args.pretrain_batch)
    e2, _ = whole_epochs(args.stage2_steps, n, args.pretrain_batch)
    return e1, e2, per


def _pretrain_stage(stage: int, epochs: int, out: Path, args: argparse.Namespace, init: Path | None = None) -> dict:
    from humanvision.methods import hcmoco

    overrides = _pretrain_data(args) + _common(out, epochs, args.seed, "fp32")
    if init is not None:
        overrides.append(f"hcmoco.init={init}")
    recipe = hcmoco.load_recipe(PRETRAIN[stage], overrides)
    t0, c0 = time.perf_counter(), time.process_time()
    summary = hcmoco.run_training(recipe, quiet=True)
    metrics = summary["metrics"] or {}
    return {"stage": stage, "epochs": epochs, "steps": summary["step"], "minutes": (time.perf_counter() - t0) / 60,
            "cpu_minutes": (time.process_time() - c0) / 60,
            "steps_per_s": _train_rate(out, args.pretrain_batch),
            **{k: v for k, v in metrics.items() if k.startswith(("top1_", "chance"))}}


def _export(run: Path, dest: Path) -> dict[str, str]:
    """The A.6 export (``rgb_encoder.pth``, ``depth_encoder.pth``) plus ``hcmoco_model.pth``: the whole model's state
    (``encoder1.*``, ``encoder2.*``, ``encoder{1,2}_linear.*`` ...; the memory bank left out), the layout
    :meth:`~humanvision.models.parsing.RGBDParsingHRNet.init_encoders` reads."""
    import torch

    from humanvision.methods import hcmoco

    paths = {k: str(v) for k, v in hcmoco.export_encoders(run, dest).items()}
    model, _, _ = hcmoco.read_pretraining_checkpoint(run, key="weights")
    torch.save({k: v.contiguous() for k, v in model.items()}, dest / "hcmoco_model.pth")
    paths["model"] = str(dest / "hcmoco_model.pth")
    return paths


def pretrain(variant: str, args: argparse.Namespace, work: Path) -> dict:
    """(b) ``sample``: stage 1 for both budgets; (c) ``full``: stage 1 then stage 2. Exports into
    ``<work>/<variant>_export``."""
    e1, e2, per = pretrain_epochs(args)
    if variant == "sample":
        runs = [_pretrain_stage(1, e1 + e2, work / "pretrain_sample", args)]
        last = work / "pretrain_sample"
    else:
        runs = [_pretrain_stage(1, e1, work / "pretrain_full_stage1", args)]
        runs.append(_pretrain_stage(2, e2, work / "pretrain_full", args, init=work / "pretrain_full_stage1"))
        last = work / "pretrain_full"
    paths = _export(last, work / f"{variant}_export")
    final = runs[-1]
    return {"variant": variant, "steps": sum(r["steps"] for r in runs), "minutes": sum(r["minutes"] for r in runs),
            "cpu_minutes": sum(r["cpu_minutes"] for r in runs),
            "batch_size": args.pretrain_batch, "samples": pretrain_samples(args), "steps_per_epoch": per,
            "stages": runs, **{k: final[k] for k in final if k.startswith(("top1_", "chance"))}, "export": paths}


# ----------------------------------------------------------------------------------------------- fine-tuning
def _task_overrides(task: str, args: argparse.Namespace) -> list[str]:
    d = args.data_dir
    if task == "rgb":
        return [f"data.synthetic_dir={d / 'h36m_parsing'}", f"data.synthetic_train={args.labelled}",
                f"data.synthetic_eval={args.eval_images}"]
    if task == "a2j":
        return [f"data.synthetic_dir={d / 'itop'}", f"data.synthetic_train={args.labelled}",
                f"data.synthetic_test={args.eval_images}"]
    common = [f"data.synthetic_dir={d / 'nturgbd_parsing'}", f"data.synthetic_train={args.labelled}",
              f"data.synthetic_eval={args.eval_images}"]
    if task == "rgbd":
        common += ["parsing.modality=rgbd", "model.name=parsing_rgbd_hrnet_tiny", "parsing.supervise=fused",
                   "parsing.test_mode=fused"]
    return common


def _task_module(task: str):
    from humanvision.methods import a2j, parsing

    return a2j if task == "a2j" else parsing


def load_task_recipe(task: str, args: argparse.Namespace, extra: Sequence[str] = ()):
    """The task's tiny recipe on this benchmark's data (no init, no training overrides)."""
    return _task_module(task).load_recipe(TASKS[task][0], _task_overrides(task, args) + list(extra))


def finetune(task: str, init: str, seed: int, args: argparse.Namespace, work: Path) -> dict:
    """Train ``task`` from ``init`` (random / an export of ``sample`` or ``full``) for the fine-tuning budget;
    metrics of the final weights (rgbd: also the ``zeros`` missing-modality evaluation)."""
    module = _task_module(task)
    batch = load_task_recipe(task, args).train.batch_size
    epochs, _ = whole_epochs(args.finetune_steps, args.labelled, batch)
    out = work / f"{task}_{init}_s{seed}"
    overrides = _common(out, epochs, seed, args.precision)
    if task == "a2j":  # the tiny recipe's StepLR at 3/4 of the run (15 of 20 epochs)
        overrides.append(f"train.milestones=[{max(1, round(0.75 * epochs))}]")
    if init != "random":
        overrides.append(f"model.init={work / f'{init}_export' / TASKS[task][1]}")
    recipe = load_task_recipe(task, args, overrides)
    t0, c0 = time.perf_counter(), time.process_time()
    summary = module.run_training(recipe, quiet=True)
    minutes, cpu_minutes = (time.perf_counter() - t0) / 60, (time.process_time() - c0) / 60
    metrics = {k: v for k, v in (summary["metrics"] or {}).items() if isinstance(v, float)}
    row = {"task": task, "init": init, "seed": seed, "labelled": args.labelled, "epochs": epochs,
           "steps": summary["step"], "minutes": minutes, "cpu_minutes": cpu_minutes,
           "steps_per_s": _train_rate(out, batch),
           **{k: metrics[k] for k in ("mIoU", "mIoU_fused", "mIoU_rgb", "mIoU_depth", "pixel_accuracy", "mAP",
                                      "mean_error") if k in metrics}}
    if task == "rgbd":
        from humanvision.methods import parsing

        zeros = parsing.evaluate_weights(load_task_recipe(task, args, overrides + ["eval.missing=zeros"]),
                                         out / "last")
        for r in zeros["versatility"]:
            row[f"zeros_{r['inputs']}"] = r["mIoU"]
    return row


# ---------------------------------------------------------------------------------------------------- data
def prepare_data(args: argparse.Namespace) -> dict[str, float]:
    """Write every synthetic set this benchmark reads (once; a stamp keeps them) and time each (minutes)."""
    from humanvision.methods import a2j, parsing

    times = {}
    t0 = time.perf_counter()
    pretrain_samples(args)
    times["pretrain_ntu_mpii"] = (time.perf_counter() - t0) / 60
    for task, name in (("rgb", "h36m_parsing"), ("depth", "nturgbd_parsing"), ("a2j", "itop")):
        t0 = time.perf_counter()
        data = load_task_recipe(task, args).data
        (a2j if task == "a2j" else parsing).prepare_synthetic(data, quiet=True)
        times[name] = (time.perf_counter() - t0) / 60
    return times


# ---------------------------------------------------------------------------------------------------- tables
def _cell(stats: dict[str, dict[str, float]], key: str) -> str:
    s = stats.get(key)
    if s is None:
        return "-"
    return f"{s['mean']:.1f}" + (f" ± {s['std']:.1f}" if s["n"] > 1 else "")


def print_tables(pre: Sequence[dict], rows: Sequence[dict], args: argparse.Namespace) -> dict:
    """The claim-1 and claim-2 tables (means ± std over the seeds); returns the aggregated numbers."""
    from rich.console import Console
    from rich.table import Table

    agg: dict[str, dict] = {}
    for task in TASKS:
        for init in INITS:
            sel = [r for r in rows if r["task"] == task and r["init"] == init]
            if sel:
                keys = [k for k in sel[0] if k not in ("task", "init", "seed", "labelled", "epochs")]
                agg[f"{task}/{init}"] = mean_over_seeds(sel, keys)
    by_pre = {p["variant"]: p for p in pre}
    n_seeds = len(args.seeds)
    steps = {t: next((r["steps"] for r in rows if r["task"] == t), "-") for t in TASKS}
    table = Table(title=f"HCMoCo claim 1 in miniature: hcmoco_tiny, {args.labelled} labelled images per task, "
                        f"fine-tuning {steps['rgb']} / {steps['depth']} / {steps['a2j']} steps (RGB / depth / A2J), "
                        f"mean{' ± std' if n_seeds > 1 else ''} over {n_seeds} seed{'s' if n_seeds > 1 else ''}")
    for col in ("init", "pre-train steps", "pre-train min (CPU)", "retrieval RGB→D", "RGB parsing mIoU",
                "depth parsing mIoU", "A2J mAP@10cm"):
        table.add_column(col, justify="left" if col == "init" else "right")
    names = {"random": "(a) random", "sample": "(b) sample", "full": "(c) full"}
    for init in INITS:
        p = by_pre.get(init, {})
        ret = p.get("top1_rgb_depth")
        table.add_row(names[init], str(p.get("steps", "-")), f"{p['minutes']:.1f} ({p['cpu_minutes']:.1f})" if p else "-",
                      f"{100 * ret:.0f}%" if ret is not None else "-",
                      _cell(agg.get(f"rgb/{init}", {}), "mIoU"), _cell(agg.get(f"depth/{init}", {}), "mIoU"),
                      _cell(agg.get(f"a2j/{init}", {}), "mAP"))
    table.caption = ("(b) sample-level loss only (stage 1 for both budgets); (c) stage 1 then stage 2 (all four "
                     "losses); retrieval: top-1 RGB->depth among the NTU check crops")
    console = Console(width=160)
    console.print(table)
    if any(r["task"] == "rgbd" for r in rows):
        t2 = Table(title=f"HCMoCo claim 2: one RGB-D parsing model per init (fused supervision, {steps['rgbd']} "
                         "steps), evaluated with a modality removed: mIoU")
        for col in ("init", "RGB + depth", "depth removed (skip)", "RGB removed (skip)", "depth removed (zeros)",
                    "RGB removed (zeros)"):
            t2.add_column(col, justify="left" if col == "init" else "right")
        for init in INITS:
            a = agg.get(f"rgbd/{init}", {})
            t2.add_row(names[init], _cell(a, "mIoU_fused"), _cell(a, "mIoU_rgb"), _cell(a, "mIoU_depth"),
                       _cell(a, "zeros_rgb"), _cell(a, "zeros_depth"))
        t2.caption = ("skip: the remaining modality's map through the shared head; zeros: the fused output with "
                      "the removed input set to 0")
        console.print(t2)
    return agg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage1-steps", type=int, default=1200, help="stage-1 steps of (c); (b) gets both budgets")
    p.add_argument("--stage2-steps", type=int, default=1200, help="stage-2 steps of (c)")
    p.add_argument("--pretrain-batch", type=int, default=8)
    p.add_argument("--ntu", type=int, default=160, help="synthetic NTU frames (RGB + depth + skeleton)")
    p.add_argument("--mpii", type=int, default=160, help="synthetic MPII people (RGB + keypoints)")
    p.add_argument("--pretrain-data-seed", type=int, default=7,
                   help="world seed of the pre-training people (not 0: other people than the fine-tuning sets')")
    p.add_argument("--retrieval-samples", type=int, default=32, help="NTU crops of the retrieval check")
    p.add_argument("--finetune-steps", type=int, default=400, help="steps of every fine-tuning run")
    p.add_argument("--labelled", type=int, default=32, help="labelled training images of every task")
    p.add_argument("--eval-images", type=int, default=64, help="evaluation images of every task")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="fine-tuning seeds")
    p.add_argument("--seed", type=int, default=0, help="pre-training seed")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"))
    p.add_argument("--data-dir", type=Path, default=Path("data/hcmoco_claim"))
    p.add_argument("--work", type=Path, default=Path("runs/hcmoco_claim"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/hcmoco_pretraining.json"))
    p.add_argument("--skip-pretrain", action="store_true", help="reuse the exports already in --work")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    data_minutes = prepare_data(args)
    print(json.dumps({"data_minutes": data_minutes}), flush=True)
    e1, e2, per = pretrain_epochs(args)
    if (e1 * per, e2 * per) != (args.stage1_steps, args.stage2_steps):
        print(f"pre-training steps rounded to whole epochs of {per} steps: stage 1 {e1 * per}, stage 2 {e2 * per}",
              flush=True)
    pre = []
    if not args.skip_pretrain:
        for variant in ("sample", "full"):
            pre.append(pretrain(variant, args, args.work))
            print(json.dumps(pre[-1]), flush=True)
    rows = []
    for task in args.tasks:
        for init in INITS:
            for seed in args.seeds:
                rows.append(finetune(task, init, seed, args, args.work))
                print(json.dumps(rows[-1]), flush=True)
    agg = print_tables(pre, rows, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "data_minutes": data_minutes,
                                    "pretrain": pre, "finetune": rows, "summary": agg}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
