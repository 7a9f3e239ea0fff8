"""PCT's Swin-V2-style backbone ``SwinV2TransformerRPE2FC`` and its heatmap model (PCT stage 0).

PCT (Geng et al., "Human Pose as Compositional Tokens", CVPR 2023, https://arxiv.org/abs/2303.11638) first
trains a Swin backbone as an ordinary MSRA-heatmap model (stage 0, pose2d.md §3.1), then freezes it for the
tokenizer (stage I, image guidance) and the classifier (stage II). The backbone, as pose2d.md §3.2 describes
it:

* patch embedding ``Conv2d(3, C, 4, stride 4)`` + LayerNorm; stage maps 64², 32², 16², 8² for a 256² crop;
* res-post-norm blocks ``x = x + DropPath(LN1(Attn(x))); x = x + DropPath(LN2(MLP(x)))`` (LayerNorm eps 1e-6,
  computed in fp32; MLP ratio 4, GELU; stochastic depth linear 0 -> ``drop_path_rate`` over all blocks);
* cosine multi-head window attention ``attn = cos(q, k) * exp(min(logit_scale, log 100)) + B (+ mask)`` with a
  per-head ``logit_scale`` initialised to ``log 10``, qkv bias ``[q_bias, 0, v_bias]``, and the continuous
  relative-position bias ``B = 16 * sigmoid(MLP(t))``, ``MLP = Linear(2, 512) -> ReLU -> Linear(512, heads, no
  bias)`` over the offsets ``D in [-(ws-1), ws-1]^2`` of a window, ``t = sign(D') log2(|D'| + 1) / log2(8)``,
  ``D' = 8 D / (pretrain_ws - 1)`` (``norm8_log_bylayer``, with the *pre-training* window size);
* shifted windows by stage (``use_shift = [True, True, False, False]``): odd blocks of stages 1-2 roll the map
  by ``-window/2`` and mask pairs of tokens from different regions with -100; a window larger than or equal to
  its feature map is clipped to the map and never shifts (stage 3 at 256²: window 16 = map 16);
* post-norm patch merging after stages 1-3: concat ``[x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2],
  x[1::2, 1::2]]`` (row, column) -> ``Linear(4C, 2C, no bias)`` -> ``LayerNorm(2C)``;
* only stage 4 is returned, through ``norm3`` (a LayerNorm that is always frozen: SimMIM checkpoints lack it,
  so it stays at weight 1, bias 0): ``(B, 8C, H/32, W/32)``.

Module names give exactly the official state-dict keys of pose2d.md §3.9 (under ``backbone.``), so an official
checkpoint loads with a plain prefix strip: ``patch_embed.{proj,norm}``,
``layers.{s}.blocks.{b}.attn.{logit_scale, q_bias, v_bias, qkv, proj, rpe_mlp.0, rpe_mlp.2}`` and the buffers
``relative_coords_table`` / ``relative_position_index``, ``layers.{s}.blocks.{b}.{norm1, norm2, mlp.fc1,
mlp.fc2}``, ``layers.{s}.downsample.{reduction, norm}``, ``norm3``. The shifted-window mask is a
non-persistent buffer.

A map that its window does not divide (only for inputs other than the published 256x256, e.g. 256x192) is
padded at the bottom / right to a multiple of the window before partitioning and cropped afterwards, as the
mmdet-style Swin backbones do (the padded zero tokens take part in attention; not in the brief, which covers
256x256 only).

Variants (C, depths, heads, stage-0 drop path; windows [16, 16, 16, 8], pre-training windows [12, 12, 12, 6],
256x256): Base 128 / [2, 2, 18, 2] / [4, 8, 16, 32] / 0.3, Large 192 / same / [6, 12, 24, 48] / 0.5,
Huge 256 / [2, 2, 42, 2] / [8, 16, 32, 64] / 0.55 (0.5 in stage II, where it is frozen). ``tiny`` (ours, for
tests and CPU recipes): 32 / [2, 2, 2, 2] / [1, 2, 4, 8], windows [8, 8, 8, 4], pre-training windows
[6, 6, 6, 3], 128x128.

The heatmap model :class:`PCTSwinHeatmap` puts the classic top-down deconvolution head (3 x [deconv 4x4 s2 ->
BN -> ReLU], 256 channels, 1x1 conv) on the stage-4 map: ``(B, K, H/4, W/4)`` MSRA heatmaps (non-UDP, sigma 2,
quarter-offset decoding), 64x64 at 256x256 (configs/hmp_*.py of the PCT repository).
"""

