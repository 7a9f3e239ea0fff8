"""Heatmap and soft-argmax codecs: targets, weight rules, decoders and their error bounds (pose2d.md §2.3, §2.6, §6;
pose3d.md §2.2, §8.6-§8.7)."""

import math

import numpy as np
import pytest
import torch

from humanvision.codecs import (
    MSRAHeatmap,
    SoftArgmax,
    UDPHeatmap,
    flip_heatmaps,
    render_gaussian_heatmaps,
    soft_argmax_2d,
    soft_argmax_3d,
)
from humanvision.errors import DataError
from humanvision.skeletons import get_skeleton

torch.set_num_threads(1)
IN, HM = (192, 256), (48, 64)
UDP_STRIDE = np.array([191 / 47, 255 / 63])


def _border_distance(mu, size=HM):
    """Distance (heatmap px) of each centre to the nearest map edge."""
    return np.minimum(mu, np.array(size) - 1 - mu).min(-1)


def _reference_gaussian(mu, sigma, size, subpixel):
    """Straight loop over the 13x13 window, as in the reference generators (test oracle)."""
    w, h = size
    out = np.zeros((h, w))
    r = int(3 * sigma)
    mi = np.floor(np.asarray(mu) + 0.5).astype(int)
    x0, y0 = mu if subpixel else mi
    for j in range(mi[1] - r, mi[1] + r + 1):
        for i in range(mi[0] - r, mi[0] + r + 1):
            if 0 <= i < w and 0 <= j < h:
                out[j, i] = math.exp(-((i - x0) ** 2 + (j - y0) ** 2) / (2 * sigma**2))
    return out


# ------------------------------------------------------------------------------------------------ encoding
ENCODERS = [UDPHeatmap(IN, HM, sigma=2), MSRAHeatmap(IN, HM, sigma=2),
            MSRAHeatmap(IN, HM, sigma=2, unbiased=True)]


@pytest.mark.parametrize("codec", ENCODERS, ids=["udp", "msra", "msra_dark"])
def test_encode_matches_loop_reference(codec):
    rng = np.random.default_rng(0)
    kp = rng.uniform(-20, 210, (17, 2))
    enc = codec.encode(kp, np.ones(17))
    assert enc["heatmaps"].shape == (17, 64, 48) and enc["heatmaps"].dtype == np.float32
    assert enc["keypoint_weights"].shape == (17,)
    for k in range(17):
        mu = kp[k] / np.asarray(codec.stride)
        want = _reference_gaussian(mu, 2, HM, codec.subpixel)
        np.testing.assert_allclose(enc["heatmaps"][k], want, atol=1e-6)


def test_udp_target_peak_and_strides():
    codec = UDPHeatmap(IN, HM)
    np.testing.assert_allclose(codec.stride, UDP_STRIDE)
    np.testing.assert_allclose(MSRAHeatmap(IN, HM).stride, [4, 4])
    rng = np.random.default_rng(1)
    mu = rng.uniform(8, 40, (50, 2))
    hm = codec.encode(mu * UDP_STRIDE)["heatmaps"]
    delta = mu - np.floor(mu + 0.5)
    np.testing.assert_allclose(hm.max((1, 2)), np.exp(-(delta**2).sum(-1) / 8), rtol=1e-6)
    assert hm.max() <= 1 and hm.max((1, 2)).min() >= math.exp(-0.5 / 8) - 1e-6
    on_grid = codec.encode(np.array([[10, 20]]) * UDP_STRIDE)["heatmaps"][0]
    assert on_grid[20, 10] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("codec_cls", [UDPHeatmap, MSRAHeatmap])
