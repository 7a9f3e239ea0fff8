"""ONNX export of top-down heatmap pose models (and re-id / attribute models), with their deployment contract and a
parity check.

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

:func:`export_person_onnx` exports re-id and pedestrian-attribute models as *person-crop* models (format
``humanvision.person_crop``, read by :class:`~humanvision.runtime.ReIDEmbedder` /
:class:`~humanvision.runtime.AttributeClassifier`): ``task`` (``reid`` | ``attributes``), the same ``input`` block,
``crop`` (``cut_resize``: the whole box, rounded outward to pixels and clipped to the image, resized to the input
with the evaluation's ``interpolation``, bicubic for re-id, bilinear for attributes) and ``output`` (re-id:
``features (B, E)``, ``normalize`` and ``distance``; attributes: sigmoid ``scores (B, A)``, the ``attributes`` names
and the ``threshold``), with the same parity check on the features / scores.

:func:`quantize_onnx` makes an int8 copy with ``onnxruntime.quantization`` (dynamic: int8 weights; static: QDQ
int8 weights and activations, calibrated on crops made by the file's own preprocessing contract). The copy keeps
the contract, plus ``quantization`` (mode, settings and :func:`quantization_parity`: the largest heatmap and
decoded-keypoint differences from the fp32 file, reported, not thresholded), and runs in
:class:`~humanvision.runtime.PoseEstimator` unchanged.
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from humanvision.errors import ConfigError, DataError, HumanVisionError

__all__ = [
    "A2JGraph",
    "AlgebraicGraph",
    "EmbeddingGraph",
    "ExportError",
    "ExportReport",
    "FlipTestGraph",
    "LogitsGraph",
    "PCTGraph",
    "ParityError",
    "Pose3DGraph",
    "QuantizationError",
    "QuantizeReport",
    "ScoreGraph",
    "VolumetricGraph",
    "calibration_crops",
    "check_crops",
    "check_parity",
    "depth_crops",
    "export_a2j_onnx",
    "export_algebraic_onnx",
    "export_metadata",
    "export_monocular3d_onnx",
    "export_onnx",
    "export_parsing_onnx",
    "export_pct_onnx",
    "export_person_onnx",
    "export_volumetric_onnx",
    "person_crops",
    "quantization_parity",
    "quantize_onnx",
    "realish_crops",
    "realish_frames",
    "ring_views",
    "square_crops",
    "write_metadata",
]

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
    from humanvision.runtime import FORMAT

    model, codec, sk = method.model, method.codec, method.skeleton
    if tuple(codec.input_size) != tuple(transform.input_size) or bool(codec.udp) != transform.udp:
        raise ExportError(f"codec {codec!r} (udp={codec.udp}) does not match the crop {transform!r}")
    w, h = transform.input_size
    hw, hh = codec.heatmap_size
    return {
        **_header(getattr(model, "model_name", type(model).__name__), recipe, weights, FORMAT),
        "input": _input_contract((w, h), transform.mean, transform.std),
        "output": {"name": OUTPUT_NAME, "shape": ["batch", sk.num_joints, hh, hw], "kind": "heatmaps"},
        "crop": {"box_format": "xywh", "padding": transform.padding, "aspect_ratio": w / h,
                 "fix_aspect": transform.fix_aspect, "udp": transform.udp, "interpolation": "bilinear",
                 "border": "constant_0", "rotation": 0.0, "whole_image_box": "[0, 0, width, height]"},
        "codec": _codec_contract(codec),
        "flip_test": {"default": bool(flip_test or flip_in_graph), "in_graph": bool(flip_in_graph),
                      "shift_heatmap": not codec.udp},
        "skeleton": {"name": sk.name, "joints": list(sk.joints), "flip_index": [int(i) for i in sk.flip_index],
                     "limbs": [list(map(int, limb)) for limb in sk.limbs]},
        "export": _export_info(opset, OUTPUT_NAME),
    }


def _header(model: str, recipe: str | None, weights: str | Path | None, fmt: str) -> dict[str, Any]:
    import humanvision
    from humanvision.runtime import METADATA_VERSION

    return {"format": fmt, "metadata_version": METADATA_VERSION, "humanvision_version": humanvision.__version__,
            "model": model, "recipe": recipe, "weights": Path(weights).name if weights is not None else None}


def _input_contract(size: tuple[int, int], mean, std) -> dict[str, Any]:
    w, h = size
    return {"name": INPUT_NAME, "shape": ["batch", 3, h, w], "size": [w, h], "layout": "NCHW", "dtype": "float32",
            "color": "RGB", "pixel_scale": 255.0, "mean": [float(v) for v in mean], "std": [float(v) for v in std]}


def _export_info(opset: int, *output_names: str) -> dict[str, Any]:
    import onnx

    return {"opset": int(opset), "exporter": "torch.onnx (TorchScript)", "torch": torch.__version__,
            "onnx": onnx.__version__, "dynamic_axes": {INPUT_NAME: [0], **{n: [0] for n in output_names}}}


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
def check_parity(module: nn.Module, path: str | Path, inputs: dict[str, Any],
                 tolerance: float = 1e-4, rel_tolerance: float = 1e-3, *, input_name: str | Sequence[str] = INPUT_NAME,
                 output_name: str | Sequence[str] = OUTPUT_NAME) -> dict[str, Any]:
    """Run ``module`` (fp32, eval) and the ONNX file on each named input batch (onnxruntime, CPU); returns the
    largest absolute differences. Raises :class:`ParityError` when one exceeds ``tolerance`` (times the largest
    PyTorch value where that is above 1: logits of 100 may differ by 1e-2 in fp32, heatmaps of at most 1 by
    ``tolerance``), or exceeds ``rel_tolerance`` times the largest PyTorch value (which catches a wrong graph of an
    untrained model, whose heatmaps are ~1e-5 and would pass any absolute bound; a healthy export differs by ~1e-6
    of it).

    A module with several outputs (a tuple, in the order of ``output_name``, a list) is compared output by output
    (keys ``input/output``); one with several inputs (``input_name`` a list) takes a tuple per named batch
    (floating tensors are fed as float32 unless they are float64)."""
    import onnxruntime as ort

    names = [output_name] if isinstance(output_name, str) else list(output_name)
    module.eval()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    diffs, peaks, batches = {}, {}, {}
    for name, x in inputs.items():
        xs = tuple(t if t.dtype in (torch.float64, torch.bool) or not t.is_floating_point() else t.float()
                   for t in (x if isinstance(x, tuple) else (x,)))
        in_names = [input_name] if isinstance(input_name, str) else list(input_name)
        with torch.no_grad():
            refs = module(*xs)
        refs = [refs] if isinstance(refs, torch.Tensor) else list(refs)
        outs = session.run(names, {n: t.numpy() for n, t in zip(in_names, xs, strict=True)})
        x = xs[0]
        for out_name, ref, out in zip(names, refs, outs, strict=True):
            key = name if len(names) == 1 else f"{name}/{out_name}"
            ref = ref.numpy() if ref.dtype == torch.float64 else ref.float().numpy()
            if out.shape != ref.shape:
                raise ParityError(f"{path}: onnxruntime {out_name} shape {out.shape} != PyTorch {ref.shape} ({name} "
                                  f"inputs, batch {len(x)})")
            diffs[key] = float(np.abs(out.astype(ref.dtype) - ref).max())
            peaks[key] = float(np.abs(ref).max())
            batches[key] = len(x)
    report = {"max_abs_diff": diffs, "reference_max_abs": peaks, "batch_sizes": batches, "tolerance": tolerance,
              "precision": "fp32", "onnxruntime": ort.__version__, "provider": "CPUExecutionProvider"}
    report["rel_tolerance"] = rel_tolerance
    worst = max(diffs, key=diffs.get)
    relative = {k: diffs[k] / peaks[k] if peaks[k] > 0 else 0.0 for k in diffs}
    over = [k for k in diffs if not diffs[k] <= tolerance * max(1.0, peaks[k])]
    if over or not max(relative.values()) <= rel_tolerance:
        detail = ", ".join(f"{k} {v:.3g} (of max |value| {peaks[k]:.3g})" for k, v in diffs.items())
        raise ParityError(f"{path}: onnxruntime {'/'.join(names)} differ from PyTorch by max |diff| {diffs[worst]:.3g} "
                          f"(tolerance {tolerance:g} x max(1, largest value), and at most {rel_tolerance:g} of the "
                          f"largest value) in fp32 ({detail})")
    return report


def _export_checked(graph: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...], out: Path,
                    meta: dict[str, Any], parity_inputs: Callable[[], dict[str, Any]] | None, tolerance: float,
                    output_name: str | Sequence[str], input_names: Sequence[str] = (INPUT_NAME,),
                    dynamic_batch: bool = True) -> dict[str, Any]:
    """Trace ``graph`` on ``example`` (one tensor, or one per name of ``input_names``) into ``out`` (dynamic batch
    unless ``dynamic_batch=False``), check onnxruntime against it on ``parity_inputs()`` (``None``: no check; a
    failure renames the file ``*.onnx.failed``) and write ``meta`` with the parity report into the file. Returns
    the report."""
    names = [output_name] if isinstance(output_name, str) else list(output_name)
    example = example if isinstance(example, tuple) else (example,)
    axes = {n: {0: "batch"} for n in [*input_names, *names]} if dynamic_batch else None
    # torch.onnx.export restores graph.train(graph.training) after tracing, and a freshly built wrapper is in
    # training mode: without this, a head whose BatchNorm the method does not pin to eval (PCT's) would give the
    # parity check batch statistics while the graph holds the running ones
    graph.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings on the models' own shape checks
            torch.onnx.export(graph, example, str(out), dynamo=False, opset_version=meta["export"]["opset"],
                              input_names=list(input_names), output_names=names, dynamic_axes=axes,
                              do_constant_folding=True)
        parity: dict[str, Any] = {}
        if parity_inputs is not None:
            try:
                parity = check_parity(graph, out, parity_inputs(), tolerance, output_name=output_name,
                                      input_name=input_names[0] if len(input_names) == 1 else list(input_names))
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
    return parity


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

    def inputs() -> dict[str, torch.Tensor]:
        return {"random": torch.randn(trace_batch + 1, 3, h, w, generator=gen),
                "realish": realish_crops(transform, n=2)}

    try:
        parity = _export_checked(graph, example, out, meta, inputs if check else None, tolerance, OUTPUT_NAME)
    finally:
        model.to(dtype)
        method.train(was_training)
    return ExportReport(out, meta, parity, time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------- PCT stage II
class PCTGraph(nn.Module):
    """PCT stage II (:class:`~humanvision.methods.pct.PCTClassifierStage`) without the flip test: crops ``(B, 3, S,
    S)`` -> ``keypoints (B, K, 2)`` crop pixels (the token classifier's logits softly decoded by the frozen
    tokenizer) and ``scores (B,)`` (the mean over tokens of the top-1 logit), ``_predict_once``."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.method._predict_once(x)


