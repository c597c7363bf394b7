"""`python -m raysae.config [CONFIG] [--set k=v ...] [--describe]`: print the resolved config."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from raysae.cli import config_parser, load_from_args, run_main
from raysae.config import RaysaeConfig, dump_config


def describe(model: type[BaseModel] = RaysaeConfig, prefix: str = "") -> list[str]:
    """One line per field: dotted path, default and description."""
    lines = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            lines.append(f"{prefix}{name}: {field.description}")
            lines += describe(ann, f"{prefix}{name}.")
        else:
            default = field.get_default(call_default_factory=True)
            lines.append(f"{prefix}{name} = {default!r}: {field.description}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = config_parser("config")
    parser.add_argument(
        "--describe", action="store_true", help="list every field with its default and description"
    )
    args = parser.parse_args(argv)
    if args.describe:
        print("\n".join(describe()))
        return 0
    print(dump_config(load_from_args(args)), end="")
    return 0


if __name__ == "__main__":
    run_main(main)
