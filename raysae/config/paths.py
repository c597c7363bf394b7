"""Dotted config paths (`sae.k`): set, flatten, check and suggest them, and turn pydantic's
validation errors into `(dotted path, message)` problems."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from raysae.config.root import RaysaeConfig
from raysae.errors import ConfigError

MOVED_KEYS = {
    "train.num_workers": "train.workers.num",
    "train.cpus_per_worker": "train.workers.cpus",
    "train.use_gpu": "train.workers.gpu",
    "train.worker_resources": "train.workers.resources",
    **{
        f"{section}.{old}": f"{section}.actors.{new}"
        for section in ("activations", "analysis")
        for old, new in (("num_actors", "num"), ("cpus_per_actor", "cpus"), ("num_gpus_per_actor", "gpus"))
    },
}
"""Config keys that moved, and where to: a config that still uses one fails naming the new key."""


_TYPE_NAMES = {
    "int_type": "int",
    "int_parsing": "int",
    "int_from_float": "int",
    "float_type": "float",
    "float_parsing": "float",
    "bool_type": "bool",
    "bool_parsing": "bool",
    "string_type": "str",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _dotted(loc: tuple[Any, ...], prefix: tuple[str, ...] = ()) -> str:
    loc = prefix + tuple(loc)
    out = ""
    i = 0
    while i < len(loc):
        part = loc[i]
        if isinstance(part, int):
            out += f"[{part}]"
        elif loc[:i] == ("sweep", "search_space"):
            out += f"[{part}]"  # a search-space key is itself a dotted path
        else:
            out += f".{part}" if out else str(part)
        i += 1
    return out


def _fields_of(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the model at `loc`, for 'did you mean' hints."""
    model: type[BaseModel] = RaysaeConfig
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def suggest(name: str, parent: str) -> str:
    """` (did you mean 'x'?)` for a key `name` under `parent` that does not exist, or the key it moved to."""
    moved = MOVED_KEYS.get(f"{parent}.{name}" if parent else name)
    if moved:
        return f" (moved: it is `{moved}` now)"
    loc = tuple(parent.split(".")) if parent else ()
    near = difflib.get_close_matches(name, _fields_of(loc), n=1)
    return f" (did you mean '{near[0]}'?)" if near else ""


def unknown_path_problem(path: str) -> str:
    """The message for a dotted path that names no config field."""
    parent, _, leaf = path.rpartition(".")
    return "unknown config path" + suggest(leaf, parent)


def validation_problems(err: ValidationError, prefix: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    problems = []
    for e in err.errors():
        loc, kind, given = tuple(e["loc"]), e["type"], e.get("input")
        path = _dotted(loc, prefix)
        if kind == "extra_forbidden":
            msg = "unknown key" + suggest(str(loc[-1]), ".".join(map(str, prefix + loc[:-1])))
        elif kind in _TYPE_NAMES:
            msg = f"expected {_TYPE_NAMES[kind]}, got {given!r}"
        else:
            msg = e["msg"].removeprefix("Value error, ").replace("Input should be", "expected")
            if kind != "value_error":
                msg += f", got {given!r}"
        problems.append((path, msg))
    return problems


def set_dotted(raw: dict[str, Any], path: str, value: Any) -> None:
    """Set `raw[a][b][c] = value` for `path == "a.b.c"`, creating mappings on the way."""
    parts = path.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError([(".".join(parts[: i + 1]), f"is {nxt!r}, not a section")])
        node = nxt
    node[parts[-1]] = value


def flatten_dotted(node: Any, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`: the inverse of `set_dotted` (lists stay values)."""
    if not isinstance(node, Mapping):
        return {prefix: node}
    out: dict[str, Any] = {}
    for k, v in node.items():
        out.update(flatten_dotted(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def known_path(path: str) -> bool:
    """Whether `path` names a leaf or section of the config (for search spaces)."""
    model: type[BaseModel] | None = RaysaeConfig
    for part in path.split("."):
        if model is None or part not in model.model_fields:
            return False
        ann = model.model_fields[part].annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return True
