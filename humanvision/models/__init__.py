"""Pose models and the model registry (the only registry in humanvision).

>>> from humanvision.models import create_model
>>> model = create_model("vitpose_tiny", skeleton="coco17")
>>> model.input_size, model.heatmap_size   # (width, height)
((96, 128), (24, 32))

Families: :mod:`~humanvision.models.vitpose` (ViTPose S/B/L/H, classic and simple decoders),
:mod:`~humanvision.models.simple_baseline` (SimpleBaseline on ResNet / Swin, HRNet),
:mod:`~humanvision.models.lateral` (CNN + feature-pyramid decoder, the CPU demo's model),
:mod:`~humanvision.models.pct_swin` (PCT's Swin-V2-style backbone and its stage-0 heatmap model). Every model
has the surface described in :mod:`humanvision.models._base`. Weights: :mod:`humanvision.models.weights` (our
safetensors with a JSON sidecar, official ViTPose / MMPose checkpoints). :mod:`~humanvision.models.pct` holds
PCT's tokenizer and token classification head (parts of :mod:`humanvision.methods.pct`, not registry entries).
"""

from humanvision.models._base import IMAGENET_MEAN, IMAGENET_STD, PoseModel, layer_decay_param_groups
from humanvision.models._registry import (
    check_model_args,
    check_model_choice,
    create_model,
    is_model,
    list_models,
    model_entrypoint,
    register_model,
)
from humanvision.models.heads import DeconvHead, SimpleHead
from humanvision.models.hourglass import Hourglass3D as Hourglass3D
from humanvision.models.lateral import LateralPose
from humanvision.models.pct import MixerLayer, PCTHead, PCTTokenizer
from humanvision.models.pct_swin import PCTSwinHeatmap, SwinV2TransformerRPE2FC
from humanvision.models.resnet_depth import ResNetDepth as ResNetDepth
from humanvision.models.simple_baseline import HRNetPose, SimpleBaseline
from humanvision.models.vitpose import PaddedPatchEmbed, ViTPose

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "DeconvHead", "HRNetPose", "LateralPose", "MixerLayer", "PCTHead",
    "PCTSwinHeatmap", "PCTTokenizer", "PaddedPatchEmbed", "PoseModel", "SimpleBaseline", "SimpleHead",
    "SwinV2TransformerRPE2FC", "ViTPose", "check_model_args", "check_model_choice",
    "create_model", "is_model", "layer_decay_param_groups", "list_models", "model_entrypoint", "register_model",
]
