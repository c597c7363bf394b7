"""`python -m raysae.generate CONFIG [--set k=v ...]`: build the activation caches the config names."""

from __future__ import annotations

from collections.abc import Sequence

from raysae.cli import config_parser, load_from_args, run_main


def main(argv: Sequence[str] | None = None) -> int:
    args = config_parser("generate").parse_args(argv)
    cfg = load_from_args(args)
    from raysae.activations import generate_caches
    from raysae.preflight import check_generation
    from raysae.ray_runtime import ensure_ray

    check_generation(cfg)  # before Ray starts or any cache folder is made
    ensure_ray()
    dirs = generate_caches(cfg)
    for (hook, layout), directory in dirs.items():
        print(f"{layout:>8}  {hook:<32} {directory}")
    return 0


if __name__ == "__main__":
    run_main(main)
