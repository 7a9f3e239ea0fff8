"""The humanvision multi-modal layout: pixel-aligned RGB + depth + keypoints, for contrastive pre-training.

A dataset is a folder with an ``index.json`` (the file the reader is given) and image files whose paths are
relative to that folder::

    {
      "format": "humanvision-multimodal",          # required, exactly this string
      "version": 1,                                # required, 1
      "skeleton": "coco17",                        # required, a built-in or registered skeleton name
      "samples": [                                 # required, one object per frame
        {
          "id": "000042",                          # required, unique (string or integer)
          "rgb": "rgb/000042.png",                 # RGB image (png/jpg); null or absent = no colour
          "depth": "depth/000042.png",             # 16-bit 1-channel PNG, millimetres, 0 = no measurement;
                                                   #   null or absent = no depth (at least one of rgb/depth)
          "width": 320, "height": 240,             # optional: the size of rgb/depth (they are pixel-aligned)
          "part_mask": "parts/000042.png",         # optional 8/16-bit PNG of part labels (0 = background)
          "instance_mask": "instances/000042.png", # optional 8/16-bit PNG, 0 = background, person i = i + 1
          "camera": {...},                         # optional, humanvision.geometry.Camera.to_dict()
          "identity": 7,                           # optional
          "attributes": {"source": "synthetic"},   # optional, any JSON object
          "people": [                              # required (may be empty)
            {"keypoints": [[x, y, v], ...],        # required, K rows; 0-based pixels of rgb/depth;
                                                   #   v = 0 not labelled, 1 labelled occluded, 2 visible
             "keypoints_3d": [[X, Y, Z], ...],     # optional, K rows, camera frame (OpenCV axes), millimetres
             "box": [x, y, w, h]}                  # optional, pixels
          ]
        }
      ]
    }

Within one sample ``keypoints_3d`` and ``box`` are given for every person or for none. Unknown keys are
ignored (so writers may add their own), missing required keys and wrong shapes are :class:`DataError` naming
the file, the sample id and the field. :func:`write_multimodal_index` writes this layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from humanvision.data.io import read_depth, read_image, read_mask
from humanvision.data.readers.base import Reader, as_array, load_json, require, resolve_skeleton
from humanvision.data.sample import LazyImage, Sample
from humanvision.errors import DataError

__all__ = ["MULTIMODAL_FORMAT", "MultiModalReader", "write_multimodal_index"]

MULTIMODAL_FORMAT = "humanvision-multimodal"
MULTIMODAL_VERSION = 1


def write_multimodal_index(path: str | Path, skeleton: str, samples: list[dict[str, Any]]) -> Path:
    """Write ``index.json`` of the multi-modal layout (``samples`` as documented in this module)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": MULTIMODAL_FORMAT, "version": MULTIMODAL_VERSION, "skeleton": skeleton,
           "samples": samples}
    p.write_text(json.dumps(doc, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    return p


class MultiModalReader(Reader):
    """Reader of the multi-modal layout above; one sample per entry of ``samples``.

    Samples: lazy ``image`` (RGB) and/or ``depth`` (mm), ``keypoints_2d (N, K, 2)``,
    ``visibility = min(1, v)``, ``keypoints_3d`` (camera frame, mm) and ``boxes`` when given, lazy masks,
    ``camera``, ``identity``, ``attributes``, ``image_id`` = the sample id; ``meta``: ``visibility_flags``
    (raw ``v``), ``width``, ``height``, ``has_rgb``, ``has_depth``.
    """

    def __init__(self, index: str | Path) -> None:
        self.source = f = str(index)
        self.root = Path(f).parent
        doc = load_json(f)
        if not isinstance(doc, dict):
            raise DataError("expected a JSON object", file=f)
        if require(doc, "format", file=f, where="top level") != MULTIMODAL_FORMAT:
            raise DataError(f"expected {MULTIMODAL_FORMAT!r}, got {doc['format']!r}", file=f, field="format")
        if require(doc, "version", file=f, where="top level") != MULTIMODAL_VERSION:
            raise DataError(f"unsupported version {doc['version']!r}; this reader reads {MULTIMODAL_VERSION}",
                            file=f, field="version")
        self.skeleton = resolve_skeleton(require(doc, "skeleton", file=f, where="top level"), f)
        k = self.skeleton.num_joints
        samples = require(doc, "samples", file=f, where="top level")
        if not isinstance(samples, list):
            raise DataError("expected a list", file=f, field="samples")
        self.records: list[dict[str, Any]] = []
        seen = set()
        for i, s in enumerate(samples):
            sid = require(s, "id", file=f, where=f"sample #{i}")
            where = f"sample {sid!r}"
            if sid in seen:
                raise DataError("duplicate sample id", file=f, record=where, field="id")
            seen.add(sid)
            rgb, depth = s.get("rgb"), s.get("depth")
            if rgb is None and depth is None:
                raise DataError("neither 'rgb' nor 'depth' is given", file=f, record=where, field="rgb")
            people = require(s, "people", file=f, where=where)
            if not isinstance(people, list):
                raise DataError("expected a list", file=f, record=where, field="people")
            kps, k3d, boxes = [], [], []
            for j, person in enumerate(people):
                pw = f"{where} person {j}"
                kps.append(as_array(require(person, "keypoints", file=f, where=pw), (k, 3), file=f, where=pw,
                                    field="keypoints"))
                if "keypoints_3d" in person:
                    k3d.append(as_array(person["keypoints_3d"], (k, 3), file=f, where=pw,
                                        field="keypoints_3d"))
                if "box" in person:
                    boxes.append(as_array(person["box"], (4,), file=f, where=pw, field="box"))
            for name, got in (("keypoints_3d", k3d), ("box", boxes)):
                if got and len(got) != len(people):
                    raise DataError(f"given for {len(got)} of {len(people)} people (all or none)", file=f,
                                    record=where, field=name)
            kp = np.asarray(kps, np.float32).reshape(len(people), k, 3)
            if not np.isin(kp[..., 2], (0, 1, 2)).all():
                raise DataError("visibility flags must be 0, 1 or 2", file=f, record=where, field="keypoints")
            size = None
            if "width" in s or "height" in s:
                size = as_array([require(s, "width", file=f, where=where), require(s, "height", file=f,
                                                                                   where=where)],
                                (2,), file=f, where=where, field="width/height", dtype=np.int64)
            camera = s.get("camera")
            if camera is not None:
                from humanvision.geometry import Camera

                camera = Camera.from_dict(camera, file=f, record=f"{where} camera")
            attrs = s.get("attributes", {})
            if not isinstance(attrs, dict):
                raise DataError("expected a JSON object", file=f, record=where, field="attributes")
            self.records.append({
                "id": sid, "rgb": rgb, "depth": depth, "part_mask": s.get("part_mask"),
                "instance_mask": s.get("instance_mask"), "size": size, "camera": camera,
                "identity": s.get("identity"), "attributes": attrs, "keypoints": kp,
                "keypoints_3d": np.asarray(k3d, np.float32) if k3d else None,
                "boxes": np.asarray(boxes, np.float32) if boxes else None,
            })

    def __len__(self) -> int:
        return len(self.records)

    def _path(self, rel: str | None) -> str | None:
        return None if rel is None else str(self.root / rel)

    def _get(self, index: int) -> Sample:
        r = self.records[index]
        rgb, depth = self._path(r["rgb"]), self._path(r["depth"])
        part, inst = self._path(r["part_mask"]), self._path(r["instance_mask"])
        kp = r["keypoints"]
        flags = kp[..., 2].astype(np.int8)
        size = r["size"]
        return Sample(
            image=LazyImage(rgb, read_image) if rgb else None, image_path=rgb,
            depth=LazyImage(depth, read_depth) if depth else None, depth_path=depth,
            keypoints_2d=kp[..., :2].copy(), visibility=np.minimum(flags, 1).astype(np.float32),
            keypoints_3d=r["keypoints_3d"],
            keypoints_3d_frame="camera" if r["keypoints_3d"] is not None else None,
            visibility_3d=None if r["keypoints_3d"] is None else np.ones(kp.shape[:2], np.float32),
            camera=r["camera"], boxes=r["boxes"],
            part_mask=LazyImage(part, read_mask) if part else None,
            instance_mask=LazyImage(inst, read_mask) if inst else None,
            identity=r["identity"], attributes=dict(r["attributes"]), skeleton=self.skeleton.name,
            source=self.source, index=index, image_id=r["id"],
            meta={"visibility_flags": flags, "has_rgb": rgb is not None, "has_depth": depth is not None,
                  "width": None if size is None else int(size[0]),
                  "height": None if size is None else int(size[1])},
        )
