"""The store over TCP: the embedded Mongo-wire server (or a real mongod when MONGODB_URI is set)."""

import os
import threading
import time

import pytest

from raysae.store import EmbeddedServer, Store, StoreError
from raysae.store.embedded import free_port

REAL = os.environ.get("MONGODB_URI")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if REAL:
        yield None
        return
    srv = EmbeddedServer(tmp_path_factory.mktemp("store")).start()
    yield srv
    srv.stop()


@pytest.fixture
def store(server, request):
    uri = REAL or server.uri
    with Store(uri, f"raysae_test_{request.node.name[:40]}", timeout_s=2, retry_s=60, batch_size=50) as s:
        s.client.drop_database(s.db.name)
        s.ensure_indexes()
        yield s
        s.client.drop_database(s.db.name)


def docs(sae_id, n, tag=0):
    """Feature `i`'s document, built on demand as the analysis builds them."""
    return lambda i: {
        "sae_id": sae_id,
        "index": i,
        "act_frequency": i / n,
        "max_activation": float(tag),
        "top_examples": [{"tokens": ["a", "b"], "activations": [0.5, 1.0]}],
    }


def test_rewriting_replaces_and_a_narrower_sae_drops_stale_features(store):
    store.write_features("s/t0", docs("s/t0", 300), 300)
    store.write_features("s/t0", docs("s/t0", 300, tag=1), 300)
    assert store.features.count_documents({"sae_id": "s/t0"}) == 300
    assert store.features.count_documents({"sae_id": "s/t0", "max_activation": 1.0}) == 300
    store.write_features("s/t0", docs("s/t0", 200, tag=2), 200)
    assert sorted(d["index"] for d in store.features.find({"sae_id": "s/t0"})) == list(range(200))
    names = {tuple(k for k, _ in v["key"]) for v in store.features.index_information().values()}
    assert {
        ("sae_id", "generation", "index"),
        ("sae_id", "generation", "act_frequency"),
        ("sae_id", "generation", "max_activation"),
        ("sae_id", "generation", "peak_tokens"),
    } <= names


def test_features_peaking_on_a_token_are_an_index_lookup(store):
    """The multikey (sae_id, generation, peak_tokens) index answers "features whose top examples
    peak on token X" by reading only the matching keys."""
    words = ["a", "b", "c", "d", "e"]
    n = 200
    store.write_features(
        "s/t0", lambda i: {**docs("s/t0", n)(i), "peak_tokens": [words[i % 5], words[(i + 1) % 5]]}, n
    )
    generation = (store.features.find_one({"sae_id": "s/t0"}) or {})["generation"]
    query = {"sae_id": "s/t0", "generation": generation, "peak_tokens": "c"}
    found = sorted(d["index"] for d in store.features.find(query))
    assert found == [i for i in range(n) if "c" in (words[i % 5], words[(i + 1) % 5])]
    plan = str(store.features.find(query).explain())
    assert "sae_id_1_generation_1_peak_tokens_1" in plan
    stats = store.features.find(query).explain().get("executionStats", {})
    if "totalDocsExamined" in stats:  # not every server reports execution statistics
        assert stats["totalDocsExamined"] == len(found)


@pytest.mark.skipif(bool(REAL), reason="restarts the embedded server")
@pytest.mark.parametrize("kill", [False, True], ids=["stop", "kill"])
def test_server_stopped_mid_write_loses_and_duplicates_nothing(server, store, kill):
    restarted = threading.Event()

    def outage(written):
        if written == 200:  # a quarter in: stop the server, bring it back 3 s later (> timeout_s)
            server.stop(kill=kill)

            def later():
                time.sleep(3)
                server.start()
                restarted.set()

            threading.Thread(target=later, daemon=True).start()

    n = store.write_features("s/t1", docs("s/t1", 800), 800, on_batch=outage)
    assert restarted.is_set() and n == 800
    assert store.features.count_documents({"sae_id": "s/t1"}) == 800
    assert sorted(d["index"] for d in store.features.find({"sae_id": "s/t1"})) == list(range(800))


def test_malformed_uri_is_a_clear_error():
    for uri in ("mongodb://user:secret@host:notaport/", "http://localhost:27017", "mongodb://user:secret@/x"):
        with pytest.raises(StoreError, match="malformed") as err:
            Store(uri, timeout_s=1)
        assert "secret" not in str(err.value)


def test_unreachable_server_fails_within_the_timeout():
    started = time.monotonic()
    with pytest.raises(StoreError, match="cannot reach") as err:
        Store(f"mongodb://alice:hunter2@127.0.0.1:{free_port()}/?directConnection=true", timeout_s=1)
    assert time.monotonic() - started < 10
    assert "hunter2" not in str(err.value)


def test_embedded_server_keeps_data_across_restarts(tmp_path):
    with EmbeddedServer(tmp_path) as srv:
        with Store(srv.uri) as s:
            s.put_sae({"_id": "x/t0", "d_sae": 4})
    with EmbeddedServer(tmp_path) as srv, Store(srv.uri) as s:
        assert s.saes.find_one({"_id": "x/t0"})["d_sae"] == 4
    second = EmbeddedServer(tmp_path).start()
    try:
        with pytest.raises(StoreError, match=f"in use by another server, PID {second.process.pid} "):
            EmbeddedServer(tmp_path).start()  # one server per data folder
    finally:
        second.stop()
