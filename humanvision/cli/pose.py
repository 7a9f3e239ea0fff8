"""``humanvision train / eval / infer / demo``: the top-down 2D pose method end to end; ``train / eval / infer``
also take the PCT recipes and the monocular 3D recipes (``configs/zhou3d_*.yaml``, a top-level ``stage``)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import typer

from humanvision.cli.app import app

SET_HELP = "Override a config key, e.g. --set train.lr=0.001 (repeatable)."


def _fail(e: Exception) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[red]error:[/] {e}")
    raise typer.Exit(code=1)


def _task_module(source):
    """The method module of a recipe whose module has the four plain entry points (``is_*_recipe``,
    ``load_recipe``, ``run_training``, ``evaluate_weights``): re-id, attributes, text-to-image re-id, human
    parsing, A2J (depth 3D pose), SMPL pose and shape; else None."""
    from humanvision.methods import a2j, attributes, mesh3d, parsing, reid, text_reid

    for module, test in ((reid, reid.is_reid_recipe), (attributes, attributes.is_attribute_recipe),
                         (text_reid, text_reid.is_t2i_recipe), (parsing, parsing.is_parsing_recipe),
                         (a2j, a2j.is_a2j_recipe), (mesh3d, mesh3d.is_mesh3d_recipe)):
        if test(source):
            return module
    return None


def _load_recipe(config: Path, overrides: list[str], unchecked: tuple[str, ...] = ()):
    """The recipe; paths under ``unchecked`` keys are not required to exist (a command that does not use them)."""
    from humanvision.config import load_config
    from humanvision.methods import algebraic, contextpose, hap, hcmoco, monocular3d, pct, volumetric
    from humanvision.methods.topdown import TopDownRecipe

    if hap.is_hap_recipe(config):  # a `pretrain` section (methods/hap.py: HAP / MAE pre-training)
        return hap.load_recipe(config, overrides, unchecked=unchecked)
    if hcmoco.is_hcmoco_recipe(config):  # an `hcmoco` section (methods/hcmoco.py: HCMoCo pre-training)
        return hcmoco.load_recipe(config, overrides, unchecked=unchecked)
    if (task := _task_module(config)) is not None:  # `reid` / `attributes` / `t2i` / `parsing` / `a2j` / `mesh3d`
        return task.load_recipe(config, overrides, unchecked=unchecked)
    if pct.is_pct_recipe(config):  # a recipe with a `pct` section (methods/pct.py)
        return pct.load_recipe(config, overrides, unchecked=unchecked)
    if monocular3d.is_monocular3d_recipe(config):  # a top-level `stage` (methods/monocular3d.py)
        return monocular3d.load_recipe(config, overrides, unchecked=unchecked)
    if algebraic.is_algebraic_recipe(config):  # `triangulation: algebraic` (methods/algebraic.py)
        return algebraic.load_recipe(config, overrides, unchecked=unchecked)
    if volumetric.is_volumetric_recipe(config):  # `triangulation: volumetric` (methods/volumetric.py)
        return volumetric.load_recipe(config, overrides, unchecked=unchecked)
    if contextpose.is_contextpose_recipe(config):  # `triangulation: contextpose` (methods/contextpose.py)
        return contextpose.load_recipe(config, overrides, unchecked=unchecked)
    return load_config(config, TopDownRecipe, overrides, unchecked=unchecked)


def _print_metrics(title: str, metrics: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    Console().print(table)


def _print_pose3d_metrics(title: str, metrics: dict) -> None:
    """The §5.7 numbers (mm) and, when the reader names actions, one row per action."""
    from rich.console import Console
    from rich.table import Table

    scalars = {k: (",".join(v) if isinstance(v, list) else v) for k, v in metrics.items()
               if not k.startswith("per_action_")}
    _print_metrics(title, scalars)
    per = {k: metrics.get(f"per_action_{k}") or {} for k in ("hg", "p1", "p2", "count")}
    if not per["hg"]:
        return
    table = Table(title="per action (mm; hg: seed protocol, 4000 mm bones; P1: GT bone length; P2: Procrustes)")
    for col in ("action", "hg", "P1", "P2", "frames"):
        table.add_column(col, justify="left" if col == "action" else "right")
    for action in per["hg"]:
        table.add_row(action, *(f"{per[k].get(action, float('nan')):.2f}" for k in ("hg", "p1", "p2")),
                      str(per["count"].get(action, "")))
    Console().print(table)


def run_training(recipe, resume: bool = False, quiet: bool = False) -> dict:
    """Train the recipe (generating synthetic data first when the recipe asks for it); returns the fit summary."""
    from humanvision.config import save_config
    from humanvision.engine import Trainer, seed_everything
    from humanvision.methods import algebraic, contextpose, hap, hcmoco, monocular3d, pct, volumetric
    from humanvision.methods.topdown import (
        TopDownDataset,
        build_method,
        build_transform,
        evaluate_topdown,
        prepare_synthetic,
        train_reader,
    )

    if hap.is_hap_recipe(recipe):
        return hap.run_training(recipe, resume=resume, quiet=quiet)
    if hcmoco.is_hcmoco_recipe(recipe):
        return hcmoco.run_training(recipe, resume=resume, quiet=quiet)
    if (task := _task_module(recipe)) is not None:
        return task.run_training(recipe, resume=resume, quiet=quiet)
    if pct.is_pct_recipe(recipe):
        return pct.run_training(recipe, resume=resume, quiet=quiet)
    if monocular3d.is_monocular3d_recipe(recipe):
        return monocular3d.run_training(recipe, resume=resume)
    if algebraic.is_algebraic_recipe(recipe):
        return algebraic.run_training(recipe, resume=resume, quiet=quiet)
    if volumetric.is_volumetric_recipe(recipe):
        return volumetric.run_training(recipe, resume=resume, quiet=quiet)
    if contextpose.is_contextpose_recipe(recipe):
        return contextpose.run_training(recipe, resume=resume, quiet=quiet)
    seed_everything(recipe.train.seed)  # the initial weights are a function of the recipe, like the data order
    method = build_method(recipe)  # before any data work: a bad model name or argument fails at once
    prepare_synthetic(recipe.data, quiet=quiet)
    dataset = TopDownDataset(train_reader(recipe.data, method.skeleton.name),
                             build_transform(method, recipe.data, train=True), cache_images=recipe.data.cache_images)
    out = Path(recipe.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(recipe, out / "config.yaml")

    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun every rank evaluates, rank 0 writes

    def eval_fn(model, epoch: int) -> dict:  # inference in the precision the training run chose
        m = evaluate_topdown(model, recipe, out_dir=out / "eval" if main_rank else None,
                             device=next(model.parameters()).device,
                             precision=(trainer.choice.precision, trainer.choice.channels_last))
        return {k: v for k, v in m.items() if isinstance(v, float)}

    trainer = Trainer(recipe.train, method, dataset, eval_fn=eval_fn)
    return trainer.fit(resume=resume or None)


@app.command()
def train(config: Path = typer.Argument(..., help="YAML recipe (see configs/)."),
          set_: list[str] = typer.Option([], "--set", help=SET_HELP),
          resume: bool = typer.Option(False, "--resume", help="Continue from <output_dir>/last exactly."),
          ) -> None:
    """Train a recipe from configs/: pose (2D, 3D), pre-training (HAP / MAE), re-id, attributes, text re-id
    (single process, or under torchrun for DDP)."""
    from humanvision.errors import HumanVisionError

    try:
        recipe = _load_recipe(config, set_)
        summary = run_training(recipe, resume=resume)
    except HumanVisionError as e:
        _fail(e)
    if summary.get("metrics"):
        _print_metrics(f"{recipe.name}: final evaluation", summary["metrics"])
    typer.echo(f"checkpoints in {recipe.train.output_dir}")


@app.command("eval")
def evaluate(config: Path = typer.Argument(..., help="YAML recipe (see configs/)."),
             weights: Path = typer.Option(..., "--weights", "-w", help="Weights file or run directory."),
             set_: list[str] = typer.Option([], "--set", help=SET_HELP),
             dets: Path | None = typer.Option(None, "--dets", help="Person detections json (else GT boxes)."),
             out: Path | None = typer.Option(None, "--out", help="Folder for results.json and metrics.json."),
             ) -> None:
    """Evaluate weights on the recipe's validation set: COCO AP/AR (and PCK with ground-truth boxes); for a
    monocular 3D recipe, MPJPE on its Human3.6M validation subjects (pose3d.md §5.7: the seed's 4000 mm
    bone-length protocol, Protocol #1 and #2, per action); for ContextPose with eval.dataset=mpi_inf_3dhp, PCK@150 /
    AUC on the MPI-INF-3DHP test set per subset and sequence."""
    from humanvision.errors import ConfigError, HumanVisionError
    from humanvision.methods import algebraic, contextpose, hap, hcmoco, monocular3d, pct, volumetric
    from humanvision.methods.topdown import build_method, evaluate_topdown, prepare_synthetic

    if hap.is_hap_recipe(config) or hcmoco.is_hcmoco_recipe(config):
        _fail(ConfigError(f"{config}: a pre-training recipe (HAP / MAE / HCMoCo) has no evaluation of its own; "
                          "fine-tune its encoder with a downstream recipe (re-id, attributes, parsing, ...; "
                          "model.init: the exported encoder) and evaluate that"))
    if (task := _task_module(config)) is not None:  # mAP / CMC, mA, R@k, mIoU, ITOP mAP, MPJPE / PVE
        try:
            if dets is not None:
                raise ConfigError("--dets: person detections are for 2D pose recipes")
            recipe = _load_recipe(config, set_, unchecked=("model.init",))
            metrics = task.evaluate_weights(recipe, weights, out_dir=out)
        except HumanVisionError as e:
            _fail(e)
        _print_metrics(f"{recipe.name}: {weights}", {k: v for k, v in metrics.items() if isinstance(v, float)})
        return
    # multi-view 3D (algebraic: MPJPE of the method and its two baselines; volumetric: and the base error) and
    # ContextPose (every view a sample: MPJPE, bone-length and base errors); crops come from ground-truth boxes
    three_d = [(algebraic, algebraic.is_algebraic_recipe, ("model.weights",)),
               (volumetric, volumetric.is_volumetric_recipe, ("model.weights", "model.base_train_predictions")),
               (contextpose, contextpose.is_contextpose_recipe, contextpose.eval_unchecked(config, set_))]
    for module, is_recipe, unchecked in three_d:
        if not is_recipe(config):
            continue
        try:
            if dets is not None:
                raise ConfigError("--dets: 3D evaluation crops every view by its ground-truth box")
            recipe = _load_recipe(config, set_, unchecked=unchecked)
            metrics = module.evaluate_weights(recipe, weights, out_dir=out)
        except HumanVisionError as e:
            _fail(e)
        if metrics.get("dataset") == "mpi_inf_3dhp":  # ContextPose on the 3DHP test set: PCK / AUC tables
            typer.echo(contextpose.format_3dhp_table(metrics))
            return
        _print_metrics(f"{recipe.name}: {weights} (mm)", {k: v for k, v in metrics.items() if isinstance(v, float)})
        return
    if monocular3d.is_monocular3d_recipe(config):
        try:  # the MPII set and the previous stage's weights are not used; --weights replaces init_weights
            if dets is not None:
                raise ConfigError("--dets: monocular 3D evaluation crops Human3.6M by its ground-truth boxes; "
                                  "detections are for 2D recipes")
            recipe = _load_recipe(config, set_, unchecked=("data.mpii_train", "data.mpii_images", "init_weights"))
            metrics = monocular3d.evaluate_weights(recipe, weights, out_dir=out, progress=True)
        except HumanVisionError as e:
            _fail(e)
        _print_pose3d_metrics(f"{recipe.name}: {weights}", metrics)
        return
    try:
        recipe = _load_recipe(config, set_, unchecked=("data.train_ann", "data.train_images", "model.weights",
                                                             "model.backbone_weights"))
        prepare_synthetic(recipe.data)
        if pct.is_pct_recipe(recipe):  # stage I: reconstruction AP; stage II: pose AP
            metrics = pct.evaluate_weights(recipe, weights, out_dir=out, det_results=dets, progress=True)
        else:
            method = build_method(recipe, weights=weights)
            metrics = evaluate_topdown(method, recipe, out_dir=out, det_results=dets, progress=True)
    except HumanVisionError as e:
        _fail(e)
    _print_metrics(f"{recipe.name}: {weights}", metrics)


IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv"}


def _expand_inputs(inputs: list[Path]) -> list[Path]:
    from humanvision.errors import DataError

    files: list[Path] = []
    for p in inputs:
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS)
        elif p.is_file():
            files.append(p)
        else:
            raise DataError("input not found", file=str(p))
    return files


def _load_boxes(path: Path | None) -> dict[str, list]:
    """Boxes per image file name: a list of ``{"image": name or "image_id": stem, "bbox": xywh, "score"}``."""
    from humanvision.errors import DataError

    if path is None:
        return {}
    try:
        records = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read boxes: {e}", file=str(path)) from None
    if not isinstance(records, list):
        raise DataError("expected a list of {image, bbox, score}", file=str(path))
    out: dict[str, list] = {}
    for i, r in enumerate(records):
        key = r.get("image", r.get("file_name", r.get("image_id"))) if isinstance(r, dict) else None
        if key is None or "bbox" not in r or len(r["bbox"]) != 4:
            raise DataError("needs 'image' (file name) or 'image_id' and a 4-number 'bbox'", file=str(path),
                            record=f"box #{i}")
        out.setdefault(Path(str(key)).stem, []).append((r["bbox"], float(r.get("score", 1.0))))
    return out


def _fit_frame(image, size: tuple[int, int]):
    """``image`` letterboxed into ``size = (w, h)`` (a video's frames all have its first frame's size)."""
    import cv2
    import numpy as np

    w, h = size
    ih, iw = image.shape[:2]
    if (iw, ih) == (w, h):
        return image
    k = min(w / iw, h / ih)
    nw, nh = max(1, round(iw * k)), max(1, round(ih * k))
    canvas = np.zeros((h, w, 3), np.uint8)
    x, y = (w - nw) // 2, (h - nh) // 2
    canvas[y:y + nh, x:x + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    return canvas


def _frames(files: list[Path], readers: dict):
    """``(image or path, name, video)`` for every image file (read later, by the pipeline's workers) and every
    readable frame of every video (decoded here, in the pipeline's feeder thread); ``readers`` gets each video's
    :class:`~humanvision.runtime.VideoFrames` (its ``stats`` are final once the next file is reached)."""
    from humanvision.runtime.video import VideoFrames

    for f in files:
        if f.suffix.lower() not in VIDEO_EXTS:
            yield f, f.name, None
            continue
        reader = readers[f] = VideoFrames(f)  # a file that cannot be opened: VideoError, at its place in the order
        for i, frame in reader:  # RGB; unreadable frames are skipped (counted in reader.stats)
            yield frame, f"{f.stem}_{i:06d}", f


def _process_inputs(files: list[Path], out: Path, stages, suffix: str = "_pose",
                    video_stats: dict[str, dict] | None = None, overlays: bool = True,
                    batch_size: int = 1, workers: int = 0) -> tuple[dict[str, list], int]:
    """Run the pipeline ``stages = (prepare, forward, finish)`` (:func:`humanvision.runtime.pipeline.overlapped`,
    ``batch_size`` crops per model call, ``workers`` preparing threads) on every image file and every frame of
    every video: ``prepare((image or path, name, video)) -> Prepared`` (``image`` RGB uint8; ``name`` the image's
    file name, or ``{video stem}_{frame:06d}`` for a frame, the key of --boxes; ``video`` the video's path or None),
    ``finish(context, outputs) -> (overlay, records)`` in input order. ``stages`` may also be one function
    ``process(image, name, video) -> (overlay, records)`` (run in order, without batching). Writes
    ``{stem}{suffix}.png`` per image and ``{stem}{suffix}.mp4`` per video (``overlays``); returns the predictions
    (file name, or ``{video name}#{frame}``, -> records) and the number of images and frames. An image or video
    that cannot be opened, or bad input for one (a box without area), stops the command with an error naming the
    file; what was written before it stays. Unreadable frames of a video (a corrupt frame, a file that ends early)
    are skipped: their count is printed, and the read / skipped counts per video go to ``video_stats`` (video file
    name -> :attr:`humanvision.runtime.VideoFrames.stats`) and ``videos.json``."""
    import cv2
    import torch

    from humanvision.data.io import read_image, write_image
    from humanvision.errors import HumanVisionError
    from humanvision.runtime.pipeline import Prepared, overlapped

    def read(item: tuple) -> tuple:
        return (item[0] if not isinstance(item[0], Path) else read_image(item[0]), *item[1:])

    if callable(stages):  # one function per image: read in the workers, run in order
        process = stages
        stages = (lambda item: Prepared(None, read(item)), None, lambda item, _: process(*item))
    prepare, forward, finish = stages

    def prep(item: tuple) -> Prepared:
        p = prepare(read(item))
        return Prepared(p.crops, (item[1], item[2], p.context))

    predictions: dict[str, list] = {}
    frames = 0
    video_stats = {} if video_stats is None else video_stats
    readers: dict = {}
    writer, size, current = None, None, None

    def close_video(video: Path | None) -> None:
        nonlocal writer
        if writer is not None:
            writer.release()
            writer = None
        if video is not None and video.name not in video_stats:
            stats = video_stats[video.name] = readers[video].stats
            if stats["frames_skipped"]:
                typer.echo(f"{video}: {stats['frames_read']} frame(s) read, {stats['frames_skipped']} unreadable "
                           f"frame(s) skipped{' (the file ends early)' if stats['truncated'] else ''}")

    results = overlapped(_frames(files, readers), prep, forward, lambda ctx, o: (ctx[0], ctx[1], *finish(ctx[2], o)),
                         batch_size=batch_size, workers=workers)
    with torch.no_grad(), contextlib.closing(results):  # (forward runs in a thread of its own: it sets its own mode)
        try:
            for name, video, vis, res in results:
                if video != current:
                    close_video(current)
                    current = video
                if video is None:
                    if overlays:
                        write_image(out / f"{Path(name).stem}{suffix}.png", vis)
                    predictions[name] = res
                else:
                    if overlays:
                        if writer is None:
                            size = (vis.shape[1], vis.shape[0])
                            writer = cv2.VideoWriter(str(out / f"{video.stem}{suffix}.mp4"),
                                                     cv2.VideoWriter_fourcc(*"mp4v"), readers[video].fps, size)
                        writer.write(cv2.cvtColor(_fit_frame(vis, size), cv2.COLOR_RGB2BGR))
                    predictions[f"{video.name}#{int(name.rsplit('_', 1)[1])}"] = res
                frames += 1
        except HumanVisionError as e:
            close_video(current)
            _fail(e)
    close_video(current)
    for f in readers:  # videos without one readable frame
        close_video(f)
    if video_stats:
        (out / "videos.json").write_text(json.dumps(video_stats, indent=1))
    return predictions, frames


@app.command()
def infer(inputs: list[Path] = typer.Argument(..., help="Images, folders of images, or videos."),
          config: Path = typer.Option(..., "--config", "-c", help="The recipe the weights were trained with."),
          weights: Path = typer.Option(..., "--weights", "-w", help="Weights file or run directory."),
          boxes: Path | None = typer.Option(None, "--boxes", help="Person boxes json; default: the whole image."),
          out: Path = typer.Option(Path("outputs/infer"), "--out", help="Output folder."),
          threshold: float = typer.Option(0.3, help="Score threshold for drawing joints."),
          coco_ann: Path | None = typer.Option(None, "--coco-ann", help="COCO json whose images these are: "
                                               "results.json then uses its image ids (for `evaluate coco`)."),
          set_: list[str] = typer.Option([], "--set", help=SET_HELP),
          detector: str | None = typer.Option(None, "--detector", help="Person detector for the images --boxes "
                                              "does not list: an .onnx detector (YOLOX / RTMDet layouts), "
                                              "torchvision:NAME:WEIGHTS (local weights), a .json detection or "
                                              "COCO file, or 'whole' (default: the whole image)."),
          det_thr: float | None = typer.Option(None, "--det-thr", help="Detector score threshold (default: the "
                                               "detector's own, 0.3 ONNX / 0.5 torchvision)."),
          track: bool = typer.Option(True, "--track/--no-track", help="Videos: track people across frames "
                                     "(OKS + IoU): track_id in the records and {video}_tracks.json per frame."),
          smooth: bool = typer.Option(False, "--smooth/--no-smooth", help="Videos: One-Euro smoothing of the "
                                      "tracked keypoints."),
          batch_size: int = typer.Option(32, "--batch-size", min=1, help="2D recipes: person crops per model call "
                                         "(crops of consecutive images and frames share a batch)."),
          workers: int | None = typer.Option(None, "--workers", min=0, help="2D recipes: threads that read, "
                                             "detect and crop while the model runs (0: one step after another). Default: 2 when "
                                             "the model runs on a GPU, 0 on the CPU, where the model already keeps "
                                             "every core busy (benchmarks/pipeline.py)."),
          overlays: bool = typer.Option(True, "--overlays/--no-overlays", help="Write the skeleton overlays (a .png "
                                        "per image, an .mp4 per video); --no-overlays writes the JSON files only."),
          device: str = typer.Option("auto", "--device", help="2D recipes: cpu, cuda, cuda:N or auto (CUDA when present; under "
                                     "torchrun each rank takes the GPU of its LOCAL_RANK)."),
          ) -> None:
    """Predict poses: writes a skeleton overlay per image (an .mp4 per video), predictions.json (per file) and
    results.json (a COCO keypoint result list: image ids from --coco-ann, else numeric file names such as
    000000000139.jpg, else the input order, written to image_ids.json). People are found by --detector (every
    person above --det-thr; an image without one has no records) except in the images --boxes lists. In videos
    they are tracked (--track): each record gets a track_id and {video stem}_tracks.json holds the people of every
    frame; unreadable frames are skipped, counted on the console and in videos.json. The crops of consecutive
    images and frames share model calls of --batch-size; with --workers, reading, detection and cropping run in
    threads while the model runs (humanvision.runtime.pipeline; records and files are the same either way).

    A monocular 3D recipe (configs/zhou3d_*.yaml) writes per image the 2D overlay (MPII-16) next to a 3D plot per
    person ({stem}_pose3d.png, an .mp4 per video) and predictions.json with, per person, the 3D joints (mm,
    pelvis at 0, h36m17_vp order, total bone length eval.total_bone_length) and the MPII-16 keypoints in image
    pixels. Without --boxes the whole image is one centred person (the seed's demo)."""
    import numpy as np
    import torch

    from humanvision.cli import infer_shard
    from humanvision.cli.infer_video import TrackedVideos, detect_boxes
    from humanvision.data.transforms import keypoints_to_image
    from humanvision.engine.distributed import resolve_device
    from humanvision.engine.precision import describe_rates
    from humanvision.errors import ConfigError, DataError, HumanVisionError
    from humanvision.methods import algebraic, contextpose, hap, monocular3d, pct, volumetric
    from humanvision.methods.topdown import CropPredictor, build_method, build_transform, to_coco_results
    from humanvision.runtime.pipeline import Prepared
    from humanvision.viz import draw_boxes, draw_skeleton

    if _task_module(config) is not None:
        _fail(ConfigError("--config: `infer` takes 2D and monocular 3D pose recipes; this recipe's method "
                          "(re-id, attributes, text re-id, parsing, A2J, SMPL) is evaluated on its dataset's protocol "
                          "by `humanvision eval`"))
    if hap.is_hap_recipe(config):
        _fail(ConfigError("--config: a pre-training recipe (HAP / MAE) predicts no poses; give a 2D pose recipe "
                          "(its predictions.json becomes pre-training keypoints through "
                          "humanvision.data.readers.person_crops.keypoints_from_predictions)"))
    if monocular3d.is_monocular3d_recipe(config):
        if detector is not None:
            _fail(ConfigError("--detector: monocular 3D recipes take --boxes (or the whole image)"))
        _infer_monocular3d(inputs, config, weights, boxes, out, threshold, coco_ann, set_, overlays)
        return
    if algebraic.is_algebraic_recipe(config):
        _fail(ConfigError("--config: a multi-view (algebraic triangulation) recipe needs synchronised calibrated "
                          "views, not single images; `humanvision eval` runs it on its validation subjects, and "
                          "`humanvision triangulate` turns per-camera 2D detections into 3D"))
    if contextpose.is_contextpose_recipe(config):
        _fail(ConfigError("--config: a ContextPose recipe needs a calibrated camera and a 3D base point per "
                          "image; `humanvision eval` runs it on its validation subjects"))
    if volumetric.is_volumetric_recipe(config):
        _fail(ConfigError("--config: a multi-view (volumetric triangulation) recipe needs synchronised calibrated "
                          "views and a 3D base point per frame, not single images; `humanvision eval` runs it on "
                          "its validation subjects"))
    try:  # inference needs no data paths of the recipe, and --weights replaces model.weights
        recipe = _load_recipe(config, set_, unchecked=("data.", "model.weights", "model.backbone_weights"))
        if pct.is_pct_recipe(recipe):  # PCT stage II has the same predict / transform surface
            pct.require_classifier(recipe, "infer")
            build_method, build_transform = pct.build_method, pct.build_transform
        method = build_method(recipe, weights=weights).eval()
        try:
            dev = resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")))
        except (ConfigError, RuntimeError) as e:
            raise ConfigError(f"--device: {device!r} is not usable here ({str(e).split(': ', 1)[-1]}); give cpu, "
                              "cuda, cuda:N or auto") from None
        method.to(dev)
        if workers is None:
            workers = 2 if dev.type == "cuda" else 0
        transform = build_transform(method, recipe.data, train=False)
        box_map = _load_boxes(boxes)
        if smooth and not track:
            raise ConfigError("--smooth: the smoothing follows tracks; drop --no-track")
        det = None
        if detector is not None and detector != "whole":
            from humanvision.models.detectors import build_detector

            det = build_detector(detector, score_thr=det_thr)
        files = _expand_inputs(inputs)
        known_ids = _coco_image_ids(coco_ann)
        for f in files:
            if known_ids and f.suffix.lower() in IMAGE_EXTS and f.name not in known_ids:
                raise DataError(f"not among the images of {coco_ann}", file=str(f))
    except HumanVisionError as e:
        _fail(e)
    out.mkdir(parents=True, exist_ok=True)
    image_ids: dict[str, int] = {}
    numeric = all(f.suffix.lower() in IMAGE_EXTS and f.stem.isdigit() for f in files)  # COCO-style file names
    all_files, (files, shard) = files, infer_shard.start_sharded(files)  # torchrun: this rank's files (issue 15)

    def image_id(name: str) -> int:
        if name not in image_ids:
            image_ids[name] = (known_ids[name] if name in known_ids else int(Path(name).stem) if numeric
                               else len(image_ids))
        return image_ids[name]

    tracked = TrackedVideos(smooth, method.skeleton.name) if track else None

    def prepare(item: tuple) -> Prepared:  # in the pipeline's worker threads: boxes and crops
        image, name, video = item
        bxs = box_map.get(Path(name).stem) or detect_boxes(det, image, name)
        if not bxs:  # the detector found nobody
            return Prepared(None, (image, name, video, bxs, None, None))
        crops, centers, scales = [], [], []
        for bbox, _ in bxs:
            img, _, meta = transform(image, bbox=bbox, record=name)
            crops.append(img)
            centers.append(meta["center"])
            scales.append(meta["scale"])
        batch = torch.stack(crops)
        return Prepared(batch.pin_memory() if dev.type == "cuda" else batch,  # copied to the GPU without blocking
                        (image, name, video, bxs, np.asarray(centers), np.asarray(scales)))

    forward = CropPredictor(method, recipe.eval.flip_test, recipe.eval.precision, recipe.eval.channels_last,
                            on_choice=lambda c: typer.echo(f"precision: {describe_rates(c, 'crops/s')}"))

    def finish(context: tuple, outputs: tuple | None) -> tuple[np.ndarray, list[dict]]:  # in order: records, overlay
        image, name, video, bxs, centers, scales = context
        if outputs is None:
            if tracked is not None and video is not None:
                tracked.update(video, name, [], None, None, [])
            return image, []
        kp_img = keypoints_to_image(outputs[0], centers, scales, transform.input_size, transform.udp)
        pred = {"keypoints": kp_img, "scores": outputs[1], "box_scores": np.array([s for _, s in bxs]),
                "areas": scales.prod(1), "indices": np.arange(len(bxs))}
        results = to_coco_results(pred, [image_id(name)] * len(bxs), method.skeleton, recipe.eval.rescore_thr,
                                  recipe.eval.nms_thr)
        labels = None  # in videos: the track ids (and smoothed keypoints) of the records
        if tracked is not None and video is not None:
            labels = tracked.update(video, name, bxs, kp_img, pred["scores"], results)
        if not overlays:
            return image, results
        vis = draw_boxes(image, np.array([b for b, _ in bxs], dtype=np.float64), labels=labels)
        if results:
            k = np.array([r["keypoints"] for r in results]).reshape(len(results), -1, 3)
            vis = draw_skeleton(vis, k[..., :2], method.skeleton, scores=k[..., 2], threshold=threshold)
        return vis, results

    t0 = time.perf_counter()
    video_stats: dict[str, dict] = {}
    predictions, frames = _process_inputs(files, out, (prepare, forward, finish), video_stats=video_stats,
                                          overlays=overlays, batch_size=batch_size, workers=workers)
    if tracked is not None:
        tracked.write(out, video_stats)  # {video stem}_tracks.json
    if shard is not None:  # rank 0 merges every rank's part; the other ranks are done
        try:
            merged = infer_shard.finish_sharded(shard, out, all_files, predictions, image_ids, video_stats, frames,
                                                renumber_ids=not known_ids and not numeric)
        except HumanVisionError as e:
            _fail(e)
        if merged is None:
            return
        predictions, image_ids, frames = merged
    (out / "predictions.json").write_text(json.dumps(predictions))
    (out / "results.json").write_text(json.dumps([r for rs in predictions.values() for r in rs]))
    if not known_ids and not numeric:
        (out / "image_ids.json").write_text(json.dumps(image_ids, indent=1))
    dt = time.perf_counter() - t0
    typer.echo(f"{frames} image(s)/frame(s) in {dt:.1f} s -> {out} (overlays, predictions.json, results.json)")


def _infer_monocular3d(inputs: list[Path], config: Path, weights: Path, boxes: Path | None, out: Path,
                       threshold: float, coco_ann: Path | None, set_: list[str], overlays: bool = True) -> None:
    """``humanvision infer`` for a monocular 3D recipe (pose3d.md §5.8, :func:`monocular3d.predict_image`), sharded
    over torchrun ranks like the 2D path (:mod:`humanvision.cli.infer_shard`)."""
    import numpy as np

    from humanvision.cli import infer_shard
    from humanvision.errors import ConfigError, HumanVisionError
    from humanvision.methods import monocular3d
    from humanvision.viz import draw_boxes, draw_skeleton

    try:  # no data paths and no previous-stage weights: --weights are the trained ones
        if coco_ann is not None:
            raise ConfigError("--coco-ann: COCO keypoint results are for 2D recipes; a monocular 3D recipe "
                              "writes 3D joints (predictions.json)")
        try:
            from humanvision.viz.plot3d import render_skeleton_3d
        except ImportError:
            raise ConfigError("the 3D plots need matplotlib: pip install 'humanvision[viz]'") from None
        recipe = _load_recipe(config, set_, unchecked=("data.", "init_weights"))
        method = monocular3d.build_method(recipe, weights, trained=True).eval()
        box_map = _load_boxes(boxes)
        files = _expand_inputs(inputs)
    except HumanVisionError as e:
        _fail(e)
    out.mkdir(parents=True, exist_ok=True)
    # a video's frames share one layout: as many 3D panels as the most boxes any of its frames has
    panels = {f: max((len(v) for k, v in box_map.items()
                      if k.startswith(f"{f.stem}_") and k[len(f.stem) + 1:].isdigit()), default=1)
              for f in files if f.suffix.lower() in VIDEO_EXTS}

    def run(image: np.ndarray, name: str, video: Path | None) -> tuple[np.ndarray, list[dict]]:
        given = box_map.get(Path(name).stem)
        pred = monocular3d.predict_image(method, image, [b for b, _ in given] if given else None,
                                         box_padding=recipe.data.box_padding, flip_test=recipe.eval.flip_test,
                                         total_length=recipe.eval.total_bone_length, record=name)
        box_scores = [s for _, s in given] if given else [1.0]
        records = [{"bbox": [round(float(v), 2) for v in pred["boxes"][i]], "box_score": box_scores[i],
                    "skeleton_2d": "mpii16", "keypoints_2d": np.round(pred["keypoints_2d"][i], 2).tolist(),
                    "scores": np.round(pred["scores"][i], 4).tolist(), "skeleton_3d": "h36m17_vp",
                    "joints_3d": np.round(pred["joints_3d"][i], 2).tolist()}
                   for i in range(len(pred["boxes"]))]
        if not overlays:  # --no-overlays: no 3D plots either
            return image, records
        vis = draw_boxes(image, pred["boxes"])
        vis = draw_skeleton(vis, pred["keypoints_2d"], "mpii16", scores=pred["scores"], threshold=threshold)
        h = vis.shape[0]
        side = max(256, min(h, 720))
        tiles = [render_skeleton_3d(j, "h36m17_vp", (side, side), up="-y", title=f"person {i} (mm)")
                 for i, j in enumerate(pred["joints_3d"])]
        tiles += [np.full((side, side, 3), 255, np.uint8)] * ((panels[video] if video else 1) - len(tiles))
        height = max(h, side)
        vis = np.concatenate([np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0)), constant_values=255)
                              for t in [vis, *tiles]], axis=1)
        return vis, records

    t0 = time.perf_counter()
    all_files, (files, shard) = files, infer_shard.start_sharded(files)  # torchrun: this rank's files
    video_stats: dict[str, dict] = {}
    predictions, frames = _process_inputs(files, out, run, suffix="_pose3d", video_stats=video_stats,
                                          overlays=overlays)
    if shard is not None:  # rank 0 merges every rank's part in input order; the other ranks are done
        try:
            merged = infer_shard.finish_sharded(shard, out, all_files, predictions, {}, video_stats, frames,
                                                renumber_ids=False)
        except HumanVisionError as e:
            _fail(e)
        if merged is None:
            return
        predictions, _, frames = merged
    (out / "predictions.json").write_text(json.dumps(predictions))
    dt = time.perf_counter() - t0
    typer.echo(f"{frames} image(s)/frame(s) in {dt:.1f} s -> {out} (2D overlays with 3D plots, predictions.json: "
               "joints_3d in mm, pelvis at 0, h36m17_vp order; keypoints_2d in image pixels, mpii16 order)")


def _coco_image_ids(path: Path | None) -> dict[str, int]:
    """File name -> image id from a COCO json's ``images`` (empty without one)."""
    from humanvision.errors import DataError

    if path is None:
        return {}
    try:
        images = json.loads(path.read_text())["images"]
        return {Path(im["file_name"]).name: int(im["id"]) for im in images}
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise DataError(f"not a COCO annotation file with images[].file_name / id: {e!r}", file=str(path)) from None


# The built-in synthetic recipe of `humanvision demo`; configs/synthetic_tiny.yaml holds the same values.
DEMO_RECIPE = {
    "name": "synthetic_tiny",
    "model": {"name": "lateral_small", "skeleton": "coco17", "input_size": [144, 192]},
    "data": {"source": "synthetic", "synthetic_dir": "data/synthetic_coco", "synthetic_train": 12000,
             "synthetic_val": 150, "synthetic_size": [256, 256], "synthetic_seed": 0, "augment": "flip",
             "cache_images": True},
    "train": {"epochs": 10, "max_minutes": 9.0, "min_steps": 1300, "batch_size": 32, "lr": 4e-3,
              "weight_decay": 1e-4, "schedule": "cosine", "warmup_iters": 50, "clip_grad": 1.0, "precision": "auto",
              "channels_last": "auto", "num_workers": 0, "best_metric": "AP", "eval_every": 4,
              "output_dir": "runs/synthetic_tiny", "log_every": 10},
    "eval": {"flip_test": True, "batch_size": 64, "num_vis": 8},
}


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), "--out", help="Run folder (checkpoints, metrics, overlays)."),
         data_dir: Path = typer.Option(Path("data/synthetic_coco"), "--data", help="Where to write the data."),
         set_: list[str] = typer.Option([], "--set", help=SET_HELP),
         ) -> None:
    """The main job: synthesise a COCO-format set, train the small model on CPU, evaluate, draw overlays.

    Training runs in the fastest precision measured on this machine, for 9 minutes but at least train.min_steps
    optimiser steps (a CPU without native bf16 takes longer instead of returning an untrained model)."""
    import numpy as np

    from humanvision.config import load_config
    from humanvision.data.io import write_image
    from humanvision.errors import HumanVisionError
    from humanvision.methods.topdown import (
        TopDownRecipe,
        build_method,
        eval_reader,
        evaluate_topdown,
        prepare_synthetic,
    )
    from humanvision.viz import draw_skeleton, make_grid

    try:
        recipe = load_config(DEMO_RECIPE, TopDownRecipe, [f"train.output_dir={out}", f"data.synthetic_dir={data_dir}",
                                                          *set_])
        build_method(recipe)  # the whole recipe, model included, is valid before minutes of rendering
        prepare_synthetic(recipe.data)  # synthesis is not part of the training time
        t0 = time.perf_counter()
        summary = run_training(recipe)
        minutes_used = (time.perf_counter() - t0) / 60
        method = build_method(recipe, weights=out)
        choice = summary["precision"]
        metrics = evaluate_topdown(method, recipe, out_dir=out / "eval", progress=True,
                                   precision=(choice["precision"], choice["channels_last"]))
    except HumanVisionError as e:
        _fail(e)
    metrics.update(_training_report(recipe.train, summary, minutes_used))
    _print_metrics("demo: synthetic COCO-format validation (unseen people, GT boxes)", metrics)

    # overlays of validation images with the predictions
    results = json.loads((out / "eval" / "results.json").read_text())
    reader = eval_reader(recipe.data, method.skeleton.name)
    by_image: dict = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(r)
    tiles, seen = [], set()
    for i in range(len(reader)):
        s = reader[i]
        if s.image_id in seen:
            continue
        seen.add(s.image_id)
        rs = [r for r in by_image.get(s.image_id, []) if r["score"] > 0.2]
        img = s.load_image()
        if rs:
            k = np.array([r["keypoints"] for r in rs]).reshape(len(rs), -1, 3)
            img = draw_skeleton(img, k[..., :2], method.skeleton, scores=k[..., 2])
        tiles.append(img)
        if len(tiles) >= recipe.eval.num_vis:
            break
    write_image(out / "overlays.png", make_grid(tiles, ncols=4))
    (out / "demo_metrics.json").write_text(json.dumps(metrics, indent=2))
    typer.echo(f"OKS AP {metrics['AP']:.3f}  PCK@0.2 {metrics.get('PCK@0.2', float('nan')):.3f}  "
               f"({minutes_used:.1f} min training, {metrics['steps']} steps in {metrics['train_precision']}) -> "
               f"{out}/overlays.png, {out}/demo_metrics.json")
    if metrics.get("note"):
        typer.echo(f"note: {metrics['note']}")


