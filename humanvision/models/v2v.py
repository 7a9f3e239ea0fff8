"""V2V: the volumetric encoder-decoder of Learnable Triangulation's volumetric method (pose3d.md §2.4.7), after
Moon et al., "V2V-PoseNet" (CVPR 2018). Written from the brief; no code is taken from the seed.

Building blocks (every ``Conv3d`` has a bias, also before BatchNorm, as in the seed; harmless):

* :class:`Basic3DBlock` ``(in, out, k)``: ``Conv3d(k, padding k // 2) -> BN -> ReLU``.
* :class:`Res3DBlock` ``(in, out)``: ``Conv3³ -> BN -> ReLU -> Conv3³ -> BN`` plus a skip (identity when
  ``in == out``, else ``Conv1³ -> BN``), then ReLU of the sum.
* :class:`Upsample3DBlock` ``(in, out)``: ``ConvTranspose3d(k 2, s 2) -> BN -> ReLU`` (doubles each side).

:class:`V2VModel` ``(32 -> 17)``: front ``Basic3D(32 -> 16, k7), Res3D(16 -> 32), Res3D(32, 32) x 2``; a 5-level
encoder-decoder (each level ``MaxPool3d(2) -> Res3D``; channels 32 -> 64 -> 128 -> 128 -> 128 -> 128 at sides
64 -> 32 -> 16 -> 8 -> 4 -> 2; ``mid_res`` ``Res3D(128, 128)``; each decoder level ``Res3D -> Upsample3D`` plus the
skip ``skip_res_l(x_l)``, a Res3D on the encoder tensor of that level); back ``Res3D(32, 32), Basic3D(32, 32, k1)
x 2``; output ``Conv3d(32 -> 17, k1)``. Init: xavier-normal weights and zero biases for every (transposed) 3D conv.
The input side must be divisible by 32 (five poolings).

Module names follow the seed's ``v2v.py`` as we infer it from V2V-PoseNet's public PyTorch port (the brief
describes the structure, not the attribute names): ``front_layers``, ``encoder_decoder.{encoder_pool{l},
encoder_res{l}, mid_res, decoder_res{l}, decoder_upsample{l}, skip_res{l}}`` (l = 1..5), ``back_layers``,
``output_layer``; inside the blocks ``block.{0,1}`` (conv, BN), ``res_branch.{0,1,3,4}`` and ``skip_con.{0,1}``.
With the same names an LT checkpoint's ``volume_net.*`` loads by its prefix alone
(:func:`humanvision.methods.volumetric.convert_lt_checkpoint`).

Mixed precision: every 3D conv of the blocks is a :class:`V2VConv3d`, an ``nn.Conv3d`` (same parameters and keys)
that runs in float32 outside autocast when its input is smaller than its kernel along some side (the 2³ and 1³
bottom levels of the hourglass). Under bf16 autocast on CPU, oneDNN's bf16 Conv3d **weight gradient** is wrong for
such inputs (measured with torch 2.14.1 on an AVX-512-BF16 CPU: a 3³ kernel on a 2³ or 2 x 8 x 8 input, a 7³ kernel
on sides 1-3, gives garbage values up to 1e36, inf or NaN, sometimes a heap corruption; 1³ / 3³+ sides, 1³
kernels, transposed convs and float32 are exact). With LT's 64³ volume the V2V's fifth level is 2³, with a 32³
volume the fourth: bf16 training hit a non-finite loss within a few steps. The float32 path costs nothing there
(at most 128 x 2³ values per sample).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Basic3DBlock", "EncoderDecoder", "Res3DBlock", "Upsample3DBlock", "V2VConv3d", "V2VModel"]


class V2VConv3d(nn.Conv3d):
    """``nn.Conv3d`` that computes in float32 (autocast off, input cast up) when autocast is on and the input is
    smaller than the kernel along a spatial side; otherwise exactly ``nn.Conv3d`` (see the module docstring: oneDNN's
    bf16 weight gradient is wrong for such inputs). The output is then float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.device.type
        if (torch.amp.is_autocast_available(t) and torch.is_autocast_enabled(t)
                and any(s < k for s, k in zip(x.shape[-3:], self.kernel_size, strict=True) if k > 1)):
            with torch.autocast(x.device.type, enabled=False):
                return self._conv_forward(x.float(), self.weight.float(),
                                          None if self.bias is None else self.bias.float())
        return super().forward(x)


