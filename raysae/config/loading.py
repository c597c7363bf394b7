"""YAML in, typed config out, with errors that name the dotted path."""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from raysae.config.base import ConfigError
from raysae.config.root import RaysaeConfig, cross_field_problems

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


def _suggest(name: str, parent: str) -> str:
    loc = tuple(parent.split(".")) if parent else ()
    near = difflib.get_close_matches(name, _fields_of(loc), n=1)
    return f" (did you mean '{near[0]}'?)" if near else ""


def _problems(err: ValidationError, prefix: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    problems = []
    for e in err.errors():
        loc, kind, given = tuple(e["loc"]), e["type"], e.get("input")
        path = _dotted(loc, prefix)
        if kind == "extra_forbidden":
            msg = "unknown key" + _suggest(str(loc[-1]), ".".join(map(str, prefix + loc[:-1])))
        elif kind in _TYPE_NAMES:
            msg = f"expected {_TYPE_NAMES[kind]}, got {given!r}"
        else:
            msg = e["msg"].removeprefix("Value error, ").replace("Input should be", "expected")
            if kind != "value_error":
                msg += f", got {given!r}"
        problems.append((path, msg))
    return problems


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-3` as a float (YAML 1.2), as users expect."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=value` -> (`a.b`, value parsed as YAML, so `k=64` is an int)."""
    key, sep, raw = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key.strip()):
        raise ConfigError([("", f"override {text!r} is not of the form dotted.key=value")])
    try:
        value = _yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError([(key, f"override value {raw!r} is not valid YAML: {exc}")]) from None
    return key.strip(), value


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


def _search_space_problems(raw: dict[str, Any], cfg: RaysaeConfig) -> list[tuple[str, str]]:
    """Each swept path must exist and each grid/choice/bound value must validate there."""
    problems = []
    for path, dim in cfg.sweep.search_space.items():
        where = f"sweep.search_space[{path}]"
        if not known_path(path) or path.split(".")[0] in ("sweep", "name") or path == "train.population":
            problems.append((where, "not a config path that can be swept"))
            continue
        if cfg.sweep.saes_per_trial > 1 and member_path_problem(path):
            problems.append(
                (
                    where,
                    f"sweep.saes_per_trial={cfg.sweep.saes_per_trial} trains several SAEs on "
                    "the same batches, so only per-SAE settings can be swept; this one is shared",
                )
            )
            continue
        for i, value in enumerate(dim.values):
            trial = copy.deepcopy(raw)
            trial.get("sweep", {}).pop("search_space", None)
            set_dotted(trial, path, value)
            try:
                RaysaeConfig.model_validate(trial)
            except ValidationError as err:
                problems += [(f"{where}.{dim.kind}[{i}]", f"{p}: {m}") for p, m in _problems(err)]
    return problems


PER_MEMBER_TRAIN_FIELDS = frozenset(
    {
        "lr",
        "adam_beta1",
        "adam_beta2",
        "lr_warmup_fraction",
        "lr_decay_fraction",
        "sparsity_warmup_fraction",
        "k_anneal_fraction",
        "k_anneal_start",
        "grad_clip_norm",
        "seed",
    }
)
"""`train.*` fields that may differ between the SAEs of a population (the rest are shared:
they decide the batches every member sees)."""


def member_path_problem(path: str) -> str | None:
    """Why `path` cannot differ between population members, or None if it can."""
    section, _, field = path.partition(".")
    if section == "sae" and field and field != "d_in" and known_path(path):
        return None
    if section == "train" and field in PER_MEMBER_TRAIN_FIELDS:
        return None
    return (
        "not a per-SAE setting: a member may set `sae.*` (except d_in) and "
        f"train.{{{', '.join(sorted(PER_MEMBER_TRAIN_FIELDS))}}}"
    )


def _member_key_problem(path: str) -> str | None:
    if not known_path(path):
        parent, _, leaf = path.rpartition(".")
        return "unknown config path" + _suggest(leaf, parent)
    return member_path_problem(path)


def _member_raw(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    member = copy.deepcopy(dict(raw))
    member.get("train", {}).pop("population", None)
    for path, value in overrides.items():
        set_dotted(member, path, value)
    return member


def _population_problems(raw: dict[str, Any], cfg: RaysaeConfig) -> list[tuple[str, str]]:
    problems = []
    for i, overrides in enumerate(cfg.train.population):
        where = f"train.population[{i}]"
        bad = [(f"{where}.{p}", why) for p in overrides if (why := _member_key_problem(p))]
        if bad:
            problems += bad
            continue
        try:
            member = RaysaeConfig.model_validate(_member_raw(raw, overrides))
        except ValidationError as err:
            problems += [(f"{where}: {p}", m) for p, m in _problems(err)]
            continue
        problems += [(f"{where}: {p}", m) for p, m in cross_field_problems(member)]
    return problems


def member_configs(cfg: RaysaeConfig) -> list[RaysaeConfig]:
    """The config of each SAE of `cfg`'s population (just `[cfg]` without one)."""
    if not cfg.train.population:
        return [cfg]
    raw = cfg.model_dump(mode="json")
    return [RaysaeConfig.model_validate(_member_raw(raw, o)) for o in cfg.train.population]


def validate_config(raw: Mapping[str, Any], source: str | None = None) -> RaysaeConfig:
    """A plain mapping -> the typed config; raises `ConfigError` naming every problem."""
    if not isinstance(raw, Mapping):
        raise ConfigError([("", f"expected a mapping at the top level, got {type(raw).__name__}")], source)
    raw = dict(raw)
    try:
        cfg = RaysaeConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_problems(err), source) from None
    problems = list(cross_field_problems(cfg)) + _search_space_problems(raw, cfg)
    problems += _population_problems(raw, cfg)
    if problems:
        raise ConfigError(problems, source)
    return cfg


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> RaysaeConfig:
    """Read a YAML config, apply `dotted.key=value` overrides, validate strictly.

    `path=None` starts from the defaults. Errors are `ConfigError`s whose message
    starts with the file name and names each dotted path.
    """
    source = str(path) if path is not None else None
    raw: Any = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError([("", f"cannot read config file: {exc.strerror}")], source) from None
        try:
            raw = _yaml(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError([("", f"not valid YAML: {exc}")], source) from None
        if not isinstance(raw, dict):
            raise ConfigError(
                [("", f"expected a mapping at the top level, got {type(raw).__name__}")], source
            )
    for text in overrides:
        key, value = parse_override(text)
        if not (known_path(key) or key.startswith("sweep.search_space.")):
            parent, _, leaf = key.rpartition(".")
            hint = _suggest(leaf, parent)
            raise ConfigError([(key, "unknown config path" + hint)], source)
        set_dotted(raw, key, value)
    return validate_config(raw, source)


_URI_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


def redact(value: Any) -> Any:
    """Drop `user:password@` from URIs so configs can be printed and logged."""
    if isinstance(value, str):
        return _URI_CREDENTIALS.sub("***@", value)
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def dump_config(cfg: RaysaeConfig, *, redacted: bool = True) -> str:
    """The fully resolved config as YAML (credentials in URIs redacted by default)."""
    data = cfg.model_dump(mode="json", exclude_none=False)
    if redacted:
        data = redact(data)
    return yaml.safe_dump(data, sort_keys=False)
