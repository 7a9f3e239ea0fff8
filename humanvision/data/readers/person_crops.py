"""Unlabelled person crops with one COCO-17 pose per image: LUPerson + pose files for HAP (pretraining.md B.2).

**Images.** Any folder tree of image files (``.jpg .jpeg .png .bmp .webp``, case-insensitive); an image is named
by its path relative to the root, with ``/`` separators (``"0001/abc.jpg"``). Without a subset list the images
are taken in sorted name order.

**Keypoints**, two layouts (``keypoints=`` of :func:`scan_person_crops`):

(a) HAP's: a folder of ``<stem>.npy`` files, one per image (``abc.jpg`` -> ``<pose_dir>/abc.npy``, by file stem
    only, so stems must be unique, as in LUPerson's flat folder). Each is ViTPose's top-down output saved with
    ``np.save`` (an object array); the pose is ``arr[0][0]['keypoints']``, the first detected person, ``(17, 3)``
    ``[x, y, score]`` in pixels of the original image. Read without executing code
    (:func:`humanvision.data.io.safe_load_npy`). Every file is read at scan time (about 2M for CFS-50%); convert
    once with :func:`write_keypoints_json` and train from layout (b).
(b) ours, one JSON file (``keypoints.json``) mapping the image's relative name to its 17 COCO-17 keypoints::

        {"0001/abc.jpg": [[x, y, score], ... 17 rows ...], "0001/abd.jpg": null, ...}

    pixels of that image (0-based, x right, y down); ``null`` = no person found. Scores are kept but never
    thresholded (B.2). :func:`keypoints_from_predictions` writes it from ``humanvision infer``'s
    ``predictions.json`` (the highest-scoring person per image); the synthetic person crops
    (``humanvision.data.synthetic.identities``) are written in it too.

``keypoints=None``: no poses at all (every keypoint -10000, e.g. for plain MAE's random masking).

**Subset list** (B.2): TransReID-SSL's ``cfs_list.pkl``, a pickled list of relative names in CFS order, read with
:func:`humanvision.data.io.safe_unpickle`. ``ratio`` keeps ``list[:int(len(list) * ratio)]`` (order matters:
HAP's CFS-50% is the first half, not a random half); ``subset_mode="random"`` keeps a random ``int(len * ratio)``
instead (seeded). The kept names keep the list's order.

**Bad input** (named, counted, skipped; never a crash hours into a run):

* at scan time, where it is cheap (:func:`scan_person_crops`): an image without keypoints (no ``.npy`` file, not in
  the JSON, or ``null``) -> ``skipped["no_keypoints"]``; a keypoint entry that cannot be read or is not ``(17, 3)``
  of finite numbers (wrong joint count, wrong shape, corrupt ``.npy``) -> ``skipped["bad_keypoints"]``; a name of
  the subset list with no image under the root -> ``skipped["missing_image"]``. :meth:`PersonCrops.summary`
  prints the counts with the first names; a scan that keeps nothing is a :class:`DataError` that says why;
* at load time (decoding is not cheap: :class:`~humanvision.methods.hap.PersonCropDataset`): an unreadable or
  corrupt image is replaced by another sample, with a warning naming the file; it is counted and, when a log file
  is given, appended to it; more distinct bad images than ``max_bad_fraction`` of the dataset is a
  :class:`DataError` (a folder that is mostly unreadable is not trained on silently).

Out-of-bounds keypoints are not an error: the augmentation marks them -10000 (B.2).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from humanvision.data.io import safe_load_npy, safe_unpickle
from humanvision.errors import DataError

__all__ = [
    "IMAGE_EXTS", "MISSING", "NUM_JOINTS", "PersonCrops", "keypoints_from_predictions", "list_images",
    "read_keypoints_json", "read_subset_list", "scan_person_crops", "write_keypoints_json",
]

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
NUM_JOINTS = 17
#: HAP's value for a keypoint that is out of the image (before or after augmentation), B.2
MISSING = -10000.0


@dataclass
class PersonCrops:
    """The scanned crops: ``names[i]`` (relative to ``root``), ``keypoints[i]`` ``(17, 3)`` float32 ``[x, y,
    score]`` in original-image pixels, and ``skipped``: reason -> the names left out (module doc)."""

    root: Path
    names: list[str]
    keypoints: np.ndarray
    skipped: dict[str, list[str]] = field(default_factory=dict)
    source: str = ""

    def __len__(self) -> int:
        return len(self.names)

    def path(self, i: int) -> Path:
        return self.root / self.names[i]

    @property
    def paths(self) -> list[Path]:
        """Every crop's full path."""
        return [self.root / n for n in self.names]

    @property
    def num_skipped(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    def summary(self, show: int = 3) -> str:
        """``"1200 crops (root, keypoints: ...); skipped 3: no_keypoints 2 (a.jpg, b.jpg), bad_keypoints 1 (c.jpg)"``."""
        text = f"{len(self)} crops under {self.root} ({self.source})"
        if self.num_skipped:
            parts = []
            for reason, names in self.skipped.items():
                more = f", ... +{len(names) - show}" if len(names) > show else ""
                parts.append(f"{reason} {len(names)} ({', '.join(names[:show])}{more})")
            text += f"; skipped {self.num_skipped}: " + "; ".join(parts)
        return text


# ------------------------------------------------------------------------------------------------ the images
def list_images(root: str | Path, extensions: frozenset[str] = IMAGE_EXTS) -> list[str]:
    """Sorted relative names (``/``-separated) of the image files under ``root`` (recursively)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError("image folder not found" if not root.exists() else "not a folder", file=str(root))
    names = []
    for dirpath, _, files in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        for f in files:
            if Path(f).suffix.lower() in extensions:
                names.append((rel / f).as_posix())
    return sorted(names)


def read_subset_list(path: str | Path, ratio: float = 1.0, mode: Literal["ordered", "random"] = "ordered",
                     seed: int = 0) -> list[str]:
    """The kept names of a pickled list (``cfs_list.pkl``): the first ``int(len * ratio)`` (``ordered``), or as
    many drawn at random with ``seed`` (``random``, kept in list order)."""
    names = safe_unpickle(path)
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise DataError(f"expected a pickled list of relative file names, got {type(names).__name__}",
                        file=str(path))
    if not 0.0 < ratio <= 1.0:
        raise DataError(f"ratio must be in (0, 1], got {ratio}", file=str(path), field="ratio")
    n = int(len(names) * ratio)
    if mode == "ordered":
        return [n_.replace("\\", "/") for n_ in names[:n]]
    if mode == "random":
        keep = np.sort(np.random.default_rng(seed).choice(len(names), size=n, replace=False))
        return [names[i].replace("\\", "/") for i in keep]
    raise DataError(f"subset mode must be 'ordered' or 'random', got {mode!r}", file=str(path), field="mode")


# --------------------------------------------------------------------------------------------- the keypoints
def _as_pose(value: Any) -> np.ndarray | None:
    """``value`` as a finite ``(17, 3)`` float32 array, or None when it is not one."""
    try:
        kp = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        return None
    if kp.shape != (NUM_JOINTS, 3) or not np.isfinite(kp).all():
        return None
    return kp


def _read_npy_pose(path: Path) -> np.ndarray | None:
    """``arr[0][0]['keypoints']`` of one HAP pose file (layout a), or None when unreadable / malformed."""
    try:
        arr = safe_load_npy(path)
        value = arr[0][0]["keypoints"]
    except (DataError, IndexError, KeyError, TypeError, ValueError, OSError):
        return None
    return _as_pose(value)


def read_keypoints_json(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a layout-(b) file (values not checked yet: :func:`scan_person_crops` does that)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise DataError("keypoints file not found", file=str(p)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read keypoints JSON: {e}", file=str(p)) from None
    if not isinstance(doc, dict):
        raise DataError(f"expected an object mapping image names to 17 [x, y, score] rows, got "
                        f"{type(doc).__name__}", file=str(p))
    return {str(k).replace("\\", "/"): v for k, v in doc.items()}


def write_keypoints_json(crops: PersonCrops, path: str | Path) -> Path:
    """Write the scanned crops' keypoints in layout (b) (e.g. to convert HAP's pose folder once)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    doc = {name: np.round(kp.astype(np.float64), 3).tolist() for name, kp in zip(crops.names, crops.keypoints)}
    p.write_text(json.dumps(doc))
    return p