def test_weight_rules(codec_cls):
    codec = codec_cls(IN, HM)
    s = np.asarray(codec.stride)
    mu = np.array([[20, 30],  # inside
                   [20, 30],  # inside but invisible
                   [-3, 30],  # 3 px outside: truncated Gaussian, weight 1
                   [-6, 30],  # window touches column 0
                   [-7, 30],  # window ends at -1: entirely outside
                   [47 + 7, 30],  # window starts at W
                   [47 + 6, 30]], dtype=float)
    vis = np.array([1, 0, 1, 1, 1, 1, 1], dtype=float)
    enc = codec.encode(mu * s, vis)
    np.testing.assert_array_equal(enc["keypoint_weights"], [1, 0, 1, 1, 0, 0, 1])
    hm = enc["heatmaps"]
    assert hm[1].max() == 0 and hm[4].max() == 0 and hm[5].max() == 0
    assert hm[2].max() > 0 and hm[2][:, 4:].max() == 0  # columns 0..3 only
    assert hm[3][:, 0].max() > 0 and hm[3][:, 1:].max() == 0
    # NaN coordinates are fine for invisible joints and an error for visible ones
    codec.encode(np.array([[np.nan, np.nan]]), np.array([0.0]))
    with pytest.raises(DataError, match="keypoints"):
        codec.encode(np.array([[np.nan, 1.0]]), np.array([1.0]))
    with pytest.raises(DataError, match="visible"):
        codec.encode(np.zeros((2, 3, 2)), np.ones((2, 2)))


def test_multiple_instances_combine_by_maximum():
    codec = UDPHeatmap(IN, HM)
    kp = np.array([[[40.0, 50.0]], [[150.0, 200.0]]])
    enc = codec.encode(kp, np.ones((2, 1)))
    assert enc["keypoint_weights"].shape == (2, 1)
    a, b = codec.encode(kp[0])["heatmaps"], codec.encode(kp[1])["heatmaps"]
    np.testing.assert_array_equal(enc["heatmaps"], np.maximum(a, b))


# ------------------------------------------------------------------------------------------------ decoding
@pytest.mark.parametrize("border,bounds", [("reflect", (2.0, 7.5)), ("zero", (0.25, 4.5))])
def test_udp_dark_round_trip_error_bounds(border, bounds):
    codec = UDPHeatmap(IN, HM, blur_border=border)
    rng = np.random.default_rng(2)
    kp = rng.uniform(0, [191, 255], (600, 2))
    enc = codec.encode(kp)
    dec, scores = codec.decode(enc["heatmaps"])
    err = np.abs(dec - kp).max(-1)
    d = _border_distance(kp / UDP_STRIDE)
    interior, mid, edge = d >= 6, (d >= 3) & (d < 6), d < 3
    assert interior.sum() > 100 and mid.sum() > 50 and edge.sum() > 50
    assert err[interior].max() < 1e-3
    assert err[mid].max() < bounds[0]
    assert err[edge].max() < bounds[1]
    np.testing.assert_allclose(scores, enc["heatmaps"].max((1, 2)))  # score before the blur


def test_udp_plain_argmax_error():
    codec = UDPHeatmap(IN, HM, dark=False)
    rng = np.random.default_rng(3)
    kp = rng.uniform(0, [191, 255], (600, 2))
    dec, _ = codec.decode(codec.encode(kp)["heatmaps"])
    err = np.linalg.norm(dec - kp, axis=-1)
    assert err.max() <= 2.9 and 1.2 < err.mean() < 2.0
    np.testing.assert_allclose(dec / UDP_STRIDE, np.round(dec / UDP_STRIDE), atol=1e-4)  # grid points


def test_msra_round_trip_quantisation():
    codec = MSRAHeatmap(IN, HM)
    assert not codec.subpixel
    rng = np.random.default_rng(4)
    kp = rng.uniform(24, [164, 228], (300, 2))  # >= 3 sigma from the border (heatmap px)
    dec, _ = codec.decode(codec.encode(kp)["heatmaps"])
    # integer-centred symmetric targets decode to the integer centre: error <= stride / 2
    np.testing.assert_allclose(dec, np.floor(kp / 4 + 0.5) * 4, atol=1e-4)
    assert np.abs(dec - kp).max() <= 2.0 + 1e-6


