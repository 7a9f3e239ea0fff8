"""Vectorised checks shared by the 3D readers: the first bad record is reported with file, record and field."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from humanvision.errors import DataError

__all__ = ["check_finite_keypoints"]


def check_finite_keypoints(kp: np.ndarray, *, file: str, field: str, record: Callable[[int], str],
                           mask: np.ndarray | None = None) -> None:
    """Raise a :class:`DataError` for the first sample of ``kp`` (``(N, K, D)``) holding a non-finite value
    (only where ``mask (N, K)`` is true, when given). For ``D == 3`` a bad third coordinate is reported as a
    non-finite **depth**, so a 3D sample with NaN depth is rejected with its file and index."""
    a = np.asarray(kp)
    bad = ~np.isfinite(a)
    if mask is not None:
        bad &= np.asarray(mask, bool)[..., None]
    rows = np.flatnonzero(bad.reshape(len(a), -1).any(1)) if a.size else ()
    if len(rows) == 0:
        return
    i = int(rows[0])
    bi = bad[i]
    if a.shape[-1] == 3 and bi[:, 2].any():
        j, what = int(np.flatnonzero(bi[:, 2])[0]), "depth (z)"
    else:
        j, d = (int(v) for v in np.argwhere(bi)[0])
        what = "xyz"[d] if a.shape[-1] <= 3 else f"coordinate {d}"
    raise DataError(f"non-finite {what} of joint {j} ({a[i, j].tolist()})", file=file, record=record(i),
                    field=field)
