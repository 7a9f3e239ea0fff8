"""A vectorised numpy ray caster for scenes of capsules, ellipsoids, boxes and a ground plane.

Protocol
--------
* One ray per pixel through the pixel's point ``(u, v) = (column, row)`` (no half-pixel offset, the convention of
  :class:`humanvision.geometry.Camera`). With lens distortion the pixel is first *undistorted* (Newton inversion
  of the camera's own model), so the image is exactly what :meth:`Camera.project` predicts for every 3D point.
* Rays are cast in the camera frame with direction ``d = (x_n, y_n, 1)``, so the ray parameter of a hit *is* its
  camera-frame depth ``z`` in mm (the depth-map convention of Kinect / NTU RGB+D; 0 means "no surface").
* Each primitive is intersected analytically (capsule, ellipsoid, oriented box) only inside the pixel rectangle its
  projected bounding box covers; a z-buffer keeps the nearest hit. The world plane ``z = 0`` is the ground.
* Shading: ``albedo * (ambient + diffuse * max(0, n . l))`` with per-primitive two-colour procedural textures
  (stripes, checks, a face with eyes and hair on the head, a printed panel on the shirt front) evaluated in the
  primitive's local frame, so textures move with the body.
* Shadows (opt-in, ``render(..., shadows=True)``): a ground pixel (and, with ``body_shadows``, a body pixel) whose
  surface point sees a primitive in the light's direction loses the direct term (``ambient`` only). Shadow rays
  are tested analytically (per person or occluder: pixels inside the projection of its shadow volume, then
  primitives whose bounding sphere the ray passes); only colour changes, never depth or labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from humanvision.geometry.camera import Camera
from humanvision.geometry.distortion import (
    apply_intrinsics,
    distort,
    distortion_jacobian,
    normalize_pixels,
    undistort,
)

__all__ = [
    "BOX",
    "CAPSULE",
    "ELLIPSOID",
    "PATTERNS",
    "Background",
    "PrimitiveSet",
    "RenderOutput",
    "camera_rays",
    "render",
]

CAPSULE, ELLIPSOID, BOX = 0, 1, 2
#: texture patterns mixing ``colour_a`` (value 0) and ``colour_b`` (value 1)
PATTERNS = ("plain", "stripes_z", "stripes_x", "checks", "head", "shirt_front", "face")
_LIPS = np.array([0.78, 0.5, 0.5])  # lip albedo as a fraction of the skin's (``face`` texture)
_EYE = np.array([0.36, 0.9, 0.12]) / np.linalg.norm([0.36, 0.9, 0.12])  # the left eye's direction on a head
_NEAR = 10.0  # mm
_FAR = 60000.0  # mm: the ground ends here (depth maps hold at most 65535 mm)


@dataclass
class PrimitiveSet:
    """All primitives of a scene, packed as arrays (world frame, mm). ``P`` primitives.

    ``kind`` (P,) CAPSULE/ELLIPSOID/BOX; capsules use ``a``, ``b`` (P, 3) and ``radius`` (P,); ellipsoids and boxes
    use ``centre`` (P, 3), ``axes`` (P, 3, 3) (columns = local axes in the world) and ``radii`` (P, 3) (semi-axes
    or half-sizes). ``frame`` (P, 3, 3) / ``origin`` (P, 3) give the texture frame. ``part`` (P,) body-part label,
    ``instance`` (P,) person id (``i + 1``; 0 for occluders). ``colour_a``/``colour_b`` (P, 3) in [0, 1],
    ``pattern`` (P,) index into :data:`PATTERNS`, ``period`` (P,) texture period in mm (for ``face``: the
    hairline's height on the head ellipsoid, in units of its vertical semi-axis).
    """

    kind: np.ndarray
    a: np.ndarray
    b: np.ndarray
    radius: np.ndarray
    centre: np.ndarray
    axes: np.ndarray
    radii: np.ndarray
    frame: np.ndarray
    origin: np.ndarray
    part: np.ndarray
    instance: np.ndarray
    colour_a: np.ndarray
    colour_b: np.ndarray
    pattern: np.ndarray
    period: np.ndarray

    def __len__(self) -> int:
        return len(self.kind)

    @staticmethod
    def concatenate(sets: list[PrimitiveSet]) -> PrimitiveSet:
        return PrimitiveSet(**{f: np.concatenate([getattr(s, f) for s in sets], 0)
                               for f in PrimitiveSet.__dataclass_fields__})


@dataclass
class Background:
    """Procedural backdrop and ground: a smooth colour field with a few rectangles (``image`` (H, W, 3) float in
    [0, 1], made per view) and a tiled ground plane with two colours and a tile size in mm."""

    image: np.ndarray
    ground: bool = True
    ground_colours: np.ndarray = field(default_factory=lambda: np.array([[0.45, 0.42, 0.38], [0.6, 0.58, 0.52]]))
    tile: float = 600.0


@dataclass
class RenderOutput:
    """One view: ``rgb`` (H, W, 3) uint8, ``depth`` (H, W) float32 mm (0 = nothing), ``parts`` (H, W) uint8 body-part
    labels (0 background / ground / occluders), ``instances`` (H, W) uint8 (person ``i`` is ``i + 1``)."""

    rgb: np.ndarray
    depth: np.ndarray
    parts: np.ndarray
    instances: np.ndarray


_RAY_CACHE: dict[bytes, np.ndarray] = {}


def camera_rays(camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Normalised ray coordinates ``(x_n, y_n)`` of every pixel, each broadcastable to ``(H, W)``.

    Without distortion and skew they are a row ``(1, W)`` and a column ``(H, 1)``; otherwise full ``(H, W)`` grids,
    undistorted with the camera's own model (cached per camera).
    """
    if camera.width is None or camera.height is None:
        raise ValueError("the camera needs width and height to render")
    K = camera.K
    if not camera.is_distorted and K[0, 1] == 0 and K[1, 0] == 0:
        dx = ((np.arange(camera.width) - K[0, 2]) / K[0, 0])[None, :]
        dy = ((np.arange(camera.height) - K[1, 2]) / K[1, 1])[:, None]
        return dx, dy
    key = b"".join(np.ascontiguousarray(v, dtype=np.float64).tobytes() for v in (
        K, np.zeros(5) if camera.dist is None else camera.dist, [camera.width, camera.height])) + \
        camera.dist_model.encode()
    rays = _RAY_CACHE.get(key)
    if rays is None:
        rays = _undistorted_grid(camera)
        if len(_RAY_CACHE) > 16:
            _RAY_CACHE.clear()
        _RAY_CACHE[key] = rays
    return rays[..., 0], rays[..., 1]


def _grid(xs: np.ndarray, ys: np.ndarray, K: np.ndarray) -> np.ndarray:
    u, v = np.meshgrid(xs, ys)
    return normalize_pixels(np.stack([u, v], -1), K)


def _undistorted_grid(camera: Camera) -> np.ndarray:
    """Undistorted normalised coordinates (H, W, 2) of all pixels: Newton inversion on a coarse grid (every 8
    pixels), bilinear interpolation, then Newton steps on the full grid (converged to < 1e-12)."""
    W, H, K = camera.width, camera.height, camera.K
    full = _grid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64), K)
    if not camera.is_distorted:
        return full
    nx, ny = max(W // 8, 1) + 1, max(H // 8, 1) + 1
    gx, gy = np.linspace(0, W - 1, nx), np.linspace(0, H - 1, ny)
    coarse = undistort(_grid(gx, gy, K), camera.dist, camera.dist_model, iters=20)

    def lin(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
        f = np.arange(n_out) * (n_in - 1) / max(n_out - 1, 1)
        i = np.minimum(np.floor(f).astype(np.int64), max(n_in - 2, 0))
        return i, (f - i)

    ix, wx = lin(W, nx)
    iy, wy = lin(H, ny)
    ix1, iy1 = np.minimum(ix + 1, nx - 1), np.minimum(iy + 1, ny - 1)
    wx, wy = wx[None, :, None], wy[:, None, None]
    top = coarse[iy][:, ix] * (1 - wx) + coarse[iy][:, ix1] * wx
    bot = coarse[iy1][:, ix] * (1 - wx) + coarse[iy1][:, ix1] * wx
    xy = top * (1 - wy) + bot * wy
    for _ in range(3):
        e = distort(xy, camera.dist, camera.dist_model) - full
        J = distortion_jacobian(xy, camera.dist, camera.dist_model)
        a, b, c, d = J[..., 0, 0], J[..., 0, 1], J[..., 1, 0], J[..., 1, 1]
        det = a * d - b * c
        xy = xy - np.stack([d * e[..., 0] - b * e[..., 1], a * e[..., 1] - c * e[..., 0]], -1) / det[..., None]
    return xy


def _pixel_boxes(lo: np.ndarray, hi: np.ndarray, camera: Camera) -> np.ndarray:
    """Pixel rectangles ``(P, 4)`` (x0, y0, x1, y1), end-exclusive and clipped, covering camera-frame AABBs."""
    W, H = camera.width, camera.height
    corners = np.stack(np.meshgrid([0, 1], [0, 1], [0, 1], indexing="ij"), -1).reshape(8, 3)
    pts = np.where(corners[None] == 1, hi[:, None], lo[:, None])  # (P, 8, 3)
    front = lo[:, 2] > _NEAR
    z = np.where(front[:, None], pts[..., 2], 1.0)
    xy = pts[..., :2] / z[..., None]
    xmin, xmax = xy[..., 0].min(1), xy[..., 0].max(1)
    ymin, ymax = xy[..., 1].min(1), xy[..., 1].max(1)
    if camera.is_distorted:  # sample the rectangle's border and distort it
        s = np.linspace(0.0, 1.0, 9)
        bx = np.concatenate([s, s, np.zeros(9), np.ones(9)])
        by = np.concatenate([np.zeros(9), np.ones(9), s, s])
        px = xmin[:, None] + (xmax - xmin)[:, None] * bx
        py = ymin[:, None] + (ymax - ymin)[:, None] * by
        uv = apply_intrinsics(distort(np.stack([px, py], -1), camera.dist, camera.dist_model), camera.K)
    else:
        uv = apply_intrinsics(np.stack([np.stack([xmin, ymin], -1), np.stack([xmax, ymax], -1),
                                        np.stack([xmin, ymax], -1), np.stack([xmax, ymin], -1)], 1), camera.K)
    x0 = np.floor(uv[..., 0].min(1)) - 1
    x1 = np.ceil(uv[..., 0].max(1)) + 2
    y0 = np.floor(uv[..., 1].min(1)) - 1
    y1 = np.ceil(uv[..., 1].max(1)) + 2
    box = np.stack([x0, y0, x1, y1], -1)
    box = np.where(front[:, None], box, np.array([0, 0, W, H], dtype=np.float64))  # straddles the camera: all
    box = np.nan_to_num(box, nan=0.0, posinf=1e6, neginf=-1e6)
    box[:, [0, 2]] = box[:, [0, 2]].clip(0, W)
    box[:, [1, 3]] = box[:, [1, 3]].clip(0, H)
    behind = hi[:, 2] <= _NEAR
    box[behind] = 0
    return box.astype(np.int64)


def _intersect(kind: int, dx: np.ndarray, dy: np.ndarray, a, b, r, c, M, radii) -> np.ndarray:
    """Ray parameter (= depth) of the first hit of rays ``(dx, dy, 1)`` from the origin; ``inf`` for a miss."""
    if kind == CAPSULE:
        ba = b - a
        oa = -a
        baba = ba @ ba
        bard = ba[0] * dx + ba[1] * dy + ba[2]
        baoa = ba @ oa
        rdoa = oa[0] * dx + oa[1] * dy + oa[2]
        oaoa = oa @ oa
        dd = dx * dx + dy * dy + 1.0
        qa = baba * dd - bard * bard
        qb = baba * rdoa - baoa * bard
        qc = baba * oaoa - baoa * baoa - r * r * baba
        h = qb * qb - qa * qc
        with np.errstate(invalid="ignore", divide="ignore"):
            t = (-qb - np.sqrt(h)) / qa
            y = baoa + t * bard
            # caps: the sphere at the end the cylinder hit fell beyond
            oc = np.where((y <= 0)[..., None], oa, -b)
            b2 = oc[..., 0] * dx + oc[..., 1] * dy + oc[..., 2]
            c2 = (oc * oc).sum(-1) - r * r
            h2 = b2 * b2 - dd * c2
            tc = (-b2 - np.sqrt(h2)) / dd
        body = (h >= 0) & (y > 0) & (y < baba)
        t = np.where(body, t, np.where((h >= 0) & (h2 >= 0), tc, np.inf))
    elif kind == ELLIPSOID:
        inv = M / radii  # columns scaled: local unit-sphere coords = (M^T x) / radii
        o = -(c @ inv)  # (3,)
        d = dx[..., None] * inv[0] + dy[..., None] * inv[1] + inv[2]
        A = (d * d).sum(-1)
        B = d @ o
        C = o @ o - 1.0
        h = B * B - A * C
        with np.errstate(invalid="ignore"):
            t = (-B - np.sqrt(h)) / A
        t = np.where(h >= 0, t, np.inf)
    else:  # oriented box, slab test
        o = -(c @ M)
        d = dx[..., None] * M[0] + dy[..., None] * M[1] + M[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (-radii - o) / d
            t2 = (radii - o) / d
        tn = np.nanmax(np.minimum(t1, t2), -1)
        tf = np.nanmin(np.maximum(t1, t2), -1)
        t = np.where((tn <= tf) & (tf > 0), tn, np.inf)
    return np.where((t > _NEAR) & (t < _FAR), t, np.inf)


def _crop(a: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """``a[y0:y1, x0:x1]`` of an array broadcastable to (H, W) (a row or a column keeps its singleton axis)."""
    rows = slice(y0, y1) if a.shape[0] > 1 else slice(None)
    cols = slice(x0, x1) if a.shape[1] > 1 else slice(None)
    return a[rows, cols]


def _normals_and_local(kind: np.ndarray, p: np.ndarray, ps: PrimitiveSet, idx: np.ndarray, R: np.ndarray,
                       tc: np.ndarray):
    """Camera-frame unit normals (N, 3) and texture-frame coordinates (N, 3) (mm) of hit points ``p`` (N, 3)."""
    n = np.zeros_like(p)
    q = np.zeros_like(p)
    for k in (CAPSULE, ELLIPSOID, BOX):
        m = kind == k
        if not m.any():
            continue
        i, pk = idx[m], p[m]
        if k == CAPSULE:
            a = ps.a[i] @ R.T + tc
            b = ps.b[i] @ R.T + tc
            ba = b - a
            s = np.clip(((pk - a) * ba).sum(-1) / np.maximum((ba * ba).sum(-1), 1e-9), 0.0, 1.0)
            nk = pk - (a + s[:, None] * ba)
        else:
            c = ps.centre[i] @ R.T + tc
            M = R @ ps.axes[i]  # (N, 3, 3) camera-from-local
            loc = np.einsum("nji,nj->ni", M, pk - c) / ps.radii[i]
            if k == ELLIPSOID:
                nk = np.einsum("nij,nj->ni", M, loc / ps.radii[i])
            else:
                ax = np.abs(loc).argmax(-1)
                nl = np.zeros_like(loc)
                nl[np.arange(len(ax)), ax] = np.sign(loc[np.arange(len(ax)), ax])
                nk = np.einsum("nij,nj->ni", M, nl)
        n[m] = nk / np.maximum(np.linalg.norm(nk, axis=-1, keepdims=True), 1e-9)
        F = R @ ps.frame[i]
        o = ps.origin[i] @ R.T + tc
        q[m] = np.einsum("nji,nj->ni", F, pk - o)
    return n, q


def _texture(pattern: np.ndarray, q: np.ndarray, period: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Mix weight in [0, 1] between ``colour_a`` and ``colour_b``; -1 marks dark details (pupils, the ``head``
    pattern's eyes and mouth), -2 the whites of the eyes and -3 the lips (``face``)."""
    w = np.zeros(len(q))
    m = pattern == 1
    w[m] = (np.sin(2 * np.pi * q[m, 2] / period[m]) > 0).astype(float)
    m = pattern == 2
    w[m] = (np.sin(2 * np.pi * q[m, 0] / period[m]) > 0).astype(float)
    m = pattern == 3
    w[m] = (np.floor(q[m] / period[m, None]).sum(-1) % 2).astype(float)
    m = pattern == 4  # head: face (skin, a) with hair (b) on the top/back; dark eyes and mouth
    if m.any():
        u = q[m] / radii[m]
        hair = (u[:, 2] > 0.3) | ((u[:, 1] < 0.05) & (u[:, 2] > -0.75))  # the whole back of the head
        eyes = (np.hypot(np.abs(u[:, 0]) - _EYE[0], u[:, 2] - _EYE[2]) < 0.13) & (u[:, 1] > 0.5)
        mouth = (np.abs(u[:, 0]) < 0.22) & (np.abs(u[:, 2] + 0.5) < 0.06) & (u[:, 1] > 0.5)
        w[m] = np.where(eyes | mouth, -1.0, hair.astype(float))
    m = pattern == 6  # face (scenes with outfits): hairline at ``period``, brows in the hair colour, eyes, lips
    if m.any():
        u = q[m] / radii[m]
        front = u[:, 1] > 0.5
        hair = (u[:, 2] > period[m]) | ((u[:, 1] < 0.05) & (u[:, 2] > -0.75))
        ex, ez = np.abs(u[:, 0]) - _EYE[0], u[:, 2] - _EYE[2]
        white = front & ((ex / 0.15) ** 2 + (ez / 0.075) ** 2 < 1.0)
        pupil = front & (np.hypot(ex, ez) < 0.06)
        brow = front & (np.abs(u[:, 2] - 0.29 + 0.1 * np.abs(ex)) < 0.035) & (np.abs(ex) < 0.2)
        lips = front & ((u[:, 0] / 0.21) ** 2 + ((u[:, 2] + 0.5) / 0.065) ** 2 < 1.0)
        w[m] = np.where(pupil, -1.0, np.where(white, -2.0, np.where(lips, -3.0, (hair | brow).astype(float))))
    m = pattern == 5  # shirt: a printed chest panel on the front (local +y), so front and back differ
    if m.any():
        u = q[m] / radii[m]
        w[m] = ((np.abs(u[:, 0]) < 0.45) & (u[:, 1] > 0.25) & (np.abs(u[:, 2] - 0.1) < 0.55)).astype(float)
    return w


def render(prims: PrimitiveSet, camera: Camera, background: Background, light_dir: np.ndarray,
           ambient: float = 0.45, diffuse: float = 0.6, rgb: bool = True, shadows: bool = False,
           body_shadows: bool = True) -> RenderOutput:
    """Render one view of a scene.

    Args:
        prims: the scene's primitives (world frame).
        camera: a :class:`~humanvision.geometry.Camera` with width and height (distortion supported).
        background: backdrop image for rays that hit nothing, and the ground plane settings.
        light_dir: (3,) world direction *towards* the light.
        ambient, diffuse: shading weights.
        rgb: set False to skip shading (depth and labels only).
        shadows: cast shadows of the primitives (directional light) on the ground; off by default (the output
            is then exactly the shadow-free rendering).
        body_shadows: with ``shadows``, also shadow primitives' own pixels (a raised arm shading the torso, one
            person another).
    """
    W, H = camera.width, camera.height
    dx, dy = camera_rays(camera)
    R, tc = camera.R, camera.t
    depth = np.full((H, W), np.inf, dtype=np.float32)
    prim_id = np.full((H, W), -1, dtype=np.int32)

    ground_mask = None
    if background.ground:
        nz = R[:, 2]  # world +z in camera coordinates
        denom = nz[0] * dx + nz[1] * dy + nz[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (nz @ tc) / denom
        ground_mask = (s > _NEAR) & (s < _FAR)
        depth = np.where(ground_mask, s, np.inf).astype(np.float32)

    if len(prims):
        a_c = prims.a @ R.T + tc
        b_c = prims.b @ R.T + tc
        c_c = prims.centre @ R.T + tc
        M_c = R @ prims.axes  # (P, 3, 3)
        ext_e = np.sqrt(((M_c * prims.radii[:, None, :]) ** 2).sum(-1))
        ext_b = (np.abs(M_c) * prims.radii[:, None, :]).sum(-1)
        r = prims.radius[:, None]
        cap = (prims.kind == CAPSULE)[:, None]
        ell = (prims.kind == ELLIPSOID)[:, None]
        lo = np.where(cap, np.minimum(a_c, b_c) - r, c_c - np.where(ell, ext_e, ext_b))
        hi = np.where(cap, np.maximum(a_c, b_c) + r, c_c + np.where(ell, ext_e, ext_b))
        boxes = _pixel_boxes(lo, hi, camera)
        for i in range(len(prims)):
            x0, y0, x1, y1 = boxes[i]
            if x1 <= x0 or y1 <= y0:
                continue
            t = _intersect(int(prims.kind[i]), _crop(dx, y0, y1, x0, x1), _crop(dy, y0, y1, x0, x1), a_c[i], b_c[i],
                           float(prims.radius[i]), c_c[i], M_c[i], prims.radii[i])
            zb = depth[y0:y1, x0:x1]
            win = t < zb
            if win.any():
                zb[win] = t[win]
                prim_id[y0:y1, x0:x1][win] = i

    hit = prim_id >= 0
    parts = np.zeros((H, W), dtype=np.uint8)
    instances = np.zeros((H, W), dtype=np.uint8)
    if len(prims):
        parts[hit] = prims.part[prim_id[hit]]
        instances[hit] = prims.instance[prim_id[hit]]
    finite = np.isfinite(depth)
    depth_out = np.where(finite, depth, 0.0).astype(np.float32)
    if not rgb:
        return RenderOutput(np.zeros((H, W, 3), np.uint8), depth_out, parts, instances)

    img = background.image.astype(np.float32, copy=True)
    light_c = R @ (np.asarray(light_dir, dtype=np.float64) / np.linalg.norm(light_dir))
    shadow = None
    if shadows and len(prims):
        receivers = (ground_mask & ~hit) if ground_mask is not None else np.zeros((H, W), bool)
        if body_shadows:
            receivers = receivers | hit
        shadow = _shadow_mask(prims, camera, depth, prim_id, receivers, np.asarray(light_dir, dtype=np.float64))
    if ground_mask is not None:
        g = ground_mask & ~hit
        if g.any():
            z = depth[g]
            gx, gy = np.broadcast_to(dx, (H, W))[g], np.broadcast_to(dy, (H, W))[g]
            centre = camera.center
            wx = centre[0] + z * (gx * R[0, 0] + gy * R[1, 0] + R[2, 0])
            wy = centre[1] + z * (gx * R[0, 1] + gy * R[1, 1] + R[2, 1])
            tile = (np.floor(wx / background.tile) + np.floor(wy / background.tile)).astype(np.int64) & 1
            col = background.ground_colours.astype(np.float32)[tile]
            fade = np.exp(-z / 40000.0).astype(np.float32)[:, None]  # aerial perspective towards the backdrop
            shade = ambient + diffuse * max(0.0, float(light_c @ R[:, 2]))
            if shadow is not None:
                shade = np.where(shadow[g], np.float32(ambient), np.float32(shade))[:, None]
            img[g] = fade * col * shade + (1 - fade) * img[g]
    if hit.any():
        idx = prim_id[hit]
        z = depth[hit]
        p = np.stack([np.broadcast_to(dx, (H, W))[hit] * z, np.broadcast_to(dy, (H, W))[hit] * z, z], -1)
        n, q = _normals_and_local(prims.kind[idx], p, prims, idx, R, tc)
        n = np.where(((n * p).sum(-1) > 0)[:, None], -n, n)  # face the camera
        w = _texture(prims.pattern[idx], q, prims.period[idx], prims.radii[idx])
        ca, cb = prims.colour_a[idx], prims.colour_b[idx]
        albedo = ca + np.clip(w, 0, 1)[:, None] * (cb - ca)
        if (w < -1).any():  # the ``face`` texture's whites of the eyes and lips
            albedo = np.where((w == -2)[:, None], 0.9, albedo)
            albedo = np.where((w == -3)[:, None], ca * _LIPS, albedo)
        albedo = np.where((w == -1)[:, None], 0.08, albedo)
        lam = np.clip(n @ light_c, 0.0, 1.0)
        if shadow is not None:
            lam = np.where(shadow[hit], 0.0, lam)
        rim = 0.15 * np.clip(-(n * p).sum(-1) / np.linalg.norm(p, axis=-1), 0, 1)  # soft view-facing term
        img[hit] = albedo * (ambient + rim + diffuse * lam)[:, None]
    out = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return RenderOutput(out, depth_out, parts, instances)


_SHADOW_EPS = 1.0  # mm: a shadow ray must travel this far before a hit counts (surface acne)


def _shadow_hits(kind: int, o: np.ndarray, L: np.ndarray, ps: PrimitiveSet, idx: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: whether ray ``o[n] + t L`` (``o`` (N, 3) world points, ``L`` (3,) unit) hits primitive
    ``idx[n]`` (all of ``kind``) at ``t > eps``. Capsules test the cylinder and both spherical caps."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if kind == CAPSULE:
            a, b, r = ps.a[idx], ps.b[idx], ps.radius[idx]
            ba, oa = b - a, o - a
            baba, bard = (ba * ba).sum(-1), ba @ L
            baoa, rdoa, oaoa = (oa * ba).sum(-1), oa @ L, (oa * oa).sum(-1)
            qa = baba - bard * bard
            qb = baba * rdoa - baoa * bard
            qc = baba * oaoa - baoa * baoa - r * r * baba
            h = qb * qb - qa * qc
            t = (-qb - np.sqrt(h)) / qa
            y = baoa + t * bard
            hit = (h >= 0) & (y > 0) & (y < baba) & (t > _SHADOW_EPS)
            for end in (a, b):  # the two spherical caps
                oc = o - end
                bb = oc @ L
                hh = bb * bb - ((oc * oc).sum(-1) - r * r)
                hit |= (hh >= 0) & (-bb - np.sqrt(hh) > _SHADOW_EPS)
            return hit
        c, M, radii = ps.centre[idx], ps.axes[idx], ps.radii[idx]
        ol = np.einsum("nj,nji->ni", o - c, M)  # local coordinates (M's columns are the local axes)
        dl = L @ M
        if kind == ELLIPSOID:
            ol, dl = ol / radii, dl / radii
            A, B, C = (dl * dl).sum(-1), (ol * dl).sum(-1), (ol * ol).sum(-1) - 1.0
            h = B * B - A * C
            return (h >= 0) & ((-B - np.sqrt(h)) / A > _SHADOW_EPS)
        t1, t2 = (-radii - ol) / dl, (radii - ol) / dl
        tn = np.nanmax(np.minimum(t1, t2), -1)
        tf = np.nanmin(np.maximum(t1, t2), -1)
        return (tn <= tf) & (tn > _SHADOW_EPS)


def _world_bounds(ps: PrimitiveSet) -> tuple[np.ndarray, np.ndarray]:
    """World axis-aligned bounding boxes ``lo``, ``hi`` (P, 3) of the primitives."""
    ext_e = np.sqrt(((ps.axes * ps.radii[:, None, :]) ** 2).sum(-1))
    ext_b = (np.abs(ps.axes) * ps.radii[:, None, :]).sum(-1)
    r = ps.radius[:, None]
    cap = (ps.kind == CAPSULE)[:, None]
    ell = (ps.kind == ELLIPSOID)[:, None]
    lo = np.where(cap, np.minimum(ps.a, ps.b) - r, ps.centre - np.where(ell, ext_e, ext_b))
    hi = np.where(cap, np.maximum(ps.a, ps.b) + r, ps.centre + np.where(ell, ext_e, ext_b))
    return lo, hi


def _shadow_mask(prims: PrimitiveSet, camera: Camera, depth: np.ndarray, prim_id: np.ndarray,
                 receivers: np.ndarray, light_dir: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: receiver pixels whose surface point (from ``depth``) sees a primitive towards the light.

    Primitives are processed per group (one person, or one occluder). Receivers inside the pixel rectangle of the
    group's shadow volume (the camera projection of the group's world bounding box and of that box's projection
    along the light onto the ground ``z = 0``; the whole image for a light within ~3 degrees of the horizon) are
    expressed in the light's frame (``u, v`` across the light, ``w`` along it); a (receiver, primitive) pair is
    tested exactly only when the receiver's shadow ray passes within the primitive's bounding sphere and the
    sphere is not wholly behind the receiver. A pixel of primitive ``i`` is never shadowed by ``i`` itself.
    """
    H, W = depth.shape
    L = light_dir / np.linalg.norm(light_dir)
    R, tc = camera.R, camera.t
    shadow = np.zeros((H, W), dtype=bool)
    if not receivers.any():
        return shadow
    dx, dy = (np.broadcast_to(v, (H, W)) for v in camera_rays(camera))
    e1 = np.cross(L, [1.0, 0.0, 0.0] if abs(L[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    basis = np.stack([e1, np.cross(L, e1), L])  # rows: u, v, w axes in the world
    to_light = R @ basis.T  # camera frame -> light frame: (p_cam - t) @ R @ basis.T
    offset = tc @ to_light

    lo, hi = _world_bounds(prims)
    cap = prims.kind == CAPSULE
    centre = np.where(cap[:, None], 0.5 * (prims.a + prims.b), prims.centre)
    rad = np.where(cap, 0.5 * np.linalg.norm(prims.b - prims.a, axis=-1) + prims.radius,
                   np.where(prims.kind == ELLIPSOID, prims.radii.max(-1), np.linalg.norm(prims.radii, axis=-1)))
    cl = centre @ basis.T  # sphere centres in the light frame
    groups = [np.nonzero(prims.instance == k)[0] for k in np.unique(prims.instance) if k > 0]
    groups += [np.array([i]) for i in np.nonzero(prims.instance == 0)[0]]
    corners = np.stack(np.meshgrid([0, 1], [0, 1], [0, 1], indexing="ij"), -1).reshape(8, 3)
    for g in groups:
        if L[2] > 0.05:
            pts = np.where(corners == 1, hi[g].max(0), lo[g].min(0))
            pts = np.concatenate([pts, pts - (np.maximum(pts[:, 2], 0.0) / L[2])[:, None] * L], 0) @ R.T + tc
            x0, y0, x1, y1 = _pixel_boxes(pts.min(0)[None], pts.max(0)[None], camera)[0]
        else:
            x0, y0, x1, y1 = 0, 0, W, H
        if x1 <= x0 or y1 <= y0:
            continue
        ys, xs = np.nonzero(receivers[y0:y1, x0:x1] & ~shadow[y0:y1, x0:x1])
        if not len(ys):
            continue
        ys, xs = ys + y0, xs + x0
        z = depth[ys, xs].astype(np.float64)
        rx, ry = dx[ys, xs], dy[ys, xs]
        u, v, w = (z * (rx * to_light[0, k] + ry * to_light[1, k] + to_light[2, k]) - offset[k] for k in range(3))
        gc, gr = cl[g], rad[g]
        near = (u >= (gc[:, 0] - gr).min()) & (u <= (gc[:, 0] + gr).max()) & (v >= (gc[:, 1] - gr).min()) & \
            (v <= (gc[:, 1] + gr).max()) & (w < (gc[:, 2] + gr).max())
        if not near.any():
            continue
        ys, xs, u, v, w = ys[near], xs[near], u[near], v[near], w[near]
        du, dv = u[:, None] - gc[None, :, 0], v[:, None] - gc[None, :, 1]
        cand = (du * du + dv * dv <= (gr * gr)[None]) & (w[:, None] < (gc[:, 2] + gr)[None]) & \
            (prim_id[ys, xs][:, None] != g[None])
        ri, gi = np.nonzero(cand)
        if not len(ri):
            continue
        idx = g[gi]
        p = np.stack([u[ri], v[ri], w[ri]], -1) @ basis  # light frame -> world
        kinds = prims.kind[idx]
        for kind in (CAPSULE, ELLIPSOID, BOX):
            m = kinds == kind
            if m.any():
                hit = _shadow_hits(kind, p[m], L, prims, idx[m])
                shadow[ys[ri[m][hit]], xs[ri[m][hit]]] = True
    return shadow


def procedural_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A seeded backdrop ``(H, W, 3)`` float32 in [0, 1]: a bicubic-upsampled low-resolution colour field, a few
    soft rectangles (walls, doors, windows) and fine noise."""
    base = rng.uniform(0.15, 0.85, size=(3, 4, 3)).astype(np.float32)
    img = cv2.resize(base, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(1, 5))):
        x0, x1 = np.sort(rng.uniform(-0.1, 1.1, 2)) * width
        y0, y1 = np.sort(rng.uniform(-0.1, 1.1, 2)) * height
        col = rng.uniform(0.1, 0.9, 3).astype(np.float32)
        xa, xb, ya, yb = (int(np.clip(v, 0, lim)) for v, lim in ((x0, width), (x1, width), (y0, height),
                                                               (y1, height)))
        img[ya:yb, xa:xb] = 0.5 * img[ya:yb, xa:xb] + 0.5 * col
    noise = rng.normal(0.0, 0.06, size=(max(height // 8, 1), max(width // 8, 1), 1)).astype(np.float32)
    img += cv2.resize(noise, (width, height), interpolation=cv2.INTER_LINEAR)[..., None]
    return np.clip(img, 0.0, 1.0)
