"""HCMoCo pre-training (hierarchical multi-modal contrast, CVPR 2022) readable top to bottom: recipe, data,
method, two-stage initialisation, optimisation, evaluation, export (pretraining.md Part A: A.2.2-A.2.3, A.4.5,
A.5, A.6 and the HCMoCo pitfalls).

HCMoCo trains two HRNets (RGB, depth) and a SemGCN keypoint encoder (:class:`~humanvision.models.hcmoco.HCMoCo`)
on NTU RGB+D (RGB + depth + skeleton) mixed with MPII or COCO (RGB + keypoints, depth missing), in two stages of
100 epochs. Here:

1. **data** (A.2.2-A.2.3, :class:`HcmocoDataset`): the 9-field sample (:class:`~humanvision.data.readers.ntu.
   HcmocoSample`) as a dict of tensors. Index space: the keypoint-only source first (indices ``< len(db)``), then
   NTU, so ``index`` is the memory-bank row. NTU: :func:`~humanvision.data.readers.ntu.ntu_hcmoco_sample` (square
   crop inside the joints' box, side from the (0.08, 1.2) area rule, depth nearest, no flip). MPII / COCO
   (:class:`KeypointOnlyHcmoco`): HRNet's affine crop (MPII ``c_y += 15 s, s *= 1.25``; COCO box -> aspect 1,
   ``x 1.25``), scale ``clip(1 + 0.25 N, 0.75, 1.25)``, rotation ``clip(30 N, -60, 60)`` with p 0.6, bilinear,
   no flip; depth channels 0, ``depth_mask`` 0, ``true_depth`` 0 (pitfall 4: the depth encoder still runs on the
   zeros and its features still go to the bank); ``norm_joints`` from the un-augmented joints (pitfall 8).
   All coordinates on the loss side are **(row, col)** (pitfall 1).
2. **sampling** (A.2.3, :class:`WeightedMixSampler`): with a keypoint source, each epoch is ``N = N_db + N_ntu``
   draws with replacement, weight ``N_ntu / N`` for MPII/COCO items and ``N_db / N`` for NTU items (about 50%
   each); a pure function of ``(seed, epoch)``, sharded like the engine's sampler. NTU alone (or
   ``data.weighted_sampler: false``): the engine's uniform permutation.
3. **method** (:class:`HCMoCoPretrain`): the model plus the :class:`~humanvision.methods.hcmoco_losses.
   CMCMemoryBank` (``N x 128`` per modality, a *buffer* of the method, so the engine's checkpoints hold it and a
   resumed run restores it). ``forward(batch)`` = :func:`~humanvision.methods.hcmoco_losses.hcmoco_loss`: stage 1
   the six sample terms, stage 2 those + 2 dense + 2 joint + L_scl, every weight 1 (A.4.5, pitfall 7).
4. **stage 2** (A.5, :func:`load_stage1`): ``hcmoco.init`` (our stage-1 run / checkpoint, or an official
   ``{'model', 'contrast'}`` file) gives the weights **and** the memory bank (pitfall 3); the new
   ``encoder{1,2}_linear`` start random; a bank whose size differs from the dataset is a ConfigError naming both.
5. **optimisation** (A.5): SGD (momentum 0.9), lr 0.03, weight decay 1e-4 on **all** parameters (PyContrast's
   ``SGD(model.parameters())``; ``hcmoco.decay_all_params: false`` uses the engine's no-decay rule instead),
   cosine **per epoch** (:class:`EpochCosineSchedule`: ``lr_e = eta_min + (lr - eta_min)(1 + cos(pi e / E)) / 2``
   for epochs ``e = 1..E``, constant inside an epoch, eta_min = 0.001 lr = 3e-5 via ``train.min_lr_ratio``), no
   warm-up, fp32; a fresh optimiser and the same schedule in stage 2. Batch 224 in total (``train.batch_size``
   is per process).
6. **evaluation** (:func:`retrieval_metrics`, every ``train.eval_every`` epochs): top-1 cross-modal retrieval
   among ``hcmoco.eval_samples`` fixed NTU crops (RGB -> depth, RGB -> keypoints, depth -> keypoints; chance is
   1 / count). The training accuracies of every loss term (``acc_*``) are logged with the losses.
7. **export** (A.6, :func:`export_encoders`): ``rgb_encoder.pth`` / ``depth_encoder.pth``, the flat HRNet state
   dicts of ``encoder1`` / ``encoder2`` (``transfer_ckpt.py`` / ``transfer_ckpt_depth.py``), checked to load
   strictly into :class:`~humanvision.models.hcmoco.HRNetEncoder` before they are written; for the point-cloud
   variant ``point_encoder.pth`` (the PointNet++ trunk) in place of ``depth_encoder.pth``; with ``densepose``
   also ``rgb_encoder_densepose.pkl``, the RGB encoder as detectron2 loads it (A.7.1,
   :mod:`humanvision.models.detectron2_export`).
8. **point-cloud variant** (A.3.4, ``hcmoco.depth_encoder: pointnet`` with an ``hcmoco_*_pn*`` model,
   :class:`~humanvision.models.hcmoco.HCMoCoPN`): the dataset adds ``grid_rc`` / ``frame_hw`` / ``depth_mean``
   (:func:`~humanvision.data.readers.ntu.ntu_point_fields`; zeros for keypoint-only samples, whose point cloud is
   then all zeros) and the model builds and samples the cloud itself; losses, bank, stages and masking unchanged.

Checkpoints are the engine's (``<output_dir>/last``): ``model.*`` = the official ``ckpt['model']`` keys without
``module.``, ``bank.memory_{1,2,3}`` = ``ckpt['contrast']['memory_{1,2,3}']``. Under DDP the bank is left out of
DDP's buffer broadcast (every rank starts from the same seeded bank and applies the same all-gathered updates).

Choices the brief leaves open (ours): repeated draws of one item in an epoch get different augmentations (the
per-sample seed hashes the draw position, not the index; the original draws fresh randomness per call); the
original's NTU visibility typo is off (``data.visibility_typo``, pitfall 9).
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Sampler, default_collate

from humanvision.config import must_exist
from humanvision.data.io import read_image
from humanvision.data.readers.ntu import (
    HCMOCO_JOINT_SETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    HcmocoSample,
    NtuHcmoco,
    hcmoco_norm_joints,
    ntu_crop_params,
    ntu_hcmoco_sample,
    ntu_point_fields,
)
from humanvision.engine import TrainConfig
from humanvision.engine.distributed import sample_seeds
from humanvision.engine.optim import LRSchedule
from humanvision.errors import ConfigError, DataError
from humanvision.geometry.affine import affine_points, bbox_xywh_to_cs, get_affine_matrix, warp_crop
from humanvision.methods.hcmoco_losses import CMCMemoryBank, hcmoco_loss
from humanvision.models.hcmoco import (
    TINY_HRNET,
    TINY_POINTNET,
    HCMoCo,
    HCMoCoPN,
    HRNetEncoder,
    convert_official_checkpoint,
    extract_encoder,
)

__all__ = [
    "EpochCosineSchedule", "HCMoCoConfig", "HCMoCoDataConfig", "HCMoCoPretrain", "HCMoCoRecipe", "HcmocoDataset",
    "KeypointOnlyHcmoco", "WeightedMixSampler", "build_dataset", "build_method", "eval_indices", "export_encoders",
    "is_hcmoco_recipe", "load_recipe", "load_stage1", "prepare_synthetic", "read_pretraining_checkpoint",
    "retrieval_metrics", "run_training", "sample_to_item", "sampler_fn",
]

_KEYPOINT_SKELETON = {"mpii": "mpii16", "coco": "coco13"}


# ----------------------------------------------------------------------------------------------- the recipe
@dataclass
class HCMoCoConfig:
    """The ``hcmoco`` section (its distinguishing key; defaults: the published HRNet-W18 run, A.5).

    ``stage``: 1 (L_sample only, a stage-1 model has no dense heads) or 2 (all four losses). ``model``: a
    registered ``hcmoco_*`` entry point, ``model_args`` its extra arguments; ``skeleton``: the SemGCN graph and
    joint set (``mpii16`` with MPII, ``coco13`` with COCO). ``init``: stage 2 only, required: the stage-1 run
    folder, checkpoint folder, ``model.safetensors`` or an official ``{'model', 'contrast'}`` ``.pth``; weights and
    memory bank are loaded. ``imagenet_weights``: stage 1 only: an ImageNet HRNet checkpoint
    (``hrnetv2_w18_imagenet_pretrained.pth``) for both image encoders (A.3.1); null: the HRNet initialisation.
    ``num_negatives`` K, ``temperature`` T, ``momentum`` (bank update), ``num_dense_points`` (L_dense samples
    per image): A.5's 16384, 0.07, 0.5, 400. ``bank_seed``: seeds the bank's initial rows. ``lr_schedule``:
    ``epoch`` (:class:`EpochCosineSchedule`, needs ``train.schedule: cosine`` and no warm-up) or ``engine``
    (the engine's per-step ``train.schedule``). ``decay_all_params``: weight decay on every parameter, biases and
    BN included (the original). ``eval_samples``: NTU crops of the retrieval evaluation (0: no evaluation).
    ``depth_encoder``: ``hrnet`` (A.3.1) or ``pointnet`` (A.3.4, the code's ``--arch HRNetPN``: PointNet++ on the
    back-projected depth crop; needs an ``HCMoCoPN`` model such as ``hcmoco_hrnet_w18_pn`` / ``hcmoco_pn_tiny``,
    whose ``model_args.num_points`` sets the points per crop)."""

    stage: int = 1
    model: str = "hcmoco_hrnet_w18"
    model_args: dict[str, Any] = field(default_factory=dict)
    skeleton: Literal["mpii16", "coco13"] = "mpii16"
    init: Path | None = must_exist()
    imagenet_weights: Path | None = must_exist()
    num_negatives: int = 16384
    temperature: float = 0.07
    momentum: float = 0.5
    num_dense_points: int = 400
    bank_seed: int = 0
    lr_schedule: Literal["epoch", "engine"] = "epoch"
    decay_all_params: bool = True
    eval_samples: int = 64
    depth_encoder: Literal["hrnet", "pointnet"] = "hrnet"

    def __post_init__(self) -> None:
        from humanvision.models import is_model, list_models
        from humanvision.models.hcmoco import is_point_cloud_model

        if isinstance(self.stage, bool) or self.stage not in (1, 2):
            raise ConfigError(f"hcmoco.stage: 1 (sample-level loss) or 2 (all four losses), got {self.stage!r}")
        if not (is_model(self.model) and self.model.startswith("hcmoco_")):
            raise ConfigError(f"hcmoco.model: expected one of {', '.join(list_models('hcmoco_*'))}, got "
                              f"{self.model!r}")
        if is_point_cloud_model(self.model) != (self.depth_encoder == "pointnet"):
            kind = "a PointNet++" if is_point_cloud_model(self.model) else "an HRNet"
            raise ConfigError(f"hcmoco.depth_encoder: {self.depth_encoder!r} but hcmoco.model {self.model!r} has "
                              f"{kind} depth encoder; point-cloud models: "
                              f"{', '.join(m for m in list_models('hcmoco_*') if is_point_cloud_model(m))}")
        if self.stage == 2 and self.init is None:
            raise ConfigError("hcmoco.init: stage 2 starts from the stage-1 run (its weights and memory bank); set "
                              "it to the stage-1 output_dir or checkpoint")
        if self.stage == 1 and self.init is not None:
            raise ConfigError(f"hcmoco.init: only stage 2 starts from a stage-1 run, got {self.init} in stage 1 "
                              "(use hcmoco.imagenet_weights for ImageNet encoders, or --resume to continue a run)")
        if self.stage == 2 and self.imagenet_weights is not None:
            raise ConfigError("hcmoco.imagenet_weights: stage 2 takes every weight from hcmoco.init; set it to null")
        if self.num_negatives < 1 or self.num_dense_points < 1 or self.eval_samples < 0:
            raise ConfigError(f"hcmoco.num_negatives / num_dense_points / eval_samples: need >= 1 / >= 1 / >= 0, "
                              f"got {self.num_negatives} / {self.num_dense_points} / {self.eval_samples}")
        if not self.temperature > 0 or not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"hcmoco.temperature / momentum: need > 0 / in [0, 1), got {self.temperature} / "
                              f"{self.momentum}")


@dataclass
class HCMoCoDataConfig:
    """The ``data`` section (A.2).

    ``source: files`` reads HCMoCo's preprocessed NTU RGB+D under ``ntu_root``
    (:class:`~humanvision.data.readers.ntu.NtuHcmoco`; ``frame_list`` / ``missing_skeletons`` as there) and, with
    ``keypoint_source: mpii`` (HRNet ``annot/train.json``) or ``coco`` (``person_keypoints_train2014.json``), the
    RGB + keypoint source ``keypoint_ann`` with images under ``keypoint_images``. ``source: synthetic`` writes
    ``synthetic_ntu`` NTU-layout frames (and ``synthetic_mpii`` MPII-format images when ``keypoint_source: mpii``)
    of ``synthetic_size = (W, H)`` into ``synthetic_dir`` once and reads them. ``weighted_sampler``: the 50/50
    mix with replacement (A.2.3; only with a keypoint source). ``crop_size``: S (320). ``scale_factor`` /
    ``rotation_factor`` / ``rotation_prob``: the keypoint source's affine augmentation (0.25, 30, 0.6).
    ``visibility_typo``: replicate the original NTU visibility typo (pitfall 9)."""

    source: Literal["files", "synthetic"] = "files"
    ntu_root: Path | None = must_exist()
    frame_list: Path | None = must_exist()
    missing_skeletons: Path | None = must_exist()
    keypoint_source: Literal["none", "mpii", "coco"] = "none"
    keypoint_ann: Path | None = must_exist()
    keypoint_images: Path | None = must_exist()
    weighted_sampler: bool = True
    crop_size: int = 320
    scale_factor: float = 0.25
    rotation_factor: float = 30.0
    rotation_prob: float = 0.6
    visibility_typo: bool = False
    synthetic_dir: Path = Path("data/synthetic_ntu_hcmoco")
    synthetic_ntu: int = 240
    synthetic_mpii: int = 240
    synthetic_size: tuple[int, int] = (512, 424)
    synthetic_seed: int = 0

    def __post_init__(self) -> None:
        if self.crop_size < 32 or self.crop_size % 32:
            raise ConfigError(f"data.crop_size: a multiple of 32 (the HRNet's stride), got {self.crop_size}")
        if not 0.0 <= self.scale_factor < 1.0 or self.rotation_factor < 0 or not 0.0 <= self.rotation_prob <= 1.0:
            raise ConfigError(f"data.scale_factor / rotation_factor / rotation_prob: need [0, 1) / >= 0 / [0, 1], "
                              f"got {self.scale_factor} / {self.rotation_factor} / {self.rotation_prob}")
        if self.source == "synthetic":
            if self.keypoint_source == "coco":
                raise ConfigError("data.keypoint_source: the synthetic source writes MPII-format keypoint images "
                                  "only; use mpii or none")
            if self.synthetic_ntu < 1 or (self.keypoint_source == "mpii" and self.synthetic_mpii < 1):
                raise ConfigError(f"data.synthetic_ntu / synthetic_mpii: need >= 1, got {self.synthetic_ntu} / "
                                  f"{self.synthetic_mpii}")
        else:
            if self.ntu_root is None:
                raise ConfigError("data.ntu_root: the preprocessed NTU RGB+D folder is required with source: files")
            if self.keypoint_source != "none" and self.keypoint_ann is None:
                raise ConfigError(f"data.keypoint_ann: the {self.keypoint_source} annotation file is required with "
                                  f"keypoint_source: {self.keypoint_source}")


@dataclass
class HCMoCoRecipe:
    """An HCMoCo pre-training recipe: ``hcmoco`` (the distinguishing section), ``data``, ``train`` (the engine's)."""

    name: str = "hcmoco"
    hcmoco: HCMoCoConfig = field(default_factory=HCMoCoConfig)
    data: HCMoCoDataConfig = field(default_factory=HCMoCoDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        src = self.data.keypoint_source
        if src != "none" and _KEYPOINT_SKELETON[src] != self.hcmoco.skeleton:
            raise ConfigError(f"hcmoco.skeleton: keypoint_source {src} uses {_KEYPOINT_SKELETON[src]}, got "
                              f"{self.hcmoco.skeleton!r}")
        if self.hcmoco.lr_schedule == "epoch":
            if self.train.schedule != "cosine":
                raise ConfigError(f"train.schedule: hcmoco.lr_schedule: epoch is a per-epoch cosine; set "
                                  f"train.schedule: cosine (got {self.train.schedule!r}) or hcmoco.lr_schedule: engine")
            if self.train.warmup_iters or self.train.warmup_epochs:
                raise ConfigError("train.warmup_iters / warmup_epochs: hcmoco.lr_schedule: epoch has no warm-up "
                                  "(A.5); set them to 0 or use hcmoco.lr_schedule: engine")


def is_hcmoco_recipe(source: Any) -> bool:
    """True for an :class:`HCMoCoRecipe`, a mapping or a YAML file with a top-level ``hcmoco`` section."""
    from humanvision.config import recipe_mapping

    return isinstance(source, HCMoCoRecipe) or "hcmoco" in recipe_mapping(source)


def load_recipe(source: str | Path | dict, overrides: list[str] | tuple[str, ...] = (),
                unchecked: tuple[str, ...] = ()) -> HCMoCoRecipe:
    """Load an HCMoCo recipe (``unchecked`` as :func:`humanvision.config.load_config`)."""
    from humanvision.config import load_config

    return load_config(source, HCMoCoRecipe, overrides, unchecked=unchecked)


# ------------------------------------------------------------------------------------------------- the data
def sample_to_item(sample: HcmocoSample) -> dict[str, Any]:
    """The 9-field sample as the dict of tensors a batch is collated from (same names as the fields)."""
    return {"rgbd": torch.from_numpy(np.ascontiguousarray(sample.rgbd, dtype=np.float32)),
            "index": int(sample.index),
            "norm_joints": torch.from_numpy(np.asarray(sample.norm_joints, dtype=np.float32)),
            "joints3d": torch.from_numpy(np.asarray(sample.joints3d, dtype=np.float32)),
            "original_joints2d": torch.from_numpy(np.asarray(sample.original_joints2d, dtype=np.float32)),
            "joints_vis": torch.from_numpy(np.asarray(sample.joints_vis, dtype=np.int64)),
            "true_depth": int(sample.true_depth),
            "depth_mask": torch.from_numpy(np.asarray(sample.depth_mask, dtype=bool)),
            "scale": torch.tensor(float(sample.scale), dtype=torch.float32)}


class KeypointOnlyHcmoco:
    """MPII or COCO people as HCMoCo samples without depth (A.2.3, "MPII / COCO").

    ``reader``: :class:`~humanvision.data.readers.mpii.MpiiJson` (``kind="mpii"``, joint set ``mpii16``) or
    :class:`~humanvision.data.readers.coco.CocoKeypoints` in instance mode (``kind="coco"``, COCO-17 mapped to
    ``coco13``). Crop centre / size: MPII ``c_y += 15 s``, ``s *= 1.25`` (s = height / 200); COCO the box made
    square, ``x 1.25``. Then ``s *= clip(1 + sf N, 1 - sf, 1 + sf)`` and a rotation ``clip(rf N, -2 rf, 2 rf)``
    degrees with probability ``rot_prob`` (HRNet's draws, in that order), one affine warp to ``S x S``
    (bilinear, zero border; the non-UDP HRNet matrix). ``joints_vis`` = annotated and inside the crop;
    ``norm_joints`` from the original joints (annotated ones only)."""

    def __init__(self, reader: Any, kind: Literal["mpii", "coco"], crop_size: int = 320, scale_factor: float = 0.25,
                 rotation_factor: float = 30.0, rotation_prob: float = 0.6) -> None:
        if kind not in _KEYPOINT_SKELETON:
            raise ConfigError(f"data.keypoint_source: 'mpii' or 'coco', got {kind!r}")
        self.reader, self.kind = reader, kind
        self.joint_set = HCMOCO_JOINT_SETS[_KEYPOINT_SKELETON[kind]]
        self.crop_size, self.scale_factor = int(crop_size), float(scale_factor)
        self.rotation_factor, self.rotation_prob = float(rotation_factor), float(rotation_prob)
        self.source = getattr(reader, "source", kind)

    def __len__(self) -> int:
        return len(self.reader)

    def center_scale(self, index: int) -> tuple[np.ndarray, float, np.ndarray, np.ndarray, str]:
        """``(center (2,), side px, joints (J, 2) (x, y), annotated (J,) bool, image path)`` before augmentation."""
        s = self.reader[index]
        if self.kind == "mpii":
            c = np.asarray(s.meta["center"][0], dtype=np.float64).copy()
            scale = float(s.meta["scale"][0])
            c[1] += 15.0 * scale
            side = scale * 1.25 * 200.0
        else:
            c, wh = bbox_xywh_to_cs(np.asarray(s.boxes[0], dtype=np.float64), 1.0, 1.25)
            side = float(wh[0])
        sel = list(self.joint_set.from_source)
        joints = np.asarray(s.keypoints_2d[0], dtype=np.float64)[sel]
        annotated = np.asarray(s.visibility[0])[sel] > 0
        if not np.isfinite(joints[annotated]).all():
            raise DataError("non-finite annotated joint", file=self.source, record=f"person {index}",
                            field="keypoints")
        return c, side, joints, annotated, s.image_path

    def sample(self, index: int, bank_index: int, rng: np.random.Generator) -> HcmocoSample:
        """The 9-field sample of person ``index`` stored under memory-bank row ``bank_index``."""
        c, side, joints, annotated, path = self.center_scale(index)
        sf, rf = self.scale_factor, self.rotation_factor
        side *= float(np.clip(rng.standard_normal() * sf + 1.0, 1.0 - sf, 1.0 + sf))
        rot = float(np.clip(rng.standard_normal() * rf, -2.0 * rf, 2.0 * rf)) if rng.random() < self.rotation_prob \
            else 0.0
        S = self.crop_size
        m = get_affine_matrix(c, np.array([side, side]), rot, (S, S), udp=False)
        image = read_image(path)
        crop = warp_crop(image, m, (S, S)).astype(np.float32) / 255.0
        crop = (crop - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
        xy = affine_points(joints, m)
        vis = annotated & (xy[:, 0] >= 0) & (xy[:, 0] < S) & (xy[:, 1] >= 0) & (xy[:, 1] < S)
        rc = np.where(vis[:, None], xy[:, ::-1], 0.0).astype(np.float32)
        pts = rc[vis].astype(np.float64)
        scale = float(np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)).max()) if len(pts) >= 2 else 80.0
        rgbd = np.concatenate([crop.transpose(2, 0, 1), np.zeros((3, S, S), np.float32)], 0)
        return HcmocoSample(rgbd=rgbd, index=int(bank_index),
                            norm_joints=hcmoco_norm_joints(joints[:, ::-1], annotated, self.joint_set.root),
                            joints3d=np.zeros((25, 3), np.float32), original_joints2d=rc,
                            joints_vis=vis.astype(np.int64), true_depth=0, depth_mask=np.zeros((S, S), bool),
                            scale=scale)


class HcmocoDataset(Dataset):
    """The pre-training set: the keypoint-only source (if any) at indices ``[0, len(db))``, then NTU (A.2.3).

    ``dataset[i]`` is :func:`sample_to_item` of item ``i`` (its ``index`` field is ``i``: the memory-bank row).
    Randomness comes from one generator per item seeded from numpy's global state, which the engine seeds per
    draw (:class:`~humanvision.engine.distributed.SeededDataset`); :meth:`item` takes an explicit generator.

    ``point_cloud`` (the ``HRNetPN`` variant, A.3.4): every item also holds ``grid_rc`` ``(2, S, S)``,
    ``frame_hw`` ``(2,)`` and ``depth_mean`` ``()`` (:func:`~humanvision.data.readers.ntu.ntu_point_fields`; all
    zeros for keypoint-only items, which have no depth); the 9 fields are the same as without it."""

    def __init__(self, ntu: NtuHcmoco, keypoint_only: KeypointOnlyHcmoco | None = None,
                 visibility_typo: bool = False, point_cloud: bool = False) -> None:
        if keypoint_only is not None and keypoint_only.joint_set.name != ntu.joint_set.name:
            raise ConfigError(f"joint sets differ: NTU {ntu.joint_set.name}, keypoint source "
                              f"{keypoint_only.joint_set.name}")
        if len(ntu) == 0:
            raise DataError("no NTU frame found", file=str(ntu.root))
        self.ntu, self.db, self.visibility_typo = ntu, keypoint_only, bool(visibility_typo)
        self.point_cloud = bool(point_cloud)
        self.num_db = 0 if keypoint_only is None else len(keypoint_only)
        self.num_ntu = len(ntu)

    def __len__(self) -> int:
        return self.num_db + self.num_ntu

    def is_ntu(self, index: int) -> bool:
        return index >= self.num_db

    def sampling_weights(self) -> np.ndarray:
        """A.2.3's weights: ``N_ntu / N`` for each keypoint-source item, ``N_db / N`` for each NTU item."""
        n = len(self)
        return np.concatenate([np.full(self.num_db, self.num_ntu / n), np.full(self.num_ntu, self.num_db / n)])

    def item(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        if index < self.num_db:
            sample = self.db.sample(index, index, rng)
            item = sample_to_item(sample)
            if self.point_cloud:  # no depth: zeros, so the cloud is all zeros (pointnet2.hcmoco_point_cloud)
                S = self.db.crop_size
                item.update(grid_rc=torch.zeros(2, S, S), frame_hw=torch.zeros(2), depth_mean=torch.tensor(0.0))
            return item
        j = index - self.num_db
        frame = self.ntu.frame(j)
        crop = None
        if self.point_cloud:  # the crop drawn here, as ntu_hcmoco_sample would (same rng, same sample)
            crop = ntu_crop_params(rng, frame["depth"].shape[1], frame["depth"].shape[0], frame["d_loc"])
        sample = ntu_hcmoco_sample(frame, index, rng, self.ntu.joint_set, self.ntu.crop_size, self.visibility_typo,
                                   crop=crop)
        item = sample_to_item(sample)
        if crop is not None:
            item.update({k: torch.from_numpy(np.asarray(v)) for k, v in
                         ntu_point_fields(frame, crop, self.ntu.crop_size).items()})
        return item

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.item(index, np.random.default_rng(np.random.randint(0, 2**63 - 1, dtype=np.int64)))

    def summary(self) -> str:
        db = f"{self.num_db} {self.db.kind} people ({self.db.source}) + " if self.db is not None else ""
        return f"HCMoCo data: {db}{self.num_ntu} NTU frames ({self.ntu.root}) = {len(self)} samples"


class WeightedMixSampler(Sampler):
    """A.2.3's ``WeightedRandomSampler(weights, N, replacement=True)`` with the engine's sampler contract: the
    epoch's ``num_draws`` draws are a pure function of ``(seed, epoch)`` (``torch.multinomial`` with a generator
    seeded by them), padded by repetition to a multiple of ``world_size`` and sharded ``rank::world_size``;
    ``set_epoch(epoch, start)`` skips this rank's first ``start`` draws; items are ``(index, sample_seed)``, the
    seed a hash of ``(seed, epoch, draw position)`` so that repeated draws of an item get different crops."""

    def __init__(self, weights: Sequence[float] | np.ndarray, *, num_draws: int | None = None, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if w.ndim != 1 or len(w) == 0 or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ConfigError("weighted sampler: needs a non-empty 1-D array of weights >= 0 with a positive sum")
        self.weights, self.seed, self.rank, self.world_size = w, int(seed), rank, world_size
        self.num_items = len(w) if num_draws is None else int(num_draws)
        self.num_samples = -(-self.num_items // world_size)  # per rank
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.num_samples - self.start

    def epoch_order(self, epoch: int | None = None) -> np.ndarray:
        """The whole epoch's draws (dataset indices, before padding and sharding)."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + (self.epoch if epoch is None else epoch))
        return torch.multinomial(self.weights, self.num_items, replacement=True, generator=gen).numpy()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        total = self.num_samples * self.world_size
        order = np.resize(self.epoch_order(), total)
        positions = np.arange(total)[self.rank::self.world_size][self.start:]
        mine = order[self.rank::self.world_size][self.start:]
        seeds = sample_seeds(self.seed, self.epoch, positions)
        return iter(zip(mine.tolist(), seeds.tolist(), strict=True))


def prepare_synthetic(data: HCMoCoDataConfig, quiet: bool = False) -> HCMoCoDataConfig:
    """For ``source: synthetic``: write the synthetic NTU frames (and MPII images) once into ``synthetic_dir``
    (a stamp file records the parameters; a change rewrites the two sub-folders this function owns; under torchrun
    rank 0 writes and the others wait) and point ``ntu_root`` / ``keypoint_ann`` / ``keypoint_images`` at them."""
    if data.source != "synthetic":
        return data
    from humanvision.data.synthetic.cache import write_once
    from humanvision.data.synthetic.hcmoco import generate_ntu_hcmoco
    from humanvision.data.synthetic.writers import generate_mpii

    root = Path(data.synthetic_dir)
    mpii = data.synthetic_mpii if data.keypoint_source == "mpii" else 0
    params = {"ntu": data.synthetic_ntu, "mpii": mpii, "size": list(data.synthetic_size),
              "seed": data.synthetic_seed}
    stamp = "humanvision_hcmoco.json"

    def generate(progress) -> None:
        if (root / stamp).is_file():  # ours, written with other parameters: start afresh (stale frames would be read)
            for sub in ("ntu", "mpii"):
                shutil.rmtree(root / sub, ignore_errors=True)
        size = tuple(int(v) for v in data.synthetic_size)
        workers = (os.cpu_count() or 1) if data.synthetic_ntu + mpii >= 64 else 1
        generate_ntu_hcmoco(root / "ntu", data.synthetic_ntu, size=size, seed=data.synthetic_seed,
                            workers=workers, progress=progress)
        if mpii:
            generate_mpii(root / "mpii", mpii, size=size, seed=data.synthetic_seed + 1, split="train",
                          workers=workers, progress=progress)

    write_once(root, params, generate, quiet=quiet, stamp=stamp,
               description=f"synthesising {data.synthetic_ntu} NTU frames and {mpii} MPII images -> {root}")
    data.ntu_root = root / "ntu"
    if mpii:
        data.keypoint_ann = root / "mpii" / "annotations" / "mpii_train.json"
        data.keypoint_images = root / "mpii" / "images"
    return data


def build_dataset(recipe: HCMoCoRecipe) -> HcmocoDataset:
    """The recipe's :class:`HcmocoDataset` (call :func:`prepare_synthetic` first for synthetic data)."""
    data, skeleton = recipe.data, recipe.hcmoco.skeleton
    if data.ntu_root is None:
        raise ConfigError("data.ntu_root: required (or use data.source: synthetic)")
    ntu = NtuHcmoco(data.ntu_root, skeleton, data.frame_list, data.missing_skeletons, data.crop_size,
                    recipe.train.seed, data.visibility_typo)
    db = None
    if data.keypoint_source == "mpii":
        from humanvision.data.readers.mpii import MpiiJson

        db = KeypointOnlyHcmoco(MpiiJson(data.keypoint_ann, data.keypoint_images), "mpii", data.crop_size,
                                data.scale_factor, data.rotation_factor, data.rotation_prob)
    elif data.keypoint_source == "coco":
        from humanvision.data.readers.coco import CocoKeypoints

        reader = CocoKeypoints(data.keypoint_ann, data.keypoint_images, mode="instance", min_keypoints=1,
                               drop_crowd=True)
        db = KeypointOnlyHcmoco(reader, "coco", data.crop_size, data.scale_factor, data.rotation_factor,
                                data.rotation_prob)
    return HcmocoDataset(ntu, db, data.visibility_typo, point_cloud=recipe.hcmoco.depth_encoder == "pointnet")


def sampler_fn(dataset: HcmocoDataset, recipe: HCMoCoRecipe) -> Callable[[int, int], Sampler] | None:
    """The engine's ``sampler_fn`` for the recipe: :class:`WeightedMixSampler` with a keypoint source and
    ``data.weighted_sampler``, else None (the engine's uniform permutation)."""
    if dataset.num_db == 0 or not recipe.data.weighted_sampler:
        return None
    weights, seed = dataset.sampling_weights(), recipe.train.seed
    return lambda rank, world: WeightedMixSampler(weights, seed=seed, rank=rank, world_size=world)


# ------------------------------------------------------------------------------------------------ the method
class HCMoCoPretrain(nn.Module):
    """``forward(batch)`` (a collated :func:`sample_to_item` batch) -> :func:`~humanvision.methods.hcmoco_losses.
    hcmoco_loss`'s dict: ``loss``, every term and accuracy. ``rgbd`` is split 3 + 3 channels; ``norm_joints``
    feeds SemGCN; ``index`` selects the bank rows (updated in training mode, after the logits)."""

    def __init__(self, model: HCMoCo | HCMoCoPN, bank: CMCMemoryBank, stage: int = 1,
                 num_dense_points: int = 400) -> None:
        super().__init__()
        if stage not in (1, 2):
            raise ConfigError(f"hcmoco.stage: 1 or 2, got {stage!r}")
        if stage == 2 and not model.dense_heads:
            raise ConfigError("hcmoco.stage: stage 2 needs a model with dense heads (encoder{1,2}_linear)")
        if bank.feat_dim != model.feat_dim:
            raise ConfigError(f"memory bank rows of {bank.feat_dim} values for {model.feat_dim}-d features")
        self.model, self.bank, self.stage, self.num_dense_points = model, bank, int(stage), int(num_dense_points)
        # DDP: every rank holds the same bank (same seed, all-gathered updates); do not broadcast N x 128 x 3 floats
        self._ddp_params_and_buffers_to_ignore = [f"bank.memory_{m}" for m in (1, 2, 3)]

    def encode(self, batch: dict[str, torch.Tensor], dense: bool | None = None) -> dict[str, torch.Tensor]:
        """The model's outputs for a batch (dense maps in stage 2)."""
        rgbd = batch["rgbd"]
        if rgbd.dim() != 4 or rgbd.shape[1] != 6:
            raise DataError(f"expected rgbd (B, 6, S, S), got {tuple(rgbd.shape)}", field="rgbd")
        points: dict[str, torch.Tensor] = {}
        if isinstance(self.model, HCMoCoPN):  # the point-cloud variant builds its input from these fields
            missing = [k for k in HCMoCoPN.batch_fields if k not in batch]
            if missing:
                raise DataError(f"the point-cloud model {self.model.model_name or 'HCMoCoPN'} needs the batch fields "
                                f"{', '.join(missing)} (a dataset built with hcmoco.depth_encoder: pointnet)",
                                field=missing[0])
            points = {k: batch[k] for k in HCMoCoPN.batch_fields}
        return self.model(rgbd[:, :3], rgbd[:, 3:], batch["norm_joints"],
                          dense=self.stage == 2 if dense is None else dense, **points)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.encode(batch)
        kwargs: dict[str, Any] = {}
        if self.stage == 2:
            kwargs = {"dense_rgb": out["dense_rgb"], "dense_depth": out["dense_depth"], "joint_feats": out["kp"],
                      "joints_rc": batch["original_joints2d"], "visible": batch["joints_vis"],
                      "depth_mask": batch["depth_mask"], "num_points": self.num_dense_points}
        return hcmoco_loss(self.bank, out["f_rgb"], out["f_depth"], out["f_kp"], batch["index"],
                           batch["true_depth"], stage=self.stage, temperature=self.bank.temperature, **kwargs)


def read_pretraining_checkpoint(path: str | Path, key: str = "hcmoco.init"
                                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, str]:
    """``(model state, bank state or None, file)`` of a pre-training checkpoint: our run folder (its ``last/``) /
    checkpoint folder / ``model.safetensors`` (``model.*`` and ``bank.memory_*`` keys) or an official ``.pth``
    (``{'model': {'module.*'}, 'contrast': {'memory_1', ...}}``, read with ``weights_only=True``). Model keys are
    returned without ``model.`` / ``module.``; the bank as ``memory_{1,2,3}``."""
    import safetensors.torch

    from humanvision.engine.checkpoint import weights_file

    path = Path(path)
    if path.is_file() and path.suffix != ".safetensors":
        try:
            ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
            raise DataError(f"cannot read the checkpoint with weights_only=True ({type(e).__name__}: {e}); if it "
                            "holds other objects (e.g. the argparse 'opt'), re-save only its 'model' and 'contrast'",
                            file=str(path)) from None
        if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
            raise DataError("expected an official HCMoCo checkpoint {'model': ..., 'contrast': ...}", file=str(path),
                            field="model")
        model = convert_official_checkpoint(ckpt)
        contrast = ckpt.get("contrast")
        bank = None
        if isinstance(contrast, dict):
            bank = {f"memory_{m}": contrast[f"memory_{m}"] for m in (1, 2, 3) if f"memory_{m}" in contrast}
        return model, bank or None, str(path)
    if path.is_dir() and (path / "last").exists():  # a run folder: the end of the run, not a best/ snapshot
        path = path / "last"
    file = weights_file(path, key)
    state = safetensors.torch.load_file(str(file))
    model = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    if not model:
        raise DataError("no model.* keys: not an HCMoCo pre-training checkpoint", file=str(file))
    bank = {k[len("bank."):]: v for k, v in state.items() if k.startswith("bank.")}
    return model, bank or None, str(file)


def load_stage1(method: HCMoCoPretrain, path: str | Path, key: str = "hcmoco.init") -> dict[str, Any]:
    """Stage-2 initialisation (A.5): the stage-1 weights and memory bank of ``path`` into ``method``.

    The dense heads ``encoder{1,2}_linear`` may be missing (a stage-1 model has none: they keep their random
    initialisation); any other missing or unexpected key, a shape mismatch or a missing bank is a DataError
    naming the file. A bank whose row count differs from the method's (= this dataset's size) is a ConfigError
    naming both sizes. Returns ``{"file", "new": [keys left at their initialisation]}``."""
    model_state, bank_state, file = read_pretraining_checkpoint(path, key)
    if bank_state is None or sorted(bank_state) != ["memory_1", "memory_2", "memory_3"]:
        raise DataError(f"no memory bank (memory_1/2/3) in the checkpoint, found {sorted(bank_state or {})}: stage 2 "
                        "starts from the stage-1 weights AND bank", file=file)
    rows, n = int(bank_state["memory_1"].shape[0]), method.bank.num_samples
    if rows != n:
        raise ConfigError(f"{key}: the memory bank of {file} has {rows} rows (the stage-1 dataset size) but this "
                          f"dataset has {n} samples; stage 2 must use the stage-1 data (same sources, same order)")
    dim = tuple(bank_state["memory_1"].shape[1:])
    if dim != (method.bank.feat_dim,):
        raise ConfigError(f"{key}: the memory bank of {file} holds {dim} features, this model {method.model.feat_dim}")
    ours = method.model.state_dict()
    dense = [k for k in ours if k.startswith(("encoder1_linear.", "encoder2_linear."))]
    missing = sorted(set(ours) - set(model_state) - set(dense))
    unexpected = sorted(set(model_state) - set(ours))
    if missing or unexpected:
        raise DataError(f"checkpoint keys do not match {method.model.model_name or 'the model'}: missing "
                        f"{missing[:5]}, unexpected {unexpected[:5]} ({len(missing)} missing, {len(unexpected)} "
                        "unexpected)", file=file)
    for k, v in model_state.items():
        if tuple(v.shape) != tuple(ours[k].shape):
            raise DataError(f"shape {tuple(v.shape)} where the model has {tuple(ours[k].shape)}", file=file, field=k)
    method.model.load_state_dict(model_state, strict=False)
    method.bank.load_state_dict(bank_state, strict=True)
    return {"file": file, "new": sorted(k for k in dense if k not in model_state)}


def build_method(recipe: HCMoCoRecipe, num_samples: int, *, init: bool = True, quiet: bool = True) -> HCMoCoPretrain:
    """The recipe's :class:`HCMoCoPretrain` with a bank of ``num_samples`` rows (the dataset size). With
    ``init``: stage 1 loads ``hcmoco.imagenet_weights`` into both HRNets, stage 2 :func:`load_stage1`."""
    from humanvision.models import create_model
    from humanvision.models.weights import read_checkpoint

    cfg = recipe.hcmoco
    model = create_model(cfg.model, skeleton=cfg.skeleton, dense_heads=cfg.stage == 2, **cfg.model_args)
    bank = CMCMemoryBank(num_samples, model.feat_dim, cfg.num_negatives, cfg.temperature, cfg.momentum,
                         seed=cfg.bank_seed)
    method = HCMoCoPretrain(model, bank, cfg.stage, cfg.num_dense_points)
    if init and cfg.stage == 1 and cfg.imagenet_weights is not None:
        state = read_checkpoint(cfg.imagenet_weights)
        for enc in (model.encoder1, model.encoder2):
            if not isinstance(enc, HRNetEncoder):  # the point-cloud variant's PointNet++ has no ImageNet init
                continue
            dropped = enc.load_pretrained(state, source=str(cfg.imagenet_weights))
        if not quiet:
            which = "the RGB HRNet" if isinstance(model, HCMoCoPN) else "both HRNets"
            print(f"init: {which} from {cfg.imagenet_weights} (dropped {len(dropped)} classification keys)")
    if init and cfg.stage == 2:
        report = load_stage1(method, cfg.init)
        if not quiet:
            print(f"init: weights and memory bank ({num_samples} rows) from {report['file']}; new: "
                  f"{', '.join(report['new']) or 'nothing'}")
    return method


# ------------------------------------------------------------------------------------------- the lr schedule
@dataclass(frozen=True)
class EpochCosineSchedule(LRSchedule):
    """PyContrast's cosine, evaluated once per epoch (A.5, pitfall 10): during epoch ``e = 1..E`` (1-based; the
    engine's step ``it`` is in epoch ``it // iters_per_epoch + 1``) the factor is ``m + (1 - m)(1 + cos(pi e / E))
    / 2`` with ``m = min_lr_ratio`` (0.001: eta_min = 3e-5 for lr 0.03), so the first epoch already runs slightly
    below the base lr and the last one at eta_min. No warm-up. With a time budget the epoch is the larger of the
    step's and ``floor(progress E) + 1``."""

    def factor(self, it: int, progress: float | None = None) -> float:
        epochs = max(round(self.total_iters / max(self.iters_per_epoch, 1)), 1)
        e = it // max(self.iters_per_epoch, 1) + 1
        if progress is not None:
            e = max(e, math.floor(progress * epochs) + 1)
        e = min(e, epochs)
        m = self.min_lr_ratio
        return m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * e / epochs))


def _all_param_groups(weight_decay: float) -> Callable[[nn.Module], list[dict]]:
    """One group of every trainable parameter with ``weight_decay`` (PyContrast's ``SGD(model.parameters())``)."""
    def groups(model: nn.Module) -> list[dict]:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        return [{"name": "all", "params": [p for _, p in named], "param_names": [n for n, _ in named],
                 "weight_decay": weight_decay, "lr_scale": 1.0}]

    return groups


# ------------------------------------------------------------------------------------------------ evaluation
def eval_indices(dataset: HcmocoDataset, count: int) -> list[int]:
    """``count`` NTU items spread evenly over the NTU part (all of them when there are fewer)."""
    if count <= 0:
        return []
    if count >= dataset.num_ntu:
        return list(range(dataset.num_db, len(dataset)))
    return [dataset.num_db + int(i) for i in np.linspace(0, dataset.num_ntu - 1, count).round()]


@torch.no_grad()
def retrieval_metrics(method: HCMoCoPretrain, dataset: HcmocoDataset, indices: Sequence[int], batch_size: int = 32,
                      seed: int = 0) -> dict[str, float]:
    """Top-1 cross-modal retrieval among the global features of ``indices`` (fixed crops: item ``i`` drawn with
    ``default_rng([seed, i])``), cosine similarity: ``top1_rgb_depth`` (each RGB feature finds its own depth
    feature among all of them), ``top1_rgb_kp``, ``top1_depth_kp``, and ``chance`` = 1 / count. Eval mode, no
    bank update; the model's training mode is restored."""
    if len(indices) == 0:
        return {}
    was_training = method.training
    method.eval()
    device = next(method.parameters()).device
    feats: dict[str, list[torch.Tensor]] = {"f_rgb": [], "f_depth": [], "f_kp": []}
    try:
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            batch = default_collate([dataset.item(i, np.random.default_rng([seed, i])) for i in chunk])
            out = method.encode({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()},
                                dense=False)
            for k, chunks in feats.items():
                chunks.append(out[k].float())
    finally:
        method.train(was_training)
    f = {k: torch.cat(v) for k, v in feats.items()}
    target = torch.arange(len(indices), device=device)

    def top1(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(((a @ b.T).argmax(1) == target).float().mean())

    return {"top1_rgb_depth": top1(f["f_rgb"], f["f_depth"]), "top1_rgb_kp": top1(f["f_rgb"], f["f_kp"]),
            "top1_depth_kp": top1(f["f_depth"], f["f_kp"]), "chance": 1.0 / len(indices)}


# -------------------------------------------------------------------------------------------------- training
def run_training(recipe: HCMoCoRecipe, resume: bool = False, quiet: bool = False) -> dict:
    """Pre-train one stage with the engine: write synthetic data if asked, build the dataset, the method (bank of
    ``len(dataset)`` rows; stage 1: ImageNet encoders when given; stage 2: the stage-1 weights and bank), SGD over
    all parameters, the per-epoch cosine, the 50/50 sampler and the retrieval evaluation. ``resume``: continue
    ``<output_dir>/last`` (weights, bank, optimiser, RNG, position). Returns the fit summary plus ``samples``."""
    import dataclasses

    from humanvision.config import save_config
    from humanvision.engine import Trainer, seed_everything

    seed_everything(recipe.train.seed)
    prepare_synthetic(recipe.data, quiet=quiet)
    dataset = build_dataset(recipe)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if not quiet and main_rank:
        print(dataset.summary())
    method = build_method(recipe, len(dataset), quiet=quiet or not main_rank)
    out = Path(recipe.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if main_rank:
        save_config(recipe, out / "config.yaml")
    indices = eval_indices(dataset, recipe.hcmoco.eval_samples)
    train = recipe.train

    def eval_fn(model: nn.Module, epoch: int) -> dict[str, float]:
        return retrieval_metrics(model, dataset, indices, batch_size=train.batch_size, seed=train.seed)

    groups = _all_param_groups(train.weight_decay) if recipe.hcmoco.decay_all_params else None
    trainer = Trainer(train, method, dataset, eval_fn=eval_fn if indices else None, param_groups_fn=groups,
                      sampler_fn=sampler_fn(dataset, recipe))
    if recipe.hcmoco.lr_schedule == "epoch":
        s = trainer.schedule
        trainer.schedule = EpochCosineSchedule(**{f.name: getattr(s, f.name) for f in dataclasses.fields(s)})
    summary = trainer.fit(resume=resume or None)
    summary["samples"] = len(dataset)
    return summary


# ---------------------------------------------------------------------------------------------------- export
#: Branch widths -> (timm variant, config overrides) of the HRNets an HCMoCo model can hold.
_HRNETS: dict[tuple[int, ...], tuple[str, dict[str, Any] | None]] = {
    (18, 36, 72, 144): ("hrnet_w18", None),
    (32, 64, 128, 256): ("hrnet_w32", None),
    tuple(TINY_HRNET["stage4"]["num_channels"]): ("hrnet_w18", TINY_HRNET),
}


def _hrnet_for(flat: dict[str, torch.Tensor], file: str) -> tuple[str, dict[str, Any] | None]:
    widths = []
    for b in range(4):
        w = flat.get(f"stage4.0.branches.{b}.0.conv1.weight")
        if w is None:
            raise DataError(f"no stage4.0.branches.{b}.0.conv1.weight: not an HRNet state dict", file=file)
        widths.append(int(w.shape[0]))
    if tuple(widths) not in _HRNETS:
        raise DataError(f"HRNet branch widths {widths} are none of {list(_HRNETS)}", file=file)
    return _HRNETS[tuple(widths)]


#: The PointNet++ configurations a point-cloud HCMoCo model can hold (``PointNet2MSG`` arguments; None: the default,
#: HCMoCo's A.3.4 network).
_POINTNETS: dict[str, dict[str, Any] | None] = {"hcmoco": None, "tiny": TINY_POINTNET}


def _check_point_encoder(flat: dict[str, torch.Tensor], file: str) -> str:
    """The name in :data:`_POINTNETS` of the PointNet++ whose state dict ``flat`` is (strict load on meta)."""
    from humanvision.models.pointnet2 import PointNet2MSG

    for name, args in _POINTNETS.items():
        with torch.device("meta"):
            net = PointNet2MSG(**(args or {}))
        try:
            net.load_state_dict(flat, strict=True, assign=True)
        except RuntimeError:
            continue
        return name
    raise DataError(f"encoder2 is a PointNet++ of none of the known configurations {list(_POINTNETS)}", file=file)


def export_encoders(weights: str | Path, out_dir: str | Path, *, densepose: bool = False) -> dict[str, Path]:
    """Write ``rgb_encoder.pth`` (``encoder1``) and ``depth_encoder.pth`` (``encoder2``) into ``out_dir``: flat
    HRNet state dicts as ``transfer_ckpt.py`` / ``transfer_ckpt_depth.py`` write them (A.6; keys ``conv1.weight``,
    ``layer1.0.conv1.weight``, ``stage4.2.fuse_layers.*`` ...), saved with ``torch.save`` (plain tensors: they load
    with ``weights_only=True``). ``weights``: our run folder / checkpoint / ``model.safetensors`` or an official
    ``.pth``. Each dict is checked to load strictly into :class:`~humanvision.models.hcmoco.HRNetEncoder` of its
    width (W18, W32 or ``hcmoco_tiny``'s) before it is written. Returns ``{"rgb": path, "depth": path}``.

    Point-cloud variant (``encoder2`` a PointNet++): ``point_encoder.pth`` (the flat ``PointNet2MSG`` state dict,
    ``sa.*`` / ``fp.*``, checked to load strictly into HCMoCo's A.3.4 network or :data:`~humanvision.models.
    hcmoco.TINY_POINTNET`'s; key ``"point"``) in place of ``depth_encoder.pth``. ``densepose``: also
    ``rgb_encoder_densepose.pkl`` (key ``"densepose"``), the RGB encoder in detectron2's checkpoint format under
    ``backbone.bottom_up.`` (A.7.1, :mod:`humanvision.models.detectron2_export`; no neck)."""
    from humanvision.models.detectron2_export import export_densepose

    model_state, _, file = read_pretraining_checkpoint(weights, key="weights")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, which in (("rgb", "encoder1"), ("depth", "encoder2")):
        flat = {k: v.detach().cpu().contiguous() for k, v in extract_encoder(model_state, which).items()}
        if which == "encoder2" and any(k.startswith("sa.") for k in flat):  # the point-cloud variant
            _check_point_encoder(flat, file)
            paths["point"] = out / "point_encoder.pth"
            torch.save(flat, paths["point"])
            continue
        variant, args = _hrnet_for(flat, file)
        with torch.device("meta"):
            enc = HRNetEncoder(variant, hrnet_args=args)
        try:
            enc.load_state_dict(flat, strict=True, assign=True)
        except RuntimeError as e:
            raise DataError(f"{which} does not load into HRNetEncoder({variant!r}): {e}", file=file) from None
        paths[name] = out / f"{name}_encoder.pth"
        torch.save(flat, paths[name])
        if densepose and name == "rgb":
            paths["densepose"] = export_densepose(flat, out / "rgb_encoder_densepose.pkl")
    return paths
