"""The checks of a sweep's search space (`sweep.search_space`), run when the config loads."""

from __future__ import annotations

import copy
from typing import Any

from pydantic import ValidationError

from raysae.config.paths import known_path, set_dotted, validation_problems
from raysae.config.population import member_path_problem
from raysae.config.root import RaysaeConfig
from raysae.errors import ConfigError

SEARCH_SPACE = "sweep.search_space"
DIMENSION_KINDS = ("grid", "choice", "uniform", "loguniform")


def set_swept(raw: dict[str, Any], key: str, value: Any) -> None:
    """Apply the override `sweep.search_space.<path>=value`: `<path>` is one swept dotted path
    (`sae.k`), a single key of the search space, not nested sections; `<path>.grid=[..]` (or
    choice, uniform, loguniform) sets that dimension of `<path>`."""
    path = key.removeprefix(SEARCH_SPACE + ".")
    head, _, last = path.rpartition(".")
    if head and last in DIMENSION_KINDS and known_path(head):
        path, value = head, {last: value}
    node = raw
    for i, part in enumerate(("sweep", "search_space")):
        if node.get(part) is None:  # absent, or empty in the YAML (`sweep:`)
            node[part] = {}
        if not isinstance(node[part], dict):
            where = ".".join(("sweep", "search_space")[: i + 1])
            raise ConfigError([(where, f"is {node[part]!r}, not a mapping")])
        node = node[part]
    node[path] = value


def search_space_problems(raw: dict[str, Any], cfg: RaysaeConfig) -> list[tuple[str, str]]:
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
                problems += [(f"{where}.{dim.kind}[{i}]", f"{p}: {m}") for p, m in validation_problems(err)]
    return problems
