"""HAP's central claim in miniature (issue 13, claim 1): does pose-guided masked image modelling give a better
human-centric ViT than plain MAE, and both better than random initialisation, at equal CPU budgets?

Everything runs on synthetic people and nothing else:

* **pre-training data**: unlabeled person crops of ``--crops`` synthetic identities (256x128, with their true COCO-17
  keypoints standing in for the ViTPose teacher HAP uses; ``data/synthetic_person_crops``, written on first use);
* **(b) MAE**: ``configs/mae_vit_tiny_synthetic.yaml``: ViT-Ti/16 MAE, uniform random masking at ratio 0.5 on one
  view per crop, no align loss;
* **(c) HAP**: ``configs/hap_vit_tiny_synthetic.yaml``: the same model, HAP's pose-guided masking (BEiT blocks +
  body-part override, pretraining.md B.4) on two views per crop and the 0.05 InfoNCE align loss on their [CLS];
  both pre-trainings get ``--pretrain-minutes`` of wall time each (HAP's two views cost about twice the compute
  per step, so it takes about half the steps: equal compute, not equal steps);
* **fine-tuning**: re-id on synthetic Market-1501 (identities differing in body shape, clothing colours and
  patterns, accessories, seen by 6 cameras; mAP / rank-1 on its query / gallery protocol) and pedestrian attributes
  on synthetic PA-100K (mA), each from (a) random init, (b) the MAE encoder and (c) the HAP encoder, with the same
  recipe (``configs/reid_vit_tiny_synthetic.yaml`` / ``attr_vit_tiny_synthetic.yaml`` at ``--size``, default 128x64,
  the encoders' 16x8 position embeddings resampled to it) and the same ``--reid-minutes`` / ``--attr-minutes``
  budget each;
* **2D pose** (B.9.3, ``--tasks pose``): ViTPose with the same ViT-Ti/16 backbone (``configs/hap_vitpose_tiny_synthetic.yaml``,
  the 16x8 position grid resampled to 128x96's 8x6, layer decay 0.8) on the demo's 12,000 synthetic COCO-format
  images for ``--pose-epochs`` epochs from each init (equal steps), OKS AP on the 150 unseen validation images.

Before fine-tuning, each encoder is also probed **frozen** (cheap, and what self-supervised features are usually
judged by): re-id mAP / rank-1 of its [CLS] output and of its mean patch token used directly as the descriptor
(no training at all), and attribute mA of a linear probe (weighted BCE, full-batch Adam, 300 iterations) on each.

Runs are sequential on the same machine; each picks its precision by measurement (``auto``). Prints one table and
writes JSON::

    python benchmarks/hap_pretraining.py --out benchmarks/results/hap_pretraining.json
    python benchmarks/hap_pretraining.py --skip-pretrain --no-probes --tasks pose --out benchmarks/results/hap_pose.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

PRETRAIN = {"mae": "configs/mae_vit_tiny_synthetic.yaml", "hap": "configs/hap_vit_tiny_synthetic.yaml"}
INITS = ("random", "mae", "hap")


def pretrain(variant: str, args: argparse.Namespace, work: Path) -> dict:
    """Pre-train one variant on the time budget; export its encoder (timm ViT state dict, 16x8 grid)."""
    from humanvision.methods import hap

    out = work / f"pretrain_{variant}"
    recipe = hap.load_recipe(PRETRAIN[variant], [
        "train.epochs=1000", f"train.max_minutes={args.pretrain_minutes}", f"train.output_dir={out}",
        f"data.synthetic_num={args.crops}", f"data.synthetic_dir={args.crops_dir}", f"data.synthetic_seed={args.crops_seed}", f"train.seed={args.seed}",
        "train.progress=false", f"pretrain.snapshot_every={args.snapshot_every}"])
    t0 = time.perf_counter()
    summary = hap.run_training(recipe, quiet=True)
    encoder = hap.export_encoder(out, work / f"{variant}_encoder.pth", grid=(16, 8))
    return {"variant": variant, "steps": summary["step"], "minutes": (time.perf_counter() - t0) / 60,
            "crops_seen": summary["step"] * recipe.train.batch_size, "encoder": str(encoder),
            "precision": summary["precision"]}


def _encoder(init: str, work: Path):
    """A ViT-Ti/16 at 256x128: timm's initialisation, or an exported pre-training encoder (strict)."""
    import torch
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=(256, 128), patch_size=16, embed_dim=192, depth=12, num_heads=3, num_classes=0)
    if init != "random":
        vit.load_state_dict(torch.load(work / f"{init}_encoder.pth", map_location="cpu"), strict=True)
    return vit.eval()


def _features(vit, dataset, batch_size: int = 64):
    """(CLS after the final norm, mean of the patch tokens after the final norm) for every image."""
    import torch
    from torch.utils.data import DataLoader

    cls, mean = [], []
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            x = vit.forward_features(batch["image"])
            cls.append(x[:, 0])
            mean.append(x[:, 1:].mean(1))
    return torch.cat(cls).numpy(), torch.cat(mean).numpy()


