"""``humanvision infer`` sharded over torchrun ranks (issue 15): ``torchrun --nproc_per_node N -m humanvision.cli infer``.

The input files (images and videos, after folders are expanded) are split by file into ``world_size`` contiguous
blocks balanced by count (a video's frames stay with their video, so tracking sees every frame in order). Each rank
runs the ordinary per-file loop on its block, writing its overlays / ``{video}_tracks.json`` into ``--out`` and
its predictions into ``_infer_part{rank}-of-{world}.json``. After a barrier rank 0 merges the parts in rank order,
which is the input order, so ``predictions.json``, ``results.json``, ``image_ids.json`` and ``videos.json`` are
those of a single-process run; then it removes the parts. Ranks come from the environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``), so several nodes work the same way; without them nothing changes.

Image ids numbered by input order (file names neither numeric nor from ``--coco-ann``) are counted per rank and
renumbered at the merge in order of first appearance, as the single process numbers them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from humanvision.engine.distributed import DistInfo, barrier, cleanup, init_distributed
from humanvision.errors import DataError

__all__ = ["finish_sharded", "merge_parts", "part_path", "read_parts", "shard_bounds", "shard_files",
           "start_sharded", "write_part"]

#: Process-group timeout: the ranks wait at the merge barrier for the slowest one (large inputs take hours).
TIMEOUT_S = 7 * 24 * 3600.0


def shard_bounds(num_files: int, world_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each rank's block: contiguous, in order, sizes differing by at most one (the first
    ``num_files % world_size`` ranks take one more)."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    base, extra = divmod(num_files, world_size)
    bounds, start = [], 0
    for r in range(world_size):
        stop = start + base + (r < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


def shard_files(files: list[Path], rank: int, world_size: int) -> list[Path]:
    """The files of ``rank`` (see :func:`shard_bounds`)."""
    start, stop = shard_bounds(len(files), world_size)[rank]
    return files[start:stop]


def part_path(out: Path, rank: int, world_size: int) -> Path:
    return Path(out) / f"_infer_part{rank}-of-{world_size}.json"


def write_part(out: Path, rank: int, world_size: int, files: list[Path], predictions: dict[str, list],
               image_ids: dict[str, int], video_stats: dict[str, dict], frames: int) -> Path:
    """One rank's results (written to a temporary name first, so a part file is always complete)."""
    path = part_path(out, rank, world_size)
    part = {"rank": rank, "world_size": world_size, "files": [str(f) for f in files], "frames": frames,
            "predictions": list(predictions.items()), "image_ids": list(image_ids.items()),
            "video_stats": video_stats}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(part))
    os.replace(tmp, path)
    return path


def read_parts(out: Path, files: list[Path], world_size: int) -> list[dict[str, Any]]:
    """Every rank's part, in rank order; a missing, unreadable or stale part (other files than the rank's block)
    is a :class:`DataError` naming the file and the rank."""
    parts = []
    for rank, (start, stop) in enumerate(shard_bounds(len(files), world_size)):
        path = part_path(out, rank, world_size)
        try:
            part = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"rank {rank} wrote no part file (did it fail?)", file=str(path)) from None
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"cannot read rank {rank}'s part: {e}", file=str(path)) from None
        if part.get("files") != [str(f) for f in files[start:stop]]:
            raise DataError(f"rank {rank}'s part is for other inputs (a stale part of an earlier run?)",
                            file=str(path))
        parts.append(part)
    return parts


def merge_parts(parts: list[dict[str, Any]], renumber_ids: bool
                ) -> tuple[dict[str, list], dict[str, int], dict[str, dict], int]:
    """``(predictions, image_ids, video_stats, frames)`` of the parts concatenated in rank order, as one process
    would have made them: later keys overwrite earlier ones in place (dict order), and with ``renumber_ids`` the
    per-rank counted image ids become the global first-appearance order (records' ``image_id`` rewritten)."""
    predictions: dict[str, list] = {}
    image_ids: dict[str, int] = {}
    video_stats: dict[str, dict] = {}
    frames = 0
    for part in parts:
        local = dict(part["image_ids"])
        remap: dict[int, int] = {}
        for name, i in local.items():
            if renumber_ids:
                image_ids.setdefault(name, len(image_ids))
                remap[int(i)] = image_ids[name]
            else:
                image_ids[name] = int(i)
        for key, records in part["predictions"]:
            if renumber_ids:
                for r in records:
                    if "image_id" in r:
                        r["image_id"] = remap[int(r["image_id"])]
            predictions[key] = records
        video_stats.update(part["video_stats"])
        frames += int(part["frames"])
    return predictions, image_ids, video_stats, frames


def start_sharded(files: list[Path]) -> tuple[list[Path], DistInfo | None]:
    """Under torchrun (``WORLD_SIZE`` > 1): join the process group (gloo: ``infer`` runs on the CPU) and return
    this rank's files; else ``(files, None)`` and nothing happens."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return files, None
    info = init_distributed("cpu", timeout_s=TIMEOUT_S)
    return shard_files(files, info.rank, info.world_size), info


def finish_sharded(info: DistInfo, out: Path, files: list[Path], predictions: dict[str, list],
                   image_ids: dict[str, int], video_stats: dict[str, dict], frames: int, renumber_ids: bool
                   ) -> tuple[dict[str, list], dict[str, int], int] | None:
    """Write this rank's part, wait for all ranks, and on rank 0 merge the parts (rewriting ``videos.json``),
    remove them and return ``(predictions, image_ids, frames)``; other ranks return None. ``files`` are all the
    inputs, in order. Leaves the process group."""
    try:
        mine = shard_files(files, info.rank, info.world_size)
        write_part(out, info.rank, info.world_size, mine, predictions, image_ids, video_stats, frames)
        barrier()
        if not info.is_main:
            return None
        parts = read_parts(out, files, info.world_size)
        predictions, image_ids, video_stats, frames = merge_parts(parts, renumber_ids)
        if video_stats:  # each rank wrote its own videos.json: the merged one replaces them
            (Path(out) / "videos.json").write_text(json.dumps(video_stats, indent=1))
        for rank in range(info.world_size):
            part_path(out, rank, info.world_size).unlink()
        return predictions, image_ids, frames
    finally:
        cleanup()
