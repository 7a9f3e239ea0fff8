"""Text-to-image person re-identification with a (HAP-initialised) ViT, readable top to bottom (pretraining.md
B.9.2: HAP's LGUR-based downstream task on CUHK-PEDES, ICFG-PEDES and RSTPReid).

Training samples are the (image, caption) pairs of the training split (CUHK-PEDES: two captions per image, so two
pairs), drawn uniformly by the engine. An image -> bicubic resize to ``model.img_size`` (384x128) -> horizontal
flip (``data.flip_prob``; ``data.pad`` / ``data.erase_prob`` add pad-and-crop and random erasing, off by default:
B.9.2 names no augmentation) -> ImageNet normalisation; a caption -> token ids (our
:class:`~humanvision.data.readers.text_reid.Vocabulary` built from the training captions and saved with the run
as ``vocab.json``, or the BERT checkpoint's own tokenizer with ``model.bert``), cut or padded to
``t2i.max_length``. Both go through :class:`~humanvision.models.text_reid.TextImageReID` (max-pooled patch tokens;
BiLSTM over word vectors, directions averaged, max-pooled; a shared bias-free 1x1 conv ``D -> D/2``; a shared
classifier), and

    ``loss = id_loss_weight * (CE(image_logits, id) + CE(text_logits, id))
            + ranking_loss_weight * ranking``

with :func:`semi_hard_ranking_loss` (margin 0.2, cosine similarity, semi-hard negatives, both directions).
Optimisation (B.9.2): Adam; the image backbone at ``t2i.backbone_lr`` (1e-4), the LSTM (with the word embeddings
trained from scratch), the projection and the classifier at ``train.lr`` (1e-3); 60 epochs, lr x0.1 at epochs 20,
40 and 50 (``train.schedule: step``); batch 64. A frozen BERT has no trainable parameters.

Evaluation (:func:`evaluate_t2i_model`): every caption of the evaluation split is a query, every image of it the
gallery; cosine similarity of the projected features; Rank-1/5/10 (``R1``/``R5``/``R10``: the percentage of
queries with an image of the same person among the top k), mAP and mINP over all images of that person
(:func:`text_to_image_metrics`, which is :func:`humanvision.metrics.reid.evaluate_reid` without camera or junk
filtering). ``metrics.json`` holds them and the CMC curve; ``ranking.json`` a few queries with their top-k images.

A recipe (:class:`T2IRecipe`) has the sections ``model``, ``t2i`` (its top-level mark, :func:`is_t2i_recipe`),
``data``, ``train`` and ``eval``; see ``configs/hap_t2i_cuhk_pedes.yaml`` and ``configs/t2i_vit_tiny_synthetic.yaml``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from humanvision.config import must_exist
from humanvision.data.readers.text_reid import TextReIDDataset, TextReIDItem, Vocabulary
from humanvision.engine import TrainConfig
from humanvision.engine.checkpoint import load_state_strict, read_weights
from humanvision.errors import ConfigError, DataError
from humanvision.methods.reid import (
    ReIDImages,
    check_person_model,
    init_trunk,
    person_transform,
)
from humanvision.models.text_reid import TextImageReID, require_transformers

__all__ = [
    "DataConfig", "EvalConfig", "ModelConfig", "PretrainedTokenizer", "T2ICaptions", "T2IConfig", "T2IRecipe",
    "T2ITrainPairs", "TextReIDMethod", "build_method", "evaluate_t2i_model", "evaluate_weights",
    "extract_features", "find_vocabulary", "is_t2i_recipe", "load_recipe", "prepare_synthetic",
    "prepare_tokenizer", "read_data", "run_training", "semi_hard_ranking_loss", "t2i_param_groups",
    "text_to_image_metrics",
]

VOCAB_FILE = "vocab.json"


# ----------------------------------------------------------------------------------------------- the recipe
@dataclass
class ModelConfig:
    """``name``: a text-to-image entry point (``t2i_vit_{tiny,small,base}_patch16``); ``img_size``: (height,
    width); ``init`` / ``init_grid``: the pre-training checkpoint of the image trunk and its grid ((16, 8) for
    HAP, pitfall 5); ``drop_path_rate``; ``bert``: a local Hugging Face BERT checkpoint directory for a frozen
    BERT text branch (needs ``pip install transformers``; null: word embeddings trained from scratch, of size
    ``word_dim``, default the ViT's width); ``args``: other keyword arguments of the entry point."""

    name: str = "t2i_vit_base_patch16"
    img_size: tuple[int, int] = (384, 128)
    init: Path | None = must_exist()
    init_grid: tuple[int, int] = (16, 8)
    drop_path_rate: float = 0.1
    bert: Path | None = must_exist()
    word_dim: int | None = None
    args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import humanvision.models.text_reid  # noqa: F401  (registers the entry points)
        from humanvision.models import check_model_args

        check_person_model(self.name, TextImageReID, "text-to-image re-id")
        check_model_args(self.name, self.args)
        for k in ("num_classes", "vocab_size"):
            if k in self.args:
                raise ConfigError(f"model.args.{k}: it comes from the training set")
        for k in ("img_size", "drop_path_rate", "bert", "word_dim"):
            if k in self.args:
                raise ConfigError(f"model.args.{k}: set it as model.{k}")
        if min(self.img_size) < 16 or min(self.init_grid) < 1:
            raise ConfigError(f"model.img_size / model.init_grid: got {self.img_size} / {self.init_grid}")
        if self.word_dim is not None and self.word_dim < 1:
            raise ConfigError(f"model.word_dim: must be >= 1 or null, got {self.word_dim}")
        if self.bert is not None:
            require_transformers("model.bert")
            if self.word_dim is not None:
                raise ConfigError("model.word_dim: the word vectors are BERT's with model.bert; set it to null")


@dataclass
class T2IConfig:
    """The ``t2i`` section. Text: ``max_length`` tokens per caption; the vocabulary of the from-scratch encoder is
    built from the training captions (words seen at least ``vocab_min_count`` times) unless ``vocab`` names a
    saved one. Loss: ``margin`` of the ranking loss, the weights of the ID and ranking terms and
    ``ranking_reduction`` (``sum`` over the anchors of both directions, or ``mean`` per direction; B.9.2 does not
    say). ``backbone_lr``: the image backbone's lr (everything else trains at ``train.lr``)."""

    max_length: int = 64
    vocab: Path | None = must_exist()
    vocab_min_count: int = 2
    margin: float = 0.2
    id_loss_weight: float = 1.0
    ranking_loss_weight: float = 1.0
    ranking_reduction: Literal["sum", "mean"] = "sum"
    backbone_lr: float = 1e-4

    def __post_init__(self) -> None:
        if self.max_length < 1:
            raise ConfigError(f"t2i.max_length: must be >= 1, got {self.max_length}")
        if self.vocab_min_count < 1:
            raise ConfigError(f"t2i.vocab_min_count: must be >= 1, got {self.vocab_min_count}")
        if self.margin < 0:
            raise ConfigError(f"t2i.margin: must be >= 0, got {self.margin}")
        if self.backbone_lr < 0:
            raise ConfigError(f"t2i.backbone_lr: must be >= 0, got {self.backbone_lr}")


@dataclass
class DataConfig:
    """``source``: ``cuhk_pedes`` / ``icfg_pedes`` / ``rstpreid`` (the released folders under ``root``), ``auto``
    (any of them, by annotation file) or ``synthetic`` (a CUHK-PEDES-layout set with template captions written to
    ``synthetic_dir`` on first use: ``synthetic_ids`` identities with ``synthetic_images_per_id`` (min, max)
    images of ``synthetic_image_size`` (height, width), split by id into (train, val, test) fractions
    ``synthetic_split``). ``exclude_train_ids``: CUHK-PEDES training ids left out (LGUR / HAP: 1369, 4116, 6116).
    ``eval_split``: ``test`` or ``val``. Augmentation: ``flip_prob``, ``pad`` (zero padding + random crop),
    ``erase_prob`` (random erasing)."""

    source: Literal["cuhk_pedes", "icfg_pedes", "rstpreid", "auto", "synthetic"] = "cuhk_pedes"
    root: Path | None = must_exist()
    exclude_train_ids: tuple[int, ...] = ()
    eval_split: Literal["val", "test"] = "test"
    synthetic_dir: Path = Path("data/synthetic_cuhk_pedes")
    synthetic_ids: int = 100
    synthetic_images_per_id: tuple[int, int] = (2, 4)
    synthetic_image_size: tuple[int, int] = (256, 128)
    synthetic_split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    synthetic_seed: int = 0
    flip_prob: float = 0.5
    pad: int = 0
    erase_prob: float = 0.0

    def __post_init__(self) -> None:
        for k in ("flip_prob", "erase_prob"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise ConfigError(f"data.{k}: must be in [0, 1], got {getattr(self, k)}")
        if self.pad < 0:
            raise ConfigError(f"data.pad: must be >= 0, got {self.pad}")
        if self.source != "synthetic" and self.root is None:
            raise ConfigError(f"data.root: required for data.source {self.source!r} (the folder with imgs/ and the "
                              "annotation JSON), or use data.source: synthetic")
        if self.exclude_train_ids and self.source not in ("cuhk_pedes", "synthetic"):
            raise ConfigError(f"data.exclude_train_ids: only for CUHK-PEDES (data.source cuhk_pedes or synthetic), "
                              f"not {self.source!r}")


@dataclass
class EvalConfig:
    """``batch_size`` of feature extraction (images and captions); ``max_rank`` of the CMC curve; ``num_vis``
    queries with their ``topk`` images in ``ranking.json``; ``precision`` of ``humanvision eval`` (training
    evaluates in the training run's precision)."""

    batch_size: int = 128
    max_rank: int = 50
    num_vis: int = 8
    topk: int = 10
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"


def _t2i_train() -> TrainConfig:
    return TrainConfig(epochs=60, batch_size=64, optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="step",
                       milestones=(20, 40, 50), gamma=0.1, eval_every=5, best_metric="R1", output_dir="runs/t2i")


@dataclass
class T2IRecipe:
    """A recipe; without a ``train`` section the published optimisation applies (a ``train`` section is taken
    as written, over the engine's plain defaults)."""

    name: str = "t2i"
    model: ModelConfig = field(default_factory=ModelConfig)
    t2i: T2IConfig = field(default_factory=T2IConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=_t2i_train)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.train.layer_decay is not None:
            raise ConfigError("train.layer_decay: not used by text-to-image re-id (the image backbone has its own "
                              "lr, t2i.backbone_lr); set it to null")
        if not self.train.lr > 0:
            raise ConfigError(f"train.lr: must be > 0 (t2i.backbone_lr is applied as a scale of it), got "
                              f"{self.train.lr}")
        if self.t2i.vocab is not None and self.model.bert is not None:
            raise ConfigError("t2i.vocab: a BERT text branch (model.bert) uses the checkpoint's own tokenizer; set "
                              "t2i.vocab to null")


def is_t2i_recipe(source: Any) -> bool:
    """True for a :class:`T2IRecipe`, a mapping or a YAML file with a top-level ``t2i`` section."""
    from humanvision.config import recipe_mapping

    return isinstance(source, T2IRecipe) or "t2i" in recipe_mapping(source)


def load_recipe(source: str | Path | dict, overrides: list[str] | tuple[str, ...] = (),
                unchecked: tuple[str, ...] = ()) -> T2IRecipe:
    """Load a text-to-image re-id recipe (``unchecked``: as :func:`humanvision.config.load_config`)."""
    from humanvision.config import load_config

    return load_config(source, T2IRecipe, overrides, unchecked=tuple(unchecked))


# ------------------------------------------------------------------------------------------------- the loss
def _semi_hard_direction(sim: torch.Tensor, negative: torch.Tensor, margin: float, reduction: str) -> torch.Tensor:
    """One direction of :func:`semi_hard_ranking_loss`: anchors are the rows, the positive the diagonal."""
    pos = sim.diagonal()
    easier = negative & (sim < pos[:, None])
    semi_hard = sim.masked_fill(~easier, float("-inf")).max(dim=1).values
    easiest = sim.masked_fill(~negative, float("inf")).min(dim=1).values
    chosen = torch.where(easier.any(dim=1), semi_hard, easiest)
    has = negative.any(dim=1)
    terms = F.relu(margin - pos[has] + chosen[has])
    if reduction == "sum" or terms.numel() == 0:
        return terms.sum()
    return terms.mean()


def semi_hard_ranking_loss(image_features: torch.Tensor, text_features: torch.Tensor, labels: torch.Tensor,
                           margin: float = 0.2, reduction: Literal["sum", "mean"] = "sum") -> torch.Tensor:
    """Bidirectional ranking loss with semi-hard negatives on cosine similarity (B.9.2).

    ``S[i, j] = cos(image_i, text_j)`` for a batch of ``B`` pairs (image ``i`` and caption ``i`` belong
    together). For an image anchor ``i`` the positive is its own caption, ``s_p = S[i, i]``, and the negatives are
    the captions ``j`` of **other identities** (``labels[j] != labels[i]``; other captions of the same person are
    neither). The **semi-hard** negative (FaceNet's rule) is the most similar negative that is still less similar
    than the positive, ``max {S[i, j] : S[i, j] < s_p}``; when every negative is at least as similar as the
    positive, the least similar negative. The anchor's term is ``relu(margin - s_p + s_n)``. Caption anchors do
    the same on ``S^T``. An anchor without negatives adds nothing. ``reduction``: ``sum`` over the anchors of both
    directions, or ``mean`` over each direction's anchors, summed over the two directions. Computed in fp32."""
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    fi = F.normalize(image_features.float(), dim=1)
    ft = F.normalize(text_features.float(), dim=1)
    sim = fi @ ft.T
    negative = labels[:, None] != labels[None, :]
    return (_semi_hard_direction(sim, negative, margin, reduction)
            + _semi_hard_direction(sim.T, negative.T, margin, reduction))


# ------------------------------------------------------------------------------------------------ the method
class TextReIDMethod(nn.Module):
    """Model + losses. ``forward(batch)`` (``image``, ``tokens``, ``label``: training ids 0..K-1) returns
    ``loss = id_loss_weight * (CE_image + CE_text) + ranking_loss_weight * ranking``, the terms and the batch's ID
    accuracy per modality; :meth:`embed_images` / :meth:`embed_texts` give the test features."""

    def __init__(self, model: TextImageReID, margin: float = 0.2, id_loss_weight: float = 1.0,
                 ranking_loss_weight: float = 1.0, ranking_reduction: Literal["sum", "mean"] = "sum") -> None:
        super().__init__()
        self.model = model
        self.margin, self.ranking_reduction = float(margin), ranking_reduction
        self.id_loss_weight, self.ranking_loss_weight = float(id_loss_weight), float(ranking_loss_weight)

    def no_weight_decay(self) -> set[str]:
        return {f"model.{n}" for n in self.model.no_weight_decay()}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labels = batch["label"].long()
        out = self.model(batch["image"], batch["tokens"])
        ce_image = F.cross_entropy(out["image_logits"].float(), labels)
        ce_text = F.cross_entropy(out["text_logits"].float(), labels)
        ranking = semi_hard_ranking_loss(out["image_features"], out["text_features"], labels, self.margin,
                                         self.ranking_reduction)
        id_loss = ce_image + ce_text
        return {"loss": self.id_loss_weight * id_loss + self.ranking_loss_weight * ranking, "id_loss": id_loss,
                "ranking_loss": ranking,
                "image_accuracy": (out["image_logits"].detach().argmax(1) == labels).float().mean(),
                "text_accuracy": (out["text_logits"].detach().argmax(1) == labels).float().mean()}

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised images -> ``(B, D/2)`` (not normalised)."""
        return self.model.image_features(images)

    @torch.no_grad()
    def embed_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` token ids -> ``(B, D/2)`` (not normalised)."""
        return self.model.text_features(tokens)


def t2i_param_groups(method: nn.Module, weight_decay: float, backbone_lr_scale: float) -> list[dict]:
    """The engine's :func:`~humanvision.engine.optim.param_groups` (weight-decay rule) with each group split into
    the image backbone (``model.image.*``, ``lr_scale = backbone_lr_scale``) and the rest (text encoder,
    projection, classifier; ``lr_scale = 1``). Frozen parameters (a BERT) are left out."""
    from humanvision.engine.optim import param_groups

    out = []
    for g in param_groups(method, weight_decay):
        for part, scale in (("image", float(backbone_lr_scale)), ("rest", 1.0)):
            keep = [i for i, n in enumerate(g["param_names"]) if n.startswith("model.image.") == (part == "image")]
            if keep:
                out.append({**g, "name": f"{part}_{g['name']}", "params": [g["params"][i] for i in keep],
                            "param_names": [g["param_names"][i] for i in keep], "lr_scale": scale})
    return out


def build_method(recipe: T2IRecipe, num_classes: int, vocab_size: int | None = None,
                 weights: str | Path | None = None) -> TextReIDMethod:
    """The recipe's model for ``num_classes`` training identities and a vocabulary of ``vocab_size`` words (not
    with ``model.bert``), its image trunk from ``model.init`` (unless ``weights``, a trained checkpoint, replace
    everything)."""
    from humanvision.models import model_entrypoint

    m = recipe.model
    if m.bert is not None:
        text: dict[str, Any] = {"bert": str(m.bert)}
    elif vocab_size is None:
        raise ConfigError("build_method: the from-scratch text encoder needs vocab_size (or set model.bert)")
    else:
        text = {"vocab_size": int(vocab_size), "word_dim": m.word_dim}
    try:
        model = model_entrypoint(m.name)(num_classes=num_classes, img_size=tuple(m.img_size),
                                         drop_path_rate=m.drop_path_rate, **text, **m.args)
    except ValueError as e:
        raise ConfigError(f"model ({m.name}): {e}") from None
    t = recipe.t2i
    method = TextReIDMethod(model, t.margin, t.id_loss_weight, t.ranking_loss_weight, t.ranking_reduction)
    if weights is not None:
        load_state_strict(method, weights)
    elif m.init is not None:
        init_trunk(model.image, m.init, m.init_grid)
    return method


# ---------------------------------------------------------------------------------------------------- text
class PretrainedTokenizer:
    """A Hugging Face checkpoint's own tokenizer (BERT's WordPiece) behind :class:`Vocabulary`'s contract:
    ``encode(text, max_len)`` -> ``(max_len,) int64`` ids (``[CLS] ... [SEP]``, cut to ``max_len``, then padding
    with ``pad``)."""

    def __init__(self, path: str | Path) -> None:
        transformers = require_transformers()
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as e:
            raise ConfigError(f"model.bert: cannot load the tokenizer of {path}: {e}") from None
        self.pad = int(self.tokenizer.pad_token_id or 0)

    def __len__(self) -> int:
        return len(self.tokenizer)

    def encode(self, text: str, max_len: int) -> np.ndarray:
        ids = self.tokenizer(text, max_length=max_len, truncation=True, padding="max_length")["input_ids"]
        return np.asarray(ids, dtype=np.int64)


Tokenizer = Vocabulary | PretrainedTokenizer


def prepare_tokenizer(recipe: T2IRecipe, data: TextReIDDataset, out_dir: str | Path | None = None,
                      resume: bool = False) -> Tokenizer:
    """The run's tokenizer: BERT's (``model.bert``); else the vocabulary ``t2i.vocab``; else, when resuming, the
    run's ``vocab.json``; else a vocabulary built from the training captions. With ``out_dir`` it is saved there
    as ``vocab.json`` (rank 0), where :func:`evaluate_weights` finds it."""
    if recipe.model.bert is not None:
        return PretrainedTokenizer(recipe.model.bert)
    saved = Path(out_dir) / VOCAB_FILE if out_dir is not None else None
    if recipe.t2i.vocab is not None:
        vocab = Vocabulary.load(recipe.t2i.vocab)
    elif resume and saved is not None and saved.is_file():
        return Vocabulary.load(saved)
    else:
        vocab = Vocabulary.build((c for it in data.train for c in it.captions), min_count=recipe.t2i.vocab_min_count)
    if saved is not None and int(os.environ.get("RANK", "0")) == 0:
        vocab.save(saved)
    return vocab


def find_vocabulary(weights: str | Path) -> Path:
    """The ``vocab.json`` of a run, from its weights: the run folder, a checkpoint folder in it or a weights file
    in one of those. A DataError naming ``weights`` when there is none (set ``t2i.vocab``)."""
    p = Path(weights)
    folders = [p] if p.is_dir() else []
    folders += [p.parent, p.parent.parent]
    for f in folders:
        if (f / VOCAB_FILE).is_file():
            return f / VOCAB_FILE
    raise DataError(f"no {VOCAB_FILE} beside these weights (looked in {', '.join(str(f) for f in folders)}); the "
                    "training run saves it in its output folder: set t2i.vocab to it", file=str(weights),
                    field="t2i.vocab")


# ---------------------------------------------------------------------------------------------------- data
class T2ITrainPairs(Dataset):
    """Every (image, caption) pair of the training split: items ``{image, tokens, label, index}``, the image
    augmented by :func:`~humanvision.methods.reid.person_transform` with an RNG drawn from numpy's global generator
    (which the engine seeds per sample), ``label`` the relabelled id (0..K-1)."""

    def __init__(self, data: TextReIDDataset, tokenizer: Tokenizer, size: tuple[int, int], max_length: int, *,
                 flip_prob: float = 0.5, pad: int = 0, erase_prob: float = 0.0) -> None:
        self.items = list(data.train)
        if not self.items:
            raise DataError("the training split is empty", file=str(data.name), field="train")
        image_labels, self.num_classes = data.train_labels()
        self.pairs = [(i, c) for i, it in enumerate(self.items) for c in range(len(it.captions))]
        self.labels = np.array([image_labels[i] for i, _ in self.pairs], dtype=np.int64)
        self.tokenizer, self.size, self.max_length = tokenizer, tuple(size), int(max_length)
        self.flip_prob, self.pad, self.erase_prob = flip_prob, pad, erase_prob

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from humanvision.data.io import read_image

        i, c = self.pairs[index]
        item = self.items[i]
        rng = np.random.default_rng(np.random.randint(0, 2**63 - 1, dtype=np.int64))
        image = person_transform(read_image(item.path), self.size, rng, flip_prob=self.flip_prob, pad=self.pad,
                                 erase_prob=self.erase_prob)
        tokens = torch.from_numpy(self.tokenizer.encode(item.captions[c], self.max_length))
        return {"image": image, "tokens": tokens, "label": torch.tensor(self.labels[index]), "index": index}


class T2ICaptions(Dataset):
    """Captions as token ids for evaluation: items ``{tokens, index}``."""

    def __init__(self, captions: Sequence[str], tokenizer: Tokenizer, max_length: int) -> None:
        self.captions, self.tokenizer, self.max_length = list(captions), tokenizer, int(max_length)

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"tokens": torch.from_numpy(self.tokenizer.encode(self.captions[index], self.max_length)),
                "index": index}


def prepare_synthetic(data: DataConfig, quiet: bool = False) -> Path:
    """For ``source: synthetic``: write the CUHK-PEDES-layout synthetic set into ``synthetic_dir`` once (a stamp
    file records its parameters, so a change regenerates it; under torchrun only rank 0 writes) and return it."""
    from humanvision.data.synthetic.cache import write_once
    from humanvision.data.synthetic.identities import generate_cuhk_pedes

    root = Path(data.synthetic_dir)
    h, w = data.synthetic_image_size
    params = {"ids": data.synthetic_ids, "images_per_id": list(data.synthetic_images_per_id),
              "image_size": [h, w], "split": list(data.synthetic_split), "seed": data.synthetic_seed}
    write_once(root, params, lambda progress: generate_cuhk_pedes(
        root, num_ids=data.synthetic_ids, images_per_id=tuple(data.synthetic_images_per_id),
        seed=data.synthetic_seed, split=tuple(data.synthetic_split), size=(w, h), progress=progress,
        workers=os.cpu_count() or 1), quiet=quiet, description=f"synthesising captioned people -> {root}")
    return root


def read_data(data: DataConfig, quiet: bool = False) -> TextReIDDataset:
    """The :class:`~humanvision.data.readers.text_reid.TextReIDDataset` of the recipe (synthetic: generated
    first)."""
    from humanvision.data.readers.text_reid import (
        read_cuhk_pedes,
        read_icfg_pedes,
        read_rstpreid,
        read_text_reid,
    )

    if data.source == "synthetic":
        return read_cuhk_pedes(prepare_synthetic(data, quiet), exclude_train_ids=data.exclude_train_ids)
    if data.root is None:
        raise ConfigError("data.root: required (or use data.source: synthetic)")
    if data.source == "cuhk_pedes":
        return read_cuhk_pedes(data.root, exclude_train_ids=data.exclude_train_ids)
    return {"icfg_pedes": read_icfg_pedes, "rstpreid": read_rstpreid, "auto": read_text_reid}[data.source](data.root)


def _split(data: TextReIDDataset, split: str) -> list[TextReIDItem]:
    items = list(getattr(data, split))
    if not items:
        raise DataError(f"the {split!r} split is empty", file=str(data.name), field="data.eval_split")
    return items


# ----------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def extract_features(method: TextReIDMethod, dataset: Dataset, kind: Literal["image", "text"],
                     batch_size: int = 128, *, device: str | torch.device | None = None, precision: str = "fp32",
                     num_workers: int = 0) -> torch.Tensor:
    """Projected features ``(N, D/2)`` float32 (CPU, not normalised) of every item of ``dataset`` in order:
    images (``kind="image"``, items with ``image``) or captions (``"text"``, items with ``tokens``)."""
    from humanvision.engine.precision import autocast

    device = torch.device(device) if device is not None else next(method.parameters()).device
    was_training = method.training
    method.eval().to(device)
    embed, key = (method.embed_images, "image") if kind == "image" else (method.embed_texts, "tokens")
    out = []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers):
        with autocast(device, precision):
            out.append(embed(batch[key].to(device)).float().cpu())
    method.train(was_training)
    if not out:
        raise DataError(f"no {kind}s to embed", field="dataset")
    return torch.cat(out)


