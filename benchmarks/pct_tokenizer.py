"""PCT claim 1 (issue 10): a full-size woimgguide tokenizer trained on synthetic poses reconstructs *real* human
motion it never saw.

1. ``humanvision synth --format mocap_coco``: poses of the pybullet DeepMimic motion-capture clips on the synthetic
   body, projected through random synthetic cameras, written as COCO keypoint files without images; training poses
   come from the training clips, validation poses from held-out clips (dance_b, getup_facedown, spinkick).
2. ``configs/pct_base_woimgguide_tokenizer.yaml`` unchanged in its model (M=34 tokens, V=2,048 codes, 4 Mixer
   blocks of width 512) and optimisation (AdamW lr 1e-2, wd 0.15, cosine, 500 warm-up iterations), trained with the
   engine on the training poses (``--epochs``, ``--batch``).
3. Reconstruction AP (pose2d.md §3.3) on the held-out poses after each ``--eval-every`` epochs, and at the end the
   codebook usage: the fraction of the 2,048 codes whose EMA count is alive (not dead, as the training log counts them), and the fraction used by the
   held-out and training poses.

Prints a table and writes JSON (CPU minutes of training, AP curve, codebook usage)::

    python benchmarks/pct_tokenizer.py --epochs 30 --out benchmarks/results/pct_tokenizer.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch


def synthesise(out: Path, train: int, val: int, seed: int) -> tuple[Path, Path]:
    from humanvision.data.synthetic.mocap import generate_mocap_coco

    ann = out / "annotations"
    files = ann / "person_keypoints_train.json", ann / "person_keypoints_val.json"
    marker = out / f"done_{train}_{val}_{seed}"
    if not marker.exists():
        generate_mocap_coco(out, {"train": train, "val": val}, seed=seed)
        marker.write_text("ok")
    return files


@torch.no_grad()
def code_usage(method, ann: Path, recipe) -> float:
    """Fraction of the codebook chosen by at least one token of the (unmasked, unflipped) poses of ``ann``."""
    from torch.utils.data import DataLoader

    from humanvision.data.readers import CocoKeypoints
    from humanvision.methods.pct import PCTDataset, build_transform

    reader = CocoKeypoints(ann, None, skeleton=method.skeleton.name, mode="instance", min_keypoints=1)
    data = PCTDataset(reader, build_transform(method, recipe.data, train=False), images=False)
    tok = method.tokenizer.eval()
    used = torch.zeros(tok.codebook.shape[0], dtype=torch.bool)
    for batch in DataLoader(data, batch_size=512):
        _, idx = tok.quantize(tok.encode(batch["joints"].float(), None))
        used[idx.flatten()] = True
    return used.float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/mocap_coco_20k"))
    ap.add_argument("--train", type=int, default=20000, help="training poses (training clips)")
    ap.add_argument("--val", type=int, default=2000, help="validation poses (held-out clips)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--run", type=Path, default=Path("runs/bench_pct_tokenizer"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/pct_tokenizer.json"))
    args = ap.parse_args()

    from humanvision.methods.pct import DEAD_CODE_COUNT, build_method, load_recipe, run_training

    tic = time.perf_counter()
    train_ann, val_ann = synthesise(args.data, args.train, args.val, seed=0)
    synth_min = (time.perf_counter() - tic) / 60
    recipe = load_recipe("configs/pct_base_woimgguide_tokenizer.yaml", [
        f"data.train_ann={train_ann}", f"data.val_ann={val_ann}", f"train.epochs={args.epochs}",
        f"train.batch_size={args.batch}", f"train.eval_every={args.eval_every}",
        f"train.num_workers={args.workers}", f"train.output_dir={args.run}", "train.log_every=50",
        "train.save_every=5"])
    fit = run_training(recipe, resume=(args.run / "last").exists())
    curve = []
    for line in (args.run / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "AP" in rec:
            curve.append({"epoch": rec.get("epoch"), "step": rec.get("step"), "AP": rec["AP"],
                          "AP50": rec.get("AP50"), "AP75": rec.get("AP75")})
    method = build_method(recipe, weights=args.run / "last")
    tok = method.tokenizer
    result = {
        "recipe": "configs/pct_base_woimgguide_tokenizer.yaml", "train_poses": args.train,
        "val_poses": args.val, "epochs": args.epochs, "batch": args.batch, "steps": fit["step"],
        "train_minutes": round(fit["minutes"], 1), "synth_minutes": round(synth_min, 1),
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "precision": fit["precision"], "final": {k: v for k, v in fit["metrics"].items()
                                                  if isinstance(v, float)},
        "curve": curve,
        "codes_alive_ema": (tok.ema_cluster_size >= DEAD_CODE_COUNT).float().mean().item(),
        "codes_used_val": code_usage(method, val_ann, recipe),
        "codes_used_train": code_usage(method, train_ann, recipe),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"{'epoch':>6} {'step':>6} {'AP':>6} {'AP50':>6} {'AP75':>6}")
    for c in curve:
        print(f"{c['epoch']:>6} {c['step']:>6} {c['AP']:6.3f} {c['AP50']:6.3f} {c['AP75']:6.3f}")
    print(f"training {result['train_minutes']} min on {result['threads']} threads; codes alive (EMA) "
          f"{result['codes_alive_ema']:.1%}, used by held-out poses {result['codes_used_val']:.1%}, "
          f"by training poses {result['codes_used_train']:.1%}; wrote {args.out}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