def test_msra_unbiased_encodes_subpixel_centres():
    """DARK's unbiased encoding: the Gaussian is centred at the sub-pixel location ``p / stride``, so both its
    centroid and the DARK decoding recover it (the integer-centred biased target is off by up to 0.5 px)."""
    rng = np.random.default_rng(6)
    kp = rng.uniform(40, [152, 216], (100, 2))  # >= 10 heatmap px from the border
    mu = kp / 4
    ys, xs = np.mgrid[:64, :48]

    def centroid(hm):
        mass = hm.sum((1, 2))
        return np.stack([(hm * xs).sum((1, 2)) / mass, (hm * ys).sum((1, 2)) / mass], -1)

    dark = MSRAHeatmap(IN, HM, unbiased=True)
    assert dark.subpixel
    hm = dark.encode(kp)["heatmaps"]
    assert np.abs(centroid(hm) - mu).max() < 0.05  # heatmap px
    dec, _ = dark.decode(hm)
    assert np.abs(dec / 4 - mu).max() < 0.05
    biased = MSRAHeatmap(IN, HM).encode(kp)["heatmaps"]
    assert np.abs(centroid(biased) - mu).max() > 0.3


def test_dark_recovers_subpixel_centres():
    rng = np.random.default_rng(5)
    mu = rng.uniform(8, 40, (1, 200, 2))
    hm, _ = render_gaussian_heatmaps(mu, np.ones((1, 200)), HM, 2.0, subpixel=True)
    dec, _ = MSRAHeatmap(IN, HM, unbiased=True).decode(hm)
    assert np.abs(dec / 4 - mu[0]).max() < 2e-3  # heatmap px
    quarter, _ = MSRAHeatmap(IN, HM).decode(hm)
    assert np.abs(quarter / 4 - mu[0]).max() <= 0.5 + 1e-6


def test_quarter_offset_direction_and_border_rule():
    hm = np.zeros((3, 64, 48), np.float32)
    hm[0, 10, 20], hm[0, 10, 21], hm[0, 10, 19], hm[0, 9, 20], hm[0, 11, 20] = 1.0, 0.5, 0.2, 0.1, 0.3
    hm[1, 10, 1], hm[1, 10, 2] = 1.0, 0.5  # x = 1 is not refined (1 < x is required)
    hm[2, 30, 40], hm[2, 30, 39] = 1.0, 0.9
    dec, scores = MSRAHeatmap(IN, HM).decode(hm)
    np.testing.assert_allclose(dec / 4, [[20.25, 10.25], [1.0, 10.0], [39.75, 30.0]])
    np.testing.assert_allclose(scores, [1, 1, 1])


@pytest.mark.parametrize("codec", [UDPHeatmap(IN, HM), MSRAHeatmap(IN, HM), MSRAHeatmap(IN, HM, unbiased=True),
                                   UDPHeatmap(IN, HM, blur_border="zero")], ids=repr)
def test_all_zero_and_negative_heatmaps(codec):
    hm = np.zeros((2, 64, 48), np.float32)
    hm[1] = -0.5
    dec, scores = codec.decode(hm)
    np.testing.assert_array_equal(scores, [0.0, -0.5])
    np.testing.assert_allclose(dec, -np.broadcast_to(np.asarray(codec.stride), (2, 2)))  # sentinel -1 hm px
    assert np.isfinite(dec).all()


@pytest.mark.parametrize("codec", [UDPHeatmap(IN, HM), MSRAHeatmap(IN, HM, unbiased=True), MSRAHeatmap(IN, HM)],
                         ids=repr)
def test_batched_decode_equals_per_sample(codec):
    rng = np.random.default_rng(6)
    hms = np.stack([codec.encode(rng.uniform(0, [191, 255], (17, 2)))["heatmaps"] for _ in range(3)])
    hms += rng.normal(0, 0.01, hms.shape).astype(np.float32)
    dec, scores = codec.decode(hms)
    assert dec.shape == (3, 17, 2) and scores.shape == (3, 17)
    for b in range(3):
        d1, s1 = codec.decode(hms[b])
        np.testing.assert_allclose(d1, dec[b], atol=1e-5)
        np.testing.assert_allclose(s1, scores[b])
    t_dec, t_scores = codec.decode_torch(torch.from_numpy(hms).half())
    assert t_dec.dtype == torch.float32 and t_dec.shape == (3, 17, 2)
    np.testing.assert_allclose(t_scores.numpy(), scores, atol=1e-2)  # fp16 input rounding
    with pytest.raises(ValueError, match="expected heatmaps"):
        codec.decode(np.zeros((17, 32, 48), np.float32))


