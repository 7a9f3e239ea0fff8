"""Person ViTs for the HAP downstream tasks: re-identification and pedestrian attributes (pretraining.md B.9.1,
B.9.5, pitfalls 5 and 9).

Both wrap one timm ``VisionTransformer`` (``backbone``): patch 16, one class token, learned ``pos_embed``
``(1, 1 + N, D)``, pre-norm blocks with qkv bias, LayerNorm eps 1e-6, stochastic depth rising linearly to
``drop_path_rate`` (0.1), a final LayerNorm, no classifier. Its state-dict names are the HAP encoder's one to one
(B.8), so an encoder from :func:`humanvision.models.mae.hap_to_timm` loads strictly (:func:`load_encoder_state`).
``img_size`` is ``(height, width)`` as in timm: 256x128 (grid 16x8, the pre-training grid), 384x128 (24x8) or
256x192 (16x12).

* :class:`ReIDViT` (B.9.1): the feature is the **class token after the final LayerNorm** (``D``-d, 768 for
  ViT-B), the logits ``head(neck(feature))`` with ``head = Linear(D, num_ids)``. ``neck`` is a BNNeck
  (``BatchNorm1d`` with a frozen zero bias) when ``bnneck`` is on, else the identity: a plain ViT has none
  (pitfall 9). ``lem=True`` adds the ViT-lem branch: the patch-token map ``(B, D, H/16, W/16)`` goes through three
  ResNet bottlenecks (the first with stride 2 and ``D -> 2D``, the others ``2D -> 2D``), global average pooling and
  a LayerNorm; that ``2D``-d feature gets its own BNNeck and ``Linear(2D, num_ids)``; the BNNeck is then on for
  both branches, and the test feature is ``cat(cls, conv)`` (``3D`` = 2304-d for ViT-B).
* :class:`AttributeViT` (B.9.5): the **mean of the patch tokens** after the final LayerNorm (the class token is
  ignored), then ``Linear(D, num_attributes)``; no BatchNorm.

Layer-wise lr decay (BEiT / MAE rule, the engine's convention of :mod:`humanvision.engine.optim`): layer ids run
from 0 (``cls_token``, ``pos_embed``, ``patch_embed``) through ``i + 1`` for block ``i`` to ``depth + 1`` for
everything after the blocks (final norm, necks, heads, the lem branch); ``num_layers = depth + 2`` ids, so for
ViT-B a parameter of layer ``l`` trains at ``lr * decay ** (13 - l)``.

Entry points (registry): ``reid_vit_{tiny,small,base}_patch16`` and ``attr_vit_{tiny,base}_patch16``, each with
``num_classes`` and ``img_size``; tiny = 192-d, 12 blocks, 3 heads (timm's ViT-Ti), small 384/12/6, base 768/12/12.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from humanvision.errors import DataError
from humanvision.models._base import IMAGENET_MEAN, IMAGENET_STD
from humanvision.models._registry import register_model
from humanvision.models.weights import LoadReport

__all__ = ["AttributeViT", "LemBranch", "PersonViT", "ReIDViT", "init_from_pretrained", "load_encoder_state"]


def _size(img_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(img_size, int):
        return img_size, img_size
    if len(img_size) != 2 or not all(isinstance(s, int) and s > 0 for s in img_size):
        raise ValueError(f"img_size must be a positive int or a (height, width) pair, got {img_size!r}")
    return int(img_size[0]), int(img_size[1])


class PersonViT(nn.Module):
    """The shared timm ViT trunk (see the module docstring) with the layer-decay and weight-decay rules.

    Args:
        img_size: ``(height, width)``, both divisible by ``patch_size``.
        patch_size, embed_dim, depth, num_heads, mlp_ratio, drop_path_rate: ViT hyper-parameters.
    """

    model_name: str = ""

    def __init__(self, img_size: int | tuple[int, int] = (256, 128), *, patch_size: int = 16,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.1) -> None:
        super().__init__()
        self.img_size = _size(img_size)
        if self.img_size[0] % patch_size or self.img_size[1] % patch_size:
            raise ValueError(f"img_size {self.img_size} (height, width) must be divisible by patch_size "
                             f"{patch_size}")
        self.backbone = VisionTransformer(
            img_size=self.img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
            mlp_ratio=mlp_ratio, qkv_bias=True, class_token=True, global_pool="token", num_classes=0,
            drop_path_rate=drop_path_rate, norm_layer=partial(nn.LayerNorm, eps=1e-6))
        self.grid_size: tuple[int, int] = tuple(self.backbone.patch_embed.grid_size)  # (rows, cols)
        self.embed_dim, self.depth = embed_dim, depth
        self.model_args: dict[str, Any] = {}
        self.default_cfg: dict[str, Any] = {"model": self.model_name, "img_size": self.img_size,
                                            "mean": IMAGENET_MEAN, "std": IMAGENET_STD}

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, 1 + N, D)``: the class token then the patch tokens, after the final norm."""
        return self.backbone.forward_features(x)

    def token_map(self, tokens: torch.Tensor) -> torch.Tensor:
        """Patch tokens ``(B, 1 + N, D)`` -> the map ``(B, D, H/16, W/16)``."""
        b, _, d = tokens.shape
        return tokens[:, 1:].transpose(1, 2).reshape(b, d, *self.grid_size)

    @property
    def num_layers(self) -> int:
        """Number of layer ids: 0 (embeddings), one per block, ``depth + 1`` (everything after the blocks)."""
        return self.depth + 2

    def layer_id(self, name: str) -> int:
        """``backbone.{cls_token,pos_embed,patch_embed}`` -> 0, ``backbone.blocks.i`` -> i + 1, else depth + 1."""
        if name.startswith(("backbone.cls_token", "backbone.pos_embed", "backbone.patch_embed")):
            return 0
        m = re.match(r"backbone\.blocks\.(\d+)\.", name)
        return int(m.group(1)) + 1 if m else self.depth + 1

    def no_weight_decay(self) -> set[str]:
        """The position embedding and class token (timm's rule; 1-D parameters and biases are excluded anyway)."""
        return {"backbone.pos_embed", "backbone.cls_token"}


