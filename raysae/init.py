"""`raysae init [NAME]`: copy a packaged config (raysae/configs/NAME.yaml) into the working folder."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from raysae.cli import command_parser, prog, run_main
from raysae.config.loading import PACKAGED_CONFIGS, packaged_config_names


def main(argv: Sequence[str] | None = None) -> int:
    parser = command_parser("init")
    parser.add_argument(
        "name",
        nargs="?",
        default="quickstart",
        choices=packaged_config_names(),
        metavar="NAME",
        help="the packaged config: " + ", ".join(packaged_config_names()),
    )
    parser.add_argument("--dest", default=".", help="folder to write <NAME>.yaml into")
    args = parser.parse_args(argv)
    target = Path(args.dest) / f"{args.name}.yaml"
    if target.exists():
        raise FileExistsError(f"{target} exists; not overwriting it (remove it, or pass --dest)")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PACKAGED_CONFIGS / f"{args.name}.yaml", target)
    print(f"wrote {target}; run it with: {prog('sweep')} {target}")
    return 0


if __name__ == "__main__":
    run_main(main)
