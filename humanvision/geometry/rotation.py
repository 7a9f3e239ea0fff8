"""Rotations: axis-angle (Rodrigues) <-> matrix, quaternions (w, x, y, z) <-> matrix, uniform random rotations.

Conventions: rotation matrices act on column vectors (``x' = R @ x``); an axis-angle vector ``r`` is the unit axis
times the angle in radians (right-hand rule), as in ``cv2.Rodrigues``; quaternions are scalar-first ``(w, x, y, z)``
and unit norm; ``q`` and ``-q`` give the same rotation, and functions that return quaternions return the one with
``w >= 0``. Every function is batched over leading axes and works on numpy arrays and torch tensors (torch path
differentiable, including at the identity and at angles near pi).
"""

from __future__ import annotations

import numpy as np
import torch

from humanvision.geometry._array import Array, check_last_dims, clamp_min, eye_like, to_common, xp

__all__ = [
    "axis_angle_to_matrix",
    "axis_angle_to_quaternion",
    "matrix_to_axis_angle",
    "matrix_to_quaternion",
    "quaternion_multiply",
    "quaternion_to_axis_angle",
    "quaternion_to_matrix",
    "random_rotation",
    "rotation_angle",
    "skew",
]

# Below this angle (radians) the trigonometric ratios use their Taylor series (error < theta^6 / 5040).
_SMALL_ANGLE = 1e-3


def skew(v: Array) -> Array:
    """The cross-product matrix ``[v]_x`` of ``v`` (..., 3) -> (..., 3, 3), so that ``[v]_x @ w = v x w``."""
    (v,) = to_common(v, names=["v"])
    check_last_dims(v, (3,), "v", "(..., 3)")
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    o = xp(v).zeros_like(x)
    rows = [xp(v).stack(r, -1) for r in ((o, -z, y), (z, o, -x), (-y, x, o))]
    return xp(v).stack(rows, -2)


def axis_angle_to_matrix(rvec: Array) -> Array:
    """Rodrigues' formula: axis-angle (..., 3) -> rotation matrix (..., 3, 3).

    ``R = I + a [r]_x + b [r]_x^2`` with ``a = sin(t)/t`` and ``b = (1 - cos(t))/t^2``, ``t = |r|``; both ratios
    switch to their Taylor series near ``t = 0`` so values and gradients stay finite there.
    """
    (rvec,) = to_common(rvec, names=["rvec"])
    check_last_dims(rvec, (3,), "rvec", "(..., 3)")
    m = xp(rvec)
    theta2 = (rvec * rvec).sum(-1)
    small = theta2 < _SMALL_ANGLE**2
    theta = m.sqrt(m.where(small, m.ones_like(theta2), theta2))
    a = m.where(small, 1 - theta2 / 6 + theta2**2 / 120, m.sin(theta) / theta)
    b = m.where(small, 0.5 - theta2 / 24 + theta2**2 / 720, (1 - m.cos(theta)) / theta**2)
    k = skew(rvec)
    return eye_like(3, rvec) + a[..., None, None] * k + b[..., None, None] * (k @ k)


def quaternion_to_matrix(q: Array) -> Array:
    """Quaternion (w, x, y, z) (..., 4) -> rotation matrix (..., 3, 3). The input is normalised first."""
    (q,) = to_common(q, names=["q"])
    check_last_dims(q, (4,), "q", "(..., 4)")
    m = xp(q)
    q = q / m.sqrt(clamp_min((q * q).sum(-1), 1e-300))[..., None]
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    rows = [
        (1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)),
        (2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)),
        (2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)),
    ]
    return m.stack([m.stack(r, -1) for r in rows], -2)


def matrix_to_quaternion(R: Array) -> Array:
    """Rotation matrix (..., 3, 3) -> unit quaternion (w, x, y, z) (..., 4) with ``w >= 0``.

    Shepperd's method: four candidate formulas, each dividing by one of ``2|w|, 2|x|, 2|y|, 2|z|``; the one with the
    largest divisor (at least 1 for a rotation) is used, so the result is accurate for every angle, including pi.
    """
    (R,) = to_common(R, names=["R"])
    check_last_dims(R, (3, 3), "R", "(..., 3, 3)")
    m = xp(R)
    r00, r01, r02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    r10, r11, r12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    r20, r21, r22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    # 4 * (w^2, x^2, y^2, z^2); clamped away from 0 so that unused candidates keep finite gradients.
    sq = m.stack([1 + r00 + r11 + r22, 1 + r00 - r11 - r22, 1 - r00 + r11 - r22, 1 - r00 - r11 + r22], -1)
    two_abs = m.sqrt(clamp_min(sq, 1e-12))  # 2|w|, 2|x|, 2|y|, 2|z|
    cands = m.stack([
        m.stack([sq[..., 0], r21 - r12, r02 - r20, r10 - r01], -1),
        m.stack([r21 - r12, sq[..., 1], r10 + r01, r02 + r20], -1),
        m.stack([r02 - r20, r10 + r01, sq[..., 2], r12 + r21], -1),
        m.stack([r10 - r01, r20 + r02, r21 + r12, sq[..., 3]], -1),
    ], -2) / (2 * two_abs[..., None])
    best = two_abs.argmax(-1)[..., None]
    onehot = (best == torch.arange(4, device=R.device)) if m is torch else (best == np.arange(4))
    q = m.where(onehot[..., None], cands, 0.0).sum(-2)
    q = q / m.sqrt((q * q).sum(-1))[..., None]
    return m.where(q[..., :1] < 0, -q, q)


