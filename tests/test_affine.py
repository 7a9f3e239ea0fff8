"""Box <-> (center, scale) and the two affine-crop conventions (pose2d.md §1.2, §1.3, §6.1-§6.3)."""

import numpy as np
import pytest

from humanvision.geometry.affine import (
    affine_points,
    bbox_cs_to_xywh,
    bbox_xywh_to_cs,
    bbox_xywh_to_xyxy,
    bbox_xyxy_to_xywh,
    clip_bbox_xywh,
    fix_aspect_ratio,
    get_affine_matrix,
    invert_affine,
    scale_from_pixel_std,
    scale_to_pixel_std,
    warp_crop,
)


def test_bbox_xywh_to_cs_reference_numbers():
    c, s = bbox_xywh_to_cs([10, 20, 30, 80], aspect_ratio=0.75, padding=1.25)
    np.testing.assert_allclose(c, [25, 60])
    np.testing.assert_allclose(scale_to_pixel_std(s), [0.375, 0.5])
    _, s1 = bbox_xywh_to_cs([10, 20, 30, 80], aspect_ratio=1.0, padding=1.25)
    np.testing.assert_allclose(scale_to_pixel_std(s1), [0.5, 0.5])
    np.testing.assert_allclose(scale_from_pixel_std([0.375, 0.5]), [75, 100])
    # wide box: height grows; no aspect fix: only padding
    _, s2 = bbox_xywh_to_cs([0, 0, 120, 40], aspect_ratio=0.75, padding=1.0)
    np.testing.assert_allclose(s2, [120, 160])
    _, s3 = bbox_xywh_to_cs([0, 0, 120, 40], padding=1.5)
    np.testing.assert_allclose(s3, [180, 60])


def test_box_helpers_batched_and_inverse():
    rng = np.random.default_rng(0)
    b = np.concatenate([rng.uniform(-50, 500, (3, 5, 2)), rng.uniform(1, 300, (3, 5, 2))], -1)
    np.testing.assert_allclose(bbox_xyxy_to_xywh(bbox_xywh_to_xyxy(b)), b)
    c, s = bbox_xywh_to_cs(b, padding=1.25)
    assert c.shape == s.shape == (3, 5, 2)
    np.testing.assert_allclose(bbox_cs_to_xywh(c, s, padding=1.25), b)
    wh = fix_aspect_ratio(b[..., 2:], 0.75)
    np.testing.assert_allclose(wh[..., 0] / wh[..., 1], 0.75)
    assert np.all(wh >= b[..., 2:] - 1e-9)  # only grows
    with pytest.raises(ValueError, match=r"bbox must have shape \(\.\.\., 4\), got \(3,\)"):
        bbox_xywh_to_cs([1, 2, 3])


def test_clip_bbox_legacy_and_1x():
    boxes = np.array([[-5, 10, 50, 20], [90, 70, 30, 30], [200, 10, 5, 5]], dtype=float)
    legacy, ok = clip_bbox_xywh(boxes, (100, 80), legacy=True)
    np.testing.assert_allclose(legacy[0], [0, 10, 49, 19])  # x2 = min(99, 0 + 49)
    np.testing.assert_allclose(legacy[1], [90, 70, 9, 9])  # x2 = min(99, 90 + 29)
    np.testing.assert_array_equal(ok, [True, True, False])
    new, ok1 = clip_bbox_xywh(boxes, (100, 80), legacy=False)
    np.testing.assert_allclose(new[0], [0, 10, 50, 20])
    np.testing.assert_array_equal(ok1, [True, True, False])


@pytest.mark.parametrize("in_size", [(192, 256), (288, 384), (256, 256)])
def test_documented_center_and_corner_mappings(in_size):
    in_w, in_h = in_size
    c = np.array([311.3, 207.9])
    s = fix_aspect_ratio(np.array([140.0, 150.0]), in_w / in_h)
    pts = np.stack([c, c - s / 2, c + s / 2])
    udp = affine_points(pts, get_affine_matrix(c, s, 0.0, in_size, udp=True))
    np.testing.assert_allclose(udp, [[(in_w - 1) / 2, (in_h - 1) / 2], [0, 0], [in_w - 1, in_h - 1]], atol=1e-9)
    non = affine_points(pts, get_affine_matrix(c, s, 0.0, in_size, udp=False))
    np.testing.assert_allclose(non, [[in_w / 2, in_h / 2], [0, 0], [in_w, in_h]], atol=1e-9)


