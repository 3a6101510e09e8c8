"""Frozen dataclass configs: dict/YAML in and out, ``key=value`` overrides, strict validation.

Every config in umm is a frozen dataclass. ``from_dict`` rebuilds one (nested dataclasses included) and
rejects what it does not know: an unknown key names the key and the keys allowed there; a value outside a
``Literal[...]`` names the allowed values. A misspelt option therefore never trains silently with a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key or value that umm cannot accept; the message is one line meant for the user."""


def to_dict(config: Any) -> dict[str, Any]:
    """A plain (JSON/YAML-safe) dict of a dataclass config; tuples become lists."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(config)


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, recursing into nested dataclasses and checking every key."""
    data = dict(data or {})
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown config key {where + key!r}{hint}; allowed: {', '.join(names)}")
    kwargs = {key: _coerce(hints[key], value, f"{where}{key}") for key, value in data.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if dataclasses.is_dataclass(value):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key {where!r} expects a mapping, got {value!r}")
        return from_dict(hint, value, where + ".")
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ConfigError(f"config key {where!r} = {value!r} is not allowed; choose one of {list(allowed)}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return _coerce(args[0], value, where)
        return value
    if origin is tuple and isinstance(value, (list, tuple)):
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "3e-4" as a string
        except ValueError:
            pass
    if hint in (int, float, bool, str) and not isinstance(value, hint):
        raise ConfigError(f"config key {where!r} expects {hint.__name__}, got {value!r}")
    return value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.steps=10", "model.dim=64"]`` -> nested dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} sets inside {part!r}, which is not a mapping")
        node[parts[-1]] = value
    return out


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``update`` wins. Neither input is modified."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def replace(config: T, **changes: Any) -> T:
    """``dataclasses.replace`` that validates keys the same way ``from_dict`` does."""
    return from_dict(type(config), merge(to_dict(config), changes))


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``--n``, ``--steps``); anything else is one clear error line."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expects an integer >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0 (``--minutes``)."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects a number > 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expects a number > 0, got {value}")
    return value


def check_range(key: str, value: float, low: float | None = None, high: float | None = None,
                above: float | None = None, below: float | None = None) -> None:
    """A ConfigError naming ``key`` and the allowed range unless low <= value <= high (inclusive) and
    above < value < below (exclusive); a dataclass's ``__post_init__`` calls it for each bounded field."""
    ok = ((low is None or value >= low) and (high is None or value <= high)
          and (above is None or value > above) and (below is None or value < below))  # fmt: skip
    if not ok:
        bounds = [f"{low} <=" if low is not None else f"{above} <" if above is not None else "",
                  "value", f"<= {high}" if high is not None else f"< {below}" if below is not None else ""]  # fmt: skip
        raise ConfigError(f"config key {key!r} = {value!r} is out of range; allowed: {' '.join(b for b in bounds if b)}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        where = getattr(error, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{at}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    return data


def save_yaml(config: Any, path: str | Path) -> None:
    data = to_dict(config) if dataclasses.is_dataclass(config) else config
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))
