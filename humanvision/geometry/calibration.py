"""Multi-camera calibration files: read and write sets of :class:`~humanvision.geometry.Camera` by name.

Formats (chosen by the file suffix in :func:`read_calibration`):

* **anipose / Pose2Sim TOML** (``.toml``): one table per camera plus an optional ``[metadata]`` table::

      [cam_0]
      name = "A"
      size = [1920, 1080]                 # width, height in pixels
      matrix = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
      distortions = [k1, k2, p1, p2, k3]  # OpenCV order (Pose2Sim writes 4: k3 = 0)
      rotation = [rx, ry, rz]             # Rodrigues axis-angle of R (world -> camera), as cv2.Rodrigues
      translation = [tx, ty, tz]          # x_cam = R X + t, in the calibration's units (anipose: board units)
      fisheye = false                     # optional; fisheye lenses are not supported

  The camera name is ``name``, or the table's key when ``name`` is absent. Distortion follows the OpenCV model.
* **humanvision camera JSON** (``.json``): ``{"format": "humanvision.cameras", "version": 1, "cameras": [...]}``
  with :meth:`Camera.to_dict` records (``K``, ``R``, ``t``, ``dist``, ``dist_model``, ``width``, ``height``,
  ``name``); a bare list of such records, or a mapping name -> record, is read as well.
* **CMU Panoptic** (``.json``, ``calibration_<sequence>.json`` of the Panoptic Studio toolbox, recognised by its
  content): ``{"calibDataSource": ..., "cameras": [{"name": "00_03", "type": "hd", "resolution": [1920, 1080],
  "panel": 0, "node": 3, "K": 3x3, "distCoef": [k1, k2, p1, p2, k3], "R": 3x3, "t": [[tx], [ty], [tz]]}, ...]}``
  (OpenCV distortion, ``x_cam = R X + t`` with ``t`` in centimetres); :func:`read_panoptic_calibration` keeps one
  camera ``type`` (``hd`` by default; ``vga``, ``kinect-color`` or ``all``) and converts ``t`` to millimetres.
* **Human3.6M** (``.npy``): the learnable-triangulation labels file (pose3d.md section 1.3); one subject's four
  cameras, with the H36M distortion model (``dist_model="h36m"``), read through
  :class:`~humanvision.data.readers.Human36MMultiView`.

Every error is a :class:`~humanvision.errors.DataError` that names the file, the camera table and the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from humanvision.errors import DataError
from humanvision.geometry.camera import Camera
from humanvision.geometry.rotation import axis_angle_to_matrix, matrix_to_axis_angle

__all__ = [
    "CAMERA_JSON_FORMAT",
    "read_anipose_toml",
    "read_calibration",
    "read_camera_json",
    "read_h36m_cameras",
    "read_panoptic_calibration",
    "write_anipose_toml",
    "write_camera_json",
]

CAMERA_JSON_FORMAT = "humanvision.cameras"


def read_calibration(path: str | Path, *, subject: str | None = None) -> dict[str, Camera]:
    """Cameras by name from an anipose/Pose2Sim ``.toml``, a humanvision or CMU Panoptic (HD cameras) ``.json`` or a
    Human3.6M labels ``.npy``
    (``subject`` picks the H36M subject; default: the first). The order is the file's."""
    p = Path(path)
    if not p.is_file():
        raise DataError("calibration file not found", file=str(p))
    suffix = p.suffix.lower()
    if suffix == ".toml":
        return read_anipose_toml(p)
    if suffix == ".json":
        return read_camera_json(p)
    if suffix == ".npy":
        return read_h36m_cameras(p, subject)
    raise DataError(f"unknown calibration format {p.suffix!r}; expected .toml (anipose / Pose2Sim), .json "
                    "(humanvision cameras) or .npy (Human3.6M labels)", file=str(p))


