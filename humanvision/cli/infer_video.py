"""Person detection and video tracking for ``humanvision infer`` (``--detector``, ``--track``, ``--smooth``).

The pieces are the torch-free runtime's (:mod:`humanvision.runtime.detectors`, :mod:`~humanvision.runtime.tracking`,
:mod:`~humanvision.runtime.video`); this module connects them to ``infer``'s per-frame COCO result records:

* :func:`detect_boxes`: the ``(xywh, score)`` boxes of one image from a detector (the whole image without one);
* :class:`TrackedVideos`: one :class:`~humanvision.runtime.VideoPoseTracks` per video. Each frame's records (the
  poses left after rescoring and OKS-NMS) get a ``track_id`` (and One-Euro smoothed keypoints with
  ``--smooth``); ``{video stem}_tracks.json`` holds the per-frame people with track ids, boxes and keypoints, and
  the video's read / skipped frame counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from humanvision.runtime.detectors import Detector, xyxy_to_xywh
from humanvision.runtime.tracking import TrackSmoother
from humanvision.runtime.video import VideoFrames, VideoPoseTracks

__all__ = ["TrackedVideos", "detect_boxes", "frame_index"]


def detect_boxes(detector: Detector | None, image: np.ndarray, name: str) -> list[tuple[list[float], float]]:
    """``[(xywh, score)]`` of the people ``detector`` finds in ``image`` (RGB); the whole image without one."""
    if detector is None:
        h, w = image.shape[:2]
        return [([0.0, 0.0, float(w), float(h)], 1.0)]
    boxes, scores = detector(image, name=name)
    return [([float(v) for v in b], float(s)) for b, s in zip(xyxy_to_xywh(boxes), scores)]


def frame_index(name: str) -> int:
    """The frame index of ``infer``'s frame name ``{video stem}_{frame:06d}``."""
    return int(name.rsplit("_", 1)[1])


def _record_sources(records: list[dict], keypoints: np.ndarray) -> list[int]:
    """The pose (row of ``keypoints`` ``(N, K, 2)``) each COCO result record was made from: records keep the poses'
    keypoints rounded to 3 decimals, so the nearest pose is the source (OKS-NMS leaves no two equal poses)."""
    out = []
    for r in records:
        k = np.asarray(r["keypoints"], dtype=np.float64).reshape(-1, 3)[:, :2]
        out.append(int(np.argmin(np.abs(keypoints - k[None]).sum((1, 2)))))
    return out


class TrackedVideos:
    """Track ids (and smoothing) for the frames of ``infer``'s videos; see the module docstring.

    Args:
        smooth: One-Euro smoothing of the tracked keypoints (:class:`~humanvision.runtime.TrackSmoother`
            defaults: ``min_cutoff`` 1 Hz, ``beta`` 0.05, ``d_cutoff`` 1 Hz).
        skeleton: the skeleton whose OKS sigmas the tracker uses (OKS + IoU; IoU alone for a skeleton without
            sigmas). Tracks live one second of frames without a detection.
    """

    def __init__(self, smooth: bool = False, skeleton: str = "coco17") -> None:
        self.smooth, self.skeleton = bool(smooth), skeleton
        self.videos: dict[Path, VideoPoseTracks] = {}

    def _tracks(self, video: Path) -> VideoPoseTracks:
        if video not in self.videos:
            from humanvision.runtime.tracking import PoseTracker
            from humanvision.skeletons import get_skeleton

            fps = VideoFrames(video).fps
            metric = "oks_iou" if get_skeleton(self.skeleton).sigmas is not None else "iou"  # OKS needs sigmas
            tracker = PoseTracker(metric=metric, skeleton=self.skeleton, max_age=max(1, round(fps)))
            self.videos[video] = VideoPoseTracks(video.name, fps, tracker=tracker,
                                                 smoother=TrackSmoother() if self.smooth else None)
        return self.videos[video]

    def update(self, video: Path, name: str, boxes: list[tuple[Any, float]], keypoints: Any, scores: Any,
               records: list[dict]) -> list[str]:
        """Give this frame's ``records`` a ``track_id`` (their keypoints smoothed with ``smooth``) in place;
        ``boxes`` / ``keypoints (N, K, 2)`` / ``scores (N, K)`` are all the frame's detections and poses. Returns a
        label per box (``"id 3"``; empty for a box whose pose OKS-NMS removed)."""
        tracks = self._tracks(video)
        kp_all = np.asarray(keypoints, dtype=np.float64).reshape(len(boxes), -1, 2) if len(boxes) else None
        src = _record_sources(records, kp_all) if records else []
        kp = np.array([kp_all[i] for i in src]).reshape(len(src), -1, 2) if src else np.zeros((0, 0, 2))
        sc = np.array([np.asarray(r["keypoints"], np.float64).reshape(-1, 3)[:, 2] for r in records]) if records \
            else np.zeros((0, 0))
        ids, kp = tracks.update(frame_index(name), [boxes[i][0] for i in src], [r["score"] for r in records], kp, sc)
        labels = [""] * len(boxes)
        for j, (r, i) in enumerate(zip(records, src)):
            r["track_id"] = int(ids[j])
            labels[i] = f"id {int(ids[j])}"
            if self.smooth:
                k = np.asarray(r["keypoints"], dtype=np.float64).reshape(-1, 3)
                k[:, :2] = kp[j]
                r["keypoints"] = [round(float(v), 3) for v in k.reshape(-1)]
        return labels

    def write(self, out: Path, video_stats: dict[str, dict] | None = None) -> list[Path]:
        """``{video stem}_tracks.json`` per video (with its read / skipped frame counts from ``video_stats``,
        keyed by file name)."""
        written = []
        for video, tracks in self.videos.items():
            tracks.stats = (video_stats or {}).get(video.name, {})
            written.append(tracks.write(Path(out) / f"{video.stem}_tracks.json"))
        return written