def text_to_image_metrics(similarity: Any, query_ids: Any, gallery_ids: Any, max_rank: int = 50):
    """Text-to-image retrieval metrics of a ``(Q, G)`` similarity matrix (larger = more alike): for each query
    the gallery ranked by decreasing similarity (ties keep gallery order), Rank-k = the percentage of queries with
    an image of the same id among the top k, AP over all images of that id, mAP, mINP. This is
    :func:`humanvision.metrics.reid.evaluate_reid` on ``1 - similarity`` with nothing filtered (no cameras, no junk
    ids). Returns its :class:`~humanvision.metrics.reid.ReIDResult`."""
    from humanvision.metrics.reid import evaluate_reid

    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2:
        raise DataError(f"expected a (Q, G) similarity matrix, got shape {sim.shape}", field="similarity")
    return evaluate_reid(1.0 - sim, query_ids, gallery_ids, np.zeros(sim.shape[0], np.int64),
                         np.ones(sim.shape[1], np.int64), max_rank=max_rank, junk_ids=())


def evaluate_t2i_model(method: TextReIDMethod, items: Sequence[TextReIDItem], tokenizer: Tokenizer,
                       size: tuple[int, int], max_length: int, eval_cfg: EvalConfig | None = None,
                       out_dir: str | Path | None = None, *, device: str | torch.device | None = None,
                       precision: str | None = None, num_workers: int = 0) -> dict[str, Any]:
    """R1, R5, R10, mAP, mINP (percent) and counts of text-to-image retrieval on ``items`` (every caption a query,
    every image the gallery; see :func:`text_to_image_metrics`). With ``out_dir``: ``metrics.json`` (with the CMC
    curve) and ``ranking.json`` (``num_vis`` queries, evenly spread, with their ``topk`` images)."""
    cfg = eval_cfg or EvalConfig()
    prec = precision or cfg.precision
    gallery = list(items)
    queries = [(cap, it.pid, g) for g, it in enumerate(gallery) for cap in it.captions]
    img = extract_features(method, ReIDImages(gallery, size), "image", cfg.batch_size, device=device,
                           precision=prec, num_workers=num_workers)
    txt = extract_features(method, T2ICaptions([q[0] for q in queries], tokenizer, max_length), "text",
                           cfg.batch_size, device=device, precision=prec, num_workers=num_workers)
    sim = (F.normalize(txt, dim=1) @ F.normalize(img, dim=1).T).numpy()
    qid = np.array([q[1] for q in queries], dtype=np.int64)
    gid = np.array([it.pid for it in gallery], dtype=np.int64)
    res = text_to_image_metrics(sim, qid, gid, cfg.max_rank)
    metrics: dict[str, Any] = {"R1": res.rank1, "R5": res.rank5, "R10": res.rank10, "mAP": res.mAP,
                               "mINP": res.mINP, "num_queries": len(qid), "num_gallery": len(gid),
                               "num_ids": len(np.unique(gid)), "feature_dim": int(img.shape[1])}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps({**metrics, "cmc": [float(c) for c in res.cmc]}, indent=2))
        if cfg.num_vis > 0:
            picks = np.unique(np.linspace(0, len(queries) - 1, min(cfg.num_vis, len(queries))).round().astype(int))
            examples = []
            for i in picks:
                order = np.argsort(-sim[i], kind="stable")[:cfg.topk]
                examples.append({"caption": queries[i][0], "pid": int(qid[i]),
                                 "image": str(gallery[queries[i][2]].path),
                                 "matches": [{"path": str(gallery[j].path), "pid": int(gid[j]),
                                              "similarity": float(sim[i, j]), "correct": bool(gid[j] == qid[i])}
                                             for j in order]})
            (out / "ranking.json").write_text(json.dumps(examples, indent=2))
    return metrics


