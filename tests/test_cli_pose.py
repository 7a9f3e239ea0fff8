"""``humanvision train / eval / infer`` end to end on a synthetic COCO-format set, recipe validation, configs/."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from humanvision.cli import app
from humanvision.config import load_config
from humanvision.engine import load_checkpoint
from humanvision.errors import ConfigError
from humanvision.methods.topdown import TopDownRecipe
from humanvision.metrics.coco import STAT_NAMES, evaluate_coco_keypoints

torch.set_num_threads(1)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RUNNER = CliRunner()
ENV = {"COLUMNS": "250", "NO_COLOR": "1"}  # rich wraps error messages at the terminal width


def invoke(*args):
    return RUNNER.invoke(app, [str(a) for a in args], env=ENV)


def clean(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    from humanvision.data.synthetic.writers import generate_coco

    root = tmp_path_factory.mktemp("synthetic_coco")
    generate_coco(root, {"train": 24, "val": 8}, size=(128, 128), seed=0)
    return root


def recipe_dict(root: Path, output_dir: Path, max_steps: int | None = 2) -> dict:
    """A tiny recipe: 24 training people in batches of 8 -> 3 steps per epoch; argmax decoding (dark off) keeps the
    random model's keypoints inside their crops."""
    return {
        "name": "tiny_test",
        "model": {"name": "simplebaseline_tiny", "skeleton": "coco17", "input_size": [64, 64]},
        "data": {"source": "coco", "train_ann": str(root / "annotations/person_keypoints_train.json"),
                 "train_images": str(root / "train"),
                 "val_ann": str(root / "annotations/person_keypoints_val.json"),
                 "val_images": str(root / "val"), "augment": "vitpose", "dark": False},
        "train": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "max_steps": max_steps, "device": "cpu",
                  "progress": False, "tensorboard": False, "log_every": 1, "best_metric": "AP",
                  "output_dir": str(output_dir)},
        "eval": {"batch_size": 8, "flip_test": True},
    }


