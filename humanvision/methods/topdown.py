"""Top-down heatmap pose estimation (ViTPose / SimpleBaseline / HRNet), readable top to bottom.

Training: a person box -> (center, scale) -> augmentation -> affine crop -> heatmap targets from the codec ->
model -> ``JointsMSELoss`` with target weights (pose2d.md §1-2). Inference: boxes (ground truth, a detection file
or the whole image) -> crop -> model (+ flip test) -> the *same* codec decodes -> back to image pixels ->
rescoring and OKS-NMS -> a COCO result file -> COCO AP with the library's evaluator (§2.6, §4.1).

The recipe (:class:`TopDownRecipe`) is a flat YAML file with four sections, ``model``, ``data``, ``train`` (the
engine's :class:`~humanvision.engine.TrainConfig`) and ``eval``; see ``configs/``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from humanvision.codecs import MSRAHeatmap, UDPHeatmap
from humanvision.config import must_exist
from humanvision.data.transforms import TopDownAugment, TopDownTransform, keypoints_to_image
from humanvision.engine import TrainConfig
from humanvision.errors import ConfigError, DataError
from humanvision.skeletons import get_skeleton

__all__ = [
    "DataConfig", "EvalConfig", "ModelConfig", "TopDownDataset", "TopDownPose", "TopDownRecipe", "build_method",
    "build_transform", "coco_metrics", "evaluate_topdown", "predict_boxes", "prepare_synthetic",
]


# ----------------------------------------------------------------------------------------------- the recipe
@dataclass
class ModelConfig:
    """``name``: a registered model (``humanvision.models.list_models()``); ``input_size``: (w, h), default the
    model's; ``weights``: a local file (ours or an official ViTPose checkpoint); ``backbone_weights``: a
    pre-training checkpoint that initialises only the backbone before training (:func:`init_backbone`: a SimMIM
    Swin for the PCT Swin, an MAE / timm encoder otherwise; ignored when ``weights`` are given);
    ``backbone_grid``: the (rows, cols) patch grid of that checkpoint's position embedding when it is not square,
    e.g. ``[16, 8]`` for HAP's 256x128 encoder (pretraining.md B.7: never guess a non-square grid; default: the
    square or plausible grid its token count gives); ``args``: extra keyword arguments of the entry point
    (``drop_path_rate``, ``decoder``, ...)."""

    name: str = "simplebaseline_tiny"
    skeleton: str = "coco17"
    input_size: tuple[int, int] | None = None
    weights: Path | None = must_exist()
    backbone_weights: Path | None = must_exist()
    backbone_grid: tuple[int, int] | None = None
    args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check ``name``, ``skeleton`` and ``args`` at load time, with errors that name the key."""
        from humanvision.models import check_model_args, check_model_choice

        check_model_choice(self.name, self.skeleton)
        check_model_args(self.name, self.args)


