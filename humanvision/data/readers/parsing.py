"""Human parsing for HCMoCo's downstream tasks: the 25 Human3.6M part classes, Human3.6M RGB parsing and
NTURGBD-Parsing-4K depth parsing (pretraining.md A.7.2, A.7.3).

**Classes** (:data:`PARSING_CLASSES`): background + 24 parts. Label files store Human3.6M's *raw* part ids
(:data:`PARSING_RAW_IDS`, e.g. 46 = head); readers map them to the class index 0..24 and a raw id outside the
table is a :class:`DataError` naming the file and the id. A horizontal flip swaps the left/right classes of
:data:`PARSING_FLIP_PAIRS_RAW` (:func:`flip_parsing`, :data:`PARSING_FLIP_PERM` for prediction channels).

**Human3.6M parsing** (``HRNet-Semantic-Segmentation/data/human3.6m``)::

    flist_2hz_train.txt     S1, S5, S6, S7, S8 (62,668 lines)  one image path per line, relative to the root,
    flist_2hz_eval.txt      S9, S11 (22,144 lines)             every 25th video frame ("2 Hz")
    protocol_1/rgb/{subject}/{action} {n}.{camera}/{frame:08d}.png     RGB
    protocol_1/seg/{subject}/{action} {n}.{camera}/{frame:08d}.png     8-bit raw part ids

A list line names the RGB image; its label is the same path with the 4th component from the end (``rgb``)
replaced by ``seg``.

**NTURGBD-Parsing-4K** (``HRNet-Semantic-Segmentation/data/nturgbd``)::

    train_list_v2.txt, val_list_v2.txt   full setting (about 1.96k lines each)   lines ``images/{id}.jpg``
    train_list_v3.txt, val_list_v3.txt   20% setting (about 392 lines each)
    images/{id}.jpg                      RGB warped into the 512 x 424 depth frame
    depth/MDepth-{id}.png                16-bit masked depth, millimetres (background 0)
    png_annotation_v2/{id}.png           8-bit raw part ids (the same 25 classes)

``{id}`` is ``SsssCcccPpppRrrrAaaaFfff`` (setup, camera, performer, replication, action, frame counted from 1).
The 20% lists are the first ``int(0.2 * n)`` lines of the full lists (392 of 1,963 in both published splits;
:func:`twenty_percent` reproduces the rule); the reader reads whichever list file the setting names.

Model input of the depth task (:func:`parsing_depth_input`): millimetres -> metres, minus the mean of the nonzero
pixels with the background kept at exactly 0, replicated to 3 channels, no ImageNet normalisation. Training uses
class-weighted cross-entropy with :data:`NTURGBD_PARSING_CLASS_WEIGHTS`.

Samples are :class:`~humanvision.data.Sample` with lazy ``image`` / ``depth`` / ``part_mask`` (the class map, raw
ids already mapped); :meth:`Human36MParsing.load` / :meth:`NturgbdParsing.load` decode one sample and check that
its images agree in size.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from humanvision.data.io import read_depth, read_image, read_mask
from humanvision.data.readers.base import Reader
from humanvision.data.sample import LazyImage, Sample
from humanvision.errors import DataError

__all__ = [
    "NTURGBD_PARSING_CLASS_WEIGHTS",
    "PARSING_CLASSES",
    "PARSING_FLIP_PAIRS",
    "PARSING_FLIP_PAIRS_RAW",
    "PARSING_FLIP_PERM",
    "PARSING_IGNORE",
    "PARSING_RAW_IDS",
    "SYNTH_PART_TO_CLASS",
    "Human36MParsing",
    "NturgbdParsing",
    "center_depth",
    "class_to_raw",
    "flip_parsing",
    "parse_ntu_id",
    "parsing_depth_input",
    "raw_to_class",
    "read_h36m_parsing",
    "read_nturgbd_parsing",
    "read_parsing_label",
    "twenty_percent",
]

# ------------------------------------------------------------------------------------------------- classes
#: The 25 parsing classes, in class-index order (index 0..24).
PARSING_CLASSES: tuple[str, ...] = (
    "background", "right_hip", "right_knee", "right_foot", "left_hip", "left_knee", "left_foot", "left_shoulder",
    "left_elbow", "left_hand", "right_shoulder", "right_elbow", "right_hand", "crotch", "right_thigh", "right_calf",
    "left_thigh", "left_calf", "lower_spine", "upper_spine", "head", "left_arm", "left_forearm", "right_arm",
    "right_forearm",
)
#: Human3.6M raw part id of each class (``PARSING_RAW_IDS[c]`` is stored in label files for class ``c``).
PARSING_RAW_IDS: tuple[int, ...] = (0, 1, 2, 3, 6, 7, 8, 17, 18, 19, 25, 26, 27, 32, 33, 34, 38, 39, 43, 44, 46, 49,
                                    50, 56, 58)
#: Left/right pairs swapped by a horizontal flip, in raw ids.
PARSING_FLIP_PAIRS_RAW: tuple[tuple[int, int], ...] = ((1, 6), (2, 7), (3, 8), (17, 25), (18, 26), (19, 27),
                                                       (33, 38), (34, 39), (49, 56), (50, 58))
#: The same pairs as class indices.
PARSING_FLIP_PAIRS: tuple[tuple[int, int], ...] = tuple((PARSING_RAW_IDS.index(a), PARSING_RAW_IDS.index(b))
                                                        for a, b in PARSING_FLIP_PAIRS_RAW)


def _flip_perm() -> tuple[int, ...]:
    perm = list(range(len(PARSING_CLASSES)))
    for a, b in PARSING_FLIP_PAIRS:
        perm[a], perm[b] = b, a
    return tuple(perm)


#: Class permutation of a horizontal flip: ``flipped_class = PARSING_FLIP_PERM[class]`` (and, for a flip test,
#: ``logits_of_flipped_image[:, PARSING_FLIP_PERM]`` puts every channel back on its own class).
PARSING_FLIP_PERM: tuple[int, ...] = _flip_perm()
#: Label value ignored by the loss (padding of random crops).
PARSING_IGNORE = 255
#: Class-weighted CE weights of the NTURGBD-Parsing-4K depth task (A.7.3), in class-index order.
NTURGBD_PARSING_CLASS_WEIGHTS: tuple[float, ...] = (
    1.448, 49.234, 49.483, 48.030, 49.247, 49.492, 48.018, 49.704, 50.052, 49.369, 49.694, 50.090, 49.425, 49.459,
    45.846, 47.156, 45.868, 47.197, 44.167, 42.789, 44.341, 48.632, 48.873, 48.644, 49.004,
)

#: The synthetic world's body parts (:data:`humanvision.data.synthetic.body.PART_NAMES`, the ids of ``View.parts``)
#: -> the parsing class each part maps to *coarsely* (the class covering most of the part). The synthetic writers
#: refine the parts that span several classes from the body geometry (the position of each pixel's surface point
#: along its bone; ``humanvision.data.synthetic.hcmoco.parsing_labels``):
#:
#: ===============  =====================================  ==========================================
#: part             coarse class                           refined classes
#: ===============  =====================================  ==========================================
#: head, neck       head                                   head (the world's neck is part of the head)
#: torso            lower_spine                            crotch, L/R hip, lower/upper spine, L/R shoulder
#: upper_arm        arm                                    shoulder, arm, elbow
#: lower_arm        forearm                                elbow, forearm
#: hand             hand                                   hand
#: upper_leg        thigh                                  hip, thigh, knee
#: lower_leg        calf                                   knee, calf
#: foot             foot                                   foot
#: ===============  =====================================  ==========================================
#:
#: Coarsely the world expresses 13 of the 25 classes (background, head, spine, and per side arm, forearm, hand,
#: thigh, calf, foot); with the refinement all 25.
SYNTH_PART_TO_CLASS: dict[str, str] = {
    "background": "background", "head": "head", "neck": "head", "torso": "lower_spine",
    **{f"{s}_{part}": f"{s}_{cls}" for s in ("left", "right") for part, cls in (
        ("upper_arm", "arm"), ("lower_arm", "forearm"), ("hand", "hand"), ("upper_leg", "thigh"),
        ("lower_leg", "calf"), ("foot", "foot"))},
}

_RAW_TO_CLASS = np.full(256, -1, dtype=np.int16)
_RAW_TO_CLASS[list(PARSING_RAW_IDS)] = np.arange(len(PARSING_RAW_IDS))


def raw_to_class(raw: np.ndarray, *, file: str | None = None) -> np.ndarray:
    """Map a label image of raw Human3.6M part ids to class indices ``(H, W) uint8`` (0..24).

    A value that is not in :data:`PARSING_RAW_IDS` raises :class:`DataError` naming ``file`` and the ids.
    """
    a = np.asarray(raw)
    if a.dtype.kind not in "iub":
        raise DataError(f"label image must hold integers, got {a.dtype}", file=file, field="label")
    bad = (a < 0) | (a > 255)
    inside = np.where(bad, 0, a).astype(np.int64)
    out = _RAW_TO_CLASS[inside]
    bad |= out < 0
    if bad.any():
        ids = sorted({int(v) for v in np.unique(a[bad])})
        raise DataError(f"label id(s) {ids} are not Human3.6M part ids (expected one of {list(PARSING_RAW_IDS)})",
                        file=file, field="label")
    return out.astype(np.uint8)


def class_to_raw(labels: np.ndarray) -> np.ndarray:
    """Class indices (0..24) -> raw Human3.6M part ids ``uint8`` (what the label files store)."""
    a = np.asarray(labels)
    if a.size and (a.min() < 0 or a.max() >= len(PARSING_RAW_IDS)):
        raise DataError(f"class indices must be within 0..{len(PARSING_RAW_IDS) - 1}, got {a.min()}..{a.max()}",
                        field="label")
    return np.asarray(PARSING_RAW_IDS, dtype=np.uint8)[a]


def flip_parsing(label: np.ndarray) -> np.ndarray:
    """Flip a class map ``(..., H, W)`` horizontally and swap its left/right classes; other values (e.g.
    :data:`PARSING_IGNORE`) are kept. An involution: ``flip_parsing(flip_parsing(x)) == x``."""
    flipped = np.asarray(label)[..., ::-1]
    out = flipped.copy()
    cls = (flipped >= 0) & (flipped < len(PARSING_FLIP_PERM))
    out[cls] = np.asarray(PARSING_FLIP_PERM)[flipped[cls].astype(np.int64)]
    return out


def read_parsing_label(path: str | Path) -> np.ndarray:
    """Read a raw-id label PNG as a class map ``(H, W) uint8`` (the loader of the readers' ``part_mask``)."""
    return raw_to_class(read_mask(path), file=str(path))


# ------------------------------------------------------------------------------------------------- depth input
def center_depth(depth_mm: np.ndarray) -> np.ndarray:
    """``(H, W)`` millimetres -> metres minus the mean of the nonzero pixels; the background stays exactly 0.

    The depth normalisation of HCMoCo's NTU pre-training (A.2.3) and of the depth parsing task (A.7.3); a map
    with no foreground is returned as zeros.
    """
    d = np.asarray(depth_mm, dtype=np.float32) / 1000.0
    fg = d != 0
    out = np.zeros_like(d)
    if fg.any():
        out[fg] = d[fg] - d[fg].mean(dtype=np.float64)
    return out


def parsing_depth_input(depth_mm: np.ndarray) -> np.ndarray:
    """The depth-parsing network input ``(3, H, W) float32``: :func:`center_depth` replicated to 3 channels."""
    return np.repeat(center_depth(depth_mm)[None], 3, axis=0)


# ------------------------------------------------------------------------------------------------- list files
def _read_list(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise DataError("list file not found", file=str(path))
    lines = path.read_text().splitlines()
    return [(n, ln.strip()) for n, ln in enumerate(lines, 1) if ln.strip()]


def twenty_percent(entries: list) -> list:
    """The 20% setting of NTURGBD-Parsing-4K from a full list: its first ``int(0.2 * len(entries))`` entries."""
    return list(entries[: int(0.2 * len(entries))])


def _check_sizes(a: np.ndarray, a_path: str, a_name: str, b: np.ndarray, b_path: str, b_name: str,
                 record: str) -> None:
    if a.shape[:2] != b.shape[:2]:
        (ha, wa), (hb, wb) = a.shape[:2], b.shape[:2]
        raise DataError(f"{a_name} {a_path} is {wa}x{ha} but {b_name} {b_path} is {wb}x{hb} (W x H); they must "
                        "be pixel-aligned", file=a_path, record=record, field=a_name)


# ------------------------------------------------------------------------------------------------- Human3.6M
_H36M_LISTS = {"train": "flist_2hz_train.txt", "eval": "flist_2hz_eval.txt", "val": "flist_2hz_eval.txt",
               "test": "flist_2hz_eval.txt"}


class Human36MParsing(Reader):
    """Human3.6M RGB human parsing (layout in the module docstring); one sample per list line.

    Args:
        root: the folder holding the list files and ``protocol_1/``.
        split: ``"train"`` (``flist_2hz_train.txt``) or ``"eval"`` (``flist_2hz_eval.txt``; ``"val"``/``"test"``
            are aliases).
        list_file: read this list instead (paths in it are still relative to ``root``).

    Samples: lazy ``image`` (RGB), lazy ``part_mask`` (class map ``(H, W) uint8``, raw ids mapped),
    ``identity`` = subject, ``image_id`` = ``"{subject}/{sequence}/{frame}.png"``, ``attributes``
    ``{subject, sequence, frame}``; ``meta``: ``label_path``, ``list_line``.
    """

    def __init__(self, root: str | Path, split: str = "train", list_file: str | Path | None = None) -> None:
        self.root = Path(root)
        if list_file is None:
            if split not in _H36M_LISTS:
                raise DataError(f"unknown split {split!r}; expected 'train' or 'eval'", file=str(self.root),
                                field="split")
            list_file = self.root / _H36M_LISTS[split]
        self.source = f = str(list_file)
        self.split = split
        self.records: list[tuple[str, str, str, int]] = []
        for n, line in _read_list(Path(f)):
            parts = line.split("/")
            if len(parts) < 4 or parts[-4] != "rgb" or not parts[-1]:
                raise DataError(f"expected '.../rgb/<subject>/<sequence>/<frame>.png', got {line!r}", file=f,
                                record=f"line {n}")
            label = "/".join(parts[:-4] + ["seg"] + parts[-3:])
            self.records.append((line, label, "/".join(parts[-3:]), n))

    def __len__(self) -> int:
        return len(self.records)

    def _get(self, index: int) -> Sample:
        img, lab, name, line = self.records[index]
        subject, sequence, frame = name.split("/")
        img_path, lab_path = str(self.root / img), str(self.root / lab)
        return Sample(image=LazyImage(img_path, read_image), image_path=img_path,
                      part_mask=LazyImage(lab_path, read_parsing_label), identity=subject,
                      attributes={"subject": subject, "sequence": sequence, "frame": Path(frame).stem},
                      source=self.source, index=index, image_id=name,
                      meta={"label_path": lab_path, "list_line": line})

    def load(self, index: int) -> dict[str, np.ndarray]:
        """Decode sample ``index``: ``{"image": (H, W, 3) uint8, "label": (H, W) uint8 classes}``; an image and a
        label of different sizes raise :class:`DataError` naming both files and sizes."""
        s = self[index]
        image, label = s.load_image(), s.load_masks()[0]
        _check_sizes(label, s.meta["label_path"], "label", image, s.image_path, "image", f"sample {s.image_id}")
        return {"image": image, "label": label}


def read_h36m_parsing(root: str | Path, split: str = "train") -> Human36MParsing:
    """:class:`Human36MParsing` of ``root`` for ``split`` (``"train"`` or ``"eval"``)."""
    return Human36MParsing(root, split)


# ------------------------------------------------------------------------------------------------- Parsing-4K
_NTU_ID = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})F(\d{3,})")
_NTU_SUBSETS = {"full": "v2", "20%": "v3"}


