"""Keypoint target representations, each with ``encode`` (data pipeline) and ``decode`` (prediction path).

See :mod:`humanvision.codecs.base` for the contract. ``MSRAHeatmap`` (+ DARK) and ``UDPHeatmap`` (+ DARK-UDP)
follow pose2d.md §2.3/§2.6; ``SoftArgmax`` and the ``soft_argmax_2d/3d`` functions follow pose3d.md §2.2.
"""

from humanvision.codecs.base import KeypointCodec
from humanvision.codecs.heatmap import (
    MSRAHeatmap,
    UDPHeatmap,
    flip_heatmaps,
    gaussian_blur,
    heatmap_maximum,
    refine_dark,
    refine_dark_udp,
    refine_quarter_offset,
    render_gaussian_heatmaps,
)
from humanvision.codecs.integral import SoftArgmax, soft_argmax_2d, soft_argmax_3d

__all__ = [
    "KeypointCodec",
    "MSRAHeatmap",
    "SoftArgmax",
    "UDPHeatmap",
    "flip_heatmaps",
    "gaussian_blur",
    "heatmap_maximum",
    "refine_dark",
    "refine_dark_udp",
    "refine_quarter_offset",
    "render_gaussian_heatmaps",
    "soft_argmax_2d",
    "soft_argmax_3d",
]
