"""Human parsing for HCMoCo's downstream tasks, readable top to bottom: recipe, data, losses, method, evaluation,
pictures, training (``/work/shared/reference/pretraining.md`` A.7.2, A.7.3, A.7.5 and pitfall 12).

**Tasks.** ``parsing.modality``:

* ``rgb``: Human3.6M RGB parsing (A.7.2): 25 classes (background + 24 parts, :data:`~humanvision.data.readers.
  parsing.PARSING_CLASSES`), :class:`~humanvision.models.parsing.ParsingHRNet` initialised from HCMoCo's RGB
  encoder (``encoder1``), plain cross-entropy with ignore 255.
* ``depth``: NTURGBD-Parsing-4K depth parsing (A.7.3): the same network on the depth input of
  :func:`~humanvision.data.readers.parsing.parsing_depth_input` (mm -> m, minus the mean of the nonzero pixels,
  background 0, 3 channels, no ImageNet normalisation; every resize of depth is nearest-neighbour), initialised
  from the depth encoder (``encoder2``), **class-weighted** cross-entropy (``class_weights: nturgbd`` =
  :data:`~humanvision.data.readers.parsing.NTURGBD_PARSING_CLASS_WEIGHTS`).
* ``rgbd``: the versatility experiments (A.7.5) on NTURGBD-Parsing-4K's pixel-aligned RGB + depth:
  :class:`~humanvision.models.parsing.RGBDParsingHRNet` (two encoders, one shared 128-d FCN head on the
  L2-normalised maps), supervised on ``parsing.supervise`` = ``fused`` (max of both maps, type 0), ``rgb`` (type 1)
  or ``depth`` (type 2); every evaluation reports all three outputs, ``parsing.test_mode`` picks the one called
  ``mIoU`` (model selection). Cross-modality supervision = ``supervise: rgb`` evaluated on ``depth`` (or the
  mirror); missing-modality inference = ``supervise: fused`` evaluated on ``rgb``. :func:`evaluate_versatility`
  returns the side-by-side table (both modalities, depth removed, RGB removed). Here only the parsing loss is
  trained (``parsing.loss_weight`` scales it; HCMoCo's versatility trainer adds the pre-training losses with the
  CE at x10, which belongs to the pre-training method). ``parsing.freeze_encoders`` keeps the encoders and their
  projections fixed (BN statistics included) and trains the shared head only: the cross-modality transfer then
  rests entirely on the pre-trained alignment of the two 128-d spaces.

**Training data** (A.7.2; the same pipeline for every modality, the inputs of a sample transformed together):
resize to ``data.base_size`` (473 x 473; RGB bilinear, depth and labels nearest), then to ``s * base_size`` with
``s = 0.5 + randint(0, scale_factor) / 10`` (``scale_factor`` 11: s in {0.5, 0.6, ..., 1.6}), pad at the bottom /
right up to ``data.crop_size`` when smaller (RGB with black, depth with 0 = background, labels with ignore 255),
a uniformly random ``crop_size`` crop, and a horizontal flip with probability ``data.flip_prob`` that swaps the
left / right classes (:func:`~humanvision.data.readers.parsing.flip_parsing`). RGB is then ImageNet-normalised.
Depth is centred on the whole frame before any resize (the mean of the frame's foreground).

**Optimisation** (engine): SGD lr 0.007, momentum 0.9, wd 5e-4, ``train.schedule: poly`` (power 0.9, per
iteration), 50 epochs at batch 40 (H36M) / 150 epochs at batch 80 (depth). ``parsing.weight_decay_all: true``
puts every parameter in one decayed group (the brief lists wd 5e-4 with no exemption); ``false`` keeps the
engine's rule (no decay on biases and norms).

**Evaluation** (:func:`evaluate_parsing`; A.7.2 / A.7.3, pitfall 12): every evaluation image is resized to
``eval.input_size`` (473 x 473; RGB bilinear, depth nearest); the model's logits (at the input size) are averaged
with those of the flipped image, flipped back with the left / right channels swapped (``eval.flip_test``,
:meth:`ParsingMethod.predict`); the ground truth is resized to ``eval.label_size`` (1000 x 1000 in the published
protocols; null = its own size) and the logits bilinearly upsampled to it (align_corners False) before the
argmax. **Pitfall 12**: Human3.6M's protocol resizes the label with ``cv2.INTER_LINEAR_EXACT``, i.e. it
*interpolates class ids* (``eval.label_resize: linear_exact``; applied here to the class-index map, so a boundary
pixel between classes 0 and 20 can become any id in between), and NTURGBD-Parsing-4K's with nearest
(``nearest``). Both leave a label already at ``label_size`` untouched (Human3.6M frames are 1000 x 1000).
Metrics come from one global confusion matrix over the whole set (pixels labelled 255 skipped):
``mIoU`` = mean IoU over the 25 classes **background included**, as :mod:`humanvision.metrics.segmentation`
computes it (a class absent from both labels and predictions is left out of the mean); ``mIoU_absent_zero``
counts such a class as 0 (HRNet-Seg's arithmetic; equal on any set where every class occurs). With an output
folder: ``metrics.json`` (per-class IoU and accuracy, the settings) and ``parsing.png`` (input | ground truth |
prediction per output, :func:`parsing_palette` colours).

A recipe (:class:`ParsingRecipe`) has ``model``, ``parsing`` (its top-level mark, :func:`is_parsing_recipe`),
``data``, ``train`` (the engine's) and ``eval``: ``configs/hcmoco_parsing_h36m_rgb.yaml``,
``configs/hcmoco_parsing_nturgbd_depth.yaml`` and the CPU-sized ``configs/parsing_tiny_synthetic_{rgb,depth}.yaml``
(synthetic sets in the official layouts, written on first use).
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from collections.abc import Callable, Sequence
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
from humanvision.data.readers.parsing import (
    NTURGBD_PARSING_CLASS_WEIGHTS,
    PARSING_CLASSES,
    PARSING_FLIP_PERM,
    PARSING_IGNORE,
    Human36MParsing,
    NturgbdParsing,
    center_depth,
    flip_parsing,
)
from humanvision.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize_image
from humanvision.engine import TrainConfig
from humanvision.engine.checkpoint import load_state_strict
from humanvision.errors import ConfigError, DataError
from humanvision.models.parsing import PARSING_MODES, InitReport, ParsingHRNet, RGBDParsingHRNet

__all__ = [
    "DataConfig", "EvalConfig", "ModelConfig", "ParsingConfig", "ParsingImages", "ParsingMethod", "ParsingRecipe",
    "ParsingTrainSet", "augment", "build_method", "collate_parsing", "evaluate_parsing", "evaluate_versatility",
    "evaluate_weights", "is_parsing_recipe", "load_recipe", "parsing_figure", "parsing_loss",
    "parsing_palette", "prepare_synthetic", "read_split", "resize_label", "run_training", "versatility_table",
]


# ----------------------------------------------------------------------------------------------- the recipe
def _model_class(name: str) -> type | None:
    import humanvision.models.parsing  # noqa: F401  (registers the entry points)
    from humanvision.models import model_entrypoint

    ret = typing.get_type_hints(model_entrypoint(name)).get("return")
    return ret if isinstance(ret, type) else None


@dataclass
class ModelConfig:
    """``name``: a parsing entry point (``parsing_hrnet_{w18,w32,tiny}`` for rgb / depth,
    ``parsing_rgbd_hrnet_{w18,w32,tiny}`` for rgbd); ``init``: pre-trained weights (a flat HRNet state dict such as
    HCMoCo's exported ``rgb_encoder.pth`` / ``depth_encoder.pth`` or an ImageNet HRNet, a whole HCMoCo checkpoint,
    or null: random); ``init_encoder``: which encoder of a whole HCMoCo checkpoint (``auto``: ``encoder1`` for
    rgb, ``encoder2`` for depth; rgbd loads both); ``args``: other keyword arguments of the entry point."""

    name: str = "parsing_hrnet_w18"
    init: Path | None = must_exist()
    init_encoder: Literal["auto", "encoder1", "encoder2"] = "auto"
    args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from humanvision.models import check_model_args, list_models

        try:
            cls = _model_class(self.name)
        except ConfigError as e:
            raise ConfigError(f"model.name: {e}") from None
        if cls not in (ParsingHRNet, RGBDParsingHRNet):
            raise ConfigError(f"model.name: {self.name!r} is not a parsing model (one of "
                              f"{', '.join(list_models('parsing_*'))})")
        check_model_args(self.name, self.args)
        if "num_classes" in self.args:
            raise ConfigError("model.args.num_classes: set it as parsing.num_classes")


@dataclass
class ParsingConfig:
    """The ``parsing`` section (module docstring): ``modality`` (rgb | depth | rgbd), ``num_classes`` (25),
    ``class_weights`` (null: plain CE; ``nturgbd``: the A.7.3 weights; or a list of ``num_classes`` floats),
    ``supervise`` / ``test_mode`` (rgbd only: the supervised output and the one reported as ``mIoU``, default
    the supervised one), ``loss_weight`` (a factor on the CE), ``freeze_encoders`` (train the head only),
    ``weight_decay_all`` (decay every parameter, not only matrices / kernels)."""

    modality: Literal["rgb", "depth", "rgbd"] = "rgb"
    num_classes: int = 25
    class_weights: tuple[float, ...] | str | None = None
    supervise: Literal["fused", "rgb", "depth"] = "fused"
    test_mode: Literal["fused", "rgb", "depth"] | None = None
    loss_weight: float = 1.0
    freeze_encoders: bool = False
    weight_decay_all: bool = False

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ConfigError(f"parsing.num_classes: at least 2, got {self.num_classes}")
        if isinstance(self.class_weights, str) and self.class_weights != "nturgbd":
            raise ConfigError(f"parsing.class_weights: null, 'nturgbd' or a list of {self.num_classes} floats, got "
                              f"{self.class_weights!r}")
        if isinstance(self.class_weights, tuple) and (len(self.class_weights) != self.num_classes
                                                      or min(self.class_weights) < 0):
            raise ConfigError(f"parsing.class_weights: need {self.num_classes} weights >= 0, got "
                              f"{len(self.class_weights)}")
        if self.class_weights == "nturgbd" and self.num_classes != len(NTURGBD_PARSING_CLASS_WEIGHTS):
            raise ConfigError(f"parsing.class_weights: 'nturgbd' has {len(NTURGBD_PARSING_CLASS_WEIGHTS)} weights; "
                              f"parsing.num_classes is {self.num_classes}")
        if self.loss_weight <= 0:
            raise ConfigError(f"parsing.loss_weight: must be > 0, got {self.loss_weight}")

    def weights(self) -> tuple[float, ...] | None:
        """The class weights as numbers (None: unweighted)."""
        if self.class_weights == "nturgbd":
            return NTURGBD_PARSING_CLASS_WEIGHTS
        return self.class_weights  # type: ignore[return-value]


@dataclass
class DataConfig:
    """``source``: ``h36m`` (``root`` = the folder with ``flist_2hz_*.txt`` and ``protocol_1/``), ``nturgbd``
    (``root`` = NTURGBD-Parsing-4K, ``subset`` full | 20%), or ``synthetic_h36m`` / ``synthetic_nturgbd``
    (written to ``synthetic_dir`` on first use: ``synthetic_train`` + ``synthetic_eval`` frames of
    ``synthetic_size`` = (width, height)). Augmentation (module docstring): ``base_size`` and ``crop_size``
    (height, width), ``scale_factor`` (scales 0.5 + k / 10, k = 0 .. scale_factor), ``flip_prob``."""

    source: Literal["h36m", "nturgbd", "synthetic_h36m", "synthetic_nturgbd"] = "h36m"
    root: Path | None = must_exist()
    subset: Literal["full", "20%"] = "full"
    base_size: tuple[int, int] = (473, 473)
    crop_size: tuple[int, int] = (473, 473)
    scale_factor: int = 11
    flip_prob: float = 0.5
    synthetic_dir: Path = Path("data/synthetic_h36m_parsing")
    synthetic_train: int = 96
    synthetic_eval: int = 24
    synthetic_size: tuple[int, int] = (128, 128)
    synthetic_seed: int = 0

    def __post_init__(self) -> None:
        if min(self.base_size) < 8 or min(self.crop_size) < 8:
            raise ConfigError(f"data.base_size / data.crop_size: need >= 8 px, got {self.base_size} / "
                              f"{self.crop_size}")
        if self.scale_factor < 0:
            raise ConfigError(f"data.scale_factor: must be >= 0, got {self.scale_factor}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ConfigError(f"data.flip_prob: must be in [0, 1], got {self.flip_prob}")
        if self.synthetic_train < 1 or self.synthetic_eval < 1 or min(self.synthetic_size) < 16:
            raise ConfigError("data.synthetic_train / synthetic_eval / synthetic_size: need >= 1 frames and "
                              f">= 16 px, got {self.synthetic_train} / {self.synthetic_eval} / {self.synthetic_size}")


@dataclass
class EvalConfig:
    """The evaluation protocol (module docstring): ``input_size`` (height, width) of the network input,
    ``label_size`` (height, width) the ground truth is resized to (null: its own size) with ``label_resize``
    (``linear_exact``: Human3.6M's interpolation of class ids, pitfall 12; ``nearest``), ``flip_test``,
    ``batch_size``, ``max_images`` (the first N images only; null: all), ``num_vis`` images in ``parsing.png``,
    ``missing`` (rgbd: a removed modality is ``skip``-ped, the single-modality output, or fed as ``zeros`` to
    the fused output), ``precision`` of ``humanvision eval``."""

    input_size: tuple[int, int] = (473, 473)
    label_size: tuple[int, int] | None = None
    label_resize: Literal["linear_exact", "nearest"] = "nearest"
    flip_test: bool = True
    batch_size: int = 8
    max_images: int | None = None
    num_vis: int = 6
    missing: Literal["skip", "zeros"] = "skip"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"

    def __post_init__(self) -> None:
        if min(self.input_size) < 8 or (self.label_size is not None and min(self.label_size) < 1):
            raise ConfigError(f"eval.input_size / eval.label_size: got {self.input_size} / {self.label_size}")
        if self.batch_size < 1 or self.num_vis < 0 or (self.max_images is not None and self.max_images < 1):
            raise ConfigError(f"eval.batch_size / num_vis / max_images: got {self.batch_size} / {self.num_vis} / "
                              f"{self.max_images}")


def _parsing_train() -> TrainConfig:
    return TrainConfig(epochs=50, batch_size=20, optimizer="sgd", lr=0.007, momentum=0.9, weight_decay=5e-4,
                       schedule="poly", power=0.9, eval_every=5, best_metric="mIoU", output_dir="runs/parsing")


@dataclass
class ParsingRecipe:
    """A parsing recipe; without a ``train`` section the Human3.6M optimisation applies (SGD 0.007, poly 0.9,
    50 epochs)."""

    name: str = "parsing"
    model: ModelConfig = field(default_factory=ModelConfig)
    parsing: ParsingConfig = field(default_factory=ParsingConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=_parsing_train)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        p, d = self.parsing, self.data
        cls = _model_class(self.model.name)
        want = RGBDParsingHRNet if p.modality == "rgbd" else ParsingHRNet
        if cls is not want:
            raise ConfigError(f"model.name: parsing.modality {p.modality!r} needs a "
                              f"{'parsing_rgbd_hrnet_*' if p.modality == 'rgbd' else 'parsing_hrnet_*'} model, got "
                              f"{self.model.name!r}")
        if d.source in ("h36m", "synthetic_h36m") and p.modality != "rgb":
            raise ConfigError(f"parsing.modality: Human3.6M parsing has RGB only, got {p.modality!r} (use data.source "
                              "nturgbd / synthetic_nturgbd for depth and rgbd)")
        if d.source in ("h36m", "nturgbd") and d.root is None:
            raise ConfigError(f"data.root: required for data.source {d.source!r} (or use synthetic_{d.source})")
        flips = d.flip_prob > 0 or self.eval.flip_test
        if flips and p.num_classes != len(PARSING_FLIP_PERM):
            raise ConfigError(f"parsing.num_classes: flipping (data.flip_prob, eval.flip_test) swaps the "
                              f"{len(PARSING_FLIP_PERM)} Human3.6M classes; got {p.num_classes}")
        if min(self.data.crop_size) < 8:
            raise ConfigError(f"data.crop_size: got {self.data.crop_size}")


def is_parsing_recipe(source: Any) -> bool:
    """True for a :class:`ParsingRecipe`, a mapping or a YAML file with a top-level ``parsing`` section."""
    from humanvision.config import recipe_mapping

    return isinstance(source, ParsingRecipe) or "parsing" in recipe_mapping(source)


def load_recipe(source: str | Path | dict, overrides: list[str] | tuple[str, ...] = (),
                unchecked: tuple[str, ...] = ()) -> ParsingRecipe:
    """Load a parsing recipe (``unchecked``: as :func:`humanvision.config.load_config`)."""
    from humanvision.config import load_config

    return load_config(source, ParsingRecipe, overrides, unchecked=tuple(unchecked))


# ------------------------------------------------------------------------------------------------- the data
def prepare_synthetic(data: DataConfig, quiet: bool = False) -> Path:
    """For ``synthetic_*`` sources: write the synthetic set into ``synthetic_dir`` once (a stamp file records its
    parameters, so a change regenerates it; under torchrun only rank 0 writes, the others wait) and return it."""
    from humanvision.data.synthetic.cache import write_once
    from humanvision.data.synthetic.hcmoco import generate_h36m_parsing, generate_nturgbd_parsing

    root = Path(data.synthetic_dir)
    kind = data.source.removeprefix("synthetic_")
    params = {"kind": kind, "train": data.synthetic_train, "eval": data.synthetic_eval,
              "size": list(data.synthetic_size), "seed": data.synthetic_seed}
    size = tuple(data.synthetic_size)

    def generate(progress) -> None:
        if kind == "h36m":
            generate_h36m_parsing(root, {"train": data.synthetic_train, "eval": data.synthetic_eval}, size=size,
                                  seed=data.synthetic_seed, progress=progress, workers=os.cpu_count() or 1)
        else:
            generate_nturgbd_parsing(root, {"train": data.synthetic_train, "val": data.synthetic_eval}, size=size,
                                     seed=data.synthetic_seed, progress=progress, workers=os.cpu_count() or 1)

    write_once(root, params, generate, quiet=quiet, description=f"synthesising {kind} parsing -> {root}")
    return root


def read_split(recipe: ParsingRecipe, split: Literal["train", "eval"], quiet: bool = True
               ) -> Human36MParsing | NturgbdParsing:
    """The reader of the recipe's ``train`` or ``eval`` split (Human3.6M ``eval``; NTURGBD-Parsing-4K ``val`` of
    ``data.subset``); synthetic sources are written first."""
    d = recipe.data
    root = prepare_synthetic(d, quiet) if d.source.startswith("synthetic_") else d.root
    if root is None:
        raise ConfigError("data.root: required")
    if d.source.endswith("h36m"):
        return Human36MParsing(root, "train" if split == "train" else "eval")
    return NturgbdParsing(root, "train" if split == "train" else "val", d.subset,
                          with_rgb=recipe.parsing.modality in ("rgb", "rgbd"))


def _inputs(sample: dict[str, np.ndarray], modality: str) -> dict[str, np.ndarray]:
    """The raw input planes of a loaded sample: ``rgb`` (H, W, 3) uint8 and / or ``depth`` (H, W) float32 centred
    metres (:func:`~humanvision.data.readers.parsing.center_depth`, on the whole frame)."""
    out = {}
    if modality in ("rgb", "rgbd"):
        if "image" not in sample:
            raise DataError("this sample has no RGB image (reader built without RGB)", field="image")
        out["rgb"] = sample["image"]
    if modality in ("depth", "rgbd"):
        out["depth"] = center_depth(sample["depth"])
    return out


def _resize(plane: np.ndarray, kind: str, size: tuple[int, int]) -> np.ndarray:
    """``plane`` resized to ``size = (h, w)``: RGB bilinear, depth and labels nearest."""
    h, w = size
    if plane.shape[:2] == (h, w):
        return plane
    interp = cv2.INTER_LINEAR if kind == "rgb" else cv2.INTER_NEAREST
    return cv2.resize(plane, (w, h), interpolation=interp)


def resize_label(label: np.ndarray, size: tuple[int, int] | None, rule: str = "nearest") -> np.ndarray:
    """The evaluation ground truth at ``size = (h, w)`` (None: unchanged): ``nearest``, or ``linear_exact``
    (``cv2.INTER_LINEAR_EXACT`` on the uint8 class map, Human3.6M's rule, pitfall 12: ids are interpolated). A
    label already at ``size`` is returned as it is by both rules."""
    if size is None or label.shape[:2] == tuple(size):
        return label
    if rule not in ("nearest", "linear_exact"):
        raise ConfigError(f"eval.label_resize: 'nearest' or 'linear_exact', got {rule!r}")
    interp = cv2.INTER_LINEAR_EXACT if rule == "linear_exact" else cv2.INTER_NEAREST
    return cv2.resize(np.ascontiguousarray(label, dtype=np.uint8), (size[1], size[0]), interpolation=interp)


def augment(inputs: dict[str, np.ndarray], label: np.ndarray, rng: np.random.Generator,
            base_size: tuple[int, int], crop_size: tuple[int, int], scale_factor: int = 11,
            flip_prob: float = 0.5) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The training transform of the module docstring on pixel-aligned ``inputs`` (``rgb`` (H, W, 3) uint8,
    ``depth`` (H, W) float32) and ``label`` (H, W) uint8: resize to ``base_size``, rescale by
    ``0.5 + randint(0, scale_factor) / 10``, pad to ``crop_size`` (0 / 0 / 255), random crop, flip with the
    left / right swap. Returns the crops (same dtypes) and the label crop."""
    planes = {k: _resize(v, k, base_size) for k, v in inputs.items()}
    lab = _resize(label, "label", base_size)
    s = 0.5 + int(rng.integers(0, scale_factor + 1)) / 10.0
    size = (max(1, round(base_size[0] * s)), max(1, round(base_size[1] * s)))
    planes = {k: _resize(v, k, size) for k, v in planes.items()}
    lab = _resize(lab, "label", size)
    ch, cw = crop_size
    ph, pw = max(ch - size[0], 0), max(cw - size[1], 0)
    if ph or pw:
        planes = {k: np.pad(v, ((0, ph), (0, pw)) + ((0, 0),) * (v.ndim - 2)) for k, v in planes.items()}
        lab = np.pad(lab, ((0, ph), (0, pw)), constant_values=PARSING_IGNORE)
    h, w = lab.shape
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    planes = {k: v[top:top + ch, left:left + cw] for k, v in planes.items()}
    lab = lab[top:top + ch, left:left + cw]
    if rng.random() < flip_prob:
        planes = {k: v[:, ::-1] for k, v in planes.items()}
        lab = flip_parsing(lab)
    return {k: np.ascontiguousarray(v) for k, v in planes.items()}, np.ascontiguousarray(lab)


def _to_tensors(planes: dict[str, np.ndarray], modality: str) -> dict[str, torch.Tensor]:
    """Network inputs: RGB ImageNet-normalised, depth replicated to 3 channels; ``image`` for a single modality,
    ``rgb`` and ``depth`` for rgbd."""
    out = {}
    if "rgb" in planes:
        out["rgb"] = normalize_image(planes["rgb"], IMAGENET_MEAN, IMAGENET_STD)
    if "depth" in planes:
        out["depth"] = torch.from_numpy(np.repeat(planes["depth"][None].astype(np.float32), 3, axis=0))
    if modality != "rgbd":
        out = {"image": out[modality]}
    return out


class ParsingTrainSet(Dataset):
    """Training items ``{image | rgb + depth, label (h, w) int64, index}`` of a parsing reader, augmented by
    :func:`augment` with an RNG drawn from numpy's global generator (which the engine seeds per sample)."""

    def __init__(self, reader: Human36MParsing | NturgbdParsing, modality: str, base_size: tuple[int, int],
                 crop_size: tuple[int, int], scale_factor: int = 11, flip_prob: float = 0.5) -> None:
        self.reader, self.modality = reader, modality
        self.base_size, self.crop_size = tuple(base_size), tuple(crop_size)
        self.scale_factor, self.flip_prob = int(scale_factor), float(flip_prob)

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng(np.random.randint(0, 2**63 - 1, dtype=np.int64))
        sample = self.reader.load(index)
        planes, label = augment(_inputs(sample, self.modality), sample["label"], rng, self.base_size,
                                self.crop_size, self.scale_factor, self.flip_prob)
        return {**_to_tensors(planes, self.modality), "label": torch.from_numpy(label.astype(np.int64)),
                "index": index}


class ParsingImages(Dataset):
    """Evaluation items: the inputs resized to ``input_size`` (RGB bilinear, depth nearest) and the ground truth
    ``label`` after :func:`resize_label` (``label_size``, ``label_rule``), int64; ``max_images``: the first N."""

    def __init__(self, reader: Human36MParsing | NturgbdParsing, modality: str, input_size: tuple[int, int],
                 label_size: tuple[int, int] | None = None, label_rule: str = "nearest",
                 max_images: int | None = None) -> None:
        self.reader, self.modality, self.input_size = reader, modality, tuple(input_size)
        self.label_size = tuple(label_size) if label_size is not None else None
        self.label_rule = label_rule
        self.count = len(reader) if max_images is None else min(len(reader), int(max_images))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.reader.load(index)
        planes = {k: _resize(v, k, self.input_size) for k, v in _inputs(sample, self.modality).items()}
        label = resize_label(sample["label"], self.label_size, self.label_rule)
        return {**_to_tensors(planes, self.modality), "label": torch.from_numpy(label.astype(np.int64)),
                "index": index}

    def display(self, index: int, size: tuple[int, int]) -> np.ndarray:
        """The picture's input tile at ``size``: the RGB frame, or the colourised depth."""
        from humanvision.viz.draw import colorize_depth

        sample = self.reader.load(index)
        if self.modality == "depth":
            return _resize(colorize_depth(sample["depth"]), "label", size)
        return _resize(sample["image"], "rgb", size)


def collate_parsing(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack the inputs; labels (possibly of different sizes) stay a list of ``(H, W)`` tensors."""
    out: dict[str, Any] = {k: torch.stack([it[k] for it in items]) for k in items[0] if k not in ("label", "index")}
    out["label"] = [it["label"] for it in items]
    out["index"] = torch.tensor([int(it["index"]) for it in items])
    return out


# ------------------------------------------------------------------------------------------------ the loss
def parsing_loss(logits: torch.Tensor, label: torch.Tensor, weight: torch.Tensor | None = None,
                 ignore_index: int = PARSING_IGNORE) -> torch.Tensor:
    """Cross-entropy ``(B, K, H, W)`` vs ``(B, H, W)``, pixels labelled ``ignore_index`` skipped, fp32. With class
    ``weight``: ``sum_i w[y_i] * nll_i / sum_i w[y_i]`` over the counted pixels (PyTorch's weighted mean). A batch
    without a counted pixel gives 0 (not NaN)."""
    valid = label != ignore_index
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), label.long(), weight=weight, ignore_index=ignore_index)


# ---------------------------------------------------------------------------------------------- the method
class ParsingMethod(nn.Module):
    """Model + loss. ``forward(batch)`` (``image`` or ``rgb`` + ``depth``, ``label``) returns ``loss =
    loss_weight * CE`` of the supervised output, ``ce`` and the batch's pixel accuracy; :meth:`predict` gives
    (flip-averaged) logits of any outputs.

    Args:
        model: a :class:`~humanvision.models.parsing.ParsingHRNet` (rgb / depth) or
            :class:`~humanvision.models.parsing.RGBDParsingHRNet` (rgbd).
        modality: ``rgb``, ``depth`` or ``rgbd``.
        class_weights: CE class weights (None: unweighted).
        supervise: rgbd: the output trained (``fused``, ``rgb``, ``depth``).
        loss_weight: factor on the CE.
        freeze_encoders: keep the encoders (and rgbd's projections) fixed and in eval mode.
    """

    def __init__(self, model: ParsingHRNet | RGBDParsingHRNet, modality: str = "rgb",
                 class_weights: Sequence[float] | None = None, supervise: str = "fused", loss_weight: float = 1.0,
                 freeze_encoders: bool = False) -> None:
        super().__init__()
        rgbd = isinstance(model, RGBDParsingHRNet)
        if rgbd != (modality == "rgbd"):
            raise ConfigError(f"parsing.modality {modality!r} does not match the model {type(model).__name__}")
        self.model, self.modality = model, modality
        self.supervise = supervise if rgbd else modality
        self.loss_weight, self.freeze_encoders = float(loss_weight), bool(freeze_encoders)
        weight = None if class_weights is None else torch.tensor(list(class_weights), dtype=torch.float32)
        self.register_buffer("class_weights", weight, persistent=False)
        self.register_buffer("flip_perm", torch.tensor(PARSING_FLIP_PERM if model.num_classes == len(
            PARSING_FLIP_PERM) else range(model.num_classes)), persistent=False)
        if freeze_encoders:
            for m in self.frozen_modules():
                m.requires_grad_(False)

    @property
    def modes(self) -> tuple[str, ...]:
        """The outputs the model has: all three for rgbd, else the modality."""
        return PARSING_MODES if self.modality == "rgbd" else (self.modality,)

    def frozen_modules(self) -> list[nn.Module]:
        m = self.model
        if isinstance(m, RGBDParsingHRNet):
            return [m.encoder1, m.encoder2, m.encoder1_linear, m.encoder2_linear]
        return [m.encoder]

    def train(self, mode: bool = True) -> ParsingMethod:
        super().train(mode)
        if self.freeze_encoders:
            for m in self.frozen_modules():
                m.eval()
        return self

    def logits(self, batch: dict[str, Any], modes: Sequence[str] | None = None, missing: str = "skip"
               ) -> dict[str, torch.Tensor]:
        """``{mode: (B, K, H, W)}`` of ``modes`` (default: all outputs). rgbd with ``missing="zeros"``: the ``rgb``
        / ``depth`` outputs are the fused output with the other input replaced by zeros."""
        modes = tuple(modes or self.modes)
        if self.modality != "rgbd":
            if modes != (self.modality,):
                raise ConfigError(f"a {self.modality} model has the output {self.modality!r} only, asked {modes}")
            return {self.modality: self.model(batch["image"])}
        rgb, depth = batch.get("rgb"), batch.get("depth")
        if missing == "skip":
            return self.model.forward_modes(rgb, depth, modes)
        if missing != "zeros":
            raise ConfigError(f"eval.missing: 'skip' or 'zeros', got {missing!r}")
        out = {}
        for m in modes:
            r = torch.zeros_like(depth) if m == "depth" else rgb
            d = torch.zeros_like(rgb) if m == "rgb" else depth
            out[m] = self.model.forward_modes(r, d, ("fused",))["fused"]
        return out

    def predict(self, batch: dict[str, Any], modes: Sequence[str] | None = None, flip: bool = False,
                missing: str = "skip") -> dict[str, torch.Tensor]:
        """:meth:`logits`, with ``flip``: averaged with the logits of the horizontally flipped inputs, their
        left / right channels swapped (``[:, PARSING_FLIP_PERM]``) and flipped back."""
        out = self.logits(batch, modes, missing)
        if not flip:
            return out
        keys = ("image", "rgb", "depth")
        flipped = {k: (v.flip(-1) if k in keys and isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        back = self.logits(flipped, modes, missing)
        perm = self.flip_perm.to(next(iter(out.values())).device)
        return {m: 0.5 * (out[m] + back[m].index_select(1, perm).flip(-1)) for m in out}

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        label = batch["label"]
        logits = self.logits(batch, (self.supervise,))[self.supervise]
        ce = parsing_loss(logits, label, self.class_weights)
        valid = label != PARSING_IGNORE
        acc = ((logits.detach().argmax(1) == label) & valid).sum() / valid.sum().clamp_min(1)
        return {"loss": self.loss_weight * ce, "ce": ce, "pixel_acc": acc.float()}


def build_method(recipe: ParsingRecipe, weights: str | Path | None = None, quiet: bool = True) -> ParsingMethod:
    """The recipe's :class:`ParsingMethod`: the model from ``model.name``, its encoder(s) from ``model.init``
    (report printed unless ``quiet``), or everything from trained ``weights``."""
    from humanvision.models import create_model

    m, p = recipe.model, recipe.parsing
    model = create_model(m.name, num_classes=p.num_classes, **m.args)
    if weights is None and m.init is not None:
        report = init_model(model, m.init, m.init_encoder, p.modality)
        if not quiet and int(os.environ.get("RANK", "0")) == 0:
            print(report.summary(), flush=True)
    method = ParsingMethod(model, p.modality, p.weights(), p.supervise, p.loss_weight, p.freeze_encoders)
    if weights is not None:
        load_state_strict(method, weights)
    return method


def init_model(model: ParsingHRNet | RGBDParsingHRNet, source: str | Path, which: str = "auto",
               modality: str = "rgb") -> InitReport:
    """Initialise the encoder(s) of ``model`` from ``source`` (see :class:`ModelConfig`)."""
    if isinstance(model, RGBDParsingHRNet):
        return model.init_encoders(source)
    if which == "auto":
        which = "encoder2" if modality == "depth" else "encoder1"
    return model.init_encoder(source, which)


# ----------------------------------------------------------------------------------------------- evaluation
def parsing_palette() -> np.ndarray:
    """``(256, 3)`` uint8 RGB colours of class ids (PASCAL VOC's; background black, ignore 255 white)."""
    from humanvision.viz.draw import default_palette

    pal = default_palette(256).copy()
    pal[PARSING_IGNORE] = 255
    return pal


def _confusion(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(K, K)`` int64 confusion (rows label, columns prediction) of one image, 255 skipped, on the device."""
    valid = label != PARSING_IGNORE
    t, p = label[valid], pred[valid]
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        bad = int(t[(t < 0) | (t >= num_classes)][0])
        raise DataError(f"label {bad} outside 0..{num_classes - 1} (ignore {PARSING_IGNORE})", field="label")
    return torch.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes,
                                                                                             num_classes)


def _metrics(conf: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    from humanvision.metrics.segmentation import segmentation_metrics

    res = segmentation_metrics(conf, names)
    iou = np.array([res.iou[n] for n in names], dtype=np.float64)
    return {"mIoU": res.miou, "mIoU_absent_zero": float(np.nan_to_num(iou, nan=0.0).mean()),
            "pixel_accuracy": res.pixel_accuracy, "mean_accuracy": res.mean_accuracy, "count": res.count,
            "iou": res.iou, "class_accuracy": res.class_accuracy}


def _display_size(size: tuple[int, int], longest: int = 192) -> tuple[int, int]:
    s = min(1.0, longest / max(size))
    return max(1, round(size[0] * s)), max(1, round(size[1] * s))


@torch.no_grad()
def _evaluate(method: ParsingMethod, dataset: ParsingImages, cfg: EvalConfig, modes: Sequence[str], missing: str,
              device: str | torch.device | None, precision: str, num_workers: int
              ) -> tuple[dict[str, np.ndarray], list[tuple[int, np.ndarray, dict[str, np.ndarray]]]]:
    """One pass over ``dataset``: per output the global confusion matrix, and the pictured images' labels and
    predictions (at display size)."""
    from humanvision.engine.precision import autocast

    device = torch.device(device) if device is not None else next(method.parameters()).device
    k = method.model.num_classes
    was_training = method.training
    method.eval().to(device)
    conf = {m: torch.zeros(k, k, dtype=torch.int64) for m in modes}
    n = len(dataset)
    if n == 0:
        raise DataError("no images to evaluate", field="dataset")
    vis = set(np.unique(np.linspace(0, n - 1, min(cfg.num_vis, n)).round().astype(int)).tolist()) if cfg.num_vis \
        else set()
    shown = []
    try:
        for batch in DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False, num_workers=num_workers,
                                collate_fn=collate_parsing):
            inputs = {kk: v.to(device) for kk, v in batch.items() if kk not in ("label", "index")}
            with autocast(device, precision):
                out = method.predict(inputs, modes, flip=cfg.flip_test, missing=missing)
            for i, label in enumerate(batch["label"]):
                label = label.to(device)
                preds = {}
                for m in modes:
                    logit = F.interpolate(out[m][i:i + 1].float(), size=tuple(label.shape), mode="bilinear",
                                          align_corners=False)
                    pred = logit[0].argmax(0)
                    conf[m] += _confusion(pred, label, k).cpu()
                    preds[m] = pred
                idx = int(batch["index"][i])
                if idx in vis:
                    size = _display_size(tuple(label.shape))
                    small = {m: _resize(p.to(torch.uint8).cpu().numpy(), "label", size) for m, p in preds.items()}
                    gt = _resize(label.clamp(0, 255).to(torch.uint8).cpu().numpy(), "label", size)
                    shown.append((idx, gt, small))
    finally:
        method.train(was_training)
    return {m: c.numpy() for m, c in conf.items()}, shown


def parsing_figure(dataset: ParsingImages, shown: Sequence[tuple[int, np.ndarray, dict[str, np.ndarray]]],
                   names: dict[str, str] | None = None) -> np.ndarray:
    """One row per pictured image: input | ground truth | prediction of each output (palette colours)."""
    from humanvision.viz import make_grid

    pal = parsing_palette()
    tiles, titles = [], []
    for idx, gt, preds in shown:
        tiles += [dataset.display(idx, gt.shape[:2]), pal[gt]] + [pal[p] for p in preds.values()]
        titles += ["input", "ground truth"] + [(names or {}).get(m, f"prediction ({m})") for m in preds]
    return make_grid(tiles, ncols=2 + len(shown[0][2]), titles=titles)


def _class_names(k: int) -> list[str]:
    return list(PARSING_CLASSES) if k == len(PARSING_CLASSES) else [str(i) for i in range(k)]


def _settings(cfg: EvalConfig, dataset: ParsingImages, missing: str) -> dict[str, Any]:
    return {"input_size": list(cfg.input_size), "label_size": None if cfg.label_size is None else
            list(cfg.label_size), "label_resize": cfg.label_resize, "flip_test": cfg.flip_test,
            "missing": missing, "num_images": len(dataset), "modality": dataset.modality}


def evaluate_parsing(method: ParsingMethod, dataset: ParsingImages, eval_cfg: EvalConfig | None = None,
                     out_dir: str | Path | None = None, *, modes: Sequence[str] | None = None,
                     missing: str | None = None, device: str | torch.device | None = None,
                     precision: str | None = None, num_workers: int = 0) -> dict[str, Any]:
    """mIoU (percent, 25 classes with background), ``mIoU_absent_zero``, pixel and mean class accuracy, per-class
    IoU of ``method`` on ``dataset`` (module docstring). ``modes``: the outputs evaluated (default: the method's
    supervised one); with several, the first is reported unprefixed and each as ``<metric>_<mode>`` too, with
    its full results under ``outputs``. With ``out_dir``: ``metrics.json`` and ``parsing.png``."""
    cfg = eval_cfg or EvalConfig()
    modes = tuple(modes or (method.supervise,))
    missing = missing or cfg.missing
    conf, shown = _evaluate(method, dataset, cfg, modes, missing, device, precision or cfg.precision, num_workers)
    names = _class_names(method.model.num_classes)
    per = {m: _metrics(c, names) for m, c in conf.items()}
    metrics: dict[str, Any] = {**per[modes[0]], "num_images": len(dataset)}
    if len(modes) > 1:
        for m in modes:
            for key in ("mIoU", "mIoU_absent_zero", "pixel_accuracy", "mean_accuracy"):
                metrics[f"{key}_{m}"] = per[m][key]
        metrics["outputs"] = per
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps({**metrics, "settings": _settings(cfg, dataset, missing)},
                                                     indent=2))
        if shown:
            from humanvision.data.io import write_image

            write_image(out / "parsing.png", parsing_figure(dataset, shown))
    return metrics


#: Rows of the versatility table: (output, the setting's name, the inputs used).
_VERSATILITY_ROWS = (("fused", "RGB + depth", "rgb+depth"), ("rgb", "depth removed", "rgb"),
                     ("depth", "RGB removed", "depth"))


def evaluate_versatility(method: ParsingMethod, dataset: ParsingImages, eval_cfg: EvalConfig | None = None,
                         out_dir: str | Path | None = None, *, missing: str | None = None,
                         device: str | torch.device | None = None, precision: str | None = None,
                         num_workers: int = 0) -> list[dict[str, Any]]:
    """A.7.5: the same RGB-D model evaluated with both modalities, with depth removed and with RGB removed (one
    pass). ``missing``: ``skip`` (the single-modality outputs through the shared head, the brief's test types 1
    and 2) or ``zeros`` (the fused output with the removed input set to zeros). Returns one row per setting:
    ``setting``, ``inputs``, ``output``, ``mIoU``, ``mIoU_absent_zero``, ``pixel_accuracy``, ``mean_accuracy``;
    with ``out_dir`` also ``versatility.json``, ``versatility.txt`` (:func:`versatility_table`), ``metrics.json``
    and ``parsing.png``."""
    if method.modality != "rgbd":
        raise ConfigError(f"the versatility evaluation needs an RGB-D model (parsing.modality rgbd), got "
                          f"{method.modality!r}")
    cfg = eval_cfg or EvalConfig()
    missing = missing or cfg.missing
    metrics = evaluate_parsing(method, dataset, cfg, out_dir, modes=PARSING_MODES, missing=missing, device=device,
                               precision=precision, num_workers=num_workers)
    return _versatility_rows(metrics, missing, out_dir)


def _versatility_rows(metrics: dict[str, Any], missing: str, out_dir: str | Path | None) -> list[dict[str, Any]]:
    """The table rows from an evaluation of all three outputs (written to ``out_dir`` when given)."""
    rows = []
    for mode, setting, inputs in _VERSATILITY_ROWS:
        r = metrics["outputs"][mode]
        output = "fused" if missing == "zeros" else mode
        rows.append({"setting": setting, "inputs": inputs, "output": output, "missing": missing,
                     **{k: r[k] for k in ("mIoU", "mIoU_absent_zero", "pixel_accuracy", "mean_accuracy")}})
    if out_dir is not None:
        out = Path(out_dir)
        (out / "versatility.json").write_text(json.dumps(rows, indent=2))
        (out / "versatility.txt").write_text(versatility_table(rows) + "\n")
    return rows


def versatility_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of :func:`evaluate_versatility` as a fixed-width text table."""
    head = f"{'setting':<16}{'inputs':<12}{'output':<8}{'mIoU':>8}{'pixel acc':>11}{'mean acc':>10}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['setting']:<16}{r['inputs']:<12}{r['output']:<8}{r['mIoU']:>8.2f}"
                     f"{r['pixel_accuracy']:>11.2f}{r['mean_accuracy']:>10.2f}")
    return "\n".join(lines)


def _eval_set(recipe: ParsingRecipe, quiet: bool = True) -> ParsingImages:
    e = recipe.eval
    return ParsingImages(read_split(recipe, "eval", quiet), recipe.parsing.modality, e.input_size, e.label_size,
                         e.label_resize, e.max_images)


def _eval_modes(recipe: ParsingRecipe) -> tuple[str, ...]:
    p = recipe.parsing
    if p.modality != "rgbd":
        return (p.modality,)
    first = p.test_mode or p.supervise
    return (first,) + tuple(m for m in PARSING_MODES if m != first)


def export_onnx(recipe: ParsingRecipe, weights: str | Path, out: str | Path, *, flip_test: bool | None = None,
                **kwargs: Any):
    """``humanvision export`` of a parsing recipe: the trained network's logits as ONNX with the
    evaluation's contract (``eval.input_size``, ``eval.flip_test`` unless ``flip_test``), read by
    :class:`humanvision.runtime.HumanParser`; an rgbd recipe exports its ``parsing.test_mode`` output (default the
    supervised one: ``fused`` takes both inputs). ``kwargs``: those of
    :func:`humanvision.export.export_parsing_onnx`."""
    from humanvision.export import export_parsing_onnx

    p = recipe.parsing
    mode = (p.test_mode or p.supervise) if p.modality == "rgbd" else None
    return export_parsing_onnx(build_method(recipe, weights), out, input_size=tuple(recipe.eval.input_size),
                               flip_test=recipe.eval.flip_test if flip_test is None else flip_test, mode=mode,
                               recipe=recipe.name, weights=weights, **kwargs)


def evaluate_weights(recipe: ParsingRecipe, weights: str | Path, out_dir: str | Path | None = None,
                     device: str | torch.device | None = None, progress: bool = False) -> dict[str, Any]:
    """``humanvision eval`` of a parsing recipe: trained ``weights`` (run folder, checkpoint folder or
    ``model.safetensors``) on the recipe's evaluation split; for rgbd also the versatility table
    (``versatility`` in the result)."""
    method = build_method(recipe, weights=weights)
    dataset = _eval_set(recipe, quiet=not progress)
    device = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    metrics = evaluate_parsing(method, dataset, recipe.eval, out_dir, modes=_eval_modes(recipe), device=device,
                               num_workers=recipe.train.num_workers)
    if recipe.parsing.modality == "rgbd":
        metrics["versatility"] = rows = _versatility_rows(metrics, recipe.eval.missing, out_dir)
        if progress:
            print(versatility_table(rows))
    metrics["weights"] = str(weights)
    if out_dir is not None:
        path = Path(out_dir) / "metrics.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "weights": str(weights)}, indent=2))
    return metrics


# ------------------------------------------------------------------------------------------------- training
def run_training(recipe: ParsingRecipe, resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Train with the engine (poly lr, SGD per the recipe), evaluating every ``train.eval_every`` epochs into
    ``<output_dir>/eval`` (``metrics.json``, ``parsing.png``; rgbd: ``mIoU`` of ``parsing.test_mode`` and every
    output's ``mIoU_<mode>``). Returns the fit summary."""
    from humanvision.config import save_config
    from humanvision.engine import Trainer, seed_everything

    seed_everything(recipe.train.seed)
    method = build_method(recipe, quiet=quiet)  # before any data work: a bad model or init file fails at once
    p, d = recipe.parsing, recipe.data
    train_set = ParsingTrainSet(read_split(recipe, "train", quiet), p.modality, d.base_size, d.crop_size,
                                d.scale_factor, d.flip_prob)
    eval_set = _eval_set(recipe)
    out = Path(recipe.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(recipe, out / "config.yaml")
    main_rank = int(os.environ.get("RANK", "0")) == 0
    cfg = recipe.train
    if p.modality == "rgbd" and p.supervise != "fused" and not cfg.find_unused_parameters:
        cfg = dataclasses.replace(cfg, find_unused_parameters=True)  # the other encoder gets no gradient (DDP)
    groups_fn: Callable[[nn.Module], list[dict]] | None = None
    if p.weight_decay_all:
        def groups_fn(model: nn.Module) -> list[dict]:
            params = [(n, q) for n, q in model.named_parameters() if q.requires_grad]
            return [{"name": "all", "params": [q for _, q in params], "param_names": [n for n, _ in params],
                     "weight_decay": cfg.weight_decay, "lr_scale": 1.0, "layer_id": 0}]
    modes = _eval_modes(recipe)

    def eval_fn(model: ParsingMethod, epoch: int) -> dict[str, float]:
        m = evaluate_parsing(model, eval_set, recipe.eval, out / "eval" if main_rank else None, modes=modes,
                             precision=trainer.choice.precision, num_workers=cfg.num_workers)
        return {k: v for k, v in m.items() if isinstance(v, float)}

    trainer = Trainer(cfg, method, train_set, eval_fn=eval_fn, param_groups_fn=groups_fn)
    return trainer.fit(resume=resume or None)
