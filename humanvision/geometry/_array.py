"""Array helpers shared by the geometry modules: one code path for numpy arrays and torch tensors.

Every public geometry function accepts numpy arrays, torch tensors, or anything ``np.asarray`` understands. The
backend is chosen by the inputs: if any input is a tensor the computation runs in torch (differentiable, on that
tensor's device, in the promoted floating dtype of the tensors); otherwise it runs in numpy (integers become
float64, float32 stays float32 unless mixed with float64).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np
import torch

from humanvision.errors import DataError

__all__ = ["Array", "as_float", "check_last_dims", "clamp_min", "eye_like", "to_common", "xp"]

Array = Any  # np.ndarray | torch.Tensor; kept loose so signatures stay readable


def xp(x: Array) -> ModuleType:
    """The array namespace of ``x``: ``torch`` for tensors, ``numpy`` otherwise."""
    return torch if isinstance(x, torch.Tensor) else np


def as_float(x: Any, name: str = "x") -> Array:
    """``x`` as a floating array; tensors stay tensors (integer tensors become the default dtype)."""
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.to(torch.get_default_dtype())
    a = np.asarray(x)
    if a.dtype.kind == "f":
        return a
    if a.dtype.kind in "iub":
        return a.astype(np.float64)
    raise DataError(f"expected a numeric array, got dtype {a.dtype}", field=name)


def to_common(*arrays: Any, names: Sequence[str] | None = None) -> list[Array | None]:
    """Convert all non-``None`` inputs to one backend and floating dtype (see the module docstring)."""
    names = list(names) if names is not None else [f"argument {i}" for i in range(len(arrays))]
    out = [None if a is None else as_float(a, n) for a, n in zip(arrays, names)]
    tensors = [a for a in out if isinstance(a, torch.Tensor)]
    if tensors:
        dtype = tensors[0].dtype
        for tt in tensors[1:]:
            dtype = torch.promote_types(dtype, tt.dtype)
        device = tensors[0].device
        return [None if a is None else torch.as_tensor(a, dtype=dtype, device=device) for a in out]
    present = [a for a in out if a is not None]
    if not present:
        return out
    dtype = np.result_type(*[a.dtype for a in present])
    return [None if a is None else a.astype(dtype, copy=False) for a in out]


def eye_like(n: int, ref: Array) -> Array:
    """An ``n x n`` identity in the backend, dtype (and device) of ``ref``."""
    if isinstance(ref, torch.Tensor):
        return torch.eye(n, dtype=ref.dtype, device=ref.device)
    return np.eye(n, dtype=ref.dtype)


def clamp_min(x: Array, value: float) -> Array:
    """``max(x, value)`` elementwise in either backend."""
    return x.clamp_min(value) if isinstance(x, torch.Tensor) else np.maximum(x, value)


def check_last_dims(x: Array, dims: tuple[int, ...], name: str, layout: str) -> None:
    """Raise a :class:`DataError` naming ``name`` unless ``x`` ends with the axes ``dims``."""
    if x.ndim < len(dims) or tuple(x.shape[x.ndim - len(dims):]) != tuple(dims):
        raise DataError(f"expected shape {layout}, got {tuple(x.shape)}", field=name)
