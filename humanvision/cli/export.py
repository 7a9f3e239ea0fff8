"""``humanvision export``: a top-down heatmap recipe + weights -> ONNX with its deployment contract."""

from __future__ import annotations

from pathlib import Path

import typer

from humanvision.cli.app import app
from humanvision.cli.pose import SET_HELP, _fail


@app.command("export")
def export(config: Path = typer.Argument(..., help="YAML recipe the weights were trained with (see configs/)."),
           weights: Path = typer.Option(..., "--weights", "-w", help="Weights file or run directory."),
           out: Path = typer.Option(..., "--out", "-o", help="The .onnx file to write (pre-training recipes: the "
                                                             "encoder file, or HCMoCo's folder)."),
           opset: int = typer.Option(17, "--opset", help="ONNX opset (>= 13)."),
           flip: bool | None = typer.Option(None, "--flip/--no-flip",
                                            help="Flip test by default at run time (default: the recipe's "
                                                 "eval.flip_test); the runtime can still switch it."),
           flip_in_graph: bool = typer.Option(False, "--flip-in-graph",
                                              help="Put the flip test inside the graph (one call per batch, "
                                                   "for engines that run the graph alone; cannot be switched off)."),
           check: bool = typer.Option(True, "--check/--no-check",
                                      help="Compare onnxruntime with PyTorch right after the export."),
           tolerance: float = typer.Option(1e-4, "--tolerance",
                                           help="Largest |output difference| accepted in fp32 (times the largest "
                                                "output where that is above 1)."),
           int8: str | None = typer.Option(None, "--int8",
                                           help="Also write an int8 copy, <out stem>.int8.onnx next to --out "
                                                "(onnxruntime.quantization): 'dynamic' (weights) or 'static' "
                                                "(weights and activations, calibrated on --calibration)."),
           calibration: Path | None = typer.Option(None, "--calibration",
                                                   help="Folder of images for --int8 static (each cropped whole "
                                                        "with the exported preprocessing; at most 64)."),
           set_: list[str] = typer.Option([], "--set", help=SET_HELP),
           views: int = typer.Option(4, "--views", help="Volumetric / ContextPose recipes: the number of cameras the "
                                                        "exported graph takes (its shapes are fixed)."),
           densepose: bool = typer.Option(False, "--densepose",
                                          help="HCMoCo recipes: also write rgb_encoder_densepose.pkl, the RGB "
                                               "encoder as detectron2's DensePose loads it (MODEL.WEIGHTS)."),
           ) -> None:
    """Export a trained model to ONNX with a dynamic batch axis, its pre- and post-processing contract in the ONNX
    metadata (read by humanvision.runtime, which needs no torch) and a parity check against PyTorch.

    Top-down heatmap models (ViTPose, HRNet, SimpleBaseline, lateral, PCT stage 0) and PCT stage II run in
    humanvision.runtime.PoseEstimator; ``--int8 dynamic|static`` also writes ``<out stem>.int8.onnx`` for heatmap
    models (same contract; its differences from fp32 are printed). Re-id and attribute recipes give
    ReIDEmbedder / AttributeClassifier files, monocular 3D recipes MonocularPose3D, parsing recipes HumanParser (an
    rgbd recipe its test_mode output), algebraic triangulation recipes MultiViewTriangulator (per-view network; the DLT runs in numpy),
    volumetric and ContextPose recipes VolumetricTriangulator (the whole method for ``--views`` cameras), A2J
    recipes A2JPose.

    A pre-training recipe exports its encoders instead, as plain state dicts the downstream recipes' ``init``
    takes: HAP / MAE -> a timm ViT (``--out encoder.pth`` or ``.safetensors``); HCMoCo -> ``rgb_encoder.pth`` and
    ``depth_encoder.pth`` (flat HRNet; ``point_encoder.pth`` for the point-cloud variant) in the folder ``--out``,
    with ``--densepose`` also ``rgb_encoder_densepose.pkl`` (detectron2's checkpoint format)."""
    from rich.console import Console
    from rich.table import Table

    from humanvision.cli.pose import _load_recipe
    from humanvision.errors import ConfigError, HumanVisionError
    from humanvision.export import export_onnx, quantize_onnx
    from humanvision.methods import (
        a2j,
        algebraic,
        attributes,
        contextpose,
        hap,
        hcmoco,
        monocular3d,
        parsing,
        pct,
        reid,
        volumetric,
    )
    from humanvision.methods.topdown import TopDownRecipe, build_method, build_transform

    if hap.is_hap_recipe(config) or hcmoco.is_hcmoco_recipe(config):  # pre-training: the encoders, as state dicts
        try:
            if hap.is_hap_recipe(config):
                written = {"encoder": hap.export_encoder(weights, out)}
            else:
                written = hcmoco.export_encoders(weights, out, densepose=densepose)
        except HumanVisionError as e:
            _fail(e)
        for name, path in written.items():
            typer.echo(f"{name}: {path}")
        return
    try:
        if int8 not in (None, "dynamic", "static"):
            raise ConfigError(f"--int8 {int8}: expected 'dynamic' or 'static'")
        if int8 == "static" and calibration is None:
            raise ConfigError("--int8 static needs --calibration DIR (a folder of images to measure the activation "
                              "ranges on); or use --int8 dynamic")
        if attributes.is_attribute_recipe(config) or reid.is_reid_recipe(config):
            _export_person(config, weights, out, set_, opset=opset, check=check, tolerance=tolerance, int8=int8)
            return
        if a2j.is_a2j_recipe(config):  # before the generic load: its model.init (an HCMoCo encoder) need not exist
            _export_a2j(config, weights, out, set_, opset=opset, check=check, tolerance=tolerance, int8=int8)
            return
        recipe = _load_recipe(config, set_, unchecked=("data.", "model.weights", "model.backbone_weights",
                                                       "init_weights", "model.init"))
        if parsing.is_parsing_recipe(recipe):
            _export_parsing(recipe, weights, out, opset=opset, check=check, tolerance=tolerance, int8=int8,
                            flip=flip)
            return
        if volumetric.is_volumetric_recipe(recipe) or contextpose.is_contextpose_recipe(recipe):
            _export_volumetric(recipe, weights, out, views=views, opset=opset, check=check, tolerance=tolerance,
                               int8=int8)
            return
        if algebraic.is_algebraic_recipe(recipe):
            _export_algebraic(recipe, weights, out, opset=opset, check=check, tolerance=tolerance, int8=int8)
            return
        if monocular3d.is_monocular3d_recipe(recipe):
            _export_monocular3d(recipe, weights, out, opset=opset, check=check, tolerance=tolerance, int8=int8,
                                flip=flip)
            return
        if pct.is_pct_recipe(recipe):  # stage II: keypoints + a pose score, the PoseEstimator contract
            _export_pct(recipe, weights, out, opset=opset, check=check, tolerance=tolerance, int8=int8, flip=flip)
            return
        if not isinstance(recipe, TopDownRecipe):
            raise ConfigError(f"{config}: `humanvision export` takes top-down heatmap recipes (a `model` section "
                              f"with a registered heatmap model), not a {type(recipe).__name__}")
        method = build_method(recipe, weights=weights).eval()
        transform = build_transform(method, recipe.data, train=False)
        report = export_onnx(method, transform, out, flip_test=recipe.eval.flip_test if flip is None else flip,
                             flip_in_graph=flip_in_graph, opset=opset, check=check, tolerance=tolerance,
                             recipe=recipe.name, weights=weights)
        quant = None
        if int8 is not None:
            quant = quantize_onnx(report.path, report.path.with_suffix(".int8.onnx"), int8, calibration,
                                  verbose=False)
    except HumanVisionError as e:
        _fail(e)
    m = report.metadata
    table = Table(title=f"{recipe.name} -> {report.path}")
    table.add_column("")
    table.add_column("value")
    c = m["codec"]
    rows = {
        "model": f"{m['model']} ({m['skeleton']['name']}, {len(m['skeleton']['joints'])} joints)",
        "input": f"{m['input']['size'][0]}x{m['input']['size'][1]} (w x h) RGB, mean {m['input']['mean']}, "
                 f"std {m['input']['std']}; dynamic batch",
        "crop": f"padding {m['crop']['padding']}, {'UDP' if m['crop']['udp'] else 'non-UDP'} affine",
        "codec": f"{c['name']} {c['heatmap_size'][0]}x{c['heatmap_size'][1]}, sigma {c['sigma']}, "
                 f"refine {c['refine']}",
        "flip test": ("in the graph" if m["flip_test"]["in_graph"] else
                      f"by the runtime, default {'on' if m['flip_test']['default'] else 'off'}"),
        "opset": str(m["export"]["opset"]),
        "size": f"{report.path.stat().st_size / 2**20:.1f} MiB",
    }
    rows.update(_parity_row(report.parity))
    if quant is not None:
        q = quant.parity
        rows[f"int8 ({int8})"] = f"{quant.path} ({quant.path.stat().st_size / 2**20:.1f} MiB)"
        rows["int8 vs fp32 (onnxruntime CPU)"] = "; ".join(
            f"{k}: heatmap max |diff| {q['heatmap_max_abs_diff'][k]:.2e} (of {q['reference_max_abs'][k]:.2g}), "
            f"keypoints {100 * q['keypoint_within_1px'][k]:.0f}% within 1 px, max {q['keypoint_max_abs_diff_px'][k]:.3g} "
            "px" for k in q["heatmap_max_abs_diff"])
    rows["time"] = f"{report.seconds + (quant.seconds if quant else 0):.1f} s"
    for k, v in rows.items():
        table.add_row(k, v)
    Console().print(table)


