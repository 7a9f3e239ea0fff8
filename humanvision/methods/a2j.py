"""A2J depth 3D pose on ITOP (side view) with an HRNet-W18 backbone, HCMoCo's downstream task, readable top to
bottom: recipe, data, loss, method, evaluation, pictures, training (``/work/shared/reference/pretraining.md``
A.7.4 and HCMoCo pitfall 11). The network, its anchors and the decoding are in :mod:`humanvision.models.a2j`.

**Data** (A.7.4). ITOP's official ``.h5`` files (:class:`~humanvision.data.readers.itop.ItopReader`, valid frames
only: 17,991 train / 4,863 test side-view frames; depth in metres, 240 x 320, 15 joints). ``data.source:
synthetic`` writes synthetic frames in that layout on first use (:func:`prepare_synthetic`).

* **Boxes**, ``(x1, y1, x2, y2)`` image pixels: train from ``data.train_boxes`` (``bounding_box_depth_train.pkl``:
  the *first* box of each frame) padded by ``data.train_box_pad`` = (25, 15) px in x and y; test from
  ``data.test_boxes`` (A2J's ``itop_side_bndbox_test.mat``) padded by ``data.test_box_pad`` = (0, 0)
  (:func:`read_boxes`: ``.pkl`` read with the restricted unpickler, ``.mat``, ``.npy``; one box per valid frame, per
  file row, or a dict by ITOP id). Without a file the box is the bounding box of the frame's 2D joints with the
  same padding (our fallback, used by the synthetic recipes; it uses the ground truth). Boxes are clipped to the
  image.
* **Data efficiency** (``data.train_fraction`` 0.1 / 0.01 / 0.005 / 0.002 / 0.001 = the ``--use_01/001/0005/
  0002/0001`` flags): every 10th / 100th / 200th / 500th / 1000th valid training frame, starting with the first
  (:func:`subset_indices`).
* **Input** (:func:`preprocess`): the box cropped and nearest-resized to ``a2j.input_size`` = 288 x 288 (with the
  augmentation folded in: one ``cv2.warpAffine`` with nearest sampling and border 0); pixels deeper than
  ``max(joint z) + 0.05 m`` set to 0 (the ground-truth joints, also at test time, as the code does); minus the
  mean of the nonzero pixels (std 1: no scaling). ``a2j.zero_background: false`` subtracts the mean from every
  pixel (the literal reading of the brief; background pixels become ``-mean``), ``true`` keeps them at 0. The
  single channel is replicated to 3 channels.
* **Augmentation** (train, ``data.augment``): each box edge jittered by an integer in [-10, 10] px, rotation
  U(-15, 15) degrees and scale U(0.5, 1.5) about the crop centre. No depth noise (the code computes a Gaussian
  offset but never adds it) and no random erasing (commented out there).
* **Targets**: per joint ``(row, col)`` in crop pixels (pitfall 11) and ``depth = (z - mean) * 50`` (z = the
  joint's ITOP ``real_world_coordinates`` z in metres).

**Loss** (:func:`a2j_loss`, per sample then averaged; all terms are means over joints and coordinates, fp32):
``w = softmax over the anchors`` of the responses (dim 0 of a sample's ``(N, J)``, **not** over joints),
``L_anchor = SmoothL1_1(gt_xy - sum w anchor)``, ``L_reg = 0.5 SmoothL1_1(gt_xy - sum w (anchor + offset)) +
SmoothL1_3(gt_d - sum w depth)``, ``L = 1 L_anchor + 3 L_reg``.

**Optimisation** (engine): Adam lr 3.5e-4, weight decay 1e-4 on every parameter (torch ``Adam``'s L2 on all of
them, ``a2j.weight_decay_all``), batch 12, **50 epochs** (the code's ``--bs`` flag is the epoch count, pitfall 11),
``train.schedule: step`` with milestones every 10 epochs and gamma 0.2 (StepLR(10, 0.2)); evaluated every epoch,
the best mAP kept (``<output_dir>/best``).

**Evaluation** (:func:`evaluate_a2j`): the decoded ``(row, col)`` mapped back through the test box (the inverse
of the crop transform) to image pixels ``(x, y)``; ``z = pred_d / 50 + mean``; back-projection
(:func:`itop_backproject`) ``X = (x - 160) z 0.0035``, ``Y = (120 - y) z 0.0035``, ``Z = z`` (ITOP's axes, y up);
**mAP@10cm** = percent of (frame, joint) pairs with 3D error < 0.10 m over the 15 joints, and the per-joint
accuracy (:func:`~humanvision.metrics.pose3d.itop_map`). With an output folder: ``metrics.json`` and ``a2j.png``
(a few depth frames with the true (green) and predicted (red) skeletons and the box).

A recipe (:class:`A2JRecipe`) has ``model``, ``a2j`` (its top-level mark, :func:`is_a2j_recipe`), ``data``,
``train`` (the engine's) and ``eval``: ``configs/hcmoco_a2j_itop_side.yaml`` (the published settings) and
``configs/a2j_tiny_synthetic.yaml`` (CPU-sized). ``model.init`` takes HCMoCo's exported ``depth_encoder.pth``
(:func:`humanvision.methods.hcmoco.export_encoders`), an ImageNet HRNet or a whole HCMoCo checkpoint.
"""

from __future__ import annotations

