"""torchrun / DistributedDataParallel helpers and a deterministic, shardable, resumable sampler.

Launch with ``torchrun --nproc_per_node N train.py``: :func:`init_distributed` reads ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` from the environment and joins the process group (NCCL on CUDA, gloo on CPU). Without these variables
everything runs as a single process and the collectives below are no-ops.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler, get_worker_info

from humanvision.errors import ConfigError

__all__ = [
    "DistInfo",
    "ResumableSampler",
    "SeededDataset",
    "all_gather_objects",
    "all_reduce_mean",
    "barrier",
    "cleanup",
    "init_distributed",
    "resolve_device",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` → ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; ``cuda`` → ``cuda:<local_rank>``."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{local_rank}"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {device!r} requested but CUDA is not available")
    return dev


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the torchrun process group named by the environment (or run single-process) and pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", init_method="env://", rank=rank,
                                world_size=world_size, timeout=timedelta(seconds=timeout_s))
    return DistInfo(rank, world_size, local_rank, dev)


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over all ranks (a copy; the input is untouched). Identity when not distributed."""
    if not _active():
        return tensor
    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), indexed by rank, on every rank."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if _active():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (call once at the end of a torchrun script). All ranks meet at a barrier first, so
    no rank tears its connections down while another still finishes a collective with it (under load gloo then
    aborted the slower rank at exit: "terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def sample_seeds(seed: int, epoch: int, indices: np.ndarray) -> np.ndarray:
    """32-bit seeds, a hash of (seed, epoch, dataset index): the same sample gets the same seed in an epoch."""
    with np.errstate(over="ignore"):
        base = _splitmix64(np.array([seed], dtype=np.uint64) ^ (np.uint64(epoch) << np.uint64(32)))
        return (_splitmix64(base ^ indices.astype(np.uint64)) >> np.uint64(32)).astype(np.int64)


class ResumableSampler(Sampler[tuple[int, int]]):
    """Epoch order as a pure function of ``(seed, epoch)``, sharded over ranks, startable mid-epoch.

    The epoch's permutation (identity if ``shuffle=False``) is padded by repetition to a multiple of
    ``world_size``; rank ``r`` takes positions ``r, r + W, r + 2W, ...`` (the ``DistributedSampler`` layout, so
    with per-rank batch ``B / W`` the union of the ranks' k-th batches is the k-th batch of a single process with
    batch ``B``). ``set_epoch(epoch, start)`` skips the first ``start`` of this rank's samples, which is how a
    resumed run continues from the exact position. Yields ``(index, sample_seed)`` for :class:`SeededDataset`.
    """

    def __init__(self, num_items: int, *, shuffle: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        if num_items <= 0:
            raise ConfigError("train dataset is empty")
        self.num_items, self.shuffle, self.seed = num_items, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.num_samples = -(-num_items // world_size)  # per rank
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.num_samples - self.start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_items, generator=gen).numpy()
        else:
            order = np.arange(self.num_items)
        total = self.num_samples * self.world_size
        order = np.resize(order, total)  # pads by repeating from the start
        mine = order[self.rank::self.world_size][self.start:]
        seeds = sample_seeds(self.seed, self.epoch, mine)
        return iter(zip(mine.tolist(), seeds.tolist(), strict=True))


class SeededDataset(Dataset):
    """Wraps a map-style dataset so that sample ``i`` of epoch ``e`` is drawn with RNGs seeded by its own seed.

    ``random``, ``numpy.random`` and torch's CPU generator are seeded from the sampler's per-sample seed before
    ``dataset[i]``, so random augmentation depends only on (seed, epoch, index): the same for any number of
    workers, any world size and after a resume. In the main process (``num_workers=0``) the previous RNG states
    are restored afterwards, so the training loop's own randomness (dropout, masking) is unaffected.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        if get_worker_info() is not None:
            return self._seeded(index, seed)
        states = random.getstate(), np.random.get_state(), torch.get_rng_state()
        try:
            return self._seeded(index, seed)
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])

    def _seeded(self, index: int, seed: int) -> Any:
        random.seed(seed)
        np.random.seed(seed)
        torch.random.default_generator.manual_seed(seed)
        return self.dataset[index]
