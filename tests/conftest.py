"""Shared fixtures: one local Ray, a small local corpus with a real word-level tokenizer, planted data."""

import os
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# No hub access in tests: everything comes from the repo or from files the tests make.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="raysae-hf-"))

import pytest
import torch

from raysae.config import SAEConfig, TrainConfig
from raysae.synthetic import PlantedDictionary

WORDS = (
    "the king queen speaks to a fool in castle night storm crown sword love death friend "
    "enemy whispers laughs sleeps dreams of gold and blood under stars while rain falls"
).split()


def write_corpus(root, n_docs: int, seed: int = 0):
    """`n_docs` text files of random sentences over WORDS (about 330 tokens each)."""
    rng = random.Random(seed)
    for i in range(n_docs):
        sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + "." for _ in range(40)]
        (root / f"doc{i:02d}.txt").write_text(" ".join(sentences))
    return root


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    """A small local corpus: 12 documents of random sentences."""
    return write_corpus(tmp_path_factory.mktemp("corpus"), 12)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, corpus_dir):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["<unk>", "<bos>", "<eos>"])
    tok.train([str(p) for p in sorted(corpus_dir.glob("*.txt"))], trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    out = tmp_path_factory.mktemp("tokenizer")
    wrapped.save_pretrained(out)
    return out


def command_on_test_ray(module: str, config_file, ray_local, **popen_kwargs) -> subprocess.Popen:
    """`python -m <module> CONFIG` as a subprocess joined to the test run's Ray (`ray_local`), in a
    session of its own, so that a signal sent to it never reaches the test's process group."""
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    env.pop("RAYSAE_VERBOSE", None)  # the commands' default output, whatever a test left behind
    return subprocess.Popen(
        [sys.executable, "-m", module, str(config_file)], env=env, start_new_session=True, **popen_kwargs
    )


def start_browser(folder, database: str) -> tuple[subprocess.Popen, str]:
    """`python -m raysae.dashboard --store FOLDER` on a free port; (the process, its URL)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "raysae.dashboard",
            "--store",
            str(folder),
            "--port",
            "0",
            "--database",
            database,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = re.search(r"(http://127\.0\.0\.1:\d+)", line)
    if not found:
        proc.kill()
        pytest.fail(f"the browser did not start: {line}{proc.stdout.read()}")
    return proc, found.group(1)


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """One local Ray for the whole test run, never a leftover cluster. It starts after the
    local S3, so that its worker processes inherit the S3 address and keys."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """A local S3 (moto) for the whole test run; S3 tests never talk to AWS. Its address and
    dummy keys go into the environment, where pyarrow's S3 filesystem reads them (in this
    process and in the Ray workers, which inherit them: see `ray_local`)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://{host}:{port}",
        AWS_ACCESS_KEY_ID="raysae-test",
        AWS_SECRET_ACCESS_KEY="raysae-test-secret",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        os.environ.pop(name, None)
    yield os.environ["AWS_ENDPOINT_URL"]
    server.stop()


@pytest.fixture(scope="session")
def new_bucket(s3_server):
    """`new_bucket(label)`: `s3://<a fresh bucket>` on the local S3."""
    import re
    import uuid

    import boto3

    client = boto3.client("s3", endpoint_url=s3_server)

    def make(label: str) -> str:
        name = (
            "raysae-"
            + re.sub(r"[^a-z0-9-]+", "-", label.lower())[:40].strip("-")
            + f"-{uuid.uuid4().hex[:8]}"
        )
        client.create_bucket(Bucket=name)
        return f"s3://{name}"

    return make


@pytest.fixture
def s3_bucket(new_bucket, request):
    """`s3://<a fresh bucket>` on the local S3, for one test."""
    return new_bucket(request.node.name)


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    torch.set_num_threads(2)


@pytest.fixture
def planted() -> PlantedDictionary:
    """64-d activations from 128 planted atoms, ~4 active per token, an offset and noise."""
    return PlantedDictionary(d_in=64, n_atoms=128, mean_active=4, seed=1)


def small_sae_config(architecture: str, **kw) -> SAEConfig:
    base = dict(architecture=architecture, d_sae=256, k=4, dead_tokens_threshold=20_000)
    return SAEConfig(**{**base, **kw})


def small_train_config(**kw) -> TrainConfig:
    base = dict(total_tokens=200_000, batch_size=1024, lr=3e-3, log_every_steps=10_000)
    return TrainConfig(**{**base, **kw})


def tiny_model_overrides(root: Path, tokenizer_dir, corpus: Path) -> list[str]:
    """The `--set` overrides of the tests' tiny random model, corpus and training cache (under
    `root`); a test adds its own SAE, training and analysis settings."""
    return [
        f"output_dir={root / 'runs'}",
        "model.name=random",
        f"model.tokenizer={tokenizer_dir}",
        "model.random.d_model=32",
        "model.random.n_layers=2",
        "model.random.n_heads=4",
        "model.hook_point=blocks.1.hook_resid_post",
        f"data.path={corpus}",
        "data.context_size=16",
        f"activations.cache_dir={root / 'cache'}",
        "activations.n_tokens=16384",
        "activations.shard_rows=1024",
    ]


