"""Person re-identification: CMC and mAP with the Market-1501 / MSMT17 protocol (pretraining.md B.9.1).

For each query the gallery is ranked by ascending distance (stable sort: ties keep gallery order). Then

* gallery entries with the **same id and the same camera** as the query are removed (same-view shots);
* gallery entries with a junk id (``-1`` in Market-1501) are removed; id ``0`` distractors stay as negatives;
* a query with no remaining true match is **skipped** (counted in ``num_skipped``);
* CMC@k = fraction of valid queries whose first true match is within the top k;
* AP = mean over the true matches of precision at their rank; mAP = mean AP over valid queries;
* mINP (Ye et al., AGW) = mean over valid queries of ``num_matches / rank of the last match``.

Everything is vectorised over blocks of queries (``block`` rows at a time) so memory stays ``O(block * G)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from humanvision.errors import DataError
from humanvision.metrics.pck import _as_array, _Result

__all__ = ["ReIDResult", "evaluate_reid", "reid_distance"]


def reid_distance(query: Any, gallery: Any, metric: Literal["euclidean", "cosine"] = "euclidean",
                  normalize: bool = True) -> np.ndarray:
    """Query-gallery distance matrix ``(Q, G)`` of features ``(Q, D)``, ``(G, D)``.

    ``normalize`` L2-normalises the features first (HAP/MALE evaluate Euclidean distance on normalised features);
    ``cosine`` returns ``1 - cos``.
    """
    q = _as_array(query.detach().cpu().numpy() if hasattr(query, "detach") else query, "query", ndim=2)
    g = _as_array(gallery.detach().cpu().numpy() if hasattr(gallery, "detach") else gallery, "gallery", ndim=2)
    if q.shape[1] != g.shape[1]:
        raise DataError(f"feature dimension {q.shape[1]} does not match gallery's {g.shape[1]}", field="query")
    for arr, name in ((q, "query"), (g, "gallery")):
        if not np.all(np.isfinite(arr)):
            raise DataError(f"contains NaN or inf (first row {int(np.argmax(~np.isfinite(arr).all(1)))})", field=name)
    if normalize or metric == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    if metric == "cosine":
        return 1.0 - q @ g.T
    if metric != "euclidean":
        raise DataError(f"unknown metric {metric!r}; use 'euclidean' or 'cosine'", field="metric")
    d2 = (q * q).sum(1)[:, None] + (g * g).sum(1)[None] - 2.0 * q @ g.T
    return np.sqrt(np.maximum(d2, 0.0))


@dataclass
class ReIDResult(_Result):
    """CMC (percent, ``cmc[k-1]`` = rank-k), mAP and mINP (percent) over ``num_valid_queries`` queries."""

    mAP: float
    mINP: float
    rank1: float
    rank5: float
    rank10: float
    cmc: np.ndarray
    num_queries: int
    num_valid_queries: int
    num_skipped: int


def _ids(x: Any, n: int, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.shape != (n,):
        raise DataError(f"expected shape ({n},), got {a.shape}", field=name)
    if not np.issubdtype(a.dtype, np.integer):
        try:
            fa = a.astype(np.float64)
        except (TypeError, ValueError):
            raise DataError("expected integer ids", field=name) from None
        if not np.all(np.isfinite(fa)) or not np.all(fa == np.round(fa)):
            raise DataError("expected integer ids (found NaN or fractions)", field=name)
        a = fa
    return a.astype(np.int64)


def evaluate_reid(distmat: Any, query_ids: Any, gallery_ids: Any, query_cams: Any, gallery_cams: Any, *,
                  max_rank: int = 50, junk_ids: Sequence[int] = (-1,), block: int = 256) -> ReIDResult:
    """CMC / mAP / mINP of a ``(Q, G)`` distance matrix with the Market-1501 protocol (see the module doc).

    Args:
        distmat: distances, smaller = more similar (:func:`reid_distance`).
        query_ids, gallery_ids, query_cams, gallery_cams: integer person ids and camera ids.
        max_rank: length of the CMC curve (ranks beyond the number of kept gallery entries count as hits once
            the first match is reached).
        junk_ids: gallery ids that are always removed.
    """
    d = _as_array(distmat, "distmat", ndim=2)
    nq, ng = d.shape
    if nq == 0 or ng == 0:
        raise DataError(f"empty distance matrix {d.shape}", field="distmat")
    if np.isnan(d).any():
        raise DataError(f"contains NaN (first at query {int(np.argmax(np.isnan(d).any(1)))})", field="distmat")
    qid, gid = _ids(query_ids, nq, "query_ids"), _ids(gallery_ids, ng, "gallery_ids")
    qcam, gcam = _ids(query_cams, nq, "query_cams"), _ids(gallery_cams, ng, "gallery_cams")
    if max_rank < 1:
        raise DataError(f"must be >= 1, got {max_rank}", field="max_rank")
    junk_g = np.isin(gid, np.asarray(list(junk_ids), dtype=np.int64))

    hits = np.zeros(max_rank, dtype=np.int64)
    ap_sum = inp_sum = 0.0
    n_valid = 0
    ranks = np.arange(1, max_rank + 1)
    for s in range(0, nq, block):
        e = min(s + block, nq)
        order = np.argsort(d[s:e], axis=1, kind="stable")  # (B, G)
        og, oc = gid[order], gcam[order]
        same_id = og == qid[s:e, None]
        keep = ~((same_id & (oc == qcam[s:e, None])) | junk_g[order])
        match = same_id & keep
        n_match = match.sum(axis=1)
        valid = n_match > 0
        if not valid.any():
            continue
        match, keep, n_match = match[valid], keep[valid], n_match[valid]
        pos = np.cumsum(keep, axis=1)  # 1-based rank among the kept entries
        first = np.where(match, pos, np.iinfo(np.int64).max).min(axis=1)
        last = np.where(match, pos, 0).max(axis=1)
        hits += (first[:, None] <= ranks[None]).sum(axis=0)
        cum_match = np.cumsum(match, axis=1)
        precision = np.where(match, cum_match / np.maximum(pos, 1), 0.0)
        ap_sum += float((precision.sum(axis=1) / n_match).sum())
        inp_sum += float((n_match / last).sum())
        n_valid += int(valid.sum())
    if n_valid == 0:
        raise DataError("no query has a valid gallery match (after removing same-camera and junk entries)",
                        field="gallery_ids")
    cmc = 100.0 * hits / n_valid

    def rank(k: int) -> float:
        return float(cmc[k - 1]) if k <= max_rank else float("nan")

    return ReIDResult(mAP=100.0 * ap_sum / n_valid, mINP=100.0 * inp_sum / n_valid, rank1=rank(1), rank5=rank(5),
                      rank10=rank(10), cmc=cmc, num_queries=nq, num_valid_queries=n_valid,
                      num_skipped=nq - n_valid)