import json
import math
import os
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
from humanvision.data.readers.itop import ITOP_PRINCIPAL_POINT, ItopReader
from humanvision.engine import TrainConfig
from humanvision.engine.checkpoint import load_state_strict
from humanvision.errors import ConfigError, DataError
from humanvision.metrics.pose3d import itop_map
from humanvision.models.a2j import A2J, a2j_decode

__all__ = [
    "DATA_EFFICIENCY", "ITOP_PIXEL_SCALE", "A2JConfig", "A2JDataset", "A2JMethod", "A2JRecipe", "DataConfig",
    "EvalConfig", "ModelConfig", "a2j_figure", "a2j_loss", "build_dataset", "build_method", "crop_affine",
    "crop_to_image", "evaluate_a2j", "evaluate_weights", "every_n", "export_onnx", "is_a2j_recipe",
    "itop_backproject", "load_recipe", "prepare_synthetic", "preprocess", "read_boxes", "read_split",
    "run_training", "subset_indices",
]

#: ITOP's back-projection factor (m per pixel per metre of depth), = 1 / focal length in pixels.
ITOP_PIXEL_SCALE = 0.0035
#: ``data.train_fraction`` -> keep every n-th valid training frame (``--use_01/001/0005/0002/0001``).
DATA_EFFICIENCY: dict[float, int] = {1.0: 1, 0.1: 10, 0.01: 100, 0.005: 200, 0.002: 500, 0.001: 1000}
NUM_JOINTS = 15


# ----------------------------------------------------------------------------------------------- the recipe
def _model_class(name: str) -> type | None:
    import typing

    import humanvision.models.a2j  # noqa: F401  (registers the entry points)
    from humanvision.models import model_entrypoint

    ret = typing.get_type_hints(model_entrypoint(name)).get("return")
    return ret if isinstance(ret, type) else None


@dataclass
class ModelConfig:
    """``name``: an A2J entry point (``a2j_hrnet_w18``, ``a2j_hrnet_w32``, ``a2j_hrnet_tiny``); ``init``: the
    backbone's pre-trained weights (a flat HRNet state dict such as HCMoCo's ``depth_encoder.pth``, an ImageNet
    HRNet, a whole HCMoCo checkpoint, a trained A2J; null: random); ``init_encoder``: which encoder of a whole
    HCMoCo checkpoint (``encoder2``: depth); ``args``: other keyword arguments of the entry point (``head_width``,
    ``head_convs``, ``hrnet_args`` ...; the input size is ``a2j.input_size``)."""

    name: str = "a2j_hrnet_w18"
    init: Path | None = must_exist()
    init_encoder: Literal["encoder1", "encoder2"] = "encoder2"
    args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from humanvision.models import check_model_args, list_models

        try:
            cls = _model_class(self.name)
        except ConfigError as e:
            raise ConfigError(f"model.name: {e}") from None
        if cls is not A2J:
            raise ConfigError(f"model.name: {self.name!r} is not an A2J model (one of {', '.join(list_models('a2j_*'))})")
        check_model_args(self.name, self.args)
        for key in ("input_size", "num_joints"):
            if key in self.args:
                raise ConfigError(f"model.args.{key}: set by the recipe (a2j.input_size; ITOP has 15 joints)")


@dataclass
class A2JConfig:
    """The ``a2j`` section (module docstring): ``input_size`` (288), ``depth_scale`` (50: target = (z - mean) *
    50), ``depth_margin`` (0.05 m above the deepest joint), ``zero_background``, the loss weights
    (``anchor_weight`` 1, ``regress_weight`` 3, ``xy_weight`` 0.5 inside L_reg) and SmoothL1 betas (``beta_xy``
    1, ``beta_depth`` 3), the mAP ``threshold`` (0.10 m) and ``weight_decay_all`` (decay every parameter, as
    torch's Adam does; false: the engine's rule, no decay for biases and norms)."""

    input_size: int = 288
    depth_scale: float = 50.0
    depth_margin: float = 0.05
    zero_background: bool = False
    anchor_weight: float = 1.0
    regress_weight: float = 3.0
    xy_weight: float = 0.5
    beta_xy: float = 1.0
    beta_depth: float = 3.0
    threshold: float = 0.10
    weight_decay_all: bool = True

    def __post_init__(self) -> None:
        if self.input_size < 16 or self.input_size % 4:
            raise ConfigError(f"a2j.input_size: a multiple of 4, >= 16, got {self.input_size}")
        if self.depth_scale <= 0 or self.depth_margin < 0 or self.threshold <= 0:
            raise ConfigError(f"a2j.depth_scale / depth_margin / threshold: need > 0 / >= 0 / > 0, got "
                              f"{self.depth_scale} / {self.depth_margin} / {self.threshold}")
        if min(self.anchor_weight, self.regress_weight, self.xy_weight) < 0 or min(self.beta_xy,
                                                                                    self.beta_depth) <= 0:
            raise ConfigError("a2j: loss weights must be >= 0 and SmoothL1 betas > 0")


