"""Weakly supervised monocular 3D pose (Zhou et al., "Towards 3D Human Pose Estimation in the Wild: a
Weakly-supervised Approach", ICCV 2017), readable top to bottom. Written from pose3d.md §5 (seed: the
pytorch-pose-hg-3d fork); no code is taken from it.

One network predicts, for the MPII-16 joints, 2D heatmaps and a depth per joint: a depth *map* read at the joint's
2D location ("v2", :class:`~humanvision.models.ResNetDepth`, the 64.55 mm code), or one depth per joint from a
fully connected regressor (the paper's 2-stack hourglass, :class:`~humanvision.models.Hourglass3D`). Both are
supported; the recipe's model picks one (``model.default_cfg["depth_head"]``: ``map`` or ``fc``).

Training mixes 2D images (MPII) and 3D images (Human3.6M) in every batch (:class:`FusionSampler`). Each sample
carries ``has_3d``. The loss (§5.4) is

``L = L_hm + weight_3d * L_depth + weight_var * L_geometry``

* ``L_hm``: heatmap MSE (mean over B x K x H x W) on **all** samples, summed over the hourglass stacks.
* ``L_depth``: for **3D samples only**, the predicted depth at the ground-truth 2D location against the target
  (root-relative depth in crop widths, §5.3). v2: SmoothL1 (beta 1) summed over supervised joints / (count +
  1e-4); hourglass: sum of squares / K per 3D sample, divided by the batch size B. Selection is by ``torch.where``,
  so a 2D-only sample's depth target (NaN or anything else) never reaches the loss or its gradient.
* ``L_geometry``: for **2D-only samples**, the variance of the weighted bone lengths within each of the groups
  legs / arms / hips / shoulders (:data:`GEOMETRY_BONES`), from the ground-truth 2D positions and the predicted
  depths; summed over groups and samples and divided by B (§5.4 ``VarLoss``).

The three stages (§5.5, ``stage`` in the recipe): ``2d`` (2D data only, both weights 0), ``2d3d`` (fusion,
``weight_3d`` 0.1, from the stage-1 weights), ``geometry`` (adds ``weight_var`` 0.01, from the stage-2 weights).

Inference and evaluation (§5.7): flip test on heatmaps and depths, integer argmax, depth read there, pelvis-relative
pose in crop widths (:func:`decode_pose_crop`); MPII-16 -> Human3.6M-17 (ECCV'18 challenge order, which is the
``h36m17_vp`` order of :mod:`humanvision.skeletons`) with the spine and nose overwritten as midpoints, then scaled
to a total bone length of 4000 mm (:func:`metric_skeleton`). Metrics (:func:`pose3d_metrics`): the seed's
protocol (root-relative, 4000 mm bone length, no rotation; not a metric-scale MPJPE), Protocol #1 with the scale
taken from the ground truth's total bone length (the network gives no metric scale), and Protocol #2 (Procrustes).
``humanvision eval`` runs them on the recipe's Human3.6M validation subjects (:func:`evaluate_weights`);
``humanvision infer`` runs the demo (§5.8) on images and videos (:func:`predict_image`).

Differences from the seed, on purpose: images are RGB with ImageNet statistics (the seed feeds BGR); MPII joints
with ``joints_vis = 0`` are invisible (the seed counts ``(0, 0)`` as visible, §9); the depth root is the pelvis for
both networks (the hourglass branch used the thorax); the depth of 3D samples uses the Procrustes scale between the
camera-frame x, y and the 2D pixels (§5.6, as the seed does for its added 3D sets).
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
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler

from humanvision.codecs import MSRAHeatmap
from humanvision.codecs.heatmap import flip_heatmaps
from humanvision.config import must_exist
from humanvision.engine import TrainConfig, Trainer
from humanvision.engine.distributed import sample_seeds
from humanvision.errors import ConfigError, DataError
from humanvision.skeletons import SkeletonError, get_joint_map, get_skeleton

__all__ = [
    "GEOMETRY_BONES",
    "GEOMETRY_GROUPS",
    "GEOMETRY_WEIGHTS",
    "H36M17_TO_MPII16",
    "MPII16_TO_H36M17",
    "DataConfig",
    "EvalConfig",
    "FusionSampler",
    "LossConfig",
    "ModelConfig",
    "Monocular3DDataset",
    "Monocular3DPose",
    "Monocular3DRecipe",
    "SingleViews",
    "build_method",
    "check_depth_targets",
    "decode_pose_crop",
    "depth_loss",
    "evaluate_monocular3d",
    "evaluate_weights",
    "fusion_trainer",
    "geometry_loss",
    "heatmap_loss",
    "load_init_weights",
    "load_recipe",
    "metric_skeleton",
    "mpii16_to_h36m17",
    "pose3d_metrics",
    "predict_image",
    "read_depth",
    "run_training",
    "sample_actions",
    "validation_dataset",
]

NETWORK_SKELETON = "mpii16"
ROOT = 6  # MPII-16 pelvis

# ---------------------------------------------------------------------------------------- joint orders (§5.6)
#: Network MPII-16 -> Human3.6M-17 in the ECCV'18 challenge order (= ``h36m17_vp``); entries 7 (spine) and 9
#: (nose) are overwritten by midpoints in :func:`mpii16_to_h36m17`.
MPII16_TO_H36M17 = (6, 2, 1, 0, 3, 4, 5, 7, 8, 9, 9, 13, 14, 15, 12, 11, 10)
#: Human3.6M-17 (ECCV'18 / ``h36m17_vp`` order) -> MPII-16 (the seed's ``h36m_to_mpii``): MPII thorax <- H36M
#: spine ("torso"), MPII upper neck <- H36M thorax ("neck"), MPII head top <- H36M head; the nose is dropped. The
#: skeletons' registered joint map (``get_joint_map("h36m17_vp", "mpii16")``), as indices.
H36M17_TO_MPII16 = get_joint_map("h36m17_vp", NETWORK_SKELETON).indices

# ------------------------------------------------------------------------------- geometric constraint (§5.4)
#: (a, b) MPII-16 joint pairs of the bones the geometry loss compares, their weights w_e and groups.
GEOMETRY_BONES = ((0, 1), (1, 2), (3, 4), (4, 5),  # legs: R shin, R thigh, L thigh, L shin
                  (10, 11), (11, 12), (13, 14), (14, 15),  # arms: R forearm, R upper arm, L upper arm, L forearm
                  (2, 6), (3, 6),  # hips: hip to pelvis
                  (12, 8), (13, 8))  # shoulders: shoulder to upper neck
GEOMETRY_WEIGHTS = (1.0085885, 1.0, 1.0, 1.0085885, 1.1375361, 1.0, 1.0, 1.1375361, 1.0, 1.0, 1.0, 1.0)
GEOMETRY_GROUPS = (0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3)
GEOMETRY_GROUP_NAMES = ("legs", "arms", "hips", "shoulders")


# ----------------------------------------------------------------------------------------------- the recipe
@dataclass
class ModelConfig:
    """``name``: a registered 3D model (``resnet_depth_50``, ``hourglass3d_2stack``, ...); ``skeleton`` must be
    ``mpii16`` (the bone groups and joint maps are MPII-16 indices); ``input_size``: (w, h), square;
    ``args``: extra keyword arguments of the entry point."""

    name: str = "resnet_depth_50"
    skeleton: str = NETWORK_SKELETON
    input_size: tuple[int, int] | None = None
    args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from humanvision.models import check_model_args, check_model_choice

        check_model_choice(self.name, self.skeleton)
        check_model_args(self.name, self.args)
        if get_skeleton(self.skeleton).name != NETWORK_SKELETON:
            raise ConfigError(f"model.skeleton: the geometry loss and the H36M evaluation use MPII-16 joint "
                              f"indices; expected {NETWORK_SKELETON}, got {self.skeleton!r}")
        if self.input_size is not None and self.input_size[0] != self.input_size[1]:
            raise ConfigError(f"model.input_size: crops are square (depth is in crop widths), got {self.input_size}")


@dataclass
class DataConfig:
    """The 2D set (MPII, mmpose json) and the 3D set (Human3.6M, learnable-triangulation labels file and
    ``processed/`` images, one sample per frame and camera), the fusion ratio and the augmentation (§5.3).

    ``ratio_3d``: each epoch draws ``min(|3D|, ratio_3d * |2D|)`` 3D samples (``<= 0``: all). ``*_every``: keep
    every n-th H36M frame (validation: the seed subsamples x10 unless ``--full_test``). Scale
    ``*= clip(1 + scale_factor N(0,1), 1 -+ scale_factor)``; rotation ``clip(rot_factor N(0,1), -+2 rot_factor)``
    with ``rot_prob``, 2D samples only; flip with ``flip_prob``. ``box_padding``: crop side = padding x the longer
    box side (MPII uses its centre/scale protocol instead). ``sigma``: heatmap Gaussian (2; hg3d used 1)."""

    mpii_train: Path | None = must_exist()
    mpii_images: Path | None = must_exist()
    h36m_labels: Path | None = must_exist()
    h36m_root: Path | None = must_exist()
    h36m_train_subjects: tuple[str, ...] = ("S1", "S5", "S6", "S7", "S8")
    h36m_val_subjects: tuple[str, ...] = ("S9", "S11")
    h36m_train_every: int = 1
    h36m_val_every: int = 10
    ratio_3d: float = 1.0
    sigma: float = 2.0
    scale_factor: float = 0.25
    rot_factor: float = 30.0
    rot_prob: float = 0.6
    flip_prob: float = 0.5
    box_padding: float = 1.25

    def __post_init__(self) -> None:
        for key in ("h36m_train_every", "h36m_val_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"data.{key}: must be >= 1, got {getattr(self, key)}")
        if not self.sigma > 0 or not self.box_padding > 0:
            raise ConfigError(f"data.sigma / data.box_padding: must be > 0, got {self.sigma}, {self.box_padding}")
        if not 0 <= self.scale_factor < 1:
            raise ConfigError(f"data.scale_factor: must be in [0, 1), got {self.scale_factor}")
        for key in ("rot_prob", "flip_prob"):
            if not 0 <= getattr(self, key) <= 1:
                raise ConfigError(f"data.{key}: a probability in [0, 1], got {getattr(self, key)}")


@dataclass
class LossConfig:
    """``weight_3d`` (regWeight, 0.1) and ``weight_var`` (varWeight, 0.01); ``depth_loss``: ``smooth_l1`` (v2)
    or ``l2`` (the paper / hourglass branch)."""

    weight_3d: float = 0.0
    weight_var: float = 0.0
    depth_loss: Literal["smooth_l1", "l2"] = "smooth_l1"

    def __post_init__(self) -> None:
        for key in ("weight_3d", "weight_var"):
            if getattr(self, key) < 0:
                raise ConfigError(f"loss.{key}: must be >= 0, got {getattr(self, key)}")


@dataclass
class EvalConfig:
    """Human3.6M evaluation (§5.7): flip test, batch size, the total bone length of the seed's protocol (4000 mm
    in v2, 4296.99 mm in the hourglass branch)."""

    flip_test: bool = True
    batch_size: int = 32
    total_bone_length: float = 4000.0


STAGES = ("2d", "2d3d", "geometry")


@dataclass
class Monocular3DRecipe:
    """``stage``: ``2d`` | ``2d3d`` | ``geometry`` (§5.5). ``init_weights``: the previous stage's run folder,
    checkpoint folder or ``model.safetensors``; required (and must exist) for the stages after the first."""

    name: str = "zhou3d"
    stage: Literal["2d", "2d3d", "geometry"] = "2d"
    init_weights: Path | None = must_exist()
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ConfigError(f"stage: expected one of {list(STAGES)}, got {self.stage!r}")
        if self.stage != "2d" and self.init_weights is None:
            before = STAGES[STAGES.index(self.stage) - 1]
            raise ConfigError(f"init_weights: stage {self.stage!r} starts from the weights of stage {before!r}; "
                              "set init_weights to its run folder or model.safetensors")
        w3, wv = self.loss.weight_3d, self.loss.weight_var
        if self.stage == "2d" and (w3 or wv):
            raise ConfigError(f"loss.weight_3d / loss.weight_var: stage '2d' trains on 2D data only; both must be "
                              f"0, got {w3}, {wv}")
        if self.stage == "2d3d" and not (w3 > 0 and wv == 0):
            raise ConfigError(f"loss.weight_3d / loss.weight_var: stage '2d3d' needs weight_3d > 0 and no geometry "
                              f"loss (weight_var 0), got {w3}, {wv}")
        if self.stage == "geometry" and not (w3 > 0 and wv > 0):
            raise ConfigError(f"loss.weight_3d / loss.weight_var: stage 'geometry' needs both > 0, got {w3}, {wv}")


def is_monocular3d_recipe(source: Any) -> bool:
    """True for a :class:`Monocular3DRecipe`, or a mapping / YAML file with a top-level ``stage`` key (the top-down
    and PCT recipes have none)."""
    from humanvision.config import recipe_mapping

    return isinstance(source, Monocular3DRecipe) or "stage" in recipe_mapping(source)


def load_recipe(path: str | Path, overrides: Sequence[str] = (), unchecked: tuple[str, ...] = ()
                ) -> Monocular3DRecipe:
    """Load and validate a ``configs/zhou3d_*.yaml`` recipe."""
    from humanvision.config import load_config

    return load_config(path, Monocular3DRecipe, list(overrides), unchecked=unchecked)


# -------------------------------------------------------------------------------------------------- losses
def heatmap_loss(pred: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """``sum over stacks of mean((H_hat - H)^2)`` over B x K x H x W, in fp32, every sample."""
    t = target.float()
    return sum(((p.float() - t) ** 2).mean() for p in pred)  # type: ignore[return-value]


def read_depth(depth: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
    """The predicted depth of each joint: ``(B, K)`` as is (FC head), or a ``(B, K, H, W)`` map read at integer
    ``locations (B, K, 2)`` = (x, y) (clamped to the map; the caller masks joints outside it)."""
    if depth.ndim == 2:
        return depth
    h, w = depth.shape[-2:]
    x, y = locations[..., 0].clamp(0, w - 1), locations[..., 1].clamp(0, h - 1)
    return depth.flatten(-2).gather(-1, (y * w + x)[..., None])[..., 0]


def check_depth_targets(target: torch.Tensor, supervised: torch.Tensor, sample_ids: Sequence[Any] | None = None
                        ) -> None:
    """Raise a :class:`DataError` naming the sample and joint when a supervised depth target is not finite."""
    bad = supervised & ~torch.isfinite(target)
    if bool(bad.any()):
        b, j = (int(v) for v in torch.nonzero(bad)[0])
        name = sample_ids[b] if sample_ids is not None else f"batch position {b}"
        name = name.item() if isinstance(name, torch.Tensor) else name
        raise DataError(f"non-finite depth target {target[b, j].item()} for joint {j} of a 3D sample "
                        f"(batch position {b})", record=f"sample {name}", field="depth")


def depth_loss(pred: torch.Tensor, target: torch.Tensor, joint_mask: torch.Tensor, has_3d: torch.Tensor,
               kind: Literal["smooth_l1", "l2"] = "smooth_l1") -> torch.Tensor:
    """Depth loss on the joints of 3D samples that lie in the map (``joint_mask (B, K)``, ``has_3d (B,)``).

    ``smooth_l1``: ``sum SmoothL1_{beta=1}(d_hat - d) / (count + 1e-4)`` (v2). ``l2``: ``sum (d_hat - d)^2 / K``
    per 3D sample, summed and divided by the batch size B (paper / hourglass branch). Unselected entries are
    replaced, not multiplied, so NaN targets of 2D-only samples cannot leak into the value or the gradient.
    """
    sel = joint_mask.bool() & has_3d.bool()[:, None]
    diff = torch.where(sel, pred.float() - torch.where(sel, target.float(), 0.0), 0.0)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(diff, torch.zeros_like(diff), reduction="sum", beta=1.0) / (sel.sum() + 1e-4)
    if kind == "l2":
        return (diff ** 2).sum() / diff.shape[1] / diff.shape[0]
    raise ValueError(f"depth loss kind must be 'smooth_l1' or 'l2', got {kind!r}")


def _group_matrix(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    groups = torch.tensor(GEOMETRY_GROUPS, device=device)
    return F.one_hot(groups, len(GEOMETRY_GROUP_NAMES)).to(dtype)  # (E, G)


def geometry_loss(xy: torch.Tensor, depth: torch.Tensor, visible: torch.Tensor, has_3d: torch.Tensor) -> torch.Tensor:
    """The geometric constraint (§5.4 ``VarLoss``, without ``weight_var``), on 2D-only samples.

    ``xy (B, K, 2)``: ground-truth 2D positions in crop widths; ``depth (B, K)``: predicted depths in crop
    widths; ``visible (B, K)``; ``has_3d (B,)``. For each group g, over its bones e = (a, b) with both ends
    visible (n_g of them): ``l_e = w_e sqrt(|xy_a - xy_b|^2 + (d_a - d_b)^2)``, ``E_g = mean_e l_e``,
    ``L_g = sum_e (l_e - E_g)^2 / (2 n_g)``. Returns ``sum over 2D samples and groups of L_g / B`` (B: the whole
    batch). Zero when the weighted lengths within every group are equal; the gradient w.r.t. ``d_a`` is
    ``w_e^2 (l_e - E_g)(d_a - d_b) / (n_g l_e B)`` summed over the bones at ``a``.
    """
    dtype = torch.promote_types(depth.dtype, torch.float32)
    bones = torch.tensor(GEOMETRY_BONES, device=depth.device)
    a, b = bones[:, 0], bones[:, 1]
    w = torch.tensor(GEOMETRY_WEIGHTS, device=depth.device, dtype=dtype)
    xy, depth = xy.to(dtype), depth.to(dtype)
    vis = visible > 0
    valid = vis[:, a] & vis[:, b] & ~has_3d.bool()[:, None]  # (B, E)
    sq = ((xy[:, a] - xy[:, b]) ** 2).sum(-1) + (depth[:, a] - depth[:, b]) ** 2
    length = w * torch.sqrt(torch.where(valid, sq, 1.0).clamp_min(1e-12))  # (B, E)
    g = _group_matrix(depth.device, dtype)  # (E, G)
    n = valid.to(dtype) @ g  # (B, G) bones per group
    mean = (torch.where(valid, length, 0.0) @ g) / n.clamp_min(1.0)
    dev = torch.where(valid, length - mean @ g.T, 0.0)
    per_group = (dev ** 2) @ g / (2.0 * n.clamp_min(1.0))  # (B, G), 0 where n = 0
    return per_group.sum() / depth.shape[0]


# ------------------------------------------------------------------------------------- output -> 3D (§5.7)
def decode_pose_crop(heatmaps: torch.Tensor, depth: torch.Tensor, depth_unit: float = 1.0, root: int = ROOT
                     ) -> torch.Tensor:
    """``(B, K, H, W)`` heatmaps and depths (a map or ``(B, K)``) -> ``(B, K, 3)`` root-relative pose in crop
    widths: integer argmax ``(x, y)``, ``z = depth_unit * D[y, x]`` (or the joint's FC depth),
    ``p = (x / W, y / W, z) - p_root``. Weak perspective: x, y are image axes, z is depth."""
    w = heatmaps.shape[-1]
    idx = heatmaps.flatten(-2).argmax(-1)
    loc = torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], -1)
    z = read_depth(depth, loc).to(torch.float64) * depth_unit
    p = torch.cat([loc.to(torch.float64) / w, z[..., None]], -1)
    return p - p[:, root:root + 1]


def mpii16_to_h36m17(pose: np.ndarray) -> np.ndarray:
    """``(..., 16, D)`` MPII-16 -> ``(..., 17, D)`` Human3.6M-17 (ECCV'18 / ``h36m17_vp`` order) with the seed's
    overwrites: spine ``q7 = (q0 + q8) / 2`` (pelvis, thorax), nose ``q9 = (q8 + q10) / 2`` (thorax, head)."""
    p = np.asarray(pose, dtype=np.float64)
    if p.shape[-2] != 16:
        raise DataError(f"expected (..., 16, D) MPII-16 joints, got {p.shape}", field="pose")
    q = p[..., list(MPII16_TO_H36M17), :].copy()
    q[..., 7, :] = (q[..., 0, :] + q[..., 8, :]) / 2
    q[..., 9, :] = (q[..., 8, :] + q[..., 10, :]) / 2
    return q


def metric_skeleton(pose_crop: Any, total_length: float = 4000.0) -> np.ndarray:
    """§5.7 steps 3-4: a root-relative MPII-16 pose in crop widths ``(N, 16, 3)`` -> Human3.6M-17 (ECCV'18 order)
    in mm, pelvis at the origin, scaled so that the 15 evaluation bones sum to ``total_length``."""
    from humanvision.metrics.pose3d import HG_H36M17_EDGES, rescale_to_bone_length

    p = pose_crop.detach().cpu().numpy() if isinstance(pose_crop, torch.Tensor) else np.asarray(pose_crop)
    q = mpii16_to_h36m17(p.reshape(-1, 16, 3))
    q = q - q[:, :1]
    return rescale_to_bone_length(q, HG_H36M17_EDGES, total_length)


def pose3d_metrics(pred: np.ndarray, gt: np.ndarray, total_length: float = 4000.0,
                   actions: Sequence[str] | None = None) -> dict[str, Any]:
    """Human3.6M-17 (ECCV'18 order, pelvis 0) predictions from :func:`metric_skeleton` against root-relative
    camera-frame ground truth, mm.

    * ``mpjpe_hg``: the seed's protocol (§5.7; root-relative, ``total_length`` bone length, no rotation).
    * ``mpjpe_p1``: Protocol #1, root-relative MPJPE without alignment, the prediction scaled to the ground truth's
      own total bone length (the network has no metric scale).
    * ``mpjpe_p2``: Protocol #2, P-MPJPE after a similarity (Procrustes) alignment.

    With ``actions`` (one per sample) also ``per_action_hg`` / ``_p1`` / ``_p2`` and ``per_action_count``
    (trials merged, frame-weighted within each action).
    """
    from humanvision.metrics.pose3d import HG_H36M17_EDGES, evaluate_mpjpe, hg_mpjpe

    p, g = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    names = get_skeleton("h36m17_vp").joints
    hg = hg_mpjpe(p, g, total_length=total_length, root=0, actions=actions, joint_names=names)
    lim = np.asarray(HG_H36M17_EDGES)
    g_rel, p_rel = g - g[:, :1], p - p[:, :1]

    def bone(x: np.ndarray) -> np.ndarray:  # total length of the evaluation bones, per sample
        return np.linalg.norm(x[:, lim[:, 0]] - x[:, lim[:, 1]], axis=-1).sum(1)

    p1 = evaluate_mpjpe(p_rel * (bone(g_rel) / bone(p_rel))[:, None, None], g_rel, root=0, actions=actions,
                        joint_names=names)
    p2 = evaluate_mpjpe(p, g, align="procrustes", actions=actions, joint_names=names)
    out: dict[str, Any] = {"mpjpe_hg": hg.mpjpe, "mpjpe_p1": p1.mpjpe, "mpjpe_p2": p2.mpjpe, "count": hg.count}
    if actions is not None:  # trials merged ("Walking-1", "Walking-2" -> "Walking"), frame-weighted per action
        for key, res in (("hg", hg), ("p1", p1), ("p2", p2)):
            out[f"per_action_{key}"] = {k: v["mpjpe"] for k, v in res.per_action.items()}
        out["per_action_count"] = {k: v["count"] for k, v in hg.per_action.items()}
    return out


# ------------------------------------------------------------------------------------------------ the method
class Monocular3DPose(nn.Module):
    """Model + losses. ``forward(batch)`` returns the engine's loss dict; :meth:`predict` the 3D output.

    The batch (what :class:`Monocular3DDataset` yields, collated): ``image (B, 3, H, W)``, ``heatmaps (B, K, h, w)``,
    ``keypoints (B, K, 2)`` ground-truth 2D in heatmap pixels, ``visible (B, K)`` (annotated and inside the map),
    ``depth (B, K)`` root-relative depth in crop widths (NaN for 2D samples), ``has_3d (B,)`` and, for error
    messages, ``index (B,)``.
    """

    def __init__(self, model: nn.Module, *, weight_3d: float = 0.0, weight_var: float = 0.0,
                 depth_loss: Literal["smooth_l1", "l2"] = "smooth_l1") -> None:
        super().__init__()
        if not hasattr(model, "forward_pose3d"):
            raise ConfigError(f"model.name: {getattr(model, 'model_name', type(model).__name__)} has no depth "
                              "output (forward_pose3d); use resnet_depth_* or hourglass3d_*")
        self.model = model
        self.skeleton = get_skeleton(model.skeleton)
        self.weight_3d, self.weight_var, self.depth_loss_kind = float(weight_3d), float(weight_var), depth_loss
        self.depth_unit = float(model.default_cfg["depth_unit"])  # crop widths per unit of network depth
        self.num_layers = getattr(model, "num_layers", 1)

    def layer_id(self, name: str) -> int:
        return self.model.layer_id(name.removeprefix("model."))

    def no_weight_decay(self) -> set[str]:
        return {f"model.{n}" for n in self.model.no_weight_decay()}

    def losses(self, out: dict[str, Any], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The three loss terms and their weighted sum from the network output and the batch."""
        hm = out["hm"][-1]
        h, w = hm.shape[-2:]
        kp, has_3d = batch["keypoints"].float(), batch["has_3d"].bool()
        loc = torch.floor(kp + 0.5).long()
        in_map = (batch["visible"] > 0) & (loc[..., 0] >= 0) & (loc[..., 0] < w) & (loc[..., 1] >= 0) \
            & (loc[..., 1] < h)
        d_hat = read_depth(out["depth"].float(), loc)  # network units, at the ground-truth 2D locations
        target = batch["depth"].float()
        check_depth_targets(target, in_map & has_3d[:, None], batch.get("index"))
        l_hm = heatmap_loss(out["hm"], batch["heatmaps"])
        l_dep = depth_loss(d_hat, target / self.depth_unit, in_map, has_3d, self.depth_loss_kind)
        l_geo = geometry_loss(kp / w, d_hat * self.depth_unit, in_map, has_3d)
        loss = l_hm + self.weight_3d * l_dep + self.weight_var * l_geo
        return {"loss": loss, "loss_hm": l_hm.detach(), "loss_depth": l_dep.detach(), "loss_geometry": l_geo.detach()}

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.losses(self.model.forward_pose3d(batch["image"]), batch)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, flip_test: bool = True) -> dict[str, torch.Tensor]:
        """``(B, 3, H, W)`` crops -> ``heatmaps``, ``depth`` (flip-averaged: both flipped back and L/R-swapped)
        and ``pose_crop (B, K, 3)`` (:func:`decode_pose_crop`, float64)."""
        out = self.model.forward_pose3d(images)
        hm, dep = out["hm"][-1].float(), out["depth"].float()
        if flip_test:
            idx = list(self.skeleton.flip_index)
            fl = self.model.forward_pose3d(images.flip(-1))
            hm = 0.5 * (hm + flip_heatmaps(fl["hm"][-1].float(), idx))
            fd = fl["depth"].float()
            dep = 0.5 * (dep + (fd[:, idx] if fd.ndim == 2 else flip_heatmaps(fd, idx)))
        return {"heatmaps": hm, "depth": dep, "pose_crop": decode_pose_crop(hm, dep, self.depth_unit)}


_DEPTH_ONLY = ("depth_head.", "merge_features.", "merge_heatmaps.")  # parameters only the depth output uses


def load_init_weights(method: Monocular3DPose, path: str | Path, *, key: str = "init_weights",
                      require_depth: bool = False) -> None:
    """Start from a previous stage: a run folder (``best/``, else ``last/``), a checkpoint folder or a
    ``.safetensors`` file, of this method (keys ``model.*``) or of a bare model. The depth-only parameters may be
    missing (a 2D model, e.g. a SimpleBaseline for the v2 network) unless ``require_depth`` (trained weights for
    evaluation or inference); anything else that does not match is a ConfigError naming ``key``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from humanvision.engine.checkpoint import weights_file

    path = weights_file(path, key)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ConfigError(f"{key} {path}: not a safetensors weights file (a run folder, checkpoint folder or "
                          f".safetensors file): {e}") from None
    if any(k.startswith("model.") for k in state):
        state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    try:
        missing, unexpected = method.model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatch
        raise ConfigError(f"{key} {path}: {e}") from None
    if not require_depth:
        missing = [k for k in missing if not k.startswith(_DEPTH_ONLY)]
    if missing or unexpected:
        raise ConfigError(f"{key} {path}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")


def build_method(recipe: Monocular3DRecipe, weights: str | Path | None = None, *, trained: bool = False
                 ) -> Monocular3DPose:
    """The recipe's model and losses, starting from ``weights`` (default ``recipe.init_weights``).

    ``trained``: ``weights`` are the trained weights to evaluate or run (``--weights``): required, with the depth
    head, and errors name ``weights``."""
    from humanvision.models import create_model

    m = recipe.model
    kwargs = dict(m.args)
    if m.input_size is not None:
        kwargs["input_size"] = tuple(m.input_size)
    try:
        model = create_model(m.name, skeleton=m.skeleton, **kwargs)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"model ({m.name}, args {kwargs}): {e}") from None
    method = Monocular3DPose(model, weight_3d=recipe.loss.weight_3d, weight_var=recipe.loss.weight_var,
                             depth_loss=recipe.loss.depth_loss)
    if trained:
        if weights is None:
            raise ConfigError("weights: evaluation and inference need trained weights (a run folder, checkpoint "
                              "folder or model.safetensors)")
        load_init_weights(method, weights, key="weights", require_depth=True)
        return method
    w = weights if weights is not None else recipe.init_weights
    if w is not None:
        load_init_weights(method, w)
    return method


# ---------------------------------------------------------------------------------------------------- data
def to_network_joints(points: np.ndarray, skeleton: str, record: str, visible: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """``(K_src, D)`` joints of ``skeleton`` -> ``(16, D)`` MPII-16 (and the visibility): a set with a registered
    joint map to MPII-16 (the seed's maps: Human3.6M, LSP, FLIC, 3DHP, Occlusion-Person, 3DPW; see
    :data:`humanvision.skeletons.JOINT_MAPS`) goes through it, other sets convert by joint name."""
    from humanvision.skeletons import JOINT_MAPS, convert

    name = get_skeleton(skeleton).name
    try:
        if name == NETWORK_SKELETON:
            return points, visible
        if name == "h36m17":  # same joints, learnable-triangulation order -> the ECCV'18 order the seed's map reads
            if visible is None:
                points = convert(points, name, "h36m17_vp")
            else:
                points, visible = convert(points, name, "h36m17_vp", visible)
            name = "h36m17_vp"
        if (name, NETWORK_SKELETON) in JOINT_MAPS:
            joint_map = JOINT_MAPS[(name, NETWORK_SKELETON)]
            return (joint_map.apply(points), None) if visible is None else joint_map.apply(points, visible)
        if visible is None:
            return convert(points, name, NETWORK_SKELETON), None
        return convert(points, name, NETWORK_SKELETON, visible)
    except SkeletonError as e:
        raise DataError(str(e), record=record, field="skeleton") from None


def _h36m_gt(points_cam: np.ndarray, skeleton: str) -> np.ndarray:
    """Root-relative camera-frame ``(17, 3)`` in the ECCV'18 order for an H36M sample, else NaN."""
    from humanvision.skeletons import convert

    name = get_skeleton(skeleton).name if skeleton else ""
    if name not in ("h36m17", "h36m17_vp"):
        return np.full((17, 3), np.nan, np.float32)
    g = convert(points_cam, name, "h36m17_vp") if name == "h36m17" else points_cam
    return (g - g[:1]).astype(np.float32)


def pixel_depth(points_cam: np.ndarray, points_2d: np.ndarray, visible: np.ndarray, root: int = ROOT) -> np.ndarray:
    """Root-relative depth in image pixels (§5.6): ``(Z - Z_root) * b`` with ``b`` the Procrustes scale from the
    camera-frame ``(X, Y)`` (mm) to the 2D pixels over the visible joints."""
    from humanvision.geometry.procrustes import similarity_transform

    b = float(similarity_transform(points_cam[:, :2].astype(np.float64), points_2d.astype(np.float64),
                                   weights=(visible > 0).astype(np.float64)).s)
    return (points_cam[:, 2] - points_cam[root, 2]) * b


class SingleViews:
    """A multi-view reader (e.g. :class:`~humanvision.data.readers.Human36MMultiView`) as one sample per (frame,
    view); uses the reader's ``present`` (frames x cameras) table when it has one."""

    def __init__(self, reader) -> None:
        self.reader = reader
        counts = (np.asarray(reader.present).sum(1) if hasattr(reader, "present")
                  else np.array([len(reader[i].views) for i in range(len(reader))]))
        self.frame = np.repeat(np.arange(len(counts)), counts)
        self.view = np.concatenate([np.arange(c) for c in counts]) if len(counts) else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, index: int):
        return self.reader[int(self.frame[index])].views[int(self.view[index])]


class Monocular3DDataset(Dataset):
    """Reader samples (one person each) -> the method's batch items (§5.3).

    Crop: MPII samples (``meta`` centre/scale) use ``c_y += 15 scale``, side ``1.25 * 200 * scale``; others the box
    centre and ``box_padding`` x its longer side. Training augmentation: scale, rotation (2D sets only), flip with
    the MPII-16 L/R swap; then the side is capped at the image's longer side. Non-UDP affine crop to
    ``input_size``, RGB ImageNet normalisation, MSRA Gaussian heatmaps (integer centres) at stride 4.

    3D samples (``has_3d``) need ``keypoints_3d`` in the camera frame, or in the world frame with a ``camera``
    (2D keypoints are then projected when the sample has none). ``depth = (Z - Z_pelvis) * b / side``: crop widths.
    Items: ``image``, ``heatmaps``, ``keypoints`` (heatmap px), ``visible``, ``depth`` (NaN for 2D samples),
    ``has_3d``, ``index`` and ``gt_3d (17, 3)`` (root-relative camera mm in the ECCV'18 order for H36M samples,
    else NaN).
    """

    def __init__(self, reader, *, has_3d: bool, train: bool, input_size: int = 256, heatmap_size: int = 64,
                 sigma: float = 2.0, scale_factor: float = 0.25, rot_factor: float = 30.0, rot_prob: float = 0.6,
                 flip_prob: float = 0.5, box_padding: float = 1.25) -> None:
        self.reader, self.has_3d, self.train = reader, bool(has_3d), bool(train)
        self.input_size, self.heatmap_size = int(input_size), int(heatmap_size)
        self.codec = MSRAHeatmap((self.input_size,) * 2, (self.heatmap_size,) * 2, sigma=sigma)
        self.scale_factor, self.rot_factor, self.rot_prob = scale_factor, rot_factor, rot_prob
        self.flip_prob, self.box_padding = flip_prob, box_padding
        self.skeleton = get_skeleton(NETWORK_SKELETON)

    def __len__(self) -> int:
        return len(self.reader)

    def _crop_box(self, s, record: str) -> tuple[np.ndarray, float]:
        if "center" in s.meta and "scale" in s.meta:  # MPII protocol (§5.3)
            scale = float(np.asarray(s.meta["scale"]).reshape(-1)[0])
            c = np.asarray(s.meta["center"], dtype=np.float64).reshape(-1, 2)[0] + np.array([0.0, 15.0 * scale])
            return c, scale * 1.25 * 200.0
        if s.boxes is None or len(s.boxes) == 0:
            raise DataError("no box (or MPII centre/scale) to crop", record=record, field="boxes")
        x, y, w, h = np.asarray(s.boxes[0], dtype=np.float64)
        if not (w > 0 and h > 0):
            raise DataError(f"box {s.boxes[0].tolist()} has no area", record=record, field="boxes")
        return np.array([x + w / 2, y + h / 2]), max(w, h) * self.box_padding

    def _joints(self, s, record: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """MPII-16 2D keypoints (image px) and visibility; for 3D samples also the camera-frame 3D joints in
        MPII-16 and in the sample's own joint set."""
        src = s.skeleton or NETWORK_SKELETON
        cam3d = x3 = None
        if self.has_3d:
            if s.keypoints_3d is None:
                raise DataError("a 3D sample needs keypoints_3d", record=record, field="keypoints_3d")
            x3 = np.asarray(s.keypoints_3d[0], dtype=np.float64)
            if s.keypoints_3d_frame == "world":
                if s.camera is None:
                    raise DataError("world-frame keypoints_3d need a camera", record=record, field="camera")
                kp2 = s.keypoints_2d[0] if s.keypoints_2d is not None else s.camera.project(x3)
                x3 = s.camera.world_to_camera(x3)
            else:
                if s.keypoints_2d is None:
                    raise DataError("camera-frame keypoints_3d need keypoints_2d", record=record,
                                    field="keypoints_2d")
                kp2 = s.keypoints_2d[0]
            vis = (np.asarray(s.visibility_3d[0]) if s.visibility_3d is not None
                   else np.ones(len(x3), np.float32))
            cam3d, _ = to_network_joints(x3, src, record)
        else:
            if s.keypoints_2d is None:
                raise DataError("a 2D sample needs keypoints_2d", record=record, field="keypoints_2d")
            kp2 = s.keypoints_2d[0]
            vis = np.asarray(s.visibility[0]) if s.visibility is not None else np.ones(len(kp2), np.float32)
        kp, vis = to_network_joints(np.asarray(kp2, dtype=np.float64), src, record, np.asarray(vis, np.float32))
        vis = np.where(np.isfinite(kp).all(-1), vis, 0.0).astype(np.float32)
        return kp, vis, cam3d, x3

    def __getitem__(self, index: int) -> dict[str, Any]:
        from humanvision.data.transforms import flip_keypoints, flip_matrix, normalize_image
        from humanvision.geometry.affine import affine_points, get_affine_matrix, warp_crop

        s = self.reader[index]
        record = f"{s.source}: image {s.image_id}" if s.source else f"sample {index}"
        image = s.load_image()
        img_h, img_w = image.shape[:2]
        kp, vis, cam3d, cam3d_src = self._joints(s, record)
        depth_px = np.full(16, np.nan)
        if cam3d is not None:
            depth_px = pixel_depth(cam3d, kp, vis)
            if not np.isfinite(depth_px[vis > 0]).all():
                raise DataError("non-finite depth from keypoints_3d", record=record, field="keypoints_3d")
        center, side = self._crop_box(s, record)
        rot, flipped = 0.0, False
        if self.train:
            rng = np.random.default_rng(np.random.randint(0, 2**63 - 1, dtype=np.int64))  # engine-seeded
            side *= float(np.clip(rng.standard_normal() * self.scale_factor + 1, 1 - self.scale_factor,
                                  1 + self.scale_factor))
            if not self.has_3d and rng.random() < self.rot_prob:
                rot = float(np.clip(rng.standard_normal() * self.rot_factor, -2 * self.rot_factor,
                                    2 * self.rot_factor))
            if rng.random() < self.flip_prob:
                flipped = True
                kp, vis = flip_keypoints(kp, img_w, self.skeleton.flip_index, vis)
                depth_px = depth_px[list(self.skeleton.flip_index)]
                center = np.array([img_w - 1 - center[0], center[1]])
            side = min(side, float(max(img_h, img_w)))
        m = get_affine_matrix(center, (side, side), rot, (self.input_size,) * 2, udp=False)
        m_img = m
        if flipped:  # crop of the flipped image == crop of the image with (M o flip)
            f = flip_matrix(img_w)
            m_img = np.concatenate([m[:, :2] @ f[:, :2], (m[:, :2] @ f[:, 2] + m[:, 2])[:, None]], axis=1)
        crop = warp_crop(image, m_img, (self.input_size,) * 2)
        kp_crop = affine_points(kp, m)
        heatmaps = self.codec.encode(kp_crop, vis)["heatmaps"]
        stride = self.input_size / self.heatmap_size
        gt = _h36m_gt(cam3d_src, s.skeleton) if cam3d_src is not None else np.full((17, 3), np.nan)
        return {
            "image": normalize_image(crop),
            "heatmaps": torch.from_numpy(np.ascontiguousarray(heatmaps, dtype=np.float32)),
            "keypoints": torch.from_numpy((kp_crop / stride).astype(np.float32)),
            "visible": torch.from_numpy(vis.astype(np.float32)),
            "depth": torch.from_numpy((depth_px / side).astype(np.float32)),
            "has_3d": torch.tensor(self.has_3d),
            "index": index,
            "gt_3d": torch.from_numpy(np.asarray(gt, dtype=np.float32)),
        }


# --------------------------------------------------------------------------------------------- the sampler
class FusionSampler(Sampler):
    """The epoch of 2D + 3D training (§5.3 ``fusion_3d``) over ``ConcatDataset([data_3d, data_2d])`` (3D first).

    Each epoch draws ``num_subset = min(num_3d, round(ratio_3d * num_2d))`` 3D indices without replacement
    (``ratio_3d <= 0``: all of them) and mixes them with every 2D index, shuffled (``shuffle=False``: 3D subset in
    drawn order, then 2D in order). The order is a pure function of ``(seed, epoch)``, like the engine's
    :class:`~humanvision.engine.distributed.ResumableSampler`, whose interface it has: padded by repetition to a
    multiple of ``world_size``, sharded ``rank::world_size``, ``set_epoch(epoch, start)`` skips this rank's first
    ``start`` samples, and it yields ``(index, sample_seed)`` for the engine's ``SeededDataset`` (``with_seeds=False``:
    plain indices, for a plain DataLoader on the ConcatDataset).
    """

    def __init__(self, num_3d: int, num_2d: int, ratio_3d: float = 1.0, *, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1, with_seeds: bool = True) -> None:
        if num_3d < 0 or num_2d < 0 or num_3d + num_2d == 0:
            raise ConfigError(f"fusion sampler: needs samples, got {num_3d} 3D and {num_2d} 2D")
        self.num_3d, self.num_2d, self.ratio_3d = int(num_3d), int(num_2d), float(ratio_3d)
        self.num_subset = self.num_3d if ratio_3d <= 0 else min(self.num_3d, round(ratio_3d * self.num_2d))
        self.num_items = self.num_subset + self.num_2d
        self.shuffle, self.seed, self.rank, self.world_size = shuffle, int(seed), rank, world_size
        self.with_seeds = with_seeds
        self.num_samples = -(-self.num_items // world_size)  # per rank
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.num_samples - self.start

    def epoch_order(self, epoch: int | None = None) -> np.ndarray:
        """The whole epoch's ConcatDataset indices (before sharding)."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + (self.epoch if epoch is None else epoch))
        subset = torch.randperm(self.num_3d, generator=gen)[:self.num_subset].numpy()
        order = np.concatenate([subset, self.num_3d + np.arange(self.num_2d)])
        if self.shuffle:
            order = order[torch.randperm(len(order), generator=gen).numpy()]
        return order

    def __iter__(self) -> Iterator:
        order = np.resize(self.epoch_order(), self.num_samples * self.world_size)
        mine = order[self.rank::self.world_size][self.start:]
        if not self.with_seeds:
            return iter(mine.tolist())
        return iter(zip(mine.tolist(), sample_seeds(self.seed, self.epoch, mine).tolist(), strict=True))


def fusion_trainer(cfg: TrainConfig, model: nn.Module, data_3d: Dataset, data_2d: Dataset,
                   ratio_3d: float = 1.0, **kwargs: Any) -> Trainer:
    """The engine's :class:`~humanvision.engine.Trainer` on ``ConcatDataset([data_3d, data_2d])`` drawing its
    epochs with :class:`FusionSampler` (``kwargs``: the Trainer's, e.g. ``eval_fn``)."""
    return Trainer(cfg, model, ConcatDataset([data_3d, data_2d]), **kwargs,
                   sampler_fn=lambda rank, world: FusionSampler(
                       len(data_3d), len(data_2d), ratio_3d, shuffle=cfg.shuffle, seed=cfg.seed, rank=rank,
                       world_size=world))


# ---------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_monocular3d(method: Monocular3DPose, dataset: Dataset, *, batch_size: int = 32, flip_test: bool = True,
                         total_length: float = 4000.0, device: str | torch.device = "cpu", num_workers: int = 0,
                         out_dir: str | Path | None = None, actions: Sequence[str] | None = None,
                         progress: bool = False) -> dict[str, Any]:
    """§5.7 on a 3D dataset (:class:`Monocular3DDataset`, ``train=False``): predict, convert to the metric skeleton
    and compute :func:`pose3d_metrics` (per action with ``actions``, one per sample, e.g. :func:`sample_actions`);
    ``metrics.json`` in ``out_dir`` when given."""
    device = torch.device(device)
    method.eval().to(device)
    preds, gts = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    batches: Any = loader
    if progress:
        from rich.progress import track

        batches = track(loader, description="predicting", total=len(loader))
    for batch in batches:
        out = method.predict(batch["image"].to(device), flip_test=flip_test)
        preds.append(metric_skeleton(out["pose_crop"], total_length))
        gts.append(batch["gt_3d"].double().numpy())
    if not preds:
        raise DataError("no samples to evaluate", field="dataset")
    gt = np.concatenate(gts)
    if not np.isfinite(gt).all():
        raise DataError("evaluation needs Human3.6M samples with 3D ground truth (gt_3d has NaN)", field="gt_3d")
    metrics = pose3d_metrics(np.concatenate(preds), gt, total_length, actions=actions)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def sample_actions(dataset: Dataset) -> list[str] | None:
    """The action of each sample of a :class:`Monocular3DDataset` over :class:`SingleViews` of a reader that names
    them (``action_names`` / ``action_idx``, e.g. :class:`~humanvision.data.readers.Human36MMultiView`), read from
    its table without loading images; None for other datasets."""
    views = getattr(dataset, "reader", None)
    reader = getattr(views, "reader", None)
    if not isinstance(views, SingleViews) or not hasattr(reader, "action_names") or not hasattr(reader, "action_idx"):
        return None
    names, idx = list(reader.action_names), np.asarray(reader.action_idx)
    return [names[int(idx[f])] for f in views.frame]


def evaluate_weights(recipe: Monocular3DRecipe, weights: str | Path, *, out_dir: str | Path | None = None,
                     device: str | torch.device | None = None, progress: bool = False) -> dict[str, Any]:
    """``humanvision eval`` for a monocular 3D recipe: trained ``weights`` (run folder, checkpoint folder or
    ``model.safetensors``) on the recipe's Human3.6M validation subjects (``data.h36m_val_subjects``, every
    ``data.h36m_val_every``-th frame, every camera), §5.7 metrics per action (:func:`pose3d_metrics`) plus the
    evaluation settings; ``metrics.json`` in ``out_dir`` when given. ``device``: default CUDA when available."""
    d = recipe.data
    for key in ("h36m_labels", "h36m_root"):
        if getattr(d, key) is None:
            raise ConfigError(f"data.{key}: evaluation reads the Human3.6M validation subjects "
                              f"{list(d.h36m_val_subjects)}; set it (e.g. --set data.{key}=PATH)")
    method = build_method(recipe, weights, trained=True)  # before reading the labels: bad weights fail at once
    val = validation_dataset(recipe, method.model.input_size[0], method.model.heatmap_size[0])
    if val is None or len(val) == 0:
        raise DataError(f"no Human3.6M samples of subjects {list(d.h36m_val_subjects)}", file=str(d.h36m_labels),
                        field="subjects")
    device = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    metrics = evaluate_monocular3d(method, val, batch_size=recipe.eval.batch_size, flip_test=recipe.eval.flip_test,
                                   total_length=recipe.eval.total_bone_length, device=device,
                                   num_workers=recipe.train.num_workers, actions=sample_actions(val),
                                   progress=progress)
    metrics.update({"subjects": list(d.h36m_val_subjects), "every_n": d.h36m_val_every,
                    "total_bone_length": recipe.eval.total_bone_length, "flip_test": recipe.eval.flip_test,
                    "weights": str(weights)})
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


# ------------------------------------------------------------------------------------------------ inference
@torch.no_grad()
def predict_image(method: Monocular3DPose, image: np.ndarray, boxes: Any = None, *, box_padding: float = 1.25,
                  flip_test: bool = True, total_length: float = 4000.0, record: str = "image") -> dict[str, np.ndarray]:
    """§5.8 on one RGB ``(H, W, 3)`` uint8 image, one person per box.

    ``boxes``: ``(P, 4)`` xywh; each crop is centred on its box with side ``box_padding`` x the longer box side
    (as the Human3.6M crops). None: the whole image, as the seed's demo (centre ``(W/2, H/2)``, side
    ``max(H, W)``: the person must be centred). Non-UDP affine crop to the model input, RGB ImageNet statistics,
    :meth:`Monocular3DPose.predict` (flip test) on the model's device.

    Returns numpy arrays: ``boxes (P, 4)`` (the crops' boxes), ``keypoints_2d (P, 16, 2)`` MPII-16 in image pixels
    (the integer heatmap argmax that also gives the 3D x, y, mapped back through the crop), ``scores (P, 16)``
    (heatmap maxima), ``pose_crop (P, 16, 3)`` (the demo's output: MPII-16, pelvis-relative, crop widths, no
    metric scale) and ``joints_3d (P, 17, 3)`` (:func:`metric_skeleton`: ``h36m17_vp`` order, mm, pelvis at 0,
    ``total_length`` of bones).
    """
    from humanvision.data.transforms import normalize_image
    from humanvision.geometry.affine import affine_points, get_affine_matrix, invert_affine, warp_crop

    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or 0 in img.shape:
        raise DataError(f"expected an (H, W, 3) uint8 RGB image, got {img.shape} {img.dtype}", record=record,
                        field="image")
    h, w = img.shape[:2]
    if boxes is None:
        box = np.array([[0.0, 0.0, w, h]])
        centers, sides = np.array([[w / 2, h / 2]]), np.array([float(max(h, w))])
    else:
        box = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        bad = ~(np.isfinite(box).all(1) & (box[:, 2] > 0) & (box[:, 3] > 0))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"box #{i} {box[i].tolist()} has no area (xywh)", record=record, field="bbox")
        centers, sides = box[:, :2] + box[:, 2:] / 2, box_padding * box[:, 2:].max(1)
    if len(box) == 0:
        empty = {"keypoints_2d": (16, 2), "scores": (16,), "pose_crop": (16, 3), "joints_3d": (17, 3)}
        return {"boxes": box, **{k: np.zeros((0, *s)) for k, s in empty.items()}}
    size = int(method.model.input_size[0])
    mats = get_affine_matrix(centers, np.repeat(sides[:, None], 2, 1), np.zeros(len(box)), (size, size))
    crops = torch.stack([normalize_image(warp_crop(img, m, (size, size))) for m in mats])
    out = method.predict(crops.to(next(method.parameters()).device), flip_test=flip_test)
    hm = out["heatmaps"].float().cpu()
    hw = hm.shape[-1]
    scores, idx = hm.flatten(-2).max(-1)
    loc = torch.stack([idx % hw, torch.div(idx, hw, rounding_mode="floor")], -1).double().numpy()
    keypoints = affine_points(loc * (size / hw), invert_affine(mats))  # heatmap px -> crop px -> image px
    return {"boxes": box, "keypoints_2d": keypoints, "scores": scores.double().numpy(),
            "pose_crop": out["pose_crop"].cpu().numpy(), "joints_3d": metric_skeleton(out["pose_crop"], total_length)}


def export_onnx(recipe: Monocular3DRecipe, weights: str | Path, out: str | Path, *, flip_test: bool | None = None,
                **kwargs: Any):
    """``humanvision export`` of a monocular 3D recipe: the trained network's heatmaps and depths as ONNX with the
    contract of :func:`predict_image` (``data.box_padding``, ``eval.flip_test`` unless ``flip_test``,
    ``eval.total_bone_length``), read by :class:`humanvision.runtime.MonocularPose3D`. ``kwargs``: those of
    :func:`humanvision.export.export_monocular3d_onnx`."""
    from humanvision.export import export_monocular3d_onnx

    method = build_method(recipe, weights, trained=True)
    return export_monocular3d_onnx(method, out, box_padding=recipe.data.box_padding,
                                   flip_test=recipe.eval.flip_test if flip_test is None else flip_test,
                                   total_length=recipe.eval.total_bone_length, recipe=recipe.name, weights=weights,
                                   **kwargs)


# ------------------------------------------------------------------------------------------------ training
def _require(data: DataConfig, *keys: str) -> None:
    for k in keys:
        if getattr(data, k) is None:
            raise ConfigError(f"data.{k}: required for this stage")


def build_datasets(recipe: Monocular3DRecipe, input_size: int, heatmap_size: int
                   ) -> tuple[Dataset, Dataset | None, Dataset | None]:
    """(2D train, 3D train or None for stage ``2d``, 3D validation or None without H36M paths)."""
    from humanvision.data.readers import MpiiJson
    from humanvision.data.readers.h36m import Human36MMultiView

    d = recipe.data
    _require(d, "mpii_train")
    aug = {"sigma": d.sigma, "scale_factor": d.scale_factor, "rot_factor": d.rot_factor, "rot_prob": d.rot_prob,
           "flip_prob": d.flip_prob, "box_padding": d.box_padding, "input_size": input_size,
           "heatmap_size": heatmap_size}
    data_2d = Monocular3DDataset(MpiiJson(d.mpii_train, d.mpii_images), has_3d=False, train=True, **aug)
    if recipe.stage != "2d":
        _require(d, "h36m_labels", "h36m_root")
    data_3d = None
    if d.h36m_labels is not None and d.h36m_root is not None and recipe.stage != "2d":
        train_reader = Human36MMultiView(d.h36m_labels, d.h36m_root, subjects=d.h36m_train_subjects,
                                         every_n=d.h36m_train_every)
        data_3d = Monocular3DDataset(SingleViews(train_reader), has_3d=True, train=True, **aug)
    return data_2d, data_3d, validation_dataset(recipe, input_size, heatmap_size)


def validation_dataset(recipe: Monocular3DRecipe, input_size: int, heatmap_size: int) -> Dataset | None:
    """The Human3.6M validation set (``data.h36m_val_subjects``, every ``h36m_val_every``-th frame, one sample per
    frame and camera, no augmentation); None without the H36M paths."""
    from humanvision.data.readers.h36m import Human36MMultiView

    d = recipe.data
    if d.h36m_labels is None or d.h36m_root is None:
        return None
    reader = Human36MMultiView(d.h36m_labels, d.h36m_root, subjects=d.h36m_val_subjects, every_n=d.h36m_val_every)
    return Monocular3DDataset(SingleViews(reader), has_3d=True, train=False, input_size=input_size,
                              heatmap_size=heatmap_size, sigma=d.sigma, box_padding=d.box_padding)


def run_training(recipe: Monocular3DRecipe, resume: bool = False) -> dict[str, Any]:
    """Train the recipe's stage with the engine: stage ``2d`` on MPII alone, the later stages on the MPII + H36M
    fusion (:class:`FusionSampler`); evaluation on H36M validation after each ``train.eval_every`` epochs when its
    paths are set. Returns the fit summary."""
    from humanvision.config import save_config
    from humanvision.engine import Trainer, seed_everything

    seed_everything(recipe.train.seed)
    method = build_method(recipe)  # before any data work: a bad model or init_weights fails at once
    w, _ = method.model.input_size
    data_2d, data_3d, val = build_datasets(recipe, w, method.model.heatmap_size[0])
    out = Path(recipe.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(recipe, out / "config.yaml")
    main_rank = int(os.environ.get("RANK", "0")) == 0
    actions = sample_actions(val) if val is not None else None

    def eval_fn(model: Monocular3DPose, epoch: int) -> dict[str, float]:
        m = evaluate_monocular3d(model, val, batch_size=recipe.eval.batch_size, flip_test=recipe.eval.flip_test,
                                 total_length=recipe.eval.total_bone_length,
                                 device=next(model.parameters()).device, out_dir=out / "eval" if main_rank else None,
                                 actions=actions)
        return {k: v for k, v in m.items() if isinstance(v, float)}

    fn = eval_fn if val is not None else None
    if data_3d is None:
        trainer = Trainer(recipe.train, method, data_2d, eval_fn=fn)
    else:
        trainer = fusion_trainer(recipe.train, method, data_3d, data_2d, recipe.data.ratio_3d, eval_fn=fn)
    return trainer.fit(resume=resume or None)
