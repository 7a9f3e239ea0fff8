"""The write-once rule of synthetic datasets (humanvision/data/synthetic/cache.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from humanvision.data.synthetic.cache import STAMP, write_once
from humanvision.errors import DataError


def test_written_once_per_parameter_set(tmp_path: Path):
    calls = []

    def generate(progress):
        calls.append(1)
        progress(1, 2)
        (tmp_path / "data.txt").write_text(str(len(calls)))
        progress(2, 2)

    assert write_once(tmp_path, {"n": 1}, generate, quiet=True)
    assert not write_once(tmp_path, {"n": 1}, generate, quiet=True)  # same parameters: reused
    assert json.loads((tmp_path / STAMP).read_text()) == {"n": 1}
    assert write_once(tmp_path, {"n": 2}, generate, quiet=True)  # other parameters: written again
    assert len(calls) == 2 and (tmp_path / "data.txt").read_text() == "2"


def test_a_failed_write_leaves_no_stamp(tmp_path: Path):
    def broken(progress):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_once(tmp_path, {"n": 1}, broken, quiet=True)
    assert not (tmp_path / STAMP).exists()


def test_other_ranks_wait_for_rank_0(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(DataError, match="timed out waiting for rank 0"):
        write_once(tmp_path, {"n": 1}, lambda progress: None, quiet=True, timeout_s=0.0)
    (tmp_path / STAMP).write_text(json.dumps({"n": 1}))
    assert not write_once(tmp_path, {"n": 1}, lambda progress: None, quiet=True, timeout_s=0.0)
