"""Analysis on a 3-actor Ray Data pool into the store, against a single-process reference."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raysae import build_sae
from raysae.activations.cache import cache_dir, read_manifest, shard_paths
from raysae.activations.language_model import tokenizer_for
from raysae.analysis import analyze
from raysae.analysis.sources import analysis_config
from raysae.checkpoint import load_sae, save_sae
from raysae.run_dir import RunDir
from raysae.store import EmbeddedServer, Store

CONTEXTS = 40  # of 16 tokens, BOS excluded: 600 analyzed tokens


@pytest.fixture(scope="module")
def analyzed(train_config):
    cfg = train_config(
        "analysis",
        "activations.n_contexts=48",
        f"analysis.n_tokens={CONTEXTS * 15}",
        "analysis.actors.num=3",
        "analysis.actors.cpus=0.25",
        "analysis.batch_contexts=3",
        "analysis.top_examples=5",
        "analysis.band_examples=2",
        "analysis.histogram_bins=6",
        "analysis.window_before=4",
        "analysis.window_after=2",
        "analysis.logit_tokens=3",
    )
    torch.manual_seed(0)
    sae = build_sae(cfg.sae, 32)
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.3)
    sae_dir = save_sae(
        sae,
        Path(RunDir.of(cfg).root) / "saes" / "analysis" / "t000",
        config=cfg,
        record={"metrics": {"fvu": 0.5, "l0": 4.0}},
    )
    summaries = analyze(cfg, [sae_dir])
    return cfg, sae_dir, summaries


@pytest.fixture
def store(analyzed):
    """The store the analysis wrote to (its embedded server runs only inside this fixture)."""
    cfg, _, _ = analyzed
    if os.environ.get("MONGODB_URI"):
        with Store(os.environ["MONGODB_URI"], cfg.store.database) as s:
            yield s
        return
    with EmbeddedServer(Path(RunDir.of(cfg).root) / "store") as srv, Store(srv.uri, cfg.store.database) as s:
        yield s


def reference(cfg, sae_dir):
    """Feature activations of the analyzed contexts, encoded in this process."""
    directory = cache_dir(analysis_config(cfg, {}), cfg.model.hook_point, "contexts")
    manifest = read_manifest(directory)
    table = pa.concat_tables([pq.read_table(path) for path in shard_paths(directory, manifest["shards"])])
    table = table.sort_by("context_id").slice(0, CONTEXTS)
    tokens = np.stack(table["tokens"].to_numpy(zero_copy_only=False)).reshape(CONTEXTS, -1)
    acts = np.stack(table["acts"].to_numpy(zero_copy_only=False)).reshape(*tokens.shape, -1)
    acts = torch.as_tensor(acts.astype(np.float32))
    sae = load_sae(sae_dir)
    with torch.no_grad():
        f = sae.encode(acts.reshape(-1, acts.shape[-1])).reshape(*tokens.shape, -1).numpy()
    bos = tokenizer_for(cfg).bos_token_id
    f = f * (tokens != bos)[..., None]
    return f, tokens, table["context_id"].to_numpy(), tokens != bos


def test_statistics_equal_a_single_process_reference(analyzed, store):
    cfg, sae_dir, summaries = analyzed
    f, tokens, ids, keep = reference(cfg, sae_dir)
    flat = f[keep]
    tokenizer = tokenizer_for(cfg)
    d_sae = f.shape[-1]
    assert summaries[0]["n_tokens"] == keep.sum() == CONTEXTS * 15
    assert summaries[0]["actors"] == 3  # the work was spread over the whole pool
    docs = {d["index"]: d for d in store.features.find({"sae_id": "analysis/t000"})}
    assert sorted(docs) == list(range(d_sae))
    checked_examples = 0
    for i, doc in docs.items():
        active = flat[:, i] > 0
        assert doc["act_frequency"] == active.mean()
        assert doc["max_activation"] == float(flat[:, i].max())
        assert doc["mean_activation"] == pytest.approx(
            flat[active, i].astype(np.float64).mean() if active.any() else 0.0, rel=1e-9
        )
        edges = np.linspace(0.0, float(flat[:, i].max()), 7)
        assert doc["histogram"]["edges"] == edges.tolist()
        assert (
            doc["histogram"]["counts"]
            == np.histogram(flat[active, i].astype(np.float64), bins=edges)[0].tolist()
        )
        peak = f[:, :, i].max(1)
        expected = sorted((c for c in range(CONTEXTS) if peak[c] > 0), key=lambda c: (-peak[c], ids[c]))[:5]
        assert [e["context_id"] for e in doc["top_examples"]] == [int(ids[c]) for c in expected]
        for e, c in zip(doc["top_examples"], expected, strict=True):
            p = int(np.argmax(f[c, :, i]))
            lo, hi = max(p - 4, 0), min(p + 2, tokens.shape[1] - 1)
            assert e["max_activation"] == float(peak[c]) and e["peak"] == p - lo
            assert e["tokens"] == [tokenizer.decode([int(t)]) for t in tokens[c, lo : hi + 1]]
            assert e["activations"] == [float(v) for v in f[c, lo : hi + 1, i]]
            checked_examples += 1
        peaks = [tokenizer.decode([int(tokens[c, np.argmax(f[c, :, i])])]) for c in expected]
        assert doc["peak_tokens"] == list(dict.fromkeys(peaks))
        assert [b["band"] for b in doc["band_examples"]] == [
            "80-100% of max",
            "40-60% of max",
            "0-20% of max",
            "non-activating",
        ]
        assert len(doc["logits"]["top"]) == len(doc["logits"]["bottom"]) == 3
        assert sum(doc["logits"]["histogram"]["counts"]) == len(tokenizer)
        assert len(doc["logits"]["histogram"]["edges"]) == 41  # analysis.logit_bins + 1
        assert len(doc["neighbours"]) == 10 and doc["matches"] == []  # a sweep of one SAE
    assert checked_examples > d_sae  # most features fire in several contexts


def test_sae_document_lists_metrics_and_checkpoint(analyzed, store):
    _, sae_dir, _ = analyzed
    doc = store.saes.find_one({"_id": "analysis/t000"})
    assert doc["metrics"]["fvu"] == 0.5 and doc["checkpoint"] == str(sae_dir.resolve())
    assert (
        doc["d_sae"] == 128 and doc["architecture"] == "topk" and doc["analysis"]["n_tokens"] == CONTEXTS * 15
    )
    assert doc["analysis"]["finished_at"] is not None


def test_rerun_leaves_one_document_per_feature(analyzed, request):
    cfg, sae_dir, _ = analyzed
    analyze(cfg, [sae_dir])
    s = request.getfixturevalue("store")
    assert s.features.count_documents({"sae_id": "analysis/t000"}) == 128
    assert len(s.features.distinct("index", {"sae_id": "analysis/t000"})) == 128


def test_cli_names_a_missing_sae_directory(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "raysae.analyze", "--sae", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "nope" in proc.stderr and "Traceback" not in proc.stderr


def test_live_activations_give_the_same_features_as_the_cache(analyzed, store):
    """`activations.source: live` generates the same contexts on the fly: the same statistics
    (to float rounding: the model runs them in batches of another size than the cache did)."""
    cfg, sae_dir, _ = analyzed
    cached = {d["index"]: d for d in store.features.find({"sae_id": "analysis/t000"}, {"_id": 0})}
    store.close()
    live = cfg.model_copy(
        update={"activations": cfg.activations.model_copy(update={"source": "live"}), "name": "analysis-live"}
    )
    summary = analyze(live, [sae_dir])[0]
    assert summary["n_tokens"] == CONTEXTS * 15
    with (
        EmbeddedServer(Path(RunDir.of(live).root) / "store") as srv,
        Store(os.environ.get("MONGODB_URI") or srv.uri, cfg.store.database) as s,
    ):
        docs = list(s.features.find({"sae_id": "analysis/t000"}, {"_id": 0}))
    assert len(docs) == len(cached)
    same_top = 0
    for doc in docs:
        ref = cached[doc["index"]]
        assert doc["act_frequency"] == pytest.approx(ref["act_frequency"], abs=2 / 600)
        assert doc["max_activation"] == pytest.approx(ref["max_activation"], rel=1e-4, abs=1e-6)
        same_top += [e["context_id"] for e in doc["top_examples"]] == [
            e["context_id"] for e in ref["top_examples"]
        ]
    assert same_top >= 0.95 * len(docs)
