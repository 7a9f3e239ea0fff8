"""The write-once rule of synthetic datasets (humanvision/data/synthetic/cache.py)."""

from __future__ import annotations

import gc
import json
import os
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


class _Finalised:
    """Cyclic garbage (only the collector frees it) whose finaliser records the process that ran it."""

    def __init__(self, path) -> None:
        self.path, self.me = path, self

    def __del__(self) -> None:
        with open(self.path, "a") as f:
            f.write(f"{os.getpid()}\n")


def _collect_in_worker(_: int) -> int:
    gc.collect()
    return os.getpid()


def test_worker_pool_children_do_not_finalise_inherited_garbage(tmp_path):
    """The writers' pool is forked; a child that finalises an object it inherited (an onnxruntime session left by
    an earlier export) hangs in its destructor. ``worker_pool`` collects in the parent first and freezes the rest,
    so every finaliser runs in the parent, exactly once."""
    from humanvision.data.synthetic.parallel import worker_pool

    marker = tmp_path / "finalised.txt"
    gc.disable()  # keep the garbage alive until the pool starts, as a busy parent would
    try:
        _Finalised(marker)  # unreachable at once, but only a collection frees it
        with worker_pool(2) as pool:
            pids = pool.map(_collect_in_worker, range(4))
    finally:
        gc.enable()
    gc.collect()
    assert set(pids) and os.getpid() not in pids
    assert marker.read_text().split() == [str(os.getpid())]