@dataclass
class DataConfig:
    """``source``: ``itop`` (``root`` = the folder of ``ITOP_{view}_{train,test}_{depth_map,labels}.h5``) or
    ``synthetic`` (written to ``synthetic_dir`` on first use: ``synthetic_train`` + ``synthetic_test`` side-view
    frames). Boxes: ``train_boxes`` / ``test_boxes`` files (null: the joints' bounding box) and their padding
    ``train_box_pad`` / ``test_box_pad`` (x, y) px. ``train_fraction``: the data-efficiency subset (1, 0.1, 0.01,
    0.005, 0.002, 0.001). Augmentation (train): ``augment``, ``box_jitter`` px per edge, ``rotation`` degrees,
    ``scale`` range."""

    source: Literal["itop", "synthetic"] = "itop"
    root: Path | None = must_exist()
    view: Literal["side", "top"] = "side"
    train_boxes: Path | None = must_exist()
    test_boxes: Path | None = must_exist()
    train_box_pad: tuple[float, float] = (25.0, 15.0)
    test_box_pad: tuple[float, float] = (0.0, 0.0)
    train_fraction: float = 1.0
    augment: bool = True
    box_jitter: int = 10
    rotation: float = 15.0
    scale: tuple[float, float] = (0.5, 1.5)
    synthetic_dir: Path = Path("data/synthetic_itop")
    synthetic_train: int = 200
    synthetic_test: int = 40
    synthetic_seed: int = 0

    def __post_init__(self) -> None:
        every_n(self.train_fraction)
        if self.box_jitter < 0 or self.rotation < 0 or not 0 < self.scale[0] <= self.scale[1]:
            raise ConfigError(f"data.box_jitter / rotation / scale: need >= 0 / >= 0 / 0 < lo <= hi, got "
                              f"{self.box_jitter} / {self.rotation} / {self.scale}")
        if self.synthetic_train < 1 or self.synthetic_test < 1:
            raise ConfigError(f"data.synthetic_train / synthetic_test: need >= 1, got {self.synthetic_train} / "
                              f"{self.synthetic_test}")


@dataclass
class EvalConfig:
    """``batch_size``, ``max_frames`` (the first N test frames; null: all), ``num_vis`` frames in ``a2j.png``,
    ``precision`` of ``humanvision eval``."""

    batch_size: int = 32
    max_frames: int | None = None
    num_vis: int = 6
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.num_vis < 0 or (self.max_frames is not None and self.max_frames < 1):
            raise ConfigError(f"eval.batch_size / num_vis / max_frames: got {self.batch_size} / {self.num_vis} / "
                              f"{self.max_frames}")


def _a2j_train() -> TrainConfig:
    return TrainConfig(epochs=50, batch_size=12, optimizer="adam", lr=3.5e-4, weight_decay=1e-4, schedule="step",
                       milestones=(10, 20, 30, 40), gamma=0.2, eval_every=1, best_metric="mAP",
                       output_dir="runs/a2j")


@dataclass
class A2JRecipe:
    """An A2J recipe; without a ``train`` section the published optimisation applies (Adam 3.5e-4, wd 1e-4,
    batch 12, 50 epochs, StepLR(10, 0.2), best mAP kept)."""

    name: str = "a2j"
    model: ModelConfig = field(default_factory=ModelConfig)
    a2j: A2JConfig = field(default_factory=A2JConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=_a2j_train)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.data.source == "itop" and self.data.root is None:
            raise ConfigError("data.root: the folder of the ITOP .h5 files is required with data.source: itop "
                              "(or use data.source: synthetic)")
        if self.data.source == "synthetic" and self.data.view != "side":
            raise ConfigError("data.view: the synthetic ITOP frames are side views")


def is_a2j_recipe(source: Any) -> bool:
    """True for an :class:`A2JRecipe`, a mapping or a YAML file with a top-level ``a2j`` section."""
    from humanvision.config import recipe_mapping

    return isinstance(source, A2JRecipe) or "a2j" in recipe_mapping(source)


def load_recipe(source: str | Path | dict, overrides: list[str] | tuple[str, ...] = (),
                unchecked: tuple[str, ...] = ()) -> A2JRecipe:
    """Load an A2J recipe (``unchecked``: as :func:`humanvision.config.load_config`)."""
    from humanvision.config import load_config

    return load_config(source, A2JRecipe, overrides, unchecked=tuple(unchecked))


# ------------------------------------------------------------------------------------------------- the data
def every_n(fraction: float) -> int:
    """The frame step of a data-efficiency ``fraction`` (:data:`DATA_EFFICIENCY`); any other value is a
    ConfigError."""
    for frac, n in DATA_EFFICIENCY.items():
        if math.isclose(float(fraction), frac, rel_tol=1e-9):
            return n
    raise ConfigError(f"data.train_fraction: one of {', '.join(str(f) for f in DATA_EFFICIENCY)} (every 1st, "
                      f"10th, 100th, 200th, 500th, 1000th frame), got {fraction}")


def subset_indices(num_frames: int, fraction: float = 1.0) -> np.ndarray:
    """The training frames of a data-efficiency ``fraction``: ``0, n, 2n, ...`` below ``num_frames`` with ``n =
    1 / fraction`` (``ceil(num_frames / n)`` frames; 17,991 -> 1,800 / 180 / 90 / 36 / 18)."""
    return np.arange(0, int(num_frames), every_n(fraction), dtype=np.int64)


def prepare_synthetic(data: DataConfig, quiet: bool = False) -> Path:
    """For ``source: synthetic``: write the ITOP-layout synthetic set (side view, ``train`` and ``test``) into
    ``synthetic_dir`` once (:func:`~humanvision.data.synthetic.cache.write_once`: a stamp records the parameters,
    a change regenerates it; under torchrun only rank 0 writes) and return the folder."""
    from humanvision.data.synthetic.cache import write_once
    from humanvision.data.synthetic.writers import generate_itop

    root = Path(data.synthetic_dir)
    params = {"kind": "itop_side", "train": data.synthetic_train, "test": data.synthetic_test,
              "seed": data.synthetic_seed}

    def generate(progress) -> None:
        generate_itop(root, {"train": data.synthetic_train, "test": data.synthetic_test}, seed=data.synthetic_seed,
                      progress=progress)

    write_once(root, params, generate, quiet=quiet, description=f"synthesising ITOP side-view frames -> {root}")
    return root


