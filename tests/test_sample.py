"""The Sample record, LazyImage and image/depth file I/O."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest

from humanvision.data import (
    LazyImage,
    MultiViewSample,
    Sample,
    read_depth,
    read_image,
    read_mask,
    write_depth,
    write_image,
    write_mask,
)
from humanvision.errors import DataError


def _sample(n=2, k=17, **kw) -> Sample:
    rng = np.random.default_rng(0)
    base = {"keypoints_2d": rng.uniform(0, 100, (n, k, 2)).astype(np.float32),
            "visibility": np.ones((n, k), np.float32),
            "boxes": np.tile(np.float32([[1, 2, 30, 40]]), (n, 1)),
            "skeleton": "coco17", "source": "ann.json", "image_id": 7}
    base.update(kw)
    return Sample(**base)


# ------------------------------------------------------------------------------------------------ io
def test_image_roundtrip_rgb_order_and_grey(tmp_path):
    img = np.zeros((5, 7, 3), np.uint8)
    img[..., 0] = 200  # pure red in RGB
    p = write_image(tmp_path / "a" / "red.png", img)
    back = read_image(p)
    assert back.shape == (5, 7, 3) and back.dtype == np.uint8
    np.testing.assert_array_equal(back, img)
    grey = np.arange(35, dtype=np.uint8).reshape(5, 7)
    g = read_image(write_image(tmp_path / "g.png", grey))
    np.testing.assert_array_equal(g, np.repeat(grey[..., None], 3, axis=2))


def test_read_image_applies_exif_orientation_like_the_runtime(tmp_path):
    """A JPEG whose bitmap is 100 x 40 with EXIF orientation 6 ("rotate 90 degrees clockwise to display", TIFF
    tag 0x0112), written by Pillow: read upright (40 x 100), the bitmap's top-left corner now at the top right."""
    from PIL import Image

    from humanvision.runtime.pose import read_rgb

    bitmap = np.full((40, 100, 3), 30, np.uint8)
    bitmap[:5, :10] = 250
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(bitmap).save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    img = read_image(tmp_path / "phone.jpg")
    assert img.shape == (100, 40, 3)
    assert img[:10, 35:].min() > 200 and img[:10, :30].max() < 60 and img[90:, 35:].max() < 60
    np.testing.assert_array_equal(img, read_rgb(tmp_path / "phone.jpg"))
    # 16-bit grey still scales to 8 bits, an alpha channel is still dropped
    Image.fromarray(np.full((4, 6), 0x8180, np.uint16)).save(tmp_path / "grey16.png")
    np.testing.assert_array_equal(read_image(tmp_path / "grey16.png"), np.full((4, 6, 3), 0x81, np.uint8))
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 9
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    np.testing.assert_array_equal(read_image(tmp_path / "alpha.png"), rgba[..., :3])


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jpg: file not found"):
        read_image(tmp_path / "nope.jpg")
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match=r"corrupt\.jpg: cannot decode"):
        read_image(bad)
    with pytest.raises(DataError, match="not a regular file"):
        read_image(tmp_path)


