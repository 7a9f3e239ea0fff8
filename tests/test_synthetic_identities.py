"""Persistent synthetic identities: appearance, attributes, crops and the re-id / attribute / text / HAP layouts."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from humanvision.data.io import read_image, safe_load_npy
from humanvision.data.synthetic import SceneConfig, generate, generate_frame
from humanvision.data.synthetic.body import PART
from humanvision.data.synthetic.identities import (
    PA100K_ATTRIBUTES,
    _render,
    generate_cuhk_pedes,
    generate_market1501,
    generate_pa100k,
    generate_person_crops,
    render_person_crop,
    sample_identity,
    tokenize,
)
from humanvision.errors import ConfigError

OFFICIAL = ("Female", "AgeOver60", "Age18-60", "AgeLess18", "Front", "Side", "Back", "Hat", "Glasses", "HandBag",
            "ShoulderBag", "Backpack", "HoldObjectsInFront", "ShortSleeve", "LongSleeve", "UpperStride",
            "UpperLogo", "UpperPlaid", "UpperSplice", "LowerStripe", "LowerPattern", "LongCoat", "Trousers",
            "Shorts", "Skirt&Dress", "boots")
MARKET = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")
SMALL = (32, 64)


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _one(attrs: dict, names: tuple[str, ...]) -> int:
    return sum(attrs[n] for n in names)


# ------------------------------------------------------------------------------------------------ the old world
def test_existing_scene_frames_unchanged():
    """Checksums taken before the appearance refactor of scene._person_primitives."""
    f = generate_frame(SceneConfig(size=(64, 64)), seed=0, index=0)
    assert _sha(f.views[0].rgb) == "d7baf7b138e6fcb9fdbf8c3ea5117fed454fb144bf054a993219d8fb560c6e69"
    f = generate_frame(SceneConfig(size=(96, 80), people=(1, 3)), seed=3, index=5)
    assert _sha(f.views[0].rgb) == "a4f4c25a52960da924e367c9dd9fd8ee5c21f1acd7d2fd67255cd2f27d255330"


def test_appearance_keeps_the_legacy_draw_order():
    """Platform-independent twin of the checksums: the draws of the scene's people, written out as they were."""
    import colorsys

    from humanvision.data.synthetic.scene import _HAIR, _SKIN, _person_primitives, sample_appearance

    def colour(rng, sat=(0.25, 0.9), val=(0.25, 0.95)):
        return np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*sat), rng.uniform(*val)))

    for seed in range(5):
        rng, ref = np.random.default_rng(seed), np.random.default_rng(seed)
        ap = sample_appearance(rng)
        skin = np.clip(_SKIN[ref.integers(len(_SKIN))] + ref.normal(0, 0.03, 3), 0, 1)
        hair = _HAIR[ref.integers(len(_HAIR))]
        shirt, shirt_b = colour(ref), colour(ref)
        trousers, trousers_b = colour(ref, sat=(0.1, 0.7), val=(0.15, 0.8)), colour(ref)
        shoes = colour(ref, sat=(0.0, 0.5), val=(0.05, 0.5))
        patterns = int(ref.choice([5, 5, 5, 1, 3])), int(ref.choice([0, 0, 0, 3, 1]))
        lengths = ref.uniform() < 0.5, ref.uniform() < 0.7
        periods = ref.uniform(40, 120), ref.uniform(60, 160)
        for a, b in zip((ap.skin, ap.hair, ap.shirt, ap.shirt_b, ap.trousers, ap.trousers_b, ap.shoes),
                        (skin, hair, shirt, shirt_b, trousers, trousers_b, shoes), strict=True):
            assert np.array_equal(a, b)
        assert (ap.shirt_pattern, ap.trousers_pattern) == patterns
        assert (ap.long_sleeves, ap.long_trousers) == lengths and (ap.period_shirt, ap.period_trousers) == periods
        assert rng.bit_generator.state == ref.bit_generator.state  # the scene's later draws are unchanged
    frame = generate_frame(SceneConfig(size=(32, 32)), seed=0, index=1)
    body = frame.people[0]
    a = _person_primitives(body, 1, np.random.default_rng(3))
    b = _person_primitives(body, 1, appearance=sample_appearance(np.random.default_rng(3)))
    for name in a.__dataclass_fields__:
        assert np.array_equal(getattr(a, name), getattr(b, name))


