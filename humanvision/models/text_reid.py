"""Text-to-image person re-identification model: a person ViT for images, a BiLSTM text encoder, one shared
projection and one shared identity classifier (pretraining.md B.9.2, HAP's LGUR-based downstream task).

* **Image branch** (:attr:`TextImageReID.image`): the :class:`~humanvision.models.person_vit.PersonViT` trunk (timm
  ViT, patch 16, drop_path 0.1; ViT-B/16 at 384x128 = a 24x8 grid in the published recipe, initialised from the
  HAP checkpoint, whose 16x8 ``pos_embed`` is resampled), then the **maximum over the patch tokens** after the
  final LayerNorm (the class token is not used, pitfall 9): a ``D``-d vector.
* **Text branch** (:class:`TextEncoder`): word vectors, then :class:`BiLSTMPool`, a one-layer bidirectional
  ``nn.LSTM`` **without bias** and hidden size ``D``, whose two directions are **averaged** per token, then the
  **maximum over the caption's tokens** (padding excluded): a ``D``-d vector. The word vectors are either a
  **frozen BERT** read from a local Hugging Face checkpoint directory (``bert=``; the published branch,
  BERT-base-uncased; needs the optional ``transformers`` package) or, by default, an ``nn.Embedding`` over a
  vocabulary built from the training captions (:class:`~humanvision.data.readers.text_reid.Vocabulary`), trained
  from scratch with the rest (no BERT weights can be downloaded here).
* **Shared projection** :attr:`TextImageReID.proj`: a 1x1 convolution ``D -> D/2`` without bias (768 -> 384 for
  ViT-B) applied to both pooled vectors (as ``(B, D, 1, 1)`` maps): the ``D/2``-d features that are compared
  (cosine similarity) and classified.
* **Shared classifier** :attr:`TextImageReID.classifier`: ``Linear(D/2, num_ids)`` applied to both modalities
  (the ID loss sums the two cross-entropies; see :mod:`humanvision.methods.text_reid`).

Token ids are ``(B, L)`` int64, each caption's tokens first and padding (``pad_id``: 0 for our vocabulary, the
checkpoint's ``pad_token_id`` for BERT) after them. The BiLSTM runs on packed sequences, so the backward direction
starts at a caption's last real token, not in its padding.

Entry points (registry): ``t2i_vit_{tiny,small,base}_patch16`` (``num_classes``, ``img_size``, and one of
``vocab_size`` / ``bert``; ``word_dim``: the size of the from-scratch word vectors, default ``D``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from humanvision.errors import ConfigError
from humanvision.models._registry import register_model
from humanvision.models.person_vit import _BASE, _SMALL, _TINY, PersonViT, _build, _classifier

__all__ = ["BiLSTMPool", "FrozenBert", "TextEncoder", "TextImageReID", "require_transformers"]


def require_transformers(what: str = "model.bert") -> Any:
    """Import the optional ``transformers`` package, or raise a ConfigError naming ``what`` and how to install
    it."""
    try:
        import transformers
    except ImportError:
        raise ConfigError(f"{what}: a BERT text branch needs the Hugging Face 'transformers' package, which is not "
                          "installed: pip install transformers (or set model.bert: null to train the "
                          "word-embedding text encoder from scratch)") from None
    return transformers


class BiLSTMPool(nn.Module):
    """One-layer bidirectional LSTM without bias, directions averaged, max-pooled over the valid tokens.

    ``forward(x, lengths)``: ``x (B, L, input_dim)`` with ``lengths (B,)`` valid tokens each (padding after them)
    -> ``(B, hidden_dim)``. :meth:`forward_tokens` gives the per-token outputs ``(B, L, hidden_dim)`` (zero at
    padding)."""

    def __init__(self, input_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_dim, hidden_dim, num_layers=1, bias=False, batch_first=True, bidirectional=True)
        self.hidden_dim = int(hidden_dim)

    def forward_tokens(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(forward + backward) / 2`` at every token; the backward direction starts at each caption's last
        valid token (packed sequences)."""
        packed = pack_padded_sequence(x, lengths.detach().cpu().long(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        h = self.hidden_dim
        return 0.5 * (out[..., :h] + out[..., h:])

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        tokens = self.forward_tokens(x, lengths)
        valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]
        return tokens.masked_fill(~valid[..., None], float("-inf")).max(dim=1).values


class FrozenBert(nn.Module):
    """A frozen Hugging Face BERT read from a local checkpoint directory (no download): ``forward(tokens,
    mask)`` -> the last hidden states ``(B, L, hidden)`` under ``torch.no_grad``. It stays in eval mode (no
    dropout) whatever ``train()`` is called with; its parameters have ``requires_grad=False``."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        transformers = require_transformers()
        p = Path(path)
        if not p.is_dir():
            raise ConfigError(f"model.bert: not a directory: {p} (a local Hugging Face checkpoint folder with "
                              "config.json and the weights)")
        try:
            self.bert = transformers.AutoModel.from_pretrained(str(p), local_files_only=True)
        except (OSError, ValueError) as e:
            raise ConfigError(f"model.bert: cannot load a BERT model from {p}: {e}") from None
        self.bert.requires_grad_(False)
        self.bert.eval()
        self.out_dim = int(self.bert.config.hidden_size)
        pad = getattr(self.bert.config, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else 0

    def train(self, mode: bool = True) -> FrozenBert:
        super().train(mode)
        self.bert.eval()
        return self

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.bert(input_ids=tokens, attention_mask=mask.long()).last_hidden_state


class TextEncoder(nn.Module):
    """Token ids ``(B, L)`` -> ``(B, hidden_dim)``: word vectors (a frozen BERT from ``bert``, else
    ``nn.Embedding(vocab_size, word_dim, padding_idx=0)``) -> :class:`BiLSTMPool`. A caption's length is its
    number of non-``pad_id`` tokens (at least 1)."""

    def __init__(self, hidden_dim: int, *, vocab_size: int | None = None, word_dim: int | None = None,
                 bert: str | Path | None = None) -> None:
        super().__init__()
        if (vocab_size is None) == (bert is None):
            raise ValueError("give exactly one of vocab_size (word embeddings trained from scratch) and bert (a "
                             f"local BERT checkpoint directory); got vocab_size={vocab_size}, bert={bert}")
        self.bert: FrozenBert | None = None
        self.embed: nn.Embedding | None = None
        if bert is not None:
            self.bert = FrozenBert(bert)
            in_dim, self.pad_id = self.bert.out_dim, self.bert.pad_id
        else:
            if vocab_size < 2:
                raise ValueError(f"vocab_size must be >= 2 (padding and unknown), got {vocab_size}")
            in_dim = int(word_dim or hidden_dim)
            self.embed = nn.Embedding(int(vocab_size), in_dim, padding_idx=0)
            self.pad_id = 0
        self.lstm = BiLSTMPool(in_dim, hidden_dim)

    def lengths(self, tokens: torch.Tensor) -> torch.Tensor:
        """Number of non-padding tokens per caption, at least 1."""
        return (tokens != self.pad_id).sum(dim=1).clamp_min(1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.bert is not None:
            words = self.bert(tokens, tokens != self.pad_id)
        else:
            words = self.embed(tokens)
        return self.lstm(words, self.lengths(tokens))


class TextImageReID(nn.Module):
    """The two-branch model of the module docstring.

    ``forward(images, tokens)`` returns ``{"image_features", "text_features"}`` ``(B, D/2)`` (not normalised) and
    ``{"image_logits", "text_logits"}`` ``(B, num_classes)`` from the shared classifier.

    Args:
        num_classes: training identities (11,000 for CUHK-PEDES in LGUR's preprocessing).
        img_size: ``(height, width)``; (384, 128) in the published recipe.
        vocab_size / word_dim: the from-scratch text encoder's vocabulary and word-vector size (default ``D``).
        bert: a local Hugging Face BERT directory instead (frozen).
        patch_size, embed_dim, depth, num_heads, mlp_ratio, drop_path_rate: the ViT's.
    """

    model_name: str = ""

    def __init__(self, num_classes: int = 11000, img_size: int | tuple[int, int] = (384, 128), *,
                 vocab_size: int | None = None, word_dim: int | None = None, bert: str | Path | None = None,
                 patch_size: int = 16, embed_dim: int = 768, depth: int = 12, num_heads: int = 12,
                 mlp_ratio: float = 4.0, drop_path_rate: float = 0.1) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if embed_dim % 2:
            raise ValueError(f"embed_dim must be even (the projection halves it), got {embed_dim}")
        self.image = PersonViT(img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth,
                               num_heads=num_heads, mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate)
        self.text = TextEncoder(embed_dim, vocab_size=vocab_size, word_dim=word_dim, bert=bert)
        self.proj = nn.Conv2d(embed_dim, embed_dim // 2, kernel_size=1, bias=False)
        self.classifier = _classifier(embed_dim // 2, num_classes)
        self.num_classes, self.embed_dim, self.feature_dim = int(num_classes), embed_dim, embed_dim // 2
        self.img_size, self.grid_size = self.image.img_size, self.image.grid_size
        self.model_args: dict[str, Any] = {}
        self.default_cfg: dict[str, Any] = dict(self.image.default_cfg)

    @property
    def vocab_size(self) -> int | None:
        """The from-scratch encoder's vocabulary size (None with BERT)."""
        return None if self.text.embed is None else int(self.text.embed.num_embeddings)

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """The shared 1x1 convolution on ``(B, D)`` -> ``(B, D/2)``."""
        return self.proj(pooled[:, :, None, None]).flatten(1)

    def pool_image(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, D)``: the maximum over the patch tokens after the final LayerNorm."""
        return self.image.forward_tokens(images)[:, 1:].max(dim=1).values

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised images -> ``(B, D/2)``."""
        return self.project(self.pool_image(images))

    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` token ids -> ``(B, D/2)``."""
        return self.project(self.text(tokens))

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        fi, ft = self.image_features(images), self.text_features(tokens)
        return {"image_features": fi, "text_features": ft, "image_logits": self.classifier(fi),
                "text_logits": self.classifier(ft)}

    def no_weight_decay(self) -> set[str]:
        return {f"image.{n}" for n in self.image.no_weight_decay()}


# ------------------------------------------------------------------------------------------- entry points
def _t2i(variant: str, dims: dict[str, Any], num_classes: int, img_size: tuple[int, int],
         kwargs: dict[str, Any]) -> TextImageReID:
    return _build(TextImageReID, variant, {**dims, "num_classes": num_classes, "img_size": img_size}, kwargs)


@register_model
def t2i_vit_tiny_patch16(num_classes: int = 11000, img_size: tuple[int, int] = (384, 128), skeleton: Any = None,
                         **kwargs: Any) -> TextImageReID:
    """Text-to-image re-id on a ViT-Ti/16 (192-d: features 96-d): tests and CPU recipes. ``skeleton`` is unused
    (the registry's ``create_model`` passes one)."""
    return _t2i("t2i_vit_tiny_patch16", _TINY, num_classes, img_size, kwargs)


@register_model
def t2i_vit_small_patch16(num_classes: int = 11000, img_size: tuple[int, int] = (384, 128), skeleton: Any = None,
                          **kwargs: Any) -> TextImageReID:
    """Text-to-image re-id on a ViT-S/16 (384-d: features 192-d)."""
    return _t2i("t2i_vit_small_patch16", _SMALL, num_classes, img_size, kwargs)


@register_model
def t2i_vit_base_patch16(num_classes: int = 11000, img_size: tuple[int, int] = (384, 128), skeleton: Any = None,
                         **kwargs: Any) -> TextImageReID:
    """Text-to-image re-id on a ViT-B/16 (768-d, BiLSTM 768, projection 768 -> 384), HAP's B.9.2 model."""
    return _t2i("t2i_vit_base_patch16", _BASE, num_classes, img_size, kwargs)
