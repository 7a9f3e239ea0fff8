"""HCMoCo's four pre-training losses and the CMC memory bank (pretraining.md Part A, §A.4.1-A.4.5 and §A.5).

Modalities are numbered as in the brief: 1 = RGB, 2 = depth, 3 = keypoints. T = 0.07 everywhere.

* :class:`CMCMemoryBank` (§A.4.1, L_sample): three buffers ``memory_{1,2,3}`` of shape ``(N, 128)`` (N = the
  dataset length; the names are the official ``ckpt['contrast']`` keys), started as L2-normalised ``randn`` rows.
  Each step draws K = 16384 negatives per sample uniformly from ``[0, N)`` and puts the sample's own index in
  column 0 (the positive may also appear among the negatives). Six directed InfoNCE terms ``sample_ab`` =
  CE(feature of modality a . memory of modality b / T, target 0). The four depth terms (12, 21, 23, 32) are
  averaged over samples with ``true_depth == 1`` only (0 when there is none). In training mode the bank is then
  updated, detached, with the features of *all* ranks: ``memory_m[y] <- normalize(0.5 memory_m[y] + 0.5 f_m)``.
  It is not a MoCo queue and there is no momentum encoder (pitfall 3). Depth features of samples without depth
  (encoded from all-zero input) are still written to the bank (pitfall 4).
* :func:`dense_loss` (§A.4.2, L_dense): 400 foreground locations per sample (with replacement, shared by RGB and
  depth), logits ``<d_i, r_j>/T`` and ``<r_i, d_j>/T``, soft targets ``softmax_i(-||p_i - p_j||)`` in stride-4
  grid units, softmax over **dim 1** (pitfall 5); samples without a foreground pixel are dropped.
* :func:`joint_loss` (§A.4.3, L_joint): dense features at ``(row // 4, col // 4)`` (nearest, flat index
  ``row//4 * W4 + col//4``, **(row, col)** order, pitfall 1), CE over the J keypoint nodes of the same sample;
  invisible joints and (for depth) samples without depth are ignored.
* :func:`structure_contrast_loss` (§A.4.4, L_scl): SupCon over the ``2 B J`` joint features; positives are the
  same joint index in any sample and either modality; self stays in the denominator; missing modalities are
  removed from the positives; visibility is ignored; mean over all rows; per GPU (pitfall 6).
* :func:`hcmoco_loss` (§A.4.5): stage 1 = the six sample terms; stage 2 = those + 2 dense + 2 joint + L_scl, every
  weight 1 (pitfall 7).

Randomness: the bank's negatives and the dense locations come from ``generator`` when one is given (a
``torch.Generator`` on any device; the draws are moved to the data's device), else from torch's global RNG of
the bank's / features' device, so ``torch.manual_seed`` makes a run reproducible. :func:`hcmoco_loss` draws the
negatives first, then the dense locations. The bank's initial rows come from its own ``seed``, so every rank
starts with the same bank without communication.

Choices that the brief leaves open (ours):

* Duplicate indices in one update (the sampler draws with replacement; several ranks may hold the same sample):
  every candidate row is computed from the bank before the update and the **last** one in gathered order (rank 0's
  batch, then rank 1's, ...) is written, as a sequential ``index_copy_`` on CPU does. This is done explicitly, so
  CUDA (whose ``index_copy_`` with duplicates is not ordered) and every rank end with the same bank.
* Joints outside the image: a *visible* joint outside ``[0, H) x [0, W)`` (``H, W`` = the map size times
  ``stride``) or any non-finite coordinate raises :class:`~humanvision.errors.DataError` naming the sample and
  joint (the data format marks joints outside the crop invisible, so such a joint means misaligned data).
  *Invisible* joints are clamped to the map as the original does (they sit at (0, 0) in the data format and
  still take part in L_scl).
* Accuracies (logged, not trained): sample terms: the positive (column 0) has the largest logit; dense: the
  arg-max location equals the column's own location; joint: the arg-max keypoint node is the column's joint.
* NTUSeg (``true_rgb`` given): all six sample terms use only samples with both RGB and depth, and L_scl drops RGB
  rows of ``true_rgb == 0`` from the positives. Without ``true_rgb`` RGB counts as present (pitfall 13).
* Precision: every loss casts its inputs to fp32 and runs with autocast off (the original trained without AMP;
  bf16 logits at T = 0.07 are visibly noisy), so a bf16 / fp16 model still gets fp32 losses.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from humanvision.errors import ConfigError, DataError

__all__ = [
    "FEAT_DIM", "MOMENTUM", "NUM_DENSE_POINTS", "NUM_NEGATIVES", "TEMPERATURE", "CMCMemoryBank",
    "dense_loss", "hcmoco_loss", "joint_loss", "sample_dense_locations", "sample_joint_features",
    "structure_contrast_loss",
]

FEAT_DIM = 128  # §A.3.3 / §A.5 feat_dim
NUM_NEGATIVES = 16384  # §A.5 K
TEMPERATURE = 0.07  # §A.5 T (nce_t and --temperature)
MOMENTUM = 0.5  # §A.5 m (nce_m)
NUM_DENSE_POINTS = 400  # §A.5 dense samples per image

# (feature modality a, memory modality b): the six directed terms ``sample_ab`` of §A.4.1
PAIRS = ((1, 2), (2, 1), (2, 3), (3, 2), (1, 3), (3, 1))


# ------------------------------------------------------------------------------------------------ helpers
def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_gather_rows(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Concatenate each tensor's rows over all ranks in rank order (ranks may hold different batch sizes)."""
    if not _distributed():
        return tensors
    world = dist.get_world_size()
    n = torch.tensor([tensors[0].shape[0]], device=tensors[0].device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes_i = [int(s) for s in sizes]
    most = max(sizes_i)
    out = []
    for x in tensors:
        padded = torch.cat([x, x.new_zeros((most - x.shape[0], *x.shape[1:]))])
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
        out.append(torch.cat([p[:s] for p, s in zip(parts, sizes_i, strict=True)]))
    return tuple(out)


_F = TypeVar("_F", bound=Callable)


def _full_precision(fn: _F) -> _F:
    """Run ``fn`` with autocast off: with T = 0.07 and 16385-way softmaxes, bf16 / fp16 logits (about 3
    significant digits) would add noise of the order of the differences between logits; the original ran fp32."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.autocast("cpu", enabled=False):
            if not torch.cuda.is_available():
                return fn(*args, **kwargs)
            with torch.autocast("cuda", enabled=False):
                return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask``; 0 (still attached to the graph) when the mask is empty."""
    mask = mask.bool()
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp(min=1)


def _present(flag: Tensor | None, count: int, device: torch.device, name: str) -> Tensor:
    """Flags (``true_depth`` / ``true_rgb`` per sample, ``joints_vis`` per joint; any dtype) as a flat bool
    tensor of ``count`` values; all True when None."""
    if flag is None:
        return torch.ones(count, dtype=torch.bool, device=device)
    flag = torch.as_tensor(flag, device=device).reshape(-1)
    if flag.numel() != count:
        raise DataError(f"expected {count} flags, got shape {tuple(flag.shape)}", field=name)
    return flag != 0


def _draw_randint(high: int, shape: tuple[int, ...], generator: torch.Generator | None,
                  device: torch.device) -> Tensor:
    if generator is None:
        return torch.randint(high, shape, device=device)
    return torch.randint(high, shape, generator=generator, device=generator.device).to(device)


def _check_dense_pair(f_rgb: Tensor, f_depth: Tensor) -> None:
    if f_rgb.dim() != 4 or f_rgb.shape != f_depth.shape:
        raise DataError(f"the RGB and depth dense maps must both be (B, C, H/4, W/4) of one shape, got RGB "
                        f"{tuple(f_rgb.shape)} and depth {tuple(f_depth.shape)}", field="dense maps")


# ------------------------------------------------------------------------------------ L_sample (§A.4.1)
class CMCMemoryBank(nn.Module):
    """CMC memory bank for three modalities (``CMCMem3``) and the six L_sample terms (§A.4.1).

    Args:
        num_samples: N, the dataset length (bank rows are indexed by the dataset index, field ``index``).
        feat_dim: feature size (128).
        num_negatives: K negatives drawn uniformly with replacement per sample and step (16384).
        temperature: T (0.07).
        momentum: m of the update ``normalize(m * memory + (1 - m) * f)`` (0.5).
        seed: seeds the initial ``randn`` rows (identical on every rank).

    Buffers ``memory_1`` (RGB), ``memory_2`` (depth), ``memory_3`` (keypoints), each ``(N, feat_dim)``, are in the
    ``state_dict``; loading a bank of another size raises :class:`~humanvision.errors.ConfigError` naming both.
    """

    def __init__(self, num_samples: int, feat_dim: int = FEAT_DIM, num_negatives: int = NUM_NEGATIVES,
                 temperature: float = TEMPERATURE, momentum: float = MOMENTUM, seed: int = 0) -> None:
        super().__init__()
        if num_samples < 1 or feat_dim < 1 or num_negatives < 1:
            raise ConfigError(f"memory bank: num_samples ({num_samples}), feat_dim ({feat_dim}) and num_negatives "
                              f"({num_negatives}) must be positive")
        if not 0.0 <= momentum < 1.0 or temperature <= 0:
            raise ConfigError(f"memory bank: momentum must be in [0, 1) and temperature > 0, got {momentum}, "
                              f"{temperature}")
        self.num_samples, self.feat_dim = num_samples, feat_dim
        self.num_negatives, self.temperature, self.momentum = num_negatives, temperature, momentum
        gen = torch.Generator().manual_seed(seed)
        for m in (1, 2, 3):
            rows = torch.randn(num_samples, feat_dim, generator=gen)
            self.register_buffer(f"memory_{m}", F.normalize(rows, dim=1))

    def memory(self, m: int) -> Tensor:
        """The bank of modality ``m`` (1 RGB, 2 depth, 3 keypoints), ``(N, feat_dim)``."""
        return getattr(self, f"memory_{m}")

    def extra_repr(self) -> str:
        return (f"num_samples={self.num_samples}, feat_dim={self.feat_dim}, num_negatives={self.num_negatives}, "
                f"temperature={self.temperature}, momentum={self.momentum}")

    def _check_index(self, index: Tensor, batch: int) -> Tensor:
        index = torch.as_tensor(index, device=self.memory_1.device).reshape(-1).long()
        if index.numel() != batch:
            raise DataError(f"expected one dataset index per sample ({batch}), got shape {tuple(index.shape)}",
                            field="index")
        bad = ((index < 0) | (index >= self.num_samples)).nonzero()
        if len(bad):
            b = int(bad[0])
            raise DataError(f"dataset index {int(index[b])} is outside the memory bank of {self.num_samples} "
                            f"samples (was the bank built for another dataset?)", record=f"sample {b}",
                            field="index")
        return index

    def sample_indices(self, index: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``(B, K + 1)`` bank rows: column 0 the sample's own index, columns 1..K uniform over ``[0, N)``."""
        index = self._check_index(index, len(index))
        idx = _draw_randint(self.num_samples, (len(index), self.num_negatives + 1), generator, index.device)
        idx[:, 0] = index
        return idx

    @_full_precision
    def forward(self, f_rgb: Tensor, f_depth: Tensor, f_kp: Tensor, index: Tensor,
                true_depth: Tensor | None = None, true_rgb: Tensor | None = None,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Six L_sample terms for L2-normalised global features ``(B, feat_dim)`` of the three modalities.

        Returns ``sample_ab`` (modality a's feature against modality b's bank) for ab in 12, 21, 23, 32, 13, 31,
        their sum ``sample`` and the accuracies ``acc_sample_ab``. In training mode the bank is updated
        afterwards with the (all-gathered, detached) features, see :meth:`update`; under ``torch.distributed``
        every rank must then call it the same number of times (it runs collectives).
        """
        feats = {1: f_rgb, 2: f_depth, 3: f_kp}
        batch = f_rgb.shape[0]
        for m, f in feats.items():
            if f.dim() != 2 or f.shape != (batch, self.feat_dim):
                raise DataError(f"expected ({batch}, {self.feat_dim}) global features, got {tuple(f.shape)}",
                                field=("f_rgb", "f_depth", "f_kp")[m - 1])
        index = self._check_index(index, batch)
        device = f_rgb.device
        has_depth = _present(true_depth, batch, device, "true_depth")
        everyone = torch.ones_like(has_depth)
        if true_rgb is not None:  # NTUSeg: all six terms only on samples with both RGB and depth
            everyone = has_depth = has_depth & _present(true_rgb, batch, device, "true_rgb")

        idx = self.sample_indices(index, generator)  # (B, K + 1)
        out: dict[str, Tensor] = {}
        target = torch.zeros(batch, dtype=torch.long, device=device)
        logits: dict[tuple[int, int], Tensor] = {}
        for b in (1, 2, 3):  # gather each bank once (a copy the update below leaves alone) for its two terms
            users = [a for a, m in PAIRS if m == b]
            w = self.memory(b)[idx]  # (B, K + 1, C)
            both = torch.bmm(w, torch.stack([feats[a].float() for a in users], dim=2)) / self.temperature
            for col, a in enumerate(users):
                logits[a, b] = both[..., col]  # (B, K + 1): <memory_b[idx], f_a> / T
        for a, b in PAIRS:
            mask = has_depth if 2 in (a, b) else everyone
            ce = F.cross_entropy(logits[a, b], target, reduction="none")
            out[f"sample_{a}{b}"] = _masked_mean(ce, mask)
            out[f"acc_sample_{a}{b}"] = _masked_mean((logits[a, b].argmax(1) == 0).float(), mask).detach()
        out["sample"] = sum(out[f"sample_{a}{b}"] for a, b in PAIRS)
        if self.training:
            self.update(f_rgb, f_depth, f_kp, index)
        return out

    @torch.no_grad()
    def update(self, f_rgb: Tensor, f_depth: Tensor, f_kp: Tensor, index: Tensor) -> None:
        """``memory_m[y] <- normalize(m * memory_m[y] + (1 - m) * f_m)`` with the features of every rank.

        Under ``torch.distributed`` the features and indices are all-gathered (rank order), so every rank writes
        the same rows. Duplicate indices: the last occurrence in gathered order wins (module docstring).
        """
        index = self._check_index(index, f_rgb.shape[0])
        feats = torch.stack([f_rgb, f_depth, f_kp], dim=1).detach().to(self.memory_1.dtype)  # (B, 3, C)
        feats, index = _all_gather_rows(feats, index)
        unique, inverse = torch.unique(index, return_inverse=True)
        order = torch.arange(len(index), device=index.device)
        last = torch.full((len(unique),), -1, dtype=torch.long, device=index.device)
        last = last.scatter_reduce(0, inverse, order, reduce="amax")
        index, feats = index[last], feats[last]
        for m in (1, 2, 3):
            memory = self.memory(m)
            new = F.normalize(self.momentum * memory[index] + (1.0 - self.momentum) * feats[:, m - 1], dim=1)
            memory.index_copy_(0, index, new)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        for m in (1, 2, 3):
            key = f"{prefix}memory_{m}"
            if key in state_dict and tuple(state_dict[key].shape) != tuple(self.memory(m).shape):
                saved = tuple(state_dict[key].shape)
                raise ConfigError(
                    f"{key}: the saved memory bank has shape {saved} ({saved[0] if saved else '?'} samples), this "
                    f"bank ({self.num_samples}, {self.feat_dim}) ({self.num_samples} samples): it was saved for "
                    f"another dataset (or feature size)")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


# ------------------------------------------------------------------------------------- L_dense (§A.4.2)
def sample_dense_locations(valid: Tensor, num_points: int = NUM_DENSE_POINTS,
                           generator: torch.Generator | None = None) -> Tensor:
    """``num_points`` flat indices per row of ``valid`` ``(B', H*W)``, uniform over its nonzero entries, drawn
    with replacement (``torch.multinomial``). Every row must have a nonzero entry."""
    weights = valid.float()
    if generator is None:
        return torch.multinomial(weights, num_points, replacement=True)
    picked = torch.multinomial(weights.to(generator.device), num_points, replacement=True, generator=generator)
    return picked.to(valid.device)


@_full_precision
def dense_loss(f_rgb: Tensor, f_depth: Tensor, fg_mask: Tensor, num_points: int = NUM_DENSE_POINTS,
               temperature: float = TEMPERATURE, generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """L_dense: pixel-level RGB <-> depth contrast with distance-based soft targets (§A.4.2).

    Args:
        f_rgb, f_depth: dense maps ``(B, C, H4, W4)`` (not normalised; normalised here after sampling).
        fg_mask: the depth foreground ``(B, H, W)`` or ``(B, 1, H, W)`` at any resolution; nearest-resized to
            ``(H4, W4)``. Samples without a foreground pixel (all of MPII / COCO) are dropped.
        num_points: n locations per sample, with replacement, shared by RGB and depth.

    Returns ``dense_rd`` (rows: depth samples, columns: RGB samples), ``dense_dr`` and ``acc_dense_rd/dr``;
    each term is ``-sum_i S[b,i,j] log_softmax_i(L)[b,i,j]`` averaged over (b, j), with
    ``S = softmax_i(-||p_i - p_j||)`` in grid units. Zero when no sample has a foreground pixel.
    """
    _check_dense_pair(f_rgb, f_depth)
    batch, channels, h4, w4 = f_rgb.shape
    mask = (fg_mask if fg_mask.dim() == 4 else fg_mask.unsqueeze(1)).to(f_rgb.device)
    if mask.dim() != 4 or mask.shape[0] != batch or mask.shape[1] != 1:
        raise DataError(f"expected a foreground mask (B={batch}, H, W), got {tuple(fg_mask.shape)}",
                        field="depth_mask")
    valid = F.interpolate(mask.float(), size=(h4, w4), mode="nearest").flatten(1) > 0  # (B, H4*W4)
    keep = valid.any(1).nonzero().flatten()
    zero = (f_rgb.sum() + f_depth.sum()) * 0.0
    if len(keep) == 0:
        return {"dense_rd": zero, "dense_dr": zero, "acc_dense_rd": zero.detach(), "acc_dense_dr": zero.detach()}
    loc = sample_dense_locations(valid[keep], num_points, generator)  # (B', n) flat indices
    gather = loc.unsqueeze(1).expand(-1, channels, -1)
    r = F.normalize(f_rgb[keep].flatten(2).float().gather(2, gather), dim=1)  # (B', C, n)
    d = F.normalize(f_depth[keep].flatten(2).float().gather(2, gather), dim=1)
    pos = torch.stack([torch.div(loc, w4, rounding_mode="floor"), loc % w4], dim=-1).float()  # (row, col)
    dist_grid = torch.cdist(pos, pos, compute_mode="donot_use_mm_for_euclid_dist")  # exact grid distances
    soft = torch.softmax(-dist_grid, dim=1)  # (B', n, n), each column sums to 1
    same = (loc.unsqueeze(2) == loc.unsqueeze(1))  # location i == location j
    out: dict[str, Tensor] = {}
    for name, rows, cols in (("rd", d, r), ("dr", r, d)):
        logits = torch.bmm(rows.transpose(1, 2), cols) / temperature  # [b, i, j] = <rows_i, cols_j> / T
        out[f"dense_{name}"] = -(soft * torch.log_softmax(logits, dim=1)).sum(1).mean()
        best = logits.argmax(1, keepdim=True)  # (B', 1, n)
        out[f"acc_dense_{name}"] = same.gather(1, best).float().mean().detach()
    return out


# --------------------------------------------------------------------------- joints: L_joint and L_scl
def sample_joint_features(dense: Tensor, joints_rc: Tensor, visible: Tensor | None = None,
                          stride: int = 4) -> Tensor:
    """L2-normalised dense features at the joints, ``(B, J, C)``: nearest cell ``(row // stride, col //
    stride)`` of ``joints_rc`` ``(B, J, 2)`` in **(row, col)** crop pixels, flat index ``row//4 * W4 + col//4``.

    A visible joint outside the ``(H4 * stride) x (W4 * stride)`` image, or a non-finite coordinate, raises
    :class:`~humanvision.errors.DataError` naming the sample and joint; invisible joints are clamped to the map
    (``visible=None``: every joint is checked).
    """
    batch, channels, h4, w4 = dense.shape
    if joints_rc.dim() != 3 or joints_rc.shape[0] != batch or joints_rc.shape[2] != 2:
        raise DataError(f"expected joints (B={batch}, J, 2) in (row, col) order, got {tuple(joints_rc.shape)}",
                        field="joints_rc")
    joints_rc = joints_rc.to(dense.device)
    vis = _present(visible, joints_rc.shape[0] * joints_rc.shape[1], dense.device, "joints_vis")
    vis = vis.view(batch, -1)
    height, width = h4 * stride, w4 * stride
    row, col = joints_rc[..., 0].double(), joints_rc[..., 1].double()
    outside = (row < 0) | (row >= height) | (col < 0) | (col >= width)
    bad = (~torch.isfinite(row) | ~torch.isfinite(col) | (outside & vis)).nonzero()
    if len(bad):
        b, j = (int(v) for v in bad[0])
        raise DataError(f"joint {j} at (row {float(row[b, j])}, col {float(col[b, j])}) is not inside the "
                        f"{height}x{width} crop but marked visible (or is not finite): misaligned keypoints",
                        record=f"sample {b}", field="joints_rc")
    cell_r = torch.div(joints_rc[..., 0], stride, rounding_mode="floor").long().clamp(0, h4 - 1)
    cell_c = torch.div(joints_rc[..., 1], stride, rounding_mode="floor").long().clamp(0, w4 - 1)
    flat = cell_r * w4 + cell_c  # (B, J)
    feats = dense.flatten(2).float().gather(2, flat.unsqueeze(1).expand(-1, channels, -1))  # (B, C, J)
    return F.normalize(feats.transpose(1, 2), dim=-1)


@_full_precision
def joint_loss(f_rgb: Tensor, f_depth: Tensor, joint_feats: Tensor, joints_rc: Tensor, visible: Tensor,
               true_depth: Tensor | None = None, temperature: float = TEMPERATURE,
               stride: int = 4) -> dict[str, Tensor]:
    """L_joint: keypoint-node features <-> dense features at the joints, within each sample (§A.4.3).

    Args:
        f_rgb, f_depth: dense maps ``(B, C, H4, W4)``.
        joint_feats: the raw SemGCN outputs ``(B, J, C)`` (normalised here).
        joints_rc: ``(B, J, 2)`` joint (row, col) in crop pixels; visible: ``(B, J)``; true_depth: ``(B,)``.

    Logits ``[b, i, k] = <g_i, x_k> / T``; CE over dim 1 (the J nodes) with target k for column k; columns of
    invisible joints (and, for depth, of samples without depth) are ignored. Returns ``joint_rgb``,
    ``joint_depth`` and ``acc_joint_rgb/depth``; a term with no counted column is 0.
    """
    _check_dense_pair(f_rgb, f_depth)
    batch, num_joints = joints_rc.shape[:2]
    if joint_feats.shape != (batch, num_joints, f_rgb.shape[1]):
        raise DataError(f"expected keypoint features ({batch}, {num_joints}, {f_rgb.shape[1]}), got "
                        f"{tuple(joint_feats.shape)}", field="joint_feats")
    device = f_rgb.device
    vis = _present(visible, batch * num_joints, device, "joints_vis").view(batch, num_joints)
    has_depth = _present(true_depth, batch, device, "true_depth")
    g = F.normalize(joint_feats.float(), dim=-1)  # (B, J, C)
    target = torch.arange(num_joints, device=device).expand(batch, -1)  # column k -> node k
    out: dict[str, Tensor] = {}
    for name, dense, counted in (("rgb", f_rgb, vis), ("depth", f_depth, vis & has_depth[:, None])):
        x = sample_joint_features(dense, joints_rc, visible, stride)  # (B, J, C)
        logits = torch.einsum("bic,bkc->bik", g, x) / temperature  # (B, J nodes, J joints)
        ce = F.cross_entropy(logits, target, reduction="none")  # (B, J): softmax over dim 1
        out[f"joint_{name}"] = _masked_mean(ce, counted)
        out[f"acc_joint_{name}"] = _masked_mean((logits.argmax(1) == target).float(), counted).detach()
    return out


@_full_precision
def structure_contrast_loss(f_rgb: Tensor, f_depth: Tensor, joints_rc: Tensor, true_depth: Tensor | None = None,
                            true_rgb: Tensor | None = None, visible: Tensor | None = None,
                            temperature: float = TEMPERATURE, stride: int = 4) -> dict[str, Tensor]:
    """L_scl: supervised contrast over the ``2 B J`` joint features of this GPU (§A.4.4), ``{"scl": loss}``.

    ``Z = [RGB features (b-major, then joint); depth features]``, ``P = log_softmax_row(Z Z^T / T)`` with self
    in the denominator; positives ``M[a, p]``: same joint index, ``a != p``, both from a present modality
    (depth: ``true_depth``; RGB: ``true_rgb``, all present when None). Loss ``mean_a(-sum_p M P / max(1,
    sum_p M))`` over all rows. ``visible`` is used only for the bounds check of :func:`sample_joint_features`;
    the loss ignores visibility, as the original does.
    """
    _check_dense_pair(f_rgb, f_depth)
    batch, num_joints = joints_rc.shape[:2]
    device = f_rgb.device
    r = sample_joint_features(f_rgb, joints_rc, visible, stride).reshape(batch * num_joints, -1)
    d = sample_joint_features(f_depth, joints_rc, visible, stride).reshape(batch * num_joints, -1)
    z = torch.cat([r, d])  # (2BJ, C)
    label = torch.arange(num_joints, device=device).repeat(2 * batch)
    present = torch.cat([_present(true_rgb, batch, device, "true_rgb"),
                         _present(true_depth, batch, device, "true_depth")]).repeat_interleave(num_joints)
    positive = (label[:, None] == label[None, :]) & present[:, None] & present[None, :]
    positive.fill_diagonal_(False)
    log_prob = torch.log_softmax(z @ z.T / temperature, dim=1)
    positive = positive.float()
    per_row = -(positive * log_prob).sum(1) / positive.sum(1).clamp(min=1)
    return {"scl": per_row.mean()}


# ---------------------------------------------------------------------------------------- totals (§A.4.5)
def hcmoco_loss(bank: CMCMemoryBank, g_rgb: Tensor, g_depth: Tensor, g_kp: Tensor, index: Tensor,
                true_depth: Tensor, *, stage: int = 1, dense_rgb: Tensor | None = None,
                dense_depth: Tensor | None = None, joint_feats: Tensor | None = None,
                joints_rc: Tensor | None = None, visible: Tensor | None = None, depth_mask: Tensor | None = None,
                true_rgb: Tensor | None = None, num_points: int = NUM_DENSE_POINTS,
                temperature: float = TEMPERATURE, stride: int = 4,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """The HCMoCo objective of one step, ``{"loss": total, <every term>, <every accuracy>}`` (§A.4.5).

    Stage 1: ``loss = sample`` (the six L_sample terms). Stage 2: ``loss = sample + dense_rd + dense_dr +
    joint_rgb + joint_depth + scl``, all weights 1; it needs ``dense_rgb/depth`` ``(B, C, H4, W4)``,
    ``joint_feats`` ``(B, J, C)`` (raw SemGCN), ``joints_rc`` ``(B, J, 2)`` (row, col), ``visible`` ``(B, J)``
    and ``depth_mask`` ``(B, H, W)`` (L_dense samples from ``depth_mask & true_depth``). ``g_*`` are the
    L2-normalised global features ``(B, 128)``; ``index`` the dataset indices; ``true_depth`` ``(B,)``. The bank
    (in training mode) is updated after its terms.
    """
    if stage not in (1, 2):
        raise ConfigError(f"hcmoco stage must be 1 or 2, got {stage!r}")
    out = bank(g_rgb, g_depth, g_kp, index, true_depth=true_depth, true_rgb=true_rgb, generator=generator)
    loss = out["sample"]
    if stage == 2:
        needed = {"dense_rgb": dense_rgb, "dense_depth": dense_depth, "joint_feats": joint_feats,
                  "joints_rc": joints_rc, "visible": visible, "depth_mask": depth_mask}
        missing = [k for k, v in needed.items() if v is None]
        if missing:
            raise ConfigError(f"hcmoco stage 2 needs {', '.join(missing)} (the dense and joint inputs)")
        has_depth = _present(true_depth, g_rgb.shape[0], dense_rgb.device, "true_depth")
        mask = depth_mask.to(dense_rgb.device)
        mask = (mask != 0) & has_depth.view(-1, *([1] * (mask.dim() - 1)))  # no depth -> no dense sample
        out.update(dense_loss(dense_rgb, dense_depth, mask, num_points, temperature, generator))
        out.update(joint_loss(dense_rgb, dense_depth, joint_feats, joints_rc, visible, true_depth, temperature,
                              stride))
        out.update(structure_contrast_loss(dense_rgb, dense_depth, joints_rc, true_depth, true_rgb, visible,
                                           temperature, stride))
        loss = loss + out["dense_rd"] + out["dense_dr"] + out["joint_rgb"] + out["joint_depth"] + out["scl"]
    out["loss"] = loss
    return out
