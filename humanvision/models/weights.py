"""Saving and loading model weights: our safetensors files, official ViTPose / MMPose checkpoints, backbone inits.

**Our format.** ``save_weights(model, "run/model.safetensors")`` writes the ``state_dict`` as safetensors and a JSON
sidecar ``run/model.json`` (also embedded in the safetensors header under ``"humanvision"``)::

    {"format": "humanvision-weights", "version": 1, "model": "vitpose_base",
     "model_args": {"skeleton": "coco17", ...}, "default_cfg": {...input_size, heatmap_size, udp, codec...}}

:func:`load_model` rebuilds the model from the sidecar; :func:`load_weights` loads into an existing model and
refuses weights recorded for another skeleton.

**Official ViTPose checkpoints** (mmcv ``{'meta', 'state_dict', 'optimizer'}``; ViTAE-Transformer/ViTPose, mmpose
0.x fork) are recognised by their ``keypoint_head.`` / ``backbone.last_norm`` keys and mapped as follows
(``i`` = block index)::

    official (0.x)                                    humanvision
    backbone.patch_embed.proj.{weight,bias}           backbone.patch_embed.proj.{weight,bias}
    backbone.pos_embed (1, 1+N, D)                    backbone.pos_embed (1, N, D) = pos[:, 1:] + pos[:, :1]
    backbone.blocks.i.{norm1,attn.qkv,attn.proj,      backbone.blocks.i.(same names)
                       norm2,mlp.fc1,mlp.fc2}.*
    backbone.last_norm.*                              backbone.norm.*
    keypoint_head.deconv_layers.{0,1,3,4}.*           head.deconv_layers.{0,1,3,4}.*   (classic decoder)
    keypoint_head.final_layer.*                       head.final_layer.*

MMPose 1.x checkpoints (``backbone.layers.i.*``, ``head.*``) use mmpretrain ViT names::

    backbone.patch_embed.projection.*                 backbone.patch_embed.proj.*
    backbone.pos_embed (1, N, D)                      backbone.pos_embed (1, N, D)   (no extra slot, see below)
    backbone.layers.i.ln1.* / ln2.*                   backbone.blocks.i.norm1.* / norm2.*
    backbone.layers.i.attn.{qkv,proj}.*               backbone.blocks.i.attn.{qkv,proj}.*
    backbone.layers.i.ffn.layers.0.0.* / layers.1.*   backbone.blocks.i.mlp.fc1.* / fc2.*
    backbone.ln1.*                                    backbone.norm.*
    head.{deconv_layers,final_layer}.*                head.{deconv_layers,final_layer}.*

``cls_token`` keys are dropped. **Position-embedding slots** differ by layout (``N`` = patch tokens, row-major
``(H/16, W/16)`` grid):

* official 0.x: ``(1, 1 + N, D)``; the official ViT adds slot 0 (the former cls position) to every token, so
  folding it into the patch slots is exact (dropping it would not be);
* MMPose 1.x: mmpretrain ``VisionTransformer(with_cls_token=False)`` has ``num_extra_tokens = 0``, so
  ``(1, N, D)`` with no extra slot. The brief (pose2d.md 2.8) is silent on a 1.x checkpoint that has a
  ``backbone.cls_token``; we follow mmpretrain: its ``(1, 1 + N, D)`` slot 0 belongs to the cls token, and a
  ``with_cls_token=False`` ViT drops it when it loads such weights;
* timm / MAE backbone inits (:func:`load_backbone_weights`): ``(1, 1 + N, D)`` if the file has a ``cls_token``
  (slot 0 folded, as ViTPose does with MAE weights), else ``(1, N, D)``.

If the checkpoint's token grid differs from the model's (another input size), the 2-D embedding grid is resampled
bicubically; the source grid is inferred from the token count (square, else the factorisation closest to the
model's aspect ratio; an inferred grid more than 2x off the model's aspect ratio is refused) unless ``src_grid`` is
given. :func:`to_official_vitpose` is the inverse mapping (slot 0 = zeros).

**Backbone initialisation** (:func:`load_backbone_weights`): a timm-layout classification or MAE encoder state
dict (``{'model': ...}`` or bare) is loaded into ``model.backbone``; classifier / decoder / ``cls_token`` /
``mask_token`` keys are ignored, as is the MAE ``norm`` (ViTPose starts ``last_norm`` at (1, 0)), the pos-embed
is folded and resampled as above, and a 14x14 patch kernel is zero-padded to 16x16 (ViT-H, ``patch_padding='pad'``).

Nothing here downloads; ``.pth`` files are read with ``torch.load(weights_only=True)`` unless ``allow_pickle``.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from timm.layers import resample_abs_pos_embed
from torch import nn

from humanvision.errors import DataError

__all__ = [
    "LoadReport", "convert_vitpose_checkpoint", "load_backbone_weights", "load_model", "load_weights",
    "read_checkpoint", "read_sidecar", "save_weights", "to_official_vitpose",
]

FORMAT = "humanvision-weights"
VERSION = 1


@dataclass
class LoadReport:
    """What a load did: the detected ``layout``, keys ``missing`` from / ``unexpected`` by the model, keys
    ``dropped`` on purpose (cls token, classifier ...) and keys ``resized`` (pos-embed, patch kernel)."""

    layout: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)


def _short(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f" ... (+{len(keys) - n} more)" if len(keys) > n else "")


def sidecar_path(path: str | Path) -> Path:
    """``x/model.safetensors`` -> ``x/model.json``."""
    return Path(path).with_suffix(".json")


def save_weights(model: nn.Module, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.state_dict()`` to ``path`` (.safetensors) plus the JSON sidecar; returns ``path``.

    ``extra`` (JSON-serialisable: epoch, metric ...) is stored in the sidecar under ``"extra"``.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: weights are saved as .safetensors")
    meta = {"format": FORMAT, "version": VERSION, "model": getattr(model, "model_name", ""),
            "model_args": getattr(model, "model_args", {}), "default_cfg": getattr(model, "default_cfg", {}),
            "extra": extra or {}}
    text = json.dumps(meta, indent=2, sort_keys=True, default=list)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"humanvision": text})
    sidecar_path(path).write_text(text + "\n")
    return path


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The metadata of a weights file: its JSON sidecar, else the copy in the safetensors header."""
    path = Path(path)
    side = sidecar_path(path)
    try:
        if side.is_file():
            meta = json.loads(side.read_text())
        else:
            with safe_open(str(path), framework="pt") as f:
                text = (f.metadata() or {}).get("humanvision")
            if text is None:
                raise DataError("no JSON sidecar and no 'humanvision' metadata in the file", file=str(path))
            meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON: {e}", file=str(side)) from None
    if meta.get("format") != FORMAT:
        raise DataError(f"not a humanvision weights sidecar (format={meta.get('format')!r})", file=str(side),
                        field="format")
    return meta


