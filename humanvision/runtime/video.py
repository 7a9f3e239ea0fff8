"""Video reading that survives bad files, and tracked top-down pose on videos (numpy, OpenCV, onnxruntime; no torch).

:class:`VideoFrames` yields ``(frame index, RGB frame)`` and counts what it could not read: a corrupt frame in the
middle (OpenCV's read fails, the next ones decode again: the gap shows in the stream's timestamps) and a file
that ends early (fewer frames than the container announces). A file that cannot be opened at all (e.g. an MP4 cut
before its index, the ``moov`` atom, which OpenCV writes at the end) is a :class:`VideoError`.

:class:`VideoPoseTracks` is the per-video state of tracked inference: a :class:`~humanvision.runtime.tracking.
PoseTracker`, optional One-Euro smoothing (:class:`~humanvision.runtime.tracking.TrackSmoother`, timestamps from
the frame index and the video's frame rate) and the per-frame records written as ``{video stem}_tracks.json``.
:func:`track_video` runs a detector and a :class:`~humanvision.runtime.PoseEstimator` over a video with it.

Per-frame JSON (:meth:`VideoPoseTracks.to_json`)::

    {"video": "clip.mp4", "fps": 25.0, "frames_read": 40, "frames_expected": 42, "frames_skipped": 2,
     "missing_frames": [17, 41], "read_failures": 2, "smoothing": {...} | null,
     "frames": [{"frame": 0, "time": 0.0, "people": [{"track_id": 0, "bbox": [x, y, w, h], "score": s,
                 "keypoints": [[x, y, score], ...]}, ...]}, ...]}
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from humanvision.errors import DataError
from humanvision.runtime.detectors import Detector, WholeImageDetector, xywh_to_xyxy, xyxy_to_xywh
from humanvision.runtime.tracking import PoseTracker, TrackSmoother

__all__ = ["VideoError", "VideoFrames", "VideoPoseTracks", "track_video"]


class VideoError(DataError):
    """A video that cannot be opened or decoded at all (names the file)."""


class VideoFrames:
    """Iterate ``(index, frame)`` over a video, ``frame`` ``(H, W, 3)`` uint8 RGB (``rgb=False``: BGR).

    Unreadable frames are skipped and counted. The index of a frame is its position in the stream: after a read
    failure it comes from the frame's timestamp (``round(ms * fps / 1000)``), so a corrupt frame leaves a gap.
    Reading stops at the end of the stream, or after ``max_failures`` consecutive failed reads (a truncated
    file). After the iteration, :attr:`stats` holds ``frames_read``, ``frames_expected`` (the container's frame
    count, None when unknown), ``frames_skipped`` (frames of ``range(max(expected, last index + 1))`` that were
    not delivered), ``missing_frames`` (their indices, the first 1000), ``read_failures`` (failed reads before
    the announced end) and ``truncated`` (the last frame read is before the announced end).
    """

    def __init__(self, path: str | Path, *, rgb: bool = True, max_failures: int = 25) -> None:
        self.path, self.rgb, self.max_failures = Path(path), bool(rgb), max(1, int(max_failures))
        if not self.path.is_file():
            raise VideoError("video not found", file=str(self.path))
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise VideoError("cannot open the video (not a video, or damaged: an MP4 cut short loses its index, "
                             "the 'moov' atom, and cannot be read at all)", file=str(self.path))
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 and np.isfinite(fps) else 25.0
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frames_expected = int(count) if count and count > 0 and np.isfinite(count) else None
        cap.release()
        self.delivered: list[int] = []
        self.read_failures = 0
        self.finished = False

    def __repr__(self) -> str:
        return f"VideoFrames({str(self.path)!r}, fps={self.fps:g}, frames_expected={self.frames_expected})"

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise VideoError("cannot open the video", file=str(self.path))
        self.delivered, self.read_failures, self.finished = [], 0, False
        next_index, failures_in_row, failed_since_last = 0, 0, False
        try:
            while True:
                ok = cap.grab()
                frame = cap.retrieve()[1] if ok else None
                if frame is None:
                    if self.frames_expected is None or next_index >= self.frames_expected:
                        break  # the end of the stream
                    self.read_failures += 1
                    failures_in_row += 1
                    failed_since_last = True
                    if failures_in_row >= self.max_failures:
                        break  # a file that ends early
                    continue
                index = next_index
                if failed_since_last:  # where the stream resumed: from the timestamp
                    ms = cap.get(cv2.CAP_PROP_POS_MSEC)
                    if ms is not None and np.isfinite(ms) and ms >= 0:
                        index = max(next_index, round(ms * self.fps / 1000.0))
                failures_in_row, failed_since_last = 0, False
                self.delivered.append(index)
                next_index = index + 1
                yield index, (cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if self.rgb else frame)
        finally:
            cap.release()
            self.finished = True

    @property
    def stats(self) -> dict[str, Any]:
        last = self.delivered[-1] + 1 if self.delivered else 0
        total = max(self.frames_expected or 0, last)
        have = set(self.delivered)
        missing = [i for i in range(total) if i not in have]
        return {"frames_read": len(self.delivered), "frames_expected": self.frames_expected,
                "frames_skipped": len(missing), "missing_frames": missing[:1000],
                "read_failures": self.read_failures,
                "truncated": self.frames_expected is not None and last < self.frames_expected}


class VideoPoseTracks:
    """Track ids (and optionally One-Euro smoothing) for the people of one video, and its per-frame records.

    Args:
        name: the video's file name (recorded in the JSON).
        fps: frames per second (timestamps = frame index / fps, for the smoothing).
        tracker: a :class:`PoseTracker` (default: OKS + IoU, ``max_age`` one second of frames).
        smoother: a :class:`TrackSmoother`, or None for raw keypoints.
        score_digits: rounding of the JSON numbers (keypoints to 2 decimals, scores to ``score_digits``).
    """

    def __init__(self, name: str, fps: float, *, tracker: PoseTracker | None = None,
                 smoother: TrackSmoother | None = None, score_digits: int = 4) -> None:
        self.name, self.fps = name, float(fps) if fps and fps > 0 else 25.0
        self.tracker = tracker if tracker is not None else PoseTracker(max_age=max(1, round(self.fps)))
        self.smoother, self.digits = smoother, int(score_digits)
        self.frames: list[dict[str, Any]] = []
        self.stats: dict[str, Any] = {}

    def update(self, frame: int, boxes_xywh: Any, box_scores: Any, keypoints: Any,
               scores: Any) -> tuple[np.ndarray, np.ndarray]:
        """One frame's people -> ``(track ids (N,), keypoints (N, K, 2))``, the keypoints smoothed when a smoother
        is set; the frame's record is appended to :attr:`frames`."""
        b = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
        kp = np.asarray(keypoints, dtype=np.float64).reshape(len(b), -1, 2) if len(b) else np.zeros((0, 0, 2))
        sc = np.asarray(scores, dtype=np.float64).reshape(len(b), -1) if len(b) else np.zeros((0, 0))
        bs = np.asarray(box_scores, dtype=np.float64).reshape(-1)
        ids = self.tracker.update(xywh_to_xyxy(b), kp if len(b) else None, sc if len(b) else None, frame=frame)
        t = frame / self.fps
        if self.smoother is not None and len(b):
            kp = self.smoother(ids, kp, t)
        d = self.digits
        people = [{"track_id": int(ids[i]), "bbox": [round(float(v), 2) for v in b[i]],
                   "score": round(float(bs[i]), d) if i < len(bs) else None,
                   "keypoints": [[round(float(x), 2), round(float(y), 2), round(float(s), d)]
                                 for (x, y), s in zip(kp[i], sc[i])]} for i in range(len(b))]
        self.frames.append({"frame": int(frame), "time": round(t, 6), "people": people})
        return ids, kp

    def to_json(self) -> dict[str, Any]:
        s = self.smoother
        smoothing = None if s is None else {"filter": "one_euro", "min_cutoff": s.min_cutoff, "beta": s.beta,
                                            "d_cutoff": s.d_cutoff}
        return {"video": self.name, "fps": self.fps, **self.stats,
                "tracker": {"metric": self.tracker.metric, "min_similarity": self.tracker.min_similarity,
                            "max_age": self.tracker.max_age},
                "smoothing": smoothing, "frames": self.frames}

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_json()))
        return path


