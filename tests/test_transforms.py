"""Top-down pipeline: augmentation ops, crop/keypoint consistency, inverse mapping, targets (pose2d.md §1.4, §1.6)."""

import numpy as np
import pytest
import torch

from humanvision.codecs import MSRAHeatmap, UDPHeatmap
from humanvision.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TopDownAugment,
    TopDownTransform,
    color_jitter,
    flip_keypoints,
    grid_dropout,
    half_body_center_scale,
    keypoints_to_image,
    normalize_image,
    random_scale_rotation,
    random_shift_center,
)
from humanvision.errors import DataError
from humanvision.geometry.affine import bbox_xywh_to_cs, get_affine_matrix
from humanvision.skeletons import get_skeleton

torch.set_num_threads(1)
COCO = get_skeleton("coco17")
IN = (192, 256)


def _person(rng, k=17, box=(150, 80, 120, 200), spread=0.3):
    x, y, w, h = box
    lo, hi = 0.5 - spread, 0.5 + spread
    kp = np.stack([rng.uniform(x + lo * w, x + hi * w, k), rng.uniform(y + lo * h, y + hi * h, k)], -1)
    return kp, np.ones(k, np.float32), np.array(box, float)


def _blob_image(points_rgb, size=(480, 360), sigma=1.5):
    """A black RGB image with one Gaussian dot per channel at the given sub-pixel points."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.float64)
    for ch, (px, py) in enumerate(points_rgb):
        img[..., ch] = 255 * np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / (2 * sigma**2))
    return np.round(img).astype(np.uint8)


def _centroid(channel):
    yy, xx = np.mgrid[0:channel.shape[0], 0:channel.shape[1]]
    wgt = channel.astype(np.float64)
    return np.array([(wgt * xx).sum(), (wgt * yy).sum()]) / wgt.sum()


def _denormalize(t):
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((t * std + mean) * 255).permute(1, 2, 0).numpy()


@pytest.mark.parametrize("udp", [True, False])
@pytest.mark.parametrize("flip", [True, False])
def test_keypoints_follow_the_warped_image(udp, flip):
    rng = np.random.default_rng(10 + udp + 2 * flip)
    kp, vis, box = _person(rng, spread=0.15)  # dots stay inside the augmented crop
    lw, rw, nose = COCO.index("left_wrist"), COCO.index("right_wrist"), COCO.index("nose")
    img = _blob_image([kp[lw], kp[rw], kp[nose]])
    aug = TopDownAugment(shift_prob=1.0, flip_prob=float(flip), half_body_prob=0.0, scale_factor=0.2,
                         rot_factor=30.0, rot_prob=1.0)
    codec = UDPHeatmap(IN, (48, 64)) if udp else MSRAHeatmap(IN, (48, 64))
    tf = TopDownTransform(IN, COCO, codec=codec, train=True, udp=udp, augment=aug)
    x, target, meta = tf(img, kp, vis, box, rng=np.random.default_rng(3))
    assert x.shape == (3, 256, 192) and x.dtype == torch.float32
    assert meta["flipped"] == flip and meta["rotation"] != 0.0
    crop = _denormalize(x)
    kc = target["keypoints"].numpy()
    # after a flip the person's left wrist is the mirrored right wrist: green dot <-> index lw
    red_joint, green_joint = (rw, lw) if flip else (lw, rw)
    for ch, j in [(0, red_joint), (1, green_joint), (2, nose)]:
        assert np.all((kc[j] > 6) & (kc[j] < np.array(IN) - 7))
        assert np.linalg.norm(_centroid(crop[..., ch]) - kc[j]) < 0.3, (ch, j)
    # the targets encode those keypoints: every joint is inside the crop, weighted 1, and decodes back (UDP with
    # DARK exactly; MSRA targets sit on the rounded heatmap pixel, decoded with a quarter-pixel shift: < 0.75 x 4 px)
    assert target["heatmaps"].shape == (17, 64, 48)
    assert np.all((kc > 0) & (kc < np.array(IN) - 1))
    np.testing.assert_array_equal(target["keypoint_weights"].numpy(), np.ones(17))
    decoded = np.asarray(codec.decode(target["heatmaps"].numpy())[0]).reshape(17, 2)
    assert np.abs(decoded - kc).max() < (0.01 if udp else 3.0)


def test_flip_twice_is_identity_and_matches_skeleton():
    rng = np.random.default_rng(0)
    kp, vis = rng.uniform(0, 640, (4, 17, 2)), rng.integers(0, 2, (4, 17))
    k1, v1 = flip_keypoints(kp, 640, COCO.flip_index, vis)
    k2, v2 = flip_keypoints(k1, 640, COCO.flip_index, v1)
    np.testing.assert_allclose(k2, kp)
    np.testing.assert_array_equal(v2, vis)
    np.testing.assert_allclose(k1, COCO.flip(kp, width=640))
    assert k1[0, COCO.index("left_hip"), 0] == 639 - kp[0, COCO.index("right_hip"), 0]


@pytest.mark.parametrize("udp", [True, False])
def test_crop_then_keypoints_to_image_round_trip(udp):
    rng = np.random.default_rng(1)
    c = rng.uniform(50, 600, (5, 2))
    s = rng.uniform(50, 300, (5, 1)) * np.array([0.75, 1.0])
    r = rng.uniform(-80, 80, 5)
    p = rng.uniform(0, 640, (5, 17, 2))
    from humanvision.geometry.affine import affine_points
    q = affine_points(p, get_affine_matrix(c, s, r, IN, udp=udp))
    np.testing.assert_allclose(keypoints_to_image(q, c, s, IN, udp, r), p, atol=1e-9)
    # rotation 0: the documented closed form (pose2d.md §2.6 step 5)
    u = rng.uniform(0, 192, (5, 17, 2))
    den = np.array(IN) - 1 if udp else np.array(IN)
    np.testing.assert_allclose(keypoints_to_image(u, c, s, IN, udp),
                               c[:, None] - s[:, None] / 2 + u * s[:, None] / den, atol=1e-9)


def test_inference_pipeline_round_trip_udp_dark():
    """GT -> eval crop -> UDP target -> DARK-UDP decode -> image: back to the GT (interior joints)."""
    rng = np.random.default_rng(2)
    kp, vis, box = _person(rng)
    codec = UDPHeatmap(IN, (48, 64))
    tf = TopDownTransform(IN, COCO, codec=codec, train=False, udp=True)
    _, target, meta = tf(np.zeros((400, 500, 3), np.uint8), kp, vis, box)
    dec, _ = codec.decode(target["heatmaps"].numpy())
    back = keypoints_to_image(dec, meta["center"], meta["scale"], IN, udp=True)
    assert np.abs(back - kp).max() < 1e-3 * meta["scale"][0] / 191 * 4
    c, s = bbox_xywh_to_cs(box, 0.75, 1.25)
    np.testing.assert_allclose(meta["center"], c)
    np.testing.assert_allclose(meta["scale"], s)
    assert meta["rotation"] == 0.0 and not meta["flipped"]


def test_eval_mode_is_deterministic_and_train_mode_is_seeded():
    rng = np.random.default_rng(3)
    kp, vis, box = _person(rng)
    img = rng.integers(0, 256, (400, 500, 3), dtype=np.uint8)
    ev = TopDownTransform(IN, "coco17", codec=UDPHeatmap(IN, (48, 64)))
    a, b = ev(img, kp, vis, box), ev(img, kp, vis, box)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["heatmaps"], b[1]["heatmaps"])
    tr = TopDownTransform(IN, "coco17", codec=UDPHeatmap(IN, (48, 64)), train=True,
                          augment=TopDownAugment.pct())
    r1 = tr(img, kp, vis, box, rng=np.random.default_rng(7))
    r2 = tr(img, kp, vis, box, rng=np.random.default_rng(7))
    r3 = tr(img, kp, vis, box, rng=np.random.default_rng(8))
    assert torch.equal(r1[0], r2[0]) and torch.equal(r1[1]["keypoints"], r2[1]["keypoints"])
    assert not torch.equal(r1[1]["keypoints"], r3[1]["keypoints"])
    # inference without keypoints: empty target, explicit center/scale are aspect-fixed
    x, target, meta = ev(img, center=[250, 200], scale=[100, 100])
    assert target == {} and x.shape == (3, 256, 192)
    np.testing.assert_allclose(meta["scale"], [100, 400 / 3])
    assert np.isnan(meta["bbox"]).all()


def test_codec_and_crop_convention_must_match():
    with pytest.raises(ValueError, match="udp"):
        TopDownTransform(IN, COCO, codec=MSRAHeatmap(IN, (48, 64)), udp=True)
    with pytest.raises(ValueError, match="input_size"):
        TopDownTransform(IN, COCO, codec=UDPHeatmap((288, 384), (72, 96)), udp=True)


def test_bad_inputs_name_record_and_field():
    tf = TopDownTransform(IN, COCO)
    img = np.zeros((100, 100, 3), np.uint8)
    kp, vis, box = np.zeros((17, 2)), np.ones(17), [10, 10, 50, 80]
    with pytest.raises(DataError, match="ann 7.*field image"):
        tf(img.astype(np.float32), kp, vis, box, record="ann 7")
    with pytest.raises(DataError, match="field keypoints"):
        tf(img, np.zeros((16, 2)), vis[:16], box)
    with pytest.raises(DataError, match="field visible"):
        tf(img, kp, np.ones(3), box)
    with pytest.raises(DataError, match="field bbox"):
        tf(img, kp, vis, [10, 10, 0, 80])
    with pytest.raises(DataError, match="field bbox"):
        tf(img, kp, vis)


def test_half_body_selection():
    kp = np.zeros((17, 2))
    kp[:11] = np.stack([np.linspace(100, 140, 11), np.linspace(50, 90, 11)], -1)  # upper body ids 0..10
    kp[11:] = np.stack([np.linspace(110, 130, 6), np.linspace(150, 250, 6)], -1)
    vis = np.ones(17)
    rng = np.random.default_rng(0)
    c, s = half_body_center_scale(kp, vis, COCO.upper_body, 0.75, rng, upper_prob=1.0)
    np.testing.assert_allclose(c, kp[:11].mean(0))
    np.testing.assert_allclose(s, [40 * 1.5, 40 / 0.75 * 1.5])
    c, s = half_body_center_scale(kp, vis, COCO.upper_body, 0.75, rng, upper_prob=0.0)
    np.testing.assert_allclose(c, kp[11:].mean(0))
    np.testing.assert_allclose(s, [100 * 0.75 * 1.5, 100 * 1.5])
    few = np.zeros(17)
    few[[0]] = 1
    assert half_body_center_scale(kp, few, COCO.upper_body, 0.75, rng) is None
    # upper body chosen ~69% of the time (the reference's randn() < 0.5)
    ups = [np.allclose(half_body_center_scale(kp, vis, COCO.upper_body, 0.75, rng)[0], kp[:11].mean(0))
           for _ in range(2000)]
    assert 0.66 < np.mean(ups) < 0.72


def test_random_scale_rotation_and_shift_distributions():
    rng = np.random.default_rng(0)
    draws = [random_scale_rotation(np.array([100.0, 100.0]), rng) for _ in range(4000)]
    s = np.array([d[0][0] for d in draws]) / 100
    r = np.array([d[1] for d in draws])
    assert s.min() >= 0.5 and s.max() <= 1.5 and (s == 0.5).any() and (s == 1.5).any()
    assert np.abs(r).max() <= 80 and 0.57 < (r != 0).mean() < 0.63
    assert 35 < r[r != 0].std() < 42
    centers = np.array([random_shift_center([0, 0], [100, 200], rng, 0.16, 1.0) for _ in range(2000)])
    assert np.abs(centers[:, 0]).max() <= 16 and np.abs(centers[:, 1]).max() <= 32
    assert np.abs(centers[:, 1]).max() > 30
    unshifted = [random_shift_center([1, 2], [100, 200], rng, 0.16, 0.0) for _ in range(10)]
    np.testing.assert_array_equal(unshifted, [[1, 2]] * 10)


def test_photometric_ops():
    rng = np.random.default_rng(0)
    img = rng.integers(30, 200, (64, 48, 3), dtype=np.uint8)
    same = color_jitter(img, rng, 0, 0, 0, 0)
    np.testing.assert_array_equal(same, img)
    out = color_jitter(img, rng, 0.4, 0.4, 0.4, 0.2)
    assert out.dtype == np.uint8 and out.shape == img.shape and not np.array_equal(out, img)
    bright = color_jitter(np.full((4, 4, 3), 100, np.uint8), np.random.default_rng(1), brightness=0.4, contrast=0,
                          saturation=0, hue=0)
    assert 60 <= bright[0, 0, 0] <= 140 and (bright == bright[0, 0, 0]).all()
    ones = np.full((400, 400, 3), 255, np.uint8)
    frac = np.mean([(grid_dropout(ones, rng)[..., 0] == 0).mean() for _ in range(20)])
    assert 0.15 < frac < 0.3  # hole fraction ~ ratio^2 = 0.25
    x = normalize_image(np.full((2, 3, 3), 128, np.uint8))
    np.testing.assert_allclose(x[:, 0, 0].numpy(), (128 / 255 - np.array(IMAGENET_MEAN)) / IMAGENET_STD, rtol=1e-6)
