"""OpenPose ``--write_json`` output: one JSON file per frame, several people per file.

Layout of a frame file (OpenPose doc ``output.md``, "JSON Output Format")::

    {"version": 1.3,
     "people": [{"person_id": [-1],
                 "pose_keypoints_2d": [x0, y0, c0, x1, y1, c1, ...],   # one (x, y, confidence) per body part
                 "face_keypoints_2d": [...], "hand_left_keypoints_2d": [...], "hand_right_keypoints_2d": [...],
                 ...}, ...]}

Files are named ``{video}_{frame:012d}_keypoints.json``; the frame number is the last run of digits of the name
(files are read in frame order; without digits, in name order). An undetected part is ``0, 0, 0``. The number of
parts gives the layout: 25 is ``BODY_25`` (the default model; pass ``layout="body25b"`` for the experimental
``BODY_25B``, which also has 25), 18 is OpenPose's ``COCO`` (``coco18``). Files of version 1.0 name the field
``pose_keypoints``; both are read. Only the body keypoints are read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from humanvision.data.readers.base import load_json
from humanvision.errors import DataError
from humanvision.skeletons import SkeletonError, get_skeleton

__all__ = ["OPENPOSE_LAYOUTS", "Detections2D", "openpose_layout", "read_openpose_folder"]

#: Default joint set for each OpenPose body keypoint count (BODY_25B also has 25: pass it as ``layout``).
OPENPOSE_LAYOUTS = {25: "body25", 18: "coco18", 17: "coco17"}

_DIGITS = re.compile(r"(\d+)(?!.*\d)")


@dataclass
class Detections2D:
    """2D keypoint detections of one camera over a sequence, several people per frame (padded).

    Attributes:
        frames: (F,) frame numbers, strictly increasing.
        keypoints: (F, P, J, 2) pixel coordinates; NaN for padding (fewer than P people) and undetected parts.
        scores: (F, P, J) confidences; 0 for padding and undetected parts.
        skeleton: name of the joint set (:func:`humanvision.skeletons.get_skeleton`).
        source: the file or folder read.
        files: the file each frame came from (for messages), if the source has one file per frame.
    """

    frames: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray
    skeleton: str
    source: str
    files: list[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        F = len(self.frames)
        if self.keypoints.ndim != 4 or self.keypoints.shape[0] != F or self.keypoints.shape[-1] != 2:
            raise DataError(f"keypoints must be (F={F}, P, J, 2), got {self.keypoints.shape}", file=self.source,
                            field="keypoints")
        if self.scores.shape != self.keypoints.shape[:-1]:
            raise DataError(f"scores must be {self.keypoints.shape[:-1]}, got {self.scores.shape}", file=self.source,
                            field="scores")
        if F > 1 and not (np.diff(self.frames) > 0).all():
            raise DataError("frame numbers must be strictly increasing", file=self.source, field="frames")

    @property
    def num_joints(self) -> int:
        return self.keypoints.shape[2]

    @property
    def max_people(self) -> int:
        return self.keypoints.shape[1]

    @classmethod
    def from_people(cls, frames: list[int], people: list[list[np.ndarray]], skeleton: str, source: str,
                    num_joints: int, files: list[str] | None = None) -> Detections2D:
        """Pack per-frame lists of (J, 3) ``(x, y, score)`` arrays; parts with score <= 0 become NaN / 0."""
        P = max([len(p) for p in people], default=0)
        kp = np.full((len(frames), P, num_joints, 2), np.nan)
        sc = np.zeros((len(frames), P, num_joints))
        for i, persons in enumerate(people):
            for k, a in enumerate(persons):
                seen = a[:, 2] > 0
                kp[i, k][seen] = a[seen, :2]
                sc[i, k][seen] = a[seen, 2]
        return cls(np.asarray(frames, dtype=np.int64), kp, sc, skeleton, source, files)


def openpose_layout(num_keypoints: int, layout: str | None, file: str | None = None) -> str:
    """The joint-set name of ``num_keypoints`` body parts: ``layout`` when given (checked), else the default."""
    if layout is not None:
        try:
            sk = get_skeleton(layout)
        except SkeletonError as e:
            raise DataError(str(e), file=file, field="layout") from None
        if sk.num_joints != num_keypoints:
            raise DataError(f"layout {sk.name!r} has {sk.num_joints} keypoints but the file has {num_keypoints}",
                            file=file, field="pose_keypoints_2d")
        return sk.name
    if num_keypoints not in OPENPOSE_LAYOUTS:
        raise DataError(f"{num_keypoints} keypoints per person match no known layout "
                        f"({', '.join(f'{k}: {v}' for k, v in OPENPOSE_LAYOUTS.items())}); pass the layout",
                        file=file, field="pose_keypoints_2d")
    return OPENPOSE_LAYOUTS[num_keypoints]


def _frame_people(path: Path) -> list[np.ndarray]:
    f = str(path)
    data = load_json(path)
    if not isinstance(data, dict) or "people" not in data:
        raise DataError("expected an object with a 'people' list (OpenPose --write_json output)", file=f,
                        field="people")
    if not isinstance(data["people"], list):
        raise DataError(f"expected a list, got {type(data['people']).__name__}", file=f, field="people")
    out = []
    for i, person in enumerate(data["people"]):
        key = "pose_keypoints_2d" if isinstance(person, dict) and "pose_keypoints_2d" in person else "pose_keypoints"
        if not isinstance(person, dict) or key not in person:
            raise DataError("missing", file=f, record=f"people[{i}]", field="pose_keypoints_2d")
        try:
            flat = np.asarray(person[key], dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise DataError("expected a flat list of numbers x, y, c, ...", file=f, record=f"people[{i}]",
                            field=key) from None
        if flat.size == 0:
            continue  # OpenPose writes an empty list when it has no body model output
        if flat.size % 3 or not np.isfinite(flat).all():
            raise DataError(f"expected finite (x, y, c) triplets, got {flat.size} values", file=f,
                            record=f"people[{i}]", field=key)
        out.append(flat.reshape(-1, 3))
    return out


def read_openpose_folder(folder: str | Path, layout: str | None = None) -> Detections2D:
    """Read a folder of OpenPose per-frame JSON files (``*.json``) into :class:`Detections2D`.

    ``layout`` names the joint set (``body25``, ``body25b``, ``coco18``, ...); by default it follows the keypoint
    count (:data:`OPENPOSE_LAYOUTS`). Every person of every file must have the same count; a file that breaks this
    is named in the error. Frames without people are kept (no detections).
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError("not a folder of OpenPose JSON files", file=str(root))
    files = sorted(p for p in root.iterdir() if p.suffix.lower() == ".json" and p.is_file())
    if not files:
        raise DataError("no .json files", file=str(root))
    numbers = [_DIGITS.search(p.stem) for p in files]
    if all(m is not None for m in numbers):
        frames = [int(m.group(1)) for m in numbers]
        order = np.argsort(frames, kind="stable")
        files, frames = [files[i] for i in order], [frames[i] for i in order]
        for a, b, fa, fb in zip(frames, frames[1:], files, files[1:]):
            if a == b:
                raise DataError(f"frame number {a} also belongs to {fa.name}", file=str(fb), field="file name")
    else:
        frames = list(range(len(files)))
    people, count, name = [], None, None
    for p in files:
        persons = _frame_people(p)
        for i, a in enumerate(persons):
            if count is None:
                count, name = len(a), openpose_layout(len(a), layout, str(p))
            elif len(a) != count:
                raise DataError(f"{len(a)} keypoints, but earlier files have {count} ({name}): mixed layouts",
                                file=str(p), record=f"people[{i}]", field="pose_keypoints_2d")
        people.append(persons)
    if count is None:  # nobody detected anywhere: the layout can only come from the caller
        if layout is None:
            raise DataError("no person in any file, so the keypoint layout is unknown; pass the layout",
                            file=str(root))
        name = get_skeleton(layout).name
        count = get_skeleton(layout).num_joints
    return Detections2D.from_people(frames, people, name, str(root), count, [str(p) for p in files])