def _linear_probe(train_x, train_y, test_x, iters: int = 300):
    """Per-attribute logistic regression on standardised frozen features, HAP's weighted BCE (B.9.5)."""
    import torch

    from humanvision.methods.attributes import weighted_bce_loss

    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    x, t = torch.from_numpy((train_x - mu) / sd).float(), torch.from_numpy(train_y).float()
    head = torch.nn.Linear(x.shape[1], t.shape[1])
    opt = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-4)
    ratio = t.mean(0)
    for _ in range(iters):
        opt.zero_grad()
        weighted_bce_loss(head(x), t, ratio).backward()
        opt.step()
    with torch.no_grad():
        return torch.sigmoid(head(torch.from_numpy((test_x - mu) / sd).float())).numpy()


def probe(init: str, args: argparse.Namespace, work: Path) -> dict:
    """Frozen-encoder re-id (descriptor = CLS or mean patch token) and attribute linear probes."""
    import numpy as np

    from humanvision.methods import attributes, reid
    from humanvision.metrics.attributes import attribute_metrics
    from humanvision.metrics.reid import evaluate_reid, reid_distance

    t0 = time.perf_counter()
    vit = _encoder(init, work)
    row: dict = {"init": init}
    rdata = reid.read_data(reid.load_recipe("configs/reid_vit_tiny_synthetic.yaml").data, quiet=True)
    q = _features(vit, reid.ReIDImages(rdata.query, (256, 128)))
    g = _features(vit, reid.ReIDImages(rdata.gallery, (256, 128)))
    ids = [np.array([it.pid for it in items]) for items in (rdata.query, rdata.gallery)]
    cams = [np.array([it.camid for it in items]) for items in (rdata.query, rdata.gallery)]
    for k, name in enumerate(("cls", "mean")):
        res = evaluate_reid(reid_distance(q[k], g[k], "euclidean", normalize=True), ids[0], ids[1], cams[0], cams[1])
        row[f"reid_{name}_mAP"], row[f"reid_{name}_rank1"] = res.mAP, res.rank1
    adata = attributes.read_data(attributes.load_recipe("configs/attr_vit_tiny_synthetic.yaml").data, quiet=True)
    tr = _features(vit, attributes.AttributeImages(adata, "trainval", (256, 128)))
    te = _features(vit, attributes.AttributeImages(adata, "test", (256, 128)))
    ytr, yte = (np.asarray(adata.take(s)[1], dtype=np.int64) for s in ("trainval", "test"))
    for k, name in enumerate(("cls", "mean")):
        res = attribute_metrics(_linear_probe(tr[k], ytr, te[k]), yte)
        row[f"attr_{name}_mA"] = res.mA
    row["minutes"] = (time.perf_counter() - t0) / 60
    return row


def finetune(task: str, init: str, args: argparse.Namespace, work: Path) -> dict:
    """Fine-tune re-id or attributes from ``init`` (random / an exported encoder) on the time budget."""
    from humanvision.methods import attributes, reid

    module, config, minutes = ((reid, "configs/reid_vit_tiny_synthetic.yaml", args.reid_minutes) if task == "reid"
                               else (attributes, "configs/attr_vit_tiny_synthetic.yaml", args.attr_minutes))
    out = work / f"{task}_{init}"
    overrides = [f"model.img_size=[{args.size[0]},{args.size[1]}]", "train.epochs=1000", "train.eval_every=1000",
                 f"train.max_minutes={minutes}", f"train.output_dir={out}", f"train.seed={args.seed}",
                 "train.progress=false"]
    if init != "random":
        overrides += [f"model.init={work / f'{init}_encoder.pth'}", "model.init_grid=[16,8]"]
    if task == "attributes":
        overrides += [f"data.synthetic_images={args.attr_images}",
                      f"data.synthetic_dir=data/synthetic_pa100k_{args.attr_images}"]
    if args.layer_decay is not None:
        overrides.append(f"train.layer_decay={args.layer_decay}")
    recipe = module.load_recipe(config, overrides)
    t0 = time.perf_counter()
    summary = module.run_training(recipe, quiet=True)
    return {"task": task, "init": init, "steps": summary["step"], "minutes": (time.perf_counter() - t0) / 60,
            **{k: v for k, v in (summary["metrics"] or {}).items() if isinstance(v, float)}}


