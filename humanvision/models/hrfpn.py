"""HRFPN: the feature pyramid that turns HRNet's four branches into the five levels ``p1``-``p5`` read by the RPN and
ROI heads of HCMoCo's DensePose recipe (pretraining.md A.7.1: ``build_hrfpn_backbone``, ``IN_FEATURES ['p1' ..
'p5']``).

HRFPN comes from HRNetV2p (Sun et al., "High-Resolution Representations for Labeling Pixels and Regions", 2019,
https://arxiv.org/abs/1904.04514). The brief names the backbone builder only; everything below about the layers is
our choice, in two layouts (``style``), both giving ``{"p1": stride 4, "p2": 8, "p3": 16, "p4": 32, "p5": 64}``
with ``out_channels`` (256) channels each:

* ``"hrfpn"`` (default), the paper's HRFPN: the branches upsampled bilinearly (align_corners False, to branch 0's
  size, as :meth:`~humanvision.models.hcmoco.HRNetEncoder.merge`) and concatenated (270 channels for W18),
  ``reduction_conv`` (1x1 conv with bias to ``out_channels``), average pooling with kernel = stride = ``2^k`` for
  level ``k = 0..4``, then ``fpn_conv.<k>`` (3x3 conv with bias, padding 1) per level. No normalisation, no
  activation.
* ``"densepose"``: the layout of the HRFPN in detectron2's DensePose project, which the ``build_hrfpn_backbone``
  name of HCMoCo's config refers to (not in the brief: its module names, shapes and crop rules were read from that
  project's ``densepose/modeling/hrfpn.py`` as interface facts, so that a neck written by
  :mod:`humanvision.models.detectron2_export` loads there by name; the code here is ours):
  ``interp_conv.<i>`` = ``ConvTranspose2d(c_i, c_i, 4, stride 2^i, padding 0, bias=False) + BN + ReLU`` per branch
  (a learnt upsampling to stride 4; each output is ``(n - 1) 2^i + 4`` pixels, cropped to the smallest before the
  concatenation), ``reduction_pooling_conv.<k>`` = ``Conv2d(sum c_i, out, kernel 2^k, stride 2^k) + BN + ReLU``
  per level (the 1x1 reduction and the pooling in one strided conv), every level cropped to ``2^(4-k)`` times the
  size of level 4, then ``fpn_conv.<k>`` (3x3 conv with bias). BN momentum 0.1 (PyTorch's default).

Initialisation (both): every ``Conv2d`` Kaiming-normal with ``a = 1``, bias 0; BN 1 / 0; the transposed convs
PyTorch's default. The module is not a registry entry (it is a neck, not a model).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from humanvision.errors import ConfigError, DataError

__all__ = ["HRFPN"]


class HRFPN(nn.Module):
    """HRNet branches -> ``{"p1": ..., "p5": ...}`` (module docstring).

    Args:
        in_channels: channels of the HRNet branches, highest resolution first ((18, 36, 72, 144) for W18).
        out_channels: channels of every level (256; detectron2's ``MODEL.HRNET.HRFPN.OUT_CHANNELS``).
        num_levels: output levels (5: ``p1``-``p5``; detectron2 uses ``len(ROI_HEADS.IN_FEATURES)``).
        style: ``"hrfpn"`` (the paper's) or ``"densepose"`` (detectron2 DensePose's layer layout).
    """

    def __init__(self, in_channels: Sequence[int] = (18, 36, 72, 144), out_channels: int = 256, num_levels: int = 5,
                 style: Literal["hrfpn", "densepose"] = "hrfpn") -> None:
        super().__init__()
        if style not in ("hrfpn", "densepose"):
            raise ConfigError(f"HRFPN style: 'hrfpn' or 'densepose', got {style!r}")
        if not in_channels or min(in_channels) < 1 or out_channels < 1 or num_levels < 1:
            raise ConfigError(f"HRFPN: need branch channels, out_channels and num_levels >= 1, got {list(in_channels)}"
                              f", {out_channels}, {num_levels}")
        self.in_channels, self.out_channels = tuple(int(c) for c in in_channels), int(out_channels)
        self.num_levels, self.style = int(num_levels), style
        total = sum(self.in_channels)
        if style == "hrfpn":
            self.reduction_conv = nn.Conv2d(total, out_channels, 1)
        else:
            self.interp_conv = nn.ModuleList(
                nn.Sequential(nn.ConvTranspose2d(c, c, 4, stride=2 ** i, padding=0, bias=False), nn.BatchNorm2d(c),
                              nn.ReLU(inplace=True))
                for i, c in enumerate(self.in_channels))
            self.reduction_pooling_conv = nn.ModuleList(
                nn.Sequential(nn.Conv2d(total, out_channels, 2 ** k, stride=2 ** k), nn.BatchNorm2d(out_channels),
                              nn.ReLU(inplace=True))
                for k in range(self.num_levels))
        self.fpn_conv = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1)
                                      for _ in range(self.num_levels))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    @property
    def out_features(self) -> tuple[str, ...]:
        """``("p1", ..., "p<num_levels>")``."""
        return tuple(f"p{k + 1}" for k in range(self.num_levels))

    @property
    def strides(self) -> dict[str, int]:
        """Stride of each level: ``p<k+1>`` is ``2^(k+2)`` (4 ... 64)."""
        return {name: 2 ** (k + 2) for k, name in enumerate(self.out_features)}

    def forward(self, feats: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """HRNet branch maps ``[(B, c_i, H/2^(i+2), W/2^(i+2))]`` -> ``{"p1": (B, out, ., .), ...}``."""
        if len(feats) != len(self.in_channels) or any(f.shape[1] != c for f, c in zip(feats, self.in_channels)):
            raise DataError(f"expected {len(self.in_channels)} branch maps with {list(self.in_channels)} channels, got "
                            f"{[tuple(f.shape) for f in feats]}", field="feats")
        if self.style == "hrfpn":
            size = feats[0].shape[-2:]
            x = torch.cat([feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                                        for f in feats[1:]], 1)
            x = self.reduction_conv(x)
            levels = [x] + [F.avg_pool2d(x, 2 ** k, stride=2 ** k) for k in range(1, self.num_levels)]
        else:
            ups = [conv(f) for conv, f in zip(self.interp_conv, feats)]
            h, w = min(u.shape[2] for u in ups), min(u.shape[3] for u in ups)
            x = torch.cat([u[:, :, :h, :w] for u in ups], 1)
            levels = [conv(x) for conv in self.reduction_pooling_conv]
            lh, lw = levels[-1].shape[-2:]
            n = self.num_levels
            levels = [t[:, :, :lh * 2 ** (n - 1 - k), :lw * 2 ** (n - 1 - k)] for k, t in enumerate(levels)]
        return {name: conv(t) for name, conv, t in zip(self.out_features, self.fpn_conv, levels)}
