"""Person re-identification with a (HAP-initialised) ViT, readable top to bottom (pretraining.md B.9.1).

Training: a person crop -> bicubic resize to ``model.img_size`` -> horizontal flip -> zero padding 10 + random
crop back to size -> ImageNet normalisation -> random erasing (p 0.5, per-pixel normal noise) -> :class:`ReIDViT`
-> ``loss = 0.5 CE(logits, id) + 0.5 triplet`` where the triplet loss is batch-hard with a **soft margin**
(``log(1 + exp(d_ap - d_an))``) on **raw Euclidean distances** of the un-normalised features
(:func:`batch_hard_triplet_loss`); with ViT-lem both terms are averaged over the two branches. Batches are
``P`` identities x ``K`` instances (:class:`RandomIdentitySampler`; 8 x 8 = 64 in the published recipe).
Optimisation: AdamW (0.9, 0.999), wd 0.05 (none on 1-D parameters, ``pos_embed``, ``cls_token``), lr 8e-3 with
layer-wise decay 0.4 (``0.4 ** (13 - layer)``: embeddings layer 0, block i layer i + 1, head layer 13), linear
warm-up over 5 epochs then a half-cycle cosine, per iteration; 100 epochs.

Evaluation (:func:`evaluate_reid_model`): the test feature (the class token after the final LayerNorm; with lem
``cat(cls, conv)``) of every query and gallery image, L2-normalised, Euclidean distances, and the Market-1501
protocol of :func:`humanvision.metrics.reid.evaluate_reid` (same id and camera removed, junk id -1 removed,
distractors 0 kept): mAP, rank-1/5/10 and mINP, written to ``metrics.json`` with a picture of a few queries and
their top-k gallery matches (``ranking.png``: green border = same identity, red = another).

A recipe (:class:`ReIDRecipe`) has the sections ``model``, ``reid`` (its top-level mark, :func:`is_reid_recipe`),
``data``, ``train`` (the engine's :class:`~humanvision.engine.TrainConfig`) and ``eval``; see
``configs/hap_reid_*.yaml`` and ``configs/reid_vit_tiny_synthetic.yaml``. The published recipes initialise the
trunk from the HAP checkpoint (``model.init``, its grid ``model.init_grid`` = (16, 8), B.7-B.8).
"""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from humanvision.config import must_exist
from humanvision.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize_image
from humanvision.engine import TrainConfig
from humanvision.engine.checkpoint import load_state_strict, read_weights
from humanvision.engine.distributed import sample_seeds
from humanvision.errors import ConfigError, DataError
from humanvision.models.person_vit import PersonViT, ReIDViT

__all__ = [
    "DataConfig", "EvalConfig", "ModelConfig", "RandomIdentitySampler", "ReIDConfig", "ReIDImages", "ReIDMethod",
    "ReIDRecipe", "ReIDTrainSet", "batch_hard_triplet_loss", "build_method", "check_person_model",
    "draw_ranking", "evaluate_reid_model", "evaluate_weights", "extract_features", "init_trunk",
    "is_reid_recipe", "load_recipe", "person_transform", "prepare_synthetic",
    "random_erasing", "read_data", "run_training",
]


# ----------------------------------------------------------------------------------------------- the recipe
def check_person_model(name: str, cls: type[PersonViT], what: str, key: str = "model.name") -> None:
    """Raise a ConfigError naming ``key`` unless ``name`` is a registered entry point building a ``cls``."""
    import humanvision.models.person_vit  # noqa: F401  (registers the entry points)
    from humanvision.models import model_entrypoint

    try:
        fn = model_entrypoint(name)
    except ConfigError as e:
        raise ConfigError(f"{key}: {e}") from None
    if not _builds(fn, cls):
        raise ConfigError(f"{key}: {name!r} is not a {what} model (one of "
                          f"{', '.join(_entry_points(cls))})")


def _entry_points(cls: type[PersonViT]) -> list[str]:
    from humanvision.models import list_models, model_entrypoint

    return [n for n in list_models() if _builds(model_entrypoint(n), cls)]