def write_recipe(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def trained(coco_dir, tmp_path_factory):
    """``humanvision train`` stopped by ``max_steps`` inside the first epoch (2 of 3 steps)."""
    tmp = tmp_path_factory.mktemp("train")
    config = write_recipe(tmp / "tiny.yaml", recipe_dict(coco_dir, tmp / "run"))
    result = invoke("train", config)
    return config, tmp / "run", result


# ----------------------------------------------------------------------------------------------------- train
def test_train_writes_checkpoint_and_config(trained):
    config, run, result = trained
    assert result.exit_code == 0, result.output
    assert (run / "last" / "model.safetensors").is_file()
    ckpt = load_checkpoint(run / "last")
    assert ckpt.meta["step"] == 2 and ckpt.meta["epoch"] == 0 and ckpt.meta["epoch_step"] == 2
    # the resolved recipe next to the run reproduces the run on its own
    assert load_config(run / "config.yaml", TopDownRecipe) == load_config(config, TopDownRecipe)


def test_train_resume_continues_exactly(trained, coco_dir, tmp_path):
    config, run, _ = trained
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    result = invoke("train", config, "--resume", "--set", f"train.output_dir={resumed}", "--set",
                    "train.max_steps=3")
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(resumed / "last")
    assert ckpt.meta["step"] == 3 and ckpt.meta["epoch"] == 1  # finished the epoch, then evaluated
    assert set(STAT_NAMES) <= set(ckpt.meta["metrics"]) and "PCK@0.2" in ckpt.meta["metrics"]
    assert "tiny_test: final" in clean(result.output).replace("…", "")

    # the same 3 steps without interruption give bit-identical weights
    straight = write_recipe(tmp_path / "straight.yaml", recipe_dict(coco_dir, tmp_path / "straight", max_steps=3))
    assert invoke("train", straight).exit_code == 0
    other = load_checkpoint(tmp_path / "straight" / "last")
    assert other.meta["step"] == 3
    for k, v in ckpt.model_state.items():
        assert torch.equal(v, other.model_state[k]), k


@pytest.mark.parametrize("edit, key", [
    (lambda d: d["model"].update(nmae="vitpose_tiny"), "model.nmae"),
    (lambda d: d["train"].update(lr="fast"), "train.lr"),
    (lambda d: d["data"].update(val_ann="/nonexistent/person_keypoints_val.json"), "data.val_ann"),
    (lambda d: d.update(evaluation={}), "evaluation"),
    (lambda d: d["train"].update(batch_size=0), "train.batch_size"),
])
def test_bad_recipe_is_a_config_error_naming_the_key(coco_dir, tmp_path, edit, key):
    data = recipe_dict(coco_dir, tmp_path / "run")
    edit(data)
    config = write_recipe(tmp_path / "bad.yaml", data)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(config, TopDownRecipe)
    result = invoke("train", config)
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # typer.Exit, not an uncaught error
    assert "Traceback" not in result.output
    assert "error:" in result.output and key in clean(result.output)
    assert not (tmp_path / "run").exists()  # failed before anything was written


def test_bad_override_and_missing_config(coco_dir, tmp_path):
    config = write_recipe(tmp_path / "ok.yaml", recipe_dict(coco_dir, tmp_path / "run"))
    result = invoke("train", config, "--set", "train.epochs=many")
    assert result.exit_code == 1 and "train.epochs" in clean(result.output)
    result = invoke("train", tmp_path / "missing.yaml")
    assert result.exit_code == 1 and "config file not found" in clean(result.output)


# ------------------------------------------------------------------------------------------------------ eval
def test_eval_writes_results_and_metrics(trained, coco_dir, tmp_path):
    config, run, _ = trained
    result = invoke("eval", config, "--weights", run, "--out", tmp_path / "gt")
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "gt" / "results.json").read_text())
    metrics = json.loads((tmp_path / "gt" / "metrics.json").read_text())
    assert len(results) == metrics["num_detections"] > 0
    ours = evaluate_coco_keypoints(coco_dir / "annotations/person_keypoints_val.json", results, skeleton="coco17")
    np.testing.assert_allclose([metrics[k] for k in STAT_NAMES], ours.as_array(), rtol=0, atol=1e-12)
    assert "PCK@0.2" in metrics and "AP" in result.output

    dets = coco_dir / "annotations/person_detections_val.json"
    result = invoke("eval", config, "--weights", run / "last" / "model.safetensors", "--dets", dets,
                    "--out", tmp_path / "dets")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "dets" / "metrics.json").read_text())
    assert "PCK@0.2" not in metrics and 0 < metrics["num_detections"] <= len(json.loads(dets.read_text()))

    result = invoke("eval", config, "--weights", tmp_path / "nowhere")
    assert result.exit_code == 1 and "nowhere" in clean(result.output) and "Traceback" not in result.output


# ----------------------------------------------------------------------------------------------------- infer
@pytest.fixture()
def media(coco_dir, tmp_path):
    """A folder with 2 PNGs (validation images) and a 5-frame mp4 made of validation images."""
    import cv2

    folder = tmp_path / "images"
    folder.mkdir()
    sources = sorted((coco_dir / "val").glob("*.png"))
    for src in sources[:2]:
        shutil.copy(src, folder / src.name)
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (128, 128))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write mp4v")
    for src in sources[:5]:
        writer.write(cv2.imread(str(src)))
    writer.release()
    return folder, video


def count_frames(path: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def test_infer_images_and_video(trained, media, tmp_path):
    config, run, _ = trained
    folder, video = media
    out = tmp_path / "out"
    result = invoke("infer", folder, video, "--config", config, "--weights", run, "--out", out)
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in folder.iterdir())
    for name in names:
        assert (out / f"{Path(name).stem}_pose.png").is_file()
    assert count_frames(out / "clip_pose.mp4") == 5
    preds = json.loads((out / "predictions.json").read_text())
    assert sorted(preds) == sorted(names + [f"clip.mp4#{i}" for i in range(5)])
    for name, records in preds.items():
        assert len(records) == 1  # no boxes: one whole-image box per image / frame
        kp = np.asarray(records[0]["keypoints"]).reshape(17, 3)
        assert np.isfinite(kp).all() and records[0]["image_id"] in (name, f"clip_{name[-1]:0>6}")
    assert "7 image(s)/frame(s)" in clean(result.output)


