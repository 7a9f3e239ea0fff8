"""Fixtures shared by several test files."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def single_and_two_ranks():
    """``run(args, single_out, sharded_out)``: ``python -m humanvision.cli *args --out single_out`` in one process,
    then the same with ``--out sharded_out`` as two torchrun-style ranks (``RANK`` / ``WORLD_SIZE`` / gloo on
    localhost, one thread each); asserts that every process exits with 0."""
    def run(args: list[str], single: Path, sharded: Path) -> None:
        args = ["-m", "humanvision.cli", *map(str, args)]
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        env.update(OMP_NUM_THREADS="1")
        one = subprocess.run([sys.executable, *args, "--out", str(single)], check=False, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
        assert one.returncode == 0, one.stdout[-3000:]
        env.update(WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
        ranks = [subprocess.Popen([sys.executable, *args, "--out", str(sharded)],
                                  env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for r in range(2)]
        for r, proc in enumerate(ranks):
            out, _ = proc.communicate(timeout=300)
            assert proc.returncode == 0, f"rank {r}:\n{out[-3000:]}"

    return run