def _export_person(config: Path, weights: Path, out: Path, overrides: list[str], *, opset: int, check: bool,
                   tolerance: float, int8: str | None) -> None:
    """A re-id / attribute recipe -> its person-crop ONNX file, and a table of the contract and the parity."""
    from humanvision.cli.pose import _load_recipe
    from humanvision.errors import ConfigError
    from humanvision.methods import attributes, reid

    if int8 is not None:
        raise ConfigError("--int8 applies to pose models only; re-id and attribute models export in fp32")
    recipe = _load_recipe(config, overrides, unchecked=("model.init",))
    task = reid if reid.is_reid_recipe(recipe) else attributes
    report = task.export_onnx(recipe, weights, out, opset=opset, check=check, tolerance=tolerance)
    m = report.metadata
    o = m["output"]
    rows = {
        "model": f"{m['model']} ({m['task']})",
        "input": f"{m['input']['size'][0]}x{m['input']['size'][1]} (w x h) RGB, mean {m['input']['mean']}, "
                 f"std {m['input']['std']}; dynamic batch",
        "crop": f"the whole box, {m['crop']['interpolation']} resize (no aspect fix, no padding)",
        "output": (f"{o['name']} {o['shape'][1]}-d, compared {o['distance']} after L2 normalisation"
                   if m["task"] == "reid" else
                   f"{o['name']}: {o['shape'][1]} attributes, positive above {o['threshold']:g}"),
    }
    _print_report(f"{recipe.name} -> {report.path}", rows, report)