from __future__ import annotations

import inspect
import logging
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import nn
from torch.utils.checkpoint import checkpoint

from humanvision.errors import DataError
from humanvision.models._base import PoseModel, build_variant
from humanvision.models._registry import register_model
from humanvision.models.heads import DeconvHead
from humanvision.models.weights import LoadReport, _short, read_checkpoint

__all__ = [
    "PCT_SWIN_CFGS", "LayerNormFp32", "PCTSwinHeatmap", "PatchMerging", "SwinV2Block",
    "SwinV2TransformerRPE2FC", "WindowAttention", "load_swin_backbone", "pct_swin_backbone",
    "relative_coords_table", "relative_position_index", "shifted_window_mask",
]

_logger = logging.getLogger(__name__)

#: Backbone variants (pose2d.md §3.2). ``tiny`` is ours, for tests and CPU recipes (128x128 input).
PCT_SWIN_CFGS: dict[str, dict[str, Any]] = {
    "tiny": {"embed_dim": 32, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 4, 8), "window_size": (8, 8, 8, 4),
             "pretrain_window_size": (6, 6, 6, 3), "drop_path_rate": 0.0},
    "base": {"embed_dim": 128, "depths": (2, 2, 18, 2), "num_heads": (4, 8, 16, 32), "drop_path_rate": 0.3},
    "large": {"embed_dim": 192, "depths": (2, 2, 18, 2), "num_heads": (6, 12, 24, 48), "drop_path_rate": 0.5},
    "huge": {"embed_dim": 256, "depths": (2, 2, 42, 2), "num_heads": (8, 16, 32, 64), "drop_path_rate": 0.5},
}

#: State-dict entries of the backbone that a SimMIM checkpoint does not have (PCT README, pose2d.md §3.2).
_DERIVED_BUFFERS = ("relative_coords_table", "relative_position_index")


# ------------------------------------------------------------------------------------------------ helpers
def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when it is in a lower precision (fp16 / bf16), else unchanged (float64 stays so)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class LayerNormFp32(nn.LayerNorm):
    """LayerNorm computed in (at least) fp32 and returned in the input dtype (pose2d.md §3.2, eps 1e-6)."""

    def __init__(self, normalized_shape: int, eps: float = 1e-6) -> None:
        super().__init__(normalized_shape, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _at_least_fp32(x)
        return F.layer_norm(y, self.normalized_shape, self.weight.to(y.dtype), self.bias.to(y.dtype),
                            self.eps).to(x.dtype)


def relative_coords_table(window: int, pretrain_window: int) -> torch.Tensor:
    """``(1, 2w-1, 2w-1, 2)`` log-spaced offsets ``norm8_log_bylayer`` (pose2d.md §3.2).

    Entry ``[0, i, j]`` is for the offset ``D = (i - (w-1), j - (w-1))`` (row, column):
    ``t = sign(D') log2(|D'| + 1) / log2(8)`` with ``D' = D / (pretrain_window - 1) * 8``.
    """
    r = torch.arange(-(window - 1), window, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(r, r, indexing="ij"), dim=-1).unsqueeze(0)
    table = table / (pretrain_window - 1) * 8
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)


