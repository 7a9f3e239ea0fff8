"""A2J (anchor-to-joint regression) on an HRNet backbone: HCMoCo's depth 3D pose model for ITOP
(``/work/shared/reference/pretraining.md`` A.7.4 and HCMoCo pitfall 11).

**Network.** An :class:`~humanvision.models.hcmoco.HRNetEncoder` (the segmentation HRNet's forward, BN momentum
0.01; W18 gives 18 / 36 / 72 / 144 channels) whose 4 branches are bilinearly upsampled to stride 4 and concatenated
(:meth:`~humanvision.models.hcmoco.HRNetEncoder.merge`: **270 channels at 72 x 72** for a 288 x 288 input), then
three heads, each ``4 x [Conv3x3(256) + BN + ReLU] + Conv3x3``:

* ``cls_head``: ``A * J`` channels, the anchor responses (logits);
* ``offset_head``: ``A * J * 2`` channels, the in-plane offsets of every anchor to every joint, in crop pixels,
  ``(row, col)`` like the targets (pitfall 11);
* ``depth_head``: ``A * J`` channels, every anchor's estimate of every joint's depth (the target is
  ``(z - mean) * 50``, see :mod:`humanvision.methods.a2j`).

Head initialisation (not in the brief, A2J's custom): conv weights N(0, 0.01), biases 0, BN 1 / 0; the backbone
keeps the official HRNet initialisation (N(0, 0.001)) until a pre-trained encoder is loaded.

**Anchors** (:func:`anchor_grid`). Every stride-4 cell ``(h, w)`` of the ``H x W`` map holds ``A = 9`` anchors at
the in-cell offsets ``(1, 2, 3) x (1, 2, 3)`` px: anchor ``a = 3 i + k`` is at ``(row, col) = (4 h + o_i,
4 w + o_k)``. The anchors are ordered **(W, H, A)**: flat index ``n = (w * H + h) * A + a``, which is the order a
head output ``(B, A * J * c, H, W)`` takes after ``permute(0, 3, 2, 1)`` and a reshape to
``(B, W * H * A, J, c)`` (channel ``(a * J + j) * c + k``). 72 x 72 x 9 = 46,656 anchors for a 288 input.

**Decoding** (:func:`a2j_decode`): ``w = softmax over anchors (dim 1 of (B, N, J), i.e. the official dim 0 of one
sample's (N, J))``; the joint is ``sum_n w[n, j] (anchor_n + offset[n, j])`` in ``(row, col)`` crop pixels and its
depth ``sum_n w[n, j] depth[n, j]``. The losses are in :mod:`humanvision.methods.a2j`.

**Initialisation** (:meth:`A2J.init_backbone`): a flat HRNet state dict (HCMoCo's exported ``depth_encoder.pth``,
``transfer_ckpt_depth.py``'s output, or an ImageNet HRNet whose classification-head keys are dropped), a whole
HCMoCo checkpoint (``encoder2`` by default) or a trained A2J model (its ``backbone.*``). Every trunk key must be
there with our shape (a DataError names the file and key).

Keys: ``backbone.<flat HRNet key>``, ``{cls,offset,depth}_head.<i>.*`` (``i`` = 0..12 of the Sequential: conv,
BN, ReLU four times, then the output conv at 12). Entry points: ``a2j_hrnet_w18`` (the brief's model),
``a2j_hrnet_w32`` and ``a2j_hrnet_tiny`` (``hcmoco_tiny``'s trunk: 1 block per branch, 8 / 16 / 32 / 64 channels,
120 merged channels; 32-wide heads; for tests and CPU recipes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from humanvision.errors import ConfigError, DataError
from humanvision.models._registry import register_model
from humanvision.models.hcmoco import TINY_HRNET, HRNetEncoder

__all__ = ["A2J", "A2J_ANCHOR_OFFSETS", "A2J_STRIDE", "A2JHead", "a2j_decode", "anchor_grid", "flatten_head"]

#: In-cell anchor offsets (pixels) along rows and along columns: 3 x 3 = 9 anchors per stride-4 cell (A.7.4).
A2J_ANCHOR_OFFSETS: tuple[float, ...] = (1.0, 2.0, 3.0)
#: Stride of the merged HRNet map, i.e. of the anchor cells.
A2J_STRIDE = 4


def anchor_grid(height: int, width: int, stride: int = A2J_STRIDE,
                offsets: Sequence[float] = A2J_ANCHOR_OFFSETS) -> torch.Tensor:
    """``(W * H * A, 2)`` float32 anchor positions ``(row, col)`` in input pixels for an ``height x width`` feature
    map, ordered (W, H, A): index ``(w * H + h) * A + 3 i + k`` is at ``(stride h + offsets[i], stride w +
    offsets[k])`` (module docstring)."""
    if height < 1 or width < 1:
        raise ConfigError(f"anchor grid of {height} x {width} cells")
    off = torch.tensor([float(o) for o in offsets], dtype=torch.float32)
    a_row = off[:, None].expand(len(off), len(off)).reshape(-1)  # a = 3 i + k -> offsets[i]
    a_col = off[None, :].expand(len(off), len(off)).reshape(-1)  # -> offsets[k]
    w = torch.arange(width, dtype=torch.float32)[:, None, None] * stride  # (W, 1, 1)
    h = torch.arange(height, dtype=torch.float32)[None, :, None] * stride  # (1, H, 1)
    rows = (h + a_row[None, None, :]).expand(width, height, len(a_row))
    cols = (w + a_col[None, None, :]).expand(width, height, len(a_col))
    return torch.stack([rows, cols], dim=-1).reshape(-1, 2)


def flatten_head(out: torch.Tensor, num_joints: int, channels: int = 1) -> torch.Tensor:
    """A head output ``(B, A * J * c, H, W)`` -> ``(B, W * H * A, J, c)`` by ``permute(0, 3, 2, 1)`` (the (W, H, A)
    anchor order of :func:`anchor_grid`)."""
    b, ch, h, w = out.shape
    if ch % (num_joints * channels):
        raise DataError(f"{ch} head channels are not a multiple of J * c = {num_joints * channels}", field="head")
    return out.permute(0, 3, 2, 1).reshape(b, w * h * (ch // (num_joints * channels)), num_joints, channels)


def a2j_decode(cls: torch.Tensor, offset: torch.Tensor, depth: torch.Tensor, anchors: torch.Tensor
               ) -> dict[str, torch.Tensor]:
    """The anchor-weighted estimates (fp32).

    Args:
        cls: ``(B, N, J)`` anchor-response logits; offset: ``(B, N, J, 2)``; depth: ``(B, N, J)``;
        anchors: ``(N, 2)`` ``(row, col)``.

    Returns:
        ``weights (B, N, J)`` (softmax over the N anchors), ``anchor_xy (B, J, 2)`` = ``sum w * anchor``,
        ``xy (B, J, 2)`` = ``sum w * (anchor + offset)`` (``(row, col)`` crop pixels), ``depth (B, J)`` =
        ``sum w * depth``.
    """
    if cls.ndim != 3 or offset.shape != (*cls.shape, 2) or depth.shape != cls.shape:
        raise DataError(f"expected cls (B, N, J), offset (B, N, J, 2), depth (B, N, J); got {tuple(cls.shape)}, "
                        f"{tuple(offset.shape)}, {tuple(depth.shape)}", field="cls")
    if anchors.shape != (cls.shape[1], 2):
        raise DataError(f"{tuple(anchors.shape)} anchors for {cls.shape[1]} anchor responses", field="anchors")
    w = cls.float().softmax(dim=1)  # over anchors, not joints (pitfall 11)
    anc = anchors.float().to(cls.device)
    anchor_xy = torch.einsum("bnj,nc->bjc", w, anc)
    xy = anchor_xy + torch.einsum("bnj,bnjc->bjc", w, offset.float())
    return {"weights": w, "anchor_xy": anchor_xy, "xy": xy, "depth": (w * depth.float()).sum(1)}


class A2JHead(nn.Sequential):
    """``num_convs x [Conv3x3(width) + BN + ReLU] + Conv3x3(out_channels)`` (A.7.4); Sequential indices as the
    module docstring lists them."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 256, num_convs: int = 4) -> None:
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(num_convs):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            c = width
        layers.append(nn.Conv2d(c, out_channels, 3, padding=1))
        super().__init__(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


class A2J(nn.Module):
    """HRNet + A2J heads (module docstring): ``(B, in_chans, S, S)`` depth crops -> anchor responses, offsets and
    depths over the ``(S / 4)^2 * 9`` anchors.

    Args:
        variant: timm HRNet name of the backbone (``hrnet_w18``).
        num_joints: J (15 for ITOP).
        input_size: the square crop side S (288); fixes the default anchor grid (other sizes work, their grid is
            built on the fly).
        in_chans: input channels (3: the depth replicated, A.7.4).
        head_width, head_convs: the heads' width (256) and number of conv + BN + ReLU blocks (4).
        anchor_offsets: in-cell anchor offsets (1, 2, 3).
        hrnet_args: timm overrides for reduced trunks (``TINY_HRNET``); bn_momentum, fuse_upsample: of the backbone.
    """

    model_name: str = ""

    def __init__(self, variant: str = "hrnet_w18", num_joints: int = 15, input_size: int = 288, in_chans: int = 3,
                 *, head_width: int = 256, head_convs: int = 4,
                 anchor_offsets: Sequence[float] = A2J_ANCHOR_OFFSETS,
                 hrnet_args: Mapping[str, Any] | None = None, bn_momentum: float = 0.01,
                 fuse_upsample: str = "bilinear") -> None:
        super().__init__()
        if num_joints < 1 or head_width < 1 or head_convs < 0:
            raise ConfigError(f"model: num_joints / head_width / head_convs must be >= 1 / >= 1 / >= 0, got "
                              f"{num_joints} / {head_width} / {head_convs}")
        if input_size < A2J_STRIDE or input_size % A2J_STRIDE:
            raise ConfigError(f"model.input_size: a multiple of {A2J_STRIDE}, got {input_size}")
        self.backbone = HRNetEncoder(variant, in_chans, bn_momentum=bn_momentum, fuse_upsample=fuse_upsample,
                                     init="hrnet", hrnet_args=hrnet_args)
        c = self.backbone.num_features
        a = len(anchor_offsets) ** 2
        self.cls_head = A2JHead(c, a * num_joints, head_width, head_convs)
        self.offset_head = A2JHead(c, a * num_joints * 2, head_width, head_convs)
        self.depth_head = A2JHead(c, a * num_joints, head_width, head_convs)
        self.num_joints, self.input_size, self.in_chans, self.variant = num_joints, int(input_size), in_chans, variant
        self.anchor_offsets = tuple(float(o) for o in anchor_offsets)
        self.num_anchors_per_cell = a
        cells = self.input_size // A2J_STRIDE
        self.register_buffer("anchors", anchor_grid(cells, cells, A2J_STRIDE, self.anchor_offsets),
                             persistent=False)
        self.model_args: dict[str, Any] = {}
        self.default_cfg: dict[str, Any] = {"model": self.model_name, "num_joints": num_joints, "hrnet": variant,
                                            "input_size": self.input_size, "in_chans": in_chans}

    def anchors_for(self, height: int, width: int) -> torch.Tensor:
        """The ``(N, 2)`` anchors of an ``height x width`` input (the buffer for the default size)."""
        h, w = -(-height // A2J_STRIDE), -(-width // A2J_STRIDE)
        if (h, w) == (self.input_size // A2J_STRIDE,) * 2:
            return self.anchors
        return anchor_grid(h, w, A2J_STRIDE, self.anchor_offsets).to(self.anchors.device)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The merged stride-4 map ``(B, C, S/4, S/4)`` (270 channels for W18)."""
        return HRNetEncoder.merge(self.backbone(x))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, in_chans, S, S)`` -> ``cls (B, N, J)``, ``offset (B, N, J, 2)``, ``depth (B, N, J)`` and the
        ``anchors (N, 2)`` they refer to."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise DataError(f"expected (B, {self.in_chans}, H, W) input, got {tuple(x.shape)}", field="image")
        f = self.forward_features(x)
        j = self.num_joints
        anchors = self.anchors_for(f.shape[-2] * A2J_STRIDE, f.shape[-1] * A2J_STRIDE)
        return {"cls": flatten_head(self.cls_head(f), j)[..., 0],
                "offset": flatten_head(self.offset_head(f), j, 2),
                "depth": flatten_head(self.depth_head(f), j)[..., 0], "anchors": anchors}

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """:func:`a2j_decode` of :meth:`forward`: ``xy (B, J, 2)`` ``(row, col)`` crop pixels, ``depth (B, J)`` in
        the network's depth units (``(z - mean) * 50``), ``weights``, ``anchor_xy``."""
        out = self(x)
        return a2j_decode(out["cls"], out["offset"], out["depth"], out["anchors"])

    def init_backbone(self, source: str | Path | Mapping[str, torch.Tensor], which: str = "encoder2") -> Any:
        """Load the backbone from a flat HRNet state dict, a whole HCMoCo checkpoint (``which``: ``encoder2``
        depth, ``encoder1`` RGB) or a trained A2J model / method (its ``backbone.*``); the heads stay at their
        initialisation. Returns the :class:`~humanvision.models.parsing.InitReport`."""
        from humanvision.models.parsing import load_encoder_init, read_state_dict

        state, name = read_state_dict(source)
        for prefix in ("model.backbone.", "backbone."):
            if any(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
                break
        report = load_encoder_init(self.backbone, state, which)
        report.source = name
        report.left = [f"{h}.{k}" for h in ("cls_head", "offset_head", "depth_head")
                       for k in getattr(self, h).state_dict()]
        return report


# ------------------------------------------------------------------------------------------------- registry
def _create(name: str, variant: str, defaults: dict[str, Any], kwargs: dict[str, Any]) -> A2J:
    model = A2J(variant, **{**defaults, **kwargs})
    model.model_name = model.default_cfg["model"] = name
    model.model_args = dict(kwargs)
    return model


@register_model
def a2j_hrnet_w18(skeleton: Any = None, **kwargs: Any) -> A2J:
    """A2J on HRNet-W18 (270 merged channels, 72 x 72 x 9 anchors at 288 x 288, 256-wide heads), A.7.4."""
    return _create("a2j_hrnet_w18", "hrnet_w18", {}, kwargs)


@register_model
def a2j_hrnet_w32(skeleton: Any = None, **kwargs: Any) -> A2J:
    """A2J on HRNet-W32 (480 merged channels)."""
    return _create("a2j_hrnet_w32", "hrnet_w32", {}, kwargs)


@register_model
def a2j_hrnet_tiny(skeleton: Any = None, **kwargs: Any) -> A2J:
    """Tiny A2J for tests and CPU recipes: ``hcmoco_tiny``'s trunk (120 merged channels), 32-wide heads."""
    return _create("a2j_hrnet_tiny", "hrnet_w18", {"hrnet_args": TINY_HRNET, "head_width": 32}, kwargs)
