"""Multi-view triangulation of 2D keypoint detections: the pipeline behind ``humanvision triangulate``.

Read top to bottom, :func:`triangulate_sequence` does:

1. **Check and align the inputs**: one :class:`~humanvision.data.readers.Detections2D` per calibrated camera
   (OpenPose folders, COCO keypoint result files, ``humanvision infer`` output; see :func:`load_detections`),
   matched by camera name; every camera must use the same keypoint layout (or be converted to one with
   ``skeleton=``); frames are aligned by frame number, a camera without a frame has no detections there.
2. **Undistort** every detection with its camera's lens model (``undistort=False`` for detections made on already
   undistorted images) and drop keypoints below the likelihood threshold.
3. **Associate people across views** (only when some view sees several people): per frame, detections of two views
   are linked when the median symmetric epipolar distance of their joints is below ``association_threshold``
   pixels; links are merged greedily (closest first) into groups with at most one detection per camera whose every
   pair agrees (complete linkage). Groups seen by fewer than two cameras are dropped and counted.
4. **Triangulate everything at once** with :func:`humanvision.geometry.triangulate_robust`: all frames, people and
   joints in one vectorised call, each joint choosing its views by reprojection error (``reprojection_threshold``
   pixels), at least ``min_cameras`` agreeing views or NaN.
5. **Link people over time** (several people only): groups of consecutive frames are matched by the Hungarian
   algorithm on their 3D centroids, within half a body size.
6. **Clean up in time**: a joint that jumps away from the median of its +-2 frame neighbourhood by more than
   ``jump_threshold`` body sizes is dropped (two wrong views that happen to agree make such points), then gaps of up
   to ``max_gap`` frames are filled by linear interpolation.
7. **Report**: every observation (frame, person, camera, joint) gets a status (:data:`STATUS_NAMES`) and a
   reprojection error in the original image (with distortion), summarised per camera and per joint.

Units are the calibration's (``x_cam = R X + t``); thresholds in pixels, or relative to the body size, do not
depend on them.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from humanvision.data.readers.base import load_json
from humanvision.data.readers.openpose import Detections2D, openpose_layout, read_openpose_folder
from humanvision.errors import ConfigError, DataError
from humanvision.geometry import Camera, fundamental_matrix, triangulate_robust, undistort_points
from humanvision.skeletons import convert, get_skeleton

__all__ = [
    "STATUS_NAMES",
    "TriangulateConfig",
    "TriangulationResult",
    "interpolate_gaps",
    "load_detections",
    "match_cameras",
    "read_keypoint_results",
    "triangulate_sequence",
    "write_points_json",
    "write_trc",
]

#: Status of one observation (frame, person, camera, joint), the values of ``TriangulationResult.status``.
USED, MISSING, LOW_LIKELIHOOD, EXCLUDED, TOO_FEW_VIEWS, TEMPORAL_OUTLIER = range(6)
STATUS_NAMES = ("used", "missing", "low_likelihood", "excluded", "too_few_views", "temporal_outlier")


@dataclass
class TriangulateConfig:
    """Settings of :func:`triangulate_sequence` (the CLI options of ``humanvision triangulate``).

    Attributes:
        likelihood_threshold: keypoints with a lower detection score are not used.
        reprojection_threshold: pixels; a view whose reprojection error exceeds it is excluded for that joint.
        min_cameras: fewest agreeing views for a 3D joint (>= 2); fewer gives NaN.
        max_gap: longest run of missing frames filled by linear interpolation (0: none).
        undistort: undistort the detections with the calibration's lens model (off for detections made on
            undistorted images).
        association_threshold: pixels; median symmetric epipolar distance below which two views' detections may be
            the same person.
        jump_threshold: a joint further than this many body sizes from the median of its +-2 frames is dropped
            (0: no check).
        max_people: keep only the people seen in most frames (0: all).
        skeleton: convert every camera's detections to this joint set by name first (None: keep the layout, which
            must then be the same in every camera).
        refine_iters: Gauss-Newton steps on the reprojection error after the linear estimate.
    """

    likelihood_threshold: float = 0.3
    reprojection_threshold: float = 15.0
    min_cameras: int = 2
    max_gap: int = 10
    undistort: bool = True
    association_threshold: float = 30.0
    jump_threshold: float = 0.1
    max_people: int = 0
    skeleton: str | None = None
    refine_iters: int = 5

    def __post_init__(self) -> None:
        checks = {
            "likelihood_threshold": 0 <= self.likelihood_threshold <= 1,
            "reprojection_threshold": self.reprojection_threshold > 0,
            "min_cameras": int(self.min_cameras) >= 2,
            "max_gap": int(self.max_gap) >= 0,
            "association_threshold": self.association_threshold > 0,
            "jump_threshold": self.jump_threshold >= 0,
            "max_people": int(self.max_people) >= 0,
            "refine_iters": int(self.refine_iters) >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError("invalid triangulation settings: " + ", ".join(f"{k}={getattr(self, k)!r}" for k in bad)
                              + " (likelihood in [0, 1], thresholds > 0, min_cameras >= 2, counts >= 0)")


@dataclass
class TriangulationResult:
    """Output of :func:`triangulate_sequence`.

    Attributes:
        points: (F, N, J, 3) 3D joints of N people per frame (calibration units); NaN where unknown.
        frames: (F,) frame numbers.
        cameras: camera names, the V axis below.
        skeleton: joint-set name (J joints).
        status: (F, N, V, J) int8, one of :data:`STATUS_NAMES` per observation.
        reprojection: (F, N, V, J) pixel distance between each detection and its 3D joint projected into the
            original image (with distortion); NaN without a detection or a 3D joint.
        interpolated: (F, N, J) joints filled by gap interpolation.
        report: summary counts and tables (what ``report.json`` holds).
    """

    points: np.ndarray
    frames: np.ndarray
    cameras: list[str]
    skeleton: str
    status: np.ndarray
    reprojection: np.ndarray
    interpolated: np.ndarray
    report: dict[str, Any] = field(default_factory=dict)


# =============================================================================================== 1. inputs
def read_keypoint_results(path: str | Path, layout: str | None = None) -> Detections2D:
    """COCO keypoint results: a list of ``{image_id, keypoints: [x, y, s, ...], score}`` (``results.json``), or
    ``humanvision infer``'s ``predictions.json`` mapping each image (``name.jpg``, or ``video.mp4#i`` for frame i of
    a video) to such a list. Frames are the image ids, the ``#i`` of videos, or the digits in the file names (in
    key order when some name has none). Keypoint scores are the third values; the layout follows the count
    (17: ``coco17``) unless ``layout`` is given."""
    f = str(path)
    data = load_json(path)
    if isinstance(data, list):
        groups: dict[Any, list] = {}
        for i, r in enumerate(data):
            if not isinstance(r, dict) or "image_id" not in r or "keypoints" not in r:
                raise DataError("expected a COCO result {image_id, keypoints, score}", file=f, record=f"result {i}")
            groups.setdefault(r["image_id"], []).append((i, r))
        keys = list(groups)
        if all(isinstance(k, int) and not isinstance(k, bool) for k in keys):
            frames = [int(k) for k in keys]
        else:
            frames = list(range(len(keys)))
    elif isinstance(data, dict):
        groups = {}
        for name, recs in data.items():
            if not isinstance(recs, list):
                raise DataError("expected a list of COCO results per image", file=f, record=f"image {name!r}")
            groups[name] = [(i, r) for i, r in enumerate(recs)]
        keys = list(groups)
        video = [re.search(r"#(\d+)$", str(k)) for k in keys]
        digits = [re.search(r"(\d+)(?!.*\d)", Path(str(k)).stem) for k in keys]
        if all(v is not None for v in video):
            frames = [int(v.group(1)) for v in video]
        elif all(d is not None for d in digits):
            frames = [int(d.group(1)) for d in digits]
        else:
            frames = list(range(len(keys)))
    else:
        raise DataError("expected a COCO result list or humanvision infer's predictions.json mapping", file=f)
    if len(set(frames)) != len(frames):
        raise DataError("two images map to the same frame number; name the frames with distinct numbers", file=f)
    order = np.argsort(frames, kind="stable")
    people, count, name = [], None, None
    for k in order:
        persons = []
        for i, r in groups[keys[k]]:
            rec = f"image {keys[k]!r} result {i}"
            try:
                kp = np.asarray(r["keypoints"], dtype=np.float64).reshape(-1)
            except (TypeError, ValueError, KeyError):
                raise DataError("expected a flat list of numbers x, y, s, ...", file=f, record=rec,
                                field="keypoints") from None
            if kp.size == 0 or kp.size % 3 or not np.isfinite(kp).all():
                raise DataError(f"expected finite (x, y, score) triplets, got {kp.size} values", file=f, record=rec,
                                field="keypoints")
            if count is None:
                count, name = kp.size // 3, openpose_layout(kp.size // 3, layout, f)
            elif kp.size // 3 != count:
                raise DataError(f"{kp.size // 3} keypoints, but earlier results have {count} ({name}): mixed layouts",
                                file=f, record=rec, field="keypoints")
            persons.append(kp.reshape(-1, 3))
        people.append(persons)
    if count is None:
        if layout is None:
            raise DataError("no detections, so the keypoint layout is unknown; pass the layout", file=f)
        name, count = get_skeleton(layout).name, get_skeleton(layout).num_joints
    return Detections2D.from_people([frames[k] for k in order], people, name, f, count)


def load_detections(path: str | Path, layout: str | None = None) -> Detections2D:
    """One camera's detections from: a folder of OpenPose JSON files; a folder with ``predictions.json`` or
    ``results.json`` (``humanvision infer`` output); or such a JSON file itself."""
    p = Path(path)
    if p.is_dir():
        for candidate in ("predictions.json", "results.json"):
            if (p / candidate).is_file():
                return read_keypoint_results(p / candidate, layout)
        return read_openpose_folder(p, layout)
    if p.is_file():
        return read_keypoint_results(p, layout)
    raise DataError("detections not found (a folder of OpenPose JSON files, or a COCO result / predictions.json)",
                    file=str(p))


_SUFFIXES = ("_json", "-json", "_keypoints", "_predictions", "_results", "_openpose")


def camera_name_of(path: str | Path) -> str:
    """The camera a detection source belongs to: its folder or file name without extension and without one of the
    usual suffixes (``cam1_json`` -> ``cam1``; ``results.json``/``predictions.json`` -> their folder's name)."""
    p = Path(path)
    name = p.parent.name if p.name in ("results.json", "predictions.json") else p.stem if p.is_file() else p.name
    for s in _SUFFIXES:
        if name.endswith(s) and len(name) > len(s):
            return name[: -len(s)]
    return name


def match_cameras(detections: Mapping[str, Any], cameras: Mapping[str, Camera],
                  calibration: str | None = None) -> list[str]:
    """The camera names in calibration order; every calibrated camera needs detections and vice versa, otherwise a
    DataError names the cameras on each side."""
    missing = [c for c in cameras if c not in detections]
    extra = [d for d in detections if d not in cameras]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"calibrated camera(s) {missing} have no detections")
        if extra:
            parts.append(f"detections for camera(s) {extra} are not in the calibration")
        raise DataError("; ".join(parts) + f" (calibration: {list(cameras)}, detections: {list(detections)}); name "
                        "each source NAME=PATH, or restrict the calibration with --cameras",
                        file=calibration, field="cameras")
    if len(cameras) < 2:
        raise DataError(f"triangulation needs at least 2 cameras, got {list(cameras)}", file=calibration,
                        field="cameras")
    return list(cameras)


