"""Typed configuration: dataclasses filled strictly from YAML/JSON mappings.

``from_dict(cls, data)`` builds a (possibly nested) dataclass and refuses unknown keys and
wrong types with a :class:`~medcnn.errors.ConfigError` that names the key path and what
was expected, e.g. ``configs/x.yaml: train.lr: expected float, got 'fast'``.
YAML is always read with ``yaml.safe_load`` (no arbitrary Python objects).

Supported field types: ``bool``, ``int``, ``float`` (ints accepted), ``str``, ``Optional[T]``,
``Literal[...]``, ``tuple[T, ...]``/``tuple[T1, T2]``, ``list[T]``, ``dict[K, V]``, nested
dataclasses and ``Union`` of these (first match wins).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from os import PathLike
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar, Union, get_args, get_origin, get_type_hints

from medcnn.errors import ConfigError

__all__ = ["from_dict", "to_dict", "load_config", "read_mapping", "describe_fields"]

T = TypeVar("T")


def read_mapping(path: str | PathLike[str]) -> dict[str, Any]:
    """Read a YAML (safe loader) or JSON file into a dict."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError.expected("an existing config file", "nothing at that path", path=p)
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # yaml/json errors
        raise ConfigError.expected("valid YAML/JSON", f"{type(exc).__name__}: {str(exc).splitlines()[0]}",
                                   path=p) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError.expected("a mapping at the top level", type(data).__name__, path=p)
    return data


def load_config(cls: type[T], path: str | PathLike[str]) -> T:
    """Read ``path`` and build ``cls`` strictly."""
    return from_dict(cls, read_mapping(path), source=str(path))


def from_dict(cls: type[T], data: Mapping[str, Any], *, source: str | None = None, _where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types are errors."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(data, Mapping):
        raise _err(_where or "config", f"a mapping for {cls.__name__}", data, source)
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{_where}." if _where else ""
        raise ConfigError(
            _prefix(source) + f"unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(where + str(k) for k in unknown)}: expected one of {', '.join(sorted(fields))}",
            path=source)
    kwargs = {}
    for name, f in fields.items():
        key = f"{_where}.{name}" if _where else name
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], key, source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            raise ConfigError(_prefix(source) + f"{key}: expected a value (required), got nothing", path=source)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(_prefix(source) + f"{_where or cls.__name__}: {exc}", path=source) from None


def to_dict(obj: Any) -> Any:
    """Dataclass → plain JSON-able structure (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


def describe_fields(cls: type) -> list[dict[str, str]]:
    """(key, type, default, meaning) rows for a configuration reference.

    The meaning is taken from ``field(metadata={"help": ...})``.
    """
    rows = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = repr(f.default_factory())  # type: ignore[misc]
        else:
            default = "(required)"
        rows.append({"key": f.name, "type": _type_name(hints[f.name]), "default": default,
                     "meaning": str(f.metadata.get("help", ""))})
    return rows


# ---------------------------------------------------------------------------- internals
def _prefix(source: str | None) -> str:
    return f"{source}: " if source else ""


def _err(key: str, expected: str, value: Any, source: str | None) -> ConfigError:
    got = f"{value!r}" if not isinstance(value, (dict, list)) else type(value).__name__
    return ConfigError(_prefix(source) + f"{key}: expected {expected}, got {got}", path=source)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is None:
        return getattr(tp, "__name__", str(tp))
    args = ", ".join(_type_name(a) if a is not Ellipsis else "..." for a in get_args(tp))
    name = "Union" if origin in (Union, types.UnionType) else getattr(origin, "__name__", str(origin))
    if name == "Union":
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return f"{name}[{args}]"


def _convert(tp: Any, value: Any, key: str, source: str | None) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        last: ConfigError | None = None
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, key, source)
            except ConfigError as exc:
                last = exc
        raise _err(key, _type_name(tp), value, source) from last
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise _err(key, _type_name(tp), value, source)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source=source, _where=key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _err(key, "true/false", value, source)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _err(key, "an integer", value, source)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _err(key, "a number", value, source)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _err(key, "a string", value, source)
    if origin in (tuple, list, typing.Sequence):
        if not isinstance(value, (list, tuple)):
            raise _err(key, f"a list ({_type_name(tp)})", value, source)
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _err(key, f"{len(args)} values", value, source)
            return tuple(_convert(a, v, f"{key}[{i}]", source) for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [_convert(item, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin in (dict, typing.Mapping):
        if not isinstance(value, Mapping):
            raise _err(key, "a mapping", value, source)
        kt, vt = get_args(tp) or (Any, Any)
        out = {}
        for k, v in value.items():
            if kt is int and isinstance(k, str) and k.lstrip("-").isdigit():
                k = int(k)  # JSON keys are strings
            out[_convert(kt, k, f"{key}.{k}", source)] = _convert(vt, v, f"{key}.{k}", source)
        return out
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _err(key, _type_name(tp), value, source)
