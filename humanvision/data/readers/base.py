"""What every reader shares: the map-style contract, and validation helpers that name file, record, field."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from humanvision.errors import DataError
from humanvision.skeletons import Skeleton, SkeletonError, get_skeleton

__all__ = ["Reader", "as_array", "load_json", "require", "resolve_skeleton"]


class Reader:
    """A lazy, picklable, map-style dataset of :class:`~humanvision.data.Sample` (or ``MultiViewSample``).

    Subclasses parse the annotation index in ``__init__`` (validating it), keep it as plain numpy arrays /
    lists, and build a sample in :meth:`_get`; images are returned as :class:`~humanvision.data.LazyImage` and
    are decoded only by ``Sample.load_image()``. Readers hold no open file handles across pickling, so they
    work in ``torch.utils.data.DataLoader`` workers (``num_workers > 0``); pass ``collate_fn=list`` (samples
    are records, not tensors) or a transform pipeline that produces tensors.
    """

    source: str
    skeleton: Skeleton | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def _get(self, index: int):
        raise NotImplementedError

    def __getitem__(self, index: int):
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{type(self).__name__}: index {index} out of range for {n} samples")
        return self._get(i)

    def __iter__(self) -> Iterator:
        for i in range(len(self)):
            yield self._get(i)

    def __repr__(self) -> str:
        sk = f", skeleton={self.skeleton.name!r}" if self.skeleton is not None else ""
        return f"{type(self).__name__}({self.source!r}, {len(self)} samples{sk})"


def load_json(path: str | Path) -> Any:
    """Parse a JSON file; a missing file or a syntax error is a :class:`DataError` naming file and line."""
    p = Path(path)
    if not p.is_file():
        raise DataError("file not found", file=str(p))
    try:
        with open(p, "rb") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})", file=str(p)) from None
    except UnicodeDecodeError as e:
        raise DataError(f"not valid UTF-8 JSON ({e.reason})", file=str(p)) from None


def resolve_skeleton(skeleton: str | Skeleton, file: str | None = None) -> Skeleton:
    """:func:`get_skeleton`, with an unknown name reported as a :class:`DataError` on field ``skeleton``."""
    try:
        return get_skeleton(skeleton)
    except SkeletonError as e:
        raise DataError(str(e), file=file, field="skeleton") from None


def require(record: Any, key: str, *, file: str, where: str) -> Any:
    """``record[key]`` of a JSON object, or a :class:`DataError` naming the missing field."""
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object, got {type(record).__name__}", file=file, record=where)
    if key not in record:
        raise DataError("missing field", file=file, record=where, field=key)
    return record[key]


def as_array(value: Any, shape: Sequence[int | None], *, file: str, where: str | None, field: str,
             dtype: Any = np.float32, finite: bool = True) -> np.ndarray:
    """A numeric array of ``shape`` (``None`` = any size), else a :class:`DataError` naming the field."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError("not a numeric (rectangular) array", file=file, record=where, field=field) from None
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise DataError(f"shape {a.shape}, expected {want}", file=file, record=where, field=field)
    if finite and not np.isfinite(a).all():
        raise DataError("non-finite values", file=file, record=where, field=field)
    return a.astype(dtype)
