"""2D overlays with OpenCV: skeletons, boxes, segmentation masks, depth maps and image grids.

Images are ``(H, W, 3)`` uint8 in **RGB** (the skeleton colours are RGB); pass ``bgr=True`` when drawing on an
image read with ``cv2.imread``. Every function returns a new image and leaves its input untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from humanvision.errors import DataError

__all__ = ["colorize_depth", "default_palette", "draw_boxes", "draw_skeleton", "make_grid",
           "overlay_segmentation"]

Color = tuple[int, int, int]


def _image(image: Any, name: str = "image") -> np.ndarray:
    """A contiguous ``(H, W, 3)`` uint8 copy (grey images are expanded to 3 channels)."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise DataError(f"expected an (H, W, 3) image, got shape {img.shape}", field=name)
    img = img[..., :3]
    if img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.floating) and np.nanmax(img, initial=0.0) <= 1.0:
            img = img * 255.0
        img = np.clip(np.nan_to_num(img.astype(np.float64)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img).copy()


def _color(c: Sequence[int], bgr: bool) -> Color:
    r, g, b = (int(v) for v in c[:3])
    return (b, g, r) if bgr else (r, g, b)


def _auto_size(img: np.ndarray, frac: float, minimum: int) -> int:
    return max(minimum, round(frac * max(img.shape[:2])))


def draw_skeleton(image: Any, keypoints: Any, skeleton: Any = "coco17", scores: Any = None, threshold: float = 0.3,
                  radius: int | None = None, thickness: int | None = None, *, bgr: bool = False,
                  joint_colors: Sequence[Color] | None = None, limb_colors: Sequence[Color] | None = None) -> np.ndarray:
    """Draw one or several skeletons.

    Args:
        image: ``(H, W, 3)`` uint8 (RGB unless ``bgr``).
        keypoints: ``(K, 2|3)`` or ``(P, K, 2|3)`` pixel coordinates; a third column is used as the score when
            ``scores`` is None (COCO ``v`` flags work: 0 hides the joint).
        skeleton: a :class:`~humanvision.skeletons.Skeleton` or its name; limbs and colours come from it.
        scores: ``(K,)`` or ``(P, K)`` confidences; joints with ``score < threshold`` (or non-finite coordinates)
            are not drawn, nor are limbs touching them.
        radius, thickness: joint circle radius and limb width in pixels (default: scaled with the image size).
        joint_colors, limb_colors: override the skeleton's RGB colours.
    """
    import cv2

    from humanvision.skeletons import get_skeleton

    sk = get_skeleton(skeleton)
    img = _image(image)
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim == 2:
        kp = kp[None]
    if kp.ndim != 3 or kp.shape[2] not in (2, 3):
        raise DataError(f"expected (K, 2|3) or (P, K, 2|3), got shape {kp.shape}", field="keypoints")
    if kp.shape[1] != sk.num_joints:
        raise DataError(f"{kp.shape[1]} joints but skeleton {sk.name!r} has {sk.num_joints}", field="keypoints")
    if scores is not None:
        sc = np.asarray(scores, dtype=np.float64).reshape(-1, sk.num_joints) if np.size(scores) else None
        if sc is None or sc.shape[0] != kp.shape[0]:
            raise DataError(f"expected {kp.shape[:2]} scores, got shape {np.shape(scores)}", field="scores")
    elif kp.shape[2] == 3:
        sc = kp[..., 2]
    else:
        sc = np.ones(kp.shape[:2])
    show = (sc >= threshold) & np.isfinite(kp[..., :2]).all(axis=-1) & np.isfinite(sc)
    jc = list(joint_colors) if joint_colors is not None else list(sk.joint_colors)
    lc = list(limb_colors) if limb_colors is not None else list(sk.limb_colors)
    if len(jc) != sk.num_joints or len(lc) != len(sk.limbs):
        raise DataError("one colour per joint and one per limb are needed", field="joint_colors")
    r = radius if radius is not None else _auto_size(img, 0.006, 2)
    t = thickness if thickness is not None else _auto_size(img, 0.004, 1)
    shift = 4  # sub-pixel drawing: coordinates are passed as integers scaled by 2**shift
    pts = np.round(np.nan_to_num(kp[..., :2]) * (1 << shift)).astype(np.int64)
    for person, vis in zip(pts, show):
        for (a, b), col in zip(sk.limbs, lc):
            if vis[a] and vis[b]:
                cv2.line(img, tuple(map(int, person[a])), tuple(map(int, person[b])), _color(col, bgr), t,
                         cv2.LINE_AA, shift)
        for j in np.flatnonzero(vis):
            cv2.circle(img, tuple(map(int, person[j])), r << shift, _color(jc[j], bgr), -1, cv2.LINE_AA, shift)
    return img


def draw_boxes(image: Any, boxes: Any, labels: Sequence[str] | None = None, scores: Any = None,
               color: Color | Sequence[Color] = (255, 64, 64), thickness: int | None = None, *,
               fmt: str = "xywh", bgr: bool = False) -> np.ndarray:
    """Draw boxes ``(N, 4)`` (``fmt`` ``"xywh"`` as in COCO, or ``"xyxy"``) with optional text labels/scores.

    ``color`` is one RGB colour or one per box.
    """
    import cv2

    img = _image(image)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if np.size(boxes) else np.zeros((0, 4))
    if not np.isfinite(b).all():
        raise DataError("contains NaN or inf", field="boxes")
    if fmt == "xywh":
        b = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
    elif fmt != "xyxy":
        raise DataError(f"unknown box format {fmt!r}; use 'xywh' or 'xyxy'", field="fmt")
    n = len(b)
    colors = [color] * n if np.ndim(color) == 1 else list(color)
    if len(colors) != n:
        raise DataError(f"{len(colors)} colours for {n} boxes", field="color")
    if labels is not None and len(labels) != n:
        raise DataError(f"{len(labels)} labels for {n} boxes", field="labels")
    sc = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    if sc is not None and len(sc) != n:
        raise DataError(f"{len(sc)} scores for {n} boxes", field="scores")
    t = thickness if thickness is not None else _auto_size(img, 0.003, 1)
    font_scale = max(0.35, max(img.shape[:2]) / 1000.0)
    for i, (x1, y1, x2, y2) in enumerate(np.round(b).astype(np.int64)):
        col = _color(colors[i], bgr)
        cv2.rectangle(img, (int(x1), int(y1)), (int(x2), int(y2)), col, t)
        text = " ".join(s for s in ((labels[i] if labels is not None else ""),
                                    (f"{sc[i]:.2f}" if sc is not None else "")) if s)
        if text:
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
            top = max(int(y1) - th - base, 0)
            cv2.rectangle(img, (int(x1), top), (int(x1) + tw, top + th + base), col, -1)
            cv2.putText(img, text, (int(x1), top + th), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), 1,
                        cv2.LINE_AA)
    return img


