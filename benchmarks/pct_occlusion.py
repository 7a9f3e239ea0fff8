"""PCT claim 2 (issue 10): tokens vs heatmaps on the same synthetic people, the same backbone and the same CPU budget,
overall and on people whose joints are mostly occluded.

The published claim is that PCT's compositional tokens help most under occlusion: a token describes several joints
at once, so a hidden joint is inferred from the visible ones through the learned pose prior. In miniature:

* **data**: the demo's synthetic COCO training set (12,000 images of 256x256, ``data/synthetic_coco``) and a
  separate validation set of unseen people (``--val`` images, another seed). *Occluded* people are those with more
  than half of their labelled joints flagged ``v = 1`` by the synthetic world's depth test (hidden by another
  person, an occluder or their own body); their AP is computed on a COCO file where everyone else is ignored
  (:func:`humanvision.data.readers.coco.write_occluded_subset`). Ground-truth boxes, flip test, COCO AP.
* **heatmap baseline**: ``lateral_small`` (3.2 M parameters) at 160x160, the demo's optimisation (AdamW 4e-3,
  cosine over the time budget, flip augmentation), trained for ``stage0 + tokenizer + classifier`` minutes.
* **PCT**: stage 0 = the same heatmap recipe for ``--stage0`` minutes (its frozen backbone: the lateral pyramid's
  stride-4 map, average-pooled to 10x10 by ``pct.feature_size``); stage I = a woimgguide tokenizer (M=34 tokens,
  ``--codes`` codes) on the training set's poses for ``--tokenizer`` minutes; stage II = the classification head on
  the frozen backbone and tokenizer for ``--classifier`` minutes. So PCT's three runs add up to the baseline's
  budget. The stage-0 model is evaluated as well (a heatmap model with PCT's stage-0 budget), and the tokenizer's
  reconstruction AP of the validation poses (PCT's upper bound).

All runs measure their precision at start-up (``auto``). Prints a table and writes JSON::

    python benchmarks/pct_occlusion.py --out benchmarks/results/pct_occlusion.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

METRICS = ("AP", "AP50", "AP75", "AR")


def heatmap_recipe(out: Path, minutes: float, size: int, train: dict, val: dict) -> dict:
    """The demo's recipe (cli/pose.py DEMO_RECIPE) at a square ``size`` (PCT crops are square)."""
    return {
        "name": out.name,
        "model": {"name": "lateral_small", "skeleton": "coco17", "input_size": [size, size]},
        "data": {"source": "coco", **train, **val, "augment": "flip", "cache_images": True},
        "train": {"epochs": 100, "max_minutes": minutes, "batch_size": 32, "lr": 4e-3, "weight_decay": 1e-4,
                  "schedule": "cosine", "warmup_iters": 50, "clip_grad": 1.0, "precision": "auto",
                  "channels_last": "auto", "num_workers": 0, "best_metric": "AP", "eval_every": 1000,
                  "output_dir": str(out), "log_every": 20},
        "eval": {"flip_test": True, "batch_size": 64},
    }


