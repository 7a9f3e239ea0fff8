"""An HRNet encoder (and optionally an HRFPN neck) in the checkpoint form detectron2 loads, written without detectron2
(pretraining.md A.6, A.7.1: HCMoCo's DensePose recipe sets ``MODEL.WEIGHTS`` to the extracted RGB encoder).

**File format.** A pickle (protocol 4) of::

    {"model": {name: numpy.ndarray}, "__author__": "humanvision", "matching_heuristics": True}

detectron2's ``DetectionCheckpointer`` reads a ``.pkl`` holding ``"model"`` and ``"__author__"`` as it is, turns the
arrays into tensors, and, because of ``"matching_heuristics": True``, matches names by suffix: a checkpoint key
``k`` matches a model key ``m`` when ``m == k`` or ``m`` ends with ``"." + k``; each model key takes its longest
matching checkpoint key, a checkpoint key matched by two model keys is an error, and a key whose shape differs is
skipped with a warning. ``__author__`` is not ``"Caffe2"``, so no Caffe2 renaming is applied. The arrays are
pickled as ``numpy.ndarray(shape, dtype, bytearray)`` calls (:class:`_PortablePickler`), which reference only
``numpy.ndarray``, ``numpy.dtype`` and ``builtins.bytearray``: the file loads under numpy 1.x and 2.x alike (numpy
2's own array pickles name ``numpy._core``, which numpy 1.x lacks), with plain ``pickle.load`` and with
:func:`humanvision.data.io.safe_unpickle`.

**Key layout** (what :func:`detectron2_state` writes):

================================================  ==================================================================
``backbone.bottom_up.<flat HRNet key>``           every key of the flat HRNet state dict of A.6 (``transfer_ckpt.py``
                                                  / :func:`~humanvision.models.hcmoco.extract_encoder`), unchanged:
                                                  ``conv1.weight``, ``bn1.{weight,bias,running_mean,running_var,
                                                  num_batches_tracked}``, ``conv2.*``, ``bn2.*``,
                                                  ``layer1.<b>.{conv1..3,bn1..3}.*``, ``layer1.0.downsample.{0,1}.*``,
                                                  ``transition1.<i>.{0,1}.*`` / ``transition<s>.<i>.0.{0,1}.*``,
                                                  ``stage<s>.<m>.branches.<i>.<b>.{conv1,bn1,conv2,bn2}.*``,
                                                  ``stage<s>.<m>.fuse_layers.<i>.<j>.{0,1}.*`` (j > i) and
                                                  ``...fuse_layers.<i>.<j>.<k>.{0,1}.*`` (j < i)
``backbone.<neck key>`` (only with a neck)        :class:`~humanvision.models.hrfpn.HRFPN`'s state dict:
                                                  ``style="densepose"``: ``interp_conv.<i>.0.weight`` (c_i, c_i, 4,
                                                  4), ``interp_conv.<i>.1.*`` (BN), ``reduction_pooling_conv.<k>.0.
                                                  {weight,bias}`` (256, sum c, 2^k, 2^k), ``reduction_pooling_conv.
                                                  <k>.1.*`` (BN), ``fpn_conv.<k>.{weight,bias}`` (256, 256, 3, 3);
                                                  ``style="hrfpn"``: ``reduction_conv.{weight,bias}`` and
                                                  ``fpn_conv.<k>.*``
================================================  ==================================================================

``backbone.bottom_up.`` is where detectron2's DensePose ``build_hrfpn_backbone`` keeps its HRNet (the HRFPN
backbone's ``bottom_up``) and ``backbone.`` where it keeps the neck's own layers, so with the full prefixes every key
matches its model key exactly (no suffix ambiguity); the A.6 flat file (no prefix) relies on the suffix rule
instead. The HRNet keys are the official HRNet's (the DensePose HRNet uses the same names); BN
``num_batches_tracked`` is kept (that HRNet uses ``nn.BatchNorm2d``). Only the ``densepose`` neck layout has that
project's names; an ``hrfpn`` neck's ``fpn_conv.<k>`` would match there too but its ``reduction_conv`` would not,
so a neck is for our own HRFPN or for the DensePose layout. HCMoCo transfers the backbone only (the neck starts
from detectron2's initialisation), which is :func:`detectron2_state` without ``neck``.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from humanvision.errors import DataError

__all__ = [
    "AUTHOR", "BACKBONE_PREFIX", "NECK_PREFIX", "detectron2_state", "export_densepose", "hrnet_branch_channels",
    "read_detectron2_checkpoint", "write_detectron2_checkpoint",
]

AUTHOR = "humanvision"
#: Prefix of the HRNet keys (detectron2's HRFPN backbone keeps the HRNet as ``bottom_up``).
BACKBONE_PREFIX = "backbone.bottom_up."
#: Prefix of the neck keys (the HRFPN backbone's own layers).
NECK_PREFIX = "backbone."
_NO_PREFIX = ("module.", "encoder1.", "encoder2.", "backbone.", "model.")


def _array(value: Any, key: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.array(value, copy=True)  # a fresh array (0-d stays 0-d)
    if arr.dtype == object:
        raise DataError(f"not a numeric array ({type(value).__name__})", field=key)
    return arr


def hrnet_branch_channels(hrnet: Mapping[str, Any]) -> tuple[int, ...]:
    """The branch widths of a flat HRNet state dict (``stage4.0.branches.<b>.0.conv1.weight``), e.g. (18, 36, 72,
    144)."""
    out = []
    for b in range(4):
        w = hrnet.get(f"stage4.0.branches.{b}.0.conv1.weight")
        if w is None:
            raise DataError(f"no stage4.0.branches.{b}.0.conv1.weight: not a flat HRNet state dict",
                            field="stage4.0.branches")
        out.append(int(w.shape[0]))
    return tuple(out)


def detectron2_state(hrnet: Mapping[str, Any], neck: nn.Module | Mapping[str, Any] | None = None
                     ) -> dict[str, np.ndarray]:
    """The ``"model"`` dict of a detectron2 checkpoint (module docstring): ``hrnet`` (a flat HRNet state dict, A.6)
    under :data:`BACKBONE_PREFIX`, ``neck`` (an :class:`~humanvision.models.hrfpn.HRFPN` or its state dict) under
    :data:`NECK_PREFIX`. Values become fresh numpy arrays. A prefixed HRNet key (``encoder1.``, ``module.``,
    ``backbone.`` ...) or a state dict that is not an HRNet raises a DataError naming the key."""
    hrnet_branch_channels(hrnet)
    bad = [k for k in hrnet if k.startswith(_NO_PREFIX)]
    if bad:
        raise DataError("expected flat HRNet keys (conv1.weight, stage2.0...), got a prefixed key (e.g. from a whole "
                        "model; use extract_encoder)", field=bad[0])
    out = {BACKBONE_PREFIX + k: _array(v, k) for k, v in hrnet.items()}
    if neck is not None:
        state = neck.state_dict() if isinstance(neck, nn.Module) else neck
        for k, v in state.items():
            key = NECK_PREFIX + k
            if key in out or key.startswith(BACKBONE_PREFIX):
                raise DataError(f"neck key {k!r} collides with the backbone's keys", field=k)
            out[key] = _array(v, k)
    return out


class _PortablePickler(pickle.Pickler):
    """Pickles numpy arrays as ``numpy.ndarray(shape, dtype, bytearray(data))`` (C order), loadable by numpy 1.x
    and 2.x (module docstring); everything else as usual."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is np.ndarray:
            if obj.dtype.hasobject:
                raise pickle.PicklingError("object arrays are not written")
            return np.ndarray, (obj.shape, obj.dtype, bytearray(obj.tobytes(order="C")))
        return NotImplemented