def _training_report(cfg, summary: dict, minutes: float) -> dict:
    """What the demo's training did, for demo_metrics.json: steps, precision and measured speed, and a note when
    the time budget alone would have been too short on this machine."""
    from humanvision.engine.precision import label

    choice = summary["precision"]
    setting = label(choice["precision"], choice["channels_last"])
    rate = choice["rates"].get(setting)
    report = {"train_minutes": minutes, "steps": summary["step"], "min_steps": cfg.min_steps,
              "budget_minutes": cfg.max_minutes, "budget_extended": bool(summary["budget_extended"]),
              "train_precision": setting,
              "measured_images_per_s": rate, "precision_rates": choice["rates"]}
    if summary["budget_extended"]:
        report["note"] = (f"this CPU trains at ~{rate or 0:.0f} images/s ({report['train_precision']}); the "
                          f"{cfg.max_minutes:g}-minute budget would have ended after about "
                          f"{summary.get('estimated_steps') or '?'} steps, so training ran on to the "
                          f"{cfg.min_steps}-step floor (train.min_steps) that gives a usable model. A CPU with native "
                          "bf16 (AVX-512-BF16 or AMX) or a GPU trains 3-6x more steps in the same time; "
                          "--set train.min_steps=N trades time for accuracy.")
    return report
