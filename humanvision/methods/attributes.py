"""Pedestrian attribute recognition with a (HAP-initialised) ViT, readable top to bottom (pretraining.md B.9.5).

Training: an image -> resize to ``model.img_size`` (256x192) -> horizontal flip -> zero padding 10 + random crop
back to size -> ImageNet normalisation -> :class:`~humanvision.models.person_vit.AttributeViT` (mean of the patch
tokens after the final LayerNorm, the class token ignored, then ``Linear(D, A)``) -> weighted binary
cross-entropy (:func:`weighted_bce_loss`): per attribute ``a`` with training positive ratio ``r_a``, a positive
label weighs ``exp(1 - r_a)`` and a negative one ``exp(r_a)``; summed over attributes, averaged over the batch.
Optimisation: AdamW, wd 5e-4, gradient clipping at norm 10 (``train.clip_grad``), cosine with a warm-up over the
first 10% of the epochs from ``warmup_ratio * lr`` and a floor ``min_lr_ratio * lr``; PA-100K lr 1.7e-4 for 55
epochs with an EMA of the weights (0.9998), RAP 2.4e-4 / 8, PETA 1.9e-4 / 50. HAP trains on ``trainval`` and
reports on ``test``.

Evaluation (:func:`evaluate_attribute_model`): sigmoid scores of the evaluation split, positive iff ``> 0.5``,
:func:`humanvision.metrics.attributes.attribute_metrics`: mA (mean over attributes of the mean of positive and
negative recall), instance accuracy / precision / recall / F1; ``metrics.json`` holds them and the per-attribute
table.

A recipe (:class:`AttributeRecipe`) has the sections ``model``, ``attributes`` (its top-level mark,
:func:`is_attribute_recipe`), ``data``, ``train`` and ``eval``; see ``configs/hap_attr_pa100k.yaml`` and
``configs/attr_vit_tiny_synthetic.yaml``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from humanvision.config import must_exist
from humanvision.engine import TrainConfig
from humanvision.engine.checkpoint import load_state_strict, read_weights
from humanvision.errors import ConfigError, DataError
from humanvision.methods.reid import (
    check_person_model,
    init_trunk,
    person_transform,
)
from humanvision.models.person_vit import AttributeViT

__all__ = [
    "AttributeConfig", "AttributeImages", "AttributeMethod", "AttributeRecipe", "DataConfig", "EvalConfig",
    "ModelConfig", "build_method", "evaluate_attribute_model", "evaluate_weights", "is_attribute_recipe",
    "load_recipe", "positive_ratio", "prepare_synthetic", "read_data", "run_training", "weighted_bce_loss",
]


# ----------------------------------------------------------------------------------------------- the recipe
@dataclass
class ModelConfig:
    """``name``: an attribute entry point (``attr_vit_{tiny,base}_patch16``); ``img_size``: (height, width);
    ``init`` / ``init_grid``: the pre-training checkpoint of the trunk and its grid (16x8 for HAP: its
    ``pos_embed`` is resampled to 16x12 at 256x192); ``drop_path_rate``; ``args``: other entry-point arguments."""

    name: str = "attr_vit_base_patch16"
    img_size: tuple[int, int] = (256, 192)
    init: Path | None = must_exist()
    init_grid: tuple[int, int] = (16, 8)
    drop_path_rate: float = 0.1
    args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from humanvision.models import check_model_args

        check_person_model(self.name, AttributeViT, "pedestrian-attribute")
        check_model_args(self.name, self.args)
        if "num_classes" in self.args:
            raise ConfigError("model.args.num_classes: the number of attributes comes from the dataset")
        for k in ("img_size", "drop_path_rate"):
            if k in self.args:
                raise ConfigError(f"model.args.{k}: set it as model.{k}")


@dataclass
class AttributeConfig:
    """The ``attributes`` section: ``weighted`` (the ``exp(1 - r)`` / ``exp(r)`` weights of the BCE; false: plain
    BCE, summed over attributes) and the decision ``threshold`` on the sigmoid score."""

    weighted: bool = True
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"attributes.threshold: must be in (0, 1), got {self.threshold}")


@dataclass
class DataConfig:
    """``source``: ``pa100k`` (``annotation.mat`` + ``data/`` under ``root``), ``auto`` (PA-100K, RAP, PETA or a
    Rethinking_of_PAR pickle, by layout) or ``synthetic`` (a PA-100K-layout set of ``synthetic_images`` images
    written to ``synthetic_dir`` on first use). ``train_split`` / ``eval_split``: ``train``, ``val``, ``trainval``
    or ``test``. Augmentation: ``flip_prob``, ``pad``."""

    source: Literal["pa100k", "auto", "synthetic"] = "pa100k"
    root: Path | None = must_exist()
    train_split: Literal["train", "val", "trainval", "test"] = "trainval"
    eval_split: Literal["train", "val", "trainval", "test"] = "test"
    synthetic_dir: Path = Path("data/synthetic_pa100k")
    synthetic_images: int = 1000
    synthetic_seed: int = 0
    flip_prob: float = 0.5
    pad: int = 10

    def __post_init__(self) -> None:
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ConfigError(f"data.flip_prob: must be in [0, 1], got {self.flip_prob}")
        if self.pad < 0:
            raise ConfigError(f"data.pad: must be >= 0, got {self.pad}")
        if self.source != "synthetic" and self.root is None:
            raise ConfigError(f"data.root: required for data.source {self.source!r}, or use data.source: synthetic")


@dataclass
class EvalConfig:
    """``batch_size`` of inference and the ``precision`` of ``humanvision eval`` (training evaluates in the
    training run's precision)."""

    batch_size: int = 128
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"


def _attr_train() -> TrainConfig:
    return TrainConfig(epochs=55, batch_size=64, lr=1.7e-4, weight_decay=5e-4, clip_grad=10.0, schedule="cosine",
                       warmup_epochs=5.5, warmup_ratio=1e-4 / 1.7e-4, min_lr_ratio=1e-5 / 1.7e-4, ema=0.9998,
                       eval_every=5, best_metric="mA", output_dir="runs/attributes")


@dataclass
class AttributeRecipe:
    """A recipe; without a ``train`` section the published optimisation applies (a ``train`` section is taken
    as written, over the engine's plain defaults)."""

    name: str = "attributes"
    model: ModelConfig = field(default_factory=ModelConfig)
    attributes: AttributeConfig = field(default_factory=AttributeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=_attr_train)
    eval: EvalConfig = field(default_factory=EvalConfig)


def is_attribute_recipe(source: Any) -> bool:
    """True for an :class:`AttributeRecipe`, a mapping or a YAML file with a top-level ``attributes`` section."""
    from humanvision.config import recipe_mapping

    return isinstance(source, AttributeRecipe) or "attributes" in recipe_mapping(source)


def load_recipe(source: str | Path | dict, overrides: list[str] | tuple[str, ...] = (),
                unchecked: tuple[str, ...] = ()) -> AttributeRecipe:
    """Load an attribute recipe (``unchecked``: as :func:`humanvision.config.load_config`)."""
    from humanvision.config import load_config

    return load_config(source, AttributeRecipe, overrides, unchecked=tuple(unchecked))


# ------------------------------------------------------------------------------------------------- the loss
def weighted_bce_loss(logits: torch.Tensor, targets: torch.Tensor, pos_ratio: torch.Tensor | None = None
                      ) -> torch.Tensor:
    """``mean_b sum_a w_ba BCE(logit_ba, y_ba)`` with ``w = exp(1 - r_a)`` for ``y = 1`` and ``exp(r_a)`` for
    ``y = 0`` (``pos_ratio`` None: all weights 1); fp32."""
    y = targets.float()
    per = F.binary_cross_entropy_with_logits(logits.float(), y, reduction="none")
    if pos_ratio is not None:
        r = pos_ratio.float().to(per.device)
        per = per * torch.where(y > 0.5, torch.exp(1.0 - r), torch.exp(r))
    return per.sum(dim=1).mean()


# ------------------------------------------------------------------------------------------------ the method
class AttributeMethod(nn.Module):
    """Model + weighted BCE. ``pos_ratio`` (the training set's positive ratio per attribute) is a buffer saved
    with the checkpoint. ``forward(batch)`` (``image``, ``labels (B, A)``) returns ``loss`` and the batch's
    label accuracy; :meth:`predict` gives sigmoid scores."""

    def __init__(self, model: AttributeViT, pos_ratio: torch.Tensor | np.ndarray, weighted: bool = True) -> None:
        super().__init__()
        self.model, self.weighted = model, bool(weighted)
        ratio = torch.as_tensor(np.asarray(pos_ratio, dtype=np.float32))
        if ratio.shape != (model.num_classes,):
            raise ConfigError(f"positive ratios of shape {tuple(ratio.shape)} for {model.num_classes} attributes")
        self.register_buffer("pos_ratio", ratio)

    @property
    def num_layers(self) -> int:
        return self.model.num_layers

    def layer_id(self, name: str) -> int:
        return self.model.layer_id(name.removeprefix("model."))

    def no_weight_decay(self) -> set[str]:
        return {f"model.{n}" for n in self.model.no_weight_decay()}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.model(batch["image"])
        labels = batch["labels"]
        loss = weighted_bce_loss(logits, labels, self.pos_ratio if self.weighted else None)
        acc = ((logits.detach() > 0) == (labels > 0.5)).float().mean()
        return {"loss": loss, "label_accuracy": acc}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised images -> ``(B, A)`` sigmoid scores."""
        return torch.sigmoid(self.model(images).float())


def build_method(recipe: AttributeRecipe, num_attributes: int, pos_ratio: np.ndarray | None = None,
                 weights: str | Path | None = None) -> AttributeMethod:
    """The recipe's model for ``num_attributes``, its trunk from ``model.init`` unless ``weights`` (a trained
    attribute checkpoint) replace everything; ``pos_ratio`` default 0.5 (replaced by the checkpoint's)."""
    from humanvision.models import model_entrypoint

    m = recipe.model
    try:
        model = model_entrypoint(m.name)(num_classes=num_attributes, img_size=tuple(m.img_size),
                                         drop_path_rate=m.drop_path_rate, **m.args)
    except ValueError as e:
        raise ConfigError(f"model ({m.name}): {e}") from None
    ratio = np.full(num_attributes, 0.5) if pos_ratio is None else pos_ratio
    method = AttributeMethod(model, ratio, recipe.attributes.weighted)
    if weights is not None:
        load_state_strict(method, weights)
    elif m.init is not None:
        init_trunk(model, m.init, m.init_grid)
    return method


# ---------------------------------------------------------------------------------------------------- data
class AttributeImages(Dataset):
    """The images of one split of an :class:`~humanvision.data.readers.attributes.AttributeDataset`: items
    ``{image, labels (A,) float32, index}``; ``train`` augments with :func:`~humanvision.methods.reid.person_transform`
    (bilinear resize, flip, pad + random crop, no erasing) drawing from numpy's global generator (which the engine
    seeds per sample)."""

    def __init__(self, data, split: str, size: tuple[int, int], *, train: bool = False, flip_prob: float = 0.5,
                 pad: int = 10) -> None:
        self.paths, labels = data.take(split)
        if len(self.paths) == 0:
            raise DataError(f"split {split!r} is empty", record=str(data.name), field="split")
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.float32))
        self.size, self.train, self.flip_prob, self.pad = tuple(size), train, flip_prob, pad

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from humanvision.data.io import read_image

        rng = np.random.default_rng(np.random.randint(0, 2**63 - 1, dtype=np.int64)) if self.train else None
        image = person_transform(read_image(self.paths[index]), self.size, rng, flip_prob=self.flip_prob,
                                 pad=self.pad, interpolation=cv2.INTER_LINEAR)
        return {"image": image, "labels": self.labels[index], "index": index}


