"""The synthetic world: body, renderer, annotations, determinism, motion (BVH, DeepMimic)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from humanvision.data.synthetic import (
    JOINTS,
    SYNTH_SKELETON,
    BodyShape,
    SceneConfig,
    annotate,
    generate_coco,
    generate_frame,
    pose_body,
    read_bvh,
    retarget,
    sample_pose,
)
from humanvision.data.synthetic.body import JOINT_LIMITS, SEGMENT_NAMES, clip_to_limits, lowest_point
from humanvision.data.synthetic.render import BOX, Background, PrimitiveSet, render
from humanvision.data.synthetic.scene import _pack, _person_primitives
from humanvision.geometry.camera import Camera
from humanvision.skeletons import SKELETONS, convert

J = {n: i for i, n in enumerate(JOINTS)}


def test_joint_superset_covers_builtin_skeletons():
    for name in ("coco17", "mpii16", "h36m17", "itop15", "lsp14", "aic14", "crowdpose14", "mpi_inf_3dhp17",
                 "ntu25", "body25"):
        missing = set(SKELETONS[name].joints) - set(JOINTS)
        assert not missing, (name, missing)
    body = pose_body(BodyShape())
    coco = convert(body.joints, SYNTH_SKELETON, "coco17")
    assert np.allclose(coco[0], body.joints[J["nose"]])


def test_rest_body_proportions_and_ground():
    body = pose_body(BodyShape(height=1800.0))
    assert abs(lowest_point(body.primitives)) < 1e-9
    assert np.isclose(body.joints[J["head_top"], 2], 1800.0, rtol=0.03)
    assert np.allclose(body.joints[J["pelvis"]], (body.joints[J["left_hip"]] + body.joints[J["right_hip"]]) / 2)
    assert np.allclose(body.joints[J["thorax"]],
                       (body.joints[J["left_shoulder"]] + body.joints[J["right_shoulder"]]) / 2)
    assert body.joints[J["left_shoulder"], 0] < 0 < body.joints[J["right_shoulder"], 0]  # +x is the right side
    assert body.joints[J["nose"], 1] > body.joints[J["head"], 1]  # facing +y
    # face points lie on the head ellipsoid
    head = next(p for p in body.primitives if p.part == 1)
    for n in ("nose", "left_eye", "right_ear", "head_top"):
        u = (head.axes.T @ (body.joints[J[n]] - head.centre)) / head.radii
        assert np.isclose(np.linalg.norm(u), 1.0), n


def test_sampled_poses_respect_limits():
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = sample_pose(rng, diversity=3.0)
        assert np.allclose(clip_to_limits(a), a)
    # right limbs mirror: the same angles on both sides give mirrored joints
    a = np.zeros((len(SEGMENT_NAMES), 3))
    a[SEGMENT_NAMES.index("left_upper_arm")] = (30, 40, 0)
    a[SEGMENT_NAMES.index("right_upper_arm")] = (30, -40, 0)
    b = pose_body(BodyShape(), a)
    le, re = b.joints[J["left_elbow"]], b.joints[J["right_elbow"]]
    assert np.allclose(le * [-1, 1, 1], re)
    assert le[0] < b.joints[J["left_shoulder"], 0]  # positive abduction moves the left arm outwards
    assert set(JOINT_LIMITS) >= {"upper_arm", "lower_leg"}


@pytest.fixture(scope="module")
def frames():
    cfg = SceneConfig(size=(192, 160), people=(1, 3), occluder_prob=0.5)
    return [generate_frame(cfg, 3, i) for i in range(6)]


def test_keypoints_are_the_projection_of_joints(frames):
    """Checked against OpenCV's projection, independently of :class:`Camera`."""
    for f in frames:
        for v in f.views:
            cam = v.camera
            assert cam.dist is None or cam.dist_model == "opencv"  # a model cv2.projectPoints implements
            dist = np.zeros(5) if cam.dist is None else np.asarray(cam.dist, np.float64)
            rvec = cv2.Rodrigues(np.asarray(cam.R, np.float64))[0]
            tvec = np.asarray(cam.t, np.float64).reshape(3, 1)
            world = f.joints_world.reshape(-1, 3).astype(np.float64)
            uv = cv2.projectPoints(world, rvec, tvec, np.asarray(cam.K, np.float64), dist)[0][:, 0]
            assert np.abs(uv.reshape(v.keypoints_2d.shape) - v.keypoints_2d).max() < 1e-6
            kc = world @ np.asarray(cam.R).T + tvec[:, 0]
            assert np.abs(kc.reshape(v.keypoints_cam.shape) - v.keypoints_cam).max() < 1e-6
            assert (kc[:, 2] > 0).all()


