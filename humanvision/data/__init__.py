"""Data: the :class:`Sample` record, image/depth file I/O and readers for the official formats.

>>> from humanvision.data import CocoKeypoints
>>> reader = CocoKeypoints("person_keypoints_val2017.json", "val2017/")   # doctest: +SKIP
>>> s = reader[0]; img = s.load_image(); s.keypoints_2d.shape              # doctest: +SKIP
(1, 17, 2)

The synthetic human world (``humanvision.data.synthetic``) and the top-down pipeline
(``humanvision.data.transforms``) are sub-modules imported by name.
"""

from humanvision.data.io import read_depth, read_image, read_mask, write_depth, write_image, write_mask
from humanvision.data.readers import (
    H36M_MOCAP_TO_H36M17,
    MULTIMODAL_FORMAT,
    AicKeypoints,
    CocoDetections,
    CocoKeypoints,
    Human36MMultiView,
    Human36MPoses,
    ItopReader,
    MpiiGroundTruth,
    MpiiJson,
    MultiModalReader,
    Reader,
    clean_coco_boxes,
    read_h36m_cdf,
    read_mpii_gt_mat,
    write_multimodal_index,
)
from humanvision.data.sample import LazyImage, MultiViewSample, Sample

__all__ = [
    "H36M_MOCAP_TO_H36M17",
    "MULTIMODAL_FORMAT",
    "AicKeypoints",
    "CocoDetections",
    "CocoKeypoints",
    "Human36MMultiView",
    "Human36MPoses",
    "ItopReader",
    "LazyImage",
    "MpiiGroundTruth",
    "MpiiJson",
    "MultiModalReader",
    "MultiViewSample",
    "Reader",
    "Sample",
    "clean_coco_boxes",
    "read_depth",
    "read_h36m_cdf",
    "read_image",
    "read_mask",
    "read_mpii_gt_mat",
    "write_depth",
    "write_image",
    "write_mask",
    "write_multimodal_index",
]
