"""``humanvision triangulate``: 3D joints from the 2D detections of several calibrated cameras."""

from __future__ import annotations

from pathlib import Path

import typer

from humanvision.cli.app import app

_SOURCE_FILES = ("predictions.json", "results.json")


def _fail(e: Exception) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[red]error:[/] {e}")
    raise typer.Exit(code=1)


def _sources(items: list[str]) -> dict[str, Path]:
    """Camera name -> detection source from ``NAME=PATH`` / ``PATH`` items, or one folder of per-camera entries."""
    from humanvision.errors import DataError
    from humanvision.methods.triangulate import camera_name_of

    if len(items) == 1 and "=" not in items[0]:
        root = Path(items[0])
        # one camera's detections: infer output, or OpenPose frame files ({video}_{frame}_keypoints.json)
        is_source = root.is_dir() and (any((root / f).is_file() for f in _SOURCE_FILES)
                                       or any(p.name.endswith("_keypoints.json") for p in root.iterdir()))
        if root.is_dir() and not is_source:  # a folder holding one folder (or result file) per camera
            items = [str(p) for p in sorted(root.iterdir()) if p.is_dir() or p.suffix.lower() == ".json"]
            if not items:
                raise DataError("no camera folders or result files inside", file=str(root))
    out: dict[str, Path] = {}
    for item in items:
        name, path = item.split("=", 1) if "=" in item else (None, item)
        p = Path(path)
        name = name or camera_name_of(p)
        if name in out:
            raise DataError(f"camera {name!r} has two detection sources ({out[name]} and {p}); name them NAME=PATH",
                            file=str(p))
        out[name] = p
    return out


