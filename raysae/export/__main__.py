"""`python -m raysae.export neuronpedia (--store DIR | --uri URI) --sae SAE_ID [--out DIR]`:
write an analysed SAE's features in Neuronpedia's bulk-import layout.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from raysae import storage
from raysae.cli import run_main


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m raysae.export", description=__doc__.splitlines()[0])
    formats = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    np_ = formats.add_parser("neuronpedia", help="JSON batches for Neuronpedia's bulk import")
    where = np_.add_mutually_exclusive_group()
    where.add_argument("--uri", help="a MongoDB URI (default: $MONGODB_URI)")
    where.add_argument("--store", metavar="DIR", help="a run's embedded store folder, or the run directory")
    np_.add_argument("--database", default="raysae")
    np_.add_argument(
        "--sae", required=True, metavar="SAE_ID", help="the SAE's id in the store, e.g. my-sweep/t003"
    )
    np_.add_argument("--out", metavar="DIR", help="output folder (default: <run>/neuronpedia/<sae id>)")
    np_.add_argument(
        "--model-id", help="Neuronpedia's model id, e.g. gpt2-small (default: from the model name)"
    )
    np_.add_argument("--sae-set", help="Neuronpedia SAE set name (default: raysae-<run name>)")
    np_.add_argument("--layer", type=int, help="layer (default: from the hook point)")
    np_.add_argument("--features-per-batch", type=int, default=128)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from raysae.export.neuronpedia import export_neuronpedia
    from raysae.store import connect

    uri = args.uri or (None if args.store else os.environ.get("MONGODB_URI"))
    with connect(uri, args.store, args.database) as store:
        out = args.out
        if out is None:
            sae = store.saes.find_one({"_id": args.sae}, {"run_dir": 1}) or {}
            out = storage.join(sae.get("run_dir", "."), "neuronpedia", args.sae.replace("/", "__"))
        try:
            files = export_neuronpedia(
                store,
                args.sae,
                out,
                model_id=args.model_id,
                sae_set=args.sae_set,
                layer=args.layer,
                features_per_batch=args.features_per_batch,
            )
        except LookupError as exc:
            raise ValueError(str(exc.args[0])) from None
    print(f"wrote {len(files)} Neuronpedia batch file(s) for {args.sae} to {storage.absolute(out)}")
    return 0


if __name__ == "__main__":
    run_main(main)
