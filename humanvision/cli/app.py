"""The root typer application; each ``humanvision.cli.<command>`` module attaches its commands to it."""

import typer

app = typer.Typer(
    name="humanvision",
    help="Human-centric perception on PyTorch 2.x: pose (2D/3D), pre-training, parsing, re-id and their metrics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

evaluate_app = typer.Typer(
    help="Evaluate result files from any tool against ground truth (COCO AP, MPII PCKh, MPJPE, ...).",
    no_args_is_help=True,
)
app.add_typer(evaluate_app, name="evaluate")


@app.callback()
def _root() -> None:
    """humanvision: one CLI for training, evaluating, synthesising and inspecting human-centric models."""
