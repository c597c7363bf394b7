"""`python -m raysae.analyze CONFIG [--sae DIR ...]`: per-feature analysis of trained SAEs into MongoDB.

Without `--sae`, analyses the SAEs of the config's run directory that
`analysis.which` picks from its `results.csv` (best, frontier or all). Writes
the `saes` and `features` documents of DESIGN.md §6 to `store.uri` /
`MONGODB_URI`, or to an embedded server under `<output_dir>/<name>/store/`.
Rerunning replaces the documents.
"""

from __future__ import annotations

from collections.abc import Sequence

from raysae import storage
from raysae.cli import config_parser, load_from_args, run_main


def main(argv: Sequence[str] | None = None) -> int:
    parser = config_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--sae",
        action="append",
        default=[],
        metavar="DIR",
        help="an SAE checkpoint directory (repeatable); default: the run's SAEs per analysis.which",
    )
    args = parser.parse_args(argv)
    cfg = load_from_args(args)
    from raysae.analysis import analyse, select_saes
    from raysae.results import read_results, run_dir

    dirs = list(args.sae)
    if not dirs:
        results = storage.join(run_dir(cfg), "results.csv")
        if not storage.exists(results):
            raise FileNotFoundError(f"{results}: missing; train or sweep first, or name SAEs with --sae DIR")
        dirs = [
            storage.join(run_dir(cfg), "saes", sae_id) for sae_id in select_saes(read_results(results), cfg)
        ]
    summaries = analyse(cfg, dirs)  # checks each directory before any work
    for s in summaries:
        print(f"{s['sae_id']}: {s['features']} features ({s['alive']} alive) over {s['n_tokens']} tokens")
    return 0


if __name__ == "__main__":
    run_main(main)