def default_palette(num_classes: int = 256) -> np.ndarray:
    """``(num_classes, 3)`` uint8 RGB palette (the PASCAL VOC bit-interleaving scheme; class 0 is black)."""
    ids = np.arange(num_classes)
    pal = np.zeros((num_classes, 3), dtype=np.int64)
    for bit in range(8):
        for ch in range(3):
            pal[:, ch] |= ((ids >> (3 * bit + ch)) & 1) << (7 - bit)
    return pal.astype(np.uint8)


def overlay_segmentation(image: Any, labels: Any, palette: Any = None, alpha: float = 0.5, *,
                         ignore_index: int | None = 255, background: int | None = 0, bgr: bool = False) -> np.ndarray:
    """Blend a label map ``(H, W)`` over the image: ``(1 - alpha) * image + alpha * palette[label]``.

    Pixels labelled ``ignore_index`` or ``background`` (None to colour it too) keep the image. ``palette`` is
    ``(C, 3)`` RGB (default :func:`default_palette`).
    """
    img = _image(image)
    lab = np.asarray(labels)
    if lab.shape != img.shape[:2]:
        raise DataError(f"label map shape {lab.shape} does not match image {img.shape[:2]}", field="labels")
    if not 0.0 <= alpha <= 1.0:
        raise DataError(f"must lie in [0, 1], got {alpha}", field="alpha")
    lab = lab.astype(np.int64)
    pal = default_palette() if palette is None else np.asarray(palette, dtype=np.float64).reshape(-1, 3)
    color_px = np.ones(lab.shape, dtype=bool)
    if ignore_index is not None:
        color_px &= lab != ignore_index
    if background is not None:
        color_px &= lab != background
    bad = color_px & ((lab < 0) | (lab >= len(pal)))
    if bad.any():
        raise DataError(f"label {int(lab[bad][0])} has no palette colour ({len(pal)} colours)", field="labels")
    colours = np.asarray(pal, dtype=np.float64)[np.where(color_px, lab, 0)]
    if bgr:
        colours = colours[..., ::-1]
    out = img.astype(np.float64)
    out[color_px] = (1.0 - alpha) * out[color_px] + alpha * colours[color_px]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def colorize_depth(depth: Any, vmin: float | None = None, vmax: float | None = None, *, colormap: int | None = None,
                   invalid_color: Color = (0, 0, 0), bgr: bool = False) -> np.ndarray:
    """``(H, W)`` depth -> ``(H, W, 3)`` uint8 RGB with a colour map (default TURBO, near = blue).

    Pixels ``<= 0`` or non-finite are invalid (Kinect/ITOP convention) and painted ``invalid_color``; the range
    defaults to the 1st-99th percentile of the valid pixels.
    """
    import cv2

    d = np.asarray(depth, dtype=np.float64)
    if d.ndim == 3 and d.shape[2] == 1:
        d = d[..., 0]
    if d.ndim != 2:
        raise DataError(f"expected an (H, W) depth map, got shape {d.shape}", field="depth")
    valid = np.isfinite(d) & (d > 0)
    if valid.any():
        lo = float(np.percentile(d[valid], 1)) if vmin is None else float(vmin)
        hi = float(np.percentile(d[valid], 99)) if vmax is None else float(vmax)
    else:
        lo, hi = 0.0, 1.0
    scaled = np.clip((np.where(valid, d, lo) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    out = cv2.applyColorMap((scaled * 255).round().astype(np.uint8),
                            cv2.COLORMAP_TURBO if colormap is None else colormap)  # BGR
    if not bgr:
        out = out[..., ::-1]
    out = np.ascontiguousarray(out)
    out[~valid] = _color(invalid_color, bgr)
    return out


def make_grid(images: Sequence[Any], ncols: int | None = None, titles: Sequence[str] | None = None, *,
              pad: int = 4, background: Color = (255, 255, 255), title_height: int | None = None) -> np.ndarray:
    """Tile images into one RGB image, ``ncols`` per row (default ``ceil(sqrt(n))``), optional titles above.

    Cells have the size of the largest image; smaller images are centred.
    """
    import cv2

    if len(images) == 0:
        raise DataError("no images to tile", field="images")
    imgs = [_image(im, f"images[{i}]") for i, im in enumerate(images)]
    if titles is not None and len(titles) != len(imgs):
        raise DataError(f"{len(titles)} titles for {len(imgs)} images", field="titles")
    n = len(imgs)
    cols = int(ncols) if ncols else int(np.ceil(np.sqrt(n)))
    if cols < 1:
        raise DataError(f"must be >= 1, got {ncols}", field="ncols")
    rows = int(np.ceil(n / cols))
    ch, cw = max(i.shape[0] for i in imgs), max(i.shape[1] for i in imgs)
    font_scale = max(0.4, cw / 500.0)
    (_, text_h), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    th = (title_height if title_height is not None else text_h + base + 4) if titles else 0
    grid = np.empty((rows * (ch + th) + (rows + 1) * pad, cols * cw + (cols + 1) * pad, 3), dtype=np.uint8)
    grid[:] = np.asarray(background, dtype=np.uint8)
    for k, im in enumerate(imgs):
        r, c = divmod(k, cols)
        y0, x0 = pad + r * (ch + th + pad), pad + c * (cw + pad)
        if titles:
            cv2.putText(grid, str(titles[k]), (x0 + 2, y0 + 2 + text_h), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                        (0, 0, 0), 1, cv2.LINE_AA)
        oy, ox = y0 + th + (ch - im.shape[0]) // 2, x0 + (cw - im.shape[1]) // 2
        grid[oy:oy + im.shape[0], ox:ox + im.shape[1]] = im
    return grid
