"""MATLAB ``.mat`` files (scipy for v4-v7.2, h5py for v7.3/HDF5) with errors that name the file and variable."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from humanvision.errors import DataError

__all__ = ["load_mat", "mat_struct_field"]


def load_mat(path: str | Path, variables: Sequence[str]) -> dict[str, Any]:
    """``scipy.io.loadmat`` of the named variables; a missing file, an unreadable file or a missing variable is a
    :class:`DataError` naming the file (and the variable as the field)."""
    import scipy.io

    f = str(path)
    if not Path(f).is_file():
        raise DataError("file not found", file=f)
    try:
        mat = scipy.io.loadmat(f)
    except NotImplementedError as e:  # v7.3 files are HDF5
        raise DataError(f"a MATLAB v7.3 (HDF5) file; this layout expects an older .mat ({e})", file=f) from None
    except (OSError, ValueError, TypeError, IndexError, scipy.io.matlab.MatReadError) as e:
        raise DataError(f"not a readable MATLAB file ({type(e).__name__}: {e})", file=f) from None
    for v in variables:
        if v not in mat:
            names = sorted(k for k in mat if not k.startswith("__"))
            raise DataError(f"missing variable (the file has {names})", file=f, field=v)
    return {v: mat[v] for v in variables}


def mat_struct_field(struct: np.ndarray, i: int, name: str, *, file: str, record: str) -> np.ndarray:
    """Field ``name`` of element ``i`` of a MATLAB struct array read by scipy (``squeeze_me=False``)."""
    if struct.dtype.names is None or name not in struct.dtype.names:
        raise DataError("missing struct field", file=file, record=record, field=name)
    return np.asarray(struct.ravel()[i][name])
