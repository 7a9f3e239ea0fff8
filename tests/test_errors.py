"""Errors the library raises on purpose are HumanVisionError subclasses, and the CLI prints them as one
message that names the key, file, sample and joint at fault (never a traceback)."""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import humanvision
from humanvision.cli import app
from humanvision.config import load_config
from humanvision.errors import ConfigError, HumanVisionError
from humanvision.methods.topdown import ModelConfig, TopDownRecipe
from humanvision.skeletons import SkeletonError, get_skeleton

RUNNER = CliRunner()
ENV = {"COLUMNS": "250", "NO_COLOR": "1"}  # rich wraps error messages at the terminal width


def invoke(*args):
    return RUNNER.invoke(app, [str(a) for a in args], env=ENV)


def assert_clean_failure(result, *fragments: str) -> None:
    """Exit code 1 through typer.Exit (no uncaught exception), every fragment in the message, no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    text = " ".join(result.output.split())
    assert "Traceback" not in text
    for f in fragments:
        assert f in text, f"{f!r} not in {text!r}"


# ----------------------------------------------------------------------------------------------- hierarchy
def test_every_library_exception_derives_from_humanvision_error():
    found = []
    for info in pkgutil.walk_packages(humanvision.__path__, "humanvision."):
        if info.name.endswith("__main__"):
            continue  # running it starts the CLI
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("humanvision"):
                found.append(obj)
    assert SkeletonError in found and ConfigError in found
    wrong = sorted({f"{c.__module__}.{c.__name__}" for c in found if not issubclass(c, HumanVisionError)})
    assert wrong == []
    with pytest.raises(HumanVisionError, match="unknown skeleton 'cocoo'"):
        get_skeleton("cocoo")


# ----------------------------------------------------------------------------------------------- ModelConfig
def test_model_config_validates_skeleton_name_and_args():
    with pytest.raises(ConfigError, match=r"model\.skeleton: unknown skeleton 'cocoo'"):
        load_config({"model": {"skeleton": "cocoo"}}, TopDownRecipe)
    with pytest.raises(ConfigError, match=r"model\.name: unknown model 'vitpose_bsae'; "
                                          r"did you mean vitpose_base"):
        ModelConfig(name="vitpose_bsae")
    with pytest.raises(ConfigError, match=r"model\.args\.drop_path_rat: not an argument of vitpose_small "
                                          r"\(did you mean drop_path_rate\?\); accepted: .*embed_dim"):
        load_config({"model": {"name": "vitpose_small", "args": {"drop_path_rat": 0.1}}}, TopDownRecipe)
    with pytest.raises(ConfigError, match=r"model\.args\.skeleton: .*model\.skeleton"):
        ModelConfig(name="vitpose_small", args={"skeleton": "mpii16"})
    ok = ModelConfig(name="vitpose_small", skeleton="h36m", args={"drop_path_rate": 0.2})
    assert ok.args["drop_path_rate"] == 0.2


def test_infer_with_unknown_skeleton_prints_a_message(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"model": {"name": "simplebaseline_tiny", "skeleton": "cocoo"}}))
    # a real process: what a user sees, including rich's traceback if an exception escapes
    cmd = [sys.executable, "-m", "humanvision", "infer", tmp_path / "img.png", "-c", recipe,
           "-w", tmp_path / "none.safetensors"]
    proc = subprocess.run([str(c) for c in cmd], check=False, capture_output=True, text=True,
                          env={**os.environ, **ENV}, cwd=Path(__file__).resolve().parents[1], timeout=120)
    text = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 1, text
    assert "Traceback" not in text
    assert "recipe.yaml" in text and "model.skeleton: unknown skeleton 'cocoo'" in text


# ------------------------------------------------------------------------------------------- evaluate mpjpe
@pytest.fixture()
def pose_files(tmp_path):
    gt = np.random.default_rng(0).normal(size=(6, 17, 3)) * 300.0
    np.save(tmp_path / "gt.npy", gt)
    np.save(tmp_path / "pred.npy", gt + 5.0)
    return tmp_path, gt


@pytest.mark.parametrize("which", ["pred", "gt"])
def test_mpjpe_non_finite_names_file_frame_and_joint(pose_files, which):
    tmp, gt = pose_files
    bad = gt.copy()
    bad[4, 11, 2] = np.nan
    bad[5, 0, 0] = np.inf
    np.save(tmp / f"{which}_bad.npy", bad)
    files = {"gt": tmp / "gt.npy", "pred": tmp / "pred.npy", which: tmp / f"{which}_bad.npy"}
    r = invoke("evaluate", "mpjpe", "--gt", files["gt"], "--pred", files["pred"])
    where = f"{which}_bad.npy: frame index 4: field {which}: joint 11 (right_elbow) is not finite"
    assert_clean_failure(r, where, "2 non-finite joints in 2 frames")


def test_mpjpe_shape_mismatch_names_both_files(pose_files):
    tmp, gt = pose_files
    np.save(tmp / "pred16.npy", gt[:, :16])
    r = invoke("evaluate", "mpjpe", "--gt", tmp / "gt.npy", "--pred", tmp / "pred16.npy")
    assert_clean_failure(r, "pred16.npy has shape (6, 16, 3) but", "gt.npy has shape (6, 17, 3)")