def write_detectron2_checkpoint(path: str | Path, model: Mapping[str, np.ndarray]) -> Path:
    """Write ``{"model": model, "__author__": "humanvision", "matching_heuristics": True}`` to ``path`` (``.pkl``,
    created with its folder) with :class:`_PortablePickler`. ``model``: :func:`detectron2_state`'s dict."""
    path = Path(path)
    if path.suffix != ".pkl":
        raise DataError("detectron2 reads this format from a .pkl file (it loads .pth files with torch.load)",
                        file=str(path))
    arrays = {str(k): _array(v, str(k)) for k, v in model.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        _PortablePickler(f, protocol=4).dump({"model": arrays, "__author__": AUTHOR, "matching_heuristics": True})
    tmp.replace(path)
    return path


def export_densepose(hrnet: Mapping[str, Any], path: str | Path, *,
                     neck: bool | nn.Module | Mapping[str, Any] | None = None, neck_style: str = "densepose",
                     out_channels: int = 256, seed: int = 0) -> Path:
    """Write the DensePose initialisation file (A.7.1) of a flat HRNet state dict (e.g. HCMoCo's ``encoder1``,
    :func:`~humanvision.models.hcmoco.extract_encoder`) to ``path`` (``.pkl``).

    ``neck``: None / False: the backbone only (HCMoCo's transfer); True: a freshly initialised
    :class:`~humanvision.models.hrfpn.HRFPN` of ``neck_style`` (``"densepose"``: the layout detectron2's
    ``build_hrfpn_backbone`` loads by name) with ``out_channels``, its branch widths read from the HRNet, its
    initialisation drawn from ``seed`` (the global RNG is left alone); an HRFPN or a state dict: that neck."""
    from humanvision.models.hrfpn import HRFPN

    if neck is True:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            neck = HRFPN(hrnet_branch_channels(hrnet), out_channels, style=neck_style)  # type: ignore[arg-type]
    elif neck is False:
        neck = None
    return write_detectron2_checkpoint(path, detectron2_state(hrnet, neck))


def read_detectron2_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """The ``"model"`` dict of a detectron2-format ``.pkl`` (ours or another's), read without executing code
    (:func:`~humanvision.data.io.safe_unpickle`, latin-1 strings as detectron2 reads them). A file that is not a
    dict with a ``"model"`` dict of arrays raises a DataError naming the file and key."""
    from humanvision.data.io import safe_unpickle

    data = safe_unpickle(path, encoding="latin1")
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise DataError("expected a detectron2 checkpoint {'model': {...}, '__author__': ...}", file=str(path),
                        field="model")
    for k, v in data["model"].items():
        if not isinstance(v, np.ndarray):
            raise DataError(f"a {type(v).__name__}, not a numpy array", file=str(path), field=str(k))
    return data["model"]
