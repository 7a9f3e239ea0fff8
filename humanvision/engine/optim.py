"""Parameter groups (weight-decay rule, layer-wise lr decay), optimiser factory and learning-rate schedules.

Conventions (mmcv / timm, as used by ViTPose, PCT and HAP):

* **No weight decay** for every 1-D parameter (biases, norm weights), every ``*.bias`` and every name matched by the
  model's optional ``no_weight_decay()`` (see :func:`param_groups`). Frozen parameters are left out.
* **Layer-wise lr decay** (mmcv ``LayerDecayOptimizerConstructor``): a model that supports it defines
  ``layer_id(name) -> int`` and ``num_layers``, the *number* of layer ids: ids run from 0 (embeddings) to
  ``num_layers - 1`` (last norm and head). A parameter's lr is ``lr * decay ** (num_layers - 1 - layer_id(name))``.
  For a ViT-B with 12 blocks the ViTPose rule is ``patch_embed``/``pos_embed`` → 0, ``blocks.i`` → i+1, everything
  else → 13, ``num_layers`` = 12 + 2 = 14, so patch_embed gets ``0.75**13 ≈ 0.024`` of the base lr and the head 1.0.
  The Swin rule of PCT (patch merging counted as one more layer of the stage it ends, Swin-B ``num_layers`` = 29) is
  implemented the same way by the Swin model. This is the only builder; the engine only applies the formula.
* **Schedules** are per optimiser iteration and multiply each group's ``lr * lr_scale``:
  ``lr_group(it) = lr * lr_scale * factor(it)`` with :func:`lr_factor`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from humanvision.errors import ConfigError

__all__ = ["OPTIMIZERS", "SCHEDULES", "LRSchedule", "build_optimizer", "lr_factor", "param_groups"]

SCHEDULES = ("constant", "step", "cosine", "poly")
OPTIMIZERS = ("adamw", "adam", "sgd")


def _matches(name: str, patterns: Iterable[str]) -> bool:
    """True when one pattern's dotted components occur as a contiguous run of ``name``'s components.

    ``"pos_embed"`` matches ``pos_embed``; ``"rpe_mlp"`` matches ``layers.0.blocks.1.attn.rpe_mlp.0.weight``;
    ``"attn.logit_scale"`` matches ``blocks.3.attn.logit_scale``; ``"embed"`` does not match ``pos_embed``.
    """
    dotted = f".{name}."
    return any(f".{p}." in dotted for p in patterns)


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float | None = None,
                 no_weight_decay: Iterable[str] = ()) -> list[dict]:
    """Split the trainable parameters of ``model`` into optimiser groups.

    Args:
        model: the unwrapped model (parameter names without a ``module.`` prefix).
        weight_decay: decay for matrices / conv kernels; 0 for 1-D parameters, biases and ``no_weight_decay`` names
            (the model's ``no_weight_decay()`` set plus the ``no_weight_decay`` argument; component match, see
            :func:`_matches`).
        layer_decay: ``None`` for one lr for all; else ``decay ** (model.num_layers - 1 - model.layer_id(name))``.

    Returns:
        A list of dicts with ``params``, ``param_names``, ``weight_decay``, ``lr_scale``, ``layer_id`` and ``name``,
        one per (layer id, decay/no-decay) pair in first-seen order; the schedule multiplies ``lr_scale`` into each
        lr.
    """
    skip = set(no_weight_decay)
    if hasattr(model, "no_weight_decay"):
        skip |= set(model.no_weight_decay())
    if layer_decay is not None:
        if not (hasattr(model, "layer_id") and hasattr(model, "num_layers")):
            raise ConfigError(f"train.layer_decay: {type(model).__name__} defines no layer_id(name) / num_layers, "
                              "so layer-wise lr decay cannot be applied; set layer_decay to null")
        if not 0.0 < layer_decay <= 1.0:
            raise ConfigError(f"train.layer_decay: expected a value in (0, 1], got {layer_decay}")
    groups: dict[str, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim <= 1 or name.endswith(".bias") or _matches(name, skip)
        wd = 0.0 if no_decay else weight_decay
        layer, scale = 0, 1.0
        if layer_decay is not None:
            layer, count = int(model.layer_id(name)), int(model.num_layers)
            if not 0 <= layer < count:
                raise ConfigError(f"{type(model).__name__}.layer_id({name!r}) = {layer} is outside [0, num_layers - 1"
                                  f" = {count - 1}]")
            scale = layer_decay ** (count - 1 - layer)
        key = f"layer_{layer}_{'no_decay' if no_decay else 'decay'}"
        group = groups.setdefault(key, {"name": key, "params": [], "param_names": [], "weight_decay": wd,
                                        "lr_scale": scale, "layer_id": layer})
        group["params"].append(param)
        group["param_names"].append(name)
    if not groups:
        raise ConfigError(f"{type(model).__name__} has no trainable parameters (all requires_grad=False)")
    return list(groups.values())


def build_optimizer(groups: list[dict], name: str, lr: float, *, betas: tuple[float, float] = (0.9, 0.999),
                    momentum: float = 0.9, eps: float = 1e-8) -> torch.optim.Optimizer:
    """AdamW / Adam / SGD over ``groups`` (dicts as from :func:`param_groups`; missing ``lr_scale`` means 1).

    Each group's initial lr is ``lr * lr_scale``; ``weight_decay`` is per group (0 where a group has none). Extra
    keys (``lr_scale``, ``name``, ``param_names``) stay in the group and in the optimiser state dict.
    """
    groups = [{"lr_scale": 1.0, "weight_decay": 0.0, **g} for g in groups]
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas, eps=eps)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    raise ConfigError(f"train.optimizer: expected one of {', '.join(OPTIMIZERS)}, got {name!r}")


def lr_factor(it: int, total_iters: int, schedule: str = "constant", *, warmup_iters: int = 0,
              warmup_ratio: float = 0.001, milestones: Iterable[int] = (), gamma: float = 0.1,
              min_lr_ratio: float = 0.0, power: float = 0.9, progress: float | None = None) -> float:
    """Multiplier of the base lr at 0-based optimiser iteration ``it`` (mmcv ``LrUpdaterHook`` semantics).

    ``progress`` (0..1) replaces ``it / total_iters`` in the cosine and poly curves: a run on a time budget
    passes the larger of the two, so its lr reaches the end of the curve when the time is up.

    Regular factor ``r(it)``:
      * ``constant``: 1.
      * ``step``: ``gamma ** #{m in milestones : it >= m}`` (milestones in iterations).
      * ``cosine``: ``m + (1 - m)(1 + cos(pi * it / total_iters)) / 2`` with ``m = min_lr_ratio``.
      * ``poly``: ``m + (1 - m)(1 - it / total_iters) ** power``.

    Linear warm-up for ``it < warmup_iters``: ``r(it) * (1 - (1 - it / warmup_iters)(1 - warmup_ratio))``, i.e.
    ``warmup_ratio * r(0)`` at iteration 0 rising to ``r(warmup_iters)``.
    """
    progress = min(it, total_iters) / max(total_iters, 1) if progress is None else min(max(progress, 0.0), 1.0)
    if schedule == "constant":
        factor = 1.0
    elif schedule == "step":
        factor = gamma ** sum(it >= m for m in milestones)
    elif schedule == "cosine":
        factor = min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    elif schedule == "poly":
        factor = min_lr_ratio + (1.0 - min_lr_ratio) * (1.0 - progress) ** power
    else:
        raise ConfigError(f"train.schedule: expected one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if it < warmup_iters:
        factor *= 1.0 - (1.0 - it / warmup_iters) * (1.0 - warmup_ratio)
    return factor


@dataclass(frozen=True)
class LRSchedule:
    """A per-iteration schedule: a pure function of the iteration, so resuming needs no scheduler state.

    ``milestones`` are in **epochs** (ViTPose: ``(170, 200)``) and become iterations via ``iters_per_epoch``.
    """

    lr: float
    total_iters: int
    iters_per_epoch: int
    schedule: str = "constant"
    warmup_iters: int = 0
    warmup_ratio: float = 0.001
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    min_lr_ratio: float = 0.0
    power: float = 0.9

    def factor(self, it: int, progress: float | None = None) -> float:
        return lr_factor(it, self.total_iters, self.schedule, warmup_iters=self.warmup_iters,
                         warmup_ratio=self.warmup_ratio, gamma=self.gamma, min_lr_ratio=self.min_lr_ratio,
                         milestones=[m * self.iters_per_epoch for m in self.milestones], power=self.power,
                         progress=progress)

    def apply(self, optimizer: torch.optim.Optimizer, it: int, progress: float | None = None) -> float:
        """Set every group's lr for iteration ``it`` (``progress``: see :func:`lr_factor`); returns the base lr
        (the lr of a group with scale 1)."""
        base = self.lr * self.factor(it, progress)
        for group in optimizer.param_groups:
            group["lr"] = base * group.get("lr_scale", 1.0)
        return base