# ------------------------------------------------------------------------------------------------ identities
def test_identity_attributes_follow_appearance():
    assert PA100K_ATTRIBUTES == OFFICIAL
    seen = dict.fromkeys(OFFICIAL, 0)
    for pid in range(300):
        ident = sample_identity(7, pid)
        a = ident.attributes
        assert list(a) == list(OFFICIAL) and set(a.values()) <= {0, 1}
        assert _one(a, ("AgeOver60", "Age18-60", "AgeLess18")) == 1
        assert _one(a, ("Front", "Side", "Back")) == 0  # per view only
        assert a["LongSleeve"] == int(ident.appearance.long_sleeves) == 1 - a["ShortSleeve"]
        assert _one(a, ("Trousers", "Shorts", "Skirt&Dress")) == 1
        assert a["Trousers"] == int(ident.appearance.long_trousers)
        assert _one(a, ("UpperStride", "UpperLogo", "UpperPlaid", "UpperSplice")) <= 1
        assert a["UpperLogo"] == int(ident.appearance.shirt_pattern == 5)
        assert a["LongCoat"] <= a["LongSleeve"]
        for acc, name in (("hat", "Hat"), ("glasses", "Glasses"), ("backpack", "Backpack"),
                          ("shoulder_bag", "ShoulderBag"), ("handbag", "HandBag")):
            assert a[name] == int(acc in ident.accessories)
        assert a["HoldObjectsInFront"] == 0
        assert a["Skirt&Dress"] <= a["Female"]
        for k, v in a.items():
            seen[k] += v
    # every attribute the world expresses occurs (so mA is defined), the documented one never does
    assert [k for k, v in seen.items() if v == 0] == ["Front", "Side", "Back", "HoldObjectsInFront"]
    again = sample_identity(7, 11)
    ref = sample_identity(7, 11)
    assert again.attributes == ref.attributes and again.colour_names == ref.colour_names
    assert np.array_equal(again.appearance.shirt, ref.appearance.shirt) and again.shape == ref.shape
    assert sample_identity(8, 11).colour_names != ref.colour_names or sample_identity(8, 11).shape != ref.shape
    with pytest.raises(ConfigError):
        sample_identity(0, -1)


def test_crop_contract_and_views():
    ident = sample_identity(0, 3)
    rgb, kp, attrs = render_person_crop(ident, 0, 5, size=SMALL)
    assert rgb.shape == (64, 32, 3) and rgb.dtype == np.uint8 and kp.shape == (17, 3)
    assert set(np.unique(kp[:, 2])) <= {0.0, 1.0, 2.0}
    rgb2, kp2, attrs2 = render_person_crop(ident, 0, 5, size=SMALL)
    assert np.array_equal(rgb, rgb2) and np.array_equal(kp, kp2) and attrs == attrs2
    assert not np.array_equal(rgb, render_person_crop(ident, 0, 6, size=SMALL)[0])

    front_nose, back_nose, front_lr, back_lr, n_front, n_back = 0, 0, 0, 0, 0, 0
    for i in range(48):
        ident = sample_identity(1, i)
        rgb, kp, attrs, extra = _render(ident, 1, i, (48, 96), None, camera=i % 3)
        assert _one(attrs, ("Front", "Side", "Back")) == 1
        assert {k: v for k, v in attrs.items() if k not in ("Front", "Side", "Back")} == \
            {k: v for k, v in ident.attributes.items() if k not in ("Front", "Side", "Back")}
        # visible keypoints lie on the person (within a pixel: face points sit on the head's outline); the
        # person fills the crop like a detection (a margin, ~1:2)
        inst = np.pad(extra["instances"], 1)
        vis = kp[:, 2] == 2
        u, v = np.rint(kp[vis, 0]).astype(int) + 1, np.rint(kp[vis, 1]).astype(int) + 1
        near = np.stack([inst[v + dv, u + du] for dv in (-1, 0, 1) for du in (-1, 0, 1)])
        assert (near == 1).any(0).all()
        inst = extra["instances"]
        rows = np.flatnonzero((inst == 1).any(1))
        assert 0.75 * 96 < rows[-1] - rows[0] + 1 <= 96
        # nose towards the camera and the person's left on the image's right in front views; mirrored from behind
        if attrs["Front"]:
            n_front += 1
            front_nose += kp[0, 2] == 2
            front_lr += kp[5, 0] > kp[6, 0]
        if attrs["Back"]:
            n_back += 1
            back_nose += kp[0, 2] == 2
            back_lr += kp[5, 0] < kp[6, 0]
    assert n_front >= 5 and n_back >= 5
    assert front_nose >= 0.8 * n_front and back_nose <= 0.2 * n_back
    assert front_lr >= 0.8 * n_front and back_lr >= 0.8 * n_back


