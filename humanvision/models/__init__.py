"""Pose models and the model registry (the only registry in humanvision).

>>> from humanvision.models import create_model
>>> model = create_model("vitpose_tiny", skeleton="coco17")
>>> model.input_size, model.heatmap_size   # (width, height)
((96, 128), (24, 32))

Families: :mod:`~humanvision.models.vitpose` (ViTPose S/B/L/H, classic and simple decoders),
:mod:`~humanvision.models.simple_baseline` (SimpleBaseline on ResNet / Swin, HRNet),
:mod:`~humanvision.models.lateral` (CNN + feature-pyramid decoder, the CPU demo's model),
:mod:`~humanvision.models.pct_swin` (PCT's Swin-V2-style backbone and its stage-0 heatmap model),
:mod:`~humanvision.models.hourglass` and :mod:`~humanvision.models.resnet_depth` (monocular 3D). These have the
surface described in :mod:`humanvision.models._base`. Families that are not pose models: ``pose_mae_*``
(:mod:`~humanvision.models.mae`, HAP / MAE pre-training), ``hcmoco_*`` (:mod:`~humanvision.models.hcmoco`,
HCMoCo's multi-modal encoders), ``reid_*`` / ``attr_*`` (:mod:`~humanvision.models.person_vit`), ``t2i_*``
(:mod:`~humanvision.models.text_reid`), ``parsing_*`` (:mod:`~humanvision.models.parsing`). Weights:
:mod:`humanvision.models.weights` (our safetensors with a JSON sidecar, official ViTPose / MMPose
checkpoints). :mod:`~humanvision.models.pct` holds PCT's tokenizer and token classification head (parts of
:mod:`humanvision.methods.pct`, not registry entries).
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
from humanvision.models.hcmoco import HCMoCo as HCMoCo
from humanvision.models.heads import DeconvHead, SimpleHead
from humanvision.models.hourglass import Hourglass3D as Hourglass3D
from humanvision.models.lateral import LateralPose
from humanvision.models.mae import PoseMAE
from humanvision.models.parsing import ParsingHRNet as ParsingHRNet
from humanvision.models.pct import MixerLayer, PCTHead, PCTTokenizer
from humanvision.models.pct_swin import PCTSwinHeatmap, SwinV2TransformerRPE2FC
from humanvision.models.person_vit import AttributeViT as AttributeViT
from humanvision.models.person_vit import ReIDViT as ReIDViT
from humanvision.models.resnet_depth import ResNetDepth as ResNetDepth
from humanvision.models.simple_baseline import HRNetPose, SimpleBaseline
from humanvision.models.text_reid import TextImageReID as TextImageReID
from humanvision.models.vitpose import PaddedPatchEmbed, ViTPose

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "DeconvHead", "HRNetPose", "LateralPose", "MixerLayer", "PCTHead",
    "PCTSwinHeatmap", "PCTTokenizer", "PaddedPatchEmbed", "PoseMAE", "PoseModel", "SimpleBaseline", "SimpleHead",
    "SwinV2TransformerRPE2FC", "ViTPose", "check_model_args", "check_model_choice",
    "create_model", "is_model", "layer_decay_param_groups", "list_models", "model_entrypoint", "register_model",
]
