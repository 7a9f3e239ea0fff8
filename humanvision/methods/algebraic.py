"""Learnable Triangulation, the **algebraic** method (Iskakov et al., "Learnable Triangulation of Human Pose",
ICCV 2019), readable top to bottom. Written from pose3d.md §1.5, §2.1-§2.3, §2.5-§2.6 and §4.1 (seed:
karfly/learnable-triangulation-pytorch); no code is taken from it.

Per multi-view frame (V calibrated views of one person, Human3.6M world millimetres):

1. **Crops** (:class:`MultiViewCrops`, §1.5): each view is cropped to its ground-truth box (square, scaled by
   ``bbox_scale``, zero-padded outside the image), resized to ``input_size`` (``cv2.INTER_AREA``) and normalised
   with the ImageNet statistics. The view's camera follows the crop (``c -= (left, top)``) and the resize (``f, c *=
   new / old``), :func:`~humanvision.geometry.camera.update_after_crop` /
   :func:`~humanvision.geometry.camera.update_after_resize` conventions, so ``P = K [R | t]`` maps world points
   to crop pixels. A missing view (a ``(0, 0, 0, 0)`` box) is kept as a black image with ``view_mask = False``:
   it gets weight 0 in the triangulation, so a batch never has to drop a camera.
2. **2D network** (§2.1): a SimpleBaseline from the model registry (``model.backbone``, LT: ResNet-152 at 384²)
   gives heatmaps ``(J, H/4, W/4)`` and its deepest features ``(C, H/32, W/32)``.
3. **Soft-argmax** (§2.2, :func:`~humanvision.codecs.integral.soft_argmax_2d`): ``softmax(100 * H_j)`` over the
   map, expected (column, row) cell index, times ``input / heatmap`` (4): crop pixels, no half-pixel offset (the
   camera update has none either).
4. **Confidences** (§2.3, ``use_confidences``): :class:`ConfidenceHead` (the GAP head on the deepest features) gives
   one sigmoid per joint and view, normalised over the available views, plus ``1e-5``:
   ``w_cj = sigmoid_cj / sum_c sigmoid_cj + 1e-5``. Without confidences every available view has weight 1.
5. **Weighted DLT** (§2.3, :func:`~humanvision.geometry.triangulation.triangulate_dlt`): for each joint the rows
   ``w_c (u_c P_c^3 - P_c^1)``, ``w_c (v_c P_c^3 - P_c^2)`` of all views, one batched SVD over ``(B, J)`` in float64;
   the gradient flows through the SVD to the 2D points and the confidences.
6. **Loss** (§2.5, :func:`mse_smooth_loss`): MSESmooth on the world coordinates times ``scale_keypoints_3d = 0.1``
   (cm), threshold ``400`` (cm², a 20 cm error per coordinate): ``d = m (x_hat - x)^2``, ``d <- d^0.1 tau^0.9``
   where ``d > tau``, ``L = sum d / (3 max(1, sum m))``.

Evaluation (§4.1, :func:`evaluate_algebraic`): MPJPE relative to the pelvis (joint 6 of ``h36m17``, the number LT
reports) and absolute, frame-weighted, per action (trials merged) and per subject, with the frame count. Two
baselines run on the **same heatmaps**: the unweighted DLT of each view's heatmap argmax, and the RANSAC
triangulation of the argmax (:func:`~humanvision.geometry.triangulation.triangulate_ransac`; every view pair is a
hypothesis instead of LT's 10 random draws, a view is an inlier when its reprojection error is below
``eval.ransac_threshold`` crop pixels, LT's ``0.5 ||d|| < 15`` at 384² is 30, then a Gauss-Newton refinement on the
inliers instead of LT's Huber least squares).

Training (:func:`run_training`): the engine's loop; one epoch is ``data.objects_per_epoch`` frames drawn afresh
each epoch (LT's ``n_objects_per_epoch``; ``null``: the whole set). The recipe is :class:`AlgebraicRecipe`
(``configs/lt_algebraic_*.yaml``); ``data.source: synthetic`` writes a Human3.6M-layout synthetic set first.

Differences from the seed, on purpose: images are RGB by default (``data.bgr: true`` feeds BGR, as LT's
pretrained 2D network expects, §9); boxes are squared on the longer side before scaling (the Human3.6M labels are
already square, so the crops are LT's); missing views are masked instead of shrinking the batch's view count.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from humanvision.codecs.integral import soft_argmax_2d
from humanvision.config import must_exist
from humanvision.engine import TrainConfig
from humanvision.engine.distributed import ResumableSampler, sample_seeds
from humanvision.errors import ConfigError, DataError
from humanvision.geometry.triangulation import triangulate_dlt, triangulate_ransac
from humanvision.runtime.multiview import crop_image  # torch-free: the deployed runtime crops the same way

__all__ = [
    "ROOT",
    "AlgebraicRecipe",
    "AlgebraicTriangulation",
    "ConfidenceHead",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "MultiViewCrops",
    "ObjectsPerEpochSampler",
    "algebraic_triangulation",
    "build_datasets",
    "build_method",
    "crop_image",
    "evaluate_algebraic",
    "heatmap_argmax",
    "is_algebraic_recipe",
    "load_recipe",
    "load_weights_into",
    "mpjpe_report",
    "mse_smooth_loss",
    "normalize_confidences",
    "prepare_synthetic",
    "run_training",
    "square_box",
]

SKELETON = "h36m17"  # LT's Human3.6M-17 order (pose3d.md §0)
ROOT = 6  # pelvis


# ----------------------------------------------------------------------------------------------- the recipe
@dataclass
class ModelConfig:
    """``backbone``: a registered heatmap model with ``forward_features`` / ``forward_head`` (a SimpleBaseline:
    ``simplebaseline_tiny``, ``simplebaseline_resnet50`` with ``args: {backbone: resnet152}`` for LT's ResNet-152);
    ``input_size``: the square crop side (a multiple of 32); ``args``: extra keyword arguments of the entry point;
    ``use_confidences``: the learnt per-view weights (LT ``alg``) or all ones (``alg_no_conf``);
    ``heatmap_multiplier``: the soft-argmax inverse temperature (100); ``confidence_channels``: the two conv widths
    of the GAP head (LT 512, 256; its FC layers are ``c2 -> 2 c2 -> c2 -> J``); ``weights``: initial weights, a
    2D model (``.safetensors`` of ours or anything :func:`humanvision.models.weights.load_weights` reads, or a
    top-down run / checkpoint folder) or a run of this method (see :func:`load_weights_into`)."""

    backbone: str = "simplebaseline_resnet50"
    skeleton: str = SKELETON
    input_size: int = 384
    args: dict[str, Any] = field(default_factory=dict)
    use_confidences: bool = True
    heatmap_multiplier: float = 100.0
    confidence_channels: tuple[int, int] = (512, 256)
    weights: Path | None = must_exist()

    def __post_init__(self) -> None:
        from humanvision.models import check_model_args, check_model_choice
        from humanvision.skeletons import get_skeleton

        check_model_choice(self.backbone, self.skeleton, name_key="model.backbone")
        check_model_args(self.backbone, self.args)
        if "input_size" in self.args:
            raise ConfigError("model.args.input_size: set the crop size with model.input_size")
        if get_skeleton(self.skeleton).name != SKELETON:
            raise ConfigError(f"model.skeleton: the Human3.6M labels and the pelvis-relative MPJPE use the "
                              f"{SKELETON} order; got {self.skeleton!r}")
        if self.input_size < 32 or self.input_size % 32:
            raise ConfigError(f"model.input_size: a multiple of 32 (the backbone's stride), got {self.input_size}")
        if not self.heatmap_multiplier > 0:
            raise ConfigError(f"model.heatmap_multiplier: must be > 0, got {self.heatmap_multiplier}")
        if len(self.confidence_channels) != 2 or min(self.confidence_channels) < 1:
            raise ConfigError(f"model.confidence_channels: two positive widths, got {self.confidence_channels}")


@dataclass
class DataConfig:
    """``source: h36m`` reads the learnable-triangulation labels (``labels``) and the ``processed/`` images
    (``root``); ``source: synthetic`` first writes a Human3.6M-layout synthetic set into ``synthetic_dir`` (once; a
    stamp records its parameters) with ``synthetic_subjects`` subjects, ``synthetic_actions`` actions, and points
    ``labels`` / ``root`` at it. ``train_subjects`` / ``val_subjects`` split it (LT: S1, S5, S6, S7, S8 / S9, S11).
    ``undistorted``: read ``imageSequence-undistorted`` (LT). ``with_damaged_actions``: keep S9's misaligned
    sequences (every LT config does). ``*_every``: keep every n-th frame. ``min_views``: drop frames with fewer
    available views. ``bbox_scale``: crop side = scale x the box's longer side (LT 1.0). ``bgr``: feed BGR images
    (LT's pretrained 2D network). ``objects_per_epoch``: frames per training epoch (LT 15000; ``null``: all).
    ``cache_images``: keep the decoded crops of every frame in memory after its first use (small sets only)."""

    source: Literal["h36m", "synthetic"] = "h36m"
    labels: Path | None = must_exist()
    root: Path | None = must_exist()
    train_subjects: tuple[str, ...] = ("S1", "S5", "S6", "S7", "S8")
    val_subjects: tuple[str, ...] = ("S9", "S11")
    undistorted: bool = True
    with_damaged_actions: bool = True
    train_every: int = 1
    val_every: int = 1
    min_views: int = 2
    bbox_scale: float = 1.0
    bgr: bool = False
    objects_per_epoch: int | None = None
    cache_images: bool = False
    synthetic_dir: Path = Path("data/synthetic_h36m")
    synthetic_frames: int = 400
    synthetic_size: tuple[int, int] = (256, 256)
    synthetic_views: int = 4
    synthetic_subjects: int = 2
    synthetic_actions: int = 2
    synthetic_seed: int = 0

    def __post_init__(self) -> None:
        for key in ("train_every", "val_every", "synthetic_frames", "synthetic_subjects", "synthetic_actions"):
            if getattr(self, key) < 1:
                raise ConfigError(f"data.{key}: must be >= 1, got {getattr(self, key)}")
        if self.min_views < 2:
            raise ConfigError(f"data.min_views: triangulation needs at least 2 views, got {self.min_views}")
        if self.synthetic_views < 2:
            raise ConfigError(f"data.synthetic_views: triangulation needs at least 2 views, got "
                              f"{self.synthetic_views}")
        if not self.bbox_scale > 0:
            raise ConfigError(f"data.bbox_scale: must be > 0, got {self.bbox_scale}")
        if self.objects_per_epoch is not None and self.objects_per_epoch < 1:
            raise ConfigError(f"data.objects_per_epoch: must be >= 1 or null, got {self.objects_per_epoch}")
        if not self.train_subjects:
            raise ConfigError("data.train_subjects: at least one subject")


@dataclass
class LossConfig:
    """MSESmooth (§2.5): ``threshold`` tau in the loss units squared (400 cm²) and ``scale_keypoints_3d``, the
    factor from millimetres to the loss units (0.1: cm)."""

    threshold: float = 400.0
    scale_keypoints_3d: float = 0.1

    def __post_init__(self) -> None:
        for key in ("threshold", "scale_keypoints_3d"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"loss.{key}: must be > 0, got {getattr(self, key)}")


@dataclass
class EvalConfig:
    """``batch_size``; ``baselines``: also evaluate the argmax DLT and RANSAC baselines on the same heatmaps;
    ``ransac_threshold``: inlier reprojection error in crop pixels (LT: ``0.5 ||d|| < 15`` at 384², i.e. 30);
    ``ransac_refine``: Gauss-Newton refinement on the inliers."""

    batch_size: int = 16
    baselines: bool = True
    ransac_threshold: float = 30.0
    ransac_refine: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"eval.batch_size: must be >= 1, got {self.batch_size}")
        if not self.ransac_threshold > 0:
            raise ConfigError(f"eval.ransac_threshold: must be > 0, got {self.ransac_threshold}")


@dataclass
class AlgebraicRecipe:
    """``triangulation: algebraic`` marks the recipe (:func:`is_algebraic_recipe`)."""

    name: str = "lt_algebraic"
    triangulation: Literal["algebraic"] = "algebraic"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.triangulation != "algebraic":
            raise ConfigError(f"triangulation: expected 'algebraic', got {self.triangulation!r}")


def is_algebraic_recipe(source: Any) -> bool:
    """True for an :class:`AlgebraicRecipe`, or a mapping / YAML file with ``triangulation: algebraic``."""
    from humanvision.config import recipe_mapping

    return isinstance(source, AlgebraicRecipe) or recipe_mapping(source).get("triangulation") == "algebraic"


def load_recipe(path: str | Path | dict, overrides: Sequence[str] = (), unchecked: tuple[str, ...] = ()
                ) -> AlgebraicRecipe:
    """Load and validate a ``configs/lt_algebraic_*.yaml`` recipe (errors name the key)."""
    from humanvision.config import load_config

    return load_config(path, AlgebraicRecipe, list(overrides), unchecked=unchecked)


# ------------------------------------------------------------------------------------- heatmaps -> 2D -> 3D
def heatmap_argmax(heatmaps: torch.Tensor) -> torch.Tensor:
    """``(..., H, W)`` -> integer argmax ``(..., 2)`` as (column, row) cell indices (float)."""
    w = heatmaps.shape[-1]
    idx = heatmaps.flatten(-2).argmax(-1)
    return torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], -1).to(torch.float32)


def normalize_confidences(raw: torch.Tensor, view_mask: torch.Tensor | None = None, eps: float = 1e-5
                          ) -> torch.Tensor:
    """§2.3: per-view sigmoid outputs ``(B, V, J)`` -> ``raw / sum over available views + eps``; views outside
    ``view_mask (B, V)`` get exactly 0 (the DLT then ignores them)."""
    if view_mask is None:
        return raw / raw.sum(1, keepdim=True) + eps
    m = view_mask.to(raw.dtype)[..., None]
    raw = raw * m
    return (raw / raw.sum(1, keepdim=True).clamp_min(1e-12) + eps) * m


def algebraic_triangulation(proj: torch.Tensor, points_2d: torch.Tensor, weights: torch.Tensor | None = None
                            ) -> torch.Tensor:
    """The batched, differentiable, confidence-weighted DLT (§2.3) in float64: ``proj (B, V, 3, 4)``,
    ``points_2d (B, V, J, 2)`` in the pixels of ``proj``, ``weights (B, V, J)`` (None: 1) -> ``(B, J, 3)`` float64.

    A thin wrapper of :func:`~humanvision.geometry.triangulation.triangulate_dlt` (one SVD of shape
    ``(B, J, 2V, 4)``, the right singular vector of the smallest singular value), outside any autocast region."""
    with torch.autocast(points_2d.device.type, enabled=False):
        w = None if weights is None else weights.double()
        return triangulate_dlt(proj.double(), points_2d.double(), w)


def mse_smooth_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
                    threshold: float = 400.0) -> torch.Tensor:
    """LT's ``MSESmooth`` (§2.5) on ``(B, J, 3)`` points already in the loss units (cm) with ``valid (B, J)``.

    Per coordinate ``d = m (x_hat - x)^2``; where ``d > tau``: ``d <- d^0.1 tau^0.9`` (continuous at ``tau``,
    sub-quadratic beyond); ``L = sum d / (3 max(1, sum m))``."""
    pred, target = pred.double(), target.double()
    m = torch.ones(pred.shape[:-1], dtype=pred.dtype, device=pred.device) if valid is None else valid.to(pred.dtype)
    d = m[..., None] * (pred - target) ** 2
    tau = float(threshold)
    d = torch.where(d > tau, d.clamp_min(tau) ** 0.1 * tau ** 0.9, d)
    return d.sum() / (3.0 * m.sum().clamp_min(1.0))


# ------------------------------------------------------------------------------------------------- the model
class ConfidenceHead(nn.Module):
    """LT's ``GlobalAveragePoolingHead`` (§2.1): ``Conv3x3(C -> c1) + BN + MaxPool2 + ReLU -> Conv3x3(c1 -> c2) +
    BN + MaxPool2 + ReLU -> spatial mean -> FC c2 -> 2 c2 -> ReLU -> FC 2 c2 -> c2 -> ReLU -> FC c2 -> n ->
    sigmoid``; ``(B, C, h, w)`` -> ``(B, n)`` in (0, 1). LT: C = 2048, (c1, c2) = (512, 256), n = J."""

    def __init__(self, in_channels: int, num_outputs: int, channels: tuple[int, int] = (512, 256)) -> None:
        super().__init__()
        c1, c2 = (int(c) for c in channels)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.MaxPool2d(2), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.MaxPool2d(2), nn.ReLU(inplace=True))
        self.fc = nn.Sequential(nn.Linear(c2, 2 * c2), nn.ReLU(inplace=True), nn.Linear(2 * c2, c2),
                                nn.ReLU(inplace=True), nn.Linear(c2, num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h < 4 or w < 4:
            raise ValueError(f"ConfidenceHead: features {h}x{w} are too small for two 2x max-pools; use a larger "
                             "input_size")
        return torch.sigmoid(self.fc(self.features(x).mean((-2, -1))))


class AlgebraicTriangulation(nn.Module):
    """2D network + confidence head + weighted DLT + MSESmooth loss. ``forward(batch)`` returns the engine's loss
    dict; :meth:`predict` the 3D joints and everything on the way.

    The batch (what :class:`MultiViewCrops` yields, collated): ``images (B, V, 3, S, S)``, ``proj (B, V, 3, 4)``
    crop-frame projection matrices (float64), ``view_mask (B, V)``, ``keypoints_3d (B, J, 3)`` world mm,
    ``keypoints_3d_valid (B, J)``.
    """

    def __init__(self, backbone: nn.Module, *, use_confidences: bool = True, heatmap_multiplier: float = 100.0,
                 confidence_channels: tuple[int, int] = (512, 256), loss_threshold: float = 400.0,
                 scale_keypoints_3d: float = 0.1) -> None:
        super().__init__()
        for attr in ("forward_features", "forward_head", "input_size", "heatmap_size", "num_joints"):
            if not hasattr(backbone, attr):
                raise ConfigError(f"model.backbone: {type(backbone).__name__} has no {attr}; use a heatmap model "
                                  "such as a SimpleBaseline")
        self.backbone = backbone
        self.num_joints = int(backbone.num_joints)
        self.use_confidences = bool(use_confidences)
        self.heatmap_multiplier = float(heatmap_multiplier)
        self.loss_threshold, self.scale_keypoints_3d = float(loss_threshold), float(scale_keypoints_3d)
        (in_w, in_h), (hm_w, hm_h) = backbone.input_size, backbone.heatmap_size
        self.stride = (in_w / hm_w, in_h / hm_h)  # heatmap cell -> crop pixel, x 4 (§2.2)
        self.confidence_head = None
        if self.use_confidences:
            channels = getattr(backbone, "num_features", None) or getattr(getattr(backbone, "backbone", None),
                                                                          "num_features", None)
            if not channels:
                raise ConfigError(f"model.backbone: cannot tell the channels of {type(backbone).__name__}'s "
                                  "deepest features (no num_features) for the confidence head")
            self.confidence_head = ConfidenceHead(channels, self.num_joints, confidence_channels)

    def no_weight_decay(self) -> set[str]:
        return {n for n, p in self.named_parameters() if p.ndim <= 1}

    def predict(self, images: torch.Tensor, proj: torch.Tensor, view_mask: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        """``images (B, V, 3, S, S)``, ``proj (B, V, 3, 4)``, ``view_mask (B, V)`` (None: all views) ->
        ``heatmaps (B, V, J, h, w)``, ``keypoints_2d (B, V, J, 2)`` soft-argmax in crop pixels, ``confidences
        (B, V, J)`` (the DLT weights), ``keypoints_3d (B, J, 3)`` float64 world. Differentiable; the caller
        chooses ``no_grad``."""
        if images.ndim != 5:
            raise DataError(f"expected images (B, V, 3, H, W), got {tuple(images.shape)}", field="images")
        b, v = images.shape[:2]
        if view_mask is None:
            view_mask = torch.ones(b, v, dtype=torch.bool, device=images.device)
        features = self.backbone.forward_features(images.flatten(0, 1))
        heatmaps = self.backbone.forward_head(features)
        raw = None if self.confidence_head is None else self.confidence_head(features)
        with torch.autocast(images.device.type, enabled=False):  # soft-argmax x 100 and the DLT in fp32 / fp64
            hm = heatmaps.float().unflatten(0, (b, v))  # (B, V, J, h, w)
            cells, _ = soft_argmax_2d(hm, self.heatmap_multiplier)
            points_2d = cells * cells.new_tensor(self.stride)
            if raw is not None:
                weights = normalize_confidences(raw.float().unflatten(0, (b, v)), view_mask)
            else:
                weights = view_mask.to(points_2d.dtype)[..., None].expand(b, v, self.num_joints)
            points_3d = algebraic_triangulation(proj, points_2d, weights)
        return {"heatmaps": hm, "keypoints_2d": points_2d, "confidences": weights, "keypoints_3d": points_3d}

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = self.predict(batch["images"], batch["proj"], batch.get("view_mask"))
        pred, gt = out["keypoints_3d"], batch["keypoints_3d"].double()
        valid = batch.get("keypoints_3d_valid")
        s = self.scale_keypoints_3d
        loss = mse_smooth_loss(pred * s, gt * s, valid, self.loss_threshold)
        with torch.no_grad():
            err = torch.linalg.vector_norm(pred - gt, dim=-1)  # mm
            rel = torch.linalg.vector_norm((pred - pred[:, ROOT:ROOT + 1]) - (gt - gt[:, ROOT:ROOT + 1]), dim=-1)
        return {"loss": loss.float(), "mpjpe_absolute": err.mean().float(), "mpjpe_relative": rel.mean().float()}


def load_weights_into(method: AlgebraicTriangulation, path: str | Path) -> None:
    """Initialise from ``path``: a run or checkpoint folder (``best/``, else ``last/``) or a ``.safetensors`` file.

    * A checkpoint of this method (keys ``backbone.*``): loaded whole; only ``confidence_head.*`` may be missing or
      left over (e.g. an ``alg_no_conf`` run starting an ``alg`` one).
    * A top-down run (keys ``model.*``, :class:`~humanvision.methods.topdown.TopDownPose`): its 2D network.
    * Anything else: :func:`humanvision.models.weights.load_weights` into the 2D network (our weights files with
      their sidecar, official checkpoints it knows).
    Mismatches are :class:`ConfigError` naming ``model.weights``."""
    from safetensors.torch import load_file

    from humanvision.engine.checkpoint import weights_file

    path = weights_file(path, "model.weights")
    if path.suffix == ".safetensors":
        state = load_file(str(path))
        if any(k.startswith("backbone.") for k in state) and not any(k.startswith("model.") for k in state):
            try:
                missing, unexpected = method.load_state_dict(state, strict=False)
            except RuntimeError as e:  # shape mismatch
                raise ConfigError(f"model.weights {path}: {e}") from None
            bad = [k for k in [*missing, *unexpected] if not k.startswith("confidence_head.")]
            if bad:
                raise ConfigError(f"model.weights {path}: keys that do not match this model: {bad[:5]}")
            return
        if any(k.startswith("model.") for k in state):
            state = {k.removeprefix("model."): t for k, t in state.items() if k.startswith("model.")}
            try:
                method.backbone.load_state_dict(state)
            except RuntimeError as e:
                raise ConfigError(f"model.weights {path}: {e}") from None
            return
    from humanvision.models.weights import load_weights

    load_weights(method.backbone, path)


def build_method(recipe: AlgebraicRecipe, weights: str | Path | None = None) -> AlgebraicTriangulation:
    """The recipe's 2D network (from the registry), confidence head and loss, initialised from ``weights``
    (default ``model.weights``)."""
    from humanvision.models import create_model

    m = recipe.model
    try:
        backbone = create_model(m.backbone, skeleton=m.skeleton, input_size=(m.input_size, m.input_size), **m.args)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"model ({m.backbone}, args {m.args}): {e}") from None
    method = AlgebraicTriangulation(backbone, use_confidences=m.use_confidences,
                                    heatmap_multiplier=m.heatmap_multiplier,
                                    confidence_channels=tuple(m.confidence_channels),
                                    loss_threshold=recipe.loss.threshold,
                                    scale_keypoints_3d=recipe.loss.scale_keypoints_3d)
    w = weights if weights is not None else m.weights
    if w is not None:
        load_weights_into(method, w)
    return method


def export_onnx(recipe: AlgebraicRecipe, weights: str | Path, out: str | Path, **kwargs: Any):
    """``humanvision export`` of an algebraic recipe: the trained per-view network (heatmaps, confidences) as ONNX
    with the crop and triangulation contract (``data.bbox_scale``, ``data.bgr``), read by
    :class:`humanvision.runtime.MultiViewTriangulator`. ``kwargs``: those of
    :func:`humanvision.export.export_algebraic_onnx`."""
    from humanvision.export import export_algebraic_onnx

    return export_algebraic_onnx(build_method(recipe, weights), out, bbox_scale=recipe.data.bbox_scale,
                                 bgr=recipe.data.bgr, recipe=recipe.name, weights=weights, **kwargs)


# ------------------------------------------------------------------------------------------------------ data
def square_box(tlbr: Sequence[int], scale: float = 1.0) -> tuple[int, int, int, int]:
    """A Human3.6M ``(top, left, bottom, right)`` box -> the square ``(left, top, right, bottom)`` crop of side
    ``int(scale * longer side)`` about the box's integer centre (LT's ``scale_bbox``: integer arithmetic, a no-op
    for the square boxes of the labels at scale 1)."""
    top, left, bottom, right = (int(v) for v in tlbr)
    side = int(scale * max(right - left, bottom - top))
    cx, cy = (left + right) // 2, (top + bottom) // 2
    x0, y0 = cx - side // 2, cy - side // 2
    return x0, y0, x0 + side, y0 + side


class MultiViewCrops(Dataset):
    """A :class:`~humanvision.data.readers.Human36MMultiView` reader -> the method's batch items (§1.5).

    Items: ``images (V, 3, S, S)`` float32 (every camera of the labels, in their order; a missing view is zeros),
    ``proj (V, 3, 4)`` float64 ``K [R | t]`` in crop pixels, ``view_mask (V,)`` bool, ``keypoints_3d (J, 3)``
    float64 world mm, ``keypoints_3d_valid (J,)``, ``index``. No augmentation (LT has none on Human3.6M).
    ``subjects`` / ``actions`` give each item's labels for the per-action and per-subject tables.
    """

    def __init__(self, reader, input_size: int, *, bbox_scale: float = 1.0, bgr: bool = False,
                 cache_images: bool = False) -> None:
        self.reader, self.input_size = reader, int(input_size)
        self.bbox_scale, self.bgr = float(bbox_scale), bool(bgr)
        self.cache: dict[int, tuple[torch.Tensor, np.ndarray]] | None = {} if cache_images else None
        self.camera_index = {name: c for c, name in enumerate(reader.camera_names)}

    def __len__(self) -> int:
        return len(self.reader)

    @property
    def subjects(self) -> list[str]:
        return [self.reader.subject_names[int(s)] for s in self.reader.subject_idx]

    @property
    def actions(self) -> list[str]:
        return [self.reader.action_names[int(a)] for a in self.reader.action_idx]

    def crop_view(self, view) -> tuple[torch.Tensor, np.ndarray]:
        """One view (a reader ``Sample``) -> normalised crop ``(3, S, S)`` and its ``P`` (3, 4) in crop pixels."""
        import cv2

        from humanvision.data.transforms import normalize_image

        record = f"{view.source}: {view.image_id}"
        tlbr = view.meta.get("bbox_tlbr")
        if tlbr is None:
            raise DataError("no Human3.6M box (meta bbox_tlbr)", record=record, field="bbox_by_camera_tlbr")
        box = square_box(tlbr, self.bbox_scale)
        if box[2] <= box[0]:
            raise DataError(f"empty crop box {box} from {list(map(int, tlbr))}", record=record,
                            field="bbox_by_camera_tlbr")
        s = self.input_size
        camera = view.camera.crop(box).resize(s, s)  # c -= (left, top); f, c *= S / side
        crop = cv2.resize(crop_image(view.load_image(), box), (s, s), interpolation=cv2.INTER_AREA)
        if self.bgr:
            crop = np.ascontiguousarray(crop[..., ::-1])
        return normalize_image(crop), camera.projection_matrix

    def _views(self, index: int, sample) -> tuple[torch.Tensor, np.ndarray]:
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        n, s = len(self.camera_index), self.input_size
        images = torch.zeros(n, 3, s, s)
        proj = np.zeros((n, 3, 4))
        for c in range(n):  # missing views keep their full-image P (weight 0, never used)
            proj[c] = self.reader.camera(int(self.reader.subject_idx[index]), c).projection_matrix
        for view, name in zip(sample.views, sample.view_names, strict=True):
            c = self.camera_index[name]
            images[c], proj[c] = self.crop_view(view)
        if self.cache is not None:
            self.cache[index] = (images, proj)
        return images, proj

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.reader[index]
        images, proj = self._views(index, sample)
        kp = np.asarray(sample.keypoints_3d[0], dtype=np.float64)
        valid = (np.ones(len(kp), np.float32) if sample.visibility_3d is None
                 else np.asarray(sample.visibility_3d[0], np.float32))
        return {"images": images, "proj": torch.from_numpy(proj),
                "view_mask": torch.from_numpy(np.asarray(sample.meta["view_mask"], dtype=bool)),
                "keypoints_3d": torch.from_numpy(kp), "keypoints_3d_valid": torch.from_numpy(valid),
                "index": index}


class ObjectsPerEpochSampler(ResumableSampler):
    """LT's epoch: ``num_objects`` samples per epoch (``n_objects_per_epoch``), the head of a fresh permutation
    each epoch (several permutations back to back when ``num_objects`` exceeds the set). Keeps the engine's
    sampler contract: the order is a pure function of ``(seed, epoch)``, sharded ``rank::world_size``,
    ``set_epoch(epoch, start)`` resumes mid-epoch, items are ``(index, sample_seed)``."""

    def __init__(self, num_items: int, num_objects: int, *, shuffle: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        super().__init__(num_items, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size)
        if num_objects < 1:
            raise ConfigError(f"data.objects_per_epoch: must be >= 1, got {num_objects}")
        self.num_objects = int(num_objects)
        self.num_samples = -(-self.num_objects // world_size)

    def epoch_order(self) -> np.ndarray:
        reps = -(-self.num_objects // self.num_items)
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = np.concatenate([torch.randperm(self.num_items, generator=gen).numpy() for _ in range(reps)])
        else:
            order = np.tile(np.arange(self.num_items), reps)
        return order[:self.num_objects]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = np.resize(self.epoch_order(), self.num_samples * self.world_size)
        mine = order[self.rank::self.world_size][self.start:]
        return iter(zip(mine.tolist(), sample_seeds(self.seed, self.epoch, mine).tolist(), strict=True))


def prepare_synthetic(data: DataConfig, quiet: bool = False) -> DataConfig:
    """For ``source: synthetic``: write the Human3.6M-layout synthetic set once
    (:func:`~humanvision.data.synthetic.writers.generate_h36m`; a stamp file records its parameters, so a changed
    one regenerates it) and point ``labels`` / ``root`` at it. Under torchrun only rank 0 writes."""
    if data.source != "synthetic":
        return data
    from humanvision.data.synthetic.cache import write_once
    from humanvision.data.synthetic.writers import generate_h36m

    root = Path(data.synthetic_dir)
    params = {"frames": data.synthetic_frames, "size": list(data.synthetic_size), "views": data.synthetic_views,
              "subjects": data.synthetic_subjects, "actions": data.synthetic_actions, "seed": data.synthetic_seed}
    write_once(root, params, lambda progress: generate_h36m(
        root, data.synthetic_frames, size=tuple(data.synthetic_size), seed=data.synthetic_seed,
        views=data.synthetic_views, subjects=data.synthetic_subjects, actions=data.synthetic_actions,
        workers=os.cpu_count() or 1, progress=progress),
        quiet=quiet, description=f"synthesising {data.synthetic_frames} frames x {data.synthetic_views} views -> {root}")
    data.labels, data.root = root / "human36m-multiview-labels-GTbboxes.npy", root / "processed"
    return data


def build_datasets(recipe: AlgebraicRecipe) -> tuple[MultiViewCrops, MultiViewCrops | None]:
    """(train, validation or None when ``data.val_subjects`` is empty) over the labels file."""
    from humanvision.data.readers.h36m import Human36MMultiView

    d = recipe.data
    for key in ("labels", "root"):
        if getattr(d, key) is None:
            raise ConfigError(f"data.{key}: required (or use data.source: synthetic)")

    def crops(subjects: Sequence[str], every: int) -> MultiViewCrops:
        reader = Human36MMultiView(d.labels, d.root, subjects=list(subjects), undistorted=d.undistorted,
                                   with_damaged_actions=d.with_damaged_actions, every_n=every,
                                   min_views=d.min_views)
        if len(reader) == 0:
            raise ConfigError(f"data: no frames of subjects {list(subjects)} with >= {d.min_views} views in "
                              f"{d.labels}")
        return MultiViewCrops(reader, recipe.model.input_size, bbox_scale=d.bbox_scale, bgr=d.bgr,
                              cache_images=d.cache_images)

    train = crops(d.train_subjects, d.train_every)
    val = crops(d.val_subjects, d.val_every) if d.val_subjects else None
    return train, val


# ---------------------------------------------------------------------------------------------- evaluation
def _mpjpe_pair(pred: np.ndarray, gt: np.ndarray, actions: list[str], subjects: list[str]) -> dict[str, Any]:
    """Relative (pelvis) and absolute MPJPE with per-action / per-subject tables (§4.1)."""
    from humanvision.metrics.pose3d import evaluate_mpjpe
    from humanvision.skeletons import get_skeleton

    names = get_skeleton(SKELETON).joints
    rel = evaluate_mpjpe(pred, gt, root=ROOT, actions=actions, subjects=subjects, joint_names=names)
    ab = evaluate_mpjpe(pred, gt, root=None, actions=actions, subjects=subjects, joint_names=names)
    return {"relative": rel.to_dict(), "absolute": ab.to_dict()}


@torch.no_grad()
def evaluate_algebraic(method: AlgebraicTriangulation, dataset: MultiViewCrops, *, batch_size: int = 16,
                       baselines: bool = True, ransac_threshold: float = 30.0, ransac_refine: bool = True,
                       device: str | torch.device = "cpu", num_workers: int = 0,
                       out_dir: str | Path | None = None) -> dict[str, Any]:
    """Predict every frame of ``dataset`` and compute §4.1 MPJPE (mm): ``mpjpe_relative`` (pelvis, LT's number),
    ``mpjpe_absolute`` and, with ``baselines``, the same for ``argmax_dlt_*`` (unweighted DLT of each view's
    heatmap argmax x stride) and ``ransac_*`` (:func:`triangulate_ransac` of that argmax) on the same heatmaps.
    ``count`` is the number of frames. ``tables`` holds each method's full results (per action with trials merged,
    per subject, per joint); written to ``out_dir/metrics.json`` when given. Float entries are flat for the
    engine's log."""
    device = torch.device(device)
    was_training = method.training
    method.eval().to(device)
    preds, gts, argmax_uv, projs, masks, indices = [], [], [], [], [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for batch in loader:
        mask = batch["view_mask"].to(device)
        out = method.predict(batch["images"].to(device), batch["proj"].to(device), mask)
        preds.append(out["keypoints_3d"].cpu().numpy())
        gts.append(batch["keypoints_3d"].double().numpy())
        if baselines:
            argmax_uv.append((heatmap_argmax(out["heatmaps"]) * torch.tensor(method.stride, device=device))
                             .double().cpu().numpy())
            projs.append(batch["proj"].double().numpy())
            masks.append(batch["view_mask"].numpy())
        indices.append(np.asarray(batch["index"]))
    method.train(was_training)
    if not preds:
        raise DataError("no frames to evaluate", field="dataset")
    idx = np.concatenate(indices)
    all_actions, all_subjects = dataset.actions, dataset.subjects
    actions, subjects = [all_actions[i] for i in idx], [all_subjects[i] for i in idx]
    gt = np.concatenate(gts)
    results = {"algebraic": np.concatenate(preds)}
    if baselines:
        P, uv, w = np.concatenate(projs), np.concatenate(argmax_uv), np.concatenate(masks).astype(np.float64)
        w = np.broadcast_to(w[..., None], uv.shape[:-1])
        results["argmax_dlt"] = triangulate_dlt(P, uv, w)
        results["ransac"] = triangulate_ransac(P, uv, w, threshold=ransac_threshold, refine=ransac_refine).points
    return mpjpe_report(results, gt, actions, subjects, primary="algebraic", out_dir=out_dir)


def mpjpe_report(results: dict[str, np.ndarray], gt: np.ndarray, actions: list[str], subjects: list[str], *,
                 primary: str, extra: dict[str, float] | None = None, out_dir: str | Path | None = None
                 ) -> dict[str, Any]:
    """The §4.1 report of several predictions ``results`` (name -> ``(N, J, 3)`` world mm) of the frames ``gt``
    (``actions`` / ``subjects`` per frame): ``count``, ``{name_}mpjpe_relative`` / ``{name_}mpjpe_absolute``
    (no prefix for ``primary``), ``extra`` floats, and ``tables`` (per action with trials merged, per subject,
    per joint); written to ``out_dir/metrics.json`` when given. Shared by the algebraic and volumetric methods."""
    tables = {name: _mpjpe_pair(pred, gt, actions, subjects) for name, pred in results.items()}
    metrics: dict[str, Any] = {"count": float(len(gt))}
    for name, t in tables.items():
        prefix = "" if name == primary else f"{name}_"
        metrics[f"{prefix}mpjpe_relative"] = float(t["relative"]["mpjpe"])
        metrics[f"{prefix}mpjpe_absolute"] = float(t["absolute"]["mpjpe"])
    metrics.update({k: float(v) for k, v in (extra or {}).items()})
    metrics["tables"] = tables
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


# ------------------------------------------------------------------------------------------------ training
def evaluate_weights(recipe: AlgebraicRecipe, weights: str | Path, out_dir: str | Path | None = None
                     ) -> dict[str, Any]:
    """``humanvision eval`` of an algebraic recipe: ``weights`` on the validation subjects (synthesised first for
    ``data.source: synthetic``), :func:`evaluate_algebraic` with the recipe's baselines."""
    if not recipe.data.val_subjects:
        raise ConfigError("data.val_subjects: empty, so there is nothing to evaluate on")
    prepare_synthetic(recipe.data)
    method = build_method(recipe, weights=weights)
    _, val = build_datasets(recipe)
    ev = recipe.eval
    return evaluate_algebraic(method, val, batch_size=ev.batch_size, baselines=ev.baselines,
                              ransac_threshold=ev.ransac_threshold, ransac_refine=ev.ransac_refine, out_dir=out_dir)


def run_training(recipe: AlgebraicRecipe, resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Train the recipe with the engine (Adam etc. from ``train``), evaluating on the validation subjects after
    each ``train.eval_every`` epochs (:func:`evaluate_algebraic`, ``eval/metrics.json`` in the run folder).
    Returns the fit summary."""
    from humanvision.config import save_config
    from humanvision.engine import Trainer, seed_everything

    seed_everything(recipe.train.seed)
    method = build_method(recipe)  # before any data work: a bad model or weights file fails at once
    prepare_synthetic(recipe.data, quiet=quiet)
    train_set, val_set = build_datasets(recipe)
    out = Path(recipe.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(recipe, out / "config.yaml")
    main_rank = int(os.environ.get("RANK", "0")) == 0
    ev = recipe.eval

    def eval_fn(model: AlgebraicTriangulation, epoch: int) -> dict[str, float]:
        m = evaluate_algebraic(model, val_set, batch_size=ev.batch_size, baselines=ev.baselines,
                               ransac_threshold=ev.ransac_threshold, ransac_refine=ev.ransac_refine,
                               device=next(model.parameters()).device, out_dir=out / "eval" if main_rank else None)
        return {k: v for k, v in m.items() if isinstance(v, float)}

    n = recipe.data.objects_per_epoch
    cfg = recipe.train
    sampler_fn = None if n is None else (
        lambda rank, world: ObjectsPerEpochSampler(len(train_set), n, shuffle=cfg.shuffle, seed=cfg.seed,
                                                   rank=rank, world_size=world))
    trainer = Trainer(cfg, method, train_set, eval_fn=eval_fn if val_set is not None else None,
                      sampler_fn=sampler_fn)
    return trainer.fit(resume=resume or None)
