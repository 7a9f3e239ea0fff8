"""Flat, typed, validated configs: YAML -> dataclasses, with ``--set key=value`` overrides.

A recipe is a YAML mapping whose top-level keys are the fields of a dataclass (the *schema*); a field whose type is
itself a dataclass is a section (``train:``, ``model:``, ...). There is no inheritance and no interpolation: what is in
the file (plus the overrides) is the whole configuration.

Validation happens once, at load time, and every error names the offending key with its full dotted path:

- an unknown key (with the closest known keys suggested),
- a value of the wrong type (``train.lr: expected float, got str 'fast'``),
- a missing required key,
- a path field marked ``must_exist`` that points nowhere (``data.train_ann: file not found: ...``).

>>> from dataclasses import dataclass, field
>>> @dataclass
... class Train:
...     lr: float = 1e-3
...     epochs: int = 10
>>> @dataclass
... class Recipe:
...     name: str = "demo"
...     train: Train = field(default_factory=Train)
>>> cfg = load_config({"train": {"lr": 0.01}}, Recipe, overrides=["train.epochs=3"])
>>> cfg.train.lr, cfg.train.epochs
(0.01, 3)
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from humanvision.errors import ConfigError

__all__ = ["config_to_dict", "load_config", "must_exist", "parse_overrides", "recipe_mapping", "save_config"]

T = TypeVar("T")


def must_exist(default: Any = None, **kwargs) -> Any:
    """A dataclass field holding a path that must exist when set (``None`` means unset)."""
    return dataclasses.field(default=default, metadata={"must_exist": True}, **kwargs)


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["a.b=1", "c=[1, 2]"]`` -> ``{"a.b": 1, "c": [1, 2]}``; values are parsed as YAML scalars/lists."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. train.lr=0.001)")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            out[key] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key] = value
    return out


def _apply_override(data: dict, dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for p in parts[:-1]:
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {p!r} is not a section")
        node = child
    node[parts[-1]] = value


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(value: Any, tp: Any, key: str, field_meta: dict | None = None, unchecked: tuple[str, ...] = ()) -> Any:
    """Check ``value`` against the annotation ``tp``; convert where lossless (int -> float, str -> Path, list -> tuple)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:  # Optional[X]: report X's own error
            return _coerce(value, non_none[0], key, field_meta, unchecked)
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, field_meta, unchecked)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{key}: expected one of {list(get_args(tp))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a section (mapping) for {tp.__name__}, got {type(value).__name__}")
        return _build(tp, value, key + ".", unchecked)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected bool (true/false), got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected int, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
            return float(value)  # YAML 1.2 floats such as 3e-3, which PyYAML (YAML 1.1) leaves as strings
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected float, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected str, got {type(value).__name__} {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{key}: expected a path, got {type(value).__name__} {value!r}")
        path = Path(value)
        if field_meta and field_meta.get("must_exist") and not key.startswith(unchecked) and not path.exists():
            raise ConfigError(f"{key}: file not found: {path}")
        return path
    raise ConfigError(f"{key}: unsupported field type {_type_name(tp)}")


def _build(schema: type[T], data: dict, prefix: str = "", unchecked: tuple[str, ...] = ()) -> T:
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(str(k), list(fields), n=3)
        hint = f"; did you mean {', '.join(prefix + c for c in close)}?" if close else ""
        raise ConfigError(f"unknown key {prefix}{k}{hint} (known in this section: {', '.join(fields)})")
    hints = typing.get_type_hints(schema)
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], prefix + name, dict(f.metadata), unchecked)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {prefix}{name}")
    try:
        obj = schema(**kwargs)
    except ConfigError as e:  # a section's own check; it names its keys (``model.name: ...``)
        if prefix and str(e).startswith(prefix):
            raise
        raise ConfigError(f"{prefix.rstrip('.') or schema.__name__}: {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix.rstrip('.') or schema.__name__}: {e}") from None
    return obj


def recipe_mapping(source: Any) -> dict:
    """The top-level mapping of a recipe given as a dict or a YAML file, to tell the methods' recipes apart by their
    keys (``pct``, ``stage``, ``triangulation``); ``{}`` for anything else, including a file that cannot be read
    (:func:`load_config` then reports the problem)."""
    if isinstance(source, (str, Path)):
        try:
            source = yaml.safe_load(Path(source).read_text())
        except (OSError, yaml.YAMLError):
            return {}
    return source if isinstance(source, dict) else {}


def load_config(source: str | Path | dict, schema: type[T], overrides: list[str] | tuple[str, ...] = (),
                unchecked: tuple[str, ...] = ()) -> T:
    """Load a YAML recipe (a path or a mapping) into ``schema``, applying ``key=value`` overrides first.

    ``unchecked``: dotted keys (or prefixes such as ``"data."``) whose ``must_exist`` paths are not checked, for a
    command that does not use them (inference needs no training annotations); their types still are."""
    if isinstance(source, dict):
        data = dict(source)
        where = "<mapping>"
    else:
        path = Path(source)
        where = str(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a config must be a mapping of keys to values")
    data = _deepcopy(data)
    for key, value in parse_overrides(list(overrides)).items():
        _apply_override(data, key, value)
    try:
        return _build(schema, data, unchecked=tuple(unchecked))
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _deepcopy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deepcopy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deepcopy(v) for v in d]
    return d


def config_to_dict(cfg: Any, absolute: bool = False) -> Any:
    """A dataclass config as plain YAML/JSON-safe data (paths as strings, ``absolute``: resolved against the
    current folder; tuples as lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: config_to_dict(getattr(cfg, f.name), absolute) for f in dataclasses.fields(cfg) if f.init}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v, absolute) for v in cfg]
    if isinstance(cfg, dict):
        return {k: config_to_dict(v, absolute) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg.absolute() if absolute else cfg)
    return cfg


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config (after overrides) next to a run, so the run can be reproduced from it alone,
    from any folder: paths are written absolute."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg, absolute=True), sort_keys=False))
