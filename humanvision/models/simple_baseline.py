"""Convolutional and Swin heatmap baselines built from timm backbones (``pretrained=False``; load weights from a
local file with :mod:`humanvision.models.weights`).

* **SimpleBaseline** (Xiao et al., "Simple Baselines for Human Pose Estimation and Tracking", ECCV 2018,
  https://arxiv.org/abs/1804.06208): the stride-32 feature map of a ResNet or Swin backbone, then 3 x [deconv 4x4
  s2 -> BN -> ReLU] with 256 channels and a 1x1 conv: ``(B, K, H/4, W/4)``. Swin features are taken after the
  backbone's final LayerNorm.
* **HRNet** (Sun et al., "Deep High-Resolution Representation Learning for Human Pose Estimation", CVPR 2019,
  https://arxiv.org/abs/1902.09212): the stride-4 (highest-resolution) branch of the last stage, then a 1x1 conv,
  as the original pose head. The last stage fuses into that branch only (``multi_scale_output=False`` in the
  reference), so the unused low-resolution fusions are removed from timm's network.

These follow the original papers' MSRA heatmap convention (``default_cfg['udp'] = False``); ``udp=True`` may be
passed to any entry point to record the UDP convention instead. ``simplebaseline_tiny`` (ours) is a 4-stage
ResNet with one BasicBlock of 32-256 channels per stage, the last stage dilated (output stride 16, an 8x6 map
for 128x96 input) and 2 x 64-channel deconvs to 32x24 heatmaps: 1.6 M parameters, UDP, for tests and CPU demos
(in a short CPU trial it localised far better per step than the stride-32 version at about the same cost).
"""

from __future__ import annotations

import re
from typing import Any

import timm
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from humanvision.models._base import PoseModel, build_variant
from humanvision.models._registry import register_model
from humanvision.models.heads import DeconvHead

__all__ = ["HRNetPose", "SimpleBaseline"]


