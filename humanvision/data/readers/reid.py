"""Person re-identification sets: Market-1501 and MSMT17 in their released layouts (pretraining.md B.9.1).

**Market-1501** (``Market-1501-v15.09.15/``)::

    bounding_box_train/   12,936 images of 751 ids        {pid:04d}_c{cam}s{seq}_{frame:06d}_{det:02d}.jpg
    query/                 3,368 images of 750 ids
    bounding_box_test/    19,732 images: 750 ids, distractors (pid 0000) and junk (pid -1: -1_c1s1_...)

The id and camera are parsed from the name (``{pid}_c{cam}...``, camera 1-based on disk, **0-based** here).
Junk images (pid ``-1``) are dropped from train and query and kept in the gallery with pid ``-1``: the metric
(:func:`humanvision.metrics.reid.evaluate_reid`, ``junk_ids=(-1,)``) removes them from every ranking, which is
the Market protocol; distractors (pid ``0``) stay in the gallery as negatives. Only ``*.jpg`` files are read (the
release also holds ``Thumbs.db``). The same reader takes DukeMTMC-reID (``0001_c2_f0046182.jpg``) and MSMT17
converted to this layout (HAP's own ``msmt17.py`` reads MSMT17 that way).

**MSMT17** (``MSMT17_V1/`` or ``MSMT17_V2/``)::

    train/ test/    (V2: mask_train_v2/ mask_test_v2/)
                    {pid:04d}/{pid:04d}_{n:03d}_{cam:02d}_{date}{time}_{frame}_{k}.jpg
    list_train.txt  list_val.txt        "relpath pid" lines, relpath under train/
    list_query.txt  list_gallery.txt    "relpath pid" lines, relpath under test/

The pid comes from the list file, the camera from the third ``_`` field of the file name (1..15, 0-based here).
``list_val.txt`` holds images of the training ids; the common protocol (30,248 + 2,373 = 32,621 training images of
1,041 ids) merges it into train (``merge_val=True``).

Items are plain ``(path, pid, camid)`` records; images are not opened. :meth:`ReIDDataset.train_labels` maps the
training pids to ``0..K-1`` (sorted pid order) for the classifier.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from humanvision.errors import DataError

__all__ = ["ReIDDataset", "ReIDItem", "read_market1501", "read_msmt17", "read_reid"]

_MARKET_DIRS = ("bounding_box_train", "query", "bounding_box_test")
_MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")
_MSMT_LISTS = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")
_MSMT_DIRS = {"train": ("train", "mask_train_v2"), "test": ("test", "mask_test_v2")}


@dataclass(frozen=True)
class ReIDItem:
    """One image: its path, person id (``-1`` junk, ``0`` distractor in Market) and 0-based camera."""

    path: Path
    pid: int
    camid: int


def relabel(items) -> tuple[np.ndarray, int]:
    """``(labels, K)``: the ``pid`` of each item relabelled to ``0..K-1`` in sorted pid order (int64)."""
    pids = np.fromiter((it.pid for it in items), dtype=np.int64, count=len(items))
    uniq, labels = np.unique(pids, return_inverse=True)
    return labels.astype(np.int64), len(uniq)


@dataclass
class ReIDDataset:
    """A re-id benchmark: training items and the query / gallery of the test protocol."""

    name: str
    train: list[ReIDItem]
    query: list[ReIDItem]
    gallery: list[ReIDItem]

    @property
    def num_train_ids(self) -> int:
        """Number of distinct person ids in ``train``."""
        return len({it.pid for it in self.train})

    def train_labels(self) -> tuple[np.ndarray, int]:
        """``(labels, K)``: each training item's pid relabelled to ``0..K-1`` in sorted pid order (int64)."""
        return relabel(self.train)

    def __repr__(self) -> str:
        return (f"ReIDDataset({self.name!r}, train {len(self.train)} images / {self.num_train_ids} ids, "
                f"query {len(self.query)}, gallery {len(self.gallery)})")


