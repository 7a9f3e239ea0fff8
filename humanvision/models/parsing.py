"""Human-parsing models for HCMoCo's downstream tasks: an HRNetV2 segmentation network and the RGB-D model of the
versatility experiments (``/work/shared/reference/pretraining.md`` A.7.2, A.7.3, A.7.5).

**ParsingHRNet** (A.7.2 / A.7.3, HRNet-Semantic-Segmentation's ``seg_hrnet``): an :class:`~humanvision.models.
hcmoco.HRNetEncoder` (the segmentation HRNet's forward: bilinear fusion to the target size, so any input size
works, BN momentum 0.01), its 4 branches bilinearly upsampled to stride 4 and concatenated (270 channels for W18,
480 for W32), then the HRNetV2 head ``Conv2d(C, C, 1) + BN + ReLU + Conv2d(C, num_classes, 1)`` and a bilinear
upsampling of the logits to the input size (align_corners False). The same network serves RGB and depth parsing:
depth is fed as 3 identical channels (``in_chans`` 3). Initialisation is the official one (conv weights
N(0, 0.001), biases 0, BN 1 / 0) before any pre-trained encoder is loaded. Keys: ``encoder.<flat HRNet key>``
(``encoder.conv1.weight``, ``encoder.stage4.2.fuse_layers...``) and ``head.{0,1,3}.*`` (the official ``last_layer``
indices).

**RGBDParsingHRNet** (A.7.5): the two HCMoCo encoders with their dense projections, under HCMoCo's own names
(``encoder1`` RGB, ``encoder2`` depth, ``encoder{1,2}_linear`` = ``Conv2d(C, 128, 1)`` on the merged map), and one
**shared** FCN head ``seg_head`` = ``Conv2d(128, 128, 1, bias=False) + BN + ReLU + Conv2d(128, num_classes, 1)``
applied to the **L2-normalised** 128-d maps, upsampled bilinearly to the input size (x4). Outputs (``mode``):

* ``fused``: the head on the elementwise max of the two normalised maps (``supervise_type`` / ``test_type`` 0);
* ``rgb``: the head on the RGB map alone, the depth encoder not run (type 1);
* ``depth``: the head on the depth map alone, the RGB encoder not run (type 2).

So a missing modality is *skipped* (the brief's single-modality outputs); the evaluation in
:mod:`humanvision.methods.parsing` can instead feed zeros to the fused output (``missing: zeros``).

**Initialisation** (:func:`load_encoder_init`, :meth:`ParsingHRNet.init_encoder`, :meth:`RGBDParsingHRNet.
init_encoders`): from a flat HRNet state dict (``transfer_ckpt.py``'s output, our
``humanvision.methods.hcmoco.export_encoders`` files ``rgb_encoder.pth`` / ``depth_encoder.pth``, or an ImageNet
``hrnetv2_w18_imagenet_pretrained.pth``, whose classification-head keys are dropped by name), from a whole HCMoCo
checkpoint (``encoder1`` or ``encoder2`` picked by ``which``) or from a trained :class:`ParsingHRNet` (its
``encoder.*``). Every trunk key must be present with our shape; the returned :class:`InitReport` lists what was
loaded, what was dropped and what stays at its initialisation.

Entry points: ``parsing_hrnet_w18``, ``parsing_hrnet_w32``, ``parsing_hrnet_tiny`` (the tiny trunk of
``hcmoco_tiny``: 1 block per branch, 8/16/32/64 channels, 120 merged channels; for tests and CPU recipes) and
``parsing_rgbd_hrnet_{w18,w32,tiny}`` (the tiny one with a 32-d embedding). :func:`~humanvision.models.
create_model` passes a ``skeleton``, which these models ignore.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from humanvision.errors import ConfigError, DataError
from humanvision.models._registry import register_model
from humanvision.models.hcmoco import TINY_HRNET, HRNetEncoder, extract_encoder

__all__ = ["PARSING_MODES", "InitReport", "ParsingHRNet", "RGBDParsingHRNet", "load_encoder_init",
           "read_state_dict"]

#: Outputs of :class:`RGBDParsingHRNet`: max-fused, RGB only, depth only (HCMoCo's types 0, 1, 2).
PARSING_MODES: tuple[str, ...] = ("fused", "rgb", "depth")


def _init_conv_bn(module: nn.Module) -> None:
    """The official HRNet initialisation: conv weights N(0, 0.001), conv biases 0, BN weight 1 and bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.001)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ------------------------------------------------------------------------------------------------ init files