def track_video(path: str | Path, pose: Any, detector: Detector | None = None, *,
                tracker: PoseTracker | None = None, smoother: TrackSmoother | None = None,
                max_frames: int | None = None) -> VideoPoseTracks:
    """Detect, estimate and track the people of a video, torch-free.

    Args:
        path: the video.
        pose: a :class:`~humanvision.runtime.PoseEstimator` (or any ``pose(image RGB, boxes xywh) ->
            (keypoints (N, K, 2), scores (N, K))``).
        detector: a :mod:`~humanvision.runtime.detectors` detector (default: the whole image).
        tracker, smoother: see :class:`VideoPoseTracks`.
        max_frames: stop after this many frames.

    Returns the :class:`VideoPoseTracks` (``.frames``: per-frame people with track ids; ``.stats``: read and
    skipped frame counts; ``.to_json()`` / ``.write(path)``).
    """
    frames = VideoFrames(path)
    detector = detector if detector is not None else WholeImageDetector()
    tracks = VideoPoseTracks(frames.path.name, frames.fps, tracker=tracker, smoother=smoother)
    for n, (index, image) in enumerate(frames):
        if max_frames is not None and n >= max_frames:
            break
        boxes, box_scores = detector(image, name=f"{frames.path.stem}_{index:06d}")
        xywh = xyxy_to_xywh(boxes)
        if len(xywh):
            kp, sc = pose(image, xywh)
        else:
            kp, sc = np.zeros((0, 0, 2)), np.zeros((0, 0))
        tracks.update(index, xywh, box_scores, kp, sc)
    tracks.stats = frames.stats
    return tracks