@dataclass
class DataConfig:
    """Where the data is and how it is cropped and augmented.

    ``source: coco`` reads ``train_ann``/``val_ann`` (COCO keypoint json) with images under ``*_images`` (default:
    the json's folder). ``source: mpii`` reads the mmpose MPII json layout and evaluates PCKh with the head boxes
    of ``val_gt`` (``mpii_gt_val.mat``, same person order as ``val_ann``). ``source: synthetic`` generates a COCO-format set of synthetic people into
    ``synthetic_dir`` the first time (``synthetic_train`` / ``synthetic_val`` images of ``synthetic_size``), with
    the scenes of ``synthetic_preset`` (:mod:`humanvision.data.synthetic.presets`: ``legacy``, ``coco``, ``h36m``,
    ``pedestrian``; both splits) and the photo backdrops of the ``synthetic_backgrounds`` folder.
    ``source: h36m`` reads the Human3.6M multi-view labels (``train_ann`` = ``val_ann`` = the ``.npy``, images under
    ``*_images`` = the ``processed/`` folder) as one sample per (frame, camera) with the 3D joints projected to 2D
    (:class:`~humanvision.data.readers.Human36MViews`): ``train_subjects`` / ``val_subjects``, every
    ``val_every``-th validation frame; evaluation is PCK@0.2 of the box size and the mean pixel error (what LT's
    2D backbone is fine-tuned on before triangulation).
    ``det_results``: a person-detection json for evaluation with detected boxes (else ground-truth boxes).
    ``cache_images``: keep every decoded training image in memory after its first use (per loader process), so
    later epochs skip the decoding; for small sets such as the synthetic one (12,000 256x256 images: 2.4 GB).
    """

    source: Literal["coco", "mpii", "synthetic", "h36m"] = "coco"
    train_ann: Path | None = must_exist()
    train_images: Path | None = must_exist()
    val_ann: Path | None = must_exist()
    val_images: Path | None = must_exist()
    val_gt: Path | None = must_exist()
    det_results: Path | None = must_exist()
    det_score_thr: float = 0.0
    synthetic_dir: Path = Path("data/synthetic_coco")
    synthetic_train: int = 1200
    synthetic_val: int = 200
    synthetic_size: tuple[int, int] = (256, 256)
    synthetic_seed: int = 0
    synthetic_preset: str = "legacy"
    synthetic_backgrounds: Path | None = must_exist()
    padding: float = 1.25
    augment: Literal["vitpose", "pct", "light", "flip", "none"] = "vitpose"
    sigma: float | None = None
    dark: bool = True
    cache_images: bool = False
    train_subjects: list[str] = field(default_factory=lambda: ["S1", "S5", "S6", "S7", "S8"])
    val_subjects: list[str] = field(default_factory=lambda: ["S9", "S11"])
    val_every: int = 1

    def __post_init__(self) -> None:
        """Check ``synthetic_preset`` at load time (the error names the key and lists the presets)."""
        if self.synthetic_preset != "legacy":
            from humanvision.data.synthetic.presets import check_preset

            check_preset(self.synthetic_preset, key="data.synthetic_preset")


@dataclass
class EvalConfig:
    """Inference protocol (pose2d.md §2.6, §4.1): flip test, rescoring threshold, OKS-NMS threshold.

    ``precision`` / ``channels_last``: as the engine's (``auto`` times the first batch in each setting and keeps
    the fastest; evaluation during training uses the training run's choice)."""

    flip_test: bool = True
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool | Literal["auto"] = "auto"
    batch_size: int = 32
    rescore_thr: float = 0.2
    nms_thr: float = 0.9
    use_area: bool = True
    num_vis: int = 8


@dataclass
class TopDownRecipe:
    name: str = "topdown"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ------------------------------------------------------------------------------------------------ the method
class TopDownPose(nn.Module):
    """Model + codec + loss. ``forward(batch)`` returns the losses; :meth:`predict` returns crop keypoints.

    The codec that makes the training targets is the one that decodes predictions, so the two cannot drift.
    """

    def __init__(self, model: nn.Module, codec, skeleton) -> None:
        super().__init__()
        self.model, self.codec = model, codec
        self.skeleton = get_skeleton(skeleton)
        # layer-wise lr decay: the model's layer ids (num_layers = their number), see humanvision.engine.optim
        self.num_layers = getattr(model, "num_layers", 1)

    def layer_id(self, name: str) -> int:
        inner = name.removeprefix("model.")
        return self.model.layer_id(inner) if hasattr(self.model, "layer_id") else 0

    def no_weight_decay(self) -> set[str]:
        names = self.model.no_weight_decay() if hasattr(self.model, "no_weight_decay") else set()
        return {f"model.{n}" for n in names}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pred = self.model(batch["image"])
        return {"loss": joints_mse_loss(pred, batch["heatmaps"], batch["keypoint_weights"])}

    @torch.no_grad()
    def predict(self, images: torch.Tensor, flip_test: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 3, H, W)`` normalised crops -> keypoints ``(B, K, 2)`` in crop pixels and scores ``(B, K)``."""
        heatmaps = self.model(images).float()
        if flip_test:
            flipped = self.model(images.flip(-1)).float()
            heatmaps = 0.5 * (heatmaps + self.codec.flip_heatmaps(flipped, self.skeleton.flip_index))
        return self.codec.decode_torch(heatmaps)


def joints_mse_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``mean(w^2 (P - T)^2)`` over all N*K*H*W, in fp32 (pose2d.md §2.4, ``use_target_weight=True``)."""
    w = weights.float()[..., None, None]
    return ((pred.float() - target.float()) * w).pow(2).mean()


