"""Crash-safe checkpoint directories: safetensors weights + a trainer state for exact resumption.

A checkpoint is a directory (``<output_dir>/last``, ``<output_dir>/best``) holding

* ``model.safetensors``  model weights (``state_dict`` of the unwrapped model, CPU tensors);
* ``ema.safetensors``    EMA weights, when training with EMA;
* ``trainer_state.pt``   optimiser, GradScaler, RNG states, epoch / step / position in the epoch, best metric
  (plain tensors and containers: loads with ``torch.load(weights_only=True)``);
* ``meta.json``          human-readable summary (step, epoch, metrics, config).

Writing is crash-safe: every file goes to ``<name>.tmp/`` and is fsync'ed, then ``<name>`` is renamed to
``<name>.old``, ``<name>.tmp`` to ``<name>``, and ``<name>.old`` is removed. A kill at any point leaves either the
new or the previous complete directory; :func:`resolve_checkpoint` falls back to ``<name>.old`` when a kill fell
between the two renames. No reader ever sees a half-written file.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

__all__ = [
    "EMA_FILE",
    "META_FILE",
    "MODEL_FILE",
    "STATE_FILE",
    "Checkpoint",
    "load_checkpoint",
    "load_state_checked",
    "load_state_strict",
    "load_weights",
    "read_weights",
    "resolve_checkpoint",
    "save_checkpoint",
    "weights_file",
]

MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "trainer_state.pt"
META_FILE = "meta.json"


@dataclass
class Checkpoint:
    path: Path
    model_state: dict[str, torch.Tensor]
    ema_state: dict[str, torch.Tensor] | None = None
    trainer_state: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _safetensors_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """Serialise a state dict; tensors sharing storage (tied weights) are cloned, as safetensors requires."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for k, v in state.items():
        v = v.detach().cpu().contiguous()
        key = (v.untyped_storage().data_ptr(), v.untyped_storage().nbytes())
        if v.numel() and key in seen:
            v = v.clone()
        seen.add(key)
        out[k] = v
    return safetensors.torch.save(out, metadata={"format": "pt"})


def save_checkpoint(path: str | Path, model_state: dict[str, torch.Tensor], *,
                    ema_state: dict[str, torch.Tensor] | None = None, trainer_state: dict[str, Any] | None = None,
                    meta: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint directory at ``path`` crash-safely (see the module docstring); returns ``path``."""
    path = Path(path)
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _write_file(tmp / MODEL_FILE, _safetensors_bytes(model_state))
    if ema_state is not None:
        _write_file(tmp / EMA_FILE, _safetensors_bytes(ema_state))
    if trainer_state is not None:
        buffer = io.BytesIO()
        torch.save(trainer_state, buffer)
        _write_file(tmp / STATE_FILE, buffer.getvalue())
    _write_file(tmp / META_FILE, json.dumps(meta or {}, indent=2, default=str).encode())
    _fsync_dir(tmp)
    if path.exists():
        # a stale .old next to a complete `path` is left over from a kill after the swap: drop it first
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """The complete checkpoint directory for ``path`` (``path`` itself, or ``path.old`` after an interrupted swap)."""
    path = Path(path)
    if (path / MODEL_FILE).is_file():
        return path
    old = path.with_name(path.name + ".old")
    if not path.exists() and (old / MODEL_FILE).is_file():
        return old
    raise FileNotFoundError(f"{path}: not a checkpoint directory (no {MODEL_FILE})")


def weights_file(path: str | Path, key: str = "weights") -> Path:
    """The weights file a user means by ``path``: a run folder (its ``best/``, else ``last/``), a checkpoint folder
    (or its ``.old`` twin after an interrupted save), or a file. A ConfigError names ``key`` (the recipe key or
    option the path came from) when there is none."""
    from humanvision.errors import ConfigError

    path = Path(path)
    if path.is_dir():
        for cand in (path / "best", path / "last", path):
            try:
                return resolve_checkpoint(cand) / MODEL_FILE
            except FileNotFoundError:
                continue
        raise ConfigError(f"{key}: no {MODEL_FILE} under {path} (looked in best/, last/ and the folder)")
    if not path.is_file():
        raise ConfigError(f"{key}: file not found: {path}")
    return path


def read_weights(path: str | Path, key: str = "weights") -> tuple[dict[str, torch.Tensor], str]:
    """``(state dict, file)`` of :func:`weights_file` ``(path, key)``: ours (safetensors) or a ``.pth`` read
    without executing code (:func:`humanvision.models.weights.read_checkpoint`)."""
    from humanvision.models.weights import read_checkpoint

    file = weights_file(path, key)
    return read_checkpoint(file), str(file)


def load_state_checked(module: torch.nn.Module, state: dict[str, torch.Tensor], file: str,
                       may_miss: tuple[str, ...] = ()) -> None:
    """Load ``state`` (read from ``file``) into ``module``: every key of the module must be there (except names
    ending in ``may_miss``), no other key, every shape equal; else a DataError naming the key and the file."""
    from humanvision.errors import DataError

    own = module.state_dict()
    missing = sorted(k for k in set(own) - set(state) if not k.endswith(may_miss))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise DataError(f"not a checkpoint of this model: missing keys {missing[:4]}, unexpected {unexpected[:4]}",
                        file=file, field=(missing or unexpected)[0])
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise DataError(f"shape {tuple(v.shape)} does not match the model's {tuple(own[k].shape)}", file=file,
                            field=k)
    module.load_state_dict(state, strict=not may_miss)


def load_state_strict(module: torch.nn.Module, path: str | Path, key: str = "weights") -> None:
    """Load a trained method (a run folder, checkpoint folder or weights file) into ``module`` strictly: a missing,
    unexpected or differently shaped key is a DataError naming the key and the file."""
    load_state_checked(module, *read_weights(path, key))


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Model weights from a ``.safetensors`` file or a checkpoint directory (its ``model.safetensors``)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = resolve_checkpoint(path) / MODEL_FILE
    return safetensors.torch.load_file(path, device=str(device))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint directory written by :func:`save_checkpoint` (tensors land on ``map_location``)."""
    path = resolve_checkpoint(path)
    device = str(map_location)
    ema = safetensors.torch.load_file(path / EMA_FILE, device=device) if (path / EMA_FILE).is_file() else None
    state = None
    if (path / STATE_FILE).is_file():
        state = torch.load(path / STATE_FILE, map_location=map_location, weights_only=True)
    meta = json.loads((path / META_FILE).read_text()) if (path / META_FILE).is_file() else {}
    return Checkpoint(path, safetensors.torch.load_file(path / MODEL_FILE, device=device), ema, state, meta)