def _eval_tokenizer(recipe: T2IRecipe, weights: str | Path) -> tuple[Tokenizer, str | None]:
    """The tokenizer of trained ``weights`` and the vocabulary file it came from."""
    if recipe.model.bert is not None:
        return PretrainedTokenizer(recipe.model.bert), None
    path = recipe.t2i.vocab if recipe.t2i.vocab is not None else find_vocabulary(weights)
    return Vocabulary.load(path), str(path)


def evaluate_weights(recipe: T2IRecipe, weights: str | Path, out_dir: str | Path | None = None,
                     device: str | torch.device | None = None, progress: bool = False) -> dict[str, Any]:
    """``humanvision eval`` of a text-to-image recipe: trained ``weights`` (run folder, checkpoint folder or
    ``model.safetensors``) on ``data.eval_split``. The number of identities is read from the checkpoint's
    classifier, the vocabulary from ``t2i.vocab`` or the run's ``vocab.json`` (:func:`find_vocabulary`); a
    vocabulary whose size does not match the checkpoint's word embeddings is a DataError."""
    state, file = read_weights(weights)
    if "model.classifier.weight" not in state:
        raise DataError("not a text-to-image re-id checkpoint (no model.classifier.weight)", file=file,
                        field="model.classifier.weight")
    tokenizer, vocab_file = _eval_tokenizer(recipe, weights)
    vocab_size = None
    if isinstance(tokenizer, Vocabulary):
        vocab_size = len(tokenizer)
        emb = state.get("model.text.embed.weight")
        if emb is None:
            raise DataError("the checkpoint has no word embeddings (model.text.embed.weight): trained with a BERT "
                            "text branch? set model.bert", file=file, field="model.text.embed.weight")
        if emb.shape[0] != vocab_size:
            raise DataError(f"the vocabulary {vocab_file} has {vocab_size} tokens but the checkpoint's word "
                            f"embeddings have {emb.shape[0]}: not the vocabulary of this run", file=file,
                            field="model.text.embed.weight")
    method = build_method(recipe, int(state["model.classifier.weight"].shape[0]), vocab_size, weights=weights)
    data = read_data(recipe.data, quiet=not progress)
    device = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    metrics = evaluate_t2i_model(method, _split(data, recipe.data.eval_split), tokenizer,
                                 tuple(recipe.model.img_size), recipe.t2i.max_length, recipe.eval, out_dir,
                                 device=device, num_workers=recipe.train.num_workers)
    metrics["weights"] = str(weights)
    if out_dir is not None:
        path = Path(out_dir) / "metrics.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "weights": str(weights)}, indent=2))
    return metrics


