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

Scene presets mirror benchmarks' statistics (:mod:`~humanvision.data.synthetic.presets`: ``legacy``, ``coco``,
``h36m``, ``pedestrian``): ``scene_config("coco", backgrounds="data/backgrounds")``; ``SceneConfig``'s opt-in
fields compose shots (full body to close-ups), truncation, crowds, photo backdrops, lighting, outfits, camera
effects and COCO-style visibility flags.
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
from humanvision.data.synthetic.presets import PRESETS, preset_statistics, scene_config
from humanvision.data.synthetic.render import Background, PrimitiveSet, RenderOutput, camera_rays, render
from humanvision.data.synthetic.scene import (
    SHOTS,
    Frame,
    SceneConfig,
    View,
    adjacent_parts,
    annotate,
    generate_frame,
    make_rig,
    walking_pose,
)
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
    "FORMATS", "JOINTS", "JOINT_LIMITS", "PART_NAMES", "PRESETS", "SEGMENT_NAMES", "SHOTS", "SYNTH_SKELETON",
    "Background", "BodyShape", "Frame", "Motion", "PosedBody", "PrimitiveSet", "RenderOutput", "SceneConfig", "View",
    "adjacent_parts", "annotate", "camera_rays", "contact_sheet", "deepmimic_clips", "generate", "generate_coco",
    "generate_frame", "generate_h36m", "generate_itop", "generate_mpii", "generate_multimodal", "load_deepmimic",
    "make_rig", "pose_body", "preset_statistics", "read_bvh", "render", "retarget", "sample_pose", "sample_shape",
    "scene_config", "select_joints", "view_panels", "walking_pose",
]
