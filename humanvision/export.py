"""ONNX export of top-down heatmap pose models, with their deployment contract and a parity check.

:func:`export_onnx` traces ``method.model`` (the TorchScript-based exporter; the batch axis is dynamic), writes
the preprocessing and decoding contract into the file's ``metadata_props`` (key ``humanvision``, JSON, read back by
:mod:`humanvision.runtime`) and checks onnxruntime (CPU, fp32) against PyTorch on random crops and on crops of
drawn people (batch sizes other than the traced one): the largest absolute heatmap difference must be at most
``tolerance`` (1e-4) and at most 1e-3 of the largest heatmap value, else :class:`ParityError` and the file is
renamed ``*.onnx.failed``.

The contract (``metadata_version`` 1; :data:`humanvision.runtime.METADATA_VERSION`):

* ``input``: tensor name, ``size`` (w, h), ``color`` RGB, ``layout`` NCHW float32, ``pixel_scale`` 255 and
  ``mean`` / ``std`` (``x = (rgb / 255 - mean) / std``);
* ``crop``: ``box_format`` xywh, ``padding`` (the recipe's ``data.padding``), ``aspect_ratio`` w/h (the box only
  grows to it), ``udp`` (UDP or non-UDP affine, pose2d.md §1.3), bilinear with a zero border, no rotation;
* ``codec``: ``name`` (``udp_heatmap`` / ``msra_heatmap``), ``heatmap_size`` (w, h), ``sigma``, ``udp``,
  ``stride`` (heatmap -> input pixels), ``refine`` (``dark_udp`` / ``dark`` / ``quarter`` / ``none``),
  ``blur_kernel_size``, ``blur_border``, ``max_refine_step``;
* ``flip_test``: ``default`` (the recipe's ``eval.flip_test`` or ``--flip/--no-flip``), ``in_graph`` (the graph
  already averages the flipped crop), ``shift_heatmap`` (MSRA flip-back shifts by one pixel);
* ``skeleton``: ``name``, ``joints``, ``flip_index``, ``limbs``;
* ``model``, ``recipe``, ``weights`` (file name), ``humanvision_version``, ``export`` (opset, torch, onnx) and
  ``parity`` (the measured differences).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from humanvision.errors import ConfigError, HumanVisionError

__all__ = ["ExportError", "ExportReport", "FlipTestGraph", "ParityError", "check_parity", "export_metadata",
           "export_onnx", "realish_crops", "write_metadata"]

INPUT_NAME, OUTPUT_NAME = "input", "heatmaps"


class ExportError(HumanVisionError, RuntimeError):
    """The model cannot be exported (or its export is not trustworthy); names the file."""


class ParityError(ExportError):
    """onnxruntime's output differs from PyTorch's by more than the tolerance."""


@dataclass
class ExportReport:
    path: Path
    metadata: dict[str, Any]
    parity: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


class FlipTestGraph(nn.Module):
    """``model`` with the flip test inside the graph: the crops and their mirror images in one batch, the mirrored
    heatmaps flipped back (channels swapped, width reversed, shifted by one pixel for MSRA) and averaged, as
    :meth:`humanvision.methods.topdown.TopDownPose.predict` does."""

    def __init__(self, model: nn.Module, flip_index, shift: bool) -> None:
        super().__init__()
        self.model, self.shift = model, bool(shift)
        self.register_buffer("flip_index", torch.as_tensor(list(flip_index), dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        y = self.model(torch.cat([x, x.flip(-1)]))
        back = y[n:].index_select(1, self.flip_index).flip(-1)
        if self.shift:
            back = torch.cat([back[..., :1], back[..., :-1]], -1)
        return 0.5 * (y[:n] + back)


# ------------------------------------------------------------------------------------------------ contract
def _codec_contract(codec) -> dict[str, Any]:
    from humanvision.codecs import MSRAHeatmap, UDPHeatmap

    common = {"heatmap_size": list(codec.heatmap_size), "sigma": codec.sigma, "udp": bool(codec.udp),
              "stride": [float(s) for s in codec.stride], "blur_kernel_size": int(codec.blur_kernel_size),
              "max_refine_step": 1.0}
    if isinstance(codec, UDPHeatmap):
        return {"name": "udp_heatmap", **common, "refine": "dark_udp" if codec.dark else "none",
                "dark": codec.dark, "blur_border": codec.blur_border}
    if isinstance(codec, MSRAHeatmap):
        return {"name": "msra_heatmap", **common, "refine": "dark" if codec.unbiased else "quarter",
                "dark": codec.unbiased, "blur_border": "zero"}
    raise ExportError(f"codec {type(codec).__name__}: only heatmap codecs (UDP, MSRA) are exported")


def export_metadata(method, transform, *, flip_test: bool, flip_in_graph: bool, opset: int,
                    recipe: str | None = None, weights: str | Path | None = None) -> dict[str, Any]:
    """The deployment contract of ``method`` (a :class:`~humanvision.methods.topdown.TopDownPose`) cropped by
    ``transform`` (its inference :class:`~humanvision.data.transforms.TopDownTransform`); see the module doc."""
    import onnx

    import humanvision
    from humanvision.runtime import FORMAT, METADATA_VERSION

    model, codec, sk = method.model, method.codec, method.skeleton
    if tuple(codec.input_size) != tuple(transform.input_size) or bool(codec.udp) != transform.udp:
        raise ExportError(f"codec {codec!r} (udp={codec.udp}) does not match the crop {transform!r}")
    w, h = transform.input_size
    hw, hh = codec.heatmap_size
    return {
        "format": FORMAT, "metadata_version": METADATA_VERSION, "humanvision_version": humanvision.__version__,
        "model": getattr(model, "model_name", type(model).__name__), "recipe": recipe,
        "weights": Path(weights).name if weights is not None else None,
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, h, w], "size": [w, h], "layout": "NCHW",
                  "dtype": "float32", "color": "RGB", "pixel_scale": 255.0, "mean": list(transform.mean),
                  "std": list(transform.std)},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", sk.num_joints, hh, hw], "kind": "heatmaps"},
        "crop": {"box_format": "xywh", "padding": transform.padding, "aspect_ratio": w / h,
                 "fix_aspect": transform.fix_aspect, "udp": transform.udp, "interpolation": "bilinear",
                 "border": "constant_0", "rotation": 0.0, "whole_image_box": "[0, 0, width, height]"},
        "codec": _codec_contract(codec),
        "flip_test": {"default": bool(flip_test or flip_in_graph), "in_graph": bool(flip_in_graph),
                      "shift_heatmap": not codec.udp},
        "skeleton": {"name": sk.name, "joints": list(sk.joints), "flip_index": [int(i) for i in sk.flip_index],
                     "limbs": [list(map(int, limb)) for limb in sk.limbs]},
        "export": {"opset": int(opset), "exporter": "torch.onnx (TorchScript)", "torch": torch.__version__,
                   "onnx": onnx.__version__, "dynamic_axes": {INPUT_NAME: [0], OUTPUT_NAME: [0]}},
    }


def write_metadata(path: str | Path, metadata: dict[str, Any]) -> None:
    """Store ``metadata`` as JSON under ``metadata_props['humanvision']`` (external weight files are untouched)."""
    import json

    import onnx

    from humanvision.runtime import METADATA_KEY

    proto = onnx.load(str(path), load_external_data=False)
    keep = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(metadata))
    onnx.save(proto, str(path))


# --------------------------------------------------------------------------------------------- parity inputs
def _draw_person(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, list[float]]:
    """A textured background with a stick figure (head, torso, limbs of random angles); its xywh box."""
    import cv2

    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(40, 200, 3).astype(np.float32)
    grad = rng.uniform(-0.3, 0.3, (2, 3)).astype(np.float32)
    img = base + xx[..., None] * grad[0] + yy[..., None] * grad[1]
    noise = cv2.GaussianBlur(rng.normal(0, 25, (h, w, 3)).astype(np.float32), (0, 0), 3)
    img = np.clip(img + noise, 0, 255).astype(np.uint8)
    s = rng.uniform(0.5, 0.8) * h
    cx, top = rng.uniform(0.35, 0.65) * w, rng.uniform(0.05, 0.2) * h
    neck, hip = np.array([cx, top + 0.18 * s]), np.array([cx + rng.uniform(-0.05, 0.05) * s, top + 0.55 * s])
    color = tuple(int(c) for c in rng.integers(0, 256, 3))
    t = max(2, int(0.05 * s))
    pts = [neck, hip]
    cv2.circle(img, (int(cx), int(top + 0.09 * s)), int(0.08 * s), color, -1, cv2.LINE_AA)
    cv2.line(img, tuple(map(int, neck)), tuple(map(int, hip)), color, t, cv2.LINE_AA)
    for root, length in ((neck, 0.32 * s), (neck, 0.32 * s), (hip, 0.45 * s), (hip, 0.45 * s)):
        a1, a2 = rng.uniform(0.2, 2.9), rng.uniform(0.2, 2.9)
        mid = root + 0.5 * length * np.array([np.cos(a1), np.sin(a1)])
        end = mid + 0.5 * length * np.array([np.cos(a2), np.sin(a2)])
        cv2.line(img, tuple(map(int, root)), tuple(map(int, mid)), color, t, cv2.LINE_AA)
        cv2.line(img, tuple(map(int, mid)), tuple(map(int, end)), color, t, cv2.LINE_AA)
        pts += [mid, end]
    p = np.array(pts)
    lo, hi = p.min(0) - 0.1 * s, p.max(0) + 0.1 * s
    return img, [float(lo[0]), float(lo[1] - 0.1 * s), float(hi[0] - lo[0]), float(hi[1] - lo[1] + 0.1 * s)]


def realish_crops(transform, n: int = 2, seed: int = 0) -> torch.Tensor:
    """``(n, 3, H, W)`` normalised crops of drawn people (natural-image value ranges, edges, a zero border where
    the box leaves the image), made by ``transform`` like real inference crops."""
    rng = np.random.default_rng(seed)
    w, h = transform.input_size
    crops = []
    for i in range(n):
        img, box = _draw_person(rng, (2 * w, 2 * h))
        if i % 2:  # a box that leaves the image: the crop has a zero border
            box = [box[0] - 0.6 * box[2], box[1], box[2], box[3]]
        crops.append(transform(img, bbox=box, record=f"parity image {i}")[0])
    return torch.stack(crops)


# ----------------------------------------------------------------------------------------------------- parity
def check_parity(module: nn.Module, path: str | Path, inputs: dict[str, torch.Tensor],
                 tolerance: float = 1e-4, rel_tolerance: float = 1e-3) -> dict[str, Any]:
    """Run ``module`` (fp32, eval) and the ONNX file on each named input batch (onnxruntime, CPU); returns the
    largest absolute differences. Raises :class:`ParityError` when one exceeds ``tolerance``, or exceeds
    ``rel_tolerance`` times the largest PyTorch value (which catches a wrong graph of an untrained model, whose
    heatmaps are ~1e-5 and would pass any absolute bound; a healthy export differs by ~1e-6 of it)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    diffs, peaks, batches = {}, {}, {}
    for name, x in inputs.items():
        with torch.no_grad():
            ref = module(x.float()).float().numpy()
        out = session.run([OUTPUT_NAME], {INPUT_NAME: x.float().numpy()})[0]
        if out.shape != ref.shape:
            raise ParityError(f"{path}: onnxruntime output shape {out.shape} != PyTorch {ref.shape} ({name} "
                              f"inputs, batch {len(x)})")
        diffs[name] = float(np.abs(out.astype(np.float32) - ref).max())
        peaks[name] = float(np.abs(ref).max())
        batches[name] = len(x)
    report = {"max_abs_diff": diffs, "reference_max_abs": peaks, "batch_sizes": batches, "tolerance": tolerance,
              "precision": "fp32", "onnxruntime": ort.__version__, "provider": "CPUExecutionProvider"}
    report["rel_tolerance"] = rel_tolerance
    worst = max(diffs, key=diffs.get)
    relative = {k: diffs[k] / peaks[k] if peaks[k] > 0 else 0.0 for k in diffs}
    if not diffs[worst] <= tolerance or not max(relative.values()) <= rel_tolerance:
        detail = ", ".join(f"{k} {v:.3g} (of max |heatmap| {peaks[k]:.3g})" for k, v in diffs.items())
        raise ParityError(f"{path}: onnxruntime heatmaps differ from PyTorch by max |diff| {diffs[worst]:.3g} "
                          f"(tolerance {tolerance:g}, or {rel_tolerance:g} of the largest value) in fp32 ({detail})")
    return report