def _export_monocular3d(recipe, weights: Path, out: Path, *, opset: int, check: bool, tolerance: float,
                        int8: str | None, flip: bool | None) -> None:
    """A monocular 3D recipe -> its ONNX file (heatmaps + depths), and a table of the contract and the parity."""
    from humanvision.errors import ConfigError
    from humanvision.methods import monocular3d

    if int8 is not None:
        raise ConfigError("--int8 applies to 2D pose models only; monocular 3D models export in fp32")
    report = monocular3d.export_onnx(recipe, weights, out, flip_test=flip, opset=opset, check=check,
                                     tolerance=tolerance)
    m = report.metadata
    o, j = m["output"], m["joints_3d"]
    rows = {
        "model": f"{m['model']} ({m['skeleton']['name']}, {len(m['skeleton']['joints'])} joints -> "
                 f"{j['skeleton']}, {j['total_length']:g} mm of bones)",
        "input": f"{m['input']['size'][0]}x{m['input']['size'][1]} RGB, mean {m['input']['mean']}, "
                 f"std {m['input']['std']}; dynamic batch",
        "crop": f"square, {m['crop']['padding']:g} x the longer box side (no boxes: the whole image)",
        "outputs": f"heatmaps {o['shape'][2]}x{o['shape'][3]}, depth {o['depth_kind']} (unit "
                   f"{m['decode']['depth_unit']:g} crop widths)",
        "flip test": f"by the runtime, default {'on' if m['flip_test']['default'] else 'off'}",
    }
    _print_report(f"{recipe.name} -> {report.path}", rows, report)


