"""int8 vs fp32 accuracy of a trained top-down model on the torch-free runtime path: OKS AP and images/s.

From a trained run (``--config RECIPE --weights RUN_DIR``, e.g. the demo's ``configs/synthetic_tiny.yaml`` and
``runs/demo``) this script

1. exports the fp32 ONNX file (:func:`humanvision.export.export_onnx`, parity-checked, the recipe's flip test as
   the runtime default);
2. quantises it twice with :func:`humanvision.export.quantize_onnx`: *static* (QDQ int8 weights and activations,
   per-channel, ``--calibrate-method``; the activation ranges calibrated on ``--calibration`` crops, default 64,
   of people of the *training* set: their ground-truth boxes, spread evenly over the set, cropped by the fp32
   file's own preprocessing, plus their mirror images when the flip test is on) and *dynamic* (int8 weights);
3. predicts every ground-truth box of the validation set (the recipe's ``val_ann``; the synthetic recipes'
   unseen people) in four ways:

   * ``fp32 PyTorch``: :func:`humanvision.methods.topdown.predict_boxes`, fp32, contiguous memory, batches of
     the recipe's ``eval.batch_size`` crops across images;
   * ``fp32 onnxruntime``, ``int8 static``, ``int8 dynamic``: :class:`humanvision.runtime.PoseEstimator` on each
     file (CPU provider), one call per image with all its boxes, as a deployment calls it;

   all with the recipe's flip test, and scores each with the project's COCO evaluator
   (:func:`humanvision.methods.topdown.coco_metrics`: rescoring, OKS-NMS, OKS AP / AR, PCK@0.2 of the box size),
   exactly as ``humanvision eval`` does with ground-truth boxes.

Reported per row: AP, AP50, AP75, AR, PCK@0.2, the keypoint differences from fp32 PyTorch (image pixels: median
and max over all joints), and speed: validation images per wall-clock second and per CPU second
(``time.process_time``, robust to other load on a shared machine) of the prediction loop alone (images are
decoded into memory first; crop, model, flip test and decoding are timed), after one warm-up image, with the
same intra-op thread count for PyTorch and onnxruntime (``--threads``, default 1). The two sides batch
differently (see above): the int8 rows compare with ``fp32 onnxruntime``, which batches as they do.

    OMP_NUM_THREADS=1 python benchmarks/int8_accuracy.py --config configs/synthetic_tiny.yaml --weights runs/demo

writes ``benchmarks/results/int8_accuracy.json`` (``--out``) and prints the table. ``--set KEY=VALUE`` overrides
recipe fields as the CLI's ``--set`` does (e.g. ``--set data.synthetic_dir=...``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def load_recipe(config: Path, overrides: list[str]):
    from humanvision.config import load_config
    from humanvision.errors import ConfigError
    from humanvision.methods import pct
    from humanvision.methods.topdown import TopDownRecipe

    if pct.is_pct_recipe(config):
        raise ConfigError(f"{config}: PCT stage II recipes are not exported (see `humanvision export`)")
    recipe = load_config(config, TopDownRecipe, overrides, unchecked=("model.weights", "model.backbone_weights"))
    if recipe.data.source not in ("coco", "synthetic"):
        raise ConfigError(f"{config}: data.source {recipe.data.source!r}: this benchmark scores COCO-format "
                          "validation sets (source coco or synthetic) with OKS AP")
    return recipe


def calibration_from_train(estimator, recipe, n: int) -> np.ndarray:
    """``(n, 3, H, W)`` normalised crops of ``n`` training people (ground-truth boxes, evenly spaced over the
    set), made by ``estimator``'s preprocessing (the fp32 file's contract)."""
    from humanvision.methods.topdown import train_reader

    reader = train_reader(recipe.data, estimator.metadata["skeleton"]["name"])
    if len(reader) == 0:
        from humanvision.errors import DataError

        raise DataError("no training people for the calibration crops", file=str(recipe.data.train_ann))
    picks = np.unique(np.linspace(0, len(reader) - 1, min(n, len(reader))).round().astype(int))
    return np.concatenate([estimator.preprocess(reader[int(i)].load_image(), reader.boxes[int(i)][None])[0]
                           for i in picks])


def load_images(reader) -> dict[int, np.ndarray]:
    """Every validation image with a box, decoded once (RGB uint8), by image index."""
    out: dict[int, np.ndarray] = {}
    for i in range(len(reader)):
        img = int(reader.owner[i])
        if img not in out:
            out[img] = reader[i].load_image()
    return out


def timed(fn) -> tuple[Any, float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - w0


def predict_torch(method, recipe, reader, images: dict[int, np.ndarray]) -> tuple[dict[str, Any], float, float]:
    """fp32 PyTorch over every box (``predict_boxes``), images from memory; (pred, CPU s, wall s)."""
    from humanvision.methods.topdown import TopDownDataset, build_transform, predict_boxes

    dataset = TopDownDataset(reader, build_transform(method, recipe.data, train=False), cache_images=True)
    for i in range(len(reader)):  # the decoded images, keyed as the dataset's cache keys them
        dataset.cache[reader.image_ids[int(reader.owner[i])]] = images[int(reader.owner[i])]

    with torch.no_grad():  # warm-up
        method.predict(dataset[0]["image"][None], flip_test=recipe.eval.flip_test)

    def run():
        return predict_boxes(method, dataset, recipe.eval.batch_size, recipe.eval.flip_test, precision="fp32",
                             channels_last=False)

    pred, cpu, wall = timed(run)
    return pred, cpu, wall


def predict_runtime(path: Path, recipe, reader, images: dict[int, np.ndarray],
                    threads: int) -> tuple[dict[str, Any], float, float]:
    """:class:`~humanvision.runtime.PoseEstimator` on ``path``, one call per image with all its ground-truth boxes;
    the prediction in :func:`predict_boxes`' layout, CPU and wall seconds."""
    import onnxruntime as ort

    from humanvision.runtime import PoseEstimator
    from humanvision.runtime.pose import boxes_to_center_scale

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    est = PoseEstimator(path, flip_test=recipe.eval.flip_test, session_options=so)
    groups: dict[int, list[int]] = {}
    for i in range(len(reader)):
        groups.setdefault(int(reader.owner[i]), []).append(i)
    order = np.concatenate([np.asarray(v) for v in groups.values()])
    boxes = reader.boxes.astype(np.float64)
    first = next(iter(groups))
    est(images[first], boxes[groups[first]])  # warm-up

    def run():
        kps, scs = [], []
        for img, idx in groups.items():
            kp, sc = est(images[img], boxes[idx])
            kps.append(kp)
            scs.append(sc)
        return np.concatenate(kps), np.concatenate(scs)

    (kp, sc), cpu, wall = timed(run)
    w, h = est.input_size
    _, scale = boxes_to_center_scale(boxes[order], w / h, est.padding)
    pred = {"keypoints": kp, "scores": sc, "box_scores": np.ones(len(order)), "areas": scale.prod(axis=1),
            "indices": order}
    return pred, cpu, wall


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--config", type=Path, required=True, help="the YAML recipe the weights were trained with")
    p.add_argument("--weights", type=Path, required=True, help="run directory (its best/, else last/) or weights file")
    p.add_argument("--set", dest="set_", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override, as the CLI's --set (repeatable)")
    p.add_argument("--calibration", type=int, default=64, help="training people whose crops calibrate int8 static")
    p.add_argument("--calibrate-method", default="minmax", choices=["minmax", "entropy", "percentile"])
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of PyTorch and onnxruntime")
    p.add_argument("--work-dir", type=Path, default=None, help="keep the ONNX files here (default: a temp folder)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "int8_accuracy.json")
    args = p.parse_args(argv)

    import onnxruntime as ort
    from rich.console import Console
    from rich.table import Table

    from humanvision.export import export_onnx, quantize_onnx
    from humanvision.methods.topdown import (
        build_method,
        build_transform,
        coco_metrics,
        eval_reader,
        prepare_synthetic,
    )
    from humanvision.runtime import PoseEstimator

    sys.path.insert(0, str(REPO / "benchmarks"))
    from export import cpu_name

    torch.set_num_threads(args.threads)
    recipe = load_recipe(args.config, args.set_)
    prepare_synthetic(recipe.data, quiet=True)  # paths of an existing synthetic set (writes it only if missing)
    method = build_method(recipe, weights=args.weights).eval()
    transform = build_transform(method, recipe.data, train=False)
    sk = method.skeleton
    reader = eval_reader(recipe.data, sk.name)
    print(f"{len(reader)} validation people; decoding their images", file=sys.stderr, flush=True)
    images = load_images(reader)

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        fp32 = export_onnx(method, transform, work / "model.onnx", flip_test=recipe.eval.flip_test,
                           recipe=recipe.name, weights=args.weights).path
        calib = calibration_from_train(PoseEstimator(fp32, flip_test=False), recipe, args.calibration)
        files = {"fp32 onnxruntime": fp32}
        quant: dict[str, Any] = {}
        for mode in ("static", "dynamic"):
            q = quantize_onnx(fp32, work / f"model.int8_{mode}.onnx", mode, calib if mode == "static" else None,
                              calibrate_method=args.calibrate_method, verbose=False)
            files[f"int8 {mode}"] = q.path
            quant[mode] = q.metadata["quantization"]

        preds: dict[str, tuple[dict[str, Any], float, float]] = {}
        print("predicting: fp32 PyTorch", file=sys.stderr, flush=True)
        preds["fp32 PyTorch"] = predict_torch(method, recipe, reader, images)
        for name, path in files.items():
            print(f"predicting: {name}", file=sys.stderr, flush=True)
            preds[name] = predict_runtime(path, recipe, reader, images, args.threads)
        sizes = {name: path.stat().st_size / 2**20 for name, path in files.items()}

    ref = preds["fp32 PyTorch"][0]
    ref_kp = ref["keypoints"][np.argsort(ref["indices"])]
    rows = []
    for name, (pred, cpu, wall) in preds.items():
        metrics = coco_metrics(pred, reader, sk, recipe.eval, recipe.data.val_ann)
        kp = pred["keypoints"][np.argsort(pred["indices"])]
        d = np.linalg.norm(kp - ref_kp, axis=-1)
        row = {"name": name, **{k: metrics[k] for k in ("AP", "AP50", "AP75", "AR", "PCK@0.2") if k in metrics},
               "kp_vs_pytorch_median_px": float(np.median(d)), "kp_vs_pytorch_max_px": float(d.max()),
               "images": len(images), "people": len(reader), "cpu_s": cpu, "wall_s": wall,
               "images_per_s": len(images) / wall, "images_per_cpu_s": len(images) / cpu,
               "mib": sizes.get(name)}
        rows.append(row)
    table = Table(title=f"{recipe.name} ({method.model.model_name}) on {len(images)} validation images / "
                        f"{len(reader)} people, GT boxes, flip test {'on' if recipe.eval.flip_test else 'off'}, "
                        f"{args.threads} thread(s), {cpu_name()}")
    for col in ("", "AP", "AP50", "AP75", "AR", "PCK@0.2", "kp vs PyTorch median / max px", "images/s",
                "images/CPU-s", "MiB"):
        table.add_column(col, justify="left" if not col else "right")
    for r in rows:
        table.add_row(r["name"], f"{r['AP']:.3f}", f"{r['AP50']:.3f}", f"{r['AP75']:.3f}", f"{r['AR']:.3f}",
                      f"{r.get('PCK@0.2', float('nan')):.1f}",
                      f"{r['kp_vs_pytorch_median_px']:.3f} / {r['kp_vs_pytorch_max_px']:.2f}",
                      f"{r['images_per_s']:.1f}", f"{r['images_per_cpu_s']:.1f}",
                      "" if r["mib"] is None else f"{r['mib']:.1f}")
    Console(width=160).print(table)
    result = {"benchmark": "int8_accuracy", "recipe": recipe.name, "config": str(args.config),
              "weights": str(args.weights), "model": method.model.model_name, "val_ann": str(recipe.data.val_ann),
              "flip_test": recipe.eval.flip_test, "threads": args.threads, "cpu": cpu_name(),
              "torch": torch.__version__, "onnxruntime": ort.__version__, "load_average": list(os.getloadavg()),
              "calibration": {"people": len(calib), "source": str(recipe.data.train_ann),
                              "method": args.calibrate_method},
              "quantization": quant, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
