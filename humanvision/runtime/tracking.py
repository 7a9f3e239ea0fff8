"""Multi-person pose tracking across video frames and One-Euro keypoint smoothing (numpy only, no torch).

:class:`PoseTracker` gives every detection of a frame a track id. A track remembers its last box and pose and their
per-frame velocity (constant-velocity prediction, so that two people crossing keep their ids); the similarity of
a detection to a track's predicted state is the OKS of the two poses (COCO formula with the skeleton's sigmas and
the mean of the two box areas as scale; joints scoring above ``vis_thr`` in both; the IoU when no joint is
visible in both), the IoU of the two boxes, or their mean. Pairs are matched one-to-one (Hungarian with scipy when it is installed, else greedy by descending
similarity) and a pair is accepted when its similarity is at least ``min_similarity``. Unmatched detections start
new tracks with new ids; a track unseen for more than ``max_age`` frames is dropped (its id is never reused).

:class:`OneEuroFilter` is the One-Euro filter (Casiez, Roussel and Vogel, CHI 2012), vectorised over any array
shape, frame-rate aware (timestamps in seconds, or a fixed ``freq``):

    a(fc, dt) = 1 / (1 + tau / dt),  tau = 1 / (2 pi fc)
    dx_t  = a(d_cutoff) (x_t - xh_{t-1}) / dt + (1 - a(d_cutoff)) dx_{t-1}
    fc_t  = min_cutoff + beta |dx_t|
    xh_t  = a(fc_t) x_t + (1 - a(fc_t)) xh_{t-1}

with ``xh_0 = x_0``, ``dx_0 = 0``. :class:`TrackSmoother` keeps one filter per track id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from humanvision.errors import DataError
from humanvision.runtime.detectors import box_iou

__all__ = ["METRICS", "OneEuroFilter", "PoseTracker", "Track", "TrackSmoother", "match_pairs", "oks_matrix"]

METRICS = ("oks", "iou", "oks_iou")
_EPS = float(np.spacing(1))


# --------------------------------------------------------------------------------------------- similarities
def oks_matrix(kp_a: np.ndarray, kp_b: np.ndarray, areas_a: np.ndarray, areas_b: np.ndarray, sigmas: np.ndarray,
               vis_a: np.ndarray | None = None, vis_b: np.ndarray | None = None, empty: float = 0.0) -> np.ndarray:
    """OKS ``(A, B)`` between poses ``(A, K, 2)`` and ``(B, K, 2)``: ``mean_j exp(-d_j^2 / (2 s (2 sigma_j)^2))``
    over the joints visible in both (``vis_*`` boolean ``(., K)``; all when None), scale ``s`` the mean of the two
    areas; ``empty`` for a pair without a common visible joint."""
    d2 = ((kp_a[:, None, :, :2] - kp_b[None, :, :, :2]) ** 2).sum(-1)  # (A, B, K)
    scale = (np.asarray(areas_a)[:, None] + np.asarray(areas_b)[None, :]) / 2 + _EPS
    e = np.exp(-d2 / ((2 * sigmas) ** 2) / scale[..., None] / 2)
    va = np.ones(kp_a.shape[:2], bool) if vis_a is None else vis_a
    vb = np.ones(kp_b.shape[:2], bool) if vis_b is None else vis_b
    use = va[:, None, :] & vb[None, :, :]
    n = use.sum(-1)
    return np.where(n > 0, np.where(use, e, 0.0).sum(-1) / np.maximum(n, 1), empty)


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def match_pairs(similarity: np.ndarray, min_similarity: float, method: str = "auto") -> list[tuple[int, int]]:
    """One-to-one ``(row, column)`` pairs maximising the total similarity (``"hungarian"``, scipy) or taken by
    descending similarity (``"greedy"``); ``"auto"``: Hungarian when scipy is importable. Only pairs with a
    similarity of at least ``min_similarity`` are returned."""
    s = np.asarray(similarity, dtype=np.float64)
    if s.size == 0:
        return []
    if method == "auto":
        try:
            import scipy.optimize  # noqa: F401
            method = "hungarian"
        except ImportError:
            method = "greedy"
    if method == "hungarian":
        from scipy.optimize import linear_sum_assignment

        masked = np.where(s >= min_similarity, s, -1.0)  # pairs below the threshold never pay off
        rows, cols = linear_sum_assignment(-masked)
        return [(int(r), int(c)) for r, c in zip(rows, cols) if s[r, c] >= min_similarity]
    if method != "greedy":
        raise ValueError(f"matching={method!r}: use 'auto', 'hungarian' or 'greedy'")
    pairs, used_r, used_c = [], set(), set()
    order = np.argsort(-s, axis=None, kind="stable")
    for flat in order:
        r, c = divmod(int(flat), s.shape[1])
        if s[r, c] < min_similarity:
            break
        if r not in used_r and c not in used_c:
            pairs.append((r, c))
            used_r.add(r)
            used_c.add(c)
    return pairs


# ------------------------------------------------------------------------------------------------- tracking
@dataclass
class Track:
    """One person: the last observed box (xyxy) and pose, their velocities per frame, the frame last seen."""

    track_id: int
    box: np.ndarray
    keypoints: np.ndarray | None
    scores: np.ndarray | None
    last_frame: int
    first_frame: int
    hits: int = 1
    box_velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    keypoint_velocity: np.ndarray | None = None

    def predict(self, frame: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Box and keypoints extrapolated to ``frame`` at constant velocity."""
        dt = frame - self.last_frame
        box = self.box + self.box_velocity * dt
        kp = None if self.keypoints is None else self.keypoints + (
            0.0 if self.keypoint_velocity is None else self.keypoint_velocity * dt)
        return box, kp


