"""The README's main job: synthetic COCO-format data -> train the small recipe on CPU -> OKS AP on unseen people.

The demo trains in the precision measured fastest on the machine (bf16 + channels-last where the CPU has native
bf16, fp32 + channels-last where bf16 is emulated) for a 9-minute budget, but never fewer than ``train.min_steps``
steps: a CPU without native bf16 trains longer (and says so) instead of returning an untrained model. This test
guards what is reached on every machine (AP >= 0.45; about 0.62 where bf16 is native) and that the run either kept
to its budget or stopped exactly at the floor.
"""

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_trains_and_evaluates(tmp_path):
    # A fresh process, as a user runs it: other test modules pin torch to 1 thread for the rest of the session.
    result = subprocess.run([sys.executable, "-m", "humanvision.cli", "demo", "--out", str(tmp_path / "run"),
                             "--data", str(tmp_path / "data")], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "demo_metrics.json").read_text())
    assert "precision: " in result.stdout and metrics["measured_images_per_s"] > 0
    if metrics["budget_extended"]:  # a slow machine: held up by the floor, and told why
        assert metrics["steps"] == metrics["min_steps"] and "train.min_steps" in metrics["note"], metrics
        assert "note: " in result.stdout
    else:
        assert metrics["train_minutes"] <= 10.0 and metrics["steps"] >= metrics["min_steps"], metrics
    assert metrics["num_gt_instances"] >= 100
    assert metrics["AP"] >= 0.45, metrics
    assert metrics["PCK@0.2"] >= 88.0, metrics
    assert (tmp_path / "run" / "overlays.png").stat().st_size > 10_000
