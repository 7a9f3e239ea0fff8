"""PCT (Human Pose as Compositional Tokens, CVPR 2023) readable top to bottom: recipe, the two training
stages, inference, the tokenizer's reconstruction evaluation and checkpoints (pose2d.md §3).

Three runs make a PCT model (§3.1); humanvision trains the last two from recipes (``configs/pct_*.yaml``):

0. a heatmap backbone (``pct.backbone``, a registered heatmap model whose ``forward_features`` gives the
   stride-32 map, e.g. ``pct_swin_base_hmp``), trained like any top-down model; its weights are
   ``pct.backbone_weights`` (ours or the official ``weights/heatmap/swin_*.pth``);
1. **stage I** (``pct.stage: tokenizer``): :class:`PCTTokenizerStage`: crop joints (+ the frozen backbone's
   map when ``pct.guide: image``) -> tokens -> VQ (EMA codebook) -> joints; ``loss = 1.0 smooth-L1 + 15.0
   commitment`` (§3.3). Evaluation: the **reconstruction AP** of ground-truth poses (GT boxes, flip-averaged,
   score = visibility); with ``guide: none`` neither training nor this evaluation reads an image;
2. **stage II** (``pct.stage: classifier``): :class:`PCTClassifierStage`: frozen backbone -> :class:`PCTHead`
   logits over the codebook, soft-decoded by the frozen stage-I tokenizer (``pct.tokenizer_weights``,
   required); ``loss = CE(logits, GT tokens) + smooth-L1(decoded, GT)`` (§3.4). Evaluation: COCO AP (§3.5):
   256x256 non-UDP crops with padding 1.12, flip averaging in joint space, pose score = mean top-1 logit,
   rescoring and OKS-NMS of the top-down method.

Checkpoints are the engine's (``<output_dir>/last``, ``best``), holding the whole method (``backbone.*``,
``tokenizer.*``, ``head.*``). Official PCT checkpoints load through the prefix map of
:data:`humanvision.models.pct.OFFICIAL_PREFIXES` (``keypoint_head.tokenizer.`` -> ``tokenizer.``,
``keypoint_head.`` -> ``head.``, ``backbone.`` / ``extra_backbone.`` -> ``backbone.backbone.``) and
:func:`export_official` writes that layout back.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from humanvision.config import must_exist
from humanvision.data.transforms import IMAGENET_MEAN, IMAGENET_STD, TopDownTransform, keypoints_to_image
from humanvision.engine import TrainConfig
from humanvision.errors import ConfigError, DataError
from humanvision.methods.topdown import (
    AUGMENT,
    DataConfig,
    EvalConfig,
    TopDownDataset,
    coco_metrics,
    eval_reader,
    predict_boxes,
    prepare_synthetic,
    train_reader,
)
from humanvision.models.pct import (
    PCTHead,
    PCTTokenizer,
    check_state_shapes,
    from_official_pct,
    official_to_ours,
    ours_to_official,
    to_official_pct,
)
from humanvision.skeletons import get_skeleton

__all__ = [
    "PCTClassifierStage", "PCTConfig", "PCTDataset", "PCTRecipe", "PCTTokenizerStage", "build_method",
    "build_transform", "evaluate", "evaluate_pose", "evaluate_reconstruction", "evaluate_weights",
    "export_official", "is_pct_recipe", "joint_loss", "load_method_weights", "load_recipe",
    "load_tokenizer_weights", "require_classifier", "run_training",
]


# ----------------------------------------------------------------------------------------------- the recipe
@dataclass
class PCTConfig:
    """The ``pct`` section. Defaults: the Swin-B release (pose2d.md §3.3-§3.4).

    ``stage``: ``tokenizer`` (stage I) or ``classifier`` (stage II). ``guide``: ``image`` (the tokenizer also
    reads the frozen backbone's map, half of its width) or ``none`` (woimgguide, §3.6). ``backbone``: a
    registered heatmap model (its ``forward_features`` map is used, its heatmap head is dropped),
    ``backbone_args`` its extra arguments, ``backbone_weights`` its stage-0 weights (a run folder or a weights
    file; unset: a random frozen trunk). ``tokenizer_weights``: the stage-I checkpoint a classifier starts
    from (our run folder or an official ``weights/tokenizer/swin_*.pth``). ``input_size``: side of the square
    crop (256); ``test_padding``: the box padding at test time (1.12; training uses ``data.padding``, 1.25).
    ``feature_size``: average-pool the backbone's map to ``feature_size x feature_size`` before the head and the
    image guidance (ours, for backbones whose map is finer than the release's stride-32 Swin map, e.g. a
    stride-4 CNN pyramid, whose flattened map would make the head's first Linear huge); unset: the map as it is.
    Tokenizer: ``token_num`` M, ``token_dim`` D, ``codebook_size`` V, encoder ``enc_*``, masking
    ``drop_rate``, decoder ``dec_*``, ``ema_decay``. Head: ``conv_*``, ``head_*``. Losses: weights and the
    smooth-L1 ``beta`` (px).
    """

    stage: Literal["tokenizer", "classifier"] = "tokenizer"
    guide: Literal["image", "none"] = "image"
    backbone: str = "pct_swin_base_hmp"
    backbone_args: dict[str, Any] = field(default_factory=dict)
    backbone_weights: Path | None = must_exist()
    tokenizer_weights: Path | None = must_exist()
    skeleton: str = "coco17"
    input_size: int = 256
    test_padding: float = 1.12
    feature_size: int | None = None
    token_num: int = 34
    token_dim: int = 512
    codebook_size: int = 2048
    enc_num_blocks: int = 4
    enc_hidden_dim: int = 512
    enc_token_inter_dim: int = 64
    enc_hidden_inter_dim: int = 512
    drop_rate: float = 0.2
    dec_num_blocks: int = 1
    dec_hidden_dim: int = 32
    dec_token_inter_dim: int = 64
    dec_hidden_inter_dim: int = 64
    ema_decay: float = 0.9
    conv_num_blocks: int = 2
    conv_channels: int = 256
    head_num_blocks: int = 4
    head_hidden_dim: int = 64
    head_token_inter_dim: int = 64
    head_hidden_inter_dim: int = 256
    joint_loss_weight: float = 1.0
    commit_loss_weight: float = 15.0
    cls_loss_weight: float = 1.0
    beta: float = 0.05

    def __post_init__(self) -> None:
        from humanvision.models import check_model_choice

        check_model_choice(self.backbone, self.skeleton, name_key="pct.backbone", skeleton_key="pct.skeleton")
        if self.stage == "classifier" and self.tokenizer_weights is None:
            raise ConfigError("pct.tokenizer_weights: a classifier (stage II) starts from a trained stage-I "
                              "tokenizer; set it to the tokenizer run folder or checkpoint file")
        for key in ("input_size", "token_num", "token_dim", "codebook_size", "enc_num_blocks",
                    "enc_hidden_dim", "dec_num_blocks", "dec_hidden_dim", "conv_channels", "head_num_blocks",
                    "head_hidden_dim"):
            if getattr(self, key) < 1:
                raise ConfigError(f"pct.{key}: must be >= 1, got {getattr(self, key)}")
        if self.feature_size is not None and self.feature_size < 1:
            raise ConfigError(f"pct.feature_size: must be >= 1 (or unset), got {self.feature_size}")
        if not 0.0 <= self.drop_rate < 1.0 or not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"pct.drop_rate / pct.ema_decay: must be in [0, 1), got {self.drop_rate} / "
                              f"{self.ema_decay}")


def _pct_data() -> DataConfig:
    return DataConfig(augment="pct")


@dataclass
class PCTRecipe:
    """A PCT recipe: ``pct`` (above), ``data`` / ``eval`` (the top-down method's sections; ``data.padding`` is
    the training padding) and ``train`` (the engine's)."""

    name: str = "pct"
    pct: PCTConfig = field(default_factory=PCTConfig)
    data: DataConfig = field(default_factory=_pct_data)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.data.source == "mpii":
            raise ConfigError("data.source: PCT recipes read COCO-format keypoints (coco or synthetic), "
                              "not mpii")


def is_pct_recipe(source: Any) -> bool:
    """True for a :class:`PCTRecipe`, a mapping or a YAML file with a top-level ``pct`` section."""
    from humanvision.config import recipe_mapping

    return isinstance(source, PCTRecipe) or "pct" in recipe_mapping(source)


def load_recipe(source: str | Path | dict, overrides: list[str] | tuple[str, ...] = (),
                unchecked: tuple[str, ...] = ()) -> PCTRecipe:
    """Load a PCT recipe. ``unchecked`` as :func:`humanvision.config.load_config`; the top-down
    ``model.weights`` (a command whose ``--weights`` replace the recipe's) stands for ``pct.backbone_weights``
    and ``pct.tokenizer_weights``: a whole PCT checkpoint holds both."""
    from humanvision.config import load_config

    keys = tuple(unchecked)
    if "model.weights" in keys:
        keys += ("pct.backbone_weights", "pct.tokenizer_weights")
    return load_config(source, PCTRecipe, overrides, unchecked=keys)


# ------------------------------------------------------------------------------------------------- the losses
def joint_loss(pred: torch.Tensor, target: torch.Tensor, visible: torch.Tensor,
               beta: float = 0.05) -> torch.Tensor:
    """``mean_{B,K,2}[SmoothL1_beta(pred - target) * v]`` (§3.3): ``0.5 d^2 / beta`` if ``|d| < beta`` else
    ``|d| - beta / 2``; invisible joints count in the denominator. fp32."""
    d = (pred.float() - target.float()).abs()
    per = torch.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)
    return (per * visible.float()[..., None]).mean()


def token_accuracy(logits: torch.Tensor, target: torch.Tensor, topk: tuple[int, ...] = (1, 2, 5)) -> dict:
    """Top-k accuracy of ``logits (B, M, V)`` against token ids ``(B, M)``: ``{"top1_acc": ..., ...}``."""
    kmax = min(max(topk), logits.shape[-1])
    hit = logits.detach().topk(kmax, dim=-1).indices == target[..., None]
    return {f"top{k}_acc": hit[..., :min(k, kmax)].any(-1).float().mean() for k in topk}


#: a code whose EMA assignment count per step fell below this is counted as dead (unused for ~45 steps at
#: decay 0.9 after its last use; an entry never used stays at the smoothing floor, ~1e-5)
DEAD_CODE_COUNT = 1e-3


def codebook_stats(counts: torch.Tensor, cluster_size: torch.Tensor) -> dict[str, torch.Tensor]:
    """``perplexity`` = exp(entropy) of this step's code usage ``counts (V,)`` (V = all codes used equally)
    and ``dead_codes``: the fraction of codes whose EMA count ``cluster_size`` is below
    :data:`DEAD_CODE_COUNT`."""
    p = counts.float() / counts.sum().clamp_min(1.0)
    return {"perplexity": torch.exp(-(p * torch.log(p + 1e-10)).sum()),
            "dead_codes": (cluster_size < DEAD_CODE_COUNT).float().mean()}


def flip_joints(joints: torch.Tensor, width: int, flip_index) -> torch.Tensor:
    """Mirror ``(B, K, 2+)`` crop joints: ``x' = width - 1 - x`` and the skeleton's flip permutation (extra
    channels such as visibility are permuted alike). Its own inverse."""
    out = joints[:, list(flip_index)].clone()
    out[..., 0] = width - 1 - out[..., 0]
    return out


# ------------------------------------------------------------------------------------------------ the methods
class _PCTStage(nn.Module):
    """What both stages share: the frozen backbone (if any), the tokenizer, the skeleton and the crop
    geometry."""

    def __init__(self, tokenizer: PCTTokenizer, backbone: nn.Module | None, skeleton: str, input_size: int,
                 test_padding: float, beta: float, feature_size: int | None = None) -> None:
        super().__init__()
        self.tokenizer, self.backbone, self.feature_size = tokenizer, backbone, feature_size
        self.skeleton = get_skeleton(skeleton)
        self.input_size, self.test_padding, self.beta = int(input_size), float(test_padding), float(beta)
        cfg = getattr(backbone, "default_cfg", {}) if backbone is not None else {}
        self.mean, self.std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
        if backbone is not None:
            backbone.requires_grad_(False)

    @property
    def guided(self) -> bool:
        return self.tokenizer.guided

    def train(self, mode: bool = True) -> _PCTStage:
        """The backbone is frozen: it stays in eval mode (BatchNorm statistics, dropout) in training too."""
        super().train(mode)
        if self.backbone is not None:
            self.backbone.eval()
        return self

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen backbone's map ``(B, C, s, s)`` (stride 32 for the Swin), average-pooled to
        ``feature_size`` when set."""
        return pool_features(self.backbone.forward_features(images), self.feature_size)


class PCTTokenizerStage(_PCTStage):
    """Stage I (§3.3): ``forward(batch)`` with ``joints (B, K, 3)`` crop pixels + visibility (and ``image``
    when image-guided) returns ``loss = joint_loss_weight * joint + commit_loss_weight * commit``, the terms,
    ``perplexity`` and ``dead_codes``. In training mode the tokenizer masks joints and updates its
    codebook."""

    def __init__(self, tokenizer: PCTTokenizer, backbone: nn.Module | None = None, skeleton: str = "coco17",
                 input_size: int = 256, test_padding: float = 1.12, joint_loss_weight: float = 1.0,
                 commit_loss_weight: float = 15.0, beta: float = 0.05, feature_size: int | None = None) -> None:
        backbone = backbone if tokenizer.guided else None
        super().__init__(tokenizer, backbone, skeleton, input_size, test_padding, beta, feature_size)
        self.joint_loss_weight, self.commit_loss_weight = joint_loss_weight, commit_loss_weight

    @property
    def needs_images(self) -> bool:
        return self.guided

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        joints = batch["joints"].float()
        out = self.tokenizer(joints, self.features(batch["image"]) if self.guided else None)
        joint = joint_loss(out["joints"], joints[..., :2], joints[..., 2], self.beta)
        commit = F.mse_loss(out["z"], out["q"].detach())
        loss = self.joint_loss_weight * joint + self.commit_loss_weight * commit
        return {"loss": loss, "joint_loss": joint, "commit_loss": commit,
                **codebook_stats(out["counts"], self.tokenizer.ema_cluster_size)}

    @torch.no_grad()
    def reconstruct(self, joints: torch.Tensor, images: torch.Tensor | None = None,
                    flip_test: bool = True) -> torch.Tensor:
        """Encode + quantise + decode ground-truth crop joints ``(B, K, 3)`` (no masking, no codebook update);
        with ``flip_test`` also the mirrored joints (and crop), mirrored back and averaged (§3.3)."""
        was_training = self.tokenizer.training
        self.tokenizer.eval()
        try:
            feats = self.features(images) if self.guided else None
            rec = self.tokenizer(joints.float(), feats)["joints"]
            if flip_test:
                w, flip = self.input_size, self.skeleton.flip_index
                feats = self.features(images.flip(-1)) if self.guided else None
                mirrored = self.tokenizer(flip_joints(joints.float(), w, flip), feats)["joints"]
                rec = 0.5 * (rec + flip_joints(mirrored, w, flip))
        finally:
            self.tokenizer.train(was_training)
        return rec


class PCTClassifierStage(_PCTStage):
    """Stage II (§3.4): frozen backbone and tokenizer, trainable :class:`PCTHead`.

    ``forward(batch)`` (``image``, ``joints``): GT token ids from the frozen encoder (no masking), logits from
    the head, soft decoding through the frozen decoder; returns ``loss = cls_loss_weight * CE +
    joint_loss_weight * joint``, the terms and the top-1/2/5 token accuracies. :meth:`predict` is the
    inference of §3.5.
    """

    def __init__(self, backbone: nn.Module, head: PCTHead, tokenizer: PCTTokenizer, skeleton: str = "coco17",
                 input_size: int = 256, test_padding: float = 1.12, cls_loss_weight: float = 1.0,
                 joint_loss_weight: float = 1.0, beta: float = 0.05, feature_size: int | None = None) -> None:
        super().__init__(tokenizer, backbone, skeleton, input_size, test_padding, beta, feature_size)
        self.head = head
        tokenizer.requires_grad_(False)
        self.cls_loss_weight, self.joint_loss_weight = cls_loss_weight, joint_loss_weight

    needs_images = True

    def train(self, mode: bool = True) -> PCTClassifierStage:
        """The tokenizer is frozen too: eval mode, so it neither masks joints nor updates its codebook."""
        super().train(mode)
        self.tokenizer.eval()
        return self

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        joints = batch["joints"].float()
        feats = self.features(batch["image"])
        with torch.no_grad():
            _, target = self.tokenizer.quantize(self.tokenizer.encode(joints, feats if self.guided else None))
        logits = self.head(feats)
        cls = F.cross_entropy(logits.float().flatten(0, 1), target.flatten())
        joint = joint_loss(self.tokenizer.decode_soft(logits), joints[..., :2], joints[..., 2], self.beta)
        loss = self.cls_loss_weight * cls + self.joint_loss_weight * joint
        return {"loss": loss, "cls_loss": cls, "joint_loss": joint, **token_accuracy(logits, target)}

    def _predict_once(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.head(self.features(images)).float()
        return self.tokenizer.decode_soft(logits), logits.max(-1).values.mean(-1)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, flip_test: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 3, S, S)`` normalised crops -> keypoints ``(B, K, 2)`` in crop pixels and scores ``(B, K)``:
        the mean over tokens of the top-1 logit, broadcast to the joints. ``flip_test``: the mirrored crop's
        joints are mirrored back (``x' = S - 1 - x``, flip permutation) and averaged with the original's, and
        so are the scores (§3.5)."""
        kp, score = self._predict_once(images)
        if flip_test:
            kp_f, score_f = self._predict_once(images.flip(-1))
            kp = 0.5 * (kp + flip_joints(kp_f, images.shape[-1], self.skeleton.flip_index))
            score = 0.5 * (score + score_f)
        return kp, score[:, None].expand(-1, self.skeleton.num_joints)


# -------------------------------------------------------------------------------------------------- building
def build_backbone(cfg: PCTConfig, pretrained: bool = True) -> nn.Module:
    """The registered heatmap model ``cfg.backbone`` at ``input_size``, its stage-0 weights loaded (when set
    and ``pretrained``), its heatmap head dropped (PCT reads ``forward_features`` only), frozen, in eval
    mode."""
    from humanvision.methods.topdown import TopDownPose
    from humanvision.methods.topdown import load_method_weights as load_heatmap_weights
    from humanvision.models import create_model

    s = cfg.input_size
    try:
        model = create_model(cfg.backbone, skeleton=cfg.skeleton, input_size=(s, s), **cfg.backbone_args)
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(f"pct.backbone ({cfg.backbone}, args {cfg.backbone_args}): {e}") from None
    if pretrained and cfg.backbone_weights is not None:
        load_heatmap_weights(TopDownPose(model, None, cfg.skeleton), cfg.backbone_weights)
    if hasattr(model, "head"):
        model.head = nn.Identity()
    return model.requires_grad_(False).eval()


def pool_features(features: torch.Tensor, size: int | None) -> torch.Tensor:
    """``features`` average-pooled to ``size x size`` (``None``: unchanged)."""
    return features if size is None else F.adaptive_avg_pool2d(features, size)


@torch.no_grad()
def feature_shape(backbone: nn.Module, input_size: int, size: int | None = None) -> tuple[int, int, int]:
    """``(C, h, w)`` of the backbone's map for a ``input_size`` square crop (one dry forward), pooled to
    ``size`` when set."""
    p = next(backbone.parameters())
    x = torch.zeros(1, 3, input_size, input_size, device=p.device)
    c, h, w = pool_features(backbone.forward_features(x), size).shape[1:]
    return int(c), int(h), int(w)


def build_tokenizer(cfg: PCTConfig, guide_channels: int = 0) -> PCTTokenizer:
    """The tokenizer of the recipe (image guidance with ``guide_channels`` when ``guide: image``)."""
    return PCTTokenizer(
        num_joints=get_skeleton(cfg.skeleton).num_joints, token_num=cfg.token_num, token_dim=cfg.token_dim,
        token_class_num=cfg.codebook_size, guide_channels=guide_channels if cfg.guide == "image" else 0,
        guide_ratio=0.5, image_size=cfg.input_size, enc_num_blocks=cfg.enc_num_blocks,
        enc_hidden_dim=cfg.enc_hidden_dim, enc_token_inter_dim=cfg.enc_token_inter_dim,
        enc_hidden_inter_dim=cfg.enc_hidden_inter_dim, drop_rate=cfg.drop_rate,
        dec_num_blocks=cfg.dec_num_blocks, dec_hidden_dim=cfg.dec_hidden_dim,
        dec_token_inter_dim=cfg.dec_token_inter_dim, dec_hidden_inter_dim=cfg.dec_hidden_inter_dim,
        ema_decay=cfg.ema_decay)


def build_method(recipe: PCTRecipe, weights: str | Path | None = None,
                 pretrained: bool = True) -> PCTTokenizerStage | PCTClassifierStage:
    """The stage of the recipe. ``weights`` (a run folder or checkpoint, ours or official) replace everything;
    otherwise (``pretrained``) the backbone gets ``pct.backbone_weights`` and a classifier's tokenizer
    ``pct.tokenizer_weights``. ``pretrained=False`` loads nothing (shape checks, the meta device)."""
    cfg = recipe.pct
    guided = cfg.guide == "image"
    init = pretrained and weights is None
    backbone, shape = None, (0, 0, 0)
    if guided or cfg.stage == "classifier":
        backbone = build_backbone(cfg, pretrained=init)
        shape = feature_shape(backbone, cfg.input_size, cfg.feature_size)
    tokenizer = build_tokenizer(cfg, shape[0])
    common = {"skeleton": cfg.skeleton, "input_size": cfg.input_size, "test_padding": cfg.test_padding,
              "joint_loss_weight": cfg.joint_loss_weight, "beta": cfg.beta, "feature_size": cfg.feature_size}
    if cfg.stage == "tokenizer":
        method = PCTTokenizerStage(tokenizer, backbone, commit_loss_weight=cfg.commit_loss_weight, **common)
    else:
        head = PCTHead(shape[0], shape[1:], token_num=cfg.token_num, token_class_num=cfg.codebook_size,
                       conv_num_blocks=cfg.conv_num_blocks, conv_channels=cfg.conv_channels,
                       num_blocks=cfg.head_num_blocks, hidden_dim=cfg.head_hidden_dim,
                       token_inter_dim=cfg.head_token_inter_dim, hidden_inter_dim=cfg.head_hidden_inter_dim)
        if init:
            load_tokenizer_weights(tokenizer, cfg.tokenizer_weights)
        method = PCTClassifierStage(backbone, head, tokenizer, cls_loss_weight=cfg.cls_loss_weight, **common)
    if weights is not None:
        load_method_weights(method, weights)
    return method


def require_classifier(recipe: PCTRecipe, command: str) -> None:
    if recipe.pct.stage != "classifier":
        raise ConfigError(f"pct.stage: `humanvision {command}` predicts poses from images, which needs a "
                          "stage-II (classifier) recipe; a tokenizer reconstructs known poses "
                          "(`humanvision eval`)")


# ----------------------------------------------------------------------------------------------- checkpoints
def _read_state(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    from humanvision.engine.checkpoint import weights_file
    from humanvision.models.weights import read_checkpoint

    file = weights_file(path)
    return read_checkpoint(file), str(file)


def load_tokenizer_weights(tokenizer: PCTTokenizer, path: str | Path) -> None:
    """Load the tokenizer of a stage-I checkpoint: the keys under ``tokenizer.`` (ours) or
    ``keypoint_head.tokenizer.`` (official), strictly; a missing key or another shape is a DataError naming
    the key as written in the file (and both shapes)."""
    state, file = _read_state(path)
    for prefix in ("tokenizer.", "keypoint_head.tokenizer."):
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if sub:
            break
    else:
        raise DataError("no tokenizer weights (keys tokenizer.* or keypoint_head.tokenizer.*)", file=file)
    check_state_shapes(tokenizer, sub, file, names={k: prefix + k for k in sub}, what="tokenizer: ")
    tokenizer.load_state_dict(sub)


#: backbone buffers recomputed from the window sizes (pose2d.md §3.2), not required in a checkpoint
_DERIVED_BUFFERS = ("relative_coords_table", "relative_position_index")


def load_method_weights(method: _PCTStage, path: str | Path) -> None:
    """Load a whole PCT method: our checkpoint (``tokenizer.*``, ``head.*``, ``backbone.*``) or an official
    one (mapped by :func:`~humanvision.models.pct.from_official_pct`). A stage-I method without a backbone
    ignores backbone keys, and the derived Swin buffers may be absent; anything else missing, unexpected or of
    another shape is a DataError naming the key."""
    state, file = _read_state(path)
    names: dict[str, str] = {}
    if any(k.startswith("keypoint_head.") for k in state):  # errors name the keys in the file's layout
        names = {k: ours_to_official(k) for k in method.state_dict()}
        names.update({official_to_ours(k): k for k in state if not k.startswith("extra_backbone.")})
        state = from_official_pct(state, file)
    if method.backbone is None:
        state = {k: v for k, v in state.items() if not k.startswith("backbone.")}
    for key, value in method.state_dict().items():  # Swin buffers derived from the window sizes may be absent
        if key.endswith(_DERIVED_BUFFERS) and key not in state:
            state[key] = value
    check_state_shapes(method, state, file, names)
    method.load_state_dict(state)


def export_official(method: _PCTStage, path: str | Path) -> Path:
    """Write the method in the official layout (``{"state_dict": ...}``, ``.pth``): ``keypoint_head.*``,
    ``keypoint_head.tokenizer.*``, ``backbone.*`` (and ``extra_backbone.*`` for image-guided models)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in method.state_dict().items()}
    torch.save({"state_dict": to_official_pct(state, method.guided), "meta": {"humanvision": "pct"}}, path)
    return path


# ---------------------------------------------------------------------------------------------------- data
def build_transform(method: _PCTStage, data: DataConfig, train: bool) -> TopDownTransform:
    """The top-down crop of §1.3-§1.4 with PCT's conventions: square ``input_size``, non-UDP, ``data.padding``
    (1.25) and ``data.augment`` for training, ``test_padding`` (1.12) and no augmentation at test time. When
    the method reads no image (woimgguide stage I) the photometric augmentation is left out (it cannot move
    joints)."""
    augment = AUGMENT[data.augment]()
    if not method.needs_images:
        augment = dataclasses.replace(augment, color_jitter=None, grid_dropout_prob=0.0)
    s = method.input_size
    return TopDownTransform((s, s), method.skeleton, codec=None, train=train, udp=False,
                            padding=data.padding if train else method.test_padding, augment=augment,
                            mean=method.mean, std=method.std)


#: stands in for the image when a method reads none (the crop keypoints do not depend on the image size)
_NO_IMAGE = np.zeros((1, 1, 3), dtype=np.uint8)


class PCTDataset(TopDownDataset):
    """One item per person, cropped by a :class:`TopDownTransform`: ``joints (K, 3)`` (crop pixels,
    visibility) and, when ``images``, ``image``; at inference also ``center``, ``scale``, ``box_score``,
    ``index``. Without ``images`` no image file is read (the joints go through the same geometric
    augmentation)."""

    def __init__(self, reader, transform: TopDownTransform, images: bool = True,
                 cache_images: bool = False) -> None:
        super().__init__(reader, transform, cache_images=cache_images)
        self.images = images

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.reader[index]
        if s.keypoints_2d is None:  # detected boxes: the top-down inference item
            return super().__getitem__(index)
        image = self._image(s) if self.images else _NO_IMAGE
        record = f"{s.source}: image {s.image_id}"
        if s.ann_ids is not None:
            record += f" annotation {s.ann_ids[0]}"
        rng = np.random.default_rng(np.random.randint(0, 2**63 - 1, dtype=np.int64))
        img, target, meta = self.transform(image, s.keypoints_2d[0], s.visibility[0], s.boxes[0], rng=rng,
                                           record=record)
        joints = torch.cat([target["keypoints"], target["keypoints_visible"][:, None]], dim=1)
        item: dict[str, Any] = {"joints": joints}
        if self.images:
            item["image"] = img
        if not self.transform.train:
            score = float(s.scores[0]) if s.scores is not None else 1.0
            item.update(center=torch.from_numpy(meta["center"]), scale=torch.from_numpy(meta["scale"]),
                        box_score=torch.tensor(score, dtype=torch.float64), index=index)
        return item


# ----------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_reconstruction(method: PCTTokenizerStage, recipe: PCTRecipe, out_dir: str | Path | None = None,
                            device: str | torch.device = "cpu", progress: bool = False) -> dict[str, Any]:
    """The tokenizer's reconstruction AP (§3.3): every ground-truth pose of ``data.val_ann``, cropped with its
    GT box (padding ``test_padding``), encoded and decoded (flip-averaged with ``eval.flip_test``), mapped
    back to the image; joint scores = visibility, box score 1; then rescoring, OKS-NMS and COCO AP. With
    ``guide: none`` no image is read (``data.val_images`` may be absent)."""
    from humanvision.data.readers import CocoKeypoints

    data = recipe.data
    if data.val_ann is None:
        raise ConfigError("data.val_ann: required for this command (or use data.source: synthetic)")
    reader = CocoKeypoints(data.val_ann, data.val_images, skeleton=method.skeleton.name, mode="instance",
                           min_keypoints=1)
    dataset = PCTDataset(reader, build_transform(method, data, train=False), images=method.needs_images)
    device = torch.device(device)
    method.eval().to(device)
    loader = DataLoader(dataset, batch_size=recipe.eval.batch_size, shuffle=False)
    if progress:
        from rich.progress import track

        loader = track(loader, description="reconstructing", total=len(loader))
    out: dict[str, list] = {"keypoints": [], "scores": [], "box_scores": [], "areas": [], "indices": []}
    for batch in loader:
        joints = batch["joints"].to(device)
        images = batch["image"].to(device) if method.needs_images else None
        rec = method.reconstruct(joints, images, flip_test=recipe.eval.flip_test)
        center, scale = batch["center"].numpy(), batch["scale"].numpy()
        out["keypoints"].append(keypoints_to_image(rec.cpu().double().numpy(), center, scale,
                                                   (method.input_size,) * 2, udp=False))
        out["scores"].append(batch["joints"][..., 2].double().numpy())
        out["box_scores"].append(batch["box_score"].numpy())
        out["areas"].append(scale.prod(axis=1))
        out["indices"].append(np.asarray(batch["index"]))
    pred = {k: np.concatenate(v) for k, v in out.items()}
    return coco_metrics(pred, reader, method.skeleton, recipe.eval, data.val_ann, out_dir)


def evaluate_pose(method: PCTClassifierStage, recipe: PCTRecipe, out_dir: str | Path | None = None,
                  det_results: str | Path | None = None, device: str | torch.device = "cpu",
                  progress: bool = False, precision: tuple[str, bool | str] | None = None) -> dict[str, Any]:
    """COCO AP/AR of stage II on ``data.val_ann`` with ground-truth boxes or detections (``det_results``, else
    ``data.det_results``): the top-down inference loop with :meth:`PCTClassifierStage.predict` (§3.5)."""
    reader = eval_reader(recipe.data, method.skeleton.name, det_results)
    dataset = TopDownDataset(reader, build_transform(method, recipe.data, train=False))
    prec, cl = precision if precision is not None else (recipe.eval.precision, recipe.eval.channels_last)
    pred = predict_boxes(method, dataset, recipe.eval.batch_size, recipe.eval.flip_test, device=device,
                         progress=progress, precision=prec, channels_last=cl)
    return coco_metrics(pred, reader, method.skeleton, recipe.eval, recipe.data.val_ann, out_dir,
                         extra={"precision": pred["choice"].label})


def evaluate(method: _PCTStage, recipe: PCTRecipe, out_dir: str | Path | None = None,
             det_results: str | Path | None = None, device: str | torch.device = "cpu",
             progress: bool = False, precision: tuple[str, bool | str] | None = None) -> dict[str, Any]:
    """Stage I: :func:`evaluate_reconstruction` (ground-truth boxes only); stage II: :func:`evaluate_pose`."""
    if isinstance(method, PCTTokenizerStage):
        if det_results is not None:
            raise ConfigError("--dets: the tokenizer's reconstruction evaluation uses the ground-truth boxes")
        return evaluate_reconstruction(method, recipe, out_dir, device=device, progress=progress)
    return evaluate_pose(method, recipe, out_dir, det_results, device=device, progress=progress,
                         precision=precision)


def evaluate_weights(recipe: PCTRecipe, weights: str | Path, out_dir: str | Path | None = None,
                     det_results: str | Path | None = None, progress: bool = False) -> dict[str, Any]:
    """``humanvision eval`` of a PCT recipe: build the stage with ``weights`` and :func:`evaluate` it."""
    return evaluate(build_method(recipe, weights=weights), recipe, out_dir, det_results, progress=progress)


# -------------------------------------------------------------------------------------------------- training
def run_training(recipe: PCTRecipe, resume: bool = False, quiet: bool = False) -> dict:
    """Train the recipe's stage with the engine (generating synthetic data first when asked); evaluation after
    each ``train.eval_every`` epochs: reconstruction AP (stage I) or pose AP (stage II). Returns the fit
    summary."""
    from humanvision.config import save_config
    from humanvision.engine import Trainer, seed_everything

    seed_everything(recipe.train.seed)
    method = build_method(recipe)  # before any data work: a bad backbone or tokenizer file fails at once
    prepare_synthetic(recipe.data, quiet=quiet)
    dataset = PCTDataset(train_reader(recipe.data, method.skeleton.name),
                         build_transform(method, recipe.data, train=True), images=method.needs_images,
                         cache_images=recipe.data.cache_images)
    out = Path(recipe.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(recipe, out / "config.yaml")
    main_rank = int(os.environ.get("RANK", "0")) == 0

    def eval_fn(model, epoch: int) -> dict:
        m = evaluate(model, recipe, out_dir=out / "eval" if main_rank else None,
                     device=next(model.parameters()).device,
                     precision=(trainer.choice.precision, trainer.choice.channels_last))
        return {k: v for k, v in m.items() if isinstance(v, float)}

    trainer = Trainer(recipe.train, method, dataset, eval_fn=eval_fn)
    return trainer.fit(resume=resume or None)