def _bnneck(dim: int) -> nn.BatchNorm1d:
    bn = nn.BatchNorm1d(dim)
    bn.bias.requires_grad_(False)  # the BNNeck's bias stays at zero
    return bn


def _classifier(dim: int, num_classes: int) -> nn.Linear:
    head = nn.Linear(dim, num_classes)
    nn.init.trunc_normal_(head.weight, std=0.02)
    nn.init.zeros_(head.bias)
    return head


class LemBranch(nn.Module):
    """ViT-lem's convolutional branch (B.9.1): three ResNet bottlenecks on the patch-token map (the first with
    stride 2 and a strided 1x1 projection shortcut, ``dim -> 2 dim``; the others ``2 dim -> 2 dim``), global
    average pooling and a LayerNorm. ``(B, dim, h, w)`` -> ``(B, 2 dim)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        from torchvision.models.resnet import Bottleneck

        out = 2 * dim
        planes = out // Bottleneck.expansion
        shortcut = nn.Sequential(nn.Conv2d(dim, out, 1, stride=2, bias=False), nn.BatchNorm2d(out))
        self.blocks = nn.Sequential(Bottleneck(dim, planes, stride=2, downsample=shortcut),
                                    Bottleneck(out, planes), Bottleneck(out, planes))
        self.norm = nn.LayerNorm(out, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.blocks(x).mean(dim=(2, 3)))


class ReIDViT(PersonViT):
    """Re-identification ViT (see the module docstring).

    ``forward(x)`` returns ``{"features": [cls (, conv)], "logits": [...], "embedding": (B, E)}``: the per-branch
    features before the neck (the triplet loss uses them), the per-branch logits (the ID loss) and the test
    feature (``E = D``, or ``3 D`` with ``lem``).

    Args:
        num_classes: number of training identities.
        bnneck: BatchNorm before each classifier; default off for the plain ViT (pitfall 9), on with ``lem``.
        lem: add the ViT-lem convolutional branch.
        **kwargs: :class:`PersonViT`'s.
    """

    def __init__(self, num_classes: int = 751, img_size: int | tuple[int, int] = (256, 128), *,
                 bnneck: bool | None = None, lem: bool = False, **kwargs: Any) -> None:
        super().__init__(img_size, **kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes, self.lem_enabled = int(num_classes), bool(lem)
        self.bnneck = bool(lem) if bnneck is None else bool(bnneck)
        d = self.embed_dim
        self.neck = _bnneck(d) if self.bnneck else nn.Identity()
        self.head = _classifier(d, num_classes)
        self.lem = LemBranch(d) if lem else None
        if lem:
            self.conv_neck = _bnneck(2 * d) if self.bnneck else nn.Identity()
            self.conv_head = _classifier(2 * d, num_classes)
        self.embed_dim_out = 3 * d if lem else d

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        tokens = self.forward_tokens(x)
        features = [tokens[:, 0]]
        logits = [self.head(self.neck(features[0]))]
        if self.lem is not None:
            conv = self.lem(self.token_map(tokens))
            features.append(conv)
            logits.append(self.conv_head(self.conv_neck(conv)))
        return {"features": features, "logits": logits, "embedding": torch.cat(features, dim=1)}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The test feature ``(B, E)`` (not normalised)."""
        return self(x)["embedding"]


