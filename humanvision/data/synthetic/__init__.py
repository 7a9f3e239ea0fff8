"""The synthetic human world: a parametric articulated body, poses (sampled or from real motion), scenes with
occluders, ground and textured backgrounds, calibrated cameras, a numpy ray caster and dataset writers.

>>> from humanvision.data.synthetic import SceneConfig, generate_frame
>>> frame = generate_frame(SceneConfig(size=(128, 128)), seed=0, index=0)
>>> view = frame.views[0]
>>> view.rgb.shape, view.depth.dtype, view.keypoints_2d.shape[-1]
((128, 128, 3), dtype('float32'), 2)

Writers (``generate_coco``, ``generate_mpii``, ``generate_h36m``, ``generate_itop``, ``generate_multimodal``)
produce datasets in the official layouts, each readable by :mod:`humanvision.data.readers`; the command line is
``humanvision synth``. Everything is deterministic for a seed: frame ``i`` of seed ``s`` only depends on
``(config, s, i)``.
"""

from humanvision.data.synthetic.body import (
    JOINT_LIMITS,
    JOINTS,
    PART_NAMES,
    SEGMENT_NAMES,
    SYNTH_SKELETON,
    BodyShape,
    PosedBody,
    pose_body,
    sample_pose,
    sample_shape,
)
from humanvision.data.synthetic.motion import Motion, deepmimic_clips, load_deepmimic, read_bvh, retarget
from humanvision.data.synthetic.render import Background, PrimitiveSet, RenderOutput, camera_rays, render
from humanvision.data.synthetic.scene import Frame, SceneConfig, View, annotate, generate_frame, make_rig
from humanvision.data.synthetic.sheet import contact_sheet, view_panels
from humanvision.data.synthetic.writers import (
    FORMATS,
    generate,
    generate_coco,
    generate_h36m,
    generate_itop,
    generate_mpii,
    generate_multimodal,
    select_joints,
)

__all__ = [
    "FORMATS", "JOINTS", "JOINT_LIMITS", "PART_NAMES", "SEGMENT_NAMES", "SYNTH_SKELETON", "Background", "BodyShape",
    "Frame", "Motion", "PosedBody", "PrimitiveSet", "RenderOutput", "SceneConfig", "View", "annotate",
    "camera_rays", "contact_sheet", "deepmimic_clips", "generate", "generate_coco", "generate_frame",
    "generate_h36m", "generate_itop", "generate_mpii", "generate_multimodal", "load_deepmimic", "make_rig",
    "pose_body", "read_bvh", "render", "retarget", "sample_pose", "sample_shape", "select_joints", "view_panels",
]
