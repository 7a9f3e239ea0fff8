"""``humanvision env``: what this installation runs on."""

from __future__ import annotations

import importlib.metadata as md
import json
import platform

import typer

from humanvision.cli.app import app

EXTRAS = {
    "export": ["onnx", "onnxruntime"],
    "3d": ["h5py", "cdflib"],
    "viz": ["matplotlib"],
    "train": ["tensorboard"],
    "dev": ["pytest", "pycocotools", "hypothesis", "ruff"],
}


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def environment_report() -> dict:
    """Versions of the stack, the devices torch sees and which optional extras are installed."""
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    import humanvision

    return {
        "humanvision": humanvision.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torchvision": _version("torchvision"),
        "timm": _version("timm"),
        "numpy": _version("numpy"),
        "opencv": _version("opencv-python-headless") or _version("opencv-python"),
        "cpu_threads": torch.get_num_threads(),
        "devices": devices,
        "extras": {
            extra: {pkg: _version(pkg) for pkg in pkgs} for extra, pkgs in EXTRAS.items()
        },
    }


@app.command()
def env(as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """Show versions of Python, torch, timm, numpy, the devices torch sees and the installed extras."""
    report = environment_report()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="humanvision environment", show_header=False)
    table.add_column("item", style="bold")
    table.add_column("value")
    for key, value in report.items():
        if key == "extras":
            continue
        table.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    for extra, pkgs in report["extras"].items():
        ok = all(v is not None for v in pkgs.values())
        desc = ", ".join(f"{p} {v or 'missing'}" for p, v in pkgs.items())
        table.add_row(escape(f"extra [{extra}]"), ("[green]installed[/] " if ok else "[yellow]incomplete[/] ") + desc)
    Console().print(table)
