"""The model registry: the only registry in humanvision, for model entry points.

An entry point is a plain function ``def vitpose_base(skeleton="coco17", **kwargs) -> nn.Module`` decorated with
:func:`register_model`; it is recorded under its ``__name__``. :func:`create_model` looks the name up, builds the
model and optionally loads a local weights file (never downloads). Everything else in the library is imported by
name, not looked up by string.

>>> from humanvision.models import create_model, list_models
>>> list_models("vitpose_b*")
['vitpose_base', 'vitpose_base_simple']
"""

from __future__ import annotations

import difflib
import fnmatch
import sys
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from humanvision.errors import ConfigError

__all__ = ["create_model", "is_model", "list_models", "model_entrypoint", "register_model"]

_model_entrypoints: dict[str, Callable[..., Any]] = {}
_model_to_module: dict[str, str] = {}


def register_model(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Record ``fn`` as a model entry point under ``fn.__name__`` and add it to its module's ``__all__``.

    Re-registering a name replaces the old entry point with a warning (as timm does).
    """
    name = fn.__name__
    module = sys.modules[fn.__module__]
    if hasattr(module, "__all__") and name not in module.__all__:
        module.__all__.append(name)
    if name in _model_entrypoints:
        warnings.warn(f"model entry point {name!r} re-registered (was in {_model_to_module[name]})", stacklevel=2)
    _model_entrypoints[name] = fn
    _model_to_module[name] = fn.__module__
    return fn


def list_models(pattern: str | Iterable[str] | None = None, exclude: str | Iterable[str] | None = None
                ) -> list[str]:
    """Sorted names of the registered models matching any glob in ``pattern`` and none in ``exclude``."""
    names = sorted(_model_entrypoints)
    if pattern is not None:
        pats = [pattern] if isinstance(pattern, str) else list(pattern)
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in pats)]
    if exclude is not None:
        excl = [exclude] if isinstance(exclude, str) else list(exclude)
        names = [n for n in names if not any(fnmatch.fnmatchcase(n, p) for p in excl)]
    return names


def is_model(name: str) -> bool:
    """True if ``name`` is a registered model entry point."""
    return name in _model_entrypoints


def model_entrypoint(name: str) -> Callable[..., Any]:
    """The entry-point function registered as ``name``; an unknown name raises a ConfigError naming close matches."""
    try:
        return _model_entrypoints[name]
    except KeyError:
        close = difflib.get_close_matches(name, _model_entrypoints, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known models: {', '.join(list_models())}"
        raise ConfigError(f"unknown model {name!r}{hint}") from None


def create_model(name: str, skeleton: str = "coco17", weights: str | Path | None = None, *,
                 strict: bool = True, **kwargs: Any) -> Any:
    """Build the registered model ``name`` for ``skeleton`` and optionally load a local weights file.

    Args:
        name: a registered entry point (see :func:`list_models`).
        skeleton: joint-set name (or a ``Skeleton``); sets the number of output heatmaps.
        weights: a local file: our ``.safetensors`` (with its ``.json`` sidecar) or an official ViTPose / MMPose
            ``.pth`` checkpoint (see :mod:`humanvision.models.weights`). Nothing is ever downloaded.
        strict: passed to :func:`humanvision.models.weights.load_weights`.
        **kwargs: forwarded to the entry point (``input_size=(w, h)``, ``drop_path_rate``, ``depth`` ...).

    The entry point sets ``model_name`` and ``model_args`` (the keyword arguments that rebuild the model),
    which the weights sidecar records.
    """
    model = model_entrypoint(name)(skeleton=skeleton, **kwargs)
    if weights is not None:
        from humanvision.models.weights import load_weights

        load_weights(model, weights, strict=strict)
    return model