def pct_recipe(out: Path, stage: str, minutes: float, size: int, codes: int, pool: int, train: dict, val: dict,
               stage0: Path, tokenizer: Path | None = None) -> dict:
    """A woimgguide PCT stage on the ``lateral_small`` stage-0 backbone: a mid-size tokenizer (M=34, D=256,
    ``codes`` entries), the release's head shape on ``pool x pool`` pooled features, with half-width convs."""
    pct = {"stage": stage, "guide": "none", "backbone": "lateral_small", "backbone_weights": str(stage0),
           "input_size": size, "feature_size": pool, "token_num": 34, "token_dim": 256, "codebook_size": codes,
           "enc_num_blocks": 4, "enc_hidden_dim": 256, "enc_token_inter_dim": 64, "enc_hidden_inter_dim": 256,
           "dec_num_blocks": 1, "dec_hidden_dim": 32, "dec_token_inter_dim": 64, "dec_hidden_inter_dim": 64,
           "conv_num_blocks": 2, "conv_channels": 128, "head_num_blocks": 4, "head_hidden_dim": 64,
           "head_token_inter_dim": 64, "head_hidden_inter_dim": 256}
    if tokenizer is not None:
        pct["tokenizer_weights"] = str(tokenizer)
    if stage == "tokenizer":  # image-free: large batches of poses, the release's optimisation
        opt = {"batch_size": 128, "lr": 1e-2, "weight_decay": 0.15, "warmup_iters": 100, "num_workers": 1,
               "precision": "fp32", "channels_last": False}
        data = {"augment": "pct", "cache_images": False}
    else:
        opt = {"batch_size": 32, "lr": 2e-3, "weight_decay": 0.05, "warmup_iters": 50, "num_workers": 0,
               "precision": "auto", "channels_last": "auto"}
        data = {"augment": "flip", "cache_images": True}
    return {
        "name": out.name, "pct": pct,
        "data": {"source": "coco", **train, **val, "padding": 1.25, **data},
        "train": {"epochs": 1000, "max_minutes": minutes, "optimizer": "adamw", "schedule": "cosine",
                  "warmup_ratio": 0.001, "min_lr_ratio": 1e-5, "best_metric": "AP", "eval_every": 100000,
                  "output_dir": str(out), "log_every": 20, "clip_grad": 1.0, **opt},
        "eval": {"flip_test": True, "batch_size": 64},
    }