class AttributeViT(PersonViT):
    """Pedestrian-attribute ViT: mean of the patch tokens (class token ignored) -> ``Linear(D, num_classes)``.
    ``forward(x)`` returns the logits ``(B, num_classes)``."""

    def __init__(self, num_classes: int = 26, img_size: int | tuple[int, int] = (256, 192), **kwargs: Any) -> None:
        super().__init__(img_size, **kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.head = _classifier(self.embed_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D)``: the mean of the normalised patch tokens."""
        return self.forward_tokens(x)[:, 1:].mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


# ------------------------------------------------------------------------------------------------ loading
#: keys of a timm-layout encoder that are not part of the trunk and are left out on purpose (a classifier)
_HEAD_PREFIXES = ("head.", "fc_norm.")


def load_encoder_state(model: PersonViT, state: dict[str, torch.Tensor], *, file: str = "<state dict>"
                       ) -> LoadReport:
    """Load a timm-layout ViT encoder state dict (``cls_token``, ``pos_embed``, ``patch_embed.*``,
    ``blocks.*``, ``norm.*``; e.g. from :func:`humanvision.models.mae.hap_to_timm`) into ``model.backbone``,
    strictly: every trunk key must be present with the trunk's shape (a ``pos_embed`` of another grid must be
    resampled first). A classifier (``head.*``, ``fc_norm.*``) is dropped; any other extra key is an error. The
    task heads (``head``, necks, the lem branch) keep their fresh initialisation and are listed in the report's
    ``missing``. Errors are DataErrors naming ``file`` and the key."""
    own = model.backbone.state_dict()
    report = LoadReport(layout="encoder")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(_HEAD_PREFIXES):
            report.dropped.append(key)
            continue
        if key not in own:
            raise DataError("key not in the ViT trunk (expected cls_token, pos_embed, patch_embed.*, blocks.*, "
                            "norm.*)", file=file, field=key)
        if tuple(value.shape) != tuple(own[key].shape):
            hint = (f"; resample it from the checkpoint's grid to {model.grid_size} (hap_to_timm's new_grid)"
                    if key == "pos_embed" else "")
            raise DataError(f"shape {tuple(value.shape)} does not match the model's {tuple(own[key].shape)}{hint}",
                            file=file, field=key)
        out[key] = value
    missing = sorted(set(own) - set(out))
    if missing:
        raise DataError(f"{len(missing)} trunk keys missing from the encoder: {', '.join(missing[:5])}", file=file,
                        field=missing[0])
    model.backbone.load_state_dict(out, strict=True)
    report.missing = [k for k in model.state_dict() if not k.startswith("backbone.")]
    return report


def init_from_pretrained(model: PersonViT, path: str | Path, old_grid: tuple[int, int] = (16, 8)) -> LoadReport:
    """Initialise the trunk from a pre-training checkpoint (a ``.pth`` / ``.safetensors`` file or one of our run
    folders): the released HAP file (B.8), an MAE encoder or our pre-training export, converted by :func:`humanvision.models.mae.hap_to_timm` (decoder and mask token dropped,
    ``pos_embed`` resampled bicubically from ``old_grid`` (rows, cols), (16, 8) for HAP (pitfall 5), to the
    model's grid), then :func:`load_encoder_state`. Returns the report (``resized`` lists ``pos_embed`` when the
    grids differ)."""
    from humanvision.models.mae import hap_to_timm

    encoder = hap_to_timm(path, new_grid=tuple(model.grid_size), old_grid=tuple(old_grid))
    report = load_encoder_state(model, encoder, file=str(path))
    if tuple(old_grid) != tuple(model.grid_size):
        report.resized.append("pos_embed")
    return report


# ------------------------------------------------------------------------------------------- entry points
_TINY = {"embed_dim": 192, "depth": 12, "num_heads": 3}
_SMALL = {"embed_dim": 384, "depth": 12, "num_heads": 6}
_BASE = {"embed_dim": 768, "depth": 12, "num_heads": 12}


def _build(cls: type[PersonViT], variant: str, defaults: dict[str, Any], kwargs: dict[str, Any]) -> Any:
    """``cls(**defaults, **kwargs)`` named ``variant``; ``model_args`` records what rebuilds it."""
    model = cls(**{**defaults, **kwargs})
    model.model_name = model.default_cfg["model"] = variant
    model.model_args = {"num_classes": model.num_classes, "img_size": model.img_size, **kwargs}
    return model


@register_model
def reid_vit_tiny_patch16(num_classes: int = 751, img_size: tuple[int, int] = (256, 128), skeleton: Any = None,
                          **kwargs: Any) -> ReIDViT:
    """Re-id ViT-Ti/16 (192-d, 12 blocks, 3 heads): tests and CPU recipes. ``skeleton`` is unused (the
    registry's ``create_model`` passes one)."""
    return _build(ReIDViT, "reid_vit_tiny_patch16", {**_TINY, "num_classes": num_classes, "img_size": img_size},
                  kwargs)


@register_model
def reid_vit_small_patch16(num_classes: int = 751, img_size: tuple[int, int] = (256, 128), skeleton: Any = None,
                           **kwargs: Any) -> ReIDViT:
    """Re-id ViT-S/16 (384-d, 12 blocks, 6 heads)."""
    return _build(ReIDViT, "reid_vit_small_patch16", {**_SMALL, "num_classes": num_classes, "img_size": img_size},
                  kwargs)


@register_model
def reid_vit_base_patch16(num_classes: int = 751, img_size: tuple[int, int] = (256, 128), skeleton: Any = None,
                          **kwargs: Any) -> ReIDViT:
    """Re-id ViT-B/16 (768-d, 12 blocks, 12 heads), HAP's B.9.1 model (``lem=True``: ViT-lem)."""
    return _build(ReIDViT, "reid_vit_base_patch16", {**_BASE, "num_classes": num_classes, "img_size": img_size},
                  kwargs)


@register_model
def attr_vit_tiny_patch16(num_classes: int = 26, img_size: tuple[int, int] = (256, 192), skeleton: Any = None,
                          **kwargs: Any) -> AttributeViT:
    """Attribute ViT-Ti/16: tests and CPU recipes."""
    return _build(AttributeViT, "attr_vit_tiny_patch16", {**_TINY, "num_classes": num_classes,
                                                          "img_size": img_size}, kwargs)


@register_model
def attr_vit_base_patch16(num_classes: int = 26, img_size: tuple[int, int] = (256, 192), skeleton: Any = None,
                          **kwargs: Any) -> AttributeViT:
    """Attribute ViT-B/16 at 256x192, HAP's B.9.5 model (PA-100K: 26 attributes)."""
    return _build(AttributeViT, "attr_vit_base_patch16", {**_BASE, "num_classes": num_classes,
                                                          "img_size": img_size}, kwargs)
