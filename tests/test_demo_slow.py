"""The README's main job: synthetic COCO-format data -> train the small recipe on CPU -> OKS AP on unseen people.

The issue's target is OKS AP >= 0.85 within 10 minutes of CPU training; the current tiny recipe reaches AP 0.56
(AP50 0.93, PCK@0.2 of the box size 92%) in ~9 minutes, so this test guards what is reached today: training finishes within
the budget and learns far beyond an untrained model (AP 0.0), without claiming the target.
"""

import json

import pytest
from typer.testing import CliRunner

from humanvision.cli import app


@pytest.mark.slow
def test_demo_trains_and_evaluates(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "run"), "--data", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "demo_metrics.json").read_text())
    assert metrics["train_minutes"] <= 10.0, metrics
    assert metrics["num_gt_instances"] >= 100
    assert metrics["AP"] >= 0.45, metrics
    assert metrics["PCK@0.2"] >= 88.0, metrics
    assert (tmp_path / "run" / "overlays.png").stat().st_size > 10_000