# ------------------------------------------------------------------------------------------------ shared helpers
def find_dataset_dir(root: str | Path, is_layout, what: str) -> Path:
    """``root`` if ``is_layout(root)``, else its only sub-folder that is (a release unpacked one level down).

    Raises a :class:`DataError` naming ``root`` and ``what`` was expected when there is none (or several)."""
    r = Path(root)
    if not r.is_dir():
        raise DataError("dataset folder not found" if not r.exists() else "not a folder", file=str(r))
    if is_layout(r):
        return r
    hits = sorted(c for c in r.iterdir() if c.is_dir() and is_layout(c))
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise DataError(f"several datasets found ({', '.join(h.name for h in hits)}); pass one of them",
                        file=str(r))
    raise DataError(f"not a {what} folder (nor is any sub-folder)", file=str(r))


def check_images_exist(paths: Sequence[Path], *, file: str, records: Iterable[str] | None = None) -> None:
    """Raise a :class:`DataError` for the first of ``paths`` that is not a file, naming the annotation ``file``
    and the record (``records[i]``, default ``entry i``). Each distinct folder is listed once (one ``scandir``
    per folder, not one ``stat`` per image): 100k images in a few folders take well under a second."""
    listing: dict[str, set[str]] = {}
    recs = list(records) if records is not None else None
    for i, p in enumerate(paths):
        d, n = os.path.split(str(p))
        names = listing.get(d)
        if names is None:
            try:
                names = {e.name for e in os.scandir(d or ".") if not e.is_dir()}
            except (FileNotFoundError, NotADirectoryError):
                names = set()
            listing[d] = names
        if n not in names:
            raise DataError(f"image not found: {p}", file=file, record=recs[i] if recs else f"entry {i}")


# ------------------------------------------------------------------------------------------------- Market-1501
def _market_dir(d: Path, *, keep_junk: bool) -> list[ReIDItem]:
    if not d.is_dir():
        raise DataError("missing folder of the Market-1501 layout", file=str(d))
    items = []
    names = sorted(e.name for e in os.scandir(d) if e.is_file() and e.name.lower().endswith(".jpg"))
    if not names:
        raise DataError("no .jpg images in the folder", file=str(d))
    for n in names:
        m = _MARKET_NAME.match(n)
        if m is None:
            raise DataError("malformed image name: expected {pid}_c{camera}... (e.g. 0002_c1s1_000451_03.jpg)",
                            file=str(d), record=n)
        pid, cam = int(m.group(1)), int(m.group(2))
        if pid < -1:
            raise DataError(f"person id {pid} < -1", file=str(d), record=n, field="pid")
        if cam < 1:
            raise DataError(f"camera c{cam}: cameras are numbered from 1", file=str(d), record=n, field="camera")
        if pid == -1 and not keep_junk:
            continue
        items.append(ReIDItem(d / n, pid, cam - 1))
    return items


def read_market1501(root: str | Path, *, name: str | None = None) -> ReIDDataset:
    """Market-1501 (or DukeMTMC-reID, or MSMT17 converted to this layout) from ``root`` or its only sub-folder
    holding ``bounding_box_train/ query/ bounding_box_test/``.

    ``name`` defaults to ``"msmt17"`` / ``"dukemtmcreid"`` when the folder name says so, else ``"market1501"``.
    Junk (pid -1) is dropped from train and query and kept (pid -1) in the gallery; distractors (pid 0) are kept.
    """
    r = find_dataset_dir(root, lambda p: all((p / d).is_dir() for d in _MARKET_DIRS),
                         "Market-1501 (bounding_box_train/, query/, bounding_box_test/)")
    if name is None:
        low = r.name.lower()
        name = "msmt17" if "msmt" in low else "dukemtmcreid" if "duke" in low else "market1501"
    train = _market_dir(r / "bounding_box_train", keep_junk=False)
    query = _market_dir(r / "query", keep_junk=False)
    gallery = _market_dir(r / "bounding_box_test", keep_junk=True)
    return ReIDDataset(name, train, query, gallery)


