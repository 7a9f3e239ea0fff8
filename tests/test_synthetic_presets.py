"""Scene presets and the opt-in scene features: byte-identical defaults, consistent labels, truncation, close-ups,
the COCO visibility rule, preset / background errors, DataConfig and the ``synth`` command line."""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from humanvision.data.synthetic import (
    JOINTS,
    PART_NAMES,
    SEGMENT_NAMES,
    BodyShape,
    SceneConfig,
    generate_frame,
    pose_body,
)
from humanvision.data.synthetic.presets import PRESETS, preset_statistics, scene_config
from humanvision.data.synthetic.render import Background, PrimitiveSet, render
from humanvision.data.synthetic.scene import _person_primitives, adjacent_parts, annotate, unlabel_hidden
from humanvision.errors import ConfigError, DataError
from humanvision.geometry.camera import Camera
from humanvision.skeletons import get_skeleton

J = {n: i for i, n in enumerate(JOINTS)}
COCO = np.array([J[n] for n in get_skeleton("coco17").joints])


def _sha(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _labels(view) -> tuple[np.ndarray, ...]:
    return view.rgb, view.depth, view.parts, view.instances, view.visibility, view.boxes


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A background folder: three textured photos (no person) and one file that does not decode."""
    root = tmp_path_factory.mktemp("backgrounds")
    rng = np.random.default_rng(0)
    for k in range(3):
        img = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (160, 120),
                         interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(root / f"photo{k}.png"), img)
    (root / "broken.jpg").write_bytes(b"not a jpeg at all")
    return root


# ------------------------------------------------------------------------------------------- today's frames
def test_legacy_preset_is_todays_default_byte_for_byte():
    assert scene_config("legacy") == SceneConfig()
    for seed, index in ((0, 0), (4, 9)):
        a = generate_frame(scene_config("legacy", size=(64, 64)), seed, index).views[0]
        b = generate_frame(SceneConfig(size=(64, 64)), seed, index).views[0]
        assert _sha(*_labels(a)) == _sha(*_labels(b))
    # checksums of rgb, depth, parts, instances, visibility, boxes taken before the opt-in features existed
    before = [
        (SceneConfig(size=(64, 64)), 0, 0, ["d7fd942c1c0512b5c173b4ef1da41211a81ffd330a5e0966b13f782d3ce43048"]),
        (SceneConfig(size=(96, 80), people=(1, 3)), 3, 5,
         ["7422b0cc9d093d06cc754a50a2ef9509884c8d95361b73b5eb04a93387a1ee63"]),
        (SceneConfig(size=(64, 48), views=2, people=(1, 2)), 1, 2,
         ["ffb31e718dfacc88efd07d663bfb3014626e8f9a4d9a3abf33e64271b393c5c6",
          "2ae9260467c0a44aa91e4f6fe4859c077ce9d61da91e814b76c1629dadde8038"]),
    ]
    for cfg, seed, index, want in before:
        assert [_sha(*_labels(v)) for v in generate_frame(cfg, seed, index).views] == want


def test_image_only_features_leave_the_scene_and_labels_untouched():
    """Effects and light colour draw from their own generators: same people, camera, depth, labels."""
    from humanvision.data.synthetic.photometric import ImageEffects

    base = SceneConfig(size=(80, 64), people=(1, 2))
    a = generate_frame(base, 2, 3).views[0]
    b = generate_frame(replace(base, effects=ImageEffects(), colour_temperature=(3000.0, 3500.0)), 2, 3).views[0]
    for f in ("depth", "parts", "instances", "keypoints_2d", "visibility", "boxes"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    assert not np.array_equal(a.rgb, b.rgb)


# ------------------------------------------------------------------------------------------- every preset
@pytest.mark.parametrize("name", list(PRESETS))
def test_each_preset_renders_consistent_labels(name, photos):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the broken file in the photo folder
        cfg = scene_config(name, backgrounds=photos if PRESETS[name].photos else None, size=(128, 128))
        frame = generate_frame(cfg, 0, 1, amodal=True)
    assert len(frame.views) == cfg.views
    for view in frame.views:
        assert view.rgb.shape == (128, 128, 3) and view.rgb.dtype == np.uint8
        kp = np.asarray(view.camera.project(frame.joints_world), dtype=np.float64)
        assert np.array_equal(view.keypoints_2d, kp)  # exactly the projection
        inside = (view.keypoints_cam[..., 2] > 0) & (kp >= -0.5).all(-1) & (kp[..., 0] < 127.5) & \
            (kp[..., 1] < 127.5)
        assert np.array_equal(view.visibility > 0, inside)
        n = frame.joints_world.shape[0]
        for p in range(n):
            mask = view.instances == p + 1
            assert view.areas[p] == mask.sum()
            if mask.any():
                x, y, w, h = view.boxes[p]
                assert x >= -0.5 and y >= -0.5 and x + w <= 127.5 and y + h <= 127.5
                ys, xs = np.nonzero(mask)
                assert (x, y, w, h) == (xs.min() - 0.5, ys.min() - 0.5, xs.max() - xs.min() + 1,
                                        ys.max() - ys.min() + 1)
                assert (view.parts[mask] > 0).all()
            ax, ay, aw, ah = view.amodal_boxes[p]
            assert ax >= -0.5 and ay >= -0.5 and ax + aw <= 127.5 + 1e-9 and ay + ah <= 127.5 + 1e-9


def test_coco_preset_has_truncated_people_and_close_ups():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no background folder
        cfg = replace(scene_config("coco", size=(128, 128)), rgb=False)
    truncated = close_up = 0
    for i in range(80):
        view = generate_frame(cfg, 0, i).views[0]
        for p in range(view.keypoints_2d.shape[0]):
            if not view.areas[p]:
                continue
            kp, v = view.keypoints_2d[p], view.visibility[p]
            outside = (kp < -0.5).any(-1) | (kp >= 127.5).any(-1)
            assert (v[outside] == 0).all()
            truncated += bool(outside[COCO].any() and (v[COCO] > 0).any())
            if view.boxes[p, 3] > 0.9 * 128 and (v[[J["nose"], J["left_eye"], J["right_eye"]]] == 2).all():
                close_up += 1
    assert truncated >= 10 and close_up >= 2, (truncated, close_up)


def test_preset_statistics_of_the_legacy_scene():
    s = preset_statistics(SceneConfig(size=(96, 96)), n=12)
    assert s["frames"] == s["views"] == s["people"] == 12
    assert s["people_per_image"]["mean"] == 1.0 and s["truncated"] == 0.0 and s["overlapping"] == 0.0
    assert abs(sum(s["joints"].values()) - 1.0) < 1e-9 and abs(sum(s["box_height"]["fractions"]) - 1.0) < 1e-9
    q = s["box_height"]["p10_p25_p50_p75_p90"]
    assert 0.2 < q[2] < 0.9 and q == sorted(q)


# ------------------------------------------------------------------------------------------- COCO visibility
def test_adjacent_parts_follow_the_body_segments():
    assert adjacent_parts("left_ankle") == {"left_lower_leg", "left_foot"}
    assert adjacent_parts("right_wrist") == {"right_lower_arm", "right_hand"}
    assert adjacent_parts("left_knee") == {"left_upper_leg", "left_lower_leg"}
    assert adjacent_parts("right_hip") == {"torso", "right_upper_leg"}
    assert adjacent_parts("left_shoulder") == {"torso", "left_upper_arm"}
    assert adjacent_parts("nose") == adjacent_parts("left_ear") == frozenset()  # surface points


def _render(bodies, camera):
    prims = PrimitiveSet.concatenate([_person_primitives(b, i + 1, np.random.default_rng(i))
                                      for i, b in enumerate(bodies)])
    H, W = camera.height, camera.width
    return render(prims, camera, Background(np.zeros((H, W, 3), np.float32), ground=False),
                  np.array([0.0, 0.0, 1.0]), rgb=False)


def test_coco_rule_an_ankle_behind_its_own_foot_is_visible_another_person_is_not():
    local = np.zeros((len(SEGMENT_NAMES), 3))
    local[SEGMENT_NAMES.index("left_foot")] = (25.0, 0.0, 0.0)  # toes up, as at heel strike
    body = pose_body(BodyShape(height=1750.0), local)
    ankle = body.joints[J["left_ankle"]]
    # in front of the foot, 4 cm above the ground: the foot hides the ankle
    cam = Camera.look_at([ankle[0], 1500.0, 40.0], ankle, focal=300.0, width=96, height=96)
    out = _render([body], cam)
    joints, radius = body.joints[None], body.joint_radius[None]
    _, depth_vis, *_ = annotate(cam, out.depth, out.instances, joints, radius)
    kp, coco_vis, *_ = annotate(cam, out.depth, out.instances, joints, radius, out.parts, "coco")
    u, v = np.rint(kp[0, J["left_ankle"]]).astype(int)
    assert out.instances[v, u] == 1 and PART_NAMES[out.parts[v, u]] in ("left_foot", "left_lower_leg")
    assert depth_vis[0, J["left_ankle"]] == 1 and coco_vis[0, J["left_ankle"]] == 2
    # a second person in front of that ankle: occluded under both rules
    other = pose_body(BodyShape(height=1750.0), root_position=np.array([ankle[0] + 91.0, 700.0, 0.0]))
    out2 = _render([body, other], cam)
    joints2 = np.stack([body.joints, other.joints])
    radius2 = np.stack([body.joint_radius, other.joint_radius])
    _, vis2, *_ = annotate(cam, out2.depth, out2.instances, joints2, radius2, out2.parts, "coco")
    assert out2.instances[v, u] == 2 and vis2[0, J["left_ankle"]] == 1


def test_coco_visibility_matches_a_reference_implementation():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no background folder
        cfg = replace(scene_config("coco", size=(96, 96)), rgb=False)
    checked = excused = 0
    for i in range(6):
        frame = generate_frame(cfg, 1, i)
        view = frame.views[0]
        radius = np.stack([b.joint_radius for b in frame.people])
        _, depth_vis, *_ = annotate(view.camera, view.depth, view.instances, frame.joints_world, radius)
        for p in range(frame.joints_world.shape[0]):
            for k, name in enumerate(JOINTS):
                want = depth_vis[p, k]
                if want == 1:
                    u, v = np.clip(np.rint(view.keypoints_2d[p, k]).astype(int), 0, 95)
                    if view.instances[v, u] == p + 1 and PART_NAMES[view.parts[v, u]] in adjacent_parts(name):
                        want = 2
                        excused += 1
                assert view.visibility[p, k] == want, (i, p, name)
                checked += 1
    assert excused > 0 and checked > 200


def test_unlabel_hidden_drops_the_hidden_joints_of_a_mostly_hidden_person():
    vis = np.array([[2, 1, 1, 1, 0],    # 1 of 4 in-image joints visible: 0.25
                    [2, 2, 1, 1, 0],    # 0.5
                    [1, 1, 1, 1, 1],    # nothing visible
                    [0, 0, 0, 0, 0]])   # not in the image
    assert np.array_equal(unlabel_hidden(vis, 0.3), [[2, 0, 0, 0, 0], [2, 2, 1, 1, 0], [0] * 5, [0] * 5])
    assert np.array_equal(unlabel_hidden(vis, 0.25), [[2, 1, 1, 1, 0], [2, 2, 1, 1, 0], [0] * 5, [0] * 5])
    assert np.array_equal(unlabel_hidden(vis, 0.0), vis)
    with pytest.raises(ConfigError, match="SceneConfig.infer_min_visible"):
        SceneConfig(infer_min_visible=1.5)


def test_infer_min_visible_changes_only_the_labels_of_mostly_hidden_people():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no background folder
        cfg = replace(scene_config("coco", size=(96, 96)), rgb=False, crowd=1.0, people=(3, 4))
    changed = 0
    for i in range(8):
        a = generate_frame(cfg, 2, i).views[0]
        b = generate_frame(replace(cfg, infer_min_visible=0.4), 2, i).views[0]
        assert np.array_equal(a.depth, b.depth) and np.array_equal(a.keypoints_2d, b.keypoints_2d)
        inside = (a.visibility > 0).sum(1)
        share = (a.visibility == 2).sum(1) / np.maximum(inside, 1)
        for p in range(a.visibility.shape[0]):
            if inside[p] and share[p] < 0.4:
                assert np.array_equal(b.visibility[p], np.where(a.visibility[p] == 1, 0, a.visibility[p]))
                changed += int((a.visibility[p] == 1).sum())
            else:
                assert np.array_equal(b.visibility[p], a.visibility[p])
    assert changed > 0


def _bend_angles(joints: np.ndarray) -> np.ndarray:
    """Elbow and knee angles (degrees): do not depend on where the person stands or which way it faces."""
    out = []
    for a, b, c in [(f"{s}_{x}", f"{s}_{y}", f"{s}_{z}") for s in ("left", "right")
                    for x, y, z in (("shoulder", "elbow", "wrist"), ("hip", "knee", "ankle"))]:
        u, v = joints[J[a]] - joints[J[b]], joints[J[c]] - joints[J[b]]
        out.append(np.degrees(np.arccos(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1, 1))))
    return np.array(out)


def test_action_poses_are_frames_of_the_motion_clip():
    pytest.importorskip("pybullet_data")
    from humanvision.data.synthetic.motion import load_deepmimic, retarget

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no background folder
        cfg = replace(scene_config("coco", size=(96, 96)), rgb=False, walking=0.0)
    kick = load_deepmimic("kick")
    for i in range(3):
        plain = generate_frame(cfg, 4, i)
        acted = generate_frame(replace(cfg, actions=1.0, action_clips=("kick",)), 4, i)
        for a, b in zip(plain.people, acted.people, strict=True):
            assert a.shape == b.shape and not np.allclose(a.joints, b.joints)
            clip = np.stack([_bend_angles(pose_body(b.shape, global_rotations=retarget(kick, f, b.shape)[0]).joints)
                             for f in range(len(kick))])
            assert np.abs(clip - _bend_angles(b.joints)).max(1).min() < 1e-6  # one of the clip's frames
    with pytest.raises(ConfigError, match="SceneConfig.actions"):
        SceneConfig(actions=1.5)
    with pytest.raises(ConfigError, match="SceneConfig.action_clips"):
        SceneConfig(action_clips=())
    with pytest.raises(ConfigError, match="SceneConfig.action_clips"):
        SceneConfig(action_clips="kick")  # a name, not a tuple of names
    with pytest.raises(DataError, match="unknown DeepMimic clip 'kik'.*'kick'"):
        generate_frame(replace(cfg, actions=1.0, action_clips=("kik",)), 4, 0)


# ------------------------------------------------------------------------------------------- bad input
def test_unknown_preset_is_an_error_listing_the_presets():
    with pytest.raises(ConfigError) as e:
        scene_config("cocoo")
    msg = str(e.value)
    assert "'coco'" in msg and all(name in msg for name in PRESETS)
    with pytest.raises(ConfigError, match="did you mean 'people'"):
        scene_config("coco", peple=(1, 2))
    with pytest.raises(ConfigError, match="backgrounds"):
        scene_config("coco", backgrounds="/no/such/folder")
    with pytest.raises(ConfigError, match="SceneConfig.shots"):
        SceneConfig(shots=(0.0, 0.0, 0.0))


def test_a_background_folder_with_an_unreadable_file_is_reported_and_skipped(photos, tmp_path):
    import shutil

    folder = shutil.copytree(photos, tmp_path / "bg")  # a folder of its own: banks are loaded once per process
    cfg = SceneConfig(size=(64, 64), backgrounds=folder)
    with pytest.warns(UserWarning, match="broken.jpg"):
        a = generate_frame(cfg, 7, 0).views[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reported once: the bank is cached
        generate_frame(cfg, 7, 1)
    b = generate_frame(SceneConfig(size=(64, 64)), 7, 0).views[0]
    # the same scene; under the photo no ground plane (photo_ground=0)
    assert np.array_equal(a.instances, b.instances) and np.array_equal(a.keypoints_2d, b.keypoints_2d)
    person = a.instances > 0
    assert np.array_equal(a.depth[person], b.depth[person]) and (a.depth[~person] == 0).all()
    assert not np.array_equal(a.rgb[~person], b.rgb[~person])  # the backdrop is a photo
    c = generate_frame(replace(cfg, rgb=False), 7, 0).views[0]  # without colour: the same depth and labels
    assert np.array_equal(a.depth, c.depth) and np.array_equal(a.visibility, c.visibility)


def test_data_config_checks_the_preset_and_the_backgrounds_folder(tmp_path):
    from humanvision.config import load_config
    from humanvision.methods.topdown import DataConfig, TopDownRecipe, prepare_synthetic

    with pytest.raises(ConfigError, match=r"data\.synthetic_preset: unknown synthetic preset 'cocoo'.*pedestrian"):
        load_config({"data": {"source": "synthetic", "synthetic_preset": "cocoo"}}, TopDownRecipe)
    with pytest.raises(ConfigError, match=r"data\.synthetic_backgrounds"):
        load_config({"data": {"source": "synthetic", "synthetic_backgrounds": str(tmp_path / "nope")}},
                    TopDownRecipe)
    data = DataConfig(source="synthetic", synthetic_dir=tmp_path / "s", synthetic_backgrounds=tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"data\.synthetic_backgrounds: folder not found"):
        prepare_synthetic(data, quiet=True)


def test_prepare_synthetic_stamps_presets_only_when_not_legacy(tmp_path):
    from humanvision.data.synthetic.cache import STAMP
    from humanvision.methods.topdown import DataConfig, prepare_synthetic

    common = {"source": "synthetic", "synthetic_train": 2, "synthetic_val": 1, "synthetic_size": (48, 48)}
    prepare_synthetic(DataConfig(synthetic_dir=tmp_path / "legacy", **common), quiet=True)
    assert json.loads((tmp_path / "legacy" / STAMP).read_text()) == {"train": 2, "val": 1, "size": [48, 48],
                                                                     "seed": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no background folder
        data = prepare_synthetic(DataConfig(synthetic_dir=tmp_path / "ped", synthetic_preset="pedestrian",
                                            **common), quiet=True)
    stamp = json.loads((tmp_path / "ped" / STAMP).read_text())
    assert stamp["preset"] == "pedestrian" and stamp["backgrounds"] is None
    doc = json.loads(data.val_ann.read_text())
    assert len(doc["images"]) == 1 and doc["images"][0]["width"] == 48  # the val split: same preset, same size


def test_synth_cli_presets(tmp_path):
    from typer.testing import CliRunner

    from humanvision.cli import app

    r = CliRunner().invoke(app, ["synth", "--preset", "cocoo", "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "pedestrian" in r.output and "coco" in r.output
    r = CliRunner().invoke(app, ["synth", "coco", "--preset", "pedestrian", "--size", "64x48", "-n", "2",
                                 "--workers", "1", "--no-sheet", "--out", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "p" / "annotations" / "person_keypoints_train.json").read_text())
    assert {(im["width"], im["height"]) for im in doc["images"]} == {(64, 48)}


def test_portrait_framing_fills_the_frame_with_the_face():
    """``portrait_bottom`` / ``portrait_height`` (default: today's head-and-shoulders shots, frame for frame) let a
    close-up end at the neck: the eyes of the main person lie further apart relative to the image."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no background folder
        base = replace(scene_config("coco", size=(128, 128), shots=(0.0, 0.0, 1.0)), rgb=False)
    tight = replace(base, portrait_bottom=(-0.05, 0.0), portrait_height=0.18)
    assert replace(base, portrait_bottom=(0.06, 0.14), portrait_height=0.3) == base  # the defaults

    def eye_distances(cfg) -> list[float]:
        out = []
        for i in range(24):
            view = generate_frame(cfg, 0, i).views[0]
            eyes = view.keypoints_2d[:, [J["left_eye"], J["right_eye"]]]
            seen = (view.visibility[:, [J["left_eye"], J["right_eye"]]] > 0).all(1)
            out += [float(np.linalg.norm(e[0] - e[1])) / 128 for e in eyes[seen]]
        return out

    wide, close = np.median(eye_distances(base)), np.median(eye_distances(tight))
    assert close > 1.3 * wide, (wide, close)
    with pytest.raises(ConfigError, match="portrait_bottom"):
        replace(base, portrait_bottom=(0.2, 0.1))
    with pytest.raises(ConfigError, match="portrait_height"):
        replace(base, portrait_height=0.05)
