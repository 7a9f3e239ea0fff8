"""Appearance and image formation of the synthetic world: photo backgrounds, camera effects, shadows, dressed people."""

from __future__ import annotations

import hashlib
import pickle
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from humanvision.data.io import read_image, write_image
from humanvision.data.synthetic.backgrounds import (
    EXCLUDED,
    VALIDATION_IMAGES,
    BackgroundBank,
    collect_backgrounds,
    excluded_reason,
)
from humanvision.data.synthetic.body import JOINTS, PART_NAMES, pose_body, sample_pose, sample_shape
from humanvision.data.synthetic.identities import _draw_identity, dress_person
from humanvision.data.synthetic.photometric import ImageEffects, apply_effects
from humanvision.data.synthetic.render import (
    ELLIPSOID,
    Background,
    PrimitiveSet,
    camera_rays,
    procedural_background,
    render,
)
from humanvision.data.synthetic.scene import SceneConfig, _person_primitives, annotate
from humanvision.errors import ConfigError, DataError
from humanvision.geometry.camera import Camera

VALIDATION = ("astronaut", "camera", "grace_hopper", "messi5", "basketball1", "basketball2")


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _texture(seed: int, w: int, h: int) -> np.ndarray:
    """A photo-like uint8 RGB texture (smooth colour field plus detail), different per seed."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.uniform(0, 255, (4, 5, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ backgrounds
def test_bank_skips_and_names_bad_files(tmp_path):
    write_image(tmp_path / "a_street.png", _texture(1, 120, 90))
    write_image(tmp_path / "sub" / "b_wall.jpg", _texture(2, 100, 140))
    write_image(tmp_path / "c_room.bmp", _texture(3, 80, 80))
    (tmp_path / "broken.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    (tmp_path / "notes.png").write_text("this is a text file, not a picture\n")
    write_image(tmp_path / "tiny.png", _texture(4, 40, 30))
    (tmp_path / "readme.txt").write_text("not an image suffix: ignored, not reported")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bank = BackgroundBank(tmp_path)
    assert len(bank) == 3
    assert [Path(p).name for p in bank.paths] == ["a_street.png", "c_room.bmp", "b_wall.jpg"]  # sorted, recursive
    skipped = {Path(p).name: reason for p, reason in bank.skipped}
    assert set(skipped) == {"broken.jpg", "notes.png", "tiny.png"}
    assert "decode" in skipped["broken.jpg"] and "decode" in skipped["notes.png"]
    assert "too small" in skipped["tiny.png"]
    ours = [w for w in caught if "background bank" in str(w.message)]
    assert len(ours) == 1
    assert all(name in str(ours[0].message) for name in ("broken.jpg", "notes.png", "tiny.png"))
    # max_side downscales on load
    small = BackgroundBank(tmp_path / "sub", max_side=70)
    assert max(small.images[0].shape[:2]) == 70 and small.images[0].dtype == np.uint8


def test_bank_without_usable_images_is_a_data_error(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (bad / "y.png").write_text("text")
    with pytest.warns(UserWarning), pytest.raises(DataError, match="no usable background image") as err:
        BackgroundBank(bad)
    assert str(bad) in str(err.value)
    with pytest.raises(DataError, match="not found") as err:
        BackgroundBank([tmp_path / "missing"])
    assert "missing" in str(err.value)


def test_bank_sample_contract(tmp_path):
    write_image(tmp_path / "a.png", _texture(5, 200, 150))
    write_image(tmp_path / "b.png", _texture(6, 90, 220))
    bank = BackgroundBank(tmp_path)
    ref = procedural_background(np.random.default_rng(0), 64, 48)
    for W, H in ((64, 48), (300, 40), (30, 250), (512, 512)):
        img = bank.sample(np.random.default_rng(1), W, H)
        assert img.shape == (H, W, 3) and img.dtype == ref.dtype == np.float32
        assert img.min() >= 0.0 and img.max() <= 1.0 and img.flags.c_contiguous
    a = bank.sample(np.random.default_rng(7), 96, 64)
    assert np.array_equal(a, bank.sample(np.random.default_rng(7), 96, 64))
    assert not np.array_equal(a, bank.sample(np.random.default_rng(8), 96, 64))
    clone = pickle.loads(pickle.dumps(bank))
    assert np.array_equal(a, clone.sample(np.random.default_rng(7), 96, 64))
    # without jitter and blur, a flat photo gives exactly its colour at any crop, zoom and flip
    flat = tmp_path / "flat"
    write_image(flat / "f.png", np.full((80, 100, 3), (51, 128, 204), np.uint8))
    plain = BackgroundBank(flat, jitter=0.0, blur_prob=0.0)
    for s in range(5):
        out = plain.sample(np.random.default_rng(s), 40, 70)
        assert np.allclose(out, np.array([51, 128, 204], np.float32) / 255, atol=1e-6)
    # with jitter the colour moves, within the documented bounds (brightness, contrast, saturation, hue, gamma)
    jittered = BackgroundBank(flat, blur_prob=0.0)
    means = np.stack([jittered.sample(np.random.default_rng(s), 16, 16).mean((0, 1)) for s in range(20)])
    assert means.std(0).min() > 0.01 and (np.abs(means - np.array([0.2, 0.5, 0.8])) < 0.35).all()


def test_bank_refuses_a_renamed_validation_image(tmp_path):
    mpl = pytest.importorskip("matplotlib")
    hopper = Path(mpl.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not hopper.is_file():
        pytest.skip("matplotlib without its sample data")
    img = read_image(hopper)
    small = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
    write_image(tmp_path / "portrait_of_someone.jpg", small[:, ::-1].copy())  # renamed, resized, re-encoded, flipped
    write_image(tmp_path / "street.png", _texture(9, 100, 100))
    with pytest.warns(UserWarning, match="portrait_of_someone"):
        bank = BackgroundBank(tmp_path)
    assert len(bank) == 1 and "grace_hopper" in bank.skipped[0][1]


def _fake_tree(root: Path, names: list[str], seed: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        write_image(root / n, _texture(seed + i, 96, 80))
    return root


def test_collect_refuses_excluded_names(tmp_path):
    for name in VALIDATION:
        assert name in VALIDATION_IMAGES and excluded_reason(f"{name}.png") is not None
        assert excluded_reason(f"{name.upper()}.JPG") is not None  # case-insensitive
        assert name in EXCLUDED
    assert excluded_reason("vtest_frame_0042.png") is not None  # frames of the validation video
    assert excluded_reason("opencv-doc_messi5.jpg") is not None  # a collected name fed back in
    assert excluded_reason("coffee.png") is None

    sk = _fake_tree(tmp_path / "skimage" / "data", ["astronaut.png", "camera.png", "coffee.png", "brick.png",
                                                     "chelsea.png", "brand_new.png"], 100)
    mpl = _fake_tree(tmp_path / "mpl-data" / "sample_data", ["grace_hopper.jpg", "logo2.png"], 200)
    ocv = _fake_tree(tmp_path / "ocv" / "usr" / "share" / "doc" / "opencv-doc" / "examples" / "data",
                     ["messi5.jpg", "basketball1.png", "basketball2.png", "fruits.jpg", "left01.jpg"], 300)
    extra = _fake_tree(tmp_path / "mine", ["astronaut.png", "camera.png", "grace_hopper.jpg", "messi5.jpg",
                                           "basketball1.png", "basketball2.png", "vtest_0001.png", "street.png",
                                           "park/bench.jpg"], 400)
    out = tmp_path / "out"
    summary = collect_backgrounds(out, opencv_doc=tmp_path / "ocv", extra=[extra], skimage_data=sk,
                                  matplotlib_data=mpl)
    copied = set(summary["files"])
    assert copied == {"scikit-image_brick.png", "scikit-image_coffee.png", "opencv-doc_fruits.jpg",
                      "extra_street.png", "extra_park_bench.jpg"}
    assert summary["copied"] == 5
    assert summary["by_source"] == {"scikit-image": 2, "matplotlib": 0, "opencv-doc": 1, "extra": 2}
    assert {p.name for p in out.iterdir()} == copied | {"SOURCES.txt"}
    refused = {Path(p).name: reason for p, reason in summary["refused"]}
    for name in ("astronaut.png", "camera.png", "grace_hopper.jpg", "messi5.jpg", "basketball1.png",
                 "basketball2.png", "vtest_0001.png", "chelsea.png", "left01.jpg", "logo2.png", "brand_new.png"):
        assert name in refused, name
    assert "not reviewed" in refused["brand_new.png"] and "validation" in refused["vtest_0001.png"]
    refused_paths = {p for p, _ in summary["refused"]}
    for name in VALIDATION:  # refused from the extra folder too, not only from the packages
        assert any(Path(p).parent == extra and Path(p).stem == name for p in refused_paths), name
    assert "scikit-image: gravel.png" in summary["missing"]
    sources = (out / "SOURCES.txt").read_text()
    assert all(n in sources for n in copied) and "grace_hopper" not in sources
    assert np.array_equal(read_image(out / "opencv-doc_fruits.jpg"), read_image(ocv / "fruits.jpg"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SOURCES.txt is not an image: no warning
        assert len(BackgroundBank(out)) == 5


# ------------------------------------------------------------------------------------------------ camera effects
def test_effects_contract_and_determinism():
    img = _texture(11, 80, 60).astype(np.float32) / 255
    e = ImageEffects()
    a = apply_effects(img, np.random.default_rng(3), e)
    assert a.shape == img.shape and a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
    assert np.array_equal(a, apply_effects(img, np.random.default_rng(3), e))
    outs = [apply_effects(img, np.random.default_rng(s), e) for s in range(6)]
    assert sum(not np.array_equal(o, img) for o in outs) >= 5
    assert len({_sha(o) for o in outs}) == 6
    every = ImageEffects(**{f: 1.0 for f in ImageEffects.__dataclass_fields__  # the colour kept (monochrome apart)
                            if f.endswith("_prob") and f != "monochrome_prob"})
    b = apply_effects(img, np.random.default_rng(3), every)
    assert b.shape == img.shape and b.dtype == np.float32 and 0 <= b.min() and b.max() <= 1
    assert np.abs(b - img).mean() < 0.15  # degraded, not destroyed


def test_effects_reject_bad_settings():
    for bad in ({"jpeg_prob": 1.5}, {"blur_sigma": (2.0, 1.0)}, {"jpeg_quality": (0, 50)}, {"noise_luma": 2.0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            ImageEffects(**bad)
    with pytest.raises(DataError, match="rgb"):
        apply_effects(np.zeros((8, 8), np.float32), np.random.default_rng(0), ImageEffects())


def test_effects_identity_when_every_probability_is_zero():
    img = _texture(12, 50, 40).astype(np.float32) / 255
    for e in (ImageEffects.none(), ImageEffects(**{f: 0.0 for f in ImageEffects.__dataclass_fields__
                                                   if f.endswith("_prob")})):
        out = apply_effects(img, np.random.default_rng(0), e)
        assert np.array_equal(out, img) and out is not img


def _only(**kw) -> ImageEffects:
    e = ImageEffects.none()
    for k, v in kw.items():
        setattr(e, k, v)
    return e


def test_each_effect_matches_a_reference():
    img = _texture(13, 64, 48).astype(np.float32) / 255
    rng = lambda: np.random.default_rng(5)
    # JPEG: exactly OpenCV's encode/decode of the 8-bit image at the drawn quality, and it changes pixels
    out = apply_effects(img, rng(), _only(jpeg_prob=1.0, jpeg_quality=(40, 40)))
    u8 = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    _, buf = cv2.imencode(".jpg", cv2.cvtColor(u8, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 40])
    ref = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float32) / 255
    assert np.allclose(out, ref, atol=1e-6) and np.abs(out - img).max() > 0.02
    # Gaussian blur of the drawn sigma
    out = apply_effects(img, rng(), _only(blur_prob=1.0, blur_sigma=(1.5, 1.5)))
    ref = cv2.GaussianBlur(img, (0, 0), 1.5, borderType=cv2.BORDER_REFLECT)
    assert np.allclose(out, ref, atol=1e-6)
    # exposure: a global gain 2^ev, clipped
    out = apply_effects(img, rng(), _only(exposure_prob=1.0, exposure_ev=(1.0, 1.0)))
    assert np.allclose(out, np.clip(2 * img, 0, 1), atol=1e-6)
    # gamma
    out = apply_effects(img, rng(), _only(gamma_prob=1.0, gamma=(2.0, 2.0)))
    assert np.allclose(out, img**2, atol=1e-6)
    # vignetting: the centre keeps its value, the corners lose the strength
    flat = np.full((41, 61, 3), 0.8, np.float32)
    out = apply_effects(flat, rng(), _only(vignette_prob=1.0, vignette_strength=(0.5, 0.5)))
    assert out[20, 30, 0] == pytest.approx(0.8) and out[0, 0, 0] == pytest.approx(0.4, abs=1e-5)
    # motion blur: a line kernel, energy preserved, the dot spread along a line
    dot = np.zeros((31, 31, 3), np.float32)
    dot[15, 15] = 1.0
    out = apply_effects(dot, rng(), _only(motion_blur_prob=1.0, motion_blur_length=(9.0, 9.0)))
    assert out.sum() == pytest.approx(3.0, rel=1e-5) and (out[..., 0] > 0).sum() >= 7 and out.max() < 0.3
    # noise: the drawn standard deviation, zero mean; grey noise when fully luminance
    grey = np.full((256, 256, 3), 0.5, np.float32)
    out = apply_effects(grey, rng(), _only(noise_prob=1.0, noise_std=(0.02, 0.02), noise_luma=1.0))
    assert out.std() == pytest.approx(0.02, rel=0.05) and abs(out.mean() - 0.5) < 1e-3
    assert np.array_equal(out[..., 0], out[..., 1])
    out = apply_effects(grey, rng(), _only(noise_prob=1.0, noise_std=(0.02, 0.02), noise_luma=0.0))
    assert out.std() == pytest.approx(0.02, rel=0.05) and abs(np.corrcoef(out[..., 0].ravel(),
                                                                           out[..., 1].ravel())[0, 1]) < 0.05
    # monochrome: BT.601 luma in every channel; drawn last, so turning it on changes no other effect's draws
    out = apply_effects(img, rng(), _only(monochrome_prob=1.0))
    luma = img @ np.array([0.299, 0.587, 0.114], np.float32)
    assert np.allclose(out, luma[..., None].repeat(3, -1), atol=2e-3)
    a = apply_effects(img, rng(), ImageEffects())
    b = apply_effects(img, rng(), ImageEffects(monochrome_prob=1.0))
    assert np.allclose(b, (a @ np.array([0.299, 0.587, 0.114], np.float32))[..., None].repeat(3, -1), atol=2e-3)


# ------------------------------------------------------------------------------------------------ shadows
def _two_people():
    rng = np.random.default_rng(2024)
    bodies = [pose_body(sample_shape(rng), sample_pose(rng), root_position=np.array([x, y, 0.0]), ground="touch")
              for x, y in ((0, 0), (900, 700))]
    prims = PrimitiveSet.concatenate([_person_primitives(b, i + 1, rng) for i, b in enumerate(bodies)])
    cam = Camera.look_at([3500.0, -3000.0, 1800.0], [400.0, 300.0, 800.0], focal=110.0, width=96, height=80)
    bg = Background(procedural_background(rng, 96, 80), ground_colours=np.array([[0.5, 0.45, 0.4],
                                                                                 [0.7, 0.66, 0.6]]), tile=500.0)
    return bodies, prims, cam, bg


def test_shadows_off_is_todays_render():
    _, prims, cam, bg = _two_people()
    light = np.array([0.5, 0.4, 0.77])
    a = render(prims, cam, bg, light, 0.45, 0.6)
    b = render(prims, cam, bg, light, 0.45, 0.6, shadows=False)
    # checksum of this scene rendered by render.py before shadows existed
    assert _sha(a.rgb) == "30ab420e4b95234d4501d25d702e5a239ffc1bc3da2d2179946f9b8c927da11a"
    for f in ("rgb", "depth", "parts", "instances"):
        assert np.array_equal(getattr(a, f), getattr(b, f))


def _ground_points(cam: Camera, depth: np.ndarray) -> np.ndarray:
    H, W = depth.shape
    dx, dy = (np.broadcast_to(v, (H, W)) for v in camera_rays(cam))
    p = np.stack([dx * depth, dy * depth, depth], -1)
    return (p - cam.t) @ cam.R  # camera -> world


def test_shadow_of_a_ball_matches_the_analytic_shadow():
    c, r = np.array([0.0, 0.0, 600.0]), 250.0
    ball = PrimitiveSet(kind=np.array([ELLIPSOID]), a=np.zeros((1, 3)), b=np.zeros((1, 3)), radius=np.zeros(1),
                        centre=c[None], axes=np.eye(3)[None], radii=np.full((1, 3), r), frame=np.eye(3)[None],
                        origin=c[None], part=np.ones(1, np.uint8), instance=np.ones(1, np.uint8),
                        colour_a=np.full((1, 3), 0.7), colour_b=np.full((1, 3), 0.7), pattern=np.zeros(1, np.int64),
                        period=np.full(1, 100.0))
    cam = Camera.look_at([0.0, -3000.0, 2500.0], [300.0, 300.0, 0.0], focal=70.0, width=80, height=64)
    bg = Background(np.full((64, 80, 3), 0.5, np.float32), ground_colours=np.full((2, 3), 0.6))
    light = np.array([0.45, 0.3, 0.84])
    off = render(ball, cam, bg, light, 0.4, 0.6)
    on = render(ball, cam, bg, light, 0.4, 0.6, shadows=True)
    for f in ("depth", "parts", "instances"):
        assert np.array_equal(getattr(off, f), getattr(on, f))
    ground = (off.depth > 0) & (off.instances == 0)
    P = _ground_points(cam, off.depth.astype(np.float64))
    L = light / np.linalg.norm(light)
    v = c - P
    along = v @ L
    dist = np.linalg.norm(v - along[..., None] * L, axis=-1)
    expect = ground & (along > 0) & (dist <= r)
    darker = (on.rgb.astype(int) < off.rgb.astype(int)).all(-1)
    sure = np.abs(dist - r) > 1.0  # leave the rim (float rounding of the reconstructed points) out
    assert expect.sum() > 40
    assert np.array_equal(darker[sure & ground], expect[sure & ground])
    # shadowed ground keeps only the ambient term (ground colour 0.6, backdrop 0.5, aerial-perspective fade)
    fade = np.exp(-off.depth[expect] / 40000.0)
    for shade, out in ((0.4, on), (0.4 + 0.6 * L[2], off)):
        ref = 255 * (fade * 0.6 * shade + (1 - fade) * 0.5)
        assert np.abs(out.rgb[expect][:, 0] - ref).max() <= 1.0


def test_people_cast_shadows_away_from_the_light():
    bodies, prims, cam, bg = _two_people()
    light = np.array([0.5, 0.4, 0.77])
    off = render(prims, cam, bg, light, 0.45, 0.6)
    on = render(prims, cam, bg, light, 0.45, 0.6, shadows=True)
    for f in ("depth", "parts", "instances"):
        assert np.array_equal(getattr(off, f), getattr(on, f))
    changed = (on.rgb != off.rgb).any(-1)
    ground = (off.instances == 0) & (off.depth > 0)
    darker = (on.rgb.astype(int) <= off.rgb.astype(int)).all(-1)
    assert (changed & ground).sum() > 10 and darker[changed].all()
    P = _ground_points(cam, off.depth.astype(np.float64))
    L = light / np.linalg.norm(light)
    joints = np.concatenate([b.joints for b in bodies])
    ys, xs = np.nonzero(changed & ground)
    v = joints[None] - P[ys, xs, None]  # (n, joints, 3)
    along = v @ L
    off_ray = np.linalg.norm(v - along[..., None] * L, axis=-1)
    # every shadowed ground point has a body joint towards the light, within a limb's thickness of its ray
    assert ((along > 0) & (off_ray < 250)).any(1).all()
    # and ground well on the light's side of both people is never darkened
    roots = np.stack([b.joints[JOINTS.index("pelvis")] for b in bodies])
    lit_side = ((P[..., None, :2] - roots[:, :2]) @ (L[:2] / np.linalg.norm(L[:2])) > 700).all(-1) & ground
    assert lit_side.sum() > 100 and not changed[lit_side].any()
    # body_shadows=False leaves every body pixel as without shadows
    ground_only = render(prims, cam, bg, light, 0.45, 0.6, shadows=True, body_shadows=False)
    people = off.instances > 0
    assert np.array_equal(ground_only.rgb[people], off.rgb[people])
    assert np.array_equal(ground_only.rgb[~people], on.rgb[~people])


# ------------------------------------------------------------------------------------------------ dressed people
_ADJACENT = {f"{s}_{j}": {f"{s}_{a}", f"{s}_{b}"} for s in ("left", "right")
             for j, a, b in (("knee", "upper_leg", "lower_leg"), ("ankle", "lower_leg", "foot"),
                             ("elbow", "upper_arm", "lower_arm"), ("wrist", "lower_arm", "hand"))}


def _seeds_with(pred, n: int) -> list[int]:
    out, s = [], 0
    while len(out) < n:
        if pred(_draw_identity(np.random.default_rng([77, s]), 5)):
            out.append(s)
        s += 1
    return out


def test_dress_person_labels_and_instances():
    seeds = (_seeds_with(lambda i: i.upper == "coat", 3) + _seeds_with(lambda i: i.lower == "skirt", 3)
             + _seeds_with(lambda i: bool({"handbag", "backpack", "shoulder_bag"} & set(i.accessories)), 3)
             + list(range(3)))
    W, H = 72, 128
    checked = 0
    for k, s in enumerate(seeds):
        rng = np.random.default_rng([5, k])
        body = pose_body(sample_shape(rng), sample_pose(rng), ground="touch")
        ps = dress_person(body, 5, np.random.default_rng([77, s]))
        again = dress_person(body, 5, np.random.default_rng([77, s]))
        assert all(np.array_equal(getattr(ps, f), getattr(again, f)) for f in PrimitiveSet.__dataclass_fields__)
        assert (ps.instance == 5).all() and ps.instance.dtype == np.uint8
        assert ((ps.part >= 1) & (ps.part < len(PART_NAMES))).all()
        n_body = len(body.primitives)
        assert np.array_equal(ps.part[:n_body], [p.part for p in body.primitives])  # the body's own labels
        c = 0.5 * (body.joints.min(0) + body.joints.max(0))
        az = 2 * np.pi * k / len(seeds)
        cam = Camera.look_at(c + 4000 * np.array([np.cos(az), np.sin(az), 0.2]), c, focal=H * 4000 / 2300,
                             width=W, height=H)
        out = render(ps, cam, Background(np.zeros((H, W, 3), np.float32)), np.array([0.3, -0.4, 0.85]))
        person = out.instances == 5
        assert person.sum() > 300 and (out.parts[person] > 0).all() and (out.parts[~person] == 0).all()
        kp, vis, *_ = annotate(cam, out.depth, out.instances, body.joints[None], body.joint_radius[None])
        for name, parts in _ADJACENT.items():  # clothes over a limb carry the limb's label
            j = JOINTS.index(name)
            if vis[0, j] == 2:
                u, v = np.rint(kp[0, j]).astype(int)
                assert PART_NAMES[out.parts[v, u]] in parts, (s, name, PART_NAMES[out.parts[v, u]])
                checked += 1
    assert checked > 40
    with pytest.raises(ConfigError, match="instance"):
        dress_person(body, 0, np.random.default_rng(0))


def test_faces_hold_up_in_a_close_up_and_keep_the_face_points_visible():
    """``faces``: the head gets a nose, two ears (and a hair cap over short hair), all labelled head, and the
    ``face`` texture (whites of the eyes around dark pupils); the COCO face points stay visible in a frontal
    portrait and the ears in a profile, and the nose stands proud of the ``nose`` joint by a few millimetres."""
    rng = np.random.default_rng(3)
    body = pose_body(sample_shape(rng), np.zeros((15, 3)), ground="touch")
    plain = dress_person(body, 1, np.random.default_rng([9, 1]))
    faced = dress_person(body, 1, np.random.default_rng([9, 1]), faces=True)
    extra = len(faced.kind) - len(plain.kind)
    assert extra in (3, 4) and (faced.part[len(plain.kind):] == PART_NAMES.index("head")).all()
    assert np.array_equal(faced.colour_a[:len(plain.kind)], plain.colour_a)  # the look itself is unchanged
    eyes = 0.5 * (body.joints[JOINTS.index("left_eye")] + body.joints[JOINTS.index("right_eye")])
    W = H = 160
    for where, want in (("front", ("nose", "left_eye", "right_eye")), ("side", ("right_ear",))):
        aim = eyes if where == "front" else body.joints[JOINTS.index("head")]
        off = np.array([0.0, 600.0, 0.0]) if where == "front" else np.array([600.0, 0.0, 0.0])  # right side: +x
        cam = Camera.look_at(aim + off, aim, focal=500.0, width=W, height=H)
        for ps, faces in ((plain, False), (faced, True)):
            out = render(ps, cam, Background(np.zeros((H, W, 3), np.float32)), np.array([0.2, 0.8, 0.6]))
            kp, vis, kc, *_ = annotate(cam, out.depth, out.instances, body.joints[None], body.joint_radius[None],
                                       out.parts, rule="coco")
            for name in want:
                j = JOINTS.index(name)
                assert vis[0, j] == 2, (where, faces, name)
                u, v = np.rint(kp[0, j]).astype(int)
                assert PART_NAMES[out.parts[v, u]] == "head"
            if where == "front":
                u, v = np.rint(kp[0, JOINTS.index("nose")]).astype(int)
                proud = kc[0, JOINTS.index("nose"), 2] - out.depth[v, u]
                assert (2.0 < proud < 12.0) if faces else abs(proud) < 2.0, proud
                for eye in ("left_eye", "right_eye"):
                    u, v = np.rint(kp[0, JOINTS.index(eye)]).astype(int)
                    patch = out.rgb[v - 6:v + 7, u - 6:u + 7].astype(int)
                    white = (patch.min(-1) > 170).sum()
                    dark = (patch.max(-1) < 40).sum()
                    assert (white > 0 and dark > 0) if faces else white == 0, (eye, white, dark)
    with pytest.raises(ConfigError, match="SceneConfig.faces"):
        SceneConfig(faces=True)  # the plain clothes have no face to give
