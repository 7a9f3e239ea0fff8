"""Training output on rank 0: a JSON-lines log, TensorBoard scalars and a rich progress bar.

``<output_dir>/log.jsonl`` gets one object per logged step, ``{"kind": "train" | "eval", "step", "epoch", ...}``
(train lines carry the mean loss terms since the previous line, ``lr``, ``images_per_s`` and ``grad_norm`` when
clipping). On resume the lines and TensorBoard events after the resumed step are dropped, so the log of a resumed
run reads like the log of an uninterrupted one. TensorBoard is skipped silently when it is not installed; the
progress bar only shows on a terminal.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["TrainLogger", "read_log"]


def read_log(path: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The records of a ``log.jsonl`` file (a run directory or the file itself), optionally of one ``kind``."""
    path = Path(path)
    if path.is_dir():
        path = path / "log.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if kind is None or r.get("kind") == kind]


class TrainLogger:
    """Writes logs on the main process; every method is a no-op elsewhere (``enabled=False``)."""

    def __init__(self, output_dir: str | Path, *, enabled: bool = True, progress: bool = True,
                 tensorboard: bool = True, resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.path = Path(output_dir) / "log.jsonl"
        self.tb = None
        self.progress = None
        self.echo = progress and not sys.stdout.isatty()  # plain lines for batch-job logs
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_log(self.path) if r.get("step", 0) <= resume_step]
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, self.path)
        elif resume_step is None:
            self.path.write_text("")
        self.file = open(self.path, "a")  # noqa: SIM115 (open for the logger's lifetime, closed in close())
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional dependency
                pass
            else:
                self.tb = SummaryWriter(str(Path(output_dir) / "tb"), purge_step=resume_step)
        if progress and sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
            self.progress.start()
            self.task = self.progress.add_task("train", total=None, info="")

    def start(self, total_steps: int, completed: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, total=total_steps, completed=completed)

    def advance(self, description: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, description=description)

    def log(self, kind: str, step: int, epoch: int, scalars: dict[str, float]) -> None:
        """Append one record and the matching TensorBoard scalars (``<kind>/<name>``)."""
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, "epoch": epoch, "time": round(time.time(), 3), **scalars}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for name, value in scalars.items():
                self.tb.add_scalar(f"{kind}/{name}", value, step)
        if kind == "train":
            info = f"loss {scalars['loss']:.4g}  lr {scalars['lr']:.3g}  {scalars['images_per_s']:.0f} img/s"
            if self.progress is not None:
                self.progress.update(self.task, info=info)
            elif self.echo:
                print(f"epoch {epoch} step {step}: {info}", flush=True)

    def print(self, message: str) -> None:
        if not self.enabled:
            return
        if self.progress is not None:
            self.progress.console.print(message)
        else:
            print(message, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.progress is not None:
            self.progress.stop()
        if self.tb is not None:
            self.tb.close()
        self.file.close()
