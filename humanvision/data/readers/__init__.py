"""Readers for the official dataset formats, each a lazy, picklable map-style dataset of :class:`Sample`.

=====================  =====================================================================================
reader                 format
=====================  =====================================================================================
CocoKeypoints          COCO keypoint json (any skeleton; per-instance or per-image)
AicKeypoints           AI Challenger in mmpose's COCO-style json (aic14)
CrowdPoseKeypoints     CrowdPose json (crowdpose14, ``images[].crowdIndex`` kept per sample)
OCHumanKeypoints       OCHuman's COCO-format val/test files (coco17; evaluation only, GT boxes)
CocoDetections         COCO person-detection results ``[{image_id, category_id, bbox, score}]``
write_occluded_subset  a COCO keypoint file scoring only mostly occluded people (AP on occluded people)
MpiiJson               MPII in mmpose's json (center/scale/joints/joints_vis, 1-based)
read_mpii_gt_mat       ``mpii_gt_val.mat`` (PCKh ground truth)
Human36MMultiView      learnable-triangulation ``human36m-multiview-labels-*.npy`` + processed image tree
Human36MViews          the same labels, one single-view sample per (frame, camera) with projected 2D joints
Human36MPoses          raw Human3.6M ``MyPoseFeatures/D3_Positions/*.cdf`` (32 mocap joints -> h36m17)
Human36MEccv           Human3.6M ECCV'18 challenge, integral-human-pose ``*_keypoint_jnt_bbox_db.pkl`` (h36m17_vp)
LspJoints              LSP ``joints.mat`` (3, 14, N) and LSP-extended ``joints.mat`` (14, 3, N) (lsp14)
FlicFull               FLIC-full ``examples.mat`` (flic29; HG-3D's 1-based map and transposition bugs fixed)
OcclusionPerson        Occlusion-Person ``unrealcv_{train,validation}.pkl`` (occlusion_person15, camera-frame 3D)
MpiInf3dhpTrain        MPI-INF-3DHP ``S*/Seq*/annot.mat`` (mpi_inf_3dhp28) + extracted video frames
MpiInf3dhpTest         MPI-INF-3DHP ``TS*/annot_data.mat`` (HDF5; mpi_inf_3dhp17, valid frames)
ThreeDPW               3DPW ``sequenceFiles/*/*.pkl`` (Python 2 pickles; smpl24 3D, coco18 detections in meta)
ItopReader             ITOP ``*_depth_map.h5`` + ``*_labels.h5``
MultiModalReader       humanvision's RGB + depth + keypoints layout (``index.json``)
read_openpose_folder   OpenPose ``--write_json`` folders (BODY_25 / BODY_25B / COCO-18) -> ``Detections2D``
read_ntu_hcmoco        NTU RGB+D in HCMoCo's preprocessed layout -> 9-field pre-training samples
read_h36m_parsing      Human3.6M parsing ``flist_2hz_*.txt`` + ``protocol_1/{rgb,seg}`` (25 classes)
read_nturgbd_parsing   NTURGBD-Parsing-4K ``*_list_v2/v3.txt`` + ``images/ depth/ png_annotation_v2/``
read_reid              Market-1501 ``bounding_box_*/ query/`` and MSMT17 ``list_*.txt`` -> ``ReIDDataset``
read_attributes        PA-100K, RAP v1/v2, PETA ``.mat``; PAR ``dataset_all.pkl`` -> ``AttributeDataset``
read_text_reid         CUHK-PEDES / ICFG-PEDES / RSTPReid caption JSON + ``imgs/`` -> ``TextReIDDataset``
=====================  =====================================================================================

Every reader validates what it parses and raises :class:`humanvision.errors.DataError` naming the file, the
record (annotation id, person, frame) and the field; images are decoded only by ``Sample.load_image()``.
Pickled layouts are read with :func:`humanvision.data.io.safe_unpickle` (numpy arrays and builtin containers
only; nothing is executed). Each reader of a set HG-3D trains or tests on documents its joint map to ``mpii16``
(:func:`humanvision.skeletons.skeleton.get_joint_map`).
"""