def _shirt_chroma(ident, index: int, camera: int) -> np.ndarray:
    rgb, kp, _, extra = _render(ident, 0, index, (64, 128), None, camera=camera)
    top, bottom = kp[[5, 6], 1].mean(), kp[[11, 12], 1].mean()
    ys = np.arange(rgb.shape[0])[:, None]
    chest = (extra["parts"] == PART["torso"]) & (ys < top + 0.5 * (bottom - top))
    assert chest.sum() >= 20
    c = rgb[chest].astype(np.float64).mean(0)
    return c / c.sum()


def test_same_identity_same_shirt_different_identities_differ():
    picked: dict[str, int] = {}
    for pid in range(400):
        ident = sample_identity(0, pid)
        name = ident.colour_names["shirt"]
        if (name in ("red", "green", "blue", "yellow") and name not in picked and ident.upper_pattern == "plain"
                and ident.upper == "shirt" and not {"backpack", "shoulder_bag"} & set(ident.accessories)):
            picked[name] = pid
    assert len(picked) == 4
    means = {}
    spread = 0.0
    for name, pid in picked.items():
        ident = sample_identity(0, pid)
        chroma = np.stack([_shirt_chroma(ident, k, camera=k) for k in range(3)])
        spread = max(spread, np.abs(chroma - chroma.mean(0)).max())
        means[name] = chroma.mean(0)
    between = min(np.abs(means[a] - means[b]).max() for a in means for b in means if a < b)
    assert spread < 0.06 and between > 3 * spread


# ------------------------------------------------------------------------------------------------ Market-1501
def _market(files):
    out = []
    for f in files:
        m = MARKET.match(f.name)
        assert m, f.name
        out.append((int(m.group(1)), int(m.group(2)), f))
    return out


def test_market1501_layout(tmp_path):
    s = generate_market1501(tmp_path, num_train_ids=4, num_test_ids=4, cameras=3, images_per_id_camera=(1, 2),
                            seed=0, distractors=3, junk=2, size=SMALL)
    train = _market(sorted((tmp_path / "bounding_box_train").iterdir()))
    gallery = _market(sorted((tmp_path / "bounding_box_test").iterdir()))
    query = _market(sorted((tmp_path / "query").iterdir()))
    assert (s["train_images"], s["gallery_images"], s["query_images"]) == (len(train), len(gallery), len(query))
    names = [f.name for *_, f in train + gallery + query]
    assert len(set(names)) == len(names)
    train_ids = {p for p, _, _ in train}
    test_ids = {p for p, _, _ in gallery if p > 0}
    assert len(train_ids) == 4 and len(test_ids) == 4 and not train_ids & test_ids
    assert sorted(train_ids) == s["pids"]["train"] and sorted(test_ids) == s["pids"]["test"]
    assert sum(p == 0 for p, _, _ in gallery) == 3 and sum(p == -1 for p, _, _ in gallery) == 2
    assert all(f.name.startswith("-1_") for p, _, f in gallery if p == -1)
    assert all(f.name.endswith("_00.jpg") for *_, f in query)
    assert {p for p, _, _ in query} == test_ids
    gal_cams = {}
    for p, c, _ in gallery:
        if p > 0:
            gal_cams.setdefault(p, set()).add(c)
    q_pairs = [(p, c) for p, c, _ in query]
    assert len(set(q_pairs)) == len(q_pairs)  # one query per id and camera
    for p, cams in gal_cams.items():
        assert len(cams) >= 2 and {c for q, c in q_pairs if q == p} == cams
    for p, c in q_pairs:
        assert any(c2 != c for c2 in gal_cams[p])  # a true match in another camera
    assert {c for _, c, _ in train + gallery + query} <= {1, 2, 3}
    assert read_image(train[0][2]).shape == (64, 32, 3)
    with pytest.raises(ConfigError):
        generate_market1501(tmp_path / "bad", 2, cameras=1)


# ------------------------------------------------------------------------------------------------ PA-100K
def test_pa100k_annotation_mat(tmp_path):
    s = generate_pa100k(tmp_path, num_images=10, seed=2, size=SMALL)
    assert (s["train"], s["val"], s["test"]) == (8, 1, 1)
    m = scipy.io.loadmat(str(tmp_path / "annotation.mat"))
    assert m["attributes"].shape == (26, 1) and m["attributes"].dtype == object
    assert tuple(m["attributes"][i][0][0] for i in range(26)) == OFFICIAL
    names = []
    for split, n in (("train", 8), ("val", 1), ("test", 1)):
        cell, label = m[f"{split}_images_name"], m[f"{split}_label"]
        assert cell.shape == (n, 1) and cell.dtype == object
        assert label.shape == (n, 26) and label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1}
        names += [cell[i][0][0] for i in range(n)]
        for i in range(n):
            row = dict(zip(OFFICIAL, label[i].tolist(), strict=True))
            ref = sample_identity(2, len(names) - n + i + 1).attributes
            assert _one(row, ("Front", "Side", "Back")) == 1
            assert {k: v for k, v in row.items() if k not in ("Front", "Side", "Back")} == \
                {k: v for k, v in ref.items() if k not in ("Front", "Side", "Back")}
    assert names == [f"{i:06d}.jpg" for i in range(1, 11)]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == names
    with pytest.raises(ConfigError):
        generate_pa100k(tmp_path / "bad", 4, split=(0.5, 0.1, 0.1))
    with pytest.raises(ConfigError):
        generate("pa100k", tmp_path / "bad", {"train": 3})


