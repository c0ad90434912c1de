"""Typed YAML: read files and ``key.path=value`` overrides, and build nested dataclasses from
the plain data with every error naming its key.

A config file is plain data (a safe YAML loader: no tags, no code). It is checked against
dataclasses before any work starts, so that a typo, a wrong type or a missing file is reported
with the key's full path (``train.optimizer.lr: expected a number, got 'fast'``) instead of
failing hours later. Overrides such as ``train.iters=500`` or ``model.options.dim=16`` are
parsed as YAML scalars and applied before validation.

Files and overrides are read by one loader, :class:`ConfigLoader`: PyYAML's safe loader with
YAML 1.2's floats, so that ``lr: 1e-4`` is a number (YAML 1.1 wants ``1.0e-4`` and reads
``1e-4`` as a string). Every number must be finite: ``.nan`` and ``.inf`` are refused with
their key, also inside free-form mappings such as ``model.options``.

A type whose YAML node is read by a function of its own (the ``distill:`` node, whose dataclass
depends on ``distill.method``) is registered with :func:`register_node_reader`. The schema of a
training run is :mod:`slkd.engine.config`.
"""

from __future__ import annotations

import difflib
import math
import re
import types
import typing
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Union, get_args, get_origin

import yaml

from slkd.errors import ConfigError

__all__ = ["ConfigLoader", "apply_overrides", "from_dict", "load_yaml", "parse_yaml", "register_node_reader",
           "to_dict"]

#: type → function reading its node, ``reader(value, path)`` (see :func:`register_node_reader`)
_NODE_READERS: dict[type, Callable[[Any, str], Any]] = {}


def register_node_reader(tp: type, reader: Callable[[Any, str], Any]) -> None:
    """Read every node annotated with ``tp`` by ``reader(value, path)`` instead of by the
    generic dataclass reader; ``reader`` raises :class:`ConfigError` naming ``path``."""
    _NODE_READERS[tp] = reader


# --------------------------------------------------------------------------------------------
# Reading YAML
# --------------------------------------------------------------------------------------------

_FLOAT_TAG = "tag:yaml.org,2002:float"
#: YAML 1.2 floats (an exponent needs no dot and no sign: 1e-4, 2E3, .5e3), plus YAML 1.1's
#: sexagesimal form, infinities and NaN, which the safe loader's constructor understands
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (plain data only: tags that build objects are refused) whose floats
    follow YAML 1.2, so ``1e-4`` is the number 0.0001 and not the string ``'1e-4'``."""


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(_FLOAT_TAG, _FLOAT, list("-+0123456789."))


def parse_yaml(text: str) -> Any:
    """Plain data of one YAML document, read with :class:`ConfigLoader`."""
    loader = ConfigLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _one_line(exc: Exception) -> str:
    """A parser's multi-line message as one line (the command line prints errors as one)."""
    return " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())


def _check_finite(value: Any, path: str) -> None:
    """Refuse NaN and infinities anywhere in free-form data (``model.options``, ``params``)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{path}: expected a finite number, got {value!r}")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, _join(path, k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_finite(v, f"{path}[{i}]")


# --------------------------------------------------------------------------------------------
# Generic validation of nested dataclasses
# --------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None)) + " or null"
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a mapping"
    if is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        _check_finite(value, path)
        return value
    reader = _NODE_READERS.get(tp) if isinstance(tp, type) else None
    if reader is not None:
        return reader(value, path)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        concrete = [o for o in options if o is not type(None)]
        structured = [o for o in concrete if is_dataclass(o) or get_origin(o) in (list, dict)]
        if len(concrete) == 1 or (isinstance(value, dict) and len(structured) == 1):
            # Optional[X] (or a mapping for the one structured option): report X's own error
            return _convert(value, concrete[0] if len(concrete) == 1 else structured[0], path)
        for option in concrete:
            try:
                return _convert(value, option, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (item,) = get_args(tp)[:1] or (Any,)
        return [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        _, item = get_args(tp) or (str, Any)
        return {str(k): _convert(v, item, f"{path}.{k}") for k, v in value.items()}
    if is_dataclass(tp):
        return from_dict(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{path}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")  # a bug in a schema


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from plain data, checking keys and types recursively."""
    where = path or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if f.init}
    unknown = [k for k in data if k not in known]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(known), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(known)}"
        raise ConfigError(f"{_join(path, key)}: unknown key{hint}")
    kwargs = {}
    for name, f in known.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], _join(path, name))
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(f"{_join(path, name)}: required key is missing")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check:
        check(path)
    return obj


def to_dict(obj: Any) -> Any:
    """Plain data (for YAML/JSON) of a config object."""
    if is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML scalars/lists) to plain data."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        try:
            value = parse_yaml(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: cannot parse value ({_one_line(exc)})") from None
        node: Any = data
        parts = key.split(".")
        for i, part in enumerate(parts):
            where = ".".join(parts[: i + 1])
            last = i == len(parts) - 1
            if isinstance(node, list):  # data.val.0.limit=2 addresses list entries by index
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"override {item!r}: {where} is not an index of a {len(node)}-entry list")
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[:i])} is not a mapping")
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
    return data


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text (UTF-8 YAML) file; is it a config?") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {_one_line(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    return data
