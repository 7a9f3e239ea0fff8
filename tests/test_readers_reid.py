"""Readers for HAP's downstream sets: person re-id (Market-1501, MSMT17), pedestrian attributes (PA-100K, RAP v1/v2,
PETA, Rethinking_of_PAR's dataset_all.pkl) and text-to-image re-id (CUHK-PEDES, ICFG-PEDES, RSTPReid).

Every fixture is written here in the released layout as its documentation describes it (file-name patterns, list
files, MATLAB variable / struct / cell conventions as ``N x 1`` object arrays, a v7.3 HDF5 file laid out the way
MATLAB writes one, a pickled ``easydict.EasyDict`` from a stand-in class, the caption JSON files); none is produced
by a humanvision writer.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from humanvision.data.readers import (
    AttributeDataset,
    ReIDItem,
    Vocabulary,
    read_attributes,
    read_cuhk_pedes,
    read_icfg_pedes,
    read_market1501,
    read_msmt17,
    read_pa100k,
    read_par_pickle,
    read_peta,
    read_rap,
    read_reid,
    read_rstpreid,
    read_text_reid,
    simple_tokenize,
)
from humanvision.data.readers.text_reid import LGUR_CUHK_EXCLUDED_IDS
from humanvision.errors import DataError
from humanvision.metrics.reid import evaluate_reid

RNG = np.random.default_rng(7)
_JPEG = cv2.imencode(".jpg", np.full((8, 4, 3), 128, np.uint8))[1].tobytes()


def _img(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_JPEG)
    return path


def _raises(fn, *parts: str) -> DataError:
    """Call ``fn``; it must raise a DataError whose message contains every part (file, record, field)."""
    with pytest.raises(DataError) as e:
        fn()
    for p in parts:
        assert p in str(e.value), f"{p!r} not in {str(e.value)!r}"
    return e.value


def _cell(strings) -> np.ndarray:
    """A MATLAB ``N x 1`` cell array of strings, as scipy.io.savemat writes one."""
    c = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        c[i, 0] = s
    return c


def _cell_of(items, shape) -> np.ndarray:
    c = np.empty(shape, dtype=object)
    for i, x in enumerate(items):
        c.flat[i] = x
    return c


# ================================================================================================= Market-1501
MARKET = {
    "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c3s3_077419_03.jpg",
                           "0010_c6s4_002452_02.jpg", "-1_c1s1_000401_03.jpg"],
    "query": ["0001_c1s1_001051_00.jpg", "0003_c4s1_002101_00.jpg"],
    "bounding_box_test": ["0001_c1s1_001101_02.jpg", "0001_c2s1_000851_01.jpg", "0000_c3s1_000551_05.jpg",
                          "-1_c1s1_001176_04.jpg", "0003_c5s1_020001_03.jpg", "0003_c4s1_002126_01.jpg"],
}


def _market(root: Path) -> Path:
    d = root / "Market-1501-v15.09.15"
    for sub, names in MARKET.items():
        for n in names:
            _img(d / sub / n)
        (d / sub / "Thumbs.db").write_bytes(b"\0" * 16)  # the release ships these
    return d


def test_market1501_layout_junk_distractors_and_relabel(tmp_path):
    d = _market(tmp_path)
    ds = read_reid(tmp_path)  # the release unpacked one level down is found
    assert ds.name == "market1501" and ds == read_market1501(d)
    # train: sorted names, junk dropped, camera 0-based
    assert [(it.path.name, it.pid, it.camid) for it in ds.train] == [
        ("0002_c1s1_000451_03.jpg", 2, 0), ("0002_c2s1_000301_01.jpg", 2, 1), ("0007_c3s3_077419_03.jpg", 7, 2),
        ("0010_c6s4_002452_02.jpg", 10, 5)]
    assert all(it.path.parent == d / "bounding_box_train" and it.path.is_file() for it in ds.train)
    labels, k = ds.train_labels()
    assert k == ds.num_train_ids == 3 and labels.tolist() == [0, 0, 1, 2] and labels.dtype == np.int64
    assert [(it.pid, it.camid) for it in ds.query] == [(1, 0), (3, 3)]
    # gallery keeps junk (-1) and distractors (0), in sorted-name order
    g = {it.path.name: (it.pid, it.camid) for it in ds.gallery}
    assert len(ds.gallery) == 6 and g["-1_c1s1_001176_04.jpg"] == (-1, 0) and g["0000_c3s1_000551_05.jpg"] == (0, 2)
    assert sorted(it.pid for it in ds.gallery) == [-1, 0, 1, 1, 3, 3]
    assert isinstance(ds.train[0], ReIDItem) and "train 4 images / 3 ids" in repr(ds)

    # with the metric: the junk image ranked first and the same-camera match are removed, the distractor counts
    q = np.array([[it.pid for it in ds.query], [it.camid for it in ds.query]])
    gp = np.array([it.pid for it in ds.gallery])
    gc = np.array([it.camid for it in ds.gallery])
    dist = np.ones((2, len(gp)))
    dist[:, gp == -1] = 0.0  # junk nearest for both queries
    dist[0, (gp == 1) & (gc == 0)] = 0.1  # same id, same camera as query 0: removed
    dist[0, gp == 0] = 0.2  # a distractor before the true match: a real miss at rank 1
    dist[0, (gp == 1) & (gc == 1)] = 0.3
    dist[1, (gp == 3) & (gc == 4)] = 0.1
    r = evaluate_reid(dist, q[0], gp, q[1], gc)
    assert r.num_valid_queries == 2 and r.rank1 == pytest.approx(50.0) and r.mAP == pytest.approx(75.0)


def test_market1501_errors(tmp_path):
    d = _market(tmp_path)
    _img(d / "query" / "frame_0001.jpg")
    _raises(lambda: read_market1501(d), str(d / "query"), "frame_0001.jpg", "malformed image name")
    os.remove(d / "query" / "frame_0001.jpg")
    _img(d / "query" / "0004_c0s1_000001_00.jpg")
    _raises(lambda: read_market1501(d), "0004_c0s1_000001_00.jpg", "field camera", "numbered from 1")
    os.remove(d / "query" / "0004_c0s1_000001_00.jpg")
    for f in (d / "query").iterdir():
        f.unlink()
    _raises(lambda: read_market1501(d), str(d / "query"), "no .jpg images")
    (d / "query").rmdir()
    _raises(lambda: read_market1501(d), str(d), "Market-1501 (bounding_box_train/, query/, bounding_box_test/)")
    _raises(lambda: read_reid(tmp_path), "expected Market-1501 layout", "MSMT17 (list_train.txt")
    _raises(lambda: read_reid(tmp_path / "nope"), "nope", "not found")


# ======================================================================================================= MSMT17
def _msmt(root: Path, v2: bool = False) -> Path:
    d = root / ("MSMT17_V2" if v2 else "MSMT17_V1")
    tr, te = ("mask_train_v2", "mask_test_v2") if v2 else ("train", "test")
    lists = {
        "list_train.txt": (tr, [("0000/0000_000_01_0303morning_0015_0.jpg", 0),
                                ("0000/0000_001_05_0303morning_0036_1.jpg", 0),
                                ("0001/0001_000_15_0303noon_1031_0.jpg", 1)]),
        "list_val.txt": (tr, [("0001/0001_004_02_0303noon_1087_1.jpg", 1),
                              ("0002/0002_000_07_0113afternoon_0400_0.jpg", 2)]),
        "list_query.txt": (te, [("0000/0000_000_12_0303morning_0034_0.jpg", 0)]),
        "list_gallery.txt": (te, [("0000/0000_003_03_0303morning_0040_1.jpg", 0),
                                  ("0001/0001_000_09_0113morning_0722_0.jpg", 1)]),
    }
    for name, (sub, rows) in lists.items():
        for rel, _ in rows:
            _img(d / sub / rel)
        (d / name).write_text("".join(f"{rel} {pid}\n" for rel, pid in rows))
    return d


def test_msmt17_v1_v2_and_val_merge(tmp_path):
    d = _msmt(tmp_path / "a")
    ds = read_reid(tmp_path / "a")
    assert ds.name == "msmt17" and len(ds.train) == 5 and ds.num_train_ids == 3
    assert [(it.pid, it.camid) for it in ds.train] == [(0, 0), (0, 4), (1, 14), (1, 1), (2, 6)]
    assert ds.train[0].path == d / "train" / "0000" / "0000_000_01_0303morning_0015_0.jpg"
    assert [(it.pid, it.camid) for it in ds.query] == [(0, 11)] and ds.query[0].path.parent.parent == d / "test"
    assert [(it.pid, it.camid) for it in ds.gallery] == [(0, 2), (1, 8)]
    assert ds.train_labels()[0].tolist() == [0, 0, 1, 1, 2]
    no_val = read_msmt17(d, merge_val=False)
    assert len(no_val.train) == 3 and no_val.num_train_ids == 2 and no_val.gallery == ds.gallery
    v2 = read_msmt17(_msmt(tmp_path / "b", v2=True))
    assert v2.train[0].path.parent.parent.name == "mask_train_v2"
    assert [(it.pid, it.camid) for it in v2.train] == [(it.pid, it.camid) for it in ds.train]


def test_msmt17_errors(tmp_path):
    d = _msmt(tmp_path)
    lf = d / "list_gallery.txt"
    good = lf.read_text()
    os.remove(d / "test" / "0001" / "0001_000_09_0113morning_0722_0.jpg")
    _raises(lambda: read_msmt17(d), str(lf), "0001/0001_000_09_0113morning_0722_0.jpg", "image not found")
    assert len(read_msmt17(d, check_images=False).gallery) == 2  # checked only on request
    _img(d / "test" / "0001" / "0001_000_09_0113morning_0722_0.jpg")
    lf.write_text(good + "0002/0002_000_04_x.jpg two\n")
    _raises(lambda: read_msmt17(d), str(lf), "line 3", "field pid", "'two' is not an integer")
    lf.write_text(good + "0002/0002_000_04_x.jpg\n")
    _raises(lambda: read_msmt17(d), str(lf), "line 3", "expected 'relative/path.jpg pid'")
    lf.write_text(good + "0002/0002_cam4.jpg 2\n")
    _raises(lambda: read_msmt17(d), str(lf), "line 3", "malformed image name '0002/0002_cam4.jpg'")
    lf.write_text(good)
    os.rename(d / "test", d / "testing")
    _raises(lambda: read_msmt17(d), str(d), "missing image folder", "test/ or mask_test_v2/")


# ===================================================================================================== PA-100K
PA_ATTRS = ["Female", "AgeOver60", "Age18-60", "AgeLess18", "Front", "Side", "Back", "Hat", "Glasses", "HandBag",
            "ShoulderBag", "Backpack", "HoldObjectsInFront", "ShortSleeve", "LongSleeve", "UpperStride",
            "UpperLogo", "UpperPlaid", "UpperSplice", "LowerStripe", "LowerPattern", "LongCoat", "Trousers",
            "Shorts", "Skirt&Dress", "boots"]


def _pa100k_vars(n=(5, 1, 3)):
    names = [f"{i:06d}.jpg" for i in range(1, sum(n) + 1)]
    labels = RNG.integers(0, 2, (sum(n), 26)).astype(np.float64)  # MATLAB double
    out, s = {"attributes": _cell(PA_ATTRS)}, 0
    for split, k in zip(("train", "val", "test"), n):
        out[f"{split}_images_name"] = _cell(names[s:s + k])
        out[f"{split}_label"] = labels[s:s + k]
        s += k
    return out, names, labels.astype(np.uint8)


def _pa100k(root: Path, image_dir: str = "data", **override):
    v, names, labels = _pa100k_vars()
    v.update(override)
    root.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / "annotation.mat", v)
    for n in names:
        _img(root / image_dir / n)
    return v, names, labels


def test_pa100k(tmp_path):
    _, names, labels = _pa100k(tmp_path / "PA100k")
    ds = read_attributes(tmp_path)
    assert isinstance(ds, AttributeDataset) and ds.name == "pa100k" and ds.attributes == PA_ATTRS
    assert [p.name for p in ds.paths] == names and ds.root == tmp_path / "PA100k" / "data"
    assert ds.labels.dtype == np.uint8 and ds.labels.shape == (9, 26)
    np.testing.assert_array_equal(ds.labels, labels)
    assert {k: v.tolist() for k, v in ds.splits.items()} == {
        "train": [0, 1, 2, 3, 4], "val": [5], "test": [6, 7, 8], "trainval": [0, 1, 2, 3, 4, 5]}
    np.testing.assert_allclose(ds.positive_ratio(), labels[:5].mean(0))
    np.testing.assert_allclose(ds.positive_ratio("trainval"), labels[:6].sum(0) / 6)
    paths, lab = ds.take("test")
    assert [p.name for p in paths] == names[6:] and (lab == labels[6:]).all()
    _raises(lambda: ds.positive_ratio("dev"), "no split 'dev'")
    assert "9 images, 26 attributes; train 5, val 1, trainval 6, test 3" in repr(ds)
    _raises(lambda: AttributeDataset("x", ds.root, ds.paths, ds.labels[:, :3], ds.attributes, {}),
            "labels must be (9, 26) uint8")
    _raises(lambda: AttributeDataset("x", ds.root, ds.paths, ds.labels, ds.attributes, {"test": np.array([9])}),
            "field splits[test]", "split indices outside 0..8")
    # the unzipped release: release_data/release_data/
    _pa100k(tmp_path / "rel", image_dir="release_data/release_data")
    assert read_pa100k(tmp_path / "rel").root == tmp_path / "rel" / "release_data" / "release_data"


def test_pa100k_errors(tmp_path):
    d = tmp_path / "p"
    v, names, _ = _pa100k(d)
    f = str(d / "annotation.mat")
    scipy.io.savemat(d / "annotation.mat", {**v, "attributes": _cell(PA_ATTRS[:-1])})
    _raises(lambda: read_pa100k(d), f, "field train_label", "26 columns but the attribute list has 25 names")
    bad = v["test_label"].copy()
    bad[1, 7] = 3
    scipy.io.savemat(d / "annotation.mat", {**v, "test_label": bad})
    _raises(lambda: read_pa100k(d), f, "image '000008.jpg' (row 1)", "field test_label", "attribute 'Hat'",
            "label 3")
    bad[1, 7] = 2  # "uncertain": negative, as the PAR reference reads it; refused on request
    scipy.io.savemat(d / "annotation.mat", {**v, "test_label": bad})
    ds = read_pa100k(d)
    assert ds.labels[7, 7] == 0 and ds.meta["num_uncertain"] == 1
    _raises(lambda: read_pa100k(d, uncertain_as_negative=False), "label 2", "expected 0/1")
    bad[1, 7] = 0.5
    scipy.io.savemat(d / "annotation.mat", {**v, "test_label": bad})
    _raises(lambda: read_pa100k(d), "label 0.5", "000008.jpg")
    scipy.io.savemat(d / "annotation.mat", {**v, "val_label": np.zeros((2, 26))})
    _raises(lambda: read_pa100k(d), "field val_label", "expected 1 rows, one per image")
    w = dict(v)
    del w["test_images_name"]
    scipy.io.savemat(d / "annotation.mat", w)
    _raises(lambda: read_pa100k(d), f, "field test_images_name", "missing variable")
    scipy.io.savemat(d / "annotation.mat", v)
    os.remove(d / "data" / names[3])
    _raises(lambda: read_pa100k(d), f, "image '000004.jpg'", "image not found")
    assert len(read_pa100k(d, check_images=False)) == 9
    (d / "annotation.mat").write_bytes(b"not a mat file at all" * 8)
    _raises(lambda: read_pa100k(d), f, "not a readable MATLAB file")


# ---------------------------------------------------------------------------------------------- MATLAB v7.3
def _mat73(path: Path, variables: dict) -> None:
    """A MATLAB v7.3 file as MATLAB writes one: HDF5 with a 512-byte MAT header, arrays transposed, chars as
    uint16, cells as object references into ``#refs#``."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as h:
        refs = h.create_group("#refs#")
        count = [0]

        def char(group, name, s):
            ds = group.create_dataset(name, data=np.array([[ord(c)] for c in s], np.uint16))
            ds.attrs["MATLAB_class"] = np.bytes_("char")
            ds.attrs["MATLAB_int_decode"] = np.int32(2)
            return ds

        for name, value in variables.items():
            if isinstance(value, list):  # N x 1 cell of strings -> dataset (1, N) of references
                rs = []
                for s in value:
                    count[0] += 1
                    rs.append(char(refs, f"r{count[0]}", s).ref)
                ds = h.create_dataset(name, data=np.array([rs], dtype=h5py.ref_dtype))
                ds.attrs["MATLAB_class"] = np.bytes_("cell")
            else:
                ds = h.create_dataset(name, data=np.asarray(value, np.float64).T)
                ds.attrs["MATLAB_class"] = np.bytes_("double")
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116, b" ") + b"\0" * 8 + b"\x00\x02" + b"IM")


