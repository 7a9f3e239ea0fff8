"""End-to-end images/s against the model-only throughput at the same batch size (issue 15, claim 1).

A folder of ``--images`` JPEG photos (640x480, quality 90: rendered by the synthetic world, one person each, its
ground-truth box given as the person box, the setting of a COCO evaluation with boxes) is turned into keypoints in
image pixels by

* ``model only``: the model alone on a batch of ``--batch-size`` ready-made crops, repeated for as many crops as
  there are images (the flip test included, as in every other row): the ceiling;
* ``serial``: read + decode the JPEG, crop and normalise, the model on batches of ``--batch-size`` crops, heatmap
  decoding + the inverse crop transform + COCO records, one step after another
  (:func:`humanvision.runtime.pipeline.overlapped` with ``workers=0``);
* ``overlapped``: the same steps with ``--workers`` threads reading and cropping while the model runs and decoding
  in the caller's thread (``workers >= 1``), the path of ``humanvision infer --workers 1`` and of
  :meth:`humanvision.runtime.PoseEstimator.predict_many`;

for the PyTorch path (``TopDownPose`` + :class:`~humanvision.methods.topdown.CropPredictor` in the precision it
measures, as ``infer`` does) and the runtime path (the same model exported to ONNX, onnxruntime CPU, fp32, numpy +
OpenCV), for the demo model (``lateral_small``, 192x144) and ViTPose-S (256x192), random weights (speed does not
depend on them). Rows are timed in interleaved rounds (wall clock, the median of ``--rounds``); the ratio is
images/s over the model-only images/s of the same path and model in the same run (the claim: >= 0.90).

    python benchmarks/pipeline.py --out benchmarks/results/pipeline.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from export import cpu_name

MODELS = ("lateral_small", "vitpose_small")


def make_images(root: Path, n: int, size: tuple[int, int]) -> list[tuple[str, Path, np.ndarray]]:
    """``n`` synthetic photos as JPEG files with one ground-truth person box each: ``(key, path, boxes xywh)``."""
    from humanvision.data.synthetic.writers import generate_coco

    generate_coco(root / "png", {"val": n}, size=size, seed=0, workers=os.cpu_count() or 1)
    doc = json.loads((root / "png" / "annotations" / "person_keypoints_val.json").read_text())
    boxes: dict[int, list] = {}
    for a in doc["annotations"]:
        boxes.setdefault(a["image_id"], []).append(a["bbox"])
    (root / "jpg").mkdir()
    items = []
    for im in doc["images"]:
        if im["id"] not in boxes:
            continue
        path = root / "jpg" / Path(im["file_name"]).with_suffix(".jpg").name
        cv2.imwrite(str(path), cv2.imread(str(root / "png" / "val" / im["file_name"])), [cv2.IMWRITE_JPEG_QUALITY, 90])
        items.append((path.name, path, np.asarray(boxes[im["id"]][:1], dtype=np.float64)))
    return items


def torch_rows(name: str, items: list, batch_size: int, workers: int, onnx_path: Path) -> tuple[dict, object]:
    """The PyTorch path's three functions (model only, serial, overlapped) and the exported ONNX model's."""
    from humanvision.data.io import read_image
    from humanvision.data.transforms import keypoints_to_image
    from humanvision.export import export_onnx
    from humanvision.methods.topdown import (
        CropPredictor,
        DataConfig,
        TopDownPose,
        build_codec,
        build_transform,
        to_coco_results,
    )
    from humanvision.models import create_model
    from humanvision.runtime import PoseEstimator
    from humanvision.runtime.pipeline import Prepared, overlapped

    torch.manual_seed(0)
    model = create_model(name).eval()
    data = DataConfig()
    method = TopDownPose(model, build_codec(model, data), "coco17").eval()
    transform = build_transform(method, data, train=False)
    export_onnx(method, transform, onnx_path, recipe=f"benchmark {name}")  # checks parity (fp32)
    predict = CropPredictor(method, flip_test=True, precision="auto", channels_last="auto")

    def prepare(item) -> Prepared:
        key, path, boxes = item
        image = read_image(path)
        crops, centers, scales = [], [], []
        for b in boxes:
            x, _, meta = transform(image, bbox=b, record=key)
            crops.append(x)
            centers.append(meta["center"])
            scales.append(meta["scale"])
        return Prepared(torch.stack(crops), (key, np.asarray(centers), np.asarray(scales)))

    def finish(context, outputs) -> list:
        key, centers, scales = context
        kp = keypoints_to_image(outputs[0], centers, scales, transform.input_size, transform.udp)
        pred = {"keypoints": kp, "scores": outputs[1], "box_scores": np.ones(len(kp)), "areas": scales.prod(1),
                "indices": np.arange(len(kp))}
        return to_coco_results(pred, [key] * len(kp), method.skeleton)

    crops = torch.cat([prepare(items[i % len(items)]).crops for i in range(batch_size)])
    predict(crops)  # measures the precision once, before any timing
    sizes = [batch_size] * (len(items) // batch_size) + [len(items) % batch_size] * bool(len(items) % batch_size)
    est = PoseEstimator(onnx_path, flip_test=True, batch_size=batch_size)
    np_crops = crops.numpy()
    return {  # the model-only rows run the overlapped rows' batch sizes: full batches and the rest
        ("pytorch", "model only"): lambda: [predict(crops[:n]) for n in sizes],
        ("pytorch", "serial"): lambda: list(overlapped(items, prepare, predict, finish, batch_size=batch_size,
                                                       workers=0)),
        ("pytorch", "overlapped"): lambda: list(overlapped(items, prepare, predict, finish, batch_size=batch_size,
                                                           workers=workers)),
        ("runtime", "model only"): lambda: [est.heatmaps(np_crops[:n]) for n in sizes],
        ("runtime", "serial"): lambda: list(est.predict_many(items, workers=0)),
        ("runtime", "overlapped"): lambda: list(est.predict_many(items, workers=workers)),
    }, predict.choice


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--size", type=int, nargs=2, default=(640, 480), metavar=("W", "H"))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=1, help="reading / cropping threads of the overlapped rows")
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/pipeline.json"))
    args = p.parse_args()

    from rich.console import Console
    from rich.table import Table

    from humanvision.engine.precision import label

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        items = make_images(Path(tmp), args.images, tuple(args.size))
        for name in args.models:
            runs, choice = torch_rows(name, items, args.batch_size, args.workers, Path(tmp) / f"{name}.onnx")
            for fn in runs.values():  # warm-up
                fn()
            times: dict = {k: [] for k in runs}
            for _ in range(args.rounds):
                for k, fn in runs.items():
                    t0 = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t0)
            for (path, row), ts in times.items():
                rate = len(items) / float(np.median(ts))
                base = len(items) / float(np.median(times[path, "model only"]))
                rows.append({"model": name, "path": path, "row": row, "images_per_s": rate, "ratio": rate / base,
                             "precision": label(choice.precision, choice.channels_last) if path == "pytorch"
                             else "fp32", "seconds": ts})
    table = Table(title=f"{len(items)} JPEG images {args.size[0]}x{args.size[1]}, batch {args.batch_size}, flip "
                        f"test, {args.workers} worker(s), {os.cpu_count()} CPU cores ({cpu_name()})")
    for col in ("model", "path", "precision", "row", "images/s", "/ model only"):
        table.add_column(col, justify="right" if col in ("images/s", "/ model only") else "left")
    for r in rows:
        table.add_row(r["model"], r["path"], r["precision"], r["row"], f"{r['images_per_s']:.1f}",
                      f"{r['ratio']:.2f}")
    Console(width=150).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "cpu": cpu_name(),
                                    "threads": torch.get_num_threads(), "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