def finetune_pose(init: str, args: argparse.Namespace, work: Path) -> dict:
    """HAP's 2D-pose downstream (B.9.3) in miniature: ViTPose with this ViT-Ti/16 backbone (random, or the exported
    encoder, its 16x8 position grid resampled to 8x6) trained on the demo's synthetic COCO-format set for
    ``--pose-epochs`` epochs (equal steps for every init); COCO OKS AP on its 150 unseen validation images."""
    from humanvision.cli.pose import _load_recipe, run_training

    out = work / f"pose_{init}"
    overrides = [f"train.epochs={args.pose_epochs}", f"train.eval_every={args.pose_epochs}",
                 f"train.output_dir={out}", f"train.seed={args.seed}", "train.progress=false"]
    if init != "random":
        overrides.append(f"model.backbone_weights={work / f'{init}_encoder.pth'}")
    recipe = _load_recipe(Path("configs/hap_vitpose_tiny_synthetic.yaml"), overrides)
    t0, c0 = time.perf_counter(), time.process_time()
    summary = run_training(recipe, quiet=True)
    return {"task": "pose", "init": init, "steps": summary["step"], "minutes": (time.perf_counter() - t0) / 60,
            "cpu_minutes": (time.process_time() - c0) / 60,
            **{k: v for k, v in (summary["metrics"] or {}).items() if isinstance(v, float)}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pretrain-minutes", type=float, default=10.0)
    p.add_argument("--reid-minutes", type=float, default=6.0)
    p.add_argument("--attr-minutes", type=float, default=5.0)
    p.add_argument("--size", type=int, nargs=2, default=(128, 64), metavar=("H", "W"),
                   help="fine-tuning input (the encoders' position embeddings are resampled from 16x8 to it; 128x64 "
                        "is the synthetic Market crops' size: 4x the steps of HAP's 256x128 on a CPU budget)")
    p.add_argument("--pose-epochs", type=int, default=2,
                   help="2D-pose fine-tuning epochs of the 12,000 synthetic COCO images (375 steps each)")
    p.add_argument("--tasks", nargs="+", default=["reid", "attributes", "pose"],
                   choices=["reid", "attributes", "pose"], help="fine-tuning tasks to run")
    p.add_argument("--attr-images", type=int, default=4000, help="synthetic PA-100K images (80/10/10 split)")
    p.add_argument("--crops", type=int, default=4000, help="synthetic person crops for pre-training")
    p.add_argument("--crops-dir", default="data/synthetic_person_crops_4k")
    p.add_argument("--crops-seed", type=int, default=7,
                   help="world seed of the pre-training crops (not 0: other people than the fine-tuning sets')")
    p.add_argument("--layer-decay", type=float, default=None, help="fine-tuning layer decay (default: none)")
    p.add_argument("--snapshot-every", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=Path("runs/hap_claim"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/hap_pretraining.json"))
    p.add_argument("--skip-pretrain", action="store_true", help="reuse the encoders already in --work")
    p.add_argument("--probes-only", action="store_true", help="no fine-tuning")
    p.add_argument("--no-probes", action="store_true", help="no frozen-encoder probes")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    pre = []
    if not args.skip_pretrain:
        for variant in PRETRAIN:
            pre.append(pretrain(variant, args, args.work))
            print(json.dumps(pre[-1]), flush=True)
    probes = []
    for init in () if args.no_probes else INITS:
        probes.append(probe(init, args, args.work))
        print(json.dumps(probes[-1]), flush=True)
    rows = []
    for task in () if args.probes_only else args.tasks:
        for init in INITS:
            rows.append(finetune_pose(init, args, args.work) if task == "pose" else finetune(task, init, args,
                                                                                              args.work))
            print(json.dumps(rows[-1]), flush=True)

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"HAP in miniature: ViT-Ti/16, fine-tuned at {args.size[0]}x{args.size[1]}, pre-training {args.pretrain_minutes:g} min each, "
                        f"re-id {args.reid_minutes:g} min, attributes {args.attr_minutes:g} min")
    for col in ("init", "pre-train steps", "re-id steps", "mAP", "rank-1", "attr steps", "mA", "F1",
                "pose steps", "pose AP", "AP50", "PCK@0.2"):
        table.add_column(col, justify="left" if col == "init" else "right")
    steps = {r["variant"]: r["steps"] for r in pre}
    by = {(r["task"], r["init"]): r for r in rows}
    nan, none = float("nan"), {"steps": "-"}
    for init in INITS if rows else ():
        r, a, q = by.get(("reid", init), none), by.get(("attributes", init), none), by.get(("pose", init), none)
        table.add_row(init, str(steps.get(init, "-")), str(r["steps"]), f"{r.get('mAP', nan):.1f}",
                      f"{r.get('rank1', nan):.1f}", str(a["steps"]), f"{a.get('mA', nan):.1f}",
                      f"{a.get('f1', nan):.1f}", str(q["steps"]), f"{q.get('AP', nan):.3f}",
                      f"{q.get('AP50', nan):.3f}", f"{q.get('PCK@0.2', nan):.1f}")
    Console().print(table)
    ptable = Table(title="the same encoders frozen: re-id with the raw descriptor, attributes by a linear probe")
    for col in ("init", "re-id mAP (CLS)", "rank-1 (CLS)", "re-id mAP (mean patch)", "rank-1 (mean patch)",
                "attr mA (CLS)", "attr mA (mean patch)"):
        ptable.add_column(col, justify="left" if col == "init" else "right")
    for r in probes:
        ptable.add_row(r["init"], *(f"{r[k]:.1f}" for k in ("reid_cls_mAP", "reid_cls_rank1", "reid_mean_mAP",
                                                              "reid_mean_rank1", "attr_cls_mA", "attr_mean_mA")))
    if probes:
        Console().print(ptable)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "pretrain": pre,
                                    "probes": probes, "finetune": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