def build_codec(model: nn.Module, data: DataConfig):
    cfg = model.default_cfg
    sigma = data.sigma if data.sigma is not None else cfg.get("sigma", 2.0)
    if cfg["udp"]:
        return UDPHeatmap(model.input_size, model.heatmap_size, sigma=sigma, dark=data.dark)
    return MSRAHeatmap(model.input_size, model.heatmap_size, sigma=sigma, unbiased=data.dark)


def build_method(recipe: TopDownRecipe, weights: str | Path | None = None) -> TopDownPose:
    """The model of the recipe (``weights`` overrides ``model.weights``), its codec and loss."""
    from humanvision.models import create_model

    m = recipe.model
    kwargs = dict(m.args)
    if m.input_size is not None:
        kwargs["input_size"] = tuple(m.input_size)
    w = weights if weights is not None else m.weights
    try:
        model = create_model(m.name, skeleton=m.skeleton, weights=None, **kwargs)
    except ConfigError:
        raise
    except ValueError as e:  # a constructor's own check of a value (e.g. an input size the patch size does not divide)
        raise ConfigError(f"model ({m.name}, args {kwargs}): {e}") from None
    method = TopDownPose(model, build_codec(model, recipe.data), m.skeleton)
    if w is not None:
        load_method_weights(method, w)
    elif m.backbone_weights is not None:
        init_backbone(model, m.backbone_weights, grid=m.backbone_grid)
    return method


def init_backbone(model: nn.Module, path: str | Path, grid: tuple[int, int] | None = None):
    """Initialise ``model.backbone`` from a pre-training checkpoint: a SimMIM-style Swin (PCT's Swin,
    :func:`~humanvision.models.pct_swin.load_swin_backbone`) or a timm-layout classification / MAE encoder
    (:func:`~humanvision.models.weights.load_backbone_weights`). Keys the backbone lacks or has in another shape
    are errors naming the key; the keys left out on purpose are reported on the log. Returns the
    :class:`~humanvision.models.weights.LoadReport`."""
    from humanvision.models.pct_swin import SwinV2TransformerRPE2FC, load_swin_backbone
    from humanvision.models.weights import load_backbone_weights

    if not Path(path).is_file():
        raise ConfigError(f"model.backbone_weights: file not found: {path}")
    if isinstance(getattr(model, "backbone", None), SwinV2TransformerRPE2FC):
        report = load_swin_backbone(model, path)
    else:
        report = load_backbone_weights(model, path, src_grid=grid)
    if int(os.environ.get("RANK", "0")) == 0:
        missing = f" ({', '.join(report.missing[:3])}{', ...' if len(report.missing) > 3 else ''})"
        print(f"backbone initialised from {path} ({report.layout}): {len(report.missing)} keys missing as "
              f"expected{missing if report.missing else ''}, {len(report.dropped)} keys of the file not used",
              flush=True)
    return report


def load_method_weights(method: TopDownPose, path: str | Path) -> None:
    """Load a run directory (its ``best/``, else ``last/``), a checkpoint directory, or a weights file (ours or an
    official ViTPose checkpoint). Checkpoint directories are resolved by the engine (including ``last.old``
    after an interrupted save)."""
    from safetensors.torch import load_file

    from humanvision.engine.checkpoint import weights_file

    path = weights_file(path)
    if path.suffix == ".safetensors":
        state = load_file(str(path))
        if any(k.startswith("model.") for k in state):  # a checkpoint of this method
            missing, unexpected = method.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ConfigError(f"weights {path}: missing keys {missing[:5]}, unexpected {unexpected[:5]}")
            return
    from humanvision.models.weights import load_weights

    load_weights(method.model, path)


def build_transform(method: TopDownPose, data: DataConfig, train: bool) -> TopDownTransform:
    model = method.model
    return TopDownTransform(model.input_size, method.skeleton, codec=method.codec if train else None, train=train,
                            udp=model.default_cfg["udp"], padding=data.padding, augment=AUGMENT[data.augment](),
                            mean=model.default_cfg["mean"], std=model.default_cfg["std"])