def _builds(fn, cls: type) -> bool:
    """True when the entry point ``fn``'s return annotation is ``cls`` or a subclass."""
    try:
        ret = typing.get_type_hints(fn).get("return")
    except (NameError, TypeError):
        return False
    return isinstance(ret, type) and issubclass(ret, cls)


@dataclass
class ModelConfig:
    """``name``: a re-id entry point (``reid_vit_{tiny,small,base}_patch16``); ``img_size``: (height, width);
    ``init``: a pre-training checkpoint for the trunk (the HAP release, an MAE encoder or our pre-training
    export), its patch grid ``init_grid`` (rows, cols; (16, 8) for HAP, pitfall 5); ``bnneck`` (default: off for
    the plain ViT, on with ``lem``), ``lem`` (ViT-lem); ``drop_path_rate``; ``args``: other keyword arguments of
    the entry point."""

    name: str = "reid_vit_base_patch16"
    img_size: tuple[int, int] = (256, 128)
    init: Path | None = must_exist()
    init_grid: tuple[int, int] = (16, 8)
    bnneck: bool | None = None
    lem: bool = False
    drop_path_rate: float = 0.1
    args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from humanvision.models import check_model_args

        check_person_model(self.name, ReIDViT, "re-identification")
        check_model_args(self.name, self.args)
        if "num_classes" in self.args:
            raise ConfigError("model.args.num_classes: the number of identities comes from the training set")
        for k in ("img_size", "bnneck", "lem", "drop_path_rate"):
            if k in self.args:
                raise ConfigError(f"model.args.{k}: set it as model.{k}")
        if min(self.img_size) < 16 or min(self.init_grid) < 1:
            raise ConfigError(f"model.img_size / model.init_grid: got {self.img_size} / {self.init_grid}")