def test_flip_of_symmetric_input_gives_flipped_target():
    flip = get_skeleton("coco17").flip_index
    rng = np.random.default_rng(7)
    kp = rng.uniform(0, [191, 255], (17, 2))
    kp_flip = kp[list(flip)].copy()
    kp_flip[:, 0] = 191 - kp_flip[:, 0]  # x' = in_w - 1 - x in the crop
    udp = UDPHeatmap(IN, HM)
    frac = (kp[:, 0] / UDP_STRIDE[0]) % 1
    assert np.all(np.abs(frac - 0.5) > 1e-6)  # away from the measure-zero window tie
    np.testing.assert_allclose(udp.encode(kp_flip)["heatmaps"], udp.flip_heatmaps(udp.encode(kp)["heatmaps"], flip),
                               atol=1e-6)
    np.testing.assert_array_equal(udp.encode(kp_flip)["keypoint_weights"],
                                  udp.encode(kp)["keypoint_weights"][list(flip)])
    # MSRA: the flip-back (with its one-pixel shift) is within one heatmap pixel of the flipped target
    msra = MSRAHeatmap(IN, HM)
    a, _ = msra.decode(msra.encode(kp_flip)["heatmaps"])
    b, _ = msra.decode(msra.flip_heatmaps(msra.encode(kp)["heatmaps"], flip))
    inside = (kp[:, 0] > 12) & (kp[:, 0] < 180)
    assert np.abs(a - b)[inside].max() <= 4.0 + 1e-6
    # torch and numpy flips agree; flipping twice without shift is the identity
    h = rng.normal(size=(2, 17, 64, 48)).astype(np.float32)
    np.testing.assert_array_equal(flip_heatmaps(torch.from_numpy(h), flip, shift=True).numpy(),
                                  flip_heatmaps(h, flip, shift=True))
    np.testing.assert_array_equal(flip_heatmaps(flip_heatmaps(h, flip), flip), h)


# ---------------------------------------------------------------------------------------------- soft-argmax
def test_soft_argmax_2d_one_hot_and_constant():
    h = torch.zeros(2, 3, 96, 96)
    h[0, 0, 40, 13] = 1.0
    h[1, 2, 95, 0] = 1.0
    coords, p = soft_argmax_2d(h * 100, beta=1.0)
    assert torch.allclose(coords[0, 0], torch.tensor([13.0, 40.0]), atol=1e-3)
    assert torch.allclose(coords[1, 2], torch.tensor([0.0, 95.0]), atol=1e-3)
    assert torch.allclose(coords[0, 1], torch.tensor([47.5, 47.5]), atol=1e-4)  # constant map: centre
    assert torch.allclose(p.sum((-2, -1)), torch.ones(2, 3))


def test_soft_argmax_codec_scales_and_is_differentiable():
    codec = SoftArgmax((384, 384), (96, 96), beta=100.0)
    h = torch.zeros(1, 2, 96, 96)
    h[0, 0, 10, 20] = 1.0
    h[0, 1, 50, 60] = 2.0
    kp, scores = codec.decode_torch(h)
    assert torch.allclose(kp[0], torch.tensor([[80.0, 40.0], [240.0, 200.0]]), atol=1e-3)
    assert torch.allclose(scores[0], torch.tensor([1.0, 2.0]))
    enc = codec.encode(np.array([[10.0, 20.0], [1.0, 2.0]]), np.array([1.0, 0.0]))
    np.testing.assert_array_equal(enc["keypoint_labels"], [[10, 20], [0, 0]])
    np.testing.assert_array_equal(enc["keypoint_weights"], [1, 0])
    x = torch.randn(1, 1, 6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: soft_argmax_2d(t, beta=2.0)[0], (x,))


