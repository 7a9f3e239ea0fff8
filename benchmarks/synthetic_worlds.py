"""Old world vs new world (issue 16, claim 1): the same model and training budget on the legacy synthetic world and
on a realistic preset, judged on both worlds' validation sets and against a real teacher on real photos.

Arms (one recipe, ``configs/synthetic_tiny.yaml``, the demo's: ``lateral_small`` at 192x144, flip augmentation,
batch 32, cosine lr; the budget is a fixed number of optimiser steps, ``--epochs`` over the training people, so a
busy machine trains as long, not less):

* ``legacy``: today's world (``data.synthetic_preset: legacy``, ``data/synthetic_coco``, the demo's set);
* ``coco`` (``--preset``): the COCO-like preset of :mod:`humanvision.data.synthetic.presets` (far people to
  portraits, truncation, crowds, photo backdrops from ``--backgrounds``, outfits, shadows, camera effects, COCO
  visibility); an epoch is over people, and this world has 2.4 people per image, so it gets ``--new-images``
  images (4,922: the same 11,876 labelled people as legacy's 12,000 images), hence the same steps.
* ``mix``: half of each (the first 6,000 legacy images and the first 2,449 preset images: 5,936 + 5,938 people),
  the same steps again (``--mix-new 0`` skips it); ``mix-VARIANT`` (with ``--arms``) takes its new half from a
  variant's set (below), as many people again.

Each trained model is then evaluated (GT boxes, flip test) on the 150 validation images of *both* worlds (OKS AP:
"without losing synthetic-val AP" is the legacy column), on 80 images of the preset per kind of shot (whole body,
upper body, head-and-shoulders: :func:`evaluate_shots`), and by ``benchmarks/sim_to_real.py``'s agreement with the
BlazePose teacher on the real pedestrians of vtest.avi and the real stills (PCK at 0.1 x the teacher's landmark-box
height; the model's boxes are the teacher's mask boxes, the stills also from its landmark boxes; that script
prepares the real images and the teacher once). Real images are for validation only: nothing here trains on them.

Background photos come from ``humanvision synth backgrounds --out data/backgrounds --opencv-doc DIR`` (person-free
photos of scikit-image / opencv-doc; the validation images are refused by name and content). Runs that already
finished (a ``last`` checkpoint at the final step) are reused, so the script can be re-run for the tables::

    python benchmarks/synthetic_worlds.py --out benchmarks/results/synthetic_worlds.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from humanvision.data.synthetic.photometric import ImageEffects

RECIPE = Path("configs/synthetic_tiny.yaml")

# ``--variants``: the new world's preset with one feature changed (the per-feature ablation of issue 16). Each is
# rendered with the preset's seed and trimmed to as many labelled people as the other arms (same steps).
VARIANTS: dict[str, dict] = {
    "no-effects": {"effects": None},                  # no blur / noise / exposure / white balance / JPEG
    "no-outfits": {"clothing": "basic"},              # the legacy body colours: no coats, skirts, sleeves, hats, bags
    "no-faces": {"faces": False},                     # outfits with the plain head (painted eyes and mouth)
    "no-mono": {"effects": ImageEffects()},           # no black-and-white photos
    "before-faces": {"faces": False, "effects": ImageEffects()},  # the preset before faces and grey photos
    "no-photos": {"background_prob": 0.0},            # procedural backdrops only
    "no-crowds": {"crowd": 0.0},                      # the other people spread out, never over the main one
    "no-closeups": {"shots": (1.0, 0.0, 0.0)},        # whole bodies only (scale and truncation as the preset)
    "portraits": {"shots": (0.55, 0.25, 0.20), "portrait_bottom": (-0.1, 0.1),  # "closeups" with face-filling
                  "portrait_height": 0.12},                                   # portraits (cut at the neck)
    "closeups": {"shots": (0.55, 0.25, 0.20)},        # 45 % upper-body and head-and-shoulders shots instead of 22 %
    "annotated": {"infer_min_visible": 0.25},         # a person three quarters hidden keeps only its visible joints
    "actions": {"actions": 0.3},                      # 30 % of the people in motion-capture poses (kicks, dances, ...)
}


def mixed_set(args: argparse.Namespace, variant: str | None = None) -> Path:
    """The ``mix`` arm's training set: the first ``--mix-legacy`` images of the legacy set and the first
    ``--mix-new`` of the new world's (5,936 + 5,938 people: as many as each other arm), hard-linked into one
    COCO-format folder (``legacy_*`` / ``{preset}_*`` file names, ids renumbered). ``mix-VARIANT`` (``variant``)
    takes its new half from the variant's set instead: its first images holding as many people."""
    import os

    tag = args.preset if variant is None else f"{args.preset}-{variant}"
    out = Path(f"data/synthetic_mix_{tag}")
    ann = out / "annotations" / "person_keypoints_train.json"
    if ann.exists():
        return out
    legacy = Path("data/synthetic_coco")
    base = Path(f"data/synthetic_{args.preset}_world_{args.new_images}")
    base_doc = json.loads((base / "annotations" / "person_keypoints_train.json").read_text())
    sources = [("legacy", legacy, _first_images(json.loads(
        (legacy / "annotations" / "person_keypoints_train.json").read_text()), args.mix_legacy))]
    if variant is None:
        sources.append((tag, base, _first_images(base_doc, args.mix_new)))
    else:
        counts = people_per_image(base / "annotations" / "person_keypoints_train.json", base / "train")
        target = sum(counts.get(im["id"], 0) for im in base_doc["images"][:args.mix_new])
        root = variant_set(tag, args)
        sources.append((tag, root, first_people(root / "annotations" / "person_keypoints_train.json",
                                                root / "train", target, f"mix-{variant}")))
    (out / "train").mkdir(parents=True, exist_ok=True)
    merged: dict = {"images": [], "annotations": [], "categories": None, "info": {"mix": []}}
    for name, root, src in sources:
        merged["categories"] = src["categories"]
        merged["info"]["mix"].append({"source": str(root), "images": len(src["images"])})
        new_id = {}
        for im in src["images"]:
            new_id[im["id"]] = len(merged["images"]) + 1
            file_name = f"{name}_{im['file_name']}"
            if not (out / "train" / file_name).exists():
                os.link(root / "train" / im["file_name"], out / "train" / file_name)
            merged["images"].append({**im, "id": new_id[im["id"]], "file_name": file_name})
        for a in src["annotations"]:
            if a["image_id"] in new_id:
                merged["annotations"].append({**a, "id": len(merged["annotations"]) + 1,
                                              "image_id": new_id[a["image_id"]]})
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(json.dumps(merged))
    return out


