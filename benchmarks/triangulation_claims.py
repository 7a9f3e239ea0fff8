"""Learnable Triangulation's claims in miniature (issue 11, claims 1-2), on synthetic multi-view people.

Data: the synthetic world in the Human3.6M multi-view layout (``data/synthetic_h36m_mocap``, written once):
``--frames`` frames of one person each, seen by ``--views`` calibrated cameras of one ring rig at ``--size``,
bodies driven by the DeepMimic motion-capture clips, spread over subjects S1..S``--subjects``; the last subject is
held out for validation (``--val-every``-th frame), the others train. Every number is on the held-out subject.

Stages, all on 2 CPU threads, budgets in optimiser steps (other work may share the machine, so a wall-clock budget
would not be equal), with the measured CPU minutes printed beside each:

* **stage 0** (every arm starts from it): the 2D network (``simplebaseline_tiny`` at ``--input`` px, h36m17) trained
  with heatmap MSE on single views (``configs/lt_2d_synthetic_h36m.yaml``), as LT starts from a 2D network
  fine-tuned on Human3.6M crops. Its own row: **argmax DLT** (stage 0's heatmaps, argmax, unweighted DLT, no
  3D training) and RANSAC on the same heatmaps.
* **claim 1a, learned confidences** (LT's central claim): ``alg`` (soft-argmax, learned per-view confidences,
  weighted DLT, MSESmooth) against ``alg_no_conf`` (the same with all weights 1), both fine-tuned from stage 0 for
  ``--steps-3d`` steps at batch ``--batch``; each row also reports the unweighted argmax DLT and RANSAC of *its
  own* fine-tuned heatmaps, which separates "better heatmaps" from "better weights".
* **claim 1b, volumetric vs algebraic at equal CPU**: ``vol`` (LT's volumetric model, ``--volume-size`` cube around
  the ``alg`` arm's pelvis predictions, fp32 by default) from stage 0, its step count set so its training CPU time
  equals the ``alg`` arm's (measured: the difference of two short probe runs), unless ``--no-equal-cpu``.
* **claim 2, ContextPose monocular**: ``cp_mono`` against ``plain_mono`` (the same network with
  ``model.context: false``), one view per sample, cuboids around the ``alg`` arm's pelvis (written by the ``vol``
  arm, so these run after it), ``--steps-mono`` steps each, validated on every ``--val-every-mono``-th held-out frame
  x every camera; reports MPJPE and the mean bone-length error.

Arms run in that order; ``--skip-stage0`` reuses the stage-0 run in ``--work``, ``--keep`` keeps ``--out``'s rows of
the arms not run now (``--arms plain_mono,cp_mono --skip-stage0 --keep`` after a default run).

Prints one table and writes JSON::

    python benchmarks/triangulation_claims.py --out benchmarks/results/triangulation_claims.json
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time
from pathlib import Path

LABELS = "human36m-multiview-labels-GTbboxes.npy"


def cpu_minutes() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return (r.ru_utime + r.ru_stime) / 60.0


def write_data(args: argparse.Namespace) -> Path:
    """The synthetic Human3.6M-layout set, written once (a stamp records the parameters)."""
    import os

    from humanvision.data.synthetic.cache import write_once
    from humanvision.data.synthetic.motion import deepmimic_clips, load_deepmimic
    from humanvision.data.synthetic.writers import generate_h36m

    root = Path(args.data)
    params = {"frames": args.frames, "size": args.size, "views": args.views, "subjects": args.subjects,
              "actions": 2, "seed": args.data_seed, "motion": "deepmimic"}
    clips = [load_deepmimic(c) for c in deepmimic_clips()]
    write_once(root, params, lambda progress: generate_h36m(
        root, args.frames, size=(args.size, args.size), seed=args.data_seed, views=args.views,
        subjects=args.subjects, actions=2, motion=clips, workers=os.cpu_count() or 1, progress=progress),
        description=f"synthesising {args.frames} frames x {args.views} views -> {root}")
    return root


def subjects(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    names = [f"S{k + 1}" for k in range(args.subjects)]
    return names[:-1], names[-1:]


def train_2d(args: argparse.Namespace, root: Path, work: Path) -> dict:
    """Stage 0: the 2D network on single views (heatmap MSE), ``--steps-2d`` steps."""
    from humanvision.cli.pose import _load_recipe, run_training
    from humanvision.data.readers import Human36MViews
    from humanvision.methods.topdown import build_method, evaluate_topdown

    train_s, val_s = subjects(args)
    views = len(Human36MViews(root / LABELS, root / "processed", subjects=train_s))
    epochs = max(1, math.ceil(args.steps_2d * args.batch_2d / views))
    out = work / "stage0_2d"
    recipe = _load_recipe(Path("configs/lt_2d_synthetic_h36m.yaml"), [
        f"data.train_ann={root / LABELS}", f"data.train_images={root / 'processed'}",
        f"data.val_ann={root / LABELS}", f"data.val_images={root / 'processed'}",
        f"data.train_subjects={json.dumps(train_s)}", f"data.val_subjects={json.dumps(val_s)}",
        f"data.val_every={args.val_every}", f"model.input_size=[{args.input},{args.input}]",
        f"train.epochs={epochs}", f"train.max_steps={args.steps_2d}", "train.max_minutes=null",
        f"train.batch_size={args.batch_2d}", f"train.eval_every={epochs}", f"train.seed={args.seed}",
        "train.progress=false", f"train.output_dir={out}"])
    t0, c0 = time.perf_counter(), cpu_minutes()
    summary = run_training(recipe, quiet=True)
    minutes, cpu = (time.perf_counter() - t0) / 60, cpu_minutes() - c0
    metrics = evaluate_topdown(build_method(recipe, weights=out), recipe, out_dir=out / "eval")
    return {"arm": "stage0_2d", "steps": summary["step"], "minutes": minutes, "cpu_minutes": cpu, "run": str(out),
            **{k: metrics[k] for k in ("PCK@0.2", "PCK@0.05", "mean_error_px")}}


def algebraic_recipe(args: argparse.Namespace, root: Path, out: Path, use_confidences: bool, weights: Path,
                     steps: int):
    from humanvision.methods import algebraic

    train_s, val_s = subjects(args)
    objects = steps * args.batch  # one epoch = the whole budget: the cosine schedule ends with it
    return algebraic.load_recipe("configs/lt_algebraic_synthetic.yaml", [
        "data.source=h36m", f"data.labels={root / LABELS}", f"data.root={root / 'processed'}",
        f"data.train_subjects={json.dumps(train_s)}", f"data.val_subjects={json.dumps(val_s)}",
        f"data.val_every={args.val_every}", f"data.objects_per_epoch={max(1, objects)}",
        f"model.input_size={args.input}", f"model.use_confidences={str(use_confidences).lower()}",
        f"model.weights={weights}", "train.epochs=1", f"train.max_steps={max(1, steps)}", "train.max_minutes=null",
        f"train.batch_size={args.batch}", f"train.lr={args.lr_3d}", f"train.seed={args.seed}",
        "train.eval_every=1", "train.progress=false", f"train.output_dir={out}",
        f"eval.ransac_threshold={args.ransac_px}"])


def evaluate_arm(recipe, weights: Path, out: Path) -> dict:
    from humanvision.methods import algebraic

    return algebraic.evaluate_weights(recipe, weights, out_dir=out)


def run_algebraic(args: argparse.Namespace, root: Path, work: Path, arm: str, stage0: Path) -> dict:
    from humanvision.methods import algebraic

    use_conf = arm == "alg"
    out = work / arm
    recipe = algebraic_recipe(args, root, out, use_conf, stage0, args.steps_3d)
    t0, c0 = time.perf_counter(), cpu_minutes()
    summary = algebraic.run_training(recipe, quiet=True)
    minutes, cpu = (time.perf_counter() - t0) / 60, cpu_minutes() - c0
    metrics = evaluate_arm(recipe, out, out / "eval")
    return {"arm": arm, "steps": summary["step"], "minutes": minutes, "cpu_minutes": cpu, **flatten(metrics)}


def volumetric_recipe(args: argparse.Namespace, root: Path, out: Path, steps: int, base: Path | None):
    """``base``: a folder with the ``alg`` arm's pelvis predictions (``train.npz`` / ``val.npz``), else the
    ground-truth pelvis + ``--base-noise-mm`` noise."""
    from humanvision.methods import volumetric

    train_s, val_s = subjects(args)
    base = ["model.base=algebraic", "model.base_noise_mm=0", f"model.base_train_predictions={base / 'train.npz'}",
            f"model.base_val_predictions={base / 'val.npz'}"] if base is not None else [
        "model.base=gt_noisy", f"model.base_noise_mm={args.base_noise_mm}"]
    return volumetric.load_recipe("configs/lt_volumetric_synthetic.yaml", [
        "data.source=h36m", f"data.labels={root / LABELS}", f"data.root={root / 'processed'}",
        f"data.train_subjects={json.dumps(train_s)}", f"data.val_subjects={json.dumps(val_s)}",
        f"data.val_every={args.val_every}", f"data.objects_per_epoch={max(1, steps * args.batch_vol)}",
        f"model.input_size={args.input}", f"model.volume_size={args.volume_size}", *base,
        f"model.weights={args.work}/stage0_2d", "train.epochs=1", f"train.max_steps={max(1, steps)}",
        "train.max_minutes=null", f"train.batch_size={args.batch_vol}", f"train.seed={args.seed}",
        f"train.precision={args.precision_vol}",
        f"lr_groups.backbone={args.lr_3d}", "train.eval_every=1", "train.progress=false",
        f"train.output_dir={out}"])


def run_volumetric(args: argparse.Namespace, root: Path, work: Path, cpu_budget: float | None) -> dict:
    """LT's volumetric model from stage 0, its cuboid around the ``alg`` arm's pelvis (LT's setting). With
    ``cpu_budget`` (the ``alg`` arm's CPU minutes) the step count is set from a short probe of its CPU time per
    step, so both get the same CPU time; else ``--steps-3d`` steps."""
    from humanvision.methods import volumetric

    base = None
    if (work / "alg").is_dir():  # the alg arm's pelvis for every frame, once (LT's precomputed predictions)
        base = work / "vol_base"
        recipe = volumetric_recipe(args, root, work / "vol", 1, None)
        recipe.model.base, recipe.model.base_noise_mm, recipe.model.base_run = "algebraic", 0.0, work / "alg"
        volumetric.build_datasets(recipe, cache_dir=base)
    steps = args.steps_3d
    if cpu_budget is not None:  # CPU per step = the difference of two short runs (fixed costs cancel)
        used = []
        for k, n in enumerate((args.probe_steps, 2 * args.probe_steps)):
            probe = volumetric_recipe(args, root, work / f"vol_probe{k}", n, base)
            probe.data.val_subjects = ()  # training steps only: no validation at the end of the probe
            c0 = cpu_minutes()
            volumetric.run_training(probe, quiet=True)
            used.append(cpu_minutes() - c0)
        per_step = max(used[1] - used[0], 1e-6) / args.probe_steps
        steps = max(1, int(cpu_budget / per_step))
        print(f"volumetric: {per_step * 60:.2f} CPU s per step (probes) -> {steps} steps for {cpu_budget:.1f} CPU "
              "minutes", flush=True)
    out = work / "vol"
    recipe = volumetric_recipe(args, root, out, steps, base)
    val_subjects, recipe.data.val_subjects = recipe.data.val_subjects, ()  # one evaluation, after training
    t0, c0 = time.perf_counter(), cpu_minutes()
    summary = volumetric.run_training(recipe, quiet=True)
    recipe.data.val_subjects = val_subjects
    minutes, cpu = (time.perf_counter() - t0) / 60, cpu_minutes() - c0
    metrics = volumetric.evaluate_weights(recipe, out, out_dir=out / "eval")
    return {"arm": "vol", "steps": summary["step"], "minutes": minutes, "cpu_minutes": cpu, **flatten(metrics),
            "base_pelvis_error": metrics.get("base_pelvis_error")}


def run_monocular(args: argparse.Namespace, root: Path, work: Path, arm: str) -> dict:
    """Claim 2: ContextPose (``cp_mono``) against the same network without its context module (``plain_mono``:
    a residual block instead, no attention loss) on one view per sample, both from stage 0 for ``--steps-mono``
    steps, their cuboids around the ``alg`` arm's pelvis (CP's privileged multi-view centring, §3.1)."""
    from humanvision.methods import contextpose

    train_s, val_s = subjects(args)
    base = work / "vol_base"
    if args.val_every_mono % args.val_every:
        raise SystemExit("--val-every-mono must be a multiple of --val-every (the alg arm's pelvis frames)")
    if not (base / "train.npz").is_file():
        raise SystemExit("the monocular arms centre their cuboids on the alg arm's pelvis: run the vol arm first")
    out = work / arm
    recipe = contextpose.load_recipe("configs/contextpose_synthetic.yaml", [
        "data.source=h36m", f"data.labels={root / LABELS}", f"data.root={root / 'processed'}",
        f"data.train_subjects={json.dumps(train_s)}", "data.val_subjects=[]",
        f"data.objects_per_epoch={args.steps_mono * args.batch_vol}", f"model.input_size={args.input}",
        f"model.volume_size={args.volume_size}", "model.base=algebraic", "model.base_noise_mm=0",
        f"model.base_train_predictions={base / 'train.npz'}", f"model.base_val_predictions={base / 'val.npz'}",
        f"model.context={str(arm == 'cp_mono').lower()}", f"model.weights={work / 'stage0_2d'}",
        "train.epochs=1", f"train.max_steps={args.steps_mono}", "train.max_minutes=null",
        f"train.batch_size={args.batch_vol}", f"train.seed={args.seed}", f"train.precision={args.precision_vol}",
        f"lr_groups.backbone={args.lr_3d}", "train.progress=false", f"train.output_dir={out}"])
    t0, c0 = time.perf_counter(), cpu_minutes()
    summary = contextpose.run_training(recipe, quiet=True)
    minutes, cpu = (time.perf_counter() - t0) / 60, cpu_minutes() - c0
    recipe.data.val_subjects, recipe.data.val_every = tuple(val_s), args.val_every_mono
    m = contextpose.evaluate_weights(recipe, out, out_dir=out / "eval")
    return {"arm": arm, "steps": summary["step"], "minutes": minutes, "cpu_minutes": cpu, **flatten(m),
            "bone_length_error": m["bone_length_error"], "samples": m["count"]}


def flatten(metrics: dict) -> dict:
    """The relative / absolute MPJPE of the method and its baselines from an evaluation's metrics."""
    keep = {}
    for k, v in metrics.items():
        if isinstance(v, (int, float)) and "mpjpe" in k:
            keep[k] = float(v)
    return keep


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="data/synthetic_h36m_mocap")
    p.add_argument("--frames", type=int, default=1500)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--subjects", type=int, default=3)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--val-every", type=int, default=2)
    p.add_argument("--input", type=int, default=128)
    p.add_argument("--steps-2d", type=int, default=1500)
    p.add_argument("--batch-2d", type=int, default=32)
    p.add_argument("--steps-3d", type=int, default=400)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr-3d", type=float, default=1e-4)
    p.add_argument("--ransac-px", type=float, default=10.0)
    p.add_argument("--batch-vol", type=int, default=4)
    p.add_argument("--volume-size", type=int, default=32)
    p.add_argument("--base-noise-mm", type=float, default=20.0, help="gt_noisy base when there is no alg run")
    p.add_argument("--equal-cpu", action=argparse.BooleanOptionalAction, default=True,
                   help="give vol the alg arm's CPU minutes (measured) instead of --steps-3d steps")
    p.add_argument("--probe-steps", type=int, default=5)
    p.add_argument("--steps-mono", type=int, default=80, help="steps of each monocular arm (claim 2)")
    p.add_argument("--val-every-mono", type=int, default=10, help="every n-th held-out frame, x every camera")
    p.add_argument("--precision-vol", default="fp32",
                   help="vol's training precision (auto picked bf16 here, and one bf16 smoke run hit a NaN loss)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arms", default="dlt,alg_no_conf,alg,vol,plain_mono,cp_mono")
    p.add_argument("--work", default="runs/triangulation_claims")
    p.add_argument("--skip-stage0", action="store_true", help="reuse the stage-0 run in --work")
    p.add_argument("--out", default="benchmarks/results/triangulation_claims.json")
    p.add_argument("--keep", action="store_true", help="keep --out's rows of the arms not run now")
    args = p.parse_args()

    import torch

    torch.set_num_threads(2)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    root = write_data(args)
    arms = args.arms.split(",")
    previous = json.loads(Path(args.out).read_text())["rows"] if args.keep and Path(args.out).is_file() else []
    rows = [r for r in previous if r["arm"] not in arms and not (r["arm"] == "stage0_2d" and not args.skip_stage0)]
    stage0 = work / "stage0_2d"
    if not args.skip_stage0:
        rows.append(train_2d(args, root, work))
        print(rows[-1], flush=True)
    if "dlt" in arms:  # stage 0 as it is: soft-argmax unweighted DLT + the argmax DLT / RANSAC baselines
        recipe = algebraic_recipe(args, root, work / "dlt", False, stage0, 1)
        rows.append({"arm": "dlt", "steps": 0, **flatten(evaluate_arm(recipe, stage0, work / "dlt" / "eval"))})
        print(rows[-1], flush=True)
    for arm in ("alg_no_conf", "alg"):
        if arm in arms:
            rows.append(run_algebraic(args, root, work, arm, stage0))
            print(rows[-1], flush=True)
    if "vol" in arms:
        alg = [r for r in rows if r["arm"] == "alg"]
        budget = alg[0]["cpu_minutes"] if alg and args.equal_cpu else None
        rows.append(run_volumetric(args, root, work, budget))
        print(rows[-1], flush=True)
    for arm in ("plain_mono", "cp_mono"):  # after vol: they centre their cuboids on its saved alg pelvis
        if arm in arms:
            rows.append(run_monocular(args, root, work, arm))
            print(rows[-1], flush=True)

    cols = sorted({k for r in rows for k in r if "mpjpe" in k or k == "bone_length_error"})
    print(f"\n{'arm':<12} {'steps':>6} {'cpu min':>8} " + " ".join(f"{c:>28}" for c in cols))
    for r in rows:
        cpu = r.get("cpu_minutes")
        print(f"{r['arm']:<12} {r.get('steps', 0):>6} {'' if cpu is None else f'{cpu:.1f}':>8} "
              + " ".join(f"{r[c]:>28.1f}" if c in r else f"{'':>28}" for c in cols))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