@dataclass
class ReIDConfig:
    """The ``reid`` section: ``num_instances`` K per identity in a batch (``train.batch_size`` = P x K per
    process); loss weights of the ID (cross-entropy, optional ``label_smoothing``) and triplet terms."""

    num_instances: int = 8
    id_loss_weight: float = 0.5
    triplet_loss_weight: float = 0.5
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.num_instances < 1:
            raise ConfigError(f"reid.num_instances: must be >= 1, got {self.num_instances}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"reid.label_smoothing: must be in [0, 1), got {self.label_smoothing}")


@dataclass
class DataConfig:
    """``source``: ``market1501`` / ``msmt17`` (the official folders under ``root``), ``auto`` (either, by layout)
    or ``synthetic`` (a Market-1501-layout set written to ``synthetic_dir`` on first use, with
    ``synthetic_train_ids`` / ``synthetic_test_ids`` identities seen by ``synthetic_cameras`` cameras).
    Augmentation: ``flip_prob``, ``pad`` (zero padding before the random crop), ``erase_prob`` (random erasing)."""

    source: Literal["market1501", "msmt17", "auto", "synthetic"] = "market1501"
    root: Path | None = must_exist()
    synthetic_dir: Path = Path("data/synthetic_market1501")
    synthetic_train_ids: int = 60
    synthetic_test_ids: int = 40
    synthetic_cameras: int = 6
    synthetic_seed: int = 0
    flip_prob: float = 0.5
    pad: int = 10
    erase_prob: float = 0.5

    def __post_init__(self) -> None:
        for k in ("flip_prob", "erase_prob"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise ConfigError(f"data.{k}: must be in [0, 1], got {getattr(self, k)}")
        if self.pad < 0:
            raise ConfigError(f"data.pad: must be >= 0, got {self.pad}")


@dataclass
class EvalConfig:
    """``batch_size`` of feature extraction; ``max_rank`` of the CMC curve; ``num_vis`` queries with their
    ``topk`` matches in ``ranking.png``; ``precision`` of ``humanvision eval`` (training evaluates in the
    training run's precision)."""

    batch_size: int = 128
    max_rank: int = 50
    num_vis: int = 8
    topk: int = 10
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"


def _reid_train() -> TrainConfig:
    return TrainConfig(epochs=100, batch_size=64, lr=8e-3, weight_decay=0.05, layer_decay=0.4,
                       schedule="cosine", warmup_epochs=5, warmup_ratio=0.0, eval_every=10, best_metric="mAP",
                       output_dir="runs/reid")


@dataclass
class ReIDRecipe:
    """A recipe; without a ``train`` section the published optimisation applies (a ``train`` section is taken
    as written, over the engine's plain defaults)."""

    name: str = "reid"
    model: ModelConfig = field(default_factory=ModelConfig)
    reid: ReIDConfig = field(default_factory=ReIDConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=_reid_train)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.train.batch_size % self.reid.num_instances:
            raise ConfigError(f"train.batch_size: {self.train.batch_size} is not a multiple of reid.num_instances "
                              f"{self.reid.num_instances} (a batch is P identities x K instances)")
        if self.data.source != "synthetic" and self.data.root is None:
            raise ConfigError(f"data.root: required for data.source {self.data.source!r} (the folder with "
                              "bounding_box_train, bounding_box_test and query), or use data.source: synthetic")


def is_reid_recipe(source: Any) -> bool:
    """True for a :class:`ReIDRecipe`, a mapping or a YAML file with a top-level ``reid`` section."""
    from humanvision.config import recipe_mapping

    return isinstance(source, ReIDRecipe) or "reid" in recipe_mapping(source)


def load_recipe(source: str | Path | dict, overrides: list[str] | tuple[str, ...] = (),
                unchecked: tuple[str, ...] = ()) -> ReIDRecipe:
    """Load a re-id recipe (``unchecked``: as :func:`humanvision.config.load_config`)."""
    from humanvision.config import load_config

    return load_config(source, ReIDRecipe, overrides, unchecked=tuple(unchecked))


# ------------------------------------------------------------------------------------------------- the loss
def batch_hard_triplet_loss(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Batch-hard soft-margin triplet loss: for each anchor, the hardest positive ``d_ap`` (largest distance to
    the same id, the anchor itself included) and the hardest negative ``d_an`` (smallest distance to another
    id), ``mean softplus(d_ap - d_an)`` (= ``SoftMarginLoss(d_an - d_ap, 1)``). Distances are Euclidean on the
    raw features, ``sqrt(max(|a|^2 + |b|^2 - 2 a.b, 1e-12))``; fp32. An anchor without negatives adds 0."""
    f = features.float()
    sq = (f * f).sum(1)
    dist = (sq[:, None] + sq[None, :] - 2.0 * f @ f.T).clamp_min(1e-12).sqrt()
    same = labels[:, None] == labels[None, :]
    d_ap = dist.masked_fill(~same, float("-inf")).max(1).values
    d_an = dist.masked_fill(same, float("inf")).min(1).values
    return F.softplus(d_ap - d_an).mean()


# ------------------------------------------------------------------------------------------------ the method
class ReIDMethod(nn.Module):
    """Model + losses. ``forward(batch)`` (``image``, ``label``: training ids 0..K-1) returns ``loss =
    id_loss_weight * CE + triplet_loss_weight * triplet`` (each averaged over the branches), the terms and the
    batch's ID accuracy; :meth:`embed` gives the test features."""

    def __init__(self, model: ReIDViT, id_loss_weight: float = 0.5, triplet_loss_weight: float = 0.5,
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.id_loss_weight, self.triplet_loss_weight = float(id_loss_weight), float(triplet_loss_weight)
        self.label_smoothing = float(label_smoothing)

    @property
    def num_layers(self) -> int:
        return self.model.num_layers

    def layer_id(self, name: str) -> int:
        return self.model.layer_id(name.removeprefix("model."))

    def no_weight_decay(self) -> set[str]:
        return {f"model.{n}" for n in self.model.no_weight_decay()}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labels = batch["label"].long()
        out = self.model(batch["image"])
        ce = torch.stack([F.cross_entropy(lg.float(), labels, label_smoothing=self.label_smoothing)
                          for lg in out["logits"]]).mean()
        tri = torch.stack([batch_hard_triplet_loss(f, labels) for f in out["features"]]).mean()
        acc = (out["logits"][0].detach().argmax(1) == labels).float().mean()
        return {"loss": self.id_loss_weight * ce + self.triplet_loss_weight * tri, "id_loss": ce,
                "triplet_loss": tri, "accuracy": acc}

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised crops -> test features ``(B, E)`` (not normalised)."""
        return self.model.embed(images)


def init_trunk(model: PersonViT, path: str | Path, old_grid: Sequence[int] = (16, 8), key: str = "model.init"):
    """:func:`~humanvision.models.person_vit.init_from_pretrained` with a one-line report on rank 0."""
    from humanvision.models.person_vit import init_from_pretrained

    if not Path(path).exists():
        raise ConfigError(f"{key}: file not found: {path}")
    report = init_from_pretrained(model, path, tuple(old_grid))
    if int(os.environ.get("RANK", "0")) == 0:
        resized = f", pos_embed resampled {tuple(old_grid)} -> {model.grid_size}" if report.resized else ""
        print(f"trunk initialised from {path}{resized}; {len(report.dropped)} classifier keys dropped; "
              f"{len(report.missing)} task-head tensors left at their initialisation", flush=True)
    return report


def build_method(recipe: ReIDRecipe, num_classes: int, weights: str | Path | None = None) -> ReIDMethod:
    """The recipe's model for ``num_classes`` training identities, its trunk from ``model.init`` (unless
    ``weights``, a trained re-id checkpoint, replace everything)."""
    from humanvision.models import model_entrypoint

    m = recipe.model
    try:
        model = model_entrypoint(m.name)(num_classes=num_classes, img_size=tuple(m.img_size), bnneck=m.bnneck,
                                         lem=m.lem, drop_path_rate=m.drop_path_rate, **m.args)
    except ValueError as e:
        raise ConfigError(f"model ({m.name}): {e}") from None
    r = recipe.reid
    method = ReIDMethod(model, r.id_loss_weight, r.triplet_loss_weight, r.label_smoothing)
    if weights is not None:
        load_state_strict(method, weights)
    elif m.init is not None:
        init_trunk(model, m.init, m.init_grid)
    return method


# ---------------------------------------------------------------------------------------------------- data
def random_erasing(x: np.ndarray, rng: np.random.Generator, prob: float = 0.5, area: tuple[float, float] = (0.02, 1 / 3),
                   min_aspect: float = 0.3, attempts: int = 10) -> np.ndarray:
    """Random erasing, pixel mode, on a normalised ``(C, H, W)`` float array (in place): with probability
    ``prob`` one rectangle of ``area`` fraction U(0.02, 1/3) of the image and aspect ratio log-uniform in
    ``[min_aspect, 1 / min_aspect]`` (up to ``attempts`` draws until it fits) is filled with N(0, 1) noise, one
    value per pixel and channel."""
    if prob <= 0.0 or rng.random() >= prob:
        return x
    c, h, w = x.shape
    for _ in range(attempts):
        target = rng.uniform(*area) * h * w
        aspect = np.exp(rng.uniform(np.log(min_aspect), -np.log(min_aspect)))
        eh, ew = round(float(np.sqrt(target * aspect))), round(float(np.sqrt(target / aspect)))
        if 0 < eh < h and 0 < ew < w:
            top, left = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
            x[:, top:top + eh, left:left + ew] = rng.standard_normal((c, eh, ew)).astype(x.dtype)
            break
    return x


def person_transform(image: np.ndarray, size: tuple[int, int], rng: np.random.Generator | None = None, *,
                     flip_prob: float = 0.5, pad: int = 10, erase_prob: float = 0.0,
                     interpolation: int = cv2.INTER_CUBIC, mean: Sequence[float] = IMAGENET_MEAN,
                     std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """``(H, W, 3)`` uint8 RGB person crop -> ``(3, h, w)`` normalised tensor at ``size = (h, w)``.

    Without ``rng`` (testing): resize and normalise. With ``rng`` (training): resize, horizontal flip
    (``flip_prob``), zero padding by ``pad`` on every side and a random ``(h, w)`` crop of it, normalisation and
    :func:`random_erasing` (``erase_prob``)."""
    if image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise DataError(f"expected an (H, W, 3) image, got shape {image.shape}", field="image")
    h, w = size
    img = cv2.resize(image, (w, h), interpolation=interpolation)
    if rng is not None:
        if rng.random() < flip_prob:
            img = img[:, ::-1]
        if pad > 0:
            canvas = np.zeros((h + 2 * pad, w + 2 * pad, 3), dtype=img.dtype)
            canvas[pad:pad + h, pad:pad + w] = img
            top, left = int(rng.integers(0, 2 * pad + 1)), int(rng.integers(0, 2 * pad + 1))
            img = canvas[top:top + h, left:left + w]
    x = normalize_image(np.ascontiguousarray(img), mean, std)
    if rng is not None and erase_prob > 0:
        random_erasing(x.numpy(), rng, erase_prob)
    return x


class ReIDTrainSet(Dataset):
    """The training images of a :class:`~humanvision.data.readers.reid.ReIDDataset` with their relabelled ids:
    items ``{image, label, index}``, augmented by :func:`person_transform` with an RNG drawn from numpy's global
    generator (which the engine seeds per sample)."""

    def __init__(self, data, size: tuple[int, int], *, flip_prob: float = 0.5, pad: int = 10,
                 erase_prob: float = 0.5) -> None:
        self.items = list(data.train)
        labels, self.num_classes = data.train_labels()
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.labels) != len(self.items):
            raise DataError(f"{len(self.labels)} labels for {len(self.items)} training images", file=str(data.name))
        self.size, self.flip_prob, self.pad, self.erase_prob = tuple(size), flip_prob, pad, erase_prob

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from humanvision.data.io import read_image

        rng = np.random.default_rng(np.random.randint(0, 2**63 - 1, dtype=np.int64))
        image = person_transform(read_image(self.items[index].path), self.size, rng, flip_prob=self.flip_prob,
                                 pad=self.pad, erase_prob=self.erase_prob)
        return {"image": image, "label": torch.tensor(self.labels[index]), "index": index}


class ReIDImages(Dataset):
    """Test-time crops of a list of :class:`~humanvision.data.readers.reid.ReIDItem`: ``{image, index}``."""

    def __init__(self, items: Sequence, size: tuple[int, int]) -> None:
        self.items, self.size = list(items), tuple(size)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from humanvision.data.io import read_image

        return {"image": person_transform(read_image(self.items[index].path), self.size), "index": index}


class RandomIdentitySampler(Sampler):
    """P identities x K instances per batch, as a pure function of ``(seed, epoch)``, with the engine's sampler
    contract (:class:`~humanvision.engine.distributed.ResumableSampler`).

    Each *round* shuffles every identity's images and cuts them into chunks of K (the remainder is dropped); an
    identity with fewer than K images gets one chunk of K drawn with replacement. A batch takes one chunk from
    each of P identities drawn uniformly, without replacement, among those with chunks left; when fewer than P
    have chunks left a new round starts. An epoch is a fixed number of batches, ``sum_i max(n_i, K) // K // P``
    (the number of chunks of one round over P), so every epoch has the same length (what the engine and resuming
    need).

    ``batch_size`` is per process and ``P = batch_size * world_size / K``: a global batch holds P identities, and
    rank ``r`` gets the ``batch_size / K`` identities ``r * P / W ...`` of it, whole (so every rank's triplet
    loss sees K instances per id), and W processes see the same global batches as one process with batch
    ``batch_size * W``. ``set_epoch(epoch, start)`` skips this rank's first ``start`` samples; items are
    ``(index, sample_seed)`` for the engine's ``SeededDataset`` (``with_seeds=False``: plain indices); the seed
    is a hash of (seed, epoch, position in the epoch), so an image drawn twice is augmented twice differently.
    """

    def __init__(self, labels: Sequence[int], batch_size: int, num_instances: int, *, seed: int = 0,
                 rank: int = 0, world_size: int = 1, with_seeds: bool = True) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        k = int(num_instances)
        if k < 1 or batch_size % k:
            raise ConfigError(f"train.batch_size: {batch_size} is not a multiple of reid.num_instances {k}")
        self.k, self.local_ids = k, batch_size // k
        self.num_ids = self.local_ids * world_size  # P, identities per global batch
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, int(seed), rank, world_size
        self.with_seeds = with_seeds
        ids = np.unique(labels)
        self.groups = [np.flatnonzero(labels == i) for i in ids]
        if len(self.groups) < self.num_ids:
            raise ConfigError(f"train.batch_size: a batch of {self.num_ids} identities x {k} needs at least "
                              f"{self.num_ids} identities; the training set has {len(self.groups)}")
        chunks = sum(max(len(g), k) // k for g in self.groups)
        self.num_batches = chunks // self.num_ids  # global batches per epoch
        self.num_samples = self.num_batches * batch_size  # per rank
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.num_samples - self.start

    def _round(self, rng: np.random.Generator) -> list[np.ndarray]:
        out = []
        for g in self.groups:
            if len(g) < self.k:
                out.append(rng.choice(g, self.k, replace=True)[None])
            else:
                perm = rng.permutation(g)
                out.append(perm[:len(g) // self.k * self.k].reshape(-1, self.k))
        return out

    def epoch_batches(self, epoch: int | None = None) -> np.ndarray:
        """The epoch's global batches ``(num_batches, P, K)`` of dataset indices (before sharding)."""
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch])
        chunks = self._round(rng)
        used = np.zeros(len(chunks), dtype=np.int64)
        left = np.array([len(c) for c in chunks])
        batches = np.empty((self.num_batches, self.num_ids, self.k), dtype=np.int64)
        for b in range(self.num_batches):
            avail = np.flatnonzero(used < left)
            if len(avail) < self.num_ids:  # a new round
                chunks = self._round(rng)
                used[:] = 0
                avail = np.arange(len(chunks))
            for j, i in enumerate(rng.choice(avail, self.num_ids, replace=False)):
                batches[b, j] = chunks[i][used[i]]
                used[i] += 1
        return batches

    def __iter__(self) -> Iterator:
        batches = self.epoch_batches()
        lo = self.rank * self.local_ids
        mine = batches[:, lo:lo + self.local_ids].reshape(-1)[self.start:]
        if not self.with_seeds:
            return iter(mine.tolist())
        per_batch = self.num_ids * self.k
        pos = (np.arange(self.num_batches)[:, None] * per_batch + lo * self.k
               + np.arange(self.batch_size)[None]).reshape(-1)[self.start:]
        return iter(zip(mine.tolist(), sample_seeds(self.seed, self.epoch, pos).tolist(), strict=True))


def prepare_synthetic(data: DataConfig, quiet: bool = False) -> Path:
    """For ``source: synthetic``: write the Market-1501-layout synthetic set into ``synthetic_dir`` once (a stamp
    file records its parameters, so a change regenerates it; under torchrun only rank 0 writes) and return it."""
    from humanvision.data.synthetic.cache import write_once
    from humanvision.data.synthetic.identities import generate_market1501

    root = Path(data.synthetic_dir)
    params = {"train_ids": data.synthetic_train_ids, "test_ids": data.synthetic_test_ids,
              "cameras": data.synthetic_cameras, "seed": data.synthetic_seed}
    write_once(root, params, lambda progress: generate_market1501(
        root, num_train_ids=data.synthetic_train_ids, num_test_ids=data.synthetic_test_ids,
        cameras=data.synthetic_cameras, seed=data.synthetic_seed, progress=progress,
        workers=os.cpu_count() or 1), quiet=quiet, description=f"synthesising re-id identities -> {root}")
    return root


def read_data(data: DataConfig, quiet: bool = False):
    """The :class:`~humanvision.data.readers.reid.ReIDDataset` of the recipe (synthetic: generated first)."""
    from humanvision.data.readers.reid import read_market1501, read_msmt17, read_reid

    if data.source == "synthetic":
        return read_market1501(prepare_synthetic(data, quiet))
    if data.root is None:
        raise ConfigError("data.root: required (or use data.source: synthetic)")
    return {"market1501": read_market1501, "msmt17": read_msmt17, "auto": read_reid}[data.source](data.root)


# ----------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def extract_features(method: ReIDMethod, dataset: Dataset, batch_size: int = 128, *,
                     device: str | torch.device | None = None, precision: str = "fp32", num_workers: int = 0
                     ) -> torch.Tensor:
    """Test features ``(N, E)`` float32 (CPU, not normalised) of every item of ``dataset`` in order."""
    from humanvision.engine.precision import autocast

    device = torch.device(device) if device is not None else next(method.parameters()).device
    was_training = method.training
    method.eval().to(device)
    out = []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers):
        with autocast(device, precision):
            out.append(method.embed(batch["image"].to(device)).float().cpu())
    method.train(was_training)
    if not out:
        raise DataError("no images to embed", field="dataset")
    return torch.cat(out)