def _first_images(doc: dict, n: int) -> dict:
    """A COCO document cut to its first ``n`` images."""
    keep = {im["id"] for im in doc["images"][:n]}
    return {**doc, "images": doc["images"][:n], "annotations": [a for a in doc["annotations"]
                                                                if a["image_id"] in keep]}


def count_people(root: Path) -> int:
    """Training people as the top-down reader counts them (instance mode: labelled, not crowd)."""
    return sum(people_per_image(root / "annotations" / "person_keypoints_train.json", root / "train").values())


def variant_set(arm: str, args: argparse.Namespace) -> Path:
    """``{preset}-{variant}``'s training set: rendered once (10 % more images than the preset's arm, same seed and
    size), then its first images holding as many people as the preset's arm written as ``train_people.json``."""
    from humanvision.data.synthetic.presets import scene_config
    from humanvision.data.synthetic.writers import generate_coco

    variant = arm[len(args.preset) + 1:]
    root = Path(f"data/synthetic_{arm}_world_{args.new_images}")
    ann = root / "annotations" / "train_people.json"
    if ann.exists():
        return root
    base = Path(f"data/synthetic_{args.preset}_world_{args.new_images}")
    target = count_people(base)
    full = root / "annotations" / "person_keypoints_train.json"
    if not full.exists():
        size = tuple(json.loads((base / "annotations" / "person_keypoints_train.json").read_text())["images"][0][k]
                     for k in ("width", "height"))
        cfg = scene_config(args.preset, backgrounds=args.backgrounds, **VARIANTS[variant])
        print(f"rendering {arm}: {int(args.new_images * 1.1)} images", flush=True)
        generate_coco(root, {"train": int(args.new_images * 1.1)}, size=size, seed=0, config=cfg, workers=2)
    ann.write_text(json.dumps(first_people(full, root / "train", target, arm)))
    return root


