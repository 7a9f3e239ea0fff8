"""Pre-training and person-image recipes through the command line: ``humanvision train`` dispatches a
``pretrain`` (HAP / MAE) recipe, ``humanvision export`` writes its encoder, a ``reid`` recipe fine-tunes from it and
``humanvision eval`` reports its mAP; ``eval`` / ``infer`` refuse recipes they cannot run with a message."""

from __future__ import annotations

from pathlib import Path

import torch
from typer.testing import CliRunner

from humanvision.cli import app

torch.set_num_threads(1)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RUNNER = CliRunner()
ENV = {"COLUMNS": "250", "NO_COLOR": "1"}


def invoke(*args):
    return RUNNER.invoke(app, [str(a) for a in args], env=ENV)


def clean(text: str) -> str:
    return " ".join(text.split())


def test_hap_pretraining_to_reid_through_the_cli(tmp_path: Path):
    crops, market = tmp_path / "crops", tmp_path / "market"
    run = tmp_path / "hap"
    r = invoke("train", CONFIGS / "hap_vit_tiny_synthetic.yaml", "--set", f"data.synthetic_dir={crops}",
               "--set", "data.synthetic_num=8", "--set", "train.batch_size=4", "--set", "train.max_steps=2",
               "--set", f"train.output_dir={run}", "--set", "train.progress=false", "--set", "train.precision=fp32",
               "--set", "pretrain.model=pose_mae_vit_tiny_patch16")
    assert r.exit_code == 0, r.output
    assert (run / "last").is_dir() and any((run / "snapshots").glob("step_*.png"))

    r = invoke("export", CONFIGS / "hap_vit_tiny_synthetic.yaml", "--weights", run, "--out", tmp_path / "enc.pth")
    assert r.exit_code == 0, r.output
    state = torch.load(tmp_path / "enc.pth")
    assert state["pos_embed"].shape == (1, 129, 192) and not any(k.startswith("decoder") for k in state)

    r = invoke("eval", CONFIGS / "hap_vit_tiny_synthetic.yaml", "--weights", run)
    assert r.exit_code == 1 and "has no evaluation of its own" in clean(r.output)

    reid_run = tmp_path / "reid"
    reid_args = ["--set", f"data.synthetic_dir={market}", "--set", "data.synthetic_train_ids=4",
                 "--set", "data.synthetic_test_ids=3", "--set", "data.synthetic_cameras=2"]
    r = invoke("train", CONFIGS / "reid_vit_tiny_synthetic.yaml", *reid_args, "--set", f"model.init={tmp_path / 'enc.pth'}",
               "--set", "train.batch_size=8", "--set", "reid.num_instances=2", "--set", "train.max_steps=2",
               "--set", f"train.output_dir={reid_run}", "--set", "train.progress=false",
               "--set", "train.precision=fp32", "--set", "eval.num_vis=2")
    assert r.exit_code == 0, r.output
    assert "trunk initialised from" in clean(r.output)

    r = invoke("eval", CONFIGS / "reid_vit_tiny_synthetic.yaml", "--weights", reid_run, *reid_args,
               "--out", tmp_path / "eval")
    assert r.exit_code == 0, r.output
    out = clean(r.output)
    assert "mAP" in out and "rank1" in out and (tmp_path / "eval" / "metrics.json").is_file()

    r = invoke("infer", tmp_path, "--config", CONFIGS / "reid_vit_tiny_synthetic.yaml", "--weights", reid_run,
               "--out", tmp_path / "inf")
    assert r.exit_code == 1 and "evaluated on its dataset's protocol" in clean(r.output)
