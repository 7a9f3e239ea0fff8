"""The :class:`Sample` record that every reader returns and every pipeline consumes.

Conventions (all readers follow them; :meth:`Sample.validate` checks the shapes):

* ``N`` people (instances) and ``K`` joints of the skeleton named by ``skeleton``.
* 2D keypoints are ``(N, K, 2) float32`` **0-based pixel** coordinates ``(x, y)`` of the full image (the
  centre of the top-left pixel is ``(0, 0)``); ``visibility`` is ``(N, K) float32`` in ``[0, 1]``: 0 = not
  labelled, 1 = labelled (COCO's ``v = 1`` "labelled but occluded" and ``v = 2`` both give 1, as in the 0.x
  loaders; readers keep the raw flags in ``meta`` where a format has them).
* 3D keypoints are ``(N, K, 3) float32`` in **millimetres**; ``keypoints_3d_frame`` says whether they are in
  the world frame (``"world"``, e.g. Human3.6M, z up) or the camera frame of ``camera`` (``"camera"``, OpenCV
  axes: x right, y down, z forward). ``visibility_3d`` (``(N, K)``) marks valid 3D joints.
* Boxes are ``(N, 4) float32`` ``(x, y, w, h)`` in pixels; ``scores`` (``(N,)``) are detection/box scores.
* ``image`` is ``(H, W, 3) uint8`` RGB, ``depth`` is ``(H, W) float32`` millimetres (0 = no measurement),
  ``part_mask`` / ``instance_mask`` are ``(H, W)`` integer label images (instance ``i`` has label ``i + 1``).
  Each may instead be a :class:`LazyImage` (a path plus a loader) that is decoded by
  :meth:`Sample.load_image`, :meth:`Sample.load_depth` and :meth:`Sample.load_masks` (or all at once by
  :meth:`Sample.load`). Readers always return lazy images, so indexing a reader never decodes pixels.

Multi-view frames are a :class:`MultiViewSample`: one :class:`Sample` per available view (each with its own
image, camera and box) plus the frame's world-frame 3D keypoints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from humanvision.errors import DataError

if TYPE_CHECKING:
    from humanvision.geometry import Camera

__all__ = ["LazyImage", "MultiViewSample", "Sample"]


class LazyImage:
    """An array that is decoded on demand: ``loader(path, *args)``.

    Picklable as long as ``loader`` is a module-level function (all the library's loaders are), so samples and
    readers cross DataLoader worker boundaries without decoding anything.

    >>> from humanvision.data.io import read_image
    >>> LazyImage("img/000001.jpg", read_image)
    LazyImage('img/000001.jpg', read_image)
    """

    __slots__ = ("args", "loader", "path")

    def __init__(self, path: str, loader: Callable[..., np.ndarray], *args: Any) -> None:
        self.path, self.loader, self.args = str(path), loader, args

    def load(self) -> np.ndarray:
        return self.loader(self.path, *self.args)

    def __repr__(self) -> str:
        extra = "".join(f", {a!r}" for a in self.args)
        return f"LazyImage({self.path!r}, {getattr(self.loader, '__name__', self.loader)}{extra})"

    def __getstate__(self):
        return self.path, self.loader, self.args

    def __setstate__(self, state) -> None:
        self.path, self.loader, self.args = state

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, LazyImage) and (self.path, self.loader, self.args)
                == (other.path, other.loader, other.args))

    __hash__ = None  # type: ignore[assignment]


def _load(value):
    return value.load() if isinstance(value, LazyImage) else value


@dataclass(eq=False)
class Sample:
    """One image (or depth map) with the annotations of the ``N`` people in it. Every field is optional.

    Attributes:
        image: ``(H, W, 3) uint8`` RGB, or a :class:`LazyImage`; ``image_path`` names its file.
        depth: ``(H, W) float32`` millimetres (0 = missing), or a :class:`LazyImage`; ``depth_path`` names its
        file.
        keypoints_2d: ``(N, K, 2) float32`` 0-based pixels. visibility: ``(N, K) float32`` in [0, 1].
        keypoints_3d: ``(N, K, 3) float32`` mm in ``keypoints_3d_frame`` (``"world"`` or ``"camera"``).
        visibility_3d: ``(N, K) float32`` in [0, 1], validity of the 3D joints.
        camera: the :class:`humanvision.geometry.Camera` of the image (intrinsics in its pixel frame).
        boxes: ``(N, 4) float32`` xywh pixels. scores: ``(N,) float32`` box / detection scores.
        part_mask: ``(H, W)`` integer part labels.
        instance_mask: ``(H, W)`` integer, person ``i`` is ``i + 1``.
        identity: person identity (re-identification, or the subject of a single-person frame).
        attributes: named attributes (pedestrian attributes, action, subject, ...).
        skeleton: name of the joint set (:func:`humanvision.skeletons.get_skeleton`).
        source: the annotation file this sample was read from. index: its position in the reader.
        image_id: the dataset's image id. ann_ids: ``(N,) int64`` annotation ids.
        meta: format-specific extras (documented by each reader), e.g. MPII ``center``/``scale``.
    """

    image: np.ndarray | LazyImage | None = None
    image_path: str | None = None
    depth: np.ndarray | LazyImage | None = None
    depth_path: str | None = None
    keypoints_2d: np.ndarray | None = None
    visibility: np.ndarray | None = None
    keypoints_3d: np.ndarray | None = None
    visibility_3d: np.ndarray | None = None
    keypoints_3d_frame: str | None = None
    camera: Camera | None = None
    boxes: np.ndarray | None = None
    scores: np.ndarray | None = None
    part_mask: np.ndarray | LazyImage | None = None
    instance_mask: np.ndarray | LazyImage | None = None
    identity: int | str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    skeleton: str | None = None
    source: str | None = None
    index: int | None = None
    image_id: int | str | None = None
    ann_ids: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ lazy pixels
    def load_image(self) -> np.ndarray | None:
        """Decode the image if it is lazy (once: the array replaces the :class:`LazyImage`) and return it."""
        self.image = _load(self.image)
        return self.image

    def load_depth(self) -> np.ndarray | None:
        """Decode the depth map (mm) if it is lazy and return it."""
        self.depth = _load(self.depth)
        return self.depth

    def load_masks(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Decode ``part_mask`` and ``instance_mask`` if they are lazy; return both."""
        self.part_mask, self.instance_mask = _load(self.part_mask), _load(self.instance_mask)
        return self.part_mask, self.instance_mask

    def load(self) -> Sample:
        """Decode every lazy field in place and return ``self``."""
        self.load_image()
        self.load_depth()
        self.load_masks()
        return self

    @property
    def is_lazy(self) -> bool:
        return any(isinstance(v, LazyImage) for v in (self.image, self.depth, self.part_mask,
                                                      self.instance_mask))

    # ------------------------------------------------------------------ shapes
    @property
    def num_instances(self) -> int:
        """``N``: people annotated in this sample (0 when there is no per-person field)."""
        for v in (self.keypoints_2d, self.keypoints_3d, self.boxes, self.scores, self.ann_ids):
            if v is not None:
                return int(np.shape(v)[0])
        return 0

    @property
    def num_joints(self) -> int | None:
        for v in (self.keypoints_2d, self.keypoints_3d):
            if v is not None and np.ndim(v) == 3:
                return int(np.shape(v)[1])
        return None

    def validate(self) -> Sample:
        """Check that the fields agree with each other and with the skeleton; raise :class:`DataError` if not.

        The message names ``source``, the record (``image_id`` or ``index``) and the field. Returns ``self``.
        """
        record = f"image {self.image_id}" if self.image_id is not None else (
            f"sample {self.index}" if self.index is not None else None)

        def fail(f: str, msg: str) -> None:
            raise DataError(msg, file=self.source, record=record, field=f)

        n, k = self.num_instances, self.num_joints
        if self.skeleton is not None:
            from humanvision.skeletons import SkeletonError, get_skeleton

            try:
                sk = get_skeleton(self.skeleton)
            except SkeletonError as e:
                fail("skeleton", str(e))
            if k is not None and k != sk.num_joints:
                fail("keypoints", f"{k} joints but skeleton {sk.name!r} has {sk.num_joints}")

        def check(name: str, shape: tuple, finite_where: np.ndarray | None = None,
                  unit: bool = False) -> None:
            v = getattr(self, name)
            if v is None:
                return
            a = np.asarray(v)
            if a.shape != shape:
                joints = f", K={k} joints)" if k else ")"
                fail(name, f"shape {a.shape}, expected {shape} (N={n} people{joints}")
            if a.dtype.kind not in "fiub":
                fail(name, f"dtype {a.dtype} is not numeric")
            bad = ~np.isfinite(a.astype(np.float64))
            if finite_where is not None:
                bad &= np.asarray(finite_where)[(...,) + (None,) * (a.ndim - finite_where.ndim)] > 0
            if bad.any():
                fail(name, f"non-finite values at {np.argwhere(bad)[:3].tolist()}")
            if unit and a.size and (a.min() < 0 or a.max() > 1):
                fail(name, f"values must lie in [0, 1], got [{a.min()}, {a.max()}]")

        vis = None if self.visibility is None else np.asarray(self.visibility)
        vis3 = None if self.visibility_3d is None else np.asarray(self.visibility_3d)
        if k is not None:
            check("visibility", (n, k), unit=True)
            check("visibility_3d", (n, k), unit=True)
            check("keypoints_2d", (n, k, 2), finite_where=vis)
            check("keypoints_3d", (n, k, 3), finite_where=vis3)
        elif self.visibility is not None or self.visibility_3d is not None:
            fail("visibility", "visibility given without keypoints")
        if self.keypoints_3d is not None and self.keypoints_3d_frame not in ("world", "camera"):
            fail("keypoints_3d_frame", f"must be 'world' or 'camera', got {self.keypoints_3d_frame!r}")
        check("boxes", (n, 4))
        if self.boxes is not None and (np.asarray(self.boxes)[:, 2:] < 0).any():
            fail("boxes", "negative box width or height (boxes are x, y, w, h)")
        check("scores", (n,))
        if self.ann_ids is not None and np.shape(self.ann_ids) != (n,):
            fail("ann_ids", f"shape {np.shape(self.ann_ids)}, expected ({n},)")

        hw = None
        for name, channels in (("image", 3), ("depth", None), ("part_mask", None), ("instance_mask", None)):
            v = getattr(self, name)
            if v is None or isinstance(v, LazyImage):
                continue
            a = np.asarray(v)
            if channels is None and a.ndim != 2:
                fail(name, f"shape {a.shape}, expected (H, W)")
            if channels is not None and (a.ndim != 3 or a.shape[2] != channels or a.dtype != np.uint8):
                fail(name, f"shape {a.shape} dtype {a.dtype}, expected (H, W, 3) uint8 RGB")
            if hw is not None and a.shape[:2] != hw:
                fail(name, f"size {a.shape[:2]} differs from the other images' {hw}")
            hw = a.shape[:2]
        if self.camera is not None and not hasattr(self.camera, "K"):
            fail("camera", f"expected a humanvision.geometry.Camera, got {type(self.camera).__name__}")
        return self

    def replace(self, **changes: Any) -> Sample:
        """A shallow copy with some fields replaced (``dataclasses.replace``)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        values["attributes"], values["meta"] = dict(values["attributes"]), dict(values["meta"])
        return Sample(**values)


@dataclass(eq=False)
class MultiViewSample:
    """One multi-view frame: a :class:`Sample` per available view plus the frame's 3D keypoints.

    Attributes:
        views: one Sample per available camera (missing views are left out), each with ``image`` (lazy),
            ``camera`` (world -> camera extrinsics and that image's intrinsics) and ``boxes`` (``(1, 4)``
            xywh).
        view_names: camera names, aligned with ``views``.
        keypoints_3d: ``(N, K, 3) float32`` world-frame millimetres; visibility_3d: ``(N, K)`` validity.
        skeleton, source, index, identity, attributes, meta: as in :class:`Sample`.
    """

    views: list[Sample]
    view_names: list[str]
    keypoints_3d: np.ndarray | None = None
    visibility_3d: np.ndarray | None = None
    skeleton: str | None = None
    source: str | None = None
    index: int | None = None
    identity: int | str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_views(self) -> int:
        return len(self.views)

    def load(self) -> MultiViewSample:
        """Decode every view's lazy fields in place and return ``self``."""
        for v in self.views:
            v.load()
        return self

    def validate(self) -> MultiViewSample:
        """Check the views and the shared keypoints; raise :class:`DataError` naming the frame and field."""
        record = f"frame {self.index}"
        if len(self.views) != len(self.view_names):
            raise DataError(f"{len(self.views)} views but {len(self.view_names)} view names",
                            file=self.source,
                            record=record, field="view_names")
        shared = Sample(keypoints_3d=self.keypoints_3d, visibility_3d=self.visibility_3d,
                        keypoints_3d_frame="world", skeleton=self.skeleton, source=self.source,
                        index=self.index)
        shared.validate()
        for name, v in zip(self.view_names, self.views):
            if v.skeleton is not None and self.skeleton is not None and v.skeleton != self.skeleton:
                raise DataError(f"view {name} uses skeleton {v.skeleton!r}, the frame {self.skeleton!r}",
                                file=self.source, record=record, field="skeleton")
            v.validate()
        return self
