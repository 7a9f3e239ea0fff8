"""Masked autoencoder ViT with externally given masks: MAE / HAP's ``pose_mae_vit_*`` (pretraining.md B.3, B.5,
B.7, B.8).

:class:`PoseMAE` *is* a timm ``VisionTransformer`` (the encoder: patch embedding, cls token, frozen sin-cos
``pos_embed``, pre-norm blocks, final ``norm``) plus MAE's light decoder, so its state-dict keys are exactly those
of the released HAP checkpoint's ``model`` (B.8)::

    cls_token (1,1,D)  pos_embed (1,1+L,D)  patch_embed.proj.{weight,bias}  blocks.i.{norm1,attn.qkv,attn.proj,
    norm2,mlp.fc1,mlp.fc2}.{weight,bias}  norm.*  decoder_embed.*  mask_token (1,1,Dd)  decoder_pos_embed
    (1,1+L,Dd)  decoder_blocks.j.*  decoder_norm.*  decoder_pred.*

Differences from the timm classifier it inherits from: no head (``num_classes=0``), both position embeddings are
frozen 2-D sin-cos (:func:`get_2d_sincos_pos_embed`, MAE's layout) and the weights start from MAE's
initialisation (:meth:`PoseMAE.initialize_weights`). The encoder never draws a mask itself: HAP's pose-guided
masks are computed in the data loader (pitfall 8, :mod:`humanvision.data.masking`) and passed to
:meth:`PoseMAE.forward` as a boolean ``(B, L)`` array (True = masked, the same count in every row).

* Encoder (B.3): patch embedding + ``pos_embed[:, 1:]``; keep the unmasked tokens **in ascending token order**;
  prepend ``cls_token + pos_embed[:, :1]``; blocks; ``norm``. Output ``(B, 1 + L_keep, D)``.
* Decoder: ``decoder_embed``; append ``L - L_keep`` mask tokens; un-shuffle to token order; prepend the cls
  token; ``decoder_pos_embed``; blocks; ``decoder_norm``; ``decoder_pred`` to ``p*p*3`` per token; cls dropped.
* Loss (B.5, pitfall 7): per-patch normalised pixels ``(t - mean) / sqrt(var + 1e-6)`` with the *unbiased*
  variance, squared error averaged over the ``p*p*3`` values, then over the masked patches only. Patches are
  flattened in ``(p, q, c)`` order (row in patch, column in patch, channel): :func:`patchify`.

Conversions: :func:`interpolate_pos_embed` (bicubic, ``align_corners=False``, no antialiasing: B.7),
:func:`load_mae_checkpoint` (the official ImageNet MAE encoder, 14x14 -> 16x8), :func:`hap_to_timm` (an HAP
checkpoint -> a timm ViT state dict at any grid, B.8) and :func:`hap_to_vitpose` (-> our
:class:`~humanvision.models.vitpose.ViTPose` ``backbone.*`` keys).

Variants: ``pose_mae_vit_base_patch16`` (768/12/12, decoder 512/8/16, HAP's), ``pose_mae_vit_small_patch16``
(384/12/6, the same decoder) and ``pose_mae_vit_tiny_patch16`` (192/12/3, decoder 128/2/4; ours, for CPU tests and
the synthetic recipes). All at 256x128 (16x8 tokens of 16 px) unless ``img_size`` says otherwise.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.layers import resample_abs_pos_embed
from timm.models import checkpoint_seq
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from humanvision.errors import DataError
from humanvision.models._registry import register_model

__all__ = [
    "MAELoadReport", "PoseMAE", "get_1d_sincos_pos_embed", "get_2d_sincos_pos_embed", "hap_to_timm",
    "hap_to_vitpose", "interpolate_pos_embed", "load_mae_checkpoint", "mask_to_ids", "patchify", "unpatchify",
]


# ------------------------------------------------------------------------------------------- sin-cos embeddings
def get_1d_sincos_pos_embed(embed_dim: int, pos: np.ndarray) -> np.ndarray:
    """``(M, embed_dim)``: ``[sin(pos * w_k), cos(pos * w_k)]`` with ``w_k = 1 / 10000 ** (k / (embed_dim / 2))``,
    ``k < embed_dim / 2`` (float64)."""
    if embed_dim % 2:
        raise ValueError(f"embed_dim must be even, got {embed_dim}")
    omega = 1.0 / 10000 ** (np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0))
    out = np.asarray(pos, dtype=np.float64).reshape(-1)[:, None] * omega[None, :]
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed(embed_dim: int, grid: tuple[int, int], cls_token: bool = True) -> np.ndarray:
    """MAE's 2-D sin-cos table for a ``grid = (rows, cols)`` token grid, row-major (token ``y * cols + x``):
    ``[sin(x w), cos(x w), sin(y w), cos(y w)]`` with ``w_k = 1 / 10000 ** (k / (D / 4))``, ``k < D / 4``, where
    ``x`` is the column and ``y`` the row. With ``cls_token`` a row of zeros is prepended (the cls position).
    Returns ``((cls_token + rows * cols), embed_dim)`` float64."""
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be a multiple of 4 for a 2-D sin-cos embedding, got {embed_dim}")
    rows, cols = grid
    y, x = np.meshgrid(np.arange(rows, dtype=np.float64), np.arange(cols, dtype=np.float64), indexing="ij")
    emb = np.concatenate([get_1d_sincos_pos_embed(embed_dim // 2, x), get_1d_sincos_pos_embed(embed_dim // 2, y)],
                         axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros((1, embed_dim)), emb], axis=0)
    return emb


# -------------------------------------------------------------------------------------------------- patches
def patchify(imgs: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, (H/p)(W/p), p*p*C)``: patches in row-major token order, each flattened in
    ``(p, q, c)`` order (row in patch, column in patch, channel), MAE's layout."""
    b, c, h, w = imgs.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not divisible by the patch size {p}")
    x = imgs.reshape(b, c, h // p, p, w // p, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x: torch.Tensor, patch_size: int, grid: tuple[int, int], channels: int = 3) -> torch.Tensor:
    """The inverse of :func:`patchify`: ``(B, rows*cols, p*p*C)`` -> ``(B, C, rows*p, cols*p)``."""
    b = x.shape[0]
    rows, cols = grid
    p = patch_size
    if x.shape[1] != rows * cols or x.shape[2] != p * p * channels:
        raise ValueError(f"expected (B, {rows * cols}, {p * p * channels}) patches, got {tuple(x.shape)}")
    x = x.reshape(b, rows, cols, p, p, channels)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(b, channels, rows * p, cols * p)


def mask_to_ids(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``mask (B, L)`` (True / nonzero = masked, the same count per row) -> ``(ids_keep (B, L_keep), ids_restore
    (B, L))``: the kept token indices in ascending order, and the permutation that puts ``[kept..., masked...]``
    (both ascending) back into token order."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be (B, L), got shape {tuple(mask.shape)}")
    m = mask.to(torch.int8)
    counts = m.sum(1)
    if (counts != counts[0]).any():
        raise ValueError(f"every row of the mask must mask the same number of tokens, got {counts.tolist()}")
    ids_shuffle = torch.argsort(m, dim=1, stable=True)  # unmasked (0) first, each group in token order
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    return ids_shuffle[:, :m.shape[1] - int(counts[0])], ids_restore


# ------------------------------------------------------------------------------------------------- the model
class PoseMAE(VisionTransformer):
    """MAE ViT (encoder = timm ``VisionTransformer``) + light decoder, masks given from outside (module doc).

    Args:
        img_size: ``(height, width)`` of the input (256x128 for HAP).
        patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio: the encoder (qkv bias, LayerNorm eps 1e-6,
            no drop path).
        decoder_embed_dim, decoder_depth, decoder_num_heads: the decoder.
        norm_pix_loss: normalise each target patch by its mean and unbiased std (B.5).
    """

    def __init__(self, img_size: int | tuple[int, int] = (256, 128), patch_size: int = 16, in_chans: int = 3,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 decoder_embed_dim: int = 512, decoder_depth: int = 8, decoder_num_heads: int = 16,
                 norm_pix_loss: bool = True) -> None:
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        super().__init__(img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=0,
                         global_pool="token", embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                         mlp_ratio=mlp_ratio, qkv_bias=True, class_token=True, drop_path_rate=0.0,
                         norm_layer=norm_layer)
        self.patch_size, self.in_chans, self.norm_pix_loss = int(patch_size), int(in_chans), bool(norm_pix_loss)
        self.grid_size: tuple[int, int] = tuple(self.patch_embed.grid_size)  # (rows, cols)
        num_patches = self.grid_size[0] * self.grid_size[1]
        self.pos_embed.requires_grad_(False)  # frozen sin-cos (B.3)

        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, decoder_embed_dim),
                                              requires_grad=False)
        self.decoder_blocks = nn.ModuleList([
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
            for _ in range(decoder_depth)])
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size * patch_size * in_chans, bias=True)
        self.model_name, self.model_args = "", {}
        self.initialize_weights()

    # -- initialisation ---------------------------------------------------------------------------------------
    def initialize_weights(self) -> None:
        """MAE's initialisation (B.3): sin-cos position embeddings; xavier-uniform Linear weights (bias 0) and
        patch projection (viewed as a Linear); ``cls_token`` and ``mask_token`` ~ N(0, 0.02); LayerNorm (1, 0).
        The patch projection's bias keeps PyTorch's default, as in MAE."""
        if self.pos_embed.is_meta:
            return
        with torch.no_grad():
            self.pos_embed.copy_(torch.from_numpy(
                get_2d_sincos_pos_embed(self.pos_embed.shape[-1], self.grid_size)).float()[None])
            self.decoder_pos_embed.copy_(torch.from_numpy(
                get_2d_sincos_pos_embed(self.decoder_pos_embed.shape[-1], self.grid_size)).float()[None])
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(_mae_init)

    # -- encoder / decoder ------------------------------------------------------------------------------------
    def forward_encoder(self, imgs: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``imgs (B, C, H, W)``, ``mask (B, L)`` bool (True = masked) -> ``(latent (B, 1 + L_keep, D),
        ids_restore (B, L))``; ``latent[:, 0]`` is the cls output after the final norm."""
        x = self.patch_embed(imgs)
        if mask.shape != x.shape[:2]:
            raise ValueError(f"mask must be (B, L) = {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
        x = x + self.pos_embed[:, 1:]
        ids_keep, ids_restore = mask_to_ids(mask.to(x.device))
        x = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, x.shape[-1]))
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(x), ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """``latent (B, 1 + L_keep, D)`` -> per-patch predictions ``(B, L, p*p*C)`` in token order."""
        x = self.decoder_embed(latent)
        b, n, d = x.shape
        num_masked = ids_restore.shape[1] + 1 - n
        tokens = torch.cat([x[:, 1:], self.mask_token.to(x.dtype).expand(b, num_masked, -1)], dim=1)
        tokens = torch.gather(tokens, 1, ids_restore[..., None].expand(-1, -1, d))
        x = torch.cat([x[:, :1], tokens], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error on the masked patches (B.5), in fp32; with ``norm_pix_loss`` the target patches are
        ``(t - mean) / sqrt(var + 1e-6)`` (unbiased variance over the patch's ``p*p*C`` values)."""
        target = patchify(imgs.float(), self.patch_size)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)  # unbiased, as torch.var in MAE
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        per_patch = ((pred.float() - target) ** 2).mean(dim=-1)
        m = mask.to(per_patch.dtype)
        return (per_patch * m).sum() / m.sum().clamp_min(1.0)

    def forward(self, imgs: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss, pred (B, L, p*p*C), latent (B, 1 + L_keep, D))`` for the given ``mask (B, L)``."""
        latent, ids_restore = self.forward_encoder(imgs, mask)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(imgs, pred, mask), pred, latent

    # -- helpers ----------------------------------------------------------------------------------------------
    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        return patchify(imgs, self.patch_size)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        return unpatchify(x, self.patch_size, self.grid_size, self.in_chans)

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's weights as a timm ``VisionTransformer`` state dict (no decoder, no mask token)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(_DECODER_PREFIXES)}


_DECODER_PREFIXES = ("decoder_", "mask_token")


def _mae_init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _create(variant: str, defaults: dict[str, Any], kwargs: dict[str, Any]) -> PoseMAE:
    model = PoseMAE(**{**defaults, **kwargs})
    model.model_name, model.model_args = variant, dict(kwargs)
    return model


@register_model
def pose_mae_vit_base_patch16(skeleton: Any = None, **kwargs: Any) -> PoseMAE:
    """HAP's ``pose_mae_vit_base_patch16`` (B.3): ViT-B/16 (768, 12 blocks, 12 heads) at 256x128, decoder 512 wide,
    8 blocks, 16 heads. ``skeleton`` is ignored (the registry passes it to every entry point)."""
    return _create("pose_mae_vit_base_patch16", {"embed_dim": 768, "depth": 12, "num_heads": 12,
                                                 "decoder_embed_dim": 512, "decoder_depth": 8,
                                                 "decoder_num_heads": 16}, kwargs)


@register_model
def pose_mae_vit_small_patch16(skeleton: Any = None, **kwargs: Any) -> PoseMAE:
    """ViT-S/16 (384, 12 blocks, 6 heads) at 256x128 with the base decoder (512/8/16)."""
    return _create("pose_mae_vit_small_patch16", {"embed_dim": 384, "depth": 12, "num_heads": 6,
                                                  "decoder_embed_dim": 512, "decoder_depth": 8,
                                                  "decoder_num_heads": 16}, kwargs)


@register_model
def pose_mae_vit_tiny_patch16(skeleton: Any = None, **kwargs: Any) -> PoseMAE:
    """Ours, for CPU tests and the synthetic recipes: ViT-Ti/16 (192, 12 blocks, 3 heads) at 256x128, decoder 128
    wide, 2 blocks, 4 heads."""
    return _create("pose_mae_vit_tiny_patch16", {"embed_dim": 192, "depth": 12, "num_heads": 3,
                                                 "decoder_embed_dim": 128, "decoder_depth": 2,
                                                 "decoder_num_heads": 4}, kwargs)


# -------------------------------------------------------------------------------------------------- conversions
def interpolate_pos_embed(pos_embed: torch.Tensor, new_grid: tuple[int, int],
                          old_grid: tuple[int, int] | None = None, num_prefix: int = 1) -> torch.Tensor:
    """Resample a ``(1, num_prefix + rows * cols, D)`` position embedding from ``old_grid`` to ``new_grid``
    (``(rows, cols)``; ``old_grid`` None: a square grid) with ``F.interpolate(mode='bicubic',
    align_corners=False)`` and no antialiasing (MAE / HAP, B.7); prefix tokens are kept as they are."""
    n = pos_embed.shape[1] - num_prefix
    if old_grid is None:
        side = math.isqrt(max(n, 0))
        if side * side != n:
            raise ValueError(f"{n} position tokens do not form a square grid; pass old_grid=(rows, cols)")
        old_grid = (side, side)
    if old_grid[0] * old_grid[1] != n:
        raise ValueError(f"{n} position tokens (after {num_prefix} prefix) do not form a {old_grid[0]}x"
                         f"{old_grid[1]} grid")
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    return resample_abs_pos_embed(pos_embed, new_size=list(new_grid), old_size=list(old_grid),
                                  num_prefix_tokens=num_prefix, interpolation="bicubic", antialias=False,
                                  align_corners=False)


@dataclass
class MAELoadReport:
    """What :func:`load_mae_checkpoint` did: keys of the model left at their initialisation (``missing``: the
    decoder), keys of the file not loaded on purpose (``dropped``) and resampled (``resized``)."""

    file: str
    missing: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)


def load_mae_checkpoint(model: PoseMAE, path: str | Path, old_grid: tuple[int, int] | None = None,
                        allow_pickle: bool = False) -> MAELoadReport:
    """Initialise ``model`` from an MAE checkpoint (B.7): the official ImageNet ``mae_pretrain_vit_base.pth``
    (``{'model': encoder}``, ``pos_embed`` 14x14, no decoder) or any checkpoint in the same key layout.

    ``pos_embed`` is resampled from ``old_grid`` (default: the square grid its token count gives; HAP's
    ``--ckpt_pos_embed 14 14``) to the model's grid. A ``decoder_pos_embed`` in the file is ignored (the model
    keeps its native sin-cos). Only decoder keys (``decoder_*``, ``mask_token``) may be missing from the file;
    a missing encoder key, a key the model does not have, or another shape is a :class:`DataError` naming it.
    """
    from humanvision.models.weights import read_checkpoint

    file = str(path)
    state = _strip_prefixes(read_checkpoint(path, allow_pickle=allow_pickle))
    report = MAELoadReport(file=file)
    own = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "decoder_pos_embed":
            report.dropped.append(key)
            continue
        if key == "pos_embed":
            try:
                value = interpolate_pos_embed(value.float(), model.grid_size, old_grid, num_prefix=1)
            except ValueError as e:
                raise DataError(str(e), file=file, field=key) from None
            if tuple(value.shape) != tuple(state[key].shape):
                report.resized.append(key)
        out[key] = value
    unexpected = sorted(set(out) - set(own))
    if unexpected:
        raise DataError(f"keys the model does not have: {', '.join(unexpected[:8])}", file=file,
                        field=unexpected[0])
    missing = sorted(set(own) - set(out))
    bad_missing = [k for k in missing if not k.startswith(_DECODER_PREFIXES)]
    if bad_missing:
        raise DataError(f"encoder keys missing from the file: {', '.join(bad_missing[:8])}", file=file,
                        field=bad_missing[0])
    shapes = [k for k in out if tuple(out[k].shape) != tuple(own[k].shape)]
    if shapes:
        k = shapes[0]
        raise DataError(f"shape {tuple(out[k].shape)} in the file vs {tuple(own[k].shape)} in the model", file=file,
                        field=k)
    model.load_state_dict(out, strict=False)
    report.missing = missing
    return report


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys without a leading ``module.`` (DDP) and/or ``mae.`` (our HAP method; HAP's ReID loader)."""
    return {re.sub(r"^(module\.)?(mae\.)?", "", k): v for k, v in state.items()}


