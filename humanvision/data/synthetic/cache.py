"""Synthetic datasets written once per parameter set: the rule every recipe with ``source: synthetic`` follows.

A stamp file in the dataset folder records the parameters it was written with, so a recipe that asks for other
parameters (a count, a size, a seed) rewrites it and one that asks for the same reuses it. Under torchrun only rank 0
writes; the other ranks wait for the stamp.

>>> write_once("data/synthetic_coco", {"train": 10, "seed": 0},
...            lambda progress: generate_coco("data/synthetic_coco", 10, progress=progress))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from humanvision.errors import DataError

__all__ = ["STAMP", "write_once"]

STAMP = "humanvision_synthetic.json"
Progress = Callable[[int, int], None]


def write_once(root: str | Path, params: dict[str, Any], generate: Callable[[Progress], Any], *, quiet: bool = False,
               description: str | None = None, stamp: str = STAMP, timeout_s: float = 3600.0) -> bool:
    """Run ``generate(progress)`` (which writes into ``root``; ``progress(done, total)`` moves a progress bar
    titled ``description``) unless ``root / stamp`` already holds ``params``, then write the stamp. Returns whether
    it wrote. Ranks other than 0 (``RANK``) only wait, up to ``timeout_s``, for rank 0's stamp."""
    root = Path(root)
    path = root / stamp

    def ready() -> bool:
        return path.is_file() and json.loads(path.read_text()) == params

    if int(os.environ.get("RANK", "0")) != 0:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if time.monotonic() > deadline:
                raise DataError("timed out waiting for rank 0 to write the synthetic data", file=str(path))
            time.sleep(2)
        return False
    if ready():
        return False
    from rich.progress import Progress as Bar

    root.mkdir(parents=True, exist_ok=True)
    with Bar(disable=quiet) as bar:
        task = bar.add_task(description or f"synthesising -> {root}", total=None)
        generate(lambda done, total: bar.update(task, completed=done, total=total))
    path.write_text(json.dumps(params))
    return True
