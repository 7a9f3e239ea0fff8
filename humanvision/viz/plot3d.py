"""3D skeleton plots with matplotlib.

Figures are built with ``matplotlib.figure.Figure`` directly (rendered by Agg when saved), so nothing touches
pyplot's global state or needs a display.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from humanvision.errors import DataError

__all__ = ["plot_skeleton_3d", "render_skeleton_3d"]

_UP = {"z": (0, 1, 2), "y": (0, 2, 1), "-y": (0, 2, 1)}


def plot_skeleton_3d(joints3d: Any, skeleton: Any = "h36m17", path: str | Path | None = None, ax: Any = None, *,
                     colors: Sequence[Sequence[int]] | None = None, labels: Sequence[str] | None = None,
                     up: str = "z", elev: float = 15.0, azim: float = -70.0, ground_plane: bool = False,
                     title: str | None = None, figsize: tuple[float, float] = (5.0, 5.0), dpi: int = 100,
                     linewidth: float = 2.5, marker_size: float = 12.0) -> Any:
    """Plot one or several 3D poses with equal axis scales.

    Args:
        joints3d: ``(J, 3)`` or ``(P, J, 3)``; non-finite joints are skipped.
        skeleton: a :class:`~humanvision.skeletons.Skeleton` or its name (limbs and per-limb RGB colours).
        path: save a PNG here (the figure is closed) and return the path; otherwise return the figure.
        ax: draw into an existing 3D ``Axes`` instead (returned; ``path``/``figsize`` are ignored).
        colors: one RGB colour per pose (overrides the skeleton's side colours, useful for GT vs prediction).
        up: which data axis points up: ``"z"`` (Human3.6M world), ``"y"`` or ``"-y"`` (camera frames, y down).
        ground_plane: draw a grey plane under the lowest joint.
    """
    from humanvision.skeletons import get_skeleton

    sk = get_skeleton(skeleton)
    pts = np.asarray(joints3d, dtype=np.float64)
    if pts.ndim == 2:
        pts = pts[None]
    if pts.ndim != 3 or pts.shape[2] != 3 or pts.shape[1] != sk.num_joints:
        raise DataError(f"expected (J, 3) or (P, J, 3) with J = {sk.num_joints} ({sk.name}), got {pts.shape}",
                        field="joints3d")
    if up not in _UP:
        raise DataError(f"unknown up axis {up!r}; use 'z', 'y' or '-y'", field="up")
    if colors is not None and len(colors) != len(pts):
        raise DataError(f"{len(colors)} colours for {len(pts)} poses", field="colors")
    if labels is not None and len(labels) != len(pts):
        raise DataError(f"{len(labels)} labels for {len(pts)} poses", field="labels")
    finite = np.isfinite(pts).all(axis=-1)
    if not finite.any():
        raise DataError("no finite joint to plot", field="joints3d")
    # Map data axes to plot axes (x, depth, up).
    plot = pts[..., list(_UP[up])].copy()
    if up == "-y":
        plot[..., 2] *= -1

    own_fig = ax is None
    if own_fig:
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize, dpi=dpi)  # not registered with pyplot: no global state, no display
        ax = fig.add_subplot(111, projection="3d")
    else:
        fig = ax.figure

    for p, (pose, ok) in enumerate(zip(plot, finite)):
        for li, (a, b) in enumerate(sk.limbs):
            if ok[a] and ok[b]:
                rgb = colors[p] if colors is not None else sk.limb_colors[li]
                ax.plot(*pose[[a, b]].T, color=np.asarray(rgb[:3]) / 255.0, linewidth=linewidth,
                        label=labels[p] if labels is not None and li == 0 else None)
        jc = (np.tile(np.asarray(colors[p][:3]) / 255.0, (int(ok.sum()), 1)) if colors is not None
              else np.asarray(sk.joint_colors)[ok] / 255.0)
        ax.scatter(*pose[ok].T, c=jc, s=marker_size, depthshade=False)

    valid = plot[finite]
    lo, hi = valid.min(axis=0), valid.max(axis=0)
    center, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1e-6) * 1.1
    if ground_plane:
        g = np.linspace(-half, half, 2)
        gx, gy = np.meshgrid(center[0] + g, center[1] + g)
        ax.plot_surface(gx, gy, np.full_like(gx, lo[2]), color=(0.6, 0.6, 0.6), alpha=0.3, linewidth=0)
    ax.set_xlim(center[0] - half, center[0] + half)
    ax.set_ylim(center[1] - half, center[1] + half)
    ax.set_zlim(center[2] - half, center[2] + half)
    ax.set_box_aspect((1, 1, 1))
    ax.view_init(elev=elev, azim=azim)
    ax.locator_params(nbins=4)
    ax.tick_params(labelsize=7)
    ax.set_xlabel("x")
    ax.set_ylabel({"z": "y", "y": "z", "-y": "z"}[up])
    ax.set_zlabel(up)
    if title:
        ax.set_title(title)
    if labels is not None:
        ax.legend(loc="upper right", fontsize="small")
    if not own_fig:
        return ax
    if path is None:
        return fig
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out


def render_skeleton_3d(joints3d: Any, skeleton: Any = "h36m17", size: tuple[int, int] = (400, 400), *,
                       dpi: int = 100, **kwargs: Any) -> np.ndarray:
    """:func:`plot_skeleton_3d` rendered (Agg, no file, no display) to an ``(h, w, 3)`` uint8 RGB image of
    ``size = (w, h)`` pixels, to place next to a 2D overlay or into a video frame. ``kwargs``: those of
    :func:`plot_skeleton_3d` (``up``, ``colors``, ``title``, ...)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    w, h = (int(v) for v in size)
    if w < 1 or h < 1:
        raise DataError(f"size must be positive (w, h), got {size}", field="size")
    fig = plot_skeleton_3d(joints3d, skeleton, figsize=(w / dpi, h / dpi), dpi=dpi, **kwargs)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    if rgb.shape[:2] != (h, w):  # figure sizes are floats: pad or trim the last pixel
        out = np.full((h, w, 3), 255, np.uint8)
        hh, ww = min(h, rgb.shape[0]), min(w, rgb.shape[1])
        out[:hh, :ww] = rgb[:hh, :ww]
        return out
    return np.ascontiguousarray(rgb)