# ------------------------------------------------------------------------------------------------------ MSMT17
def _msmt_list(list_file: Path, image_dir: Path, check_images: bool) -> list[ReIDItem]:
    f = str(list_file)
    if not list_file.is_file():
        raise DataError("missing list file of the MSMT17 layout", file=f)
    items = []
    with open(list_file, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split()
            where = f"line {lineno}"
            if len(parts) != 2:
                raise DataError(f"expected 'relative/path.jpg pid', got {line!r}", file=f, record=where)
            rel, pid_text = parts
            try:
                pid = int(pid_text)
            except ValueError:
                raise DataError(f"person id {pid_text!r} is not an integer", file=f, record=where,
                                field="pid") from None
            if pid < 0:
                raise DataError(f"negative person id {pid}", file=f, record=where, field="pid")
            fields = Path(rel).name.split("_")
            if len(fields) < 3 or not fields[2].isdigit():
                raise DataError(f"malformed image name {rel!r}: expected {{pid}}_{{n}}_{{camera}}_..., e.g. "
                                "0000/0000_000_01_0303morning_0015_0.jpg", file=f, record=where)
            cam = int(fields[2])
            if cam < 1:
                raise DataError(f"camera {cam} in {rel!r}: cameras are numbered from 1", file=f, record=where,
                                field="camera")
            items.append(ReIDItem(image_dir / rel, pid, cam - 1))
    if check_images:
        check_images_exist([it.path for it in items], file=f,
                           records=(f"{it.path.parent.name}/{it.path.name}" for it in items))
    return items


def _msmt_image_dir(r: Path, key: str) -> Path:
    for d in _MSMT_DIRS[key]:
        if (r / d).is_dir():
            return r / d
    raise DataError(f"missing image folder: expected {' or '.join(d + '/' for d in _MSMT_DIRS[key])}",
                    file=str(r))


def read_msmt17(root: str | Path, *, merge_val: bool = True, check_images: bool = True) -> ReIDDataset:
    """MSMT17 V1 or V2 from ``root`` or its only sub-folder holding the four ``list_*.txt`` files.

    Args:
        merge_val: append ``list_val.txt`` (training ids) to train, the usual 32,621-image protocol.
        check_images: verify that every listed image exists (one folder listing per person folder; about a
            second for the 126k images). Off, a missing image surfaces only when it is loaded.
    """
    r = find_dataset_dir(root, lambda p: (p / "list_train.txt").is_file() and (p / "list_query.txt").is_file(),
                         "MSMT17 (list_train.txt, list_val.txt, list_query.txt, list_gallery.txt + train/ test/ "
                         "or mask_train_v2/ mask_test_v2/)")
    train_dir, test_dir = _msmt_image_dir(r, "train"), _msmt_image_dir(r, "test")
    train = _msmt_list(r / "list_train.txt", train_dir, check_images)
    if merge_val:
        train += _msmt_list(r / "list_val.txt", train_dir, check_images)
    query = _msmt_list(r / "list_query.txt", test_dir, check_images)
    gallery = _msmt_list(r / "list_gallery.txt", test_dir, check_images)
    return ReIDDataset("msmt17", train, query, gallery)


def read_reid(root: str | Path, **kwargs) -> ReIDDataset:
    """Market-1501-style or MSMT17 layout, detected from ``root`` (or its only sub-folder); ``kwargs`` go to
    the reader. A folder of neither layout is a :class:`DataError` saying what was expected."""
    def is_market(p: Path) -> bool:
        return all((p / d).is_dir() for d in _MARKET_DIRS)

    def is_msmt(p: Path) -> bool:
        return (p / "list_train.txt").is_file() and (p / "list_query.txt").is_file()

    r = find_dataset_dir(root, lambda p: is_market(p) or is_msmt(p),
                         "re-id dataset: expected Market-1501 layout (bounding_box_train/, query/, "
                         "bounding_box_test/) or MSMT17 (list_train.txt, list_val.txt, list_query.txt, "
                         "list_gallery.txt with train/ and test/, or mask_train_v2/ and mask_test_v2/)")
    return read_msmt17(r, **kwargs) if is_msmt(r) else read_market1501(r, **kwargs)