def keypoints_from_predictions(predictions_json: str | Path, out_json: str | Path,
                               image_root: str | Path | None = None) -> dict[str, int]:
    """Convert ``humanvision infer``'s ``predictions.json`` (file name -> COCO result records ``{"keypoints":
    [x, y, s] * 17 flat, "score", ...}``) to layout (b): per image the record with the highest ``score`` (the
    first of equal ones). Images with no record are written as ``null``; video frames (``name#i``) are left out.

    ``infer`` keys its predictions by file *name*; with ``image_root`` each name is looked up under that folder
    (recursively) and written as its relative path (a name found twice is a :class:`DataError`); without it the
    names are written as they are (images directly under the root). Returns counts: ``images``, ``with_person``,
    ``no_person``, ``video_frames``."""
    src = Path(predictions_json)
    try:
        preds = json.loads(src.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read predictions: {e}", file=str(src)) from None
    if not isinstance(preds, dict):
        raise DataError("expected an object mapping file names to lists of result records", file=str(src))
    where: dict[str, str] = {}
    if image_root is not None:
        for rel in list_images(image_root):
            name = rel.rsplit("/", 1)[-1]
            if name in where:
                raise DataError(f"file name {name} occurs twice ({where[name]}, {rel}); predictions.json cannot "
                                "tell them apart", file=str(image_root))
            where[name] = rel
    out: dict[str, Any] = {}
    counts = {"images": 0, "with_person": 0, "no_person": 0, "video_frames": 0}
    for name, records in preds.items():
        if "#" in name:
            counts["video_frames"] += 1
            continue
        if not isinstance(records, list):
            raise DataError(f"expected a list of result records, got {type(records).__name__}", file=str(src),
                            record=name)
        key = where.get(name) if image_root is not None else name
        if key is None:
            raise DataError(f"no image of this name under {image_root}", file=str(src), record=name)
        counts["images"] += 1
        if not records:
            out[key] = None
            counts["no_person"] += 1
            continue
        best = max(range(len(records)), key=lambda i: (float(records[i].get("score", 0.0)), -i))
        kp = np.asarray(records[best].get("keypoints", []), dtype=np.float64)
        if kp.size != NUM_JOINTS * 3:
            raise DataError(f"{kp.size} keypoint values, expected {NUM_JOINTS} x 3 (a COCO-17 model)",
                            file=str(src), record=f"{name} #{best}", field="keypoints")
        out[key] = kp.reshape(NUM_JOINTS, 3).tolist()
        counts["with_person"] += 1
    dst = Path(out_json)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(out))
    return counts


