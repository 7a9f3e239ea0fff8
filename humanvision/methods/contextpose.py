"""**ContextPose** (Ma et al., "Context Modeling in 3D Human Pose Estimation: A Unified Perspective", CVPR 2021) on
top of the volumetric pipeline, readable top to bottom. Written from pose3d.md §3, §4.1 and §9 (seed:
ShirleyMaxx/ContextPose-PyTorch-release); no code is taken from it. Everything up to the volume (crops, 2D
features, ``process_features``, cuboid, unprojection, base points, the optimiser groups, MAE and VolumetricCE) is
the volumetric method's (:mod:`humanvision.methods.volumetric`); the data and the MPJPE tables are the algebraic
method's.

1. **Network** (§3.2): crop -> SimpleBaseline features -> ``Conv2d(C -> 32)`` -> one view unprojected into a
   ``volume_size``³ cuboid (2500 mm) about the base point, randomly rotated about the vertical axis in training ->
   :class:`~humanvision.models.contextpose.ContextPoseV2V` (the context module at ``volume_size / 4``) -> 3D
   soft-argmax with the grid's world coordinates, plus the global attention ``G (B, J, N)``.
2. **Limb-length prior** (§3.4.7): the mean and standard deviation of the 16 limb lengths (CP's limb list, the
   ``h36m17`` skeleton's limbs) over the ground-truth training frames, :func:`limb_statistics`, in a file with keys
   ``mean`` and ``std`` like CP's ``mean_and_std_limb_length.h5`` (HDF5 when h5py is installed, else ``.npz``;
   :func:`save_limb_statistics` / :func:`load_limb_statistics`). ``model.limb_statistics`` names a file; without
   one, training computes it from its training split and writes it into the run folder. The network keeps the
   statistics in its state dict, so evaluation needs no file.
3. **Global-attention target** (§3.5, :func:`ga_target`): ``G^_j(k) = softmax_k(-||p_k - X_j||² / (2 sigma²))``
   on the attention grid (:func:`attention_grid`), ``sigma = ga_sigma_voxels`` (2) aux spacings (317.5 mm).
4. **Loss** (§3.6, :func:`contextpose_loss`): ``MAE(0.1 X^, 0.1 X) + 0.01 VolumetricCE + 1e6 MSE(G, G^)`` on
   **absolute** world coordinates (no root subtraction for one view, as in CP), all in float32 / float64 outside
   autocast (the attention values are ~1e-3, the MSE ~1e-7; bf16 would round it away, §9).

The **monocular setting** (§3.1). Training: the frames of the training subjects with all their views, and a collate
(:func:`one_view_collate`) that keeps **one random camera per batch** (CP's collate), one available in every item
of the batch (a batch with no common camera, rare: S11's missing camera, takes a random available view per item);
the choice is a function of the first item's seeded draw, so it follows the engine's sampler seeds.
Validation (:class:`SingleViewCrops`): **every (frame, camera) pair is a sample** (CP's single-view dataset,
~4x the frames); MPJPE is averaged over these samples. The cuboid is centred on the **base point** of the volumetric
recipe (``model.base``): ``algebraic`` (CP: the pelvis of LT's *multi-view* algebraic model, a privileged input,
§9: not a purely monocular method), ``gt`` (the ground-truth pelvis) or ``gt_noisy`` (ground truth + Gaussian noise
of ``base_noise_mm`` per coordinate, fixed per frame). Whatever the source, the loss and MPJPE are on world
coordinates, and the reported MPJPE is pelvis-relative (§4.1).

Grid parity (§3.2, §9): ``model.kernel_spacing: cp`` builds the pairwise kernels with CP's spacing ``cuboid / (n -
1)`` (2500 / 15 = 166.67 mm) instead of the pooled grid's ``4 cuboid / (S - 1)`` (158.73 mm, ``pooled``);
``model.attention_grid: cp`` puts the attention target on CP's aux grid, whose point ``i`` is fine voxel ``4i``
(1.5 fine voxels off the centre of its pooled cell), ``pooled`` on the pooled-cell centres. Both default to CP.

Evaluation (:func:`evaluate_contextpose`): MPJPE relative to the pelvis (CP's number) and absolute, per action
(trials merged) and per subject, frame-weighted over the (frame, camera) samples, with ``count`` (samples) and
``frames``; ``bone_length_error`` (CP's ``LimbLengthError``: the mean over the 16 limbs of ``| ||pred limb|| -
||gt limb|| |``, mm) and ``base_pelvis_error``.

**MPI-INF-3DHP** (§4.2, §6; CP's 3DHP model is trained on Human3.6M only; ``eval.dataset: mpi_inf_3dhp``,
:func:`evaluate_3dhp_crops`). The test set in its official layout (``TS1``-``TS6``,
:class:`~humanvision.data.readers.MpiInf3dhpTest`), **valid frames only**, one view per frame
(:class:`ThreeDHPTestCrops`). The parts the brief leaves open (§3.7) are our choices, each a key of
:class:`ContextPoseEvalConfig` and stated in the output's ``protocol``:

* camera: a pinhole ``K`` per sequence from :data:`THREEDHP_TEST_CAMERAS` (``eval.intrinsics: table``; TS1-4 the
  studio camera, 2048 x 2048; TS5-6 the outdoor camera, 1920 x 1080, its lens distortion ignored), or fitted to the
  sequence's own ``annot2`` / ``annot3`` by least squares (``fit``); the output gives each sequence's mean
  reprojection error of ``annot3`` against ``annot2`` under the ``K`` used, a check of the table on the real files;
* frame of the volume: the camera frame turned so that the model's vertical axis points up (``x_world = R0
  x_cam``; for Human3.6M's z: ``(x, z, -y)``): the camera is taken as level, so the network sees the gravity-aligned
  volumes it was trained on (rotated about the vertical only). Predictions go back to the camera frame;
* crop: the square box about the frame's ``annot2`` joints, side ``eval.bbox_scale`` (1.2) x the longer side (LT's
  integer ``scale_bbox``), resized to the input size;
* cuboid centre (``eval.root``): ``gt``, the ground-truth pelvis of ``annot3`` (default; metric and on the image,
  unlike the height-normalised ``univ_annot3``), ``gt_noisy`` (+ N(0, ``root_noise_mm``) per coordinate, fixed per
  (sequence, frame) by ``root_seed``), or ``file`` (``root_file``: an ``.npz`` with ``sequences``, ``frames`` (0-based)
  and ``pelvis (N, 3)`` camera-frame mm, matched explicitly), e.g. a root-depth network's estimates. With ``gt`` the
  numbers are root-relative accuracies given a privileged root, as CP's Human3.6M numbers are given LT's multi-view
  pelvis (§9);
* joints: CP's 17 Human3.6M joints -> the 17 test joints by :data:`H36M17_TO_3DHP17` (a table: 3DHP's ``neck`` is
  Human3.6M's thorax, its ``head`` Human3.6M's neck/nose joint), then the official 14 (head top .. ankles) of
  :func:`humanvision.metrics.pose3d.evaluate_3dhp`: PCK@150 mm and AUC over 0:5:150 mm, root-relative at the pelvis,
  against ``univ_annot3`` (``eval.ground_truth``; ``annot3`` also possible), per subset (GS / noGS / Outdoor / ALL)
  and per sequence. ``predictions.npz`` (camera frame, test-joint order) can go to the official MATLAB script.

Recipe: :class:`ContextPoseRecipe`, marked ``triangulation: contextpose`` (``configs/contextpose_*.yaml``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from humanvision.config import must_exist
from humanvision.engine.checkpoint import load_state_checked
from humanvision.errors import ConfigError, DataError
from humanvision.geometry.volume import aux_volume, coord_volume
from humanvision.methods import algebraic as alg
from humanvision.methods import volumetric as vol
from humanvision.methods.algebraic import ROOT, DataConfig, EvalConfig
from humanvision.methods.volumetric import (
    LearningRates,
    VolumetricModelConfig,
    VolumetricTrainConfig,
    VolumetricTriangulation,
    WithBasePoints,
    mae_loss,
    volumetric_ce_loss,
)
from humanvision.models.contextpose import ContextPoseV2V, h36m_limbs

__all__ = [
    "H36M17_TO_3DHP17",
    "LIMB_STATISTICS_FILE",
    "THREEDHP_TEST_CAMERAS",
    "ContextPose",
    "ContextPoseEvalConfig",
    "ContextPoseLossConfig",
    "ContextPoseModelConfig",
    "ContextPoseRecipe",
    "SingleViewCrops",
    "ThreeDHPTestCrops",
    "attention_grid",
    "bone_length_error",
    "build_datasets",
    "build_method",
    "contextpose_loss",
    "default_limb_statistics_file",
    "eval_unchecked",
    "evaluate_3dhp_crops",
    "evaluate_contextpose",
    "evaluate_weights",
    "fit_intrinsics",
    "format_3dhp_table",
    "ga_target",
    "global_attention_loss",
    "is_contextpose_recipe",
    "level_rotation",
    "limb_lengths",
    "limb_statistics",
    "load_limb_statistics",
    "load_recipe",
    "load_weights_into",
    "one_view_collate",
    "run_training",
    "save_limb_statistics",
]

LIMB_STATISTICS_FILE = "mean_and_std_limb_length"  # CP's name, + .h5 (or .npz without h5py)

#: The h36m17 joint (CP's 17, LT order) giving each of the 17 MPI-INF-3DHP test joints (``mpi_inf_3dhp17``,
#: univ_annot3 order): head top 9, neck <- thorax 8, right shoulder / elbow / wrist 12 11 10, left 13 14 15, right
#: hip / knee / ankle 2 1 0, left 3 4 5, pelvis 6, spine 7, head <- neck/nose 16. Same names but for 3DHP's
#: ``neck`` (Human3.6M's thorax) and ``head`` (Human3.6M's neck/nose joint, 16).
H36M17_TO_3DHP17: tuple[int, ...] = (9, 8, 12, 11, 10, 13, 14, 15, 2, 1, 0, 3, 4, 5, 6, 7, 16)

#: Pinhole intrinsics of the 3DHP test sequences: ``(width, height), (fx, fy), (cx, cy)`` in pixels. TS1-TS4: the
#: studio's chest-height camera (camera 8 of the training rig), 2048 x 2048; TS5-TS6: the outdoor camera, 1920 x
#: 1080 (its radial / tangential distortion, about -0.28 / 0.13 / -0.05 and ~1e-3, is not modelled). The values the
#: public 3DHP loaders use; pose3d.md does not list them, so :func:`evaluate_3dhp_crops` reports the reprojection
#: error of each sequence's ``annot3`` against its ``annot2`` under them (``eval.intrinsics: fit`` fits them).
THREEDHP_TEST_CAMERAS: dict[int, tuple[tuple[int, int], tuple[float, float], tuple[float, float]]] = {
    **{n: ((2048, 2048), (1500.172, 1500.837), (1017.387, 1043.032)) for n in (1, 2, 3, 4)},
    **{n: ((1920, 1080), (1683.98345952, 1672.59370772), (939.85754016, 560.140743168)) for n in (5, 6)},
}


# ----------------------------------------------------------------------------------------------- the recipe
@dataclass
class ContextPoseModelConfig(VolumetricModelConfig):
    """The volumetric model's keys (the 2D network, ``feature_channels``, ``cuboid_side``, ``volume_size`` (a
    multiple of 32; the context module runs at ``volume_size / 4``), ``rotation``, ``base`` ...) plus the context
    module's: ``limb_statistics`` (a ``mean`` / ``std`` file, see :func:`load_limb_statistics`; None: computed from
    the training split), ``temperature`` (T, 1500), ``kernel_spacing`` (``cp`` | ``pooled``), ``attention_grid``
    (``cp`` | ``pooled``), ``cache_kernels`` (keep the ``16 N²`` kernels, 1.07 GB at 16³; false: rebuild them in
    blocks of ``kernel_chunk`` rows every step), ``init_std`` (the N(0, std) conv init, 1e-3), ``context`` (false: the same network with a plain residual
    block instead of the context module, no attention loss and no limb statistics: the ablation). The aggregation
    is irrelevant for one view (every method but ``conf`` is the identity)."""

    limb_statistics: Path | None = must_exist()
    temperature: float = 1500.0
    kernel_spacing: Literal["cp", "pooled"] = "cp"
    attention_grid: Literal["cp", "pooled"] = "cp"
    cache_kernels: bool = True
    kernel_chunk: int = 1024
    init_std: float = 1e-3
    context: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.aggregation in ("conf", "conf_norm"):
            raise ConfigError(f"model.aggregation: ContextPose sees one view; {self.aggregation!r} would train a "
                              "confidence head for nothing (use softmax, the identity for one view)")
        for key in ("temperature", "init_std"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"model.{key}: must be > 0, got {getattr(self, key)}")
        if self.kernel_chunk < 1:
            raise ConfigError(f"model.kernel_chunk: must be >= 1, got {self.kernel_chunk}")


@dataclass
class ContextPoseLossConfig:
    """§3.6: ``scale_keypoints_3d`` (mm -> cm, 0.1), ``ce_weight`` (VolumetricCE, 0.01), ``ga_weight`` (the
    global-attention MSE, 1e6), ``ga_sigma_voxels`` (the target's sigma in aux-grid spacings, 2)."""

    scale_keypoints_3d: float = 0.1
    ce_weight: float = 0.01
    ga_weight: float = 1.0e6
    ga_sigma_voxels: float = 2.0

    def __post_init__(self) -> None:
        for key in ("scale_keypoints_3d", "ga_sigma_voxels"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"loss.{key}: must be > 0, got {getattr(self, key)}")
        for key in ("ce_weight", "ga_weight"):
            if not getattr(self, key) >= 0:
                raise ConfigError(f"loss.{key}: must be >= 0, got {getattr(self, key)}")


@dataclass
class ContextPoseEvalConfig(EvalConfig):
    """The algebraic recipe's ``eval`` keys (``batch_size`` ...) plus the evaluation set: ``dataset``: ``h36m`` (the
    recipe's validation subjects, every (frame, camera)) or ``mpi_inf_3dhp`` (the 3DHP test set at ``threedhp_root``,
    the folder holding ``TS1`` .. ``TS6``; ``sequences``; see the module docstring for ``root``, ``root_noise_mm``,
    ``root_seed``, ``root_file``, ``bbox_scale``, ``intrinsics`` and ``ground_truth``). The two paths are checked when
    the evaluation reads them, not when the recipe loads (training with this recipe does not need them)."""

    dataset: Literal["h36m", "mpi_inf_3dhp"] = "h36m"
    threedhp_root: Path | None = None
    sequences: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    root: Literal["gt", "gt_noisy", "file"] = "gt"
    root_noise_mm: float = 0.0
    root_seed: int = 0
    root_file: Path | None = None
    bbox_scale: float = 1.2
    intrinsics: Literal["table", "fit"] = "table"
    ground_truth: Literal["univ_annot3", "annot3"] = "univ_annot3"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.sequences or any(n not in THREEDHP_TEST_CAMERAS for n in self.sequences):
            raise ConfigError(f"eval.sequences: test sequences among 1..6, got {list(self.sequences)}")
        if len(set(self.sequences)) != len(self.sequences):
            raise ConfigError(f"eval.sequences: a sequence is listed twice: {list(self.sequences)}")
        if not self.bbox_scale > 0:
            raise ConfigError(f"eval.bbox_scale: must be > 0, got {self.bbox_scale}")
        if not (self.root_noise_mm >= 0 and np.isfinite(self.root_noise_mm)):
            raise ConfigError(f"eval.root_noise_mm: must be >= 0, got {self.root_noise_mm}")
        if (self.root == "gt_noisy") != (self.root_noise_mm > 0):
            raise ConfigError("eval.root_noise_mm: > 0 with root: gt_noisy (and only then), got "
                              f"{self.root_noise_mm} with root: {self.root}")
        if (self.root == "file") != (self.root_file is not None):
            raise ConfigError(f"eval.root_file: set with root: file (and only then); root is {self.root!r}")
        if self.dataset == "mpi_inf_3dhp" and self.threedhp_root is None:
            raise ConfigError("eval.threedhp_root: the MPI-INF-3DHP test folder (TS1 .. TS6) is needed for "
                              "dataset: mpi_inf_3dhp")


@dataclass
class ContextPoseRecipe:
    """``triangulation: contextpose`` marks the recipe (:func:`is_contextpose_recipe`). ``data``: the algebraic
    recipe's section; ``eval``: its section (``eval.baselines`` / ``ransac_*`` are not used) plus the evaluation set
    (:class:`ContextPoseEvalConfig`: Human3.6M or MPI-INF-3DHP); ``lr_groups``: the volumetric recipe's Adam groups
    (CP: backbone 1e-4, process_features and the V2V 1e-3); ``train``: the engine's keys plus
    ``freeze_backbone_epochs`` (:class:`~humanvision.methods.volumetric.VolumetricTrainConfig`)."""

    name: str = "contextpose"
    triangulation: Literal["contextpose"] = "contextpose"
    model: ContextPoseModelConfig = field(default_factory=ContextPoseModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: ContextPoseLossConfig = field(default_factory=ContextPoseLossConfig)
    lr_groups: LearningRates = field(default_factory=LearningRates)
    train: VolumetricTrainConfig = field(default_factory=VolumetricTrainConfig)
    eval: ContextPoseEvalConfig = field(default_factory=ContextPoseEvalConfig)

    def __post_init__(self) -> None:
        if self.triangulation != "contextpose":
            raise ConfigError(f"triangulation: expected 'contextpose', got {self.triangulation!r}")


def is_contextpose_recipe(source: Any) -> bool:
    """True for a :class:`ContextPoseRecipe`, or a mapping / YAML file with ``triangulation: contextpose``."""
    from humanvision.config import recipe_mapping

    return isinstance(source, ContextPoseRecipe) or recipe_mapping(source).get("triangulation") == "contextpose"


def load_recipe(path: str | Path | dict, overrides: Sequence[str] = (), unchecked: tuple[str, ...] = ()
                ) -> ContextPoseRecipe:
    """Load and validate a ``configs/contextpose_*.yaml`` recipe (errors name the key)."""
    from humanvision.config import load_config

    return load_config(path, ContextPoseRecipe, list(overrides), unchecked=unchecked)


# ------------------------------------------------------------------------------------------ limb statistics
def limb_lengths(points_3d: np.ndarray | torch.Tensor, limbs: Sequence[tuple[int, int]] | None = None):
    """``(..., J, 3)`` -> ``(..., E)`` limb lengths (numpy or torch, as given); default CP's 16 limbs."""
    limbs = h36m_limbs() if limbs is None else limbs
    a = [u for u, _ in limbs]
    b = [v for _, v in limbs]
    d = points_3d[..., a, :] - points_3d[..., b, :]
    if isinstance(d, torch.Tensor):
        return torch.linalg.vector_norm(d, dim=-1)
    return np.linalg.norm(d, axis=-1)


def limb_statistics(points_3d: np.ndarray, limbs: Sequence[tuple[int, int]] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """CP's ``limb_length.py`` (§3.4.7): ``points_3d (N, J, 3)`` ground-truth world mm of the training frames ->
    ``(mean (E,), std (E,))`` float64 of each limb's length over the frames (``std`` with ``ddof = 0``, numpy's
    default)."""
    pts = np.asarray(points_3d, dtype=np.float64)
    if pts.ndim != 3 or pts.shape[-1] != 3 or len(pts) == 0:
        raise DataError(f"limb statistics need (N >= 1, J, 3) points, got {pts.shape}", field="keypoints_3d")
    if not np.isfinite(pts).all():
        raise DataError("limb statistics: non-finite keypoints", field="keypoints_3d")
    lengths = limb_lengths(pts, limbs)
    return lengths.mean(0), lengths.std(0)


def _have_h5py() -> bool:
    try:
        import h5py  # noqa: F401
    except ImportError:
        return False
    return True


def default_limb_statistics_file(directory: str | Path) -> Path:
    """``directory/mean_and_std_limb_length.h5`` when h5py is installed, else ``.npz``."""
    return Path(directory) / (LIMB_STATISTICS_FILE + (".h5" if _have_h5py() else ".npz"))


def save_limb_statistics(path: str | Path, mean: np.ndarray, std: np.ndarray) -> Path:
    """Write ``mean`` / ``std`` ``(E,)`` as datasets of an HDF5 file (``.h5`` / ``.hdf5``, CP's format) or arrays
    of an ``.npz``."""
    path = Path(path)
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".h5", ".hdf5"):
        if not _have_h5py():
            raise ConfigError(f"{path}: writing HDF5 needs h5py (pip install 'humanvision[3d]'); or use .npz")
        import h5py

        with h5py.File(path, "w") as h:
            h.create_dataset("mean", data=mean)
            h.create_dataset("std", data=std)
    elif path.suffix == ".npz":
        np.savez(path, mean=mean, std=std)
    else:
        raise ConfigError(f"{path}: limb statistics are written as .h5 / .hdf5 or .npz")
    return path


def load_limb_statistics(path: str | Path, num_limbs: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Read ``(mean (E,), std (E,))`` float64 from CP's ``mean_and_std_limb_length.h5`` (keys ``mean``, ``std``) or
    an ``.npz`` with the same keys. Errors name the file and key."""
    path = Path(path)
    f = str(path)
    if not path.is_file():
        raise DataError("limb statistics file not found", file=f)
    data: dict[str, np.ndarray] = {}
    if path.suffix in (".h5", ".hdf5"):
        if not _have_h5py():
            raise DataError("reading an HDF5 file needs h5py (pip install 'humanvision[3d]'); or convert it to .npz",
                            file=f)
        import h5py

        try:
            with h5py.File(path, "r") as h:
                for key in ("mean", "std"):
                    if key in h:
                        data[key] = np.asarray(h[key][()], dtype=np.float64)
        except OSError as e:
            raise DataError(f"not a readable HDF5 file ({e})", file=f) from None
    elif path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: np.asarray(z[k], dtype=np.float64) for k in ("mean", "std") if k in z.files}
        except (OSError, ValueError) as e:
            raise DataError(f"not a readable .npz file ({e})", file=f) from None
    else:
        raise DataError("expected an .h5 / .hdf5 or .npz file with keys mean and std", file=f)
    for key in ("mean", "std"):
        if key not in data:
            raise DataError("missing key", file=f, field=key)
        v = data[key].reshape(-1) if data[key].size == num_limbs else data[key]
        if v.shape != (num_limbs,):
            raise DataError(f"shape {data[key].shape}, expected ({num_limbs},) (one value per limb)", file=f,
                            field=key)
        bad = (v <= 0) if key == "mean" else (v < 0)
        if not np.isfinite(v).all() or bad.any():
            raise DataError("values must be finite and > 0 (mean) / >= 0 (std)", file=f, field=key)
        data[key] = v
    return data["mean"], data["std"]


# ------------------------------------------------------------------------- attention target, loss, metric
def attention_grid(base: torch.Tensor, side: float, size: int, *, angle: torch.Tensor | None = None,
                   axis: int = 2, mode: Literal["cp", "pooled"] = "cp") -> torch.Tensor:
    """The world points of the attention level ``(B, n, n, n, 3)``, ``n = size / 4``, in the volume's order:
    ``cp``: CP's aux grid (:func:`~humanvision.geometry.volume.aux_volume`: point ``i`` = fine voxel ``4i``);
    ``pooled``: the centres of the pooled 4³ cells of the fine grid (fine voxel ``4i + 1.5``). Same rotation."""
    if size % 4:
        raise ValueError(f"attention_grid: size must be divisible by 4, got {size}")
    if mode == "cp":
        return aux_volume(base, side, size, size // 4, angle=angle, axis=axis)
    if mode == "pooled":
        fine = coord_volume(base, side, size, angle=angle, axis=axis)  # (B, S, S, S, 3)
        return F.avg_pool3d(fine.permute(0, 4, 1, 2, 3), 4).permute(0, 2, 3, 4, 1)
    raise ValueError(f"attention_grid: mode 'cp' or 'pooled', got {mode!r}")


def ga_target(aux_coords: torch.Tensor, gt: torch.Tensor, sigma: float) -> torch.Tensor:
    """CP's ``calc_ga_mask`` (§3.5): ``aux_coords (B, n, n, n, 3)`` (or ``(B, N, 3)``), ``gt (B, J, 3)`` world
    mm -> ``(B, J, N)``, ``softmax_k(-||p_k - X_j||² / (2 sigma²))`` (at least float32, outside autocast)."""
    b = gt.shape[0]
    dtype = torch.promote_types(torch.promote_types(aux_coords.dtype, gt.dtype), torch.float32)
    with torch.autocast(gt.device.type, enabled=False):
        pts = aux_coords.reshape(b, -1, 3).to(dtype)
        d2 = ((gt.to(dtype)[:, :, None, :] - pts[:, None, :, :]) ** 2).sum(-1)  # (B, J, N)
        return torch.softmax(-d2 / (2.0 * float(sigma) ** 2), dim=-1)


def global_attention_loss(attention: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
                          ) -> torch.Tensor:
    """``nn.MSELoss`` over ``B x J x N`` of the attention ``G`` and the target ``G^`` in float32 (§3.5); with
    ``valid (B, J)`` the mean runs over the valid joints only (all of them on Human3.6M: CP's plain mean)."""
    with torch.autocast(attention.device.type, enabled=False):
        d = (attention.float() - target.float()) ** 2
        if valid is None:
            return d.mean()
        m = valid.to(d.dtype)[..., None]
        return (d * m).sum() / (m.sum() * d.shape[-1]).clamp_min(1.0)


def contextpose_loss(pred: torch.Tensor, gt: torch.Tensor, probs: torch.Tensor, coords: torch.Tensor,
                     attention: torch.Tensor, attention_coords: torch.Tensor, valid: torch.Tensor | None = None, *,
                     scale_keypoints_3d: float = 0.1, ce_weight: float = 0.01, ga_weight: float = 1.0e6,
                     ga_sigma: float = 317.46) -> dict[str, torch.Tensor]:
    """CP's total loss (§3.6) on absolute world coordinates: ``pred``, ``gt (B, J, 3)`` mm, ``probs (B, J, D, H, W)``
    softmaxed volumes on ``coords (B, D, H, W, 3)``, the attention ``(B, J, N)`` on ``attention_coords``. Returns
    ``loss = mae + ce_weight ce + ga_weight ga`` and the three terms (float32 / float64, outside autocast);
    ``attention`` None (no context module): ``ga = 0``."""
    with torch.autocast(pred.device.type, enabled=False):
        s = float(scale_keypoints_3d)
        mae = mae_loss(pred.double() * s, gt.double() * s, valid)
        ce = volumetric_ce_loss(probs.float(), coords, gt, valid)
        ga = (pred.new_zeros((), dtype=torch.float32) if attention is None else  # no context module
              global_attention_loss(attention, ga_target(attention_coords, gt, ga_sigma), valid))
        loss = mae.float() + float(ce_weight) * ce.float() + float(ga_weight) * ga
    return {"loss": loss, "loss_mae": mae.float(), "loss_ce": ce.float(), "loss_ga": ga}


def bone_length_error(pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor,
                      limbs: Sequence[tuple[int, int]] | None = None):
    """CP's ``LimbLengthError`` per sample: ``mean_e | ||pred limb e|| - ||gt limb e|| |`` over the limbs (default
    CP's 16), ``(N, J, 3)`` -> ``(N,)`` (mm)."""
    d = limb_lengths(pred, limbs) - limb_lengths(gt, limbs)
    return d.abs().mean(-1) if isinstance(d, torch.Tensor) else np.abs(d).mean(-1)


# ------------------------------------------------------------------------------------------------- the model
class ContextPose(VolumetricTriangulation):
    """The volumetric method with :class:`~humanvision.models.contextpose.ContextPoseV2V` as ``volume_net`` and CP's
    loss. ``predict`` adds ``attention (B, J, N)`` and ``attention_coords (B, n, n, n, 3)``; ``forward(batch)``
    returns the engine's loss dict (the batch of :class:`WithBasePoints`, one or more views)."""

    def __init__(self, backbone: torch.nn.Module, *, feature_channels: int = 32, cuboid_side: float = 2500.0,
                 volume_size: int = 64, volume_multiplier: float = 1.0, rotation: bool = True,
                 vertical_axis: int = 2, limb_mean: np.ndarray | None = None, limb_std: np.ndarray | None = None,
                 temperature: float = 1500.0, kernel_spacing: str = "cp", attention_grid: str = "cp",
                 cache_kernels: bool = True, kernel_chunk: int = 1024, init_std: float = 1e-3,
                 scale_keypoints_3d: float = 0.1, ce_weight: float = 0.01, ga_weight: float = 1.0e6,
                 ga_sigma_voxels: float = 2.0, context: bool = True) -> None:
        super().__init__(backbone, feature_channels=feature_channels, cuboid_side=cuboid_side,
                         volume_size=volume_size, aggregation="softmax", volume_multiplier=volume_multiplier,
                         rotation=rotation, vertical_axis=vertical_axis, scale_keypoints_3d=scale_keypoints_3d,
                         ce_weight=ce_weight)
        if volume_size % 4:
            raise ConfigError(f"model.volume_size: divisible by 4 (the context module runs at a quarter), got "
                              f"{volume_size}")
        if attention_grid not in ("cp", "pooled"):
            raise ConfigError(f"model.attention_grid: 'cp' or 'pooled', got {attention_grid!r}")
        limb_mean = None if limb_mean is None else torch.as_tensor(np.asarray(limb_mean), dtype=torch.float32)
        limb_std = None if limb_std is None else torch.as_tensor(np.asarray(limb_std), dtype=torch.float32)
        self.volume_net = ContextPoseV2V(feature_channels, self.num_joints, h36m_limbs(), limb_mean, limb_std,
                                         cuboid_side=cuboid_side, temperature=temperature,
                                         kernel_spacing=kernel_spacing, cache_kernels=cache_kernels,
                                         kernel_chunk=kernel_chunk, init_std=init_std, context=context)
        self.attention_grid = attention_grid
        self.ga_weight = float(ga_weight)
        # sigma: ga_sigma_voxels spacings of the attention grid (4 fine voxels: CP's 2 x 158.73 = 317.46 mm)
        self.ga_sigma = float(ga_sigma_voxels) * 4.0 * self.cuboid_side / (self.volume_size - 1)

    @property
    def limb_statistics_set(self) -> bool:
        """Whether the context module has its limb statistics (always true without the module)."""
        ctx = self.volume_net.context
        return ctx is None or bool(torch.isfinite(ctx.limb_mean).all())

    def set_limb_statistics(self, mean, std) -> None:
        self.volume_net.set_limb_statistics(mean, std)

    def predict(self, images: torch.Tensor, proj: torch.Tensor, base_point: torch.Tensor,
                view_mask: torch.Tensor | None = None, angle: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        """As :meth:`VolumetricTriangulation.predict` (``keypoints_3d``, ``volumes`` softmaxed, ``coord_volumes``,
        ``angle``) plus ``attention (B, J, N)`` float32 and ``attention_coords (B, n, n, n, 3)`` float64 (the
        grid of the attention target, rotated like the volume)."""
        volume, geo = self.aggregated_volume(images, proj, base_point, view_mask, angle)
        logits, attention = self.volume_net(volume)
        keypoints, probs = self.soft_argmax(logits, geo)
        grid = None
        if attention is not None:  # the attention target's grid, rotated like the volume
            with torch.autocast(images.device.type, enabled=False):
                grid = attention_grid(geo["base"], self.cuboid_side, self.volume_size, angle=geo["angle"].double(),
                                      axis=self.vertical_axis, mode=self.attention_grid)
        return {"keypoints_3d": keypoints, "volumes": probs, "coord_volumes": geo["coords"], "angle": geo["angle"],
                "attention": None if attention is None else attention.float(), "attention_coords": grid}

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = self.predict(batch["images"], batch["proj"], batch["base_point"], batch.get("view_mask"))
        pred, gt = out["keypoints_3d"], batch["keypoints_3d"].to(out["keypoints_3d"])
        valid = batch.get("keypoints_3d_valid")
        losses = contextpose_loss(pred, gt, out["volumes"], out["coord_volumes"], out["attention"],
                                  out["attention_coords"], valid, scale_keypoints_3d=self.scale_keypoints_3d,
                                  ce_weight=self.ce_weight, ga_weight=self.ga_weight, ga_sigma=self.ga_sigma)
        with torch.no_grad():
            err = torch.linalg.vector_norm(pred - gt, dim=-1)  # mm
            rel = torch.linalg.vector_norm((pred - pred[:, ROOT:ROOT + 1]) - (gt - gt[:, ROOT:ROOT + 1]), dim=-1)
            bone = bone_length_error(pred, gt)
        return {"loss": losses["loss"], **{k: v.detach() for k, v in losses.items() if k != "loss"},
                "mpjpe_absolute": err.mean().float(), "mpjpe_relative": rel.mean().float(),
                "bone_length_error": bone.mean().float()}


def load_weights_into(method: ContextPose, path: str | Path) -> None:
    """Initialise ``method`` from ``path`` (a run or checkpoint folder, or a file):

    * a run of this method (``volume_net.mid_res.attention.*``): everything, strictly (the limb statistics too);
    * an LT volumetric checkpoint, or CP's ``backbone_weights.pth`` (LT key names under ``module.backbone.``):
      the 2D network only (:func:`~humanvision.methods.volumetric.convert_lt_checkpoint`); CP trains the rest
      from scratch;
    * otherwise :func:`humanvision.methods.volumetric.load_weights_into`'s 2D sources (an algebraic run, a
      top-down run, a 2D weights file). A volumetric run's V2V does not fit this network: a
      :class:`DataError` naming the file and key."""
    from humanvision.engine.checkpoint import weights_file
    from humanvision.models.weights import read_checkpoint

    file = weights_file(path, "model.weights")
    state = read_checkpoint(file)
    if any(k.startswith("backbone.layer1.") for k in state):  # LT key names (our 2D network nests its ResNet)
        state = {k: v for k, v in state.items() if k.startswith("backbone.")}
        converted, _ = vol.convert_lt_checkpoint(state, str(file))
        sub = {k.removeprefix("backbone."): v for k, v in converted.items() if k.startswith("backbone.")}
        load_state_checked(method.backbone, sub, str(file),  # the final layer is frozen and unused (§2.4.1)
                          may_miss=("head.final_layer.weight", "head.final_layer.bias", "num_batches_tracked"))
        return
    vol.load_weights_into(method, file)


def build_method(recipe: ContextPoseRecipe, weights: str | Path | None = None) -> ContextPose:
    """The recipe's 2D network (from the registry), ``process_features``, ContextPose-V2V and loss; the limb
    statistics from ``model.limb_statistics`` when set, then ``weights`` (default ``model.weights``; a run of this
    method brings its own statistics)."""
    from humanvision.models import create_model

    m = recipe.model
    try:
        backbone = create_model(m.backbone, skeleton=m.skeleton, input_size=(m.input_size, m.input_size), **m.args)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"model ({m.backbone}, args {m.args}): {e}") from None
    mean = std = None
    if m.limb_statistics is not None:
        mean, std = load_limb_statistics(m.limb_statistics, len(h36m_limbs()))
    lo = recipe.loss
    method = ContextPose(
        backbone, feature_channels=m.feature_channels, cuboid_side=m.cuboid_side, volume_size=m.volume_size,
        volume_multiplier=m.volume_multiplier, rotation=m.rotation, vertical_axis=m.vertical_axis,
        limb_mean=mean, limb_std=std, temperature=m.temperature, kernel_spacing=m.kernel_spacing,
        attention_grid=m.attention_grid, cache_kernels=m.cache_kernels, kernel_chunk=m.kernel_chunk,
        init_std=m.init_std, scale_keypoints_3d=lo.scale_keypoints_3d, ce_weight=lo.ce_weight,
        ga_weight=lo.ga_weight, ga_sigma_voxels=lo.ga_sigma_voxels, context=m.context)
    w = weights if weights is not None else m.weights
    if w is not None:
        load_weights_into(method, w)
    return method


# ------------------------------------------------------------------------------------------------------ data
class TrainFrames(Dataset):
    """The training frames (:class:`WithBasePoints`, all views) plus ``view_draw``, a uniform number from the
    sample's seeded RNG that :func:`one_view_collate` turns into the batch's camera."""

    def __init__(self, frames: WithBasePoints) -> None:
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def reader(self):
        return self.frames.reader

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.frames[index]
        item["view_draw"] = float(np.random.random())
        return item


_PER_VIEW = ("images", "proj", "view_mask")


def one_view_collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """CP's training collate (§3.1): keep one camera for the whole batch, drawn uniformly from the cameras every
    item has (``view_mask``) with the first item's ``view_draw``; when no camera is common to all items, each
    item keeps a random one of its own (its ``view_draw``). Then torch's default collate; ``camera (B,)`` says
    which."""
    masks = np.stack([np.asarray(it["view_mask"], dtype=bool) for it in items])
    if not masks.any(1).all():
        raise DataError("an item has no available view", field="view_mask")
    common = np.flatnonzero(masks.all(0))
    out = []
    for it, mask in zip(items, masks, strict=True):
        draw = float(it.get("view_draw", 0.0))
        if len(common):
            c = int(common[min(int(float(items[0].get("view_draw", 0.0)) * len(common)), len(common) - 1)])
        else:
            own = np.flatnonzero(mask)
            c = int(own[min(int(draw * len(own)), len(own) - 1)])
        one = {k: v for k, v in it.items() if k != "view_draw"}
        for k in _PER_VIEW:
            one[k] = it[k][c:c + 1]
        one["camera"] = c
        out.append(one)
    return torch.utils.data.default_collate(out)


class SingleViewCrops(Dataset):
    """CP's single-view validation set (§3.1): one sample per (frame, available camera) of a :class:`WithBasePoints`
    set; items are that set's with one view (``images (1, 3, S, S)``, ``proj (1, 3, 4)``, ``view_mask (1,)``) plus
    ``frame`` and ``camera`` indices; ``index`` is the sample's. ``subjects`` / ``actions`` are per sample."""

    def __init__(self, frames: WithBasePoints) -> None:
        self.frames = frames
        present = np.asarray(frames.reader.present, dtype=bool)  # (frames, cameras)
        self.frame_index, self.camera_index = (a.astype(np.int64) for a in np.nonzero(present))

    def __len__(self) -> int:
        return len(self.frame_index)

    @property
    def subjects(self) -> list[str]:
        s = self.frames.subjects
        return [s[int(f)] for f in self.frame_index]

    @property
    def actions(self) -> list[str]:
        a = self.frames.actions
        return [a[int(f)] for f in self.frame_index]

    def __getitem__(self, index: int) -> dict[str, Any]:
        f, c = int(self.frame_index[index]), int(self.camera_index[index])
        crops = self.frames.crops
        if crops.cache is not None:  # the frame's crops are (or get) cached: take this view from them
            frame = self.frames[f]
            images, proj = frame["images"][c:c + 1], frame["proj"][c:c + 1]
            item = {k: frame[k] for k in ("keypoints_3d", "keypoints_3d_valid", "base_point")}
        else:  # crop this view only
            sample = crops.reader[f]
            image, p = crops.crop_view(sample.views[sample.view_names.index(crops.reader.camera_names[c])])
            images, proj = image[None], torch.from_numpy(np.asarray(p, dtype=np.float64))[None]
            kp = np.asarray(sample.keypoints_3d[0], dtype=np.float64)
            valid = (np.ones(len(kp), np.float32) if sample.visibility_3d is None
                     else np.asarray(sample.visibility_3d[0], np.float32))
            item = {"keypoints_3d": torch.from_numpy(kp), "keypoints_3d_valid": torch.from_numpy(valid),
                    "base_point": torch.from_numpy(self.frames.points[f].copy())}
        return {**item, "images": images, "proj": proj, "view_mask": torch.ones(1, dtype=torch.bool),
                "index": index, "frame": f, "camera": c}


def build_datasets(recipe: ContextPoseRecipe, *, cache_dir: str | Path | None = None,
                   device: str | torch.device = "cpu", train: bool = True
                   ) -> tuple[TrainFrames | None, SingleViewCrops | None]:
    """(training frames with all views, for :func:`one_view_collate`, or None when not ``train``; the single-view
    validation samples or None): the volumetric method's sets with their base points
    (:func:`humanvision.methods.volumetric.build_datasets`)."""
    train_set, val_set = vol.build_datasets(recipe, cache_dir=cache_dir, device=device, train=train)
    return (None if train_set is None else TrainFrames(train_set),
            None if val_set is None else SingleViewCrops(val_set))


# ---------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_contextpose(method: ContextPose, dataset: SingleViewCrops, *, batch_size: int = 16,
                         device: str | torch.device = "cpu", num_workers: int = 0,
                         out_dir: str | Path | None = None) -> dict[str, Any]:
    """Predict every (frame, camera) sample (no rotation) and compute §4.1 MPJPE (mm) over the samples:
    ``mpjpe_relative`` (pelvis, CP's number), ``mpjpe_absolute``, ``count`` (samples), ``frames``,
    ``bone_length_error`` (CP's LimbLengthError), ``base_pelvis_error`` and ``tables`` (per action with trials
    merged, per subject, per joint), written to ``out_dir/metrics.json`` when given."""
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
        raise DataError("no samples to evaluate", field="dataset")
    idx = np.concatenate(indices)
    pred, gt = np.concatenate(preds), np.concatenate(gts)
    all_actions, all_subjects = dataset.actions, dataset.subjects
    extra = {"frames": float(len(np.unique(dataset.frame_index[idx]))),
             "bone_length_error": float(bone_length_error(pred, gt).mean()),
             "base_pelvis_error": float(np.linalg.norm(np.concatenate(bases) - gt[:, ROOT], axis=-1).mean())}
    return alg.mpjpe_report({"contextpose": pred}, gt, [all_actions[i] for i in idx],
                            [all_subjects[i] for i in idx], primary="contextpose", extra=extra, out_dir=out_dir)


def export_onnx(recipe: ContextPoseRecipe, weights: str | Path, out: str | Path, *, views: int = 4, **kwargs: Any):
    """``humanvision export`` of a contextpose recipe: the trained method whole (2D network, unprojection,
    aggregation, V2V, soft-argmax) as ONNX for a rig of ``views`` cameras, with the crop contract
    (``data.bbox_scale``, ``data.bgr``), read by :class:`humanvision.runtime.VolumetricTriangulator`. ``kwargs``: those
    of :func:`humanvision.export.export_volumetric_onnx`."""
    from humanvision.export import export_volumetric_onnx

    return export_volumetric_onnx(build_method(recipe, weights), out, views=views, bbox_scale=recipe.data.bbox_scale,
                                  bgr=recipe.data.bgr, recipe=recipe.name, weights=weights, **kwargs)


def evaluate_weights(recipe: ContextPoseRecipe, weights: str | Path, out_dir: str | Path | None = None
                     ) -> dict[str, Any]:
    """``humanvision eval`` of a ContextPose recipe: ``weights`` (a run of this method: its limb statistics come
    with it) on every (frame, camera) of the validation subjects (synthesised first for ``data.source:
    synthetic``; algebraic base points are computed and cached under ``out_dir/base``), or with ``eval.dataset:
    mpi_inf_3dhp`` on the 3DHP test set (:func:`evaluate_3dhp_crops`)."""
    if recipe.eval.dataset == "mpi_inf_3dhp":
        method = build_method(recipe, weights=weights)
        if not method.limb_statistics_set:
            raise ConfigError(f"{weights}: no limb statistics in these weights (not a ContextPose run); set "
                              "model.limb_statistics")
        return evaluate_3dhp_crops(method, threedhp_dataset(recipe), batch_size=recipe.eval.batch_size,
                                   out_dir=out_dir)
    if not recipe.data.val_subjects:
        raise ConfigError("data.val_subjects: empty, so there is nothing to evaluate on")
    vol.check_base_source(recipe.model, ("val",))
    alg.prepare_synthetic(recipe.data)
    method = build_method(recipe, weights=weights)
    if not method.limb_statistics_set:
        raise ConfigError(f"{weights}: no limb statistics in these weights (not a ContextPose run); set "
                          "model.limb_statistics")
    _, val = build_datasets(recipe, cache_dir=None if out_dir is None else Path(out_dir) / "base", train=False)
    return evaluate_contextpose(method, val, batch_size=recipe.eval.batch_size, out_dir=out_dir)


# ------------------------------------------------------------------------------------------------ training
def run_training(recipe: ContextPoseRecipe, resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Train the recipe with the engine: one random view per batch (:func:`one_view_collate`), Adam with the
    volumetric groups, one epoch = ``data.objects_per_epoch`` frames, the 2D network frozen in the first
    ``train.freeze_backbone_epochs`` (CP's 3DHP model: 20); the limb statistics from
    ``model.limb_statistics`` or computed from the training split (written to the run folder as
    ``mean_and_std_limb_length.h5`` / ``.npz``); evaluation on every (frame, camera) of the validation subjects
    after each ``train.eval_every`` epochs (``eval/metrics.json``). Returns the fit summary."""
    from humanvision.config import save_config
    from humanvision.engine import Trainer, seed_everything
    from humanvision.engine.distributed import resolve_device

    seed_everything(recipe.train.seed)
    vol.check_base_source(recipe.model, ("train", "val") if recipe.data.val_subjects else ("train",))
    method = build_method(recipe)  # before any data work: a bad model, weights or statistics file fails at once
    alg.prepare_synthetic(recipe.data, quiet=quiet)
    out = Path(recipe.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    device = resolve_device(recipe.train.device, int(os.environ.get("LOCAL_RANK", "0")))
    train_set, val_set = build_datasets(recipe, cache_dir=out / "base", device=device)
    if recipe.model.limb_statistics is None and recipe.model.context:  # CP's limb_length.py over the training
        mean, std = limb_statistics(train_set.reader.keypoints)
        method.set_limb_statistics(mean, std)
        if main_rank:
            save_limb_statistics(default_limb_statistics_file(out), mean, std)
    save_config(recipe, out / "config.yaml")
    cfg = recipe.train

    def eval_fn(model: ContextPose, epoch: int) -> dict[str, float]:
        m = evaluate_contextpose(model, val_set, batch_size=recipe.eval.batch_size,
                                 device=next(model.parameters()).device, out_dir=out / "eval" if main_rank else None)
        return {k: v for k, v in m.items() if isinstance(v, float)}

    sampler_fn = vol.freeze_schedule_sampler_fn(method, cfg, len(train_set), recipe.data.objects_per_epoch)
    trainer = Trainer(cfg, method, train_set, eval_fn=eval_fn if val_set is not None else None,
                      sampler_fn=sampler_fn, collate_fn=one_view_collate,
                      param_groups_fn=lambda m: vol.volumetric_param_groups(m, cfg.weight_decay, recipe.lr_groups,
                                                                            cfg.lr))
    return trainer.fit(resume=resume or None)


# ------------------------------------------------------------------------------------------ MPI-INF-3DHP
def level_rotation(vertical_axis: int = 2) -> np.ndarray:
    """``R0 (3, 3)``, camera frame (x right, y down, z forward) -> a right-handed world frame whose axis
    ``vertical_axis`` points up (the camera's ``-y``), for a level camera: ``x_world = R0 x_cam``. For z (Human3.6M):
    ``(x, z, -y)`` (y forward); for y: ``(x, -y, -z)``; for x: ``(-y, z, -x)``."""
    rows = {2: ((1, 0, 0), (0, 0, 1), (0, -1, 0)), 1: ((1, 0, 0), (0, -1, 0), (0, 0, -1)),
            0: ((0, -1, 0), (0, 0, 1), (-1, 0, 0))}
    if vertical_axis not in rows:
        raise ConfigError(f"model.vertical_axis: 0, 1 or 2, got {vertical_axis}")
    return np.array(rows[vertical_axis], dtype=np.float64)


def fit_intrinsics(points_2d: np.ndarray, points_3d: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    """Least-squares pinhole ``(fx, fy), (cx, cy)`` from pixels ``(..., 2)`` and camera-frame points ``(..., 3)``:
    ``u = fx X / Z + cx``, ``v = fy Y / Z + cy`` (no skew, no distortion; points with ``Z > 0``)."""
    uv = np.asarray(points_2d, np.float64).reshape(-1, 2)
    xyz = np.asarray(points_3d, np.float64).reshape(-1, 3)
    keep = xyz[:, 2] > 0
    if keep.sum() < 2:
        raise DataError("fitting intrinsics needs at least two points in front of the camera", field="annot3")
    uv, xyz = uv[keep], xyz[keep]
    f, c = [], []
    for k in (0, 1):
        a = np.stack([xyz[:, k] / xyz[:, 2], np.ones(len(xyz))], 1)
        (fk, ck), *_ = np.linalg.lstsq(a, uv[:, k], rcond=None)
        f.append(float(fk))
        c.append(float(ck))
    return (f[0], f[1]), (c[0], c[1])


class ThreeDHPTestCrops(Dataset):
    """MPI-INF-3DHP test frames (``sequences`` of ``root``, valid frames only) as single-view items of the volumetric
    networks: ``images (1, 3, S, S)`` (the square ``annot2`` box x ``bbox_scale``), ``proj (1, 3, 4)`` (crop pixels;
    ``K [R0^T | 0]`` with :func:`level_rotation`), ``view_mask (1,)``, ``base_point (3,)`` (world, by ``root``),
    ``index``. Arrays for the evaluation: ``gt (N, 17, 3)`` (camera frame, ``ground_truth``: univ_annot3 or annot3),
    ``pelvis (N, 3)`` (annot3, camera frame), ``base (N, 3)`` (camera frame), ``sequence_names`` (``TS1`` ..),
    ``frames`` (0-based), ``cameras`` (per sequence: ``K``, size, source, reprojection error). See the module
    docstring for the choices."""

    def __init__(self, root: str | Path, input_size: int, *, sequences: Sequence[int] = (1, 2, 3, 4, 5, 6),
                 bbox_scale: float = 1.2, bgr: bool = False, root_source: str = "gt", root_noise_mm: float = 0.0,
                 root_seed: int = 0, root_file: str | Path | None = None, intrinsics: str = "table",
                 vertical_axis: int = 2, ground_truth: str = "univ_annot3") -> None:
        from humanvision.data.readers import MpiInf3dhpTest

        if not Path(root).is_dir():
            raise DataError("eval.threedhp_root: not a folder (the MPI-INF-3DHP test set, TS1 .. TS6)",
                            file=str(root))
        if root_source == "file" and (root_file is None or not Path(root_file).is_file()):
            raise DataError("eval.root_file: file not found", file=str(root_file))
        self.input_size, self.bbox_scale, self.bgr = int(input_size), float(bbox_scale), bool(bgr)
        self.reader = MpiInf3dhpTest(root, sequences, only_valid=True, universal=False)  # annot2 + metric annot3
        if len(self.reader) == 0:
            raise DataError(f"no valid frames in sequences {list(sequences)}", file=str(root), field="valid_frame")
        if ground_truth == "univ_annot3":
            self.gt = MpiInf3dhpTest(root, sequences, only_valid=True, universal=True).kp3d.astype(np.float64)
        elif ground_truth == "annot3":
            self.gt = self.reader.kp3d.astype(np.float64)
        else:
            raise ConfigError(f"eval.ground_truth: univ_annot3 or annot3, got {ground_truth!r}")
        self.ground_truth, self.root_source = ground_truth, root_source
        seq = self.reader.seq
        self.sequence_names = [f"TS{int(n)}" for n in seq]
        self.frames = self.reader.frame.astype(np.int64)
        self.rotation = level_rotation(vertical_axis)
        kp2, kp3 = self.reader.kp2d.astype(np.float64), self.reader.kp3d.astype(np.float64)
        pelvis_index = 14  # mpi_inf_3dhp17
        self.pelvis = kp3[:, pelvis_index]
        # one K per sequence, from the table or fitted; the reprojection error of annot3 against annot2 under it
        self.cameras: dict[str, dict[str, Any]] = {}
        self._k: dict[int, np.ndarray] = {}
        for n in sorted({int(x) for x in seq}):
            sel = seq == n
            size, f, c = THREEDHP_TEST_CAMERAS[n]
            if intrinsics == "fit":
                f, c = fit_intrinsics(kp2[sel], kp3[sel])
            elif intrinsics != "table":
                raise ConfigError(f"eval.intrinsics: table or fit, got {intrinsics!r}")
            k = np.array([[f[0], 0.0, c[0]], [0.0, f[1], c[1]], [0.0, 0.0, 1.0]])
            proj = kp3[sel] @ k.T
            err = np.linalg.norm(proj[..., :2] / proj[..., 2:] - kp2[sel], axis=-1)
            self._k[n] = k
            self.cameras[f"TS{n}"] = {"fx": f[0], "fy": f[1], "cx": c[0], "cy": c[1], "width": size[0],
                                      "height": size[1], "source": intrinsics,
                                      "reprojection_px": float(np.nanmean(err))}
        self.base = self._base_points(root_source, root_noise_mm, root_seed, root_file)

    def _base_points(self, source: str, noise_mm: float, seed: int, file: str | Path | None) -> np.ndarray:
        """The cuboid centres ``(N, 3)`` in the camera frame (see ``eval.root``)."""
        if source == "gt":
            return self.pelvis.copy()
        if source == "gt_noisy":
            out = self.pelvis.copy()
            for n in np.unique(self.reader.seq):
                sel = self.reader.seq == n
                rng = np.random.default_rng([int(seed), int(n)])  # fixed per (sequence, frame)
                out[sel] += rng.normal(0.0, noise_mm, (int(self.frames[sel].max()) + 1, 3))[self.frames[sel]]
            return out
        if source == "file":
            f = str(file)
            try:
                with np.load(file, allow_pickle=False) as z:
                    data = {k: z[k] for k in z.files}
            except (OSError, ValueError) as e:
                raise DataError(f"not a readable .npz file ({e})", file=f) from None
            for key in ("sequences", "frames", "pelvis"):
                if key not in data:
                    raise DataError("missing key (expected sequences, frames, pelvis)", file=f, field=key)
            seqs = np.array([int(str(x).removeprefix("TS")) for x in np.asarray(data["sequences"]).reshape(-1)])
            frames = np.asarray(data["frames"]).reshape(-1).astype(np.int64)
            pelvis = np.asarray(data["pelvis"], np.float64)
            if pelvis.shape != (len(seqs), 3) or len(frames) != len(seqs):
                raise DataError(f"expected sequences (N,), frames (N,), pelvis (N, 3); got {len(seqs)}, "
                                f"{len(frames)}, {pelvis.shape}", file=f, field="pelvis")
            if not np.isfinite(pelvis).all():
                raise DataError("non-finite values", file=f, field="pelvis")
            lookup = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(seqs, frames, strict=True))}
            rows = []
            for n, t in zip(self.reader.seq, self.frames, strict=True):
                if (int(n), int(t)) not in lookup:
                    raise DataError(f"no pelvis for TS{int(n)} frame {int(t)}", file=f, field="frames")
                rows.append(lookup[(int(n), int(t))])
            return pelvis[rows]
        raise ConfigError(f"eval.root: gt, gt_noisy or file, got {source!r}")

    def __len__(self) -> int:
        return len(self.reader)

    def camera(self, index: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """``(P (3, 4) in crop pixels, crop box (left, top, right, bottom))`` of frame ``index``."""
        from humanvision.geometry import Camera

        uv = self.reader.kp2d[index].astype(np.float64)
        tlbr = (int(np.floor(uv[:, 1].min())), int(np.floor(uv[:, 0].min())), int(np.ceil(uv[:, 1].max())),
                int(np.ceil(uv[:, 0].max())))
        box = alg.square_box(tlbr, self.bbox_scale)
        if box[2] <= box[0]:
            raise DataError(f"empty crop box {box} from the annot2 joints", record=self.reader[index].image_id,
                            field="annot2")
        n = int(self.reader.seq[index])
        w, h = THREEDHP_TEST_CAMERAS[n][0]
        cam = Camera(K=self._k[n], R=self.rotation.T, t=np.zeros(3), width=w, height=h)
        s = self.input_size
        return cam.crop(box).resize(s, s).projection_matrix, box

    def __getitem__(self, index: int) -> dict[str, Any]:
        import cv2

        from humanvision.data.transforms import normalize_image

        proj, box = self.camera(index)
        sample = self.reader[index]
        s = self.input_size
        crop = cv2.resize(alg.crop_image(sample.load_image(), box), (s, s), interpolation=cv2.INTER_AREA)
        if self.bgr:
            crop = np.ascontiguousarray(crop[..., ::-1])
        return {"images": normalize_image(crop)[None], "proj": torch.from_numpy(proj)[None],
                "view_mask": torch.ones(1, dtype=torch.bool),
                "base_point": torch.from_numpy(self.rotation @ self.base[index]), "index": index}


def threedhp_dataset(recipe: ContextPoseRecipe) -> ThreeDHPTestCrops:
    """The recipe's 3DHP test set (``eval.threedhp_root`` ...; the model's input size, vertical axis and colour
    order)."""
    e = recipe.eval
    if e.threedhp_root is None:
        raise ConfigError("eval.threedhp_root: the MPI-INF-3DHP test folder (TS1 .. TS6) is not set")
    return ThreeDHPTestCrops(e.threedhp_root, recipe.model.input_size, sequences=e.sequences,
                             bbox_scale=e.bbox_scale, bgr=recipe.data.bgr, root_source=e.root,
                             root_noise_mm=e.root_noise_mm, root_seed=e.root_seed, root_file=e.root_file,
                             intrinsics=e.intrinsics, vertical_axis=recipe.model.vertical_axis,
                             ground_truth=e.ground_truth)


_ROOT_TEXT = {"gt": "ground-truth pelvis (annot3)", "gt_noisy": "ground-truth pelvis (annot3) + Gaussian noise",
              "file": "pelvis estimates from eval.root_file"}


@torch.no_grad()
def evaluate_3dhp_crops(method: VolumetricTriangulation, dataset: ThreeDHPTestCrops, *, batch_size: int = 16,
                        device: str | torch.device = "cpu", num_workers: int = 0,
                        out_dir: str | Path | None = None) -> dict[str, Any]:
    """Predict every frame (one view, no rotation), map CP's 17 joints to the test joints
    (:data:`H36M17_TO_3DHP17`) in the camera frame, and score them with
    :func:`humanvision.metrics.pose3d.evaluate_3dhp` (14 joints, pelvis-relative, PCK@150 mm, AUC 0:5:150).
    Returns ``pck``, ``auc``, ``mpjpe`` (mm, the same 14 joints), ``count`` (frames), ``base_pelvis_error`` (mm),
    ``per_subset`` (GS / noGS / Outdoor present in the set, and ALL), ``per_sequence``, ``per_group``, ``protocol``
    (the choices in words: root, cameras, joints, ground truth) and ``cameras``; with ``out_dir`` also
    ``metrics.json`` and ``predictions.npz`` (``pred`` / ``gt (N, 17, 3)`` camera frame, test-joint order,
    ``sequences``, ``frames``)."""
    import json

    from humanvision.metrics.pose3d import THREEDHP_EVAL_JOINTS, evaluate_3dhp

    device = torch.device(device)
    was_training = method.training
    method.eval().to(device)
    preds, indices = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers):
        out = method.predict(batch["images"].to(device), batch["proj"].to(device), batch["base_point"].to(device),
                             batch["view_mask"].to(device))
        preds.append(out["keypoints_3d"].double().cpu().numpy())
        indices.append(np.asarray(batch["index"]))
    method.train(was_training)
    idx = np.concatenate(indices)
    world = np.concatenate(preds)  # (N, 17, 3) h36m17, the level world frame
    pred = (world @ dataset.rotation)[:, list(H36M17_TO_3DHP17)]  # x_cam = R0^T x_world, row vectors
    gt = dataset.gt[idx]
    seqs = [dataset.sequence_names[i] for i in idx]
    r = evaluate_3dhp(pred, gt, sequences=seqs)
    overall = {"pck": r.pck, "auc": r.auc, "mpjpe": r.mpjpe, "count": r.count}
    metrics: dict[str, Any] = {
        "dataset": "mpi_inf_3dhp", "pck": r.pck, "auc": r.auc, "mpjpe": r.mpjpe, "count": float(r.count),
        "base_pelvis_error": float(np.linalg.norm(dataset.base[idx] - dataset.pelvis[idx], axis=-1).mean()),
        "per_subset": {**r.per_subset, "ALL": overall}, "per_sequence": r.per_sequence, "per_group": r.per_group,
        "protocol": {
            "root": f"{dataset.root_source}: {_ROOT_TEXT.get(dataset.root_source, dataset.root_source)} as the "
                    "cuboid centre",
            "frames": "valid frames only (valid_frame == 1)",
            "joints": f"the official 14 ({len(THREEDHP_EVAL_JOINTS)}: head top .. ankles), relative to the pelvis; "
                      "CP's h36m17 -> mpi_inf_3dhp17 by H36M17_TO_3DHP17",
            "ground_truth": dataset.ground_truth,
            "threshold_mm": r.threshold, "auc_thresholds_mm": "0:5:150",
            "camera": "pinhole K per sequence (eval.intrinsics), distortion ignored; the camera taken as level "
                      "(world = R0 camera, the model's vertical axis up)",
        },
        "cameras": dataset.cameras,
    }
    if out_dir is not None and int(os.environ.get("RANK", "0")) == 0:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        np.savez(out / "predictions.npz", pred=pred, gt=gt, sequences=np.asarray(seqs),
                 frames=dataset.frames[idx])
    return metrics


def format_3dhp_table(metrics: dict[str, Any]) -> str:
    """The per-subset and per-sequence table of :func:`evaluate_3dhp_crops`'s result, as text."""
    lines = [f"MPI-INF-3DHP ({metrics['protocol']['root']}; {metrics['protocol']['ground_truth']})",
             f"{'':10s} {'PCK@150':>8s} {'AUC':>6s} {'MPJPE':>7s} {'frames':>7s}"]
    for name, row in [*metrics["per_subset"].items(), *metrics["per_sequence"].items()]:
        lines.append(f"{name:10s} {row['pck']:8.1f} {row['auc']:6.1f} {row['mpjpe']:7.1f} {int(row['count']):7d}")
    return "\n".join(lines)


def eval_unchecked(config: str | Path | dict, overrides: Sequence[str] = ()) -> tuple[str, ...]:
    """The recipe keys whose paths ``humanvision eval`` does not need: the weights and the training base points,
    and for ``eval.dataset: mpi_inf_3dhp`` (in the recipe or ``overrides``) all Human3.6M data, base sources and the
    limb statistics (the weights carry them)."""
    from humanvision.config import recipe_mapping

    section = recipe_mapping(config).get("eval")
    dataset = section.get("dataset") if isinstance(section, dict) else None
    for item in overrides:  # the last --set eval.dataset=... wins (a malformed one fails later, in load_config)
        key, _, value = str(item).partition("=")
        if key.strip() == "eval.dataset":
            dataset = value.strip().strip("'\"")
    base = ("model.weights", "model.base_train_predictions")
    if dataset == "mpi_inf_3dhp":
        return (*base, "data.", "model.base_", "model.limb_statistics")
    return base
