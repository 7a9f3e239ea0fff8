"""3D human pose and shape (SMPL) from a person crop on a (HAP / ViTPose-initialised) ViT, readable top to bottom
(pretraining.md B.9.4, HAP pitfall 10).

What HAP reports on 3DPW (90.1 MPJPE, 56.0 PA-MPJPE, 106.3 MPVPE, mm) is 3DCrowdNet with a ViT-B backbone at
256x256, **initialised from the 2D-pose fine-tuned ViTPose checkpoint** (``latest.pth``, its ``backbone.*`` minus
``mlp.experts``, pos-embed 16x12 -> 16x16), not from HAP directly. Here:

1. **model** (:class:`MeshRegressor`): the ViTPose trunk (timm ``VisionTransformer``, no class token, patch
   embedding with padding 2, final LayerNorm = ViTPose's ``last_norm``; drop path 0.3 for ViT-B) -> the token map
   ``(B, D, H/16, W/16)`` -> average-pooled to at most 8x8 (3DCrowdNet resizes 16x16 to 8x8) -> 1x1 conv + ReLU
   -> **flattened** to ``feat_dim`` (2048 = 32 channels x 64 cells; ``model.pool: avg`` instead averages a 1x1
   conv to ``feat_dim`` channels, HMR's global feature, which learns far slower on the synthetic task: 253 vs
   212 mm MPJPE after the same 300 steps) -> an HMR-style **iterative** regressor (3 iterations of
   ``theta += MLP([feature, theta])``, two 1024-wide hidden layers with dropout 0.5, the last layer initialised at
   1/100 scale) or a **direct** one, from the mean parameters (identity rotations with the root turned by pi
   about x, i.e. an upright person facing the camera; zero shape; camera ``(0.9, 0, 0)``) to ``theta`` = pose
   (24 joints in 6D), shape (10) and a weak-perspective camera ``(s, tx, ty)``: ``x_crop = s (X_xy + t)`` for
   pelvis-relative joints ``X``, in crop coordinates normalised to ``[-1, 1]``.
   Initialisation (:func:`init_backbone`): a ViTPose checkpoint (official 0.x / MMPose 1.x / our top-down runs;
   the heatmap head dropped, ``mlp.experts`` dropped, or for a ViTPose+ MoE file fused with the shared ``fc2`` for
   ``model.moe_expert``) through :func:`humanvision.models.weights.convert_vitpose_checkpoint`, or an HAP / MAE
   checkpoint through :func:`humanvision.models.mae.hap_to_vitpose` (:func:`~humanvision.models.mae.hap_to_timm`,
   cls token dropped, pos-embed 16x8 -> the model's grid, pitfall 5).
2. **SMPL** (:class:`humanvision.models.smpl.SMPL`, float32 outside autocast): the predicted pose and shape give
   vertices and the 24 joints; the user's ``SMPL_NEUTRAL.pkl`` / ``.npz``, or (synthetic recipe) a random body
   model in the same layout (:func:`~humanvision.models.smpl.write_random_smpl`).
3. **losses** (:class:`Mesh3DMethod`): L1 on the root-relative 3D joints (metres), L1 on the 2D projections of the
   joints (normalised crop coordinates, per-joint validity), MSE on the rotation matrices and on the shape
   coefficients where the sample has SMPL parameters, and a shape prior ``mean(beta^2)``; weights in ``mesh3d``.
4. **evaluation** (:func:`mesh_errors`, the 3DPW protocol of SPIN / I2L-MeshNet / 3DCrowdNet): the H36M-17 joints
   regressed from the predicted and the ground-truth mesh with ``J_regressor_h36m.npy``, each made relative to its
   pelvis (H36M joint 0), **MPJPE** over the 14 evaluation joints
   (:data:`~humanvision.models.smpl.H36M17_EVAL_JOINTS`), **PA-MPJPE** after a per-sample similarity Procrustes
   on them, **PVE / MPVPE** over all vertices after subtracting each mesh's own regressed pelvis; millimetres,
   through :mod:`humanvision.metrics.pose3d`. Without the H36M regressor (``mesh3d.eval_joints: smpl24``) the 24
   kinematic joints with the pelvis as root are used instead (not comparable to published numbers). 3DPW ground
   truth: the sequence files' ``poses`` / ``betas`` (first 10) with the actor's gendered model (``smpl.model_male``
   / ``model_female``; the neutral model when they are not given, a deviation), the root orientation rotated into
   the camera (``cam_poses``); images filtered as :class:`~humanvision.data.readers.threedpw.ThreeDPW` does
   (valid camera pose, >= 7 OpenPose joints with confidence > 0.3); the crop is the square box around the
   projected ground-truth joints x ``data.bbox_scale``.
5. **optimisation** (B.9.4): SGD without momentum, lr 1e-3, 11 epochs, lr / 10 at epoch 10, batch 192 over 8
   GPUs, AMP. ``mesh3d.backbone_lr_scale`` defaults to 1.0, reproducing 3DCrowdNet's ``set_lr`` overwriting every
   group with ``cfg.lr`` (so ``lr_backbone`` = 1e-4 never holds); 0.1 is the lr its config meant.

**Deviations, on purpose**: no pose2feat fusion of 2D-joint heatmaps after block 0 (that needs a 2D detector's
output per crop), no position_net / rotation_net / VPoser (the HMR iterative regressor replaces them), and the
published training mix (Human3.6M + MuCo with SMPL fits, COCO + MPII with NeuralAnnot fits) has no reader here:
``configs/hap_smpl_3dpw.yaml`` trains on 3DPW's own train split (which has SMPL ground truth). The numbers are
therefore not expected to match HAP's table.

**Synthetic data** (:class:`SyntheticMeshes`, ``data.source: synthetic``): random poses (axis-angle per joint,
root turned to face the camera +- 80 degrees of yaw) and shapes (N(0, 1)) -> the body model's vertices -> a
weak-perspective framing that fills 70-90% of the crop -> vertices splatted as discs coloured by their skinning
weights (24 part colours, darker with depth) on a noisy background, far to near. Known parameters, joints and
vertices for every image; deterministic from ``(seed, index)``. It is a **smoke-level** task: it shows that the
pipeline learns, not that it recovers human bodies. ``configs/smpl_vit_tiny_synthetic.yaml`` (930 steps, 1.4 CPU
minutes on 2 cores) ends at MPJPE 174 / PA-MPJPE 125 / PVE 193 mm on its 200 held-out renders, against 278 / 153 /
301 mm for the mean parameters that every evaluation also reports (``mean_params_*``).

A recipe (:class:`Mesh3DRecipe`) has the sections ``model``, ``smpl``, ``mesh3d`` (its top-level mark,
:func:`is_mesh3d_recipe`), ``data``, ``train`` and ``eval``; see ``configs/hap_smpl_3dpw.yaml`` and
``configs/smpl_vit_tiny_synthetic.yaml``.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from humanvision.config import must_exist
from humanvision.data.transforms import normalize_image
from humanvision.engine import TrainConfig
from humanvision.errors import ConfigError, DataError
from humanvision.models.smpl import (
    H36M17_EVAL_JOINTS,
    H36M17_ROOT,
    SMPL,
    SMPLModelData,
    matrix_to_rotation_6d,
    read_smpl,
    rotation_6d_to_matrix,
)

__all__ = [
    "DataConfig", "EvalConfig", "Mesh3DConfig", "Mesh3DMethod", "Mesh3DRecipe", "MeshRegressor", "ModelConfig",
    "SMPLConfig", "SyntheticMeshes", "ThreeDPWMeshes", "build_method", "build_smpl", "evaluate_mesh_model",
    "evaluate_weights", "init_backbone", "is_mesh3d_recipe", "load_recipe", "mesh_errors", "read_datasets",
    "render_vertices", "run_training", "weak_perspective",
]

_ARCHS = {"vit_tiny": (192, 12, 3), "vit_small": (384, 12, 6), "vit_base": (768, 12, 12)}


# ----------------------------------------------------------------------------------------------- the recipe
@dataclass
class ModelConfig:
    """``arch``: ``vit_tiny`` (192-d, 3 heads), ``vit_small`` (384, 6) or ``vit_base`` (768, 12), 12 blocks unless
    ``depth``; ``img_size``: (height, width), square; ``patch_size`` (16 for every checkpoint); ``pool``: ``avg``
    (1x1 conv to ``feat_dim`` channels, global average) or ``flatten`` (the token map average-pooled to at most
    8x8, 1x1 conv to ``feat_dim / cells`` channels, flattened: keeps where things are); ``head``: ``iterative``
    (HMR, ``num_iters``) or ``direct``; ``hidden_dim`` and ``dropout`` of the regressor MLP (HMR: 1024, 0.5).
    ``init``: a ViTPose checkpoint (HAP's route, pitfall 10) or an HAP / MAE checkpoint; ``init_kind``: ``auto``
    (a file with ``backbone.*`` keys is ViTPose), ``vitpose`` or ``hap``; ``init_grid``: its pos-embed grid (rows,
    cols): ViTPose at 256x192 = (16, 12), HAP = (16, 8) (null: ViTPose's inferred from the token count, HAP's
    (16, 8)); ``moe_expert``: the ViTPose+ expert
    fused into ``fc2`` when the file is a mixture-of-experts model."""

    arch: Literal["vit_tiny", "vit_small", "vit_base"] = "vit_base"
    depth: int | None = None
    img_size: tuple[int, int] = (256, 256)
    patch_size: int = 16
    drop_path_rate: float = 0.3
    feat_dim: int = 2048
    pool: Literal["avg", "flatten"] = "flatten"
    head: Literal["iterative", "direct"] = "iterative"
    num_iters: int = 3
    hidden_dim: int = 1024
    dropout: float = 0.5
    init: Path | None = must_exist()
    init_kind: Literal["auto", "vitpose", "hap"] = "auto"
    init_grid: tuple[int, int] | None = None
    moe_expert: int = 0

    def __post_init__(self) -> None:
        h, w = self.img_size
        if self.patch_size < 4 or self.patch_size % 4:
            raise ConfigError(f"model.patch_size: a multiple of 4, got {self.patch_size}")
        if h != w or h < self.patch_size or h % self.patch_size:
            raise ConfigError(f"model.img_size: a square size divisible by model.patch_size (the weak-perspective "
                              f"camera is isotropic), got {self.img_size}")
        if (self.depth is not None and self.depth < 1) or min(self.num_iters, self.feat_dim, self.hidden_dim) < 1:
            raise ConfigError("model.depth / num_iters / feat_dim / hidden_dim: must be >= 1")
        if not 0.0 <= self.drop_path_rate < 1.0 or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.drop_path_rate / dropout: must be in [0, 1), got {self.drop_path_rate} / "
                              f"{self.dropout}")


@dataclass
class SMPLConfig:
    """The body model. ``model``: ``SMPL_NEUTRAL.pkl`` / ``.npz`` (or the official ``basicModel_neutral_...pkl``);
    null writes a random stand-in (:func:`~humanvision.models.smpl.write_random_smpl`, ``random_vertices`` /
    ``random_seed``) under ``random_dir`` (synthetic data only). ``model_male`` / ``model_female``: 3DPW's
    gendered ground truth. ``h36m_regressor``: ``J_regressor_h36m.npy`` (the evaluation protocol); with the random
    model, ``random_h36m_regressor`` writes a stand-in for it."""

    model: Path | None = must_exist()
    model_male: Path | None = must_exist()
    model_female: Path | None = must_exist()
    h36m_regressor: Path | None = must_exist()
    random_dir: Path = Path("data/synthetic_smpl")
    random_vertices: int = 689
    random_seed: int = 0
    random_h36m_regressor: bool = True

    def __post_init__(self) -> None:
        if self.random_vertices < 96:
            raise ConfigError(f"smpl.random_vertices: at least 96 (4 per joint), got {self.random_vertices}")


@dataclass
class Mesh3DConfig:
    """The ``mesh3d`` section: loss weights (3D joints, 2D keypoints, pose rotation matrices, shape, shape prior),
    ``backbone_lr_scale`` (see the module docstring, point 5) and the evaluation joints: ``auto`` (``h36m14`` when
    an H36M regressor is available, else ``smpl24``), ``h36m14`` or ``smpl24``."""

    joints3d_weight: float = 5.0
    keypoints2d_weight: float = 5.0
    pose_weight: float = 1.0
    betas_weight: float = 0.01
    shape_prior_weight: float = 0.001
    backbone_lr_scale: float = 1.0
    eval_joints: Literal["auto", "h36m14", "smpl24"] = "auto"

    def __post_init__(self) -> None:
        for k in ("joints3d_weight", "keypoints2d_weight", "pose_weight", "betas_weight", "shape_prior_weight",
                  "backbone_lr_scale"):
            if getattr(self, k) < 0:
                raise ConfigError(f"mesh3d.{k}: must be >= 0, got {getattr(self, k)}")


@dataclass
class DataConfig:
    """``source``: ``3dpw`` (``root`` = the 3DPW folder with ``sequenceFiles/`` and ``imageFiles/``; splits
    ``train`` / ``validation`` / ``test``, every ``every_n``-th frame for training and ``eval_every_n``-th for
    evaluation; ``bbox_scale`` around the projected joints) or ``synthetic`` (``synthetic_train`` /
    ``synthetic_val`` renders of the body model from ``synthetic_seed``)."""

    source: Literal["3dpw", "synthetic"] = "3dpw"
    root: Path | None = must_exist()
    train_split: Literal["train", "validation", "test"] = "train"
    eval_split: Literal["train", "validation", "test"] = "test"
    every_n: int = 1
    eval_every_n: int = 1
    bbox_scale: float = 1.2
    synthetic_train: int = 2000
    synthetic_val: int = 200
    synthetic_seed: int = 0

    def __post_init__(self) -> None:
        if self.source == "3dpw" and self.root is None:
            raise ConfigError("data.root: the 3DPW folder is required with data.source: 3dpw")
        if self.every_n < 1 or self.eval_every_n < 1 or self.bbox_scale <= 0:
            raise ConfigError("data.every_n / eval_every_n: must be >= 1; data.bbox_scale: > 0")
        if self.synthetic_train < 1 or self.synthetic_val < 1:
            raise ConfigError("data.synthetic_train / synthetic_val: must be >= 1")


@dataclass
class EvalConfig:
    """``batch_size`` and ``precision`` of ``humanvision eval`` (training evaluates in the run's precision)."""

    batch_size: int = 64
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"


def _mesh_train() -> TrainConfig:
    return TrainConfig(epochs=11, batch_size=24, optimizer="sgd", momentum=0.0, lr=1e-3, weight_decay=0.0,
                       schedule="step", milestones=(10,), gamma=0.1, best_metric="pa_mpjpe", best_mode="min",
                       output_dir="runs/mesh3d")


@dataclass
class Mesh3DRecipe:
    """A recipe; without a ``train`` section the published optimisation applies."""

    name: str = "mesh3d"
    model: ModelConfig = field(default_factory=ModelConfig)
    smpl: SMPLConfig = field(default_factory=SMPLConfig)
    mesh3d: Mesh3DConfig = field(default_factory=Mesh3DConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=_mesh_train)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.data.source == "3dpw" and self.smpl.model is None:
            raise ConfigError("smpl.model: 3DPW needs the real SMPL model (SMPL_NEUTRAL.pkl / .npz; it is licensed "
                              "and not shipped); the random stand-in only serves data.source: synthetic")
        if self.mesh3d.eval_joints == "h36m14" and self.smpl.h36m_regressor is None and not (
                self.smpl.model is None and self.smpl.random_h36m_regressor):
            raise ConfigError("mesh3d.eval_joints: h36m14 needs smpl.h36m_regressor (J_regressor_h36m.npy)")


def is_mesh3d_recipe(source: Any) -> bool:
    """True for a :class:`Mesh3DRecipe`, a mapping or a YAML file with a top-level ``mesh3d`` section."""
    from humanvision.config import recipe_mapping

    return isinstance(source, Mesh3DRecipe) or "mesh3d" in recipe_mapping(source)


def load_recipe(source: str | Path | dict, overrides: list[str] | tuple[str, ...] = (),
                unchecked: tuple[str, ...] = ()) -> Mesh3DRecipe:
    """Load a mesh recipe (``unchecked``: as :func:`humanvision.config.load_config`)."""
    from humanvision.config import load_config

    return load_config(source, Mesh3DRecipe, overrides, unchecked=tuple(unchecked))


# ------------------------------------------------------------------------------------------------ the model
def _mean_params(num_joints: int, num_betas: int) -> torch.Tensor:
    """``[pose 6D (J * 6), betas (L), cam (3)]``: identity rotations, the root turned by pi about x (upright in
    the image, facing the camera), zero shape, camera ``(0.9, 0, 0)``."""
    rot = torch.eye(3).repeat(num_joints, 1, 1)
    rot[0] = torch.diag(torch.tensor([1.0, -1.0, -1.0]))
    return torch.cat([matrix_to_rotation_6d(rot).reshape(-1), torch.zeros(num_betas), torch.tensor([0.9, 0., 0.])])


class MeshRegressor(nn.Module):
    """ViTPose trunk + 1x1 conv + pooled feature + iterative (or direct) SMPL parameter regressor.

    ``forward(images)`` -> ``{"pose6d": (B, J, 6), "betas": (B, L), "cam": (B, 3)}``.
    """

    def __init__(self, img_size: tuple[int, int] = (256, 256), *, patch_size: int = 16, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, drop_path_rate: float = 0.3, feat_dim: int = 2048,
                 pool: str = "flatten", head: str = "iterative", num_iters: int = 3, hidden_dim: int = 1024,
                 dropout: float = 0.5, num_joints: int = 24, num_betas: int = 10) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        from humanvision.models.vitpose import PaddedPatchEmbed

        if head not in ("iterative", "direct") or pool not in ("avg", "flatten"):
            raise ValueError(f"head must be 'iterative' or 'direct' and pool 'avg' or 'flatten', got {head!r} / "
                             f"{pool!r}")
        self.img_size = (int(img_size[0]), int(img_size[1]))
        self.backbone = VisionTransformer(
            img_size=self.img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
            mlp_ratio=4.0, qkv_bias=True, class_token=False, no_embed_class=True, global_pool="", num_classes=0,
            drop_path_rate=drop_path_rate, embed_layer=PaddedPatchEmbed, norm_layer=partial(nn.LayerNorm, eps=1e-6))
        self.grid_size: tuple[int, int] = tuple(self.backbone.patch_embed.grid_size)
        self.depth, self.num_joints, self.num_betas = depth, num_joints, num_betas
        self.head_type, self.num_iters = head, int(num_iters) if head == "iterative" else 1
        self.pool = pool
        self.pool_size = tuple(min(g, 8) for g in self.grid_size)
        cells = self.pool_size[0] * self.pool_size[1] if pool == "flatten" else 1
        channels = max(1, feat_dim // cells)
        self.feat_dim = channels * cells
        self.neck = nn.Sequential(nn.Conv2d(embed_dim, channels, 1), nn.ReLU(inplace=True))
        feat_dim = self.feat_dim
        n = num_joints * 6 + num_betas + 3
        self.register_buffer("mean_params", _mean_params(num_joints, num_betas), persistent=False)
        if head == "iterative":
            self.regressor = nn.Sequential(
                nn.Linear(feat_dim + n, hidden_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                nn.Linear(hidden_dim, n))
        else:
            self.regressor = nn.Sequential(nn.Linear(feat_dim, hidden_dim), nn.ReLU(inplace=True),
                                           nn.Linear(hidden_dim, n))
        nn.init.xavier_uniform_(self.regressor[-1].weight, gain=0.01)
        nn.init.zeros_(self.regressor[-1].bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> the feature ``(B, feat_dim)`` (``pool``: global average or flattened map)."""
        tokens = self.backbone.forward_features(x)
        b, _, d = tokens.shape
        fmap = tokens.transpose(1, 2).reshape(b, d, *self.grid_size)
        if self.pool == "avg":
            return self.neck(fmap).mean(dim=(2, 3))
        if self.pool_size != self.grid_size:
            fmap = F.adaptive_avg_pool2d(fmap, self.pool_size)
        return self.neck(fmap).flatten(1)

    def split(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, J * 6 + L + 3)`` -> ``pose6d`` / ``betas`` / ``cam``."""
        j6 = self.num_joints * 6
        return {"pose6d": theta[:, :j6].reshape(-1, self.num_joints, 6), "betas": theta[:, j6:j6 + self.num_betas],
                "cam": theta[:, j6 + self.num_betas:]}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feat = self.forward_features(x)
        theta = self.mean_params.to(feat.dtype).expand(feat.shape[0], -1)
        if self.head_type == "direct":
            return self.split(theta + self.regressor(feat))
        for _ in range(self.num_iters):
            theta = theta + self.regressor(torch.cat([feat, theta], dim=1))
        return self.split(theta)

    @property
    def num_layers(self) -> int:
        """Layer ids for layer decay (ViTPose's rule): embeddings 0, block i -> i + 1, the rest depth + 1."""
        return self.depth + 2

    def layer_id(self, name: str) -> int:
        if name.startswith(("backbone.patch_embed", "backbone.pos_embed")):
            return 0
        m = re.match(r"backbone\.blocks\.(\d+)\.", name)
        return int(m.group(1)) + 1 if m else self.depth + 1


def _fuse_moe(state: dict[str, torch.Tensor], embed_dim: int, expert: int, file: str) -> tuple[dict, list[str]]:
    """Drop ``mlp.experts`` (HAP's loader); where ``fc2`` is narrower than the width (a ViTPose+ MoE file: the
    shared part), append expert ``expert``'s rows so that ``fc2`` computes that dataset's full output."""
    out, fused = {}, []
    for key, value in state.items():
        if ".mlp.experts." in key:
            continue
        m = re.match(r"(.*\.mlp)\.fc2\.(weight|bias)$", key)
        if m and value.shape[0] < embed_dim:
            extra = state.get(f"{m.group(1)}.experts.{expert}.{m.group(2)}")
            if extra is None or value.shape[0] + extra.shape[0] != embed_dim:
                raise DataError(f"fc2 has {value.shape[0]} of {embed_dim} outputs and no matching expert {expert} "
                                "(a mixture-of-experts ViTPose+ file: set model.moe_expert)", file=file, field=key)
            value = torch.cat([value, extra], dim=0)
            fused.append(key)
        out[key] = value
    return out, fused


def init_backbone(model: MeshRegressor, path: str | Path, kind: str = "auto", grid: Sequence[int] | None = None,
                  moe_expert: int = 0) -> dict[str, Any]:
    """Initialise ``model.backbone`` (strictly: every trunk tensor must come from the file) from a ViTPose or an
    HAP / MAE checkpoint (module docstring, point 1).

    Returns ``{"kind", "file", "resized", "fused", "dropped"}``."""
    from humanvision.engine.checkpoint import weights_file
    from humanvision.models.mae import hap_to_vitpose
    from humanvision.models.weights import convert_vitpose_checkpoint, read_checkpoint

    file = weights_file(path, "model.init")
    state = read_checkpoint(file)
    if kind == "auto":
        kind = "vitpose" if any(k.startswith("backbone.") for k in state) else "hap"
    dim = model.backbone.embed_dim
    fused: list[str] = []
    if kind == "vitpose":
        dropped = [k for k in state if not k.startswith("backbone.") or ".mlp.experts." in k]
        state, fused = _fuse_moe({k: v for k, v in state.items() if k.startswith("backbone.")}, dim, moe_expert,
                                 str(file))
        state, report = convert_vitpose_checkpoint(state, model, src_grid=tuple(grid) if grid else None,
                                                   file=str(file))
        resized, dropped = report.resized, dropped + report.dropped
    elif kind == "hap":
        old = tuple(grid) if grid else (16, 8)
        state = hap_to_vitpose(state, model.grid_size, old_grid=old, include_norm=True)
        resized, dropped = (["backbone.pos_embed"] if old != model.grid_size else []), []
    else:
        raise ConfigError(f"model.init_kind: expected auto, vitpose or hap, got {kind!r}")
    own = model.backbone.state_dict()
    sub = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    missing, unexpected = sorted(set(own) - set(sub)), sorted(set(sub) - set(own))
    bad = [k for k in sub if k in own and tuple(sub[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad:
        what = (f"missing {missing[:4]}" if missing else f"unexpected {unexpected[:4]}" if unexpected else
                f"shape {tuple(sub[bad[0]].shape)} vs the model's {tuple(own[bad[0]].shape)}")
        raise DataError(f"not a {kind} ViT of this width and depth: {what}", file=str(file),
                        field=(missing or unexpected or bad)[0])
    model.backbone.load_state_dict(sub, strict=True)
    return {"kind": kind, "file": str(file), "resized": resized, "fused": fused, "dropped": len(dropped)}


# ------------------------------------------------------------------------------------------------ the method
def weak_perspective(points: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """``(B, N, 3)`` points, ``(B, 3)`` cameras ``(s, tx, ty)`` -> ``s (X_xy + t)`` ``(B, N, 2)`` in normalised crop
    coordinates (``[-1, 1]`` spans the crop; x right, y down)."""
    return cam[:, None, :1] * (points[..., :2] + cam[:, None, 1:])


def _masked_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the entries with weight 1 (``weight`` broadcast over the trailing dims)."""
    w = weight.reshape(*weight.shape, *([1] * (pred.ndim - weight.ndim))).expand_as(pred)
    return ((pred - target).abs() * w).sum() / w.sum().clamp_min(1.0)


class Mesh3DMethod(nn.Module):
    """Regressor + SMPL + losses (module docstring, point 3). ``forward(batch)`` (``image``, ``joints3d (B, J, 3)``
    root-relative metres, ``keypoints2d (B, J, 2)`` normalised crop coordinates with ``keypoints2d_valid (B, J)``,
    ``rotmats (B, J, 3, 3)``, ``betas (B, L)``, ``has_smpl (B,)``, ``has_joints3d (B,)``) returns ``loss`` and its
    terms; :meth:`predict` gives parameters, vertices and joints."""

    def __init__(self, model: MeshRegressor, smpl: SMPL, cfg: Mesh3DConfig | None = None) -> None:
        super().__init__()
        self.model, self.smpl, self.cfg = model, smpl, cfg or Mesh3DConfig()
        if smpl.num_joints != model.num_joints or smpl.num_betas < model.num_betas:
            raise ConfigError(f"the regressor predicts {model.num_joints} joints / {model.num_betas} betas, the "
                              f"body model has {smpl.num_joints} / {smpl.num_betas}")

    @property
    def num_layers(self) -> int:
        return self.model.num_layers

    def layer_id(self, name: str) -> int:
        return self.model.layer_id(name.removeprefix("model."))

    def body(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The SMPL mesh of regressor outputs, in float32 outside autocast: adds ``rotmats``, ``vertices``,
        ``joints`` (root-relative kinematic joints) and ``root`` (the pelvis removed from both)."""
        with torch.autocast(out["cam"].device.type, enabled=False):
            rot = rotation_6d_to_matrix(out["pose6d"].float())
            body = self.smpl(rot, out["betas"].float())
        root = body.joints[:, :1]
        res = {**out, "rotmats": rot, "vertices": body.vertices, "joints": body.joints - root, "root": root}
        if body.joints_h36m is not None:
            res["joints_h36m"] = body.joints_h36m
        return res

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c = self.cfg
        out = self.body(self.model(batch["image"]))
        j3d = _masked_l1(out["joints"], batch["joints3d"].float(), batch["has_joints3d"].float())
        kp = weak_perspective(out["joints"], out["cam"].float())
        k2d = _masked_l1(kp, batch["keypoints2d"].float(), batch["keypoints2d_valid"].float())
        has = batch["has_smpl"].float()
        n = has.sum().clamp_min(1.0)
        pose = (((out["rotmats"] - batch["rotmats"].float()) ** 2).mean(dim=(1, 2, 3)) * has).sum() / n
        betas = out["betas"].float()
        shape = (((betas - batch["betas"].float()[:, :betas.shape[1]]) ** 2).mean(dim=1) * has).sum() / n
        prior = (betas ** 2).mean()
        loss = (c.joints3d_weight * j3d + c.keypoints2d_weight * k2d + c.pose_weight * pose + c.betas_weight * shape
                + c.shape_prior_weight * prior)
        return {"loss": loss, "loss_joints3d": j3d, "loss_keypoints2d": k2d, "loss_pose": pose, "loss_betas": shape,
                "shape_prior": prior}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised crops ``(B, 3, H, W)`` -> ``pose6d``, ``rotmats``, ``betas``, ``cam``, ``vertices`` (model
        frame, metres), ``joints`` (root-relative), ``joints_h36m`` (with an H36M regressor)."""
        return self.body(self.model(images))


def build_smpl(recipe: Mesh3DRecipe, quiet: bool = True) -> SMPLModelData:
    """The neutral body model of the recipe: ``smpl.model``, or the random stand-in (written once under
    ``smpl.random_dir``, with a random H36M regressor when ``smpl.random_h36m_regressor``)."""
    from humanvision.data.synthetic.cache import write_once
    from humanvision.models.smpl import write_random_h36m_regressor, write_random_smpl

    s = recipe.smpl
    if s.model is not None:
        return read_smpl(s.model)
    root = Path(s.random_dir)
    params = {"vertices": s.random_vertices, "seed": s.random_seed, "h36m": s.random_h36m_regressor}

    def generate(progress) -> None:
        path = write_random_smpl(root / "random_smpl.pkl", s.random_vertices, seed=s.random_seed)
        if s.random_h36m_regressor:
            write_random_h36m_regressor(root / "random_J_regressor_h36m.npy", path, seed=s.random_seed)

    write_once(root, params, generate, quiet=quiet, description=f"writing a random SMPL stand-in -> {root}")
    return read_smpl(root / "random_smpl.pkl")


def _h36m_regressor_path(recipe: Mesh3DRecipe) -> Path | None:
    s = recipe.smpl
    if s.h36m_regressor is not None:
        return Path(s.h36m_regressor)
    if s.model is None and s.random_h36m_regressor:
        return Path(s.random_dir) / "random_J_regressor_h36m.npy"
    return None


def build_method(recipe: Mesh3DRecipe, smpl_data: SMPLModelData | None = None, weights: str | Path | None = None,
                 quiet: bool = True) -> Mesh3DMethod:
    """The recipe's regressor + SMPL layer; the trunk from ``model.init`` unless ``weights`` (a trained mesh
    checkpoint) replace everything."""
    from humanvision.engine.checkpoint import load_state_strict

    m = recipe.model
    data = smpl_data if smpl_data is not None else build_smpl(recipe, quiet)
    dim, depth, heads = _ARCHS[m.arch]
    model = MeshRegressor(tuple(m.img_size), embed_dim=dim, depth=m.depth or depth, num_heads=heads,
                          patch_size=m.patch_size, drop_path_rate=m.drop_path_rate, feat_dim=m.feat_dim,
                          pool=m.pool, head=m.head, num_iters=m.num_iters,
                          hidden_dim=m.hidden_dim, dropout=m.dropout, num_joints=data.num_joints,
                          num_betas=min(10, data.num_betas))
    smpl = SMPL(data, h36m_regressor=_h36m_regressor_path(recipe), num_betas=min(10, data.num_betas))
    method = Mesh3DMethod(model, smpl, recipe.mesh3d)
    if weights is not None:
        load_state_strict(method, weights)
    elif m.init is not None:
        report = init_backbone(model, m.init, m.init_kind, m.init_grid, m.moe_expert)
        if not quiet and int(os.environ.get("RANK", "0")) == 0:
            print(f"backbone initialised from {report['file']} ({report['kind']}; resampled: "
                  f"{', '.join(report['resized']) or 'nothing'}; MoE fc2 fused: {len(report['fused'])}; "
                  f"{report['dropped']} keys dropped)", flush=True)
    return method


# ---------------------------------------------------------------------------------------------------- data
def _part_colours(num_joints: int) -> np.ndarray:
    hsv = np.stack([np.arange(num_joints) * 180 // num_joints, np.full(num_joints, 220), np.full(num_joints, 255)],
                   1).astype(np.uint8)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0].astype(np.float64)


def render_vertices(points: np.ndarray, colours: np.ndarray, size: int, radius: int,
                    background: np.ndarray | None = None) -> np.ndarray:
    """Splat ``points (V, 3)`` (x, y in normalised crop coordinates, z depth: larger is farther) as discs of
    ``radius`` pixels in ``colours (V, 3)`` onto a ``size`` x ``size`` RGB image; where discs overlap the nearest
    point wins (a z-buffer, vectorised: the pixels of all discs sorted by (pixel, depth), first of each kept)."""
    img = np.zeros((size, size, 3), np.uint8) if background is None else background.copy()
    r = int(radius)
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    disc = (dy ** 2 + dx ** 2) <= r * r  # radius 1: a plus sign
    dy, dx = dy[disc], dx[disc]
    px = np.floor((np.asarray(points[:, :2], np.float64) + 1.0) * (size / 2.0)).astype(np.int64)
    xs, ys = px[:, None, 0] + dx[None], px[:, None, 1] + dy[None]
    vid = np.broadcast_to(np.arange(len(points))[:, None], xs.shape)
    inside = (xs >= 0) & (xs < size) & (ys >= 0) & (ys < size)
    lin, vid = (ys * size + xs)[inside], vid[inside]
    order = np.lexsort((np.asarray(points[:, 2], np.float64)[vid], lin))
    lin, vid = lin[order], vid[order]
    first = np.flatnonzero(np.r_[True, lin[1:] != lin[:-1]])
    flat = img.reshape(-1, 3)
    flat[lin[first]] = np.clip(np.rint(np.asarray(colours, np.float64)[vid[first]]), 0, 255).astype(np.uint8)
    return img


def _rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


# per-joint std of the random axis-angle pose (radians): torso and head small, limbs larger
_POSE_STD = np.array([0.0, 0.35, 0.35, 0.15, 0.45, 0.45, 0.1, 0.2, 0.2, 0.1, 0.1, 0.1, 0.15, 0.15, 0.15, 0.2,
                      0.4, 0.4, 0.5, 0.5, 0.2, 0.2, 0.1, 0.1])


class SyntheticMeshes(Dataset):
    """Renders of the body model with known parameters (module docstring); sample ``i`` depends only on
    ``(seed, i)``. Parameters, vertices and joints are computed once at construction (batched), images are drawn
    per item. Items as :class:`Mesh3DMethod` expects, plus ``vertices (V, 3)`` (root-relative, metres) and
    ``index``."""

    def __init__(self, smpl: SMPLModelData, num: int, size: int = 96, seed: int = 0) -> None:
        self.num, self.size, self.seed = int(num), int(size), int(seed)
        nj, nb = smpl.num_joints, min(10, smpl.num_betas)
        std = np.resize(_POSE_STD, nj)
        aa, roots, betas, frames = [], [], [], []
        self.backgrounds: list[tuple[np.ndarray, int]] = []
        for i in range(self.num):
            rng = np.random.default_rng([self.seed, i])
            pose = rng.normal(0.0, 1.0, (nj, 3)) * std[:, None]
            ang = np.linalg.norm(pose, axis=1, keepdims=True)
            aa.append(np.where(ang > 1.5, pose / np.maximum(ang, 1e-9) * 1.5, pose))
            roots.append(_rot_x(math.pi) @ _rot_z(rng.normal(0, 0.1)) @ _rot_y(rng.uniform(-1.4, 1.4)))
            betas.append(rng.normal(0.0, 1.0, nb))
            frames.append((rng.uniform(0.7, 0.9), rng.uniform(-0.08, 0.08, 2)))
            self.backgrounds.append((rng.integers(0, 256, 3), int(rng.integers(0, 2**31))))
        from humanvision.models.smpl import batch_rodrigues

        rot = batch_rodrigues(torch.as_tensor(np.stack(aa)))
        rot[:, 0] = torch.as_tensor(np.stack(roots))
        betas_t = torch.as_tensor(np.stack(betas))
        layer = SMPL(smpl, num_betas=nb, dtype=torch.float64)
        verts, joints = [], []
        with torch.no_grad():
            for a in range(0, self.num, 256):
                out = layer(rot[a:a + 256], betas_t[a:a + 256])
                root = out.joints[:, :1]
                verts.append(out.vertices - root)
                joints.append(out.joints - root)
        self.rotmats = rot.float()
        self.vertices = torch.cat(verts).float()
        self.joints = torch.cat(joints).float()
        self.betas = betas_t.float()
        self.cams = torch.zeros(self.num, 3)
        for i, (fill, jitter) in enumerate(frames):
            v = self.vertices[i].double().numpy()
            lo, hi = v[:, :2].min(0), v[:, :2].max(0)
            s = 2.0 * fill / max(hi - lo)
            t = -(lo + hi) / 2 + jitter / s
            self.cams[i] = torch.tensor([s, t[0], t[1]])
        self.keypoints2d = weak_perspective(self.joints, self.cams)
        self.colours = smpl.weights @ _part_colours(nj)

    def __len__(self) -> int:
        return self.num

    def image(self, index: int) -> np.ndarray:
        """The ``(size, size, 3)`` uint8 RGB render of sample ``index``."""
        grey, noise_seed = self.backgrounds[index]
        rng = np.random.default_rng(noise_seed)
        bg = np.clip(np.asarray(grey, np.float64) * 0.4 + 40 + rng.normal(0, 8, (self.size, self.size, 3)), 0, 255)
        pts = weak_perspective(self.vertices[index:index + 1], self.cams[index:index + 1])[0].numpy()
        z = self.vertices[index, :, 2].numpy()
        shade = 1.0 - 0.35 * (z - z.min()) / max(float(np.ptp(z)), 1e-6)
        radius = max(1, round(0.035 * float(self.cams[index, 0]) * self.size / 2))
        points = np.concatenate([pts, z[:, None]], 1)
        return render_vertices(points, self.colours * shade[:, None], self.size, radius, bg.astype(np.uint8))

    def __getitem__(self, index: int) -> dict[str, Any]:
        nj = self.joints.shape[1]
        return {"image": normalize_image(self.image(index)), "joints3d": self.joints[index],
                "keypoints2d": self.keypoints2d[index], "keypoints2d_valid": torch.ones(nj),
                "rotmats": self.rotmats[index], "betas": self.betas[index], "has_smpl": torch.tensor(1.0),
                "has_joints3d": torch.tensor(1.0), "vertices": self.vertices[index], "index": index}


class ThreeDPWMeshes(Dataset):
    """3DPW people for the mesh regressor: the frames of :class:`~humanvision.data.readers.threedpw.ThreeDPW`
    (same filters), plus each actor's SMPL ``poses`` / ``betas`` from the sequence files, the root orientation
    rotated into the camera. The crop is the square around the projected ground-truth joints x ``bbox_scale``.
    Items as :class:`Mesh3DMethod` expects; with ``with_vertices`` also the ground-truth mesh ``vertices (V, 3)``
    (relative to its pelvis joint) from ``models[gender]`` (``"m"`` / ``"f"``, falling back to ``"neutral"``)."""

    def __init__(self, split_dir: str | Path, models: dict[str, SMPLModelData], size: int = 256, *,
                 image_root: str | Path | None = None, every_n: int = 1, bbox_scale: float = 1.2,
                 with_vertices: bool = False) -> None:
        from humanvision.data.io import safe_unpickle
        from humanvision.data.readers.threedpw import ThreeDPW

        self.reader = ThreeDPW(split_dir, image_root, every_n=every_n)
        self.size, self.bbox_scale, self.with_vertices = int(size), float(bbox_scale), bool(with_vertices)
        # [sequence][actor] -> (poses (N, 72), betas (10,))
        self.params: list[list[tuple[np.ndarray, np.ndarray]]] = []
        for si, f in enumerate(self.reader.files):
            d = safe_unpickle(f, encoding="latin1")
            n = len(self.reader.cam_poses[si])
            actors = []
            for key in ("poses", "betas"):
                actors_of = d.get(key)
                if not isinstance(actors_of, (list, tuple)) or len(actors_of) != len(self.reader.joints[si]):
                    raise DataError("expected a list with one entry per actor", file=f, field=key)
            for a in range(len(d["poses"])):
                poses = np.asarray(d["poses"][a], np.float64)
                betas = np.asarray(d["betas"][a], np.float64)
                betas = betas[-1] if betas.ndim == 2 else betas
                if poses.shape != (n, 72) or betas.ndim != 1 or betas.shape[0] < 10:
                    raise DataError(f"poses {poses.shape} / betas {betas.shape}: expected ({n}, 72) / (>= 10,)",
                                    file=f, record=f"actor {a}", field="poses")
                actors.append((poses, betas[:10]))
            self.params.append(actors)
        self.layers = {g: SMPL(m, num_betas=10, dtype=torch.float64) for g, m in models.items()}
        if "neutral" not in self.layers:
            raise ValueError("models needs a 'neutral' entry")

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from humanvision.geometry.rotation import axis_angle_to_matrix

        s = self.reader[index]
        si, a, t = (int(v) for v in self.reader.index[index])
        poses, betas = self.params[si][a]
        R = self.reader.cam_poses[si][t][:3, :3]
        rot = np.asarray(axis_angle_to_matrix(poses[t].reshape(24, 3)))
        rot[0] = R @ rot[0]
        uv, vis = s.keypoints_2d[0].astype(np.float64), s.visibility[0] > 0
        pts = uv[vis] if vis.any() else uv
        lo, hi = pts.min(0), pts.max(0)
        centre, side = (lo + hi) / 2, max(float(max(hi - lo)) * self.bbox_scale, 1.0)
        k = self.size / side
        M = np.array([[k, 0, self.size / 2 - k * centre[0]], [0, k, self.size / 2 - k * centre[1]]])
        crop = cv2.warpAffine(s.image.load(), M, (self.size, self.size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        joints = s.keypoints_3d[0].astype(np.float64) / 1000.0
        item = {"image": normalize_image(crop),
                "joints3d": torch.as_tensor(joints - joints[:1], dtype=torch.float32),
                "keypoints2d": torch.as_tensor((uv - centre) / (side / 2), dtype=torch.float32),
                "keypoints2d_valid": torch.as_tensor(vis, dtype=torch.float32),
                "rotmats": torch.as_tensor(rot, dtype=torch.float32),
                "betas": torch.as_tensor(betas, dtype=torch.float32), "has_smpl": torch.tensor(1.0),
                "has_joints3d": torch.tensor(1.0), "index": index}
        if self.with_vertices:
            gender = str(s.meta.get("gender", ""))[:1].lower()
            layer = self.layers.get(gender, self.layers["neutral"])
            with torch.no_grad():
                out = layer(torch.as_tensor(rot)[None], torch.as_tensor(betas)[None])
            item["vertices"] = (out.vertices[0] - out.joints[0, :1]).float()
        return item


def _gendered_models(recipe: Mesh3DRecipe, neutral: SMPLModelData) -> dict[str, SMPLModelData]:
    s = recipe.smpl
    models = {"neutral": neutral}
    for g, path in (("m", s.model_male), ("f", s.model_female)):
        if path is not None:
            models[g] = read_smpl(path)
    if len(models) < 3:
        warnings.warn("3DPW ground truth from the neutral SMPL model for actors without smpl.model_male / "
                      "model_female (the protocol uses the gendered models)", stacklevel=2)
    return models


def read_datasets(recipe: Mesh3DRecipe, smpl_data: SMPLModelData, *, train: bool = True
                  ) -> tuple[Dataset | None, Dataset]:
    """``(train set or None, evaluation set)`` of the recipe; the evaluation set carries ground-truth vertices."""
    d, size = recipe.data, recipe.model.img_size[0]
    if d.source == "synthetic":
        val = SyntheticMeshes(smpl_data, d.synthetic_val, size, seed=d.synthetic_seed + 1_000_003)
        return (SyntheticMeshes(smpl_data, d.synthetic_train, size, seed=d.synthetic_seed) if train else None), val
    root = Path(d.root)
    models = _gendered_models(recipe, smpl_data)
    val = ThreeDPWMeshes(root / "sequenceFiles" / d.eval_split, models, size, image_root=root / "imageFiles",
                         every_n=d.eval_every_n, bbox_scale=d.bbox_scale, with_vertices=True)
    tr = (ThreeDPWMeshes(root / "sequenceFiles" / d.train_split, models, size, image_root=root / "imageFiles",
                         every_n=d.every_n, bbox_scale=d.bbox_scale) if train else None)
    return tr, val


# ----------------------------------------------------------------------------------------------- evaluation
def mesh_errors(pred_vertices: np.ndarray, gt_vertices: np.ndarray, *, regressor: np.ndarray | None = None,
                pred_joints: np.ndarray | None = None, gt_joints: np.ndarray | None = None, root: int = 0,
                eval_joints: Sequence[int] | None = None, scale: float = 1000.0) -> dict[str, float]:
    """MPJPE, PA-MPJPE and PVE of meshes ``(N, V, 3)`` (metres; x ``scale`` = mm).

    Joints: ``regressor (K, V)`` applied to both meshes (the 3DPW protocol: ``J_regressor_h36m``), else the given
    ``pred_joints`` / ``gt_joints (N, K, 3)``. Both joint sets are made relative to their joint ``root``, then
    ``eval_joints`` (default: all) are compared (MPJPE; PA-MPJPE after a per-sample similarity Procrustes); each
    mesh is made relative to its own root joint for PVE (mean vertex distance). Returns ``mpjpe``, ``pa_mpjpe``,
    ``pve`` and ``num_samples``."""
    from humanvision.metrics.pose3d import mpjpe, p_mpjpe

    pv, gv = np.asarray(pred_vertices, np.float64), np.asarray(gt_vertices, np.float64)
    if pv.shape != gv.shape or pv.ndim != 3 or pv.shape[2] != 3:
        raise DataError(f"vertices {pv.shape} vs {gv.shape}: expected equal (N, V, 3)", field="vertices")
    if regressor is not None:
        r = np.asarray(regressor, np.float64)
        pj, gj = np.einsum("kv,nvc->nkc", r, pv), np.einsum("kv,nvc->nkc", r, gv)
    elif pred_joints is not None and gt_joints is not None:
        pj, gj = np.asarray(pred_joints, np.float64), np.asarray(gt_joints, np.float64)
    else:
        raise DataError("give a joint regressor or both joint sets", field="regressor")
    pr, gr = pj[:, root:root + 1], gj[:, root:root + 1]
    sel = list(range(pj.shape[1])) if eval_joints is None else list(eval_joints)
    pj, gj = (pj - pr)[:, sel] * scale, (gj - gr)[:, sel] * scale
    return {"mpjpe": mpjpe(pj, gj), "pa_mpjpe": p_mpjpe(pj, gj), "pve": mpjpe((pv - pr) * scale, (gv - gr) * scale),
            "num_samples": len(pv)}


def _protocol(method: Mesh3DMethod, eval_joints: str) -> tuple[str, np.ndarray | None, int, tuple[int, ...] | None]:
    has = method.smpl.h36m_regressor is not None
    if eval_joints == "h36m14" and not has:
        raise ConfigError("mesh3d.eval_joints: h36m14 needs smpl.h36m_regressor")
    if eval_joints == "h36m14" or (eval_joints == "auto" and has):
        return "h36m14", method.smpl.h36m_regressor.double().cpu().numpy(), H36M17_ROOT, H36M17_EVAL_JOINTS
    return "smpl24", None, 0, None


@torch.no_grad()
def evaluate_mesh_model(method: Mesh3DMethod, dataset: Dataset, eval_cfg: EvalConfig | None = None,
                        out_dir: str | Path | None = None, *, eval_joints: str = "auto",
                        device: str | torch.device | None = None, precision: str | None = None,
                        num_workers: int = 0) -> dict[str, Any]:
    """MPJPE / PA-MPJPE / PVE (mm, :func:`mesh_errors`) of ``method`` on a dataset with ground-truth
    ``vertices``; also the same errors of the regressor's mean parameters (``mean_params_*``, the baseline a
    trained model must beat). With ``out_dir``, ``metrics.json``."""
    from humanvision.engine.precision import autocast

    cfg = eval_cfg or EvalConfig()
    device = torch.device(device) if device is not None else next(method.parameters()).device
    was_training = method.training
    method.eval().to(device)
    name, regressor, root, sel = _protocol(method, eval_joints)
    preds, gts, pjs, gjs = [], [], [], []
    for batch in DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False, num_workers=num_workers):
        with autocast(device, precision or cfg.precision):
            out = method.predict(batch["image"].to(device))
        preds.append((out["vertices"] - out["root"]).float().cpu())
        pjs.append(out["joints"].float().cpu())
        gts.append(batch["vertices"].float())
        gjs.append(batch["joints3d"].float())
    method.train(was_training)
    pv, gv = torch.cat(preds).numpy(), torch.cat(gts).numpy()
    kw = {"regressor": regressor} if regressor is not None else {
        "pred_joints": torch.cat(pjs).numpy(), "gt_joints": torch.cat(gjs).numpy()}
    metrics: dict[str, Any] = mesh_errors(pv, gv, root=root, eval_joints=sel, **kw)
    mean = method.body(method.model.split(method.model.mean_params[None].float()))
    mv = (mean["vertices"] - mean["root"]).float().cpu().numpy().repeat(len(pv), 0)
    kw0 = {"regressor": regressor} if regressor is not None else {
        "pred_joints": mean["joints"].float().cpu().numpy().repeat(len(pv), 0), "gt_joints": kw["gt_joints"]}
    base = mesh_errors(mv, gv, root=root, eval_joints=sel, **kw0)
    metrics.update({f"mean_params_{k}": v for k, v in base.items() if k != "num_samples"})
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps({**metrics, "joints": name, "unit": "mm",
                                                      "root": "H36M pelvis (0)" if name == "h36m14" else
                                                      "SMPL pelvis (0)"}, indent=2))
    return metrics


def evaluate_weights(recipe: Mesh3DRecipe, weights: str | Path, out_dir: str | Path | None = None,
                     device: str | torch.device | None = None, progress: bool = False) -> dict[str, Any]:
    """``humanvision eval`` of a mesh recipe: trained ``weights`` (run folder, checkpoint folder or
    ``model.safetensors``) on the recipe's evaluation set."""
    data = build_smpl(recipe, quiet=not progress)
    method = build_method(recipe, data, weights=weights)
    _, val = read_datasets(recipe, data, train=False)
    device = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    metrics = evaluate_mesh_model(method, val, recipe.eval, out_dir, eval_joints=recipe.mesh3d.eval_joints,
                                  device=device, num_workers=recipe.train.num_workers)
    metrics["weights"] = str(weights)
    return metrics


# ------------------------------------------------------------------------------------------------- training
def _param_groups(method: Mesh3DMethod, weight_decay: float, backbone_scale: float) -> list[dict]:
    from humanvision.engine.optim import param_groups

    out = []
    for g in param_groups(method, weight_decay):
        for is_backbone in (True, False):
            pairs = [(n, p) for n, p in zip(g["param_names"], g["params"], strict=True)
                     if n.startswith("model.backbone.") == is_backbone]
            if pairs:
                out.append({**g, "params": [p for _, p in pairs], "param_names": [n for n, _ in pairs],
                            "lr_scale": g.get("lr_scale", 1.0) * (backbone_scale if is_backbone else 1.0),
                            "name": f"{g.get('name', 'group')}_{'backbone' if is_backbone else 'head'}"})
    return out


def run_training(recipe: Mesh3DRecipe, resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Train with the engine, evaluating after each ``train.eval_every`` epochs into ``<output_dir>/eval``.
    Returns the fit summary."""
    from humanvision.config import save_config
    from humanvision.engine import Trainer, seed_everything

    seed_everything(recipe.train.seed)
    data = build_smpl(recipe, quiet=quiet)
    method = build_method(recipe, data, quiet=quiet)
    train_set, val_set = read_datasets(recipe, data)
    out = Path(recipe.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(recipe, out / "config.yaml")
    main_rank = int(os.environ.get("RANK", "0")) == 0

    def eval_fn(model: Mesh3DMethod, epoch: int) -> dict[str, float]:
        m = evaluate_mesh_model(model, val_set, recipe.eval, out / "eval" if main_rank else None,
                                eval_joints=recipe.mesh3d.eval_joints, precision=trainer.choice.precision,
                                num_workers=recipe.train.num_workers)
        return {k: float(v) for k, v in m.items() if k != "num_samples"}

    groups = None
    if recipe.mesh3d.backbone_lr_scale != 1.0:
        if recipe.train.layer_decay is not None:
            raise ConfigError("mesh3d.backbone_lr_scale / train.layer_decay: use one of them")
        wd, scale = recipe.train.weight_decay, recipe.mesh3d.backbone_lr_scale
        groups = lambda m: _param_groups(m, wd, scale)
    trainer = Trainer(recipe.train, method, train_set, eval_fn=eval_fn, param_groups_fn=groups)
    return trainer.fit(resume=resume or None)