def test_distorted_rig_keypoints_match_rendered_rays():
    cfg = SceneConfig(size=(200, 180), views=3, distortion=True)
    f = generate_frame(cfg, 1, 0)
    for v in f.views:
        assert v.camera.is_distorted
        assert np.abs(v.camera.project(f.joints_world) - v.keypoints_2d).max() < 1e-3
        # a rendered pixel's depth back-projects (undistorting) onto the surface that the camera images there
        ys, xs = np.nonzero(v.instances)
        uv = np.stack([xs, ys], -1).astype(float)
        X = v.camera.unproject(uv, v.depth[ys, xs])
        assert np.abs(v.camera.project(X) - uv).max() < 1e-3
    _check_depth_and_labels(f)


def _check_depth_and_labels(f):
    for v in f.views:
        n = f.joints_world.shape[0]
        radius = np.stack([b.joint_radius for b in f.people])
        vis = v.visibility == 2
        u = np.rint(v.keypoints_2d[..., 0]).astype(int).clip(0, v.depth.shape[1] - 1)
        w = np.rint(v.keypoints_2d[..., 1]).astype(int).clip(0, v.depth.shape[0] - 1)
        on_person = v.instances[w, u] == (np.arange(n)[:, None] + 1)
        d, z = v.depth[w, u], v.keypoints_cam[..., 2]
        # the depth test: nothing lies in front of a visible joint by more than its radius
        assert ((d[vis] == 0) | (d[vis] >= z[vis] - radius[vis] - 1e-3)).all()
        assert (d[v.visibility == 1] < z[v.visibility == 1] - radius[v.visibility == 1]).all()
        # on a well-resolved person the surface at a visible joint's pixel is within the joint's radius (rare
        # exceptions: a sub-pixel-thin part whose pixel sees the body behind it)
        big = (v.areas >= 3000)[:, None] & vis
        if big.sum() > 20:
            agree = on_person & (np.abs(d - z) <= radius + 1.0)
            assert agree[big].mean() > 0.9
        # part labels are inside the instance mask and vice versa
        assert ((v.parts > 0) == (v.instances > 0)).all()
        assert v.depth[v.instances > 0].min() > 0


def test_depth_visibility_and_part_labels(frames):
    for f in frames:
        _check_depth_and_labels(f)
        for v in f.views:
            for p in range(f.joints_world.shape[0]):
                if v.areas[p]:
                    ys, xs = np.nonzero(v.instances == p + 1)
                    assert np.allclose(v.boxes[p], [xs.min() - .5, ys.min() - .5, np.ptp(xs) + 1, np.ptp(ys) + 1])


def _front_camera(body, facing_sign=1.0):
    c = body.joints[J["pelvis"]]
    eye = c + np.array([0.0, facing_sign * 3500.0, 200.0])
    return Camera.look_at(eye, c + [0, 0, 100], focal=240.0, width=160, height=160)


def test_occluded_and_back_facing_joints_are_invisible():
    rng = np.random.default_rng(0)
    body = pose_body(BodyShape(), np.zeros((15, 3)))
    prims = _person_primitives(body, 1, rng)
    bg = Background(np.zeros((160, 160, 3), np.float32), ground=True)
    light = np.array([0.3, 0.5, 1.0])
    radius = body.joint_radius[None]
    # facing the camera: face visible; seen from behind: nose/eyes hidden by the head itself
    for sign, expect in ((1.0, 2), (-1.0, 1)):
        cam = _front_camera(body, sign)
        out = render(prims, cam, bg, light)
        _, vis, *_ = annotate(cam, out.depth, out.instances, body.joints[None], radius)
        assert (vis[0, [J["nose"], J["left_eye"], J["right_eye"]]] == expect).all(), (sign, vis[0, :12])
        assert vis[0, J["head"]] == 2 and vis[0, J["left_shoulder"]] == 2
    # a box between camera and pelvis hides the hips but not the head
    cam = _front_camera(body)
    c = body.joints[J["pelvis"]] + [0, 1500.0, 0]
    box = _pack([(BOX, np.zeros(3), np.zeros(3), 0.0, c, np.eye(3), np.array([300.0, 50.0, 200.0]), np.eye(3), c,
                  0, np.ones(3), np.ones(3), 0, 100.0)], 0)
    out = render(PrimitiveSet.concatenate([prims, box]), cam, bg, light)
    _, vis, *_ = annotate(cam, out.depth, out.instances, body.joints[None], radius)
    assert vis[0, J["left_hip"]] == 1 and vis[0, J["right_hip"]] == 1 and vis[0, J["pelvis"]] == 1
    assert vis[0, J["nose"]] == 2 and vis[0, J["left_ankle"]] == 2
    assert ((out.parts > 0) <= (out.instances > 0)).all()