def relative_position_index(window: int) -> torch.Tensor:
    """``(w², w²)`` index into the flattened ``(2w-1, 2w-1)`` table for query ``i`` and key ``j`` of a window
    (row-major tokens): ``(dr + w - 1) * (2w - 1) + (dc + w - 1)``, ``(dr, dc) = pos_i - pos_j``."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B * nW, window², C)``: windows row-major, tokens row-major in a window."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, window², C)`` -> ``(B, H, W, C)``."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def shifted_window_mask(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    """``(nW, window², window²)`` additive mask of a map rolled by ``-shift``: 0 for two tokens of the same
    region (3 x 3 regions ``[0, h-window), [h-window, h-shift), [h-shift, h)`` per axis), -100 otherwise."""
    regions = torch.zeros(1, h, w, 1)
    label = 0
    for rows in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for cols in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            regions[:, rows, cols, :] = label
            label += 1
    labels = window_partition(regions, window).squeeze(-1)
    diff = labels[:, None, :] - labels[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


# ---------------------------------------------------------------------------------------------- modules
class WindowAttention(nn.Module):
    """Cosine multi-head window attention with the continuous log-spaced relative-position bias (§3.2)."""

    def __init__(self, dim: int, num_heads: int, window: int, pretrain_window: int, rpe_hidden_dim: int = 512
                 ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.window = dim, num_heads, window
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        self.rpe_mlp = nn.Sequential(nn.Linear(2, rpe_hidden_dim), nn.ReLU(inplace=True),
                                     nn.Linear(rpe_hidden_dim, num_heads, bias=False))
        self.register_buffer("relative_coords_table", relative_coords_table(window, pretrain_window))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def relative_position_bias(self) -> torch.Tensor:
        """``(heads, window², window²)`` bias ``16 * sigmoid(MLP(t))``."""
        n = self.window * self.window
        table = self.rpe_mlp(self.relative_coords_table).view(-1, self.num_heads)
        bias = table[self.relative_position_index.view(-1)].view(n, n, self.num_heads).permute(2, 0, 1)
        return 16 * torch.sigmoid(bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x (B * nW, N, C)`` window tokens, ``mask (nW, N, N)`` or None -> ``(B * nW, N, C)``."""
        bw, n, c = x.shape
        qkv_bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, qkv_bias).reshape(bw, n, 3, self.num_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        q, k = F.normalize(_at_least_fp32(q), dim=-1), F.normalize(_at_least_fp32(k), dim=-1)
        scale = torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
        attn = q @ k.transpose(-2, -1) * scale.to(q.dtype)
        attn = attn + self.relative_position_bias().to(q.dtype).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, self.num_heads, n, n) + mask[None, :, None].to(q.dtype)
            attn = attn.view(bw, self.num_heads, n, n)
        attn = attn.softmax(dim=-1).to(v.dtype)
        return self.proj((attn @ v).transpose(1, 2).reshape(bw, n, c))


class SwinV2Block(nn.Module):
    """Res-post-norm Swin block on a ``(B, H, W, C)`` map of a fixed size (§3.2).

    ``window`` is clipped to ``min(H, W)`` when it is not smaller, and such a block never shifts; otherwise
    ``shift=True`` (odd blocks of shifting stages) rolls the map by ``window // 2``.
    """

    def __init__(self, dim: int, num_heads: int, resolution: tuple[int, int], window: int,
                 pretrain_window: int, shift: bool, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 rpe_hidden_dim: int = 512) -> None:
        super().__init__()
        if min(resolution) <= window:
            window, shift = min(resolution), False
        self.resolution, self.window = resolution, window
        self.shift = window // 2 if shift else 0
        self.attn = WindowAttention(dim, num_heads, window, pretrain_window, rpe_hidden_dim)
        self.norm1 = LayerNormFp32(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
        self.norm2 = LayerNormFp32(dim)
        h, w = resolution
        self.padded = (math.ceil(h / window) * window, math.ceil(w / window) * window)
        mask = shifted_window_mask(*self.padded, window, self.shift) if self.shift else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def token_mixer(self, x: torch.Tensor) -> torch.Tensor:
        """Shifted-window attention of ``x (B, H, W, C)`` (before norm1 and the residual)."""
        h, w = x.shape[1:3]
        (hp, wp), ws, s = self.padded, self.window, self.shift
        if (hp, wp) != (h, w):
            x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
        if s:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        x = window_reverse(self.attn(window_partition(x, ws), self.attn_mask), ws, hp, wp)
        if s:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
        return x[:, :h, :w].contiguous() if (hp, wp) != (h, w) else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.norm1(self.token_mixer(x)))
        return x + self.drop_path(self.norm2(self.mlp(x)))


