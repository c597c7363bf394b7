"""`python -m raysae.train CONFIG [--set k=v ...]`: one SAE (or one population) trained on Ray Train.

Builds the activation cache if needed, trains data-parallel over
`train.workers.num` workers, evaluates on held-out activations and writes
`<output_dir>/<name>/`: `config.yaml`, `saes/<sae_id>/` (SAELens format),
`results.csv`. Rerunning the same command resumes from the latest checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

from raysae.cli import config_parser, first_line, load_from_args, run_main

TRIAL = "train"
"""The trial name of a run of this command: its SAEs are `<name>/train[/<member>]`."""


def main(argv: Sequence[str] | None = None) -> int:
    args = config_parser(first_line(__doc__)).parse_args(argv)
    cfg = load_from_args(args)
    from raysae.activations import generate_caches
    from raysae.config import member_configs
    from raysae.config.resolve import check_run_storage
    from raysae.ray_runtime import ensure_ray
    from raysae.raytrain import run_training
    from raysae.run_dir import RunDir, sae_ids, summary_table, write_config, write_results

    members = member_configs(cfg)
    run = RunDir.of(cfg)
    check_run_storage(cfg)
    ensure_ray()
    if cfg.activations.source == "cache":
        generate_caches(cfg)
    write_config(cfg, run.root)
    rows = run_training(members, sae_ids(cfg.name, TRIAL, len(members)), storage=run.checkpoints, trial=TRIAL)
    for row, overrides in zip(rows, cfg.train.population or [{}] * len(rows), strict=True):
        row.update({k: v for k, v in overrides.items() if k not in row})
    results = write_results(rows, run.root)
    good = [r for r in rows if not r.get("error")]
    if good:
        print("\n" + summary_table(good, {"fvu": ".4f", "explained_variance": ".4f"}))
    print(f"\nrun directory: {run}\nresults: {results}")
    failed = [r for r in rows if r.get("error")]
    for r in failed:
        print(f"error: {r['sae_id']} stopped early and was not saved: {r['error']}")
    return 1 if failed else 0


if __name__ == "__main__":
    run_main(main)