# ------------------------------------------------------------------------------------------------ CUHK-PEDES
def test_cuhk_pedes_reid_raw(tmp_path):
    generate_cuhk_pedes(tmp_path, num_ids=10, images_per_id=2, seed=0, size=SMALL)
    records = json.loads((tmp_path / "reid_raw.json").read_text())
    assert len(records) == 20
    splits = {}
    for r in records:
        assert set(r) == {"split", "captions", "file_path", "processed_tokens", "id"}
        assert r["split"] in ("train", "val", "test") and isinstance(r["id"], int) and 1 <= r["id"] <= 10
        assert splits.setdefault(r["id"], r["split"]) == r["split"]  # split by identity
        assert len(r["captions"]) == 2 and r["captions"][0] != r["captions"][1]
        assert r["processed_tokens"] == [tokenize(c) for c in r["captions"]]
        assert all(t == t.lower() and t.replace("-", "").isalnum() for toks in r["processed_tokens"] for t in toks)
        assert (tmp_path / "imgs" / r["file_path"]).is_file()
        ident = sample_identity(0, r["id"])
        for c in r["captions"]:
            assert ident.colour_names["shirt"] in c and ident.colour_names["lower"] in c
            assert ("long-sleeved" in c or "long coat" in c) == ident.appearance.long_sleeves
    assert [splits[i] for i in range(1, 11)] == ["train"] * 8 + ["val", "test"]
    assert len({r["file_path"] for r in records}) == 20


# ------------------------------------------------------------------------------------------------ HAP crops
def test_person_crops_keypoints_and_hap_npy(tmp_path):
    generate_person_crops(tmp_path, 3, seed=4, size=SMALL, hap_npy=True)
    table = json.loads((tmp_path / "keypoints.json").read_text())
    assert sorted(table) == [f"images/{i:08d}.jpg" for i in range(3)]
    score = {0: 0.0, 1: 0.5, 2: 1.0}
    for i in range(3):
        kp = np.array(table[f"images/{i:08d}.jpg"])
        assert kp.shape == (17, 3)
        rgb, ref, _ = render_person_crop(sample_identity(4, i + 1), 4, i, size=SMALL)
        assert np.allclose(kp[:, :2], ref[:, :2], atol=1e-4)
        assert kp[:, 2].tolist() == [score[int(v)] for v in ref[:, 2]]
        pose = safe_load_npy(tmp_path / "pose" / f"{i:08d}.npy")[0][0]["keypoints"]
        assert pose.shape == (17, 3) and np.allclose(pose, kp, atol=1e-6)
        img = read_image(tmp_path / "images" / f"{i:08d}.jpg")
        assert img.shape == rgb.shape and np.abs(img.astype(int) - rgb).mean() < 6  # JPEG


def test_workers_do_not_change_the_bytes(tmp_path):
    generate_person_crops(tmp_path / "a", 4, seed=1, size=SMALL, workers=1)
    generate_person_crops(tmp_path / "b", 4, seed=1, size=SMALL, workers=2)
    for f in sorted((tmp_path / "a").rglob("*.*")):
        assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes()


def test_cli_synth_identity_formats(tmp_path):
    from typer.testing import CliRunner

    from humanvision.cli.app import app

    runner = CliRunner()
    res = runner.invoke(app, ["synth", "market1501", "-o", str(tmp_path / "m"), "-n", "2", "--size", "32x64",
                              "--workers", "1", "--no-sheet"])
    assert res.exit_code == 0, res.output
    assert all(any((tmp_path / "m" / d).iterdir()) for d in ("bounding_box_train", "bounding_box_test", "query"))
    res = runner.invoke(app, ["synth", "-f", "person_crops", "-o", str(tmp_path / "p"), "-n", "2", "--size",
                              "32x64", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert Path(tmp_path / "p" / "keypoints.json").is_file() and (tmp_path / "p" / "contact_sheet.png").is_file()