def _ids(items: Sequence) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([it.pid for it in items], dtype=np.int64), np.array([it.camid for it in items], dtype=np.int64))


def evaluate_reid_model(method: ReIDMethod, data, size: tuple[int, int], eval_cfg: EvalConfig | None = None,
                        out_dir: str | Path | None = None, *, device: str | torch.device | None = None,
                        precision: str | None = None, num_workers: int = 0) -> dict[str, Any]:
    """mAP, rank-1/5/10, mINP (percent) and counts of ``method`` on ``data``'s query and gallery sets (see the
    module docstring). With ``out_dir``: ``metrics.json`` (with the CMC curve), ``ranking.png`` and
    ``ranking.json`` (the pictured queries' top-k)."""
    from humanvision.metrics.reid import evaluate_reid, reid_distance

    cfg = eval_cfg or EvalConfig()
    prec = precision or cfg.precision
    q = extract_features(method, ReIDImages(data.query, size), cfg.batch_size, device=device, precision=prec,
                         num_workers=num_workers)
    g = extract_features(method, ReIDImages(data.gallery, size), cfg.batch_size, device=device, precision=prec,
                         num_workers=num_workers)
    qid, qcam = _ids(data.query)
    gid, gcam = _ids(data.gallery)
    dist = reid_distance(q, g, "euclidean", normalize=True)
    res = evaluate_reid(dist, qid, gid, qcam, gcam, max_rank=cfg.max_rank)
    metrics: dict[str, Any] = {"mAP": res.mAP, "rank1": res.rank1, "rank5": res.rank5, "rank10": res.rank10,
                               "mINP": res.mINP, "num_query": len(qid), "num_gallery": len(gid),
                               "num_valid_queries": res.num_valid_queries, "feature_dim": int(q.shape[1])}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps({**metrics, "cmc": [float(c) for c in res.cmc]}, indent=2))
        if cfg.num_vis > 0:
            examples = draw_ranking(data.query, data.gallery, dist, out / "ranking.png", num=cfg.num_vis,
                                    topk=cfg.topk)
            (out / "ranking.json").write_text(json.dumps(examples, indent=2))
    return metrics


