"""PointNet++ in pure PyTorch (no compiled ops) and the point-cloud encoder of HCMoCo's ``HRNetPN`` variant.

PointNet++: Qi et al., "PointNet++: Deep Hierarchical Feature Learning on Point Sets in a Metric Space", NeurIPS
2017 (https://arxiv.org/abs/1706.02413). The operators follow the semantics of the CUDA ops that HCMoCo compiles
(the PointNet2.PyTorch family), so that a model behaves the same without them:

* :func:`farthest_point_sample`: starts at ``start`` (index 0 by default, as the CUDA op), keeps for every point
  its squared distance to the nearest chosen centre and picks the farthest next; ties go to the lowest index
  (``argmax``). Vectorised over the batch; the only loop is over the ``npoint`` samples. Deliberate deviation: the
  CUDA kernel of some forks never selects points within ``sqrt(1e-3)`` of the origin; we do not copy that.
* :func:`ball_query`: for each centre, the first ``nsample`` point indices *in index order* with squared distance
  strictly below ``radius ** 2``; missing slots repeat the first index found, and a centre without any neighbour
  gets index 0 everywhere (the op's zero-initialised output). Vectorised: distances, a mask, then the ``nsample``
  smallest candidate indices (``topk``), in chunks of centres to bound memory.
* :func:`group_points` / :func:`gather_points`: index features ``(B, C, N)`` by ``(B, M, K)`` / ``(B, M)``.
* :func:`three_nn` + :func:`three_interpolate`: the 3 nearest known points (Euclidean distance) and inverse-distance
  weights ``1 / (d + 1e-8)`` normalised to sum 1 (:func:`interpolate_features` does both).

Layers (channels-first features ``(B, C, N)``, coordinates channels-last ``(B, N, 3)``): :class:`SharedMLP` (1x1
conv without bias + BN + ReLU per layer), :class:`SetAbstraction` (SSG; ``npoint=None`` groups all points into one
centre at the origin), :class:`SetAbstractionMSG` (one grouping + MLP + max-pool per radius, concatenated),
:class:`FeaturePropagation` (3-NN interpolation, concatenation with the skip features, shared MLP).

HCMoCo's point-cloud encoder (pretraining.md A.3.4, ``pycontrast/networks/pointnet2_msg.py`` of hongfz16/HCMoCo):
:class:`PointNet2MSG` with SA npoints (4096, 1024, 256, 64), radii ((.025, .125), (.125, .25), (.25, .5), (.5, 1)),
nsample (16, 32) at every level, SA MLPs ((16, 32), (32, 64)), ((64, 128), (64, 128)), ((128, 256), (128, 256)),
((256, 512), (256, 512)) (not in the brief: the ``MLPS`` of that file, a reduced list; PointNet++'s usual 3-layer
list is commented out there; relative xyz is concatenated in front of the features, so a level's first layer takes
``C + 3`` channels), FP MLPs (128, 128), (256, 256), (512, 512), (512, 512), xyz-only input; its output is the
per-point ``(B, 128, N)`` feature of the first FP level. :class:`PointNetEncoder` adds HCMoCo's heads: global
``mean over points -> Linear(128, 128) -> L2`` and dense ``Conv1d(128, 128) + BN + ReLU`` per point (the
``pt_utils.Conv1d(.., bn=True)`` of the code, whose default activation is ReLU), which
:meth:`PointNetEncoder.dense_map` interpolates (3-NN) to every pixel and resizes (nearest) to the stride-4 grid.

Cost: FPS is a Python loop of ``npoint`` steps of a few small kernels each (HCMoCo's levels: 4096 + 1024 + 256 +
64 steps per forward, the first a full permutation of the 4096 input points, kept because later levels depend on
its order); ball query and 3-NN are dense distance matrices in chunks (:data:`CHUNK_ELEMENTS`). Official
``encoder2`` weights of the ``HRNetPN`` variant do not load by name (``SA_modules`` / ``FP_modules`` /
``pt_utils`` naming differs from ``sa`` / ``fp`` / ``SharedMLP`` here).

Point clouds from depth: :func:`depth_to_points` (pinhole ``K``, the :mod:`humanvision.geometry.camera`
conventions: pixel ``(i, j)`` is ``u = j, v = i``, camera x right, y down, z forward, metres out) and
:func:`hcmoco_backproject` (the code's fixed ``0.0035`` back-projection of A.3.4, for fidelity).
:func:`hcmoco_point_cloud` is the ``HRNetPN`` model's input: every crop pixel back-projected with its
original-frame coordinates (``grid_xy`` of the NTUSeg sample, here ``grid_rc`` in (row, col) order), and
``num_points`` foreground pixels drawn with replacement (4096 in HCMoCo). A crop without foreground (a keypoint-only
MPII / COCO sample, whose depth is missing) gives all-zero points, the point-cloud analogue of the depth HRNet's
all-zero input (pitfall 4): the encoder still runs on them and the losses mask them by ``true_depth``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from humanvision.errors import DataError

__all__ = [
    "CHUNK_ELEMENTS", "CropPointCloud", "FeaturePropagation", "PointNet2MSG", "PointNetEncoder", "PointSample",
    "SetAbstraction", "SetAbstractionMSG", "SharedMLP", "ball_query", "depth_to_points", "farthest_point_sample",
    "gather_points", "group_points", "hcmoco_backproject", "hcmoco_point_cloud", "interpolate_features",
    "three_interpolate", "three_nn",
]


def _check_xyz(xyz: torch.Tensor, name: str) -> None:
    if xyz.ndim != 3 or xyz.shape[-1] != 3:
        raise DataError(f"expected (B, N, 3) coordinates, got {tuple(xyz.shape)}", field=name)


#: Distance-matrix entries per chunk when ``chunk`` is None: small on CPU (the chunk stays in cache: 2^18 was the
#: fastest of 2^16-2^25 for 8 x 512 x 2048 ball queries), large on GPU (fewer kernel launches; 2^26 = 256 MB).
CHUNK_ELEMENTS = {"cpu": 2 ** 18, "cuda": 2 ** 26}


def _chunk(chunk: int | None, b: int, n: int, device: torch.device) -> int:
    if chunk is not None:
        return max(1, chunk)
    return max(1, CHUNK_ELEMENTS.get(device.type, 2 ** 22) // max(1, b * n))


def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared distances ``(B, M, N)`` between ``a`` ``(B, M, 3)`` and ``b`` ``(B, N, 3)``, summed as
    ``(dx^2 + dy^2) + dz^2`` per coordinate (no ``|a|^2 + |b|^2 - 2ab`` expansion, whose rounding would move points
    across a ball-query radius; no ``(B, M, N, 3)`` temporary)."""
    d = (a[..., 0, None] - b[:, None, :, 0]).square_()
    d += (a[..., 1, None] - b[:, None, :, 1]).square_()
    d += (a[..., 2, None] - b[:, None, :, 2]).square_()
    return d


