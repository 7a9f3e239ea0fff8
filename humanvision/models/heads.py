"""Heatmap heads: the deconvolution head (ViTPose "classic", SimpleBaseline, HRNet) and the ViTPose "simple" head.

Module names follow the official checkpoints (``deconv_layers.{0,1,3,4,...}``, ``final_layer``) so that loading
ViTPose weights is a prefix rename (ViTAE-Transformer/ViTPose:mmpose/models/heads/topdown_heatmap_simple_head.py).
Initialisation as in the reference: transposed convs N(0, 0.001), BN (1, 0), final conv N(0, 0.001) with bias 0
(small outputs, so the initial MSE against ~1e-3-sized targets is well behaved).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DeconvHead", "SimpleHead"]


class DeconvHead(nn.Module):
    """``num_deconv`` x [ConvTranspose2d(k=4, s=2, p=1, bias=False) -> BN -> ReLU], then a ``final_kernel`` conv.

    Each deconv doubles the resolution: ViTPose classic uses 2 (stride 16 -> 4), SimpleBaseline 3 (stride
    32 -> 4), the HRNet pose head 0 (a 1x1 conv on the stride-4 branch).
    """

    def __init__(self, in_channels: int, num_joints: int, num_deconv: int = 2, deconv_channels: int = 256,
                 deconv_kernel: int = 4, final_kernel: int = 1) -> None:
        super().__init__()
        if deconv_kernel not in (2, 3, 4):
            raise ValueError(f"deconv_kernel must be 2, 3 or 4, got {deconv_kernel}")
        padding, output_padding = {4: (1, 0), 3: (1, 1), 2: (0, 0)}[deconv_kernel]
        layers: list[nn.Module] = []
        ch = in_channels
        for _ in range(num_deconv):
            layers += [
                nn.ConvTranspose2d(ch, deconv_channels, deconv_kernel, stride=2, padding=padding,
                                   output_padding=output_padding, bias=False),
                nn.BatchNorm2d(deconv_channels),
                nn.ReLU(inplace=True),
            ]
            ch = deconv_channels
        self.deconv_layers = nn.Sequential(*layers)
        self.final_layer = nn.Conv2d(ch, num_joints, final_kernel, padding=final_kernel // 2)
        self.upsample = 2 ** num_deconv
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d)):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_layer(self.deconv_layers(x))


class SimpleHead(nn.Module):
    """ViTPose "simple" decoder: ``ReLU -> bilinear x upsample (align_corners=False) -> Conv2d(k=3, pad=1)``."""

    def __init__(self, in_channels: int, num_joints: int, upsample: int = 4, final_kernel: int = 3) -> None:
        super().__init__()
        self.upsample = upsample
        self.final_layer = nn.Conv2d(in_channels, num_joints, final_kernel, padding=final_kernel // 2)
        nn.init.normal_(self.final_layer.weight, std=0.001)
        nn.init.zeros_(self.final_layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        x = F.interpolate(x, scale_factor=self.upsample, mode="bilinear", align_corners=False)
        return self.final_layer(x)
