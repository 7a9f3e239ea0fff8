"""PCT, "Human Pose as Compositional Tokens" (Geng et al., CVPR 2023, https://arxiv.org/abs/2303.11638): the
tokenizer (stage I) and the token classification head (stage II), from pose2d.md §3.3, §3.4 and §3.9.

* :class:`MixerLayer`: an MLP-Mixer block on ``(B, T, h)``: ``y = TokenMLP(LN1(x)^T)^T``,
  ``z = ChannelMLP(LN2(x + y))``, ``out = x + y + z``.
* :class:`PCTTokenizer`: joints ``(B, K, 3)`` (crop pixels + visibility; no normalisation, the fixed crop is
  the normalisation) and, when image-guided, the stage-4 map ``(B, C, h, w)`` of a frozen heatmap backbone ->
  ``M`` tokens ``(B, M, D)`` -> nearest codebook entries (VQ, EMA-updated codebook) -> joints ``(B, K, 2)``.
* :class:`PCTHead`: the stage-4 map ``(B, C, h, w)`` -> logits ``(B, M, V)`` over the codebook.

Module names reproduce the official state-dict keys (§3.9), so official checkpoints load through a prefix map
(:data:`OFFICIAL_PREFIXES`, :func:`from_official_pct`, :func:`to_official_pct`)::

    official (mmcv state_dict)       humanvision PCT method (methods/pct.py)
    keypoint_head.tokenizer.*        tokenizer.*           PCTTokenizer, with the codebook / EMA buffers
    keypoint_head.*                  head.*                PCTHead (conv_trans, conv_head, mixer_*, ...)
    backbone.* / extra_backbone.*    backbone.backbone.*   the frozen heatmap model's trunk (one shared copy)

Hyper-parameters are module arguments with the Swin-B defaults (M=34 tokens of D=512, a codebook of V=2048).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from humanvision.errors import DataError

__all__ = [
    "OFFICIAL_PREFIXES", "BasicBlock", "FCBlock", "MLPBlock", "MixerLayer", "PCTHead", "PCTTokenizer",
    "check_state_shapes", "from_official_pct", "official_to_ours", "ours_to_official",
    "to_official_pct",
]


# ------------------------------------------------------------------------------------------------ blocks
class MLPBlock(nn.Module):
    """``Linear(dim, inter) -> GELU -> Dropout -> Linear(inter, dim) -> Dropout`` (keys ``ff.0``,
    ``ff.3``)."""

    def __init__(self, dim: int, inter_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.ff = nn.Sequential(nn.Linear(dim, inter_dim), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(inter_dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff(x)


class MixerLayer(nn.Module):
    """Mixer block on ``(B, T, h)`` (§3.3): token MLP ``T -> t_inter -> T`` over the token axis, channel MLP
    ``h -> h_inter -> h``; ``out = x + y + z``."""

    def __init__(self, hidden_dim: int, hidden_inter_dim: int, token_dim: int, token_inter_dim: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.layernorm1 = nn.LayerNorm(hidden_dim)
        self.MLP_token = MLPBlock(token_dim, token_inter_dim, dropout)
        self.layernorm2 = nn.LayerNorm(hidden_dim)
        self.MLP_channel = MLPBlock(hidden_dim, hidden_inter_dim, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.MLP_token(self.layernorm1(x).transpose(1, 2)).transpose(1, 2)
        z = self.MLP_channel(self.layernorm2(x + y))
        return x + y + z


class FCBlock(nn.Module):
    """``Linear -> LayerNorm -> ReLU`` (keys ``ff.0``, ``ff.1``)."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.ff = nn.Sequential(nn.Linear(dim, out_dim), nn.LayerNorm(out_dim), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff(x)


class BasicBlock(nn.Module):
    """ResNet basic block with identity shortcut: ``relu(x + bn2(conv2(relu(bn1(conv1(x))))))``, 3x3 convs
    (``dilation`` on ``conv1``, as MMPose's BasicBlock; the released configs use 1)."""

    def __init__(self, channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(y)))


