"""HCMoCo's encoders: two HRNets (RGB, depth) and a SemGCN keypoint encoder with their projection heads.

Hong et al., "Versatile Multi-Modal Pre-Training for Human-Centric Perception", CVPR 2022
(https://arxiv.org/abs/2203.13815). Follows ``/work/shared/reference/pretraining.md`` Part A: A.3.1 (HRNet), A.3.2
(SemGCN), A.3.3 (heads), A.6 (checkpoint layout). The losses, memory bank and training loop are not here.

**HRNet trunk (A.3.1) on timm.** ``timm.create_model("hrnet_w18", features_only=True, feature_location="",
out_indices=(1, 2, 3, 4))`` returns exactly the 4 branch outputs of the original HRNetV2 (18, 36, 72, 144 channels
for W18, 32-256 for W32, at strides 4, 8, 16, 32; a 320x320 crop gives 80, 40, 20, 10). timm's default
``feature_location="incre"`` does *not*: it runs the classification head's bottleneck "incre" modules and returns
128, 256, 512, 1024 channels; index 0 of either mode is the stride-2 stem (64 channels). The parameter layout of
timm's trunk is the official one key for key (``conv1``, ``bn1``, ``conv2``, ``bn2``, ``layer1.*``,
``transition{1,2,3}.*``, ``stage{2,3,4}.<module>.branches.*`` / ``.fuse_layers.*``; timm's ``nn.Identity`` /
``nn.Upsample`` slots have no parameters, like the official ``None`` slots). :class:`HRNetEncoder` adopts timm's
modules (same keys) and runs its own forward for two differences from the segmentation HRNet that HCMoCo uses:

* the fusion upsampling: timm (from the classification HRNet) uses ``nn.Upsample(scale_factor, "nearest")``;
  the segmentation HRNet interpolates *bilinearly to the target size* (align_corners False), which also accepts
  sizes that are not multiples of 32 (473x473 parsing crops). ``fuse_upsample="bilinear"`` (default) does that;
  ``"nearest"`` reproduces timm's forward exactly (tested);
* BatchNorm momentum 0.01 (PyTorch convention) instead of timm's 0.1, and the official initialisation (conv
  weights N(0, 0.001), BN 1 / 0) before any ImageNet weights are loaded.

**Heads (A.3.3).** Global: average-pool each branch, concatenate (270-d for W18, 480-d for W32), ``Linear -> 128 ->
L2`` (the pooling is per branch, before any upsampling, as the code does). Dense: the branches bilinearly upsampled
to stride 4 and concatenated (``(B, 270, H/4, W/4)``), then ``Conv2d(270, 128, 1)`` with bias, not normalised.
Keypoints: ``mean over joints -> Linear(128, 128) -> L2``.

**SemGCN (A.3.2).** ``SemGraphConv``: ``W`` (2, in, out) xavier-uniform (gain 1.414), one learnable scalar ``e``
per nonzero entry of the adjacency mask (symmetric skeleton edges + self-loops; init 1; row-major order of the mask,
as the official ``adj[mask] = e``), ``A = softmax_row(mask ? e : -9e15)``, ``out = (A*I) X W0 + (A*(1-I)) X W1 + b``.
Network: GraphConv(2 -> 128) + BN1d + ReLU, 4 residual blocks of 2 x [GraphConv + BN + ReLU], then a plain
SemGraphConv(128 -> 128). Graphs: :data:`HCMOCO_PARENTS` (the brief's parent tables, defined once with the joint
sets in :mod:`humanvision.data.readers.ntu`; the library's ``mpii16`` skeleton connects the shoulders to the thorax,
HCMoCo's graph to the upper neck, so its limbs are not used);
any other registered skeleton uses its limbs.

**Checkpoints (A.6).** :class:`HCMoCo` uses the official attribute names, so an official pre-training checkpoint's
``ckpt["model"]`` maps to our state dict by removing the DDP prefix ``module.`` and nothing else:

* ``module.encoder1.<hrnet key>`` -> ``encoder1.<hrnet key>``: the RGB HRNet (keys as listed above);
* ``module.encoder2.<hrnet key>`` -> ``encoder2.<hrnet key>``: the depth HRNet;
* ``module.encoder3.*`` -> ``encoder3.*``: SemGCN, ``gconv_input.0.gconv.{W,e,bias}`` + ``gconv_input.0.bn.*``,
  ``gconv_layers.<i>.gconv{1,2}.gconv.{W,e,bias}`` + ``gconv_layers.<i>.gconv{1,2}.bn.*`` (i = 0..3),
  ``gconv_output.{W,e,bias}``; ``W`` is (2, in, out), ``e`` (1, nnz) with nnz = 3J - 2 for a tree (46 for
  MPII-16, 37 for COCO-reduced-13), the adjacency itself is not stored;
* ``module.head{1,2,3}.0.{weight,bias}`` -> ``head{1,2,3}.0.*``: the Linear of ``Sequential(Linear, L2)``
  (``head3`` is 128 -> 128, ``head1/2`` 270 -> 128 for W18);
* ``module.encoder{1,2}_linear.{weight,bias}`` -> ``encoder{1,2}_linear.*``: the dense 1x1 convs (stage 2 only);
* ``ckpt["contrast"]["memory_{1,2,3}"]`` (N, 128): the memory bank, not a model key (the trainer keeps it).

:func:`convert_official_checkpoint` does that mapping (and checks it); :func:`extract_encoder` is the official
``transfer_ckpt.py`` / ``transfer_ckpt_depth.py``: the flat HRNet state dict of ``encoder1`` or ``encoder2``, which
loads into :class:`HRNetEncoder`, into timm's ``hrnet_w18`` / ``hrnet_w32`` trunk and into the official seg HRNet.

**Point-cloud variant (A.3.4, ``--arch HRNetPN``, ``CMC3HRNetSGCNPN2SingleHead``).** :class:`HCMoCoPN` replaces the
depth HRNet by PointNet++ MSG (:class:`~humanvision.models.pointnet2.PointNet2MSG`, no ImageNet init). Its input is
built inside ``forward`` from the sample's depth crop (:func:`~humanvision.models.pointnet2.hcmoco_point_cloud`):
every crop pixel back-projected with its original-frame (row, col) (``grid_rc``, the NTUSeg ``grid_xy``), then
``num_points`` (4096) foreground pixels drawn with replacement (in eval mode from a generator seeded 0, so
evaluations are repeatable and leave the global RNG alone). Same attribute names as :class:`HCMoCo`:
``encoder2`` = the PointNet++ trunk (per-point 128-d features), ``head2`` = ``mean over points -> Linear(128,
feat_dim) -> L2``, ``encoder2_linear`` = ``Conv1d(128, gcn_dim, bias=False) + BN1d + ReLU`` per point (stage 2
only), whose output is interpolated (3-NN, inverse distance) to every crop pixel's 3D point and nearest-resized to
the RGB dense map's size (stride 4), so the losses take it unchanged. Keypoint-only samples (no depth) get
all-zero points (the analogue of the HRNet's all-zero input, pitfall 4); the losses mask them by ``true_depth``
exactly as for the HRNet. Official ``HRNetPN`` weights do not load by name (see
:mod:`~humanvision.models.pointnet2`).

Entry points: ``hcmoco_hrnet_w18``, ``hcmoco_hrnet_w32`` and ``hcmoco_tiny`` (ours, for tests: HRNet with 1 block
per branch and 8-64 channels, a 16-wide stem, SemGCN 32 wide with 2 blocks, 32-d features); the skeleton
picks the graph, ``in_chans`` the input channels of both HRNets (3: depth is fed as 3 identical channels,
A.2.3). The entry points default to ``mpii16``, but :func:`~humanvision.models.create_model` always passes its own
default ``skeleton="coco17"`` (whose limbs would make the graph): pass ``skeleton="mpii16"`` or
``"coco13"`` for HCMoCo's graphs. Point-cloud variant: ``hcmoco_hrnet_w18_pn`` (HRNet-W18 + PointNet++ MSG as
A.3.4, 4096 points) and ``hcmoco_pn_tiny`` (``hcmoco_tiny``'s RGB HRNet and SemGCN + :data:`TINY_POINTNET`, 256
points); :func:`is_point_cloud_model` tells them apart by name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from humanvision.data.readers.ntu import COCO13_PARENTS, MPII16_PARENTS
from humanvision.errors import ConfigError, DataError
from humanvision.models._registry import model_entrypoint, register_model
from humanvision.models.pointnet2 import PointNet2MSG, PointNetEncoder, hcmoco_point_cloud

__all__ = [
    "HCMOCO_PARENTS", "TINY_POINTNET", "HCMoCo", "HCMoCoPN", "HRNetEncoder", "L2Norm", "SemGCN", "SemGraphConv",
    "adjacency_from_parents", "convert_official_checkpoint", "extract_encoder", "hcmoco_adjacency",
    "is_point_cloud_model", "is_tree",
]

#: HCMoCo's skeleton graphs (A.2.2) by name: the parent tables kept with the joint sets in
#: :mod:`humanvision.data.readers.ntu` (``mpii16``: MPII order, 0 r-ankle ... 15 l-wrist; ``coco13``: the code's
#: ``coco_reduce``, 0 r-ankle ... 6 head-top / nose ... 12 l-wrist).
HCMOCO_PARENTS: dict[str, tuple[int, ...]] = {"mpii16": MPII16_PARENTS, "coco13": COCO13_PARENTS}
_GRAPH_ALIASES = {"mpii": "mpii16", "coco_reduce": "coco13", "coco_reduce13": "coco13"}


# ---------------------------------------------------------------------------------------------------- graphs
def is_tree(parents: Sequence[int]) -> bool:
    """True if ``parents`` (-1 for the root) describes one tree: a single root, every joint reaching it."""
    n = len(parents)
    if sum(p == -1 for p in parents) != 1 or any(not -1 <= p < n for p in parents):
        return False
    for j in range(n):
        seen, k = set(), j
        while parents[k] != -1:
            if k in seen:
                return False
            seen.add(k)
            k = parents[k]
    return True


def adjacency_from_parents(parents: Sequence[int]) -> torch.Tensor:
    """``(J, J)`` bool mask: symmetric parent-child edges plus self-loops."""
    n = len(parents)
    adj = torch.eye(n, dtype=torch.bool, device="cpu")
    for j, p in enumerate(parents):
        if p >= 0:
            adj[j, p] = adj[p, j] = True
    return adj


def hcmoco_adjacency(skeleton: str = "mpii16", parents: Sequence[int] | None = None) -> torch.Tensor:
    """The SemGCN adjacency mask of ``skeleton``: :data:`HCMOCO_PARENTS` for ``mpii16`` / ``coco13`` (aliases
    ``mpii`` / ``coco_reduce``, the code's ``--skeleton_meta_name``), otherwise the limbs of the registered skeleton; ``parents`` overrides both."""
    if parents is None:
        name = _GRAPH_ALIASES.get(skeleton, skeleton)
        parents = HCMOCO_PARENTS.get(name)
    if parents is not None:
        if not is_tree(parents):
            raise ConfigError(f"model.parents: {list(parents)} is not a tree with one root (-1)")
        return adjacency_from_parents(parents)
    from humanvision.skeletons import SkeletonError, get_skeleton

    try:
        sk = get_skeleton(skeleton)
    except SkeletonError as e:
        raise ConfigError(f"model.skeleton: {e} (HCMoCo graphs: {', '.join(HCMOCO_PARENTS)})") from None
    adj = torch.eye(sk.num_joints, dtype=torch.bool, device="cpu")
    for a, b in sk.limbs:
        adj[a, b] = adj[b, a] = True
    return adj


# ---------------------------------------------------------------------------------------------------- SemGCN
class SemGraphConv(nn.Module):
    """Semantic graph convolution on ``(B, J, C_in)``: learnable softmax edge weights over the adjacency mask, one
    weight matrix for the node itself (``W[0]``) and one for its neighbours (``W[1]``)."""

    def __init__(self, in_features: int, out_features: int, adj: torch.Tensor, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        mask = adj.detach().to("cpu", torch.bool)
        if mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
            raise ValueError(f"adjacency must be (J, J), got {tuple(mask.shape)}")
        self.register_buffer("mask", mask, persistent=False)
        self.W = nn.Parameter(torch.empty(2, in_features, out_features))
        nn.init.xavier_uniform_(self.W, gain=1.414)
        self.e = nn.Parameter(torch.ones(1, int(mask.sum())))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features))
            bound = 1.0 / math.sqrt(out_features)
            nn.init.uniform_(self.bias, -bound, bound)
        else:
            self.register_parameter("bias", None)

    def edge_weights(self) -> torch.Tensor:
        """``A = softmax_row(mask ? e : -9e15)``, ``(J, J)``."""
        logits = torch.full(self.mask.shape, -9e15, dtype=self.e.dtype, device=self.e.device)
        return logits.masked_scatter(self.mask, self.e.reshape(-1)).softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, J, C_in)`` -> ``(B, J, C_out)``."""
        a = self.edge_weights()
        eye = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
        out = (a * eye) @ (x @ self.W[0]) + (a * (1 - eye)) @ (x @ self.W[1])
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, {self.mask.shape[0]} nodes, {self.e.shape[1]} edges"


class _GraphConv(nn.Module):
    """SemGraphConv + BatchNorm1d (over channels) + ReLU."""

    def __init__(self, adj: torch.Tensor, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.gconv = SemGraphConv(in_dim, out_dim, adj)
        self.bn = nn.BatchNorm1d(out_dim)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.gconv(x).transpose(1, 2)).transpose(1, 2))


class _ResGraphConv(nn.Module):
    """Two :class:`_GraphConv` plus the identity."""

    def __init__(self, adj: torch.Tensor, dim: int) -> None:
        super().__init__()
        self.gconv1 = _GraphConv(adj, dim, dim)
        self.gconv2 = _GraphConv(adj, dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gconv2(self.gconv1(x))


class SemGCN(nn.Module):
    """SemGCN keypoint encoder (A.3.2): ``(B, J, in_dim)`` normalised joints -> per-joint ``(B, J, out_dim)``.

    Module names are the official ones (``gconv_input.0``, ``gconv_layers.i.gconv{1,2}``, ``gconv_output``), so
    official ``encoder3.*`` weights load unchanged. Dropout is p = 0 in HCMoCo and therefore left out.
    """

    def __init__(self, adj: torch.Tensor, hid_dim: int = 128, out_dim: int | None = None, num_blocks: int = 4,
                 in_dim: int = 2) -> None:
        super().__init__()
        self.num_joints = adj.shape[0]
        self.gconv_input = nn.Sequential(_GraphConv(adj, in_dim, hid_dim))
        self.gconv_layers = nn.Sequential(*[_ResGraphConv(adj, hid_dim) for _ in range(num_blocks)])
        self.gconv_output = SemGraphConv(hid_dim, hid_dim if out_dim is None else out_dim, adj)

    def forward(self, joints: torch.Tensor) -> torch.Tensor:
        if joints.ndim != 3 or joints.shape[1] != self.num_joints:
            raise DataError(f"expected (B, {self.num_joints}, C) joints, got {tuple(joints.shape)}",
                            field="joints")
        return self.gconv_output(self.gconv_layers(self.gconv_input(joints)))


# ----------------------------------------------------------------------------------------------------- HRNet
_TRUNK = ("conv1", "bn1", "act1", "conv2", "bn2", "act2", "layer1", "transition1", "stage2", "transition2",
          "stage3", "transition3", "stage4")

#: The trunk of ``hcmoco_tiny``: timm HRNet config overrides (1 block per branch, 8/16/32/64 channels).
TINY_HRNET = {
    "stem_width": 16,
    "stage1": {"num_modules": 1, "num_branches": 1, "block_type": "BOTTLENECK", "num_blocks": (1,),
               "num_channels": (8,), "fuse_method": "SUM"},
    "stage2": {"num_modules": 1, "num_branches": 2, "block_type": "BASIC", "num_blocks": (1, 1),
               "num_channels": (8, 16), "fuse_method": "SUM"},
    "stage3": {"num_modules": 1, "num_branches": 3, "block_type": "BASIC", "num_blocks": (1, 1, 1),
               "num_channels": (8, 16, 32), "fuse_method": "SUM"},
    "stage4": {"num_modules": 2, "num_branches": 4, "block_type": "BASIC", "num_blocks": (1, 1, 1, 1),
               "num_channels": (8, 16, 32, 64), "fuse_method": "SUM"},
}


class HRNetEncoder(nn.Module):
    """HRNetV2 backbone (timm's modules, the segmentation HRNet's forward): ``(B, C, H, W)`` -> 4 branch maps at
    strides 4, 8, 16, 32.

    Args:
        variant: timm HRNet name (``hrnet_w18``, ``hrnet_w32`` ...); built with ``pretrained=False``.
        in_chans: input channels (3 for RGB and for HCMoCo's replicated depth).
        bn_momentum: BatchNorm momentum of every BN (0.01 in HCMoCo).
        fuse_upsample: ``"bilinear"`` (segmentation HRNet, to the target size) or ``"nearest"`` (timm's forward).
        init: ``"hrnet"`` (conv N(0, 0.001), BN 1/0, the official ``init_weights``) or ``"timm"``.
        hrnet_args: timm config overrides (``stage4=...``, ``stem_width=...``) for reduced variants.
    """

    def __init__(self, variant: str = "hrnet_w18", in_chans: int = 3, *, bn_momentum: float = 0.01,
                 fuse_upsample: str = "bilinear", init: str = "hrnet",
                 hrnet_args: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if fuse_upsample not in ("bilinear", "nearest"):
            raise ConfigError(f"model.fuse_upsample: 'bilinear' or 'nearest', got {fuse_upsample!r}")
        if init not in ("hrnet", "timm"):
            raise ConfigError(f"model.init: 'hrnet' or 'timm', got {init!r}")
        trunk = timm.create_model(variant, pretrained=False, features_only=True, feature_location="",
                                  out_indices=(1, 2, 3, 4), in_chans=in_chans, **dict(hrnet_args or {}))
        for name in _TRUNK:
            self.add_module(name, getattr(trunk, name))
        self.channels: tuple[int, ...] = tuple(trunk.feature_info.channels())
        self.reductions: tuple[int, ...] = tuple(trunk.feature_info.reduction())
        self.variant, self.in_chans, self.fuse_upsample = variant, in_chans, fuse_upsample
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and init == "hrnet":
                nn.init.normal_(m.weight, std=0.001)
            elif isinstance(m, nn.BatchNorm2d):
                m.momentum = bn_momentum
                if init == "hrnet":
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)

    def load_pretrained(self, state_dict: Mapping[str, torch.Tensor], *, source: str = "state_dict") -> list[str]:
        """Load HRNet weights keeping only our keys, as HCMoCo's ``--IN_Pretrain`` / ``--depth_Pretrain`` and the
        seg HRNet do (an ImageNet ``hrnetv2_w18_imagenet_pretrained.pth`` also holds ``incre_modules``,
        ``downsamp_modules``, ``final_layer`` and ``classifier``). Every trunk key must be there with our shape
        (else a DataError naming ``source`` and the key). Returns the dropped keys."""
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        if missing:
            raise DataError(f"{len(missing)} HRNet keys missing, e.g. {missing[:3]}", file=source)
        for k, v in own.items():
            if tuple(state_dict[k].shape) != tuple(v.shape):
                raise DataError(f"shape {tuple(state_dict[k].shape)} where the encoder has {tuple(v.shape)}",
                                file=source, field=k)
        self.load_state_dict({k: state_dict[k] for k in own}, strict=True)
        return sorted(k for k in state_dict if k not in own)

    @property
    def num_features(self) -> int:
        """Channels of the concatenated branches (270 for W18, 480 for W32)."""
        return sum(self.channels)

    def _module(self, m: nn.Module, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """One HighResolutionModule: its branches, then the fusion with size-aware upsampling."""
        xs = [branch(x) for branch, x in zip(m.branches, xs)]
        if len(xs) == 1:
            return xs
        out = []
        for i, fuse in enumerate(m.fuse_layers):
            y = None
            for j, f in enumerate(fuse):
                if j > i:  # conv 1x1 + BN, then upsample to branch i's size
                    t = F.interpolate(f[1](f[0](xs[j])), size=xs[i].shape[-2:], mode=self.fuse_upsample,
                                      **({"align_corners": False} if self.fuse_upsample == "bilinear" else {}))
                else:  # identity (j == i) or strided 3x3 convs (j < i)
                    t = f(xs[j])
                y = t if y is None else y + t
            out.append(m.fuse_act(y))
        return out

    def _stage(self, stage: nn.Module, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        for m in stage:
            xs = self._module(m, xs)
        return xs

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, in_chans, H, W)`` -> ``[(B, c_k, H / s_k, W / s_k)]`` for the 4 branches (``channels``)."""
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.layer1(self.act2(self.bn2(self.conv2(x))))
        xs = self._stage(self.stage2, [t(x) for t in self.transition1])
        xs = [xs[i] if isinstance(t, nn.Identity) else t(xs[-1]) for i, t in enumerate(self.transition2)]
        xs = self._stage(self.stage3, xs)
        xs = [xs[i] if isinstance(t, nn.Identity) else t(xs[-1]) for i, t in enumerate(self.transition3)]
        return self._stage(self.stage4, xs)

    @staticmethod
    def merge(feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Branches bilinearly upsampled to the first one's size (align_corners False) and concatenated:
        ``(B, sum c_k, H/4, W/4)``."""
        size = feats[0].shape[-2:]
        return torch.cat([feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                                       for f in feats[1:]], 1)

    @staticmethod
    def pool(feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Global average pool of every branch, concatenated: ``(B, sum c_k)``."""
        return torch.cat([f.mean((2, 3)) for f in feats], 1)


# ---------------------------------------------------------------------------------------------- the model
class L2Norm(nn.Module):
    """L2-normalise along dim 1 (the official ``Normalize(2)``; no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1)


class HCMoCo(nn.Module):
    """The three HCMoCo encoders and their heads (A.3.1-A.3.3), official attribute names (see module docstring).

    Args:
        skeleton: keypoint graph (``mpii16`` / ``coco13``, or any registered skeleton's limbs).
        hrnet: timm HRNet variant of both image encoders.
        in_chans: input channels of both image encoders.
        feat_dim: projection size of the global heads (128).
        gcn_dim: SemGCN width, also the dense maps' channels (128).
        gcn_blocks: SemGCN residual blocks (4).
        dense_heads: build ``encoder{1,2}_linear`` (stage 2, ``--linear_feat_map 1``; a stage-1 checkpoint has none).
        parents: explicit parent table overriding the skeleton's graph.
        hrnet_args, fuse_upsample, bn_momentum, init: see :class:`HRNetEncoder`.
    """

    model_name: str = ""

    def __init__(self, skeleton: str = "mpii16", *, hrnet: str = "hrnet_w18", in_chans: int = 3,
                 feat_dim: int = 128, gcn_dim: int = 128, gcn_blocks: int = 4, dense_heads: bool = True,
                 parents: Sequence[int] | None = None, hrnet_args: Mapping[str, Any] | None = None,
                 fuse_upsample: str = "bilinear", bn_momentum: float = 0.01, init: str = "hrnet") -> None:
        super().__init__()
        adj = hcmoco_adjacency(skeleton, parents)
        enc = {"in_chans": in_chans, "bn_momentum": bn_momentum, "fuse_upsample": fuse_upsample, "init": init,
               "hrnet_args": hrnet_args}
        self.encoder1 = HRNetEncoder(hrnet, **enc)
        self.encoder2 = HRNetEncoder(hrnet, **enc)
        self.encoder3 = SemGCN(adj, gcn_dim, gcn_dim, gcn_blocks)
        c = self.encoder1.num_features
        self.head1 = nn.Sequential(nn.Linear(c, feat_dim), L2Norm())
        self.head2 = nn.Sequential(nn.Linear(c, feat_dim), L2Norm())
        self.head3 = nn.Sequential(nn.Linear(gcn_dim, feat_dim), L2Norm())
        if dense_heads:
            self.encoder1_linear = nn.Conv2d(c, gcn_dim, 1, bias=True)
            self.encoder2_linear = nn.Conv2d(c, gcn_dim, 1, bias=True)
        self.skeleton, self.num_joints, self.feat_dim = skeleton, adj.shape[0], feat_dim
        self.dense_heads = dense_heads
        self.model_args: dict[str, Any] = {}
        self.default_cfg: dict[str, Any] = {"model": self.model_name, "skeleton": skeleton, "hrnet": hrnet,
                                            "feat_dim": feat_dim, "num_joints": self.num_joints}

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor, joints: torch.Tensor, *,
                dense: bool | None = None) -> dict[str, torch.Tensor]:
        """Encode one batch.

        Args:
            rgb, depth: ``(B, in_chans, H, W)`` (the 6-channel ``rgbd`` sample split 3 + 3).
            joints: ``(B, J, 2)`` normalised joints (``norm_joints``, (row, col), in [-1, 1]).
            dense: also compute the dense maps (default: when the dense heads exist).

        Returns:
            ``f_rgb``, ``f_depth``, ``f_kp``: ``(B, feat_dim)`` L2-normalised global features (their concatenation
            is the official ``(B, 384)`` output); ``kp``: ``(B, J, gcn_dim)`` raw SemGCN features (``_feat3``,
            used by L_joint / L_scl); with ``dense``: ``dense_rgb``, ``dense_depth`` ``(B, gcn_dim, H/4, W/4)``,
            not normalised.
        """
        feats1, feats2 = self.encoder1(rgb), self.encoder2(depth)
        kp = self.encoder3(joints)
        out = {"f_rgb": self.head1(HRNetEncoder.pool(feats1)), "f_depth": self.head2(HRNetEncoder.pool(feats2)),
               "f_kp": self.head3(kp.mean(1)), "kp": kp}
        if dense is None:
            dense = self.dense_heads
        if dense:
            if not self.dense_heads:
                raise ConfigError("model.dense_heads: dense maps asked of a model built without dense heads")
            out["dense_rgb"] = self.encoder1_linear(HRNetEncoder.merge(feats1))
            out["dense_depth"] = self.encoder2_linear(HRNetEncoder.merge(feats2))
        return out


#: The PointNet++ of ``hcmoco_pn_tiny`` (ours, for CPUs and tests): 2 SA levels (64, 16 centres; radii in metres,
#: 0.1-0.4) and 2 FP levels, 32-d per-point features (:class:`~humanvision.models.pointnet2.PointNet2MSG` args).
TINY_POINTNET: dict[str, Any] = {
    "npoints": (64, 16),
    "radii": ((0.1, 0.2), (0.2, 0.4)),
    "nsamples": ((8, 16), (8, 16)),
    "mlps": (((8, 16), (16, 16)), ((32,), (32,))),
    "fp_mlps": ((32,), (32, 32)),
}


class HCMoCoPN(nn.Module):
    """HCMoCo's point-cloud variant (A.3.4): RGB HRNet + PointNet++ MSG on the back-projected depth crop + SemGCN.

    Args:
        num_points: points drawn per crop from the foreground, with replacement (4096 in HCMoCo; fewer on CPUs).
        pointnet_args: :class:`~humanvision.models.pointnet2.PointNet2MSG` arguments (default: HCMoCo's, A.3.4);
            its per-point output width feeds ``head2`` and ``encoder2_linear``.
        The rest as :class:`HCMoCo` (the HRNet arguments apply to the RGB encoder only).

    ``forward`` takes the depth crop and the point-cloud fields of the batch (see :meth:`forward`) and returns
    :class:`HCMoCo`'s dict plus ``points`` ``(B, num_points, 3)``, the sampled cloud.
    """

    model_name: str = ""
    #: batch fields ``forward`` needs besides ``rgbd`` / ``norm_joints`` (written by the dataset when
    #: ``hcmoco.depth_encoder: pointnet``)
    batch_fields: tuple[str, ...] = ("grid_rc", "frame_hw", "depth_mean", "depth_mask")

    def __init__(self, skeleton: str = "mpii16", *, hrnet: str = "hrnet_w18", in_chans: int = 3,
                 feat_dim: int = 128, gcn_dim: int = 128, gcn_blocks: int = 4, dense_heads: bool = True,
                 parents: Sequence[int] | None = None, hrnet_args: Mapping[str, Any] | None = None,
                 fuse_upsample: str = "bilinear", bn_momentum: float = 0.01, init: str = "hrnet",
                 num_points: int = 4096, pointnet_args: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if num_points < 1:
            raise ConfigError(f"model.num_points: need >= 1, got {num_points}")
        adj = hcmoco_adjacency(skeleton, parents)
        self.encoder1 = HRNetEncoder(hrnet, in_chans, bn_momentum=bn_momentum, fuse_upsample=fuse_upsample,
                                     init=init, hrnet_args=hrnet_args)
        try:
            self.encoder2 = PointNet2MSG(**dict(pointnet_args or {}))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model.pointnet_args: {e}") from None
        self.encoder3 = SemGCN(adj, gcn_dim, gcn_dim, gcn_blocks)
        c, p = self.encoder1.num_features, self.encoder2.out_channels
        self.head1 = nn.Sequential(nn.Linear(c, feat_dim), L2Norm())
        self.head2 = nn.Sequential(nn.Linear(p, feat_dim), L2Norm())
        self.head3 = nn.Sequential(nn.Linear(gcn_dim, feat_dim), L2Norm())
        if dense_heads:
            self.encoder1_linear = nn.Conv2d(c, gcn_dim, 1, bias=True)
            self.encoder2_linear = nn.Sequential(nn.Conv1d(p, gcn_dim, 1, bias=False), nn.BatchNorm1d(gcn_dim),
                                                 nn.ReLU(inplace=True))
            nn.init.kaiming_normal_(self.encoder2_linear[0].weight)
        self.skeleton, self.num_joints, self.feat_dim = skeleton, adj.shape[0], feat_dim
        self.dense_heads, self.num_points = dense_heads, int(num_points)
        self.model_args: dict[str, Any] = {}
        self.default_cfg: dict[str, Any] = {"model": self.model_name, "skeleton": skeleton, "hrnet": hrnet,
                                            "feat_dim": feat_dim, "num_joints": self.num_joints,
                                            "num_points": self.num_points}

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor, joints: torch.Tensor, *, grid_rc: torch.Tensor,
                frame_hw: torch.Tensor, depth_mean: torch.Tensor, depth_mask: torch.Tensor,
                dense: bool | None = None, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Encode one batch.

        Args:
            rgb: ``(B, in_chans, S, S)``; depth: ``(B, C, S, S)`` (the replicated, mean-centred depth; channel 0 is
                used) or ``(B, S, S)``; joints: ``(B, J, 2)`` ``norm_joints``.
            grid_rc, frame_hw, depth_mean, depth_mask: the crop's original-frame pixel coordinates ``(B, 2, S,
                S)``, the frame size ``(B, 2)``, the subtracted foreground mean ``(B,)`` and the foreground ``(B, S,
                S)`` (see :func:`~humanvision.models.pointnet2.hcmoco_point_cloud`).
            dense: also compute the dense maps (default: when the dense heads exist).
            generator: the point draw's generator (default: the global RNG in training mode, a generator seeded 0
                in eval mode).

        Returns:
            As :class:`HCMoCo` (``f_rgb``, ``f_depth``, ``f_kp``, ``kp``; with ``dense``: ``dense_rgb``,
            ``dense_depth``, both ``(B, gcn_dim, S/4, S/4)``) plus ``points`` ``(B, num_points, 3)``.
        """
        d = depth[:, 0] if depth.dim() == 4 else depth
        if generator is None and not self.training:
            generator = torch.Generator(device=d.device).manual_seed(0)
        cloud = hcmoco_point_cloud(d, grid_rc, frame_hw, depth_mean, depth_mask, self.num_points,
                                   generator=generator)
        feats1 = self.encoder1(rgb)
        pts = self.encoder2(cloud.points)  # (B, C, P)
        kp = self.encoder3(joints)
        out = {"f_rgb": self.head1(HRNetEncoder.pool(feats1)), "f_depth": self.head2(pts.mean(-1)),
               "f_kp": self.head3(kp.mean(1)), "kp": kp, "points": cloud.points}
        if dense is None:
            dense = self.dense_heads
        if dense:
            if not self.dense_heads:
                raise ConfigError("model.dense_heads: dense maps asked of a model built without dense heads")
            out["dense_rgb"] = self.encoder1_linear(HRNetEncoder.merge(feats1))
            out["dense_depth"] = PointNetEncoder.dense_map(self.encoder2_linear(pts), cloud.points, cloud.pixels,
                                                           tuple(d.shape[-2:]), tuple(out["dense_rgb"].shape[-2:]))
        return out


def is_point_cloud_model(name: str) -> bool:
    """True when the registered entry point ``name`` builds an :class:`HCMoCoPN` (its return annotation)."""
    import typing

    try:
        ret = typing.get_type_hints(model_entrypoint(name)).get("return")
    except (NameError, TypeError):
        return False
    return isinstance(ret, type) and issubclass(ret, HCMoCoPN)


# --------------------------------------------------------------------------------------------- checkpoints
_PREFIX = "module."


def convert_official_checkpoint(ckpt: Mapping[str, Any], model: HCMoCo | None = None) -> dict[str, torch.Tensor]:
    """Our :class:`HCMoCo` state dict from an official pre-training checkpoint (``{'model', 'contrast', ...}``) or
    its ``model`` dict: the ``module.`` prefix removed (the only difference, see the module docstring).

    With ``model``, every key and shape is checked against it: a missing or unexpected key or a shape mismatch
    raises a DataError naming it (``encoder{1,2}_linear`` may be absent: a stage-1 checkpoint has none).
    """
    sd = ckpt.get("model", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(sd, Mapping):
        raise DataError("expected a checkpoint dict or its 'model' state dict", field="model")
    out = {k.removeprefix(_PREFIX): v for k, v in sd.items()}
    if model is not None:
        ours = model.state_dict()
        extra = sorted(set(out) - set(ours))
        missing = sorted(k for k in set(ours) - set(out) if not k.startswith(("encoder1_linear", "encoder2_linear")))
        if extra or missing:
            raise DataError(f"checkpoint keys do not match the model: unexpected {extra[:5]}, missing {missing[:5]}"
                            f" ({len(extra)} unexpected, {len(missing)} missing)", field="model")
        for k, v in out.items():
            if tuple(v.shape) != tuple(ours[k].shape):
                raise DataError(f"shape {tuple(v.shape)} where the model has {tuple(ours[k].shape)}", field=k)
    return out


def extract_encoder(state_dict: Mapping[str, torch.Tensor], which: str = "encoder1") -> dict[str, torch.Tensor]:
    """The flat HRNet state dict of ``encoder1`` (RGB) or ``encoder2`` (depth), as ``transfer_ckpt.py`` /
    ``transfer_ckpt_depth.py`` write it (A.6).

    ``state_dict``: our :class:`HCMoCo` state dict, an official ``ckpt['model']`` (``module.`` prefix) or the whole
    official checkpoint. The result loads into :class:`HRNetEncoder`, timm's ``features_only`` HRNet trunk and the
    official segmentation HRNet (which filters keys by name). The official scripts' rule (``k[7:15] == 'encoder1'``,
    strip 16 characters) also turns ``module.encoder1_linear.{weight,bias}`` into ``linear.{weight,bias}``, which
    every loader then drops by name; those two keys are left out here.
    """
    if which not in ("encoder1", "encoder2"):
        raise ConfigError(f"which: 'encoder1' (RGB) or 'encoder2' (depth), got {which!r}")
    if "model" in state_dict and isinstance(state_dict["model"], Mapping):
        state_dict = state_dict["model"]
    prefix = which + "."
    out = {}
    for k, v in state_dict.items():
        key = k.removeprefix(_PREFIX)
        if key.startswith(prefix):
            out[key[len(prefix):]] = v
    if not out:
        raise DataError(f"no {which}.* keys in the state dict", field=which)
    return out


# ------------------------------------------------------------------------------------------------ registry
def _create(variant: str, skeleton: Any, model_args: dict[str, Any], kwargs: dict[str, Any],
            cls: type[HCMoCo | HCMoCoPN] = HCMoCo) -> Any:
    model = cls(skeleton=skeleton, **{**model_args, **kwargs})
    model.model_name = model.default_cfg["model"] = variant
    model.model_args = {"skeleton": skeleton, **kwargs}
    return model


@register_model
def hcmoco_hrnet_w18(skeleton: Any = "mpii16", **kwargs: Any) -> HCMoCo:
    """HCMoCo with two HRNet-W18 encoders (270-d pooled / merged features) and SemGCN (128, 4 blocks)."""
    return _create("hcmoco_hrnet_w18", skeleton, {"hrnet": "hrnet_w18"}, kwargs)


@register_model
def hcmoco_hrnet_w32(skeleton: Any = "mpii16", **kwargs: Any) -> HCMoCo:
    """HCMoCo with two HRNet-W32 encoders (480-d pooled / merged features) and SemGCN (128, 4 blocks)."""
    return _create("hcmoco_hrnet_w32", skeleton, {"hrnet": "hrnet_w32"}, kwargs)


@register_model
def hcmoco_tiny(skeleton: Any = "mpii16", **kwargs: Any) -> HCMoCo:
    """Tiny HCMoCo for tests: HRNet 1 block per branch, 8/16/32/64 channels (120-d), SemGCN 32 wide with 2 blocks,
    32-d global features."""
    args = {"hrnet": "hrnet_w18", "hrnet_args": TINY_HRNET, "feat_dim": 32, "gcn_dim": 32, "gcn_blocks": 2}
    return _create("hcmoco_tiny", skeleton, args, kwargs)


@register_model
def hcmoco_hrnet_w18_pn(skeleton: Any = "mpii16", **kwargs: Any) -> HCMoCoPN:
    """HCMoCo's point-cloud variant (A.3.4): RGB HRNet-W18, PointNet++ MSG (SA npoints 4096/1024/256/64, 128-d
    per-point output) on 4096 depth points, SemGCN (128, 4 blocks)."""
    return _create("hcmoco_hrnet_w18_pn", skeleton, {"hrnet": "hrnet_w18"}, kwargs, HCMoCoPN)


@register_model
def hcmoco_pn_tiny(skeleton: Any = "mpii16", **kwargs: Any) -> HCMoCoPN:
    """Tiny point-cloud variant for CPUs and tests: ``hcmoco_tiny``'s RGB HRNet and SemGCN, :data:`TINY_POINTNET`
    on 256 depth points, 32-d features."""
    args = {"hrnet": "hrnet_w18", "hrnet_args": TINY_HRNET, "feat_dim": 32, "gcn_dim": 32, "gcn_blocks": 2,
            "num_points": 256, "pointnet_args": TINY_POINTNET}
    return _create("hcmoco_pn_tiny", skeleton, args, kwargs, HCMoCoPN)
