"""Train every architecture on a planted sparse dictionary and write a run directory.

    python examples/planted_dictionary.py [--set train.total_tokens=2000000]

Writes `<output_dir>/<name>/` with `config.yaml`, `saes/<sae_id>/` in the
SAELens format and `results.csv`, and prints how well each SAE recovered the
planted atoms.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from raysae import build_sae, fit
from raysae.cli import add_config_arguments, run_main
from raysae.config import load_config
from raysae.run_dir import RunDir, format_results, write_config, write_results
from raysae.synthetic import PlantedDictionary, recovery
from raysae.training import finish_sae

log = logging.getLogger("raysae.planted")
ARCHITECTURES = ["topk", "batchtopk", "jumprelu", "standard", "matryoshka_batchtopk", "gated"]
D_IN, N_ATOMS, ACTIVE = 128, 512, 6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    parser.set_defaults(config=str(Path(__file__).with_suffix(".yaml")))
    args = parser.parse_args(argv)
    data = PlantedDictionary(D_IN, N_ATOMS, mean_active=ACTIVE, seed=0)
    rows = []
    for arch in ARCHITECTURES:
        cfg = load_config(args.config, [*args.overrides, f"sae.architecture={arch}"])
        out = Path(RunDir.of(cfg).root)
        write_config(cfg, out)
        sae = build_sae(cfg.sae, D_IN)
        log.info("training %s: d_sae %d on %d tokens", arch, sae.d_sae, cfg.train.total_tokens)
        started = time.perf_counter()
        fit(sae, data.batches(cfg.train.batch_size, cfg.train.total_tokens, seed=1), cfg.train)
        seconds = time.perf_counter() - started
        held_out = list(data.batches(4096, cfg.train.eval_tokens, seed=2))
        found = recovery(sae.W_dec, data.atoms, threshold=0.9)
        rows.append(
            finish_sae(
                sae,
                held_out,
                cfg,
                f"{cfg.name}/{arch}",
                seconds=seconds,
                extra_metrics={"recovered_atoms": found},
            )
        )
    results = write_results(rows, out)
    print(
        "\n"
        + format_results(
            rows,
            {"fvu": ".4f", "l0": ".2f", "dead_fraction": ".3f", "recovered_atoms": ".1%", "seconds": ".1f"},
        )
    )
    print(f"\nrun directory: {out}\nresults: {results}\ncheckpoints (SAELens format): {out / 'saes'}")
    return 0


if __name__ == "__main__":
    run_main(main)