def _common_layout(dets: Sequence[Detections2D], names: Sequence[str], skeleton: str | None) -> list[Detections2D]:
    """Convert every camera to ``skeleton`` by joint name, or check that all share one layout."""
    if skeleton is not None:
        target = get_skeleton(skeleton).name
        out = []
        for d in dets:
            if d.skeleton == target:
                out.append(d)
                continue
            kp = np.nan_to_num(d.keypoints)  # convert() mixes joints linearly: NaN would leak into every output
            kp, sc = convert(kp, d.skeleton, target, visible=d.scores)
            kp = np.where(sc[..., None] > 0, kp, np.nan)
            out.append(Detections2D(d.frames, kp, sc.astype(np.float64), target, d.source, d.files))
        return out
    layouts = {d.skeleton for d in dets}
    if len(layouts) > 1:
        desc = ", ".join(f"camera {n}: {d.skeleton} ({d.num_joints} keypoints, {d.source})" for n, d in zip(names, dets))
        raise DataError(f"mismatched keypoint layouts: {desc}; pass a common skeleton (e.g. --skeleton coco17) to "
                        "convert them by joint name", field="layout")
    return list(dets)


def _align(dets: Sequence[Detections2D]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Frames (F,), keypoints (F, V, P, J, 2), scores (F, V, P, J) and per-camera frame presence (F, V)."""
    frames = np.unique(np.concatenate([d.frames for d in dets]))
    V, P, J = len(dets), max(1, *(d.max_people for d in dets)), dets[0].num_joints  # P >= 1 keeps shapes simple
    kp = np.full((len(frames), V, P, J, 2), np.nan)
    sc = np.zeros((len(frames), V, P, J))
    present = np.zeros((len(frames), V), dtype=bool)
    for v, d in enumerate(dets):
        rows = np.searchsorted(frames, d.frames)
        kp[rows, v, : d.max_people] = d.keypoints
        sc[rows, v, : d.max_people] = d.scores
        present[rows, v] = True
    return frames, kp, sc, present


# =============================================================================================== 3. association
def _epipolar_distances(uv: np.ndarray, usable: np.ndarray, P: np.ndarray, min_joints: int = 3) -> np.ndarray:
    """D (F, V, V, Pp, Pp): median over shared joints of the symmetric epipolar distance (pixels) between detection
    p of view a and q of view b (inf with fewer than ``min_joints`` shared joints; the diagonal is inf)."""
    Fn, V, Pp = uv.shape[:3]
    x = np.concatenate([uv, np.ones(uv.shape[:-1] + (1,))], -1)
    x = np.where(usable[..., None], x, np.nan)
    D = np.full((Fn, V, V, Pp, Pp), np.inf)
    for a in range(V):
        for b in range(a + 1, V):
            Fab = fundamental_matrix(P[a], P[b])
            lb = np.einsum("ij,fpkj->fpki", Fab, x[:, a])  # epipolar lines in b of a's points (F, Pp, J, 3)
            la = np.einsum("ji,fqkj->fqki", Fab, x[:, b])  # lines in a of b's points
            with np.errstate(invalid="ignore", divide="ignore"):
                d_b = np.abs((lb[:, :, None] * x[:, b][:, None]).sum(-1)) / np.hypot(lb[..., 0], lb[..., 1])[:, :, None]
                d_a = np.abs((la[:, None] * x[:, a][:, :, None]).sum(-1)) / np.hypot(la[..., 0], la[..., 1])[:, None]
            d = 0.5 * (d_a + d_b)  # (F, Pp, Pq, J)
            shared = np.isfinite(d).sum(-1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: no shared joints
                med = np.nanmedian(d, axis=-1)
            med = np.where(shared >= min_joints, med, np.inf)
            D[:, a, b], D[:, b, a] = med, med.swapaxes(-1, -2)
    return D


def _cluster_frame(D: np.ndarray, present: np.ndarray, threshold: float) -> list[np.ndarray]:
    """Greedy complete-linkage grouping of one frame's detections; returns (V,) detection indices (-1: none) of
    the groups seen by >= 2 cameras, largest first. D (V, V, Pp, Pp), present (V, Pp)."""
    V = D.shape[0]
    nodes = [(v, p) for v, p in zip(*np.nonzero(present))]
    group = {n: i for i, n in enumerate(nodes)}
    members: dict[int, dict[int, int]] = {i: {int(v): int(p)} for i, (v, p) in enumerate(nodes)}
    a, b, p, q = np.nonzero(np.triu(np.ones((V, V), dtype=bool), 1)[:, :, None, None] & (D < threshold))
    for k in np.argsort(D[a, b, p, q], kind="stable"):
        ga, gb = group[(a[k], p[k])], group[(b[k], q[k])]
        if ga == gb or members[ga].keys() & members[gb].keys():
            continue
        cross = [D[v1, v2, p1, p2] for v1, p1 in members[ga].items() for v2, p2 in members[gb].items()]
        if max(c for c in cross if np.isfinite(c)) >= threshold:
            continue
        for v, pp in members.pop(gb).items():
            members[ga][v] = pp
            group[(v, pp)] = ga
    out = []
    for m in sorted(members.values(), key=len, reverse=True):
        if len(m) >= 2:
            row = np.full(V, -1)
            for v, pp in m.items():
                row[v] = pp
            out.append(row)
    return out


def _associate(uv: np.ndarray, usable: np.ndarray, present: np.ndarray, P: np.ndarray, threshold: float,
               chunk: int = 2000) -> tuple[np.ndarray, int]:
    """Groups (F, C, V) of detection indices (-1: none) and the number of detections (``present`` (F, V, Pp))
    left out of every group; distances use the ``usable`` (F, V, Pp, J) keypoints."""
    Fn, V, Pp = uv.shape[:3]
    if Pp <= 1:  # one detection per view at most: one group per frame
        one = present[..., 0] if Pp else np.zeros((Fn, V), dtype=bool)
        return np.where(one, 0, -1)[:, None, :], 0
    groups: list[list[np.ndarray]] = []
    for s in range(0, Fn, chunk):
        D = _epipolar_distances(uv[s:s + chunk], usable[s:s + chunk], P)
        groups += [_cluster_frame(D[i], present[s + i], threshold) for i in range(len(D))]
    C = max((len(g) for g in groups), default=0)
    out = np.full((Fn, max(C, 1), V), -1)
    for f, gs in enumerate(groups):
        for c, row in enumerate(gs):
            out[f, c] = row
    grouped = np.zeros_like(present)
    fi, ci, vi = np.nonzero(out >= 0)
    grouped[fi, vi, out[fi, ci, vi]] = True
    return out, int((present & ~grouped).sum())


def _gather(a: np.ndarray, idx: np.ndarray, fill: float) -> np.ndarray:
    """a (F, V, Pp, ...) picked by idx (F, C, V) -> (F, C, V, ...), ``fill`` where idx < 0."""
    Fn, V = idx.shape[0], idx.shape[2]
    f = np.arange(Fn)[:, None, None]
    v = np.arange(V)[None, None, :]
    out = a[f, v, np.maximum(idx, 0)]
    mask = (idx < 0).reshape(idx.shape + (1,) * (out.ndim - 3))
    return np.where(mask, fill, out)


# =============================================================================================== 5-6. time
def _centroids_and_size(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Per (frame, person) median joint (…, 3) and the median extent of a person (a body size, in world units)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cen = np.nanmedian(points, axis=-2)
        ext = np.linalg.norm(np.nanmax(points, axis=-2) - np.nanmin(points, axis=-2), axis=-1)
        size = float(np.nanmedian(ext)) if np.isfinite(ext).any() else np.nan
    return cen, size


def _link_tracks(points: np.ndarray, max_gap: int) -> np.ndarray:
    """Track id (F, C) of every group (-1: none), matching consecutive frames by the Hungarian algorithm on 3D
    centroids within half a body size; a track survives ``max_gap`` frames without a match."""
    from scipy.optimize import linear_sum_assignment

    cen, size = _centroids_and_size(points)
    ids = np.full(points.shape[:2], -1)
    last: dict[int, tuple[np.ndarray, int]] = {}
    for f in range(points.shape[0]):
        cands = [c for c in range(points.shape[1]) if np.isfinite(cen[f, c]).all()]
        live = [t for t, (_, lf) in last.items() if f - lf <= max_gap + 1]
        taken: set[int] = set()
        if cands and live:
            cost = np.array([[np.linalg.norm(cen[f, c] - last[t][0]) for t in live] for c in cands])
            for r, k in zip(*linear_sum_assignment(cost)):
                if cost[r, k] < 0.5 * size:
                    ids[f, cands[r]] = live[k]
                    taken.add(cands[r])
        for c in cands:
            if c not in taken:
                ids[f, c] = len(last)
                last[len(last)] = (cen[f, c], f)
            last[ids[f, c]] = (cen[f, c], f)
    return ids


def _temporal_outliers(points: np.ndarray, jump: float, half_window: int = 2) -> np.ndarray:
    """(F, N, J) joints further than ``jump`` body sizes from the median of their +-``half_window`` frames (needs
    three finite values in the window)."""
    Fn = points.shape[0]
    if jump <= 0 or Fn < 3:
        return np.zeros(points.shape[:-1], dtype=bool)
    pad = np.full((half_window,) + points.shape[1:], np.nan)
    win = np.lib.stride_tricks.sliding_window_view(np.concatenate([pad, points, pad]), 2 * half_window + 1, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(win, axis=-1)  # (F, N, J, 3)
    enough = np.isfinite(win[..., 0, :]).sum(-1) >= 3  # (F, N, J)
    size = np.array([_centroids_and_size(points[:, n])[1] for n in range(points.shape[1])])  # (N,)
    d = np.linalg.norm(points - med, axis=-1)
    return enough & np.isfinite(d) & (d > jump * size[None, :, None])


def interpolate_gaps(points: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Fill runs of at most ``max_gap`` missing values along axis 0 by linear interpolation between the valid
    values on both sides (runs touching the start or end stay missing). points (F, ..., D); a value is missing when
    any of its D coordinates is NaN. Returns the filled copy and the (F, ...) mask of filled values."""
    X = np.asarray(points, dtype=np.float64)
    Fn = X.shape[0]
    valid = np.isfinite(X).all(-1)
    idx = np.arange(Fn).reshape((Fn,) + (1,) * (valid.ndim - 1))
    prev = np.maximum.accumulate(np.where(valid, idx, -1), axis=0)
    nxt = np.flip(np.minimum.accumulate(np.flip(np.where(valid, idx, Fn), 0), axis=0), 0)
    fill = ~valid & (prev >= 0) & (nxt < Fn) & (nxt - prev - 1 <= max_gap)
    if not fill.any():
        return X.copy(), fill
    p, n = np.clip(prev, 0, Fn - 1), np.clip(nxt, 0, Fn - 1)
    Xp = np.take_along_axis(X, p[..., None], axis=0)
    Xn = np.take_along_axis(X, n[..., None], axis=0)
    alpha = ((idx - p) / np.maximum(n - p, 1))[..., None]
    return np.where(fill[..., None], Xp + alpha * (Xn - Xp), X), fill


# =============================================================================================== the pipeline
def triangulate_sequence(detections: Mapping[str, Detections2D], cameras: Mapping[str, Camera],
                         config: TriangulateConfig | None = None, calibration: str | None = None
                         ) -> TriangulationResult:
    """3D joints of every person in every frame from calibrated multi-view 2D detections (see the module doc).

    ``detections`` and ``cameras`` are keyed by camera name; ``calibration`` (a file name) only improves messages.
    """
    cfg = config or TriangulateConfig()
    names = match_cameras(detections, cameras, calibration)
    cams = [cameras[n] for n in names]
    dets = _common_layout([detections[n] for n in names], names, cfg.skeleton)
    skeleton = get_skeleton(dets[0].skeleton)
    frames, raw, score, present = _align(dets)
    Fn, V, Pp, J = score.shape

    # 2. undistort, likelihood
    uv = np.empty_like(raw)
    for v, cam in enumerate(cams):
        dist = cam.dist if cfg.undistort and cam.is_distorted else None
        uv[:, v] = undistort_points(raw[:, v], cam.K, dist, cam.dist_model) if dist is not None else raw[:, v]
    detected = np.isfinite(uv).all(-1) & (score > 0)
    usable = detected & (score >= cfg.likelihood_threshold)
    P = np.stack([c.projection_matrix for c in cams])

    # 3. association
    groups, unassociated = _associate(uv, usable, detected.any(-1), P, cfg.association_threshold)
    g_uv = _gather(uv, groups, np.nan)  # (F, C, V, J, 2)
    g_raw = _gather(raw, groups, np.nan)
    g_det = _gather(detected, groups, False)
    g_use = _gather(usable, groups, False)
    g_score = _gather(score, groups, 0.0)

    # 4. robust triangulation of every (frame, group, joint) at once
    res = triangulate_robust(P, g_uv, np.where(g_use, g_score, 0.0), threshold=cfg.reprojection_threshold,
                             min_views=cfg.min_cameras, refine_iters=cfg.refine_iters)
    X, inliers = res.points, res.inliers

    # 5. people over time
    if Pp <= 1:  # one person: a single track
        tracks = np.zeros((Fn, 1), dtype=np.int64)
    else:
        tracks = _link_tracks(X, cfg.max_gap)
    N = int(tracks.max()) + 1 if (tracks >= 0).any() else 0
    counts = np.bincount(tracks[tracks >= 0], minlength=N)
    keep = np.argsort(-counts, kind="stable")[: cfg.max_people or N]
    remap = np.full(max(N, 1), -1)
    remap[keep] = np.arange(len(keep))
    N = len(keep)
    slot = np.where(tracks >= 0, remap[np.maximum(tracks, 0)], -1)  # (F, C) person index or -1
    fi, ci = np.nonzero(slot >= 0)
    pi = slot[fi, ci]

    def per_person(a: np.ndarray, fill: Any) -> np.ndarray:
        out = np.full((Fn, N) + a.shape[2:], fill, dtype=a.dtype)
        out[fi, pi] = a[fi, ci]
        return out

    points = per_person(X, np.nan)
    inl, det, use, raw_p = (per_person(a, f) for a, f in ((inliers, False), (g_det, False), (g_use, False),
                                                          (g_raw, np.nan)))

    # status before the temporal clean-up
    status = np.full((Fn, N, V, J), MISSING, dtype=np.int8)
    status[det] = LOW_LIKELIHOOD
    status[use] = EXCLUDED
    n_use = use.sum(2)  # (F, N, J)
    rejected = ~np.isfinite(points).all(-1)
    status[use & rejected[:, :, None]] = TOO_FEW_VIEWS
    status[inl] = USED
    too_few = int((rejected & (n_use > 0) & (n_use < cfg.min_cameras)).sum())
    cams_seeing = usable.any(axis=(2, 3)).sum(1)  # (F,) cameras with any usable keypoint
    frames_too_few = int(((cams_seeing > 0) & (cams_seeing < cfg.min_cameras)).sum())
    inconsistent = int((rejected & (n_use >= cfg.min_cameras)).sum())

    # 6. temporal outliers, gaps
    jumps = _temporal_outliers(points, cfg.jump_threshold)
    points = np.where(jumps[..., None], np.nan, points)
    status[inl & jumps[:, :, None]] = TEMPORAL_OUTLIER
    triangulated = np.isfinite(points).all(-1)
    points, filled = interpolate_gaps(points, cfg.max_gap) if cfg.max_gap > 0 else (points, np.zeros_like(jumps))

    # 7. reprojection errors in the original images
    reproj = np.full((Fn, N, V, J), np.nan)
    for v, cam in enumerate(cams):
        proj = cam.project(points, distort=cfg.undistort)
        reproj[:, :, v] = np.linalg.norm(proj - raw_p[:, :, v], axis=-1)
    report = _report(cfg, names, skeleton.joints, frames, points, status, reproj, triangulated, filled, present,
                     too_few, inconsistent, unassociated, int(jumps.sum()), frames_too_few)
    return TriangulationResult(points, frames, names, skeleton.name, status, reproj, filled, report)


def _stat(a: np.ndarray) -> float | None:
    a = a[np.isfinite(a)]
    return round(float(a.mean()), 3) if a.size else None


def _report(cfg: TriangulateConfig, names: list[str], joints: Sequence[str], frames: np.ndarray, points: np.ndarray,
            status: np.ndarray, reproj: np.ndarray, triangulated: np.ndarray, filled: np.ndarray, present: np.ndarray,
            too_few: int, inconsistent: int, unassociated: int, jumps: int, frames_too_few: int) -> dict[str, Any]:
    """The summary written to ``report.json``: counts per status, per camera and per joint."""
    used = status == USED
    per_camera = {}
    for v, n in enumerate(names):
        s = status[:, :, v]
        e = np.where(used[:, :, v], reproj[:, :, v], np.nan)
        per_camera[n] = {
            "frames_without_detections": int((~present[:, v]).sum()),
            **{STATUS_NAMES[k]: int((s == k).sum()) for k in range(len(STATUS_NAMES))},
            "mean_reprojection_px": _stat(e),
            "median_reprojection_px": (round(float(np.nanmedian(e)), 3) if np.isfinite(e).any() else None),
        }
    per_joint = {}
    for j, name in enumerate(joints):
        per_joint[name] = {
            "triangulated": int(triangulated[..., j].sum()),
            "interpolated": int(filled[..., j].sum()),
            "missing": int((~np.isfinite(points[..., j, :]).all(-1)).sum()),
            "excluded_views": int((status[..., j] == EXCLUDED).sum()),
            "mean_views": _stat(np.where(triangulated[..., j], used[..., j].sum(-1), np.nan)),
            "mean_reprojection_px": _stat(np.where(used[..., j], reproj[..., j], np.nan)),
        }
    finite = np.isfinite(points).all(-1)
    return {
        "frames": len(frames),
        "first_frame": int(frames[0]) if len(frames) else None,
        "last_frame": int(frames[-1]) if len(frames) else None,
        "people": int(points.shape[1]),
        "cameras": names,
        "joints": list(joints),
        "settings": asdict(cfg),
        "status_counts": {STATUS_NAMES[k]: int((status == k).sum()) for k in range(len(STATUS_NAMES))},
        "joints_triangulated": int(triangulated.sum()),
        "joints_too_few_views": too_few,
        "joints_inconsistent_views": inconsistent,
        "joints_temporal_outliers": jumps,
        "joints_interpolated": int(filled.sum()),
        "joints_missing": int((~finite).sum()),
        "frames_too_few_views": frames_too_few,
        "frames_without_3d": int((~finite.any(axis=(1, 2))).sum()) if points.shape[1] else len(frames),
        "unassociated_detections": unassociated,
        "mean_reprojection_px": _stat(np.where(used, reproj, np.nan)),
        "per_camera": per_camera,
        "per_joint": per_joint,
    }


# =============================================================================================== writers
_TRC_UP = {"z": np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]]), "y": np.eye(3),
           "-y": np.array([[1.0, 0, 0], [0, -1, 0], [0, 0, -1]])}