def draw_ranking(query: Sequence, gallery: Sequence, dist: np.ndarray, path: str | Path, num: int = 8,
                 topk: int = 10, height: int = 128) -> list[dict[str, Any]]:
    """A picture of ``num`` queries (evenly spread over those with a true match), each followed by its ``topk``
    gallery matches under the protocol (same id and camera and junk ids removed): a green border for the same
    identity, red for another, grey for the query. Returns the pictured rankings (paths, ids, distances)."""
    from humanvision.data.io import read_image, write_image

    qid, qcam = _ids(query)
    gid, gcam = _ids(gallery)
    rankings = []
    for i in range(len(query)):
        order = np.argsort(dist[i], kind="stable")
        keep = ~(((gid[order] == qid[i]) & (gcam[order] == qcam[i])) | (gid[order] == -1))
        order = order[keep]
        if (gid[order] == qid[i]).any():
            rankings.append((i, order[:topk]))
    if not rankings:
        return []
    picks = [rankings[int(j)] for j in np.unique(np.linspace(0, len(rankings) - 1, min(num, len(rankings))).round())]

    def tile(p: Path, color: tuple[int, int, int]) -> np.ndarray:
        img = read_image(p)
        w = max(1, round(img.shape[1] * height / img.shape[0]))
        img = cv2.resize(img, (w, height), interpolation=cv2.INTER_AREA)
        return cv2.copyMakeBorder(img, 4, 4, 4, 4, cv2.BORDER_CONSTANT, value=color)

    rows, examples = [], []
    for i, order in picks:
        tiles = [tile(query[i].path, (160, 160, 160)), np.full((height + 8, 12, 3), 255, np.uint8)]
        matches = []
        for j in order:
            ok = bool(gid[j] == qid[i])
            tiles.append(tile(gallery[j].path, (0, 190, 0) if ok else (220, 0, 0)))
            matches.append({"path": str(gallery[j].path), "pid": int(gid[j]), "camid": int(gcam[j]),
                            "distance": float(dist[i, j]), "correct": ok})
        rows.append(np.concatenate(tiles, axis=1))
        examples.append({"query": str(query[i].path), "pid": int(qid[i]), "camid": int(qcam[i]),
                         "matches": matches})
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    write_image(path, np.concatenate(rows, axis=0))
    return examples


