"""Pedestrian attribute sets: PA-100K, RAP (v1, v2), PETA and Rethinking_of_PAR's ``dataset_all.pkl``
(pretraining.md B.9.5).

Every reader returns an :class:`AttributeDataset`: image paths, an ``(N, A) uint8`` 0/1 label matrix, the
attribute names and index splits (``train``, ``val``, ``trainval``, ``test``). The attributes are the ones the PAR
reference (Rethinking_of_PAR, ``DATASET.LABEL: eval``) trains and scores, in the dataset's published order
(``all_attributes=True`` keeps every column). The reference's optional "group order" is only a permutation of
the same columns (mA does not depend on it); :func:`read_par_pickle` keeps whichever order its pickle stores.

=============  =======================================================================================
set            released layout (MATLAB cell arrays are ``N x 1``; indices are MATLAB 1-based)
=============  =======================================================================================
PA-100K        ``annotation.mat``: ``attributes`` (26 cell), ``{train,val,test}_images_name`` (cells of
               80,000 / 10,000 / 10,000 names), ``{train,val,test}_label`` (``N x 26``); images in ``data/``
               (Rethinking_of_PAR) or ``release_data/release_data/`` (the unzipped release). 26 attributes.
RAP v1         ``RAP_annotation[/RAP_annotation].mat``, struct ``RAP_annotation``: ``imagesname`` (41,585
               cell), ``attribute_eng`` (92 cell), ``label`` (``41585 x 92``), ``partion`` (5 cell, each a
               struct ``train_index``, ``test_index``, ``1 x n``); images in ``RAP_dataset/``. The evaluated
               set is the first **51** attributes (female, age, body shape, role, head, upper / lower body,
               shoes, attachments, actions), as in DeepMAR and Rethinking_of_PAR; no validation split
               (``train`` = ``trainval``, ``val`` empty). HAP's "RAP" result is on RAP v1.
RAP v2         same file name, struct ``RAP_annotation``: ``name`` (84,928 cell), ``attribute`` (152 cell),
               ``data`` (``84928 x 152``), ``selected_attribute`` (the **54** evaluated, 1-based),
               ``partition_attribute`` (5 cell, each a struct ``train_index``, ``val_index``, ``test_index``).
PETA           ``PETA.mat``, struct ``peta``: ``data`` (``19000 x 109``: 4 bookkeeping columns, then the
               105 attribute labels), ``attribute`` (105 cell), ``partion_attribute`` (5 cell, each a struct of
               ``train``, ``val``, ``test`` index columns); images ``images/00001.png`` ... (row ``i`` is
               ``{i+1:05d}.png``). The evaluated set is the first **35** attributes.
PAR pickle     ``dataset_all.pkl`` written by Rethinking_of_PAR's ``format_*.py``: an ``EasyDict`` with
               ``image_name``, ``label``, ``attr_name``, ``label_idx.eval``, ``partition.{train,val,trainval,
               test}`` (an index array, or a list of 5 for RAP / PETA), ``root``; 0-based indices.
=============  =======================================================================================

Splits take partition ``partition`` (default 0, what the reference uses) of the five published ones; HAP trains on
``trainval`` and reports on ``test`` for all three sets.

Labels: the released RAP matrices hold ``2`` where an annotator was unsure; the reference maps it to ``0``
(``attr_label[attr_label == 2] = 0``), and so do these readers (``uncertain_as_negative=True``; the count is
``meta["num_uncertain"]``). Any other value than 0/1 (or 2 when that is off) is a :class:`DataError` naming the
file, the image and the attribute.

MATLAB files are read with ``scipy.io.loadmat(simplify_cells=True)``, so a 1-element cell or index vector is
accepted however MATLAB squeezed it. MATLAB v7.3 (HDF5) files are read with h5py when it is installed; without it
they are refused with a message saying so (the released files are v5 and need only scipy).

``check_images=True`` verifies that every referenced image exists: one listing per image folder (well under a
second for PA-100K's 100,000 images in one folder), never a decode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from humanvision.data.io import safe_unpickle
from humanvision.data.readers.reid import check_images_exist, find_dataset_dir
from humanvision.errors import DataError

__all__ = ["PETA_EVAL_ATTRIBUTES", "RAP1_EVAL_ATTRIBUTES", "AttributeDataset", "read_attributes",
           "read_pa100k", "read_par_pickle", "read_peta", "read_rap"]

#: How many leading attributes the PAR reference evaluates on PETA (of 105) and RAP v1 (of 92).
PETA_EVAL_ATTRIBUTES = 35
RAP1_EVAL_ATTRIBUTES = 51
SPLITS = ("train", "val", "trainval", "test")


@dataclass(eq=False)  # holds arrays: compare fields explicitly
class AttributeDataset:
    """Images with binary attribute labels and index splits.

    Attributes:
        name: ``"pa100k"``, ``"rap"`` (v1), ``"rap2"``, ``"peta"`` (or a PAR pickle's ``description``).
        root: the image folder. paths: one per image. labels: ``(N, A) uint8`` in {0, 1}.
        attributes: the ``A`` names. splits: ``"train"``, ``"val"``, ``"trainval"``, ``"test"`` -> int64
            indices into ``paths`` (``val`` may be empty). meta: provenance (annotation file, partition,
            ``num_uncertain`` labels mapped to 0).
    """

    name: str
    root: Path
    paths: list[Path]
    labels: np.ndarray
    attributes: list[str]
    splits: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, a = len(self.paths), len(self.attributes)
        lab = np.asarray(self.labels)
        if lab.shape != (n, a) or lab.dtype != np.uint8:
            raise DataError(f"labels must be ({n}, {a}) uint8, got {lab.dtype} {lab.shape}", record=self.name,
                            field="labels")
        if lab.size and lab.max() > 1:
            raise DataError("labels must be 0/1", record=self.name, field="labels")
        for k, idx in self.splits.items():
            idx = np.asarray(idx)
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise DataError(f"split indices outside 0..{n - 1}", record=self.name, field=f"splits[{k}]")

    def __len__(self) -> int:
        return len(self.paths)

    def _indices(self, split: str) -> np.ndarray:
        if split not in self.splits:
            raise DataError(f"no split {split!r}; this dataset has {sorted(self.splits)}", record=self.name,
                            field="split")
        return self.splits[split]

    def take(self, split: str) -> tuple[list[Path], np.ndarray]:
        """The paths and ``(n, A)`` labels of one split."""
        idx = self._indices(split)
        return [self.paths[i] for i in idx], self.labels[idx]

    def positive_ratio(self, split: str = "train") -> np.ndarray:
        """Fraction of positives per attribute over ``split`` (``(A,) float64``; the ``r_a`` of the weighted BCE
        ``exp(1 - r_a)`` / ``exp(r_a)``). An empty split is a :class:`DataError`."""
        idx = self._indices(split)
        if len(idx) == 0:
            raise DataError(f"split {split!r} is empty", record=self.name, field="split")
        return self.labels[idx].mean(axis=0, dtype=np.float64)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k} {len(v)}" for k, v in self.splits.items())
        return f"AttributeDataset({self.name!r}, {len(self)} images, {len(self.attributes)} attributes; {sizes})"


# ----------------------------------------------------------------------------------------------- MATLAB files
def _load_mat(path: Path, variables: Sequence[str]) -> dict[str, Any]:
    """Variables of a ``.mat`` file as plain values: structs -> dict, cells -> list / object array, chars -> str,
    numeric -> (squeezed) ndarray. v5 files via scipy, v7.3 (HDF5) via h5py when installed."""
    import scipy.io

    f = str(path)
    if not path.is_file():
        raise DataError("file not found", file=f)
    try:
        mat = scipy.io.loadmat(f, simplify_cells=True, variable_names=list(variables))
    except NotImplementedError:  # scipy: "Please use HDF reader for matlab v7.3 files"
        mat = _load_mat73(path, variables)
    except (OSError, ValueError, TypeError, IndexError, scipy.io.matlab.MatReadError) as e:
        raise DataError(f"not a readable MATLAB file ({type(e).__name__}: {e})", file=f) from None
    for v in variables:
        if v not in mat:
            raise DataError("missing variable", file=f, field=v)
    return {v: mat[v] for v in variables}


def _load_mat73(path: Path, variables: Sequence[str]) -> dict[str, Any]:
    f = str(path)
    try:
        import h5py
    except ImportError:
        raise DataError("a MATLAB v7.3 (HDF5) .mat file: not supported without h5py (pip install h5py, or "
                        "re-save it in MATLAB with save(..., '-v7'))", file=f) from None
    try:
        with h5py.File(f, "r") as h:
            return {v: _h5_value(h, h[v]) for v in variables if v in h}
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise DataError(f"not a readable MATLAB v7.3 (HDF5) file ({type(e).__name__}: {e})", file=f) from None


def _h5_value(h, obj) -> Any:
    """One MATLAB v7.3 value (h5py stores MATLAB arrays transposed; cells hold object references)."""
    import h5py

    def cls_of(o) -> str:
        c = o.attrs.get("MATLAB_class", b"")
        return c.decode() if isinstance(c, bytes) else str(c)

    if isinstance(obj, h5py.Group):  # a struct: one dataset per field
        fields = obj.attrs.get("MATLAB_fields")
        names = ["".join(x.astype(str)) if isinstance(x, np.ndarray) else str(x) for x in fields] \
            if fields is not None else list(obj.keys())
        names = [n for n in names if n in obj]
        array_fields = [n for n in names if isinstance(obj[n], h5py.Dataset)
                        and h5py.check_dtype(ref=obj[n].dtype) is not None and cls_of(obj[n]) != "cell"]
        if array_fields:  # a struct array: every field holds one reference per element
            refs = {n: np.asarray(obj[n][()]).T.ravel(order="F") for n in names}
            count = len(refs[names[0]])
            return [{n: _h5_value(h, h[refs[n][i]]) for n in names} for i in range(count)]
        return {n: _h5_value(h, obj[n]) for n in names}
    cls = cls_of(obj)
    if obj.attrs.get("MATLAB_empty", 0):
        return "" if cls == "char" else np.zeros(0)
    data = np.asarray(obj[()])
    if h5py.check_dtype(ref=obj.dtype) is not None:  # a cell array
        return [_h5_value(h, h[r]) for r in data.T.ravel(order="F")]
    data = data.T
    if cls == "char":
        rows = ["".join(map(chr, row)) for row in np.atleast_2d(data)]
        return rows[0] if len(rows) == 1 else rows
    return np.squeeze(data)


def _strings(value: Any, *, file: str, field: str) -> list[str]:
    """A cell array (or char matrix, or single string) of names as a list of stripped strings."""
    out: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, str):
            out.append(v.strip())
        elif isinstance(v, bytes):
            out.append(v.decode("utf-8", "replace").strip())
        elif isinstance(v, np.ndarray) and v.dtype.kind in "US":
            out.extend(str(x).strip() for x in v.ravel())
        elif isinstance(v, np.ndarray) and v.dtype == object:
            for x in v.ravel():
                walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
        else:
            raise DataError(f"expected a cell array of strings, found a {type(v).__name__} entry "
                            f"({str(v)[:40]!r}) at position {len(out)}", file=file, field=field)

    walk(value)
    for i, s in enumerate(out):
        if not s:
            raise DataError("empty string", file=file, record=f"entry {i}", field=field)
    return out


def _indices(value: Any, n: int, *, file: str, field: str, one_based: bool, what: str = "images") -> np.ndarray:
    """An index vector as 0-based int64, every index checked against ``0..n-1`` (``n`` images / attributes)."""
    a = np.asarray(value)
    if a.dtype == object or a.dtype.kind not in "iuf":
        raise DataError(f"expected a numeric index vector, got dtype {a.dtype}", file=file, field=field)
    a = a.ravel()
    if a.dtype.kind == "f" and not (np.isfinite(a).all() and (a == np.round(a)).all()):
        raise DataError("index vector holds non-integer values", file=file, field=field)
    idx = a.astype(np.int64) - (1 if one_based else 0)
    bad = np.flatnonzero((idx < 0) | (idx >= n))
    if bad.size:
        base = "1-based" if one_based else "0-based"
        raise DataError(f"index {int(a[bad[0]])} ({base}) at position {int(bad[0])} is outside the {n} {what}",
                        file=file, field=field)
    return idx


def _label_matrix(value: Any, n: int, width: int, *, file: str, field: str) -> np.ndarray:
    """A numeric ``(n, width)`` matrix: one row per image, one column per attribute name."""
    a = np.asarray(value)
    if a.dtype == object or a.dtype.kind not in "iufb":
        raise DataError(f"expected a numeric label matrix, got dtype {a.dtype}", file=file, field=field)
    if a.ndim < 2:  # simplify_cells squeezed a 1-row or 1-column matrix
        a = a.reshape(1, -1) if n == 1 else a.reshape(-1, 1)
    if a.ndim != 2 or a.shape[0] != n:
        raise DataError(f"label matrix has shape {a.shape}; expected {n} rows, one per image", file=file,
                        field=field)
    if a.shape[1] != width:
        raise DataError(f"label matrix has {a.shape[1]} columns but the attribute list has {width} names",
                        file=file, field=field)
    return a


def _labels(value: Any, names: Sequence[str], attributes: Sequence[str], *, file: str, field: str,
            uncertain_as_negative: bool, columns: Sequence[int] | None = None) -> tuple[np.ndarray, int]:
    """The ``(N, A)`` 0/1 label matrix (``columns`` of it, when given) as uint8, and the number of uncertain
    (``2``) labels mapped to 0. The width must equal the attribute list's length; a bad value names the image."""
    a = _label_matrix(value, len(names), len(attributes), file=file, field=field)
    if columns is not None:
        a = a[:, np.asarray(columns, dtype=np.int64)]
        attributes = [attributes[c] for c in columns]
    ok = np.isin(a, (0, 1, 2) if uncertain_as_negative else (0, 1))
    if not ok.all():
        i, j = (int(v) for v in np.argwhere(~ok)[0])
        allowed = "0/1 (2 = uncertain, read as 0)" if uncertain_as_negative else "0/1"
        v = a[i, j].item()
        raise DataError(f"label {int(v) if float(v).is_integer() else v} for attribute {attributes[j]!r}; "
                        f"expected {allowed}", file=file, record=f"image {names[i]!r} (row {i})", field=field)
    uncertain = a == 2
    return np.where(uncertain, 0, a).astype(np.uint8), int(uncertain.sum())


def _struct(value: Any, *, file: str, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DataError(f"expected a MATLAB struct, got {type(value).__name__}", file=file, field=field)
    return value


def _get(struct: Mapping[str, Any], names: Sequence[str], *, file: str, field: str) -> tuple[str, Any]:
    for n in names:
        if n in struct:
            return n, struct[n]
    raise DataError(f"missing struct field (expected {' or '.join(names)}; the struct has {sorted(struct)})",
                    file=file, field=field)


def _partition(value: Any, partition: int, keys: Sequence[str], n: int, *, file: str,
               field: str) -> dict[str, np.ndarray]:
    """Partition ``partition`` of a cell of split structs: each of ``keys`` (``train``, ``val``, ``test``) found
    by field name (``train``, ``train_index``, ...) or, failing that, by position."""
    if isinstance(value, dict):  # a single partition, squeezed out of its 1 x 1 cell
        parts = [value]
    elif isinstance(value, list):
        parts = value
    elif isinstance(value, np.ndarray) and value.dtype == object:
        parts = list(value.ravel())
    else:
        raise DataError(f"expected a cell array of split structs, got {type(value).__name__}", file=file,
                        field=field)
    if not 0 <= partition < len(parts):
        raise DataError(f"partition {partition} requested; the file has {len(parts)}", file=file, field=field)
    where = f"{field}[{partition}]"
    part = _struct(parts[partition], file=file, field=where)
    fields = list(part)
    out = {}
    for pos, k in enumerate(keys):
        name = next((f for f in fields if f.lower() in (k, f"{k}_index", f"{k}_idx")), None)
        if name is None:
            if len(fields) != len(keys):
                raise DataError(f"no {k!r} field (the struct has {fields})", file=file, field=where)
            name = fields[pos]
        out[k] = _indices(part[name], n, file=file, field=f"{where}.{name}", one_based=True)
    return out


def _image_dir(root: Path, candidates: Sequence[str], what: str) -> Path:
    for c in candidates:
        if (root / c).is_dir():
            return root / c
    raise DataError(f"missing {what} image folder: expected {' or '.join(c + '/' for c in candidates)}",
                    file=str(root))


def _finish(name: str, image_dir: Path, names: list[str], labels: np.ndarray, attributes: list[str],
            splits: dict[str, np.ndarray], meta: dict[str, Any], check_images: bool) -> AttributeDataset:
    paths = [image_dir / n for n in names]
    if check_images:
        check_images_exist(paths, file=str(meta["annotation"]), records=(f"image {n!r}" for n in names))
    splits = {k: np.asarray(splits[k], dtype=np.int64) for k in SPLITS if k in splits}
    return AttributeDataset(name, image_dir, paths, labels, attributes, splits, meta)


# ---------------------------------------------------------------------------------------------------- readers
def read_pa100k(root: str | Path, *, uncertain_as_negative: bool = True,
                check_images: bool = True) -> AttributeDataset:
    """PA-100K: ``annotation.mat`` + ``data/`` (or ``release_data/release_data/``) in ``root`` or its only
    sub-folder. Splits: train 80,000, val 10,000, test 10,000, trainval = train + val (rows in that order)."""
    r = find_dataset_dir(root, lambda p: (p / "annotation.mat").is_file(), "PA-100K (annotation.mat + data/)")
    f = r / "annotation.mat"
    fs = str(f)
    keys = [f"{s}_{k}" for k in ("images_name", "label") for s in ("train", "val", "test")]
    mat = _load_mat(f, ["attributes", *keys])
    attributes = _strings(mat["attributes"], file=fs, field="attributes")
    names: list[str] = []
    labels, splits, uncertain = [], {}, 0
    for s in ("train", "val", "test"):
        ns = _strings(mat[f"{s}_images_name"], file=fs, field=f"{s}_images_name")
        lab, u = _labels(mat[f"{s}_label"], ns, attributes, file=fs, field=f"{s}_label",
                         uncertain_as_negative=uncertain_as_negative)
        splits[s] = np.arange(len(names), len(names) + len(ns))
        names += ns
        labels.append(lab)
        uncertain += u
    splits["trainval"] = np.concatenate([splits["train"], splits["val"]])
    image_dir = _image_dir(r, ("data", "release_data/release_data", "release_data"), "PA-100K")
    return _finish("pa100k", image_dir, names, np.concatenate(labels), attributes, splits,
                   {"annotation": f, "num_uncertain": uncertain}, check_images)


def _rap_file(p: Path) -> Path | None:
    for c in (p / "RAP_annotation" / "RAP_annotation.mat", p / "RAP_annotation.mat"):
        if c.is_file():
            return c
    return None


def read_rap(root: str | Path, *, partition: int = 0, all_attributes: bool = False,
             uncertain_as_negative: bool = True, check_images: bool = True) -> AttributeDataset:
    """RAP v1 or v2 (told apart by the struct's fields): ``RAP_annotation/RAP_annotation.mat`` (or
    ``RAP_annotation.mat``) + ``RAP_dataset/`` in ``root`` or its only sub-folder.

    v1 keeps the first 51 attributes, v2 the 54 of ``selected_attribute`` (``all_attributes=True``: all 92 /
    152). Splits of partition ``partition``: v1 ``train`` = ``trainval`` (33,268; no val), ``test`` (8,317);
    v2 ``train``, ``val``, ``trainval`` = train + val, ``test``.
    """
    r = find_dataset_dir(root, lambda p: _rap_file(p) is not None,
                         "RAP (RAP_annotation/RAP_annotation.mat + RAP_dataset/)")
    f = _rap_file(r)
    fs = str(f)
    s = _struct(_load_mat(f, ["RAP_annotation"])["RAP_annotation"], file=fs, field="RAP_annotation")
    if "imagesname" in s:  # v1
        name = "rap"
        names = _strings(s["imagesname"], file=fs, field="RAP_annotation.imagesname")
        all_attrs = _strings(_get(s, ("attribute_eng", "attribute"), file=fs, field="RAP_annotation")[1],
                             file=fs, field="RAP_annotation.attribute_eng")
        raw = _get(s, ("label",), file=fs, field="RAP_annotation")[1]
        label_field = "RAP_annotation.label"
        if not all_attributes and len(all_attrs) < RAP1_EVAL_ATTRIBUTES:
            raise DataError(f"{len(all_attrs)} attributes; RAP v1 has 92 of which the first "
                            f"{RAP1_EVAL_ATTRIBUTES} are evaluated", file=fs,
                            field="RAP_annotation.attribute_eng")
        columns = None if all_attributes else list(range(RAP1_EVAL_ATTRIBUTES))
        pname, pval = _get(s, ("partion", "partition"), file=fs, field="RAP_annotation")
        split = _partition(pval, partition, ("train", "test"), len(names), file=fs,
                           field=f"RAP_annotation.{pname}")
        splits = {"train": split["train"], "val": np.zeros(0, np.int64), "trainval": split["train"],
                  "test": split["test"]}
    elif "name" in s and "data" in s:  # v2
        name = "rap2"
        names = _strings(s["name"], file=fs, field="RAP_annotation.name")
        all_attrs = _strings(_get(s, ("attribute",), file=fs, field="RAP_annotation")[1], file=fs,
                             field="RAP_annotation.attribute")
        raw, label_field = s["data"], "RAP_annotation.data"
        columns = None
        if not all_attributes:
            sel = _get(s, ("selected_attribute",), file=fs, field="RAP_annotation")[1]
            columns = _indices(sel, len(all_attrs), file=fs, field="RAP_annotation.selected_attribute",
                               one_based=True, what="attributes").tolist()
        pname, pval = _get(s, ("partition_attribute", "partition", "partion"), file=fs, field="RAP_annotation")
        split = _partition(pval, partition, ("train", "val", "test"), len(names), file=fs,
                           field=f"RAP_annotation.{pname}")
        splits = {**split, "trainval": np.concatenate([split["train"], split["val"]])}
        splits = {k: splits[k] for k in SPLITS}
    else:
        raise DataError(f"neither RAP v1 (imagesname, attribute_eng, label, partion) nor RAP v2 (name, "
                        f"attribute, data, selected_attribute, partition_attribute) fields; found {sorted(s)}",
                        file=fs,
                        field="RAP_annotation")
    labels, uncertain = _labels(raw, names, all_attrs, file=fs, field=label_field,
                                uncertain_as_negative=uncertain_as_negative, columns=columns)
    attributes = all_attrs if columns is None else [all_attrs[c] for c in columns]
    return _finish(name, _image_dir(r, ("RAP_dataset",), "RAP"), names, labels, attributes, splits,
                   {"annotation": f, "partition": partition, "num_uncertain": uncertain}, check_images)


def read_peta(root: str | Path, *, partition: int = 0, all_attributes: bool = False,
              uncertain_as_negative: bool = True, check_images: bool = True) -> AttributeDataset:
    """PETA: ``PETA.mat`` + ``images/`` in ``root`` or its only sub-folder. The first 35 attributes (all 105 with
    ``all_attributes``); splits of partition ``partition``: ``train`` (9,500), ``val`` (1,900), ``trainval``,
    ``test`` (7,600)."""
    r = find_dataset_dir(root, lambda p: (p / "PETA.mat").is_file(), "PETA (PETA.mat + images/)")
    f = r / "PETA.mat"
    fs = str(f)
    s = _struct(_load_mat(f, ["peta"])["peta"], file=fs, field="peta")
    data = np.asarray(_get(s, ("data",), file=fs, field="peta")[1])
    all_attrs = _strings(_get(s, ("attribute",), file=fs, field="peta")[1], file=fs, field="peta.attribute")
    if data.ndim != 2 or data.dtype == object:
        raise DataError(f"expected a numeric (images x (4 + attributes)) matrix, got {data.dtype} {data.shape}",
                        file=fs, field="peta.data")
    names = [f"{i + 1:05d}.png" for i in range(data.shape[0])]
    if data.shape[1] - 4 != len(all_attrs):
        raise DataError(f"label matrix has {data.shape[1] - 4} attribute columns (after the 4 leading ones) but "
                        f"the attribute list has {len(all_attrs)} names", file=fs, field="peta.data")
    if not all_attributes and len(all_attrs) < PETA_EVAL_ATTRIBUTES:
        raise DataError(f"{len(all_attrs)} attributes; PETA has 105 of which the first {PETA_EVAL_ATTRIBUTES} "
                        "are evaluated", file=fs, field="peta.attribute")
    columns = None if all_attributes else list(range(PETA_EVAL_ATTRIBUTES))
    labels, uncertain = _labels(data[:, 4:], names, all_attrs, file=fs, field="peta.data", columns=columns,
                                uncertain_as_negative=uncertain_as_negative)
    pname, pval = _get(s, ("partion_attribute", "partition_attribute", "partion", "partition"), file=fs,
                       field="peta")
    split = _partition(pval, partition, ("train", "val", "test"), len(names), file=fs, field=f"peta.{pname}")
    splits = {"train": split["train"], "val": split["val"],
              "trainval": np.concatenate([split["train"], split["val"]]), "test": split["test"]}
    attributes = all_attrs if columns is None else [all_attrs[c] for c in columns]
    return _finish("peta", _image_dir(r, ("images",), "PETA"), names, labels, attributes, splits,
                   {"annotation": f, "partition": partition, "num_uncertain": uncertain}, check_images)


# ----------------------------------------------------------------------------------- Rethinking_of_PAR pickle
class _EasyDictData(dict):
    """What an ``easydict.EasyDict`` in a pickle becomes: a plain dict. EasyDict mirrors every item in the
    instance ``__dict__``, which the pickle restores with BUILD after the items; that duplicate is ignored."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            for k, v in state.items():
                self.setdefault(k, v)


#: The only globals a PAR pickle may name beyond numpy arrays and builtin containers (``range`` appears as
#: PETA's ``label_idx.extra``); nothing is imported and no code runs.
_PAR_GLOBALS = {("easydict", "EasyDict"): _EasyDictData, ("builtins", "range"): range}


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_plain(x) for x in v) if isinstance(v, list) else tuple(_plain(x) for x in v)
    return v


def _par_split(value: Any, partition: int, n: int, *, file: str, field: str) -> np.ndarray:
    if isinstance(value, (list, tuple)) and value and all(isinstance(x, (np.ndarray, list, tuple, range))
                                                         for x in value):
        if not 0 <= partition < len(value):
            raise DataError(f"partition {partition} requested; the file has {len(value)}", file=file, field=field)
        value, field = value[partition], f"{field}[{partition}]"
    return _indices(np.asarray(value, dtype=np.int64) if isinstance(value, range) else value, n, file=file,
                    field=field, one_based=False)


def read_par_pickle(path: str | Path, *, partition: int = 0, labels: str = "eval",
                    image_root: str | Path | None = None, uncertain_as_negative: bool = True,
                    check_images: bool = True) -> AttributeDataset:
    """Rethinking_of_PAR's ``dataset_all.pkl``, read without executing code (``EasyDict`` becomes ``dict``;
    any other class or callable in the file is refused before it is called).

    Args:
        partition: which of the 5 RAP / PETA partitions (ignored when a split is a single index array).
        labels: ``"eval"`` (the ``label_idx.eval`` columns, in that order, as the reference trains) or ``"all"``.
        image_root: image folder; default the pickle's ``root`` if it exists, else the folder of that name next to
            the pickle (``data/``, ``RAP_dataset/``, ``images/``).

    Splits: whichever of ``train``, ``val``, ``trainval``, ``test`` the file has; a file without ``train``
    (RAP v1) gets ``train`` = ``trainval`` and an empty ``val``.
    """
    p = Path(path)
    f = str(p)
    d = _plain(safe_unpickle(p, extra_globals=_PAR_GLOBALS))
    if not isinstance(d, dict):
        raise DataError(f"expected an EasyDict / dict, got {type(d).__name__}", file=f)
    for k in ("image_name", "label", "attr_name", "partition"):
        if k not in d:
            raise DataError(f"missing key (the file has {sorted(d)})", file=f, field=k)
    names = _strings(d["image_name"], file=f, field="image_name")
    all_attrs = _strings(d["attr_name"], file=f, field="attr_name")
    if labels not in ("eval", "all"):
        raise DataError(f"labels must be 'eval' or 'all', got {labels!r}", file=f, field="labels")
    _label_matrix(d["label"], len(names), len(all_attrs), file=f, field="label")
    columns = None
    label_idx = d.get("label_idx")
    if labels == "eval" and isinstance(label_idx, dict) and label_idx.get("eval") is not None:
        columns = _indices(np.asarray(list(label_idx["eval"])), len(all_attrs), file=f, field="label_idx.eval",
                           one_based=False, what="attributes").tolist()
    lab, uncertain = _labels(d["label"], names, all_attrs, file=f, field="label", columns=columns,
                             uncertain_as_negative=uncertain_as_negative)
    part = d["partition"]
    if not isinstance(part, dict):
        raise DataError(f"expected a dict of splits, got {type(part).__name__}", file=f, field="partition")
    splits = {k: _par_split(part[k], partition, len(names), file=f, field=f"partition.{k}")
              for k in SPLITS if k in part}
    if "trainval" not in splits and "train" in splits:
        splits["trainval"] = np.concatenate([splits["train"], splits.get("val", np.zeros(0, np.int64))])
    if "train" not in splits and "trainval" in splits:  # RAP v1: no validation split
        splits["train"] = splits["trainval"]
        splits.setdefault("val", np.zeros(0, np.int64))
    if "test" not in splits:
        raise DataError(f"no test split (the file has {sorted(part)})", file=f, field="partition")
    splits = {k: splits[k] for k in SPLITS if k in splits}
    if image_root is not None:
        image_dir = Path(image_root)
    else:
        stored = Path(str(d.get("root", "")))
        image_dir = stored if str(stored) not in ("", ".") and stored.is_dir() else p.parent / stored.name
        if check_images and not image_dir.is_dir():
            raise DataError(f"image folder not found: the stored root {str(stored)!r} does not exist and neither "
                            f"does {image_dir}; pass image_root", file=f, field="root")
    attributes = all_attrs if columns is None else [all_attrs[c] for c in columns]
    name = str(d.get("description", "par"))
    return _finish(name, image_dir, names, lab, attributes, splits,
                   {"annotation": p, "partition": partition, "num_uncertain": uncertain}, check_images)


def read_attributes(root: str | Path, **kwargs) -> AttributeDataset:
    """Detect the layout of ``root`` (a folder, its only sub-folder, or a ``.pkl`` / ``.mat`` file): PA-100K
    ``annotation.mat``, ``PETA.mat``, RAP ``RAP_annotation.mat``, or a PAR ``dataset_all.pkl``."""
    r = Path(root)
    if r.is_file():
        if r.suffix == ".pkl":
            return read_par_pickle(r, **kwargs)
        readers = {"annotation.mat": read_pa100k, "PETA.mat": read_peta, "RAP_annotation.mat": read_rap}
        if r.name in readers:
            base = r.parent.parent if r.name == "RAP_annotation.mat" and r.parent.name == "RAP_annotation" \
                else r.parent
            return readers[r.name](base, **kwargs)
        raise DataError("not an attribute annotation file: expected annotation.mat (PA-100K), PETA.mat, "
                        "RAP_annotation.mat or a Rethinking_of_PAR dataset_all.pkl", file=str(r))

    def kind(p: Path) -> str | None:
        if (p / "annotation.mat").is_file():
            return "pa100k"
        if (p / "PETA.mat").is_file():
            return "peta"
        if _rap_file(p) is not None:
            return "rap"
        if (p / "dataset_all.pkl").is_file():
            return "pkl"
        return None

    d = find_dataset_dir(r, lambda p: kind(p) is not None,
                         "pedestrian attribute dataset: expected annotation.mat + data/ (PA-100K), PETA.mat + "
                         "images/, RAP_annotation/RAP_annotation.mat + RAP_dataset/ (RAP v1 / v2), or a "
                         "Rethinking_of_PAR dataset_all.pkl")
    k = kind(d)
    if k == "pkl":
        return read_par_pickle(d / "dataset_all.pkl", **kwargs)
    return {"pa100k": read_pa100k, "peta": read_peta, "rap": read_rap}[k](d, **kwargs)
