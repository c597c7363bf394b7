"""`python -m raysae.dashboard [--uri URI | --store DIR] [--port N]`: browse analysed SAEs.

`--store DIR` opens a finished run's embedded store (`<output_dir>/<name>/store`,
or the run directory itself) while nothing else is using it; `--uri` connects to
any MongoDB (default: the MONGODB_URI environment variable). Serves on localhost.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from raysae.cli import run_main


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m raysae.dashboard", description=__doc__.splitlines()[0])
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--uri", help="a MongoDB URI (default: $MONGODB_URI); keep passwords in the environment"
    )
    where.add_argument("--store", metavar="DIR", help="a run's embedded store folder, or the run directory")
    p.add_argument("--database", default="raysae", help="database name (store.database of the analysis)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8050, help="port (0: any free port)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from raysae.dashboard import Server, create_app
    from raysae.store import connect

    uri = args.uri or (None if args.store else os.environ.get("MONGODB_URI"))
    with connect(uri, args.store, args.database) as store:
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
