"""ContextPose-V2V and its context module (Ma et al., "Context Modeling in 3D Human Pose Estimation: A Unified
Perspective", CVPR 2021), written from pose3d.md §3.2-§3.4 and §9 (seed: ShirleyMaxx/ContextPose-PyTorch-release);
no code is taken from it.

* :func:`pairwise_limb_kernels` (§3.4.4): the fixed, parameter-free limb-length prior of every limb ``e``,
  ``P_e(q, k) = softmax_k[-(||p_q - p_k|| - mu_e)^2 / (2 T sigma_e^2 + 0.1)]`` over the voxel positions ``p`` of
  the attention level (``T = 1500``). ``(E, N, N)``: 16 x 4096² floats = 1.07 GB at CP's 16³.
* :func:`limb_messages` (§3.4.5): the messages along each limb in both directions,
  ``m_{v->u}(q) = sum_k P_e(q, k) G_v(k) x~_v(k) / sum_k P_e(q, k) G_v(k)`` (the expectation of ``x~_v`` under the
  posterior ``~ G_v(k) P_e(q, k)``), one batched matmul over the limbs, never the seed's ``(B, 3, N, N)`` broadcast.
* :class:`AttentionConv3D` (§3.4): grouped 1³ convs ``W_pi`` (features, 3 channels per joint) and ``A`` (one logit
  per joint, read from the joint's own channels), the global attention ``G_j = softmax_N(a_j)``, the global
  descriptors ``s_j = sum_k G_j(k) x~_j(k)``, the messages, then per joint ``u`` the update ``y_u = C_u z_u``
  (51 -> 3, no bias) of ``z_u`` = the message ``m_{v->u}`` in the channel group of every tree neighbour ``v`` and
  the descriptor ``s_v`` (broadcast over space) in every other group, ``u``'s own included; ``out = concat_u y_u +
  x~``. Returns ``(out, G)``. The 17 update convs are one grouped conv (``groups = J``, the same weights).
* :class:`AttenRes3DBlock` (§3.3): ``ReLU(BN(Conv3³(ReLU(BN(AttConv(x))))) + x)``.
* :class:`ContextPoseV2V` (§3.3): the 2-level, 51-channel V2V with the context module at the bottom (16³ for CP's
  64³ input; any side divisible by 4 works, e.g. 32³ -> 8³ for CPU recipes). ``N(0, 1e-3)`` weights and zero
  biases on **every** Conv3d / ConvTranspose3d, the attention convs included (the seed initialises last). Returns
  the joint volumes ``(B, J, D, H, W)`` (logits for the 3D soft-argmax) and the attention ``(B, J, N)``.

Grid parity choices (§3.2, §9). The voxel positions of the kernel are ``spacing * (i, j, k)``. CP uses
``spacing = cuboid / (n - 1)`` with ``n`` the attention side (2500 / 15 = 166.67 mm), although the pooled cells are
``4 cuboid / (S - 1)`` apart (158.73 mm at S = 64): ``kernel_spacing="cp"`` (default) reproduces it for parity,
``"pooled"`` uses the true pooled spacing. (The aux grid of the attention target has the matching choice in
:mod:`humanvision.methods.contextpose`.)

Numerics: the softmaxes, the messages and the descriptors run in float32 outside autocast (under bf16 the
attention values of ~1e-3 and the kernel rows lose too much); the convs follow the caller's autocast, except that a
3³ conv on an input smaller than 3 along a side (only when the volume is under 32³) runs in float32
(:class:`~humanvision.models.v2v.V2VConv3d`: oneDNN's bf16 weight gradient is wrong there). The kernels
are built once per (grid, spacing, device) and kept as a plain attribute, not a buffer: a 1 GB tensor stays out of
the state dict and out of DDP's per-step buffer broadcast. ``cache_kernels=False`` instead builds them on the fly
in blocks of ``kernel_chunk`` rows under activation checkpointing (no 1 GB tensor, in training either; the exp is
recomputed every step and again in backward). The limb statistics
``limb_mean`` / ``limb_std`` (mm, the limb order) are persistent buffers, so a checkpoint carries the prior it was
trained with; loading a state dict drops the cached kernels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from humanvision.models.v2v import Basic3DBlock, Res3DBlock, Upsample3DBlock, V2VConv3d

__all__ = [
    "AttenRes3DBlock",
    "AttentionConv3D",
    "ContextPoseV2V",
    "attention_spacing",
    "grid_positions",
    "h36m_limbs",
    "limb_messages",
    "pairwise_limb_kernels",
]

KernelSpacing = Literal["cp", "pooled"]


def h36m_limbs() -> tuple[tuple[int, int], ...]:
    """CP's 16 limbs over the ``h36m17`` joints (pose3d.md §0), the order of ``mean_and_std_limb_length.h5``:
    the ``h36m17`` skeleton's limb list, which is that list."""
    from humanvision.skeletons import get_skeleton

    return get_skeleton("h36m17").limbs


