"""Layer-wise lr decay: the engine's one builder against the published rules (pose2d.md 2.5 ViTPose, 3.2 PCT Swin).

The expected scales are computed here from the published rules, not by calling the models' ``layer_id``.
"""

from __future__ import annotations

import re

import pytest
import torch

from humanvision.engine import LRSchedule, build_optimizer, param_groups
from humanvision.errors import ConfigError
from humanvision.methods.topdown import DataConfig, TopDownPose, build_codec
from humanvision.models import create_model


def _method(name: str, wrapped: bool = True):
    """The model wrapped in :class:`TopDownPose` (parameter names ``model.*``), or the bare model."""
    with torch.device("meta"):  # only names, shapes and requires_grad matter
        model = create_model(name)
    return TopDownPose(model, build_codec(model, DataConfig()), model.skeleton) if wrapped else model


def _engine_lrs(module, decay: float, base_lr: float = 5e-4) -> dict[str, float]:
    """Parameter name (without the method's ``model.`` prefix) -> lr after the engine builds the optimiser and
    applies a constant schedule."""
    opt = build_optimizer(param_groups(module, weight_decay=0.1, layer_decay=decay), "adamw", lr=base_lr)
    LRSchedule(lr=base_lr, total_iters=10, iters_per_epoch=10).apply(opt, 5)
    return {n.removeprefix("model."): g["lr"] for g in opt.param_groups for n in g["param_names"]}


def _vitpose_rule(name: str, depth: int) -> int:
    """pose2d.md 2.5: patch_embed / pos_embed 0, ``blocks.i`` i + 1, everything else (last norm, head) depth + 1."""
    if name.startswith(("backbone.patch_embed.", "backbone.pos_embed")):
        return 0
    m = re.match(r"backbone\.blocks\.(\d+)\.", name)
    return int(m.group(1)) + 1 if m else depth + 1


@pytest.mark.parametrize("wrapped", [True, False], ids=["topdown", "bare"])
@pytest.mark.parametrize(("name", "depth", "decay"), [("vitpose_base", 12, 0.75), ("vitpose_tiny", 6, 0.8)])
def test_vitpose_layer_decay_follows_the_published_rule(name, depth, decay, wrapped):
    method = _method(name, wrapped)
    lrs = _engine_lrs(method, decay)
    assert set(lrs) == {n.removeprefix("model.") for n, _ in method.named_parameters()}
    for n, lr in lrs.items():
        assert lr == pytest.approx(5e-4 * decay ** (depth + 1 - _vitpose_rule(n, depth)), rel=1e-12), n
    assert len({round(lr, 15) for lr in lrs.values()}) == depth + 2  # one lr per layer id
    if name == "vitpose_base":  # the brief's numbers: patch_embed 0.75**13 ~ 0.024 of the base lr, head 1.0
        assert lrs["backbone.patch_embed.proj.weight"] / 5e-4 == pytest.approx(0.0238, abs=1e-4)
        assert lrs["backbone.pos_embed"] == lrs["backbone.patch_embed.proj.bias"]
        assert lrs["backbone.blocks.11.mlp.fc2.weight"] == pytest.approx(5e-4 * 0.75)
        assert lrs["backbone.norm.weight"] == lrs["head.final_layer.weight"] == pytest.approx(5e-4)


def _pct_swin_rule(name: str, depths: list[int]) -> int:
    """pose2d.md 3.2 (PCT utils/optimzer_ld.py), for timm parameter names.

    PCT counts the patch merging that ends stages 0..2 as one more layer of that stage (sizes [d0+1, d1+1, d2+1,
    d3], n = sum + 2): patch_embed 0, block b of stage s ``b + sizes[:s] + 1``, the merging after stage s
    ``sizes[:s+1]``, the rest n - 1. timm puts that merging at the start of the next stage
    (``layers.{s+1}.downsample``).
    """
    sizes = [d + 1 for d in depths[:-1]] + [depths[-1]]
    n = sum(sizes) + 2
    if name.startswith("backbone.patch_embed."):
        return 0
    m = re.match(r"backbone\.layers\.(\d+)\.blocks\.(\d+)\.", name)
    if m:
        s, b = int(m.group(1)), int(m.group(2))
        return b + sum(sizes[:s]) + 1
    m = re.match(r"backbone\.layers\.(\d+)\.downsample\.", name)
    if m:
        return sum(sizes[:int(m.group(1))])  # merging after stage s - 1, timm stage s
    return n - 1


@pytest.mark.parametrize(("name", "depths", "n"), [("simplebaseline_swin_base", [2, 2, 18, 2], 29),
                                                   ("simplebaseline_swin_tiny", [2, 2, 6, 2], 17)])
@pytest.mark.parametrize("wrapped", [True, False], ids=["topdown", "bare"])
def test_swin_layer_decay_follows_the_pct_rule(name, depths, n, wrapped):
    method = _method(name, wrapped)
    assert method.num_layers == n  # Swin-B: sizes [3, 3, 19, 2] -> 27 + 2 = 29 (pose2d.md 3.2)
    lrs = _engine_lrs(method, 0.9, base_lr=1.0)
    for p, lr in lrs.items():
        assert lr == pytest.approx(0.9 ** (n - 1 - _pct_swin_rule(p, depths)), rel=1e-12), p
    if name == "simplebaseline_swin_base":
        assert lrs["backbone.layers.3.downsample.reduction.weight"] == pytest.approx(0.9 ** (28 - 25))
        assert lrs["backbone.layers.3.blocks.0.mlp.fc1.weight"] == pytest.approx(0.9 ** (28 - 26))


def test_cnn_is_one_group_and_every_model_has_one_num_layers_meaning():
    lrs = _engine_lrs(_method("simplebaseline_tiny"), 0.5, base_lr=1.0)
    assert set(lrs.values()) == {1.0}
    for name in ("vitpose_tiny", "simplebaseline_swin_tiny", "simplebaseline_tiny", "lateral_tiny"):
        method = _method(name)
        ids = {method.layer_id(n) for n, _ in method.named_parameters()}
        assert method.num_layers == method.model.num_layers == max(ids) + 1 and min(ids) == 0, name
        assert {method.model.layer_id(n) for n, _ in method.model.named_parameters()} == ids, name


def test_a_layer_id_equal_to_num_layers_is_refused():
    """``num_layers`` counts the ids, so the largest-id convention (head id == num_layers) is a configuration error."""

    class LargestIdConvention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.head = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
            self.num_layers = 1  # largest id, not the count

        def layer_id(self, name: str) -> int:
            return 0 if name.startswith("stem") else 1

    with pytest.raises(ConfigError, match=r"layer_id\('head.weight'\) = 1 is outside \[0, num_layers - 1 = 0\]"):
        param_groups(LargestIdConvention(), 0.1, layer_decay=0.5)
