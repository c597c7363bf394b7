"""`python -m raysae.dashboard [--uri URI | --store DIR] [--port N]`: browse analyzed SAEs.

`--store DIR` opens a finished run's embedded store (`<output_dir>/<name>/store`,
or the run directory itself) while nothing else is using it; `--uri` connects to
any MongoDB (default: the MONGODB_URI environment variable). Serves on localhost.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from raysae.cli import add_store_arguments, command_parser, run_main, store_from_args


def parser() -> argparse.ArgumentParser:
    p = command_parser("dashboard")
    add_store_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8050, help="port (0: any free port)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from raysae.dashboard import Server, create_app

    with store_from_args(args) as store:
        n = store.saes.count_documents({})
        server = Server(create_app(store), args.host, args.port)
        print(
            f"raysae feature browser: {server.url}  ({n} SAEs in {store.uri_shown}, database "
            f"{args.database!r}; Ctrl-C stops)",
            flush=True,
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    run_main(main)