# ------------------------------------------------------------------------------------------------- training
def run_training(recipe: T2IRecipe, resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Train with the engine on the (image, caption) pairs of the training split, evaluating (R1/R5/R10, mAP)
    after each ``train.eval_every`` epochs into ``<output_dir>/eval``; the vocabulary is saved as
    ``<output_dir>/vocab.json`` (and reused when resuming). Returns the fit summary."""
    from humanvision.config import save_config
    from humanvision.engine import Trainer, seed_everything

    seed_everything(recipe.train.seed)
    data = read_data(recipe.data, quiet=quiet)
    cfg, d, t = recipe.train, recipe.data, recipe.t2i
    size = tuple(recipe.model.img_size)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = prepare_tokenizer(recipe, data, out, resume=resume)
    train_set = T2ITrainPairs(data, tokenizer, size, t.max_length, flip_prob=d.flip_prob, pad=d.pad,
                              erase_prob=d.erase_prob)
    vocab_size = len(tokenizer) if isinstance(tokenizer, Vocabulary) else None
    method = build_method(recipe, train_set.num_classes, vocab_size)
    save_config(recipe, out / "config.yaml")
    eval_items = _split(data, d.eval_split)
    main_rank = int(os.environ.get("RANK", "0")) == 0

    def eval_fn(model: TextReIDMethod, epoch: int) -> dict[str, float]:
        m = evaluate_t2i_model(model, eval_items, tokenizer, size, t.max_length, recipe.eval,
                               out / "eval" if main_rank else None, precision=trainer.choice.precision,
                               num_workers=cfg.num_workers)
        return {k: v for k, v in m.items() if isinstance(v, float)}

    trainer = Trainer(cfg, method, train_set, eval_fn=eval_fn,
                      param_groups_fn=lambda m: t2i_param_groups(m, cfg.weight_decay, t.backbone_lr / cfg.lr))
    return trainer.fit(resume=resume or None)