def test_pa100k_matlab_v73(tmp_path, monkeypatch):
    pytest.importorskip("h5py")
    v5 = tmp_path / "v5"
    v, names, labels = _pa100k(v5)
    d = tmp_path / "v73"
    d.mkdir()
    _mat73(d / "annotation.mat", {k: ([c[0] for c in x] if x.dtype == object else x) for k, x in v.items()})
    os.symlink(v5 / "data", d / "data")
    a, b = read_pa100k(v5), read_pa100k(d)
    assert b.attributes == a.attributes == PA_ATTRS and [p.name for p in b.paths] == names
    np.testing.assert_array_equal(b.labels, labels)
    assert {k: x.tolist() for k, x in b.splits.items()} == {k: x.tolist() for k, x in a.splits.items()}
    monkeypatch.setitem(sys.modules, "h5py", None)  # h5py not installed
    _raises(lambda: read_pa100k(d), str(d / "annotation.mat"), "MATLAB v7.3 (HDF5)", "not supported without h5py")


# ======================================================================================================= RAP
RAP_NAME = "CAM{:02d}_2014-02-15_20140215161032-20140215162620_tarid{}_frame218_line1.png"


def _rap_v1(root: Path, n=8, attrs=53):
    d = root / "RAP"
    names = [RAP_NAME.format(i % 3 + 1, i) for i in range(n)]
    label = RNG.integers(0, 2, (n, attrs)).astype(np.float64)
    label[2, 4] = 2  # an uncertain mark in an evaluated attribute
    label[3, 52] = 2  # and one in a column outside the 51
    partion = _cell_of([{"train_index": np.array([[1, 2, 3, 4, 5, 6]]), "test_index": np.array([[7, 8]])},
                        {"train_index": np.array([[3, 4, 5, 6, 7, 8]]), "test_index": np.array([[1, 2]])}], (2, 1))
    eng = [f"attr{j}" for j in range(attrs)]
    eng[0], eng[50] = "Female", "action-CarrybyHand"
    s = {"partion": partion, "label": label, "attribute_chinese": _cell(eng), "attribute_eng": _cell(eng),
         "position": np.zeros((n, 16)), "imagesname": _cell(names),
         "selected_attribute": np.arange(1, 52)[None]}
    (d / "RAP_annotation").mkdir(parents=True)
    scipy.io.savemat(d / "RAP_annotation" / "RAP_annotation.mat", {"RAP_annotation": s})
    for nm in names:
        _img(d / "RAP_dataset" / nm)
    return d, names, label, eng