def prepare_synthetic(data: DataConfig, quiet: bool = False) -> Path:
    """For ``source: synthetic``: write the PA-100K-layout synthetic set into ``synthetic_dir`` once (a stamp
    records its parameters; under torchrun only rank 0 writes) and return it."""
    from humanvision.data.synthetic.cache import write_once
    from humanvision.data.synthetic.identities import generate_pa100k

    root = Path(data.synthetic_dir)
    params = {"images": data.synthetic_images, "seed": data.synthetic_seed}
    write_once(root, params, lambda progress: generate_pa100k(
        root, num_images=data.synthetic_images, seed=data.synthetic_seed, progress=progress,
        workers=os.cpu_count() or 1), quiet=quiet, description=f"synthesising attribute images -> {root}")
    return root


def read_data(data: DataConfig, quiet: bool = False):
    """The :class:`~humanvision.data.readers.attributes.AttributeDataset` of the recipe."""
    from humanvision.data.readers.attributes import read_attributes, read_pa100k

    if data.source == "synthetic":
        return read_pa100k(prepare_synthetic(data, quiet))
    if data.root is None:
        raise ConfigError("data.root: required (or use data.source: synthetic)")
    return (read_pa100k if data.source == "pa100k" else read_attributes)(data.root)


def positive_ratio(data, split: str) -> np.ndarray:
    """``r_a``: the positive ratio of each attribute over ``split`` (the dataset's own :meth:`positive_ratio`)."""
    return np.asarray(data.positive_ratio(split), dtype=np.float64)


