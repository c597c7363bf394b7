"""`raysae <command> [...]` (the console script) and `python -m raysae <command> [...]`.

Each command is the module its COMMANDS entry names, whose `main(argv)` also runs as
`python -m raysae.<command>`; this only picks it, and handles the options before its name.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from raysae import __version__
from raysae.cli import COMMANDS, HelpFormatter, add_verbose_argument, run_main, set_entry


def parser(entry: str) -> argparse.ArgumentParser:
    width = max(map(len, COMMANDS))
    listing = "\n".join(f"  {name:<{width}}  {c.summary}" for name, c in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog=entry,
        usage="%(prog)s [-h] [--version] [--verbose] COMMAND [ARGS ...]",
        description="Sparse autoencoders on language-model activations, at cluster scale on Ray.",
        epilog=f"commands:\n{listing}\n\n`{entry} COMMAND --help` shows a command's options. "
        f"To start:\n  {entry} assets && {entry} sweep quickstart",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"raysae {__version__}")
    add_verbose_argument(p)
    p.add_argument("command", choices=list(COMMANDS), metavar="COMMAND", help="one of the commands below")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    entry = "raysae" if Path(sys.argv[0]).name == "raysae" else "python -m raysae"
    # Options before the command's name are raysae's own (--help, --version, --verbose); everything
    # after it is the command's, parsed by the command itself.
    at = next((i for i, arg in enumerate(argv) if not arg.startswith("-")), len(argv))
    if not argv:  # a bare `raysae`: what there is to run, not just "COMMAND is required"
        parser(entry).print_help(sys.stderr)
        sys.exit(2)
    name = parser(entry).parse_args(argv[: at + 1]).command
    set_entry(entry)
    module = COMMANDS[name].module
    # A package's command is its __main__ (raysae.sweep -> raysae.sweep.__main__).
    spec = importlib.util.find_spec(module)
    package = spec is not None and spec.submodule_search_locations is not None
    command = importlib.import_module(f"{module}.__main__" if package else module)
    try:
        run_main(command.main, argv[at + 1 :])
    finally:
        set_entry(None)  # called in-process (tests), the next command may be run directly


if __name__ == "__main__":
    main()