def test_rap_v1(tmp_path):
    d, names, label, eng = _rap_v1(tmp_path)
    ds = read_attributes(tmp_path)
    assert ds.name == "rap" and len(ds.attributes) == 51 and ds.attributes == eng[:51]
    assert [p.name for p in ds.paths] == names and ds.root == d / "RAP_dataset"
    want = np.where(label[:, :51] == 2, 0, label[:, :51]).astype(np.uint8)
    np.testing.assert_array_equal(ds.labels, want)
    assert ds.meta["num_uncertain"] == 1  # the one outside the 51 columns is not read
    assert ds.splits["train"].tolist() == ds.splits["trainval"].tolist() == [0, 1, 2, 3, 4, 5]
    assert ds.splits["test"].tolist() == [6, 7] and ds.splits["val"].size == 0
    _raises(lambda: ds.positive_ratio("val"), "split 'val' is empty")
    p1 = read_rap(d, partition=1)
    assert p1.splits["train"].tolist() == [2, 3, 4, 5, 6, 7] and p1.splits["test"].tolist() == [0, 1]
    full = read_rap(d, all_attributes=True)
    assert full.attributes == eng and full.labels.shape == (8, 53) and full.meta["num_uncertain"] == 2
    _raises(lambda: read_rap(d, partition=2), "partition 2 requested; the file has 2", "RAP_annotation.partion")
    # a file given directly
    assert read_attributes(d / "RAP_annotation" / "RAP_annotation.mat").labels.shape == (8, 51)