def test_soft_argmax_3d_indices_coord_volume_and_rotation():
    d = 8
    v = torch.full((2, 3, d, d, d), -1e4)
    v[0, 0, 1, 2, 3] = 0.0  # (z, y, x) = (1, 2, 3)
    v[0, 1, 4, 4, 4] = 0.0
    v[0, 1, 0, 0, 0] = math.log(3.0)  # weights 3:1 between two cells
    coords, p = soft_argmax_3d(v)
    assert torch.allclose(coords[0, 0], torch.tensor([3.0, 2.0, 1.0]), atol=1e-4)
    assert torch.allclose(coords[0, 1], torch.tensor([1.0, 1.0, 1.0]), atol=1e-4)
    assert p.shape == v.shape and torch.allclose(p.sum((-3, -2, -1)), torch.ones(2, 3))
    # an LT-style cuboid grid: axis order (x, y, z) = (i, j, k), output = grid point of the one-hot cell
    base, side = torch.tensor([100.0, -50.0, 900.0]), 2500.0
    ii = torch.stack(torch.meshgrid(*[torch.arange(d, dtype=torch.float32)] * 3, indexing="ij"), -1)
    grid = base - side / 2 + side / (d - 1) * ii
    vol = torch.full((1, 1, d, d, d), -1e4)
    vol[0, 0, 5, 1, 6] = 0.0
    out, _ = soft_argmax_3d(vol, coord_volume=grid)
    assert torch.allclose(out[0, 0], grid[5, 1, 6], atol=1e-2)
    # rotating the grid about the base point rotates the output (fixed volume)
    vol = torch.randn(1, 2, d, d, d)
    theta = 0.7
    rot = torch.tensor([[math.cos(theta), -math.sin(theta), 0], [math.sin(theta), math.cos(theta), 0], [0, 0, 1.0]])
    out0, _ = soft_argmax_3d(vol, coord_volume=grid)
    out1, _ = soft_argmax_3d(vol, coord_volume=(grid - base) @ rot.T + base)
    assert torch.allclose(out1, (out0 - base) @ rot.T + base, atol=1e-2)
    # per-sample grids (B, D, H, W, 3)
    out2, _ = soft_argmax_3d(vol.expand(2, -1, -1, -1, -1), coord_volume=torch.stack([grid, grid + 10]))
    assert torch.allclose(out2[1], out0[0] + 10, atol=1e-2)


def test_blur_matches_opencv_in_both_border_modes():
    import cv2

    from humanvision.codecs import gaussian_blur

    rng = np.random.default_rng(8)
    h = rng.random((2, 3, 64, 48)).astype(np.float32)
    ours = gaussian_blur(torch.from_numpy(h), 11, "reflect", keep_max=False).numpy()
    ref = np.stack([[cv2.GaussianBlur(m, (11, 11), 0) for m in hb] for hb in h])  # BORDER_REFLECT_101
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    ours = gaussian_blur(torch.from_numpy(h), 11, "zero", keep_max=True).numpy()
    ref = []
    for m in h.reshape(-1, 64, 48):  # MMPose DARK: zero-pad by the radius, blur, crop, restore the maximum
        dr = cv2.GaussianBlur(np.pad(m, 5), (11, 11), 0)[5:-5, 5:-5]
        ref.append(dr * m.max() / dr.max())
    np.testing.assert_allclose(ours, np.stack(ref).reshape(h.shape), atol=1e-5)
    tiny = h[0, 0, :5, :7].copy()  # radius larger than the map: repeated reflection, as OpenCV
    np.testing.assert_allclose(gaussian_blur(torch.from_numpy(tiny), 11, "reflect", keep_max=False).numpy(),
                               cv2.GaussianBlur(tiny, (11, 11), 0), atol=1e-5)
    with pytest.raises(ValueError, match="odd"):
        gaussian_blur(torch.from_numpy(h), 4)