def test_rotation_sign_differs_between_conventions():
    c, s, d = np.array([100.0, 100.0]), np.array([64.0, 64.0]), 10.0
    above = c + [0.0, -d]  # a point above the centre (image y grows downwards)
    q_udp = affine_points(above, get_affine_matrix(c, s, 90.0, (64, 64), udp=True))
    q_non = affine_points(above, get_affine_matrix(c, s, 90.0, (64, 64), udp=False))
    np.testing.assert_allclose(q_udp, [31.5 + d * 63 / 64, 31.5], atol=1e-9)  # UDP: R(+r) -> right of centre
    np.testing.assert_allclose(q_non, [32 - d, 32], atol=1e-9)  # non-UDP: R(-r) -> left of centre
    # both are similarity maps: distances scale uniformly
    m = get_affine_matrix(c, s, 37.0, (64, 64), udp=True)
    np.testing.assert_allclose(np.linalg.svd(m[:, :2])[1], [63 / 64, 63 / 64])


@pytest.mark.parametrize("udp", [True, False])
def test_inverse_round_trip_batched(udp):
    rng = np.random.default_rng(1)
    c = rng.uniform(0, 640, (6, 2))
    s = fix_aspect_ratio(rng.uniform(20, 400, (6, 2)), 0.75)
    r = rng.uniform(-80, 80, 6)
    m = get_affine_matrix(c, s, r, (192, 256), udp=udp)
    minv = get_affine_matrix(c, s, r, (192, 256), udp=udp, inv=True)
    assert m.shape == minv.shape == (6, 2, 3)
    np.testing.assert_allclose(minv, invert_affine(m), atol=1e-12)
    p = rng.uniform(-100, 700, (6, 17, 2))
    np.testing.assert_allclose(affine_points(affine_points(p, m), minv), p, atol=1e-9)
    per_sample = np.stack([affine_points(p[i], m[i]) for i in range(6)])
    np.testing.assert_allclose(affine_points(p, m), per_sample)
    # float32 matrices (as the reference stores them) and a trip through heatmap units: < 1e-3 px (§6.3)
    stride = np.array([191 / 47, 255 / 63]) if udp else np.array([4.0, 4.0])
    q = affine_points(p, m.astype(np.float32)) / stride
    back = affine_points(q * stride, minv.astype(np.float32))
    assert np.abs(back - p).max() < 1e-3


def test_warp_crop_is_an_exact_slice_for_unit_scale():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)
    x0, y0 = 30, 17
    m_udp = get_affine_matrix([x0 + 9.5, y0 + 4.5], [19, 9], 0.0, (20, 10), udp=True)
    np.testing.assert_array_equal(warp_crop(img, m_udp, (20, 10)), img[y0:y0 + 10, x0:x0 + 20])
    m_non = get_affine_matrix([x0 + 10, y0 + 5], [20, 10], 0.0, (20, 10), udp=False)
    np.testing.assert_array_equal(warp_crop(img, m_non, (20, 10)), img[y0:y0 + 10, x0:x0 + 20])
    # outside the image the border is constant 0
    m_out = get_affine_matrix([-100, -100], [20, 10], 0.0, (20, 10), udp=False)
    assert warp_crop(img, m_out, (20, 10)).max() == 0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="scale"):
        get_affine_matrix([0, 0], [0, 10], 0, (192, 256))
    with pytest.raises(ValueError, match="output_size"):
        get_affine_matrix([0, 0], [10, 10], 0, (192,))
    with pytest.raises(ValueError, match="2, 3"):
        affine_points(np.zeros((3, 2)), np.eye(3))