class PoseTracker:
    """Track ids for the people of consecutive frames (see the module docstring).

    Args:
        metric: ``"oks"`` (poses), ``"iou"`` (boxes) or ``"oks_iou"`` (their mean).
        min_similarity: the least similarity of an accepted detection-track pair.
        max_age: frames a track survives without a detection (occlusion, missed detections).
        matching: ``"auto"``, ``"hungarian"`` or ``"greedy"`` (:func:`match_pairs`).
        skeleton: the skeleton whose OKS sigmas are used (``sigmas`` overrides them).
        sigmas: per-joint OKS sigmas.
        vis_thr: joints scoring at most this are left out of the OKS (when scores are given).
        motion: predict tracks at constant velocity (off: a track stays where it was last seen).
        velocity_momentum: weight of the previous velocity when a track's velocity is updated (0: the last step).

    ``update(boxes (N, 4) xyxy, keypoints (N, K, 2) | None, scores (N, K) | None, frame=None) -> ids (N,)``.
    """

    def __init__(self, *, metric: str = "oks_iou", min_similarity: float = 0.3, max_age: int = 30,
                 matching: str = "auto", skeleton: str = "coco17", sigmas: Any = None, vis_thr: float = 0.2,
                 motion: bool = True, velocity_momentum: float = 0.5) -> None:
        if metric not in METRICS:
            raise ValueError(f"metric={metric!r}: use one of {METRICS}")
        if matching not in ("auto", "hungarian", "greedy"):
            raise ValueError(f"matching={matching!r}: use 'auto', 'hungarian' or 'greedy'")
        self.metric, self.min_similarity, self.max_age = metric, float(min_similarity), int(max_age)
        self.matching, self.skeleton, self.vis_thr = matching, skeleton, float(vis_thr)
        self.motion, self.velocity_momentum = bool(motion), float(velocity_momentum)
        self._sigmas = None if sigmas is None else np.asarray(sigmas, dtype=np.float64).reshape(-1)
        self.tracks: list[Track] = []
        self.next_id = 0
        self.frame = -1

    def __repr__(self) -> str:
        return (f"PoseTracker(metric={self.metric!r}, min_similarity={self.min_similarity}, max_age={self.max_age}, "
                f"matching={self.matching!r}, tracks={len(self.tracks)})")

    def reset(self) -> None:
        self.tracks, self.next_id, self.frame = [], 0, -1

    def sigmas(self, num_joints: int) -> np.ndarray:
        if self._sigmas is None:
            from humanvision.skeletons import get_skeleton

            sk = get_skeleton(self.skeleton)
            if sk.sigmas is None or sk.num_joints != num_joints:
                raise DataError(f"OKS tracking of {num_joints}-joint poses needs sigmas: skeleton {sk.name!r} has "
                                f"{sk.num_joints} joints{'' if sk.sigmas is not None else ' and no sigmas'}; pass "
                                "sigmas=... or metric='iou'", field="sigmas")
            self._sigmas = np.asarray(sk.sigmas_array, dtype=np.float64)
        if len(self._sigmas) != num_joints:
            raise DataError(f"{len(self._sigmas)} OKS sigmas for {num_joints} joints", field="sigmas")
        return self._sigmas

    def similarity(self, boxes: np.ndarray, keypoints: np.ndarray | None, scores: np.ndarray | None,
                   frame: int) -> np.ndarray:
        """``(tracks, detections)`` similarity of the detections to the tracks predicted to ``frame``."""
        pred = [t.predict(frame) if self.motion else (t.box, t.keypoints) for t in self.tracks]
        tboxes = np.array([b for b, _ in pred]).reshape(-1, 4)
        iou = box_iou(tboxes, boxes)
        if self.metric == "iou":
            return iou
        k = keypoints.shape[1]
        has = np.array([kp is not None and kp.shape[0] == k for _, kp in pred])
        oks = np.full((len(self.tracks), len(boxes)), np.nan)
        if has.any():
            idx = np.flatnonzero(has)
            tkp = np.stack([pred[i][1] for i in idx])
            tvis = None if scores is None else np.stack([
                self.tracks[i].scores > self.vis_thr if self.tracks[i].scores is not None else np.ones(k, bool)
                for i in idx])
            dvis = None if scores is None else scores > self.vis_thr
            oks[idx] = oks_matrix(tkp, keypoints, _area(tboxes[idx]), _area(boxes), self.sigmas(k), tvis, dvis,
                                  empty=np.nan)
        oks = np.where(np.isnan(oks), iou, oks)  # no joint visible in both poses: the boxes decide
        return oks if self.metric == "oks" else (oks + iou) / 2

    def update(self, boxes: Any, keypoints: Any = None, scores: Any = None, frame: int | None = None) -> np.ndarray:
        """Assign track ids to this frame's detections; ``frame`` (an increasing index) defaults to the previous
        one + 1 (pass the video's frame index when frames were skipped: motion and ``max_age`` count frames)."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        n = len(b)
        kp = None if keypoints is None else np.asarray(keypoints, dtype=np.float64)[..., :2]
        sc = None if scores is None else np.asarray(scores, dtype=np.float64)
        if kp is not None and (kp.ndim != 3 or len(kp) != n):
            raise DataError(f"expected (N={n}, K, 2) keypoints, got shape {np.shape(keypoints)}", field="keypoints")
        if sc is not None and (kp is None or sc.shape != kp.shape[:2]):
            raise DataError(f"expected (N, K) scores matching the keypoints, got shape {np.shape(scores)}",
                            field="scores")
        if kp is None and self.metric != "iou" and n:
            raise DataError(f"metric {self.metric!r} needs keypoints; pass them or use metric='iou'",
                            field="keypoints")
        frame = self.frame + 1 if frame is None else int(frame)
        if frame <= self.frame:
            raise DataError(f"frame {frame} is not after the previous frame {self.frame}", field="frame")
        self.frame = frame
        self.tracks = [t for t in self.tracks if frame - t.last_frame <= self.max_age]
        ids = np.full(n, -1, dtype=np.int64)
        if self.tracks and n:
            pairs = match_pairs(self.similarity(b, kp, sc, frame), self.min_similarity, self.matching)
            for ti, di in pairs:
                self._observe(self.tracks[ti], b[di], None if kp is None else kp[di], None if sc is None else sc[di],
                              frame)
                ids[di] = self.tracks[ti].track_id
        for di in np.flatnonzero(ids < 0):
            t = Track(self.next_id, b[di].copy(), None if kp is None else kp[di].copy(),
                      None if sc is None else sc[di].copy(), frame, frame)
            self.tracks.append(t)
            ids[di] = t.track_id
            self.next_id += 1
        return ids

    def _observe(self, t: Track, box: np.ndarray, kp: np.ndarray | None, sc: np.ndarray | None, frame: int) -> None:
        dt = frame - t.last_frame
        m = self.velocity_momentum if t.hits > 1 else 0.0  # the first step sets the velocity
        t.box_velocity = m * t.box_velocity + (1 - m) * (box - t.box) / dt
        if kp is not None and t.keypoints is not None and t.keypoints.shape == kp.shape:
            v = (kp - t.keypoints) / dt
            t.keypoint_velocity = v if t.keypoint_velocity is None or t.hits == 1 else (
                m * t.keypoint_velocity + (1 - m) * v)
        else:
            t.keypoint_velocity = None
        t.box, t.keypoints, t.scores = box.copy(), None if kp is None else kp.copy(), None if sc is None else sc.copy()
        t.last_frame, t.hits = frame, t.hits + 1


# ------------------------------------------------------------------------------------------------ smoothing
def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """The One-Euro filter on arrays of any fixed shape (element-wise; see the module docstring).

    Args:
        min_cutoff: the cutoff frequency (Hz) at rest: lower smooths more (and lags more).
        beta: how fast the cutoff rises with speed (units: Hz per unit of ``x`` per second): higher lags less.
        d_cutoff: the cutoff frequency (Hz) of the derivative's low-pass filter.
        freq: samples per second, used when ``__call__`` gets no timestamp.

    ``__call__(x, t=None) -> filtered x`` (float64), ``t`` the timestamp in seconds (strictly increasing).
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0, freq: float = 30.0) -> None:
        if min(min_cutoff, d_cutoff, freq) <= 0 or beta < 0:
            raise ValueError(f"OneEuroFilter needs min_cutoff, d_cutoff, freq > 0 and beta >= 0 (got {min_cutoff}, "
                             f"{d_cutoff}, {freq}, {beta})")
        self.min_cutoff, self.beta, self.d_cutoff, self.freq = float(min_cutoff), float(beta), float(d_cutoff), float(freq)
        self.reset()

    def reset(self) -> None:
        self.x_prev: np.ndarray | None = None
        self.dx_prev: np.ndarray | None = None
        self.t_prev: float | None = None

    def __call__(self, x: Any, t: float | None = None) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.x_prev is None:
            self.x_prev, self.dx_prev = x.copy(), np.zeros_like(x)
            self.t_prev = 0.0 if t is None else float(t)
            return x.copy()
        if x.shape != self.x_prev.shape:
            raise DataError(f"shape {x.shape} differs from the filtered signal's {self.x_prev.shape}", field="x")
        t = self.t_prev + 1.0 / self.freq if t is None else float(t)
        dt = t - self.t_prev
        if not dt > 0:
            raise DataError(f"timestamp {t} is not after the previous one {self.t_prev}", field="t")
        a_d = _alpha(self.d_cutoff, dt)
        dx = a_d * (x - self.x_prev) / dt + (1 - a_d) * self.dx_prev
        a = _alpha(self.min_cutoff + self.beta * np.abs(dx), dt)
        xh = a * x + (1 - a) * self.x_prev
        self.x_prev, self.dx_prev, self.t_prev = xh, dx, t
        return xh.copy()