# ---------------------------------------------------------------------------------------------------- data
#: ``data.augment`` presets: the published ViTPose and PCT recipes, a light one (flip, centre shift, +-25% scale,
#: +-20 deg rotation half of the time, no half-body), horizontal flip only, and none.
AUGMENT = {
    "vitpose": TopDownAugment.vitpose,
    "pct": TopDownAugment.pct,
    "light": lambda: TopDownAugment(half_body_prob=0.0, scale_factor=0.25, rot_factor=20.0, rot_prob=0.5),
    "flip": lambda: TopDownAugment(shift_prob=0.0, half_body_prob=0.0, scale_factor=0.0, rot_prob=0.0),
    "none": TopDownAugment.none,
}


class TopDownDataset(Dataset):
    """One item per person: a reader sample (``keypoints_2d`` (1, K, 2), ``boxes`` (1, 4)) cropped by ``transform``.

    In training mode items are ``{image, heatmaps, keypoint_weights}``; in inference mode (no keypoints needed)
    ``{image, center, scale, box_score, index}``. Augmentation draws from numpy's global generator, which the
    engine seeds per (seed, epoch, index), so runs and resumes are reproducible.
    """

    def __init__(self, reader, transform: TopDownTransform, cache_images: bool = False) -> None:
        self.reader, self.transform = reader, transform
        self.cache: dict[Any, np.ndarray] | None = {} if cache_images else None

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.reader[index]
        image = self._image(s)
        record = f"{s.source}: image {s.image_id}" + (f" annotation {s.ann_ids[0]}" if s.ann_ids is not None else "")
        rng = np.random.default_rng(np.random.randint(0, 2**63 - 1, dtype=np.int64))
        box = s.boxes[0]
        if "scale" in s.meta and "center" in s.meta:  # MPII protocol (pose2d.md §4.2): centre moved down 15 s px
            box = box + np.array([0.0, 15.0 * float(s.meta["scale"][0]), 0.0, 0.0], dtype=box.dtype)
        if self.transform.train:
            img, target, _ = self.transform(image, s.keypoints_2d[0], s.visibility[0], box, rng=rng,
                                            record=record)
            return {"image": img, "heatmaps": target["heatmaps"], "keypoint_weights": target["keypoint_weights"]}
        img, _, meta = self.transform(image, bbox=box, record=record)
        score = float(s.scores[0]) if s.scores is not None else 1.0
        return {"image": img, "center": torch.from_numpy(meta["center"]), "scale": torch.from_numpy(meta["scale"]),
                "box_score": torch.tensor(score, dtype=torch.float64), "index": index}

    def _image(self, s) -> np.ndarray:
        if self.cache is None or s.image_id is None:
            return s.load_image()
        if s.image_id not in self.cache:
            self.cache[s.image_id] = s.load_image()
        return self.cache[s.image_id]


def prepare_synthetic(data: DataConfig, quiet: bool = False) -> DataConfig:
    """For ``source: synthetic``: write the COCO-format synthetic set once (a stamp file records its parameters,
    so a changed size, count or seed regenerates it) and point the ``train_*``/``val_*`` paths at it."""
    if data.source != "synthetic":
        return data
    from humanvision.data.synthetic.cache import write_once
    from humanvision.data.synthetic.presets import scene_config
    from humanvision.data.synthetic.writers import generate_coco

    root = Path(data.synthetic_dir)
    params = {"train": data.synthetic_train, "val": data.synthetic_val, "size": list(data.synthetic_size),
              "seed": data.synthetic_seed}
    config = None  # legacy: generate_coco's own default, as before presets
    if data.synthetic_preset != "legacy" or data.synthetic_backgrounds is not None:
        folder = data.synthetic_backgrounds
        if folder is not None and not Path(folder).is_dir():
            raise ConfigError(f"data.synthetic_backgrounds: folder not found: {folder}")
        config = scene_config(data.synthetic_preset, backgrounds=folder)
        params.update(preset=data.synthetic_preset, backgrounds=None if folder is None else str(folder))
    total = data.synthetic_train + data.synthetic_val
    write_once(root, params, lambda progress: generate_coco(
        root, {"train": data.synthetic_train, "val": data.synthetic_val}, size=tuple(data.synthetic_size),
        seed=data.synthetic_seed, config=config, progress=progress, workers=os.cpu_count() or 1),
        quiet=quiet, description=f"synthesising {total} images -> {root}")
    data.train_ann, data.train_images = root / "annotations/person_keypoints_train.json", root / "train"
    data.val_ann, data.val_images = root / "annotations/person_keypoints_val.json", root / "val"
    return data


