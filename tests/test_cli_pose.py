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
from humanvision.config import load_config, recipe_mapping
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
                  "output_dir": str(output_dir), "precision": "fp32", "channels_last": False},
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
    # the resolved recipe next to the run reproduces the run on its own, from any folder (absolute paths)
    saved, given = load_config(run / "config.yaml", TopDownRecipe), load_config(config, TopDownRecipe)
    assert saved.data.synthetic_dir == given.data.synthetic_dir.absolute() and saved.data.synthetic_dir.is_absolute()
    saved.data.synthetic_dir = given.data.synthetic_dir
    assert saved == given


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
    # file names are not all numeric: ids follow the input order and image_ids.json maps names to them
    ids = json.loads((out / "image_ids.json").read_text())
    assert ids == {**{n: i for i, n in enumerate(names)}, **{f"clip_{i:06d}": 2 + i for i in range(5)}}
    for name, records in preds.items():
        assert len(records) == 1  # no boxes: one whole-image box per image / frame
        kp = np.asarray(records[0]["keypoints"]).reshape(17, 3)
        key = name if "#" not in name else f"clip_{int(name.split('#')[1]):06d}"
        assert np.isfinite(kp).all() and records[0]["image_id"] == ids[key]
    results = json.loads((out / "results.json").read_text())  # the same records as one COCO result list
    assert results == [r for rs in preds.values() for r in rs] and len(results) == 7
    assert "7 image(s)/frame(s)" in clean(result.output) and "precision: " in result.output


def test_infer_results_are_a_coco_result_file(trained, coco_dir, tmp_path):
    """``infer --coco-ann`` writes results.json with the annotation file's image ids: ``evaluate coco`` and
    pycocotools accept it and agree."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    config, run, _ = trained
    ann = coco_dir / "annotations/person_keypoints_val.json"
    images = json.loads(ann.read_text())["images"]
    boxes = tmp_path / "boxes.json"  # ground-truth boxes, as the COCO protocol with GT boxes
    gt = json.loads(ann.read_text())
    name = {im["id"]: im["file_name"] for im in images}
    boxes.write_text(json.dumps([{"image": name[a["image_id"]], "bbox": a["bbox"]} for a in gt["annotations"]]))
    out = tmp_path / "out"
    result = invoke("infer", coco_dir / "val", "--config", config, "--weights", run, "--boxes", boxes,
                    "--coco-ann", ann, "--out", out)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert {r["image_id"] for r in results} <= {im["id"] for im in images} and len(results) >= len(images)
    assert all(isinstance(r["image_id"], int) and r["category_id"] == 1 and len(r["keypoints"]) == 51
               for r in results)
    summary = tmp_path / "summary.json"
    result = invoke("evaluate", "coco", "--gt", ann, "--results", out / "results.json", "--out", summary)
    assert result.exit_code == 0, result.output
    coco_gt = COCO(str(ann))
    ev = COCOeval(coco_gt, coco_gt.loadRes(str(out / "results.json")), "keypoints")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    ours = json.loads(summary.read_text())["stats"]  # an untrained model: the point is that both accept the file
    assert [ours[k] for k in STAT_NAMES] == pytest.approx(list(ev.stats), abs=1e-9)
    # an image that is not in the annotation file is a named error, not a KeyError
    stray = tmp_path / "stray.png"
    shutil.copy(min((coco_dir / "val").glob("*.png")), stray)
    result = invoke("infer", stray, "--config", config, "--weights", run, "--coco-ann", ann, "--out", out)
    assert result.exit_code == 1 and "stray.png: not among the images of" in clean(result.output)


def test_a_trained_run_is_usable_from_another_folder(coco_dir, tmp_path, monkeypatch):
    """A recipe with paths relative to where it was trained: the saved config.yaml holds absolute paths, and
    infer / eval need only the paths they use (infer none of the data, eval not the training set)."""
    work = tmp_path / "work"
    shutil.copytree(coco_dir, work / "data")
    monkeypatch.chdir(work)
    rel = recipe_dict(Path("data"), Path("runs/rel"), max_steps=1)
    rel["eval"]["batch_size"] = 8
    config = write_recipe(work / "rel.yaml", rel)
    assert invoke("train", "rel.yaml").exit_code == 0
    saved = yaml.safe_load((work / "runs/rel/config.yaml").read_text())
    assert saved["data"]["train_ann"] == str(work / "data/annotations/person_keypoints_train.json")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    image = min((work / "data/val").glob("*.png"))
    for cfg in (work / "runs/rel/config.yaml", config):  # the saved recipe, and the relative one
        result = invoke("infer", image, "--config", cfg, "--weights", work / "runs/rel", "--out", "out")
        assert result.exit_code == 0, result.output
        assert (elsewhere / "out" / f"{image.stem}_pose.png").is_file()
    val = work / "data/annotations/person_keypoints_val.json"
    result = invoke("eval", config, "--weights", work / "runs/rel", "--set", f"data.val_ann={val}", "--set",
                    f"data.val_images={work / 'data/val'}", "--out", "eval")
    assert result.exit_code == 0, result.output
    assert json.loads((elsewhere / "eval/metrics.json").read_text())["num_gt_instances"] > 0
    result = invoke("eval", config, "--weights", work / "runs/rel")  # the validation set is still required
    assert result.exit_code == 1 and "data.val_ann: file not found" in clean(result.output)


def test_demo_rejects_a_bad_recipe_before_any_work(tmp_path):
    result = invoke("demo", "--out", tmp_path / "run", "--data", tmp_path / "data", "--set",
                    "model.name=lateral_smal")
    assert result.exit_code == 1 and "model.name" in clean(result.output)
    assert "did you mean lateral_small" in clean(result.output)
    result = invoke("demo", "--out", tmp_path / "run", "--data", tmp_path / "data", "--set",
                    "model.args={drop_rate: 0.1}")
    assert result.exit_code == 1 and "model.args.drop_rate" in clean(result.output)
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()  # nothing rendered or trained


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


def test_configs_are_in_the_repository():
    """The recipes ship with the repository: a missing folder or file fails here instead of skipping below."""
    names = {p.name for p in CONFIGS.glob("*.yaml")}
    assert {"synthetic_tiny.yaml", "hrnet_w32_coco_256x192.yaml", "vitpose_base_coco_256x192.yaml",
            "vitpose_base_mpii_256x256.yaml"} <= names, f"recipes missing from {CONFIGS}: found {sorted(names)}"


# the other methods' recipes load in their own tests: test_pct.py (pct_*), test_monocular3d.py (zhou3d_*),
# test_algebraic.py (lt_*)
OTHER_METHODS = ("pct", "stage", "triangulation", "pretrain", "hcmoco", "reid", "attributes", "t2i", "parsing", "a2j",
                 "mesh3d")  # the sections that make a recipe another method's (each tests its own recipes)


@pytest.mark.parametrize("path", sorted(p for p in CONFIGS.glob("*.yaml")
                                        if not set(OTHER_METHODS) & set(recipe_mapping(p))), ids=lambda p: p.name)
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
    assert path.is_file(), f"{path} is part of the repository"
    from humanvision.cli.pose import DEMO_RECIPE

    assert load_config(DEMO_RECIPE, TopDownRecipe) == load_config(path, TopDownRecipe)