def _export_parsing(recipe, weights: Path, out: Path, *, opset: int, check: bool, tolerance: float,
                    int8: str | None, flip: bool | None) -> None:
    """An rgb / depth parsing recipe -> its ONNX file (logits), and a table of the contract and the parity."""
    from humanvision.errors import ConfigError
    from humanvision.methods import parsing

    if int8 is not None:
        raise ConfigError("--int8 applies to 2D pose models only; parsing models export in fp32")
    report = parsing.export_onnx(recipe, weights, out, flip_test=flip, opset=opset, check=check,
                                 tolerance=tolerance)
    m = report.metadata
    o = m["output"]
    rows = {
        "model": f"{m['model']} ({m['modality']}, {o['shape'][1]} classes)",
        "input": f"the whole frame, {m['resize']['interpolation']} to {m['input']['size'][0]}x"
                 f"{m['input']['size'][1]} (w x h); dynamic batch",
        "output": f"logits {o['shape'][2]}x{o['shape'][3]}, upsampled to the frame, argmax",
        "flip test": f"by the runtime, default {'on' if m['flip_test']['default'] else 'off'}",
    }
    _print_report(f"{recipe.name} -> {report.path}", rows, report)


def _export_algebraic(recipe, weights: Path, out: Path, *, opset: int, check: bool, tolerance: float,
                      int8: str | None) -> None:
    """An algebraic-triangulation recipe -> its per-view ONNX file, and a table of the contract and the parity."""
    from humanvision.errors import ConfigError
    from humanvision.methods import algebraic

    if int8 is not None:
        raise ConfigError("--int8 applies to 2D pose models only; multi-view models export in fp32")
    report = algebraic.export_onnx(recipe, weights, out, opset=opset, check=check, tolerance=tolerance)
    m = report.metadata
    o = m["output"]
    rows = {
        "model": f"{m['model']} ({m['skeleton']['name']}, {len(m['skeleton']['joints'])} joints), per view",
        "input": f"{m['input']['size'][0]}x{m['input']['size'][1]} {m['input']['color']}; dynamic batch (views)",
        "crop": f"square, {m['crop']['scale']:g} x the longer box side, area resize",
        "outputs": f"heatmaps {o['shape'][2]}x{o['shape'][3]}" + (", confidences" if o["confidences"] else
                                                                 " (no confidences: every view weighs 1)"),
        "3D": f"soft-argmax x {m['decode']['soft_argmax_beta']:g}, weighted DLT in the runtime "
              "(MultiViewTriangulator)",
    }
    _print_report(f"{recipe.name} -> {report.path}", rows, report)


def _export_a2j(config: Path, weights: Path, out: Path, overrides: list[str], *, opset: int, check: bool,
                tolerance: float, int8: str | None) -> None:
    """An A2J recipe -> its ONNX file (the network with its anchor decoding), and a table of the contract and the
    parity."""
    from humanvision.cli.pose import _load_recipe
    from humanvision.errors import ConfigError
    from humanvision.methods import a2j

    if int8 is not None:
        raise ConfigError("--int8 applies to 2D pose models only; A2J models export in fp32")
    recipe = _load_recipe(config, overrides, unchecked=("model.init", "data."))
    report = a2j.export_onnx(recipe, weights, out, opset=opset, check=check, tolerance=tolerance)
    m = report.metadata
    c, d, dec, cam = m["crop"], m["depth"], m["decode"], m["camera"]
    rows = {
        "model": f"{m['model']} ({m['skeleton']['name']}, {len(m['skeleton']['joints'])} joints)",
        "input": f"{m['input']['size'][0]}x{m['input']['size'][1]} depth crop, metres minus its mean "
                 f"(background {'0' if d['zero_background'] else '-mean'}); dynamic batch",
        "crop": f"xyxy box padded by ({c['padding'][0]:g}, {c['padding'][1]:g}) px, clipped to "
                f"{cam['image_size'][0]}x{cam['image_size'][1]}, nearest",
        "far clip": f"max(joint z) + {d['margin']:g} m (the runtime takes joints_z or max_depth)",
        "outputs": f"joints_crop (row, col) px and depth (units of 1/{dec['depth_scale']:g} m), decoded over "
                   f"{dec['anchors']} anchors in the graph",
        "3D": f"ITOP back-projection, principal point {cam['principal_point']}, {cam['pixel_scale']:g} m/px per m",
    }
    _print_report(f"{recipe.name} -> {report.path}", rows, report)


