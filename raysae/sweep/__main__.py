"""`python -m raysae.sweep CONFIG [--set k=v ...]`: the main job (see `raysae.sweep.tuner`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from raysae.cli import config_parser, load_from_args, prog, run_main


def main(argv: Sequence[str] | None = None) -> int:
    from raysae.config import redact
    from raysae.config.resolve import store_uri, tracking_uri
    from raysae.run_dir import RunDir, summary_table
    from raysae.sweep.tuner import run_sweep

    args = config_parser("sweep").parse_args(argv)
    cfg = load_from_args(args)
    command = " ".join([prog("sweep"), *(sys.argv[1:] if argv is None else argv)])
    rows, run = run_sweep(cfg, command=command)
    done = [r for r in rows if r["status"] == "finished"]
    metric = cfg.sweep.metric
    if done:
        done.sort(key=lambda r: r.get(metric, float("inf")), reverse=cfg.sweep.mode == "max")
        print("\n" + summary_table(done, {metric: ".4f"}))
    for r in rows:
        if r["status"] != "finished":
            print(f"{r['sae_id']}: {r['status']}{': ' + r['error'] if r.get('error') else ''}")
    print(
        f"\n{len(done)} of {len(rows)} SAEs finished"
        + (f"; best by {metric}: {done[0]['sae_id']} ({done[0][metric]:.4f})" if done else "")
    )
    analyzed = [r["sae_id"] for r in rows if r.get("analyzed")]
    uri = store_uri(cfg)
    store = redact(uri) if uri else f"embedded, data in {run.store}"
    print(
        f"run directory: {run}\nresults: {run.results}\npareto: {run.pareto}\n"
        f"SAEs (SAELens format): {run.path(RunDir.SAES)}\nMLflow: {redact(tracking_uri(cfg))}\n"
        f"features of {len(analyzed)} SAE(s) (analysis.which={cfg.analysis.which}): "
        f"{', '.join(analyzed) or '-'}; store: {store}"
    )
    return 0 if done else 1


if __name__ == "__main__":
    run_main(main)
