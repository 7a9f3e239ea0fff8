"""CMU Panoptic calibration files (``calibration_<sequence>.json``), written here from the Panoptic Studio toolbox's
documented layout (not by our writer), read as cameras for ``humanvision triangulate`` and projected with OpenCV."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from humanvision.errors import DataError
from humanvision.geometry import read_calibration, read_panoptic_calibration


def panoptic_file(path, seed=0):
    """Two HD cameras and one VGA camera in the toolbox's layout (t is a 3x1 column in centimetres)."""
    rng = np.random.default_rng(seed)
    cams = []
    for kind, panel, node, size in (("vga", 1, 1, [640, 480]), ("hd", 0, 0, [1920, 1080]), ("hd", 0, 3, [1920, 1080])):
        rvec = rng.normal(0, 0.3, 3)
        R = cv2.Rodrigues(rvec)[0]
        cams.append({"name": f"{panel:02d}_{node:02d}", "type": kind, "resolution": size, "panel": panel,
                     "node": node, "K": [[1400.0, 0.0, size[0] / 2], [0.0, 1395.0, size[1] / 2], [0.0, 0.0, 1.0]],
                     "distCoef": [-0.2, 0.05, 0.001, -0.0005, 0.01], "R": R.tolist(),
                     "t": [[float(rng.normal(0, 10))], [float(rng.normal(0, 10))], [float(300 + rng.normal(0, 10))]]})
    path.write_text(json.dumps({"calibDataSource": "160906_calib_norm", "cameras": cams}))
    return cams


def test_hd_cameras_project_like_opencv_in_millimetres(tmp_path):
    f = tmp_path / "calibration_160906_pizza1.json"
    raw = panoptic_file(f)
    cams = read_calibration(f)  # recognised by content, HD cameras only
    assert list(cams) == ["00_00", "00_03"]
    X_cm = np.random.default_rng(1).normal(0, 30, (20, 3))
    for rec in raw[1:]:
        cam = cams[rec["name"]]
        assert cam.image_size == (1920, 1080) and cam.dist_model == "opencv"
        np.testing.assert_allclose(cam.t, np.asarray(rec["t"]).reshape(3) * 10.0)
        ref, _ = cv2.projectPoints(X_cm, cv2.Rodrigues(np.asarray(rec["R"]))[0], np.asarray(rec["t"], float),
                                   np.asarray(rec["K"]), np.asarray(rec["distCoef"]))
        np.testing.assert_allclose(cam.project(X_cm * 10.0), ref.reshape(-1, 2), atol=1e-6)
    every = read_panoptic_calibration(f, camera_type="all", cm_to_mm=False)
    assert list(every) == ["01_01", "00_00", "00_03"] and every["01_01"].image_size == (640, 480)
    np.testing.assert_allclose(every["00_03"].t, np.asarray(raw[2]["t"]).reshape(3))


def test_bad_panoptic_files_name_the_camera_and_field(tmp_path):
    f = tmp_path / "calibration_x.json"
    raw = panoptic_file(f)
    raw[2]["distCoef"] = [0.1, 0.2]
    f.write_text(json.dumps({"calibDataSource": "x", "cameras": raw}))
    with pytest.raises(DataError, match="distCoef") as e:
        read_calibration(f)
    assert "00_03" in str(e.value)
    raw[2]["distCoef"] = [0.0] * 5
    raw[1]["t"] = [1.0, 2.0]
    f.write_text(json.dumps({"calibDataSource": "x", "cameras": raw}))
    with pytest.raises(DataError, match="t") as e:
        read_calibration(f)
    assert "00_00" in str(e.value)
    with pytest.raises(DataError, match="kinect-color"):
        read_panoptic_calibration(f, camera_type="kinect-color")