def test_rap_v2(tmp_path):
    d = tmp_path / "RAP2"
    n, attrs = 7, 9
    names = [RAP_NAME.format(25, i) for i in range(n)]
    data = RNG.integers(0, 2, (n, attrs)).astype(np.float64)
    part = _cell_of([{"train_index": np.array([[1, 2, 3]]), "val_index": np.array([[4]]),
                      "test_index": np.array([[5, 6, 7]])}] * 5, (1, 5))
    s = {"name": _cell(names), "attribute": _cell([f"a{j}" for j in range(attrs)]), "data": data,
         "selected_attribute": np.array([[3, 1, 5]]), "partition_attribute": part}
    (d / "RAP_annotation").mkdir(parents=True)
    scipy.io.savemat(d / "RAP_annotation" / "RAP_annotation.mat", {"RAP_annotation": s})
    for nm in names:
        _img(d / "RAP_dataset" / nm)
    ds = read_rap(d)
    assert ds.name == "rap2" and ds.attributes == ["a2", "a0", "a4"]
    np.testing.assert_array_equal(ds.labels, data[:, [2, 0, 4]].astype(np.uint8))
    assert {k: x.tolist() for k, x in ds.splits.items()} == {
        "train": [0, 1, 2], "val": [3], "trainval": [0, 1, 2, 3], "test": [4, 5, 6]}
    s["selected_attribute"] = np.array([[3, 10]])
    scipy.io.savemat(d / "RAP_annotation" / "RAP_annotation.mat", {"RAP_annotation": s})
    _raises(lambda: read_rap(d), "field RAP_annotation.selected_attribute", "index 10 (1-based)",
            "outside the 9 attributes")
    s["selected_attribute"] = np.array([[1]])
    s["partition_attribute"] = _cell_of([{"train_index": np.array([[1, 2, 8]]), "val_index": np.array([[4]]),
                                          "test_index": np.array([[5]])}], (1, 1))
    scipy.io.savemat(d / "RAP_annotation" / "RAP_annotation.mat", {"RAP_annotation": s})
    _raises(lambda: read_rap(d), "RAP_annotation.partition_attribute[0].train_index", "index 8 (1-based)")
    scipy.io.savemat(d / "RAP_annotation" / "RAP_annotation.mat", {"RAP_annotation": {"foo": np.zeros(2)}})
    _raises(lambda: read_rap(d), "neither RAP v1", "found ['foo']")


