"""Deployable inference without torch: an exported ONNX pose model on numpy, OpenCV and onnxruntime.

Nothing here imports torch or timm: numpy, ``opencv-python-headless`` and ``onnxruntime`` (the ``runtime`` extra)
are all it needs. The package's core dependencies still name torch, so on a machine without it install
``pip install --no-deps humanvision`` plus those three. :class:`PoseEstimator` reads the preprocessing and decoding contract that
``humanvision export`` writes into the ONNX metadata (see :mod:`humanvision.runtime.pose`);
:class:`ReIDEmbedder` and :class:`AttributeClassifier` do the same for exported re-id and pedestrian-attribute
models (:mod:`humanvision.runtime.person`), :class:`MonocularPose3D` for monocular 3D pose networks
(:mod:`humanvision.runtime.pose3d`), :class:`HumanParser` for human parsing (:mod:`humanvision.runtime.parsing`),
:class:`MultiViewTriangulator` for multi-view algebraic triangulation and :class:`VolumetricTriangulator` for the volumetric
methods (:mod:`humanvision.runtime.multiview`) and
:class:`A2JPose` for A2J on depth maps (:mod:`humanvision.runtime.a2j`).
Person detectors (:mod:`~humanvision.runtime.detectors`: ONNX YOLOX / RTMDet, box files, the whole image),
tracking and One-Euro smoothing (:mod:`~humanvision.runtime.tracking`) and robust video reading with tracked
inference (:mod:`~humanvision.runtime.video`) need nothing more.
"""

from humanvision.runtime.a2j import A2J_FORMAT, A2JPose, check_a2j_metadata
from humanvision.runtime.codec import decode_heatmaps
from humanvision.runtime.detectors import (
    BoxFileDetector,
    Detector,
    DetectorLayoutError,
    OnnxDetector,
    WholeImageDetector,
    load_detector,
)
from humanvision.runtime.multiview import (
    MULTIVIEW_FORMAT,
    MultiViewTriangulator,
    VolumetricTriangulator,
    check_multiview_metadata,
)
from humanvision.runtime.parsing import PARSING_FORMAT, HumanParser, check_parsing_metadata
from humanvision.runtime.person import (
    PERSON_FORMAT,
    AttributeClassifier,
    PersonCropModel,
    ReIDEmbedder,
    check_person_metadata,
    cut_box,
)
from humanvision.runtime.pose import (
    FORMAT,
    METADATA_KEY,
    METADATA_VERSION,
    MetadataError,
    PoseEstimator,
    check_metadata,
    read_metadata,
    read_rgb,
)
from humanvision.runtime.pose3d import POSE3D_FORMAT, MonocularPose3D, check_pose3d_metadata
from humanvision.runtime.tracking import OneEuroFilter, PoseTracker, TrackSmoother
from humanvision.runtime.video import VideoError, VideoFrames, VideoPoseTracks, track_video

__all__ = [
    "A2J_FORMAT",
    "FORMAT",
    "METADATA_KEY",
    "METADATA_VERSION",
    "MULTIVIEW_FORMAT",
    "PARSING_FORMAT",
    "PERSON_FORMAT",
    "POSE3D_FORMAT",
    "A2JPose",
    "AttributeClassifier",
    "BoxFileDetector",
    "Detector",
    "DetectorLayoutError",
    "HumanParser",
    "MetadataError",
    "MonocularPose3D",
    "MultiViewTriangulator",
    "OneEuroFilter",
    "OnnxDetector",
    "PersonCropModel",
    "PoseEstimator",
    "PoseTracker",
    "ReIDEmbedder",
    "TrackSmoother",
    "VideoError",
    "VideoFrames",
    "VideoPoseTracks",
    "VolumetricTriangulator",
    "WholeImageDetector",
    "check_a2j_metadata",
    "check_metadata",
    "check_multiview_metadata",
    "check_parsing_metadata",
    "check_person_metadata",
    "check_pose3d_metadata",
    "cut_box",
    "decode_heatmaps",
    "load_detector",
    "read_metadata",
    "read_rgb",
    "track_video",
]
