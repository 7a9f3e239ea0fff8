"""Text-to-image person re-identification sets: CUHK-PEDES, ICFG-PEDES, RSTPReid (pretraining.md B.9.2), and a
word tokenizer + vocabulary for a text encoder trained from scratch.

=============  ================================================================================================
set            released layout (images under ``imgs/``; one JSON list with one object per image)
=============  ================================================================================================
CUHK-PEDES     ``reid_raw.json``: ``{"split": "train"|"val"|"test", "captions": [2 sentences], "file_path":
               "CUHK01/0363004.png", "processed_tokens": [[...], [...]], "id": 1}``; 40,206 images of 13,003
               ids: train 34,054 / 11,003 ids, val 3,078 / 1,000, test 3,074 / 1,000.
ICFG-PEDES     ``ICFG-PEDES.json``: the same fields, one caption per image, ``file_path`` like
               ``test/0027/0027_010_05_0303afternoon_1549_1.jpg``; train 34,674 / 3,102 ids, test 19,848 / 1,000
               (no val).
RSTPReid       ``data_captions.json``: ``{"id": 3903, "img_path": "3903_c14_0007.jpg", "captions": [2 sentences],
               "split": "train"|"val"|"test"}``; 20,505 images of 4,101 ids: train 18,505 / 3,701, val and test
               1,000 / 200 each.
=============  ================================================================================================

The split is the ``split`` field. Items keep the released ``id``; :meth:`TextReIDDataset.train_labels` maps the
training ids to ``0..K-1``. HAP's (LGUR's) CUHK-PEDES preprocessing also drops train ids 1369, 4116 and 6116
(:data:`LGUR_CUHK_EXCLUDED_IDS`, "only one image"), which gives its 11,000 classes: pass them as
``exclude_train_ids``. Image paths are resolved under ``imgs/`` (or the dataset folder itself, where a copy keeps
them there); ``check_images=True`` verifies every one with one listing per image folder.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from humanvision.data.readers.base import load_json
from humanvision.data.readers.reid import check_images_exist, find_dataset_dir, relabel
from humanvision.errors import DataError

__all__ = ["LGUR_CUHK_EXCLUDED_IDS", "TextReIDDataset", "TextReIDItem", "Vocabulary", "read_cuhk_pedes",
           "read_icfg_pedes", "read_rstpreid", "read_text_reid", "simple_tokenize"]

#: Train ids LGUR / HAP leave out of CUHK-PEDES training (11,003 -> 11,000 classes).
LGUR_CUHK_EXCLUDED_IDS = (1369, 4116, 6116)
_FILES = {"reid_raw.json": "cuhk_pedes", "ICFG-PEDES.json": "icfg_pedes", "data_captions.json": "rstpreid"}


@dataclass(frozen=True)
class TextReIDItem:
    """One image with its person id (as released), its captions and its split."""

    path: Path
    pid: int
    captions: tuple[str, ...]
    split: str


@dataclass
class TextReIDDataset:
    """Images with captions, split into ``train``, ``val`` (empty for ICFG-PEDES) and ``test``."""

    name: str
    train: list[TextReIDItem]
    val: list[TextReIDItem]
    test: list[TextReIDItem]

    @property
    def num_train_ids(self) -> int:
        """Number of distinct person ids in ``train``."""
        return len({it.pid for it in self.train})

    def train_labels(self) -> tuple[np.ndarray, int]:
        """``(labels, K)``: each training image's id relabelled to ``0..K-1`` in sorted id order (int64)."""
        return relabel(self.train)

    def __repr__(self) -> str:
        return (f"TextReIDDataset({self.name!r}, train {len(self.train)} images / {self.num_train_ids} ids, "
                f"val {len(self.val)}, test {len(self.test)})")


