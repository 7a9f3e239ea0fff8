"""ViTPose: a plain ViT backbone with a heatmap decoder (Xu et al., "ViTPose: Simple Vision Transformer Baselines
for Human Pose Estimation", NeurIPS 2022, https://arxiv.org/abs/2204.12484).

Backbone = timm's ``VisionTransformer`` configured as ViTAE-Transformer/ViTPose:mmpose/models/backbones/vit.py:

* patch embedding ``Conv2d(3, D, 16, stride=16, padding=2)`` (:class:`PaddedPatchEmbed`): a 256x192 crop gives a
  16x12 token grid; token (i, j) sees pixels ``[16j - 2, 16j + 14)``;
* no class token; one learned position embedding per token. The official ``pos_embed`` is ``(1, 1 + N, D)`` and
  its slot 0 (the former cls position) is added to every token; we store the exact equivalent ``pos[:, 1:] +
  pos[:, :1]`` as ``(1, N, D)`` (see :mod:`humanvision.models.weights`);
* pre-norm blocks, LayerNorm eps 1e-6, qkv bias, GELU MLP ratio 4, stochastic depth linear 0 -> ``drop_path_rate``;
* a final LayerNorm (``last_norm`` in the official code, ``backbone.norm`` here), tokens reshaped to
  ``(B, D, H/16, W/16)``.

Decoders (:mod:`humanvision.models.heads`): *classic* = 2 x [deconv 4x4 s2 -> BN -> ReLU] + 1x1 conv; *simple* =
ReLU -> bilinear x4 -> 3x3 conv. Both give ``(B, K, H/4, W/4)`` (64x48 for 256x192).

Variants (embed, depth, heads, drop path, recommended layer decay): S 384/12/12/0.1/0.8, B 768/12/12/0.3/0.75,
L 1024/24/16/0.5/0.8, H 1280/32/16/0.55/0.85. ``vitpose_tiny`` (192/6/3, 128x96 input, 64-channel deconvs) is
ours, for tests and CPU demos. Training follows the UDP convention (``default_cfg['udp'] = True``).
"""

from __future__ import annotations

import math
import re
from functools import partial
from typing import Any

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from humanvision.models._base import PoseModel, build_variant
from humanvision.models._registry import register_model
from humanvision.models.heads import DeconvHead, SimpleHead

__all__ = ["PaddedPatchEmbed", "ViTPose"]


