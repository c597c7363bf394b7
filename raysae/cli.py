"""What every `python -m raysae.<command>` shares: arguments, logging, clean errors."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from raysae.config import ConfigError, RaysaeConfig, load_config


def config_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the positional CONFIG and repeatable `--set dotted.key=value`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("config", nargs="?", help="YAML config file (omit for the defaults)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set sae.k=64 (repeatable)",
    )
    return parser


def load_from_args(args: argparse.Namespace) -> RaysaeConfig:
    return load_config(args.config, args.overrides)


def run_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run a command; bad input exits 2 with a one-paragraph message, not a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        code = main(argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)
