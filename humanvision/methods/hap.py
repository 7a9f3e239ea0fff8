"""HAP (structure-aware masked image modelling, NeurIPS 2023) readable top to bottom: recipe, data, method,
optimisation, pictures, export (pretraining.md Part B).

HAP is MAE on person crops (B.1) with two changes: **pose-guided masks** (BEiT blocks + random cells of random body
parts, :mod:`humanvision.data.masking`, B.4) and **two masked views** of the same augmented crop whose encoder
[CLS] outputs are aligned by a symmetric InfoNCE (B.5). Here:

1. **data** (B.2, :class:`PersonCropDataset`): person crops + COCO-17 keypoints
   (:mod:`humanvision.data.readers.person_crops`: LUPerson + HAP's pose files or our ``keypoints.json``, CFS
   subset); keypoint-aware ``RandomResizedCrop(256, 128, scale (0.8, 1), ratio (0.375, 0.6667), bicubic)`` +
   horizontal flip (x moves, labels are not swapped) + ImageNet normalisation (:class:`PersonCropTransform`,
   numpy / OpenCV); keypoints out of the image before or after it are -10000. Each view's mask is drawn **in the
   data loader** (pitfall 8) from the sample's own generator, which the engine seeds from (seed, epoch, index)
   (:class:`~humanvision.engine.distributed.SeededDataset`), so masks are reproducible and resume exactly.
   ``pretrain.masking: random`` draws MAE's uniform masks instead (the plain-MAE baseline, one or two views).
2. **method** (:class:`HAPPretrain`): :class:`~humanvision.models.mae.PoseMAE` on both views (one batched pass of
   ``2B`` images: the same computation as HAP's two passes, a ViT has no batch statistics); ``loss_rec`` = the mean
   of the views' norm-pix losses; ``loss_align`` = :func:`align_loss` (q, k) + (k, q) on the L2-normalised CLS
   outputs after the final norm, keys stop-grad and gathered over ranks, labels ``arange(B) + B * rank``, logits /
   tau, CE x 2 tau; ``loss = loss_rec + align_weight * loss_align`` (0.05, tau 0.2).
3. **optimisation** (B.6): AdamW (0.9, 0.95), wd 0.05 with the engine's rule (no decay for 1-D parameters and
   biases; ``cls_token`` / ``mask_token`` decayed; the frozen ``pos_embed`` / ``decoder_pos_embed`` have
   ``requires_grad=False`` and are left out), ``lr = blr * total batch / 256``, per-iteration linear warm-up from 0
   then half-cycle cosine (:class:`WarmupCosineSchedule`), fp16 autocast + GradScaler on CUDA, no clipping;
   initialised from the ImageNet MAE encoder with its 14x14 ``pos_embed`` resampled to 16x8 (B.7).
4. **pictures**: every ``pretrain.snapshot_every`` optimiser steps, ``<output_dir>/snapshots/step_XXXXXXX.png``:
   for a few fixed samples the input, each view's mask and its reconstruction (:func:`reconstruction_figure`).
5. **export** (:func:`export_encoder`, B.8): the encoder as a timm ``VisionTransformer`` state dict, ``pos_embed``
   resampled from 16x8 to any grid.

Checkpoints are the engine's (``<output_dir>/last``: ``mae.*`` keys = the released checkpoint's ``model`` keys
under ``mae.``, which :func:`~humanvision.models.mae.hap_to_timm` strips).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from humanvision.config import must_exist
from humanvision.data.io import read_image
from humanvision.data.masking import pose_guided_mask, random_mask
from humanvision.data.readers.person_crops import MISSING, PersonCrops, scan_person_crops
from humanvision.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize_image
from humanvision.engine import TrainConfig
from humanvision.engine.optim import LRSchedule
from humanvision.errors import ConfigError, DataError
from humanvision.models.mae import PoseMAE, hap_to_timm, load_mae_checkpoint, patchify

__all__ = [
    "HAPPretrain", "HAPRecipe", "PersonCropDataset", "PersonCropTransform", "PretrainConfig", "PretrainDataConfig",
    "WarmupCosineSchedule", "align_loss", "build_dataset", "build_method", "export_encoder", "gather_keys",
    "is_hap_recipe", "load_recipe", "prepare_synthetic_crops", "random_resized_crop", "reconstruction_figure",
    "run_training",
]


# ----------------------------------------------------------------------------------------------- the recipe
@dataclass
class PretrainConfig:
    """The ``pretrain`` section (B.3-B.7; defaults: HAP's ViT-B run).

    ``model``: a registered ``pose_mae_*`` entry point, ``model_args`` its extra arguments (``depth``,
    ``img_size`` ...). ``masking``: ``pose`` (HAP, B.4: blocks + ``num_parts`` body parts) or ``random`` (MAE).
    ``mask_ratio``: 0.5 (HAP; MAE's ImageNet default is 0.75). ``two_views``: two independently masked views of
    the same crop (HAP); with one view there is no align loss. ``align_weight`` / ``align_temperature``: 0.05 /
    0.2. ``norm_pix_loss``: per-patch normalised targets. ``init``: an MAE checkpoint (the official
    ``mae_pretrain_vit_base.pth``) or null (random init); ``init_grid``: its pos-embed grid (null: square, 14x14
    for ViT-B/16 at 224). ``blr``: when set, ``train.lr = blr * batch_size * accum_steps * world_size / 256``
    (B.6; replaces ``train.lr``). ``lr_schedule``: ``mae`` (linear warm-up from 0 over ``train.warmup_epochs``,
    then half-cycle cosine to ``train.min_lr_ratio``; needs ``train.schedule: cosine``) or ``engine`` (the engine's
    ``train.schedule`` as it is). ``snapshot_every``: optimiser steps between reconstruction pictures (0: none
    during training; one is always written at the end), ``snapshot_samples``: how many crops they show."""

    model: str = "pose_mae_vit_base_patch16"
    model_args: dict[str, Any] = field(default_factory=dict)
    masking: Literal["pose", "random"] = "pose"
    mask_ratio: float = 0.5
    num_parts: int = 6
    two_views: bool = True
    align_weight: float = 0.05
    align_temperature: float = 0.2
    norm_pix_loss: bool = True
    init: Path | None = must_exist()
    init_grid: tuple[int, int] | None = None
    blr: float | None = None
    lr_schedule: Literal["mae", "engine"] = "mae"
    snapshot_every: int = 1000
    snapshot_samples: int = 4

    def __post_init__(self) -> None:
        from humanvision.models import is_model, list_models

        if not (is_model(self.model) and self.model.startswith("pose_mae_")):
            raise ConfigError(f"pretrain.model: expected one of {', '.join(list_models('pose_mae_*'))}, got "
                              f"{self.model!r}")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"pretrain.mask_ratio: must be in (0, 1), got {self.mask_ratio}")
        if not 0 <= self.num_parts <= 6:
            raise ConfigError(f"pretrain.num_parts: at most 6 body parts (B.4), got {self.num_parts}")
        if self.align_weight < 0 or self.align_temperature <= 0:
            raise ConfigError(f"pretrain.align_weight / align_temperature: need >= 0 / > 0, got "
                              f"{self.align_weight} / {self.align_temperature}")
        if self.blr is not None and self.blr <= 0:
            raise ConfigError(f"pretrain.blr: must be > 0 or null, got {self.blr}")
        if self.snapshot_every < 0 or self.snapshot_samples < 1:
            raise ConfigError(f"pretrain.snapshot_every / snapshot_samples: need >= 0 / >= 1, got "
                              f"{self.snapshot_every} / {self.snapshot_samples}")


@dataclass
class PretrainDataConfig:
    """The ``data`` section: where the person crops are and how they are augmented (B.2).

    ``source: folder`` reads ``root`` (any tree of images) with ``keypoints`` (our ``keypoints.json``, HAP's folder
    of ``.npy`` pose files, or null: no poses, for ``masking: random``); ``subset_list`` (``cfs_list.pkl``) with
    ``subset_ratio`` (0.5 for HAP) and ``subset_mode`` (``ordered``: the first part, HAP's; ``random``).
    ``source: synthetic`` writes ``synthetic_num`` synthetic person crops (``synthetic_size`` = (w, h)) with their
    ``keypoints.json`` into ``synthetic_dir`` once and reads them. Augmentation: ``scale`` / ``ratio`` of the
    random resized crop (area fraction, width / height), ``hflip`` probability. ``max_bad_fraction``: more
    distinct unreadable images than this fraction of the dataset stops the run (each one is otherwise replaced by
    another sample, named in a warning and in ``<output_dir>/bad_images.tsv``)."""

    source: Literal["folder", "synthetic"] = "folder"
    root: Path | None = must_exist()
    keypoints: Path | None = None
    subset_list: Path | None = must_exist()
    subset_ratio: float = 1.0
    subset_mode: Literal["ordered", "random"] = "ordered"
    scale: tuple[float, float] = (0.8, 1.0)
    ratio: tuple[float, float] = (0.375, 0.6667)
    hflip: float = 0.5
    max_bad_fraction: float = 0.01
    synthetic_dir: Path = Path("data/synthetic_person_crops")
    synthetic_num: int = 2000
    synthetic_size: tuple[int, int] = (128, 256)
    synthetic_seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.subset_ratio <= 1.0:
            raise ConfigError(f"data.subset_ratio: must be in (0, 1], got {self.subset_ratio}")
        if not 0.0 < self.scale[0] <= self.scale[1] <= 1.0 or not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise ConfigError(f"data.scale / data.ratio: need 0 < lo <= hi (scale <= 1), got {self.scale} / "
                              f"{self.ratio}")
        if not 0.0 <= self.hflip <= 1.0 or not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ConfigError(f"data.hflip / data.max_bad_fraction: must be in [0, 1], got {self.hflip} / "
                              f"{self.max_bad_fraction}")
        if self.synthetic_num < 1:
            raise ConfigError(f"data.synthetic_num: must be >= 1, got {self.synthetic_num}")


@dataclass
class HAPRecipe:
    """An HAP / MAE pre-training recipe: ``pretrain`` (its distinguishing section), ``data``, ``train`` (the
    engine's)."""

    name: str = "hap"
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.pretrain.lr_schedule == "mae" and self.train.schedule != "cosine":
            raise ConfigError(f"train.schedule: pretrain.lr_schedule: mae is a warm-up + half-cycle cosine; set "
                              f"train.schedule: cosine (got {self.train.schedule!r}) or pretrain.lr_schedule: engine")
        if self.data.source == "folder" and self.data.root is None:
            raise ConfigError("data.root: the folder of person crops is required with data.source: folder")
        if self.data.source == "folder" and self.pretrain.masking == "pose" and self.data.keypoints is None:
            raise ConfigError("data.keypoints: pose-guided masking needs keypoints (keypoints.json or a folder of "
                              "HAP .npy pose files); or use pretrain.masking: random")


def is_hap_recipe(source: Any) -> bool:
    """True for an :class:`HAPRecipe`, a mapping or a YAML file with a top-level ``pretrain`` section."""
    from humanvision.config import recipe_mapping

    return isinstance(source, HAPRecipe) or "pretrain" in recipe_mapping(source)


def load_recipe(source: str | Path | dict, overrides: list[str] | tuple[str, ...] = (),
                unchecked: tuple[str, ...] = ()) -> HAPRecipe:
    """Load an HAP recipe (``unchecked`` as :func:`humanvision.config.load_config`)."""
    from humanvision.config import load_config

    return load_config(source, HAPRecipe, overrides, unchecked=unchecked)


# ------------------------------------------------------------------------------------------ the augmentation
def random_resized_crop(height: int, width: int, rng: np.random.Generator, scale: tuple[float, float],
                        ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of albumentations' / torchvision's ``RandomResizedCrop``: up to 10 draws of an area
    fraction ``~ U(scale)`` and a log-uniform aspect ``w / h`` in ``ratio``, accepted when the box fits; else the
    largest centred box of an aspect clipped to ``ratio``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class PersonCropTransform:
    """HAP's keypoint-aware augmentation (B.2) with OpenCV: random resized crop to ``size = (h, w)`` (bicubic),
    horizontal flip with probability ``hflip`` (``x -> w - 1 - x``, albumentations 1.x; left / right labels are not
    swapped), ImageNet normalisation. Keypoints outside the image before or after the transform become
    ``(-10000, -10000, -10000)``. ``train=False``: the whole image resized, no flip."""

    def __init__(self, size: tuple[int, int] = (256, 128), scale: tuple[float, float] = (0.8, 1.0),
                 ratio: tuple[float, float] = (0.375, 0.6667), hflip: float = 0.5, train: bool = True,
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD) -> None:
        self.size, self.scale, self.ratio, self.hflip, self.train = tuple(size), scale, ratio, hflip, train
        self.mean, self.std = mean, std

    def __call__(self, image: np.ndarray, keypoints: np.ndarray, rng: np.random.Generator
                 ) -> tuple[torch.Tensor, np.ndarray]:
        """``image (H, W, 3)`` uint8 RGB, ``keypoints (17, 3)`` -> ``((3, h, w) float32, (17, 3) float32)``."""
        ih, iw = image.shape[:2]
        oh, ow = self.size
        kp = np.asarray(keypoints, dtype=np.float32).copy()
        inside = (kp[:, 0] >= 0) & (kp[:, 0] < iw) & (kp[:, 1] >= 0) & (kp[:, 1] < ih)
        if self.train:
            top, left, h, w = random_resized_crop(ih, iw, rng, self.scale, self.ratio)
        else:
            top, left, h, w = 0, 0, ih, iw
        crop = cv2.resize(image[top:top + h, left:left + w], (ow, oh), interpolation=cv2.INTER_CUBIC)
        kp[:, 0] = (kp[:, 0] - left) * (ow / w)
        kp[:, 1] = (kp[:, 1] - top) * (oh / h)
        if self.train and rng.random() < self.hflip:
            crop = np.ascontiguousarray(crop[:, ::-1])
            kp[:, 0] = ow - 1 - kp[:, 0]
        inside &= (kp[:, 0] >= 0) & (kp[:, 0] < ow) & (kp[:, 1] >= 0) & (kp[:, 1] < oh)
        kp[~inside] = MISSING
        return normalize_image(crop, self.mean, self.std), kp


# ----------------------------------------------------------------------------------------------- the dataset
class PersonCropDataset(Dataset):
    """One item per crop: ``image (3, h, w)``, ``keypoints (17, 3)`` (augmented, -10000 = out of the image),
    ``masks (V, L)`` bool (True = masked; one row per view, drawn here, pitfall 8) and ``index``.

    ``masking``: ``pose`` (:func:`~humanvision.data.masking.pose_guided_mask`) or ``random``
    (:func:`~humanvision.data.masking.random_mask`). All randomness comes from one generator per item seeded from
    numpy's global state, which the engine seeds per sample. An unreadable image is replaced by a random other one
    (warning naming the file, ``bad_images`` name -> error, a line in ``bad_log``); more distinct bad images than
    ``max_bad_fraction * len(self)`` is a :class:`DataError` (counts are per loader process)."""

    max_retries = 20

    def __init__(self, crops: PersonCrops, transform: PersonCropTransform, masking: Literal["pose", "random"] = "pose",
                 mask_ratio: float = 0.5, num_views: int = 2, num_parts: int = 6, patch_size: int = 16,
                 max_bad_fraction: float = 0.01, bad_log: str | Path | None = None) -> None:
        self.crops, self.transform = crops, transform
        self.masking, self.mask_ratio, self.num_views, self.num_parts = masking, mask_ratio, num_views, num_parts
        self.patch_size = patch_size
        h, w = transform.size
        if h % patch_size or w % patch_size:
            raise ConfigError(f"crop size {h}x{w} is not divisible by the patch size {patch_size}")
        self.grid = (h // patch_size, w // patch_size)
        self.max_bad_fraction, self.bad_log = max_bad_fraction, Path(bad_log) if bad_log else None
        self.bad_images: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.crops)

    def mask(self, keypoints: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One view's ``(L,)`` mask."""
        if self.masking == "pose":
            return pose_guided_mask(keypoints, rng, grid=self.grid, patch_size=self.patch_size,
                                    mask_ratio=self.mask_ratio, num_parts=self.num_parts)
        return random_mask(self.grid[0] * self.grid[1], rng, mask_ratio=self.mask_ratio)

    def _load(self, index: int, rng: np.random.Generator) -> tuple[int, np.ndarray]:
        for _ in range(self.max_retries):
            try:
                return index, read_image(self.crops.path(index))
            except DataError as e:
                self._record_bad(index, e)
                index = int(rng.integers(len(self)))
        raise DataError(f"{self.max_retries} unreadable images in a row (bad so far: {len(self.bad_images)})",
                        file=str(self.crops.root))

    def _record_bad(self, index: int, error: Exception) -> None:
        name = self.crops.names[index]
        if name in self.bad_images:
            return
        self.bad_images[name] = str(error)
        warnings.warn(f"{self.crops.path(index)}: unreadable image, replaced by another sample ({error})",
                      stacklevel=3)
        if self.bad_log is not None:
            with open(self.bad_log, "a") as f:
                f.write(f"{name}\t{error}\n")
        if len(self.bad_images) > self.max_bad_fraction * len(self):
            raise DataError(f"{len(self.bad_images)} unreadable images, more than data.max_bad_fraction = "
                            f"{self.max_bad_fraction} of {len(self)} (first: {', '.join(list(self.bad_images)[:3])})",
                            file=str(self.crops.root))

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng(np.random.randint(0, 2**63 - 1, dtype=np.int64))
        index, image = self._load(index, rng)
        img, kp = self.transform(image, self.crops.keypoints[index], rng)
        masks = np.stack([self.mask(kp, rng) for _ in range(self.num_views)])
        return {"image": img, "keypoints": torch.from_numpy(kp), "masks": torch.from_numpy(masks), "index": index}


# ------------------------------------------------------------------------------------------------ the losses
def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_keys(k: torch.Tensor) -> torch.Tensor:
    """``k (B, D)`` of every rank concatenated in rank order ``(W * B, D)``, without gradient (MoCo v3's
    ``concat_all_gather``); ``k`` itself (detached) when not distributed."""
    if _rank_world()[1] == 1:
        return k.detach()
    out = [torch.empty_like(k) for _ in range(dist.get_world_size())]
    dist.all_gather(out, k.detach().contiguous())
    return torch.cat(out, dim=0)


def align_loss(q: torch.Tensor, k: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """One direction of HAP's align loss (B.5): ``CE(norm(q) @ gather(norm(k))^T / t, arange(B) + B * rank) * 2t``
    with stop-grad keys. fp32."""
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.float(), dim=1)
    keys = gather_keys(k)
    rank = _rank_world()[0]
    labels = torch.arange(q.shape[0], device=q.device) + q.shape[0] * rank
    return F.cross_entropy(q @ keys.t() / temperature, labels) * (2.0 * temperature)


# ------------------------------------------------------------------------------------------------ the method
class HAPPretrain(nn.Module):
    """``forward(batch)`` with ``image (B, 3, H, W)`` and ``masks (B, V, L)`` -> ``loss``, ``loss_rec`` (mean over
    the views), ``loss_align`` (symmetric, 0 with one view) and ``masked_fraction``."""

    def __init__(self, mae: PoseMAE, align_weight: float = 0.05, align_temperature: float = 0.2) -> None:
        super().__init__()
        self.mae, self.align_weight, self.align_temperature = mae, float(align_weight), float(align_temperature)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        imgs, masks = batch["image"], batch["masks"]
        b, views, num = masks.shape
        all_imgs = imgs.repeat(views, 1, 1, 1)  # view-major: rows v * B + i
        all_masks = masks.transpose(0, 1).reshape(views * b, num)
        latent, ids_restore = self.mae.forward_encoder(all_imgs, all_masks)
        pred = self.mae.forward_decoder(latent, ids_restore)
        rec = [self.mae.forward_loss(imgs, pred[v * b:(v + 1) * b], masks[:, v]) for v in range(views)]
        loss_rec = torch.stack(rec).mean()
        if views == 2:
            cls1, cls2 = latent[:b, 0], latent[b:, 0]
            loss_align = (align_loss(cls1, cls2, self.align_temperature)
                          + align_loss(cls2, cls1, self.align_temperature))
        else:
            loss_align = loss_rec.new_zeros(())
        return {"loss": loss_rec + self.align_weight * loss_align, "loss_rec": loss_rec, "loss_align": loss_align,
                "masked_fraction": masks.float().mean()}


def build_method(recipe: HAPRecipe, pretrained: bool = True, quiet: bool = True) -> HAPPretrain:
    """The recipe's :class:`HAPPretrain`; with ``pretrained`` and ``pretrain.init`` the encoder starts from that MAE
    checkpoint (B.7)."""
    from humanvision.models import create_model

    cfg = recipe.pretrain
    mae = create_model(cfg.model, **{"norm_pix_loss": cfg.norm_pix_loss, **cfg.model_args})
    if pretrained and cfg.init is not None:
        report = load_mae_checkpoint(mae, cfg.init, old_grid=cfg.init_grid)
        if not quiet:
            print(f"init: {cfg.init} (resampled {', '.join(report.resized) or 'nothing'}; left at their "
                  f"initialisation: {len(report.missing)} decoder keys)")
    return HAPPretrain(mae, cfg.align_weight, cfg.align_temperature)


# ------------------------------------------------------------------------------------------- the lr schedule
@dataclass(frozen=True)
class WarmupCosineSchedule(LRSchedule):
    """MAE's per-iteration schedule (B.6): ``it / warmup_iters`` during the warm-up (0 at the first step), then
    ``m + (1 - m) (1 + cos(pi (t - warmup) / (total - warmup))) / 2`` with ``m = min_lr_ratio``; ``t`` is the
    iteration, or ``progress * total`` when larger (a run on a time budget, see the engine)."""

    def factor(self, it: int, progress: float | None = None) -> float:
        warm, total = self.warmup_iters, self.total_iters
        if it < warm:
            return it / warm
        t = it if progress is None else max(it, progress * total)
        frac = min(max((t - warm) / max(total - warm, 1), 0.0), 1.0)
        m = self.min_lr_ratio
        return m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * frac))


# ----------------------------------------------------------------------------------------------- the data
def prepare_synthetic_crops(data: PretrainDataConfig, quiet: bool = False) -> PretrainDataConfig:
    """For ``source: synthetic``: write the synthetic person crops once (a stamp file records the parameters, so a
    change regenerates them; under torchrun rank 0 writes and the others wait) and point ``root`` / ``keypoints``
    at them."""
    if data.source != "synthetic":
        return data
    from humanvision.data.synthetic.cache import write_once
    from humanvision.data.synthetic.identities import generate_person_crops

    root = Path(data.synthetic_dir)
    params = {"num": data.synthetic_num, "size": list(data.synthetic_size), "seed": data.synthetic_seed}
    write_once(root, params, lambda progress: generate_person_crops(
        root, data.synthetic_num, seed=data.synthetic_seed, size=tuple(data.synthetic_size),
        workers=os.cpu_count() or 1, progress=progress),
        quiet=quiet, description=f"synthesising {data.synthetic_num} person crops -> {root}",
        stamp="humanvision_person_crops.json")
    data.root, data.keypoints = root, root / "keypoints.json"
    return data


def build_dataset(recipe: HAPRecipe, mae: PoseMAE, bad_log: str | Path | None = None) -> PersonCropDataset:
    """Scan the recipe's crops (:func:`~humanvision.data.readers.person_crops.scan_person_crops`) and wrap them in
    the training :class:`PersonCropDataset` at the model's input size."""
    data, cfg = recipe.data, recipe.pretrain
    if data.root is None:
        raise ConfigError("data.root: required (or use data.source: synthetic)")
    crops = scan_person_crops(data.root, data.keypoints, subset_list=data.subset_list, ratio=data.subset_ratio,
                              subset_mode=data.subset_mode, seed=recipe.train.seed)
    size = tuple(mae.patch_embed.img_size)
    transform = PersonCropTransform(size, data.scale, data.ratio, data.hflip, train=True)
    return PersonCropDataset(crops, transform, cfg.masking, cfg.mask_ratio, 2 if cfg.two_views else 1,
                             cfg.num_parts, mae.patch_size, data.max_bad_fraction, bad_log)


# ------------------------------------------------------------------------------------------------- pictures
def _to_uint8(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """A normalised ``(3, H, W)`` image as ``(H, W, 3)`` uint8 RGB."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device)[:, None, None]
    s = torch.tensor(std, dtype=x.dtype, device=x.device)[:, None, None]
    return ((x * s + m).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def reconstruction_figure(mae: PoseMAE, batch: dict[str, torch.Tensor], mean: tuple[float, ...] = IMAGENET_MEAN,
                          std: tuple[float, ...] = IMAGENET_STD) -> np.ndarray:
    """One row per sample: the input, then per view the masked input (masked patches grey) and the reconstruction
    (predicted patches where masked, the input elsewhere; norm-pix predictions are mapped back with each target
    patch's mean and std). ``(H, W, 3)`` uint8 RGB."""
    from humanvision.viz import make_grid

    was_training = mae.training
    mae.eval()
    device = next(mae.parameters()).device
    imgs = batch["image"].to(device).float()
    masks = batch["masks"].to(device)
    tiles, titles = [], []
    try:
        target = patchify(imgs, mae.patch_size)
        mu, sd = target.mean(-1, keepdim=True), (target.var(-1, keepdim=True) + 1e-6) ** 0.5
        views = []
        for v in range(masks.shape[1]):
            _, pred, _ = mae(imgs, masks[:, v])
            pred = pred.float() * sd + mu if mae.norm_pix_loss else pred.float()
            m = masks[:, v, :, None].float()
            grey = torch.tensor([0.5, 0.5, 0.5], device=device)
            grey = ((grey - torch.tensor(mean, device=device)) / torch.tensor(std, device=device))
            grey_patches = grey.repeat(mae.patch_size * mae.patch_size)  # (p, q, c) order: c fastest
            masked = mae.unpatchify(target * (1 - m) + grey_patches * m)
            pasted = mae.unpatchify(target * (1 - m) + pred * m)
            views.append((masked, pasted))
    finally:
        mae.train(was_training)
    for i in range(imgs.shape[0]):
        tiles.append(_to_uint8(imgs[i], mean, std))
        titles.append("input")
        for v, (masked, pasted) in enumerate(views):
            tiles += [_to_uint8(masked[i], mean, std), _to_uint8(pasted[i], mean, std)]
            titles += [f"mask {v + 1}", f"recon {v + 1}"]
    return make_grid(tiles, ncols=1 + 2 * len(views), titles=titles)


def _snapshot_batch(dataset: PersonCropDataset, count: int, seed: int) -> dict[str, torch.Tensor]:
    """The first ``count`` crops, augmented and masked with fixed seeds (the same in every picture)."""
    from torch.utils.data import default_collate

    from humanvision.engine import SeededDataset

    seeded = SeededDataset(dataset)
    return default_collate([seeded[(i, seed + i)] for i in range(min(count, len(dataset)))])


# -------------------------------------------------------------------------------------------------- training
def run_training(recipe: HAPRecipe, resume: bool = False, quiet: bool = False) -> dict:
    """Pre-train with the engine: build the model (and load ``pretrain.init``), scan the crops (skips printed and
    written to ``<output_dir>/skipped.json``), set the lr from ``pretrain.blr`` and MAE's schedule, write
    reconstruction pictures every ``pretrain.snapshot_every`` steps and at the end. Returns the fit summary."""
    from humanvision.config import save_config
    from humanvision.data.io import write_image
    from humanvision.engine import Trainer, seed_everything

    seed_everything(recipe.train.seed)
    method = build_method(recipe, quiet=quiet)  # before any data work: a bad model or init file fails at once
    prepare_synthetic_crops(recipe.data, quiet=quiet)
    out = Path(recipe.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    dataset = build_dataset(recipe, method.mae, bad_log=out / "bad_images.tsv")
    if main_rank:
        if not quiet:
            print(dataset.crops.summary())
        (out / "skipped.json").write_text(json.dumps(dataset.crops.skipped, indent=1))
    train = recipe.train
    if recipe.pretrain.blr is not None:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        total = train.batch_size * train.accum_steps * world
        train = dataclasses.replace(train, lr=recipe.pretrain.blr * total / 256)
        if not quiet and main_rank:
            print(f"lr = blr {recipe.pretrain.blr:g} x total batch {total} / 256 = {train.lr:.4g}")
    save_config(recipe, out / "config.yaml")
    trainer = Trainer(train, method, dataset)
    if recipe.pretrain.lr_schedule == "mae":
        s = trainer.schedule
        trainer.schedule = WarmupCosineSchedule(**{f.name: getattr(s, f.name) for f in dataclasses.fields(s)})
    snaps = out / "snapshots"
    batch = _snapshot_batch(dataset, recipe.pretrain.snapshot_samples, train.seed) if main_rank else None
    every = recipe.pretrain.snapshot_every
    if main_rank and every:
        def snapshot(optimizer, args, kwargs) -> None:  # runs inside optimizer.step(): trainer.step is the last one
            step = trainer.step + 1
            if step % every == 0:
                write_image(snaps / f"step_{step:07d}.png", reconstruction_figure(method.mae, batch))

        trainer.optimizer.register_step_post_hook(snapshot)
    summary = trainer.fit(resume=resume or None)
    if main_rank:
        write_image(snaps / f"step_{trainer.step:07d}.png", reconstruction_figure(method.mae, batch))
    summary["skipped"] = {k: len(v) for k, v in dataset.crops.skipped.items()}
    summary["bad_images"] = len(dataset.bad_images)
    return summary


# ---------------------------------------------------------------------------------------------------- export
def export_encoder(weights: str | Path, out: str | Path, grid: tuple[int, int] | None = None,
                   old_grid: tuple[int, int] = (16, 8)) -> Path:
    """Write the encoder of ``weights`` (our run folder / checkpoint, or HAP's released ``.pth``) as a timm
    ``VisionTransformer`` state dict: ``.safetensors``, or a bare ``torch.save`` dict for any other suffix.
    ``pos_embed`` is resampled from ``old_grid`` to ``grid`` (default: kept). The result is checked against a timm
    ViT of the same width and depth (strict key and shape match) before it is written. Our ViTPose takes it with
    :func:`humanvision.models.weights.load_backbone_weights` (``src_grid=grid``)."""
    from safetensors.torch import save_file
    from timm.models.vision_transformer import VisionTransformer

    grid = tuple(grid) if grid is not None else tuple(old_grid)
    state = hap_to_timm(weights, grid, old_grid)
    dim = state["pos_embed"].shape[-1]
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    patch = state["patch_embed.proj.weight"].shape[-1] if "patch_embed.proj.weight" in state else 16
    with torch.device("meta"):
        vit = VisionTransformer(img_size=(grid[0] * patch, grid[1] * patch), patch_size=patch, embed_dim=dim,
                                depth=depth, num_heads=max(dim // 64, 1), num_classes=0)
    try:
        vit.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise DataError(f"not a ViT encoder of width {dim} and depth {depth}: {e}", file=str(weights)) from None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    if out.suffix == ".safetensors":
        save_file(state, str(out), metadata={"format": "pt", "humanvision": json.dumps({"grid": list(grid)})})
    else:
        torch.save(state, out)
    return out

