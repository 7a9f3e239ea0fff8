"""Tests of humanvision.geometry: cameras, distortion, rotations, triangulation, Procrustes."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from humanvision.errors import DataError
from humanvision.geometry import (
    Camera,
    apply_intrinsics,
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    camera_to_world,
    distort,
    distort_points,
    distortion_jacobian,
    from_homogeneous,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    procrustes_align,
    project_points,
    project_with_matrix,
    projection_matrix,
    quaternion_multiply,
    quaternion_to_axis_angle,
    quaternion_to_matrix,
    random_rotation,
    reprojection_errors,
    rotation_angle,
    similarity_transform,
    to_homogeneous,
    triangulate_dlt,
    triangulate_ransac,
    undistort,
    undistort_image,
    undistort_points,
    world_to_camera,
)

torch.set_num_threads(1)
FAST = settings(max_examples=40, deadline=None)
seeds = st.integers(0, 2**32 - 1)
# Realistic lenses: Human3.6M's cameras have k1 ~ -0.2, k2 ~ 0.24, k3 ~ 0, |p| ~ 1e-3.
H36M_DIST = np.array([-0.2071, 0.2476, -0.0009, -0.0014, -0.0031])


def random_dist(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform([-0.3, -0.1, -2e-3, -2e-3, -0.05], [0.1, 0.3, 2e-3, 2e-3, 0.05])


def random_cameras(rng: np.random.Generator, n: int, dist: bool = False) -> list[Camera]:
    """Cameras 3-6 m from the origin, looking at it, with random focal lengths and principal points."""
    cams = []
    for _ in range(n):
        d = rng.normal(size=3)
        d[2] = abs(d[2]) * 0.5
        eye = d / np.linalg.norm(d) * rng.uniform(3000, 6000)
        f = rng.uniform(800, 1500)
        K = [[f, 0, rng.uniform(450, 550)], [0, f * rng.uniform(0.98, 1.02), rng.uniform(450, 550)], [0, 0, 1]]
        cams.append(Camera.look_at(eye, rng.normal(size=3) * 100, K=K, width=1000, height=1000,
                                   dist=random_dist(rng) if dist else None))
    return cams


def random_pose(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.normal(size=(*shape, 3)) * 400


# ----------------------------------------------------------------------------------------------------- rotations
@FAST
@given(seeds, st.sampled_from(["generic", "tiny", "near_pi", "zero"]))
def test_rodrigues_round_trip_and_cv2_parity(seed, kind):
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=(6, 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    angle = {"generic": rng.uniform(0, math.pi, 6), "tiny": 10.0 ** rng.uniform(-12, -3, 6),
             "near_pi": math.pi - 10.0 ** rng.uniform(-9, -3, 6), "zero": np.zeros(6)}[kind]
    rvec = axis * angle[:, None]
    R = axis_angle_to_matrix(rvec)
    np.testing.assert_allclose(R @ R.swapaxes(-1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    np.testing.assert_allclose(R, np.stack([cv2.Rodrigues(r)[0] for r in rvec]), atol=1e-12)
    back = matrix_to_axis_angle(R)
    np.testing.assert_allclose(axis_angle_to_matrix(back), R, atol=1e-12)
    if kind != "near_pi":  # at pi, r and -r are the same rotation
        np.testing.assert_allclose(back, rvec, atol=1e-9)
    np.testing.assert_allclose(rotation_angle(R), angle, atol=1e-9)


@FAST
@given(seeds)
def test_quaternions_agree_with_matrices(seed):
    rng = np.random.default_rng(seed)
    R1, R2 = random_rotation((2, 5), rng=rng)
    q1, q2 = matrix_to_quaternion(R1), matrix_to_quaternion(R2)
    assert np.all(q1[..., 0] >= 0)
    np.testing.assert_allclose(np.linalg.norm(q1, axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(quaternion_to_matrix(q1), R1, atol=1e-12)
    np.testing.assert_allclose(quaternion_to_matrix(quaternion_multiply(q1, q2)), R1 @ R2, atol=1e-12)
    rvec = quaternion_to_axis_angle(q1)
    np.testing.assert_allclose(axis_angle_to_matrix(rvec), R1, atol=1e-12)
    np.testing.assert_allclose(axis_angle_to_quaternion(rvec), q1, atol=1e-12)


def test_random_rotation_is_uniform_enough_and_torch_generator():
    R = random_rotation(4000, rng=0)
    np.testing.assert_allclose(R @ R.swapaxes(-1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    assert np.all(np.linalg.det(R) > 0)
    # Haar measure: E[R] = 0 and the angle density is (1 - cos a) / pi, whose mean is pi/2 + 2/pi.
    assert np.abs(R.mean(0)).max() < 0.05
    assert abs(rotation_angle(R).mean() - (math.pi / 2 + 2 / math.pi)) < 0.03
    small = random_rotation(100, rng=1, max_angle=0.1)
    assert rotation_angle(small).max() <= 0.1 + 1e-12
    Rt = random_rotation((3,), rng=torch.Generator().manual_seed(0))
    assert isinstance(Rt, torch.Tensor) and Rt.dtype == torch.float32 and Rt.shape == (3, 3, 3)


def test_rotation_torch_matches_numpy_and_gradients_are_finite_at_identity_and_pi():
    rng = np.random.default_rng(0)
    rvec = np.concatenate([rng.normal(size=(5, 3)), np.zeros((1, 3)), [[math.pi - 1e-7, 0, 0]]])
    rt = torch.tensor(rvec, requires_grad=True)
    R = axis_angle_to_matrix(rt)
    np.testing.assert_allclose(R.detach().numpy(), axis_angle_to_matrix(rvec), atol=1e-14)
    back = matrix_to_axis_angle(R)
    np.testing.assert_allclose(back.detach().numpy(), matrix_to_axis_angle(axis_angle_to_matrix(rvec)), atol=1e-12)
    (R.sum() + back.sum()).backward()
    assert torch.isfinite(rt.grad).all()
    z = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    matrix_to_axis_angle(axis_angle_to_matrix(z)).sum().backward()
    np.testing.assert_allclose(z.grad.numpy(), 1.0, atol=1e-12)  # the round trip is the identity map
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (torch.tensor(rvec[:5], requires_grad=True),))


# ----------------------------------------------------------------------------------------------------- distortion
def test_h36m_model_matches_the_brief_formula_and_differs_from_opencv():
    x, y = 0.3, -0.2
    k1, k2, p1, p2, k3 = H36M_DIST
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    h36m = [x * radial + p1 * x * y + p2 * (x * x + r2), y * radial + p2 * x * y + p1 * (y * y + r2)]
    opencv = [x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x), y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y]
    np.testing.assert_allclose(distort([x, y], H36M_DIST, "h36m"), h36m, atol=1e-15)
    np.testing.assert_allclose(distort([x, y], H36M_DIST, "opencv"), opencv, atol=1e-15)
    assert np.abs(np.subtract(h36m, opencv)).max() > 1e-5
    # Without tangential terms the two models coincide.
    d = H36M_DIST * [1, 1, 0, 0, 1]
    np.testing.assert_allclose(distort([x, y], d, "h36m"), distort([x, y], d, "opencv"), atol=1e-15)


@FAST
@given(seeds, st.sampled_from(["opencv", "h36m"]))
def test_distort_undistort_round_trip(seed, model):
    rng = np.random.default_rng(seed)
    K = np.array([[rng.uniform(800, 1500), 0, 500], [0, rng.uniform(800, 1500), 500], [0, 0, 1]])
    dist = random_dist(rng)
    uv = rng.uniform(0, 1000, size=(4, 50, 2))  # ideal pixels over a 1000x1000 image
    uv_d = distort_points(uv, K, dist, model)
    np.testing.assert_allclose(undistort_points(uv_d, K, dist, model), uv, atol=1e-6)
    np.testing.assert_allclose(undistort_points(uv, K, None, model), uv)


@FAST
@given(seeds)
def test_opencv_model_parity_with_cv2(seed):
    rng = np.random.default_rng(seed)
    cam = random_cameras(rng, 1, dist=True)[0]
    X = random_pose(rng, 30)
    ours = cam.project(X)
    rvec = cv2.Rodrigues(cam.R)[0]
    ref = cv2.projectPoints(X, rvec, cam.t, cam.K, cam.dist)[0][:, 0]
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-15)
    ref_u = cv2.undistortPoints(ref[:, None], cam.K, cam.dist, P=cam.K, criteria=criteria)[:, 0]
    np.testing.assert_allclose(undistort_points(ref, cam.K, cam.dist), ref_u, atol=1e-6)
    np.testing.assert_allclose(undistort_points(ref, cam.K, cam.dist), cam.project(X, distort=False), atol=1e-6)


@pytest.mark.parametrize("model", ["opencv", "h36m"])
def test_distortion_jacobian_matches_autograd(model):
    xy = torch.tensor(np.random.default_rng(1).uniform(-0.6, 0.6, (7, 2)), requires_grad=True)
    dist = torch.tensor(H36M_DIST * [1, 1, 20, 20, 1])  # exaggerated tangential terms
    auto = torch.autograd.functional.jacobian(lambda z: distort(z, dist, model).sum(0), xy).permute(1, 0, 2)
    torch.testing.assert_close(distortion_jacobian(xy, dist, model), auto, atol=1e-12, rtol=0)
    # Undistortion is differentiable (unrolled Newton); its Jacobian is the inverse of the distortion's.
    xd = distort(xy, dist, model).detach().requires_grad_(True)
    inv = torch.autograd.functional.jacobian(lambda z: undistort(z, dist, model).sum(0), xd).permute(1, 0, 2)
    torch.testing.assert_close(inv @ auto, torch.eye(2, dtype=torch.float64).expand(7, 2, 2), atol=1e-8, rtol=0)


@pytest.mark.parametrize("model", ["opencv", "h36m"])
def test_undistort_image_moves_a_dot_to_its_ideal_pixel(model):
    K = np.array([[300.0, 0, 160], [0, 300, 120], [0, 0, 1]])
    dist = np.array([-0.25, 0.1, 0.004, -0.003, 0.0])
    ideal = np.array([290.0, 30.0])  # where the pinhole (undistorted) camera sees the point
    observed = distort_points(ideal, K, dist, model)  # where the real lens puts it
    v, u = np.mgrid[0:240, 0:320]
    img = np.exp(-((u - observed[0]) ** 2 + (v - observed[1]) ** 2) / (2 * 2.0**2)).astype(np.float32)
    out = undistort_image(img, K, dist, model)
    assert out.shape == img.shape and out.dtype == img.dtype
    wts = np.clip(out, 0, None) * (out > 0.05)
    centroid = np.array([(wts * u).sum(), (wts * v).sum()]) / wts.sum()
    np.testing.assert_allclose(centroid, ideal, atol=0.1)
    assert np.abs(observed - ideal).max() > 5  # the test is not trivial
    np.testing.assert_allclose(undistort_image(img, K, None, model), img, atol=1e-6)
    np.testing.assert_allclose(undistort_image(img, K, np.zeros(5), model), img, atol=1e-6)


# ----------------------------------------------------------------------------------------------------- cameras
def test_projection_matrix_pinhole_and_optical_axis():
    rng = np.random.default_rng(0)
    cam = random_cameras(rng, 1)[0]
    X = random_pose(rng, 4, 17)
    Xc = X @ cam.R.T + cam.t
    manual = np.stack([cam.K[0, 0] * Xc[..., 0] / Xc[..., 2] + cam.K[0, 2],
                       cam.K[1, 1] * Xc[..., 1] / Xc[..., 2] + cam.K[1, 2]], -1)
    np.testing.assert_allclose(cam.project(X), manual, atol=1e-9)
    P = cam.projection_matrix
    np.testing.assert_allclose(P, projection_matrix(cam.K, cam.R, cam.t))
    np.testing.assert_allclose(from_homogeneous(to_homogeneous(X) @ P.T), manual, atol=1e-9)
    np.testing.assert_allclose(project_with_matrix(X, P), manual, atol=1e-9)
    on_axis = cam.center + 2500.0 * cam.R[2]
    np.testing.assert_allclose(cam.project(on_axis), cam.K[:2, 2], atol=1e-9)
    np.testing.assert_allclose(cam.world_to_camera(cam.center), 0.0, atol=1e-9)
    np.testing.assert_allclose(camera_to_world(world_to_camera(X, cam.R, cam.t), cam.R, cam.t), X, atol=1e-9)


def test_batched_cameras_align_with_leading_axes():
    rng = np.random.default_rng(1)
    cams = random_cameras(rng, 3, dist=True)
    K, R, t, d = (np.stack([getattr(c, k) for c in cams]) for k in ("K", "R", "t", "dist"))
    X = random_pose(rng, 3, 5, 17)  # (V, frames, J, 3): camera axis V is a prefix
    uv = project_points(X, K, R, t, d)
    for v, c in enumerate(cams):
        np.testing.assert_allclose(uv[v], c.project(X[v]), atol=1e-9)
    one = project_points(X[:, 0, 0], K, R, t, d)  # one point per camera
    np.testing.assert_allclose(one, uv[:, 0, 0], atol=1e-9)


@FAST
@given(seeds, st.sampled_from(["opencv", "h36m"]), st.booleans())
def test_unproject_inverts_project_and_dict_round_trip(seed, model, as_torch):
    rng = np.random.default_rng(seed)
    cam = random_cameras(rng, 1, dist=True)[0]
    cam = Camera.from_dict({**cam.to_dict(), "dist_model": model, "name": "54138969"})
    X = random_pose(rng, 3, 17)
    if as_torch:
        X = torch.tensor(X)
    uv = cam.project(X)
    back = cam.unproject(uv, cam.depth(X))
    assert type(back) is type(X)
    np.testing.assert_allclose(np.asarray(back), np.asarray(X), atol=1e-6)
    loaded = Camera.from_dict(json.loads(json.dumps(cam.to_dict())))
    for k in ("K", "R", "t", "dist"):
        np.testing.assert_array_equal(getattr(loaded, k), getattr(cam, k))
    assert (loaded.dist_model, loaded.width, loaded.height, loaded.name) == (model, 1000, 1000, "54138969")


def test_crop_and_resize_update_intrinsics_as_in_lt():
    rng = np.random.default_rng(2)
    cam = random_cameras(rng, 1, dist=True)[0]
    X = random_pose(rng, 17)
    u, v = cam.project(X).T
    left, top, right, bottom = 200, 150, 600, 650  # a 400x500 box, resized to 384x384
    crop = cam.crop([left, top, right, bottom]).resize(384, 384)
    assert (crop.width, crop.height) == (384, 384)
    expected = np.stack([(u - left) * 384 / 400, (v - top) * 384 / 500], -1)
    np.testing.assert_allclose(crop.project(X), expected, atol=1e-9)
    half = cam.scale(0.5, pixel_centers=True)
    np.testing.assert_allclose(half.project(X), (cam.project(X) + 0.5) * 0.5 - 0.5, atol=1e-9)
    # An affine crop (rotation + scale + shift, as from cv2.getAffineTransform) composes exactly with distortion.
    A = cv2.getRotationMatrix2D((500.0, 500.0), 30.0, 0.7)
    warped = cam.crop(A, size=(256, 256))
    np.testing.assert_allclose(warped.project(X), cam.project(X) @ A[:, :2].T + A[:, 2], atol=1e-9)
    np.testing.assert_allclose(warped.unproject(warped.project(X), cam.depth(X)), X, atol=1e-6)


def test_look_at_orientation():
    cam = Camera.look_at([5000.0, 0, 1000], [0, 0, 1000], focal=1000, width=1000, height=1000)
    np.testing.assert_allclose(cam.center, [5000, 0, 1000], atol=1e-9)
    np.testing.assert_allclose(cam.project([0, 0, 1000]), [500, 500], atol=1e-9)
    head, feet = cam.project([0, 0, 1800]), cam.project([0, 0, 0])
    assert head[1] < 500 < feet[1]  # world up (+z) is image up (smaller v)
    assert cam.depth(np.zeros(3)) > 0
    with pytest.raises(DataError, match="up"):
        Camera.look_at([0, 0, 5000], [0, 0, 0], focal=1000, width=10, height=10)


def test_from_martinez_h5_convention():
    rng = np.random.default_rng(3)
    R_h5 = random_rotation(rng=rng)
    T = np.array([[1800.0], [-4000.0], [1500.0]])  # camera centre in world mm, stored as (3, 1)
    cam = Camera.from_martinez_h5(R_h5, T, f=[[1145.0], [1144.0]], c=[[512.0], [515.0]],
                                  k=[[-0.2], [0.24], [-0.003]], p=[[-0.001], [-0.002]], name="54138969")
    X = random_pose(rng, 5)
    np.testing.assert_allclose(cam.world_to_camera(X), (X - T[:, 0]) @ R_h5, atol=1e-9)  # R_h5.T @ (X - T)
    np.testing.assert_allclose(cam.center, T[:, 0], atol=1e-9)
    np.testing.assert_allclose(cam.dist, [-0.2, 0.24, -0.001, -0.002, -0.003])
    assert cam.dist_model == "h36m" and cam.undistorted().dist is None


def test_camera_validation_names_the_field():
    good = Camera.look_at([3000, 0, 0], focal=1000, width=100, height=100).to_dict()
    cases = {"K": [[1, 0], [0, 1]], "R": np.diag([1, 1, -1]).tolist(), "t": [1, 2], "dist": [0.1, 0.2],
             "dist_model": "fisheye", "width": -5}
    for field, bad in cases.items():
        with pytest.raises(DataError) as err:
            Camera.from_dict({**good, field: bad}, file="cams.json", record="S9/cam2")
        assert err.value.field == field and str(err.value).startswith("cams.json: S9/cam2: field")
    with pytest.raises(DataError, match="unknown keys"):
        Camera.from_dict({**good, "Kk": 1})
    Camera.from_dict({**good, "t": [[1.0], [2.0], [3.0]]})  # H36M stores t as (3, 1)


# ----------------------------------------------------------------------------------------------------- triangulation
def _views(rng, V, n_frames=2, J=5, dist=False):
    cams = random_cameras(rng, V, dist=dist)
    X = random_pose(rng, n_frames, J)
    P = np.stack([c.projection_matrix for c in cams])  # (V, 3, 4), shared by the frames
    uv = np.stack([c.project(X) for c in cams], 1)  # (frames, V, J, 2)
    return cams, P, X, uv


@FAST
@given(seeds, st.integers(2, 8))
def test_dlt_is_exact_and_invariant(seed, V):
    rng = np.random.default_rng(seed)
    _, P, X, uv = _views(rng, V)
    est = triangulate_dlt(P, uv)
    assert est.shape == X.shape
    np.testing.assert_allclose(est, X, rtol=0, atol=1e-6 * np.abs(X).max())
    scaled = P * rng.uniform(0.1, 10, (V, 1, 1)) * rng.choice([-1, 1], (V, 1, 1))
    conf = rng.uniform(0.1, 1, (2, V, 5))
    np.testing.assert_allclose(triangulate_dlt(scaled, uv, conf), X, rtol=0, atol=1e-6 * np.abs(X).max())
    np.testing.assert_allclose(triangulate_dlt(P, uv, 7.0 * conf), triangulate_dlt(P, uv, conf), atol=1e-9)
    est32 = triangulate_dlt(P.astype(np.float32), uv.astype(np.float32))
    # float32: within ~1000 eps of the scene scale (over 9,000 random rigs the worst case was 1.1e-5 relative;
    # a fixed 0.01 mm failed on an ill-conditioned 2-view rig at 1.75e-5)
    assert est32.dtype == np.float32 and np.abs(est32 - X).max() < 1e-4 * np.abs(X).max()


@FAST
@given(seeds, st.integers(3, 8))
def test_dlt_with_pixel_noise_and_confidences(seed, V):
    rng = np.random.default_rng(seed)
    _, P, X, uv = _views(rng, V, n_frames=4, J=17)
    noisy = uv + rng.normal(size=uv.shape) * 1.0  # 1 px noise; cameras at 3-6 m with f ~ 1000 px
    assert np.abs(triangulate_dlt(P, noisy) - X).max() < 80
    assert np.sqrt(((triangulate_dlt(P, noisy) - X) ** 2).sum(-1)).mean() < 20
    # A view corrupted by 100 px with confidence 1e-6 barely matters; with confidence 0 it is ignored exactly.
    bad = uv.copy()
    bad[:, 0] += 100.0
    conf = np.ones(uv.shape[:-1])
    conf[:, 0] = 1e-6
    assert np.abs(triangulate_dlt(P, bad, conf) - X).max() < 1.0
    conf[:, 0] = 0.0
    np.testing.assert_allclose(triangulate_dlt(P, bad, conf), X, atol=1e-6 * np.abs(X).max())
    bad[:, 0] = np.nan  # missing detections
    np.testing.assert_allclose(triangulate_dlt(P, bad, conf), X, atol=1e-6 * np.abs(X).max())


def test_dlt_under_determined_joints_are_nan_and_gradients_stay_finite():
    rng = np.random.default_rng(4)
    _, P, _, uv = _views(rng, 3)
    conf = np.ones(uv.shape[:-1])
    conf[0, 1:, 2] = 0.0  # joint 2 of frame 0 seen by one view only
    est = triangulate_dlt(P, uv, conf)
    assert np.isnan(est[0, 2]).all() and np.isfinite(np.delete(est.reshape(-1, 3), 2, 0)).all()
    uv_t = torch.tensor(uv, requires_grad=True)
    est_t = triangulate_dlt(torch.tensor(P), uv_t, torch.tensor(conf))
    est_t[torch.isfinite(est_t)].sum().backward()
    assert torch.isfinite(uv_t.grad).all()


def test_dlt_torch_matches_numpy_and_gradients_flow():
    rng = np.random.default_rng(5)
    _, P, X, uv = _views(rng, 4, n_frames=3, J=6)
    uv = uv + rng.normal(size=uv.shape)
    conf = rng.uniform(0.2, 1.0, uv.shape[:-1])
    ref = triangulate_dlt(P, uv, conf)
    uv_t = torch.tensor(uv, dtype=torch.float32, requires_grad=True)
    conf_t = torch.tensor(conf, dtype=torch.float32, requires_grad=True)
    est = triangulate_dlt(torch.tensor(P, dtype=torch.float32), uv_t, conf_t)
    assert est.dtype == torch.float32 and est.shape == (3, 6, 3)
    np.testing.assert_allclose(est.detach().numpy(), ref, atol=1e-2)  # float32 inputs, float64 SVD
    ((est - torch.tensor(X, dtype=torch.float32)) ** 2).sum().backward()
    for g in (uv_t.grad, conf_t.grad):
        assert torch.isfinite(g).all() and g.abs().max() > 0
    # gradcheck on a small float64 problem, w.r.t. the 2D points and the confidences
    P64 = torch.tensor(P)
    args = (torch.tensor(uv[:1, :, :2], requires_grad=True), torch.tensor(conf[:1, :, :2], requires_grad=True))
    assert torch.autograd.gradcheck(lambda a, c: triangulate_dlt(P64, a, c), args)


def test_shape_errors_name_the_argument():
    P, uv = np.zeros((4, 3, 4)), np.zeros((2, 4, 17, 2))
    with pytest.raises(DataError, match=r"has 4 views .* but P has 3") as e:
        triangulate_dlt(P[:3], uv)
    assert e.value.field == "uv"
    with pytest.raises(DataError, match=r"expected shape \(\.\.\., V, 3, 4\), got \(4, 3, 3\)") as e:
        triangulate_dlt(P[..., :3], uv)
    assert e.value.field == "P"
    with pytest.raises(DataError, match=r"= \(\.\.\., 4, 17\) matching uv, got \(2, 4, 16\)") as e:
        triangulate_dlt(P, uv, np.ones((2, 4, 16)))
    assert e.value.field == "conf"
    with pytest.raises(DataError) as e:
        triangulate_dlt(P[:1], uv[:, :1])
    assert e.value.field == "P" and "at least 2 views" in str(e.value)
    with pytest.raises(DataError, match=r"expected shape \(\.\.\., 3\), got \(5, 2\)") as e:
        project_points(np.zeros((5, 2)), np.eye(3))
    assert e.value.field == "X"


@FAST
@given(seeds, st.integers(4, 6))
def test_ransac_survives_an_outlier_view(seed, V):
    rng = np.random.default_rng(seed)
    _, P, X, uv = _views(rng, V, n_frames=3, J=17)
    noisy = uv + rng.normal(size=uv.shape) * 1.0
    bad = noisy.copy()
    bad[:, 1] += rng.uniform(150, 300) * rng.choice([-1, 1], 2)  # view 1 is off by 150-300 px
    res = triangulate_ransac(P, bad)
    assert res.points.shape == X.shape and res.inliers.shape == uv.shape[:-1]
    assert not res.inliers[:, 1].any() and res.inliers[:, [v for v in range(V) if v != 1]].all()
    err_ransac = np.sqrt(((res.points - X) ** 2).sum(-1)).mean()
    err_dlt = np.sqrt(((triangulate_dlt(P, bad) - X) ** 2).sum(-1)).mean()
    assert err_ransac < 20 and err_ransac < 0.5 * err_dlt
    # The refinement minimises the reprojection error on the inliers: it beats the linear estimate there.
    w = res.inliers.astype(float)
    lin = triangulate_dlt(P, bad, w)
    assert (w * reprojection_errors(P, bad, res.points) ** 2).sum() <= (w * reprojection_errors(P, bad, lin) ** 2).sum()


def test_ransac_torch_io_and_hypothesis_sampling():
    rng = np.random.default_rng(6)
    _, P, X, uv = _views(rng, 5)
    res = triangulate_ransac(torch.tensor(P, dtype=torch.float32), torch.tensor(uv, dtype=torch.float32),
                             max_hypotheses=3, rng=0)
    assert res.points.dtype == torch.float32 and res.inliers.dtype == torch.bool
    np.testing.assert_allclose(res.points.numpy(), X, atol=0.05)
    assert res.errors.max() < 1e-3


# ----------------------------------------------------------------------------------------------------- procrustes
@FAST
@given(seeds, st.booleans())
def test_procrustes_recovers_a_similarity(seed, as_torch):
    rng = np.random.default_rng(seed)
    src = random_pose(rng, 4, 17)
    R = random_rotation(4, rng=rng)
    s, t = rng.uniform(0.2, 5, 4), rng.normal(size=(4, 3)) * 1000
    dst = s[:, None, None] * src @ R.swapaxes(-1, -2) + t[:, None]
    a, b = (torch.tensor(src), torch.tensor(dst)) if as_torch else (src, dst)
    T = similarity_transform(a, b)
    for est, true in zip(T, (s, R, t)):
        np.testing.assert_allclose(np.asarray(est), true, rtol=1e-9, atol=1e-6)
    aligned, T2 = procrustes_align(a, b, return_transform=True)
    np.testing.assert_allclose(np.asarray(T2.s), s, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(aligned), dst, atol=1e-6)
    # An outlier joint with weight 0 does not disturb the fit.
    b_out = b.clone() if as_torch else b.copy()
    b_out[:, 3] += 5000.0
    w = np.ones((4, 17))
    w[:, 3] = 0
    T3 = similarity_transform(a, b_out, weights=torch.tensor(w) if as_torch else w)
    np.testing.assert_allclose(np.asarray(T3.s), s, rtol=1e-9)


def test_procrustes_rigid_reflection_and_gradients():
    rng = np.random.default_rng(7)
    src = random_pose(rng, 17)
    mirror = src * [-1, 1, 1]  # the best orthogonal map is a reflection
    T = similarity_transform(src, mirror)
    assert np.linalg.det(T.R) > 0
    Tr = similarity_transform(src, mirror, reflection=True)
    np.testing.assert_allclose(np.linalg.det(Tr.R), -1, atol=1e-9)
    np.testing.assert_allclose(procrustes_align(src, mirror, reflection=True), mirror, atol=1e-6)
    assert np.abs(procrustes_align(src, mirror) - mirror).max() > 10
    rigid = similarity_transform(src, 3 * src, scale=False)
    assert rigid.s == 1.0 and np.allclose(rigid.R, np.eye(3), atol=1e-9)
    pred = torch.tensor(src + rng.normal(size=src.shape) * 20, requires_grad=True)
    err = (procrustes_align(pred, torch.tensor(src)) - torch.tensor(src)).norm(dim=-1).mean()
    err.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().max() > 0


def test_apply_intrinsics_general_affine_inverse():
    K = np.array([[900.0, 15.0, 400], [5.0, 880, 300], [0, 0, 1]])
    xy = np.random.default_rng(8).normal(size=(10, 2)) * 0.3
    uv = apply_intrinsics(xy, K)
    np.testing.assert_allclose(undistort_points(uv, K, None), uv)
    np.testing.assert_allclose(project_points(np.concatenate([xy, np.ones((10, 1))], -1) * 3.0, K), uv, atol=1e-9)
