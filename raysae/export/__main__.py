"""`python -m raysae.export neuronpedia (--store DIR | --uri URI) --sae SAE_ID [--out DIR]`:
write an analyzed SAE's features in Neuronpedia's bulk-import layout.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from raysae import filesystem
from raysae.cli import HelpFormatter, add_store_arguments, command_parser, run_main, store_from_args


def parser() -> argparse.ArgumentParser:
    p = command_parser("export")
    formats = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    np_ = formats.add_parser(
        "neuronpedia",
        help="JSON batches for Neuronpedia's bulk import",
        description="Write an analyzed SAE's features as Neuronpedia bulk-import batches.",
        formatter_class=HelpFormatter,
    )
    add_store_arguments(np_)
    np_.add_argument(
        "--sae", required=True, metavar="SAE_ID", help="the SAE's id in the store, e.g. my-sweep/t003"
    )
    np_.add_argument("--out", metavar="DIR", help="output folder (default: <run>/neuronpedia/<sae id>)")
    np_.add_argument(
        "--model-id", help="Neuronpedia's model id, e.g. gpt2-small (default: from the model name)"
    )
    np_.add_argument("--sae-set", help="Neuronpedia SAE set name (default: raysae-<run name>)")
    np_.add_argument("--layer", type=int, help="layer (default: from the hook point)")
    np_.add_argument("--features-per-batch", type=int, default=128, help="features per batch-<n>.json file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from raysae.export.neuronpedia import export_neuronpedia
    from raysae.run_dir import RunDir

    with store_from_args(args) as store:
        out = args.out
        if out is None:
            sae = store.saes.find_one({"_id": args.sae}, {"run_dir": 1}) or {}
            out = RunDir(sae.get("run_dir", ".")).neuronpedia(args.sae)
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
    print(f"wrote {len(files)} Neuronpedia batch file(s) for {args.sae} to {filesystem.absolute(out)}")
    return 0


if __name__ == "__main__":
    run_main(main)
