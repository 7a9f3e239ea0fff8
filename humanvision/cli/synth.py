"""``humanvision synth``: write a synthetic dataset in an official format, with a contact sheet.

``--preset`` picks a scene preset (:mod:`humanvision.data.synthetic.presets`: legacy, coco, h36m, pedestrian) whose
:class:`~humanvision.data.synthetic.SceneConfig` the scene formats use; options given explicitly (``--size``,
``--views``, ``--people``, ``--motion``, ``--occluders``, ``--distortion``) override it. ``--backgrounds DIR``
gives the presets their photo backdrops; ``synth backgrounds --out DIR [--opencv-doc DIR]`` collects such photos
from offline packages.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from humanvision.cli.app import app


def _motion_clips(motion: str):
    """``--motion``: None for ``random`` poses, the DeepMimic clips for ``deepmimic``, else one BVH file."""
    from humanvision.data.synthetic.motion import deepmimic_clips, load_deepmimic, read_bvh

    if motion == "random":
        return None
    if motion == "deepmimic":
        try:
            return [load_deepmimic(c) for c in deepmimic_clips()]
        except ImportError as e:
            raise typer.BadParameter(str(e), param_hint="--motion") from None
    if not Path(motion).is_file():
        raise typer.BadParameter(f"{motion!r} is neither 'random', 'deepmimic' nor a BVH file", param_hint="--motion")
    return [read_bvh(motion)[0]]


def _pair(text: str, sep: str, what: str) -> tuple[int, int]:
    try:
        parts = [int(v) for v in text.lower().split(sep)]
    except ValueError:
        raise typer.BadParameter(f"{what} must look like A{sep}B or A, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) <= 0:
        raise typer.BadParameter(f"{what} must be one or two positive integers, got {text!r}")
    return parts[0], parts[1]


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    format_arg: Annotated[str | None, typer.Argument(metavar="[FORMAT]", help="The format, as --format.",
                                                     show_default=False)] = None,
    fmt: str = typer.Option("coco", "--format", "-f", help="coco | mpii | h36m | itop | multimodal | "
                            "ntu_hcmoco | h36m_parsing | nturgbd_parsing (HCMoCo) | "
                            "mocap_coco (DeepMimic poses as COCO keypoints, no images; val: held-out clips) | "
                            "person crops of persistent identities: market1501 | pa100k | cuhk_pedes | person_crops "
                            "(--num counts ids for market1501, train and test each, and cuhk_pedes) | "
                            "backgrounds (collect person-free photos from offline packages into --out)"),
    num: int = typer.Option(100, "--num", "-n", min=1, help="Number of frames."),
    views: int | None = typer.Option(None, "--views", "-v", min=1, help="Cameras per frame (default 1, the "
                                     "preset's, h36m 4)."),
    size: str = typer.Option("", "--size", help="WxH (defaults: the preset's size with --preset, else coco/mpii "
                                                "256x256, h36m 1000x1000, multimodal 320x320, "
                                                "ntu_hcmoco/nturgbd_parsing 512x424, h36m_parsing 256x256; itop is "
                                                "always 320x240)."),
    seed: int = typer.Option(0, "--seed", help="Dataset seed; frame i depends only on (seed, i)."),
    people: str | None = typer.Option(None, "--people", help="People per frame: P or MIN-MAX (default 1, or "
                                      "the preset's)."),
    motion: str = typer.Option("random", "--motion", help="random | deepmimic | path to a .bvh file."),
    split: str = typer.Option("train", "--split", help="Split name used in file names."),
    val: int = typer.Option(0, "--val", min=0, help="Also write a 'val' split of this many frames (coco, mpii, "
                                                     "itop, multimodal)."),
    distortion: bool | None = typer.Option(None, "--distortion/--no-distortion", help="Give rig cameras lens "
                                           "distortion (h36m model; default off, or the preset's)."),
    occluders: float | None = typer.Option(None, "--occluders", min=0.0, max=1.0, help="Occluder probability "
                                           "(default 0.25, or the preset's)."),
    preset: str | None = typer.Option(None, "--preset", help="Scene preset: legacy | coco | h36m | pedestrian "
                                      "(see humanvision.data.synthetic.presets); explicit options override it."),
    backgrounds: Path | None = typer.Option(None, "--backgrounds", help="Folder of person-free photos for the "
                                            "presets' backdrops (collect one with the 'backgrounds' format)."),
    opencv_doc: Path | None = typer.Option(None, "--opencv-doc", help="backgrounds format: an extracted "
                                           "opencv-doc package (apt-get download opencv-doc; dpkg -x ... DIR)."),
    skimage_data: Path | None = typer.Option(None, "--skimage-data", help="backgrounds format: scikit-image's "
                                             "skimage/data folder when scikit-image is not installed (pip download "
                                             "scikit-image --no-deps; unzip the wheel)."),
    sheet: bool = typer.Option(True, "--sheet/--no-sheet", help="Write contact_sheet.png."),
    workers: int = typer.Option(0, "--workers", min=0, help="Rendering processes (0: one per CPU core; "
                                "itop renders in one); the output does not depend on it."),
) -> None:
    """Render synthetic people and write them as a dataset in FORMAT (readable by humanvision's readers)."""
    from dataclasses import replace

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from humanvision.data.synthetic import FORMATS, SceneConfig, contact_sheet, generate, generate_frame
    from humanvision.data.synthetic.presets import check_preset, scene_config
    from humanvision.errors import ConfigError

    fmt = format_arg or fmt
    if fmt == "backgrounds":
        _collect_backgrounds(out, opencv_doc, skimage_data)
        return
    if preset is not None:
        try:
            check_preset(preset, key=None)
        except ConfigError as e:
            raise typer.BadParameter(str(e), param_hint="--preset") from None
    if backgrounds is not None and not backgrounds.is_dir():
        raise typer.BadParameter(f"folder not found: {backgrounds}", param_hint="--backgrounds")
    if (preset is not None or backgrounds is not None) and (fmt in _IDENTITY_FORMATS or fmt == "mocap_coco"):
        raise typer.BadParameter(f"--preset and --backgrounds apply to the scene formats, not to {fmt}",
                                 param_hint="--preset")
    if fmt in _IDENTITY_FORMATS:
        _identity_format(out, fmt, num, size, seed, motion, workers, sheet)
        return
    if fmt == "mocap_coco":
        _mocap_coco(out, num, val, views or 1, size or "256x256", seed, split)
        return
    if fmt not in FORMATS:
        raise typer.BadParameter(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}, backgrounds",
                                 param_hint="--format")
    base = SceneConfig() if preset is None and backgrounds is None else \
        scene_config(preset or "legacy", backgrounds=backgrounds)
    default_size = {"coco": "256x256", "mpii": "256x256", "h36m": "1000x1000", "itop": "320x240",
                    "multimodal": "320x320", "ntu_hcmoco": "512x424", "h36m_parsing": "256x256",
                    "nturgbd_parsing": "512x424"}[fmt]
    if not size and preset is not None:
        size = f"{base.size[0]}x{base.size[1]}"
    w, h = _pair(size or default_size, "x", "--size")
    lo, hi = _pair(people, "-", "--people") if people is not None else base.people
    clips = _motion_clips(motion) if motion != "random" else base.motion
    views = views if views is not None else base.views
    views = 4 if fmt == "h36m" and views == 1 else views
    cfg = replace(base, size=(w, h), views=views, people=(lo, hi), motion=clips,
                  occluder_prob=occluders if occluders is not None else base.occluder_prob,
                  distortion=distortion if distortion is not None else base.distortion)
    kwargs: dict = {"seed": seed, "config": cfg}
    if fmt != "itop":
        kwargs["workers"] = workers or os.cpu_count() or 1
    if fmt == "h36m":
        kwargs.update(size=(w, h), views=views)
        count: int | dict = num
    elif fmt == "ntu_hcmoco":  # pre-training frames: no splits
        kwargs["size"] = (w, h)
        count = num
    else:
        if fmt != "itop":
            kwargs["size"] = (w, h)
        if fmt == "multimodal":
            kwargs["views"] = views
        count = {split: num, "val": val} if val else num
        if not val:
            kwargs["split"] = split
    console = Console()
    total = num + (val if fmt not in ("h36m", "ntu_hcmoco") else 0)
    with Progress(TextColumn(f"[bold]synth {fmt}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console) as bar:
        task = bar.add_task("frames", total=total)
        summary = generate(fmt, out, count, progress=lambda done, _total: bar.update(task, completed=done),
                           **kwargs)
    table = Table(title=f"humanvision synth: {fmt}", show_header=False)
    for key in ("frames", "views", "people", "visible_joints"):
        if key in summary:
            table.add_row(key, str(summary[key]))
    table.add_row("image size", f"{w}x{h}" if fmt != "itop" else "320x240")
    table.add_row("seed", str(seed))
    if preset is not None:
        table.add_row("preset", preset)
    if cfg.backgrounds is not None:
        table.add_row("backgrounds", str(cfg.backgrounds))
    for f in summary["files"]:
        table.add_row("file", f)
    if sheet:
        sheet_cfg = cfg if fmt != "itop" else SceneConfig(size=(320, 240), people=(lo, hi), motion=clips)
        frames = [generate_frame(sheet_cfg, seed, i) for i in range(2 if views == 1 else 1)]
        path = out / "contact_sheet.png"
        contact_sheet(frames, path, tile=256 if views == 1 else 200)
        table.add_row("contact sheet", str(path))
    console.print(table)


def _collect_backgrounds(out: Path, opencv_doc: Path | None, skimage_data: Path | None = None) -> None:
    """The ``backgrounds`` format: person-free photos of offline packages copied into ``out``
    (:func:`~humanvision.data.synthetic.backgrounds.collect_backgrounds`)."""
    from rich.console import Console
    from rich.table import Table

    from humanvision.data.synthetic import backgrounds as bg
    from humanvision.errors import DataError

    try:
        summary = bg.collect_backgrounds(out, opencv_doc=opencv_doc, skimage_data=skimage_data)
    except DataError as e:
        raise typer.BadParameter(str(e), param_hint="--opencv-doc") from None
    table = Table(title="humanvision synth: backgrounds", show_header=False)
    table.add_row("folder", str(summary["out_dir"]))
    table.add_row("copied", str(summary["copied"]))
    for source, n in summary["by_source"].items():
        where = summary["sources"].get(source)
        table.add_row(f"  {source}", f"{n}" + (f" from {where}" if where else " (not found)"))
    table.add_row("refused", str(len(summary["refused"])))
    for path, reason in summary["refused"][:10]:
        table.add_row("", f"{Path(path).name}: {reason}")
    if len(summary["refused"]) > 10:
        table.add_row("", f"... and {len(summary['refused']) - 10} more")
    if summary["missing"]:
        table.add_row("missing", ", ".join(summary["missing"]))
    if not summary["copied"]:
        table.add_row("note", "no photo copied: pass --opencv-doc DIR (apt-get download opencv-doc && dpkg -x "
                              "opencv-doc_*.deb DIR) or install scikit-image")
    Console().print(table)


def _mocap_coco(out: Path, num: int, val: int, views: int, size: str, seed: int, split: str) -> None:
    """``--format mocap_coco``: ``num`` poses (x ``views`` cameras) from the training clips, ``val`` from the
    held-out ones (:mod:`humanvision.data.synthetic.mocap`)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    from humanvision.data.synthetic.mocap import generate_mocap_coco

    w, h = _pair(size, "x", "--size")
    counts = {split: num, "val": val} if val else {split: num}
    console = Console()
    columns = (TextColumn("[bold]synth mocap_coco"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("poses", total=sum(counts.values()))
        try:
            summary = generate_mocap_coco(out, counts, size=(w, h), seed=seed, views=views,
                                          progress=lambda done, _total: bar.update(task, completed=done))
        except ImportError as e:
            raise typer.BadParameter(str(e), param_hint="--format") from None
    table = Table(title="humanvision synth: mocap_coco (no images)", show_header=False)
    for key in ("frames", "people", "visible_joints"):
        table.add_row(key, str(summary[key]))
    table.add_row("image size", f"{w}x{h}")
    table.add_row("seed", str(seed))
    for s, names in summary["clips"].items():
        table.add_row(f"clips ({s})", ", ".join(names))
    for f in summary["files"]:
        table.add_row("file", f)
    console.print(table)


_IDENTITY_FORMATS = {"market1501": "64x128", "pa100k": "128x256", "cuhk_pedes": "128x256", "person_crops": "128x256"}


def _identity_format(out: Path, fmt: str, num: int, size: str, seed: int, motion: str, workers: int,
                     sheet: bool) -> None:
    """The person-crop formats (:mod:`humanvision.data.synthetic.identities`); ``num`` counts identities for
    market1501 (train and test each) and cuhk_pedes, images for pa100k and person_crops."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from humanvision.data.synthetic import identities

    w, h = _pair(size or _IDENTITY_FORMATS[fmt], "x", "--size")
    clips = _motion_clips(motion)
    fn = {"market1501": identities.generate_market1501, "pa100k": identities.generate_pa100k,
          "cuhk_pedes": identities.generate_cuhk_pedes, "person_crops": identities.generate_person_crops}[fmt]
    console = Console()
    with Progress(TextColumn(f"[bold]synth {fmt}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console) as bar:
        task = bar.add_task("crops", total=None)
        summary = fn(out, num, seed=seed, size=(w, h), motion=clips, workers=workers or os.cpu_count() or 1,
                     progress=lambda done, total: bar.update(task, completed=done, total=total))
    table = Table(title=f"humanvision synth: {fmt}", show_header=False)
    for key in ("frames", "ids", "train_ids", "test_ids", "train_images", "gallery_images", "query_images",
                "distractors", "junk", "train", "val", "test"):
        if key in summary:
            table.add_row(key, str(summary[key]))
    table.add_row("image size", f"{w}x{h}")
    table.add_row("seed", str(seed))
    for f in summary["files"]:
        table.add_row("file", f)
    if sheet:
        path = identities.identity_sheet(out / "contact_sheet.png", seed, num_ids=6, cameras=6, size=(w, h),
                                         motion=clips)
        table.add_row("contact sheet", str(path))
    console.print(table)
