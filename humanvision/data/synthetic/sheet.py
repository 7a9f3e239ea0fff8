"""Contact sheets: one picture showing what the synthetic world produces (RGB, depth, parts, keypoints, views)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from humanvision.data.io import write_image
from humanvision.data.synthetic.body import JOINTS, PART_NAMES
from humanvision.data.synthetic.scene import Frame, View
from humanvision.skeletons import get_skeleton

__all__ = ["contact_sheet", "part_palette", "view_panels"]


def part_palette() -> np.ndarray:
    """(len(PART_NAMES), 3) uint8 colours for part labels (background black, left parts greener, right redder)."""
    rng = np.random.default_rng(3)
    pal = (rng.uniform(0.25, 1.0, (len(PART_NAMES), 3)) * 255).astype(np.uint8)
    pal[0] = 0
    return pal


def _depth_colour(depth: np.ndarray) -> np.ndarray:
    valid = depth > 0
    out = np.zeros(depth.shape + (3,), np.uint8)
    if valid.any():
        lo, hi = np.percentile(depth[valid], [1, 99])
        hi = min(hi, lo + 5000.0)  # keep people readable against a far ground
        d = np.clip((depth - lo) / max(hi - lo, 1e-6), 0, 1)
        col = cv2.applyColorMap((255 * (1 - d)).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1]
        out[valid] = col[valid]
    return out


def view_panels(view: View, skeleton: str = "coco17") -> list[np.ndarray]:
    """Four RGB panels of one view: image, depth (turbo colour map), part labels, keypoint overlay.

    The overlay draws the ``skeleton``'s limbs between labelled joints; visible joints are filled circles,
    occluded ones (COCO ``v = 1``) hollow.
    """
    sk = get_skeleton(skeleton)
    sel = [JOINTS.index(j) for j in sk.joints]
    H, W = view.depth.shape
    r = max(1, round(min(H, W) / 160))
    over = view.rgb.copy()
    for p in range(view.keypoints_2d.shape[0]):
        kp, vis = view.keypoints_2d[p, sel], view.visibility[p, sel]
        for (a, b), col in zip(sk.limbs, sk.limb_colors):
            if vis[a] > 0 and vis[b] > 0:
                cv2.line(over, tuple(np.rint(kp[a]).astype(int)), tuple(np.rint(kp[b]).astype(int)), col, r,
                         cv2.LINE_AA)
        for j in range(len(sel)):
            if vis[j] > 0:
                cv2.circle(over, tuple(np.rint(kp[j]).astype(int)), r + 1, sk.joint_colors[j],
                           -1 if vis[j] == 2 else 1, cv2.LINE_AA)
        if view.boxes[p, 2] > 0:
            x, y, w, h = np.rint(view.boxes[p]).astype(int)
            cv2.rectangle(over, (x, y), (x + w, y + h), (255, 255, 255), 1)
    return [view.rgb, _depth_colour(view.depth), part_palette()[view.parts], over]


def contact_sheet(frames: list[Frame], path: str | Path | None = None, max_views: int = 4,
                  tile: int = 256) -> np.ndarray:
    """A grid with one row per (frame, view) and the four :func:`view_panels` as columns, each resized to
    ``tile`` pixels high; written as PNG when ``path`` is given. Returns the image (H, W, 3) uint8."""
    rows = []
    for frame in frames:
        for view in frame.views[:max_views]:
            panels = view_panels(view)
            h, w = panels[0].shape[:2]
            size = (max(1, round(w * tile / h)), tile)
            rows.append(np.concatenate([cv2.resize(p, size, interpolation=cv2.INTER_AREA if h > tile else
                                                   cv2.INTER_NEAREST) for p in panels], 1))
    if not rows:
        raise ValueError("contact_sheet needs at least one frame with a view")
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0))) for r in rows]
    sheet = np.ascontiguousarray(np.concatenate(rows, 0))
    if path is not None:
        write_image(path, sheet)
    return sheet
