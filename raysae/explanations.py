"""`python -m raysae.explanations export|import`: feature explanations to and from Neuronpedia's
explanation JSON.

A Neuronpedia explanation (its `/api/explanation/export` and dataset exports) is an object
{modelId, layer, index, description, explanationModelName, typeName, ...}: `layer` is the
SAE's Neuronpedia id within the model (e.g. "6-res-jb") and `index` a string. Export writes
a JSON array of those, one per stored explanation, with the raysae SAE id as
`raysae_sae_id` and a score as `scores: [{"value": x}]`; import reads such an array (or an
object with an `explanations` array, or JSON lines, gzipped or not) and checks every entry
before it writes any.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from raysae.cli import HelpFormatter, add_store_arguments, command_parser, run_main, store_from_args
from raysae.export.neuronpedia import layer_of
from raysae.store import Store
from raysae.store import explanations as store_explanations

TYPE_NAME = "raysae"
"""The `typeName` export writes: the method, in Neuronpedia's terms (theirs: `oai_token-act-pair`...)."""


def neuronpedia_ids(sae: Mapping[str, Any]) -> tuple[str, str]:
    """(modelId, layer) export writes for an SAE document: the model's name as
    `raysae export neuronpedia` derives it, and `<block>-raysae-<sae id with - for />`."""
    model_id = str(sae.get("model", "model")).rstrip("/").split("/")[-1].lower()
    layer = f"{layer_of(sae.get('hook_point', ''))}-raysae-{str(sae['_id']).replace('/', '-')}"
    return model_id, layer


def export_entries(store: Store, sae_id: str | None = None) -> list[dict[str, Any]]:
    """Every stored explanation (of `sae_id` only, when given) as Neuronpedia explanation objects."""
    saes = {d["_id"]: d for d in store.saes.find({}, {"model": 1, "hook_point": 1})}
    if sae_id is not None and sae_id not in saes:
        raise ValueError(f"no SAE {sae_id!r} in the store; it has: {', '.join(sorted(saes)[:20]) or 'none'}")
    entries = []
    for e in store_explanations.every(store, sae_id):
        sae = saes.get(e["sae_id"], {"_id": e["sae_id"]})
        model_id, layer = neuronpedia_ids(sae)
        entry: dict[str, Any] = {
            "modelId": model_id,
            "layer": layer,
            "index": str(e["index"]),
            "description": e["text"],
            "explanationModelName": e["source"],
            "typeName": TYPE_NAME,
            "createdAt": e["created_at"],
            "raysae_sae_id": e["sae_id"],
        }
        if e["score"] is not None:
            entry["scores"] = [{"value": e["score"]}]
        entries.append(entry)
    return entries