# ======================================================================================================= PETA
def _peta(root: Path, n=10, attrs=37, extra_cols=0):
    d = root / "PETA"
    lab = RNG.integers(0, 2, (n, attrs)).astype(np.float64)
    data = np.concatenate([np.arange(1, n + 1)[:, None] * np.ones((1, 4)), lab, np.zeros((n, extra_cols))], 1)
    names = [f"personal{'Less30' if j == 0 else f'Attr{j}'}" for j in range(attrs)]
    parts = [{"train": np.array([[1], [2], [3], [4], [5]]), "val": np.array([[6], [7]]),
              "test": np.array([[8], [9], [10]])},
             {"train": np.array([[6], [7], [8], [9], [10]]), "val": np.array([[1]]),
              "test": np.array([[2], [3], [4], [5]])}]
    s = {"data": data, "attribute": _cell(names), "selected_attribute": np.arange(1, 36)[None],
         "partion_attribute": _cell_of(parts, (2, 1))}
    d.mkdir(parents=True)
    scipy.io.savemat(d / "PETA.mat", {"peta": s})
    for i in range(n):
        _img(d / "images" / f"{i + 1:05d}.png")
    return d, lab.astype(np.uint8), names


def test_peta(tmp_path):
    d, lab, names = _peta(tmp_path)
    ds = read_attributes(tmp_path)
    assert ds.name == "peta" and ds.attributes == names[:35] and ds.labels.shape == (10, 35)
    np.testing.assert_array_equal(ds.labels, lab[:, :35])
    assert ds.paths[0] == d / "images" / "00001.png" and ds.paths[-1].name == "00010.png"
    assert {k: x.tolist() for k, x in ds.splits.items()} == {
        "train": [0, 1, 2, 3, 4], "val": [5, 6], "trainval": [0, 1, 2, 3, 4, 5, 6], "test": [7, 8, 9]}
    p1 = read_peta(d, partition=1, all_attributes=True)
    assert p1.splits["val"].tolist() == [0] and p1.splits["test"].tolist() == [1, 2, 3, 4]
    assert p1.attributes == names and p1.labels.shape == (10, 37)
    np.testing.assert_allclose(ds.positive_ratio("trainval"), lab[:7, :35].mean(0))


def test_peta_errors(tmp_path):
    d, _, _ = _peta(tmp_path / "a", extra_cols=1)
    _raises(lambda: read_peta(d), str(d / "PETA.mat"), "field peta.data",
            "38 attribute columns (after the 4 leading ones) but the attribute list has 37 names")
    d, _, _ = _peta(tmp_path / "b", attrs=20)
    _raises(lambda: read_peta(d), "20 attributes; PETA has 105 of which the first 35 are evaluated")
    assert read_peta(d, all_attributes=True).labels.shape == (10, 20)
    os.remove(d / "images" / "00004.png")
    _raises(lambda: read_peta(d, all_attributes=True), str(d / "PETA.mat"), "image '00004.png'", "image not found")
    _raises(lambda: read_attributes(tmp_path / "a" / "PETA"), "label matrix")  # dispatch reaches the reader
    (tmp_path / "c").mkdir()
    _raises(lambda: read_attributes(tmp_path / "c"), "pedestrian attribute dataset: expected annotation.mat")


