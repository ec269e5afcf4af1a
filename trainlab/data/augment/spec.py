"""Augmentation specs: the one-line string form and the TOML table form, parsed into ops.

    "hflip,translate=2,rotate=10,color_jitter=0.4,mixup=0.2"
    "rotate(degrees=15,p=0.5),random_resized_crop(scale=0.35:1),cutout(8)"

`name` uses the defaults, `name=value` sets the op's main option (its `primary`; `p` for ops without
one), `name(value, key=value, ...)` sets any option. A value is a number, true/false, a word, or a range
`lo:hi`. The same spec as a TOML table (a dict here), in order:

    [data.augment]
    hflip = true                               # defaults; false leaves the op out
    translate = 2                              # the main option
    rotate = { degrees = 15, p = 0.5 }         # any options
    random_resized_crop = { scale = [0.35, 1.0] }
"""

from __future__ import annotations

import inspect
import math
import re
from typing import Any

from trainlab.data.augment.base import AUGMENTATIONS, Op
from trainlab.errors import ConfigError
from trainlab.registry import suggest

ITEM = re.compile(r"^\s*([A-Za-z_][\w-]*)\s*(?:=\s*(.*?)|\((.*)\))?\s*$", re.S)
NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
POSITIONAL = "__primary__"


def split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            raise ConfigError(f"augmentation spec {text!r}: unbalanced ')'")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise ConfigError(f"augmentation spec {text!r}: unbalanced '('")
    return [p for p in (*parts, text[start:]) if p.strip()]


def parse_value(text: str) -> Any:
    """'2' -> 2, '0.4' -> 0.4, '0.08:1' -> (0.08, 1), 'true' -> True, anything else stays a word."""
    text = text.strip().strip("'\"")
    if ":" in text:
        return tuple(parse_value(t) for t in text.split(":"))
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if NUMBER.match(text):
        return finite(float(text) if any(c in text for c in ".eE") else int(text), text)
    return text


def finite(value: Any, text: str | None = None) -> Any:
    """`value`, with every number in it finite (1e999 reads as inf; TOML has inf and nan)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"augmentation spec: {text or value} is not a finite number")
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    for item in items:
        finite(item)
    return value


def list_item(item: Any) -> tuple[str, dict[str, Any]]:
    """{"name": "rotate", "degrees": 15} -> ("rotate", {"degrees": 15})."""
    if not isinstance(item, dict) or "name" not in item:
        raise ConfigError(
            f"augmentation spec: a list holds tables with a name, e.g. {{name = 'hflip'}}, not {item!r}"
        )
    return item["name"], {k: v for k, v in item.items() if k != "name"}


def parse_item(text: str) -> tuple[str, dict[str, Any]]:
    match = ITEM.match(text)
    if not match:
        raise ConfigError(
            f"augmentation spec: cannot read {text.strip()!r}; expected name, name=value or name(k=v)"
        )
    name, value, args = match.groups()
    if value is not None:
        return name, {POSITIONAL: parse_value(value)}
    options: dict[str, Any] = {}
    for i, arg in enumerate(split_top_level(args or "")):
        key, eq, val = arg.partition("=")
        if not eq:
            if i:
                raise ConfigError(
                    f"augmentation spec {text.strip()!r}: only the first value may come without a name"
                )
            options[POSITIONAL] = parse_value(key)
        else:
            options[key.strip()] = parse_value(val)
    return name, options


def parse_spec(spec: str | dict | list | None) -> list[tuple[str, dict[str, Any]]]:
    """A spec string, a TOML-style dict or a list of {"name": ..., options} into (name, options) pairs."""
    if not spec:
        return []
    if isinstance(spec, str):
        return [parse_item(item) for item in split_top_level(spec)]
    if isinstance(spec, list):
        return [list_item(finite(d)) for d in spec]
    if isinstance(spec, dict):
        items = []
        for name, value in finite(spec).items():
            if value is False or value is None:
                continue
            if value is True:
                items.append((name, {}))
            elif isinstance(value, dict):
                items.append((name, dict(value)))
            else:
                items.append((name, {POSITIONAL: tuple(value) if isinstance(value, list) else value}))
        return items
    raise ConfigError(f"augmentation spec must be a string or a table, got {type(spec).__name__}")


def build_op(name: str, options: dict[str, Any]) -> Op:
    """The registered op `name` with validated options; ConfigError with a suggestion otherwise."""
    if not isinstance(name, str):
        raise ConfigError(f"augmentation spec: an op's name is a string, got {name!r}")
    key = AUGMENTATIONS.canonical(name)
    cls = AUGMENTATIONS.get(key)
    allowed = [k for k in inspect.signature(cls.__init__).parameters if k != "self"]
    options = dict(options)
    if POSITIONAL in options:
        value = options.pop(POSITIONAL)
        if cls.primary in options:
            raise ConfigError(f"{key}: {cls.primary} is given twice")
        options[cls.primary] = value
    for option in options:
        if option not in allowed:
            raise ConfigError(suggest(str(option), allowed, f"option of {key}"))
    try:
        return cls(**options)
    except (TypeError, ValueError) as e:  # a value of a shape the op does not unpack, e.g. bits = [1, 2, 3]
        raise ConfigError(f"{key}: bad options {options!r} ({e})") from None


def build_ops(spec: str | dict | list | None) -> list[Op]:
    ops = [build_op(name, options) for name, options in parse_spec(spec)]
    names = [op.name for op in ops]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"augmentation spec: {name!r} appears twice; give it once with all its options")
    return ops


def format_value(value: Any) -> str:
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, (int, float)) for v in value)
    ):
        return f"{value[0]:g}:{value[1]:g}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def format_spec(ops: list[Op]) -> str:
    """The resolved spec as one string, every option spelled out (lists of vectors are left out)."""
    items = []
    for op in ops:
        options = [f"{k}={format_value(v)}" for k, v in op.get_config().items() if v is not None]
        options = [o for o in options if "," not in o and "[" not in o]
        items.append(f"{op.name}({','.join(options)})")
    return ",".join(items)
