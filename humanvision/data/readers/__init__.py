"""Readers for the official dataset formats, each a lazy, picklable map-style dataset of :class:`Sample`.

=====================  =====================================================================================
reader                 format
=====================  =====================================================================================
CocoKeypoints          COCO keypoint json (any skeleton; per-instance or per-image)
AicKeypoints           AI Challenger in mmpose's COCO-style json (aic14)
CrowdPoseKeypoints     CrowdPose json (crowdpose14, ``images[].crowdIndex`` kept per sample)
OCHumanKeypoints       OCHuman's COCO-format val/test files (coco17; evaluation only, GT boxes)
CocoDetections         COCO person-detection results ``[{image_id, category_id, bbox, score}]``
write_occluded_subset  a COCO keypoint file scoring only mostly occluded people (AP on occluded people)
MpiiJson               MPII in mmpose's json (center/scale/joints/joints_vis, 1-based)
read_mpii_gt_mat       ``mpii_gt_val.mat`` (PCKh ground truth)
Human36MMultiView      learnable-triangulation ``human36m-multiview-labels-*.npy`` + processed image tree
Human36MPoses          raw Human3.6M ``MyPoseFeatures/D3_Positions/*.cdf`` (32 mocap joints -> h36m17)
ItopReader             ITOP ``*_depth_map.h5`` + ``*_labels.h5``
MultiModalReader       humanvision's RGB + depth + keypoints layout (``index.json``)
=====================  =====================================================================================

Every reader validates what it parses and raises :class:`humanvision.errors.DataError` naming the file, the
record (annotation id, person, frame) and the field; images are decoded only by ``Sample.load_image()``.
"""

from humanvision.data.readers.base import Reader
from humanvision.data.readers.coco import (
    AicKeypoints,
    CocoDetections,
    CocoKeypoints,
    OCHumanKeypoints,
    clean_coco_boxes,
    write_occluded_subset,
)
from humanvision.data.readers.crowdpose import CrowdPoseKeypoints
from humanvision.data.readers.h36m import (
    H36M_MOCAP_TO_H36M17,
    Human36MMultiView,
    Human36MPoses,
    read_h36m_cdf,
)
from humanvision.data.readers.itop import ItopReader
from humanvision.data.readers.mpii import MpiiGroundTruth, MpiiJson, read_mpii_gt_mat
from humanvision.data.readers.multimodal import MULTIMODAL_FORMAT, MultiModalReader, write_multimodal_index

__all__ = [
    "H36M_MOCAP_TO_H36M17",
    "MULTIMODAL_FORMAT",
    "AicKeypoints",
    "CocoDetections",
    "CocoKeypoints",
    "CrowdPoseKeypoints",
    "Human36MMultiView",
    "Human36MPoses",
    "ItopReader",
    "MpiiGroundTruth",
    "MpiiJson",
    "MultiModalReader",
    "OCHumanKeypoints",
    "Reader",
    "clean_coco_boxes",
    "read_h36m_cdf",
    "read_mpii_gt_mat",
    "write_multimodal_index",
    "write_occluded_subset",
]
