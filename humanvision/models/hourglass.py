"""Stacked hourglass with a fully connected depth regressor: the network of Zhou et al., "Towards 3D Human Pose
Estimation in the Wild: a Weakly-supervised Approach" (ICCV 2017, https://arxiv.org/abs/1704.02447), after
Newell et al., "Stacked Hourglass Networks for Human Pose Estimation" (ECCV 2016). Written from pose3d.md §5.2
(branch ``hg3d``).

* ``Residual``: pre-activation bottleneck ``BN-ReLU-Conv1x1(-> n/2) - BN-ReLU-Conv3x3 - BN-ReLU-Conv1x1(-> n)``
  plus a skip (a 1x1 conv when the channel counts differ).
* Stem: ``Conv7x7 s2 (3 -> 64) + BN + ReLU -> Residual(64 -> 128) -> MaxPool 2 -> Residual(128 -> 128) ->
  Residual(128 -> C)``: stride 4 (64x64 for a 256x256 crop).
* ``Hourglass(depth, modules, C)``: ``up = modules x Residual`` at this resolution; ``low`` = max-pool, modules x
  Residual, the next level (or modules x Residual at the bottom), modules x Residual, nearest x2 upsampling;
  output ``up + low``.
* Each stack: hourglass -> modules x Residual -> ``lin`` (Conv1x1 + BN + ReLU) -> heatmaps ``Conv1x1(C -> K)``,
  then ``x = x + merge_features(lin) + merge_heatmaps(heatmaps)``. Every stack's heatmaps are supervised
  (intermediate supervision); the merge after the last stack feeds the depth regressor.
* Depth regressor: ``reg_pools x [reg_modules x Residual(C) -> MaxPool 2]`` (4 x 2 in the paper: 64x64 -> 4x4),
  then ``Linear(C * h * w -> K)``: one depth per joint, in units of half the crop (the paper's ``[-1, 1]`` range),
  so ``default_cfg["depth_unit"] = 0.5`` crop widths per unit.

``forward(x)`` is the 2D contract of every pose model (the last stack's heatmaps); :meth:`forward_pose3d` returns
``{"hm": [heatmaps of each stack], "depth": (B, K)}`` for training and 3D inference. The ``*_mini`` variant is for
tests: it is not named ``*_tiny`` because the depth regressor, by design, gets no gradient from the heatmaps alone
(the ``*tiny`` model contract asks that every parameter does).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from humanvision.models._base import PoseModel, build_variant
from humanvision.models._registry import register_model

__all__ = ["Hourglass", "Hourglass3D", "HourglassTrunk", "Residual"]


class Residual(nn.Module):
    """Pre-activation bottleneck residual block ``in_channels -> out_channels`` (stride 1)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.bn1, self.conv1 = nn.BatchNorm2d(in_channels), nn.Conv2d(in_channels, mid, 1)
        self.bn2, self.conv2 = nn.BatchNorm2d(mid), nn.Conv2d(mid, mid, 3, padding=1)
        self.bn3, self.conv3 = nn.BatchNorm2d(mid), nn.Conv2d(mid, out_channels, 1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.relu(self.bn1(x)))
        y = self.conv2(F.relu(self.bn2(y)))
        y = self.conv3(F.relu(self.bn3(y)))
        return y + self.skip(x)


def _residuals(n: int, channels: int) -> nn.Sequential:
    return nn.Sequential(*[Residual(channels, channels) for _ in range(n)])