def test_joints_outside_the_image_have_zero_visibility():
    body = pose_body(BodyShape(), np.zeros((15, 3)))
    c = body.joints[J["pelvis"]]
    cam = Camera.look_at(c + [0, 1500.0, 0], c, focal=200.0, width=96, height=96)  # too close: feet/head cut
    out = render(_person_primitives(body, 1, np.random.default_rng(0)), cam,
                 Background(np.zeros((96, 96, 3), np.float32)), np.array([0, 0, 1.0]))
    kp, vis, *_ = annotate(cam, out.depth, out.instances, body.joints[None], body.joint_radius[None])
    outside = (kp[0, :, 1] < -0.5) | (kp[0, :, 1] >= 95.5)
    assert outside.any() and (vis[0, outside] == 0).all() and (vis[0, ~outside] > 0).all()


def _tree_hash(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_and_partial_generation(tmp_path):
    a = generate_coco(tmp_path / "a", {"train": 3, "val": 2}, size=(96, 96), seed=5, people=(1, 2))
    generate_coco(tmp_path / "b", {"train": 3, "val": 2}, size=(96, 96), seed=5, people=(1, 2))
    assert a["frames"] == 5
    ha, hb = _tree_hash(tmp_path / "a"), _tree_hash(tmp_path / "b")
    assert ha == hb and len(ha) == 9
    # a frame does not depend on which frames were generated before it
    f1 = generate_frame(SceneConfig(size=(64, 64)), 5, 2)
    generate_frame(SceneConfig(size=(64, 64)), 5, 7)
    f2 = generate_frame(SceneConfig(size=(64, 64)), 5, 2)
    assert f1.views[0].rgb.tobytes() == f2.views[0].rgb.tobytes()
    generate_coco(tmp_path / "c", 3, size=(96, 96), seed=6, people=(1, 2))
    hc = _tree_hash(tmp_path / "c")
    assert hc["train/000000000001.png"] != ha["train/000000000001.png"]


BVH = """HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT LeftUpLeg
  {
    OFFSET 9 0 0
    CHANNELS 3 Zrotation Xrotation Yrotation
    JOINT LeftLeg
    {
      OFFSET 0 -42 0
      CHANNELS 3 Zrotation Xrotation Yrotation
      JOINT LeftFoot
      {
        OFFSET 0 -40 0
        CHANNELS 3 Zrotation Xrotation Yrotation
        End Site
        {
          OFFSET 0 -4 12
        }
      }
    }
  }
  JOINT RightUpLeg
  {
    OFFSET -9 0 0
    CHANNELS 3 Zrotation Xrotation Yrotation
    JOINT RightLeg
    {
      OFFSET 0 -42 0
      CHANNELS 3 Zrotation Xrotation Yrotation
      JOINT RightFoot
      {
        OFFSET 0 -40 0
        CHANNELS 3 Zrotation Xrotation Yrotation
      }
    }
  }
  JOINT Spine
  {
    OFFSET 0 15 0
    CHANNELS 3 Zrotation Xrotation Yrotation
    JOINT Neck
    {
      OFFSET 0 35 0
      CHANNELS 3 Zrotation Xrotation Yrotation
      JOINT Head
      {
        OFFSET 0 12 3
        CHANNELS 3 Zrotation Xrotation Yrotation
        End Site
        {
          OFFSET 0 15 0
        }
      }
      JOINT LeftArm
      {
        OFFSET 17 -3 0
        CHANNELS 3 Zrotation Xrotation Yrotation
        JOINT LeftForeArm
        {
          OFFSET 0 -28 0
          CHANNELS 3 Zrotation Xrotation Yrotation
          JOINT LeftHand
          {
            OFFSET 0 -25 0
            CHANNELS 3 Zrotation Xrotation Yrotation
          }
        }
      }
      JOINT RightArm
      {
        OFFSET -17 -3 0
        CHANNELS 3 Zrotation Xrotation Yrotation
        JOINT RightForeArm
        {
          OFFSET 0 -28 0
          CHANNELS 3 Zrotation Xrotation Yrotation
          JOINT RightHand
          {
            OFFSET 0 -25 0
            CHANNELS 3 Zrotation Xrotation Yrotation
          }
        }
      }
    }
  }
}
MOTION
Frames: 2
Frame Time: 0.0333333
"""


def _bvh_file(tmp_path: Path) -> Path:
    n_rot = 15
    f0 = [0, 90, 0] + [0, 0, 0] + [0, 0, 0] * n_rot
    f1 = list(f0)
    f1[0] = 10.0
    f1[6 + 1] = -90.0  # LeftUpLeg Xrotation -90: the thigh swings to -z... see test
    f1[6 + 3 + 1] = 90.0  # LeftLeg Xrotation +90: the shank turns back down
    text = BVH + "\n".join(" ".join(f"{v:g}" for v in fr) for fr in (f0, f1)) + "\n"
    p = tmp_path / "walk.bvh"
    p.write_text(text)
    return p


def test_bvh_reader_forward_kinematics(tmp_path):
    motion, mapping = read_bvh(_bvh_file(tmp_path))
    assert len(motion) == 2 and np.isclose(motion.fps, 30.0, rtol=1e-3)
    assert mapping["LeftUpLeg"] == "left_hip" and mapping["LeftArm"] == "left_shoulder"
    assert mapping["LeftHand"] == "left_wrist" and mapping["Head_end"] == "head_top"
    P = {n: motion.positions[:, i] for i, n in enumerate(motion.names)}
    # frame 0 (y up -> z up: (x, y, z) -> (x, -z, y)); root at height 90
    assert np.allclose(P["left_knee"][0], [9, 0, 48])
    assert np.allclose(P["left_ankle"][0], [9, 0, 8])
    assert np.allclose(P["left_foot"][0], [9, -12, 4])  # the end site of LeftFoot
    # frame 1: root moved by x=10; the thigh rotated -90 deg about x (y -> -z in BVH, i.e. +y after z-up)
    assert np.allclose(P["pelvis"][1], [10, 0, 90])
    Rx = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]])  # Rx(-90) in BVH axes
    knee_bvh = np.array([19, 90, 0]) + Rx @ [0, -42, 0]
    assert np.allclose(P["left_knee"][1], [knee_bvh[0], -knee_bvh[2], knee_bvh[1]])
    # the shank is turned back by +90 about x: parallel to the original (downward) direction
    assert np.allclose(P["left_ankle"][1] - P["left_knee"][1], [0, 0, -40])
    # retargeting keeps bone directions, with the body's own lengths
    rot, root = retarget(motion, 1, BodyShape())
    body = pose_body(BodyShape(), global_rotations=rot, root_position=root, ground="lift")
    for a, b in (("left_hip", "left_knee"), ("left_knee", "left_ankle"), ("right_shoulder", "right_elbow")):
        src = P[b][1] - P[a][1]
        dst = body.joints[J[b]] - body.joints[J[a]]
        assert np.dot(src, dst) / np.linalg.norm(src) / np.linalg.norm(dst) > 0.999, (a, b)