# ------------------------------------------------------------------------------------------------- the scan
def scan_person_crops(root: str | Path, keypoints: str | Path | None = "keypoints.json", *,
                      subset_list: str | Path | None = None, ratio: float = 1.0,
                      subset_mode: Literal["ordered", "random"] = "ordered", seed: int = 0,
                      extensions: frozenset[str] = IMAGE_EXTS) -> PersonCrops:
    """Scan ``root`` and pair every image with its keypoints (module doc for the layouts and the skip policy).

    ``keypoints``: a ``.json`` file (layout b; a relative path that does not exist as given is looked up under
    ``root``), a folder of ``.npy`` files (layout a) or None. ``subset_list`` / ``ratio`` / ``subset_mode`` /
    ``seed``: the ordered (CFS) or random subset; without a list, ``ratio < 1`` keeps the first part of the sorted
    names (``ordered``) or a seeded random part. A scan that keeps no image is a :class:`DataError`."""
    root = Path(root)
    skipped: dict[str, list[str]] = {}
    on_disk = list_images(root, extensions)
    if subset_list is not None:
        present = set(on_disk)
        wanted = read_subset_list(subset_list, ratio, subset_mode, seed)
        names = [n for n in wanted if n in present]
        if len(names) < len(wanted):
            skipped["missing_image"] = [n for n in wanted if n not in present]
    else:
        names = on_disk
        if ratio < 1.0:
            n = int(len(names) * ratio)
            names = (names[:n] if subset_mode == "ordered"
                     else [names[i] for i in np.sort(np.random.default_rng(seed).choice(len(names), n, False))])

    kps = np.full((len(names), NUM_JOINTS, 3), MISSING, dtype=np.float32)
    keep = np.ones(len(names), dtype=bool)
    missing, bad = [], []
    if keypoints is None:
        source = "no keypoints"
    else:
        kp_path = Path(keypoints)
        if not kp_path.exists() and not kp_path.is_absolute() and (root / kp_path).exists():
            kp_path = root / kp_path
        if kp_path.is_dir():
            source = f"pose files {kp_path}"
            for i, name in enumerate(names):
                f = kp_path / (Path(name).stem + ".npy")
                if not f.is_file():
                    missing.append(i)
                    continue
                pose = _read_npy_pose(f)
                if pose is None:
                    bad.append(i)
                else:
                    kps[i] = pose
        else:
            source = f"keypoints {kp_path}"
            table = read_keypoints_json(kp_path)
            if table and names and not any(n in table for n in names):
                raise DataError(f"none of the {len(table)} entries names an image under {root} (entries look like "
                                f"{next(iter(table))!r}, images like {names[0]!r}); keys must be paths relative to "
                                "the image root", file=str(kp_path))
            for i, name in enumerate(names):
                value = table.get(name)
                if value is None:
                    missing.append(i)
                    continue
                pose = _as_pose(value)
                if pose is None:
                    bad.append(i)
                else:
                    kps[i] = pose
    for reason, idx in (("no_keypoints", missing), ("bad_keypoints", bad)):
        if idx:
            keep[idx] = False
            skipped[reason] = [names[i] for i in idx]
    crops = PersonCrops(root, [n for n, k in zip(names, keep) if k], kps[keep], skipped, source)
    if not len(crops):
        raise DataError(f"no usable person crop: {crops.summary()}", file=str(root))
    return crops