class Hourglass(nn.Module):
    """One hourglass of ``depth`` levels (each halves the resolution), ``modules`` residual blocks per step."""

    def __init__(self, depth: int, modules: int, channels: int) -> None:
        super().__init__()
        self.up = _residuals(modules, channels)
        self.down = _residuals(modules, channels)
        self.inner = Hourglass(depth - 1, modules, channels) if depth > 1 else _residuals(modules, channels)
        self.after = _residuals(modules, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.after(self.inner(self.down(F.max_pool2d(x, 2))))
        return self.up(x) + F.interpolate(low, scale_factor=2.0, mode="nearest")


class HourglassStack(nn.Module):
    """Hourglass -> ``modules`` residual blocks -> ``lin`` (Conv1x1 + BN + ReLU): the stack's features."""

    def __init__(self, depth: int, modules: int, channels: int) -> None:
        super().__init__()
        self.hourglass = Hourglass(depth, modules, channels)
        self.residuals = _residuals(modules, channels)
        self.lin = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(self.residuals(self.hourglass(x)))


class HourglassTrunk(nn.Module):
    """Stem and stacks up to the last stack's features; holds the heatmap convs and merges of the stacks before
    the last (the last stack's heatmap conv is the model's ``head``)."""

    def __init__(self, num_joints: int, num_stacks: int, depth: int, modules: int, channels: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, stride=2, padding=3), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            Residual(64, 128), nn.MaxPool2d(2), Residual(128, 128), Residual(128, channels))
        self.stacks = nn.ModuleList(HourglassStack(depth, modules, channels) for _ in range(num_stacks))
        self.heads = nn.ModuleList(nn.Conv2d(channels, num_joints, 1) for _ in range(num_stacks - 1))
        self.merge_features = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(num_stacks - 1))
        self.merge_heatmaps = nn.ModuleList(nn.Conv2d(num_joints, channels, 1) for _ in range(num_stacks - 1))
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def _stack(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(self.stacks[i], x, use_reentrant=False)
        return self.stacks[i](x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """``(B, 3, H, W)`` -> (the stream entering the last stack, the heatmaps of the earlier stacks, the last
        stack's features ``(B, C, H/4, W/4)``)."""
        x = self.stem(x)
        heatmaps = []
        for i in range(len(self.stacks) - 1):
            feats = self._stack(i, x)
            hm = self.heads[i](feats)
            heatmaps.append(hm)
            x = x + self.merge_features[i](feats) + self.merge_heatmaps[i](hm)
        return x, heatmaps, self._stack(len(self.stacks) - 1, x)


class DepthRegressor(nn.Module):
    """``pools x [modules x Residual -> MaxPool 2]`` then ``Linear(C * h * w -> K)`` (h, w: the pooled size)."""

    def __init__(self, num_joints: int, channels: int, map_size: tuple[int, int], pools: int = 4,
                 modules: int = 2) -> None:
        super().__init__()
        w, h = map_size
        if w % 2 ** pools or h % 2 ** pools:
            raise ValueError(f"heatmap size {map_size} must be divisible by 2**reg_pools = {2 ** pools}")
        self.blocks = nn.ModuleList(_residuals(modules, channels) for _ in range(pools))
        self.fc = nn.Linear(channels * (w >> pools) * (h >> pools), num_joints)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = F.max_pool2d(block(x), 2)
        return self.fc(x.flatten(1))


class Hourglass3D(PoseModel):
    """Stacked hourglass (any number of stacks) with intermediate supervision and the FC depth regressor.

    Args:
        skeleton: joint-set name (``mpii16`` for the published model).
        input_size: crop ``(width, height)``; divisible by ``4 * 2**max(depth, reg_pools)``.
        num_stacks: hourglasses (2 in the paper, 8 in Newell et al.).
        depth: levels per hourglass (4). modules: residual blocks per step (``nModules``, 2 in hg3d).
        channels: feature channels (``nFeats``, 256).
        reg_pools, reg_modules: depth regressor stages and residual blocks per stage (4, 2).
    """

    def __init__(self, skeleton: Any = "mpii16", input_size: int | tuple[int, int] = (256, 256), *,
                 num_stacks: int = 2, depth: int = 4, modules: int = 2, channels: int = 256, reg_pools: int = 4,
                 reg_modules: int = 2, grad_checkpointing: bool = False) -> None:
        super().__init__(skeleton, input_size, udp=False, codec="msra_heatmap", sigma=2.0)
        if num_stacks < 1 or depth < 1 or modules < 1 or channels < 2 or reg_pools < 0 or reg_modules < 1:
            raise ValueError(f"num_stacks, depth, modules, reg_modules must be >= 1, reg_pools >= 0 and channels "
                             f">= 2; got {num_stacks}, {depth}, {modules}, {reg_modules}, {reg_pools}, {channels}")
        w, h = self.heatmap_size
        if w % 2 ** depth or h % 2 ** depth:
            raise ValueError(f"input_size {self.input_size} must be divisible by {4 * 2 ** depth} for a "
                             f"{depth}-level hourglass at stride 4")
        self.num_stacks = num_stacks
        self.backbone = HourglassTrunk(self.num_joints, num_stacks, depth, modules, channels)
        self.head = nn.Conv2d(channels, self.num_joints, 1)  # the last stack's heatmaps
        self.merge_features = nn.Conv2d(channels, channels, 1)
        self.merge_heatmaps = nn.Conv2d(self.num_joints, channels, 1)
        self.depth_head = DepthRegressor(self.num_joints, channels, self.heatmap_size, reg_pools, reg_modules)
        self.default_cfg.update({"depth_head": "fc", "depth_unit": 0.5, "num_stacks": num_stacks})
        self.set_grad_checkpointing(grad_checkpointing)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> the last stack's features ``(B, C, H/4, W/4)``."""
        return self.backbone(x)[2]

    def forward_pose3d(self, x: torch.Tensor) -> dict[str, Any]:
        """``{"hm": [(B, K, H/4, W/4) per stack], "depth": (B, K)}`` (depth in half-crop units)."""
        stream, heatmaps, feats = self.backbone(x)
        hm = self.head(feats)
        stream = stream + self.merge_features(feats) + self.merge_heatmaps(hm)
        return {"hm": [*heatmaps, hm], "depth": self.depth_head(stream)}


def _hourglass3d(variant: str, skeleton: Any, model_args: dict[str, Any], kwargs: dict[str, Any]):
    return build_variant(Hourglass3D, variant, skeleton, model_args, kwargs)


@register_model
def hourglass3d_2stack(skeleton: Any = "mpii16", **kwargs: Any) -> Hourglass3D:
    """The paper's network (branch ``hg3d``): 2 stacks of 4-level hourglasses, 2 residual modules, 256 channels,
    FC depth regressor (4 x [2 residuals, pool] -> 4x4x256 -> K), 256x256 input, 64x64 heatmaps."""
    return _hourglass3d("hourglass3d_2stack", skeleton, {}, kwargs)


@register_model
def hourglass3d_mini(skeleton: Any = "mpii16", **kwargs: Any) -> Hourglass3D:
    """Small variant for tests and CPU demos: 2 stacks of 2-level hourglasses, 1 module, 32 channels, depth
    regressor 2 x [1 residual, pool], 64x64 input, 16x16 heatmaps."""
    args = {"input_size": (64, 64), "depth": 2, "modules": 1, "channels": 32, "reg_pools": 2, "reg_modules": 1}
    return _hourglass3d("hourglass3d_mini", skeleton, args, kwargs)