class Basic3DBlock(nn.Module):
    """``Conv3d(in, out, k, padding=k // 2, bias=True) -> BatchNorm3d -> ReLU`` (keys ``block.0``, ``block.1``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            V2VConv3d(in_channels, out_channels, kernel_size, stride=1, padding=kernel_size // 2),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Res3DBlock(nn.Module):
    """``ReLU(res_branch(x) + skip_con(x))`` with ``res_branch = Conv3³ -> BN -> ReLU -> Conv3³ -> BN`` and
    ``skip_con`` the identity (``in == out``) or ``Conv1³ -> BN``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.res_branch = nn.Sequential(
            V2VConv3d(in_channels, out_channels, 3, stride=1, padding=1),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
            V2VConv3d(out_channels, out_channels, 3, stride=1, padding=1),
            nn.BatchNorm3d(out_channels))
        if in_channels == out_channels:
            self.skip_con: nn.Module = nn.Sequential()  # identity, no parameters
        else:
            self.skip_con = nn.Sequential(nn.Conv3d(in_channels, out_channels, 1, stride=1),
                                          nn.BatchNorm3d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.res_branch(x) + self.skip_con(x))


class Upsample3DBlock(nn.Module):
    """``ConvTranspose3d(in, out, k=2, s=2) -> BatchNorm3d -> ReLU``: ``(B, in, D, H, W) -> (B, out, 2D, 2H, 2W)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ConvTranspose3d(in_channels, out_channels, kernel_size=2, stride=2, padding=0, output_padding=0),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class EncoderDecoder(nn.Module):
    """LT's 5-level hourglass on ``(B, 32, S, S, S)`` (S divisible by 32): encoder channels 32 -> 64 -> 128 -> 128
    -> 128 -> 128, ``mid_res``, decoder back to 32, a Res3D skip at every level (pose3d.md §2.4.7)."""

    CHANNELS = (32, 64, 128, 128, 128, 128)

    def __init__(self) -> None:
        super().__init__()
        c = self.CHANNELS
        for level in range(1, 6):
            setattr(self, f"encoder_pool{level}", nn.MaxPool3d(kernel_size=2, stride=2))
            setattr(self, f"encoder_res{level}", Res3DBlock(c[level - 1], c[level]))
        self.mid_res = Res3DBlock(c[5], c[5])
        for level in range(5, 0, -1):
            setattr(self, f"decoder_res{level}", Res3DBlock(c[level], c[level]))
            setattr(self, f"decoder_upsample{level}", Upsample3DBlock(c[level], c[level - 1]))
        for level in range(1, 6):
            setattr(self, f"skip_res{level}", Res3DBlock(c[level - 1], c[level - 1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(s % 32 for s in x.shape[-3:]):
            raise ValueError(f"V2V: the volume sides must be divisible by 32 (five 2x poolings), got "
                             f"{tuple(x.shape[-3:])}")
        skips = []
        for level in range(1, 6):
            skips.append(getattr(self, f"skip_res{level}")(x))
            x = getattr(self, f"encoder_res{level}")(getattr(self, f"encoder_pool{level}")(x))
        x = self.mid_res(x)
        for level in range(5, 0, -1):
            x = getattr(self, f"decoder_upsample{level}")(getattr(self, f"decoder_res{level}")(x))
            x = x + skips[level - 1]
        return x


class V2VModel(nn.Module):
    """LT's V2V: ``(B, in_channels, S, S, S) -> (B, out_channels, S, S, S)`` (S divisible by 32; LT: 32 -> 17 at
    64³). Outputs are raw logits (the 3D soft-argmax applies the softmax)."""

    def __init__(self, in_channels: int = 32, out_channels: int = 17) -> None:
        super().__init__()
        self.front_layers = nn.Sequential(
            Basic3DBlock(in_channels, 16, 7),
            Res3DBlock(16, 32),
            Res3DBlock(32, 32),
            Res3DBlock(32, 32))
        self.encoder_decoder = EncoderDecoder()
        self.back_layers = nn.Sequential(
            Res3DBlock(32, 32),
            Basic3DBlock(32, 32, 1),
            Basic3DBlock(32, 32, 1))
        self.output_layer = nn.Conv3d(32, out_channels, kernel_size=1, stride=1, padding=0)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal weights and zero biases for every Conv3d / ConvTranspose3d (BatchNorm keeps (1, 0))."""
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"V2V expects (B, C, D, H, W), got {tuple(x.shape)}")
        return self.output_layer(self.back_layers(self.encoder_decoder(self.front_layers(x))))
