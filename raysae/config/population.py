"""Populations (`train.population`): K SAEs trained on the same batches, and which settings
each may have of its own (the fields whose `Scope` is MEMBER)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from raysae.config.base import MEMBER, ScopedSection
from raysae.config.paths import (
    flatten_dotted,
    known_path,
    set_dotted,
    unknown_path_problem,
    validation_problems,
)
from raysae.config.root import RaysaeConfig, cross_field_problems
from raysae.config.sae import SAEConfig
from raysae.config.train import TrainConfig
from raysae.errors import ConfigError

SCOPED_SECTIONS: dict[str, type[ScopedSection]] = {"sae": SAEConfig, "train": TrainConfig}
"""The sections whose fields declare a `Scope`; every other section is shared by a population."""


def member_paths() -> list[str]:
    """The dotted paths a member of a population may set for itself."""
    return [
        f"{section}.{name}"
        for section, model in SCOPED_SECTIONS.items()
        for name in model.model_fields
        if model.scope(name) is MEMBER
    ]


def member_path_problem(path: str) -> str | None:
    """Why `path` cannot differ between population members, or None if it can."""
    section, _, rest = path.partition(".")
    model = SCOPED_SECTIONS.get(section)
    name = rest.split(".")[0]
    if model is not None and name in model.model_fields and model.scope(name) is MEMBER and known_path(path):
        return None
    return "not a per-SAE setting: a member may set " + ", ".join(member_paths())


def _member_key_problem(path: str) -> str | None:
    if not known_path(path):
        return unknown_path_problem(path)
    return member_path_problem(path)


def _member_raw(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    member = copy.deepcopy(dict(raw))
    member.get("train", {}).pop("population", None)
    for path, value in overrides.items():
        set_dotted(member, path, value)
    return member


def population_problems(raw: dict[str, Any], cfg: RaysaeConfig) -> list[tuple[str, str]]:
    """Each member's keys must be per-SAE settings and give a valid config."""
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
            problems += [(f"{where}: {p}", m) for p, m in validation_problems(err)]
            continue
        problems += [(f"{where}: {p}", m) for p, m in cross_field_problems(member)]
    return problems


def member_configs(cfg: RaysaeConfig) -> list[RaysaeConfig]:
    """The config of each SAE of `cfg`'s population (just `[cfg]` without one)."""
    if not cfg.train.population:
        return [cfg]
    raw = cfg.model_dump(mode="json")
    return [RaysaeConfig.model_validate(_member_raw(raw, o)) for o in cfg.train.population]


def check_population(members: Sequence[RaysaeConfig]) -> None:
    """Members may differ only in what each SAE owns; everything deciding the batches is shared."""
    base = flatten_dotted(members[0].model_dump(mode="json"))
    problems = []
    for i, member in enumerate(members[1:], start=1):
        flat = flatten_dotted(member.model_dump(mode="json"))
        for path in sorted(set(base) | set(flat)):
            if path != "train.population" and base.get(path) != flat.get(path) and member_path_problem(path):
                problems.append(
                    (
                        path,
                        f"SAE {i} of the population has {flat.get(path)!r}, SAE 0 has "
                        f"{base.get(path)!r}; only per-SAE settings may differ",
                    )
                )
    if problems:
        raise ConfigError(problems)
