"""The README's main job: synthetic COCO-format data -> train the small recipe on CPU -> OKS AP on unseen people."""

import json

import pytest
from typer.testing import CliRunner

from humanvision.cli import app


@pytest.mark.slow
def test_demo_reaches_ap_threshold(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "run"), "--data", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "demo_metrics.json").read_text())
    assert metrics["train_minutes"] <= 10.0, metrics
    assert metrics["num_gt_instances"] >= 100
    assert metrics["AP"] >= 0.85, metrics
    assert (tmp_path / "run" / "overlays.png").stat().st_size > 10_000
