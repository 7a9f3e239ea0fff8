"""Visualisation: real pictures written to PNG and checked pixel by pixel."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from humanvision.errors import DataError
from humanvision.skeletons import get_skeleton
from humanvision.viz import (
    colorize_depth,
    default_palette,
    draw_boxes,
    draw_skeleton,
    make_grid,
    overlay_segmentation,
    plot_skeleton_3d,
)


def _roundtrip(img: np.ndarray, path) -> np.ndarray:
    """Write an RGB image as PNG and read it back as RGB."""
    assert cv2.imwrite(str(path), img[..., ::-1])
    back = cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(back, img)
    return back


def _coco_person(dx: float = 0.0) -> np.ndarray:
    kp = np.array([[50, 20], [46, 16], [54, 16], [40, 18], [60, 18], [35, 40], [65, 40], [30, 65], [70, 65],
                   [28, 90], [72, 90], [40, 95], [60, 95], [40, 130], [60, 130], [40, 165], [60, 165]], float)
    kp[:, 0] += dx
    return kp


def test_draw_skeleton_limb_colours_at_midpoints(tmp_path):
    coco = get_skeleton("coco17")
    image = np.zeros((180, 220, 3), np.uint8)
    people = np.stack([_coco_person(), _coco_person(100.0)])
    scores = np.ones((2, 17))
    scores[1, coco.index("left_knee")] = 0.1  # hides the second person's left knee and its two limbs
    out = _roundtrip(draw_skeleton(image, people, coco, scores=scores, threshold=0.3, radius=3, thickness=3),
                     tmp_path / "skeleton.png")
    assert image.max() == 0  # input untouched
    left_leg = coco.limbs.index((coco.index("left_hip"), coco.index("left_knee")))
    right_leg = coco.limbs.index((coco.index("right_hip"), coco.index("right_knee")))
    for limb, person, visible in ((left_leg, 0, True), (right_leg, 0, True), (right_leg, 1, True),
                                  (left_leg, 1, False)):
        a, b = coco.limbs[limb]
        mx, my = np.round((people[person, a] + people[person, b]) / 2).astype(int)
        patch = out[my - 1:my + 2, mx - 1:mx + 2].reshape(-1, 3).astype(int)
        want = np.array(coco.limb_colors[limb])
        close = np.abs(patch - want).max(axis=1) <= 30
        assert close.any() == visible, (limb, person, patch)
    # Joint discs carry the joint colour (left = green, right = orange in the default palette).
    x, y = people[0, coco.index("left_wrist")].astype(int)
    np.testing.assert_allclose(out[y, x], coco.joint_colors[coco.index("left_wrist")], atol=30)
    # BGR mode swaps the channels.
    bgr = draw_skeleton(image, people[0], coco, radius=3, bgr=True)
    np.testing.assert_allclose(bgr[y, x], coco.joint_colors[coco.index("left_wrist")][::-1], atol=30)


def test_draw_skeleton_uses_third_column_and_validates():
    kp = np.concatenate([_coco_person(), np.zeros((17, 1))], axis=1)  # v = 0 everywhere: nothing drawn
    assert draw_skeleton(np.zeros((180, 120, 3), np.uint8), kp, "coco17").max() == 0
    with pytest.raises(DataError, match="field keypoints"):
        draw_skeleton(np.zeros((10, 10, 3), np.uint8), np.zeros((16, 2)), "coco17")
    with pytest.raises(DataError, match="field image"):
        draw_skeleton(np.zeros((10, 10, 5), np.uint8), np.zeros((17, 2)), "coco17")


def test_draw_boxes(tmp_path):
    img = np.full((100, 100, 3), 255, np.uint8)
    out = _roundtrip(draw_boxes(img, [[10, 20, 50, 40]], labels=["person"], scores=[0.9], color=(0, 0, 255),
                                thickness=1), tmp_path / "boxes.png")
    np.testing.assert_array_equal(out[60, 35], [0, 0, 255])   # bottom edge at y = 20 + 40
    np.testing.assert_array_equal(out[40, 60], [0, 0, 255])   # right edge at x = 10 + 50
    np.testing.assert_array_equal(out[40, 35], [255, 255, 255])  # inside stays untouched
    xyxy = draw_boxes(img, np.array([[10, 20, 60, 60]]), color=(0, 0, 255), thickness=1, fmt="xyxy")
    np.testing.assert_array_equal(xyxy[60, 35], [0, 0, 255])
    with pytest.raises(DataError, match="field labels"):
        draw_boxes(img, [[0, 0, 5, 5]], labels=["a", "b"])


def test_overlay_segmentation_blends_and_skips_ignore(tmp_path):
    img = np.full((4, 4, 3), 100, np.uint8)
    labels = np.array([[0, 1, 2, 255]] * 4)
    pal = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]])
    out = _roundtrip(overlay_segmentation(img, labels, pal, alpha=0.5), tmp_path / "seg.png")
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])  # background kept
    np.testing.assert_array_equal(out[0, 1], [178, 50, 50])    # round(0.5*100 + 0.5*255) = 178 (half to even)
    np.testing.assert_array_equal(out[0, 2], [50, 178, 50])
    np.testing.assert_array_equal(out[0, 3], [100, 100, 100])  # ignore index kept
    full = overlay_segmentation(img, labels, pal, alpha=1.0, background=None)
    np.testing.assert_array_equal(full[0, 0], [0, 0, 0])
    assert default_palette(3).tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    with pytest.raises(DataError, match="field labels"):
        overlay_segmentation(img, np.full((4, 4), 9), pal)


def test_colorize_depth(tmp_path):
    depth = np.tile(np.linspace(0.5, 4.0, 64), (16, 1))
    depth[:, :4] = 0.0      # invalid
    depth[0, 10] = np.nan   # invalid
    out = _roundtrip(colorize_depth(depth, vmin=0.5, vmax=4.0), tmp_path / "depth.png")
    assert out.shape == (16, 64, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :4].reshape(-1, 3), 0)
    np.testing.assert_array_equal(out[0, 10], [0, 0, 0])
    near, far = out[8, 5].astype(int), out[8, 63].astype(int)
    assert near[2] > near[0] and far[0] > far[2]  # TURBO: near blue, far red
    assert len({tuple(p) for p in out[8, 4:]}) > 20  # a real gradient


def test_make_grid(tmp_path):
    a = np.full((20, 30, 3), (255, 0, 0), np.uint8)
    b = np.full((10, 10, 3), (0, 255, 0), np.uint8)
    grid = _roundtrip(make_grid([a, b, a], ncols=2, pad=2), tmp_path / "grid.png")
    assert grid.shape == (2 * 20 + 3 * 2, 2 * 30 + 3 * 2, 3)
    np.testing.assert_array_equal(grid[2 + 10, 2 + 15], [255, 0, 0])           # a, top-left cell
    np.testing.assert_array_equal(grid[2 + 10, 2 + 30 + 2 + 15], [0, 255, 0])  # b centred in the next cell
    np.testing.assert_array_equal(grid[2 + 1, 2 + 30 + 2 + 1], [255, 255, 255])  # padding around b
    np.testing.assert_array_equal(grid[2 + 20 + 2 + 10, 2 + 15], [255, 0, 0])  # second row
    titled = make_grid([a, b], titles=["pred", "gt"])
    top = titled.shape[0] - 4 - 20  # the tiles' first row: everything above is padding and title
    assert top > 4 and (titled[:top] < 128).all(axis=-1).any()  # dark title text above the tiles
    with pytest.raises(DataError, match="field titles"):
        make_grid([a, b], titles=["x"])


def test_plot_skeleton_3d_png(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    h36m = get_skeleton("h36m17")
    rng = np.random.default_rng(0)
    pose = rng.normal(size=(17, 3)) * 200.0
    path = plot_skeleton_3d(np.stack([pose, pose + [600.0, 0, 0]]), h36m, tmp_path / "pose3d.png",
                            ground_plane=True, title="two people")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1].astype(int)
    assert img.shape[:2] == (500, 500)
    for rgb in set(h36m.limb_colors):  # every side colour appears on some limb pixel
        assert (np.abs(img - np.array(rgb)).max(axis=-1) <= 40).sum() > 20, rgb
    # One colour per pose (e.g. GT vs prediction), drawn into a caller's axes.
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot(111, projection="3d")
    returned = plot_skeleton_3d(pose, h36m, ax=ax, colors=[(255, 0, 255)], up="-y")
    assert returned is ax and len(ax.lines) == len(h36m.limbs)
    limits = np.array([ax.get_xlim(), ax.get_ylim(), ax.get_zlim()])
    spans = np.diff(limits, axis=1).ravel()
    np.testing.assert_allclose(spans, spans[0])  # equal aspect
    # each limb is a magenta segment between its joints, with the data axes mapped to the plot: y up -> -y
    for line, (a, b) in zip(ax.lines, h36m.limbs, strict=True):
        assert matplotlib.colors.to_rgb(line.get_color()) == (1.0, 0.0, 1.0)
        want = pose[[a, b]][:, [0, 2, 1]] * [1.0, 1.0, -1.0]
        np.testing.assert_allclose(np.array(line.get_data_3d()).T, want)
    with pytest.raises(DataError, match="field joints3d"):
        plot_skeleton_3d(np.zeros((16, 3)), h36m, tmp_path / "bad.png")
