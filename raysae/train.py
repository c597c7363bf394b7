"""`python -m raysae.train CONFIG [--set k=v ...]`: one SAE (or one population) trained on Ray Train.

Builds the activation cache if needed, trains data-parallel over
`train.num_workers` workers, evaluates on held-out activations and writes
`<output_dir>/<name>/`: `config.yaml`, `saes/<sae_id>/` (SAELens format),
`results.csv`. Rerunning the same command resumes from the latest checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

from raysae import storage
from raysae.cli import config_parser, load_from_args, run_main

TRIAL = "train"


def sae_ids(name: str, k: int) -> list[str]:
    """`<name>/train` for one SAE, `<name>/train/<i>` for the members of a population."""
    return [f"{name}/{TRIAL}"] if k == 1 else [f"{name}/{TRIAL}/{i}" for i in range(k)]


def main(argv: Sequence[str] | None = None) -> int:
    args = config_parser(__doc__).parse_args(argv)
    cfg = load_from_args(args)
    from raysae.activations import generate_caches
    from raysae.config import member_configs
    from raysae.distributed import run_training
    from raysae.ray_runtime import ensure_ray
    from raysae.results import (
        check_run_storage,
        run_dir,
        summary_table,
        write_config,
        write_results,
    )

    members = member_configs(cfg)
    out = run_dir(cfg)
    check_run_storage(cfg, analysis=False)
    ensure_ray()
    if cfg.activations.source == "cache":
        generate_caches(cfg)
    write_config(cfg, out)
    rows = run_training(
        members, sae_ids(cfg.name, len(members)), storage=storage.join(out, "checkpoints"), trial=TRIAL
    )
    for row, overrides in zip(rows, cfg.train.population or [{}] * len(rows), strict=True):
        row.update({k: v for k, v in overrides.items() if k not in row})
    results = write_results(rows, out)
    good = [r for r in rows if not r.get("error")]
    if good:
        print("\n" + summary_table(good, {"fvu": ".4f", "explained_variance": ".4f"}))
    print(f"\nrun directory: {out}\nresults: {results}")
    failed = [r for r in rows if r.get("error")]
    for r in failed:
        print(f"error: {r['sae_id']} stopped early and was not saved: {r['error']}")
    return 1 if failed else 0


if __name__ == "__main__":
    run_main(main)