def _require(data: DataConfig, *keys: str) -> None:
    for k in keys:
        if getattr(data, k) is None:
            raise ConfigError(f"data.{k}: required for this command (or use data.source: synthetic)")


def train_reader(data: DataConfig, skeleton: str):
    from humanvision.data.readers import CocoKeypoints, MpiiJson

    _require(data, "train_ann")
    if data.source == "mpii":
        return MpiiJson(data.train_ann, data.train_images, skeleton=skeleton)
    if data.source == "h36m":
        return _h36m_views(data, data.train_ann, data.train_images, data.train_subjects, 1, skeleton)
    return CocoKeypoints(data.train_ann, data.train_images, skeleton=skeleton, mode="instance")


def eval_reader(data: DataConfig, skeleton: str, det_results: str | Path | None = None):
    """Ground-truth boxes of ``val_ann`` or, with ``det_results``, detected boxes (all of them, pose2d.md §2.6)."""
    from humanvision.data.readers import CocoDetections, CocoKeypoints, MpiiJson

    _require(data, "val_ann")
    if data.source == "mpii":
        return MpiiJson(data.val_ann, data.val_images, skeleton=skeleton)
    if data.source == "h36m":
        if det_results is not None or data.det_results is not None:
            raise ConfigError("data.det_results: Human3.6M views are evaluated on their ground-truth boxes")
        return _h36m_views(data, data.val_ann, data.val_images, data.val_subjects, data.val_every, skeleton)
    dets = det_results if det_results is not None else data.det_results
    if dets is not None:
        return CocoDetections(dets, data.val_ann, data.val_images, skeleton=skeleton,
                              score_threshold=data.det_score_thr)
    return CocoKeypoints(data.val_ann, data.val_images, skeleton=skeleton, mode="instance", min_keypoints=1)


def _h36m_views(data: DataConfig, labels: Path, images: Path | None, subjects: list[str], every: int, skeleton: str):
    from humanvision.data.readers import Human36MViews

    if images is None:
        raise ConfigError("data.train_images / data.val_images: the Human3.6M processed/ folder is required")
    reader = Human36MViews(labels, images, subjects=subjects, every_n=every, skeleton=skeleton)
    if len(reader) == 0:
        raise ConfigError(f"data: no views of subjects {subjects} in {labels}")
    return reader


# ----------------------------------------------------------------------------------------------- inference
class CropPredictor:
    """Batches of normalised crops -> ``(keypoints (N, K, 2) in crop pixels, scores (N, K))``, numpy float64, in the
    precision and memory format measured on the first batch (``precision`` / ``channels_last`` ``"auto"``, see
    :func:`~humanvision.engine.precision.choose_for_inference`) or as configured; ``on_choice(choice)`` is called
    once it is known and :attr:`choice` keeps it. Crops go to the method's device (pinned CPU tensors are copied
    without blocking). Runs under ``torch.no_grad`` in the calling thread (the model thread of
    :func:`humanvision.runtime.pipeline.overlapped`)."""

    def __init__(self, method: TopDownPose, flip_test: bool = True, precision: str = "auto",
                 channels_last: bool | str = "auto", on_choice=None) -> None:
        self.method, self.flip_test, self.precision, self.channels_last = method, flip_test, precision, channels_last
        self.on_choice, self.choice = on_choice, None
        self.device = next(method.parameters()).device

    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        from humanvision.engine.precision import autocast, choose_for_inference

        images = images.to(self.device, non_blocking=True)
        with torch.no_grad():
            if self.choice is None:
                run = lambda x: self.method.predict(x, flip_test=self.flip_test)
                self.choice = choose_for_inference(self.method, run, images, self.precision, self.channels_last)
                if self.on_choice is not None:
                    self.on_choice(self.choice)
            if self.choice.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(images.device, self.choice.precision):
                kp, sc = self.method.predict(images, flip_test=self.flip_test)
        return kp.cpu().double().numpy(), sc.cpu().double().numpy()


