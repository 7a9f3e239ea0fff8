"""Volumes for volumetric triangulation: the cuboid coordinate grid, unprojection of 2D feature maps into it, and
aggregation over views (Learnable Triangulation / ContextPose, pose3d.md §2.4.3-§2.4.6, §3.2, §8.8-§8.10).

Torch only, batched over samples ``B`` and views ``V``, differentiable (with respect to the features, and the grid
where it matters). Conventions:

* **Grid** (:func:`coord_volume`): ``X_ijk = (base - side / 2) + side / (size - 1) * (i, j, k)``, i, j, k = 0..size-1,
  ``torch.meshgrid(indexing='ij')`` so the volume axes are (x, y, z) = (i, j, k) and the corners are
  ``base -+ side / 2`` exactly. An optional rotation by ``angle`` (radians, right-hand rule) about the world
  axis ``axis`` (0 x, 1 y, 2 z; Human3.6M's vertical is z) through ``base`` (LT's training augmentation).
* **Aux grid** (:func:`aux_volume`, ContextPose): same origin ``base - side / 2``, same rotation about ``base``,
  side ``side - 3 side / (size - 1)``, so for ``size = 4 aux_size`` its spacing is 4 fine voxels and aux point i
  is fine point 4i (not the centre of a 4³ pooled cell; pose3d.md §3.2).
* **Unprojection** (:func:`unproject_features`): ``proj`` maps world points to *feature-map* pixels (the crop
  camera already rescaled by ``feature / input``, no half-pixel term); pixel ``(u, v)`` is sampled bilinearly with
  ``grid_sample(align_corners=True)`` at ``(2u / (w - 1) - 1, 2v / (h - 1) - 1)`` (the ``(W - 1)`` normalisation of
  ContextPose, not LT's ``/ W``, pose3d.md §9), zero outside the map; voxels behind a camera (projective depth
  ``w <= 0``) and masked views are 0.
* **Aggregation** (:func:`aggregate_volumes`): ``sum``, ``max``, ``softmax`` (``sum_c softmax_c(V_c) * V_c`` per
  voxel and channel, LT's choice), ``conf`` (``sum_c w_{c,ch} V_c``), ``conf_norm`` (``w`` normalised over views).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["AGGREGATIONS", "aggregate_volumes", "aux_volume", "coord_volume", "rotate_about_axis",
           "unproject_features"]

AGGREGATIONS = ("sum", "max", "softmax", "conf", "conf_norm")


def _check_base(base: torch.Tensor) -> None:
    if not isinstance(base, torch.Tensor) or base.ndim != 2 or base.shape[-1] != 3:
        raise ValueError(f"base must be a tensor (B, 3), got {getattr(base, 'shape', type(base))}")


def rotate_about_axis(points: torch.Tensor, center: torch.Tensor, angle: torch.Tensor, axis: int = 2
                      ) -> torch.Tensor:
    """Rotate ``points (B, ..., 3)`` by ``angle (B,)`` radians about the world axis ``axis`` through ``center
    (B, 3)``: ``c + R (X - c)`` with ``R`` the right-handed rotation (for z: ``[[cos, -sin, 0], [sin, cos, 0],
    [0, 0, 1]]``). Coordinates along ``axis`` are unchanged."""
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0 (x), 1 (y) or 2 (z), got {axis}")
    b = points.shape[0]
    angle = torch.as_tensor(angle, dtype=points.dtype, device=points.device).reshape(-1)
    if angle.shape[0] != b:
        raise ValueError(f"angle must be (B,) = ({b},), got {tuple(angle.shape)}")
    a1, a2 = [(1, 2), (2, 0), (0, 1)][axis]  # the rotated plane, in right-handed order
    shape = (b,) + (1,) * (points.ndim - 2)
    c = center.to(points.dtype).reshape(b, *(1,) * (points.ndim - 2), 3)
    d = points - c
    cos, sin = torch.cos(angle).reshape(shape), torch.sin(angle).reshape(shape)
    p1, p2 = d[..., a1], d[..., a2]
    out = [d[..., 0], d[..., 1], d[..., 2]]
    out[a1], out[a2] = cos * p1 - sin * p2, sin * p1 + cos * p2
    return torch.stack(out, -1) + c


def _grid(origin: torch.Tensor, spacing: float, size: int) -> torch.Tensor:
    """``origin (B, 3) + spacing * (i, j, k)`` -> ``(B, size, size, size, 3)``, axes (x, y, z) = (i, j, k)."""
    r = torch.arange(size, dtype=origin.dtype, device=origin.device) * spacing
    ii, jj, kk = torch.meshgrid(r, r, r, indexing="ij")
    return origin[:, None, None, None, :] + torch.stack([ii, jj, kk], -1)[None]


def coord_volume(base: torch.Tensor, side: float, size: int, *, angle: torch.Tensor | None = None,
                 axis: int = 2) -> torch.Tensor:
    """The cuboid grid (pose3d.md §2.4.3-4): ``base (B, 3)`` (the centre, e.g. the pelvis), ``side`` (mm, LT
    2500), ``size`` voxels per side (LT 64) -> ``(B, size, size, size, 3)`` world points
    ``(base - side / 2) + side / (size - 1) * (i, j, k)``, rotated by ``angle (B,)`` (radians; None: no rotation)
    about the world axis ``axis`` through ``base``. Dtype and device follow ``base``."""
    _check_base(base)
    if size < 2 or not side > 0:
        raise ValueError(f"coord_volume: size >= 2 and side > 0 required, got size {size}, side {side}")
    grid = _grid(base - side / 2, side / (size - 1), size)
    return grid if angle is None else rotate_about_axis(grid, base, angle, axis)


def aux_volume(base: torch.Tensor, side: float, size: int = 64, aux_size: int = 16, *,
               angle: torch.Tensor | None = None, axis: int = 2) -> torch.Tensor:
    """ContextPose's aux grid (pose3d.md §3.2): the same origin ``base - side / 2`` as :func:`coord_volume` and the
    same rotation about ``base``, side ``side - 3 side / (size - 1)`` with ``aux_size`` points per side
    -> ``(B, aux_size, aux_size, aux_size, 3)``. For 64 / 16 (any ``size = 4 aux_size``) the spacing is 4 fine
    voxels: aux point i equals fine point 4i."""
    _check_base(base)
    if aux_size < 2 or size < 2 or not side > 0:
        raise ValueError(f"aux_volume: size, aux_size >= 2 and side > 0 required, got {size}, {aux_size}, {side}")
    aux_side = side - 3 * side / (size - 1)
    grid = _grid(base - side / 2, aux_side / (aux_size - 1), aux_size)
    return grid if angle is None else rotate_about_axis(grid, base, angle, axis)


def unproject_features(features: torch.Tensor, proj: torch.Tensor, coords: torch.Tensor,
                       view_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-view volumes (pose3d.md §2.4.5): ``features (B, V, C, h, w)``, ``proj (B, V, 3, 4)`` mapping world
    points to feature-map pixels, ``coords (B, D, H, W, 3)`` world points, ``view_mask (B, V)`` bool (None: all
    views) -> ``(B, V, C, D, H, W)`` in the dtype of ``features``.

    Each voxel is projected, ``(u w, v w, w) = P [X; 1]`` (in the dtype of ``proj``; float64 keeps millimetre
    grids exact), and the map is sampled bilinearly at ``(2u / (w_map - 1) - 1, 2v / (h_map - 1) - 1)`` with
    ``align_corners=True`` and zero padding. Voxels with ``w <= 0`` and masked views are 0. Differentiable with
    respect to ``features``."""
    if features.ndim != 5:
        raise ValueError(f"features must be (B, V, C, h, w), got {tuple(features.shape)}")
    b, v, c, h, w = features.shape
    if proj.shape != (b, v, 3, 4):
        raise ValueError(f"proj must be (B, V, 3, 4) = ({b}, {v}, 3, 4), got {tuple(proj.shape)}")
    if coords.ndim != 5 or coords.shape[0] != b or coords.shape[-1] != 3:
        raise ValueError(f"coords must be (B, D, H, W, 3) with B = {b}, got {tuple(coords.shape)}")
    if h < 2 or w < 2:
        raise ValueError(f"feature maps must be at least 2x2 for align_corners sampling, got {h}x{w}")
    spatial = coords.shape[1:4]
    dtype = torch.promote_types(proj.dtype, torch.float32)
    pts = coords.reshape(b, -1, 3).to(dtype)
    pts = torch.cat([pts, torch.ones_like(pts[..., :1])], -1)  # (B, N, 4)
    uvw = torch.einsum("bvij,bnj->bvni", proj.to(dtype), pts)  # (B, V, N, 3)
    depth = uvw[..., 2]
    valid = depth > 0
    if view_mask is not None:
        valid = valid & view_mask.to(torch.bool).reshape(b, v, 1)
    uv = uvw[..., :2] / torch.where(valid, depth, torch.ones_like(depth))[..., None]
    scale = uv.new_tensor([2.0 / (w - 1), 2.0 / (h - 1)])
    grid = uv * scale - 1.0
    # beyond one pixel outside the map bilinear sampling with zero padding gives 0 anyway: keep the grid finite
    grid = torch.nan_to_num(grid, nan=-10.0, posinf=10.0, neginf=-10.0).clamp(-10.0, 10.0)
    grid = torch.where(valid[..., None], grid, torch.full_like(grid, -10.0))
    sampled = F.grid_sample(features.reshape(b * v, c, h, w), grid.to(features.dtype).reshape(b * v, 1, -1, 2),
                            mode="bilinear", padding_mode="zeros", align_corners=True)  # (B V, C, 1, N)
    sampled = sampled.reshape(b, v, c, -1) * valid[:, :, None, :].to(features.dtype)
    return sampled.reshape(b, v, c, *spatial)