def load_trained(recipe: ReIDRecipe, weights: str | Path) -> ReIDMethod:
    """The recipe's model with trained ``weights`` (run folder, checkpoint folder or ``model.safetensors``); the
    number of identities is read from the checkpoint's classifier."""
    state, file = read_weights(weights)
    if "model.head.weight" not in state:
        raise DataError("not a re-id checkpoint (no model.head.weight)", file=file, field="model.head.weight")
    return build_method(recipe, num_classes=int(state["model.head.weight"].shape[0]), weights=weights)


def export_onnx(recipe: ReIDRecipe, weights: str | Path, out: str | Path, **kwargs: Any):
    """``humanvision export`` of a re-id recipe: the test feature of the trained model as ONNX (bicubic
    cut-and-resize crops, as the evaluation), read by :class:`humanvision.runtime.ReIDEmbedder`. ``kwargs``: those
    of :func:`humanvision.export.export_person_onnx`."""
    from humanvision.export import export_person_onnx

    return export_person_onnx(load_trained(recipe, weights), out, task="reid", size=tuple(recipe.model.img_size),
                              interpolation="bicubic", recipe=recipe.name, weights=weights, **kwargs)


def evaluate_weights(recipe: ReIDRecipe, weights: str | Path, out_dir: str | Path | None = None,
                     device: str | torch.device | None = None, progress: bool = False) -> dict[str, Any]:
    """``humanvision eval`` of a re-id recipe: trained ``weights`` (run folder, checkpoint folder or
    ``model.safetensors``) on the recipe's query / gallery sets. The number of identities is read from the
    checkpoint's classifier."""
    method = load_trained(recipe, weights)
    data = read_data(recipe.data, quiet=not progress)
    device = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    metrics = evaluate_reid_model(method, data, tuple(recipe.model.img_size), recipe.eval, out_dir, device=device,
                                  num_workers=recipe.train.num_workers)
    metrics["weights"] = str(weights)
    if out_dir is not None:
        path = Path(out_dir) / "metrics.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "weights": str(weights)}, indent=2))
    return metrics