@torch.no_grad()
def predict_boxes(method: TopDownPose, dataset: TopDownDataset, batch_size: int = 32, flip_test: bool = True,
                  num_workers: int = 0, device: torch.device | str = "cpu", progress: bool = False,
                  precision: str = "auto", channels_last: bool | str = "auto") -> dict[str, Any]:
    """Run the model on every box of ``dataset``: keypoints ``(M, K, 2)`` in image pixels, ``scores (M, K)``,
    ``box_scores (M,)``, ``areas (M,)`` (padded crop area, used by OKS-NMS), ``indices`` into the reader, and
    ``choice``, the :class:`~humanvision.engine.precision.PrecisionChoice` used (``auto``: measured on the
    first batch)."""
    device = torch.device(device)
    method.eval().to(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    udp, input_size = dataset.transform.udp, dataset.transform.input_size
    out: dict[str, list] = {"keypoints": [], "scores": [], "box_scores": [], "areas": [], "indices": []}
    it = loader
    if progress:
        from rich.progress import track

        it = track(loader, description="predicting", total=len(loader))
    predict = CropPredictor(method, flip_test, precision, channels_last)
    for batch in it:
        kp, sc = predict(batch["image"])
        center, scale = batch["center"].numpy(), batch["scale"].numpy()
        out["keypoints"].append(keypoints_to_image(kp, center, scale, input_size, udp))
        out["scores"].append(sc)
        out["box_scores"].append(batch["box_score"].numpy())
        out["areas"].append(scale.prod(axis=1))
        out["indices"].append(np.asarray(batch["index"]))
    k = method.skeleton.num_joints
    empty = {"keypoints": (0, k, 2), "scores": (0, k), "box_scores": (0,), "areas": (0,), "indices": (0,)}
    result: dict[str, Any] = {key: np.concatenate(v) if v else np.zeros(empty[key]) for key, v in out.items()}
    result["choice"] = predict.choice
    return result


def to_coco_results(pred: dict[str, np.ndarray], image_ids: list, skeleton, rescore_thr: float = 0.2,
                    nms_thr: float | None = 0.9) -> list[dict]:
    """Rescore (box score x mean keypoint score above ``rescore_thr``), OKS-NMS per image, COCO result records."""
    from humanvision.metrics.nms import oks_nms_by_image, rescore_poses

    sk = get_skeleton(skeleton)
    scores = rescore_poses(pred["box_scores"], pred["scores"], thr=rescore_thr)
    keep = np.arange(len(scores))
    if nms_thr is not None and len(scores):
        keep = oks_nms_by_image(np.asarray(image_ids), pred["keypoints"], scores, pred["areas"], thr=nms_thr,
                                sigmas=sk.sigmas_array if sk.sigmas is not None else None, skeleton=sk)
    results = []
    for i in keep:
        kps = np.concatenate([pred["keypoints"][i], pred["scores"][i][:, None]], axis=1)
        iid = image_ids[i]
        results.append({"image_id": iid.item() if hasattr(iid, "item") else iid, "category_id": 1,
                        "keypoints": [round(float(v), 3) for v in kps.reshape(-1)], "score": float(scores[i])})
    return results


def evaluate_topdown(method: TopDownPose, recipe: TopDownRecipe, out_dir: str | Path | None = None,
                     det_results: str | Path | None = None, device: str | torch.device = "cpu",
                     progress: bool = False, precision: tuple[str, bool | str] | None = None) -> dict[str, Any]:
    """COCO AP/AR (and PCK@0.2 of the box size with ground-truth boxes) on the validation set.

    Writes ``results.json`` (COCO result format) and ``metrics.json`` to ``out_dir`` when given, and returns the
    metrics (``AP``, ``AP50``, ..., ``PCK@0.2``, counts, and ``precision``, the setting inference ran in).
    ``precision``: ``(precision, channels_last)`` overriding ``recipe.eval``'s (e.g. a training run's choice).
    """
    sk = method.skeleton
    reader = eval_reader(recipe.data, sk.name, det_results)
    dataset = TopDownDataset(reader, build_transform(method, recipe.data, train=False))
    prec, cl = precision if precision is not None else (recipe.eval.precision, recipe.eval.channels_last)
    pred = predict_boxes(method, dataset, recipe.eval.batch_size, recipe.eval.flip_test, device=device,
                         progress=progress, precision=prec, channels_last=cl)
    if recipe.data.source == "mpii":
        return _evaluate_mpii(pred, recipe, out_dir)
    if recipe.data.source == "h36m":
        return _evaluate_views(pred, reader, out_dir)
    return coco_metrics(pred, reader, sk, recipe.eval, recipe.data.val_ann, out_dir,
                        extra={"precision": pred["choice"].label})


def coco_metrics(pred: dict[str, Any], reader, skeleton, eval_cfg: EvalConfig, val_ann: str | Path,
                 out_dir: str | Path | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Rescoring, OKS-NMS and COCO AP/AR (pose2d.md §4.1) of image-space predictions for ``reader``'s boxes
    (:func:`predict_boxes`' layout), PCK@0.2 of the box size with ground-truth boxes, ``extra`` entries;
    ``results.json`` and ``metrics.json`` in ``out_dir`` when given."""
    from humanvision.metrics.coco import evaluate_coco_keypoints
    from humanvision.metrics.pck import bbox_size_norm, keypoint_pck

    sk = get_skeleton(skeleton)
    image_ids = [reader.image_ids[int(reader.owner[int(i)])] for i in pred["indices"]]  # no Sample per box
    results = to_coco_results(pred, image_ids, sk, eval_cfg.rescore_thr, eval_cfg.nms_thr)
    if not results:
        raise DataError("no predictions to evaluate (no boxes?)", file=str(val_ann))
    coco = evaluate_coco_keypoints(str(val_ann), results, skeleton=sk, use_area=eval_cfg.use_area)
    metrics: dict[str, Any] = {k: float(v) for k, v in coco.stats.items()}
    metrics.update({f"num_{k}": v for k, v in coco.counts().items()})
    metrics.update(extra or {})
    if hasattr(reader, "keypoints"):  # ground-truth boxes: PCK against the annotation of each box
        idx = pred["indices"].astype(int)
        gt, vis, boxes = reader.keypoints[idx], reader.flags[idx] > 0, reader.boxes[idx]
        pck = keypoint_pck(pred["keypoints"], gt, bbox_size_norm(boxes), mask=vis, thr=0.2)
        metrics["PCK@0.2"] = float(pck.pck)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _evaluate_views(pred: dict[str, Any], reader, out_dir: str | Path | None) -> dict[str, Any]:
    """Ground-truth-box views with projected joints (``source: h36m``): PCK@0.2 / @0.05 of the box size (%), the
    mean pixel error of the visible joints, and their count."""
    from humanvision.metrics.pck import bbox_size_norm, keypoint_pck

    idx = pred["indices"].astype(int)
    gt, vis, boxes = reader.keypoints[idx], reader.flags[idx] > 0, reader.boxes[idx]
    err = np.linalg.norm(pred["keypoints"] - gt, axis=-1)
    metrics: dict[str, Any] = {
        f"PCK@{t}": float(keypoint_pck(pred["keypoints"], gt, bbox_size_norm(boxes), mask=vis, thr=t).pck)
        for t in (0.2, 0.05)}
    metrics.update(mean_error_px=float(err[vis].mean()) if vis.any() else float("nan"), num_views=len(idx),
                   precision=pred["choice"].label)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "pred_keypoints.npy", pred["keypoints"][np.argsort(idx)])
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _evaluate_mpii(pred: dict[str, np.ndarray], recipe: TopDownRecipe, out_dir: str | Path | None) -> dict[str, Any]:
    """MPII PCKh@0.5 (pose2d.md §4.2): predictions +1 (1-based) against ``val_gt``'s joints and head boxes."""
    from humanvision.metrics.pck import mpii_pckh, read_mpii_gt

    _require(recipe.data, "val_gt")
    gt = read_mpii_gt(recipe.data.val_gt)
    order = np.argsort(pred["indices"])
    kp = pred["keypoints"][order] + 1.0
    if len(kp) != len(gt):
        raise DataError(f"{len(kp)} predictions for {len(gt)} people", file=str(recipe.data.val_gt))
    res = mpii_pckh(kp, gt.joints, gt.headboxes, gt.visible, thr=0.5)
    metrics: dict[str, Any] = {"PCKh@0.5": float(res.mean), **{f"PCKh_{k}": float(v) for k, v in res.groups.items()},
                               "PCKh@0.1": float(res.mean_at_0_1), "num_people": len(kp)}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "pred_1based.npy", kp)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
