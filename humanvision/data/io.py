"""Image and depth-map files: decoding with errors that name the file.

Also :func:`safe_unpickle` / :func:`safe_load_npy`: pickled annotation files (Human3.6M ECCV'18 caches,
Occlusion-Person, 3DPW sequence files, object ``.npy`` files) read without executing code.

Conventions used everywhere in :mod:`humanvision.data`:

* colour images are ``(H, W, 3) uint8`` in **RGB** order (OpenCV's BGR is converted on read and on write);
* depth maps are ``(H, W) float32`` in **millimetres**, ``0`` meaning "no measurement"; on disk they are
  single-channel **16-bit PNG** files holding integer millimetres (the Kinect / NTU RGB+D convention), so the
  range is 0..65535 mm and values are rounded to the nearest millimetre when written.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from humanvision.errors import DataError

__all__ = ["read_depth", "read_image", "read_mask", "safe_load_npy", "safe_unpickle", "write_depth", "write_image",
           "write_mask"]


def _check_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise DataError("file not found" if not p.exists() else "not a regular file", file=str(p))
    return p


def _decode(path: Path, flags: int) -> np.ndarray:
    # np.fromfile + imdecode handles non-ASCII paths on every platform, unlike cv2.imread
    buf = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(buf, flags) if buf.size else None
    if img is None:
        raise DataError("cannot decode the image (corrupt, truncated or unsupported format)", file=str(path))
    return img


def read_image(path: str | Path) -> np.ndarray:
    """Read a colour image as ``(H, W, 3) uint8`` RGB.

    Grey images are replicated to three channels, an alpha channel is dropped and 16-bit images are scaled to
    8 bits. An EXIF orientation tag is applied, as by an image viewer, OpenCV's ``imread`` and mmcv (a phone's
    portrait stored as a landscape bitmap comes out upright), so this reader and the torch-free runtime's agree.
    A missing or undecodable file raises :class:`~humanvision.errors.DataError` naming the file.
    """
    p = _check_file(path)
    img = _decode(p, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)  # unlike IMREAD_UNCHANGED, honours EXIF
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise DataError(f"unsupported image dtype {img.dtype}; expected 8- or 16-bit", file=str(p))
    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))
    if img.shape[2] == 3:  # IMREAD_ANYCOLOR has dropped any alpha channel
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(img, 3, axis=2))
    raise DataError(f"unsupported number of channels {img.shape[2]}", file=str(p))


def read_depth(path: str | Path) -> np.ndarray:
    """Read a single-channel 16-bit PNG of millimetres as ``(H, W) float32`` mm (0 = no measurement)."""
    p = _check_file(path)
    img = _decode(p, cv2.IMREAD_UNCHANGED)
    if img.ndim != 2 or img.dtype != np.uint16:
        raise DataError(f"expected a single-channel 16-bit depth image (mm), got dtype {img.dtype}, shape "
                        f"{img.shape}", file=str(p))
    return img.astype(np.float32)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a label image (part or instance mask), a single-channel 8/16-bit PNG, as ``(H, W) int32``."""
    p = _check_file(path)
    img = _decode(p, cv2.IMREAD_UNCHANGED)
    if img.ndim != 2 or img.dtype not in (np.uint8, np.uint16):
        raise DataError(f"expected a single-channel 8- or 16-bit label image, got dtype {img.dtype}, shape "
                        f"{img.shape}", file=str(p))
    return img.astype(np.int32)


def _write(path: str | Path, img: np.ndarray) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(p.suffix or ".png", img)
    if not ok:
        raise OSError(f"{p}: OpenCV could not encode an image with suffix {p.suffix!r}")
    buf.tofile(str(p))
    return p


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write an ``(H, W, 3) uint8`` RGB (or ``(H, W)`` grey) image; the suffix gives the format (png, jpg)."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise DataError(f"expected an (H, W, 3) or (H, W) uint8 image, got {img.dtype} {img.shape}",
                        file=str(path), field="image")
    return _write(path, cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img)


def write_depth(path: str | Path, depth_mm: np.ndarray) -> Path:
    """Write an ``(H, W)`` depth map in millimetres as a 16-bit PNG (rounded; 0 = no measurement).

    Values must be finite and within 0..65535 mm; anything else is a :class:`DataError` (no silent clipping).
    """
    p = Path(path)
    d = np.asarray(depth_mm)
    if d.ndim != 2:
        raise DataError(f"expected an (H, W) depth map, got shape {d.shape}", file=str(p), field="depth")
    if p.suffix.lower() != ".png":
        raise DataError("depth maps are written as 16-bit PNG; use a .png suffix", file=str(p), field="depth")
    d = d.astype(np.float64)
    if not np.isfinite(d).all() or d.min(initial=0) < 0 or d.max(initial=0) > 65535:
        raise DataError("depth must be finite and within 0..65535 mm", file=str(p), field="depth")
    return _write(p, np.rint(d).astype(np.uint16))


