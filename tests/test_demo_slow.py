"""The README's main job: synthetic COCO-format data -> train the small recipe on CPU -> OKS AP on unseen people.

The issue's target is OKS AP >= 0.85 within 10 minutes of CPU training; the small recipe reaches AP 0.62
(AP50 0.93, PCK@0.2 of the box size 94%) on this project's 2-core machines, so this test guards what is reached
today without claiming the target: the run keeps to its time budget (``train.max_minutes`` ends it, the schedule
follows the time used, so a slower machine trains fewer steps instead of running over) and learns far beyond an
untrained model (AP 0.0).
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
    assert metrics["train_minutes"] <= 10.0, metrics
    assert metrics["num_gt_instances"] >= 100
    assert metrics["AP"] >= 0.45, metrics
    assert metrics["PCK@0.2"] >= 88.0, metrics
    assert (tmp_path / "run" / "overlays.png").stat().st_size > 10_000