def people_per_image(full: Path, images: Path) -> dict[int, int]:
    """Training people per image id of a COCO file (the top-down reader's count: labelled, not crowd)."""
    from humanvision.data.readers import CocoKeypoints

    reader = CocoKeypoints(full, images, skeleton="coco17", mode="instance")
    per_image: dict[int, int] = {}
    for image_id in (int(reader.image_ids[o]) for o in reader.owner):
        per_image[image_id] = per_image.get(image_id, 0) + 1
    return per_image


def first_people(full: Path, images: Path, target: int, name: str) -> dict:
    """The COCO document ``full`` cut to its first images that hold ``target`` training people."""
    per_image = people_per_image(full, images)
    doc = json.loads(full.read_text())
    images, n = 0, 0
    for im in doc["images"]:
        if n >= target:
            break
        images += 1
        n += per_image.get(im["id"], 0)
    if n < target:
        raise SystemExit(f"{name}: {n} people in {len(doc['images'])} images, fewer than {target}; render more")
    return _first_images(doc, images)


def run_dir(arm: str, args: argparse.Namespace) -> Path:
    """Where arm's run lives: ``--work/ARM``, or ``--work/ARM-augment-NAME`` with ``--augment`` (a finished run is
    reused, so runs with another augmentation must not share a folder)."""
    augment = getattr(args, "augment", None)
    return args.work / (f"{arm}-augment-{augment}" if augment else arm)


def arm_overrides(arm: str, args: argparse.Namespace) -> list[str]:
    """The recipe overrides of one arm (data) at the shared step budget (train)."""
    if arm.startswith(f"{args.preset}-"):
        root = variant_set(arm, args)
        data = ["data.source=coco", f"data.train_ann={root}/annotations/train_people.json",
                f"data.train_images={root}/train",
                "data.val_ann=data/synthetic_coco/annotations/person_keypoints_val.json",
                "data.val_images=data/synthetic_coco/val"]
    elif arm == "mix" or arm.startswith("mix-"):
        root = mixed_set(args, arm[4:] or None)
        data = ["data.source=coco", f"data.train_ann={root}/annotations/person_keypoints_train.json",
                f"data.train_images={root}/train",
                "data.val_ann=data/synthetic_coco/annotations/person_keypoints_val.json",
                "data.val_images=data/synthetic_coco/val"]
    else:
        data = ([] if arm == "legacy" else
            [f"data.synthetic_preset={arm}", f"data.synthetic_backgrounds={args.backgrounds}",
             f"data.synthetic_train={args.new_images}",
             f"data.synthetic_dir=data/synthetic_{arm}_world_{args.new_images}"])
    augment = [f"data.augment={args.augment}"] if getattr(args, "augment", None) else []
    return data + augment + [f"train.epochs={args.epochs}", "train.max_minutes=null", "train.min_steps=null",
                   f"train.output_dir={run_dir(arm, args)}", "train.progress=false", f"train.seed={args.seed}"]


def train_arm(arm: str, args: argparse.Namespace) -> dict:
    """Train one arm unless its run folder already holds the finished run; return its training summary."""
    from humanvision.cli.pose import _load_recipe, run_training

    recipe = _load_recipe(RECIPE, arm_overrides(arm, args))
    log = Path(recipe.train.output_dir) / "log.jsonl"
    if log.exists():
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        done = [r for r in rows if r.get("kind") == "eval" and r.get("epoch") == args.epochs]
        if done:
            return {"arm": arm, "steps": done[-1]["step"], "reused": True}
    t0, c0 = time.perf_counter(), time.process_time()
    summary = run_training(recipe, quiet=True)
    return {"arm": arm, "steps": summary["step"], "minutes": (time.perf_counter() - t0) / 60,
            "cpu_minutes": (time.process_time() - c0) / 60, "precision": summary.get("precision")}


