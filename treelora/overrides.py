"""``KEY=VALUE`` overrides (``--set`` of every script): one parser, and one typed check against a dataclass.

Two steps, so that each caller checks against the dataclass that owns its keys:

- :func:`parse_pairs` reads what was typed. A value is a TOML literal when it is one (``1e-3`` → 0.001,
  ``true`` → True, ``[0.9, 0.95]`` → a list, ``'"quoted"'`` → a string), else the bare string as typed
  (``mean`` → "mean", ``runs/x`` → "runs/x"). TOML rather than Python literals because the run configs of the
  federation are TOML (``flwr run --run-config``), so one syntax serves every script.
- :func:`coerce` checks the keys against a dataclass's fields and converts each value to its field's type
  (``treelora.config.LearnerConfig`` for the centralised CLI, ``FedSettings`` with kebab-case keys for the
  federated scripts). Range checks stay with the dataclass itself (its ``__post_init__``).

Every error is a ValueError naming the item or key, the value and what was expected; scripts turn it into their
usual usage error. No flwr import here: :mod:`treelora` stays usable without federation (DESIGN.md §1).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (requires-python >= 3.10): tomli, tomllib's origin, comes with flwr
    import tomli as tomllib

__all__ = ["parse_value", "parse_pairs", "coerce"]

_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")
_NONE = ("none", "null")


def parse_value(text: str) -> Any:
    """``text`` read as a TOML literal (int, float, bool, quoted string, array) when it is one, else ``text``.

    Dates, times and inline tables are TOML too but are kept as the string typed (``2025-01-01`` stays a name).
    """
    if "\n" not in text and "\r" not in text:  # one value, never a second key smuggled in on a new line
        try:
            doc = tomllib.loads(f"v = {text}")
        except tomllib.TOMLDecodeError:
            return text
        if list(doc) == ["v"] and _plain(doc["v"]):
            return doc["v"]
    return text


def _plain(value: Any) -> bool:
    """bool, int, float, str or an array of them (not a date, time or table)."""
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return isinstance(value, (bool, int, float, str))


def parse_pairs(items: Iterable[str]) -> dict[str, Any]:
    """``["key=value", ...]`` → ``{key: value}`` (values as :func:`parse_value`; a repeated key: the last wins).

    The key is stripped of surrounding blanks, the value is not. A missing ``=`` or an empty key is a ValueError
    naming the item.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = str(item).partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"expected KEY=VALUE, got {item!r} (no '=')")
        if not key:
            raise ValueError(f"expected KEY=VALUE, got {item!r} (empty key)")
        out[key] = parse_value(raw)
    return out


def coerce(cls: type, values: Mapping[str, Any], *, kebab: bool = False) -> dict[str, Any]:
    """``values`` checked against the dataclass ``cls``: ``{field name: value converted to the field's type}``.

    With ``kebab=True`` keys may be kebab-case (``l1-reduction``) and are mapped to the snake-case field names
    (``l1_reduction``); the result is always keyed by field name. Conversions: ``bool`` from a bool, 0/1 or
    ``true/false/1/0/yes/no`` (any case); ``int`` from an int or an integral float or string (``2.5`` is an
    error); ``float`` from a number or a numeric string; ``str`` from a string or a number (as typed by TOML,
    e.g. ``2024``); ``tuple[...]`` from a list or tuple, element by element; ``X | None`` from ``None``,
    ``none``/``null`` (any case) or anything ``X`` accepts. Raises ValueError naming the key, the value and the
    expected type, or, for an unknown key, the known keys.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"coerce needs a dataclass type, got {cls!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_") if kebab else str(key)
        if name not in names:
            known = [n.replace("_", "-") for n in names] if kebab else names
            raise ValueError(f"unknown key {key!r} for {cls.__name__}; known keys: {', '.join(known)}")
        tp = hints[name]
        try:
            out[name] = _convert(value, tp)
        except _Mismatch as exc:
            hint = f" ({exc})" if str(exc) else ""
            raise ValueError(f"{key}={value!r}: expected {_type_name(tp)}{hint}") from None
    return out


class _Mismatch(Exception):
    """A value that does not fit a type (the message, if any, says what would)."""


def _type_name(tp: Any) -> str:
    """``int``, ``tuple[float, float]``, ``str | None`` (``Optional[X]`` spelled the same way as ``X | None``)."""
    if tp is type(None):
        return "None"
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    return tp.__name__ if isinstance(tp, type) and not typing.get_args(tp) else str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) < len(args) and (value is None or (isinstance(value, str) and value.strip().lower() in _NONE)):
            return None
        hints = []
        for option in options:
            try:
                return _convert(value, option)
            except _Mismatch as exc:
                hints.append(str(exc))
        raise _Mismatch(hints[0] if len(hints) == 1 else "")
    if tp is bool:
        return _to_bool(value)
    if tp is int:
        return _to_int(value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise _Mismatch("")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _Mismatch("")
    if tp is tuple or origin is tuple:
        return _to_tuple(value, args)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _Mismatch("")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise _Mismatch("true/false/1/0/yes/no")


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise _Mismatch("")
    if isinstance(value, int):
        return value
    number = value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                raise _Mismatch("") from None
    if isinstance(number, float) and math.isfinite(number) and number.is_integer():
        return int(number)
    raise _Mismatch("a whole number")


def _to_tuple(value: Any, args: tuple) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise _Mismatch('a TOML array, e.g. [0.9, 0.95] or ["query", "value"]')
    if not args:
        return tuple(value)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_convert(v, args[0]) for v in value)
    if len(value) != len(args):
        raise _Mismatch(f"an array of {len(args)} items")
    return tuple(_convert(v, a) for v, a in zip(value, args))