def evaluate(kind: str, recipe: dict, run: Path, val_sets: dict[str, Path]) -> dict[str, dict]:
    """COCO AP of the run's weights on each validation file (same images, ``ignore`` flags differ)."""
    from humanvision.config import load_config
    from humanvision.methods import pct
    from humanvision.methods.topdown import TopDownRecipe, build_method, evaluate_topdown

    res = {}
    for name, ann in val_sets.items():
        over = [f"data.val_ann={ann}"]
        if kind == "heatmap":
            rec = load_config(recipe, TopDownRecipe, over)
            m = evaluate_topdown(build_method(rec, weights=run), rec)
        else:
            rec = pct.load_recipe(recipe, over)
            m = pct.evaluate(pct.build_method(rec, weights=run), rec)
        res[name] = {k: round(float(m[k]), 4) for k in METRICS}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stage0", type=float, default=8.0, help="minutes of heatmap pre-training (PCT stage 0)")
    ap.add_argument("--tokenizer", type=float, default=3.0, help="minutes of PCT stage I")
    ap.add_argument("--classifier", type=float, default=6.0, help="minutes of PCT stage II")
    ap.add_argument("--size", type=int, default=160, help="square crop side")
    ap.add_argument("--pool", type=int, default=10, help="pct.feature_size: the stride-4 map pooled to pool x pool")
    ap.add_argument("--longer-classifier", type=float, default=0.0,
                    help="also train stage II for this many minutes on the same stage 0 and tokenizer: an extra row "
                         "outside the equal budget, to see how far a longer head gets (0: off)")
    ap.add_argument("--codes", type=int, default=1024, help="codebook entries")
    ap.add_argument("--val", type=int, default=600, help="validation images (unseen people)")
    ap.add_argument("--data", type=Path, default=Path("data/synthetic_coco"))
    ap.add_argument("--val-data", type=Path, default=Path("data/synthetic_coco_val_occ"))
    ap.add_argument("--runs", type=Path, default=Path("runs/bench_pct_occlusion"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/pct_occlusion.json"))
    args = ap.parse_args()

    import os

    from humanvision.cli.pose import run_training
    from humanvision.config import load_config
    from humanvision.data.readers.coco import write_occluded_subset
    from humanvision.data.synthetic.writers import generate_coco
    from humanvision.methods import pct
    from humanvision.methods.topdown import DataConfig, TopDownRecipe, prepare_synthetic

    prepare_synthetic(DataConfig(source="synthetic", synthetic_dir=args.data, synthetic_train=12000,
                                 synthetic_val=150, synthetic_seed=0))  # the demo's set (cached after the demo)
    val_ann = args.val_data / "annotations/person_keypoints_val.json"
    if not val_ann.is_file():
        generate_coco(args.val_data, {"val": args.val}, seed=7, workers=os.cpu_count() or 1)
    occ = write_occluded_subset(val_ann, args.val_data / "annotations/person_keypoints_val_occluded.json")
    val_sets = {"all": val_ann, "occluded": Path(occ["file"])}
    train = {"train_ann": str(args.data / "annotations/person_keypoints_train.json"),
             "train_images": str(args.data / "train")}
    val = {"val_ann": str(val_ann), "val_images": str(args.val_data / "val")}
    total = args.stage0 + args.tokenizer + args.classifier
    runs = {"stage0": args.runs / "heatmap_stage0", "baseline": args.runs / "heatmap_full",
            "tokenizer": args.runs / "pct_tokenizer", "classifier": args.runs / "pct_classifier",
            "classifier_longer": args.runs / f"pct_classifier_{args.longer_classifier:g}min"}

    def train_run(name: str, recipe: dict, kind: str) -> dict:
        run = runs[name]
        if (run / "last").exists() and (run / "done.json").exists():
            return json.loads((run / "done.json").read_text())
        rec = load_config(recipe, TopDownRecipe) if kind == "heatmap" else pct.load_recipe(recipe)
        tic = time.perf_counter()
        fit = run_training(rec, quiet=True)
        info = {"steps": fit["step"], "minutes": round((time.perf_counter() - tic) / 60, 2),
                "budget_minutes": recipe["train"]["max_minutes"], "precision": fit["precision"]}
        (run / "done.json").write_text(json.dumps(info))
        return info

    recipes = {
        "stage0": ("heatmap", heatmap_recipe(runs["stage0"], args.stage0, args.size, train, val)),
        "baseline": ("heatmap", heatmap_recipe(runs["baseline"], total, args.size, train, val)),
        "tokenizer": ("pct", pct_recipe(runs["tokenizer"], "tokenizer", args.tokenizer, args.size, args.codes,
                                        args.pool, train, val, runs["stage0"])),
        "classifier": ("pct", pct_recipe(runs["classifier"], "classifier", args.classifier, args.size,
                                         args.codes, args.pool, train, val, runs["stage0"], runs["tokenizer"])),
    }
    if args.longer_classifier > 0:
        recipes["classifier_longer"] = ("pct", pct_recipe(
            runs["classifier_longer"], "classifier", args.longer_classifier, args.size, args.codes, args.pool, train,
            val, runs["stage0"], runs["tokenizer"]))
    result: dict = {"budget_minutes": total, "size": args.size, "val_images": args.val,
                    "val_people": occ["people"], "occluded_people": occ["occluded"],
                    "threads": torch.get_num_threads(), "runs": {}}
    for name, (kind, recipe) in recipes.items():
        info = train_run(name, recipe, kind)
        info["eval"] = evaluate(kind, recipe, runs[name], val_sets)
        result["runs"][name] = info
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))

    rows = [("heatmap, PCT's stage-0 budget", "stage0", f"{args.stage0:g}"),
            ("heatmap baseline", "baseline", f"{total:g}"),
            ("PCT tokenizer: reconstruction of GT poses (upper bound)", "tokenizer", f"{args.tokenizer:g}"),
            ("PCT (stage 0 + I + II)", "classifier", f"{args.stage0:g}+{args.tokenizer:g}+{args.classifier:g}")]
    if args.longer_classifier > 0:
        rows.append(("PCT, longer stage II (outside the equal budget)", "classifier_longer",
                     f"{args.stage0:g}+{args.tokenizer:g}+{args.longer_classifier:g}"))
    print(f"COCO AP with ground-truth boxes on {args.val} unseen images: {occ['people']} people, "
          f"{occ['occluded']} of them mostly occluded")
    print(f"{'model':<58} {'minutes':>12} {'steps':>6} {'AP':>6} {'AP50':>6} {'AP75':>6} {'AP occl.':>9}")
    for label, key, minutes in rows:
        r = result["runs"][key]
        a, o = r["eval"]["all"], r["eval"]["occluded"]
        print(f"{label:<58} {minutes:>12} {r['steps']:>6} {a['AP']:6.3f} {a['AP50']:6.3f} {a['AP75']:6.3f} "
              f"{o['AP']:9.3f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
