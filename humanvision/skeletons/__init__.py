"""Skeletons as data: one declarative :class:`Skeleton` per joint set.

Training (flip augmentation, half-body), evaluation (OKS sigmas, root joint) and visualisation (limbs, colours)
all read the same object, so a joint set is described exactly once. Joints are identified by *canonical names*
(``left_shoulder``, ``pelvis``, ``head_top`` ...); flip pairs, body halves and colours are derived from the names,
and conversion between sets (:func:`convert`) works by name, with the derived joints of :data:`DERIVED_JOINTS`.

>>> from humanvision.skeletons import get_skeleton
>>> coco = get_skeleton("coco17")
>>> coco.num_joints, coco.flip_index[:3]
(17, (0, 2, 1))

Built-in sets: see :data:`SKELETONS` (``coco17``, ``mpii16``, ``h36m17``, ``h36m17_vp``, ``aic14``,
``crowdpose14``, ``lsp14``, ``mpi_inf_3dhp17``, ``itop15``, ``ntu25``, ``body25``). A custom set is declared
in YAML (:func:`load_skeleton`).

Human3.6M's 17 joints come in two orders: ``h36m17`` (alias ``h36m17_lt``) is the learnable-triangulation /
ContextPose order with the pelvis at index 6; ``h36m17_vp`` (alias ``h36m17_mmpose``) is the VideoPose3D /
MMPose order with the pelvis at 0. Both pass a 17-joint check, so name the order;
``convert(x, "h36m17", "h36m17_vp")`` permutes between them.
"""

from humanvision.skeletons.skeleton import (
    DERIVED_JOINTS,
    SKELETONS,
    Skeleton,
    SkeletonError,
    conversion_plan,
    convert,
    get_skeleton,
    load_skeleton,
    register_skeleton,
)

__all__ = [
    "DERIVED_JOINTS",
    "SKELETONS",
    "Skeleton",
    "SkeletonError",
    "conversion_plan",
    "convert",
    "get_skeleton",
    "load_skeleton",
    "register_skeleton",
]