def _read(root: str | Path, json_name: str, path_key: str, splits: Sequence[str], check_images: bool,
          exclude_train_ids: Iterable[int] = ()) -> TextReIDDataset:
    r = find_dataset_dir(root, lambda p: (p / json_name).is_file(), f"{_FILES[json_name]} ({json_name} + imgs/)")
    jf = r / json_name
    f = str(jf)
    data = load_json(jf)
    if not isinstance(data, list):
        raise DataError(f"expected a JSON list of image records, got {type(data).__name__}", file=f)
    records = []
    for i, e in enumerate(data):
        where = f"entry {i}"
        if not isinstance(e, dict):
            raise DataError(f"expected a JSON object, got {type(e).__name__}", file=f, record=where)
        for k in ("id", path_key, "captions", "split"):
            if k not in e:
                raise DataError("missing field", file=f, record=where, field=k)
        pid, rel, caps, split = e["id"], e[path_key], e["captions"], e["split"]
        if not isinstance(pid, int) or isinstance(pid, bool) or pid < 0:
            raise DataError(f"expected a non-negative integer id, got {pid!r}", file=f, record=where, field="id")
        if not isinstance(rel, str) or not rel.strip() or Path(rel).is_absolute():
            raise DataError(f"expected a relative image path, got {rel!r}", file=f, record=where, field=path_key)
        if isinstance(caps, str):
            caps = [caps]
        if not isinstance(caps, list) or not caps or not all(isinstance(c, str) and c.strip() for c in caps):
            raise DataError("expected a non-empty list of non-empty caption strings", file=f, record=where,
                            field="captions")
        if not isinstance(split, str) or split.lower() not in splits:
            raise DataError(f"split {split!r} is not one of {list(splits)}", file=f, record=where, field="split")
        records.append((i, pid, rel.strip(), tuple(c.strip() for c in caps), split.lower()))
    if not records:
        raise DataError("no image records", file=f)
    image_dir = _image_dir(r, records[0][2], f, check_images)
    excluded = set(exclude_train_ids)
    out: dict[str, list[TextReIDItem]] = {"train": [], "val": [], "test": []}
    kept = []
    for i, pid, rel, caps, split in records:
        if split == "train" and pid in excluded:
            continue
        out[split].append(TextReIDItem(image_dir / rel, pid, caps, split))
        kept.append((i, rel))
    if check_images:
        check_images_exist([image_dir / rel for _, rel in kept], file=f,
                           records=(f"entry {i} ({rel})" for i, rel in kept))
    return TextReIDDataset(_FILES[json_name], out["train"], out["val"], out["test"])


def _image_dir(r: Path, first: str, f: str, check_images: bool) -> Path:
    """``imgs/`` or the dataset folder: the first that holds the first record's image."""
    candidates = [r / "imgs", r]
    for c in candidates:
        if (c / first).is_file():
            return c
    if check_images:
        raise DataError(f"image not found: {first} under {candidates[0]} or {candidates[1]}", file=f,
                        record=f"entry 0 ({first})")
    return candidates[0] if candidates[0].is_dir() else r


def read_cuhk_pedes(root: str | Path, *, exclude_train_ids: Iterable[int] = (),
                    check_images: bool = True) -> TextReIDDataset:
    """CUHK-PEDES: ``reid_raw.json`` + ``imgs/`` in ``root`` or its only sub-folder; train / val / test by the
    ``split`` field. ``exclude_train_ids=LGUR_CUHK_EXCLUDED_IDS`` reproduces HAP's 11,000 training classes."""
    return _read(root, "reid_raw.json", "file_path", ("train", "val", "test"), check_images, exclude_train_ids)


def read_icfg_pedes(root: str | Path, *, check_images: bool = True) -> TextReIDDataset:
    """ICFG-PEDES: ``ICFG-PEDES.json`` + ``imgs/`` (train / test; ``val`` is empty)."""
    return _read(root, "ICFG-PEDES.json", "file_path", ("train", "test"), check_images)


def read_rstpreid(root: str | Path, *, check_images: bool = True) -> TextReIDDataset:
    """RSTPReid: ``data_captions.json`` + ``imgs/`` (train / val / test by ``split``)."""
    return _read(root, "data_captions.json", "img_path", ("train", "val", "test"), check_images)


