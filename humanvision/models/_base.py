"""The uniform surface shared by every heatmap pose model.

Every model maps a normalised crop ``(B, 3, H, W)`` to heatmaps ``(B, K, H/s, W/s)``, ``s = heatmap_stride``
(4 for every published model; 2 for the lateral networks that trade compute for sub-pixel precision on CPU):

* ``forward(x) = forward_head(forward_features(x))``; features are ``(B, C, h, w)`` maps.
* ``input_size`` and ``heatmap_size`` are ``(width, height)`` tuples (the codec convention); ``skeleton`` is the
  joint-set name and ``num_joints`` its size.
* ``default_cfg`` is a plain dict: ``model``, ``skeleton``, ``num_joints``, ``input_size``, ``heatmap_size``,
  ``mean``/``std`` (RGB in [0, 1]), ``udp`` (which affine/decoding convention the model is trained with),
  ``codec`` (``"udp_heatmap"`` or ``"msra_heatmap"``), ``sigma``, ``layer_decay`` (recommended rate).
* ``layer_id(param_name)`` / ``num_layers``: layer-wise lr decay. ``num_layers`` is the *number* of layer ids,
  which run from 0 (embedding) to ``num_layers - 1`` (last norm and head); the engine's
  :func:`~humanvision.engine.optim.param_groups` (the only builder) scales a parameter's lr by
  ``decay ** (num_layers - 1 - id)``.
* ``no_weight_decay()``: full parameter names excluded from weight decay (every 1-D tensor, i.e. biases and
  norm affine parameters, plus position embeddings), the ViTPose rule.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PoseModel", "build_variant", "layer_decay_param_groups",
           "resolve_skeleton"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resolve_skeleton(skeleton: Any) -> tuple[str, int]:
    """(name, num_joints) of a skeleton given by name or as a ``Skeleton``."""
    from humanvision.skeletons import get_skeleton

    sk = get_skeleton(skeleton)
    return sk.name, sk.num_joints


def _pair(size: int | tuple[int, int] | list[int], what: str) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"{what} must be a positive int or a (width, height) pair, got {size!r}")
    return int(size[0]), int(size[1])


class PoseModel(nn.Module):
    """Base class: the attributes and methods every heatmap pose model exposes (see the module docstring)."""

    model_name: str = ""

    def __init__(self, skeleton: Any, input_size: int | tuple[int, int], *, udp: bool, codec: str,
                 sigma: float = 2.0, layer_decay: float = 1.0, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 heatmap_stride: int = 4) -> None:
        super().__init__()
        self.skeleton, self.num_joints = resolve_skeleton(skeleton)
        self.input_size = _pair(input_size, "input_size")
        s = int(heatmap_stride)
        if self.input_size[0] % s or self.input_size[1] % s:
            raise ValueError(f"input_size {self.input_size} must be divisible by {s} (heatmaps are 1/{s} size)")
        self.heatmap_size = (self.input_size[0] // s, self.input_size[1] // s)
        self.model_args: dict[str, Any] = {}
        self.default_cfg: dict[str, Any] = {
            "model": self.model_name, "skeleton": self.skeleton, "num_joints": self.num_joints,
            "input_size": self.input_size, "heatmap_size": self.heatmap_size, "mean": tuple(mean), "std": tuple(std),
            "udp": udp, "codec": codec, "sigma": sigma, "layer_decay": layer_decay}

    # -- forward -------------------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised crops -> ``(B, K, H/4, W/4)`` heatmaps."""
        return self.forward_head(self.forward_features(x))

    # -- optimisation helpers ------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        """Number of layer ids (1 for CNNs: a single group, id 0)."""
        return 1

    def layer_id(self, name: str) -> int:
        """Layer-decay group of parameter ``name`` (0 ... num_layers - 1)."""
        return 0

    def no_weight_decay(self) -> set[str]:
        """Full names of parameters without weight decay: 1-D tensors (biases, norms) and position embeddings."""
        return {n for n, p in self.named_parameters() if p.ndim <= 1 or n.endswith(".bias") or "pos_embed" in n}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute backbone activations in the backward pass to save memory."""
        self.grad_checkpointing = enable
        self.backbone.set_grad_checkpointing(enable)


def layer_decay_param_groups(model: PoseModel, weight_decay: float, layer_decay: float | None = None
                             ) -> list[dict[str, Any]]:
    """:func:`humanvision.engine.optim.param_groups` with ``layer_decay=None`` meaning the model's recommended
    ``default_cfg['layer_decay']`` (kept for the ``humanvision.models`` namespace; the engine builds the groups)."""
    from humanvision.engine.optim import param_groups

    decay = model.default_cfg.get("layer_decay", 1.0) if layer_decay is None else layer_decay
    return param_groups(model, weight_decay, decay)


def build_variant(cls: type[PoseModel], variant: str, skeleton: Any, model_args: dict[str, Any],
                  kwargs: dict[str, Any]) -> PoseModel:
    """``cls(skeleton, **model_args, **kwargs)`` named ``variant``: the body of every registered entry point.
    ``model_args`` (the variant's defaults) are overridden by the caller's ``kwargs``, which ``model_args`` of the
    model records (so a saved model is rebuilt as ``create_model(variant, **model.model_args)``)."""
    model = cls(skeleton=skeleton, **{**model_args, **kwargs})
    model.model_name = model.default_cfg["model"] = variant
    model.model_args = {"skeleton": model.skeleton, **kwargs}
    return model