def test_bvh_errors_name_the_file(tmp_path):
    from humanvision.errors import DataError

    p = tmp_path / "bad.bvh"
    p.write_text(BVH + "1 2 3\n")
    with pytest.raises(DataError, match="bad.bvh"):
        read_bvh(p)


def test_motion_driven_scene(tmp_path):
    motion, _ = read_bvh(_bvh_file(tmp_path))
    f = generate_frame(SceneConfig(size=(96, 96), motion=[motion]), 0, 0)
    assert np.abs(f.views[0].camera.project(f.joints_world) - f.views[0].keypoints_2d).max() < 1e-3
    assert lowest_point(f.people[0].primitives) > -1e-6


def test_deepmimic_clips():
    pytest.importorskip("pybullet_data")
    from humanvision.data.synthetic import deepmimic_clips, load_deepmimic

    clips = deepmimic_clips()
    assert "walk" in clips and len(clips) >= 10
    walk = load_deepmimic("walk")
    P = {n: walk.positions[:, i] for i, n in enumerate(walk.names)}
    # an upright walker: head above pelvis above ankles; the thigh keeps its length
    assert (P["head"][:, 2] > P["pelvis"][:, 2]).all() and (P["pelvis"][:, 2] > P["left_ankle"][:, 2]).all()
    thigh = np.linalg.norm(P["left_knee"] - P["left_hip"], axis=-1)
    assert np.allclose(thigh, 1.686184, atol=1e-6)
    f = generate_frame(SceneConfig(size=(96, 96), motion=[walk]), 0, 1)
    assert np.abs(f.views[0].camera.project(f.joints_world) - f.views[0].keypoints_2d).max() < 1e-3