def aggregate_volumes(volumes: torch.Tensor, method: str = "softmax", *, weights: torch.Tensor | None = None,
                      view_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Fuse per-view volumes ``(B, V, C, D, H, W)`` over the views -> ``(B, C, D, H, W)`` (pose3d.md §2.4.6).

    ``sum``: ``sum_c V_c``; ``max``: element-wise maximum; ``softmax``: ``sum_c softmax_c(V_c) * V_c`` (per voxel
    and channel; one view is the identity); ``conf``: ``sum_c w_{c,ch} V_c`` with ``weights (B, V, C)``;
    ``conf_norm``: the same with ``w`` divided by its sum over the views. Views outside ``view_mask (B, V)`` take
    no part (a sample needs at least one view)."""
    if method not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {method!r}")
    if volumes.ndim != 6:
        raise ValueError(f"volumes must be (B, V, C, D, H, W), got {tuple(volumes.shape)}")
    b, v, c = volumes.shape[:3]
    mask = None
    if view_mask is not None:
        if view_mask.shape != (b, v):
            raise ValueError(f"view_mask must be (B, V) = ({b}, {v}), got {tuple(view_mask.shape)}")
        mask = view_mask.to(torch.bool).reshape(b, v, 1, 1, 1, 1)
    if method == "sum":
        return (volumes if mask is None else volumes * mask).sum(1)
    if method == "max":
        return (volumes if mask is None else volumes.masked_fill(~mask, float("-inf"))).amax(1)
    if method == "softmax":
        logits = volumes if mask is None else volumes.masked_fill(~mask, float("-inf"))
        return (torch.softmax(logits, dim=1) * volumes).sum(1)
    if weights is None or weights.shape != (b, v, c):
        raise ValueError(f"aggregation {method!r} needs weights (B, V, C) = ({b}, {v}, {c}), got "
                         f"{None if weights is None else tuple(weights.shape)}")
    w = weights.to(volumes.dtype)
    if view_mask is not None:
        w = w * view_mask.to(w.dtype)[..., None]
    if method == "conf_norm":
        w = w / w.sum(1, keepdim=True).clamp_min(1e-12)
    return (w[..., None, None, None] * volumes).sum(1)