def read_entries(path: str | Path) -> list[Any]:
    """The entries of an explanation file: a JSON array, an object holding one under
    `explanations`, or JSON lines; `.gz` files are decompressed."""
    raw = Path(path).read_bytes()
    if str(path).endswith(".gz"):
        raw = gzip.decompress(raw)
    text = raw.decode("utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as whole:
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) < 2:
            raise ValueError(f"{path}: not JSON ({whole})") from None
        data = []
        for n, line in enumerate(lines, 1):
            try:
                data.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: line {n} is not JSON ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("explanations"), list):
        data = data["explanations"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON array of explanations, got {type(data).__name__}")
    return data


def _score(entry: Mapping[str, Any]) -> Any:
    scores = entry.get("scores")
    if isinstance(scores, list) and scores and isinstance(scores[0], Mapping):
        return scores[0].get("value")
    return entry.get("score")


def import_documents(store: Store, entries: Sequence[Any], sae_id: str | None = None) -> list[dict[str, Any]]:
    """The explanation documents `entries` make, or a ValueError naming the first bad entry
    (its position, 1-based, and what is missing or wrong). Each entry goes to `sae_id` when
    given, else to its `raysae_sae_id`, else to the SAE whose (modelId, layer) export would write."""
    saes = {d["_id"]: d for d in store.saes.find({}, {"model": 1, "hook_point": 1, "d_sae": 1})}
    by_neuronpedia = {neuronpedia_ids(d): key for key, d in saes.items()}
    if sae_id is not None and sae_id not in saes:
        raise ValueError(
            f"--sae {sae_id!r}: no such SAE in the store; it has: {', '.join(sorted(saes)) or 'none'}"
        )
    if sae_id is not None:
        sources = {(e.get("modelId"), e.get("layer")) for e in entries if isinstance(e, Mapping)}
        if len(sources) > 1:
            shown = ", ".join(f"{m}/{la}" for m, la in sorted(sources, key=str)[:5])
            raise ValueError(
                f"--sae puts every entry on one SAE, but the file holds {len(sources)} Neuronpedia SAEs "
                f"({shown}); split it by modelId/layer and import each with its --sae"
            )
    docs = []
    for n, entry in enumerate(entries, 1):
        where = f"entry {n} of {len(entries)}"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: expected an object, got {type(entry).__name__}")
        for field in ("index", "description"):
            if entry.get(field) in (None, ""):
                raise ValueError(f"{where}: missing field {field!r}")
        target = sae_id or entry.get("raysae_sae_id")
        if target is None:
            for field in ("modelId", "layer"):
                if entry.get(field) in (None, ""):
                    raise ValueError(f"{where}: missing field {field!r} (or pass --sae SAE_ID)")
            target = by_neuronpedia.get((str(entry["modelId"]), str(entry["layer"])))
            if target is None:
                raise ValueError(
                    f"{where}: no SAE in the store is modelId {entry['modelId']!r} layer {entry['layer']!r}; "
                    "pass --sae SAE_ID to say which SAE these explanations are of"
                )
        if target not in saes:
            raise ValueError(f"{where}: no SAE {target!r} in the store (pass --sae SAE_ID)")
        index = entry["index"]
        if isinstance(index, bool) or not str(index).strip().isdigit():
            raise ValueError(f"{where}: index must be a feature number (0 or more), got {index!r}")
        index = int(str(index).strip())
        d_sae = int(saes[target].get("d_sae", 0))
        if index >= d_sae:
            raise ValueError(
                f"{where}: SAE {target!r} has no feature {index} (its features are 0–{d_sae - 1})"
            )
        source = entry.get("explanationModelName") or entry.get("typeName") or "neuronpedia"
        try:
            docs.append(
                store_explanations.document(target, index, entry["description"], source, _score(entry))
            )
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return docs


def import_file(store: Store, path: str | Path, sae_id: str | None = None) -> tuple[int, int]:
    """Check every entry of `path`, then store those not already there (same SAE, feature,
    text and source); (written, skipped as already stored)."""
    docs = import_documents(store, read_entries(path), sae_id)
    present = {
        (e["sae_id"], e["index"], e["text"], e["source"])
        for target in {d["sae_id"] for d in docs}
        for e in store_explanations.every(store, target)
    }
    new = []
    for d in docs:
        key = (d["sae_id"], d["index"], d["text"], d["source"])
        if key not in present:
            present.add(key)
            new.append(d)
    return store_explanations.add_many(store, new), len(docs) - len(new)


def parser() -> argparse.ArgumentParser:
    p = command_parser("explanations")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ex = actions.add_parser(
        "export",
        help="write the stored explanations as Neuronpedia explanation JSON",
        description="Write the stored explanations (of one SAE with --sae) as a JSON array of "
        "Neuronpedia explanation objects.",
        formatter_class=HelpFormatter,
    )
    add_store_arguments(ex)
    ex.add_argument("--sae", metavar="SAE_ID", help="only this SAE's explanations (default: every SAE's)")
    ex.add_argument("out", metavar="OUT.json", help="the file to write")
    im = actions.add_parser(
        "import",
        help="store the explanations of a Neuronpedia explanation JSON file",
        description="Store the explanations of a Neuronpedia explanation file (a JSON array, or "
        "JSON lines, .gz or not). Every entry is checked first: one bad entry writes nothing. "
        "Entries already stored (same feature, text and source) are skipped. An entry goes to "
        "the SAE --sae names; without --sae, to its raysae_sae_id (files this command exported), "
        "else to the SAE whose export would write its modelId and layer. A file downloaded from "
        "Neuronpedia names its model and SAE in Neuronpedia's terms (modelId gpt2-small, layer "
        "6-res-jb): import it with --sae <our SAE id> (one Neuronpedia SAE per file).",
        formatter_class=HelpFormatter,
    )
    add_store_arguments(im)
    im.add_argument("file", metavar="FILE.json", help="a Neuronpedia explanation export")
    im.add_argument("--sae", metavar="SAE_ID", help="the SAE every entry is of (default: from each entry)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    with store_from_args(args) as store:
        store_explanations.ensure_indexes(store)
        if args.action == "export":
            entries = export_entries(store, args.sae)
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + ".part")  # a complete file or none
            tmp.write_text(json.dumps(entries, indent=1, ensure_ascii=False) + "\n")
            tmp.replace(out)
            print(f"wrote {len(entries)} explanation(s) to {out.resolve()}")
        else:
            written, skipped = import_file(store, args.file, args.sae)
            print(f"imported {written} explanation(s) from {args.file}; {skipped} already stored")
    return 0


if __name__ == "__main__":
    run_main(main)
