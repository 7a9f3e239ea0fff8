"""Learnable Triangulation, the **volumetric** method (Iskakov et al., "Learnable Triangulation of Human Pose",
ICCV 2019), readable top to bottom. Written from pose3d.md §1.5, §2.1, §2.4-§2.6, §4.1, §8 and §9 (seed:
karfly/learnable-triangulation-pytorch); no code is taken from it. The data, the epoch sampler and the MPJPE
tables are the algebraic method's (:mod:`humanvision.methods.algebraic`).

Per multi-view frame (V calibrated crops, Human3.6M world millimetres):

1. **2D features** (§2.4.1): the SimpleBaseline (``model.backbone``; LT: ResNet-152 at 384²) up to its last
   deconvolution, ``(C, S/4, S/4)`` (LT 256 @ 96²); its ``final_layer`` is frozen and unused.
   ``process_features = Conv2d(C -> 32, 1x1)``.
2. **Cameras** (§2.4.2): the crop-frame ``P`` rescaled to the feature map (``update_after_resize(S -> S/4)``, K rows
   1-2 x 1/4; LT's convention, no half-pixel term).
3. **Cuboid** (§2.4.3-4, :func:`~humanvision.geometry.volume.coord_volume`): side ``cuboid_side`` (2500 mm),
   ``volume_size``³ points (64³) about a **base point**, the pelvis of a given 3D estimate (``model.base``):
   ``algebraic`` (LT: the algebraic model's predictions, from an algebraic run ``base_run`` or precomputed
   files with explicit indexes), ``gt`` or ``gt_noisy`` (the ground-truth pelvis plus Gaussian noise of
   ``base_noise_mm`` per coordinate, fixed per frame). In training the grid is rotated about the base by a uniform
   angle about the vertical world axis (z for Human3.6M); at evaluation it is not.
4. **Unprojection and aggregation** (§2.4.5-6, :func:`~humanvision.geometry.volume.unproject_features`,
   :func:`~humanvision.geometry.volume.aggregate_volumes`): bilinear ``grid_sample(align_corners=True)`` with the
   ``2u / (w - 1) - 1`` normalisation (ContextPose's fix of LT's ``/ w``, §9), 0 behind a camera and for missing
   views; ``softmax`` over views (default), ``sum``, ``max``, ``conf`` / ``conf_norm`` (weights from a GAP head on
   the deepest features, one per feature channel, §2.1).
5. **V2V** (§2.4.7, :class:`~humanvision.models.v2v.V2VModel`, 32 -> J) and the **3D soft-argmax** with the world
   coordinates of the (rotated) grid, ``beta = volume_multiplier`` (1) (§2.4.8,
   :func:`~humanvision.codecs.integral.soft_argmax_3d`).
6. **Loss** (§2.5): ``MAE`` on ``0.1 x mm`` (``L = sum m |x_hat - x| / (3 max(1, sum m))``) plus ``0.01 x``
   :func:`volumetric_ce_loss` (``-log(p[nearest voxel of the rotated grid to the GT] + 1e-6)``, summed over valid
   joints and divided by ``B J``). ``loss.root_relative_single_view`` is LT's single-view special case (joint 6
   subtracted from the other joints of prediction and ground truth before the MAE for a sample with one view);
   off by default, as in ContextPose.

Optimiser (§2.6): Adam with LT's groups, ``lr_groups``: backbone (and the conf head, which LT keeps inside its
backbone) 1e-4, ``process_features`` 1e-3, V2V 1e-3, through the engine's groups (``lr_scale`` = group lr /
``train.lr``).

Weights (:func:`load_weights_into`): our runs, an algebraic run or a 2D network (the backbone only), or an
official LT volumetric checkpoint (:func:`convert_lt_checkpoint`).

Frozen-backbone phase (``train.freeze_backbone_epochs``, :class:`VolumetricTrainConfig`; ContextPose's
``fix_weights`` of its 3DHP transfer model, §3.7): for the first ``k`` epochs the 2D network (``backbone`` and the
conf head) runs without gradients and with BatchNorm in eval mode (:meth:`VolumetricTriangulation.freeze_backbone`),
so its weights and statistics stay exactly as loaded and the optimiser skips them; from epoch ``k`` on everything
trains. The engine has no hooks: the switch rides on the sampler's ``set_epoch``, which the engine calls at the
start of every epoch, a resumed one included (:class:`EpochCallbackSampler`).

Mixed precision: the geometry (grid, projection, unprojection, aggregation) and the 3D soft-argmax run in float64 /
float32 outside autocast, the soft-argmax on coordinates relative to the base point (a bf16 world grid would have
8-16 mm steps at 2-4 m); the V2V's convolutions on its 2³ / 1³ levels run in float32 (oneDNN's bf16 Conv3d weight
gradient is wrong there, :class:`~humanvision.models.v2v.V2VConv3d`).

Evaluation (:func:`evaluate_volumetric`): §4.1 MPJPE relative to the pelvis and absolute, per action (trials
merged) and per subject, frame-weighted, with the frame count (the algebraic method's tables), plus
``base_pelvis_error``: the mean distance of the base points from the ground-truth pelvis.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from humanvision.codecs.integral import soft_argmax_3d
from humanvision.config import must_exist
from humanvision.engine import TrainConfig
from humanvision.engine.checkpoint import load_state_checked
from humanvision.engine.distributed import ResumableSampler
from humanvision.errors import ConfigError, DataError
from humanvision.geometry.camera import update_after_resize
from humanvision.geometry.volume import AGGREGATIONS, aggregate_volumes, coord_volume, unproject_features
from humanvision.methods import algebraic as alg
from humanvision.methods.algebraic import (
    ROOT,
    SKELETON,
    ConfidenceHead,
    DataConfig,
    EvalConfig,
    MultiViewCrops,
)
from humanvision.models.v2v import V2VModel

__all__ = [
    "EpochCallbackSampler",
    "LearningRates",
    "VolumetricLossConfig",
    "VolumetricModelConfig",
    "VolumetricRecipe",
    "VolumetricTrainConfig",
    "VolumetricTriangulation",
    "WithBasePoints",
    "base_points",
    "build_datasets",
    "build_method",
    "check_base_source",
    "convert_lt_checkpoint",
    "evaluate_volumetric",
    "evaluate_weights",
    "freeze_schedule_sampler_fn",
    "is_lt_checkpoint",
    "is_volumetric_recipe",
    "load_recipe",
    "load_weights_into",
    "mae_loss",
    "predict_algebraic_pelvis",
    "read_base_predictions",
    "run_training",
    "volumetric_ce_loss",
    "volumetric_param_groups",
]


# ----------------------------------------------------------------------------------------------- the recipe
@dataclass
class VolumetricModelConfig:
    """The 2D network as in the algebraic recipe (``backbone``, ``skeleton``, ``input_size``, ``args``; a SimpleBaseline
    whose ``head`` has ``deconv_layers`` and ``final_layer``); ``weights``: initial weights (see
    :func:`load_weights_into`). ``feature_channels``: ``process_features`` width (32). ``cuboid_side`` (mm, 2500),
    ``volume_size`` (64; a multiple of 32 for V2V's five poolings), ``aggregation`` (softmax), ``volume_multiplier``
    (the 3D soft-argmax beta, 1), ``rotation`` (random rotation about ``vertical_axis`` in training; 2 = z, Human3.6M),
    ``confidence_channels`` (the GAP head of ``conf`` / ``conf_norm``). ``base``: the cuboid centre's source,
    ``algebraic`` (``base_run``: an algebraic run folder whose best/last weights predict every frame once, cached
    in the run's ``base/``; or ``base_train_predictions`` / ``base_val_predictions``: files with ``keypoints_3d
    (N, 17, 3)`` or ``(N, 3)`` pelvises and ``indexes (N,)``, ``.npz`` or LT's ``.pkl``; ``base_index: row``: the
    indexes are labels-table rows, ``position``: positions in the split after its filters), ``gt``, or ``gt_noisy``
    (``base_noise_mm`` per coordinate, drawn once per table row from ``base_seed``)."""

    backbone: str = "simplebaseline_resnet50"
    skeleton: str = SKELETON
    input_size: int = 384
    args: dict[str, Any] = field(default_factory=dict)
    weights: Path | None = must_exist()
    feature_channels: int = 32
    cuboid_side: float = 2500.0
    volume_size: int = 64
    aggregation: Literal["sum", "max", "softmax", "conf", "conf_norm"] = "softmax"
    volume_multiplier: float = 1.0
    rotation: bool = True
    vertical_axis: int = 2
    confidence_channels: tuple[int, int] = (512, 256)
    base: Literal["algebraic", "gt", "gt_noisy"] = "algebraic"
    base_noise_mm: float = 0.0
    base_seed: int = 0
    base_run: Path | None = must_exist()
    base_train_predictions: Path | None = must_exist()
    base_val_predictions: Path | None = must_exist()
    base_index: Literal["row", "position"] = "row"

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
        if self.feature_channels < 1:
            raise ConfigError(f"model.feature_channels: must be >= 1, got {self.feature_channels}")
        if not self.cuboid_side > 0:
            raise ConfigError(f"model.cuboid_side: must be > 0 (mm), got {self.cuboid_side}")
        if self.volume_size < 32 or self.volume_size % 32:
            raise ConfigError(f"model.volume_size: a multiple of 32 (V2V pools five times), got {self.volume_size}")
        if not self.volume_multiplier > 0:
            raise ConfigError(f"model.volume_multiplier: must be > 0, got {self.volume_multiplier}")
        if self.vertical_axis not in (0, 1, 2):
            raise ConfigError(f"model.vertical_axis: 0 (x), 1 (y) or 2 (z), got {self.vertical_axis}")
        if len(self.confidence_channels) != 2 or min(self.confidence_channels) < 1:
            raise ConfigError(f"model.confidence_channels: two positive widths, got {self.confidence_channels}")
        if not (self.base_noise_mm >= 0 and math.isfinite(self.base_noise_mm)):
            raise ConfigError(f"model.base_noise_mm: must be >= 0, got {self.base_noise_mm}")
        if self.base == "gt_noisy" and self.base_noise_mm == 0:
            raise ConfigError("model.base_noise_mm: base gt_noisy needs a noise level > 0 (mm); or use base: gt")
        if self.base != "gt_noisy" and self.base_noise_mm != 0:
            raise ConfigError(f"model.base_noise_mm: only used with base: gt_noisy (base is {self.base!r})")
        files = (self.base_train_predictions, self.base_val_predictions)
        if self.base != "algebraic" and (self.base_run is not None or any(f is not None for f in files)):
            raise ConfigError(f"model.base_run / model.base_*_predictions: only used with base: algebraic (base is "
                              f"{self.base!r})")
        if self.base_run is not None and any(f is not None for f in files):
            raise ConfigError("model.base_run: give either an algebraic run or prediction files, not both")


@dataclass
class VolumetricLossConfig:
    """``scale_keypoints_3d``: mm -> loss units (0.1: cm); ``ce_weight``: the VolumetricCE weight (0.01);
    ``root_relative_single_view``: LT's single-view special case (off, as in ContextPose)."""

    scale_keypoints_3d: float = 0.1
    ce_weight: float = 0.01
    root_relative_single_view: bool = False

    def __post_init__(self) -> None:
        if not self.scale_keypoints_3d > 0:
            raise ConfigError(f"loss.scale_keypoints_3d: must be > 0, got {self.scale_keypoints_3d}")
        if not self.ce_weight >= 0:
            raise ConfigError(f"loss.ce_weight: must be >= 0, got {self.ce_weight}")


@dataclass
class LearningRates:
    """LT's Adam groups (§2.6): ``backbone`` (with the conf head) 1e-4, ``process_features`` 1e-3,
    ``volume_net`` 1e-3. ``train.lr`` is the reference the schedule scales (each group's ``lr_scale`` is its lr /
    ``train.lr``)."""

    backbone: float = 1e-4
    process_features: float = 1e-3
    volume_net: float = 1e-3

    def __post_init__(self) -> None:
        for key in ("backbone", "process_features", "volume_net"):
            if not getattr(self, key) >= 0:
                raise ConfigError(f"lr_groups.{key}: must be >= 0, got {getattr(self, key)}")


@dataclass
class VolumetricTrainConfig(TrainConfig):
    """The engine's ``train`` keys plus ``freeze_backbone_epochs``: train the first that many epochs with the 2D
    network frozen (no gradients, BatchNorm in eval mode), then end to end (0: never frozen; ContextPose's 3DHP
    model: 20, then end to end). Under DDP the frozen parameters get no gradients, so it needs
    ``find_unused_parameters: true``."""

    freeze_backbone_epochs: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.freeze_backbone_epochs < 0:
            raise ConfigError(f"train.freeze_backbone_epochs: must be >= 0, got {self.freeze_backbone_epochs}")


@dataclass
class VolumetricRecipe:
    """``triangulation: volumetric`` marks the recipe (:func:`is_volumetric_recipe`). ``data`` and ``eval`` are the
    algebraic recipe's sections (``eval.baselines`` / ``ransac_*`` are not used here)."""

    name: str = "lt_volumetric"
    triangulation: Literal["volumetric"] = "volumetric"
    model: VolumetricModelConfig = field(default_factory=VolumetricModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: VolumetricLossConfig = field(default_factory=VolumetricLossConfig)
    lr_groups: LearningRates = field(default_factory=LearningRates)
    train: VolumetricTrainConfig = field(default_factory=VolumetricTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.triangulation != "volumetric":
            raise ConfigError(f"triangulation: expected 'volumetric', got {self.triangulation!r}")


def is_volumetric_recipe(source: Any) -> bool:
    """True for a :class:`VolumetricRecipe`, or a mapping / YAML file with ``triangulation: volumetric``."""
    from humanvision.config import recipe_mapping

    return isinstance(source, VolumetricRecipe) or recipe_mapping(source).get("triangulation") == "volumetric"


def load_recipe(path: str | Path | dict, overrides: Sequence[str] = (), unchecked: tuple[str, ...] = ()
                ) -> VolumetricRecipe:
    """Load and validate a ``configs/lt_volumetric_*.yaml`` recipe (errors name the key)."""
    from humanvision.config import load_config

    return load_config(path, VolumetricRecipe, list(overrides), unchecked=unchecked)


# ------------------------------------------------------------------------------------------------------ loss
def mae_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """LT's ``MAE`` (§2.5) on ``(B, J, 3)`` points in the loss units with ``valid (B, J)``:
    ``sum m |x_hat - x| / (3 max(1, sum m))``."""
    m = torch.ones(pred.shape[:-1], dtype=pred.dtype, device=pred.device) if valid is None else valid.to(pred.dtype)
    return (m[..., None] * (pred - target).abs()).sum() / (3.0 * m.sum().clamp_min(1.0))


def volumetric_ce_loss(probs: torch.Tensor, coords: torch.Tensor, target: torch.Tensor,
                       valid: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """LT's ``VolumetricCE`` (§2.5): ``probs (B, J, D, H, W)`` (softmaxed volumes), ``coords (B, D, H, W, 3)`` their
    world points (the rotated grid), ``target (B, J, 3)``, ``valid (B, J)``. For each (b, j) the voxel nearest to
    the target, ``-log(p + eps) m``, summed and divided by ``B J`` (invalid joints count in the divisor)."""
    b, j = target.shape[:2]
    flat = coords.reshape(b, -1, 3).double()
    tgt = target.double()
    nearest = torch.stack([((flat - tgt[:, k:k + 1]) ** 2).sum(-1).argmin(-1) for k in range(j)], 1)  # (B, J)
    p = probs.reshape(b, j, -1).gather(-1, nearest[..., None])[..., 0]
    m = torch.ones_like(p) if valid is None else valid.to(p.dtype)
    return -(torch.log(p + eps) * m).sum() / (b * j)


# ------------------------------------------------------------------------------------------------- the model
class VolumetricTriangulation(nn.Module):
    """2D features -> ``process_features`` -> unprojection into a cuboid about the base point -> aggregation over
    views -> V2V -> 3D soft-argmax in world coordinates; ``forward(batch)`` returns the engine's loss dict,
    :meth:`predict` the 3D joints and the volumes.

    The batch: what :class:`MultiViewCrops` yields (``images (B, V, 3, S, S)``, ``proj (B, V, 3, 4)`` crop pixels,
    ``view_mask (B, V)``, ``keypoints_3d (B, J, 3)`` world mm, ``keypoints_3d_valid (B, J)``) plus ``base_point
    (B, 3)`` (:class:`WithBasePoints`).
    """

    def __init__(self, backbone: nn.Module, *, feature_channels: int = 32, cuboid_side: float = 2500.0,
                 volume_size: int = 64, aggregation: str = "softmax", volume_multiplier: float = 1.0,
                 rotation: bool = True, vertical_axis: int = 2, confidence_channels: tuple[int, int] = (512, 256),
                 scale_keypoints_3d: float = 0.1, ce_weight: float = 0.01,
                 root_relative_single_view: bool = False) -> None:
        super().__init__()
        for attr in ("forward_features", "input_size", "heatmap_size", "num_joints"):
            if not hasattr(backbone, attr):
                raise ConfigError(f"model.backbone: {type(backbone).__name__} has no {attr}; use a heatmap model "
                                  "such as a SimpleBaseline")
        head = getattr(backbone, "head", None)
        if not (isinstance(getattr(head, "deconv_layers", None), nn.Module)
                and isinstance(getattr(head, "final_layer", None), nn.Conv2d)):
            raise ConfigError(f"model.backbone: {type(backbone).__name__} has no head.deconv_layers / "
                              "head.final_layer (the features before the final layer); use a SimpleBaseline")
        if aggregation not in AGGREGATIONS:
            raise ConfigError(f"model.aggregation: one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
        self.backbone = backbone
        self.backbone.head.final_layer.requires_grad_(False)  # frozen and unused (§2.4.1)
        self.num_joints = int(backbone.num_joints)
        self.cuboid_side, self.volume_size = float(cuboid_side), int(volume_size)
        self.aggregation, self.volume_multiplier = aggregation, float(volume_multiplier)
        self.rotation, self.vertical_axis = bool(rotation), int(vertical_axis)
        self.scale_keypoints_3d, self.ce_weight = float(scale_keypoints_3d), float(ce_weight)
        self.root_relative_single_view = bool(root_relative_single_view)
        self.process_features = nn.Conv2d(backbone.head.final_layer.in_channels, feature_channels, 1)
        self.volume_net = V2VModel(feature_channels, self.num_joints)
        self.confidence_head = None
        if aggregation in ("conf", "conf_norm"):
            channels = getattr(backbone, "num_features", None) or getattr(getattr(backbone, "backbone", None),
                                                                          "num_features", None)
            if not channels:
                raise ConfigError(f"model.backbone: cannot tell the channels of {type(backbone).__name__}'s "
                                  "deepest features (no num_features) for the conf aggregation head")
            self.confidence_head = ConfidenceHead(channels, feature_channels, confidence_channels)
        self.backbone_frozen = False

    def freeze_backbone(self, frozen: bool = True) -> None:
        """Fix the 2D network (``backbone`` and the conf head): it then runs under ``no_grad`` with BatchNorm in eval
        mode, so neither its weights (no gradients: the optimiser skips them) nor its statistics change; ``False``
        trains it again. The frozen final layer stays frozen either way."""
        self.backbone_frozen = bool(frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> VolumetricTriangulation:
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
            if self.confidence_head is not None:
                self.confidence_head.eval()
        return self

    def no_weight_decay(self) -> set[str]:
        return {n for n, p in self.named_parameters() if p.ndim <= 1}

    def feature_proj(self, proj: torch.Tensor) -> torch.Tensor:
        """Crop-pixel ``P (..., 3, 4)`` -> feature-map pixels (``update_after_resize(input -> heatmap)``)."""
        return update_after_resize(proj, proj.new_tensor(self.backbone.input_size),
                                   proj.new_tensor(self.backbone.heatmap_size))

    def predict(self, images: torch.Tensor, proj: torch.Tensor, base_point: torch.Tensor,
                view_mask: torch.Tensor | None = None, angle: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        """``images (B, V, 3, S, S)``, ``proj (B, V, 3, 4)`` crop pixels, ``base_point (B, 3)`` world mm,
        ``view_mask (B, V)`` (None: all), ``angle (B,)`` radians about the vertical axis (None: random in
        training when ``rotation``, else 0) -> ``keypoints_3d (B, J, 3)`` float64 world, ``volumes (B, J, D, H, W)``
        (softmaxed), ``coord_volumes (B, D, H, W, 3)`` float64, ``angle (B,)``, ``confidences (B, V, C)`` (conf
        aggregations) . Differentiable; the caller chooses ``no_grad``."""
        volume, geo = self.aggregated_volume(images, proj, base_point, view_mask, angle)
        keypoints, probs = self.soft_argmax(self.volume_net(volume), geo)
        return {"keypoints_3d": keypoints, "volumes": probs, "coord_volumes": geo["coords"], "angle": geo["angle"],
                "confidences": geo["weights"]}

    def aggregated_volume(self, images: torch.Tensor, proj: torch.Tensor, base_point: torch.Tensor,
                          view_mask: torch.Tensor | None = None, angle: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
        """The first half of :meth:`predict`: the views' features unprojected into the (rotated) cuboid around
        ``base_point`` and aggregated -> ``(volume (B, C, D, H, W), {coords, base, angle, weights})``."""
        if images.ndim != 5:
            raise DataError(f"expected images (B, V, 3, H, W), got {tuple(images.shape)}", field="images")
        b, v = images.shape[:2]
        if base_point.shape != (b, 3):
            raise DataError(f"expected base_point ({b}, 3), got {tuple(base_point.shape)}", field="base_point")
        if view_mask is None:
            view_mask = torch.ones(b, v, dtype=torch.bool, device=images.device)
        with torch.no_grad() if self.backbone_frozen else contextlib.nullcontext():
            deep = self.backbone.forward_features(images.flatten(0, 1))
            deconv = self.backbone.head.deconv_layers(deep)
            weights = None if self.confidence_head is None else self.confidence_head(deep).unflatten(0, (b, v))
        features = self.process_features(deconv)
        if angle is None:
            angle = (torch.rand(b, device=images.device, dtype=torch.float64) * (2 * math.pi)
                     if self.training and self.rotation else torch.zeros(b, device=images.device, dtype=torch.float64))
        base = base_point.to(device=images.device, dtype=torch.float64)
        with torch.autocast(images.device.type, enabled=False):  # geometry in fp64 / fp32
            coords = coord_volume(base, self.cuboid_side, self.volume_size, angle=angle.double(),
                                  axis=self.vertical_axis)
            volumes = unproject_features(features.float().unflatten(0, (b, v)), self.feature_proj(proj.double()),
                                         coords, view_mask)
            volume = aggregate_volumes(volumes, self.aggregation, view_mask=view_mask,
                                       weights=None if weights is None else weights.float())
        return volume, {"coords": coords, "base": base, "angle": angle, "weights": weights}

    def soft_argmax(self, logits: torch.Tensor, geo: dict[str, torch.Tensor | None]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The second half of :meth:`predict`: the V2V's ``logits (B, J, D, H, W)`` -> ``(keypoints_3d (B, J, 3)``
        float64 world mm, softmaxed volumes)`` on :meth:`aggregated_volume`'s grid, in fp32 about the base point."""
        coords, base = geo["coords"], geo["base"]
        with torch.autocast(logits.device.type, enabled=False):
            rel = (coords - base[:, None, None, None]).float()  # about the base: fp32 keeps sub-mm precision
            offset, probs = soft_argmax_3d(logits.float(), self.volume_multiplier, rel)
        return offset.double() + base[:, None], probs

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        mask = batch.get("view_mask")
        out = self.predict(batch["images"], batch["proj"], batch["base_point"], mask)
        pred, gt = out["keypoints_3d"], batch["keypoints_3d"].double()
        valid = batch.get("keypoints_3d_valid")
        s = self.scale_keypoints_3d
        p_loss, g_loss = pred, gt
        if self.root_relative_single_view:  # LT train.py: one view -> joint 6 off the other joints
            n_views = (mask.sum(1) if mask is not None
                       else torch.full((pred.shape[0],), batch["images"].shape[1], device=pred.device))
            single = (n_views == 1)[:, None, None]
            others = torch.ones(pred.shape[1], 1, dtype=torch.bool, device=pred.device)
            others[ROOT] = False
            shift = single & others
            p_loss = torch.where(shift, pred - pred[:, ROOT:ROOT + 1], pred)
            g_loss = torch.where(shift, gt - gt[:, ROOT:ROOT + 1], gt)
        mae = mae_loss(p_loss * s, g_loss * s, valid)
        ce = volumetric_ce_loss(out["volumes"], out["coord_volumes"], gt, valid)
        loss = mae + self.ce_weight * ce
        with torch.no_grad():
            err = torch.linalg.vector_norm(pred - gt, dim=-1)  # mm
            rel = torch.linalg.vector_norm((pred - pred[:, ROOT:ROOT + 1]) - (gt - gt[:, ROOT:ROOT + 1]), dim=-1)
        return {"loss": loss.float(), "loss_mae": mae.detach().float(), "loss_ce": ce.detach().float(),
                "mpjpe_absolute": err.mean().float(), "mpjpe_relative": rel.mean().float()}


def volumetric_param_groups(method: VolumetricTriangulation, weight_decay: float, lrs: LearningRates,
                            base_lr: float) -> list[dict]:
    """The engine's :func:`~humanvision.engine.optim.param_groups` (weight-decay rule; the frozen final layer is
    left out) with each group split by module: ``backbone`` and ``confidence_head`` at ``lrs.backbone``,
    ``process_features`` and ``volume_net`` at theirs (``lr_scale`` = lr / ``base_lr``, the ``train.lr`` the
    schedule multiplies)."""
    from humanvision.engine.optim import param_groups

    if not base_lr > 0:
        raise ConfigError(f"train.lr: must be > 0 (the reference of lr_groups), got {base_lr}")
    part_of = {"backbone": "backbone", "confidence_head": "backbone", "process_features": "process_features",
               "volume_net": "volume_net"}
    out = []
    for g in param_groups(method, weight_decay):
        for part in ("backbone", "process_features", "volume_net"):
            keep = [i for i, n in enumerate(g["param_names"]) if part_of.get(n.split(".")[0]) == part]
            if keep:
                out.append({**g, "name": f"{part}_{g['name']}", "params": [g["params"][i] for i in keep],
                            "param_names": [g["param_names"][i] for i in keep],
                            "lr_scale": getattr(lrs, part) / base_lr})
    return out


# ---------------------------------------------------------------------------------------------------- weights
#: LT volumetric checkpoint (``VolumetricTriangulationNet.state_dict()``, possibly under ``module.``) -> ours.
#: Documented by the brief: the ``backbone`` / ``process_features`` / ``volume_net`` split (§2.4), the MSRA pose
#: ResNet (``conv1, bn1, layer1-4, deconv_layers.{0,1,3,4,6,7}, final_layer``, §2.1) and the GAP head's layers
#: (§2.1). Inferred (the brief does not spell the attribute names): ``process_features`` as a one-conv
#: ``Sequential`` (``process_features.0.*``; a bare conv is accepted too), the heads' names
#: ``backbone.{alg,vol}_confidences.{features,head}.*``, and V2V's inner names (see :mod:`humanvision.models.v2v`,
#: kept identical so ``volume_net.*`` maps by itself).
LT_KEY_RULES: list[tuple[str, str]] = [
    (r"^backbone\.(conv1|bn1|layer[1-4])\.", r"backbone.backbone.\1."),
    (r"^backbone\.(deconv_layers|final_layer)\.", r"backbone.head.\1."),
    (r"^backbone\.vol_confidences\.features\.", "confidence_head.features."),
    (r"^backbone\.vol_confidences\.head\.", "confidence_head.fc."),
    (r"^process_features\.0\.", "process_features."),
    (r"^process_features\.(weight|bias)$", r"process_features.\1"),
    (r"^volume_net\.", "volume_net."),
]
#: keys of an LT checkpoint the volumetric model has no use for (the algebraic confidence head).
LT_DROPPED = (r"^backbone\.alg_confidences\.",)


def is_lt_checkpoint(state: dict[str, torch.Tensor]) -> bool:
    """An LT volumetric state dict: ``volume_net.*`` with the 2D network at ``backbone.layer1`` (ours nests it at
    ``backbone.backbone.``)."""
    return any(k.startswith("volume_net.") for k in state) and any(k.startswith("backbone.layer1.") for k in state)


def convert_lt_checkpoint(state: dict[str, torch.Tensor], file: str | None = None
                          ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename an LT volumetric state dict with :data:`LT_KEY_RULES` -> ``(our state dict, dropped keys)``; a key no
    rule knows is a :class:`DataError` naming it."""
    out, dropped, unknown = {}, [], []
    for key, value in state.items():
        if any(re.match(p, key) for p in LT_DROPPED):
            dropped.append(key)
            continue
        for pattern, repl in LT_KEY_RULES:
            if re.match(pattern, key):
                out[re.sub(pattern, repl, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise DataError(f"not a Learnable Triangulation volumetric checkpoint key: {unknown[:4]}", file=file,
                        field=unknown[0])
    return out, dropped


def load_weights_into(method: VolumetricTriangulation, path: str | Path) -> None:
    """Initialise ``method`` from ``path`` (a run or checkpoint folder: ``best/``, else ``last/``; or a file):

    * a run of this method (``volume_net.*``, ``backbone.backbone.*``): everything, strictly;
    * an official LT volumetric checkpoint (``.pth``): everything, via :func:`convert_lt_checkpoint` (old files
      without BatchNorm ``num_batches_tracked`` are accepted);
    * an algebraic run (``backbone.*`` + ``confidence_head.*``): its 2D network only;
    * a top-down run (``model.*``) or any 2D weights file :func:`humanvision.models.weights.load_weights` reads:
      the 2D network.
    Errors name ``model.weights`` or the file and key."""
    from humanvision.engine.checkpoint import weights_file
    from humanvision.models.weights import load_weights, read_checkpoint

    file = weights_file(path, "model.weights")
    state = read_checkpoint(file)
    if is_lt_checkpoint(state):
        converted, _ = convert_lt_checkpoint(state, str(file))
        load_state_checked(method, converted, str(file), may_miss=("num_batches_tracked",))
        return
    if any(k.startswith("volume_net.") for k in state):
        load_state_checked(method, state, str(file))
        return
    if any(k.startswith("backbone.") for k in state) and not any(k.startswith("model.") for k in state):
        sub = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
        load_state_checked(method.backbone, sub, str(file))
        return
    if any(k.startswith("model.") for k in state):
        sub = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
        load_state_checked(method.backbone, sub, str(file))
        return
    load_weights(method.backbone, file)


def build_method(recipe: VolumetricRecipe, weights: str | Path | None = None) -> VolumetricTriangulation:
    """The recipe's 2D network (from the registry), ``process_features``, V2V and loss, initialised from
    ``weights`` (default ``model.weights``)."""
    from humanvision.models import create_model

    m = recipe.model
    try:
        backbone = create_model(m.backbone, skeleton=m.skeleton, input_size=(m.input_size, m.input_size), **m.args)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"model ({m.backbone}, args {m.args}): {e}") from None
    method = VolumetricTriangulation(
        backbone, feature_channels=m.feature_channels, cuboid_side=m.cuboid_side, volume_size=m.volume_size,
        aggregation=m.aggregation, volume_multiplier=m.volume_multiplier, rotation=m.rotation,
        vertical_axis=m.vertical_axis, confidence_channels=tuple(m.confidence_channels),
        scale_keypoints_3d=recipe.loss.scale_keypoints_3d, ce_weight=recipe.loss.ce_weight,
        root_relative_single_view=recipe.loss.root_relative_single_view)
    w = weights if weights is not None else m.weights
    if w is not None:
        load_weights_into(method, w)
    return method


# -------------------------------------------------------------------------------------------- base points
class WithBasePoints(Dataset):
    """:class:`MultiViewCrops` items plus ``base_point (3,)`` float64, the cuboid centre of each frame."""

    def __init__(self, crops: MultiViewCrops, points: np.ndarray) -> None:
        points = np.asarray(points, dtype=np.float64)
        if points.shape != (len(crops), 3):
            raise DataError(f"expected base points ({len(crops)}, 3), got {points.shape}", field="base_point")
        self.crops, self.points = crops, points

    def __len__(self) -> int:
        return len(self.crops)

    @property
    def reader(self):
        return self.crops.reader

    @property
    def subjects(self) -> list[str]:
        return self.crops.subjects

    @property
    def actions(self) -> list[str]:
        return self.crops.actions

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.crops[index]
        item["base_point"] = torch.from_numpy(self.points[index].copy())
        return item


def read_base_predictions(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A predictions file -> ``(pelvis (N, 3) float64, indexes (N,) int64)``: ``.npz`` or LT's ``.pkl`` (read
    without executing code) with ``keypoints_3d`` ``(N, 17, 3)`` (joint 6 is taken) or ``(N, 3)``, and ``indexes``
    ``(N,)`` (unique)."""
    from humanvision.data.io import safe_unpickle

    path = Path(path)
    if not path.is_file():
        raise DataError("base predictions file not found", file=str(path))
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    elif path.suffix in (".pkl", ".pickle"):
        data = safe_unpickle(path)
    else:
        raise DataError("expected a .npz or .pkl file with keypoints_3d and indexes", file=str(path))
    if not isinstance(data, dict) or "keypoints_3d" not in data or "indexes" not in data:
        raise DataError("expected keys keypoints_3d and indexes", file=str(path))
    kp = np.asarray(data["keypoints_3d"], dtype=np.float64)
    idx = np.asarray(data["indexes"])
    if kp.ndim == 3 and kp.shape[1] > ROOT and kp.shape[2] == 3:
        kp = kp[:, ROOT]
    if kp.ndim != 2 or kp.shape[1] != 3:
        raise DataError(f"keypoints_3d: expected (N, J, 3) or (N, 3), got {kp.shape}", file=str(path),
                        field="keypoints_3d")
    if idx.shape != (len(kp),) or not np.issubdtype(idx.dtype, np.integer):
        raise DataError(f"indexes: expected ({len(kp)},) integers, got {idx.shape} {idx.dtype}", file=str(path),
                        field="indexes")
    if len(np.unique(idx)) != len(idx):
        raise DataError("indexes: repeated values", file=str(path), field="indexes")
    if not np.isfinite(kp).all():
        raise DataError("keypoints_3d: non-finite values", file=str(path), field="keypoints_3d")
    return kp, idx.astype(np.int64)


def _align(points: np.ndarray, indexes: np.ndarray, wanted: np.ndarray, file: str) -> np.ndarray:
    """``points`` of ``indexes`` reordered to ``wanted`` (explicit matching, no positional assumptions)."""
    order = np.argsort(indexes)
    pos = np.searchsorted(indexes[order], wanted)
    pos = np.clip(pos, 0, len(order) - 1)
    found = indexes[order][pos] == wanted
    if not found.all():
        raise DataError(f"no prediction for index {int(wanted[~found][0])} ({int((~found).sum())} of {len(wanted)} "
                        "missing)", file=file, field="indexes")
    return points[order][pos]


@torch.no_grad()
def predict_algebraic_pelvis(run: str | Path, crops: MultiViewCrops, *, batch_size: int = 16,
                             device: str | torch.device = "cpu") -> np.ndarray:
    """The pelvis ``(N, 3)`` predicted by the algebraic run ``run`` (its ``config.yaml`` and best/last weights) for
    every frame of ``crops`` (re-cropped at that recipe's input size, box scale and colour order)."""
    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise ConfigError(f"model.base_run: {run} is not an algebraic run folder (no config.yaml)")
    if not alg.is_algebraic_recipe(run / "config.yaml"):
        raise ConfigError(f"model.base_run: {run}/config.yaml is not an algebraic (triangulation: algebraic) recipe")
    recipe = alg.load_recipe(run / "config.yaml", unchecked=("data.", "model.weights"))
    method = alg.build_method(recipe, weights=run).eval().to(device)
    ds = MultiViewCrops(crops.reader, recipe.model.input_size, bbox_scale=recipe.data.bbox_scale,
                        bgr=recipe.data.bgr)
    out = []
    for batch in DataLoader(ds, batch_size=batch_size, shuffle=False):
        pred = method.predict(batch["images"].to(device), batch["proj"].to(device), batch["view_mask"].to(device))
        out.append(pred["keypoints_3d"][:, ROOT].cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def check_base_source(model: VolumetricModelConfig, splits: Sequence[str] = ("train", "val")) -> None:
    """For ``base: algebraic``: a ConfigError naming the key when the splits to be built have no source (an
    algebraic ``base_run``, or ``base_{split}_predictions``). Checked before any data work."""
    if model.base != "algebraic" or model.base_run is not None:
        return
    for split in splits:
        if getattr(model, f"base_{split}_predictions") is None:
            raise ConfigError(f"model.base: algebraic needs model.base_run (an algebraic run folder) or "
                              f"model.base_{split}_predictions for the {split} split; or use base: gt / gt_noisy")


def base_points(recipe: VolumetricRecipe, crops: MultiViewCrops, split: Literal["train", "val"], *,
                cache_dir: str | Path | None = None, device: str | torch.device = "cpu") -> np.ndarray:
    """The ``(N, 3)`` cuboid centres of ``crops`` (one split) by ``model.base``; with ``base_run`` the algebraic
    predictions are cached as ``cache_dir/{split}.npz`` (``keypoints_3d`` pelvises, ``indexes`` table rows: a
    file ``base_*_predictions`` can take)."""
    m = recipe.model
    rows = np.asarray(crops.reader.rows, dtype=np.int64)
    if m.base in ("gt", "gt_noisy"):
        pelvis = np.asarray(crops.reader.keypoints[:, ROOT], dtype=np.float64)
        if m.base == "gt":
            return pelvis
        noise = np.random.default_rng(m.base_seed).normal(0.0, m.base_noise_mm, (int(rows.max()) + 1, 3))
        return pelvis + noise[rows]  # a fixed offset per labels-table row, the same in every epoch and run
    file = m.base_train_predictions if split == "train" else m.base_val_predictions
    if file is not None:
        points, indexes = read_base_predictions(file)
        wanted = rows if m.base_index == "row" else np.arange(len(rows))
        return _align(points, indexes, wanted, str(file))
    check_base_source(m, (split,))
    cache = None if cache_dir is None else Path(cache_dir) / f"{split}.npz"
    if cache is not None and cache.is_file():
        points, indexes = read_base_predictions(cache)
        if len(indexes) == len(rows) and (np.sort(indexes) == np.sort(rows)).all():
            return _align(points, indexes, rows, str(cache))
    points = predict_algebraic_pelvis(m.base_run, crops, batch_size=recipe.eval.batch_size, device=device)
    if cache is not None and int(os.environ.get("RANK", "0")) == 0:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, keypoints_3d=points, indexes=rows)
    return points


def build_datasets(recipe: VolumetricRecipe, *, cache_dir: str | Path | None = None,
                   device: str | torch.device = "cpu", train: bool = True
                   ) -> tuple[WithBasePoints | None, WithBasePoints | None]:
    """(train or None when not ``train``, validation or None): the algebraic method's crops
    (:func:`humanvision.methods.algebraic.build_datasets`) with their base points."""
    train_crops, val_crops = alg.build_datasets(recipe)
    train_set = (WithBasePoints(train_crops, base_points(recipe, train_crops, "train", cache_dir=cache_dir,
                                                         device=device)) if train else None)
    val_set = (None if val_crops is None else
               WithBasePoints(val_crops, base_points(recipe, val_crops, "val", cache_dir=cache_dir, device=device)))
    return train_set, val_set


# ---------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_volumetric(method: VolumetricTriangulation, dataset: WithBasePoints, *, batch_size: int = 16,
                        device: str | torch.device = "cpu", num_workers: int = 0,
                        out_dir: str | Path | None = None) -> dict[str, Any]:
    """Predict every frame (no rotation) and compute §4.1 MPJPE (mm): ``mpjpe_relative`` (pelvis, LT's number),
    ``mpjpe_absolute``, ``count`` (frames), ``base_pelvis_error`` (mean distance of the cuboid centres from the
    ground-truth pelvis) and ``tables`` (per action with trials merged, per subject, per joint;
    :func:`humanvision.methods.algebraic.mpjpe_report`), written to ``out_dir/metrics.json`` when given."""
    device = torch.device(device)
    was_training = method.training
    method.eval().to(device)
    preds, gts, bases, indices = [], [], [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers):
        out = method.predict(batch["images"].to(device), batch["proj"].to(device), batch["base_point"].to(device),
                             batch["view_mask"].to(device))
        preds.append(out["keypoints_3d"].cpu().numpy())
        gts.append(batch["keypoints_3d"].double().numpy())
        bases.append(batch["base_point"].double().numpy())
        indices.append(np.asarray(batch["index"]))
    method.train(was_training)
    if not preds:
        raise DataError("no frames to evaluate", field="dataset")
    idx = np.concatenate(indices)
    all_actions, all_subjects = dataset.actions, dataset.subjects
    gt = np.concatenate(gts)
    base_err = np.linalg.norm(np.concatenate(bases) - gt[:, ROOT], axis=-1).mean()
    return alg.mpjpe_report({"volumetric": np.concatenate(preds)}, gt, [all_actions[i] for i in idx],
                            [all_subjects[i] for i in idx], primary="volumetric",
                            extra={"base_pelvis_error": base_err}, out_dir=out_dir)


def export_onnx(recipe: VolumetricRecipe, weights: str | Path, out: str | Path, *, views: int = 4, **kwargs: Any):
    """``humanvision export`` of a volumetric recipe: the trained method whole (2D network, unprojection,
    aggregation, V2V, soft-argmax) as ONNX for a rig of ``views`` cameras, with the crop contract
    (``data.bbox_scale``, ``data.bgr``), read by :class:`humanvision.runtime.VolumetricTriangulator`. ``kwargs``: those
    of :func:`humanvision.export.export_volumetric_onnx`."""
    from humanvision.export import export_volumetric_onnx

    return export_volumetric_onnx(build_method(recipe, weights), out, views=views, bbox_scale=recipe.data.bbox_scale,
                                  bgr=recipe.data.bgr, recipe=recipe.name, weights=weights, **kwargs)


def evaluate_weights(recipe: VolumetricRecipe, weights: str | Path, out_dir: str | Path | None = None
                     ) -> dict[str, Any]:
    """``humanvision eval`` of a volumetric recipe: ``weights`` on the validation subjects (synthesised first for
    ``data.source: synthetic``); algebraic base points are computed (and cached under ``out_dir/base``)."""
    if not recipe.data.val_subjects:
        raise ConfigError("data.val_subjects: empty, so there is nothing to evaluate on")
    check_base_source(recipe.model, ("val",))
    alg.prepare_synthetic(recipe.data)
    method = build_method(recipe, weights=weights)
    _, val = build_datasets(recipe, cache_dir=None if out_dir is None else Path(out_dir) / "base", train=False)
    return evaluate_volumetric(method, val, batch_size=recipe.eval.batch_size, out_dir=out_dir)


# ------------------------------------------------------------------------------------------------ training
class EpochCallbackSampler(Sampler):
    """A resumable sampler (the engine's contract: ``num_samples``, ``set_epoch(epoch, start)``, ``(index, seed)``
    items) that also calls ``on_epoch(epoch)`` whenever the engine starts an epoch (or resumes in one): the one
    place where a method learns the epoch without engine hooks."""

    def __init__(self, sampler: ResumableSampler, on_epoch) -> None:
        self.sampler, self.on_epoch = sampler, on_epoch

    @property
    def num_samples(self) -> int:
        return self.sampler.num_samples

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.on_epoch(epoch)
        self.sampler.set_epoch(epoch, start)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        return iter(self.sampler)


def freeze_schedule_sampler_fn(method: VolumetricTriangulation, cfg: TrainConfig, num_items: int,
                               objects_per_epoch: int | None):
    """The engine's ``sampler_fn`` of these recipes: LT's epoch of ``objects_per_epoch`` frames
    (:class:`~humanvision.methods.algebraic.ObjectsPerEpochSampler`; None: the engine's uniform sampler), and with
    ``cfg.freeze_backbone_epochs = k > 0`` the method's 2D network frozen in epochs ``0 .. k-1``
    (:meth:`VolumetricTriangulation.freeze_backbone`; frozen from the start, so the engine's precision measurement
    before the first epoch sees the frozen model too). A ConfigError under DDP without
    ``train.find_unused_parameters``."""
    k = int(getattr(cfg, "freeze_backbone_epochs", 0))
    if k and int(os.environ.get("WORLD_SIZE", "1")) > 1 and not cfg.find_unused_parameters:
        raise ConfigError("train.freeze_backbone_epochs: under DDP the frozen 2D network gets no gradients; set "
                          "train.find_unused_parameters: true")
    method.freeze_backbone(k > 0)
    if not k and objects_per_epoch is None:
        return None  # the engine's uniform sampler

    def make(rank: int, world: int):
        if objects_per_epoch is None:
            inner = ResumableSampler(num_items, shuffle=cfg.shuffle, seed=cfg.seed, rank=rank, world_size=world)
        else:
            inner = alg.ObjectsPerEpochSampler(num_items, objects_per_epoch, shuffle=cfg.shuffle, seed=cfg.seed,
                                               rank=rank, world_size=world)
        return inner if not k else EpochCallbackSampler(inner, lambda epoch: method.freeze_backbone(epoch < k))

    return make


def run_training(recipe: VolumetricRecipe, resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Train the recipe with the engine (Adam with :func:`volumetric_param_groups`, one epoch =
    ``data.objects_per_epoch`` frames; the 2D network frozen in the first ``train.freeze_backbone_epochs``),
    evaluating on the validation subjects after each ``train.eval_every``
    epochs (:func:`evaluate_volumetric`, ``eval/metrics.json`` in the run folder). Returns the fit summary."""
    from humanvision.config import save_config
    from humanvision.engine import Trainer, seed_everything
    from humanvision.engine.distributed import resolve_device

    if recipe.train.channels_last is True:
        raise ConfigError("train.channels_last: the V2V's 3D convolutions cannot use the channels-last memory format "
                          "(4-D only); set false or auto")
    seed_everything(recipe.train.seed)
    check_base_source(recipe.model, ("train", "val") if recipe.data.val_subjects else ("train",))
    method = build_method(recipe)  # before any data work: a bad model or weights file fails at once
    alg.prepare_synthetic(recipe.data, quiet=quiet)
    out = Path(recipe.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(recipe.train.device, int(os.environ.get("LOCAL_RANK", "0")))
    train_set, val_set = build_datasets(recipe, cache_dir=out / "base", device=device)
    save_config(recipe, out / "config.yaml")
    main_rank = int(os.environ.get("RANK", "0")) == 0
    cfg = recipe.train  # channels_last auto: the engine never offers it to the V2V's 5-D weights

    def eval_fn(model: VolumetricTriangulation, epoch: int) -> dict[str, float]:
        m = evaluate_volumetric(model, val_set, batch_size=recipe.eval.batch_size,
                                device=next(model.parameters()).device, out_dir=out / "eval" if main_rank else None)
        return {k: v for k, v in m.items() if isinstance(v, float)}

    sampler_fn = freeze_schedule_sampler_fn(method, cfg, len(train_set), recipe.data.objects_per_epoch)
    trainer = Trainer(cfg, method, train_set, eval_fn=eval_fn if val_set is not None else None,
                      sampler_fn=sampler_fn,
                      param_groups_fn=lambda m: volumetric_param_groups(m, cfg.weight_decay, recipe.lr_groups, cfg.lr))
    return trainer.fit(resume=resume or None)
