"""Geometry for human pose: cameras and distortion, rotations, triangulation, Procrustes, boxes and affine crops,
volumes (cuboid grids, unprojection, view aggregation).

Everything accepts numpy arrays and torch tensors (torch paths are differentiable) and is batched over leading axes.
"""

from humanvision.geometry.affine import *
from humanvision.geometry.calibration import *
from humanvision.geometry.camera import *
from humanvision.geometry.distortion import *
from humanvision.geometry.procrustes import *
from humanvision.geometry.rotation import *
from humanvision.geometry.triangulation import *
from humanvision.geometry.volume import *