def _itop_files(root: Path, view: str, split: str) -> tuple[Path, Path]:
    return root / f"ITOP_{view}_{split}_depth_map.h5", root / f"ITOP_{view}_{split}_labels.h5"


def _box_entry(entry: Any, file: str, record: str) -> np.ndarray:
    """The first box ``(x1, y1, x2, y2)`` of one frame's entry (a box, or several boxes one per row)."""
    try:
        arr = np.asarray(entry, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"not a box: {type(entry).__name__}", file=file, record=record) from None
    if arr.ndim == 2 and arr.shape[0] >= 1:
        arr = arr[0]
    if arr.ndim != 1 or arr.shape[0] < 4 or not np.isfinite(arr[:4]).all():
        raise DataError(f"expected a box (x1, y1, x2, y2) or one per row, got shape {arr.shape}", file=file,
                        record=record)
    return arr[:4]


def _load_box_file(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix in (".pkl", ".pickle"):
        from humanvision.data.io import safe_unpickle

        try:
            return safe_unpickle(path)
        except DataError:
            return safe_unpickle(path, encoding="latin1")
    if suffix == ".npy":
        from humanvision.data.io import safe_load_npy

        return safe_load_npy(path)
    if suffix == ".mat":
        from scipy.io import loadmat

        try:
            mat = loadmat(str(path))
        except (ValueError, OSError, NotImplementedError) as e:
            raise DataError(f"not a readable .mat file ({e})", file=str(path)) from None
        arrays = {k: v for k, v in mat.items() if not k.startswith("__") and isinstance(v, np.ndarray)
                  and v.ndim == 2 and v.shape[1] >= 4}
        if len(arrays) > 1:
            arrays = {k: v for k, v in arrays.items() if "box" in k.lower()} or arrays
        if len(arrays) != 1:
            raise DataError(f"expected one (N, 4) box array, found {sorted(arrays) or 'none'}", file=str(path))
        return next(iter(arrays.values()))
    raise DataError("box files are .pkl, .mat or .npy", file=str(path))


def read_boxes(path: str | Path, reader: ItopReader) -> np.ndarray:
    """``(len(reader), 4)`` float64 first boxes ``(x1, y1, x2, y2)`` of the reader's (valid) frames from a box
    file (module docstring): a sequence / array with one entry per valid frame (in order) or per row of the
    ``.h5`` files, or a dict keyed by the ITOP id (``"PP_FFFFF"``) or the file row."""
    path = Path(path)
    obj = _load_box_file(path)
    file = str(path)
    n = len(reader)
    if isinstance(obj, dict):
        out = []
        for i, (iid, row) in enumerate(zip(reader.ids, reader.rows)):
            for key in (str(iid), str(iid).encode(), int(row)):
                if key in obj:
                    out.append(_box_entry(obj[key], file, f"frame {iid}"))
                    break
            else:
                raise DataError("no box for this frame", file=file, record=f"frame {iid} (row {int(row)})")
        return np.stack(out) if out else np.zeros((0, 4))
    try:
        total = len(obj)
    except TypeError:
        raise DataError(f"expected a list, array or dict of boxes, got {type(obj).__name__}", file=file) from None
    if total == n:
        take = np.arange(n)
    elif total == _num_rows(reader):
        take = reader.rows
    else:
        raise DataError(f"{total} boxes for {n} valid frames ({_num_rows(reader)} rows in {reader.source})",
                        file=file)
    return np.stack([_box_entry(obj[int(t)], file, f"frame {reader.ids[i]}") for i, t in enumerate(take)]) \
        if n else np.zeros((0, 4))


def _num_rows(reader: ItopReader) -> int:
    from humanvision.data.readers.itop import _read_h5

    return int(_read_h5(reader.source, ("id",), shapes_only=True)["id"][0])


def _finish_boxes(boxes: np.ndarray, pad: Sequence[float], image_size: tuple[int, int], reader: ItopReader,
                  what: str) -> np.ndarray:
    """Pad ``(x1, y1, x2, y2)`` by ``pad = (px, py)`` and clip to the ``(W, H)`` image; an empty box is a
    DataError naming the frame."""
    w, h = image_size
    out = np.asarray(boxes, dtype=np.float64).copy()
    out[:, 0] -= pad[0]
    out[:, 2] += pad[0]
    out[:, 1] -= pad[1]
    out[:, 3] += pad[1]
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w - 1)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h - 1)
    bad = (out[:, 2] - out[:, 0] < 2) | (out[:, 3] - out[:, 1] < 2)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"empty box {out[i].round(1).tolist()} after padding and clipping", file=what,
                        record=f"frame {reader.ids[i]}")
    return out


