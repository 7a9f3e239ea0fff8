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
``crowdpose14``, ``lsp14``, ``mpi_inf_3dhp17``, ``mpi_inf_3dhp28``, ``itop15``, ``ntu25``, ``body25``, ``body25b``,
``coco18``, ``flic29``, ``occlusion_person15``, ``smpl24``). A custom set is declared in YAML (:func:`load_skeleton`).
Where a dataset's own loader maps joints differently from the names (HG-3D's maps to MPII-16), the map is data
too: :data:`JOINT_MAPS`, :func:`get_joint_map`, :func:`map_joints`.

Human3.6M's 17 joints come in two orders: ``h36m17`` (alias ``h36m17_lt``) is the learnable-triangulation /
ContextPose order with the pelvis at index 6; ``h36m17_vp`` (alias ``h36m17_mmpose``) is the VideoPose3D /
MMPose order with the pelvis at 0. Both pass a 17-joint check, so name the order;
``convert(x, "h36m17", "h36m17_vp")`` permutes between them.
"""

from humanvision.skeletons.skeleton import (
    DERIVED_JOINTS,
    JOINT_MAPS,
    SKELETONS,
    JointMap,
    Skeleton,
    SkeletonError,
    conversion_plan,
    convert,
    get_joint_map,
    get_skeleton,
    load_skeleton,
    map_joints,
    register_skeleton,
)

__all__ = [
    "DERIVED_JOINTS",
    "JOINT_MAPS",
    "SKELETONS",
    "JointMap",
    "Skeleton",
    "SkeletonError",
    "conversion_plan",
    "convert",
    "get_joint_map",
    "get_skeleton",
    "load_skeleton",
    "map_joints",
    "register_skeleton",
]