from humanvision.data.readers.attributes import (
    AttributeDataset,
    read_attributes,
    read_pa100k,
    read_par_pickle,
    read_peta,
    read_rap,
)
from humanvision.data.readers.base import Reader
from humanvision.data.readers.coco import (
    AicKeypoints,
    CocoDetections,
    CocoKeypoints,
    OCHumanKeypoints,
    clean_coco_boxes,
    write_occluded_subset,
)
from humanvision.data.readers.crowdpose import CrowdPoseKeypoints
from humanvision.data.readers.flic import FLIC29_TO_MPII16, FlicFull
from humanvision.data.readers.h36m import (
    H36M_MOCAP_TO_H36M17,
    Human36MEccv,
    Human36MMultiView,
    Human36MPoses,
    Human36MViews,
    read_h36m_cdf,
)
from humanvision.data.readers.itop import ItopReader
from humanvision.data.readers.lsp import LSP14_TO_MPII16, LspJoints
from humanvision.data.readers.mpi_inf_3dhp import (
    MPI_INF_3DHP17_TO_MPII16,
    MPI_INF_3DHP28_TO_MPII16,
    MpiInf3dhpTest,
    MpiInf3dhpTrain,
)
from humanvision.data.readers.mpii import MpiiGroundTruth, MpiiJson, read_mpii_gt_mat
from humanvision.data.readers.multimodal import MULTIMODAL_FORMAT, MultiModalReader, write_multimodal_index
from humanvision.data.readers.ntu import (
    HCMOCO_JOINT_SETS,
    HcmocoSample,
    NtuHcmoco,
    read_ntu_hcmoco,
)
from humanvision.data.readers.occlusion_person import OCCLUSION_PERSON15_TO_MPII16, OcclusionPerson
from humanvision.data.readers.openpose import (
    OPENPOSE_LAYOUTS,
    Detections2D,
    openpose_layout,
    read_openpose_folder,
)
from humanvision.data.readers.parsing import (
    NTURGBD_PARSING_CLASS_WEIGHTS,
    PARSING_CLASSES,
    Human36MParsing,
    NturgbdParsing,
    read_h36m_parsing,
    read_nturgbd_parsing,
)
from humanvision.data.readers.reid import ReIDDataset, ReIDItem, read_market1501, read_msmt17, read_reid
from humanvision.data.readers.text_reid import (
    TextReIDDataset,
    TextReIDItem,
    Vocabulary,
    read_cuhk_pedes,
    read_icfg_pedes,
    read_rstpreid,
    read_text_reid,
    simple_tokenize,
)
from humanvision.data.readers.threedpw import COCO18_TO_MPII16, SMPL24_TO_MPII16, ThreeDPW

__all__ = [
    "COCO18_TO_MPII16",
    "FLIC29_TO_MPII16",
    "H36M_MOCAP_TO_H36M17",
    "HCMOCO_JOINT_SETS",
    "LSP14_TO_MPII16",
    "MPI_INF_3DHP17_TO_MPII16",
    "MPI_INF_3DHP28_TO_MPII16",
    "MULTIMODAL_FORMAT",
    "NTURGBD_PARSING_CLASS_WEIGHTS",
    "OCCLUSION_PERSON15_TO_MPII16",
    "OPENPOSE_LAYOUTS",
    "PARSING_CLASSES",
    "SMPL24_TO_MPII16",
    "AicKeypoints",
    "AttributeDataset",
    "CocoDetections",
    "CocoKeypoints",
    "CrowdPoseKeypoints",
    "Detections2D",
    "FlicFull",
    "HcmocoSample",
    "Human36MEccv",
    "Human36MMultiView",
    "Human36MParsing",
    "Human36MPoses",
    "Human36MViews",
    "ItopReader",
    "LspJoints",
    "MpiInf3dhpTest",
    "MpiInf3dhpTrain",
    "MpiiGroundTruth",
    "MpiiJson",
    "MultiModalReader",
    "NtuHcmoco",
    "NturgbdParsing",
    "OCHumanKeypoints",
    "OcclusionPerson",
    "ReIDDataset",
    "ReIDItem",
    "Reader",
    "TextReIDDataset",
    "TextReIDItem",
    "ThreeDPW",
    "Vocabulary",
    "clean_coco_boxes",
    "openpose_layout",
    "read_attributes",
    "read_cuhk_pedes",
    "read_h36m_cdf",
    "read_h36m_parsing",
    "read_icfg_pedes",
    "read_market1501",
    "read_mpii_gt_mat",
    "read_msmt17",
    "read_ntu_hcmoco",
    "read_nturgbd_parsing",
    "read_openpose_folder",
    "read_pa100k",
    "read_par_pickle",
    "read_peta",
    "read_rap",
    "read_reid",
    "read_rstpreid",
    "read_text_reid",
    "simple_tokenize",
    "write_multimodal_index",
    "write_occluded_subset",
]
