"""Semantic segmentation / human parsing metrics from a global confusion matrix.

Protocol (HRNet-Semantic-Segmentation, used by HCMoCo's Human3.6M and NTURGBD-Parsing-4K parsing, pretraining.md
A.7.2-A.7.3): accumulate one ``C x C`` confusion matrix over the whole evaluation set (rows = ground truth,
columns = prediction), skipping pixels whose label is ``ignore_index``; then

* ``IoU_c = TP_c / (TP_c + FP_c + FN_c)``; ``mIoU`` = mean over classes, background included;
* pixel accuracy ``= sum TP / sum`` (counted pixels); class accuracy ``= TP_c / (TP_c + FN_c)``; mean accuracy
  = mean over classes.

A class absent from both ground truth and predictions has an undefined IoU (NaN) and is left out of the means
(``nanmean``); HRNet-Seg counts it as 0 instead, which only matters when a class never occurs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from humanvision.errors import DataError
from humanvision.metrics.pck import _Result

__all__ = ["ConfusionMatrix", "SegmentationResult", "confusion_matrix", "segmentation_metrics"]


def _to_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)  # torch tensors or array-likes


def confusion_matrix(pred: Any, target: Any, num_classes: int, ignore_index: int | None = 255) -> np.ndarray:
    """``(C, C)`` int64 confusion matrix of integer label maps of the same shape (rows: target, cols: pred).

    Pixels with ``target == ignore_index`` are skipped. Any other label outside ``0 .. C-1`` (in ``target``, or in
    ``pred`` at a counted pixel) is a :class:`DataError` naming the argument.
    """
    if num_classes < 1:
        raise DataError(f"must be >= 1, got {num_classes}", field="num_classes")
    p, t = _to_numpy(pred), _to_numpy(target)
    if p.shape != t.shape:
        raise DataError(f"shape {p.shape} does not match target shape {t.shape}", field="pred")
    for arr, name in ((p, "pred"), (t, "target")):
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_)):
            if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
                raise DataError("contains NaN or inf (expected integer labels)", field=name)
            if not np.all(np.equal(np.mod(arr, 1), 0)):
                raise DataError(f"expected integer class labels, got dtype {arr.dtype} with fractions", field=name)
    p, t = p.astype(np.int64).reshape(-1), t.astype(np.int64).reshape(-1)
    keep = t != ignore_index if ignore_index is not None else np.ones(t.shape, bool)
    p, t = p[keep], t[keep]
    for arr, name in ((t, "target"), (p, "pred")):
        bad = (arr < 0) | (arr >= num_classes)
        if bad.any():
            raise DataError(f"label {int(arr[bad][0])} outside 0..{num_classes - 1} "
                            f"({int(bad.sum())} pixels; ignore_index={ignore_index})", field=name)
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass
class SegmentationResult(_Result):
    """mIoU, per-class IoU, pixel accuracy and mean class accuracy (percent), from ``count`` labelled pixels."""

    miou: float
    iou: dict[str, float]
    pixel_accuracy: float
    mean_accuracy: float
    class_accuracy: dict[str, float]
    count: int
    num_classes: int


def segmentation_metrics(conf: Any, class_names: Sequence[str] | None = None) -> SegmentationResult:
    """Metrics of a ``(C, C)`` confusion matrix (rows ground truth, columns prediction); see the module doc."""
    cm = np.asarray(conf, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise DataError(f"expected a square (C, C) matrix, got shape {cm.shape}", field="conf")
    c = cm.shape[0]
    names = [str(i) for i in range(c)] if class_names is None else [str(n) for n in class_names]
    if len(names) != c:
        raise DataError(f"{len(names)} names for {c} classes", field="class_names")
    tp = np.diag(cm)
    gt_n, pred_n = cm.sum(axis=1), cm.sum(axis=0)
    union = gt_n + pred_n - tp
    iou = np.full(c, np.nan)
    np.divide(100.0 * tp, union, out=iou, where=union > 0)
    acc = np.full(c, np.nan)
    np.divide(100.0 * tp, gt_n, out=acc, where=gt_n > 0)
    total = cm.sum()
    with np.errstate(invalid="ignore"):
        miou = float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
        macc = float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan")
    return SegmentationResult(
        miou=miou, iou=dict(zip(names, map(float, iou))),
        pixel_accuracy=float(100.0 * tp.sum() / total) if total else float("nan"), mean_accuracy=macc,
        class_accuracy=dict(zip(names, map(float, acc))), count=int(total), num_classes=c,
    )


class ConfusionMatrix:
    """Accumulates a confusion matrix over batches; ``compute()`` gives a :class:`SegmentationResult`.

    >>> cm = ConfusionMatrix(3, ignore_index=255)
    >>> cm.update(np.array([[0, 1], [2, 2]]), np.array([[0, 1], [2, 255]]))
    >>> round(cm.compute().miou, 1)
    100.0
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255,
                 class_names: Sequence[str] | None = None) -> None:
        if num_classes < 1:
            raise DataError(f"must be >= 1, got {num_classes}", field="num_classes")
        self.num_classes, self.ignore_index = int(num_classes), ignore_index
        self.class_names = list(class_names) if class_names is not None else None
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred: Any, target: Any) -> None:
        """Add label maps of any (equal) shape, e.g. ``(B, H, W)``; ``pred`` may also be logits ``(B, C, H, W)``
        when it has one more dimension than ``target`` (argmax over dim 1)."""
        p, t = _to_numpy(pred), _to_numpy(target)
        if p.ndim == t.ndim + 1:
            if p.shape[1] != self.num_classes:
                raise DataError(f"logits have {p.shape[1]} channels for {self.num_classes} classes", field="pred")
            p = p.argmax(axis=1)
        self.matrix += confusion_matrix(p, t, self.num_classes, self.ignore_index)

    def reset(self) -> None:
        self.matrix[:] = 0

    def compute(self) -> SegmentationResult:
        return segmentation_metrics(self.matrix, self.class_names)