# ----------------------------------------------------------------------------------------------------- operators
def farthest_point_sample(xyz: torch.Tensor, npoint: int, start: int | torch.Tensor = 0) -> torch.Tensor:
    """Indices ``(B, npoint)`` of iteratively farthest points of ``xyz`` ``(B, N, 3)``, the first being ``start``
    (an int or a ``(B,)`` tensor). With ``npoint > N`` the extra picks repeat index 0 (all distances are 0)."""
    _check_xyz(xyz, "xyz")
    b, n, _ = xyz.shape
    if n == 0 or npoint < 1:
        raise DataError(f"cannot sample {npoint} points from {n}", field="npoint")
    batch = torch.arange(b, device=xyz.device)
    farthest = torch.as_tensor(start, device=xyz.device).long().expand(b).clone()
    dist = torch.full((b, n), 1e10, dtype=xyz.dtype, device=xyz.device)
    out = torch.empty(b, npoint, dtype=torch.long, device=xyz.device)
    for i in range(npoint):
        out[:, i] = farthest
        dist = torch.minimum(dist, _sq_dist(xyz[batch, farthest].unsqueeze(1), xyz)[:, 0])
        farthest = dist.argmax(-1)
    return out


def ball_query(xyz: torch.Tensor, centres: torch.Tensor, radius: float, nsample: int, *,
               chunk: int | None = None) -> torch.Tensor:
    """Neighbour indices ``(B, M, nsample)`` into ``xyz`` ``(B, N, 3)`` for ``centres`` ``(B, M, 3)``.

    Slot k holds the k-th point (in index order) with squared distance ``< radius ** 2`` (strict); slots beyond
    the number found repeat the first one found; a centre with no neighbour gets 0 in every slot. ``chunk``
    centres are processed at a time (memory ``B * chunk * N``; default: :data:`CHUNK_ELEMENTS` distances)."""
    _check_xyz(xyz, "xyz")
    _check_xyz(centres, "centres")
    b, n, _ = xyz.shape
    r2 = torch.tensor(float(radius), dtype=xyz.dtype) ** 2  # squared in the points' precision, as the op
    k = min(nsample, n)
    order = torch.arange(n, device=xyz.device, dtype=torch.int32 if n < 2 ** 31 - 1 else torch.long)
    parts = []
    chunk = _chunk(chunk, b, n, xyz.device)
    for s in range(0, centres.shape[1], chunk):
        d2 = _sq_dist(centres[:, s:s + chunk], xyz)  # (B, m, N)
        cand = torch.where(d2 < r2, order, n)  # a neighbour's index, else N (sorts last)
        first = cand.topk(k, dim=-1, largest=False, sorted=True).values.long()
        if k < nsample:
            first = torch.cat([first, first.new_full((*first.shape[:2], nsample - k), n)], -1)
        idx = torch.where(first == n, first[..., :1], first)  # pad with the first neighbour found
        parts.append(torch.where(idx == n, torch.zeros_like(idx), idx))  # no neighbour at all: 0
    return torch.cat(parts, 1) if parts else centres.new_zeros((b, 0, nsample), dtype=torch.long)


