"""Exponential moving average of model weights (used for evaluation and saved with the checkpoint)."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ModelEma"]


class ModelEma:
    """A frozen copy of a model whose floating-point parameters track ``ema ← d·ema + (1 − d)·θ``.

    :meth:`update` is called once after every optimiser step. Buffers (BatchNorm running statistics, codebooks
    maintained by their own EMA, counters) are copied from the live model rather than averaged, so the copy always
    carries the live model's statistics. The copy lives on the model's device, in eval mode, without gradients.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_params, params = [], []
        for (name, e), (name_m, p) in zip(self.module.named_parameters(), model.named_parameters(), strict=True):
            if name != name_m:
                raise RuntimeError(f"EMA copy and model disagree on parameter order: {name} vs {name_m}")
            if e.is_floating_point():
                ema_params.append(e)
                params.append(p.detach())
            else:
                e.copy_(p)
        if ema_params:
            torch._foreach_lerp_(ema_params, params, 1.0 - self.decay)
        for e, b in zip(self.module.buffers(), model.buffers(), strict=True):
            e.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