def write_trc(path: str | Path, points: np.ndarray, joints: Sequence[str], frames: np.ndarray, rate: float,
              units: str = "mm", up: str = "z") -> Path:
    """An OpenSim ``.trc`` marker file of one person's (F, J, 3) joints (tab separated; missing values ``NaN``).

    OpenSim's y axis points up: ``up`` names the world's up axis (``z``, ``y`` or ``-y``) and the points are
    rotated so that it becomes +y (``z``: ``(x, y, z) -> (x, z, -y)``, a proper rotation). Time is
    ``(frame - first frame) / rate`` seconds.
    """
    if up not in _TRC_UP:
        raise DataError(f"unknown up axis {up!r}; use 'z', 'y' or '-y'", field="up")
    if not rate > 0:
        raise DataError(f"must be positive, got {rate}", field="rate")
    X = np.asarray(points, dtype=np.float64) @ _TRC_UP[up].T
    Fn, J = X.shape[:2]
    frames = np.asarray(frames)
    out = Path(path)
    lines = [
        f"PathFileType\t4\t(X/Y/Z)\t{out.name}",
        "DataRate\tCameraRate\tNumFrames\tNumMarkers\tUnits\tOrigDataRate\tOrigDataStartFrame\tOrigNumFrames",
        f"{rate:g}\t{rate:g}\t{Fn}\t{J}\t{units}\t{rate:g}\t1\t{Fn}",
        "Frame#\tTime\t" + "\t\t\t".join(joints) + "\t\t",
        "\t\t" + "\t".join(f"X{i}\tY{i}\tZ{i}" for i in range(1, J + 1)),
        "",
    ]
    start = frames[0] if Fn else 0
    for k in range(Fn):
        vals = "\t".join("NaN" if not np.isfinite(x) else f"{x:.6f}" for x in X[k].reshape(-1))
        lines.append(f"{int(frames[k] - start) + 1}\t{(frames[k] - start) / rate:.6f}\t{vals}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


def write_points_json(path: str | Path, result: TriangulationResult, units: str = "mm") -> Path:
    """``points3d.json``: ``{format, skeleton, joints, units, cameras, frames, points}`` with ``points`` nested as
    [frame][person][joint] -> [x, y, z] or null."""
    import json

    joints = list(get_skeleton(result.skeleton).joints)
    pts = [[[None if not np.isfinite(p).all() else [round(float(c), 4) for c in p] for p in person]
            for person in frame] for frame in result.points]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"format": "humanvision.points3d", "version": 1, "skeleton": result.skeleton,
                               "joints": joints, "units": units, "cameras": result.cameras,
                               "frames": [int(f) for f in result.frames], "points": pts}))
    return out
