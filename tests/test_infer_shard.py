"""``humanvision infer`` sharded over torchrun ranks (humanvision/cli/infer_shard.py): shard assignment, the merge,
and (slow) a 2-process gloo run on CPU whose merged outputs equal a single-process run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from humanvision.cli.infer_shard import (
    merge_parts,
    part_path,
    read_parts,
    shard_bounds,
    shard_files,
    write_part,
)
from humanvision.errors import DataError


@pytest.mark.parametrize("n", [0, 1, 2, 5, 7, 16])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_cover_every_file_once_in_order_balanced(n, world):
    files = [Path(f"f{i}.png") for i in range(n)]
    shards = [shard_files(files, r, world) for r in range(world)]
    assert [f for s in shards for f in s] == files  # each file exactly once, rank order = input order
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    assert [b - a for a, b in shard_bounds(n, world)] == sizes


def _single_process(names: list[str]) -> tuple[dict, dict]:
    """What one process makes: ids by first appearance, later keys overwrite in place."""
    ids: dict[str, int] = {}
    preds: dict[str, list] = {}
    for name in names:
        ids.setdefault(name, len(ids))
        preds[name] = [{"image_id": ids[name], "score": float(len(preds))}]
    return preds, ids


def test_merge_restores_input_order_and_renumbers_ids(tmp_path):
    names = ["b.png", "a.png", "c.png", "a.png", "d.png", "e.png", "f.png"]  # a duplicate across ranks
    ref_preds, ref_ids = _single_process(names)
    files = [Path(n) for n in names]
    world = 3
    for r in reversed(range(world)):  # written in any order
        mine = [f.name for f in shard_files(files, r, world)]
        preds, ids = {}, {}
        for name in mine:
            ids.setdefault(name, len(ids))  # per-rank counting
            preds[name] = [{"image_id": ids[name], "score": ref_preds[name][0]["score"]}]
        write_part(tmp_path, r, world, shard_files(files, r, world), preds, ids, {}, len(mine))
    predictions, image_ids, stats, frames = merge_parts(read_parts(tmp_path, files, world), renumber_ids=True)
    assert list(predictions) == list(ref_preds) and list(image_ids.items()) == list(ref_ids.items())
    assert predictions == ref_preds and frames == len(names) and stats == {}
    # ids that are not counted (numeric names / --coco-ann) are kept as they are
    kept, ids, _, _ = merge_parts(read_parts(tmp_path, files, world), renumber_ids=False)  # blocks [3 | 2 | 2]
    assert ids == {"b.png": 0, "a.png": 0, "c.png": 2, "d.png": 1, "e.png": 0, "f.png": 1}  # a later rank wins
    assert [r[0]["image_id"] for r in kept.values()] == [0, 0, 2, 1, 0, 1]


def test_missing_or_stale_part_is_a_named_error(tmp_path):
    files = [Path(f"{i}.png") for i in range(4)]
    write_part(tmp_path, 0, 2, files[:2], {}, {}, {}, 0)
    with pytest.raises(DataError, match=r"_infer_part1-of-2\.json: rank 1 wrote no part file"):
        read_parts(tmp_path, files, 2)
    write_part(tmp_path, 1, 2, files[:1], {}, {}, {}, 0)  # another run's inputs
    with pytest.raises(DataError, match=r"rank 1's part is for other inputs"):
        read_parts(tmp_path, files, 2)
    part_path(tmp_path, 1, 2).write_text("{not json")
    with pytest.raises(DataError, match=r"cannot read rank 1's part"):
        read_parts(tmp_path, files, 2)


# ------------------------------------------------------------------------------------- 2 processes (gloo, CPU)
@pytest.fixture()
def tiny_setup(tmp_path):
    """A random simplebaseline_tiny (saved weights), 3 noise images (non-numeric names) and a 4-frame video."""
    import cv2
    import safetensors.torch
    import torch
    import yaml

    from humanvision.config import load_config
    from humanvision.methods.topdown import TopDownRecipe, build_method

    recipe = {"name": "tiny_shard", "model": {"name": "simplebaseline_tiny", "skeleton": "coco17",
                                             "input_size": [64, 64]},
              "data": {"source": "coco", "train_ann": "none.json", "train_images": "none", "val_ann": "none.json",
                       "val_images": "none", "dark": False},
              "eval": {"flip_test": True, "precision": "fp32", "channels_last": False}}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(recipe))
    torch.manual_seed(0)
    method = build_method(load_config(config, TopDownRecipe, unchecked=("data.",)))
    weights = tmp_path / "tiny.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in method.state_dict().items()}, str(weights))
    rng = np.random.default_rng(0)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("b_img.png", "a_img.png", "c_img.png"):
        cv2.imwrite(str(inputs / name), rng.integers(0, 255, (48, 40, 3), dtype=np.uint8))
    writer = cv2.VideoWriter(str(inputs / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (64, 64))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write mp4v")
    for _ in range(4):
        writer.write(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    writer.release()
    return config, weights, inputs


@pytest.mark.slow
def test_two_process_infer_equals_single_process(tiny_setup, tmp_path, single_and_two_ranks):
    config, weights, inputs = tiny_setup
    # 5 files: c_img, a_img, b_img, c_img, clip.mp4 -> ranks [3 | 2]
    single_and_two_ranks(["infer", inputs / "c_img.png", inputs, "--config", config, "--weights", weights],
                         tmp_path / "single", tmp_path / "sharded")

    one, two = tmp_path / "single", tmp_path / "sharded"
    for name in ("predictions.json", "results.json", "image_ids.json", "videos.json", "clip_tracks.json"):
        assert json.loads((two / name).read_text()) == json.loads((one / name).read_text()), name
    assert (two / "predictions.json").read_text() == (one / "predictions.json").read_text()  # key order too
    assert list(json.loads((one / "image_ids.json").read_text()).values()) == list(range(7))  # 3 images, 4 frames
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())  # no parts left