@pytest.fixture(scope="session")
def train_config(tmp_path_factory, tokenizer_dir, ray_local):
    """`make(name, *overrides)`: a config training a small TopK SAE on the shared tiny cache."""
    from raysae.activations import generate_caches
    from raysae.config import load_config

    root = tmp_path_factory.mktemp("training")
    (root / "corpus").mkdir()
    corpus = write_corpus(root / "corpus", 80, seed=1)

    def make(name, *overrides):
        return load_config(
            None,
            [
                f"name={name}",
                *tiny_model_overrides(root, tokenizer_dir, corpus),
                "activations.model_batch_size=64",
                "sae.expansion_factor=4",
                "sae.k=4",
                "sae.dead_tokens_threshold=4096",
                "train.total_tokens=8192",
                "train.batch_size=256",
                "train.lr=0.003",
                "train.init_tokens=1024",
                "train.eval_tokens=2048",
                "train.ce_contexts=4",
                "train.log_every_steps=8",
                "train.checkpoint_every_tokens=2048",
                "activations.n_contexts=32",
                "analysis.n_tokens=480",
                "analysis.actors.cpus=0.5",
                "analysis.batch_contexts=8",
                "store.database=raysae_test",
                *overrides,
            ],
        )

    generate_caches(make("cache"))
    return make


HTML_PAYLOAD = "<script>window.pwned=1</script>"
"""A corpus 'word' that would run if the browser printed corpus text unescaped."""


@pytest.fixture(scope="session")
def browsed_run(tmp_path_factory, train_config):
    """A real tiny analysis of two SAEs, on a corpus whose text contains HTML, in an
    embedded store, with the sweep's ranking and Pareto plot. (cfg, run directory, store folder)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from raysae import build_sae
    from raysae.analysis import analyze
    from raysae.checkpoint import save_sae
    from raysae.config.resolve import store_uri
    from raysae.run_dir import RunDir
    from raysae.store import open_store
    from raysae.sweep.pareto_plot import pareto_png, sweep_document

    root = tmp_path_factory.mktemp("browsed")
    corpus = root / "corpus"
    corpus.mkdir()
    rng = random.Random(5)
    for i in range(6):  # whitespace-separated words, so the payload is one token
        (corpus / f"doc{i}.txt").write_text(" ".join(rng.choice([*WORDS, HTML_PAYLOAD]) for _ in range(300)))
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train(
        [str(p) for p in sorted(corpus.glob("*.txt"))],
        trainers.WordLevelTrainer(special_tokens=["<unk>", "<bos>", "<eos>"]),
    )
    tokenizer = root / "tokenizer"
    PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    ).save_pretrained(tokenizer)

    cfg = train_config(
        "browse",
        f"data.path={corpus}",
        f"model.tokenizer={tokenizer}",
        "activations.n_contexts=40",
        "analysis.n_tokens=600",
        "analysis.actors.num=1",
        "analysis.top_examples=4",
        "analysis.band_examples=2",
        "analysis.logit_tokens=5",
    )
    run = RunDir.of(cfg)
    rows = []
    for trial, (architecture, fvu, l0) in enumerate([("topk", 0.5, 4.0), ("standard", 0.3, 9.0)]):
        torch.manual_seed(trial)
        # Different seeds: their decoders differ, so cross-SAE matches are not all 1.0.
        sae = build_sae(cfg.sae.model_copy(update={"architecture": architecture, "seed": trial}), 32)
        with torch.no_grad():
            sae.W_enc.normal_(0, 0.3)
        sae_id = f"browse/t00{trial}"
        metrics = {"fvu": fvu, "l0": l0, "dead_fraction": 0.0}
        save_sae(sae, run.sae(sae_id), config=cfg, record={"metrics": metrics})
        rows.append({"sae_id": sae_id, "architecture": architecture, **metrics})
    with open_store(store_uri(cfg), run.store, cfg.store, create=True) as store:
        store.put_sweep(sweep_document("browse", rows, metric="fvu", mode="min", png=pareto_png(rows)))
        analyze(cfg, [run.sae(r["sae_id"]) for r in rows], store=store)
    return cfg, Path(run.root), Path(run.store)


@pytest.fixture(scope="module")
def browsed_store(browsed_run):
    """The store `browsed_run` wrote, served for one test module (MONGODB_URI when set, else
    its embedded server, which only one process may run per folder)."""
    from raysae.store import open_store

    cfg, _, store_dir = browsed_run
    uri = os.environ.get("MONGODB_URI")
    with open_store(uri, store_dir, cfg.store) as store:
        yield store


@pytest.fixture(scope="session")
def offline_assets():
    """SmolLM2-135M and the Shakespeare corpus, prepared by `raysae assets`
    (idempotent, cached in ./assets)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parents[1]
    subprocess.run(
        [sys.executable, "-m", "raysae.assets", "--only", "smollm2", "--only", "shakespeare"],
        cwd=root,
        check=True,
        timeout=900,
    )
    return root / "assets"
