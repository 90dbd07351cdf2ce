"""Coercion: a value as YAML gave it, made the kind its ``Field`` says (YAML 1.1's quirks undone: ``1e-3`` read
as text, ``on``/``off`` as booleans), in range and among the choices; ``model.blocks`` entry by entry. Every
problem is a ValueError whose message names the key and quotes (a short excerpt of) the value.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

from mnist_kit.config.fields import BLOCK_FIELDS, MAX_LIST, Field


def suggest(word: str, options, prefix: str = "") -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def _kind_name(field: Field) -> str:
    return {
        "int": "an integer",
        "float": "a number",
        "bool": "true or false",
        "str": "a string",
        "path": "a path",
        "ints": "a list of integers, e.g. [32, 64]",
        "float_or_auto": "a number or 'auto'",
        "blocks": "a list of blocks, e.g. [{channels: 32, stride: 2, pool: none}]",
    }[field.kind]


def excerpt(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: messages quote what was given, never all of a huge value."""
    if isinstance(value, (list, tuple)) and len(value) > limit:
        value = value[:limit]  # repr of the whole would be as large as the value
    return clip(repr(value), limit)


def clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _as_int(path: str, field: Field, value: Any, bad: ValueError) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad
    return value


def _as_float(path: str, field: Field, value: Any, bad: ValueError) -> Any:
    if field.kind == "float_or_auto" and value == "auto":
        return "auto"
    if isinstance(value, bool):
        raise bad
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
        try:
            value = float(value)
        except ValueError:
            raise bad from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad
    return float(value)


def _as_str(path: str, field: Field, value: Any, bad: ValueError) -> Any:
    if isinstance(value, bool) and "off" in field.choices:  # YAML 1.1 reads on/off (and yes/no) as booleans
        value = "on" if value else "off"
    if not isinstance(value, str) or not value:
        raise bad
    if any(ord(c) < 32 or c == "\x7f" for c in value):  # a NUL, a newline: no name or path holds them
        raise ValueError(f"{path} must not hold control characters (a newline, a NUL...), got {excerpt(value)}")
    if len(value) > 4096:
        raise ValueError(f"{path} has {len(value):,} characters; at most 4,096")
    return value


def _as_ints(path: str, field: Field, value: Any, bad: ValueError) -> Any:
    if not isinstance(value, list) or not value or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        raise bad
    if len(value) > MAX_LIST:
        raise ValueError(f"{path} has {len(value)} values; at most {MAX_LIST}")
    return list(value)


def _as_bool(path: str, field: Field, value: Any, bad: ValueError) -> Any:
    if not isinstance(value, bool):
        raise bad
    return value


# Field.kind -> f(path, field, value, the error for a value of the wrong type) -> the value as that kind
_KINDS = {"int": _as_int, "float": _as_float, "float_or_auto": _as_float, "str": _as_str, "path": _as_str,
          "ints": _as_ints, "bool": _as_bool, "blocks": lambda path, field, value, bad: blocks(path, value)}


def coerce(path: str, field: Field, value: Any) -> Any:
    """Return ``value`` as the field's type, or raise ValueError with a message."""
    if value is None:
        if field.default is None:
            return None
        raise ValueError(f"{path} must be {_kind_name(field)}, not null")
    wrong_type = ValueError(f"{path} must be {_kind_name(field)}, got {excerpt(value)}")
    out = _KINDS[field.kind](path, field, value, wrong_type)
    if field.kind == "bool" or (field.kind == "float_or_auto" and out == "auto"):
        return out
    if field.choices and out not in field.choices:
        raise ValueError(f"{path} is {excerpt(out)}; allowed: {', '.join(field.choices)}"
                         f"{suggest(str(out)[:100], field.choices)}")
    for v in out if isinstance(out, list) else [out]:
        if isinstance(v, (int, float)):
            if field.min is not None and v < field.min:
                raise ValueError(f"{path} must be >= {number(field.min)}, got {excerpt(v)}")
            if field.max is not None and v > field.max:
                raise ValueError(f"{path} must be <= {number(field.max)}, got {excerpt(v)}")
    return out




def blocks(path: str, value: Any) -> list[dict]:
    """model.blocks: every entry a mapping of BLOCK_FIELDS, complete with defaults; ValueError otherwise."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"{path} must be a non-empty list of blocks, e.g. [{{channels: 32}}, {{channels: 64, "
                         f"pool: avg}}], got {excerpt(value)}")
    if len(value) > MAX_LIST:
        raise ValueError(f"{path} has {len(value)} blocks; at most {MAX_LIST}")
    out = []
    for i, block in enumerate(value):
        where = f"{path}[{i}]"
        if not isinstance(block, dict):
            raise ValueError(f"{where} must be a mapping such as {{channels: 32, kernel: 3}}, got {excerpt(block)}")
        for key in block:
            if key not in BLOCK_FIELDS:
                raise ValueError(f"{where} has an unknown key {excerpt(key)}{suggest(str(key)[:100], BLOCK_FIELDS)}; "
                                 f"keys: {', '.join(BLOCK_FIELDS)}")
        if "channels" not in block:
            raise ValueError(f"{where} needs channels (the conv's output channels)")
        done: dict[str, Any] = {}
        for key, f in BLOCK_FIELDS.items():
            v = block.get(key, f.default)
            if key == "padding" and isinstance(v, int) and not isinstance(v, bool):
                if not 0 <= v <= 16:
                    raise ValueError(f"{where}.padding must be 'same' or 0 to 16 pixels, got {v}")
                done[key] = v
                continue
            done[key] = None if v is None else coerce(f"{where}.{key}", f, v)
            if key == "padding" and done[key] != "same":
                raise ValueError(f"{where}.padding must be 'same' or a number of pixels, got {excerpt(v)}")
        out.append(done)
    return out


def number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