def read_text_reid(root: str | Path, **kwargs) -> TextReIDDataset:
    """CUHK-PEDES, ICFG-PEDES or RSTPReid, told apart by the annotation file in ``root`` (or a sub-folder)."""
    readers = {"reid_raw.json": read_cuhk_pedes, "ICFG-PEDES.json": read_icfg_pedes,
               "data_captions.json": read_rstpreid}
    r = find_dataset_dir(root, lambda p: any((p / n).is_file() for n in readers),
                         "text re-id dataset: expected imgs/ + reid_raw.json (CUHK-PEDES), ICFG-PEDES.json "
                         "(ICFG-PEDES) or data_captions.json (RSTPReid)")
    name = next(n for n in readers if (r / n).is_file())
    return readers[name](r, **kwargs)


# ------------------------------------------------------------------------------------------------------ text
_WORD = re.compile(r"[^\W_]+")


def simple_tokenize(text: str) -> list[str]:
    """Lower-case words: maximal runs of letters and digits (any script); punctuation, underscores and
    whitespace separate them. ``"A woman's T-shirt, 2 bags."`` -> ``['a', 'woman', 's', 't', 'shirt', '2',
    'bags']``."""
    return _WORD.findall(text.lower())


class Vocabulary:
    """Word <-> id map for captions: id ``0`` pads, ``1`` is any unknown word, words follow by decreasing
    count (ties alphabetical), so the same captions always give the same ids.

    >>> v = Vocabulary.build(["a red bag", "a bag"])
    >>> v.encode("A blue bag", max_len=5).tolist()
    [2, 1, 3, 0, 0]
    """

    pad = 0
    unk = 1
    PAD_TOKEN, UNK_TOKEN = "<pad>", "<unk>"
    FORMAT = "humanvision.vocabulary"

    def __init__(self, words: Sequence[str]) -> None:
        self.tokens = [self.PAD_TOKEN, self.UNK_TOKEN, *words]
        self.index = {w: i for i, w in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            dup = next(w for w, c in Counter(self.tokens).items() if c > 1)
            raise DataError(f"duplicate token {dup!r}", field="tokens")

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1, max_size: int | None = None) -> Vocabulary:
        """Words of ``captions`` (by :func:`simple_tokenize`) seen at least ``min_count`` times; at most
        ``max_size`` words (the most frequent) when given."""
        counts = Counter(w for c in captions for w in simple_tokenize(c))
        words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(words[:max_size] if max_size is not None else words)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def encode(self, text: str, max_len: int) -> np.ndarray:
        """``(max_len,) int64`` ids of the words of ``text``, truncated to ``max_len`` and padded with 0."""
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        ids = [self.index.get(w, self.unk) for w in simple_tokenize(text)][:max_len]
        out = np.zeros(max_len, dtype=np.int64)
        out[: len(ids)] = ids
        return out

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words of ``ids``, padding dropped."""
        return [self.tokens[int(i)] for i in ids if int(i) != self.pad]

    def save(self, path: str | Path) -> Path:
        """Write the vocabulary as JSON (``{"format", "tokens"}``, tokens in id order)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({"format": self.FORMAT, "tokens": self.tokens}, ensure_ascii=False),
                     encoding="utf-8")
        return p

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a vocabulary written by :meth:`save`; anything else is a :class:`DataError` naming the file."""
        f = str(path)
        d = load_json(path)
        if not isinstance(d, dict) or d.get("format") != cls.FORMAT:
            raise DataError(f"not a vocabulary file (expected format {cls.FORMAT!r})", file=f, field="format")
        toks = d.get("tokens")
        if not isinstance(toks, list) or not all(isinstance(t, str) for t in toks):
            raise DataError("expected a list of strings", file=f, field="tokens")
        if toks[:2] != [cls.PAD_TOKEN, cls.UNK_TOKEN]:
            raise DataError(f"the first tokens must be {cls.PAD_TOKEN!r}, {cls.UNK_TOKEN!r}", file=f,
                            field="tokens")
        try:
            return cls(toks[2:])
        except DataError as e:
            raise DataError(str(e), file=f, field="tokens") from None