def evaluate_on(arm: str, world: str, args: argparse.Namespace) -> dict:
    """OKS AP of arm's final weights on the validation split of ``world``."""
    from humanvision.cli.pose import _load_recipe
    from humanvision.methods.topdown import build_method, evaluate_topdown, prepare_synthetic

    recipe = _load_recipe(RECIPE, arm_overrides(world, args))
    prepare_synthetic(recipe.data, quiet=True)
    method = build_method(recipe, weights=run_dir(arm, args)).eval()
    metrics = evaluate_topdown(method, recipe, out_dir=None)
    return {k: metrics[k] for k in ("AP", "AP50", "AP75", "AR", "PCK@0.2") if k in metrics}


SHOTS = {"full": (1.0, 0.0, 0.0), "upper": (0.0, 1.0, 0.0), "head": (0.0, 0.0, 1.0)}


def evaluate_shots(arm: str, args: argparse.Namespace) -> dict:
    """OKS AP and PCK@0.2 of arm's final weights on 80 images of the preset per kind of shot (whole bodies,
    upper bodies, head-and-shoulders close-ups; ``data/synthetic_{preset}_shots_{kind}``, seed 5, rendered once):
    tells a close-up the model has not learned from one that does not look real. Also PCK@0.2 of each image's
    subject and of the other people (:func:`subject_pck`)."""
    from humanvision.cli.pose import _load_recipe
    from humanvision.data.synthetic.presets import scene_config
    from humanvision.data.synthetic.writers import generate_coco
    from humanvision.methods.topdown import build_method, build_transform, evaluate_topdown

    out = {}
    for kind, shots in SHOTS.items():
        root = Path(f"data/synthetic_{args.preset}_shots_{kind}")
        ann = root / "annotations" / "person_keypoints_val.json"
        if not ann.exists():
            generate_coco(root, {"val": 80}, size=(256, 256), seed=5, workers=2,
                          config=scene_config(args.preset, backgrounds=args.backgrounds, shots=shots))
        data = [f"{k}={v}" for k, v in (("data.source", "coco"), ("data.val_ann", ann), ("data.val_images",
                                                                                       root / "val"),
                                        ("data.train_ann", ann), ("data.train_images", root / "val"))]
        recipe = _load_recipe(RECIPE, data)
        method = build_method(recipe, weights=run_dir(arm, args)).eval()
        metrics = evaluate_topdown(method, recipe, out_dir=None)
        out[kind] = {k: metrics[k] for k in ("AP", "PCK@0.2")}
        out[kind].update(subject_pck(method, build_transform(method, recipe.data, train=False),
                                     bool(recipe.eval.flip_test), ann, root / "val"))
    return out


def subject_pck(method, transform, flip_test: bool, ann: Path, images: Path, thr: float = 0.2) -> dict:
    """PCK@``thr`` x box height (GT boxes, every labelled joint) of each image's subject, the person with the
    largest visible area, and of the others: in a crowded close-up the others are mostly hidden behind the subject,
    and they, not the subject, pull a shot kind's PCK down."""
    import numpy as np

    sys.path.insert(0, str(Path(__file__).parent))
    from sim_to_real import predict_people

    from humanvision.data.io import read_image
    from humanvision.metrics.agreement import agreement

    doc = json.loads(ann.read_text())
    people: dict[int, list[dict]] = {}
    for a in doc["annotations"]:
        if a.get("num_keypoints", 0) > 0 and not a.get("iscrowd"):
            people.setdefault(a["image_id"], []).append(a)
    groups: dict[str, list[tuple]] = {"subject": [], "others": []}
    for im in doc["images"]:
        anns = people.get(im["id"], [])
        if not anns:
            continue
        kp, _ = predict_people(method, transform, read_image(images / im["file_name"]),
                               np.array([a["bbox"] for a in anns], float), flip_test, record=im["file_name"])
        subject = int(np.argmax([a["area"] for a in anns]))
        for i, (a, pred) in enumerate(zip(anns, kp)):
            gt = np.asarray(a["keypoints"], float).reshape(-1, 3)
            groups["subject" if i == subject else "others"].append((pred, gt[:, :2], gt[:, 2] > 0, a["bbox"][3]))
    out = {}
    for name, rows in groups.items():
        if not rows:
            out[f"PCK@{thr:g} {name}"] = float("nan")
            continue
        pred, gt, labelled, heights = (np.array(v) for v in zip(*rows))
        out[f"PCK@{thr:g} {name}"] = 100.0 * agreement(pred, gt, labelled.astype(float), heights, thr=thr)["pck"]
    return out