def parse_ntu_id(frame_id: str) -> dict[str, int]:
    """``"S001C002P003R001A004F060"`` -> ``{setup: 1, camera: 2, performer: 3, replication: 1, action: 4,
    frame: 60}`` (frame counted from 1); anything else raises :class:`DataError`."""
    m = _NTU_ID.fullmatch(frame_id)
    if m is None:
        raise DataError(f"{frame_id!r} is not an NTU frame id SsssCcccPpppRrrrAaaaFfff", field="id")
    return dict(zip(("setup", "camera", "performer", "replication", "action", "frame"), map(int, m.groups())))


class NturgbdParsing(Reader):
    """NTURGBD-Parsing-4K depth (and RGB) human parsing (layout in the module docstring).

    Args:
        root: the folder holding the list files, ``images/``, ``depth/`` and ``png_annotation_v2/``.
        split: ``"train"`` or ``"val"``.
        subset: ``"full"`` (``*_list_v2.txt``) or ``"20%"`` (``*_list_v3.txt``).
        with_rgb: give each sample its lazy RGB ``image`` too (the ``images/`` frame named by the list).

    Samples: lazy ``depth`` (mm), lazy ``part_mask`` (class map), lazy ``image`` (with ``with_rgb``),
    ``image_id`` = the frame id, ``identity`` = performer, ``attributes`` = :func:`parse_ntu_id` of the id;
    ``meta``: ``label_path``, ``list_line``.
    """

    def __init__(self, root: str | Path, split: str = "train", subset: str = "full", with_rgb: bool = True) -> None:
        self.root = Path(root)
        if split not in ("train", "val"):
            raise DataError(f"unknown split {split!r}; expected 'train' or 'val'", file=str(self.root),
                            field="split")
        if subset not in _NTU_SUBSETS:
            raise DataError(f"unknown subset {subset!r}; expected 'full' or '20%'", file=str(self.root),
                            field="subset")
        self.split, self.subset, self.with_rgb = split, subset, bool(with_rgb)
        self.source = f = str(self.root / f"{split}_list_{_NTU_SUBSETS[subset]}.txt")
        self.records: list[tuple[str, str, dict[str, int], int]] = []
        seen: set[str] = set()
        for n, line in _read_list(Path(f)):
            rel = Path(line)
            try:
                attrs = parse_ntu_id(rel.stem)
            except DataError as e:
                raise DataError(str(e), file=f, record=f"line {n}") from None
            if rel.stem in seen:
                raise DataError(f"frame {rel.stem} is listed twice", file=f, record=f"line {n}")
            seen.add(rel.stem)
            self.records.append((line, rel.stem, attrs, n))

    def __len__(self) -> int:
        return len(self.records)

    def _paths(self, index: int) -> tuple[str, str, str]:
        line, fid, _, _ = self.records[index]
        rgb = self.root / line
        return (str(rgb), str(rgb.parent.parent / "depth" / f"MDepth-{fid}.png"),
                str(rgb.parent.parent / "png_annotation_v2" / f"{fid}.png"))

    def _get(self, index: int) -> Sample:
        line, fid, attrs, _ = self.records[index]
        rgb, depth, label = self._paths(index)
        return Sample(image=LazyImage(rgb, read_image) if self.with_rgb else None,
                      image_path=rgb if self.with_rgb else None, depth=LazyImage(depth, read_depth),
                      depth_path=depth, part_mask=LazyImage(label, read_parsing_label), identity=attrs["performer"],
                      attributes=dict(attrs), source=self.source, index=index, image_id=fid,
                      meta={"label_path": label, "list_line": line})

    def load(self, index: int) -> dict[str, np.ndarray]:
        """Decode sample ``index``: ``{"depth": (H, W) float32 mm, "label": (H, W) uint8 classes}`` and, with
        ``with_rgb``, ``"image": (H, W, 3) uint8``. A depth map whose size differs from its RGB frame or its label
        raises :class:`DataError` naming both files and sizes."""
        s = self[index]
        depth, label = s.load_depth(), s.load_masks()[0]
        record = f"frame {s.image_id}"
        _check_sizes(depth, s.depth_path, "depth", label, s.meta["label_path"], "label", record)
        out = {"depth": depth, "label": label}
        if self.with_rgb:
            image = s.load_image()
            _check_sizes(depth, s.depth_path, "depth", image, s.image_path, "RGB frame", record)
            out["image"] = image
        return out


def read_nturgbd_parsing(root: str | Path, split: str = "train", subset: str = "full",
                         with_rgb: bool = True) -> NturgbdParsing:
    """:class:`NturgbdParsing` of ``root`` for ``split`` (``"train"``/``"val"``) and ``subset``
    (``"full"``/``"20%"``)."""
    return NturgbdParsing(root, split, subset, with_rgb)
