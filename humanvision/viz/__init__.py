"""Overlays and plots a person can look at: 2D skeletons and boxes, segmentation and depth, image grids (OpenCV),
3D skeletons (matplotlib). Images are RGB ``(H, W, 3)`` uint8; functions return new images."""

from humanvision.viz.draw import (
    colorize_depth,
    default_palette,
    draw_boxes,
    draw_skeleton,
    make_grid,
    overlay_segmentation,
)
from humanvision.viz.plot3d import plot_skeleton_3d

__all__ = [
    "colorize_depth",
    "default_palette",
    "draw_boxes",
    "draw_skeleton",
    "make_grid",
    "overlay_segmentation",
    "plot_skeleton_3d",
]