def main() -> None:
    from humanvision.methods.topdown import AUGMENT

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="coco", help="the new world's preset")
    p.add_argument("--backgrounds", type=Path, default=Path("data/backgrounds"))
    p.add_argument("--epochs", type=int, default=4, help="epochs of the training people (371 steps each)")
    p.add_argument("--new-images", type=int, default=4922,
                   help="training images of the new world: 4,922 coco-preset images hold 11,876 people, as many as "
                        "the legacy set's 12,000 images, so both arms take the same steps per epoch")
    p.add_argument("--mix-legacy", type=int, default=6000, help="mix arm: legacy images (5,936 people)")
    p.add_argument("--mix-new", type=int, default=2449, help="mix arm: new-world images (5,938 people); 0: no mix arm")
    p.add_argument("--variants", default="", help=f"comma-separated ablation arms, the preset with one feature "
                   f"changed: {', '.join(VARIANTS)}")
    p.add_argument("--arms", default="", help="comma-separated arms to train and report (default: legacy, the "
                   "preset, mix and the --variants; also PRESET-VARIANT and mix-VARIANT)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", default=None, choices=list(AUGMENT),
                   help="data.augment of every arm (default: the recipe's, flip only; vitpose adds shift, +-50%% "
                        "scale, +-40 deg rotation and half-body crops; runs go to WORK/ARM-augment-NAME)")
    p.add_argument("--work", type=Path, default=Path("runs/worlds"))
    p.add_argument("--real", type=Path, default=Path("data/real"), help="sim_to_real.py's data folder")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/synthetic_worlds.json"))
    args = p.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    arms = ("legacy", args.preset, *(("mix",) if args.mix_new else ()), *(f"{args.preset}-{v}" for v in variants))
    if args.arms:
        arms = tuple(a for a in args.arms.split(",") if a)
    worlds = ("legacy", args.preset)

    training = [train_arm(arm, args) for arm in arms]
    synthetic = {arm: {world: evaluate_on(arm, world, args) for world in worlds} for arm in arms}
    shots = {arm: evaluate_shots(arm, args) for arm in arms}

    sys.path.insert(0, str(Path(__file__).parent))
    import sim_to_real

    sim_to_real.prepare_data(args.real, 12, sim_to_real.ensure_teacher_env(args.real))
    teacher = sim_to_real.run_teacher(args.real, sim_to_real.ensure_teacher_env(args.real))
    real = sim_to_real.compare([(arm, RECIPE, run_dir(arm, args)) for arm in arms], teacher, args.real,
                               vis_dir=args.out.parent / "synthetic_worlds")
    real_landmarks = sim_to_real.compare([(arm, RECIPE, run_dir(arm, args)) for arm in arms], teacher, args.real,
                                         boxes="landmarks")

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"the demo recipe ({training[0]['steps']} steps each): legacy world vs '{args.preset}' preset")
    for col in ("trained on", "steps", "AP legacy val", f"AP {args.preset} val", "PCK@0.2 legacy val",
                f"PCK@0.2 {args.preset} full / upper / head shots (their subjects)", "real pedestrians", "real stills",
                "stills, landmark boxes"):
        table.add_column(col, justify="left" if col == "trained on" else "right")
    for t in training:
        arm, s = t["arm"], synthetic[t["arm"]]
        r = next(m for m in real["models"] if m["name"] == arm)["groups"]
        rl = next(m for m in real_landmarks["models"] if m["name"] == arm)["groups"]
        table.add_row(arm, str(t["steps"]), f"{s['legacy']['AP']:.3f}", f"{s[args.preset]['AP']:.3f}",
                      f"{s['legacy']['PCK@0.2']:.1f}", " / ".join(f"{v['PCK@0.2']:.1f} ({v['PCK@0.2 subject']:.1f})"
                                                                 for v in shots[arm].values()),
                      f"{r['pedestrians']['pck']:.3f}", f"{r['stills']['pck']:.3f}",
                      f"{rl['stills']['pck']:.3f}")
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "training": training,
                                    "synthetic": synthetic, "shots": shots,
                                    "real": real, "real_landmark_boxes": real_landmarks}, indent=2,
                                   default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