class PaddedPatchEmbed(PatchEmbed):
    """timm ``PatchEmbed`` whose projection conv has ``padding=2`` (ViTPose; needed for weight compatibility).

    The token grid is ``floor((S + 2p - k) / k) + 1`` per axis, which equals ``S // 16`` for sizes divisible by 16.
    """

    padding: int = 2

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        old = self.proj
        self.proj = nn.Conv2d(old.in_channels, old.out_channels, old.kernel_size, stride=old.stride,
                              padding=self.padding, bias=old.bias is not None,
                              device=old.weight.device, dtype=old.weight.dtype)

    def _init_img_size(self, img_size):
        img_size, _, _ = super()._init_img_size(img_size)
        if img_size is None:
            return None, None, None
        grid = tuple((s + 2 * self.padding - p) // p + 1 for s, p in zip(img_size, self.patch_size))
        return img_size, grid, grid[0] * grid[1]


class ViTPose(PoseModel):
    """ViT backbone (timm) + heatmap decoder.

    Args:
        skeleton: joint-set name; ``num_joints`` output heatmaps.
        input_size: crop ``(width, height)``, both divisible by the patch size (default 192x256).
        patch_size, embed_dim, depth, num_heads, mlp_ratio, drop_path_rate: ViT hyper-parameters.
        decoder: ``"classic"`` (2 deconvs) or ``"simple"`` (bilinear x4 + 3x3 conv).
        head_channels: deconv channels of the classic decoder (256 in ViTPose).
        layer_decay: recommended layer-wise lr decay, recorded in ``default_cfg``.
        grad_checkpointing: recompute the transformer blocks in the backward pass.
    """

    def __init__(self, skeleton: Any = "coco17", input_size: int | tuple[int, int] = (192, 256), *,
                 patch_size: int = 16, embed_dim: int = 768, depth: int = 12, num_heads: int = 12,
                 mlp_ratio: float = 4.0, drop_path_rate: float = 0.3, decoder: str = "classic",
                 head_channels: int = 256, layer_decay: float = 0.75, grad_checkpointing: bool = False) -> None:
        super().__init__(skeleton, input_size, udp=True, codec="udp_heatmap", layer_decay=layer_decay)
        w, h = self.input_size
        if w % patch_size or h % patch_size or patch_size % 4:
            raise ValueError(f"input_size {self.input_size} must be divisible by patch_size {patch_size}, "
                             "itself a multiple of 4")
        if decoder not in ("classic", "simple"):
            raise ValueError(f"decoder must be 'classic' or 'simple', got {decoder!r}")
        self.decoder = decoder
        self.backbone = VisionTransformer(
            img_size=(h, w), patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
            mlp_ratio=mlp_ratio, qkv_bias=True, class_token=False, no_embed_class=True, global_pool="",
            num_classes=0, drop_path_rate=drop_path_rate, embed_layer=PaddedPatchEmbed,
            norm_layer=partial(nn.LayerNorm, eps=1e-6))
        self.grid_size = self.backbone.patch_embed.grid_size  # (rows, cols)
        upsample = patch_size // 4  # features at stride patch_size, heatmaps at stride 4
        if decoder == "classic":
            num_deconv = int(math.log2(upsample))
            if 2 ** num_deconv != upsample:
                raise ValueError(f"classic decoder needs a power-of-two patch_size / 4, got {upsample}")
            self.head = DeconvHead(embed_dim, self.num_joints, num_deconv=num_deconv, deconv_channels=head_channels)
        else:
            self.head = SimpleHead(embed_dim, self.num_joints, upsample=upsample)
        self.depth = depth
        self.set_grad_checkpointing(grad_checkpointing)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, D, H/16, W/16)`` (after the last LayerNorm)."""
        tokens = self.backbone.forward_features(x)
        b, _, d = tokens.shape
        return tokens.transpose(1, 2).reshape(b, d, self.grid_size[0], self.grid_size[1])

    @property
    def num_layers(self) -> int:
        """Number of layer ids: 0 (embeddings), one per block, depth + 1 (last norm and head)."""
        return self.depth + 2

    def layer_id(self, name: str) -> int:
        """ViTPose rule: patch/pos embedding 0, ``blocks.i`` -> i + 1, everything else (last norm, head) depth + 1."""
        if name.startswith(("backbone.patch_embed", "backbone.pos_embed", "backbone.cls_token")):
            return 0
        m = re.match(r"backbone\.blocks\.(\d+)\.", name)
        if m:
            return int(m.group(1)) + 1
        return self.depth + 1


def _create_vitpose(variant: str, skeleton: Any, model_args: dict[str, Any], kwargs: dict[str, Any]) -> ViTPose:
    return build_variant(ViTPose, variant, skeleton, model_args, kwargs)


_S = {"embed_dim": 384, "depth": 12, "num_heads": 12, "drop_path_rate": 0.1, "layer_decay": 0.8}
_B = {"embed_dim": 768, "depth": 12, "num_heads": 12, "drop_path_rate": 0.3, "layer_decay": 0.75}
_L = {"embed_dim": 1024, "depth": 24, "num_heads": 16, "drop_path_rate": 0.5, "layer_decay": 0.8}
_H = {"embed_dim": 1280, "depth": 32, "num_heads": 16, "drop_path_rate": 0.55, "layer_decay": 0.85}


@register_model
def vitpose_tiny(skeleton: Any = "coco17", **kwargs: Any) -> ViTPose:
    """Tiny ViTPose for tests and CPU demos: D=192, depth 6, 3 heads, 64-ch deconvs, 128x96 input (32x24 maps)."""
    args = {"input_size": (96, 128), "embed_dim": 192, "depth": 6, "num_heads": 3, "drop_path_rate": 0.0,
            "head_channels": 64, "layer_decay": 0.8}
    return _create_vitpose("vitpose_tiny", skeleton, args, kwargs)


@register_model
def vitpose_small(skeleton: Any = "coco17", **kwargs: Any) -> ViTPose:
    """ViTPose-S, classic decoder, 256x192 (COCO val AP 73.8 reported)."""
    return _create_vitpose("vitpose_small", skeleton, dict(_S), kwargs)


@register_model
def vitpose_base(skeleton: Any = "coco17", **kwargs: Any) -> ViTPose:
    """ViTPose-B, classic decoder, 256x192 (COCO val AP 75.8 reported)."""
    return _create_vitpose("vitpose_base", skeleton, dict(_B), kwargs)


@register_model
def vitpose_large(skeleton: Any = "coco17", **kwargs: Any) -> ViTPose:
    """ViTPose-L, classic decoder, 256x192 (COCO val AP 78.3 reported)."""
    return _create_vitpose("vitpose_large", skeleton, dict(_L), kwargs)


@register_model
def vitpose_huge(skeleton: Any = "coco17", **kwargs: Any) -> ViTPose:
    """ViTPose-H, classic decoder, 256x192 (COCO val AP 79.1 reported)."""
    return _create_vitpose("vitpose_huge", skeleton, dict(_H), kwargs)


@register_model
def vitpose_small_simple(skeleton: Any = "coco17", **kwargs: Any) -> ViTPose:
    """ViTPose-S, simple decoder (COCO val AP 73.5 reported)."""
    return _create_vitpose("vitpose_small_simple", skeleton, dict(_S, decoder="simple"), kwargs)


@register_model
def vitpose_base_simple(skeleton: Any = "coco17", **kwargs: Any) -> ViTPose:
    """ViTPose-B, simple decoder (COCO val AP 75.5 reported)."""
    return _create_vitpose("vitpose_base_simple", skeleton, dict(_B, decoder="simple"), kwargs)


@register_model
def vitpose_large_simple(skeleton: Any = "coco17", **kwargs: Any) -> ViTPose:
    """ViTPose-L, simple decoder (COCO val AP 78.2 reported)."""
    return _create_vitpose("vitpose_large_simple", skeleton, dict(_L, decoder="simple"), kwargs)


@register_model
def vitpose_huge_simple(skeleton: Any = "coco17", **kwargs: Any) -> ViTPose:
    """ViTPose-H, simple decoder (COCO val AP 78.9 reported)."""
    return _create_vitpose("vitpose_huge_simple", skeleton, dict(_H, decoder="simple"), kwargs)