class SimpleBaseline(PoseModel):
    """timm backbone (stride-32, or 16 with ``output_stride=16`` in ``backbone_args``) + deconvolution head.

    Args:
        skeleton: joint-set name.
        input_size: crop ``(width, height)``, divisible by 32.
        backbone: timm model name (a ResNet or a Swin Transformer); built with ``pretrained=False``.
        backbone_args: extra keyword arguments for ``timm.create_model`` (``layers``, ``drop_path_rate`` ...).
        num_deconv, deconv_channels: deconvolution head (3 x 256 in the paper); ``num_deconv=None`` brings the
            backbone's stride down to 4 (3 for stride 32, 2 for stride 16).
        udp: which crop/decoding convention the model is meant for (recorded in ``default_cfg``).
        layer_decay: recommended layer-wise lr decay (1.0: none).
    """

    def __init__(self, skeleton: Any = "coco17", input_size: int | tuple[int, int] = (192, 256), *,
                 backbone: str = "resnet50", backbone_args: dict[str, Any] | None = None, num_deconv: int | None = None,
                 deconv_channels: int = 256, udp: bool = False, layer_decay: float = 1.0,
                 grad_checkpointing: bool = False) -> None:
        super().__init__(skeleton, input_size, udp=udp, codec="udp_heatmap" if udp else "msra_heatmap",
                         layer_decay=layer_decay)
        w, h = self.input_size
        if w % 32 or h % 32:
            raise ValueError(f"input_size {self.input_size} must be divisible by 32 for a stride-32 backbone")
        self.is_swin = backbone.startswith("swin")
        extra = {"img_size": (h, w)} if self.is_swin else {}
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0, global_pool="",
                                          **extra, **(backbone_args or {}))
        stride = self.backbone.feature_info[-1]["reduction"]
        num_deconv = {32: 3, 16: 2, 8: 1}.get(stride, -1) if num_deconv is None else num_deconv
        if num_deconv < 0 or stride != 4 * 2 ** num_deconv:
            raise ValueError(f"{num_deconv} deconvs cannot bring a stride-{stride} backbone to stride 4")
        self.head = DeconvHead(self.backbone.num_features, self.num_joints, num_deconv=num_deconv,
                               deconv_channels=deconv_channels)
        self.set_grad_checkpointing(grad_checkpointing)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, C, H/32, W/32)`` (H/16 for ``output_stride=16``)."""
        x = self.backbone.forward_features(x)
        return x.permute(0, 3, 1, 2) if self.is_swin else x  # timm Swin returns NHWC

    def _swin_stages(self) -> list[tuple[int, int]]:
        """(1 if the stage starts with a patch merging else 0, number of blocks) for each timm Swin stage."""
        return [(int(next(stage.downsample.parameters(), None) is not None), len(stage.blocks))
                for stage in self.backbone.layers]

    @property
    def num_layers(self) -> int:
        return sum(merge + blocks for merge, blocks in self._swin_stages()) + 2 if self.is_swin else 1

    def layer_id(self, name: str) -> int:
        """Swin, the PCT rule (pose2d.md 3.2, utils/optimzer_ld.py): patch embedding 0, then every block and every
        patch merging is one layer, in forward order (timm's ``layers.s.downsample`` runs before the blocks of stage
        s), final norm and head ``num_layers - 1``; Swin-B (depths 2-2-18-2) has 29 ids. CNNs: a single group (0)."""
        if not self.is_swin:
            return 0
        if name.startswith("backbone.patch_embed"):
            return 0
        m = re.match(r"backbone\.layers\.(\d+)\.(?:blocks\.(\d+)|downsample)", name)
        if m:
            stages, s = self._swin_stages(), int(m.group(1))
            first = 1 + sum(merge + blocks for merge, blocks in stages[:s])  # the stage's merging, else block 0
            return first if m.group(2) is None else first + stages[s][0] + int(m.group(2))
        return self.num_layers - 1


class HRNetPose(PoseModel):
    """HRNet backbone (timm) keeping only the stride-4 branch of the last stage, then a 1x1 conv.

    Args:
        skeleton: joint-set name.
        input_size: crop ``(width, height)``, divisible by 32.
        backbone: timm HRNet name (``hrnet_w32``, ``hrnet_w48``, ``hrnet_w18_small`` ...).
        udp: recorded convention (the paper uses MSRA heatmaps).
    """

    def __init__(self, skeleton: Any = "coco17", input_size: int | tuple[int, int] = (192, 256), *,
                 backbone: str = "hrnet_w32", udp: bool = False, grad_checkpointing: bool = False) -> None:
        super().__init__(skeleton, input_size, udp=udp, codec="udp_heatmap" if udp else "msra_heatmap")
        w, h = self.input_size
        if w % 32 or h % 32:
            raise ValueError(f"input_size {self.input_size} must be divisible by 32 for HRNet")
        self.backbone = timm.create_model(backbone, pretrained=False, features_only=True, feature_location="",
                                          out_indices=(1,))
        # Fuse the last stage into the highest-resolution branch only (multi_scale_output=False).
        last = self.backbone.stage4[-1]
        last.fuse_layers = last.fuse_layers[:1]
        last.multi_scale_output = False
        channels = self.backbone.feature_info.channels()[-1]
        self.head = DeconvHead(channels, self.num_joints, num_deconv=0)
        self.grad_checkpointing = grad_checkpointing

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        b = self.backbone
        x = b.act1(b.bn1(b.conv1(x)))
        return b.layer1(b.act2(b.bn2(b.conv2(x))))

    def _run(self, stage: nn.Module, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        # timm's HRNet modules overwrite their input list in place, so each call gets a fresh list.
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(lambda *t: stage(list(t)), *xs, use_reentrant=False)
        return stage(list(xs))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, C, H/4, W/4)`` (C = 32 for W32)."""
        b = self.backbone
        if self.grad_checkpointing and torch.is_grad_enabled():
            x = checkpoint(self._stem, x, use_reentrant=False)
        else:
            x = self._stem(x)
        xl = [t(x) for t in b.transition1]
        yl = self._run(b.stage2, xl)
        xl = [yl[i] if isinstance(t, nn.Identity) else t(yl[-1]) for i, t in enumerate(b.transition2)]
        yl = self._run(b.stage3, xl)
        xl = [yl[i] if isinstance(t, nn.Identity) else t(yl[-1]) for i, t in enumerate(b.transition3)]
        return self._run(b.stage4, xl)[0]