def test_depth_roundtrip_mm_and_checks(tmp_path):
    d = np.array([[0.0, 1234.4], [65535.0, 2000.6]])
    back = read_depth(write_depth(tmp_path / "d.png", d))
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, [[0, 1234], [65535, 2001]])
    with pytest.raises(DataError, match="0..65535"):
        write_depth(tmp_path / "e.png", np.array([[-1.0]]))
    with pytest.raises(DataError, match="png"):
        write_depth(tmp_path / "e.jpg", np.zeros((2, 2)))
    write_image(tmp_path / "rgb.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(DataError, match=r"rgb\.png: expected a single-channel 16-bit"):
        read_depth(tmp_path / "rgb.png")


def test_mask_roundtrip(tmp_path):
    m = np.array([[0, 3], [300, 1]])
    np.testing.assert_array_equal(read_mask(write_mask(tmp_path / "m.png", m)), m)
    small = np.array([[0, 24]])
    p = write_mask(tmp_path / "s.png", small)
    assert read_mask(p).dtype == np.int32 and read_mask(p).tolist() == [[0, 24]]


# ------------------------------------------------------------------------------------------------ LazyImage
def test_lazy_image_pickles_and_decodes_on_load(tmp_path):
    img = np.full((3, 4, 3), 9, np.uint8)
    write_image(tmp_path / "x.png", img)
    lazy = pickle.loads(pickle.dumps(LazyImage(str(tmp_path / "x.png"), read_image)))
    assert lazy == LazyImage(str(tmp_path / "x.png"), read_image)
    s = Sample(image=lazy, image_path=lazy.path)
    assert s.is_lazy
    np.testing.assert_array_equal(s.load_image(), img)
    assert isinstance(s.image, np.ndarray) and not s.is_lazy
    assert "x.png" in repr(lazy) and "read_image" in repr(lazy)


# ------------------------------------------------------------------------------------------------ validate
def test_valid_sample_passes_and_counts():
    s = _sample()
    assert s.validate() is s
    assert s.num_instances == 2 and s.num_joints == 17


def test_empty_image_sample_is_valid():
    s = Sample(keypoints_2d=np.zeros((0, 17, 2), np.float32), visibility=np.zeros((0, 17), np.float32),
               boxes=np.zeros((0, 4), np.float32), skeleton="coco17")
    assert s.validate().num_instances == 0


@pytest.mark.parametrize("change, field, text", [
    ({"visibility": np.ones((2, 16), np.float32)}, "visibility", r"shape \(2, 16\)"),
    ({"boxes": np.ones((3, 4), np.float32)}, "boxes", r"shape \(3, 4\)"),
    ({"skeleton": "aic14"}, "keypoints", "17 joints but skeleton 'aic14' has 14"),
    ({"skeleton": "no_such"}, "skeleton", "unknown skeleton"),
    ({"visibility": np.full((2, 17), 2.0, np.float32)}, "visibility", r"\[0, 1\]"),
    ({"boxes": np.array([[0, 0, -1, 4], [0, 0, 1, 1]], np.float32)}, "boxes", "negative"),
    ({"keypoints_3d": np.zeros((2, 17, 3), np.float32)}, "keypoints_3d_frame", "'world' or 'camera'"),
    ({"image": np.zeros((4, 4), np.uint8)}, "image", "RGB"),
    ({"image": np.zeros((4, 4, 3), np.uint8), "depth": np.zeros((5, 4), np.float32)}, "depth", "differs"),
    ({"scores": np.ones(3, np.float32)}, "scores", "shape"),
    ({"ann_ids": np.arange(3)}, "ann_ids", "shape"),
])
def test_validate_names_file_record_and_field(change, field, text):
    with pytest.raises(DataError) as e:
        _sample(**change).validate()
    msg = str(e.value)
    assert msg.startswith("ann.json: image 7: field ") and e.value.field == field, msg
    assert re.search(text, msg), msg


def test_nonfinite_keypoints_allowed_only_when_unlabelled():
    kp = np.zeros((1, 17, 2), np.float32)
    kp[0, 3] = np.nan
    vis = np.ones((1, 17), np.float32)
    with pytest.raises(DataError, match="non-finite"):
        _sample(n=1, keypoints_2d=kp, visibility=vis, boxes=None).validate()
    vis[0, 3] = 0
    _sample(n=1, keypoints_2d=kp, visibility=vis, boxes=None).validate()


def test_replace_copies_dicts():
    s = _sample(meta={"a": 1})
    t = s.replace(image_id=8)
    t.meta["a"] = 2
    assert s.meta["a"] == 1 and t.image_id == 8 and t.keypoints_2d is s.keypoints_2d


def test_multiview_validate():
    kp = np.zeros((1, 17, 3), np.float32)
    views = [Sample(boxes=np.zeros((1, 4), np.float32), keypoints_3d=kp, keypoints_3d_frame="world",
                    skeleton="h36m17") for _ in range(2)]
    mv = MultiViewSample(views=views, view_names=["a", "b"], keypoints_3d=kp, skeleton="h36m17", source="x")
    assert mv.validate().num_views == 2
    mv.view_names = ["a"]
    with pytest.raises(DataError, match="view_names"):
        mv.validate()
    mv.view_names = ["a", "b"]
    views[1].skeleton = "coco17"
    with pytest.raises(DataError, match="view b uses skeleton"):
        mv.validate()
