"""Deployable inference without torch: an exported ONNX pose model on numpy, OpenCV and onnxruntime.

Nothing here imports torch or timm: numpy, ``opencv-python-headless`` and ``onnxruntime`` (the ``runtime`` extra)
are all it needs. The package's core dependencies still name torch, so on a machine without it install
``pip install --no-deps humanvision`` plus those three. :class:`PoseEstimator` reads the preprocessing and decoding contract that
``humanvision export`` writes into the ONNX metadata (see :mod:`humanvision.runtime.pose`).
"""

from humanvision.runtime.codec import decode_heatmaps
from humanvision.runtime.pose import (
    FORMAT,
    METADATA_KEY,
    METADATA_VERSION,
    MetadataError,
    PoseEstimator,
    check_metadata,
    read_metadata,
)

__all__ = ["FORMAT", "METADATA_KEY", "METADATA_VERSION", "MetadataError", "PoseEstimator", "check_metadata",
           "decode_heatmaps", "read_metadata"]
