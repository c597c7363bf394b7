"""Which SAEs to analyse, grouped by the activations they read, into one store."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from raysae.config import RaysaeConfig

log = logging.getLogger("raysae.analyze")


def select_saes(rows: Sequence[Mapping[str, Any]], cfg: RaysaeConfig) -> list[str]:
    """The sae_ids `analysis.which` picks among finished rows: the best by
    `sweep.metric`, the L0/FVU Pareto frontier, or all."""
    from raysae.sweep.summary import pareto_front

    done = [r for r in rows if r.get("status", "finished") == "finished" and not r.get("error")]
    which, metric = cfg.analysis.which, cfg.sweep.metric
    if which == "all" or not done:
        return [r["sae_id"] for r in done]
    if which == "best":
        ranked = [r for r in done if metric in r]
        pick = min if cfg.sweep.mode == "min" else max
        return [pick(ranked, key=lambda r: r[metric])["sae_id"]] if ranked else []
    y = "explained_variance" if metric == "explained_variance" else "fvu"
    sign = -1 if y == "explained_variance" else 1
    points = [r for r in done if "l0" in r and y in r]
    return [points[i]["sae_id"] for i in pareto_front([(r["l0"], sign * r[y]) for r in points])]


def analyse(cfg: RaysaeConfig, sae_dirs: Sequence[str | Path], *, store_dir: str | Path | None = None,
            on_batch=None) -> list[dict[str, Any]]:
    """Analyse the SAEs in `sae_dirs` into the configured store (embedded under
    `<run dir>/store` when none is configured); SAEs on the same activations share a pass."""
    from raysae.activations.cache import key_inputs
    from raysae.analysis.pipeline import analyse_group, analysis_config, read_record
    from raysae.ray_runtime import ensure_ray
    from raysae.results import run_dir
    from raysae.store import open_store

    groups: dict[str, tuple[RaysaeConfig, list[Path], list[dict]]] = {}
    for d in map(Path, sae_dirs):
        if not (d / "cfg.json").exists():
            raise FileNotFoundError(f"{d}: not an SAE checkpoint directory (no cfg.json)")
        record = read_record(d)
        acfg = analysis_config(cfg, record)
        key = json.dumps([acfg.activations.source, key_inputs(acfg, acfg.model.hook_point, "contexts")],
                         sort_keys=True)
        groups.setdefault(key, (acfg, [], []))
        groups[key][1].append(d)
        groups[key][2].append(record)
    if not groups:
        return []
    ensure_ray()
    summaries = []
    with open_store(cfg, store_dir or run_dir(cfg) / "store") as store:
        for acfg, dirs, records in groups.values():
            log.info("analysing %d SAE(s) on %s %s", len(dirs), acfg.model.name, acfg.model.hook_point)
            summaries += analyse_group(acfg, dirs, records, store, on_batch=on_batch)
    return summaries