@app.command()
def triangulate(
    detections: list[str] = typer.Argument(..., help="Per-camera 2D detections, each NAME=PATH or PATH (the camera "
                                           "is the folder/file name, e.g. cam1_json -> cam1), or one folder with "
                                           "one entry (folder or .json file) per camera. PATH: an OpenPose "
                                           "--write_json folder, a COCO keypoint result file, or `humanvision "
                                           "infer` output (predictions.json)."),
    calibration: Path = typer.Option(..., "--calibration", "-c", help="Cameras: anipose/Pose2Sim .toml, "
                                     "humanvision camera .json, or a Human3.6M labels .npy (with --subject)."),
    out: Path = typer.Option(Path("outputs/triangulate"), "--out", "-o", help="Output folder."),
    layout: str | None = typer.Option(None, "--layout", help="Keypoint layout of the detections (body25, body25b, "
                                      "coco18, coco17, ...); default from the keypoint count (25: body25)."),
    skeleton: str | None = typer.Option(None, "--skeleton", help="Convert every camera to this joint set by name "
                                        "first (e.g. coco17), which also reconciles mixed layouts."),
    cameras: str | None = typer.Option(None, "--cameras", help="Comma-separated calibration cameras to use."),
    subject: str | None = typer.Option(None, "--subject", help="Human3.6M subject of a .npy calibration."),
    likelihood: float = typer.Option(0.3, "--likelihood", min=0.0, max=1.0, help="Minimum keypoint score."),
    reprojection: float = typer.Option(15.0, "--reprojection", min=0.0, help="Reprojection threshold (pixels): a "
                                       "view further off is excluded for that joint."),
    min_cameras: int = typer.Option(2, "--min-cameras", min=2, help="Fewest agreeing views for a 3D joint."),
    max_gap: int = typer.Option(10, "--max-gap", min=0, help="Fill gaps of up to this many frames (0: none)."),
    undistort: bool = typer.Option(True, "--undistort/--no-undistort", help="Undistort the detections with the "
                                   "calibration (off for detections on undistorted images)."),
    association: float = typer.Option(30.0, "--association", min=0.0, help="Epipolar distance (pixels) under which "
                                      "two views' detections may be the same person."),
    jump: float = typer.Option(0.1, "--jump", min=0.0, help="Drop a joint further than this many body sizes from "
                               "its +-2 frame median (0: off; raise it for very fast motion at low frame rates)."),
    max_people: int = typer.Option(0, "--max-people", min=0, help="Keep the N people seen most (0: all)."),
    fps: float = typer.Option(30.0, "--fps", min=0.001, help="Frame rate (TRC time axis)."),
    units: str = typer.Option("mm", "--units", help="Units of the calibration's translations (written to the TRC)."),
    up: str = typer.Option("z", "--up", help="World up axis: z, y or -y (TRC files are rotated to y up)."),
    plot: bool = typer.Option(False, "--plot", help="Write skeleton.png (the frame with most joints)."),
    video: bool = typer.Option(False, "--video", help="Write skeleton.mp4 (a 3D plot per frame)."),
    video_stride: int = typer.Option(1, "--video-stride", min=1, help="Render every N-th frame in the video."),
) -> None:
    """Triangulate 3D joints per frame: points3d.npy (F, people, J, 3), points3d.json, an OpenSim .trc per person,
    observations.npz (status and reprojection error of every detection) and report.json (per-camera and per-joint
    tables: reprojection errors, excluded views, gaps)."""
    import json
    import time

    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from humanvision.errors import DataError, HumanVisionError
    from humanvision.geometry import read_calibration
    from humanvision.methods.triangulate import (
        STATUS_NAMES,
        TriangulateConfig,
        load_detections,
        triangulate_sequence,
        write_points_json,
        write_trc,
    )

    t0 = time.perf_counter()
    try:
        if up not in ("z", "y", "-y"):
            raise DataError(f"unknown up axis {up!r}; use z, y or -y", field="--up")
        cams = read_calibration(calibration, subject=subject)
        if cameras:
            wanted = [c.strip() for c in cameras.split(",") if c.strip()]
            unknown = [c for c in wanted if c not in cams]
            if unknown:
                raise DataError(f"--cameras {unknown} are not in the calibration ({list(cams)})", file=str(calibration))
            cams = {c: cams[c] for c in wanted}
        dets = {name: load_detections(p, layout) for name, p in _sources(detections).items()}
        cfg = TriangulateConfig(likelihood_threshold=likelihood, reprojection_threshold=reprojection,
                                min_cameras=min_cameras, max_gap=max_gap, undistort=undistort,
                                association_threshold=association, jump_threshold=jump, max_people=max_people,
                                skeleton=skeleton)
        res = triangulate_sequence(dets, cams, cfg, calibration=str(calibration))
    except HumanVisionError as e:
        _fail(e)
    dt = time.perf_counter() - t0

    out.mkdir(parents=True, exist_ok=True)
    from humanvision.skeletons import get_skeleton

    joints = get_skeleton(res.skeleton).joints
    np.save(out / "points3d.npy", res.points)
    write_points_json(out / "points3d.json", res, units=units)
    np.savez_compressed(out / "observations.npz", status=res.status, reprojection=res.reprojection,
                        interpolated=res.interpolated, frames=res.frames, cameras=np.array(res.cameras),
                        status_names=np.array(STATUS_NAMES))
    n = res.points.shape[1]
    trc = [write_trc(out / ("points3d.trc" if n == 1 else f"points3d_person{k}.trc"), res.points[:, k], joints,
                     res.frames, fps, units, up) for k in range(n)]
    report = dict(res.report, seconds=round(dt, 3), units=units, calibration=str(calibration))
    (out / "report.json").write_text(json.dumps(report, indent=1))
    extra = []
    if plot and n:
        extra.append(_plot(res, out / "skeleton.png", up))
    if video and n:
        extra.append(_video(res, out / "skeleton.mp4", up, fps / video_stride, video_stride))

    console = Console()
    cam_table = Table(title="cameras (observations = frame x person x joint)")
    for col in ("camera", "used", "excluded", "low likelihood", "too few views", "temporal outlier", "missing",
                "frames without detections", "mean px", "median px"):
        cam_table.add_column(col, justify="right" if col != "camera" else "left")
    for name, c in report["per_camera"].items():
        cam_table.add_row(name, *(str(c[k]) for k in ("used", "excluded", "low_likelihood", "too_few_views",
                                                      "temporal_outlier", "missing", "frames_without_detections")),
                          *("-" if c[k] is None else f"{c[k]:.2f}" for k in ("mean_reprojection_px",
                                                                            "median_reprojection_px")))
    console.print(cam_table)
    joint_table = Table(title="joints (over frames x people)")
    for col in ("joint", "triangulated", "interpolated", "missing", "excluded views", "mean views", "mean px"):
        joint_table.add_column(col, justify="right" if col != "joint" else "left")
    for name, j in report["per_joint"].items():
        joint_table.add_row(name, str(j["triangulated"]), str(j["interpolated"]), str(j["missing"]),
                            str(j["excluded_views"]),
                            *("-" if j[k] is None else f"{j[k]:.2f}" for k in ("mean_views", "mean_reprojection_px")))
    console.print(joint_table)
    summary = Table(title=f"humanvision triangulate: {report['frames']} frames, {n} people, {res.skeleton}",
                    show_header=False)
    for key in ("joints_triangulated", "joints_too_few_views", "joints_inconsistent_views", "joints_temporal_outliers",
                "joints_interpolated", "joints_missing", "frames_too_few_views", "frames_without_3d",
                "unassociated_detections", "mean_reprojection_px"):
        summary.add_row(key.replace("_", " "), str(report[key]))
    summary.add_row("time", f"{dt:.2f} s")
    for f in ["points3d.npy", "points3d.json", "observations.npz", "report.json", *[p.name for p in trc],
              *[p.name for p in extra]]:
        summary.add_row("file", str(out / f))
    console.print(summary)


