"""Which SAEs to analyse, grouped by the activations they read, into one store."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from raysae import storage
from raysae.config import RaysaeConfig

log = logging.getLogger("raysae.analyze")


def select_saes(rows: Sequence[Mapping[str, Any]], cfg: RaysaeConfig) -> list[str]:
    """The sae_ids `analysis.which` picks among finished rows: the best by
    `sweep.metric`, the L0/FVU Pareto frontier, or all."""
    from raysae.sweep.summary import best_row, frontier_axis, pareto_rows

    done = [r for r in rows if r.get("status", "finished") == "finished" and not r.get("error")]
    if cfg.analysis.which == "all":
        return [r["sae_id"] for r in done]
    if cfg.analysis.which == "best":
        best = best_row(done, cfg.sweep.metric, cfg.sweep.mode)
        return [best["sae_id"]] if best is not None else []
    points, front = pareto_rows(done, frontier_axis(cfg.sweep.metric))
    return [points[i]["sae_id"] for i in front]


def analyse(
    cfg: RaysaeConfig,
    sae_dirs: Sequence[storage.Location],
    *,
    store_dir: storage.Location | None = None,
    on_batch=None,
) -> list[dict[str, Any]]:
    """Analyse the SAEs in `sae_dirs` into the configured store (embedded under
    `<run dir>/store` when none is configured); SAEs on the same activations share a pass."""
    from raysae.activations.cache import key_inputs
    from raysae.analysis.pipeline import analyse_group, analysis_config, read_record
    from raysae.checkpoint import CFG_FILE
    from raysae.ray_runtime import ensure_ray
    from raysae.results import run_dir
    from raysae.store import open_store

    groups: dict[str, tuple[RaysaeConfig, list[str], list[dict]]] = {}
    for d in map(storage.absolute, sae_dirs):
        if not storage.exists(storage.join(d, CFG_FILE)):
            raise FileNotFoundError(f"{d}: not an SAE checkpoint directory (no {CFG_FILE})")
        record = read_record(d)
        acfg = analysis_config(cfg, record)
        key = json.dumps(
            [acfg.activations.source, key_inputs(acfg, acfg.model.hook_point, "contexts")], sort_keys=True
        )
        groups.setdefault(key, (acfg, [], []))
        groups[key][1].append(d)
        groups[key][2].append(record)
    if not groups:
        return []
    ensure_ray()
    summaries = []
    with open_store(cfg, store_dir or storage.join(run_dir(cfg), "store")) as store:
        for acfg, dirs, records in groups.values():
            log.info("analysing %d SAE(s) on %s %s", len(dirs), acfg.model.name, acfg.model.hook_point)
            summaries += analyse_group(acfg, dirs, records, store, on_batch=on_batch)
    return summaries
