"""Weakly supervised monocular 3D pose (Zhou et al. ICCV'17) in miniature, issue 12's two claims at equal CPU budget:

* **claim 2** (weak supervision): with a fixed, small 3D training set, adding 2D-only images (no depth) lowers the
  MPJPE on held-out 3D subjects: arm **A** (3D only) against arm **B** (the same 3D + a large 2D set);
* **claim 1** (the geometric constraint, the paper's ablation): arm **C** (B + the bone-length-ratio loss on the 2D
  samples, the published ``weight_var`` 0.01) against **B** should lower MPJPE and left/right bone-length asymmetry.

Everything runs on the synthetic world and nothing else (written once into ``--data-dir``, reused while the
parameters stay the same):

* **2D set**: ``--images-2d`` MPII-style single-view images (128x128, one person each, random people and
  backgrounds, occluders) of DeepMimic motion capture (``--motion-2d random``: poses sampled within the joint
  limits instead), world seed ``--world-seed-2d``: other people, cameras and frames than the 3D set's;
* **3D set**: ``--frames-3d`` Human3.6M-layout frames (256x256, a fixed 4-camera ring, one person per frame, the
  same motion capture), split evenly into subjects S1, S2, S3. Every synthetic frame has a new random person, so
  the held-out subjects S2 and S3 are other people doing other frames of the same motions (as Human3.6M's test
  subjects do the same actions). Training uses a **small subset** of S1's crops (``--train-3d`` crops, distinct
  frames first, one camera each: :func:`select_subset`, fixed across seeds); evaluation uses S2 + S3, every
  ``--val-every``-th frame, every camera, no augmentation.

The network and losses are the library's (``humanvision.methods.monocular3d``): the v2 network's CPU-sized variant
``resnet_depth_mini`` (64x64 input, 16x16 heatmaps and depth maps), heatmap MSE + 0.1 SmoothL1 depth (3D samples)
+ ``weight_var`` x geometry (2D samples). The arms come from ``configs/zhou3d_mini_synthetic_stage2_fusion.yaml``
(Adam 1e-3, cosine to 0, batch 32, fp32):

* every arm of a seed starts from the **same initialisation**: the seeded random initialisation of the network
  (saved once), or with ``--stage1-steps N`` a shared 2D-only stage 1 (``..._stage1_2d.yaml``, N steps on the 2D
  set, as the seed trains stage 1 on MPII; arm A then sees the 2D images through its initialisation, so claim 2
  becomes "do 2D images keep helping once 3D training starts");
* every arm trains for the **same number of steps** (``--steps``) at the same batch size, one epoch sized to the
  step budget so the cosine ends exactly at the last step. A: every batch from the 3D subset (repeated). B and C:
  the fusion sampler over the repeated 3D subset and the 2D set, ``--fraction-3d`` (0.5) of the epoch 3D: the
  seed's ``ratio_3d`` 1 with a 3D set larger than MPII gives half-3D batches;
* C keeps everything of B and adds the geometry loss for the whole run (``--geometry-weights``: one C arm per
  weight; 0.01 is the published one). The seed instead adds it as a third stage (lr 1e-4, from stage 2):
  ``--finetune-steps N`` also runs that comparison: B's final weights trained N more steps with
  (``configs/zhou3d_mini_synthetic_stage3_geometry.yaml``) and without the geometry loss, same lr and steps.

Metrics on the held-out subjects, final weights (no model selection), flip test (pose3d.md 5.7): the seed's MPJPE
(root-relative, 15 bones scaled to 4000 mm), Protocol #1 (scaled to the ground truth's bone length) and P-MPJPE
(Procrustes); **bone-length asymmetry**: mean over the six left/right bone pairs (hip, thigh, shin, shoulder,
upper arm, forearm) of ``|l_right - l_left|`` in mm of the Protocol-#1-scaled prediction (the ground truth's own
asymmetry is printed beside it); the mean absolute error of those twelve bone lengths; 2D PCK of the heatmap argmax
on the seed's ten limb joints at 0.05 (the seed's threshold) and 0.1 of the heatmap width; the final training loss
terms (the geometry term is computed, unweighted, in every arm). Each arm's CPU minutes (``time.process_time``
of this process around the training; data loading runs in it, ``num_workers`` 0) and wall minutes are measured;
the budget is in steps, not time, because the CPU is shared.

Prints one table (every seed, then the mean over seeds) and the two claims' differences; writes JSON::

    OMP_NUM_THREADS=2 python benchmarks/monocular3d_ablation.py --out benchmarks/results/monocular3d_ablation.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from humanvision.errors import ConfigError

RECIPES = {"stage1": "configs/zhou3d_mini_synthetic_stage1_2d.yaml",
           "fusion": "configs/zhou3d_mini_synthetic_stage2_fusion.yaml",
           "geometry": "configs/zhou3d_mini_synthetic_stage3_geometry.yaml"}

#: (right bone, left bone) pairs of Human3.6M-17 (``h36m17_vp`` / ECCV'18 order, what metric_skeleton returns): the
#: bones of the geometry loss's four groups (pelvis-hip, thigh, shin, thorax-shoulder, upper arm, forearm)
PAIRED_BONES = (((0, 1), (0, 4)), ((1, 2), (4, 5)), ((2, 3), (5, 6)),
                ((8, 14), (8, 11)), ((14, 15), (11, 12)), ((15, 16), (12, 13)))
#: the seed's 2D accuracy joints (MPII-16: ankles, knees, hips, wrists, elbows)
ACC_JOINTS = (0, 1, 2, 3, 4, 5, 10, 11, 14, 15)
METRICS = ("mpjpe_hg", "mpjpe_p1", "mpjpe_p2", "asymmetry_mm", "bone_error_mm", "pck", "pck_0.1")


# ---------------------------------------------------------------------------------------------- pure functions
def bone_lengths(poses: np.ndarray, bones: Any) -> np.ndarray:
    """``(N, J, 3)`` poses, ``(E, 2)`` joint pairs -> ``(N, E)`` lengths."""
    p, b = np.asarray(poses, dtype=np.float64), np.asarray(bones).reshape(-1, 2)
    return np.linalg.norm(p[:, b[:, 0]] - p[:, b[:, 1]], axis=-1)


def bone_asymmetry(poses: np.ndarray) -> np.ndarray:
    """Per pose, the mean over :data:`PAIRED_BONES` of ``|l_right - l_left|`` (the poses' unit): ``(N,)``."""
    right = bone_lengths(poses, [r for r, _ in PAIRED_BONES])
    left = bone_lengths(poses, [le for _, le in PAIRED_BONES])
    return np.abs(right - left).mean(1)


def scale_to_ground_truth(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Root-relative ``pred`` scaled per sample to the total length of the ground truth's 15 evaluation bones
    (Protocol #1's scale for a network without metric scale, as
    :func:`~humanvision.methods.monocular3d.pose3d_metrics`)."""
    from humanvision.metrics.pose3d import HG_H36M17_EDGES

    p, g = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    p, g = p - p[:, :1], g - g[:, :1]
    return p * (bone_lengths(g, HG_H36M17_EDGES).sum(1) / bone_lengths(p, HG_H36M17_EDGES).sum(1))[:, None, None]


def pck(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, threshold: float,
        joints: tuple[int, ...] | None = ACC_JOINTS) -> float:
    """Percentage of the visible ``joints`` (all with None) of ``(N, K, 2)`` predictions within ``threshold`` of the
    ground truth (same unit); NaN when none is visible."""
    d = np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(gt, np.float64), axis=-1)
    v = np.asarray(visible) > 0
    if joints is not None:
        d, v = d[:, list(joints)], v[:, list(joints)]
    return float(100.0 * (d[v] <= threshold).mean()) if v.any() else float("nan")


def select_subset(frames: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` crop indices out of crops whose frame is ``frames[i]``: a seeded shuffle taking one crop (camera) of
    every frame before a second crop of any frame (the most poses for the count). Sorted."""
    frames = np.asarray(frames)
    if not 0 < n <= len(frames):
        raise ConfigError(f"--train-3d: between 1 and the {len(frames)} training crops, got {n}")
    order = np.random.default_rng(seed).permutation(len(frames))
    rank, seen = np.empty(len(frames), np.int64), {}
    for i in order:  # how many crops of the same frame come earlier in the shuffle
        rank[i] = seen.get(frames[i], 0)
        seen[frames[i]] = rank[i] + 1
    return np.sort(order[np.argsort(rank[order], kind="stable")][:n])


def tile(indices: np.ndarray, length: int, seed: int = 0) -> np.ndarray:
    """``indices`` shuffled and repeated to ``length`` (each used ``length // len`` or one more times)."""
    return np.resize(np.random.default_rng(seed).permutation(np.asarray(indices)), int(length))


# ----------------------------------------------------------------------------------------------------- data
def write_data(args: argparse.Namespace) -> dict[str, Any]:
    """Write the 2D and 3D sets once (a stamp records the parameters); returns their folders and the wall and CPU
    minutes of writing each (CPU: this process only, so exact with ``--workers 1``; 0 when already written)."""
    from humanvision.data.synthetic.cache import write_once
    from humanvision.data.synthetic.motion import deepmimic_clips, load_deepmimic
    from humanvision.data.synthetic.writers import generate_h36m, generate_mpii

    clips = [load_deepmimic(c) for c in deepmimic_clips()]
    workers = args.workers or os.cpu_count() or 1
    mpii, h36m = args.data_dir / "synthetic_zhou3d_mpii", args.data_dir / "synthetic_zhou3d_h36m"
    t0, c0 = time.perf_counter(), time.process_time()
    p2 = {"images": args.images_2d, "size": [128, 128], "seed": args.world_seed_2d, "motion": args.motion_2d}
    wrote_2d = write_once(mpii, p2, lambda progress: generate_mpii(
        mpii, args.images_2d, size=(128, 128), seed=args.world_seed_2d, workers=workers, progress=progress,
        motion=clips if args.motion_2d == "deepmimic" else None), description=f"2D set -> {mpii}")
    t1, c1 = time.perf_counter(), time.process_time()
    p3 = {"frames": args.frames_3d, "size": [256, 256], "views": 4, "subjects": 3, "seed": args.world_seed_3d,
          "motion": "deepmimic"}
    wrote_3d = write_once(h36m, p3, lambda progress: generate_h36m(
        h36m, args.frames_3d, size=(256, 256), seed=args.world_seed_3d, views=4, subjects=3, workers=workers,
        progress=progress, motion=clips), description=f"3D set -> {h36m}")
    t2, c2 = time.perf_counter(), time.process_time()
    return {"mpii": mpii, "h36m": h36m, "minutes": {"2d": (t1 - t0) / 60, "3d": (t2 - t1) / 60},
            "cpu_minutes": {"2d": (c1 - c0) / 60, "3d": (c2 - c1) / 60}, "written": [wrote_2d, wrote_3d]}


def data_overrides(data: dict[str, Any], args: argparse.Namespace) -> list[str]:
    mpii, h36m = data["mpii"], data["h36m"]
    return [f"data.mpii_train={mpii / 'annotations/mpii_train.json'}", f"data.mpii_images={mpii / 'images'}",
            f"data.h36m_labels={h36m / 'human36m-multiview-labels-GTbboxes.npy'}",
            f"data.h36m_root={h36m / 'processed'}", f"data.h36m_val_every={args.val_every}"]


def build_data(recipe, args: argparse.Namespace) -> dict[str, Any]:
    """The 2D set, S1's crops (all; the subset is chosen here), the held-out S2 + S3 crops."""
    from humanvision.methods import monocular3d as m3d
    from humanvision.models import create_model

    m = recipe.model
    model = create_model(m.name, skeleton=m.skeleton, input_size=tuple(m.input_size), **m.args)
    data_2d, data_3d, val = m3d.build_datasets(recipe, model.input_size[0], model.heatmap_size[0])
    subset = select_subset(data_3d.reader.frame, args.train_3d, args.subset_seed)
    return {"2d": data_2d, "3d": data_3d, "val": val, "subset": subset,
            "counts": {"images_2d": len(data_2d), "crops_3d_pool": len(data_3d), "crops_3d_train": len(subset),
                       "frames_3d_train": len(np.unique(data_3d.reader.frame[subset])),
                       "crops_val": len(val)}}


# ------------------------------------------------------------------------------------------------ training
def load(kind: str, overrides: list[str], unchecked: tuple[str, ...] = ()):
    from humanvision.methods import monocular3d as m3d

    return m3d.load_recipe(RECIPES[kind], overrides, unchecked=unchecked)


def train(recipe, data: dict[str, Any], *, use_2d: bool, steps: int, fraction_3d: float, seed: int
          ) -> tuple[Any, dict[str, Any]]:
    """Train ``recipe`` (its init_weights, losses and optimiser) for exactly ``steps`` steps, one epoch: the 3D
    subset alone (repeated) or, with ``use_2d``, the fusion sampler over the repeated 3D subset and the 2D set
    (``fraction_3d`` of the epoch 3D; without 3D data (stage 1), the 2D set alone). Returns the trained method and
    the run's numbers."""
    from torch.utils.data import Subset

    from humanvision.engine import Trainer
    from humanvision.engine.logging import read_log
    from humanvision.methods import monocular3d as m3d

    cfg = recipe.train
    cfg.epochs, cfg.max_steps = 1, steps
    total = steps * cfg.batch_size
    cpu0, wall0 = time.process_time(), time.perf_counter()
    method = m3d.build_method(recipe)
    if recipe.stage == "2d":
        trainer = Trainer(cfg, method, Subset(data["2d"], tile(np.arange(len(data["2d"])), total, seed)))
    elif not use_2d:
        trainer = Trainer(cfg, method, Subset(data["3d"], tile(data["subset"], total, seed)))
    else:
        n3 = round(fraction_3d * total)
        d3 = Subset(data["3d"], tile(data["subset"], n3, seed))
        d2 = Subset(data["2d"], tile(np.arange(len(data["2d"])), total - n3, seed + 1))
        trainer = m3d.fusion_trainer(cfg, method, d3, d2, ratio_3d=0.0)  # ratio <= 0: every 3D item each epoch
    assert trainer.steps_per_epoch == steps, (trainer.steps_per_epoch, steps)
    summary = trainer.fit()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    log = read_log(cfg.output_dir, "train")
    tail = log[-max(1, len(log) // 10):]
    losses = {f"train_{k}": float(np.mean([r[k] for r in tail]))
              for k in ("loss", "loss_hm", "loss_depth", "loss_geometry") if tail and k in tail[0]}
    return method, {"steps": summary["step"], "cpu_minutes": cpu / 60, "wall_minutes": wall / 60,
                    "steps_per_s": summary["step"] / wall, **losses}


@torch.no_grad()
def evaluate(method, dataset, batch_size: int = 64, total_length: float = 4000.0) -> dict[str, float]:
    """The held-out metrics (module docstring) of ``method`` on the 3D ``dataset``, flip test."""
    from torch.utils.data import DataLoader

    from humanvision.methods import monocular3d as m3d

    method.eval()
    preds, gts, locs, kps, vis = [], [], [], [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        out = method.predict(batch["image"], flip_test=True)
        preds.append(m3d.metric_skeleton(out["pose_crop"], total_length))
        gts.append(batch["gt_3d"].double().numpy())
        hm = out["heatmaps"]
        w = hm.shape[-1]
        idx = hm.flatten(-2).argmax(-1)
        locs.append(torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], -1).numpy())
        kps.append(batch["keypoints"].numpy())
        vis.append(batch["visible"].numpy())
    pred, gt = np.concatenate(preds), np.concatenate(gts)
    loc, kp, visible = np.concatenate(locs), np.concatenate(kps), np.concatenate(vis)
    out = dict(m3d.pose3d_metrics(pred, gt, total_length))
    scaled, g = scale_to_ground_truth(pred, gt), gt - gt[:, :1]
    bones = [b for pair in PAIRED_BONES for b in pair]
    out.update({"asymmetry_mm": float(bone_asymmetry(scaled).mean()),
                "asymmetry_gt_mm": float(bone_asymmetry(g).mean()),
                "bone_error_mm": float(np.abs(bone_lengths(scaled, bones) - bone_lengths(g, bones)).mean()),
                "pck": pck(loc, kp, visible, 0.05 * w), "pck_0.1": pck(loc, kp, visible, 0.1 * w)})
    return out


def run_seed(seed: int, args: argparse.Namespace, data_paths: dict[str, Any], data: dict[str, Any]) -> list[dict]:
    """Every arm of one seed from one shared initialisation."""
    from safetensors.torch import save_file

    from humanvision.methods import monocular3d as m3d

    work = args.work / f"seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    common = [*data_overrides(data_paths, args), f"train.seed={seed}", f"train.batch_size={args.batch_size}"]
    torch.manual_seed(seed)
    init_recipe = load("stage1", [*common, f"train.output_dir={work / 'stage1'}"])
    init = work / "init.safetensors"
    save_file({k: v.contiguous() for k, v in m3d.build_method(init_recipe).state_dict().items()}, str(init))
    rows: list[dict] = []

    def record(arm: str, method, stats: dict, **extra: Any) -> None:
        c0 = time.process_time()
        metrics = evaluate(method, data["val"], init_recipe.eval.batch_size, init_recipe.eval.total_bone_length)
        rows.append({"seed": seed, "arm": arm, **extra, **stats, "eval_cpu_minutes": (time.process_time() - c0) / 60,
                     **metrics})
        print(json.dumps({k: v for k, v in rows[-1].items() if not isinstance(v, dict)}), flush=True)

    if args.stage1_steps:
        _, stats = train(init_recipe, data, use_2d=True, steps=args.stage1_steps, fraction_3d=0.0, seed=seed)
        init = work / "stage1"
        print(json.dumps({"seed": seed, "stage1": stats}), flush=True)
    arms = [("A", 0.0, False), ("B", 0.0, True)]
    arms += [("C" if w == 0.01 else f"C (w_var={w:g})", w, True) for w in args.geometry_weights]
    for arm, w_var, use_2d in arms:  # every arm: the stage-2 recipe (C: with the geometry loss)
        if arm[0] not in args.arms:
            continue
        over = [*common, f"init_weights={init}", f"train.output_dir={work / arm.replace(' ', '_')}"]
        if w_var:
            over += ["stage=geometry", f"loss.weight_var={w_var}"]
        method, stats = train(load("fusion", over), data, use_2d=use_2d, steps=args.steps, fraction_3d=args.fraction_3d,
                              seed=seed)
        record(arm, method, stats, weight_var=w_var, uses_2d=use_2d,
               train_3d_crops=len(data["subset"]), train_2d_images=len(data["2d"]) if use_2d else 0)
    if args.finetune_steps and "B" in args.arms:  # the seed's staged protocol: stage 3 from stage 2's weights
        for arm, w_var in (("B+", 0.0), ("B+geometry", 0.01)):
            over = [*common, f"init_weights={work / 'B'}", f"train.output_dir={work / arm}"]
            if not w_var:
                over += ["stage=2d3d", "loss.weight_var=0.0"]
            method, stats = train(load("geometry", over), data, use_2d=True, steps=args.finetune_steps,
                                  fraction_3d=args.fraction_3d, seed=seed)
            b = next(r for r in rows if r["arm"] == "B")
            stats = {**stats, "steps": b["steps"] + stats["steps"], "cpu_minutes": b["cpu_minutes"] +
                     stats["cpu_minutes"], "wall_minutes": b["wall_minutes"] + stats["wall_minutes"]}
            record(arm, method, stats, weight_var=w_var, uses_2d=True, train_3d_crops=len(data["subset"]),
                   train_2d_images=len(data["2d"]))
    return rows


# ------------------------------------------------------------------------------------------------- report
def mean_rows(rows: list[dict]) -> list[dict]:
    """One row per arm with the mean over seeds of every number (and ``seeds``: how many)."""
    out = []
    for arm in dict.fromkeys(r["arm"] for r in rows):
        rs = [r for r in rows if r["arm"] == arm]
        m = {k: float(np.mean([r[k] for r in rs])) for k, v in rs[0].items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "seed"}
        out.append({**rs[0], **m, "seed": "mean", "seeds": len(rs)})
    return out


def differences(rows: list[dict]) -> dict[str, dict]:
    """Per seed (and the mean): claim 2 = B - A, claim 1 = C - B (and B+geometry - B+), of the metrics."""
    out: dict[str, dict] = {}
    for seed in dict.fromkeys(r["seed"] for r in rows):
        by = {r["arm"]: r for r in rows if r["seed"] == seed}
        for name, (x, y) in {"claim2_B_minus_A": ("B", "A"), "claim1_C_minus_B": ("C", "B"),
                             "claim1_staged": ("B+geometry", "B+")}.items():
            if x in by and y in by:
                out.setdefault(name, {})[str(seed)] = {k: by[x][k] - by[y][k] for k in METRICS}
    return out


def print_table(rows: list[dict], args: argparse.Namespace, counts: dict[str, int]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Zhou et al. in miniature: resnet_depth_mini 64x64, {args.steps} steps x batch "
                        f"{args.batch_size} per arm, {counts['crops_3d_train']} 3D crops (S1), "
                        f"{counts['images_2d']} 2D images; held-out S2+S3: {counts['crops_val']} crops")
    cols = ("arm", "seed", "2D", "w_var", "steps", "CPU min", "MPJPE hg", "P1", "P-MPJPE", "asym mm (GT)",
            "bone err", "PCK@.05", "PCK@.1", "L_geo train")
    for c in cols:
        table.add_column(c, justify="left" if c in ("arm", "seed") else "right")
    for r in rows:
        table.add_row(r["arm"], str(r["seed"]), "yes" if r["uses_2d"] else "no", f"{r['weight_var']:g}",
                      f"{r['steps']:.0f}", f"{r['cpu_minutes']:.2f}", f"{r['mpjpe_hg']:.1f}", f"{r['mpjpe_p1']:.1f}",
                      f"{r['mpjpe_p2']:.1f}", f"{r['asymmetry_mm']:.1f} ({r['asymmetry_gt_mm']:.1f})",
                      f"{r['bone_error_mm']:.1f}", f"{r['pck']:.1f}", f"{r['pck_0.1']:.1f}",
                      f"{r.get('train_loss_geometry', float('nan')):.2e}")
    Console(width=200).print(table)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=3000, help="optimisation steps of every arm")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--arms", nargs="+", default=["A", "B", "C"], choices=["A", "B", "C"])
    p.add_argument("--geometry-weights", type=float, nargs="+", default=[0.01],
                   help="one arm C per weight_var (0.01: the published weight)")
    p.add_argument("--fraction-3d", type=float, default=0.5, help="3D share of B's and C's samples")
    p.add_argument("--train-3d", type=int, default=300, help="3D training crops (a subset of S1's)")
    p.add_argument("--subset-seed", type=int, default=0)
    p.add_argument("--images-2d", type=int, default=4000)
    p.add_argument("--frames-3d", type=int, default=1200, help="3D frames x 4 cameras, split into S1, S2, S3")
    p.add_argument("--val-every", type=int, default=2, help="keep every n-th held-out frame (all cameras)")
    p.add_argument("--motion-2d", choices=["deepmimic", "random"], default="deepmimic")
    p.add_argument("--world-seed-2d", type=int, default=1)
    p.add_argument("--world-seed-3d", type=int, default=0)
    p.add_argument("--stage1-steps", type=int, default=0, help="shared 2D-only stage 1 before every arm (0: none)")
    p.add_argument("--finetune-steps", type=int, default=0,
                   help="also the seed's staged comparison: B continued this many steps with / without geometry")
    p.add_argument("--workers", type=int, default=0, help="rendering processes (0: one per core)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: OMP_NUM_THREADS)")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--work", type=Path, default=Path("runs/zhou3d_ablation"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/monocular3d_ablation.json"))
    args = p.parse_args()
    if not 0 < args.fraction_3d < 1:
        raise ConfigError(f"--fraction-3d: in (0, 1), got {args.fraction_3d}")
    if args.threads:
        torch.set_num_threads(args.threads)

    data_paths = write_data(args)
    writing = {k: data_paths[k] for k in ("minutes", "cpu_minutes", "written")}
    print(json.dumps({"data_writing": writing}), flush=True)
    data = build_data(load("fusion", data_overrides(data_paths, args), unchecked=("init_weights",)), args)
    print(json.dumps(data["counts"]), flush=True)
    rows = [r for seed in args.seeds for r in run_seed(seed, args, data_paths, data)]
    shown = rows + (mean_rows(rows) if len(args.seeds) > 1 else [])
    print_table(shown, args, data["counts"])
    diffs = differences(shown)
    for name, per_seed in diffs.items():
        for seed, d in per_seed.items():
            print(f"{name} (seed {seed}): " + ", ".join(f"{k} {v:+.2f}" for k, v in d.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "args": {k: str(v) for k, v in vars(args).items()}, "threads": torch.get_num_threads(),
        "data": {**data["counts"], "writing": writing},
        "rows": rows, "mean": mean_rows(rows), "differences": diffs}, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