# ------------------------------------------------------------------------------------------- the limb prior
def grid_positions(size: int | Sequence[int], spacing: float, *, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """``spacing * (i, j, k)`` for every voxel of a ``size`` (an int: a cube) grid, flattened in the volume's
    ``(D, H, W)`` order (``indexing='ij'``): ``(N, 3)``."""
    dims = (int(size),) * 3 if isinstance(size, int) else tuple(int(s) for s in size)
    if len(dims) != 3 or min(dims) < 1:
        raise ValueError(f"grid_positions: size must be an int or three positive sides, got {size}")
    axes = [torch.arange(n, dtype=dtype, device=device) * spacing for n in dims]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def pairwise_limb_kernels(mu: torch.Tensor, sigma: torch.Tensor, size: int | Sequence[int] = 16,
                          spacing: float = 2500.0 / 15, temperature: float = 1500.0, *,
                          positions: torch.Tensor | None = None, rows: slice | None = None,
                          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """CP's pairwise attention (§3.4.4): ``(E, N, N)`` (``(E, len(rows), N)`` with ``rows``), every row a softmax,

    ``P_e(q, k) = softmax_k[-(||p_q - p_k|| - mu_e)^2 / (2 T sigma_e^2 + 0.1)]``.

    ``mu``, ``sigma`` ``(E,)``: limb length mean and standard deviation (mm); ``positions (N, 3)`` (mm) default to
    :func:`grid_positions` of ``size`` and ``spacing`` (CP: 16³ at 2500 / 15 mm); ``rows`` selects the rows ``q``
    (the chunked path). The values depend on the distances only, so any rotation of the grid leaves them unchanged.
    Built limb by limb into one preallocated tensor (peak memory: the output plus two ``N x N`` temporaries)."""
    mu = torch.as_tensor(mu).reshape(-1)
    sigma = torch.as_tensor(sigma).reshape(-1)
    if mu.shape != sigma.shape:
        raise ValueError(f"pairwise_limb_kernels: mu {tuple(mu.shape)} and sigma {tuple(sigma.shape)} differ")
    if not torch.isfinite(mu).all() or not torch.isfinite(sigma).all():
        raise ValueError("pairwise_limb_kernels: the limb statistics are not finite (not set?)")
    if positions is None:
        positions = grid_positions(size, spacing, dtype=dtype, device=mu.device)
    positions = positions.to(dtype)
    queries = positions if rows is None else positions[rows]
    # exact (not the matmul expansion) Euclidean distances: symmetric to the last bit
    dist = torch.cdist(queries, positions, compute_mode="donot_use_mm_for_euclid_dist")
    denom = 2.0 * float(temperature) * sigma.to(dtype) ** 2 + 0.1
    out = torch.empty(len(mu), *dist.shape, dtype=dtype, device=dist.device)
    for e in range(len(mu)):
        out[e] = torch.softmax(-(dist - mu[e].to(dtype)) ** 2 / denom[e], dim=-1)
    return out


def limb_messages(weighted: torch.Tensor, attention: torch.Tensor, kernels: torch.Tensor,
                  limbs: Sequence[tuple[int, int]]) -> torch.Tensor:
    """The messages of §3.4.5 along every limb in both directions: ``(B, 2E, c, Nq)``.

    ``weighted (B, J, c, N)``: ``h_j(k) = G_j(k) x~_j(k)``; ``attention (B, J, N)``: ``G``; ``kernels (E, Nq, N)``
    (rows ``q`` of the pairwise kernels, all ``N`` columns); ``limbs``: ``E`` pairs ``(a, b)``. Entry ``2e`` is
    ``m_{b->a}`` (received by ``a``), ``2e + 1`` is ``m_{a->b}``:
    ``m_{v->u}(q) = sum_k P_e(q, k) h_v(k) / sum_k P_e(q, k) G_v(k)``, one ``bmm`` over the limbs (the numerator's
    ``c`` rows and the denominator's row of both directions share each limb's kernel)."""
    b, _, c, n = weighted.shape
    e = len(limbs)
    if kernels.shape[0] != e or kernels.shape[-1] != n:
        raise ValueError(f"limb_messages: kernels {tuple(kernels.shape)} do not match {e} limbs over {n} voxels")
    senders = torch.tensor([[v, u] for u, v in limbs], device=weighted.device)  # (E, 2): b -> a, then a -> b
    rows = torch.cat([weighted[:, senders], attention[:, senders, None]], 3)  # (B, E, 2, c + 1, N)
    rows = rows.permute(1, 0, 2, 3, 4).reshape(e, b * 2 * (c + 1), n)
    out = torch.bmm(rows, kernels.transpose(1, 2).to(rows.dtype)).view(e, b, 2, c + 1, -1)
    num, den = out[:, :, :, :c], out[:, :, :, c:]
    msg = num / den.clamp_min(torch.finfo(den.dtype).tiny)  # (E, B, 2, c, Nq)
    return msg.permute(1, 0, 2, 3, 4).reshape(b, 2 * e, c, -1)


def attention_spacing(cuboid_side: float, volume_size: int, attention_size: int,
                      mode: KernelSpacing = "cp") -> float:
    """The kernel's voxel spacing (mm) at the attention level: CP's ``cuboid / (n - 1)`` (``"cp"``, 166.67 mm for
    2500 / 16³) or the true spacing of the pooled grid ``(S / n) cuboid / (S - 1)`` (``"pooled"``, 158.73 mm)."""
    if mode == "cp":
        return float(cuboid_side) / max(attention_size - 1, 1)
    if mode == "pooled":
        return float(cuboid_side) / max(volume_size - 1, 1) * (volume_size / attention_size)
    raise ValueError(f"kernel_spacing: 'cp' or 'pooled', got {mode!r}")


# ------------------------------------------------------------------------------------------ the modules
class AttentionConv3D(nn.Module):
    """CP's context module (§3.4) on ``(B, J c, D, H, W)`` (CP: ``J = 17``, ``c = 3``, 16³).

    Args:
        num_joints: ``J``; the channels are ``J`` groups of ``channels_per_joint``.
        limbs: ``E`` joint pairs (a tree: every joint's neighbours are read from it); default CP's h36m17 list.
        limb_mean, limb_std: ``(E,)`` limb length statistics in mm (None: unset, NaN until a state dict or
            :meth:`set_limb_statistics` provides them).
        temperature: ``T`` of the pairwise kernel (1500).
        spacing: the kernel's voxel spacing in mm when :meth:`forward` is not given one (CP: 2500 / 15).
        cache_kernels: keep the kernels (``E N²`` floats) between calls; False: rebuild them in ``kernel_chunk``
            row blocks every call.
    """

    def __init__(self, num_joints: int = 17, channels_per_joint: int = 3,
                 limbs: Sequence[tuple[int, int]] | None = None, limb_mean: torch.Tensor | None = None,
                 limb_std: torch.Tensor | None = None, *, temperature: float = 1500.0,
                 spacing: float = 2500.0 / 15, cache_kernels: bool = True, kernel_chunk: int = 1024) -> None:
        super().__init__()
        self.num_joints, self.channels_per_joint = int(num_joints), int(channels_per_joint)
        self.limbs = tuple((int(a), int(b)) for a, b in (h36m_limbs() if limbs is None else limbs))
        for a, b in self.limbs:
            if not (0 <= a < num_joints and 0 <= b < num_joints) or a == b:
                raise ValueError(f"AttentionConv3D: limb ({a}, {b}) is not a pair of joints 0..{num_joints - 1}")
        if len({frozenset(p) for p in self.limbs}) != len(self.limbs):
            raise ValueError("AttentionConv3D: a limb is listed twice")
        self.temperature, self.spacing = float(temperature), float(spacing)
        self.cache_kernels, self.kernel_chunk = bool(cache_kernels), int(kernel_chunk)
        j, c = self.num_joints, self.channels_per_joint
        channels = j * c
        self.features = nn.Conv3d(channels, channels, 1, groups=j, bias=False)  # W_pi
        self.attention = nn.Conv3d(channels, j, 1, groups=j, bias=False)  # A: one logit per joint
        self.update = nn.Conv3d(j * channels, channels, 1, groups=j, bias=False)  # C_u, u = 0..J-1
        e = len(self.limbs)
        self.register_buffer("limb_mean", torch.full((e,), math.nan))
        self.register_buffer("limb_std", torch.full((e,), math.nan))
        if limb_mean is not None or limb_std is not None:
            self.set_limb_statistics(limb_mean, limb_std)
        receivers = [u for a, b in self.limbs for u in (a, b)]  # the order of limb_messages: b -> a, a -> b
        senders = [v for a, b in self.limbs for v in (b, a)]
        self.register_buffer("_receivers", torch.tensor(receivers), persistent=False)
        self.register_buffer("_senders", torch.tensor(senders), persistent=False)
        self._kernel_cache: tuple[tuple, torch.Tensor] | None = None
        self.register_load_state_dict_post_hook(lambda module, keys: module.reset_kernels())

    def set_limb_statistics(self, mean, std) -> None:
        """Set the ``(E,)`` limb length mean and standard deviation (mm) and drop the cached kernels."""
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean.shape != self.limb_mean.shape or std.shape != self.limb_std.shape:
            raise ValueError(f"limb statistics: expected ({len(self.limbs)},) mean and std for the limbs, got "
                             f"{tuple(mean.shape)} and {tuple(std.shape)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (mean > 0).all() and (std >= 0).all()):
            raise ValueError("limb statistics: mean must be finite and > 0, std finite and >= 0")
        self.limb_mean.copy_(mean)
        self.limb_std.copy_(std)
        self.reset_kernels()

    def reset_kernels(self) -> None:
        self._kernel_cache = None

    def kernels(self, size: Sequence[int], spacing: float, rows: slice | None = None) -> torch.Tensor:
        """The ``(E, N, N)`` kernels of a ``size`` grid (cached when ``cache_kernels`` and ``rows`` is None)."""
        if not torch.isfinite(self.limb_mean).all():
            raise ValueError("AttentionConv3D: the limb statistics are not set (limb_mean / limb_std; load them "
                             "from the limb-length file or a checkpoint)")

        def build(r: slice | None) -> torch.Tensor:
            return pairwise_limb_kernels(self.limb_mean.float(), self.limb_std.float(), tuple(size), spacing,
                                         self.temperature, rows=r)

        if rows is not None or not self.cache_kernels:
            return build(rows)
        key = (tuple(size), float(spacing), self.limb_mean.device)
        if self._kernel_cache is None or self._kernel_cache[0] != key:
            self._kernel_cache = None  # free the old one first
            with torch.no_grad():
                self._kernel_cache = (key, build(None))
        return self._kernel_cache[1]

    def messages(self, weighted: torch.Tensor, attention: torch.Tensor, size: Sequence[int], spacing: float
                 ) -> torch.Tensor:
        """:func:`limb_messages` with this module's kernels, all at once or in row blocks: ``(B, 2E, c, N)``."""
        n = weighted.shape[-1]
        if self.cache_kernels:
            return limb_messages(weighted, attention, self.kernels(size, spacing), self.limbs)
        def block(h: torch.Tensor, g: torch.Tensor, q0: int) -> torch.Tensor:
            k = self.kernels(size, spacing, rows=slice(q0, min(q0 + self.kernel_chunk, n)))
            return limb_messages(h, g, k, self.limbs)

        # checkpointed: backward rebuilds each block's kernel rows instead of keeping all of them alive
        grad = torch.is_grad_enabled() and (weighted.requires_grad or attention.requires_grad)
        return torch.cat([checkpoint(block, weighted, attention, q0, use_reentrant=False) if grad
                          else block(weighted, attention, q0) for q0 in range(0, n, self.kernel_chunk)], -1)

    def forward(self, x: torch.Tensor, spacing: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (B, J c, D, H, W)`` -> ``(out (B, J c, D, H, W), G (B, J, N))`` (``G`` in float32, rows sum to 1)."""
        j, c = self.num_joints, self.channels_per_joint
        if x.ndim != 5 or x.shape[1] != j * c:
            raise ValueError(f"AttentionConv3D expects (B, {j * c}, D, H, W), got {tuple(x.shape)}")
        b, _, *size = x.shape
        n = math.prod(size)
        spacing = self.spacing if spacing is None else float(spacing)
        xt = self.features(x)  # x~ = W_pi x
        logits = self.attention(x)  # a = A x
        with torch.autocast(x.device.type, enabled=False):
            g = torch.softmax(logits.float().reshape(b, j, n), -1)  # G (B, J, N)
            weighted = g[:, :, None] * xt.float().reshape(b, j, c, n)  # h (B, J, c, N)
            s = weighted.sum(-1)  # global descriptors (B, J, c)
            msg = self.messages(weighted, g, size, spacing)  # (B, 2E, c, N)
            # z_u for every u: s_v in group v, replaced by m_{v->u} for the tree neighbours v of u
            z = s[:, None, :, :, None].expand(b, j, j, c, n).clone()
            z[:, self._receivers, self._senders] = msg
        y = self.update(z.reshape(b, j * j * c, *size))  # y_u = C_u z_u, one grouped conv (autocast applies)
        return y + xt, g


class AttenRes3DBlock(nn.Module):
    """``ReLU(r + x)`` with ``r = BN(Conv3³(ReLU(BN(AttentionConv3D(x)))))`` (§3.3); returns ``(out, G)``."""

    def __init__(self, channels: int = 51, num_joints: int = 17, **attention_kwargs) -> None:
        super().__init__()
        if channels % num_joints:
            raise ValueError(f"AttenRes3DBlock: {channels} channels are not a multiple of {num_joints} joints")
        self.attention = AttentionConv3D(num_joints, channels // num_joints, **attention_kwargs)
        self.bn1 = nn.BatchNorm3d(channels)
        self.conv = V2VConv3d(channels, channels, 3, padding=1)  # float32 below 3³ (see models.v2v)
        self.bn2 = nn.BatchNorm3d(channels)

    def forward(self, x: torch.Tensor, spacing: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        a, g = self.attention(x, spacing)
        r = self.bn2(self.conv(torch.relu(self.bn1(a))))
        return torch.relu(r + x), g


class ContextPoseV2V(nn.Module):
    """CP's V2V (§3.3 table; CP: 32 -> 17 at 64³, ``att_channels = 3 J = 51``):

    ========  ==========================================================  =====================
    front     ``Basic3D(in -> J, k3), Res3D(J -> 2J)``                      ``(B, 2J, S³)``
    skip1     ``Res3D(2J, 2J)``                                             ``(B, 2J, S³)``
    enc1      ``MaxPool2 -> Res3D(2J -> 3J)``; skip2 ``Res3D(3J, 3J)``      ``(B, 3J, (S/2)³)``
    enc2      ``MaxPool2 -> Res3D(3J, 3J)``                                 ``(B, 3J, (S/4)³)``
    mid       ``AttenRes3DBlock(3J)``                                       + ``G (B, J, (S/4)³)``
    dec2      ``Res3D(3J, 3J) -> Upsample3D(3J -> 3J)`` + skip2             ``(B, 3J, (S/2)³)``
    dec1      ``Res3D(3J, 3J) -> Upsample3D(3J -> 2J)`` + skip1             ``(B, 2J, S³)``
    out       ``Conv3d(2J -> J, k1)``                                       ``(B, J, S³)``
    ========  ==========================================================  =====================

    Args:
        in_channels: the unprojected feature channels (32).
        num_joints: ``J`` (17); the channels are ``J``, ``2J``, ``3J`` (CP's 17, 34, 51).
        limbs, limb_mean, limb_std, temperature, cache_kernels, kernel_chunk: of :class:`AttentionConv3D`.
        cuboid_side: the volume's side in mm (2500), for the kernel spacing.
        kernel_spacing: ``"cp"`` (``cuboid / (n - 1)``, parity) or ``"pooled"`` (see :func:`attention_spacing`).
        init_std: the ``N(0, init_std)`` init of every (transposed) 3D conv (CP: 1e-3).
        context: ``False`` replaces the context module by a plain ``Res3D(3J, 3J)`` (the ablation without the
            attention and limb-length priors; ``forward`` then returns ``G = None``).
    """

    def __init__(self, in_channels: int = 32, num_joints: int = 17,
                 limbs: Sequence[tuple[int, int]] | None = None, limb_mean: torch.Tensor | None = None,
                 limb_std: torch.Tensor | None = None, *, cuboid_side: float = 2500.0,
                 temperature: float = 1500.0, kernel_spacing: KernelSpacing = "cp", cache_kernels: bool = True,
                 kernel_chunk: int = 1024, init_std: float = 1e-3, context: bool = True) -> None:
        super().__init__()
        if kernel_spacing not in ("cp", "pooled"):
            raise ValueError(f"kernel_spacing: 'cp' or 'pooled', got {kernel_spacing!r}")
        j = int(num_joints)
        self.num_joints, self.in_channels = j, int(in_channels)
        self.cuboid_side, self.kernel_spacing, self.init_std = float(cuboid_side), kernel_spacing, float(init_std)
        self.front_layers = nn.Sequential(Basic3DBlock(in_channels, j, 3), Res3DBlock(j, 2 * j))
        self.skip_res1 = Res3DBlock(2 * j, 2 * j)
        self.encoder_pool1 = nn.MaxPool3d(2, 2)
        self.encoder_res1 = Res3DBlock(2 * j, 3 * j)
        self.skip_res2 = Res3DBlock(3 * j, 3 * j)
        self.encoder_pool2 = nn.MaxPool3d(2, 2)
        self.encoder_res2 = Res3DBlock(3 * j, 3 * j)
        self.has_context = bool(context)
        self.mid_res = AttenRes3DBlock(3 * j, j, limbs=limbs, limb_mean=limb_mean, limb_std=limb_std,
                                       temperature=temperature, cache_kernels=cache_kernels,
                                       kernel_chunk=kernel_chunk) if context else Res3DBlock(3 * j, 3 * j)
        self.decoder_res2 = Res3DBlock(3 * j, 3 * j)
        self.decoder_upsample2 = Upsample3DBlock(3 * j, 3 * j)
        self.decoder_res1 = Res3DBlock(3 * j, 3 * j)
        self.decoder_upsample1 = Upsample3DBlock(3 * j, 2 * j)
        self.output_layer = nn.Conv3d(2 * j, j, 1)
        self.reset_parameters()

    @property
    def context(self) -> AttentionConv3D | None:
        return self.mid_res.attention if self.has_context else None

    def set_limb_statistics(self, mean, std) -> None:
        if self.has_context:
            self.context.set_limb_statistics(mean, std)

    def reset_parameters(self) -> None:
        """``N(0, init_std)`` weights and zero biases for every Conv3d / ConvTranspose3d (attention convs too)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.normal_(m.weight, 0.0, self.init_std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, in_channels, S, S, S)`` (sides divisible by 4) -> ``(volumes (B, J, S, S, S), G (B, J, (S/4)³))``
        (``G`` None without the context module)."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"ContextPoseV2V expects (B, {self.in_channels}, D, H, W), got {tuple(x.shape)}")
        if any(s % 4 for s in x.shape[-3:]):
            raise ValueError(f"ContextPoseV2V: the volume sides must be divisible by 4 (two 2x poolings), got "
                             f"{tuple(x.shape[-3:])}")
        side = x.shape[-1]
        spacing = attention_spacing(self.cuboid_side, side, side // 4, self.kernel_spacing)
        x = self.front_layers(x)
        skip1 = self.skip_res1(x)
        x = self.encoder_res1(self.encoder_pool1(x))
        skip2 = self.skip_res2(x)
        x = self.encoder_res2(self.encoder_pool2(x))
        x, g = self.mid_res(x, spacing) if self.has_context else (self.mid_res(x), None)
        x = self.decoder_upsample2(self.decoder_res2(x)) + skip2
        x = self.decoder_upsample1(self.decoder_res1(x)) + skip1
        return self.output_layer(x), g