# ----------------------------------------------------------------------------------------------------- export
def export_onnx(method, transform, out: str | Path, *, flip_test: bool = True, flip_in_graph: bool = False,
                opset: int = 17, check: bool = True, tolerance: float = 1e-4, recipe: str | None = None,
                weights: str | Path | None = None, trace_batch: int = 2) -> ExportReport:
    """Export ``method.model`` (a top-down heatmap model) to ``out`` with the deployment contract.

    Args:
        method: a :class:`~humanvision.methods.topdown.TopDownPose` (model, codec, skeleton).
        transform: its inference crop (``build_transform(method, data, train=False)``): padding, mean/std, UDP.
        flip_test: the deployed default of the flip test (the runtime applies it unless told otherwise).
        flip_in_graph: put the flip test inside the graph (one call per batch; cannot be switched off).
        opset: ONNX opset (>= 13).
        check: compare onnxruntime with PyTorch right after the export (:func:`check_parity`).
        tolerance: the largest absolute heatmap difference accepted (fp32).
        recipe, weights: recorded in the metadata.
        trace_batch: batch size of the traced example (the parity check uses others).
    """
    from humanvision.models import PoseModel

    out = Path(out)
    model = method.model
    if not isinstance(model, PoseModel) or method.codec is None:
        raise ConfigError(f"export: {type(model).__name__} is not a top-down heatmap model (ViTPose, HRNet, "
                          "SimpleBaseline, lateral, PCT stage-0 Swin)")
    if opset < 13:
        raise ConfigError(f"--opset {opset}: humanvision exports need opset 13 or newer")
    t0 = time.perf_counter()
    meta = export_metadata(method, transform, flip_test=flip_test, flip_in_graph=flip_in_graph, opset=opset,
                           recipe=recipe, weights=weights)
    was_training, dtype = method.training, next(model.parameters()).dtype
    method.eval().float()
    graph: nn.Module = model
    if flip_in_graph:
        graph = FlipTestGraph(model, method.skeleton.flip_index, shift=not method.codec.udp).eval()
    w, h = transform.input_size
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(trace_batch, 3, h, w, generator=gen)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings on the models' own shape checks
            torch.onnx.export(graph, (example,), str(out), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                              do_constant_folding=True)
        parity: dict[str, Any] = {}
        if check:
            inputs = {"random": torch.randn(trace_batch + 1, 3, h, w, generator=gen),
                      "realish": realish_crops(transform, n=2)}
            try:
                parity = check_parity(graph, out, inputs, tolerance)
            except ParityError as e:
                failed = out.with_name(out.name + ".failed")
                out.replace(failed)
                raise ParityError(f"{e}; the export was kept as {failed} for inspection, not as {out}") from None
        meta["parity"] = parity or {"checked": False}
        write_metadata(out, meta)
    except (RuntimeError, ValueError, TypeError) as e:
        if isinstance(e, HumanVisionError):
            raise
        raise ExportError(f"{out}: torch.onnx.export failed for {meta['model']}: {type(e).__name__}: {e}") from e
    finally:
        model.to(dtype)
        method.train(was_training)
    return ExportReport(out, meta, parity, time.perf_counter() - t0)