# ============================================================================== Rethinking_of_PAR dataset_all.pkl
def _fake_easydict_module() -> types.ModuleType:
    """A stand-in for the ``easydict`` package (not installed here): ``EasyDict`` mirrors each item as an
    attribute, as the real one does, so its pickle carries the instance ``__dict__`` as BUILD state."""
    mod = types.ModuleType("easydict")

    class EasyDict(dict):
        def __init__(self, d=None, **kw):
            super().__init__()
            for k, v in {**(d or {}), **kw}.items():
                setattr(self, k, v)

        def __setattr__(self, name, value):
            if isinstance(value, dict) and not isinstance(value, EasyDict):
                value = EasyDict(value)
            super().__setattr__(name, value)
            super().__setitem__(name, value)

        __setitem__ = __setattr__

    EasyDict.__module__ = "easydict"
    EasyDict.__qualname__ = "EasyDict"
    mod.EasyDict = EasyDict
    return mod


class _RunsShell:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


def _dump_easydict(path: Path, build, monkeypatch) -> bytes:
    mod = _fake_easydict_module()
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "easydict", mod)
        payload = pickle.dumps(build(mod.EasyDict))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return payload


def _peta_pickle(ED, n=6, attrs=5):
    lab = np.tile(np.array([[1, 0, 2, 1, 0], [0, 1, 1, 0, 0]], np.uint8), (n // 2, 1))[:, :attrs]
    ds = ED()
    ds.description = "peta"
    ds.reorder = "group_order"
    ds.root = "/mnt/data1/someone/datasets/attribute/PETA/images"  # the author's machine
    ds.image_name = [f"{i + 1:05}.png" for i in range(n)]
    ds.label = lab
    ds.attr_name = [f"attr{j}" for j in range(attrs)]
    ds.label_idx = ED()
    ds.label_idx.eval = [2, 0, 1]
    ds.label_idx.color = [3]
    ds.label_idx.extra = range(4, attrs)
    ds.partition = ED()
    ds.partition.train = [np.array([0, 1, 2]), np.array([3, 4, 5])]
    ds.partition.val = [np.array([3]), np.array([0])]
    ds.partition.trainval = [np.array([0, 1, 2, 3]), np.array([3, 4, 5, 0])]
    ds.partition.test = [np.array([4, 5]), np.array([1, 2])]
    ds.weight_train = [lab[[0, 1, 2]].mean(0), lab[[3, 4, 5]].mean(0)]
    return ds


def test_par_pickle_read_without_easydict(tmp_path, monkeypatch):
    root = tmp_path / "data" / "PETA"
    pkl = root / "dataset_all.pkl"
    payload = _dump_easydict(pkl, _peta_pickle, monkeypatch)
    assert b"easydict" in payload and b"EasyDict" in payload  # the class is really named in the stream
    for i in range(6):
        _img(root / "images" / f"{i + 1:05}.png")
    monkeypatch.setitem(sys.modules, "easydict", None)  # any import of easydict would now fail
    with pytest.raises(ImportError):
        pickle.loads(payload)
    ds = read_par_pickle(pkl)
    assert ds.name == "peta" and ds.root == root / "images" and ds.paths[0] == root / "images" / "00001.png"
    assert ds.attributes == ["attr2", "attr0", "attr1"]  # label_idx.eval, in its order
    sel = np.tile(np.array([[1, 0, 2, 1, 0], [0, 1, 1, 0, 0]], np.uint8), (3, 1))[:, [2, 0, 1]]
    np.testing.assert_array_equal(ds.labels, np.where(sel == 2, 0, sel))
    assert ds.meta["num_uncertain"] == 3
    assert {k: x.tolist() for k, x in ds.splits.items()} == {
        "train": [0, 1, 2], "val": [3], "trainval": [0, 1, 2, 3], "test": [4, 5]}
    p1 = read_par_pickle(pkl, partition=1, labels="all")
    assert p1.splits["test"].tolist() == [1, 2] and p1.attributes == [f"attr{j}" for j in range(5)]
    assert read_attributes(root).name == "peta"  # a folder holding only dataset_all.pkl
    _raises(lambda: read_par_pickle(pkl, partition=2), "partition 2 requested; the file has 2",
            "field partition.train")
    _raises(lambda: read_par_pickle(pkl, image_root=tmp_path / "elsewhere"), "image '00001.png'",
            "image not found")


def test_par_pickle_pa100k_and_rap_v1_forms(tmp_path, monkeypatch):
    def pa100k(ED):
        ds = ED(description="pa100k", root="/nonexistent/PA100k/data", image_name=["000001.jpg", "000002.jpg",
                "000003.jpg", "000004.jpg"], label=np.array([[1, 0], [0, 1], [1, 1], [0, 0]]),
                attr_name=["Female", "AgeOver60"])
        ds.label_idx = ED(eval=[1, 0])
        ds.partition = ED(train=np.arange(0, 2), val=np.arange(2, 3), test=np.arange(3, 4),
                          trainval=np.arange(0, 3))
        return ds

    pkl = tmp_path / "PA100k" / "dataset_all.pkl"
    _dump_easydict(pkl, pa100k, monkeypatch)
    ds = read_par_pickle(pkl, check_images=False)
    assert ds.root == pkl.parent / "data" and ds.attributes == ["AgeOver60", "Female"]
    assert ds.splits["trainval"].tolist() == [0, 1, 2] and ds.labels[:, 0].tolist() == [0, 1, 1, 0]

    def rap(ED):
        ds = ED(description="rap", root=str(tmp_path / "RAP" / "RAP_dataset"), image_name=["a.png", "b.png"],
                label=np.array([[1.0], [0.0]]), attr_name=["Female"])
        ds.partition = ED(trainval=[np.array([0])] * 5, test=[np.array([1])] * 5)
        return ds

    pkl = tmp_path / "RAP" / "dataset_all.pkl"
    _dump_easydict(pkl, rap, monkeypatch)
    (tmp_path / "RAP" / "RAP_dataset").mkdir()
    ds = read_par_pickle(pkl, check_images=False)  # the stored root exists: used as is
    assert ds.root == tmp_path / "RAP" / "RAP_dataset" and ds.attributes == ["Female"]
    assert {k: x.tolist() for k, x in ds.splits.items()} == {"train": [0], "val": [], "trainval": [0], "test": [1]}

    def bad_width(ED):
        d = pa100k(ED)
        d.attr_name = ["Female"]
        return d

    _dump_easydict(pkl, bad_width, monkeypatch)
    _raises(lambda: read_par_pickle(pkl), str(pkl), "field label", "2 columns but the attribute list has 1 names")


def test_par_pickle_refuses_code(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    pkl = tmp_path / "dataset_all.pkl"

    def evil(ED):
        d = _peta_pickle(ED)
        d.weight_trainval = _RunsShell(f"touch {marker}")
        return d

    payload = _dump_easydict(pkl, evil, monkeypatch)
    assert b"system" in payload
    _raises(lambda: read_par_pickle(pkl), str(pkl), "refused to load global", "system")
    assert not marker.exists(), "the pickled os.system call was executed"
    pkl.write_bytes(pickle.dumps({"image_name": ["a"], "label": np.zeros((1, 1)), "attr_name": ["x"]}))
    _raises(lambda: read_par_pickle(pkl), "field partition", "missing key")


# =========================================================================================== text-to-image re-id
CAPS = ["A woman wearing a red T-shirt and blue jeans.", "The lady carries a black bag, walking."]


def _cuhk(root: Path):
    d = root / "CUHK-PEDES"
    recs = [
        {"split": "train", "captions": CAPS, "file_path": "CUHK01/0363004.png",
         "processed_tokens": [simple_tokenize(c) for c in CAPS], "id": 1},
        {"split": "train", "captions": CAPS[:1], "file_path": "CUHK01/0363002.png",
         "processed_tokens": [simple_tokenize(CAPS[0])], "id": 1},
        {"split": "train", "captions": ["A man in black."], "file_path": "cam_a/001_45.bmp",
         "processed_tokens": [["a", "man", "in", "black"]], "id": 1369},
        {"split": "train", "captions": ["A man in grey."], "file_path": "Market/0002_c1s1_000451_03.jpg",
         "processed_tokens": [["a", "man", "in", "grey"]], "id": 7},
        {"split": "val", "captions": ["Someone."], "file_path": "test_query/p1_s1.jpg",
         "processed_tokens": [["someone"]], "id": 11004},
        {"split": "test", "captions": CAPS, "file_path": "CUHK03/1_1_1.jpg",
         "processed_tokens": [[], []], "id": 12004},
    ]
    d.mkdir(parents=True)
    (d / "reid_raw.json").write_text(json.dumps(recs))
    for r in recs:
        _img(d / "imgs" / r["file_path"])
    return d, recs


def test_cuhk_pedes(tmp_path):
    d, _ = _cuhk(tmp_path)
    ds = read_text_reid(tmp_path)
    assert ds.name == "cuhk_pedes" and (len(ds.train), len(ds.val), len(ds.test)) == (4, 1, 1)
    t = ds.train[0]
    assert t.path == d / "imgs" / "CUHK01" / "0363004.png" and t.pid == 1 and t.captions == tuple(CAPS)
    assert t.split == "train" and ds.test[0].pid == 12004 and ds.val[0].split == "val"
    labels, k = ds.train_labels()
    assert k == ds.num_train_ids == 3 and labels.tolist() == [0, 0, 2, 1]
    ex = read_cuhk_pedes(d, exclude_train_ids=LGUR_CUHK_EXCLUDED_IDS)
    assert [it.pid for it in ex.train] == [1, 1, 7] and ex.train_labels()[1] == 2 and len(ex.test) == 1


def test_icfg_and_rstp(tmp_path):
    d = tmp_path / "ICFG-PEDES"
    recs = [{"id": 27, "file_path": "test/0027/0027_010_05_0303afternoon_1549_1.jpg", "split": "test",
             "captions": ["The man has short hair."], "processed_tokens": [["the", "man"]]},
            {"id": 0, "file_path": "train/0000/0000_000_01_0303morning_0015_0.jpg", "split": "train",
             "captions": ["A girl."], "processed_tokens": [["a", "girl"]]}]
    d.mkdir()
    (d / "ICFG-PEDES.json").write_text(json.dumps(recs))
    for r in recs:
        _img(d / "imgs" / r["file_path"])
    ds = read_text_reid(d)
    assert ds.name == "icfg_pedes" and [it.pid for it in ds.train] == [0] and ds.val == []
    assert ds.test[0].captions == ("The man has short hair.",) and ds.test[0].path.parent.name == "0027"
    recs[0]["split"] = "val"
    (d / "ICFG-PEDES.json").write_text(json.dumps(recs))
    _raises(lambda: read_icfg_pedes(d), "entry 0", "field split", "'val' is not one of ['train', 'test']")

    r = tmp_path / "RSTPReid"
    recs = [{"id": 3903, "img_path": "3903_c14_0007.jpg", "captions": CAPS, "split": "train"},
            {"id": 3904, "img_path": "3904_c3_0001.jpg", "captions": CAPS, "split": "val"},
            {"id": 4000, "img_path": "4000_c1_0002.jpg", "captions": CAPS[::-1], "split": "test"}]
    r.mkdir()
    (r / "data_captions.json").write_text(json.dumps(recs))
    for x in recs:
        _img(r / "imgs" / x["img_path"])
    ds = read_rstpreid(r)
    assert ds.name == "rstpreid" and [len(ds.train), len(ds.val), len(ds.test)] == [1, 1, 1]
    assert ds.test[0].captions == tuple(CAPS[::-1]) and ds.train[0].path == r / "imgs" / "3903_c14_0007.jpg"


def test_text_reid_errors(tmp_path):
    d, recs = _cuhk(tmp_path)
    f = str(d / "reid_raw.json")

    def write(rs):
        (d / "reid_raw.json").write_text(json.dumps(rs))

    write([*recs[:2], {k: v for k, v in recs[2].items() if k != "captions"}])
    _raises(lambda: read_cuhk_pedes(d), f, "entry 2", "field captions", "missing field")
    write([*recs[:2], {**recs[2], "captions": ["ok", ""]}])
    _raises(lambda: read_cuhk_pedes(d), "entry 2", "non-empty caption strings")
    write([{**recs[0], "id": "1"}])
    _raises(lambda: read_cuhk_pedes(d), "entry 0", "field id", "integer id")
    write([{**recs[0], "split": "dev"}])
    _raises(lambda: read_cuhk_pedes(d), "entry 0", "'dev' is not one of")
    write({"images": recs})
    _raises(lambda: read_cuhk_pedes(d), f, "expected a JSON list")
    write(recs)
    os.remove(d / "imgs" / "Market" / "0002_c1s1_000451_03.jpg")
    _raises(lambda: read_cuhk_pedes(d), f, "entry 3 (Market/0002_c1s1_000451_03.jpg)", "image not found")
    assert len(read_cuhk_pedes(d, check_images=False).train) == 4
    (d / "reid_raw.json").write_text("[{")
    _raises(lambda: read_cuhk_pedes(d), f, "not valid JSON")
    _raises(lambda: read_text_reid(tmp_path / "CUHK-PEDES" / "imgs"), "text re-id dataset: expected imgs/")


# ===================================================================================================== text
def test_tokenizer_and_vocabulary(tmp_path):
    assert simple_tokenize("A woman's T-shirt, 2 BAGS.\nCafé") == ["a", "woman", "s", "t", "shirt", "2", "bags",
                                                                   "café"]
    assert simple_tokenize("  ...  ") == []
    caps = ["a red bag", "A bag; a RED coat", "blue"]
    v = Vocabulary.build(caps)
    # counts: a 3, bag 2, red 2, blue 1, coat 1 -> by count, then alphabetically
    assert v.tokens == ["<pad>", "<unk>", "a", "bag", "red", "blue", "coat"] and len(v) == 7
    assert v.pad == 0 and v.unk == 1 and "coat" in v and "green" not in v
    e = v.encode("A green bag", max_len=5)
    assert e.dtype == np.int64 and e.tolist() == [2, 1, 3, 0, 0]
    assert v.encode("a a a red", max_len=2).tolist() == [2, 2]
    assert v.decode(e) == ["a", "<unk>", "bag"]
    assert Vocabulary.build(caps, min_count=2).tokens[2:] == ["a", "bag", "red"]
    assert Vocabulary.build(caps, max_size=1).tokens[2:] == ["a"]
    with pytest.raises(ValueError):
        v.encode("a", max_len=0)
    p = v.save(tmp_path / "vocab.json")
    w = Vocabulary.load(p)
    assert w.tokens == v.tokens and (w.encode(caps[1], 6) == v.encode(caps[1], 6)).all()
    p.write_text(json.dumps({"format": "humanvision.vocabulary", "tokens": ["<unk>", "<pad>", "a"]}))
    _raises(lambda: Vocabulary.load(p), str(p), "field tokens", "first tokens")
    p.write_text(json.dumps({"format": "humanvision.vocabulary", "tokens": ["<pad>", "<unk>", "a", "a"]}))
    _raises(lambda: Vocabulary.load(p), str(p), "duplicate token 'a'")
    p.write_text(json.dumps(["a"]))
    _raises(lambda: Vocabulary.load(p), "not a vocabulary file")
