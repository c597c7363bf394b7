"""An SAE's analyzed features in Neuronpedia's bulk-import layout: the JSON batches
that SAEDashboard's `NeuronpediaRunner` writes (`batch-<n>.json`, each
{model_id, layer, sae_set, features: [...], settings}), built from the store's
`features` documents instead of rerunning the model."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from raysae import filesystem
from raysae.activations.language_model import block_index
from raysae.analysis.documents import NON_ACTIVATING
from raysae.store import Store, feature_filter

DECIMALS = 3  # as Neuronpedia's own exporter rounds


def layer_of(hook_point: str) -> int:
    """Neuronpedia's layer of a hook point: its block, 0 for hooks outside the blocks."""
    return block_index(hook_point) or 0


def _round(values) -> list[float]:
    return [round(float(v), DECIMALS) for v in values]


def band_fraction(histogram: dict[str, list], lo: float, hi: float) -> float:
    """The fraction of the feature's active tokens with activation in [lo, hi], from its
    histogram (bins counted when their centre lies in the interval)."""
    edges, counts = histogram.get("edges", []), histogram.get("counts", [])
    total = sum(counts)
    if not total:
        return 0.0
    inside = sum(c for c, a, b in zip(counts, edges, edges[1:], strict=False) if lo <= (a + b) / 2 <= hi)
    return inside / total


def _activation(example: dict[str, Any], bin_min: float, bin_max: float, contains: float) -> dict[str, Any]:
    return {
        "bin_min": round(bin_min, DECIMALS),
        "bin_max": round(bin_max, DECIMALS),
        "bin_contains": round(contains, 6),
        "tokens": list(example["tokens"]),
        "values": _round(example["activations"]),
    }


def _band_bounds(label: str) -> tuple[float, float] | None:
    found = re.match(r"([\d.]+)-([\d.]+)% of max", label)
    return (float(found.group(1)) / 100, float(found.group(2)) / 100) if found else None


def neuronpedia_feature(
    doc: dict[str, Any],
    *,
    n_tokens: int,
    n_prompts: int | None = None,
    tokens_per_prompt: int | None = None,
    dataset: str | None = None,
) -> dict[str, Any]:
    """One `features` document as a Neuronpedia dashboard feature."""
    fmax = float(doc["max_activation"])
    hist = doc.get("histogram") or {}
    edges = hist.get("edges", [])
    activations = [_activation(ex, -1, fmax, -1) for ex in doc.get("top_examples", [])]
    for band in doc.get("band_examples", []):
        bounds = _band_bounds(band["band"])
        if band["band"] == NON_ACTIVATING or bounds is None:
            continue  # Neuronpedia shows activating examples only
        lo, hi = bounds[0] * fmax, bounds[1] * fmax
        contains = band_fraction(hist, lo, hi)
        activations += [_activation(ex, lo, hi, contains) for ex in band["examples"]]
    logits = doc.get("logits") or {}
    logit_hist = logits.get("histogram") or {}
    logit_edges = logit_hist.get("edges", [])
    out = {
        "feature_index": int(doc["index"]),
        "neg_str": [t["token"] for t in logits.get("bottom", [])],
        "neg_values": _round(t["value"] for t in logits.get("bottom", [])),
        "pos_str": [t["token"] for t in logits.get("top", [])],
        "pos_values": _round(t["value"] for t in logits.get("top", [])),
        "frac_nonzero": float(doc["act_frequency"]),
        "freq_hist_data_bar_values": _round((a + b) / 2 for a, b in zip(edges, edges[1:], strict=False)),
        "freq_hist_data_bar_heights": [int(c) for c in hist.get("counts", [])],
        # The decoder direction's logits over the vocabulary (empty from an older analysis).
        "logits_hist_data_bar_heights": [int(c) for c in logit_hist.get("counts", [])],
        "logits_hist_data_bar_values": _round(
            (a + b) / 2 for a, b in zip(logit_edges, logit_edges[1:], strict=False)
        ),
        "num_tokens_for_dashboard": int(n_tokens),
        "activations": activations,
    }
    if n_prompts is not None:
        out["n_prompts_total"] = int(n_prompts)
    if tokens_per_prompt is not None:
        out["n_tokens_in_prompt"] = int(tokens_per_prompt)
    if dataset is not None:
        out["dataset"] = dataset
    return out


def _feature_docs(store: Store, sae: dict[str, Any], per_batch: int) -> Iterator[list[dict[str, Any]]]:
    """The SAE's feature documents (of the analysis its document names) in index order,
    one bounded index range per batch."""
    sae_id, d_sae = sae["_id"], int(sae["d_sae"])
    for lo in range(0, d_sae, per_batch):
        hi = min(lo + per_batch, d_sae)
        docs = sorted(
            store.features.find({**feature_filter(sae), "index": {"$gte": lo, "$lt": hi}}, {"_id": 0}),
            key=lambda d: d["index"],
        )
        if len(docs) != hi - lo:
            missing = sorted(set(range(lo, hi)) - {d["index"] for d in docs})
            raise LookupError(
                f"SAE {sae_id!r}: features {missing[:10]} are missing from the store "
                f"(analysis unfinished?); rerun `python -m raysae.analyze`"
            )
        yield docs


def export_neuronpedia(
    store: Store,
    sae_id: str,
    out: filesystem.Location,
    *,
    model_id: str | None = None,
    sae_set: str | None = None,
    layer: int | None = None,
    features_per_batch: int = 128,
) -> list[str]:
    """Write `out/batch-<n>.json` (a local folder or an object-store URI) for every feature of
    `sae_id`; returns the files."""
    sae = store.saes.find_one({"_id": sae_id})
    if sae is None:
        known = [d["_id"] for d in store.saes.find({}, {"_id": 1}).limit(20)]
        raise LookupError(f"no SAE {sae_id!r} in the store; it has: {', '.join(known) or 'none'}")
    analysis = sae.get("analysis") or {}
    if not analysis.get("finished_at"):
        raise LookupError(f"SAE {sae_id!r}: its analysis has not finished writing; rerun it first")
    data = (sae.get("config") or {}).get("data") or {}
    meta = {
        "model_id": model_id or str(sae.get("model", "model")).rstrip("/").split("/")[-1].lower(),
        "layer": layer_of(sae.get("hook_point", "")) if layer is None else layer,
        "sae_set": sae_set or f"raysae-{sae.get('name', 'sae')}",
    }
    settings = {
        "n_batches_to_sample_from": None,
        "n_prompt_to_select": analysis.get("n_contexts"),
        "hook_point": sae.get("hook_point"),
        "raysae_sae_id": sae_id,
        "n_tokens_analysed": analysis.get("n_tokens"),  # the key earlier exports wrote
    }
    filesystem.make_dirs(out)
    files = []
    for n, docs in enumerate(_feature_docs(store, sae, features_per_batch)):
        features = [
            neuronpedia_feature(
                d,
                n_tokens=analysis.get("n_tokens", 0),
                n_prompts=analysis.get("n_contexts"),
                tokens_per_prompt=data.get("context_size"),
                dataset=data.get("path"),
            )
            for d in docs
        ]
        path = filesystem.join(out, f"batch-{n}.json")  # written whole or not at all
        filesystem.write_bytes(
            path, json.dumps({**meta, "features": features, "settings": settings}).encode()
        )
        files.append(path)
    return files