def _simple_baseline(variant: str, skeleton: Any, model_args: dict[str, Any], kwargs: dict[str, Any]):
    return build_variant(SimpleBaseline, variant, skeleton, model_args, kwargs)


def _hrnet(variant: str, skeleton: Any, model_args: dict[str, Any], kwargs: dict[str, Any]):
    return build_variant(HRNetPose, variant, skeleton, model_args, kwargs)


@register_model
def simplebaseline_tiny(skeleton: Any = "coco17", **kwargs: Any) -> SimpleBaseline:
    """Tiny SimpleBaseline for tests and CPU demos: ResNet 1-1-1-1 BasicBlocks (32-256 ch, output stride 16),
    2 x 64-ch deconvs, 128x96 input, 32x24 heatmaps."""
    args = {"input_size": (96, 128), "backbone": "resnet18", "deconv_channels": 64, "udp": True,
            "backbone_args": {"layers": (1, 1, 1, 1), "channels": (32, 64, 128, 256), "stem_width": 32,
                              "output_stride": 16}}
    return _simple_baseline("simplebaseline_tiny", skeleton, args, kwargs)


@register_model
def simplebaseline_resnet18(skeleton: Any = "coco17", **kwargs: Any) -> SimpleBaseline:
    """SimpleBaseline ResNet-18, 256x192."""
    return _simple_baseline("simplebaseline_resnet18", skeleton, {"backbone": "resnet18"}, kwargs)


@register_model
def simplebaseline_resnet50(skeleton: Any = "coco17", **kwargs: Any) -> SimpleBaseline:
    """SimpleBaseline ResNet-50, 256x192 (COCO val AP 70.4 with detected boxes in the paper)."""
    return _simple_baseline("simplebaseline_resnet50", skeleton, {"backbone": "resnet50"}, kwargs)


@register_model
def simplebaseline_swin_tiny(skeleton: Any = "coco17", **kwargs: Any) -> SimpleBaseline:
    """Swin-T (window 7) + SimpleBaseline head, 256x192."""
    args = {"backbone": "swin_tiny_patch4_window7_224", "backbone_args": {"drop_path_rate": 0.2}}
    return _simple_baseline("simplebaseline_swin_tiny", skeleton, args, kwargs)


@register_model
def simplebaseline_swin_base(skeleton: Any = "coco17", **kwargs: Any) -> SimpleBaseline:
    """Swin-B (window 7) + SimpleBaseline head, 256x192."""
    args = {"backbone": "swin_base_patch4_window7_224", "backbone_args": {"drop_path_rate": 0.3}}
    return _simple_baseline("simplebaseline_swin_base", skeleton, args, kwargs)


@register_model
def hrnet_w32(skeleton: Any = "coco17", **kwargs: Any) -> HRNetPose:
    """HRNet-W32 pose network, 256x192 (COCO val AP 74.4 with detected boxes in the paper)."""
    return _hrnet("hrnet_w32", skeleton, {"backbone": "hrnet_w32"}, kwargs)


@register_model
def hrnet_w48(skeleton: Any = "coco17", **kwargs: Any) -> HRNetPose:
    """HRNet-W48 pose network, 256x192 (COCO val AP 75.1 with detected boxes in the paper)."""
    return _hrnet("hrnet_w48", skeleton, {"backbone": "hrnet_w48"}, kwargs)