# ----------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_attribute_model(method: AttributeMethod, data, split: str, size: tuple[int, int],
                             eval_cfg: EvalConfig | None = None, out_dir: str | Path | None = None, *,
                             threshold: float = 0.5, device: str | torch.device | None = None,
                             precision: str | None = None, num_workers: int = 0) -> dict[str, Any]:
    """mA, accuracy, precision, recall, F1 (percent) of ``method`` on ``split`` of ``data``; with ``out_dir``
    ``metrics.json`` adds the per-attribute table (mA, positive and negative recall, positive ratio)."""
    from humanvision.engine.precision import autocast
    from humanvision.metrics.attributes import attribute_metrics

    cfg = eval_cfg or EvalConfig()
    device = torch.device(device) if device is not None else next(method.parameters()).device
    was_training = method.training
    method.eval().to(device)
    dataset = AttributeImages(data, split, size)
    scores = []
    for batch in DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False, num_workers=num_workers):
        with autocast(device, precision or cfg.precision):
            scores.append(method.predict(batch["image"].to(device)).float().cpu())
    method.train(was_training)
    res = attribute_metrics(torch.cat(scores), dataset.labels.numpy().astype(np.int64), threshold=threshold,
                            attribute_names=list(data.attributes))
    metrics: dict[str, Any] = {"mA": res.mA, "accuracy": res.accuracy, "precision": res.precision,
                               "recall": res.recall, "f1": res.f1, "num_images": res.count,
                               "num_attributes": res.num_attributes}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        ratio = dataset.labels.mean(0).tolist()
        table = [{"attribute": a, "mA": res.label_mA[a], "pos_recall": res.label_pos_recall[a],
                  "neg_recall": res.label_neg_recall[a], "positive_ratio": float(r)}
                 for a, r in zip(data.attributes, ratio, strict=True)]
        (out / "metrics.json").write_text(json.dumps({**metrics, "split": split, "threshold": threshold,
                                                      "per_attribute": table}, indent=2))
    return metrics