class TrackSmoother:
    """One :class:`OneEuroFilter` per track id for the keypoints of tracked people.

    ``__call__(track_ids (N,), keypoints (N, K, 2), t seconds) -> smoothed (N, K, 2)``; a track unseen for more
    than ``max_gap`` seconds restarts its filter. Defaults suit pixel coordinates at video frame rates.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0, max_gap: float = 1.0) -> None:
        self.min_cutoff, self.beta, self.d_cutoff, self.max_gap = min_cutoff, beta, d_cutoff, float(max_gap)
        self.filters: dict[int, OneEuroFilter] = {}

    def __call__(self, track_ids: Any, keypoints: Any, t: float) -> np.ndarray:
        kp = np.asarray(keypoints, dtype=np.float64)
        out = kp.copy()
        for i, tid in enumerate(np.asarray(track_ids).reshape(-1)):
            f = self.filters.get(int(tid))
            if f is None or f.t_prev is None or t - f.t_prev > self.max_gap or f.x_prev.shape != kp[i].shape:
                f = self.filters[int(tid)] = OneEuroFilter(self.min_cutoff, self.beta, self.d_cutoff)
            out[i] = f(kp[i], t)
        stale = [k for k, f in self.filters.items() if f.t_prev is not None and t - f.t_prev > self.max_gap]
        for k in stale:
            del self.filters[k]
        return out
