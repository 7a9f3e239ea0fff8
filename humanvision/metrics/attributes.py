"""Pedestrian attribute recognition metrics (PA-100K / RAP / PETA), the Rethinking-of-PAR protocol
(``get_pedestrian_metrics``; pretraining.md B.9.5).

With binary ground truth ``y (N, A)`` and predictions ``p = score > threshold``:

* label-based: per attribute, positive recall ``TP / P`` and negative recall ``TN / N``;
  ``mA = mean_a (pos_recall_a + neg_recall_a) / 2``;
* instance-based: per sample ``acc = |y ∩ p| / |y ∪ p|``, ``prec = |y ∩ p| / |p|``, ``rec = |y ∩ p| / |y|``, each
  averaged over samples; ``F1 = 2 prec rec / (prec + rec)`` of the *averaged* precision and recall.

The denominators carry ``eps = 1e-20`` as in the reference, so an empty set contributes 0 (e.g. an attribute
without positives has positive recall 0, a sample with no predicted positive has precision 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from humanvision.errors import DataError
from humanvision.metrics.pck import _as_array, _Result

__all__ = ["AttributeResult", "attribute_metrics"]

_EPS = 1e-20


@dataclass
class AttributeResult(_Result):
    """mA, instance accuracy / precision / recall / F1 (percent) and per-attribute values over ``count`` samples."""

    mA: float
    accuracy: float
    precision: float
    recall: float
    f1: float
    label_mA: dict[str, float]
    label_pos_recall: dict[str, float]
    label_neg_recall: dict[str, float]
    count: int
    num_attributes: int


def attribute_metrics(scores: Any, labels: Any, threshold: float = 0.5,
                      attribute_names: Sequence[str] | None = None) -> AttributeResult:
    """Attribute metrics (see the module doc).

    Args:
        scores: ``(N, A)`` probabilities (or logits with ``threshold=0``), or 0/1 predictions.
        labels: ``(N, A)`` ground truth in {0, 1}.
        threshold: positive iff ``score > threshold``.
    """
    s = _as_array(scores.detach().cpu().numpy() if hasattr(scores, "detach") else scores, "scores", ndim=2)
    y = _as_array(labels.detach().cpu().numpy() if hasattr(labels, "detach") else labels, "labels", ndim=2)
    if s.shape != y.shape:
        raise DataError(f"shape {s.shape} does not match labels shape {y.shape}", field="scores")
    if np.isnan(s).any():
        raise DataError(f"contains NaN (first at sample {int(np.argmax(np.isnan(s).any(1)))})", field="scores")
    if not np.isin(y, (0, 1)).all():
        bad = y[~np.isin(y, (0, 1))][0]
        raise DataError(f"expected 0/1 labels, found {bad}", field="labels")
    n, a = y.shape
    if n == 0 or a == 0:
        raise DataError(f"empty input of shape {y.shape}", field="labels")
    names = [str(i) for i in range(a)] if attribute_names is None else [str(x) for x in attribute_names]
    if len(names) != a:
        raise DataError(f"{len(names)} names for {a} attributes", field="attribute_names")
    pred, gt = s > threshold, y == 1

    pos_recall = (gt & pred).sum(0) / (gt.sum(0) + _EPS)
    neg_recall = (~gt & ~pred).sum(0) / ((~gt).sum(0) + _EPS)
    label_ma = (pos_recall + neg_recall) / 2

    inter = (gt & pred).sum(1)
    acc = (inter / ((gt | pred).sum(1) + _EPS)).mean()
    prec = (inter / (pred.sum(1) + _EPS)).mean()
    rec = (inter / (gt.sum(1) + _EPS)).mean()
    f1 = 2 * prec * rec / (prec + rec + _EPS)

    def per(v: np.ndarray) -> dict[str, float]:
        return {k: float(100.0 * x) for k, x in zip(names, v)}

    return AttributeResult(mA=float(100.0 * label_ma.mean()), accuracy=float(100.0 * acc),
                           precision=float(100.0 * prec), recall=float(100.0 * rec), f1=float(100.0 * f1),
                           label_mA=per(label_ma), label_pos_recall=per(pos_recall),
                           label_neg_recall=per(neg_recall), count=n, num_attributes=a)