# --------------------------------------------------------------------------------------------- tokenizer
class PCTTokenizer(nn.Module):
    """Stage I: joints -> ``M`` compositional tokens -> joints (pose2d.md §3.3).

    Args:
        num_joints: ``K`` (17 for COCO).
        token_num, token_dim, token_class_num: ``M`` tokens of ``D`` channels, codebook of ``V`` entries.
        guide_channels: channels ``C`` of the frozen backbone's map for image guidance; ``0``: woimgguide
            (§3.6).
        guide_ratio: share of the encoder width that comes from the image (0.5 in the release); ignored
            without guidance (then ``start_embed = Linear(2, hidden)``).
        image_size: side of the square crop in pixels (256); the map is sampled at stride ``image_size / w``.
        enc_*: encoder Mixer (4 blocks, width 512, token MLP 64, channel MLP 512).
        drop_rate: per-joint masking probability, applied only in training mode (stage I training; stage II
            keeps the tokenizer in eval mode).
        dec_*: decoder Mixer (1 block, width 32, token MLP 64, channel MLP 64).
        ema_decay, ema_eps: codebook EMA ``gamma`` and Laplace smoothing ``eps``.

    Buffers: ``codebook (V, D)`` and ``ema_w (V, D)`` ~ N(0, 1), ``ema_cluster_size (V,)`` = 0. The tokenizer
    computes in fp32 (autocast off inside): it regresses pixel coordinates with a 0.05-px smooth-L1.
    """

    def __init__(self, num_joints: int = 17, token_num: int = 34, token_dim: int = 512,
                 token_class_num: int = 2048, guide_channels: int = 1024, guide_ratio: float = 0.5,
                 image_size: int = 256, enc_num_blocks: int = 4, enc_hidden_dim: int = 512,
                 enc_token_inter_dim: int = 64, enc_hidden_inter_dim: int = 512, enc_dropout: float = 0.0,
                 drop_rate: float = 0.2, dec_num_blocks: int = 1, dec_hidden_dim: int = 32,
                 dec_token_inter_dim: int = 64, dec_hidden_inter_dim: int = 64, dec_dropout: float = 0.0,
                 ema_decay: float = 0.9, ema_eps: float = 1e-5) -> None:
        super().__init__()
        self.num_joints, self.token_num, self.token_dim = num_joints, token_num, token_dim
        self.token_class_num, self.image_size = token_class_num, int(image_size)
        self.guided = guide_channels > 0 and guide_ratio > 0
        self.drop_rate, self.ema_decay, self.ema_eps = float(drop_rate), float(ema_decay), float(ema_eps)

        h = enc_hidden_dim
        self.invisible_token = nn.Parameter(torch.zeros(1, 1, h))
        nn.init.trunc_normal_(self.invisible_token, std=0.02, a=-0.02, b=0.02)
        img_dim = int(h * guide_ratio) if self.guided else 0
        self.start_embed = nn.Linear(2, h - img_dim)
        if self.guided:
            self.start_img_embed = nn.Linear(guide_channels, img_dim)
        self.encoder = nn.ModuleList([MixerLayer(h, enc_hidden_inter_dim, num_joints, enc_token_inter_dim,
                                                 enc_dropout) for _ in range(enc_num_blocks)])
        self.encoder_layer_norm = nn.LayerNorm(h)
        self.token_mlp = nn.Linear(num_joints, token_num)
        self.feature_embed = nn.Linear(h, token_dim)

        self.register_buffer("codebook", torch.randn(token_class_num, token_dim))
        self.register_buffer("ema_cluster_size", torch.zeros(token_class_num))
        self.register_buffer("ema_w", torch.randn(token_class_num, token_dim))

        self.decoder_token_mlp = nn.Linear(token_num, num_joints)
        self.decoder_start = nn.Linear(token_dim, dec_hidden_dim)
        self.decoder = nn.ModuleList([MixerLayer(dec_hidden_dim, dec_hidden_inter_dim, num_joints,
                                                 dec_token_inter_dim, dec_dropout)
                                      for _ in range(dec_num_blocks)])
        self.decoder_layer_norm = nn.LayerNorm(dec_hidden_dim)
        self.recover_embed = nn.Linear(dec_hidden_dim, 2)

    # -- encoder -----------------------------------------------------------------------------------------
    def sample_features(self, features: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        """Nearest-neighbour sample of ``features (B, C, s, s)`` at ``xy (B, K, 2)`` crop pixels:
        ``ix = clamp(int(x / stride + 0.5), 0, s - 1)`` with ``stride = image_size / s`` (32 and 8x8 in the
        release), ``iy`` alike. Returns ``(B, K, C)``."""
        b, c, h, w = features.shape
        if h != w:
            raise DataError(f"expected a square feature map (the crop is square), got "
                            f"{tuple(features.shape)}", field="features")
        stride = self.image_size / w
        ij = (xy / stride + 0.5).long().clamp(0, w - 1)  # .long() truncates toward zero, as int()
        flat = ij[..., 1] * w + ij[..., 0]  # (B, K)
        return features.flatten(2).gather(2, flat[:, None, :].expand(b, c, -1)).transpose(1, 2)

    def embed_joints(self, joints: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Step 1-2 of the encoder: ``(B, K, 3)`` -> ``(B, K, hidden)``; joints that are invisible, or dropped
        with probability ``drop_rate`` in training mode, are replaced by ``invisible_token``."""
        if joints.ndim != 3 or joints.shape[1:] != (self.num_joints, 3):
            raise DataError(f"expected (B, {self.num_joints}, 3) joints (x, y, visible), got "
                            f"{tuple(joints.shape)}", field="joints")
        xy, vis = joints[..., :2], joints[..., 2]
        f = self.start_embed(xy)
        if self.guided:
            if features is None:
                raise DataError("an image-guided tokenizer needs the backbone's feature map",
                                field="features")
            f = torch.cat([f, self.start_img_embed(self.sample_features(features.float(), xy))], dim=-1)
        keep = vis > 0
        if self.training and self.drop_rate > 0:
            keep = keep & (torch.rand_like(vis) > self.drop_rate)
        keep = keep[..., None].to(f.dtype)
        return f * keep + self.invisible_token * (1 - keep)

    def encode(self, joints: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Joints (+ map) -> continuous tokens ``z (B, M, D)`` (before quantisation)."""
        with torch.autocast(joints.device.type, enabled=False):
            x = self.embed_joints(joints.float(), features)
            for layer in self.encoder:
                x = layer(x)
            x = self.encoder_layer_norm(x)
            x = self.token_mlp(x.transpose(1, 2)).transpose(1, 2)  # joints -> tokens: (B, M, hidden)
            return self.feature_embed(x)

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest codebook entries: ``(q (B, M, D), indices (B, M))`` with the codebook as it is now."""
        flat = z.reshape(-1, self.token_dim).float()
        dist2 = (flat.pow(2).sum(1, keepdim=True) + self.codebook.pow(2).sum(1)
                 - 2.0 * flat @ self.codebook.t())
        idx = dist2.argmin(dim=1)
        return self.codebook[idx].view_as(z), idx.view(z.shape[:2])

    @torch.no_grad()
    def update_codebook(self, z: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """One EMA step (§3.3), with the per-code sums all-reduced over the DDP ranks first:
        ``N <- g N + (1 - g) sum onehot``; ``n = sum N``; ``N <- (N + eps) / (n + V eps) n``;
        ``m <- g m + (1 - g) onehot^T z``; ``E <- m / N``. Returns the (global) assignment counts ``(V,)``."""
        onehot = F.one_hot(indices.reshape(-1), self.token_class_num).float()
        flat = z.detach().reshape(-1, self.token_dim).float()
        sums = torch.cat([onehot.sum(0)[:, None], onehot.t() @ flat], dim=1)  # one all-reduce for both
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(sums, op=dist.ReduceOp.SUM)
        counts, dw = sums[:, 0], sums[:, 1:]
        g, eps, v = self.ema_decay, self.ema_eps, self.token_class_num
        size = g * self.ema_cluster_size + (1 - g) * counts
        n = size.sum()
        size = (size + eps) / (n + v * eps) * n
        self.ema_cluster_size.copy_(size)
        self.ema_w.mul_(g).add_(dw, alpha=1 - g)
        self.codebook.copy_(self.ema_w / size[:, None])
        return counts

    # -- decoder -----------------------------------------------------------------------------------------
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token features ``(B, M, D)`` -> joints ``(B, K, 2)`` in crop pixels."""
        with torch.autocast(tokens.device.type, enabled=False):
            x = self.decoder_token_mlp(tokens.float().transpose(1, 2)).transpose(1, 2)  # (B, K, D)
            x = self.decoder_start(x)
            for layer in self.decoder:
                x = layer(x)
            return self.recover_embed(self.decoder_layer_norm(x))

    def decode_soft(self, logits: torch.Tensor) -> torch.Tensor:
        """Stage II soft decoding (§3.4): ``softmax(logits) . E`` -> decoder; ``(B, M, V)`` ->
        ``(B, K, 2)``."""
        return self.decode(logits.float().softmax(-1) @ self.codebook)

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Hard decoding of token indices ``(B, M)``."""
        return self.decode(self.codebook[indices])

    # -- stage I ------------------------------------------------------------------------------------------
    def forward(self, joints: torch.Tensor, features: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Encode, quantise, (training mode: update the codebook), decode through the straight-through
        estimator ``q_st = z + (q - z).detach()``. Returns ``joints (B, K, 2)``, ``z``, ``q`` (the entries of
        the codebook before this step's update), ``indices (B, M)`` and ``counts (V,)`` (assignments; of all
        ranks in training)."""
        z = self.encode(joints, features)
        q, idx = self.quantize(z)
        if self.training:
            counts = self.update_codebook(z, idx)
        else:
            counts = torch.bincount(idx.reshape(-1), minlength=self.token_class_num).float()
        q_st = z + (q - z).detach()
        return {"joints": self.decode(q_st), "z": z, "q": q, "indices": idx, "counts": counts}


# ------------------------------------------------------------------------------------------------- head
class PCTHead(nn.Module):
    """Stage II classification head (pose2d.md §3.4): stage-4 map ``(B, C, h, w)`` -> logits ``(B, M, V)``.

    ``Conv1x1(C -> 256, no bias) -> BN -> ReLU``; 2 x BasicBlock(256); flatten in ``(h, w, c)`` order;
    ``FCBlock(256 h w -> M * 64)``; reshape ``(B, M, 64)``; 4 x MixerLayer(64, 256, M, 64);
    ``FCBlock(64, 64)``; ``Linear(64, V)``. Convs are initialised N(0, 0.001), BatchNorm (1, 0).
    """

    def __init__(self, in_channels: int = 1024, feature_size: int | tuple[int, int] = 8, token_num: int = 34,
                 token_class_num: int = 2048, conv_num_blocks: int = 2, conv_channels: int = 256,
                 dilation: int = 1, num_blocks: int = 4, hidden_dim: int = 64, token_inter_dim: int = 64,
                 hidden_inter_dim: int = 256, dropout: float = 0.0) -> None:
        super().__init__()
        fh, fw = (feature_size, feature_size) if isinstance(feature_size, int) else tuple(feature_size)
        self.feature_size, self.token_num, self.hidden_dim = (int(fh), int(fw)), token_num, hidden_dim
        self.conv_trans = nn.Sequential(nn.Conv2d(in_channels, conv_channels, 1, bias=False),
                                        nn.BatchNorm2d(conv_channels), nn.ReLU(inplace=True))
        self.conv_head = nn.ModuleList([nn.Sequential(*[BasicBlock(conv_channels, dilation)
                                                        for _ in range(conv_num_blocks)])])
        self.mixer_trans = FCBlock(conv_channels * fh * fw, token_num * hidden_dim)
        self.mixer_head = nn.ModuleList([MixerLayer(hidden_dim, hidden_inter_dim, token_num, token_inter_dim,
                                                    dropout) for _ in range(num_blocks)])
        self.mixer_norm_layer = FCBlock(hidden_dim, hidden_dim)
        self.cls_pred_layer = nn.Linear(hidden_dim, token_class_num)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[-2:]) != self.feature_size:
            fh, fw = self.feature_size
            raise DataError(f"expected a (B, C, {fh}, {fw}) feature map, got {tuple(x.shape)}",
                            field="features")
        x = self.conv_head[0](self.conv_trans(x))
        x = x.flatten(2).transpose(1, 2).flatten(1)  # (h, w, c) order: (B, h*w*c)
        x = self.mixer_trans(x).view(-1, self.token_num, self.hidden_dim)
        for layer in self.mixer_head:
            x = layer(x)
        return self.cls_pred_layer(self.mixer_norm_layer(x))


# ---------------------------------------------------------------------------------------- official keys
#: (official prefix, ours), first match wins: official keys of a PCT checkpoint -> the PCT method's keys.
#: ``extra_backbone`` (image-guided models) is an identical frozen copy of ``backbone``; the method keeps one.
OFFICIAL_PREFIXES = (
    ("keypoint_head.tokenizer.", "tokenizer."),
    ("keypoint_head.", "head."),
    ("extra_backbone.", "backbone.backbone."),
    ("backbone.", "backbone.backbone."),
)


def official_to_ours(key: str) -> str:
    """One official key -> ours by :data:`OFFICIAL_PREFIXES` (a key with another prefix is returned as it
    is)."""
    for official, ours in OFFICIAL_PREFIXES:
        if key.startswith(official):
            return ours + key[len(official):]
    return key


def ours_to_official(key: str) -> str:
    """One of our keys -> the official key (the trunk as ``backbone.*``)."""
    for ours, official in (("tokenizer.", "keypoint_head.tokenizer."), ("head.", "keypoint_head."),
                           ("backbone.backbone.", "backbone.")):
        if key.startswith(ours):
            return official + key[len(ours):]
    return key


def from_official_pct(state: Mapping[str, torch.Tensor], file: str | None = None) -> dict[str, torch.Tensor]:
    """Official PCT keys -> ours by :data:`OFFICIAL_PREFIXES`. When both ``backbone.*`` and
    ``extra_backbone.*`` are present they must hold equal tensors (one shared trunk); otherwise a DataError
    names the first key that differs. Keys with other prefixes are kept as they are (the caller reports them
    as unexpected)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = official_to_ours(key)
        if new in out and not (out[new].shape == value.shape and torch.equal(out[new], value)):
            raise DataError("backbone and extra_backbone differ here; humanvision shares one frozen trunk "
                            "for both roles", file=file, field=key)
        out[new] = value
    return out


def to_official_pct(state: Mapping[str, torch.Tensor], image_guided: bool) -> dict[str, torch.Tensor]:
    """Our keys -> official keys (the inverse of :func:`from_official_pct`); the shared trunk is written as
    ``backbone.*`` and, for image-guided models, also as ``extra_backbone.*``."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        out[ours_to_official(key)] = value
        if image_guided and key.startswith("backbone.backbone."):
            out["extra_" + ours_to_official(key)] = value
    return out


def _few(keys: list[str], n: int = 6) -> str:
    return ", ".join(keys[:n]) + (f" ... (+{len(keys) - n} more)" if len(keys) > n else "") if keys else "none"


def check_state_shapes(module: nn.Module, state: Mapping[str, torch.Tensor], file: str | None = None,
                       names: Mapping[str, str] | None = None, what: str = "") -> None:
    """Raise a DataError naming the key (``names``: our key -> the key as in the file) when ``state``
    misses keys of ``module``, has keys it does not know, or a tensor of another shape (e.g. a tokenizer for
    another number of tokens, codebook size or joint count)."""
    names = names or {}
    own = module.state_dict()
    missing = [names.get(k, k) for k in own if k not in state]
    unexpected = [names.get(k, k) for k in state if k not in own]
    if missing or unexpected:
        raise DataError(f"{what}missing keys {_few(missing)}, unexpected keys {_few(unexpected)}", file=file)
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise DataError(f"{what}shape {tuple(v.shape)} in the checkpoint, {tuple(own[k].shape)} in the "
                            "model (another number of tokens, codebook size, joint count or width?)",
                            file=file, field=names.get(k, k))