def write_mask(path: str | Path, mask: np.ndarray) -> Path:
    """Write an ``(H, W)`` integer label image as PNG (8-bit when labels fit in 0..255, else 16-bit)."""
    m = np.asarray(mask)
    if m.ndim != 2 or m.dtype.kind not in "iub":
        raise DataError(f"expected an (H, W) integer mask, got dtype {m.dtype} shape {m.shape}",
                        file=str(path),
                        field="mask")
    if m.size and (m.min() < 0 or m.max() > 65535):
        raise DataError("mask labels must be within 0..65535", file=str(path), field="mask")
    if Path(path).suffix.lower() != ".png":
        raise DataError("masks are written as PNG (lossless); use a .png suffix", file=str(path),
                        field="mask")
    return _write(path, m.astype(np.uint8 if m.size == 0 or m.max() <= 255 else np.uint16))


# --------------------------------------------------------------------------- pickles without code execution
def _pickle_globals() -> dict[tuple[str, str], Any]:
    """The only globals a dataset pickle may name: numpy array/dtype/scalar reconstruction and builtin
    containers (under their Python 3 and Python 2 module names, and numpy 1.x and 2.x module paths)."""
    import builtins
    import codecs
    import collections

    from numpy._core import multiarray, numeric

    allowed: dict[tuple[str, str], Any] = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = multiarray._reconstruct
        allowed[(mod, "scalar")] = multiarray.scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = numeric._frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    for name in ("dict", "list", "tuple", "set", "frozenset", "bytearray", "complex"):
        allowed[("builtins", name)] = allowed[("__builtin__", name)] = getattr(builtins, name)
    allowed[("collections", "OrderedDict")] = collections.OrderedDict
    # protocol-2 pickles written by Python 3 store bytes as _codecs.encode(text, "latin1")
    allowed[("_codecs", "encode")] = codecs.encode
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str, encoding: str,
                 extra_globals: Mapping[tuple[str, str], Any] | None = None) -> None:
        super().__init__(file, encoding=encoding)
        self.source = source
        self.allowed = _pickle_globals() | dict(extra_globals or {})

    def find_class(self, module: str, name: str) -> Any:
        obj = self.allowed.get((module, name))
        if obj is None:
            raise DataError(f"refused to load global {module}.{name}: dataset pickles may only hold numpy arrays "
                            "and builtin containers (the file was not executed)", file=self.source)
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise DataError("refused a persistent id (a torch.save or other framework file, not a plain data "
                        "pickle)", file=self.source)


def _unpickle(stream, source: str, encoding: str,
              extra_globals: Mapping[tuple[str, str], Any] | None = None) -> Any:
    try:
        return _RestrictedUnpickler(stream, source, encoding, extra_globals).load()
    except DataError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            UnicodeDecodeError, MemoryError, OverflowError) as e:
        raise DataError(f"not a readable pickle ({type(e).__name__}: {e})", file=source) from None


def safe_unpickle(path: str | Path, encoding: str = "ASCII",
                  extra_globals: Mapping[tuple[str, str], Any] | None = None) -> Any:
    """Load a pickled data file **without executing code**.

    Only numpy arrays (``ndarray``, ``dtype``, scalars; numpy 1.x and 2.x module paths), builtin containers
    (``dict``, ``list``, ``tuple``, ``set``, ``frozenset``, ``bytearray``, ``complex``, ``OrderedDict``) and
    plain values can be reconstructed. Any other global (a class, ``os.system``, ...) is refused *before* it is
    called, with a :class:`DataError` naming the file and the global; so are persistent ids (``torch.save``
    files). Python 2 pickles (3DPW sequence files) need ``encoding="latin1"``.

    ``extra_globals`` maps further ``(module, name)`` pairs to harmless stand-ins chosen by the caller (e.g.
    ``("easydict", "EasyDict")`` to a plain ``dict`` subclass); the named module is never imported.
    """
    p = _check_file(path)
    with open(p, "rb") as f:
        return _unpickle(f, str(p), encoding, extra_globals)


def safe_load_npy(path: str | Path, encoding: str = "ASCII") -> Any:
    """Load an ``.npy`` file without executing code: plain arrays as with ``np.load``; an object array (what
    ``np.save`` writes for a dict, e.g. the Human3.6M multi-view labels) through :func:`safe_unpickle`'s
    restricted unpickler. A 0-d object array is returned as its item (``np.load(...).item()``)."""
    from numpy.lib import format as npformat

    p = _check_file(path)
    with open(p, "rb") as f:
        try:
            version = npformat.read_magic(f)
            read_header = {(1, 0): npformat.read_array_header_1_0, (2, 0): npformat.read_array_header_2_0}
            if version not in read_header:
                raise ValueError(f"unsupported .npy format version {version}")
            _, _, dtype = read_header[version](f)
        except ValueError as e:
            raise DataError(f"not an .npy file ({e})", file=str(p)) from None
        if not dtype.hasobject:
            return np.load(p, allow_pickle=False)
        arr = _unpickle(f, str(p), encoding)
    if not isinstance(arr, np.ndarray):
        raise DataError(f"the pickled payload is a {type(arr).__name__}, not an array", file=str(p))
    return arr.item() if arr.shape == () else arr