class PatchEmbed(nn.Module):
    """``Conv2d(3, C, 4, stride 4)`` + LayerNorm: ``(B, 3, H, W)`` -> ``(B, H/4, W/4, C)``."""

    def __init__(self, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 128) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.norm = LayerNormFp32(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """Post-norm patch merging: ``(B, H, W, C)`` -> ``(B, H/2, W/2, 2C)`` (concat order of §3.2)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = LayerNormFp32(2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.norm(self.reduction(x))


class SwinV2Stage(nn.Module):
    """``blocks`` then the stage's ``downsample`` (a :class:`PatchMerging`, or None for the last stage)."""

    def __init__(self, blocks: list[SwinV2Block], downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class SwinV2TransformerRPE2FC(nn.Module):
    """PCT's Swin-V2-style backbone (pose2d.md §3.2): ``(B, 3, H, W) -> (B, out_channels, H/32, W/32)``.

    Args:
        img_size: input ``(height, width)`` (or one int), divisible by 32; the model is built for this size
            (window clipping, shift masks) and ``forward`` refuses another.
        patch_size, in_chans: patch embedding (4, 3).
        embed_dim, depths, num_heads: C, blocks and heads per stage (channels double at each merging).
        window_size, pretrain_window_size: window per stage and the window the relative-position table is
            normalised by (the SimMIM pre-training window).
        mlp_ratio: MLP hidden size / C (4).
        drop_path_rate: stochastic depth of the last block (linear from 0 over all blocks).
        use_shift: per stage, whether odd blocks use shifted windows.
        rpe_hidden_dim: hidden width of the relative-position MLP (512).
        frozen_stages: mmdet Swin semantics: -1 nothing; >= 0 the patch embedding; ``k >= 2`` also stages
            ``0 .. k-2`` (``len(depths) + 1``, i.e. 5, freezes everything: PCT stage II). Frozen modules have
            ``requires_grad=False`` and stay in eval mode (no drop path) under ``train()``. ``norm3`` is
            always frozen.

    ``out_channels`` = ``embed_dim * 2 ** (len(depths) - 1)``; ``num_layers`` / ``layer_id`` implement PCT's
    Swin layer-decay rule; :meth:`no_weight_decay` lists the parameters PCT excludes from weight decay.
    """

    def __init__(self, img_size: int | tuple[int, int] = 256, patch_size: int = 4, in_chans: int = 3,
                 embed_dim: int = 128, depths: Iterable[int] = (2, 2, 18, 2),
                 num_heads: Iterable[int] = (4, 8, 16, 32), window_size: Iterable[int] = (16, 16, 16, 8),
                 pretrain_window_size: Iterable[int] = (12, 12, 12, 6), mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.3,
                 use_shift: Iterable[bool] = (True, True, False, False), rpe_hidden_dim: int = 512,
                 frozen_stages: int = -1) -> None:
        super().__init__()
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(int(s) for s in img_size)
        self.depths, self.num_heads = [int(d) for d in depths], [int(h) for h in num_heads]
        windows, pretrain = [int(w) for w in window_size], [int(w) for w in pretrain_window_size]
        shifts = [bool(s) for s in use_shift]
        n = len(self.depths)
        for name, values in (("num_heads", self.num_heads), ("window_size", windows),
                             ("pretrain_window_size", pretrain), ("use_shift", shifts)):
            if len(values) != n:
                raise ValueError(f"{name} has {len(values)} entries for {n} stages (depths {self.depths})")
        if min(windows + pretrain) < 2:
            raise ValueError(f"window sizes must be >= 2, got window_size {windows}, "
                             f"pretrain_window_size {pretrain}")
        stride = patch_size * 2 ** (n - 1)
        if len(self.img_size) != 2 or self.img_size[0] % stride or self.img_size[1] % stride:
            raise ValueError(f"img_size {self.img_size} (height, width) must be divisible by {stride}")
        if not -1 <= frozen_stages <= n + 1:
            raise ValueError(f"frozen_stages must be in [-1, {n + 1}], got {frozen_stages}")
        self.frozen_stages = frozen_stages
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        dpr = torch.linspace(0, drop_path_rate, sum(self.depths), device="cpu").tolist()
        res = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
        dim, stages = embed_dim, []
        for s in range(n):
            first = sum(self.depths[:s])
            blocks = [SwinV2Block(dim, self.num_heads[s], res, windows[s], pretrain[s],
                                  shift=shifts[s] and b % 2 == 1, mlp_ratio=mlp_ratio,
                                  drop_path=dpr[first + b], rpe_hidden_dim=rpe_hidden_dim)
                      for b in range(self.depths[s])]
            last = s == n - 1
            stages.append(SwinV2Stage(blocks, None if last else PatchMerging(dim)))
            if not last:
                dim, res = 2 * dim, (res[0] // 2, res[1] // 2)
        self.layers = nn.ModuleList(stages)
        self.out_channels = self.num_features = dim
        self.norm3 = LayerNormFp32(dim)
        self.apply(self._init_weights)
        self._freeze()

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def _frozen_modules(self) -> list[nn.Module]:
        modules: list[nn.Module] = [self.norm3]
        if self.frozen_stages >= 0:
            modules.append(self.patch_embed)
        modules.extend(self.layers[: max(self.frozen_stages - 1, 0)])
        return modules

    def _freeze(self) -> None:
        for m in self._frozen_modules():
            m.eval()
            m.requires_grad_(False)

    def train(self, mode: bool = True) -> SwinV2TransformerRPE2FC:
        """``nn.Module.train`` that keeps the frozen modules in eval mode."""
        super().train(mode)
        for m in self._frozen_modules():
            m.eval()
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.layers:
            stage.grad_checkpointing = enable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> stage-4 map ``(B, out_channels, H/32, W/32)`` after ``norm3``."""
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"{type(self).__name__} is built for {self.img_size[0]}x{self.img_size[1]} "
                             f"(height x width) input, got {tuple(x.shape[-2:])}")
        x = self.patch_embed(x)
        for stage in self.layers:
            x = stage(x)
        return self.norm3(x).permute(0, 3, 1, 2).contiguous()

    # -- optimisation helpers ------------------------------------------------------------------------------
    def _stage_sizes(self) -> list[int]:
        """Layer ids per stage: its blocks, plus one for the patch merging that ends stages 1-3."""
        return [d + (stage.downsample is not None) for d, stage in zip(self.depths, self.layers)]

    @property
    def num_layers(self) -> int:
        """Number of layer ids of PCT's Swin rule (pose2d.md §3.2): ``sum(stage sizes) + 2`` (29 for Base)."""
        return sum(self._stage_sizes()) + 2

    def layer_id(self, name: str) -> int:
        """PCT Swin layer-decay id of backbone parameter ``name`` (no ``backbone.`` prefix), pose2d.md §3.2:
        ``patch_embed`` 0; block ``b`` of stage ``s`` ``b + sum(sizes[:s]) + 1``; the patch merging of stage
        ``s`` ``sum(sizes[:s + 1])``; the rest (``norm3``) ``num_layers - 1``."""
        if name.startswith("patch_embed."):
            return 0
        m = re.match(r"layers\.(\d+)\.(?:blocks\.(\d+)|downsample)\.", name)
        if m is None:
            return self.num_layers - 1
        sizes, s = self._stage_sizes(), int(m.group(1))
        return sum(sizes[: s + 1]) if m.group(2) is None else int(m.group(2)) + sum(sizes[:s]) + 1

    def no_weight_decay(self) -> set[str]:
        """Parameter names without weight decay (pose2d.md §3.2): 1-D tensors (biases, norms, ``q_bias``,
        ``v_bias``) and the ``rpe_mlp`` / ``logit_scale`` / ``relative_position_bias_table`` parameters (the
        last is Swin-V1's; this backbone has none)."""
        keywords = ("rpe_mlp", "logit_scale", "relative_position_bias_table")
        return {n for n, p in self.named_parameters()
                if p.ndim <= 1 or n.endswith(".bias") or any(k in n.split(".") for k in keywords)}


def pct_swin_backbone(variant: str = "base", **kwargs: Any) -> SwinV2TransformerRPE2FC:
    """The backbone of a :data:`PCT_SWIN_CFGS` variant (``tiny``, ``base``, ``large``, ``huge``); ``kwargs``
    override the variant's arguments (``img_size``, default 256 (128 for ``tiny``), ``frozen_stages``,
    ``drop_path_rate`` ...). PCT stage II: ``pct_swin_backbone("base", frozen_stages=5)``."""
    if variant not in PCT_SWIN_CFGS:
        raise ValueError(f"unknown PCT Swin variant {variant!r}; known: {', '.join(PCT_SWIN_CFGS)}")
    accepted = list(inspect.signature(SwinV2TransformerRPE2FC).parameters)
    for key in kwargs:
        if key not in accepted:
            raise ValueError(f"backbone argument {key!r} is not an argument of SwinV2TransformerRPE2FC; "
                             f"accepted: {', '.join(accepted)}")
    default_size = {"img_size": 128} if variant == "tiny" else {}
    return SwinV2TransformerRPE2FC(**{**default_size, **PCT_SWIN_CFGS[variant], **kwargs})


# ----------------------------------------------------------------------------------------- weight loading
def load_swin_backbone(module: nn.Module, source: str | Path | Mapping[str, torch.Tensor], *,
                       allow_pickle: bool = False, ignore: Iterable[str] = ()) -> LoadReport:
    """Load a SimMIM-style Swin checkpoint (or the backbone of a PCT heatmap / stage-II checkpoint) into
    ``module`` (a :class:`SwinV2TransformerRPE2FC` or a model whose ``backbone`` is one), pose2d.md §3.2.

    Keys are read with :func:`humanvision.models.weights.read_checkpoint` (``state_dict`` / ``model``
    unwrapped), a ``module.`` prefix is stripped, and if any key starts with ``encoder.`` (SimMIM) or else
    ``backbone.`` (mmcv pose checkpoints) only those keys are used, prefix stripped; the others
    (``decoder.*``, ``keypoint_head.*``, ``extra_backbone.*``) are *dropped*. Also dropped: SimMIM's
    ``mask_token``, the derived buffers ``relative_coords_table`` / ``relative_position_index`` /
    ``attn_mask`` (always recomputed from the window sizes) and keys starting with an ``ignore`` prefix.

    Missing ``relative_coords_table``, ``relative_position_index`` and ``norm3.*`` is expected and reported in
    ``missing`` (norm3 keeps its values: weight 1, bias 0 when fresh). Any other missing key, any unexpected
    key and any shape mismatch raise a :class:`DataError` naming the keys. Returns a
    :class:`~humanvision.models.weights.LoadReport` (``layout="swin_backbone"``) whose ``missing`` and
    ``dropped`` list the keys, and logs a summary at INFO level.
    """
    backbone = module if isinstance(module, SwinV2TransformerRPE2FC) else getattr(module, "backbone", None)
    if not isinstance(backbone, SwinV2TransformerRPE2FC):
        raise TypeError(f"{type(module).__name__} is not a SwinV2TransformerRPE2FC and has no such backbone")
    if isinstance(source, Mapping):
        file, state = "<state dict>", dict(source)
    else:
        file, state = str(source), read_checkpoint(source, allow_pickle=allow_pickle)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    report = LoadReport(layout="swin_backbone")
    scope = next((p for p in ("encoder.", "backbone.") if any(k.startswith(p) for k in state)), "")
    ignore = tuple(ignore)
    own = backbone.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not key.startswith(scope):
            report.dropped.append(key)
            continue
        name = key[len(scope):]
        if name == "mask_token" or name.startswith(ignore) or name.rsplit(".", 1)[-1] in (*_DERIVED_BUFFERS,
                                                                                          "attn_mask"):
            report.dropped.append(key)
            continue
        out[name] = value
    unexpected = sorted(set(out) - set(own))
    if unexpected:
        raise DataError(f"keys not in the Swin backbone: {_short(unexpected)}", file=file,
                        field=scope + unexpected[0])
    missing = sorted(set(own) - set(out))
    surprising = [k for k in missing
                  if not (k.startswith("norm3.") or k.rsplit(".", 1)[-1] in _DERIVED_BUFFERS)]
    if surprising:
        raise DataError(f"Swin backbone keys missing from the file: {_short(surprising)}", file=file,
                        field=scope + surprising[0])
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in out.items()
                  if v.shape != own[k].shape]
    if mismatched:
        raise DataError(f"shape mismatch: {_short(mismatched)}", file=file,
                        field=scope + mismatched[0].split(":")[0])
    backbone.load_state_dict(out, strict=False)
    report.missing, report.dropped = missing, sorted(report.dropped)
    _logger.info("%s: loaded %d Swin backbone tensors; missing as expected: %d (%s); dropped: %d (%s)", file,
                 len(out), len(missing), _short(missing, 3), len(report.dropped), _short(report.dropped, 3))
    return report


# ---------------------------------------------------------------------------------------- heatmap model
class PCTSwinHeatmap(PoseModel):
    """PCT stage 0 (pose2d.md §3.1-3.2): :class:`SwinV2TransformerRPE2FC` + the classic deconvolution head.

    Args:
        skeleton: joint-set name.
        input_size: crop ``(width, height)``, divisible by 32 (256x256 published; 128x128 for ``tiny``).
        backbone: a :data:`PCT_SWIN_CFGS` variant.
        backbone_args: overrides of the variant's backbone arguments (``depths``, ``window_size``,
            ``frozen_stages`` ...; not ``img_size``, which follows ``input_size``).
        drop_path_rate: stochastic depth (None: the variant's).
        deconv_channels: channels of the head's 3 deconvolutions (stride 32 -> 4; 256 published).
        layer_decay: recommended layer-wise lr decay (0.9 Base / Large, 0.95 Huge).
        grad_checkpointing: recompute the backbone blocks in the backward pass.

    ``forward_features(x)`` is the backbone's stage-4 map ``(B, C, H/32, W/32)``; heatmaps are MSRA (non-UDP,
    sigma 2), decoded with the quarter offset.
    """

    def __init__(self, skeleton: Any = "coco17", input_size: int | tuple[int, int] = (256, 256), *,
                 backbone: str = "base", backbone_args: dict[str, Any] | None = None,
                 drop_path_rate: float | None = None, deconv_channels: int = 256, layer_decay: float = 0.9,
                 grad_checkpointing: bool = False) -> None:
        super().__init__(skeleton, input_size, udp=False, codec="msra_heatmap", sigma=2.0,
                         layer_decay=layer_decay)
        args = dict(backbone_args or {})
        if "img_size" in args:
            raise ValueError("backbone_args.img_size: the backbone's input size is input_size")
        if drop_path_rate is not None:
            args["drop_path_rate"] = drop_path_rate
        w, h = self.input_size
        if w % 32 or h % 32:
            raise ValueError(f"input_size {self.input_size} must be divisible by 32 for the Swin backbone")
        self.backbone = pct_swin_backbone(backbone, img_size=(h, w), **args)
        self.head = DeconvHead(self.backbone.out_channels, self.num_joints, num_deconv=3,
                               deconv_channels=deconv_channels)
        self.set_grad_checkpointing(grad_checkpointing)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, C, H/32, W/32)`` (stage 4 after the frozen ``norm3``)."""
        return self.backbone(x)

    @property
    def num_layers(self) -> int:
        """PCT's Swin rule: 29 for Base / Large, 53 for Huge (head and ``norm3`` share the last id)."""
        return self.backbone.num_layers

    def layer_id(self, name: str) -> int:
        """``backbone.*`` by :meth:`SwinV2TransformerRPE2FC.layer_id`; the head ``num_layers - 1``."""
        if name.startswith("backbone."):
            return self.backbone.layer_id(name.removeprefix("backbone."))
        return self.num_layers - 1

    def no_weight_decay(self) -> set[str]:
        """The base rule (1-D, biases) plus the backbone's ``rpe_mlp`` / ``logit_scale`` parameters."""
        return super().no_weight_decay() | {f"backbone.{n}" for n in self.backbone.no_weight_decay()}


def _create(variant: str, skeleton: Any, model_args: dict[str, Any], kwargs: dict[str, Any]
            ) -> PCTSwinHeatmap:
    return build_variant(PCTSwinHeatmap, variant, skeleton, model_args, kwargs)


@register_model
def pct_swin_tiny_hmp(skeleton: Any = "coco17", **kwargs: Any) -> PCTSwinHeatmap:
    """Tiny PCT Swin heatmap model (ours, tests and CPU recipes): C=32, depths 2-2-2-2, heads 1-2-4-8, windows
    8-8-8-4 (pre-training 6-6-6-3), 128x128 input, 3 x 64-channel deconvs, 32x32 heatmaps."""
    args = {"input_size": (128, 128), "backbone": "tiny", "deconv_channels": 64, "layer_decay": 0.9}
    return _create("pct_swin_tiny_hmp", skeleton, args, kwargs)


@register_model
def pct_swin_base_hmp(skeleton: Any = "coco17", **kwargs: Any) -> PCTSwinHeatmap:
    """PCT Swin-Base heatmap pre-training model (configs/hmp_base.py): 256x256, drop path 0.3, 64x64 maps."""
    args = {"input_size": (256, 256), "backbone": "base", "drop_path_rate": 0.3, "layer_decay": 0.9}
    return _create("pct_swin_base_hmp", skeleton, args, kwargs)


@register_model
def pct_swin_large_hmp(skeleton: Any = "coco17", **kwargs: Any) -> PCTSwinHeatmap:
    """PCT Swin-Large heatmap pre-training model (configs/hmp_large.py): 256x256, drop path 0.5."""
    args = {"input_size": (256, 256), "backbone": "large", "drop_path_rate": 0.5, "layer_decay": 0.9}
    return _create("pct_swin_large_hmp", skeleton, args, kwargs)


@register_model
def pct_swin_huge_hmp(skeleton: Any = "coco17", **kwargs: Any) -> PCTSwinHeatmap:
    """PCT Swin-Huge heatmap pre-training model (configs/hmp_huge.py): 256x256, drop path 0.55, decay 0.95."""
    args = {"input_size": (256, 256), "backbone": "huge", "drop_path_rate": 0.55, "layer_decay": 0.95}
    return _create("pct_swin_huge_hmp", skeleton, args, kwargs)