def quaternion_to_axis_angle(q: Array) -> Array:
    """Quaternion (w, x, y, z) (..., 4) -> axis-angle (..., 3) with angle in [0, pi]."""
    (q,) = to_common(q, names=["q"])
    check_last_dims(q, (4,), "q", "(..., 4)")
    m = xp(q)
    q = m.where(q[..., :1] < 0, -q, q)
    w, v = q[..., 0], q[..., 1:]
    n2 = (v * v).sum(-1)
    small = n2 < _SMALL_ANGLE**2
    n = m.sqrt(m.where(small, m.ones_like(n2), n2))
    # angle / |v| with angle = 2 atan2(|v|, w); near |v| = 0 (so w ~ 1) use 2/w (1 - |v|^2 / (3 w^2)).
    ratio = m.where(small, 2 / w * (1 - n2 / (3 * w * w)), 2 * m.arctan2(n, w) / n)
    return v * ratio[..., None]


def axis_angle_to_quaternion(rvec: Array) -> Array:
    """Axis-angle (..., 3) -> unit quaternion (w, x, y, z) (..., 4); ``w >= 0`` for angles up to pi."""
    (rvec,) = to_common(rvec, names=["rvec"])
    check_last_dims(rvec, (3,), "rvec", "(..., 3)")
    m = xp(rvec)
    theta2 = (rvec * rvec).sum(-1)
    small = theta2 < _SMALL_ANGLE**2
    theta = m.sqrt(m.where(small, m.ones_like(theta2), theta2))
    half_sinc = m.where(small, 0.5 - theta2 / 48, m.sin(theta / 2) / theta)
    w = m.where(small, 1 - theta2 / 8, m.cos(theta / 2))
    return m.concatenate([w[..., None], rvec * half_sinc[..., None]], -1)


def matrix_to_axis_angle(R: Array) -> Array:
    """Inverse Rodrigues: rotation matrix (..., 3, 3) -> axis-angle (..., 3), angle in [0, pi].

    Goes through :func:`matrix_to_quaternion`, so it is stable at the identity and at pi (where the axis sign is
    arbitrary: ``r`` and ``-r`` describe the same rotation).
    """
    return quaternion_to_axis_angle(matrix_to_quaternion(R))


def quaternion_multiply(q1: Array, q2: Array) -> Array:
    """Hamilton product ``q1 * q2`` (..., 4), the rotation ``R(q1) @ R(q2)``."""
    q1, q2 = to_common(q1, q2, names=["q1", "q2"])
    check_last_dims(q1, (4,), "q1", "(..., 4)")
    check_last_dims(q2, (4,), "q2", "(..., 4)")
    w1, x1, y1, z1 = (q1[..., i] for i in range(4))
    w2, x2, y2, z2 = (q2[..., i] for i in range(4))
    return xp(q1).stack([
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ], -1)


def random_rotation(
    shape: int | tuple[int, ...] = (),
    *,
    rng: np.random.Generator | int | torch.Generator | None = None,
    max_angle: float | None = None,
    dtype: np.dtype | torch.dtype | None = None,
) -> Array:
    """Rotation matrices of shape (*shape, 3, 3), uniform (Haar) on SO(3).

    Sampled as normalised 4-D Gaussian quaternions. With ``max_angle`` (radians) the rotation is instead a uniform
    random axis with an angle uniform in ``[0, max_angle]`` (useful for augmentation; this is not Haar).
    ``rng`` is a numpy Generator or seed (result: numpy, float64 by default) or a ``torch.Generator`` (result: a
    CPU tensor, float32 by default).
    """
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if isinstance(rng, torch.Generator):
        dt = dtype if dtype is not None else torch.float32

        def normal(*s: int) -> Array:
            return torch.randn(*s, generator=rng, dtype=torch.float64)

        def uniform(*s: int) -> Array:
            return torch.rand(*s, generator=rng, dtype=torch.float64)
    else:
        gen = np.random.default_rng(rng)
        dt = dtype if dtype is not None else np.float64
        normal, uniform = (lambda *s: gen.standard_normal(s)), (lambda *s: gen.random(s))
    if max_angle is None:
        R = quaternion_to_matrix(normal(*shape, 4))
    else:
        axis = normal(*shape, 3)
        axis = axis / xp(axis).sqrt((axis * axis).sum(-1))[..., None]
        R = axis_angle_to_matrix(axis * (uniform(*shape) * float(max_angle))[..., None])
    return R.to(dt) if isinstance(R, torch.Tensor) else R.astype(dt)


def rotation_angle(R: Array) -> Array:
    """Rotation angle in radians, in [0, pi], of rotation matrices (..., 3, 3).

    The geodesic distance between rotations ``A`` and ``B`` is ``rotation_angle(A.T @ B)``. Uses
    ``atan2(|axis part|, (trace - 1) / 2)`` via quaternions, which is accurate at 0 and pi (unlike ``arccos``).
    """
    q = matrix_to_quaternion(R)
    m = xp(q)
    return 2 * m.arctan2(m.sqrt((q[..., 1:] ** 2).sum(-1)), q[..., 0])