def _limits(points):
    import numpy as np

    finite = points[np.isfinite(points).all(-1)]
    lo, hi = finite.min(0), finite.max(0)
    c, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1e-6) * 1.05
    return c, half


def _plot(res, path: Path, up: str) -> Path:
    """The frame with the most finite joints."""
    import numpy as np

    from humanvision.viz.plot3d import plot_skeleton_3d

    f = int(np.isfinite(res.points).all(-1).sum((1, 2)).argmax())
    return plot_skeleton_3d(res.points[f], res.skeleton, path, up=up, title=f"frame {int(res.frames[f])}")


def _video(res, path: Path, up: str, fps: float, stride: int) -> Path:
    """A 3D skeleton plot per frame (fixed axes over the sequence) as an MP4."""
    import cv2
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from humanvision.errors import DataError
    from humanvision.viz.plot3d import _UP, plot_skeleton_3d

    fig = Figure(figsize=(5, 5), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(111, projection="3d")
    axes = list(_UP[up])
    pts = res.points[..., axes] * np.array([1, 1, -1 if up == "-y" else 1])
    c, half = _limits(pts.reshape(-1, 3)) if np.isfinite(pts).all(-1).any() else (np.zeros(3), 1.0)
    writer = None
    for f in range(0, len(res.frames), stride):
        ax.clear()
        try:
            plot_skeleton_3d(res.points[f], res.skeleton, ax=ax, up=up, title=f"frame {int(res.frames[f])}")
        except DataError:  # nothing to draw in this frame
            ax.set_title(f"frame {int(res.frames[f])} (no 3D joints)")
        ax.set_xlim(c[0] - half, c[0] + half)
        ax.set_ylim(c[1] - half, c[1] + half)
        ax.set_zlim(c[2] - half, c[2] + half)
        canvas.draw()
        img = np.asarray(canvas.buffer_rgba())[..., :3]
        if writer is None:
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), max(fps, 1.0),
                                     (img.shape[1], img.shape[0]))
        writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    if writer is not None:
        writer.release()
    return path
