"""Numeric precision and memory format chosen by measurement: ``precision: auto``, ``channels_last: auto``.

Whether bf16 autocast is fast depends on the CPU, not on the model: with native bf16 instructions (AVX-512-BF16,
AMX) a small CNN trains about 2-3x faster in bf16 than in fp32; on a CPU that has only AVX2 the same bf16 kernels are
emulated and about ten times *slower*. Channels-last helps convolutions through oneDNN on some CPUs and not on
others. So nothing here assumes: :func:`choose` times one call of the real work (a training micro-batch's forward
and backward, or an inference batch) in each candidate setting and returns the fastest.

On CUDA the dtype follows the usual rule (bf16 where the device supports it, else fp16 with a GradScaler) and only
the memory format is measured. Other devices use fp32.

A candidate that is hopeless shows it at once: if its first (warm-up) call already takes ``give_up`` times as long as
the best candidate's steady call, it is not timed further (on an AVX2-only CPU this skips the emulated bf16 after one
call instead of several). Measurements run on every rank of a distributed job and the rates are averaged over the
ranks before the choice, so every rank makes the same one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from humanvision.errors import ConfigError

__all__ = ["AMP_DTYPES", "PrecisionChoice", "autocast", "candidates", "channels_last_possible", "choose",
           "choose_for_inference",
           "describe_rates", "label"]

#: autocast dtype of each precision name (fp32: autocast off).
AMP_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

Auto = Literal["auto"]


@dataclass
class PrecisionChoice:
    """The setting in use and, when it was measured, the rate of every candidate (items per second; for a
    candidate in ``gave_up`` the rate of its one warm-up call, a lower bound far below the chosen one)."""

    precision: str
    channels_last: bool
    measured: bool = False
    rates: dict[str, float] = field(default_factory=dict)
    gave_up: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return label(self.precision, self.channels_last)

    @property
    def rate(self) -> float | None:
        return self.rates.get(self.label)

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return AMP_DTYPES[self.precision]

    def as_dict(self) -> dict:
        return {"precision": self.precision, "channels_last": self.channels_last, "measured": self.measured,
                "rates": dict(self.rates), "gave_up": list(self.gave_up), "seconds": self.seconds}


def label(precision: str, channels_last: bool) -> str:
    return precision + ("+channels_last" if channels_last else "")


def channels_last_possible(module: nn.Module | None) -> bool:
    """Whether ``module`` can take the channels-last memory format: torch's takes only 4-D weights, so a model
    with 5-D ones (``Conv3d``: V2V, ContextPose) cannot."""
    return module is None or all(p.ndim != 5 for p in module.parameters())


def candidates(device: torch.device, precision: str | Auto, channels_last: bool | Auto,
               module: nn.Module | None = None) -> list[tuple[str, bool]]:
    """The (precision, channels_last) pairs worth timing on ``device``; a single pair needs no measurement.
    ``channels_last: auto`` never offers channels-last for a ``module`` that cannot take it (and ``True`` for one
    is a :class:`~humanvision.errors.ConfigError`)."""
    if not channels_last_possible(module):
        if channels_last is True:
            raise ConfigError("train.channels_last: this model has 5-D (3D convolution) weights, which the "
                              "channels-last memory format cannot hold; use false or auto")
        channels_last = False
    if precision == "auto":
        if device.type == "cuda":
            precisions = ["bf16" if torch.cuda.is_bf16_supported() else "fp16"]
        elif device.type == "cpu":
            precisions = ["fp32", "bf16"]  # fp32 first: the baseline every CPU runs at full speed
        else:
            precisions = ["fp32"]
    else:
        precisions = [precision]
    layouts = [False, True] if channels_last == "auto" else [bool(channels_last)]
    return [(p, c) for p in precisions for c in layouts]


def choose(run: Callable[[str, bool], None], options: Sequence[tuple[str, bool]], items_per_call: int, *,
           device: torch.device | None = None, min_calls: int = 2, min_seconds: float = 0.5, max_calls: int = 8,
           give_up: float = 4.0, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
           clock: Callable[[], float] = time.perf_counter) -> PrecisionChoice:
    """Time ``run(precision, channels_last)`` (one call = ``items_per_call`` items) for each option; the fastest.

    Each option gets one untimed warm-up call, then timed calls until at least ``min_calls`` calls and
    ``min_seconds`` seconds (at most ``max_calls``); its rate is items per second of its fastest call (other
    processes on the machine only ever add time, so the fastest call is the least disturbed one). ``reduce``
    averages the rates over distributed ranks (e.g. ``all_reduce_mean``) so that every rank chooses alike.
    """
    if not options:
        raise ValueError("no precision candidates to choose from")
    if len(options) == 1:
        return PrecisionChoice(*options[0])

    def sync() -> None:
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)

    start = clock()
    rates: dict[str, float] = {}
    gave_up: list[str] = []
    best_call = float("inf")  # seconds of the best steady call so far
    for prec, cl in options:
        t0 = clock()
        run(prec, cl)
        sync()
        warm = clock() - t0
        if warm > give_up * best_call:
            rates[label(prec, cl)] = items_per_call / warm
            gave_up.append(label(prec, cl))
            continue
        times: list[float] = []
        t_start = clock()
        while len(times) < max_calls and (len(times) < min_calls or clock() - t_start < min_seconds):
            t0 = clock()
            run(prec, cl)
            sync()
            times.append(clock() - t0)
        call = min(times)
        best_call = min(best_call, call)
        rates[label(prec, cl)] = items_per_call / max(call, 1e-12)
    names = list(rates)
    values = torch.tensor([rates[n] for n in names], dtype=torch.float64)
    if reduce is not None:
        values = reduce(values)
    rates = {n: float(v) for n, v in zip(names, values.tolist(), strict=True)}
    best = max(range(len(options)), key=lambda i: rates[names[i]])  # ties: the earlier (simpler) option
    return PrecisionChoice(*options[best], measured=True, rates=rates, gave_up=gave_up, seconds=clock() - start)


def describe_rates(choice: PrecisionChoice, unit: str = "images/s") -> str:
    """``"bf16+channels_last (118 images/s; fp32 38, fp32+channels_last 59, bf16 91; measured in 8.1 s)"``."""
    if not choice.measured:
        return f"{choice.label} (as configured, or as a resumed run recorded it)"
    others = ", ".join(f"{k} {v:.1f}" + (" (one call, given up)" if k in choice.gave_up else "")
                       for k, v in choice.rates.items() if k != choice.label)
    return f"{choice.label} ({choice.rate:.1f} {unit}; {others}; measured in {choice.seconds:.1f} s)"


def autocast(device: torch.device, precision: str):
    """``torch.autocast`` for a precision name (disabled for fp32)."""
    dtype = AMP_DTYPES[precision]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def choose_for_inference(module: nn.Module, forward: Callable[[torch.Tensor], object], images: torch.Tensor,
                         precision: str | Auto = "auto", channels_last: bool | Auto = "auto") -> PrecisionChoice:
    """Measure ``forward(images)`` (under ``torch.no_grad``) in each candidate setting for ``images``' device and
    leave ``module`` in the memory format of the fastest; the caller runs its batches under
    ``autocast(device, choice.precision)`` with inputs in that format."""
    device = images.device

    def run(prec: str, cl: bool) -> None:
        fmt = torch.channels_last if cl else torch.contiguous_format
        module.to(memory_format=fmt)
        with torch.no_grad(), autocast(device, prec):
            forward(images.contiguous(memory_format=fmt) if images.ndim == 4 else images)

    choice = choose(run, candidates(device, precision, channels_last, module), len(images), device=device)
    module.to(memory_format=torch.channels_last if choice.channels_last else torch.contiguous_format)
    return choice
