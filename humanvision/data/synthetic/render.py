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
PATTERNS = ("plain", "stripes_z", "stripes_x", "checks", "head", "shirt_front")
_NEAR = 10.0  # mm
_FAR = 60000.0  # mm: the ground ends here (depth maps hold at most 65535 mm)


@dataclass
class PrimitiveSet:
    """All primitives of a scene, packed as arrays (world frame, mm). ``P`` primitives.

    ``kind`` (P,) CAPSULE/ELLIPSOID/BOX; capsules use ``a``, ``b`` (P, 3) and ``radius`` (P,); ellipsoids and boxes
    use ``centre`` (P, 3), ``axes`` (P, 3, 3) (columns = local axes in the world) and ``radii`` (P, 3) (semi-axes
    or half-sizes). ``frame`` (P, 3, 3) / ``origin`` (P, 3) give the texture frame. ``part`` (P,) body-part label,
    ``instance`` (P,) person id (``i + 1``; 0 for occluders). ``colour_a``/``colour_b`` (P, 3) in [0, 1],
    ``pattern`` (P,) index into :data:`PATTERNS`, ``period`` (P,) texture period in mm.
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
    """Mix weight in [0, 1] between ``colour_a`` and ``colour_b`` (and -1 marks dark details such as eyes)."""
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
        eye_dir = np.array([0.36, 0.9, 0.12]) / np.linalg.norm([0.36, 0.9, 0.12])
        eyes = (np.hypot(np.abs(u[:, 0]) - eye_dir[0], u[:, 2] - eye_dir[2]) < 0.13) & (u[:, 1] > 0.5)
        mouth = (np.abs(u[:, 0]) < 0.22) & (np.abs(u[:, 2] + 0.5) < 0.06) & (u[:, 1] > 0.5)
        w[m] = np.where(eyes | mouth, -1.0, hair.astype(float))
    m = pattern == 5  # shirt: a printed chest panel on the front (local +y), so front and back differ
    if m.any():
        u = q[m] / radii[m]
        w[m] = ((np.abs(u[:, 0]) < 0.45) & (u[:, 1] > 0.25) & (np.abs(u[:, 2] - 0.1) < 0.55)).astype(float)
    return w


def render(prims: PrimitiveSet, camera: Camera, background: Background, light_dir: np.ndarray,
           ambient: float = 0.45, diffuse: float = 0.6, rgb: bool = True) -> RenderOutput:
    """Render one view of a scene.

    Args:
        prims: the scene's primitives (world frame).
        camera: a :class:`~humanvision.geometry.Camera` with width and height (distortion supported).
        background: backdrop image for rays that hit nothing, and the ground plane settings.
        light_dir: (3,) world direction *towards* the light.
        ambient, diffuse: shading weights.
        rgb: set False to skip shading (depth and labels only).
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
        albedo = np.where((w < 0)[:, None], 0.08, albedo)
        lam = np.clip(n @ light_c, 0.0, 1.0)
        rim = 0.15 * np.clip(-(n * p).sum(-1) / np.linalg.norm(p, axis=-1), 0, 1)  # soft view-facing term
        img[hit] = albedo * (ambient + rim + diffuse * lam)[:, None]
    out = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return RenderOutput(out, depth_out, parts, instances)


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
