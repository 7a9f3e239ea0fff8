"""CrowdPose keypoints (Li et al., CVPR'19): COCO-style json, 14 joints, a crowd index per image.

Layout (``crowdpose_{train,val,trainval,test}.json``, also mmpose's ``mmpose_crowdpose_*.json``)::

    {"images":      [{"id": int, "file_name": str, "width": int, "height": int, "crowdIndex": float}, ...],
     "annotations": [{"id": int, "image_id": int, "category_id": 1, "bbox": [x, y, w, h],
                      "keypoints": [x1, y1, v1, ..., x14, y14, v14], "num_keypoints": int,
                      "iscrowd": 0 | 1}, ...],
     "categories":  [{"id": 1, "name": "person", "keypoints": [14 names], "skeleton": [...]}]}

Joints (``crowdpose14``): left/right shoulder, elbow, wrist, hip, knee, ankle (left first), head (top), neck.
There is no ``area`` field: the reader's ``meta["area"]`` falls back to ``w * h`` and the official evaluation
scales OKS by ``0.53 * w * h`` of the GT box (:func:`humanvision.metrics.coco.evaluate_crowdpose`, which also
reports AP easy / medium / hard by ``crowdIndex``; ``humanvision evaluate crowdpose``). The crowd index of an
image measures how much its people overlap (0: nobody overlaps, 1: heavy crowding).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from humanvision.data.readers.coco import CocoKeypoints
from humanvision.skeletons import Skeleton

__all__ = ["CrowdPoseKeypoints"]


class CrowdPoseKeypoints(CocoKeypoints):
    """CrowdPose keypoint annotations; every image must carry a finite ``crowdIndex``.

    Same options as :class:`~humanvision.data.readers.coco.CocoKeypoints` (default skeleton ``crowdpose14``).
    Samples carry ``meta["crowd_index"]``; :attr:`crowd_index` holds it for every image (order of
    :attr:`image_ids`). A missing or non-numeric ``crowdIndex`` is a :class:`~humanvision.errors.DataError`
    naming the file, the image and the field.
    """

    image_fields: ClassVar[dict[str, str]] = {"crowdIndex": "crowd_index"}

    def __init__(self, annotations: str | Path, image_root: str | Path | None = None,
                 skeleton: str | Skeleton = "crowdpose14", **kwargs) -> None:
        super().__init__(annotations, image_root, skeleton=skeleton, **kwargs)

    @property
    def crowd_index(self) -> np.ndarray:
        """``(num_images,)`` crowd index of every image, in the order of :attr:`image_ids`."""
        return self.image_extras["crowd_index"]