def gather_points(features: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``features`` ``(B, C, N)`` at ``idx`` ``(B, M)`` -> ``(B, C, M)``."""
    return features.gather(2, idx.unsqueeze(1).expand(-1, features.shape[1], -1))


def group_points(features: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``features`` ``(B, C, N)`` at ``idx`` ``(B, M, K)`` -> ``(B, C, M, K)``."""
    b, m, k = idx.shape
    return gather_points(features, idx.reshape(b, m * k)).reshape(b, features.shape[1], m, k)


def three_nn(unknown: torch.Tensor, known: torch.Tensor, *, chunk: int | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances and indices ``(B, n, 3)`` of the 3 nearest ``known`` ``(B, m, 3)`` points of each ``unknown``
    ``(B, n, 3)`` point, nearest first (fewer columns when ``m < 3``). ``chunk`` query points at a time (default:
    :data:`CHUNK_ELEMENTS` distances per chunk)."""
    _check_xyz(unknown, "unknown")
    _check_xyz(known, "known")
    k = min(3, known.shape[1])
    dists, idxs = [], []
    chunk = _chunk(chunk, known.shape[0], known.shape[1], known.device)
    for s in range(0, unknown.shape[1], chunk):
        d2 = _sq_dist(unknown[:, s:s + chunk], known)
        d, i = d2.topk(k, dim=-1, largest=False, sorted=True)
        dists.append(d.clamp_min(0).sqrt())
        idxs.append(i)
    return torch.cat(dists, 1), torch.cat(idxs, 1)


def three_interpolate(features: torch.Tensor, idx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``sum_k weight[..., k] * features[:, :, idx[..., k]]``: ``(B, C, m)`` -> ``(B, C, n)``."""
    out = None
    for k in range(idx.shape[-1]):
        t = gather_points(features, idx[..., k]) * weight[:, None, :, k]
        out = t if out is None else out + t
    return out


def interpolate_features(unknown: torch.Tensor, known: torch.Tensor, known_feats: torch.Tensor, *,
                         chunk: int | None = None) -> torch.Tensor:
    """Inverse-distance (3-NN) interpolation of ``known_feats`` ``(B, C, m)`` to ``unknown`` ``(B, n, 3)``."""
    dist, idx = three_nn(unknown, known, chunk=chunk)
    recip = 1.0 / (dist + 1e-8)
    return three_interpolate(known_feats, idx, recip / recip.sum(-1, keepdim=True))


# -------------------------------------------------------------------------------------------------------- layers
class SharedMLP(nn.Sequential):
    """Per-point MLP on ``(B, C, M, K)``: ``[Conv2d 1x1 (no bias) + BatchNorm2d + ReLU]`` per layer, Kaiming-normal
    conv init. ``channels = (c_in, c_1, ..., c_L)``."""

    def __init__(self, channels: Sequence[int]) -> None:
        layers: list[nn.Module] = []
        for cin, cout in itertools.pairwise(channels):
            conv = nn.Conv2d(cin, cout, 1, bias=False)
            nn.init.kaiming_normal_(conv.weight)
            layers += [conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        super().__init__(*layers)


def _group(xyz: torch.Tensor, features: torch.Tensor | None, centres: torch.Tensor, radius: float,
           nsample: int) -> torch.Tensor:
    """Relative xyz of the ball-query neighbours, then their features: ``(B, 3 + C, M, K)``."""
    idx = ball_query(xyz, centres, radius, nsample)
    grouped = group_points(xyz.transpose(1, 2), idx) - centres.transpose(1, 2).unsqueeze(-1)
    if features is not None:
        grouped = torch.cat([grouped, group_points(features, idx)], 1)
    return grouped


class SetAbstraction(nn.Module):
    """Single-scale set abstraction: FPS centres, ball query, shared MLP on ``[relative xyz, features]``, max-pool.

    Args:
        npoint: number of centres (``None``: one centre at the origin grouping every point, PointNet++'s last SSG
            layer).
        radius, nsample: ball query.
        mlp: output channels of the shared MLP layers; its input is ``in_channels + 3``.
        in_channels: feature channels ``C`` of the input (0 for xyz only).
    """

    def __init__(self, npoint: int | None, radius: float, nsample: int, mlp: Sequence[int],
                 in_channels: int = 0) -> None:
        super().__init__()
        self.npoint, self.radius, self.nsample = npoint, radius, nsample
        self.mlp = SharedMLP([in_channels + 3, *mlp])
        self.out_channels = mlp[-1]

    def forward(self, xyz: torch.Tensor, features: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, N, 3)``, ``(B, C, N)`` -> centres ``(B, M, 3)``, features ``(B, C', M)``."""
        if self.npoint is None:
            centres = xyz.new_zeros(xyz.shape[0], 1, 3)
            grouped = xyz.transpose(1, 2).unsqueeze(2)  # (B, 3, 1, N)
            if features is not None:
                grouped = torch.cat([grouped, features.unsqueeze(2)], 1)
        else:
            centres = gather_points(xyz.transpose(1, 2), farthest_point_sample(xyz, self.npoint)).transpose(1, 2)
            grouped = _group(xyz, features, centres, self.radius, self.nsample)
        return centres, self.mlp(grouped).amax(-1)


class SetAbstractionMSG(nn.Module):
    """Multi-scale grouping: one set of FPS centres, one (ball query, shared MLP, max-pool) per radius, the
    per-scale features concatenated (``sum(mlp[-1] for mlp in mlps)`` channels)."""

    def __init__(self, npoint: int, radii: Sequence[float], nsamples: Sequence[int],
                 mlps: Sequence[Sequence[int]], in_channels: int = 0) -> None:
        super().__init__()
        if not len(radii) == len(nsamples) == len(mlps):
            raise ValueError(f"radii {radii}, nsamples {nsamples} and mlps {mlps} must have the same length")
        self.npoint, self.radii, self.nsamples = npoint, tuple(radii), tuple(nsamples)
        self.mlps = nn.ModuleList(SharedMLP([in_channels + 3, *mlp]) for mlp in mlps)
        self.out_channels = sum(mlp[-1] for mlp in mlps)

    def forward(self, xyz: torch.Tensor, features: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, N, 3)``, ``(B, C, N)`` -> centres ``(B, npoint, 3)``, features ``(B, out_channels, npoint)``."""
        centres = gather_points(xyz.transpose(1, 2), farthest_point_sample(xyz, self.npoint)).transpose(1, 2)
        out = [mlp(_group(xyz, features, centres, r, k)).amax(-1)
               for r, k, mlp in zip(self.radii, self.nsamples, self.mlps)]
        return centres, torch.cat(out, 1)


class FeaturePropagation(nn.Module):
    """3-NN interpolation of the coarse features to the fine points, concatenated *after* them with the fine
    level's skip features, then a shared MLP. ``channels = (C_coarse + C_skip, c_1, ..., c_L)``."""

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        self.mlp = SharedMLP(channels)
        self.out_channels = channels[-1]

    def forward(self, fine_xyz: torch.Tensor, coarse_xyz: torch.Tensor, fine_feats: torch.Tensor | None,
                coarse_feats: torch.Tensor) -> torch.Tensor:
        """-> ``(B, out_channels, N_fine)``."""
        x = interpolate_features(fine_xyz, coarse_xyz, coarse_feats)
        if fine_feats is not None:
            x = torch.cat([x, fine_feats], 1)
        return self.mlp(x.unsqueeze(-1)).squeeze(-1)


# ------------------------------------------------------------------------------------------------------ networks
HCMOCO_PN2 = {
    "npoints": (4096, 1024, 256, 64),
    "radii": ((0.025, 0.125), (0.125, 0.25), (0.25, 0.5), (0.5, 1.0)),
    "nsamples": ((16, 32), (16, 32), (16, 32), (16, 32)),
    "mlps": (((16, 32), (32, 64)), ((64, 128), (64, 128)), ((128, 256), (128, 256)), ((256, 512), (256, 512))),
    "fp_mlps": ((128, 128), (256, 256), (512, 512), (512, 512)),
}


class PointNet2MSG(nn.Module):
    """PointNet++ MSG segmentation trunk (HCMoCo's ``Pointnet2MSG``): SA levels then FP levels back to the input
    points; ``forward`` returns the per-point features ``(B, fp_mlps[0][-1], N)``.

    Args:
        in_channels: per-point input features besides xyz (0 in HCMoCo).
        npoints, radii, nsamples, mlps: one entry per SA level (see :class:`SetAbstractionMSG`).
        fp_mlps: one entry per FP level, finest first; FP level k maps level k + 1 back to level k.
    """

    def __init__(self, in_channels: int = 0, *, npoints: Sequence[int] = HCMOCO_PN2["npoints"],
                 radii: Sequence[Sequence[float]] = HCMOCO_PN2["radii"],
                 nsamples: Sequence[Sequence[int]] = HCMOCO_PN2["nsamples"],
                 mlps: Sequence[Sequence[Sequence[int]]] = HCMOCO_PN2["mlps"],
                 fp_mlps: Sequence[Sequence[int]] = HCMOCO_PN2["fp_mlps"]) -> None:
        super().__init__()
        if not len(npoints) == len(radii) == len(nsamples) == len(mlps) == len(fp_mlps):
            raise ValueError("npoints, radii, nsamples, mlps and fp_mlps need one entry per level")
        self.sa = nn.ModuleList()
        skip = [in_channels]
        for npoint, r, k, mlp in zip(npoints, radii, nsamples, mlps):
            self.sa.append(SetAbstractionMSG(npoint, r, k, mlp, in_channels=skip[-1]))
            skip.append(self.sa[-1].out_channels)
        self.fp = nn.ModuleList()
        for lvl, mlp in enumerate(fp_mlps):
            coarse = fp_mlps[lvl + 1][-1] if lvl + 1 < len(fp_mlps) else skip[-1]
            self.fp.append(FeaturePropagation([coarse + skip[lvl], *mlp]))
        self.out_channels = fp_mlps[0][-1]

    def forward(self, xyz: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, N, 3)`` (+ ``(B, C, N)``) -> per-point features ``(B, out_channels, N)``."""
        _check_xyz(xyz, "xyz")
        xyzs, feats = [xyz], [features]
        for sa in self.sa:
            x, f = sa(xyzs[-1], feats[-1])
            xyzs.append(x)
            feats.append(f)
        for lvl in range(len(self.fp) - 1, -1, -1):
            feats[lvl] = self.fp[lvl](xyzs[lvl], xyzs[lvl + 1], feats[lvl], feats[lvl + 1])
        return feats[0]


class PointNetEncoder(nn.Module):
    """HCMoCo's point-cloud encoder (A.3.4): :class:`PointNet2MSG` + global and dense heads.

    ``forward(xyz)`` returns ``{"points": (B, 128, N) per-point features, "global": (B, feat_dim) L2-normalised,
    "dense": (B, feat_dim, N)}``. ``dense_map`` turns the dense per-point features into an image map.
    """

    def __init__(self, feat_dim: int = 128, **trunk_args) -> None:
        super().__init__()
        self.encoder = PointNet2MSG(**trunk_args)
        c = self.encoder.out_channels
        self.head = nn.Linear(c, feat_dim)
        self.linear = nn.Sequential(nn.Conv1d(c, feat_dim, 1, bias=False), nn.BatchNorm1d(feat_dim),
                                    nn.ReLU(inplace=True))
        nn.init.kaiming_normal_(self.linear[0].weight)

    def forward(self, xyz: torch.Tensor, features: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        pts = self.encoder(xyz, features)
        return {"points": pts, "global": F.normalize(self.head(pts.mean(-1)), dim=1), "dense": self.linear(pts)}

    @staticmethod
    def dense_map(dense: torch.Tensor, sampled_xyz: torch.Tensor, pixel_xyz: torch.Tensor, size: tuple[int, int],
                  out_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Per-point ``dense`` ``(B, C, N)`` at ``sampled_xyz`` ``(B, N, 3)`` -> a ``(B, C, h, w)`` map: 3-NN
        inverse-distance interpolation to ``pixel_xyz`` ``(B, H*W, 3)`` (every pixel's 3D point, row-major,
        ``size = (H, W)``), then a nearest resize to ``out_size`` (HCMoCo: 320x320 -> 80x80).

        Only the pixels that the nearest resize keeps (``floor(i * H / h)``, PyTorch's ``"nearest"``) are
        interpolated: the same result as interpolating all of them and resizing, at ``h*w / (H*W)`` of the cost."""
        b, c = dense.shape[:2]
        h, w = size
        if pixel_xyz.shape[1] != h * w:
            raise DataError(f"pixel_xyz has {pixel_xyz.shape[1]} points for a {h}x{w} map", field="pixel_xyz")
        if out_size is not None:
            oh, ow = out_size
            rows = (torch.arange(oh, device=dense.device) * (h / oh)).floor().long().clamp_max(h - 1)
            cols = (torch.arange(ow, device=dense.device) * (w / ow)).floor().long().clamp_max(w - 1)
            keep = (rows[:, None] * w + cols[None, :]).reshape(-1)
            pixel_xyz, (h, w) = pixel_xyz[:, keep], (oh, ow)
        return interpolate_features(pixel_xyz, sampled_xyz, dense).reshape(b, c, h, w)


# ------------------------------------------------------------------------------------------- points from depth
class PointSample(NamedTuple):
    """Points sampled from a depth map: ``points`` ``(B, P, 3)`` metres (camera frame), ``index`` ``(B, P)`` flat
    pixel index ``i * W + j``, ``valid`` ``(B,)`` False where the mask was empty (points and index are 0 there).
    Unbatched input gives ``(P, 3)``, ``(P,)`` and a 0-d ``valid``."""

    points: torch.Tensor
    index: torch.Tensor
    valid: torch.Tensor


def depth_to_points(depth_mm: torch.Tensor | np.ndarray, K: torch.Tensor | np.ndarray,
                    mask: torch.Tensor | np.ndarray | None = None, num_points: int | None = None, *,
                    generator: torch.Generator | None = None) -> PointSample:
    """Back-project depth pixels with the pinhole intrinsics ``K`` to 3D points in metres.

    Args:
        depth_mm: ``(H, W)`` or ``(B, H, W)`` depth along the optical axis in millimetres (0 = no measurement).
        K: ``(3, 3)`` or ``(B, 3, 3)`` intrinsics of the depth image (after any crop / resize; see
            :class:`humanvision.geometry.Camera`); pixel ``(i, j)`` is ``u = j, v = i``.
        mask: pixels to use, default ``depth_mm > 0``.
        num_points: sample this many pixels per image uniformly over the mask *with replacement* (HCMoCo samples
            4096); ``None`` takes every masked pixel in row-major order (a batch must then have equal counts).
        generator: random generator of the sampling.

    Returns:
        :class:`PointSample`. ``X = (j - cx) z / fx`` (with the skew of K), ``Y = (i - cy) z / fy``, ``Z = z``,
        via :func:`humanvision.geometry.unproject_points`.
    """
    from humanvision.geometry import unproject_points

    depth = torch.as_tensor(depth_mm)
    if not depth.is_floating_point():
        depth = depth.float()
    single = depth.ndim == 2
    if single:
        depth = depth[None]
    if depth.ndim != 3:
        raise DataError(f"expected (H, W) or (B, H, W) depth, got {tuple(depth.shape)}", field="depth_mm")
    b, h, w = depth.shape
    K = torch.as_tensor(K, dtype=depth.dtype, device=depth.device)
    if K.shape[-2:] != (3, 3) or K.ndim not in (2, 3) or (K.ndim == 3 and K.shape[0] != b):
        raise DataError(f"expected K (3, 3) or ({b}, 3, 3), got {tuple(K.shape)}", field="K")
    K = K.expand(b, 3, 3)
    m = depth > 0 if mask is None else torch.as_tensor(mask, device=depth.device).reshape(b, h, w).bool()
    m = m.reshape(b, h * w)
    valid = m.any(1)
    if num_points is None:
        counts = m.sum(1)
        if single:
            index = m[0].nonzero()[:, 0][None]
        elif bool((counts == counts[0]).all()):
            index = m.nonzero()[:, 1].reshape(b, -1)
        else:
            raise DataError(f"masks hold different numbers of pixels {counts.tolist()}; pass num_points",
                            field="mask")
    else:
        if num_points < 1:
            raise DataError(f"num_points must be positive, got {num_points}", field="num_points")
        index = torch.zeros(b, num_points, dtype=torch.long, device=depth.device)
        if valid.any():
            index[valid] = torch.multinomial(m[valid].float(), num_points, replacement=True, generator=generator)
    rows, cols = index // w, index % w
    z = depth.reshape(b, h * w).gather(1, index) / 1000.0
    uv = torch.stack([cols, rows], -1).to(depth.dtype)
    points = unproject_points(uv, z, K)
    points = torch.where(valid[:, None, None], points, torch.zeros_like(points))
    if single:
        return PointSample(points[0], index[0], valid[0])
    return PointSample(points, index, valid)


def hcmoco_backproject(depth: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, frame_hw: tuple[float, float]
                       | torch.Tensor, mean: torch.Tensor | float) -> torch.Tensor:
    """HCMoCo's back-projection of crop pixels (A.3.4, ``depth2pts``): with ``z = depth + mean`` (metres),
    ``X = (row - H0/2) z 0.0035``, ``Y = (W0/2 - col) z 0.0035``, ``Z = z - mean``.

    ``depth`` is the mean-centred depth of the crop (background 0), ``rows``/``cols`` the pixels' coordinates in
    the original frame (``grid_xy``), ``frame_hw`` = (H0, W0) of that frame and ``mean`` the foreground mean, all
    broadcast together (pass ``(B, 1, 1)`` tensors for per-sample values). Returns ``(..., 3)``. Note the axes:
    X follows the row and Y the negated column, as in the code (not the camera convention of
    :func:`depth_to_points`).
    """
    if isinstance(frame_hw, torch.Tensor):
        h0, w0 = frame_hw[..., 0], frame_hw[..., 1]
    else:
        h0, w0 = frame_hw
    z = depth + mean
    return torch.stack([(rows - h0 / 2) * z * 0.0035, (w0 / 2 - cols) * z * 0.0035, z - mean], -1)


class CropPointCloud(NamedTuple):
    """The ``HRNetPN`` input of a batch of crops (:func:`hcmoco_point_cloud`): ``points`` ``(B, P, 3)`` the sampled
    foreground points (zeros where ``valid`` is False), ``index`` ``(B, P)`` their flat pixel index ``row * W +
    col`` in the crop (0 where not valid), ``pixels`` ``(B, H * W, 3)`` every crop pixel back-projected (row-major,
    the targets of the dense map's interpolation), ``valid`` ``(B,)`` whether the crop has a foreground pixel."""

    points: torch.Tensor
    index: torch.Tensor
    pixels: torch.Tensor
    valid: torch.Tensor


def hcmoco_point_cloud(depth: torch.Tensor, grid_rc: torch.Tensor, frame_hw: torch.Tensor, mean: torch.Tensor,
                       mask: torch.Tensor, num_points: int, *, generator: torch.Generator | None = None
                       ) -> CropPointCloud:
    """HCMoCo's point cloud of a batch of depth crops (A.3.4).

    Args:
        depth: ``(B, H, W)`` mean-centred depth in metres, background 0 (channel 0 of the sample's depth part).
        grid_rc: ``(B, 2, H, W)`` original-frame (row, col) of every crop pixel (the NTUSeg ``grid_xy``).
        frame_hw: ``(B, 2)`` original frame size (H0, W0).
        mean: ``(B,)`` the foreground mean that was subtracted (metres).
        mask: ``(B, H, W)`` the pixels to sample (the foreground, ``depth_mask``).
        num_points: P, points drawn per crop uniformly over ``mask`` *with replacement* (4096).
        generator: random generator of the draw (any device; the indices are moved to ``depth``'s device);
            default torch's global RNG of ``depth``'s device.

    Every pixel is back-projected with :func:`hcmoco_backproject` (``z = depth + mean``, ``X = (row - H0/2) z
    0.0035``, ``Y = (W0/2 - col) z 0.0035``, ``Z = depth``); the sampled points are those pixels' points. A crop
    with an empty mask gets zero points and index 0 (``valid`` False).
    """
    if depth.dim() != 3:
        raise DataError(f"expected depth (B, H, W), got {tuple(depth.shape)}", field="depth")
    b, h, w = depth.shape
    if tuple(grid_rc.shape) != (b, 2, h, w):
        raise DataError(f"expected grid_rc ({b}, 2, {h}, {w}), got {tuple(grid_rc.shape)}", field="grid_rc")
    if tuple(frame_hw.shape) != (b, 2) or tuple(mean.reshape(-1).shape) != (b,):
        raise DataError(f"expected frame_hw ({b}, 2) and depth_mean ({b},), got {tuple(frame_hw.shape)} and "
                        f"{tuple(mean.shape)}", field="frame_hw")
    if tuple(mask.shape) != (b, h, w):
        raise DataError(f"expected a ({b}, {h}, {w}) mask, got {tuple(mask.shape)}", field="depth_mask")
    if num_points < 1:
        raise DataError(f"num_points must be positive, got {num_points}", field="num_points")
    depth = depth.float()
    grid = grid_rc.to(depth)
    pixels = hcmoco_backproject(depth, grid[:, 0], grid[:, 1], frame_hw.to(depth)[:, None, None, :],
                                mean.to(depth).reshape(b, 1, 1)).reshape(b, h * w, 3)
    m = mask.reshape(b, h * w).bool()
    valid = m.any(1)
    index = torch.zeros(b, num_points, dtype=torch.long, device=depth.device)
    if bool(valid.any()):
        weights = m[valid].float()
        if generator is not None:
            weights = weights.to(generator.device)
        drawn = torch.multinomial(weights, num_points, replacement=True, generator=generator)
        index[valid] = drawn.to(depth.device)
    points = pixels.gather(1, index.unsqueeze(-1).expand(-1, -1, 3))
    points = torch.where(valid[:, None, None], points, torch.zeros_like(points))
    return CropPointCloud(points, index, pixels, valid)