# ------------------------------------------------------------------------------------------------- training
def run_training(recipe: ReIDRecipe, resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Train with the engine on P x K batches (:class:`RandomIdentitySampler`), evaluating (mAP, rank-k) after
    each ``train.eval_every`` epochs into ``<output_dir>/eval``. Returns the fit summary."""
    from humanvision.config import save_config
    from humanvision.engine import Trainer, seed_everything

    seed_everything(recipe.train.seed)
    data = read_data(recipe.data, quiet=quiet)
    d = recipe.data
    train_set = ReIDTrainSet(data, tuple(recipe.model.img_size), flip_prob=d.flip_prob, pad=d.pad,
                             erase_prob=d.erase_prob)
    method = build_method(recipe, train_set.num_classes)
    out = Path(recipe.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(recipe, out / "config.yaml")
    main_rank = int(os.environ.get("RANK", "0")) == 0
    cfg = recipe.train

    def eval_fn(model: ReIDMethod, epoch: int) -> dict[str, float]:
        m = evaluate_reid_model(model, data, tuple(recipe.model.img_size), recipe.eval,
                                out / "eval" if main_rank else None, precision=trainer.choice.precision,
                                num_workers=cfg.num_workers)
        return {k: v for k, v in m.items() if isinstance(v, float)}

    trainer = Trainer(cfg, method, train_set, eval_fn=eval_fn,
                      sampler_fn=lambda rank, world: RandomIdentitySampler(
                          train_set.labels, cfg.batch_size, recipe.reid.num_instances, seed=cfg.seed, rank=rank,
                          world_size=world))
    return trainer.fit(resume=resume or None)
