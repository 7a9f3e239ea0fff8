"""Human3.6M labels as single views (``Human36MViews``) and the top-down 2D recipe on them (``data.source: h36m``):
LT's stage-0 2D network, and ContextPose's single-view expansion."""

from __future__ import annotations

import numpy as np
import pytest

from humanvision.data.readers import Human36MMultiView, Human36MViews
from humanvision.errors import ConfigError


@pytest.fixture(scope="module")
def h36m_root(tmp_path_factory):
    from humanvision.data.synthetic.writers import generate_h36m

    root = tmp_path_factory.mktemp("h36m_views")
    generate_h36m(root, 6, size=(160, 160), views=3, subjects=2, actions=2, seed=5)
    return root


def _paths(root):
    return root / "human36m-multiview-labels-GTbboxes.npy", root / "processed"


def test_one_sample_per_present_view_with_the_projected_joints(h36m_root):
    labels, images = _paths(h36m_root)
    frames = Human36MMultiView(labels, images)
    views = Human36MViews(labels, images)
    assert len(views) == int(frames.present.sum())
    k = 0
    for i in range(len(frames)):
        mv = frames[i]
        for name, view in zip(mv.view_names, mv.views, strict=True):
            s = views[k]
            assert s.meta["camera"] == name and s.meta["frame"] == i
            cam = view.camera  # an independent projection: P = K [R | t] applied by hand
            P = cam.K @ np.concatenate([cam.R, cam.t.reshape(3, 1)], 1)
            X = np.concatenate([mv.keypoints_3d[0], np.ones((17, 1))], 1) @ P.T
            uv = X[:, :2] / X[:, 2:]
            np.testing.assert_allclose(s.keypoints_2d[0], uv, atol=1e-3)
            np.testing.assert_allclose(views.keypoints[k], uv, atol=1e-3)
            np.testing.assert_array_equal(s.boxes, view.boxes)
            inside = (uv >= 0).all(1) & (uv[:, 0] < 160) & (uv[:, 1] < 160)
            np.testing.assert_array_equal(s.visibility[0] > 0, inside)
            k += 1
    assert k == len(views)
    assert views.subjects[0] == "S1" and set(views.actions) <= set(frames.action_names)


def test_subjects_and_every_n_are_the_multiview_readers(h36m_root):
    labels, images = _paths(h36m_root)
    s2 = Human36MViews(labels, images, subjects=["S2"], every_n=2)
    ref = Human36MMultiView(labels, images, subjects=["S2"], every_n=2)
    assert len(s2) == int(ref.present.sum()) and set(s2.subjects) == {"S2"}


def test_topdown_recipe_trains_and_evaluates_on_h36m_views(h36m_root, tmp_path):
    from humanvision.cli.pose import _load_recipe, run_training
    from humanvision.methods.topdown import build_method, evaluate_topdown

    labels, images = _paths(h36m_root)
    overrides = [f"data.train_ann={labels}", f"data.train_images={images}", f"data.val_ann={labels}",
                 f"data.val_images={images}", "data.cache_images=false", "train.epochs=1", "train.max_minutes=null",
                 "train.batch_size=8", "train.eval_every=1", "train.precision=fp32", "train.channels_last=false",
                 "train.progress=false", f"train.output_dir={tmp_path / 'run'}", "model.input_size=[64,64]"]
    from pathlib import Path

    recipe = _load_recipe(Path("configs/lt_2d_synthetic_h36m.yaml"), overrides)
    summary = run_training(recipe, quiet=True)
    assert np.isfinite(summary["metrics"]["PCK@0.2"])
    method = build_method(recipe, weights=tmp_path / "run")
    m = evaluate_topdown(method, recipe, out_dir=tmp_path / "eval")
    assert m["num_views"] == len(Human36MViews(labels, images, subjects=["S2"], every_n=2))
    assert 0.0 <= m["PCK@0.05"] <= m["PCK@0.2"] <= 100.0 and m["mean_error_px"] > 0  # percent, pixels
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_h36m_source_refuses_detections_and_missing_images(h36m_root):
    from humanvision.methods.topdown import DataConfig, eval_reader

    labels, images = _paths(h36m_root)
    with pytest.raises(ConfigError, match="det_results"):
        eval_reader(DataConfig(source="h36m", val_ann=labels, val_images=images), "h36m17", labels)
    with pytest.raises(ConfigError, match="processed"):
        eval_reader(DataConfig(source="h36m", val_ann=labels), "h36m17")
