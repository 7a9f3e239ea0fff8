"""ResNet + deconvolution with a heatmap head and a per-pixel depth head: the "v2" network of the weakly supervised
3D pose code of Zhou et al. (ICCV 2017; ``msra_resnet.py`` of pytorch-pose-hg-3d master, pose3d.md §5.2).

It is a :class:`~humanvision.models.simple_baseline.SimpleBaseline` (timm ResNet, ``pretrained=False``, then
3 x [ConvTranspose 4x4 s2 + BN + ReLU] with 256 channels and the 1x1 ``hm`` conv) plus a second 1x1 conv with bias,
``depth_head`` (256 -> K), on the same deconvolution features. Both 1x1 convs start at N(0, 0.001), bias 0.
Input 256x256, outputs ``(K, 64, 64)`` each. The depth map is read at a joint's 2D location; its unit is the
crop width (``default_cfg["depth_unit"] = 1``): the target is the root-relative depth in image pixels divided by
the crop size (pose3d.md §5.3).

Because the backbone and heatmap head are a SimpleBaseline's (same module names), a 2D SimpleBaseline checkpoint
loads into this model with only ``depth_head.*`` missing. ``forward(x)`` returns the heatmaps (the 2D contract);
:meth:`ResNetDepth.forward_pose3d` returns ``{"hm": [heatmaps], "depth": (B, K, H/4, W/4)}``. The ``*_mini``
variant is not named ``*_tiny``: its depth head gets no gradient from the heatmaps alone, which the ``*tiny``
model contract asks of every parameter.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from humanvision.models._base import build_variant
from humanvision.models._registry import register_model
from humanvision.models.simple_baseline import SimpleBaseline

__all__ = ["ResNetDepth"]


class ResNetDepth(SimpleBaseline):
    """SimpleBaseline with a 1x1 depth-map head on the deconvolution features.

    Args:
        skeleton: joint-set name (``mpii16`` for the published model).
        input_size: crop ``(width, height)``, divisible by 32.
        backbone, backbone_args, num_deconv, deconv_channels: as :class:`SimpleBaseline`.
    """

    def __init__(self, skeleton: Any = "mpii16", input_size: int | tuple[int, int] = (256, 256), *,
                 backbone: str = "resnet50", backbone_args: dict[str, Any] | None = None,
                 num_deconv: int | None = None, deconv_channels: int = 256,
                 grad_checkpointing: bool = False) -> None:
        super().__init__(skeleton, input_size, backbone=backbone, backbone_args=backbone_args,
                         num_deconv=num_deconv, deconv_channels=deconv_channels, udp=False,
                         grad_checkpointing=grad_checkpointing)
        self.depth_head = nn.Conv2d(self.head.final_layer.in_channels, self.num_joints, 1)
        nn.init.normal_(self.depth_head.weight, std=0.001)
        nn.init.zeros_(self.depth_head.bias)
        self.default_cfg.update({"depth_head": "map", "depth_unit": 1.0, "num_stacks": 1})

    def forward_pose3d(self, x: torch.Tensor) -> dict[str, Any]:
        """``{"hm": [(B, K, H/4, W/4)], "depth": (B, K, H/4, W/4)}`` (depth in crop widths)."""
        feats = self.head.deconv_layers(self.forward_features(x))
        return {"hm": [self.head.final_layer(feats)], "depth": self.depth_head(feats)}


def _resnet_depth(variant: str, skeleton: Any, model_args: dict[str, Any], kwargs: dict[str, Any]):
    return build_variant(ResNetDepth, variant, skeleton, model_args, kwargs)


@register_model
def resnet_depth_50(skeleton: Any = "mpii16", **kwargs: Any) -> ResNetDepth:
    """The v2 network (``msra_50``): ResNet-50, 3 x 256-channel deconvs, ``hm`` and ``depth`` heads, 256x256 input,
    64x64 outputs (H36M MPJPE 64.55 mm under the HG protocol with MPII + H36M training)."""
    return _resnet_depth("resnet_depth_50", skeleton, {"backbone": "resnet50"}, kwargs)


@register_model
def resnet_depth_mini(skeleton: Any = "mpii16", **kwargs: Any) -> ResNetDepth:
    """Small variant for tests and CPU demos: ResNet 1-1-1-1 BasicBlocks (32-256 channels, output stride 16),
    2 x 32-channel deconvs, 64x64 input, 16x16 heatmaps and depth maps."""
    args = {"input_size": (64, 64), "backbone": "resnet18", "deconv_channels": 32,
            "backbone_args": {"layers": (1, 1, 1, 1), "channels": (32, 64, 128, 256), "stem_width": 32,
                              "output_stride": 16}}
    return _resnet_depth("resnet_depth_mini", skeleton, args, kwargs)
