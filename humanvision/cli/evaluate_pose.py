"""``humanvision evaluate pckh`` and ``humanvision evaluate mpjpe``: score pose result files from any tool."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from humanvision.cli.app import evaluate_app


def _load_array(path: Path, field: str) -> Any:
    """A numeric array from ``.npy``, ``.npz`` (key ``field`` or the only array), ``.json`` (a nested list or an
    object with the key ``field``) or ``.mat`` (variable ``field``)."""
    import numpy as np

    from humanvision.errors import DataError

    if not path.is_file():
        raise DataError("file not found", file=str(path))
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                if field not in keys and len(keys) != 1:
                    raise DataError(f"needs an array named {field!r} (has {keys})", file=str(path), field=field)
                data = z[field if field in keys else keys[0]]
        elif suffix == ".mat":
            from scipy.io import loadmat

            mat = loadmat(str(path))
            if field not in mat:
                raise DataError("missing variable", file=str(path), field=field)
            data = mat[field]
        elif suffix == ".json":
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                if field not in data:
                    raise DataError(f"a JSON object needs the key {field!r}", file=str(path), field=field)
                data = data[field]
        else:
            raise DataError("unsupported format (use .npy, .npz, .json or .mat)", file=str(path))
        return np.asarray(data, dtype=np.float64)
    except DataError:
        raise
    except (ValueError, TypeError, OSError) as e:
        raise DataError(f"cannot read a numeric array ({e})", file=str(path), field=field) from None


def _check_finite_poses(arr: Any, path: Path, field: str, joint_names: tuple[str, ...]) -> None:
    """Raise a DataError naming the file, the first frame index (array row) and joint with a NaN or inf."""
    import numpy as np

    from humanvision.errors import DataError

    bad = ~np.isfinite(arr).all(-1)  # (N, J)
    if bad.any():
        n, j = (int(i) for i in np.argwhere(bad)[0])
        count = f"{int(bad.sum())} non-finite joints in {int(bad.any(1).sum())} frames"
        raise DataError(f"joint {j} ({joint_names[j]}) is not finite (NaN or inf); {count}", file=str(path),
                        record=f"frame index {n}", field=field)


def _fail(err: Exception) -> NoReturn:
    from rich.console import Console

    Console(stderr=True).print(f"[red]error:[/red] {err}", highlight=False)
    raise typer.Exit(code=1)


def _write_json(out: Path, payload: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2))


def _fmt(v: Any, digits: int = 2) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.{digits}f}"


@evaluate_app.command("pckh")
def pckh(
    gt: Annotated[Path, typer.Option("--gt", help="MPII ground truth: mpii_gt_val.mat, or the mmpose json list "
                                                   "(joints / joints_vis, 1-based).")],
    results: Annotated[Path, typer.Option("--results", help="Predictions (N,16,2|3) as .npy/.npz/.json/.mat "
                                                             "(key or variable 'preds').")],
    headboxes: Annotated[Path | None, typer.Option(
        "--headboxes", help="Head boxes for a json GT: .mat with headboxes_src, or json (N,4)/(N,2,2) or "
                            "{'headboxes': ...}.")] = None,
    thr: Annotated[float, typer.Option("--thr", help="PCKh threshold (fraction of the head size).")] = 0.5,
    one_based: Annotated[bool, typer.Option(
        "--one-based/--zero-based", help="Predictions are already 1-based (e.g. HRNet's pred.mat); by default "
                                         "1 is added to 0-based predictions.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Use '<' (mmpose 1.x) instead of the official '<='.")
                      ] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Write the full result as JSON here.")] = None,
) -> None:
    """MPII PCKh (official protocol: SC_BIAS 0.6 head size, jnt_missing mask, pelvis/thorax out of the Mean)."""
    from rich.console import Console
    from rich.table import Table

    from humanvision.errors import DataError
    from humanvision.metrics.pck import mpii_pckh, read_mpii_gt

    try:
        truth = read_mpii_gt(gt, headboxes)
        pred = _load_array(results, "preds")
        if pred.ndim != 3 or pred.shape[1:2] != (16,) or pred.shape[2] not in (2, 3):
            raise DataError(f"expected (N, 16, 2|3), got {pred.shape}", file=str(results), field="preds")
        if len(pred) != len(truth):
            raise DataError(f"{len(pred)} predictions for {len(truth)} ground-truth persons (same order needed)",
                            file=str(results))
        pred = pred[..., :2] + (0.0 if one_based else 1.0)
        res = mpii_pckh(pred, truth.joints, truth.headboxes, truth.visible, thr=thr, inclusive=not strict)
    except DataError as e:
        _fail(e)

    table = Table(title=f"MPII PCKh@{thr:g}", caption=f"{res.num_samples} persons, {res.count} joints in Mean")
    table.add_column("joints")
    table.add_column("PCKh", justify="right")
    for name, value in res.groups.items():
        table.add_row(f"[bold]{name}[/bold]" if name == "Mean" else name, _fmt(value))
    table.add_row("Mean@0.1", _fmt(res.mean_at_0_1))
    table.add_row("AUC (0..0.5)", _fmt(res.auc))
    Console().print(table)
    if out is not None:
        _write_json(out, {"metric": "mpii_pckh", "gt": str(gt), "results": str(results),
                          "one_based_predictions": one_based, "inclusive": not strict, **res.to_dict()})


_SKELETON_HELP = ("Joint order of both files; it sets the root joint and names the per-joint table. Default "
                  "h36m17 = h36m17_lt, the learnable-triangulation / ContextPose order (pelvis at index 6); "
                  "h36m17_vp = h36m17_mmpose is the VideoPose3D / MMPose order (pelvis at 0); also mpii16, "
                  "mpi_inf_3dhp17 or a skeleton YAML.")


@evaluate_app.command("mpjpe")
def mpjpe(
    gt: Annotated[Path, typer.Option("--gt", help="Ground-truth 3D joints (N,J,3) as .npy/.npz/.json (key 'gt').")],
    pred: Annotated[Path, typer.Option("--pred", help="Predicted 3D joints (N,J,3) (key 'pred').")],
    root: Annotated[int | None, typer.Option(
        "--root", help="Index of the root joint subtracted from both; default: the --skeleton's root.")
                    ] = None,
    absolute: Annotated[bool, typer.Option("--absolute", help="Absolute MPJPE (no root subtraction).")] = False,
    actions: Annotated[Path | None, typer.Option(
        "--actions", help="JSON: a list of N action names, or {'actions': [...], 'subjects': [...]}; trials "
                          "X-1/X-2 are merged.")] = None,
    procrustes: Annotated[bool, typer.Option("--procrustes", help="P-MPJPE (similarity Procrustes alignment).")
                          ] = False,
    scale: Annotated[bool, typer.Option("--scale", help="N-MPJPE (root-relative, scale-only alignment).")] = False,
    skeleton: Annotated[str, typer.Option("--skeleton", help=_SKELETON_HELP)] = "h36m17",
    out: Annotated[Path | None, typer.Option("--out", help="Write the full result as JSON here.")] = None,
) -> None:
    """MPJPE / P-MPJPE / N-MPJPE with per-action (frame-weighted Average) and per-joint tables.

    Both files must be in the --skeleton joint order: the default h36m17 is the learnable-triangulation order
    (pelvis at index 6), not the VideoPose3D / MMPose one (pelvis at 0, --skeleton h36m17_vp). The output
    names the root joint (index and name) of the root-relative numbers.
    """
    from rich.console import Console
    from rich.table import Table

    from humanvision.errors import DataError
    from humanvision.metrics.pose3d import evaluate_mpjpe
    from humanvision.skeletons import SkeletonError, get_skeleton

    try:
        if procrustes and scale:
            raise DataError("choose one of --procrustes and --scale", field="align")
        g, p = _load_array(gt, "gt"), _load_array(pred, "pred")
        for arr, path in ((g, gt), (p, pred)):
            if arr.ndim != 3 or arr.shape[2] != 3:
                raise DataError(f"expected (N, J, 3), got {arr.shape}", file=str(path))
        if g.shape != p.shape:
            raise DataError(f"shape mismatch: {pred} has shape {p.shape} but {gt} has shape {g.shape} "
                            "(the same frames and joints are needed)")
        try:
            sk = get_skeleton(skeleton)
        except SkeletonError as e:
            raise DataError(str(e), field="skeleton") from None
        if sk.num_joints != g.shape[1]:
            raise DataError(f"skeleton {sk.name} has {sk.num_joints} joints but {gt} has {g.shape[1]}; pass "
                            "--skeleton with the files' joint order", field="skeleton")
        if root is None and not (absolute or procrustes):
            if sk.root is None:
                raise DataError(f"skeleton {sk.name} defines no root joint; pass --root INDEX or --absolute",
                                field="root")
            root = sk.root
        _check_finite_poses(p, pred, "pred", sk.joints)
        _check_finite_poses(g, gt, "gt", sk.joints)
        acts = subjects = None
        if actions is not None:
            if not actions.is_file():
                raise DataError("file not found", file=str(actions))
            try:
                meta = json.loads(actions.read_text())
            except json.JSONDecodeError as e:
                raise DataError(f"not valid JSON ({e})", file=str(actions)) from None
            acts, subjects = (meta.get("actions"), meta.get("subjects")) if isinstance(meta, dict) else (meta, None)
            if not isinstance(acts, list) or len(acts) != len(g):
                raise DataError(f"expected a list of {len(g)} action names", file=str(actions), field="actions")
            if subjects is not None and (not isinstance(subjects, list) or len(subjects) != len(g)):
                raise DataError(f"expected a list of {len(g)} subjects", file=str(actions), field="subjects")
        align = "procrustes" if procrustes else "scale" if scale else "none"
        res = evaluate_mpjpe(p, g, root=None if absolute else root, align=align, actions=acts, subjects=subjects,
                             joint_names=sk.joints)
    except DataError as e:
        _fail(e)

    console = Console()
    caption = f"{res.count} samples, {res.num_joints} joints in the {sk.name} order"
    table = Table(title=res.protocol, caption=caption)
    table.add_column("group")
    table.add_column("MPJPE", justify="right")
    table.add_column("samples", justify="right")
    for name, v in res.per_action.items():
        table.add_row(name, _fmt(v["mpjpe"]), str(v["count"]))
    for name, v in res.per_subject.items():
        table.add_row(f"subject {name}", _fmt(v["mpjpe"]), str(v["count"]))
    if res.action_mean is not None:
        table.add_row("mean of actions", _fmt(res.action_mean), str(res.count))
    table.add_row("[bold]Average (frame-weighted)[/bold]", f"[bold]{_fmt(res.mpjpe)}[/bold]", str(res.count))
    console.print(table)
    joints = Table(title="per joint")
    joints.add_column("joint")
    joints.add_column("MPJPE", justify="right")
    for name, v in res.per_joint.items():
        joints.add_row(name, _fmt(v))
    console.print(joints)
    if out is not None:
        _write_json(out, {"metric": "mpjpe", "gt": str(gt), "pred": str(pred), "skeleton": sk.name,
                          **res.to_dict()})
