"""`python -m raysae.sweep CONFIG [--set k=v ...]`: the main job (see `raysae.sweep.tuner`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from raysae.cli import config_parser, load_from_args, prog, run_main


def main(argv: Sequence[str] | None = None) -> int:
    from raysae import ray_runtime
    from raysae.sweep.tuner import run_sweep

    args = config_parser("sweep").parse_args(argv)
    cfg = load_from_args(args)
    command = " ".join([prog("sweep"), *(sys.argv[1:] if argv is None else argv)])
    rows, run = run_sweep(cfg, command=command)
    # Disconnect first, so nothing Ray forwards from its workers lands after the summary.
    ray_runtime.disconnect()
    print(summary(cfg, rows, run), flush=True)
    done = [r for r in rows if r["status"] == "finished"]
    return 0 if done else 1


def summary(cfg, rows: list[dict], run) -> str:
    """The end of a sweep: each SAE (architecture, swept values, metrics), where everything is,
    and the next commands to run."""
    from raysae.config import redact
    from raysae.config.resolve import store_uri, tracking_uri
    from raysae.run_dir import RunDir, summary_table

    done = [r for r in rows if r["status"] == "finished"]
    metric = cfg.sweep.metric
    swept = [path for path in cfg.sweep.search_space if path != "sae.architecture"]
    out = []
    if done:
        done.sort(key=lambda r: r.get(metric, float("inf")), reverse=cfg.sweep.mode == "max")
        out.append("\n" + summary_table(done, {metric: ".4f"}, swept=swept))
    for r in rows:
        if r["status"] != "finished":
            out.append(f"{r['sae_id']}: {r['status']}{': ' + r['error'] if r.get('error') else ''}")
    out.append(
        f"\n{len(done)} of {len(rows)} SAEs finished"
        + (f"; best by {metric}: {done[0]['sae_id']} ({done[0][metric]:.4f})" if done else "")
    )
    analyzed = [r["sae_id"] for r in rows if r.get("analyzed")]
    uri, tracking = store_uri(cfg), tracking_uri(cfg)
    store = redact(uri) if uri else f"embedded, data in {run.store}"
    out.append(
        f"run directory: {run}\nresults: {run.results}\npareto: {run.pareto}\n"
        f"SAEs (SAELens format): {run.path(RunDir.SAES)}\nMLflow: {redact(tracking)}\n"
        f"features of {len(analyzed)} SAE(s) (analysis.which={cfg.analysis.which}): "
        f"{', '.join(analyzed) or '-'}; store: {store}"
    )
    nxt = []
    if analyzed:
        where = f"--uri '{redact(uri)}'" if uri else f"--store {run}"
        nxt.append(f"  raysae dashboard {where}    # browse the features")
    if tracking.startswith("sqlite:"):
        nxt.append(f"  mlflow ui --backend-store-uri {tracking}    # the training curves")
    if nxt:
        out.append("\nnext:\n" + "\n".join(nxt))
    return "\n".join(out)


if __name__ == "__main__":
    run_main(main)