def test_infer_honours_boxes(trained, media, tmp_path):
    from humanvision.data.io import read_image

    config, run, _ = trained
    folder, _ = media
    first, second = sorted(folder.iterdir())
    boxes = [[4.0, 6.0, 40.0, 50.0], [70.0, 60.0, 50.0, 60.0]]
    box_file = tmp_path / "boxes.json"
    box_file.write_text(json.dumps([{"image": first.name, "bbox": b, "score": 0.9} for b in boxes]))
    out = tmp_path / "out"
    result = invoke("infer", first, second, "--config", config, "--weights", run, "--boxes", box_file,
                    "--out", out)
    assert result.exit_code == 0, result.output
    preds = json.loads((out / "predictions.json").read_text())
    assert len(preds[second.name]) == 1  # not in the boxes file: the whole image
    records = preds[first.name]
    assert len(records) == 2  # far apart: OKS-NMS keeps both
    # argmax-decoded joints lie inside the padded (x 1.25), square crop of their box
    centres = np.array([[x + w / 2, y + h / 2, 1.25 * max(w, h) / 2] for x, y, w, h in boxes])
    for r in records:
        kp = np.asarray(r["keypoints"]).reshape(17, 3)
        ok = kp[:, 2] > 0
        assert ok.any()
        inside = [(np.abs(kp[ok, :2] - c[:2]) <= c[2] + 1e-3).all() for c in centres]
        assert sum(inside) == 1
    assert read_image(out / f"{first.stem}_pose.png").shape[:2] == (128, 128)

    box_file.write_text(json.dumps([{"image": first.name, "bbox": [1, 2, 3]}]))
    result = invoke("infer", first, "--config", config, "--weights", run, "--boxes", box_file, "--out", out)
    assert result.exit_code == 1 and "box #0" in clean(result.output)


# --------------------------------------------------------------------------------------------------- configs
def _must_exist_nulls(data: dict) -> list[str]:
    """``key=null`` overrides for the ``must_exist`` paths of a recipe that are not on this machine (datasets,
    pretrained weights), so that everything else in the file is still validated."""
    import dataclasses
    import typing

    out = []
    hints = typing.get_type_hints(TopDownRecipe)
    for section, value in data.items():
        schema = hints.get(section)
        if not (dataclasses.is_dataclass(schema) and isinstance(value, dict)):
            continue
        for f in dataclasses.fields(schema):
            v = value.get(f.name)
            if f.metadata.get("must_exist") and isinstance(v, str) and not Path(v).exists():
                out.append(f"{section}.{f.name}=null")
    return out


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")) or [pytest.param(None, marks=pytest.mark.skip(
    reason="no configs/*.yaml yet"))], ids=lambda p: p.name if p else "none")
def test_config_loads(path):
    """Every recipe validates and its model, input size, arguments and codec build (on the meta device: no
    memory, no time)."""
    from humanvision.methods.topdown import build_method

    data = yaml.safe_load(path.read_text())
    recipe = load_config(path, TopDownRecipe, _must_exist_nulls(data))
    recipe.model.weights = None
    with torch.device("meta"):
        method = build_method(recipe)
    if recipe.model.input_size is not None:
        assert method.model.input_size == tuple(recipe.model.input_size)
    assert method.codec.input_size == method.model.input_size


def test_demo_recipe_matches_configs_file():
    path = CONFIGS / "synthetic_tiny.yaml"
    if not path.is_file():
        pytest.skip("configs/synthetic_tiny.yaml not written yet")
    from humanvision.cli.pose import DEMO_RECIPE

    assert load_config(DEMO_RECIPE, TopDownRecipe) == load_config(path, TopDownRecipe)