@dataclass
class InitReport:
    """What an encoder initialisation did: ``source`` file (or ``"state_dict"``), its ``layout`` (``flat``,
    ``hcmoco:encoder1`` ...), the number of tensors ``loaded``, the ``dropped`` keys of the file (ImageNet head,
    the other encoder ...) and the model keys ``left`` at their initialisation."""

    source: str
    layout: str
    loaded: int
    dropped: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"initialised {self.loaded} tensors from {self.source} ({self.layout}); {len(self.dropped)} keys "
                f"of the file dropped; {len(self.left)} model tensors left at their initialisation")


def read_state_dict(source: str | Path | Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """A tensor state dict and its name from a file (``.safetensors``, ``.pth``: :func:`~humanvision.models.
    weights.read_checkpoint`, which unwraps ``model`` / ``state_dict`` and strips ``module.``), a run or checkpoint
    folder (its ``model.safetensors``), or a mapping. Our HCMoCo pre-training checkpoints (``model.encoder1.*``
    beside ``bank.memory_*``) come back as the model's keys without ``model.`` (the bank left out)."""
    if isinstance(source, Mapping):
        sd = source.get("model", source) if isinstance(source.get("model"), Mapping) else source
        state = {k.removeprefix("module."): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
        return state, "state_dict"
    from humanvision.engine.checkpoint import weights_file
    from humanvision.models.weights import read_checkpoint

    if not Path(source).exists():
        raise ConfigError(f"model.init: file not found: {source}")
    file = weights_file(source, "model.init")
    state = read_checkpoint(file)
    if any(k.startswith(("model.encoder1.", "model.encoder2.")) for k in state):  # an HCMoCo run of ours
        state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    return state, str(file)


def _layout(state: Mapping[str, torch.Tensor]) -> str:
    if any(k.startswith(("encoder1.", "encoder2.")) for k in state):
        return "hcmoco"
    if any(k.startswith("encoder.") for k in state):
        return "parsing"
    if any(k.startswith("model.encoder.") for k in state):
        return "parsing_method"
    return "flat"


def load_encoder_init(encoder: HRNetEncoder, source: str | Path | Mapping[str, torch.Tensor],
                      which: str = "encoder1") -> InitReport:
    """Load HRNet weights into ``encoder`` from a flat HRNet state dict, an HCMoCo checkpoint / state dict
    (``which`` = ``encoder1`` RGB or ``encoder2`` depth) or a trained parsing model (its ``encoder.*``).

    Every key of the encoder must be in the file with the same shape (else a DataError naming the file and key);
    other keys are dropped and listed in the report."""
    state, name = read_state_dict(source)
    layout = _layout(state)
    if layout == "hcmoco":
        flat = extract_encoder(state, which)
        others = [k for k in state if not k.startswith(which + ".")]
        layout = f"hcmoco:{which}"
    elif layout in ("parsing", "parsing_method"):
        prefix = "encoder." if layout == "parsing" else "model.encoder."
        flat = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        others = [k for k in state if not k.startswith(prefix)]
    else:
        flat, others = state, []
    dropped = encoder.load_pretrained(flat, source=name)
    return InitReport(name, layout, len(encoder.state_dict()), sorted(others) + dropped)


# ------------------------------------------------------------------------------------------------ RGB / depth
class ParsingHRNet(nn.Module):
    """HRNetV2 human parsing (module docstring): ``(B, in_chans, H, W)`` -> logits ``(B, num_classes, H, W)``.

    Args:
        variant: timm HRNet name of the trunk (``hrnet_w18``, ``hrnet_w32``).
        num_classes: parsing classes (25: background + 24 Human3.6M parts).
        in_chans: input channels (3 for RGB and for the replicated depth).
        hrnet_args: timm config overrides for reduced trunks (``TINY_HRNET``).
        bn_momentum: momentum of every BatchNorm (0.01, the segmentation HRNet's).
        fuse_upsample: see :class:`~humanvision.models.hcmoco.HRNetEncoder`.
    """

    model_name: str = ""

    def __init__(self, variant: str = "hrnet_w18", num_classes: int = 25, in_chans: int = 3, *,
                 hrnet_args: Mapping[str, Any] | None = None, bn_momentum: float = 0.01,
                 fuse_upsample: str = "bilinear") -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"model.num_classes: at least 2 classes, got {num_classes}")
        self.encoder = HRNetEncoder(variant, in_chans, bn_momentum=bn_momentum, fuse_upsample=fuse_upsample,
                                    init="hrnet", hrnet_args=hrnet_args)
        c = self.encoder.num_features
        self.head = nn.Sequential(nn.Conv2d(c, c, 1), nn.BatchNorm2d(c, momentum=bn_momentum), nn.ReLU(inplace=True),
                                  nn.Conv2d(c, num_classes, 1))
        _init_conv_bn(self.head)
        self.num_classes, self.in_chans, self.variant = num_classes, in_chans, variant
        self.model_args: dict[str, Any] = {}
        self.default_cfg: dict[str, Any] = {"model": self.model_name, "num_classes": num_classes,
                                            "hrnet": variant, "in_chans": in_chans}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The merged stride-4 map ``(B, C, H/4, W/4)`` (270 channels for W18)."""
        return HRNetEncoder.merge(self.encoder(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W)`` -> logits ``(B, num_classes, H, W)`` (any H, W)."""
        logits = self.head(self.forward_features(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def init_encoder(self, source: str | Path | Mapping[str, torch.Tensor], which: str = "encoder1"
                     ) -> InitReport:
        """:func:`load_encoder_init` into ``self.encoder``; the head stays at its initialisation."""
        report = load_encoder_init(self.encoder, source, which)
        report.left = [f"head.{k}" for k in self.head.state_dict()]
        return report


# ------------------------------------------------------------------------------------------------------ RGB-D
class RGBDParsingHRNet(nn.Module):
    """The versatility model (A.7.5, module docstring): two HRNets, their 128-d dense projections and one shared
    FCN head; ``forward(rgb, depth, mode)`` -> logits ``(B, num_classes, H, W)``.

    Args:
        variant: timm HRNet name of both trunks.
        num_classes: parsing classes (25).
        embed_dim: channels of the dense projections (128, HCMoCo's ``linear_merge``).
        hrnet_args, bn_momentum, fuse_upsample: of both encoders (see :class:`ParsingHRNet`).
    """

    model_name: str = ""

    def __init__(self, variant: str = "hrnet_w18", num_classes: int = 25, embed_dim: int = 128, *,
                 hrnet_args: Mapping[str, Any] | None = None, bn_momentum: float = 0.01,
                 fuse_upsample: str = "bilinear") -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"model.num_classes: at least 2 classes, got {num_classes}")
        enc = {"bn_momentum": bn_momentum, "fuse_upsample": fuse_upsample, "init": "hrnet", "hrnet_args": hrnet_args}
        self.encoder1 = HRNetEncoder(variant, 3, **enc)
        self.encoder2 = HRNetEncoder(variant, 3, **enc)
        c = self.encoder1.num_features
        self.encoder1_linear = nn.Conv2d(c, embed_dim, 1, bias=True)
        self.encoder2_linear = nn.Conv2d(c, embed_dim, 1, bias=True)
        self.seg_head = nn.Sequential(nn.Conv2d(embed_dim, embed_dim, 1, bias=False), nn.BatchNorm2d(embed_dim),
                                      nn.ReLU(inplace=True), nn.Conv2d(embed_dim, num_classes, 1))
        self.num_classes, self.embed_dim, self.variant = num_classes, embed_dim, variant
        self.model_args: dict[str, Any] = {}
        self.default_cfg: dict[str, Any] = {"model": self.model_name, "num_classes": num_classes,
                                            "hrnet": variant, "embed_dim": embed_dim}

    def embed_rgb(self, rgb: torch.Tensor) -> torch.Tensor:
        """L2-normalised RGB map ``(B, embed_dim, H/4, W/4)``."""
        return F.normalize(self.encoder1_linear(HRNetEncoder.merge(self.encoder1(rgb))), dim=1)

    def embed_depth(self, depth: torch.Tensor) -> torch.Tensor:
        """L2-normalised depth map ``(B, embed_dim, H/4, W/4)``."""
        return F.normalize(self.encoder2_linear(HRNetEncoder.merge(self.encoder2(depth))), dim=1)

    def classify(self, feat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The shared head on a normalised (or fused) map, upsampled to ``size``."""
        return F.interpolate(self.seg_head(feat), size=size, mode="bilinear", align_corners=False)

    def forward(self, rgb: torch.Tensor | None = None, depth: torch.Tensor | None = None,
                mode: str = "fused") -> torch.Tensor:
        """Logits of one output (``fused``, ``rgb`` or ``depth``); only the encoders that output needs run."""
        return self.forward_modes(rgb, depth, (mode,))[mode]

    def forward_modes(self, rgb: torch.Tensor | None, depth: torch.Tensor | None,
                      modes: tuple[str, ...] = PARSING_MODES) -> dict[str, torch.Tensor]:
        """Logits of several outputs from one pass of each needed encoder: ``{mode: (B, K, H, W)}``."""
        bad = [m for m in modes if m not in PARSING_MODES]
        if bad:
            raise ConfigError(f"mode: expected one of {list(PARSING_MODES)}, got {bad[0]!r}")
        need_rgb = any(m in ("fused", "rgb") for m in modes)
        need_depth = any(m in ("fused", "depth") for m in modes)
        if (need_rgb and rgb is None) or (need_depth and depth is None):
            missing = "rgb" if need_rgb and rgb is None else "depth"
            raise DataError(f"outputs {list(modes)} need the {missing} input", field=missing)
        ref = rgb if rgb is not None else depth
        size = tuple(ref.shape[-2:])
        if rgb is not None and depth is not None and rgb.shape[-2:] != depth.shape[-2:]:
            raise DataError(f"rgb is {tuple(rgb.shape[-2:])} but depth {tuple(depth.shape[-2:])}; they must be "
                            "pixel-aligned", field="depth")
        f_rgb = self.embed_rgb(rgb) if need_rgb else None
        f_depth = self.embed_depth(depth) if need_depth else None
        feats = {"rgb": f_rgb, "depth": f_depth}
        out = {}
        for m in modes:
            feat = torch.maximum(f_rgb, f_depth) if m == "fused" else feats[m]
            out[m] = self.classify(feat, size)
        return out

    def init_encoders(self, source: str | Path | Mapping[str, torch.Tensor]) -> InitReport:
        """Initialise from an HCMoCo checkpoint / state dict (``encoder1``, ``encoder2`` and, when present (stage
        2), ``encoder{1,2}_linear``) or from a flat HRNet state dict, loaded into *both* encoders (HCMoCo's
        ImageNet init of both)."""
        state, name = read_state_dict(source)
        if _layout(state) != "hcmoco":
            dropped = self.encoder1.load_pretrained(state, source=name)
            self.encoder2.load_pretrained(state, source=name)
            loaded = 2 * len(self.encoder1.state_dict())
            left = [k for k in self.state_dict() if not k.startswith(("encoder1.", "encoder2."))]
            return InitReport(name, "flat (both encoders)", loaded, dropped, left)
        load_encoder_init(self.encoder1, state, "encoder1")
        load_encoder_init(self.encoder2, state, "encoder2")
        loaded, used = 2 * len(self.encoder1.state_dict()), {"encoder1", "encoder2"}
        for lin in ("encoder1_linear", "encoder2_linear"):
            sub = {k[len(lin) + 1:]: v for k, v in state.items() if k.startswith(lin + ".")}
            if sub:
                own = getattr(self, lin)
                for k, v in own.state_dict().items():
                    if k not in sub or tuple(sub[k].shape) != tuple(v.shape):
                        got = tuple(sub[k].shape) if k in sub else "missing"
                        raise DataError(f"{lin}.{k}: {got} where the model has {tuple(v.shape)}", file=name)
                own.load_state_dict(sub, strict=True)
                loaded += len(sub)
                used.add(lin)
        dropped = sorted(k for k in state if k.split(".")[0] not in used)
        left = [k for k in self.state_dict() if k.split(".")[0] not in used]
        return InitReport(name, "hcmoco", loaded, dropped, left)


# ------------------------------------------------------------------------------------------------- registry
def _create(cls: type, name: str, variant: str, defaults: dict[str, Any], kwargs: dict[str, Any]) -> Any:
    model = cls(variant, **{**defaults, **kwargs})
    model.model_name = model.default_cfg["model"] = name
    model.model_args = dict(kwargs)
    return model


@register_model
def parsing_hrnet_w18(skeleton: Any = None, **kwargs: Any) -> ParsingHRNet:
    """HRNetV2-W18 parsing (270 merged channels), A.7.2 / A.7.3."""
    return _create(ParsingHRNet, "parsing_hrnet_w18", "hrnet_w18", {}, kwargs)


@register_model
def parsing_hrnet_w32(skeleton: Any = None, **kwargs: Any) -> ParsingHRNet:
    """HRNetV2-W32 parsing (480 merged channels)."""
    return _create(ParsingHRNet, "parsing_hrnet_w32", "hrnet_w32", {}, kwargs)


@register_model
def parsing_hrnet_tiny(skeleton: Any = None, **kwargs: Any) -> ParsingHRNet:
    """Tiny parsing HRNet for tests and CPU recipes: ``hcmoco_tiny``'s trunk (120 merged channels)."""
    return _create(ParsingHRNet, "parsing_hrnet_tiny", "hrnet_w18", {"hrnet_args": TINY_HRNET}, kwargs)


@register_model
def parsing_rgbd_hrnet_w18(skeleton: Any = None, **kwargs: Any) -> RGBDParsingHRNet:
    """RGB-D versatility model with two HRNet-W18 encoders, 128-d projections and a shared FCN head (A.7.5)."""
    return _create(RGBDParsingHRNet, "parsing_rgbd_hrnet_w18", "hrnet_w18", {}, kwargs)


@register_model
def parsing_rgbd_hrnet_w32(skeleton: Any = None, **kwargs: Any) -> RGBDParsingHRNet:
    """RGB-D versatility model with two HRNet-W32 encoders."""
    return _create(RGBDParsingHRNet, "parsing_rgbd_hrnet_w32", "hrnet_w32", {}, kwargs)


@register_model
def parsing_rgbd_hrnet_tiny(skeleton: Any = None, **kwargs: Any) -> RGBDParsingHRNet:
    """Tiny RGB-D model (``hcmoco_tiny``'s trunks and its 32-d dense maps)."""
    return _create(RGBDParsingHRNet, "parsing_rgbd_hrnet_tiny", "hrnet_w18",
                   {"hrnet_args": TINY_HRNET, "embed_dim": 32}, kwargs)