def read_checkpoint(path: str | Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The flat tensor state dict of a ``.safetensors`` or ``.pth``/``.pt``/``.bin`` checkpoint.

    Unwraps ``{'state_dict': ...}`` (mmcv), ``{'model': ...}`` (MAE / timm / DeiT), ``{'module': ...}`` and strips
    a DDP ``module.`` prefix.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("weights file not found", file=str(path))
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=not allow_pickle)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, ImportError) as e:
        raise DataError(f"cannot read checkpoint ({type(e).__name__}: {e}); if the file is trusted, pass "
                        "allow_pickle=True", file=str(path)) from None
    for key in ("state_dict", "model", "module"):
        if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    if not isinstance(ckpt, dict) or not ckpt:
        raise DataError("no state dict found (expected a dict of tensors, or one under 'state_dict'/'model')",
                        file=str(path))
    state = {k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


# -- ViTPose layouts ------------------------------------------------------------------------------------------
_MMPOSE1_RULES = [
    (r"^backbone\.patch_embed\.projection\.", "backbone.patch_embed.proj."),
    (r"^backbone\.layers\.(\d+)\.ln1\.", r"backbone.blocks.\1.norm1."),
    (r"^backbone\.layers\.(\d+)\.ln2\.", r"backbone.blocks.\1.norm2."),
    (r"^backbone\.layers\.(\d+)\.attn\.", r"backbone.blocks.\1.attn."),
    (r"^backbone\.layers\.(\d+)\.ffn\.layers\.0\.0\.", r"backbone.blocks.\1.mlp.fc1."),
    (r"^backbone\.layers\.(\d+)\.ffn\.layers\.1\.", r"backbone.blocks.\1.mlp.fc2."),
    (r"^backbone\.ln1\.", "backbone.norm."),
]


def detect_layout(state: dict[str, torch.Tensor]) -> str:
    """``"vitpose"`` (official 0.x), ``"mmpose1"`` (MMPose 1.x ViTPose) or ``"humanvision"``."""
    keys = list(state)
    if any(k.startswith(("keypoint_head.", "backbone.last_norm.")) for k in keys):
        return "vitpose"
    if any(k.startswith("backbone.layers.") and ".ln1." in k for k in keys) or "backbone.ln1.weight" in state:
        return "mmpose1"
    return "humanvision"


def _infer_grid(num_tokens: int, target: tuple[int, int]) -> tuple[int, int]:
    aspect = target[0] / target[1]
    pairs = [(h, num_tokens // h) for h in range(1, num_tokens + 1) if num_tokens % h == 0]
    return min(pairs, key=lambda p: abs(math.log(p[0] / p[1] / aspect)))


def convert_vitpose_checkpoint(state: dict[str, torch.Tensor], model: nn.Module,
                               src_grid: tuple[int, int] | None = None, file: str | None = None
                               ) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Map an official ViTPose (0.x) or MMPose 1.x state dict to this library's names (table in the module doc).

    Returns the converted state dict and a report with the layout, the dropped keys and the resized keys.
    Keys with no rule are kept unchanged (and reported as unexpected by the loader).
    """
    layout = detect_layout(state)
    report = LoadReport(layout=layout)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith(("cls_token", "mask_token")):
            report.dropped.append(key)
            continue
        new = key
        if layout == "vitpose":
            new = re.sub(r"^keypoint_head\.", "head.", new)
            new = re.sub(r"^backbone\.last_norm\.", "backbone.norm.", new)
        elif layout == "mmpose1":
            for pattern, repl in _MMPOSE1_RULES:
                new = re.sub(pattern, repl, new)
        out[new] = value
    if "backbone.pos_embed" in out and layout != "humanvision":
        # slot 0: the 0.x cls slot added to every token; mmpretrain's cls token's own slot; else none (module doc)
        slot0 = "fold" if layout == "vitpose" else "drop" if "backbone.cls_token" in state else None
        out["backbone.pos_embed"], resized = _fit_pos_embed(out["backbone.pos_embed"], model, src_grid, slot0,
                                                            file=file, field="backbone.pos_embed")
        if resized:
            report.resized.append("backbone.pos_embed")
    return out, report


def _fit_pos_embed(pos: torch.Tensor, model: nn.Module, src_grid: tuple[int, int] | None, slot0: str | None,
                   file: str | None, field: str) -> tuple[torch.Tensor, bool]:
    """The checkpoint's ``pos`` as the model's ``(1, rows * cols, D)`` patch-token embedding.

    ``slot0``: ``"fold"`` (add slot 0 to every token: ViTPose), ``"drop"`` (slot 0 is a cls token's: mmpretrain)
    or ``None`` (no extra slot). The patch slots are then resampled to the model's grid if it differs.
    Returns the embedding and whether it was resampled.
    """
    patch_embed = getattr(getattr(model, "backbone", None), "patch_embed", None)
    if getattr(patch_embed, "grid_size", None) is None or getattr(model.backbone, "pos_embed", None) is None:
        raise DataError(f"the checkpoint has a ViT position embedding but {type(model).__name__} has none",
                        file=file, field=field)
    if pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[1] < 1 + (slot0 is not None):
        raise DataError(f"expected a (1, tokens, D) position embedding, got {tuple(pos.shape)}", file=file,
                        field=field)
    if slot0 == "fold":
        pos = pos[:, 1:] + pos[:, :1]
    elif slot0 == "drop":
        pos = pos[:, 1:]
    grid = tuple(patch_embed.grid_size)
    old = tuple(src_grid) if src_grid is not None else _infer_grid(pos.shape[1], grid)
    if old[0] * old[1] != pos.shape[1]:
        raise DataError(f"{pos.shape[1]} patch tokens do not form a {old[0]}x{old[1]} grid", file=file, field=field)
    if src_grid is None and abs(math.log(old[0] / old[1] * grid[1] / grid[0])) > math.log(2):
        raise DataError(f"{pos.shape[1]} patch tokens give no plausible grid for the model's {grid[0]}x{grid[1]} "
                        f"(closest: {old[0]}x{old[1]}); pass src_grid=(rows, cols) if the file is right",
                        file=file, field=field)
    if old == grid:
        return pos, False
    return resample_abs_pos_embed(pos, new_size=list(grid), old_size=list(old), num_prefix_tokens=0,
                                  interpolation="bicubic", antialias=False), True


def to_official_vitpose(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict in the official ViTPose (0.x) layout (inverse of :func:`convert_vitpose_checkpoint`)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        new = re.sub(r"^head\.", "keypoint_head.", key)
        new = re.sub(r"^backbone\.norm\.", "backbone.last_norm.", new)
        if key == "backbone.pos_embed":
            value = torch.cat([torch.zeros_like(value[:, :1]), value], dim=1)
        out[new] = value.clone()
    return out


# -- loading ---------------------------------------------------------------------------------------------------
def _load_into(model: nn.Module, state: dict[str, torch.Tensor], report: LoadReport, strict: bool, file: str,
               prefix: str = "", expected_missing: set[str] | frozenset[str] = frozenset()) -> LoadReport:
    target = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(target[k].shape)}"
                  for k, v in state.items() if k in target and v.shape != target[k].shape]
    if mismatched:
        raise DataError(f"shape mismatch ({report.layout} layout): {_short(mismatched)}", file=file,
                        field=mismatched[0].split(":")[0])
    report.missing = sorted(set(target) - set(state))
    report.unexpected = sorted(set(state) - set(target))
    if strict and (report.missing or report.unexpected):
        parts = []
        if report.missing:
            parts.append(f"missing from the file: {_short(report.missing)}")
        if report.unexpected:
            parts.append(f"not in the model: {_short(report.unexpected)}")
        raise DataError(f"keys do not match the model ({report.layout} layout); " + "; ".join(parts), file=file,
                        field=(report.missing or report.unexpected)[0])
    surprising = [k for k in report.missing if k not in expected_missing]
    if surprising or report.unexpected:
        warnings.warn(f"{file}: {len(surprising)} missing and {len(report.unexpected)} unexpected keys "
                      f"(first missing: {surprising[:3]}, first unexpected: {report.unexpected[:3]})",
                      stacklevel=3)
    model.load_state_dict({k: v for k, v in state.items() if k in target}, strict=False)
    return report


def load_weights(model: nn.Module, path: str | Path, strict: bool = True, *, allow_pickle: bool = False,
                 src_grid: tuple[int, int] | None = None) -> LoadReport:
    """Load our safetensors file or an official ViTPose / MMPose checkpoint into ``model`` (layout auto-detected).

    Args:
        model: the model to fill (built for the same skeleton and decoder).
        path: ``.safetensors`` (ours) or ``.pth`` (official or ours).
        strict: raise a :class:`DataError` listing missing / unexpected keys; otherwise warn and load the rest.
        allow_pickle: read a ``.pth`` with full unpickling (only for trusted files).
        src_grid: the checkpoint's token grid (rows, cols) when it cannot be inferred from the token count.

    Shape mismatches always raise, naming the key (e.g. a 17-joint head loaded into a 16-joint model).
    """
    path = Path(path)
    if path.suffix == ".safetensors" and sidecar_path(path).is_file():
        meta = read_sidecar(path)
        want, have = meta.get("default_cfg", {}).get("skeleton"), getattr(model, "skeleton", None)
        if want and have and want != have:
            raise DataError(f"weights are for skeleton {want!r} but the model is built for {have!r}",
                            file=str(sidecar_path(path)), field="default_cfg.skeleton")
    state = read_checkpoint(path, allow_pickle=allow_pickle)
    if detect_layout(state) == "humanvision":
        report = LoadReport(layout="humanvision")
    else:
        state, report = convert_vitpose_checkpoint(state, model, src_grid, file=str(path))
    return _load_into(model, state, report, strict, str(path))


def load_model(path: str | Path, **overrides: Any) -> nn.Module:
    """Rebuild a model from a weights file's sidecar (``create_model(meta['model'], **model_args)``) and load it.

    ``overrides`` replace recorded model arguments (e.g. ``grad_checkpointing=True``).
    """
    from humanvision.models._registry import create_model

    meta = read_sidecar(path)
    if not meta.get("model"):
        raise DataError("sidecar names no model", file=str(sidecar_path(path)), field="model")
    args = {**meta.get("model_args", {}), **overrides}
    return create_model(meta["model"], weights=path, **args)


def load_backbone_weights(model: nn.Module, path: str | Path, *, allow_pickle: bool = False,
                          src_grid: tuple[int, int] | None = None) -> LoadReport:
    """Initialise ``model.backbone`` from a timm-layout classification / MAE encoder checkpoint.

    Every backbone parameter must be present except the final norm of a ViT (MAE's ``norm`` is not used, as in
    ViTPose); classifier heads, ``fc_norm``, ``decoder*`` and cls / mask tokens are dropped and reported.
    """
    state = read_checkpoint(path, allow_pickle=allow_pickle)
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    report = LoadReport(layout="backbone")
    own = model.backbone.state_dict()
    is_vit = "pos_embed" in own and hasattr(model.backbone, "blocks")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        skip = key.endswith(("cls_token", "mask_token")) or key.startswith(
            ("head.", "fc.", "classifier.", "fc_norm.", "decoder", "last_linear."))
        if is_vit and key.startswith("norm."):
            skip = True
        if skip or key not in own:
            (report.dropped if skip else report.unexpected).append(key)
            continue
        if is_vit and key == "pos_embed":
            value, resized = _fit_pos_embed(value, model, src_grid, "fold" if "cls_token" in state else None,
                                            file=str(path), field=key)
            if resized or value.shape != own[key].shape:
                report.resized.append(key)
        if is_vit and key == "patch_embed.proj.weight" and value.shape[-2:] != own[key].shape[-2:]:
            ph, pw = own[key].shape[-2] - value.shape[-2], own[key].shape[-1] - value.shape[-1]
            if ph < 0 or pw < 0 or ph % 2 or pw % 2:
                raise DataError(f"patch kernel {tuple(value.shape[-2:])} cannot be zero-padded to "
                                f"{tuple(own[key].shape[-2:])}", file=str(path), field=key)
            value = F.pad(value, (pw // 2, pw // 2, ph // 2, ph // 2))
            report.resized.append(key)
        out["backbone." + key] = value
    prefixed = {"backbone." + k for k in own}
    optional = {"backbone.norm.weight", "backbone.norm.bias"} if is_vit else set()
    missing = sorted(prefixed - set(out) - optional)
    if missing:
        raise DataError(f"backbone keys missing from the file: {_short(missing)}", file=str(path), field=missing[0])
    unexpected = sorted(report.unexpected)
    report = _load_into(model, out, report, strict=False, file=str(path), prefix="backbone.",
                        expected_missing=optional)
    report.unexpected = unexpected  # keys of the file the backbone does not have (before the prefix)
    if unexpected:
        warnings.warn(f"{path}: {len(unexpected)} keys not in the backbone were ignored: {_short(unexpected, 3)}",
                      stacklevel=2)
    return report
