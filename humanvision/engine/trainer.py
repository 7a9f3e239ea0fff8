"""The one training loop, readable top to bottom: no hooks, no runner, no registry.

A *method* is an ``nn.Module`` whose ``forward(batch)`` returns a dict of scalar tensors in training mode, the total
under ``"loss"``; every other scalar entry (loss terms, accuracies) is logged as well. Evaluation is a plain
callable ``eval_fn(model, epoch) -> dict[str, float]`` called on every rank after each ``eval_every`` epochs with
the EMA model when EMA is on (else the model) in eval mode under ``torch.no_grad()``; rank 0's dict is logged and
drives best-checkpoint tracking.

One optimiser step = ``accum_steps`` micro-batches of ``batch_size`` samples per process; ``step`` counts optimiser
steps. The data order is a pure function of ``(seed, epoch)`` and each sample's augmentation RNG is seeded from
``(seed, epoch, index)`` (:class:`~humanvision.engine.distributed.ResumableSampler`, ``SeededDataset``), so a run
resumed from ``<output_dir>/last`` continues exactly where it stopped, and a W-process run with per-process batch
``B / W`` sees the same global batches as a single process with batch ``B``. A run on a time budget
(``max_minutes``) ends when the budget is spent and is the one exception: where it stops depends on the machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from humanvision.engine.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from humanvision.engine.distributed import (
    ResumableSampler,
    SeededDataset,
    all_gather_objects,
    all_reduce_mean,
    barrier,
    init_distributed,
)
from humanvision.engine.ema import ModelEma
from humanvision.engine.logging import TrainLogger
from humanvision.engine.optim import OPTIMIZERS, SCHEDULES, LRSchedule, build_optimizer, param_groups
from humanvision.engine.precision import (
    AMP_DTYPES,
    PrecisionChoice,
    autocast,
    candidates,
    choose,
    describe_rates,
)
from humanvision.errors import ConfigError, TrainingError

WORKER_STARTS = ("forkserver", "spawn", "fork")
LOADER_TIMEOUT_S = 600  # a loader worker silent this long is stuck: the run fails instead of hanging

__all__ = ["TrainConfig", "Trainer", "move_to", "seed_everything"]


@dataclass
class TrainConfig:
    """Everything the loop needs. ``batch_size`` is per process; milestones are in epochs; lr schedules are per
    optimiser step (see :func:`humanvision.engine.optim.lr_factor`); ``max_steps`` stops early (tests, smoke runs)
    without changing the schedule; ``max_minutes`` is a time budget: training stops after that much wall time of
    ``fit`` (evaluations and checkpoints included, resumed runs count the time before the interruption) or after
    ``epochs``, whichever comes first, and cosine / poly schedules follow the larger of the step and the time
    fraction, so the lr reaches the end of its curve when the time is up (the number of steps then depends on the
    machine: such a run is not bit-reproducible, and ``step`` milestones stay in epochs); ``min_steps`` (with
    ``max_minutes``) is a floor under the budget: the run does not stop for time before that many optimiser steps,
    so a slow machine trains longer instead of returning an untrained model (the schedule then follows
    ``step / min_steps`` where that is behind the time fraction); ``save_every_steps`` adds mid-epoch checkpoints to
    the per-epoch ones.

    ``precision`` (fp32, bf16, fp16 autocast) and ``channels_last`` (a CNN's weights and 4-D batch tensors in the
    channels-last memory format) default to ``auto``: before the first step the engine times a training
    micro-batch in each candidate setting on the real model and batch and keeps the fastest
    (:mod:`humanvision.engine.precision`; on CPUs bf16 is 2-3x faster than fp32 where it is native and ~10x slower
    where it is emulated). The choice is printed, returned by ``fit`` and stored in the checkpoint, and a resumed
    run keeps it. An explicit value is honoured as given."""

    epochs: int = 1
    batch_size: int = 32
    accum_steps: int = 1
    max_steps: int | None = None
    max_minutes: float | None = None
    min_steps: int | None = None
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    layer_decay: float | None = None
    clip_grad: float | None = None
    schedule: str = "cosine"
    warmup_iters: int = 0
    warmup_epochs: float = 0.0
    warmup_ratio: float = 0.001
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    min_lr_ratio: float = 0.0
    power: float = 0.9
    precision: str = "auto"
    channels_last: bool | Literal["auto"] = "auto"
    compile: bool = False
    ema: float | None = None
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    find_unused_parameters: bool = False
    num_workers: int = 0
    # how loader workers start: "forkserver" (default) forks them from a clean helper process, so no lock held
    # by one of this process's threads (a logger, a thread pool, OpenMP) is copied into a worker locked forever;
    # the dataset must pickle, as on macOS / Windows. "fork" is faster to start and takes any dataset.
    worker_start: str = "forkserver"
    shuffle: bool = True
    eval_every: int = 1
    save_every: int = 1
    save_every_steps: int = 0
    best_metric: str | None = None
    best_mode: str = "max"
    output_dir: str = "runs/train"
    log_every: int = 20
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        self.milestones = tuple(int(m) for m in self.milestones)
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        choices = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "precision": ("auto", *AMP_DTYPES),
                   "best_mode": ("max", "min"), "worker_start": WORKER_STARTS}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"train.{key}: expected one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        for key in ("epochs", "batch_size", "accum_steps", "eval_every", "save_every", "log_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key}: must be >= 1, got {getattr(self, key)}")
        for key in ("lr", "weight_decay", "warmup_iters", "warmup_epochs", "num_workers", "seed", "save_every_steps"):
            if getattr(self, key) < 0:
                raise ConfigError(f"train.{key}: must be >= 0, got {getattr(self, key)}")
        if self.warmup_iters and self.warmup_epochs:
            raise ConfigError("train.warmup_iters / train.warmup_epochs: set one of them, not both")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"train.max_steps: must be >= 1 or null, got {self.max_steps}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError(f"train.max_minutes: must be > 0 or null, got {self.max_minutes}")
        if self.min_steps is not None and (self.min_steps < 1 or self.max_minutes is None):
            raise ConfigError(f"train.min_steps: a floor (>= 1) under the time budget train.max_minutes, which "
                              f"is {self.max_minutes}; got {self.min_steps}")
        if self.channels_last not in (True, False, "auto"):
            raise ConfigError(f"train.channels_last: expected true, false or auto, got {self.channels_last!r}")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ConfigError(f"train.clip_grad: must be > 0 or null, got {self.clip_grad}")
        if self.ema is not None and not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"train.ema: decay must be in [0, 1) or null, got {self.ema}")


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed ``random``, numpy and torch (all devices); ``deterministic`` asks torch for deterministic kernels
    (warning, not failing, on ops that have none) and turns cuDNN autotuning off."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def move_to(obj: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move every tensor in nested dicts / lists / tuples to ``device`` (4-D floating tensors in the
    channels-last memory format with ``channels_last``)."""
    if isinstance(obj, torch.Tensor):
        if channels_last and obj.ndim == 4 and obj.is_floating_point():
            return obj.to(device, memory_format=torch.channels_last, non_blocking=True)
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        return {k: move_to(v, device, channels_last) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to(v, device, channels_last) for v in obj)
    return obj


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Trains ``model`` on ``train_dataset`` with ``cfg``; see the module docstring for the contract.

    Args:
        cfg: the :class:`TrainConfig`.
        model: the method (``forward(batch) -> {"loss": ..., ...}``), optionally with ``layer_id`` / ``num_layers``
            (layer decay) and ``no_weight_decay()``.
        train_dataset: a map-style dataset; samples are collated by ``collate_fn`` (default: torch's).
        eval_fn: ``eval_fn(model, epoch) -> dict[str, float]``, see the module docstring.
        param_groups_fn: ``model -> list[dict]`` replacing :func:`~humanvision.engine.optim.param_groups` (and
            with it ``cfg.weight_decay`` / ``cfg.layer_decay``); groups may carry ``lr_scale`` and ``weight_decay``,
            e.g. a backbone at ``lr_scale=0.1`` and heads at 1.
        sampler_fn: ``(rank, world_size) -> sampler`` replacing the uniform
            :class:`~humanvision.engine.distributed.ResumableSampler` (e.g. a method that redraws a subset every
            epoch). The sampler must keep its contract: ``num_samples`` per rank and epoch, ``set_epoch(epoch,
            start)``, and ``(index, sample_seed)`` items, an order that is a pure function of ``(seed, epoch)``.
    """

    def __init__(self, cfg: TrainConfig, model: nn.Module, train_dataset: Dataset,
                 eval_fn: Callable[[nn.Module, int], dict[str, float]] | None = None,
                 collate_fn: Callable | None = None,
                 param_groups_fn: Callable[[nn.Module], list[dict]] | None = None,
                 sampler_fn: Callable[[int, int], ResumableSampler] | None = None) -> None:
        self.cfg, self.eval_fn = cfg, eval_fn
        self.dist = dist = init_distributed(cfg.device)
        self.device = dist.device
        if cfg.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError(f"train.precision: fp16 needs CUDA (device is {self.device}); use bf16 on CPU")
        seed_everything(cfg.seed + dist.rank, cfg.deterministic)
        self.output_dir = Path(cfg.output_dir)

        self.model = model.to(self.device)
        groups = (param_groups_fn(self.model) if param_groups_fn is not None
                  else param_groups(self.model, cfg.weight_decay, cfg.layer_decay))
        self.optimizer = build_optimizer(groups, cfg.optimizer, cfg.lr, betas=cfg.betas, momentum=cfg.momentum)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.ema = ModelEma(self.model, cfg.ema) if cfg.ema is not None else None
        # set by _setup() when fit() starts: the precision / memory format (measured for "auto"), the GradScaler
        # (fp16 only), the DDP wrapper and torch.compile
        self.choice: PrecisionChoice | None = None
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=False)
        self.channels_last = False
        self.collate_fn = collate_fn

        if not hasattr(train_dataset, "__getitem__") or not hasattr(train_dataset, "__len__"):
            raise ConfigError(f"train dataset {type(train_dataset).__name__} must be map-style (__getitem__, "
                              "__len__) for the resumable sampler")
        if sampler_fn is not None:
            self.sampler = sampler_fn(dist.rank, dist.world_size)
        else:
            self.sampler = ResumableSampler(len(train_dataset), shuffle=cfg.shuffle, seed=cfg.seed, rank=dist.rank,
                                            world_size=dist.world_size)
        if cfg.num_workers > 0 and cfg.worker_start != "fork":
            try:  # what each worker receives; fails here with a clear message rather than inside multiprocessing
                pickle.dumps(train_dataset)
            except Exception as e:  # noqa: BLE001 (pickling raises many types)
                raise ConfigError(f"train.worker_start: {cfg.worker_start} workers need a dataset that pickles, and "
                                  f"{type(train_dataset).__name__} does not ({type(e).__name__}: {e}); set "
                                  "train.worker_start: fork or train.num_workers: 0") from None
        self.loader = DataLoader(SeededDataset(train_dataset), batch_size=cfg.batch_size, sampler=self.sampler,
                                 drop_last=True, num_workers=cfg.num_workers, collate_fn=collate_fn,
                                 pin_memory=self.device.type == "cuda", persistent_workers=cfg.num_workers > 0,
                                 multiprocessing_context=cfg.worker_start if cfg.num_workers > 0 else None,
                                 timeout=LOADER_TIMEOUT_S if cfg.num_workers > 0 else 0,
                                 generator=torch.Generator().manual_seed(cfg.seed))
        self.steps_per_epoch = self.sampler.num_samples // cfg.batch_size // cfg.accum_steps
        if self.steps_per_epoch == 0:
            raise ConfigError(f"train.batch_size: {cfg.batch_size} x accum_steps {cfg.accum_steps} x "
                              f"{dist.world_size} processes exceeds the dataset ({len(train_dataset)} samples)")
        self.schedule = LRSchedule(
            cfg.lr, cfg.epochs * self.steps_per_epoch, self.steps_per_epoch, cfg.schedule,
            warmup_iters=cfg.warmup_iters or round(cfg.warmup_epochs * self.steps_per_epoch),
            warmup_ratio=cfg.warmup_ratio, milestones=cfg.milestones, gamma=cfg.gamma,
            min_lr_ratio=cfg.min_lr_ratio, power=cfg.power)

        self.ddp: DistributedDataParallel | None = None
        self.net: nn.Module = self.model

        self.step = self.epoch = self.epoch_step = 0  # optimiser steps; completed epochs; steps into this epoch
        self.elapsed = 0.0  # seconds spent in fit(), over every resumption
        self.clock: Callable[[], float] = time.perf_counter  # seconds; tests substitute a fake clock
        self._clock_start = self.clock()
        self._time_fraction = 0.0  # elapsed / (max_minutes * 60), the same on every rank
        self.budget_extended = False  # the time budget ran out before min_steps
        self.estimated_steps: int | None = None  # steps the budget buys at the measured rate (budgeted runs)
        self.best: dict[str, Any] | None = None
        self.metrics: dict[str, float] = {}
        self.last_checkpoint: Path | None = None
        self._saved_step = -1
        self.logger = TrainLogger(self.output_dir, enabled=False)  # replaced in fit()

    # ----------------------------------------------------------------------------------------------------------
    def fit(self, resume: str | Path | bool | None = None) -> dict[str, Any]:
        """Train to ``cfg.epochs`` (or ``cfg.max_steps``). ``resume``: a checkpoint directory, or ``True`` for
        ``<output_dir>/last`` when it exists. Returns step, epoch, last metrics, best and the last checkpoint."""
        cfg = self.cfg
        path = self._resume_path(resume)
        if path is not None:
            self.load(path)
        else:
            self._setup()
        self.logger = TrainLogger(self.output_dir, enabled=self.dist.is_main, progress=cfg.progress,
                                  tensorboard=cfg.tensorboard, resume_step=self.step if path else None)
        self.logger.print(f"precision: {describe_rates(self.choice)}")
        self._warn_budget()
        total = cfg.epochs * self.steps_per_epoch
        self.logger.start(min(total, cfg.max_steps or total), self.step)
        measuring = self.choice.seconds if self.choice.measured else 0.0  # part of the run's time (budget)
        self._clock_start = self.clock() - self.elapsed - measuring
        self._update_time_fraction()
        try:
            while self.epoch < cfg.epochs and not self._done():
                self._train_epoch()
                if self.epoch_step < self.steps_per_epoch:  # stopped by max_steps / max_minutes inside the epoch
                    if self._time_up():
                        floor = (f", extended to train.min_steps = {cfg.min_steps}" if self.budget_extended
                                 else "")
                        self.logger.print(f"time budget of {cfg.max_minutes:g} min used up{floor}: stopped at step "
                                          f"{self.step} (epoch {self.epoch + 1}, step {self.epoch_step} of "
                                          f"{self.steps_per_epoch})")
                        if self.eval_fn is not None:
                            self.evaluate()
                    break
                self.epoch, self.epoch_step = self.epoch + 1, 0
                last = self.epoch == cfg.epochs or self._done()
                if self.eval_fn is not None and (self.epoch % cfg.eval_every == 0 or last):
                    self.evaluate()
                if self.epoch % cfg.save_every == 0 or last:
                    self.save()
            if self._saved_step != self.step:
                self.save()
        finally:
            self.logger.close()
        self.elapsed = self.clock() - self._clock_start
        return {"step": self.step, "epoch": self.epoch, "minutes": self.elapsed / 60, "metrics": self.metrics,
                "best": self.best, "last_checkpoint": self.last_checkpoint, "precision": self.choice.as_dict(),
                "budget_extended": self.budget_extended, "estimated_steps": self.estimated_steps}

    def _train_epoch(self) -> None:
        cfg, accum = self.cfg, self.cfg.accum_steps
        self.sampler.set_epoch(self.epoch, start=self.epoch_step * accum * cfg.batch_size)
        self.net.train()
        batches = iter(self.loader)
        sums: dict[str, torch.Tensor] = {}
        count, tic = 0, time.perf_counter()
        while self.epoch_step < self.steps_per_epoch and not self._done():
            progress = None
            if cfg.max_minutes is not None:  # the time fraction, unless a slow machine is held up by min_steps
                timed = self._time_fraction
                if cfg.min_steps is not None:
                    timed = min(timed, self.step / cfg.min_steps)
                progress = max(self.step / self.schedule.total_iters, timed)
            lr = self.schedule.apply(self.optimizer, self.step, progress)
            terms: dict[str, torch.Tensor] = {}
            for micro in range(accum):
                sync = self.ddp is None or micro == accum - 1  # all-reduce gradients on the last micro-batch only
                with contextlib.nullcontext() if sync else self.ddp.no_sync():
                    out = self._forward_backward(next(batches))
                for k, v in out.items():
                    terms[k] = terms.get(k, 0.0) + v / accum
            if cfg.clip_grad is not None:
                self.scaler.unscale_(self.optimizer)
                terms["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.params, cfg.clip_grad).detach()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.update(self.model)
            self.step += 1
            self.epoch_step += 1
            self._update_time_fraction()
            self.logger.advance(f"epoch {self.epoch + 1}/{cfg.epochs}")

            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            if self.step % cfg.log_every == 0 or self.epoch_step == self.steps_per_epoch or self._done():
                names = sorted(sums)
                means = all_reduce_mean(torch.stack([sums[k] for k in names]) / count).tolist()
                images = count * accum * cfg.batch_size * self.dist.world_size
                rate = images / max(time.perf_counter() - tic, 1e-9)
                scalars = {**dict(zip(names, means, strict=True)), "lr": lr, "images_per_s": rate}
                self.logger.log("train", self.step, self.epoch + 1, scalars)  # epoch: 1-based, in progress
                sums, count, tic = {}, 0, time.perf_counter()
            if cfg.save_every_steps and self.step % cfg.save_every_steps == 0:
                self.save()

    def _forward_backward(self, batch: Any) -> dict[str, torch.Tensor]:
        """One micro-batch: autocast forward, finiteness check, (scaled) backward. Returns the detached terms."""
        with autocast(self.device, self.choice.precision):
            out = self._check_output(self.net(move_to(batch, self.device, self.channels_last)))
        terms = {k: v.detach().float() for k, v in out.items() if isinstance(v, torch.Tensor) and v.numel() == 1}
        finite = torch.stack([v.reshape(()) for v in terms.values()]).isfinite().all().float()
        if all_reduce_mean(finite).item() < 1.0:
            bad = ", ".join(f"{k}={v.item()}" for k, v in terms.items() if not torch.isfinite(v).all())
            raise TrainingError(
                f"non-finite loss at step {self.step + 1} (epoch {self.epoch + 1}, step {self.epoch_step + 1} of "
                f"{self.steps_per_epoch}): {bad or 'on another rank'}; last good checkpoint: "
                f"{self.last_checkpoint or 'none saved yet'}")
        self.scaler.scale(out["loss"] / self.cfg.accum_steps).backward()
        return {k: v.reshape(()) for k, v in terms.items()}

    def _check_output(self, out: Any) -> Mapping[str, torch.Tensor]:
        if not isinstance(out, Mapping) or not isinstance(out.get("loss"), torch.Tensor) or out["loss"].numel() != 1:
            got = ({k: tuple(getattr(v, "shape", ())) for k, v in out.items()} if isinstance(out, Mapping)
                   else type(out).__name__)
            raise TrainingError(f"{type(self.model).__name__}.forward(batch) must return a dict with a scalar "
                                f"tensor 'loss' (and the same scalar terms every step) in training mode; got {got}")
        return out

    # ----------------------------------------------------------------------------------------------------------
    def _setup(self, recorded: dict | None = None) -> None:
        """Fix the precision and memory format (``recorded``: a resumed run's choice, kept for ``auto`` fields),
        then build the GradScaler, the DDP wrapper and ``torch.compile``. Runs once, before the first step."""
        if self.choice is not None:
            return
        cfg = self.cfg
        precision, channels_last = cfg.precision, cfg.channels_last
        if recorded is not None:
            precision = recorded["precision"] if precision == "auto" else precision
            channels_last = recorded["channels_last"] if channels_last == "auto" else channels_last
        options = candidates(self.device, precision, channels_last, self.model)
        if len(options) == 1:
            self.choice = PrecisionChoice(*options[0], measured=False,
                                          rates=dict(recorded.get("rates", {})) if recorded else {})
        else:
            self.choice = self._measure(options)
        if self.choice.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError(f"train.precision: fp16 needs CUDA (device is {self.device}); use bf16 on CPU")
        self.channels_last = self.choice.channels_last
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model.to(memory_format=fmt)
        if self.ema is not None:
            self.ema.module.to(memory_format=fmt)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.choice.precision == "fp16")
        if self.dist.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=device_ids,
                                               find_unused_parameters=cfg.find_unused_parameters)
        self.net = self.ddp or self.model
        if cfg.compile:
            self.net = torch.compile(self.net)

    def _measure(self, options: list[tuple[str, bool]]) -> PrecisionChoice:
        """Time one training micro-batch (forward + backward, no optimiser step) of the first ``batch_size``
        samples in each option; weights, buffers (BatchNorm statistics), gradients and RNG states are left as
        they were, so the measurement changes nothing about the run."""
        cfg, model = self.cfg, self.model
        data = self.loader.dataset
        collate = self.collate_fn or torch.utils.data.default_collate
        batch = collate([data[(i % len(data), cfg.seed + i)] for i in range(cfg.batch_size)])
        rng = _rng_state()
        buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
        was_training = model.training
        model.train()

        def run(precision: str, channels_last: bool) -> None:
            model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            with autocast(self.device, precision):
                out = self._check_output(model(move_to(batch, self.device, channels_last)))
            out["loss"].float().backward()
            model.zero_grad(set_to_none=True)

        try:
            return choose(run, options, cfg.batch_size, device=self.device,
                          reduce=all_reduce_mean if self.dist.distributed else None)
        finally:
            with torch.no_grad():
                for k, v in model.named_buffers():
                    v.copy_(buffers[k])
            model.train(was_training)
            _set_rng_state(rng)

    def _warn_budget(self) -> None:
        """With a time budget, say up front how many steps the measured speed buys and what min_steps adds."""
        cfg, rate = self.cfg, self.choice.rate if self.choice is not None else None
        if cfg.max_minutes is None or not rate:
            return
        total = min(cfg.epochs * self.steps_per_epoch, cfg.max_steps or cfg.epochs * self.steps_per_epoch)
        images_per_step = cfg.batch_size * cfg.accum_steps
        left = max(cfg.max_minutes * 60.0 - self.elapsed, 0.0)
        reachable = self.step + int(rate * left / images_per_step)
        self.estimated_steps = reachable
        if reachable >= total:
            return
        msg = (f"at ~{rate:.0f} images/s (forward + backward only; the loop is slower) the {cfg.max_minutes:g}-min "
               f"budget reaches about step {reachable} of {total}")
        if cfg.min_steps is not None and reachable < cfg.min_steps:
            extra = (cfg.min_steps - reachable) * images_per_step / rate / 60.0
            msg += (f"; train.min_steps = {cfg.min_steps} keeps training past the budget, about {extra:.0f} min "
                    "longer")
        self.logger.print(msg)

    # ----------------------------------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Run ``eval_fn`` on the EMA model (or the model), log the metrics, track and save the best."""
        cfg = self.cfg
        model = self.ema.module if self.ema is not None else self.model
        was_training = model.training
        model.eval()
        with torch.no_grad():
            metrics = {k: float(v) for k, v in self.eval_fn(model, self.epoch).items()}
        model.train(was_training)
        self.metrics = metrics
        self.logger.log("eval", self.step, self.epoch, metrics)
        self.logger.print(f"epoch {self.epoch} step {self.step}: "
                          + "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        if cfg.best_metric is not None:
            if cfg.best_metric not in metrics:
                raise ConfigError(f"train.best_metric: {cfg.best_metric!r} is not among the evaluation metrics "
                                  f"{sorted(metrics)}")
            value = metrics[cfg.best_metric]
            old = None if self.best is None else self.best["value"]
            if old is None or (value > old if cfg.best_mode == "max" else value < old):
                self.best = {"metric": cfg.best_metric, "value": value, "epoch": self.epoch, "step": self.step}
                if self.dist.is_main:
                    save_checkpoint(self.output_dir / "best", model.state_dict(),
                                    meta={**self.best, "metrics": metrics, "ema": self.ema is not None})
                barrier()
        return metrics

    def save(self) -> Path:
        """Write ``<output_dir>/last`` (all ranks must call: RNG states are gathered from every rank)."""
        rng = all_gather_objects(_rng_state())
        self.elapsed = self.clock() - self._clock_start
        path = self.output_dir / "last"
        if self.dist.is_main:
            state = {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                     "precision": self.choice.as_dict() if self.choice is not None else None,
                     "step": self.step, "epoch": self.epoch, "epoch_step": self.epoch_step,
                     "steps_per_epoch": self.steps_per_epoch, "world_size": self.dist.world_size,
                     "best": self.best, "rng": rng, "elapsed": self.elapsed}
            meta = {"step": self.step, "epoch": self.epoch, "epoch_step": self.epoch_step, "metrics": self.metrics,
                    "best": self.best, "config": dataclasses.asdict(self.cfg)}
            save_checkpoint(path, self.model.state_dict(), trainer_state=state, meta=meta,
                            ema_state=self.ema.state_dict() if self.ema is not None else None)
        barrier()
        self.last_checkpoint, self._saved_step = path, self.step
        return path

    def load(self, path: str | Path) -> None:
        """Restore weights, EMA, optimiser, GradScaler, RNG states and the position in the data from ``path``."""
        ckpt = load_checkpoint(path, map_location="cpu")
        state = ckpt.trainer_state
        if state is None:
            raise TrainingError(f"{ckpt.path}: has no trainer_state.pt, so it cannot be resumed; load its weights "
                                "with humanvision.engine.load_weights to initialise a new run instead")
        if state["epoch_step"] and state["steps_per_epoch"] != self.steps_per_epoch:
            raise TrainingError(
                f"{ckpt.path}: stopped inside an epoch of {state['steps_per_epoch']} steps, but this run has "
                f"{self.steps_per_epoch} steps per epoch (batch size, accum_steps, dataset or world size changed)")
        self._setup(state.get("precision"))
        self.model.load_state_dict(ckpt.model_state)
        if self.ema is not None:
            self.ema.load_state_dict(ckpt.ema_state if ckpt.ema_state is not None else self.model.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.epoch_step = state["step"], state["epoch"], state["epoch_step"]
        self.best, self.metrics = state["best"], ckpt.meta.get("metrics", {})
        self.elapsed = float(state.get("elapsed", 0.0))
        if len(state["rng"]) == self.dist.world_size:
            _set_rng_state(state["rng"][self.dist.rank])
        self.last_checkpoint, self._saved_step = ckpt.path, self.step

    def _resume_path(self, resume: str | Path | bool | None) -> Path | None:
        if resume is None or resume is False:
            return None
        if resume is True:
            last = self.output_dir / "last"
            try:
                return resolve_checkpoint(last)
            except FileNotFoundError:
                return None
        return resolve_checkpoint(resume)

    def _update_time_fraction(self) -> None:
        if self.cfg.max_minutes is not None:  # averaged over ranks so that every rank stops at the same step
            elapsed = torch.tensor(self.clock() - self._clock_start, dtype=torch.float64, device=self.device)
            self._time_fraction = all_reduce_mean(elapsed).item() / (60.0 * self.cfg.max_minutes)
            if self._time_fraction >= 1.0 and self.step < (self.cfg.min_steps or 0):
                self.budget_extended = True

    def _time_up(self) -> bool:
        return (self.cfg.max_minutes is not None and self._time_fraction >= 1.0
                and self.step >= (self.cfg.min_steps or 0))

    def _done(self) -> bool:
        return (self.cfg.max_steps is not None and self.step >= self.cfg.max_steps) or self._time_up()
