"""The model registry: the only registry in humanvision, for model entry points.

An entry point is a plain function ``def vitpose_base(skeleton="coco17", **kwargs) -> ViTPose`` decorated with
:func:`register_model`; it is recorded under its ``__name__``, with the model class it builds (its return
annotation, or ``register_model(model_cls=...)``). :func:`create_model` looks the name up, checks the keyword
arguments (:func:`check_model_args`), builds the model and optionally loads a local weights file (never
downloads). Everything else in the library is imported by name, not looked up by string.

>>> from humanvision.models import create_model, list_models
>>> list_models("vitpose_b*")
['vitpose_base', 'vitpose_base_simple']
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import inspect
import sys
import typing
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from humanvision.errors import ConfigError

__all__ = [
    "check_model_args", "check_model_choice", "create_model", "is_model", "list_models", "model_entrypoint",
    "register_model",
]

_model_entrypoints: dict[str, Callable[..., Any]] = {}
_model_to_module: dict[str, str] = {}
_model_classes: dict[str, type | None] = {}


def _return_class(fn: Callable[..., Any]) -> type | None:
    """The class named by ``fn``'s return annotation (``-> ViTPose``), or None when there is none."""
    try:
        ret = typing.get_type_hints(fn).get("return")
    except (NameError, TypeError):  # an annotation that does not resolve in the entry point's module
        return None
    return ret if inspect.isclass(ret) else None


def register_model(fn: Callable[..., Any] | None = None, *, model_cls: type | None = None) -> Any:
    """Record ``fn`` as a model entry point under ``fn.__name__`` and add it to its module's ``__all__``.

    ``model_cls`` is the class the entry point builds, whose constructor receives the entry point's
    ``**kwargs`` (:func:`check_model_args` reads its parameters); default: the entry point's return
    annotation. Use as ``@register_model`` or ``@register_model(model_cls=MyModel)``. Re-registering a name
    replaces the old entry point with a warning (as timm does).
    """
    if fn is None:
        return functools.partial(register_model, model_cls=model_cls)
    name = fn.__name__
    module = sys.modules[fn.__module__]
    if hasattr(module, "__all__") and name not in module.__all__:
        module.__all__.append(name)
    if name in _model_entrypoints:
        warnings.warn(f"model entry point {name!r} re-registered (was in {_model_to_module[name]})", stacklevel=2)
    _model_entrypoints[name] = fn
    _model_to_module[name] = fn.__module__
    _model_classes[name] = model_cls if model_cls is not None else _return_class(fn)
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


def _named_params(fn: Callable[..., Any]) -> tuple[list[str], bool]:
    """Keyword-passable parameter names of ``fn`` and whether it also takes ``**kwargs``."""
    params = inspect.signature(fn).parameters.values()
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def check_model_choice(name: str, skeleton: str, *, name_key: str = "model.name",
                       skeleton_key: str = "model.skeleton") -> None:
    """Raise a ConfigError naming ``name_key`` / ``skeleton_key`` when ``name`` is not a registered model or
    ``skeleton`` not a known joint set (recipes call it when they load, before any work)."""
    from humanvision.skeletons import SkeletonError, get_skeleton

    try:
        get_skeleton(skeleton)
    except SkeletonError as e:
        raise ConfigError(f"{skeleton_key}: {e}") from None
    try:
        model_entrypoint(name)
    except ConfigError as e:
        raise ConfigError(f"{name_key}: {e}") from None


def check_model_args(name: str, args: Mapping[str, Any]) -> None:
    """Raise a ConfigError naming ``model.args.<key>`` for a key of ``args`` that the entry point ``name``
    does not accept, with the closest accepted name and the full list.

    Accepted: the entry point's named parameters and, since it forwards ``**kwargs`` to the constructor of its
    model class (see :func:`register_model`), that constructor's parameters. ``skeleton`` is not a model
    argument: it is :func:`create_model`'s own (``model.skeleton`` in a recipe). An entry point that takes
    ``**kwargs`` for an unknown class is not checked. For example ``check_model_args("vitpose_small",
    {"drop_path_rat": 0.1})`` raises ``model.args.drop_path_rat: not an argument of vitpose_small (did you
    mean drop_path_rate?); accepted: input_size, patch_size, ...``.
    """
    accepted, open_ = _named_params(model_entrypoint(name))
    cls = _model_classes.get(name)
    if open_ and cls is not None:
        cls_names, open_ = _named_params(cls)
        accepted += [n for n in cls_names if n not in accepted]
    if "skeleton" in args:
        raise ConfigError("model.args.skeleton: the skeleton is set by model.skeleton "
                          "(create_model's skeleton=)")
    if open_:
        return
    accepted = [n for n in accepted if n != "skeleton"]
    for key in args:
        if key not in accepted:
            close = difflib.get_close_matches(str(key), accepted, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"model.args.{key}: not an argument of {name}{hint}; "
                              f"accepted: {', '.join(accepted)}")


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
    check_model_args(name, kwargs)
    model = model_entrypoint(name)(skeleton=skeleton, **kwargs)
    if weights is not None:
        from humanvision.models.weights import load_weights

        load_weights(model, weights, strict=strict)
    return model