def export_pct_onnx(method, transform, out: str | Path, *, flip_test: bool = True, opset: int = 17,
                    check: bool = True, tolerance: float = 1e-4, recipe: str | None = None,
                    weights: str | Path | None = None, trace_batch: int = 2) -> ExportReport:
    """Export PCT stage II to ``out`` with the :class:`~humanvision.runtime.PoseEstimator` contract of a
    *keypoint* model (``codec.name: keypoints``; the graph gives crop-pixel keypoints and a pose score, no
    heatmaps): the same crop block as a heatmap model (PCT's non-UDP square crop with ``test_padding``), and the
    flip test in the runtime (the mirrored crop's keypoints mirrored back, ``x' = S - 1 - x`` with the flip
    permutation, keypoints and scores averaged, as :meth:`~humanvision.methods.pct.PCTClassifierStage.predict`).
    Other arguments as :func:`export_onnx`."""
    from humanvision.runtime import FORMAT

    if opset < 13:
        raise ConfigError(f"--opset {opset}: humanvision exports need opset 13 or newer")
    out, t0 = Path(out), time.perf_counter()
    sk = method.skeleton
    w, h = transform.input_size
    names = ("keypoints", "scores")
    meta = {**_header(getattr(method.backbone, "model_name", "pct") + "+pct_head", recipe, weights, FORMAT),
            "input": _input_contract((w, h), transform.mean, transform.std),
            "output": {"name": "keypoints", "shape": ["batch", sk.num_joints, 2], "kind": "keypoints",
                       "scores": "scores"},
            "crop": {"box_format": "xywh", "padding": transform.padding, "aspect_ratio": w / h,
                     "fix_aspect": transform.fix_aspect, "udp": transform.udp, "interpolation": "bilinear",
                     "border": "constant_0", "rotation": 0.0, "whole_image_box": "[0, 0, width, height]"},
            "codec": {"name": "keypoints", "space": "crop pixels", "udp": transform.udp,
                      "score": "mean over tokens of the top-1 logit, one per person"},
            "flip_test": {"default": bool(flip_test), "in_graph": False, "shift_heatmap": False,
                          "keypoints": "x' = width - 1 - x, flip permutation, averaged"},
            "skeleton": {"name": sk.name, "joints": list(sk.joints), "flip_index": [int(i) for i in sk.flip_index],
                         "limbs": [list(map(int, limb)) for limb in sk.limbs]},
            "export": _export_info(opset, *names)}
    graph = PCTGraph(method).eval()
    was_training = method.training
    method.eval().float()
    gen = torch.Generator().manual_seed(0)

    def inputs() -> dict[str, torch.Tensor]:
        return {"random": torch.randn(trace_batch + 1, 3, h, w, generator=gen),
                "realish": realish_crops(transform, n=2)}

    try:
        parity = _export_checked(graph, torch.randn(trace_batch, 3, h, w, generator=gen), out, meta,
                                 inputs if check else None, tolerance, names)
    finally:
        method.train(was_training)
    return ExportReport(out, meta, parity, time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------ person-crop models
class EmbeddingGraph(nn.Module):
    """A re-id model's test feature, ``(B, E)`` (``ReIDMethod.embed``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.embed(x)


class ScoreGraph(nn.Module):
    """An attribute model's sigmoid scores, ``(B, A)`` (``AttributeMethod.predict``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(x))


def person_crops(size: tuple[int, int], interpolation: str, n: int = 2, seed: int = 0) -> torch.Tensor:
    """``(n, 3, h, w)`` normalised crops of drawn people at ``size = (h, w)``, cut out of their images and resized
    like the runtime does (one box partly outside its image)."""
    from humanvision.methods.reid import person_transform
    from humanvision.runtime.person import INTERPOLATIONS, cut_box

    rng = np.random.default_rng(seed)
    h, w = size
    crops = []
    for i in range(n):
        img, box = _draw_person(rng, (3 * w, 2 * h))
        if i % 2:
            box = [box[0] - 0.4 * box[2], box[1], box[2], box[3]]
        crops.append(person_transform(cut_box(img, box), size, interpolation=INTERPOLATIONS[interpolation]))
    return torch.stack(crops)


def export_person_onnx(method, out: str | Path, *, task: str, size: tuple[int, int], interpolation: str,
                       attributes: list[str] | None = None, threshold: float = 0.5, opset: int = 17,
                       check: bool = True, tolerance: float = 1e-4, recipe: str | None = None,
                       weights: str | Path | None = None, trace_batch: int = 2) -> ExportReport:
    """Export a person-crop model to ``out`` with its contract (read by
    :class:`~humanvision.runtime.ReIDEmbedder` / :class:`~humanvision.runtime.AttributeClassifier`).

    Args:
        method: a :class:`~humanvision.methods.reid.ReIDMethod` (``task="reid"``: the graph outputs the test
            feature ``features (B, E)``) or :class:`~humanvision.methods.attributes.AttributeMethod`
            (``task="attributes"``: sigmoid ``scores (B, A)``).
        size: the input ``(h, w)`` (the recipe's ``model.img_size``).
        interpolation: ``bicubic`` (re-id) or ``bilinear`` (attributes): the evaluation's resize.
        attributes, threshold: the attribute names in output order and the decision threshold (attributes).
        opset, check, tolerance, recipe, weights, trace_batch: as :func:`export_onnx`; the tolerance applies to the
            features / scores.
    """
    from humanvision.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from humanvision.runtime.person import INTERPOLATIONS, PERSON_FORMAT, TASKS

    if task not in TASKS:
        raise ConfigError(f"task {task!r}: expected one of {sorted(TASKS)}")
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(f"interpolation {interpolation!r}: expected one of {sorted(INTERPOLATIONS)}")
    if opset < 13:
        raise ConfigError(f"--opset {opset}: humanvision exports need opset 13 or newer")
    out, t0 = Path(out), time.perf_counter()
    model = method.model
    h, w = (int(v) for v in size)
    if task == "reid":
        graph, name, width = EmbeddingGraph(model), "features", int(model.embed_dim_out)
        output = {"name": name, "shape": ["batch", width], "kind": TASKS[task], "normalize": True,
                  "distance": "euclidean"}
    else:
        graph, name, width = ScoreGraph(model), "scores", int(model.num_classes)
        if attributes is None or len(attributes) != width:
            raise ConfigError(f"export: {width} attribute scores but {len(attributes or [])} attribute names")
        output = {"name": name, "shape": ["batch", width], "kind": TASKS[task], "attributes": list(attributes),
                  "threshold": float(threshold)}
    meta = {**_header(getattr(model, "model_name", type(model).__name__), recipe, weights, PERSON_FORMAT),
            "task": task, "input": _input_contract((w, h), IMAGENET_MEAN, IMAGENET_STD), "output": output,
            "crop": {"box_format": "xywh", "method": "cut_resize", "rounding": "outward, clipped to the image",
                     "interpolation": interpolation, "whole_image_box": "[0, 0, width, height]"},
            "export": _export_info(opset, name)}
    was_training, dtype = method.training, next(model.parameters()).dtype
    method.eval().float()
    graph.eval()
    gen = torch.Generator().manual_seed(0)

    def inputs() -> dict[str, torch.Tensor]:
        return {"random": torch.randn(trace_batch + 1, 3, h, w, generator=gen),
                "realish": person_crops((h, w), interpolation)}

    try:
        parity = _export_checked(graph, torch.randn(trace_batch, 3, h, w, generator=gen), out, meta,
                                 inputs if check else None, tolerance, name)
    finally:
        model.to(dtype)
        method.train(was_training)
    return ExportReport(out, meta, parity, time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------------- parsing
class LogitsGraph(nn.Module):
    """A parsing network's class logits ``(B, K, h, w)`` for ``mode``: a single-modality network's output, or one
    output of an rgbd network (``fused`` takes ``(rgb, depth)``; ``rgb`` / ``depth`` one input)."""

    def __init__(self, model: nn.Module, mode: str | None = None) -> None:
        super().__init__()
        self.model, self.mode = model, mode

    def forward(self, x: torch.Tensor, depth: torch.Tensor | None = None) -> torch.Tensor:
        if self.mode is None:
            return self.model(x)
        if self.mode == "fused":
            return self.model.forward_modes(x, depth, ("fused",))["fused"]
        return self.model.forward_modes(x if self.mode == "rgb" else None, x if self.mode == "depth" else None,
                                        (self.mode,))[self.mode]


DEPTH_INPUT = ("millimetres (H, W); metres minus the mean of the nonzero pixels of the whole frame (background "
               "stays 0), replicated to 3 channels")


def export_parsing_onnx(method, out: str | Path, *, input_size: tuple[int, int], flip_test: bool = True,
                        mode: str | None = None, opset: int = 17, check: bool = True, tolerance: float = 1e-4,
                        recipe: str | None = None, weights: str | Path | None = None,
                        trace_batch: int = 2) -> ExportReport:
    """Export a :class:`~humanvision.methods.parsing.ParsingMethod` to ``out`` with the evaluation's contract
    (format ``humanvision.parsing``, read by :class:`~humanvision.runtime.HumanParser`): the whole frame resized to
    ``input_size = (h, w)`` (RGB bilinear and ImageNet-normalised; depth: millimetres -> metres minus the mean of the
    nonzero pixels on the whole frame, nearest, replicated to 3 channels), the graph's logits, the flip test (left /
    right classes swapped by ``flip_perm``; ``flip_test`` is the runtime's default), bilinear upsampling of the
    logits to the output size and the argmax; the class names and palette ride along.

    An rgbd model exports one output, ``mode`` (default its ``supervise`` output): ``fused`` takes both inputs
    (``rgb``, ``depth``; modality ``rgbd``), ``rgb`` / ``depth`` that encoder alone (modality ``rgb`` / ``depth``).
    Other arguments as :func:`export_onnx`."""
    from humanvision.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from humanvision.methods.parsing import _class_names, parsing_palette
    from humanvision.runtime.parsing import PARSING_FORMAT

    if opset < 13:
        raise ConfigError(f"--opset {opset}: humanvision exports need opset 13 or newer")
    rgbd = method.modality == "rgbd"
    mode = (mode or method.supervise) if rgbd else None
    if rgbd and mode not in ("fused", "rgb", "depth"):
        raise ConfigError(f"mode {mode!r}: an rgbd model exports 'fused', 'rgb' or 'depth'")
    modality = ("rgbd" if mode == "fused" else mode) if rgbd else method.modality
    out, t0 = Path(out), time.perf_counter()
    model = method.model
    h, w = (int(v) for v in input_size)
    k = int(model.num_classes)
    graph = LogitsGraph(model, mode).eval()
    was_training, dtype = method.training, next(model.parameters()).dtype
    method.eval().float()
    gen = torch.Generator().manual_seed(0)

    def draw(n: int) -> tuple[torch.Tensor, ...]:
        x = torch.randn(n, 3, h, w, generator=gen)
        return (x, torch.randn(n, 3, h, w, generator=gen)) if modality == "rgbd" else (x,)

    example = draw(trace_batch)
    with torch.no_grad():
        logits_shape = list(graph(*example).shape[1:])
    rgb_input = _input_contract((w, h), IMAGENET_MEAN, IMAGENET_STD)
    depth_input = {**_input_contract((w, h), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), "color": "depth",
                   "pixel_scale": 1000.0, "depth": DEPTH_INPUT}
    inp = {"rgb": rgb_input, "depth": depth_input}.get(modality)
    if modality == "rgbd":
        inp = {**rgb_input, "depth_input": {**depth_input, "name": "depth"}}
    names = (INPUT_NAME, "depth") if modality == "rgbd" else (INPUT_NAME,)
    meta = {**_header(getattr(model, "model_name", type(model).__name__), recipe, weights, PARSING_FORMAT),
            "modality": modality, "output_mode": mode, "input": inp,
            "resize": {"frame": "whole", "interpolation": "nearest" if modality == "depth" else "bilinear",
                       "depth_interpolation": "nearest"},
            "output": {"name": "logits", "shape": ["batch", *logits_shape], "kind": "logits",
                       "upsample": "bilinear, align_corners=False, to the output size (default the frame's)",
                       "classes": _class_names(k), "palette": parsing_palette()[:k].tolist()},
            "flip_test": {"default": bool(flip_test),
                          "flip_perm": [int(i) for i in method.flip_perm.tolist()]},
            "export": _export_info(opset, *names, "logits")}

    def inputs() -> dict[str, Any]:
        if modality == "rgbd":
            realish = (realish_frames((h, w), True), realish_frames((h, w), False))
        else:
            realish = realish_frames((h, w), modality == "rgb")
        rand = draw(trace_batch + 1)
        return {"random": rand if len(rand) > 1 else rand[0], "realish": realish}

    try:
        parity = _export_checked(graph, example if len(example) > 1 else example[0], out, meta,
                                 inputs if check else None, tolerance, "logits", input_names=names)
    finally:
        model.to(dtype)
        method.train(was_training)
    return ExportReport(out, meta, parity, time.perf_counter() - t0)


def realish_frames(size: tuple[int, int], rgb: bool, n: int = 2, seed: int = 0) -> torch.Tensor:
    """``(n, 3, h, w)`` network inputs of drawn people: ImageNet-normalised RGB, or a depth frame (a person at
    2-3 m on a zero background, centred like :func:`~humanvision.data.readers.parsing.center_depth`)."""
    from humanvision.data.transforms import normalize_image

    rng = np.random.default_rng(seed)
    h, w = size
    out = []
    for _ in range(n):
        img, _ = _draw_person(rng, (w, h))
        if rgb:
            out.append(normalize_image(img))
            continue
        mask = np.abs(img.astype(np.float32) - np.median(img, axis=(0, 1))).sum(-1) > 60
        d = np.where(mask, rng.uniform(2.0, 3.0), 0.0).astype(np.float32)
        d[mask] -= d[mask].mean() if mask.any() else 0.0
        out.append(torch.from_numpy(np.repeat(d[None], 3, 0)))
    return torch.stack(out)


# ------------------------------------------------------------------------------------ multi-view (algebraic)
class AlgebraicGraph(nn.Module):
    """The per-view part of :class:`~humanvision.methods.algebraic.AlgebraicTriangulation`: crops ``(N, 3, S, S)``
    -> heatmaps ``(N, J, h, w)`` and, with learnt confidences, the confidence head's sigmoids ``(N, J)``. The
    soft-argmax, the normalisation over views and the weighted DLT run in the runtime (numpy, float64)."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.backbone, self.confidence_head = method.backbone, method.confidence_head

    def forward(self, x: torch.Tensor):
        features = self.backbone.forward_features(x)
        heatmaps = self.backbone.forward_head(features)
        if self.confidence_head is None:
            return heatmaps
        return heatmaps, self.confidence_head(features)


def export_algebraic_onnx(method, out: str | Path, *, bbox_scale: float = 1.0, bgr: bool = False, opset: int = 17,
                          check: bool = True, tolerance: float = 1e-4, recipe: str | None = None,
                          weights: str | Path | None = None, trace_batch: int = 2) -> ExportReport:
    """Export an :class:`~humanvision.methods.algebraic.AlgebraicTriangulation` (LT's algebraic method) to ``out``
    with the contract of :class:`~humanvision.methods.algebraic.MultiViewCrops` and ``predict`` (format
    ``humanvision.multiview``, read by :class:`~humanvision.runtime.MultiViewTriangulator`): per view the square
    integer crop of ``bbox_scale`` x the box's longer side (zero outside the image), ``INTER_AREA`` resize, RGB (or
    BGR) ImageNet normalisation; the graph's heatmaps (and confidences); soft-argmax of ``heatmap_multiplier`` x the
    maps times the stride; confidences normalised over the available views + 1e-5; the weighted DLT with each view's
    projection matrix moved into its crop. Other arguments as :func:`export_onnx`."""
    from humanvision.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from humanvision.methods.algebraic import ROOT
    from humanvision.runtime.multiview import MULTIVIEW_FORMAT
    from humanvision.skeletons import get_skeleton

    if opset < 13:
        raise ConfigError(f"--opset {opset}: humanvision exports need opset 13 or newer")
    out, t0 = Path(out), time.perf_counter()
    backbone = method.backbone
    size = int(backbone.input_size[0])
    graph = AlgebraicGraph(method).eval()
    was_training, dtype = method.training, next(method.parameters()).dtype
    method.eval().float()
    names = ("heatmaps", "confidences") if method.confidence_head is not None else ("heatmaps",)
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(trace_batch, 3, size, size, generator=gen)
    with torch.no_grad():
        hm = graph(example)
    hm = hm[0] if isinstance(hm, tuple) else hm
    skeleton = get_skeleton(backbone.skeleton)
    meta = {**_header(getattr(backbone, "model_name", type(backbone).__name__), recipe, weights, MULTIVIEW_FORMAT),
            "method": "algebraic", "input": {**_input_contract((size, size), IMAGENET_MEAN, IMAGENET_STD),
                                             "color": "BGR" if bgr else "RGB"},
            "output": {"name": "heatmaps", "shape": ["batch", *hm.shape[1:]],
                       "confidences": "confidences" if len(names) == 2 else None},
            "crop": {"box_format": "xywh, rounded to integer pixels", "shape": "square",
                     "scale": float(bbox_scale), "rule": "side int(scale x longer side) about the integer centre "
                     "((left + right) // 2, (top + bottom) // 2), zero outside the image",
                     "interpolation": "area"},
            "decode": {"soft_argmax_beta": float(method.heatmap_multiplier),
                       "stride": [float(v) for v in method.stride], "confidence_eps": 1e-5,
                       "triangulation": "weighted DLT, float64, projection matrices moved into each crop",
                       "root": int(ROOT)},
            "skeleton": {"name": skeleton.name, "joints": list(skeleton.joints),
                         "limbs": [list(map(int, limb)) for limb in skeleton.limbs]},
            "export": _export_info(opset, *names)}

    def inputs() -> dict[str, torch.Tensor]:
        return {"random": torch.randn(trace_batch + 1, 3, size, size, generator=gen),
                "realish": square_crops(size, padding=float(bbox_scale))}

    try:
        parity = _export_checked(graph, example, out, meta, inputs if check else None, tolerance,
                                 names if len(names) > 1 else names[0])
    finally:
        method.to(dtype)
        method.train(was_training)
    return ExportReport(out, meta, parity, time.perf_counter() - t0)


# ---------------------------------------------------------------------------- multi-view (volumetric, ContextPose)
class VolumetricGraph(nn.Module):
    """A volumetric method's whole :meth:`~humanvision.methods.volumetric.VolumetricTriangulation.predict` without
    rotation: ``images (1, V, 3, S, S)``, ``proj (1, V, 3, 4)`` crop-pixel cameras (float64), ``base_point (1, 3)``
    (float64), ``view_mask (1, V)`` -> ``keypoints_3d (1, J, 3)`` float64 world."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(self, images: torch.Tensor, proj: torch.Tensor, base_point: torch.Tensor,
                view_mask: torch.Tensor) -> torch.Tensor:
        angle = torch.zeros(images.shape[0], dtype=torch.float64, device=images.device)
        return self.method.predict(images, proj, base_point, view_mask, angle=angle)["keypoints_3d"]


def ring_views(views: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1, 3)`` base point and ``(1, views, 3, 4)`` crop cameras of a ring of ``views`` cameras 4 m around it,
    each looking at it (for the parity inputs of a volumetric export)."""
    from humanvision.geometry.camera import Camera

    rng = np.random.default_rng(seed)
    base = np.array([rng.uniform(-300, 300), rng.uniform(-300, 300), 900.0])
    angles = np.linspace(0, 2 * np.pi, views, endpoint=False) + rng.uniform(-0.3, 0.3, views)
    proj = np.stack([Camera.look_at(base + [4000 * np.cos(a), 4000 * np.sin(a), 600 + 200 * rng.standard_normal()],
                                    base, focal=float(size) * rng.uniform(1.2, 1.6), width=size, height=size)
                     .projection_matrix for a in angles])
    return torch.from_numpy(base[None]), torch.from_numpy(proj[None])


def export_volumetric_onnx(method, out: str | Path, *, views: int = 4, bbox_scale: float = 1.0, bgr: bool = False,
                           opset: int = 17, check: bool = True, tolerance: float = 1e-4, recipe: str | None = None,
                           weights: str | Path | None = None) -> ExportReport:
    """Export a :class:`~humanvision.methods.volumetric.VolumetricTriangulation` or
    :class:`~humanvision.methods.contextpose.ContextPose` whole (format ``humanvision.multiview``, method
    ``volumetric``, read by :class:`~humanvision.runtime.VolumetricTriangulator`) for a rig of ``views`` cameras
    (the graph's shapes are fixed: one frame of ``views`` crops; a camera without the person is masked). The crops
    are :func:`export_algebraic_onnx`'s (``bbox_scale``, ``bgr``); the runtime adds each crop's camera and the base
    point. Other arguments as :func:`export_onnx` (the tolerance applies to the joints in mm)."""
    from humanvision.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from humanvision.runtime.multiview import MULTIVIEW_FORMAT
    from humanvision.skeletons import get_skeleton

    if opset < 16:
        raise ConfigError(f"--opset {opset}: the volumetric export needs opset 16 or newer (GridSample)")
    if views < 1:
        raise ConfigError(f"--views {views}: at least one camera")
    out, t0 = Path(out), time.perf_counter()
    backbone = method.backbone
    size = int(backbone.input_size[0])
    skeleton = get_skeleton(backbone.skeleton)
    names = ("images", "proj", "base_point", "view_mask")
    arch = "contextpose" if type(method).__name__ == "ContextPose" else "volumetric"
    meta = {**_header(f"{arch}:{getattr(backbone, 'model_name', type(backbone).__name__)}", recipe, weights,
                      MULTIVIEW_FORMAT),
            "method": "volumetric", "architecture": arch,
            "input": {**_input_contract((size, size), IMAGENET_MEAN, IMAGENET_STD), "name": "images",
                      "shape": [1, views, 3, size, size], "color": "BGR" if bgr else "RGB", "views": int(views),
                      "proj": "(1, V, 3, 4) float64, each camera's P moved into its crop",
                      "base_point": "(1, 3) float64 world, the cuboid's centre",
                      "view_mask": "(1, V) bool, False for a camera without the person"},
            "output": {"name": "keypoints_3d", "shape": [1, skeleton.num_joints, 3], "dtype": "float64"},
            "crop": {"box_format": "xywh, rounded to integer pixels", "shape": "square",
                     "scale": float(bbox_scale), "rule": "side int(scale x longer side) about the integer centre "
                     "((left + right) // 2, (top + bottom) // 2), zero outside the image",
                     "interpolation": "area"},
            "volume": {"cuboid_side": float(method.cuboid_side), "size": int(method.volume_size),
                       "aggregation": method.aggregation, "rotation": 0.0},
            "skeleton": {"name": skeleton.name, "joints": list(skeleton.joints),
                         "limbs": [list(map(int, limb)) for limb in skeleton.limbs]},
            "export": {**_export_info(opset), "dynamic_axes": {}}}
    graph = VolumetricGraph(method).eval()
    was_training = method.training
    method.eval().float()
    gen = torch.Generator().manual_seed(0)

    def batch(seed: int, crops: torch.Tensor | None = None, masked: int | None = None) -> tuple[torch.Tensor, ...]:
        base, proj = ring_views(views, size, seed)
        mask = torch.ones(1, views, dtype=torch.bool)
        if masked is not None and views > 2:
            mask[0, masked] = False
        x = crops if crops is not None else torch.randn(1, views, 3, size, size, generator=gen)
        return x, proj, base, mask

    def inputs() -> dict[str, Any]:
        realish = square_crops(size, n=views, padding=float(bbox_scale))[None]
        return {"random": batch(1), "realish": batch(2, realish, masked=views - 1)}

    try:
        parity = _export_checked(graph, batch(0), out, meta, inputs if check else None, tolerance, "keypoints_3d",
                                 input_names=names, dynamic_batch=False)
    finally:
        method.train(was_training)
    return ExportReport(out, meta, parity, time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------- monocular 3D
class Pose3DGraph(nn.Module):
    """A monocular 3D network's last heatmaps ``(B, K, h, w)`` and its depths (a map ``(B, K, h, w)`` or one per
    joint ``(B, K)``), what :meth:`~humanvision.methods.monocular3d.Monocular3DPose.predict` reads."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model.forward_pose3d(x)
        return out["hm"][-1], out["depth"]


def square_crops(size: int, n: int = 2, seed: int = 0, padding: float = 1.25) -> torch.Tensor:
    """``(n, 3, size, size)`` normalised square crops of drawn people (side ``padding`` x the longer box side, as
    :func:`~humanvision.methods.monocular3d.predict_image`; one box partly outside its image)."""
    from humanvision.data.transforms import normalize_image
    from humanvision.geometry.affine import get_affine_matrix, warp_crop

    rng = np.random.default_rng(seed)
    crops = []
    for i in range(n):
        img, box = _draw_person(rng, (2 * size, 2 * size))
        b = np.asarray(box) - ([0.6 * box[2], 0, 0, 0] if i % 2 else 0)
        side = padding * b[2:].max()
        m = get_affine_matrix(b[:2] + b[2:] / 2, [side, side], 0.0, (size, size))
        crops.append(normalize_image(warp_crop(img, m, (size, size))))
    return torch.stack(crops)


def export_monocular3d_onnx(method, out: str | Path, *, box_padding: float = 1.25, flip_test: bool = True,
                            total_length: float = 4000.0, opset: int = 17, check: bool = True,
                            tolerance: float = 1e-4, recipe: str | None = None, weights: str | Path | None = None,
                            trace_batch: int = 2) -> ExportReport:
    """Export a :class:`~humanvision.methods.monocular3d.Monocular3DPose` (heatmaps + depths) to ``out`` with the
    contract of :func:`~humanvision.methods.monocular3d.predict_image` (format ``humanvision.monocular3d``, read
    by :class:`~humanvision.runtime.MonocularPose3D`): the square crop (``box_padding``; the whole image without
    boxes), the flip test (``flip_test``: the runtime's default), the decoding (integer argmax, depth read there,
    pelvis-relative, ``depth_unit``) and the MPII-16 -> Human3.6M-17 conversion scaled to ``total_length`` mm of
    bones. Other arguments as :func:`export_onnx` (the tolerance applies to heatmaps and depths)."""
    from humanvision.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from humanvision.methods.monocular3d import MPII16_TO_H36M17, ROOT
    from humanvision.metrics.pose3d import HG_H36M17_EDGES
    from humanvision.runtime.pose3d import POSE3D_FORMAT
    from humanvision.skeletons import get_skeleton

    if opset < 13:
        raise ConfigError(f"--opset {opset}: humanvision exports need opset 13 or newer")
    out, t0 = Path(out), time.perf_counter()
    model, sk = method.model, method.skeleton
    size = int(model.input_size[0])
    if tuple(model.input_size) != (size, size):
        raise ExportError(f"{model.model_name}: monocular 3D crops are square, got input size {model.input_size}")
    graph = Pose3DGraph(model).eval()
    was_training, dtype = method.training, next(model.parameters()).dtype
    method.eval().float()
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(trace_batch, 3, size, size, generator=gen)
    with torch.no_grad():
        hm, depth = graph(example)
    names = ("heatmaps", "depth")
    target = get_skeleton("h36m17_vp")
    meta = {**_header(getattr(model, "model_name", type(model).__name__), recipe, weights, POSE3D_FORMAT),
            "input": _input_contract((size, size), IMAGENET_MEAN, IMAGENET_STD),
            "output": {"name": "heatmaps", "shape": ["batch", *hm.shape[1:]], "depth_name": "depth",
                       "depth_shape": ["batch", *depth.shape[1:]],
                       "depth_kind": "map" if depth.ndim == 4 else "per_joint"},
            "crop": {"box_format": "xywh", "shape": "square", "padding": float(box_padding),
                     "side": "padding x the longer box side, centred on the box",
                     "whole_image": "centred on the image, side max(width, height), no padding", "udp": False,
                     "interpolation": "bilinear", "border": "constant_0", "rotation": 0.0},
            "decode": {"argmax": "integer", "depth_unit": float(method.depth_unit), "root": int(ROOT),
                       "pose_crop": "(x / heatmap width, y / heatmap width, depth_unit x depth) - root"},
            "flip_test": {"default": bool(flip_test), "shift_heatmap": False,
                          "depth": "flipped back like the heatmaps (a map) or joint-swapped (per joint)"},
            "skeleton": {"name": sk.name, "joints": list(sk.joints), "flip_index": [int(i) for i in sk.flip_index],
                         "limbs": [list(map(int, limb)) for limb in sk.limbs]},
            "joints_3d": {"skeleton": target.name, "joints": list(target.joints),
                          "from_joints": [int(i) for i in MPII16_TO_H36M17],
                          "midpoints": [[7, 0, 8], [9, 8, 10]], "bones": [list(b) for b in HG_H36M17_EDGES],
                          "total_length": float(total_length), "unit": "mm", "root": 0},
            "export": _export_info(opset, *names)}

    def inputs() -> dict[str, torch.Tensor]:
        return {"random": torch.randn(trace_batch + 1, 3, size, size, generator=gen),
                "realish": square_crops(size, padding=box_padding)}

    try:
        parity = _export_checked(graph, example, out, meta, inputs if check else None, tolerance, names)
    finally:
        model.to(dtype)
        method.train(was_training)
    return ExportReport(out, meta, parity, time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------------- A2J (depth)
#: ITOP's depth frames, (width, height) pixels: the image the A2J contract's intrinsics belong to.
ITOP_IMAGE_SIZE = (320, 240)


class A2JGraph(nn.Module):
    """An A2J network with its anchor decoding: ``(B, 1, S, S)`` depth crops (replicated to the model's input
    channels in the graph) -> ``joints_crop (B, J, 2)`` ``(row, col)`` crop pixels and ``depth (B, J)`` in network
    units, the ``xy`` and ``depth`` of :meth:`~humanvision.methods.a2j.A2JMethod.predict`
    (:func:`~humanvision.models.a2j.a2j_decode`: softmax over the anchors, weighted sums of anchor + offset and of the
    depths; a few multiply-adds per anchor, where the raw heads would be ``(B, N, J)`` x 4 floats to ship out,
    2.8 M per crop at 288 px).

    The decoding runs in float64 (outputs float32): ``predict``'s float32 sums over the anchors carry a rounding
    error of ~2e-4 crop pixels at 96 px and ~1.5e-2 at 288 px (HRNet-W18, 46,656 anchors), so a float32 graph would
    differ from PyTorch by that much on onnxruntime; in float64 the two agree to ~3e-5 px (the heads' own
    differences), and the runtime's joints are closer to the exact decoding than the float32 evaluation."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(x.expand(-1, self.model.in_chans, -1, -1))
        w = out["cls"].double().softmax(dim=1)  # over the anchors, as a2j_decode
        xy = torch.einsum("bnj,nc->bjc", w, out["anchors"].double()) \
            + torch.einsum("bnj,bnjc->bjc", w, out["offset"].double())
        return xy.float(), (w * out["depth"].double()).sum(1).float()


def depth_crops(size: int, n: int = 2, seed: int = 0, *, depth_margin: float = 0.05, depth_scale: float = 50.0,
                zero_background: bool = False) -> torch.Tensor:
    """``(n, 1, size, size)`` A2J inputs of drawn people in ITOP-sized depth frames (a wall at 4 m, the figure at
    2-3 m with 2 cm noise), made by :func:`~humanvision.methods.a2j.preprocess` from their boxes (one box partly
    outside the image): the far clip drops the wall, as in the evaluation."""
    from humanvision.methods.a2j import crop_affine, preprocess

    rng = np.random.default_rng(seed)
    crops = []
    for i in range(n):
        img, (x, y, w, h) = _draw_person(rng, ITOP_IMAGE_SIZE)
        mask = np.abs(img.astype(np.float32) - np.median(img, axis=(0, 1))).sum(-1) > 60
        z = float(rng.uniform(2.0, 3.0))
        depth = np.where(mask, z + rng.normal(0.0, 0.02, mask.shape), 4.0).astype(np.float32)
        box = [x - (0.6 * w if i % 2 else 0.0), y, x + w, y + h]
        item = preprocess(depth, np.zeros((1, 2)), np.array([z + 0.06]), crop_affine(box, size), size,
                          depth_margin, depth_scale, zero_background)
        crops.append(torch.from_numpy(item["image"])[None])
    return torch.stack(crops)


def export_a2j_onnx(method, out: str | Path, *, box_pad: Sequence[float] = (0.0, 0.0),
                    image_size: tuple[int, int] = ITOP_IMAGE_SIZE, opset: int = 17, check: bool = True,
                    tolerance: float = 1e-4, recipe: str | None = None, weights: str | Path | None = None,
                    trace_batch: int = 2) -> ExportReport:
    """Export an :class:`~humanvision.methods.a2j.A2JMethod` to ``out`` with the contract of
    :func:`~humanvision.methods.a2j.evaluate_a2j` (format ``humanvision.a2j``, read by
    :class:`~humanvision.runtime.A2JPose`).

    The graph (:class:`A2JGraph`) takes the ``(B, 1, S, S)`` preprocessed depth crop and outputs the decoded
    ``joints_crop (B, J, 2)`` (``(row, col)`` crop pixels) and ``depth (B, J)`` (network units, ``(z - mean) *
    depth_scale``): :meth:`A2JMethod.predict` exactly, the anchors inside the graph. The metadata holds the rest of
    the evaluation: the box padding (``box_pad`` = the recipe's ``data.test_box_pad``) and clipping to the
    ``image_size`` = (w, h) frame, the crop affine (nearest, border 0), the depth far clip (``max(joint z) +
    a2j.depth_margin``), the centring (mean of the nonzero pixels, ``a2j.zero_background``), ``a2j.depth_scale``,
    ITOP's back-projection (principal point, 0.0035 m per pixel per metre) and the ``itop15`` skeleton.
    ``tolerance`` applies to the crop pixels and the depth units; other arguments as :func:`export_onnx`."""
    from humanvision.data.readers.itop import ITOP_PRINCIPAL_POINT
    from humanvision.methods.a2j import ITOP_PIXEL_SCALE
    from humanvision.models.a2j import A2J_STRIDE
    from humanvision.runtime.a2j import A2J_FORMAT
    from humanvision.skeletons import get_skeleton

    if opset < 13:
        raise ConfigError(f"--opset {opset}: humanvision exports need opset 13 or newer")
    pad = tuple(float(p) for p in box_pad)
    if len(pad) != 2 or min(pad) < 0:
        raise ConfigError(f"box_pad: (px, py) >= 0, got {box_pad}")
    out, t0 = Path(out), time.perf_counter()
    model, cfg = method.model, method.cfg
    size, j = int(model.input_size), int(model.num_joints)
    sk = get_skeleton("itop15")
    if j != sk.num_joints:
        raise ExportError(f"{model.model_name}: {j} joints, ITOP's skeleton has {sk.num_joints}")
    graph = A2JGraph(model).eval()
    was_training, dtype = method.training, next(model.parameters()).dtype
    method.eval().float()
    gen = torch.Generator().manual_seed(0)
    names = ("joints_crop", "depth")
    meta = {**_header(getattr(model, "model_name", type(model).__name__), recipe, weights, A2J_FORMAT),
            "input": {"name": INPUT_NAME, "shape": ["batch", 1, size, size], "size": [size, size], "layout": "NCHW",
                      "dtype": "float32", "color": "depth", "graph_channels": int(model.in_chans),
                      "depth": "the preprocessed crop: metres minus the crop's mean (see depth), one channel, "
                               "replicated to graph_channels inside the graph"},
            "output": {"name": "joints_crop", "shape": ["batch", j, 2], "order": "row, col",
                       "unit": "crop pixels", "depth_name": "depth", "depth_shape": ["batch", j],
                       "depth_unit": "(z - mean) * decode.depth_scale"},
            "crop": {"box_format": "xyxy", "padding": list(pad), "clip": "x to [0, width - 1], y to [0, height - 1] "
                     "after padding", "min_size": 2.0,
                     "affine": "u = (x - x1) S / (x2 - x1), v = (y - y1) S / (y2 - y1) (float64), u: column, v: row",
                     "interpolation": "nearest", "border": "constant_0", "rotation": 0.0,
                     "inverse": "of the float32-rounded affine, in float64 (the evaluation batches it as float32)"},
            "depth": {"unit": "metres", "dtype": "float32", "no_reading": 0.0, "margin": float(cfg.depth_margin),
                      "far_clip": "crop pixels deeper than max(joint z) + margin set to 0 (the evaluation uses the "
                                  "ground-truth joints; A2JPose: joints_z, or max_depth)",
                      "mean": "float32 mean of the crop's pixels > 0 (none left: mean of the joints' z)",
                      "zero_background": bool(cfg.zero_background),
                      "center": "pixels > 0: d - mean; others: 0 if zero_background else -mean; no scaling"},
            "decode": {"in_graph": True, "stride": A2J_STRIDE, "anchor_offsets": list(model.anchor_offsets),
                       "anchors": len(model.anchors), "anchor_order": "(W, H, A)",
                       "weights": "softmax over the anchors, per joint",
                       "joints_crop": "sum_n w (anchor_n + offset_n)", "depth": "sum_n w depth_n",
                       "depth_scale": float(cfg.depth_scale), "z": "depth / depth_scale + mean (metres)",
                       "image": "(x, y) = inverse crop affine of (col, row)"},
            "camera": {"name": "itop", "image_size": [int(v) for v in image_size],
                       "principal_point": [float(v) for v in ITOP_PRINCIPAL_POINT],
                       "pixel_scale": float(ITOP_PIXEL_SCALE),
                       "backproject": "X = (x - cx) z pixel_scale, Y = (cy - y) z pixel_scale, Z = z",
                       "axes": "ITOP: x right, y up, z away from the camera; metres"},
            "skeleton": {"name": sk.name, "joints": list(sk.joints), "flip_index": [int(i) for i in sk.flip_index],
                         "limbs": [list(map(int, limb)) for limb in sk.limbs]},
            "eval": {"metric": "mAP", "threshold": float(cfg.threshold)},
            "export": _export_info(opset, *names)}

    def inputs() -> dict[str, torch.Tensor]:
        return {"random": torch.randn(trace_batch + 1, 1, size, size, generator=gen),
                "realish": depth_crops(size, depth_margin=cfg.depth_margin, depth_scale=cfg.depth_scale,
                                       zero_background=cfg.zero_background)}

    try:
        parity = _export_checked(graph, torch.randn(trace_batch, 1, size, size, generator=gen), out, meta,
                                 inputs if check else None, tolerance, names)
    finally:
        model.to(dtype)
        method.train(was_training)
    return ExportReport(out, meta, parity, time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------- int8 quantisation
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class QuantizationError(ExportError):
    """An int8 quantisation that cannot be made as asked (e.g. static mode without calibration data)."""


@dataclass
class QuantizeReport:
    path: Path
    metadata: dict[str, Any]
    parity: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def _folder_images(folder: Path, max_images: int) -> list[tuple[str, np.ndarray]]:
    import cv2

    if not folder.is_dir():
        raise DataError("calibration folder not found", file=str(folder))
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:max_images]
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the calibration folder", file=str(folder))
    out = []
    for p in files:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DataError("unreadable calibration image", file=str(p))
        out.append((str(p), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    return out


def calibration_crops(estimator, images: str | Path | np.ndarray | None, *, max_images: int = 64,
                      flip: bool | None = None) -> np.ndarray:
    """Normalised ``(N, 3, H, W)`` float32 crops for calibration, made by ``estimator``
    (a :class:`~humanvision.runtime.PoseEstimator` of the fp32 file, i.e. the preprocessing its metadata states).

    ``images``: a folder of images (each cropped whole, the runtime's default box), an ``(N, H, W, 3)`` uint8
    RGB array (likewise) or an ``(N, 3, H, W)`` float array of crops already normalised (used as they are).
    ``flip`` (default: when the runtime's flip test is on and not in the graph) adds the mirrored crops, which
    the runtime also feeds to the model."""
    w, h = estimator.input_size
    if isinstance(images, (str, Path)):
        crops = np.concatenate([estimator.preprocess(img)[0] for _, img in
                                _folder_images(Path(images), max_images)])
    else:
        a = np.asarray(images)
        if a.ndim == 4 and a.shape[1:] == (3, h, w) and a.dtype.kind == "f":
            crops = a.astype(np.float32)
        elif a.ndim == 4 and a.shape[-1] == 3 and a.dtype == np.uint8:
            crops = np.concatenate([estimator.preprocess(img)[0] for img in a[:max_images]])
        else:
            raise DataError(f"expected (N, 3, {h}, {w}) float crops or (N, H, W, 3) uint8 RGB images, got "
                            f"{a.dtype} {a.shape}", field="calibration_images")
        if len(crops) == 0:
            raise DataError("no calibration images", field="calibration_images")
    if flip is None:
        flip = estimator.flip_test and not estimator.flip_in_graph
    if flip:
        crops = np.concatenate([crops, crops[..., ::-1]])
    return np.ascontiguousarray(crops)


def check_crops(estimator, n: int = 4, seed: int = 0) -> np.ndarray:
    """``(n, 3, H, W)`` crops of drawn people (:func:`_draw_person`) made by ``estimator``'s preprocessing
    from their boxes: parity inputs that need no data."""
    rng = np.random.default_rng(seed)
    w, h = estimator.input_size
    crops = []
    for i in range(n):
        img, box = _draw_person(rng, (2 * w, 2 * h))
        if i % 2:  # a box that leaves the image: a zero border in the crop
            box = [box[0] - 0.6 * box[2], box[1], box[2], box[3]]
        crops.append(estimator.preprocess(img, [box])[0])
    return np.concatenate(crops)


def quantization_parity(fp32: str | Path, int8: str | Path, inputs: dict[str, np.ndarray],
                        batch_size: int = 8) -> dict[str, Any]:
    """Max |diff| of the heatmaps and of the decoded keypoints (crop input pixels, by the metadata's codec)
    between the fp32 and the int8 file (onnxruntime, CPU) on each named input batch. No threshold: int8 moves
    the numbers by an amount that depends on the model and the data; the caller judges."""
    import onnxruntime as ort

    from humanvision.runtime import decode_heatmaps, read_metadata

    c = read_metadata(fp32)["codec"]
    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (fp32, int8)]

    def run(session, x: np.ndarray) -> np.ndarray:
        return np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: x[i:i + batch_size]})[0]
                               for i in range(0, len(x), batch_size)]).astype(np.float32)

    report: dict[str, Any] = {"heatmap_max_abs_diff": {}, "reference_max_abs": {}, "keypoint_max_abs_diff_px": {},
                              "keypoint_median_diff_px": {}, "keypoint_within_1px": {}, "batch_sizes": {}}
    for name, x in inputs.items():
        ref, got = (run(s, np.ascontiguousarray(x, dtype=np.float32)) for s in sessions)
        kps = [decode_heatmaps(m, c["stride"], c["refine"], int(c.get("blur_kernel_size", 11)),
                               c.get("blur_border", "reflect"))[0] for m in (ref, got)]
        d = np.linalg.norm(kps[1].astype(np.float64) - kps[0], axis=-1)  # per keypoint, px
        report["heatmap_max_abs_diff"][name] = float(np.abs(got - ref).max())
        report["reference_max_abs"][name] = float(np.abs(ref).max())
        report["keypoint_max_abs_diff_px"][name] = float(d.max())
        report["keypoint_median_diff_px"][name] = float(np.median(d))
        report["keypoint_within_1px"][name] = float((d <= 1.0).mean())
        report["batch_sizes"][name] = len(x)
    report.update(precision="int8", onnxruntime=ort.__version__, provider="CPUExecutionProvider",
                  keypoint_units="crop input pixels (Euclidean distance per keypoint)")
    return report


class _CropReader:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over normalised crops, ``batch`` at a time."""

    def __init__(self, crops: np.ndarray, batch: int = 1) -> None:
        self._batches = iter([crops[i:i + batch] for i in range(0, len(crops), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._batches, None)
        return None if x is None else {INPUT_NAME: np.ascontiguousarray(x)}


def quantize_onnx(src: str | Path, dst: str | Path, mode: str = "dynamic",
                  calibration_images: str | Path | np.ndarray | None = None, *, per_channel: bool = True,
                  calibrate_method: str = "minmax", max_images: int = 64, preprocess: bool = True,
                  check_inputs: dict[str, np.ndarray] | None = None, verbose: bool = True) -> QuantizeReport:
    """Quantise an exported fp32 pose model (``humanvision export``) to int8 with ``onnxruntime.quantization``.

    Args:
        src: the fp32 ``.onnx`` file (with humanvision's metadata).
        dst: the int8 file to write (the CLI writes ``<name>.int8.onnx`` next to ``src``).
        mode: ``"dynamic"`` (int8 weights, activations quantised per call at run time; ``quantize_dynamic``) or
            ``"static"`` (weights and activations, with activation ranges calibrated on
            ``calibration_images``; ``quantize_static``, QDQ format, int8 activations and weights).
        calibration_images: a folder of images, an ``(N, H, W, 3)`` uint8 RGB array (both cropped whole by the
            runtime's preprocessing, read from the metadata) or ``(N, 3, H, W)`` normalised float crops.
            Required for ``"static"``; with ``"dynamic"`` only used as parity inputs.
        per_channel: per-output-channel weight scales.
        calibrate_method: ``"minmax"``, ``"entropy"`` or ``"percentile"`` (static only).
        preprocess: run ``onnxruntime.quantization.quant_pre_process`` first (shape inference and graph
            optimisation; needed where weights are shared through ``Identity`` nodes).
        max_images: at most this many images from a folder / array.
        check_inputs: named ``(N, 3, H, W)`` crop batches for the parity report (default: drawn people, plus
            the calibration crops).
        verbose: print the parity numbers.

    The quantised file keeps the fp32 file's metadata (so :class:`~humanvision.runtime.PoseEstimator` runs it
    unchanged) plus ``quantization`` (mode, settings, calibration count, the parity report of
    :func:`quantization_parity`). Raises :class:`~humanvision.errors.DataError` for a missing or unreadable
    ``src`` or calibration data, :class:`QuantizationError` for ``"static"`` without calibration data.
    """
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    from humanvision.runtime import PoseEstimator, read_metadata

    t0 = time.perf_counter()
    src, dst = Path(src), Path(dst)
    if mode not in ("dynamic", "static"):
        raise ConfigError(f"quantisation mode {mode!r}: expected 'dynamic' or 'static'")
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if calibrate_method not in methods:
        raise ConfigError(f"calibrate_method {calibrate_method!r}: expected one of {sorted(methods)}")
    if mode == "static" and calibration_images is None:
        raise QuantizationError(f"{src}: static int8 quantisation needs calibration data (a folder of images, an "
                                "image array or normalised crops) to measure the activation ranges; pass "
                                "calibration_images (CLI: --calibration DIR) or use mode='dynamic'")
    if dst.resolve() == src.resolve():
        raise ConfigError(f"{dst}: the int8 file must not replace its fp32 source")
    meta = read_metadata(src)  # DataError / MetadataError for a missing, corrupt or foreign file
    estimator = PoseEstimator(src, flip_test=False)
    calib = None
    if calibration_images is not None:
        calib = calibration_crops(estimator, calibration_images, max_images=max_images,
                                  flip=meta["flip_test"]["default"] and not meta["flip_test"]["in_graph"])
    dst.parent.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {"mode": mode, "per_channel": per_channel, "weight_type": "int8"}
    tmp_dir = None
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization logs advice on the root logger
    try:
        model_in = src
        if preprocess:  # shape inference + onnxruntime's graph optimisation (folds the Identity of shared weights,
            #             which the quantiser rejects as "not an initializer"), as onnxruntime recommends
            tmp_dir = tempfile.TemporaryDirectory(prefix="humanvision_quant_")
            model_in = Path(tmp_dir.name) / "preprocessed.onnx"
            quant_pre_process(str(src), str(model_in))
            settings["preprocessed"] = True
        if mode == "dynamic":
            quantize_dynamic(model_in, dst, per_channel=per_channel, weight_type=QuantType.QInt8)
        else:
            quantize_static(model_in, dst, _CropReader(calib), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=methods[calibrate_method])
            settings.update(format="QDQ", activation_type="int8", calibrate_method=calibrate_method,
                            calibration_crops=len(calib))
    except HumanVisionError:
        raise
    except Exception as e:
        raise QuantizationError(f"{src}: onnxruntime {mode} quantisation failed: {type(e).__name__}: {e}") from e
    finally:
        logging.getLogger().setLevel(level)
        if tmp_dir is not None:
            tmp_dir.cleanup()
    inputs = dict(check_inputs) if check_inputs is not None else {"drawn": check_crops(estimator)}
    if check_inputs is None and calib is not None:
        inputs["calibration"] = calib
    parity = quantization_parity(src, dst, inputs)
    settings["onnxruntime"] = ort.__version__
    meta = {**meta, "quantization": {**settings, "source": src.name, "parity": parity}}
    write_metadata(dst, meta)
    report = QuantizeReport(dst, meta, parity, time.perf_counter() - t0)
    if verbose:
        print(f"{dst} (int8 {mode}, {dst.stat().st_size / 2**20:.2f} MiB from {src.stat().st_size / 2**20:.2f}): "
              + "; ".join(f"{k}: heatmap max |diff| {parity['heatmap_max_abs_diff'][k]:.3g} (of "
                          f"{parity['reference_max_abs'][k]:.3g}), keypoints max |diff| "
                          f"{parity['keypoint_max_abs_diff_px'][k]:.3g} px (median "
                          f"{parity['keypoint_median_diff_px'][k]:.3g}, {100 * parity['keypoint_within_1px'][k]:.0f}% "
                          "within 1 px)" for k in inputs))
    return report
