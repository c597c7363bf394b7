"""`python -m raysae.analyze CONFIG [--sae DIR ...]`: per-feature analysis of trained SAEs into MongoDB.

Without `--sae`, analyzes the SAEs of the config's run directory that
`analysis.which` picks from its `results.csv` (best, frontier or all). Writes
the `saes` and `features` documents (docs/architecture.md, "Store") to `store.uri` /
`MONGODB_URI`, or to an embedded server under `<output_dir>/<name>/store/`.
Rerunning replaces the documents.
"""

from __future__ import annotations

from collections.abc import Sequence

from raysae import filesystem
from raysae.cli import config_parser, load_from_args, run_main


def main(argv: Sequence[str] | None = None) -> int:
    parser = config_parser("analyze")
    parser.add_argument(
        "--sae",
        action="append",
        default=[],
        metavar="DIR",
        help="an SAE checkpoint directory (repeatable); default: the run's SAEs per analysis.which",
    )
    args = parser.parse_args(argv)
    cfg = load_from_args(args)
    from raysae.analysis import analyze
    from raysae.ranking import select_saes
    from raysae.run_dir import RunDir, read_results

    dirs = list(args.sae)
    run = RunDir.of(cfg)
    if not dirs:
        if not filesystem.exists(run.results):
            raise FileNotFoundError(
                f"{run.results}: missing; train or sweep first, or name SAEs with --sae DIR"
            )
        picked = select_saes(read_results(run.results), cfg.analysis.which, cfg.sweep.metric, cfg.sweep.mode)
        dirs = [run.sae(sae_id) for sae_id in picked]
    summaries = analyze(cfg, dirs)  # checks each directory before any work
    for s in summaries:
        print(f"{s['sae_id']}: {s['features']} features ({s['alive']} alive) over {s['n_tokens']} tokens")
    return 0


if __name__ == "__main__":
    run_main(main)