def load_trained(recipe: AttributeRecipe, weights: str | Path, data) -> AttributeMethod:
    """The recipe's model with trained ``weights``, checked against the attributes of ``data``."""
    state, file = read_weights(weights)
    n = len(data.attributes)
    if "model.head.weight" not in state or state["model.head.weight"].shape[0] != n:
        got = tuple(state["model.head.weight"].shape) if "model.head.weight" in state else "none"
        raise DataError(f"not an attribute checkpoint for the {n} attributes of {data.name} (classifier {got})",
                        file=file, field="model.head.weight")
    return build_method(recipe, n, weights=weights)


def export_onnx(recipe: AttributeRecipe, weights: str | Path, out: str | Path, **kwargs: Any):
    """``humanvision export`` of an attribute recipe: the trained model's sigmoid scores as ONNX, with the
    attribute names (read from the recipe's data) and ``attributes.threshold`` in the metadata (bilinear
    cut-and-resize crops, as the evaluation), read by :class:`humanvision.runtime.AttributeClassifier`.
    ``kwargs``: those of :func:`humanvision.export.export_person_onnx`."""
    from humanvision.export import export_person_onnx

    data = read_data(recipe.data, quiet=True)
    return export_person_onnx(load_trained(recipe, weights, data), out, task="attributes",
                              size=tuple(recipe.model.img_size), interpolation="bilinear",
                              attributes=list(data.attributes), threshold=recipe.attributes.threshold,
                              recipe=recipe.name, weights=weights, **kwargs)


def evaluate_weights(recipe: AttributeRecipe, weights: str | Path, out_dir: str | Path | None = None,
                     device: str | torch.device | None = None, progress: bool = False) -> dict[str, Any]:
    """``humanvision eval`` of an attribute recipe: trained ``weights`` (run folder, checkpoint folder or
    ``model.safetensors``) on ``data.eval_split``."""
    data = read_data(recipe.data, quiet=not progress)
    method = load_trained(recipe, weights, data)
    device = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    metrics = evaluate_attribute_model(method, data, recipe.data.eval_split, tuple(recipe.model.img_size),
                                       recipe.eval, out_dir, threshold=recipe.attributes.threshold, device=device,
                                       num_workers=recipe.train.num_workers)
    metrics["weights"] = str(weights)
    return metrics


# ------------------------------------------------------------------------------------------------- training
def run_training(recipe: AttributeRecipe, resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Train with the engine on ``data.train_split``, evaluating on ``data.eval_split`` after each
    ``train.eval_every`` epochs into ``<output_dir>/eval``. Returns the fit summary."""
    from humanvision.config import save_config
    from humanvision.engine import Trainer, seed_everything

    seed_everything(recipe.train.seed)
    data = read_data(recipe.data, quiet=quiet)
    d, size = recipe.data, tuple(recipe.model.img_size)
    train_set = AttributeImages(data, d.train_split, size, train=True, flip_prob=d.flip_prob, pad=d.pad)
    method = build_method(recipe, len(data.attributes), positive_ratio(data, d.train_split))
    out = Path(recipe.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(recipe, out / "config.yaml")
    main_rank = int(os.environ.get("RANK", "0")) == 0

    def eval_fn(model: AttributeMethod, epoch: int) -> dict[str, float]:
        m = evaluate_attribute_model(model, data, d.eval_split, size, recipe.eval,
                                     out / "eval" if main_rank else None, threshold=recipe.attributes.threshold,
                                     precision=trainer.choice.precision, num_workers=recipe.train.num_workers)
        return {k: v for k, v in m.items() if isinstance(v, float)}

    trainer = Trainer(recipe.train, method, train_set, eval_fn=eval_fn)
    return trainer.fit(resume=resume or None)