def _hap_state(source: str | Path | dict[str, Any]) -> tuple[dict[str, torch.Tensor], str | None]:
    if isinstance(source, (str, Path)):
        from humanvision.engine.checkpoint import weights_file
        from humanvision.models.weights import read_checkpoint

        file = weights_file(source)
        return read_checkpoint(file), str(file)
    state = source.get("model", source) if isinstance(source.get("model"), dict) else source
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, None


def hap_to_timm(source: str | Path | dict[str, Any], new_grid: tuple[int, int],
                old_grid: tuple[int, int] = (16, 8)) -> dict[str, torch.Tensor]:
    """An HAP / PoseMAE checkpoint as a timm ``VisionTransformer`` state dict (B.8).

    ``source``: the released checkpoint's dict (``ckpt['model']`` is taken), a bare state dict, or a path (a
    ``.pth``, a ``.safetensors`` file or one of our run folders). Drops ``decoder_*`` and ``mask_token``, strips
    ``module.`` / ``mae.`` prefixes, and resamples ``pos_embed`` (1 cls slot) from ``old_grid`` (16x8 for HAP,
    pitfall 5) to ``new_grid`` (e.g. (24, 8) for 384x128 ReID, (16, 12) for 256x192 pose)."""
    state, file = _hap_state(source)
    out = {k: v for k, v in _strip_prefixes(state).items() if not k.startswith(_DECODER_PREFIXES)}
    if "pos_embed" not in out:
        raise DataError("no pos_embed: not an HAP / MAE encoder checkpoint", file=file, field="pos_embed")
    try:
        out["pos_embed"] = interpolate_pos_embed(out["pos_embed"], tuple(new_grid), tuple(old_grid), num_prefix=1)
    except ValueError as e:
        raise DataError(str(e), file=file, field="pos_embed") from None
    return out


def hap_to_vitpose(source: str | Path | dict[str, Any], new_grid: tuple[int, int],
                   old_grid: tuple[int, int] = (16, 8), include_norm: bool = True) -> dict[str, torch.Tensor]:
    """An HAP checkpoint as ``backbone.*`` keys of our :class:`~humanvision.models.vitpose.ViTPose` (load with
    ``strict=False``: the heatmap head is not in it).

    ViTPose has no cls token: ``cls_token`` is dropped, the patch slots of ``pos_embed`` are resampled from
    ``old_grid`` to ``new_grid`` and slot 0 (the cls position; zero for sin-cos) is added to every patch slot, as
    the official ViTPose forward does with a ``(1, 1 + N, D)`` embedding. ``norm.*`` -> ``backbone.norm.*``
    (official ViTPose's ``last_norm``, B.8); ``include_norm=False`` leaves it out, as HAP's own loader
    effectively does."""
    timm_state = hap_to_timm(source, new_grid, old_grid)
    out: dict[str, torch.Tensor] = {}
    for key, value in timm_state.items():
        if key == "cls_token" or (key.startswith("norm.") and not include_norm):
            continue
        if key == "pos_embed":
            value = value[:, 1:] + value[:, :1]
        out["backbone." + key] = value
    return out
