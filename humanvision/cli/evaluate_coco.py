"""``humanvision evaluate coco``: COCO keypoint AP/AR of a result file (our evaluator, pycocotools-exact);
``humanvision evaluate crowdpose``: the same with CrowdPose's protocol and AP by crowd index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from humanvision.cli.app import evaluate_app


@evaluate_app.command("coco")
def coco(
    gt: Annotated[Path, typer.Option("--gt", help="COCO keypoint ground truth json (images, annotations, "
                                                  "categories).")],
    results: Annotated[Path, typer.Option(
        "--results", help="Result json: [{image_id, category_id, keypoints, score}].")],
    skeleton: Annotated[str, typer.Option(
        "--skeleton", help="Joint set giving K and the OKS sigmas (name or skeleton YAML), e.g. aic14."
    )] = "coco17",
    use_area: Annotated[bool, typer.Option(
        "--use-area/--no-use-area", help="Scale OKS by the GT 'area' (COCO) or by 0.53*w*h of the GT box "
                                         "(AIC, CrowdPose).")] = True,
    max_dets: Annotated[int, typer.Option(
        "--max-dets", min=1, help="Detections kept per image, by score.")] = 20,
    out: Annotated[Path | None, typer.Option("--out", help="Write the summary (10 numbers, counts) as JSON "
                                                           "here.")] = None,
) -> None:
    """COCO keypoint AP/AR (OKS .50:.05:.95, areas all/medium/large), equal to pycocotools COCOeval."""
    import warnings

    from rich.console import Console
    from rich.table import Table

    from humanvision.errors import DataError
    from humanvision.metrics.coco import evaluate_coco_keypoints
    from humanvision.skeletons import SkeletonError

    console = Console()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = evaluate_coco_keypoints(gt, results, skeleton=skeleton, use_area=use_area,
                                          max_dets=max_dets)
    except (DataError, SkeletonError) as e:
        Console(stderr=True).print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(code=1) from None
    for w in caught:
        console.print(f"[yellow]warning:[/yellow] {w.message}", highlight=False)

    table = Table(title=f"COCO keypoints ({skeleton}, {'GT area' if use_area else '0.53 x box area'}, "
                        f"maxDets={max_dets})",
                  caption=f"{res.num_images} images, {res.num_gt} GT instances ({res.num_gt_ignored} crowd "
                          f"or without keypoints), {res.num_detections} detections")
    for col in ("", "OKS .50:.95", "OKS .50", "OKS .75", "medium", "large"):
        table.add_column(col, justify="right")
    for row in ("AP", "AR"):
        table.add_row(row, *(f"{res.stats[row + suffix]:.4f}" for suffix in ("", "50", "75", "m", "l")))
    console.print(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"metric": "coco_keypoints", "gt": str(gt), "results": str(results), "skeleton": skeleton,
                   **res.as_dict()}
        out.write_text(json.dumps(payload, indent=2))
        console.print(f"wrote {out}")


def _thresholds(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected two numbers 'LO,HI', got {text!r}") from None
    if not 0 <= lo <= hi:
        raise typer.BadParameter(f"expected 0 <= LO <= HI, got {text!r}")
    return lo, hi


@evaluate_app.command("crowdpose")
def crowdpose(
    gt: Annotated[Path, typer.Option("--gt", help="CrowdPose json (images carry 'crowdIndex').")],
    results: Annotated[Path, typer.Option(
        "--results", help="Result json: [{image_id, category_id, keypoints (14 x 3), score}].")],
    crowd_index: Annotated[str, typer.Option(
        "--crowd-index", help="Crowd-index thresholds LO,HI: easy < LO <= medium < HI <= hard (default: "
                              "the official evaluation code's 0.2,0.8; the paper's text says 0.1,0.8).")
    ] = "0.2,0.8",
    skeleton: Annotated[str, typer.Option("--skeleton", help="Joint set giving the OKS sigmas.")
                        ] = "crowdpose14",
    max_dets: Annotated[int, typer.Option("--max-dets", min=1, help="Detections kept per image.")] = 20,
    out: Annotated[Path | None, typer.Option("--out", help="Write the summary as JSON here.")] = None,
) -> None:
    """CrowdPose AP/AR (OKS by 0.53 x GT box area) and AP on easy / medium / hard images by crowd index."""
    import warnings

    from rich.console import Console
    from rich.table import Table

    from humanvision.errors import DataError
    from humanvision.metrics.coco import evaluate_crowdpose
    from humanvision.skeletons import SkeletonError

    lo, hi = _thresholds(crowd_index)
    console = Console()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = evaluate_crowdpose(gt, results, thresholds=(lo, hi), skeleton=skeleton, max_dets=max_dets)
    except (DataError, SkeletonError) as e:
        Console(stderr=True).print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(code=1) from None
    for w in caught:
        console.print(f"[yellow]warning:[/yellow] {w.message}", highlight=False)

    n = res.split_images
    table = Table(title=f"CrowdPose keypoints ({skeleton}, 0.53 x box area, maxDets={max_dets})",
                  caption=f"{res.overall.num_images} images (easy {n['easy']}, medium {n['medium']}, hard "
                          f"{n['hard']}; crowd index < {lo:g} / < {hi:g} / rest), {res.overall.num_gt} GT "
                          f"instances, {res.overall.num_detections} detections")
    for col in ("", "OKS .50:.95", "OKS .50", "OKS .75", "easy", "medium", "hard"):
        table.add_column(col, justify="right")
    s = res.stats
    table.add_row("AP", *(f"{s[k]:.4f}" for k in ("AP", "AP50", "AP75", "AP_easy", "AP_medium", "AP_hard")))
    table.add_row("AR", *(f"{s[k]:.4f}" for k in ("AR", "AR50", "AR75")), "", "", "")
    console.print(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"metric": "crowdpose_keypoints", "gt": str(gt), "results": str(results),
                   "skeleton": skeleton, **res.as_dict()}
        out.write_text(json.dumps(payload, indent=2))
        console.print(f"wrote {out}")