def read_split(recipe: A2JRecipe, split: Literal["train", "test"], quiet: bool = True
               ) -> tuple[ItopReader, np.ndarray, np.ndarray]:
    """The ``train`` or ``test`` split: the reader (valid frames, ITOP axes, y up), the selected frame indices
    (the data-efficiency subset for ``train``; ``eval.max_frames`` for ``test``) and their boxes
    ``(len(indices), 4)`` (padded, clipped)."""
    d = recipe.data
    root = prepare_synthetic(d, quiet) if d.source == "synthetic" else d.root
    if root is None:
        raise ConfigError("data.root: required")
    depth, labels = _itop_files(Path(root), d.view, split)
    reader = ItopReader(depth, labels, only_valid=True, opencv_axes=False)
    box_file = d.train_boxes if split == "train" else d.test_boxes
    pad = d.train_box_pad if split == "train" else d.test_box_pad
    if box_file is not None:
        boxes, what = read_boxes(box_file, reader), str(box_file)
    else:
        kp = reader.keypoints_2d
        boxes = np.concatenate([kp.min(1), kp.max(1)], axis=1).astype(np.float64)
        what = f"{labels} (joint boxes)"
    boxes = _finish_boxes(boxes, pad, reader.image_size, reader, what)
    if split == "train":
        indices = subset_indices(len(reader), d.train_fraction)
    else:
        m = recipe.eval.max_frames
        indices = np.arange(len(reader) if m is None else min(len(reader), m))
    return reader, indices, boxes[indices]