# ------------------------------------------------------------------------------------------------ anipose TOML
def _numbers(table: Mapping[str, Any], key: str, shape: tuple[int, ...], file: str, record: str) -> np.ndarray:
    if key not in table:
        raise DataError("missing", file=file, record=record, field=key)
    try:
        a = np.asarray(table[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"expected numbers of shape {shape}, got {table[key]!r}", file=file, record=record,
                        field=key) from None
    if a.shape != shape:
        raise DataError(f"expected shape {shape}, got {a.shape}", file=file, record=record, field=key)
    if not np.isfinite(a).all():
        raise DataError("contains non-finite values", file=file, record=record, field=key)
    return a


def _toml_reader(file: str) -> Any:
    """The stdlib ``tomllib`` (Python >= 3.11), or ``tomli``, its backport with the same API, on Python 3.10."""
    try:
        import tomllib

        return tomllib
    except ModuleNotFoundError:
        try:
            import tomli

            return tomli
        except ModuleNotFoundError:
            raise DataError("reading TOML needs Python >= 3.11 (tomllib) or `pip install tomli`", file=file) from None


def read_anipose_toml(path: str | Path) -> dict[str, Camera]:
    """Cameras from an anipose ``calibration.toml`` (also Pose2Sim's ``Calib*.toml``); see the module docstring.

    Tables without a ``matrix`` key (``[metadata]``) are skipped. ``rotation`` may also be a 3x3 matrix.
    """
    f = str(path)
    toml = _toml_reader(f)
    try:
        with open(path, "rb") as fh:
            data = toml.load(fh)
    except OSError as e:
        raise DataError(f"cannot read ({e})", file=f) from None
    except toml.TOMLDecodeError as e:
        raise DataError(f"not valid TOML: {e}", file=f) from None
    cameras: dict[str, Camera] = {}
    for key, table in data.items():
        if not isinstance(table, dict) or "matrix" not in table:
            continue
        record = f"[{key}]"
        name = str(table.get("name", key))
        if name in cameras:
            raise DataError(f"camera name {name!r} appears twice", file=f, record=record, field="name")
        if table.get("fisheye", False):
            raise DataError("fisheye cameras are not supported (OpenCV pinhole + radial-tangential only)", file=f,
                            record=record, field="fisheye")
        K = _numbers(table, "matrix", (3, 3), f, record)
        rot = np.asarray(table.get("rotation", []), dtype=object)
        R = (_numbers(table, "rotation", (3, 3), f, record) if rot.shape == (3, 3)
             else axis_angle_to_matrix(_numbers(table, "rotation", (3,), f, record)))
        t = _numbers(table, "translation", (3,), f, record)
        dist = None
        if "distortions" in table:
            d = np.asarray(table["distortions"], dtype=object).reshape(-1)
            if d.size not in (4, 5):
                raise DataError(f"expected 4 or 5 coefficients (k1, k2, p1, p2[, k3]), got {d.size}; rational and "
                                "thin-prism models are not supported", file=f, record=record, field="distortions")
            dist = _numbers(table, "distortions", (d.size,), f, record)
        width = height = None
        if "size" in table:
            width, height = _numbers(table, "size", (2,), f, record)
        fields = {"K": K, "R": R, "t": t, "dist": dist, "dist_model": "opencv", "width": width, "height": height,
                  "name": name}
        cameras[name] = Camera.from_dict(fields, file=f, record=record)
    if not cameras:
        raise DataError("no camera tables (a table with 'matrix', 'distortions', 'rotation', 'translation')", file=f)
    return cameras


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        x = float(v)
        if not math.isfinite(x):
            raise DataError(f"cannot write the non-finite number {x} to TOML", field="value")
        return repr(x)
    if isinstance(v, (list, tuple, np.ndarray)):
        return "[" + ", ".join(_toml_value(x) for x in (v.tolist() if isinstance(v, np.ndarray) else v)) + "]"
    raise DataError(f"cannot write {type(v).__name__} to TOML", field="value")


def write_anipose_toml(cameras: Mapping[str, Camera] | Sequence[Camera], path: str | Path,
                       metadata: Mapping[str, Any] | None = None) -> Path:
    """Write cameras as an anipose ``calibration.toml`` (tables ``[cam_0]``, ``[cam_1]``, ... and ``[metadata]``).

    Only OpenCV-model distortion can be written (anipose has no other); an ``"h36m"`` camera is a DataError.
    """
    cams = list(cameras.values()) if isinstance(cameras, Mapping) else list(cameras)
    names = list(cameras.keys()) if isinstance(cameras, Mapping) else [c.name or f"cam_{i}" for i, c in
                                                                       enumerate(cams)]
    lines = []
    for i, (name, cam) in enumerate(zip(names, cams)):
        if cam.is_distorted and cam.dist_model != "opencv":
            raise DataError(f"anipose TOML stores OpenCV distortion only, camera has model {cam.dist_model!r}",
                            record=f"camera {name}", field="dist_model")
        lines.append(f"[cam_{i}]")
        lines.append(f"name = {_toml_value(str(name))}")
        if cam.image_size is not None:
            lines.append(f"size = {_toml_value(list(cam.image_size))}")
        lines.append(f"matrix = {_toml_value(cam.K)}")
        lines.append(f"distortions = {_toml_value(cam.dist if cam.dist is not None else np.zeros(5))}")
        lines.append(f"rotation = {_toml_value(matrix_to_axis_angle(cam.R))}")
        lines.append(f"translation = {_toml_value(cam.t)}")
        lines.append("")
    meta = {"adjusted": False, **(dict(metadata) if metadata else {})}
    lines.append("[metadata]")
    lines += [f"{k} = {_toml_value(v)}" for k, v in meta.items()]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


# ------------------------------------------------------------------------------------------------ camera JSON
def _read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except OSError as e:
        raise DataError(f"cannot read ({e})", file=str(path)) from None
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON (line {e.lineno}: {e.msg})", file=str(path)) from None


def read_camera_json(path: str | Path) -> dict[str, Camera]:
    """Cameras from humanvision's camera JSON (see the module docstring)."""
    f = str(path)
    data = _read_json(path)
    if _is_panoptic(data):
        return read_panoptic_calibration(path)
    if isinstance(data, dict) and "cameras" in data:
        if data.get("format", CAMERA_JSON_FORMAT) != CAMERA_JSON_FORMAT:
            raise DataError(f"unknown format {data.get('format')!r}; expected {CAMERA_JSON_FORMAT!r}", file=f,
                            field="format")
        data = data["cameras"]
    if isinstance(data, dict):
        records = [(str(k), dict(v, name=v.get("name", k)) if isinstance(v, dict) else v) for k, v in data.items()]
    elif isinstance(data, list):
        records = [(f"cameras[{i}]", v) for i, v in enumerate(data)]
    else:
        raise DataError("expected {'cameras': [...]}, a list of cameras or a mapping name -> camera", file=f)
    cameras: dict[str, Camera] = {}
    for i, (record, rec) in enumerate(records):
        cam = Camera.from_dict(rec, file=f, record=record)
        name = cam.name if cam.name is not None else f"cam_{i}"
        if name in cameras:
            raise DataError(f"camera name {name!r} appears twice", file=f, record=record, field="name")
        cameras[name] = cam if cam.name is not None else replace(cam, name=name)
    if not cameras:
        raise DataError("no cameras", file=f, field="cameras")
    return cameras


# ------------------------------------------------------------------------------------------------ CMU Panoptic
def _is_panoptic(data: Any) -> bool:
    cams = data.get("cameras") if isinstance(data, dict) else None
    return isinstance(cams, list) and ("calibDataSource" in data or (
        bool(cams) and isinstance(cams[0], dict) and "distCoef" in cams[0]))


def read_panoptic_calibration(path: str | Path, camera_type: str = "hd", cm_to_mm: bool = True
                              ) -> dict[str, Camera]:
    """Cameras of a CMU Panoptic ``calibration_<sequence>.json`` (see the module docstring) of ``camera_type``
    (``hd``, ``vga``, ``kinect-color``, ... or ``all``), by name (``"00_03"``), ``t`` in millimetres unless
    ``cm_to_mm`` is false (then the file's centimetres, the unit of Panoptic's 3D keypoints)."""
    f = str(path)
    data = _read_json(path)
    if not _is_panoptic(data):
        raise DataError("not a CMU Panoptic calibration (expected 'cameras' records with K, distCoef, R, t)", file=f,
                        field="cameras")
    cameras: dict[str, Camera] = {}
    types = set()
    for i, rec in enumerate(data["cameras"]):
        record = f"cameras[{i}]"
        if not isinstance(rec, dict):
            raise DataError(f"expected an object, got {type(rec).__name__}", file=f, record=record)
        kind = str(rec.get("type", ""))
        types.add(kind)
        if camera_type != "all" and kind != camera_type:
            continue
        name = str(rec.get("name", f"{int(rec.get('panel', 0)):02d}_{int(rec.get('node', i)):02d}"))
        record = f"camera {name}"
        K = _numbers(rec, "K", (3, 3), f, record)
        R = _numbers(rec, "R", (3, 3), f, record)
        t = _numbers(rec, "t", (3, 1), f, record).reshape(3) * (10.0 if cm_to_mm else 1.0)
        try:
            dist = np.asarray(rec.get("distCoef", np.zeros(5)), dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            dist = np.full(1, np.nan)
        if dist.size not in (4, 5) or not np.isfinite(dist).all():
            raise DataError(f"expected 4 or 5 finite OpenCV coefficients, got {rec.get('distCoef')!r}", file=f,
                            record=record, field="distCoef")
        size = rec.get("resolution")
        w, h = (int(size[0]), int(size[1])) if isinstance(size, (list, tuple)) and len(size) == 2 else (None, None)
        if name in cameras:
            raise DataError(f"camera name {name!r} appears twice", file=f, record=record, field="name")
        try:
            cameras[name] = Camera(K=K, R=R, t=t, dist=dist, dist_model="opencv", width=w, height=h, name=name)
        except DataError as e:
            raise DataError(str(e), file=f, record=record, field=e.field) from None
    if not cameras:
        raise DataError(f"no cameras of type {camera_type!r} (the file has {sorted(types)})", file=f, field="type")
    return cameras


def write_camera_json(cameras: Mapping[str, Camera] | Sequence[Camera], path: str | Path) -> Path:
    """Write cameras as humanvision camera JSON (names from the mapping keys, else ``Camera.name``)."""
    items = cameras.items() if isinstance(cameras, Mapping) else [(c.name or f"cam_{i}", c)
                                                                 for i, c in enumerate(cameras)]
    records = [{**cam.to_dict(), "name": str(name)} for name, cam in items]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"format": CAMERA_JSON_FORMAT, "version": 1, "cameras": records}, indent=1))
    return out


# ------------------------------------------------------------------------------------------------ Human3.6M
def read_h36m_cameras(path: str | Path, subject: str | None = None, undistorted: bool = False) -> dict[str, Camera]:
    """One subject's cameras from the learnable-triangulation labels ``.npy`` (world mm, ``x_cam = R X + t``).

    ``undistorted=False`` (default) keeps the H36M-model distortion, for 2D detections on the raw videos;
    ``True`` gives the cameras of ``imageSequence-undistorted`` (same K, no distortion).
    """
    from humanvision.data.readers.h36m import Human36MMultiView

    reader = Human36MMultiView(path, root=Path(path).parent, undistorted=undistorted)
    names = reader.subject_names
    if subject is None:
        subject = names[0]
    if subject not in names:
        raise DataError(f"unknown subject {subject!r}; the file has {names}", file=str(path), field="subject_names")
    s = names.index(subject)
    return {name: reader.camera(s, c) for c, name in enumerate(reader.camera_names)}