def _export_pct(recipe, weights: Path, out: Path, *, opset: int, check: bool, tolerance: float, int8: str | None,
                flip: bool | None) -> None:
    """A PCT stage-II recipe -> its ONNX file (keypoints + pose score), and a table of the contract and the parity."""
    from humanvision.errors import ConfigError
    from humanvision.export import export_pct_onnx
    from humanvision.methods import pct

    pct.require_classifier(recipe, "export")
    if int8 is not None:
        raise ConfigError("--int8 applies to heatmap models only; PCT stage II exports in fp32")
    method = pct.build_method(recipe, weights=weights).eval()
    transform = pct.build_transform(method, recipe.data, train=False)
    report = export_pct_onnx(method, transform, out, flip_test=recipe.eval.flip_test if flip is None else flip,
                             opset=opset, check=check, tolerance=tolerance, recipe=recipe.name, weights=weights)
    m = report.metadata
    rows = {
        "model": f"{m['model']} ({m['skeleton']['name']}, {len(m['skeleton']['joints'])} joints)",
        "input": f"{m['input']['size'][0]}x{m['input']['size'][1]} (w x h) RGB; dynamic batch",
        "crop": f"padding {m['crop']['padding']}, non-UDP affine",
        "outputs": "keypoints (crop pixels, tokens softly decoded in the graph) and a pose score",
        "flip test": f"by the runtime, default {'on' if m['flip_test']['default'] else 'off'}",
    }
    _print_report(f"{recipe.name} -> {report.path}", rows, report)


def _export_volumetric(recipe, weights: Path, out: Path, *, views: int, opset: int, check: bool, tolerance: float,
                       int8: str | None) -> None:
    """A volumetric / ContextPose recipe -> its ONNX file (the whole method for ``views`` cameras) and a table."""
    from humanvision.errors import ConfigError
    from humanvision.methods import contextpose, volumetric

    if int8 is not None:
        raise ConfigError("--int8 applies to 2D pose models only; volumetric models export in fp32")
    task = contextpose if contextpose.is_contextpose_recipe(recipe) else volumetric
    report = task.export_onnx(recipe, weights, out, views=views, opset=opset, check=check, tolerance=tolerance)
    m = report.metadata
    v = m["volume"]
    rows = {
        "model": f"{m['model']} ({m['skeleton']['name']}, {len(m['skeleton']['joints'])} joints)",
        "input": f"{m['input']['views']} crops of {m['input']['size'][0]}x{m['input']['size'][1]} "
                 f"{m['input']['color']}, their crop cameras, a base point and a view mask (fixed shapes)",
        "crop": f"square, {m['crop']['scale']:g} x the longer box side, area resize",
        "volume": f"{v['size']}^3 over {v['cuboid_side']:g} mm about the base point, {v['aggregation']} "
                  "aggregation, no rotation",
        "output": "keypoints_3d (world mm, float64)",
    }
    _print_report(f"{recipe.name} -> {report.path}", rows, report)


def _print_report(title: str, rows: dict[str, str], report) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = {**rows, "opset": str(report.metadata["export"]["opset"]),
            "size": f"{report.path.stat().st_size / 2**20:.1f} MiB", **_parity_row(report.parity),
            "time": f"{report.seconds:.1f} s"}
    table = Table(title=title)
    table.add_column("")
    table.add_column("value")
    for k, v in rows.items():
        table.add_row(k, v)
    Console().print(table)


def _parity_row(parity: dict) -> dict[str, str]:
    if not parity:
        return {"parity": "not checked (--no-check)"}
    return {"parity (fp32, onnxruntime CPU)": ", ".join(
        f"{k} max |diff| {v:.2e} (batch {parity['batch_sizes'][k]})" for k, v in parity["max_abs_diff"].items()
    ) + f" <= {parity['tolerance']:g}"}