def crop_affine(box: Sequence[float], size: int, angle: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """``(2, 3)`` affine from image pixels ``(x, y)`` to crop pixels ``(col, row)``: the box ``(x1, y1, x2, y2)``
    stretched onto ``size x size`` (``u = (x - x1) size / (x2 - x1)``), then rotated by ``angle`` degrees
    (counter-clockwise on screen, ``cv2.getRotationMatrix2D``) and scaled by ``scale`` about the crop centre."""
    x1, y1, x2, y2 = (float(v) for v in box)
    sx, sy = size / (x2 - x1), size / (y2 - y1)
    crop = np.array([[sx, 0.0, -x1 * sx], [0.0, sy, -y1 * sy], [0.0, 0.0, 1.0]])
    rot = np.vstack([cv2.getRotationMatrix2D((size / 2.0, size / 2.0), float(angle), float(scale)), [0, 0, 1]])
    return (rot @ crop)[:2]


def preprocess(depth: np.ndarray, joints_2d: np.ndarray, joints_z: np.ndarray, affine: np.ndarray, size: int,
               depth_margin: float = 0.05, depth_scale: float = 50.0, zero_background: bool = False
               ) -> dict[str, np.ndarray | float]:
    """One A2J input and its targets (module docstring).

    Args:
        depth: ``(H, W)`` metres (0 = no reading); joints_2d: ``(J, 2)`` image ``(x, y)``; joints_z: ``(J,)``
            metres; affine: :func:`crop_affine`; size: the crop side.

    Returns:
        ``image (size, size)`` float32 (mean-subtracted metres), ``mean`` (metres; the mean of the kept nonzero
        pixels, or of the joints' z when no pixel is left), ``target_xy (J, 2)`` ``(row, col)`` crop pixels,
        ``target_depth (J,)`` = ``(z - mean) * depth_scale``.
    """
    img = cv2.warpAffine(np.asarray(depth, dtype=np.float32), affine.astype(np.float64), (size, size),
                         flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    img[img > float(np.max(joints_z)) + depth_margin] = 0.0
    fg = img > 0
    mean = float(img[fg].mean()) if fg.any() else float(np.mean(joints_z))
    img = np.where(fg, img - mean, 0.0 if zero_background else -mean).astype(np.float32)
    uv = np.asarray(joints_2d, dtype=np.float64) @ affine[:, :2].T + affine[:, 2]
    return {"image": img, "mean": mean, "target_xy": uv[:, ::-1].astype(np.float32),
            "target_depth": ((np.asarray(joints_z, dtype=np.float64) - mean) * depth_scale).astype(np.float32)}


def crop_to_image(xy: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """``(B, J, 2)`` ``(row, col)`` crop pixels -> ``(B, J, 2)`` image ``(x, y)`` through the inverse of the
    ``(B, 2, 3)`` crop affines."""
    a = affine.to(torch.float64)
    uv = xy.to(torch.float64).flip(-1) - a[:, None, :, 2]
    return torch.linalg.solve(a[:, None, :, :2], uv.unsqueeze(-1)).squeeze(-1)


def itop_backproject(x: Any, y: Any, z: Any) -> Any:
    """ITOP's back-projection (A.7.4): ``X = (x - 160) z 0.0035``, ``Y = (120 - y) z 0.0035``, ``Z = z``, stacked
    on a new last axis (torch tensors or numpy arrays, metres, ITOP's y-up axes)."""
    cx, cy = ITOP_PRINCIPAL_POINT
    px, py = (x - cx) * z * ITOP_PIXEL_SCALE, (cy - y) * z * ITOP_PIXEL_SCALE
    if isinstance(x, torch.Tensor):
        return torch.stack([px, py, z + 0 * px], dim=-1)
    return np.stack(np.broadcast_arrays(px, py, z), axis=-1)



class A2JDataset(Dataset):
    """A2J items of ITOP frames: ``image (3, S, S)`` float32, ``target_xy (J, 2)`` ``(row, col)``,
    ``target_depth (J,)``, ``mean`` (metres), ``affine (2, 3)`` (image -> crop), ``joints_2d (J, 2)`` image
    ``(x, y)``, ``joints_3d (J, 3)`` metres (ITOP axes), ``index``.

    ``train``: augmented (box jitter, rotation, scale) with an RNG drawn from numpy's global generator, which the
    engine seeds per sample."""

    def __init__(self, reader: ItopReader, indices: Sequence[int], boxes: np.ndarray, input_size: int = 288, *,
                 train: bool = False, augment: bool = True, box_jitter: int = 10, rotation: float = 15.0,
                 scale: tuple[float, float] = (0.5, 1.5), depth_margin: float = 0.05, depth_scale: float = 50.0,
                 zero_background: bool = False) -> None:
        if reader.opencv_axes:
            raise ConfigError("A2JDataset needs ITOP's own axes (ItopReader(..., opencv_axes=False))")
        self.reader, self.indices = reader, np.asarray(indices, dtype=np.int64)
        self.boxes = np.asarray(boxes, dtype=np.float64)
        if self.boxes.shape != (len(self.indices), 4):
            raise DataError(f"{self.boxes.shape} boxes for {len(self.indices)} frames", field="boxes")
        self.size, self.train, self.augment = int(input_size), bool(train), bool(augment)
        self.box_jitter, self.rotation, self.scale = int(box_jitter), float(rotation), tuple(scale)
        self.depth_margin, self.depth_scale, self.zero_background = depth_margin, depth_scale, zero_background

    def __len__(self) -> int:
        return len(self.indices)

    def depth(self, index: int) -> np.ndarray:
        """The ``(H, W)`` depth map (metres) of item ``index``."""
        return self.reader[int(self.indices[index])].depth.load() / 1000.0

    def frame_id(self, index: int) -> str:
        return str(self.reader.ids[int(self.indices[index])])

    def _box(self, index: int, rng: np.random.Generator | None) -> np.ndarray:
        box = self.boxes[index].copy()
        if rng is not None and self.box_jitter:
            w, h = self.reader.image_size
            box = box + rng.integers(-self.box_jitter, self.box_jitter + 1, size=4)
            box[[0, 2]] = box[[0, 2]].clip(0, w - 1)
            box[[1, 3]] = box[[1, 3]].clip(0, h - 1)
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                box = self.boxes[index].copy()
        return box

    def __getitem__(self, index: int) -> dict[str, Any]:
        frame = int(self.indices[index])
        rng = None
        if self.train and self.augment:
            rng = np.random.default_rng(np.random.randint(0, 2**63 - 1, dtype=np.int64))
        box = self._box(index, rng)
        angle = float(rng.uniform(-self.rotation, self.rotation)) if rng is not None else 0.0
        scale = float(rng.uniform(*self.scale)) if rng is not None else 1.0
        affine = crop_affine(box, self.size, angle, scale)
        kp2 = self.reader.keypoints_2d[frame].astype(np.float64)
        kp3 = self.reader.keypoints_3d[frame].astype(np.float64) / 1000.0  # mm -> m, ITOP axes
        item = preprocess(self.depth(index), kp2, kp3[:, 2], affine, self.size, self.depth_margin,
                          self.depth_scale, self.zero_background)
        image = torch.from_numpy(item["image"])[None].expand(3, -1, -1).contiguous()
        return {"image": image, "target_xy": torch.from_numpy(item["target_xy"]),
                "target_depth": torch.from_numpy(item["target_depth"]),
                "mean": torch.tensor(item["mean"], dtype=torch.float32),
                "affine": torch.from_numpy(affine.astype(np.float32)),
                "joints_2d": torch.from_numpy(kp2.astype(np.float32)),
                "joints_3d": torch.from_numpy(kp3.astype(np.float32)), "index": index}


def build_dataset(recipe: A2JRecipe, split: Literal["train", "test"], quiet: bool = True) -> A2JDataset:
    """The recipe's training (augmented) or test :class:`A2JDataset`."""
    d, a = recipe.data, recipe.a2j
    reader, indices, boxes = read_split(recipe, split, quiet)
    return A2JDataset(reader, indices, boxes, a.input_size, train=split == "train", augment=d.augment,
                      box_jitter=d.box_jitter, rotation=d.rotation, scale=d.scale, depth_margin=a.depth_margin,
                      depth_scale=a.depth_scale, zero_background=a.zero_background)


# ------------------------------------------------------------------------------------------------ the loss
def a2j_loss(cls: torch.Tensor, offset: torch.Tensor, depth: torch.Tensor, anchors: torch.Tensor,
             target_xy: torch.Tensor, target_depth: torch.Tensor, *, anchor_weight: float = 1.0,
             regress_weight: float = 3.0, xy_weight: float = 0.5, beta_xy: float = 1.0, beta_depth: float = 3.0
             ) -> dict[str, torch.Tensor]:
    """A2J's loss (module docstring), fp32.

    Args:
        cls ``(B, N, J)``, offset ``(B, N, J, 2)``, depth ``(B, N, J)``: the heads; anchors ``(N, 2)``;
        target_xy ``(B, J, 2)`` ``(row, col)``; target_depth ``(B, J)``.

    Returns:
        ``loss = anchor_weight L_anchor + regress_weight L_reg``, ``loss_anchor``, ``loss_reg = xy_weight loss_xy
        + loss_depth``, ``loss_xy``, ``loss_depth`` (each a mean over joints (and coordinates), averaged over the
        batch) and the decoded ``xy`` / ``pred_depth``.
    """
    dec = a2j_decode(cls, offset, depth, anchors)
    txy, td = target_xy.float(), target_depth.float()
    loss_anchor = F.smooth_l1_loss(dec["anchor_xy"], txy, beta=beta_xy)
    loss_xy = F.smooth_l1_loss(dec["xy"], txy, beta=beta_xy)
    loss_depth = F.smooth_l1_loss(dec["depth"], td, beta=beta_depth)
    loss_reg = xy_weight * loss_xy + loss_depth
    return {"loss": anchor_weight * loss_anchor + regress_weight * loss_reg, "loss_anchor": loss_anchor,
            "loss_reg": loss_reg, "loss_xy": loss_xy, "loss_depth": loss_depth, "xy": dec["xy"],
            "pred_depth": dec["depth"]}


# ---------------------------------------------------------------------------------------------- the method
class A2JMethod(nn.Module):
    """Model + loss: ``forward(batch)`` (``image``, ``target_xy``, ``target_depth``) returns ``loss`` and its
    terms (and the batch's mean 2D error in crop pixels, ``px_error``); :meth:`predict` gives the decoded
    ``(row, col)`` and network-unit depths."""

    def __init__(self, model: A2J, cfg: A2JConfig | None = None) -> None:
        super().__init__()
        self.model, self.cfg = model, cfg or A2JConfig()

    def predict(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.predict(image)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        c = self.cfg
        out = self.model(batch["image"])
        terms = a2j_loss(out["cls"], out["offset"], out["depth"], out["anchors"], batch["target_xy"],
                         batch["target_depth"], anchor_weight=c.anchor_weight, regress_weight=c.regress_weight,
                         xy_weight=c.xy_weight, beta_xy=c.beta_xy, beta_depth=c.beta_depth)
        err = (terms.pop("xy").detach() - batch["target_xy"].float()).norm(dim=-1).mean()
        terms.pop("pred_depth")
        return {**terms, "px_error": err}


def build_method(recipe: A2JRecipe, weights: str | Path | None = None, quiet: bool = True) -> A2JMethod:
    """The recipe's :class:`A2JMethod`: the model from ``model.name`` at ``a2j.input_size``, its backbone from
    ``model.init`` (report printed unless ``quiet``), or everything from trained ``weights``."""
    from humanvision.models import create_model

    m = recipe.model
    model = create_model(m.name, input_size=recipe.a2j.input_size, num_joints=NUM_JOINTS, **m.args)
    if weights is None and m.init is not None:
        report = model.init_backbone(m.init, m.init_encoder)
        if not quiet and int(os.environ.get("RANK", "0")) == 0:
            print(report.summary(), flush=True)
    method = A2JMethod(model, recipe.a2j)
    if weights is not None:
        load_state_strict(method, weights)
    return method


# ----------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def _predict_all(method: A2JMethod, dataset: A2JDataset, batch_size: int, device: torch.device, precision: str,
                 num_workers: int) -> dict[str, np.ndarray]:
    from humanvision.engine.precision import autocast

    scale = method.cfg.depth_scale
    out: dict[str, list[np.ndarray]] = {"pred_3d": [], "gt_3d": [], "pred_2d": [], "gt_2d": []}
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers):
        with autocast(device, precision):
            dec = method.predict(batch["image"].to(device))
        xy = crop_to_image(dec["xy"].float().cpu(), batch["affine"])
        z = dec["depth"].float().cpu().double() / scale + batch["mean"].double()[:, None]
        out["pred_3d"].append(itop_backproject(xy[..., 0], xy[..., 1], z).numpy())
        out["pred_2d"].append(xy.numpy())
        out["gt_3d"].append(batch["joints_3d"].double().numpy())
        out["gt_2d"].append(batch["joints_2d"].double().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def evaluate_a2j(method: A2JMethod, dataset: A2JDataset, eval_cfg: EvalConfig | None = None,
                 out_dir: str | Path | None = None, *, threshold: float | None = None,
                 device: str | torch.device | None = None, precision: str | None = None, num_workers: int = 0
                 ) -> dict[str, Any]:
    """mAP@``threshold`` (percent; default ``a2j.threshold`` = 0.10 m) over the 15 joints and the per-joint
    accuracies (``acc_<joint>``) of ``method`` on ``dataset``, plus ``mean_error`` (m) and ``num_frames``. With
    ``out_dir``: ``metrics.json`` (also ``per_joint``) and ``a2j.png`` (:func:`a2j_figure`)."""
    cfg = eval_cfg or EvalConfig()
    if len(dataset) == 0:
        raise DataError("no frames to evaluate", field="dataset")
    thr = method.cfg.threshold if threshold is None else float(threshold)
    device = torch.device(device) if device is not None else next(method.parameters()).device
    was_training = method.training
    method.eval().to(device)
    try:
        pred = _predict_all(method, dataset, cfg.batch_size, device, precision or cfg.precision, num_workers)
    finally:
        method.train(was_training)
    res = itop_map(pred["pred_3d"], pred["gt_3d"], threshold=thr)
    err = np.linalg.norm(pred["pred_3d"] - pred["gt_3d"], axis=-1)
    metrics: dict[str, Any] = {"mAP": res.map, **{f"acc_{k}": v for k, v in res.per_joint.items()},
                               "mean_error": float(err.mean()), "num_frames": len(dataset)}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps({**metrics, "per_joint": res.per_joint, "threshold": thr,
                                                      "count": res.count}, indent=2))
        if cfg.num_vis:
            from humanvision.data.io import write_image

            n = len(dataset)
            show = np.unique(np.linspace(0, n - 1, min(cfg.num_vis, n)).round().astype(int))
            write_image(out / "a2j.png", a2j_figure(dataset, show, pred["pred_2d"][show], err[show], thr))
    return metrics


def a2j_figure(dataset: A2JDataset, indices: Sequence[int], pred_2d: np.ndarray, errors: np.ndarray,
               threshold: float = 0.10) -> np.ndarray:
    """One tile per frame: the colourised depth map, its box (white), the true (green) and predicted (red)
    skeletons; the title gives the frame id and how many joints are within ``threshold``."""
    from humanvision.skeletons import get_skeleton
    from humanvision.viz import make_grid
    from humanvision.viz.draw import colorize_depth, draw_boxes, draw_skeleton

    sk = get_skeleton("itop15")
    green, red = (40, 220, 40), (235, 40, 40)
    tiles, titles = [], []
    for k, i in enumerate(indices):
        img = colorize_depth(dataset.depth(int(i)))
        img = draw_boxes(img, dataset.boxes[int(i)][None], color=(255, 255, 255), fmt="xyxy")
        gt = dataset.reader.keypoints_2d[int(dataset.indices[int(i)])]
        img = draw_skeleton(img, gt, sk, joint_colors=[green] * sk.num_joints, limb_colors=[green] * len(sk.limbs))
        img = draw_skeleton(img, pred_2d[k], sk, joint_colors=[red] * sk.num_joints, limb_colors=[red] * len(sk.limbs))
        tiles.append(img)
        titles.append(f"{dataset.frame_id(int(i))}: {int((errors[k] < threshold).sum())}/{len(errors[k])} "
                      f"< {threshold * 100:g} cm")
    return make_grid(tiles, ncols=min(3, len(tiles)), titles=titles)


def evaluate_weights(recipe: A2JRecipe, weights: str | Path, out_dir: str | Path | None = None,
                     device: str | torch.device | None = None, progress: bool = False) -> dict[str, Any]:
    """``humanvision eval`` of an A2J recipe: trained ``weights`` (run folder, checkpoint folder or
    ``model.safetensors``) on the recipe's test split."""
    method = build_method(recipe, weights=weights)
    dataset = build_dataset(recipe, "test", quiet=not progress)
    device = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    metrics = evaluate_a2j(method, dataset, recipe.eval, out_dir, device=device,
                           num_workers=recipe.train.num_workers)
    metrics["weights"] = str(weights)
    if out_dir is not None:
        path = Path(out_dir) / "metrics.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "weights": str(weights)}, indent=2))
    if progress:
        print(f"mAP@{recipe.a2j.threshold * 100:g}cm {metrics['mAP']:.2f} on {metrics['num_frames']} frames")
    return metrics


def export_onnx(recipe: A2JRecipe, weights: str | Path, out: str | Path, **kwargs: Any):
    """``humanvision export`` of an A2J recipe: the trained network with its anchor decoding as ONNX, with the
    contract of :func:`evaluate_a2j` (``data.test_box_pad``, ``a2j.depth_margin`` / ``zero_background`` /
    ``depth_scale``, ITOP's back-projection), read by :class:`humanvision.runtime.A2JPose`. ``kwargs``: those of
    :func:`humanvision.export.export_a2j_onnx`."""
    from humanvision.export import export_a2j_onnx

    method = build_method(recipe, weights=weights)
    return export_a2j_onnx(method, out, box_pad=recipe.data.test_box_pad, recipe=recipe.name, weights=weights,
                           **kwargs)


# ------------------------------------------------------------------------------------------------- training
def run_training(recipe: A2JRecipe, resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Train with the engine (Adam, StepLR per the recipe), evaluating every ``train.eval_every`` epochs on the
    test split into ``<output_dir>/eval`` (``metrics.json``, ``a2j.png``); ``best`` keeps the best mAP. Returns
    the fit summary."""
    from humanvision.config import save_config
    from humanvision.engine import Trainer, seed_everything

    seed_everything(recipe.train.seed)
    method = build_method(recipe, quiet=quiet)  # before any data work: a bad model or init file fails at once
    train_set = build_dataset(recipe, "train", quiet)
    test_set = build_dataset(recipe, "test", quiet)
    out = Path(recipe.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(recipe, out / "config.yaml")
    main_rank = int(os.environ.get("RANK", "0")) == 0
    cfg = recipe.train
    groups_fn: Callable[[nn.Module], list[dict]] | None = None
    if recipe.a2j.weight_decay_all:
        def groups_fn(model: nn.Module) -> list[dict]:
            params = [(n, q) for n, q in model.named_parameters() if q.requires_grad]
            return [{"name": "all", "params": [q for _, q in params], "param_names": [n for n, _ in params],
                     "weight_decay": cfg.weight_decay, "lr_scale": 1.0, "layer_id": 0}]

    def eval_fn(model: A2JMethod, epoch: int) -> dict[str, float]:
        m = evaluate_a2j(model, test_set, recipe.eval, out / "eval" if main_rank else None,
                         precision=trainer.choice.precision, num_workers=cfg.num_workers)
        return {k: float(v) for k, v in m.items() if isinstance(v, (int, float))}

    if not quiet and main_rank:
        print(f"A2J: {len(train_set)} training frames (fraction {recipe.data.train_fraction}), {len(test_set)} "
              f"test frames, {recipe.a2j.input_size}px crops, {len(method.model.anchors)} anchors", flush=True)
    trainer = Trainer(cfg, method, train_set, eval_fn=eval_fn, param_groups_fn=groups_fn)
    return trainer.fit(resume=resume or None)
