"""Data parallelism without Ray: two gloo processes, each stepping on half of every batch,
train the same SAE as one process on whole batches (the math the Ray Train workers run)."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from raysae import build_sae
from raysae.synthetic import PlantedDictionary
from raysae.training import Member, Population, train_population
from tests.conftest import small_sae_config, small_train_config

ARCHITECTURES = ["standard", "topk", "jumprelu", "batchtopk"]
TOKENS = 12_000


def _train(arch: str, world: int, rank: int) -> dict:
    data = PlantedDictionary(d_in=64, n_atoms=128, mean_active=4, seed=1)
    sae = build_sae(small_sae_config(arch, dead_tokens_threshold=2_000), 64)
    module = DistributedDataParallel(sae, broadcast_buffers=False) if world > 1 else None
    population = Population([Member(sae, small_train_config(total_tokens=TOKENS), module=module)])

    def gather(rows):
        parts = [torch.empty_like(rows) for _ in range(world)]
        dist.all_gather(parts, rows)
        return torch.cat(parts)

    batches = (b.chunk(world)[rank] for b in data.batches(1000, TOKENS, seed=5))
    train_population(population, batches, init_tokens=2000, share_init_rows=gather if world > 1 else None)
    return {k: v.clone() for k, v in sae.state_dict().items()}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.save({arch: _train(arch, world, rank) for arch in ARCHITECTURES}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_workers_stay_identical(two_ranks, arch):
    for name, tensor in two_ranks[0][arch].items():
        assert torch.equal(two_ranks[1][arch][name], tensor), name


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu"])
def test_two_workers_train_what_one_trains(two_ranks, arch):
    torch.set_num_threads(1)
    alone = _train(arch, 1, 0)
    ours = two_ranks[0][arch]
    assert torch.equal(ours["tokens_since_fired"], alone["tokens_since_fired"])
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        torch.testing.assert_close(ours[name], alone[name], rtol=1e-4, atol=1e-5, msg=name)


def test_batchtopk_threshold_is_averaged_over_workers(two_ranks):
    # BatchTopK selects within each worker's half batch, so it is not the one-process run;
    # what must hold is one shared threshold, fed by every worker's batches.
    assert two_ranks[0]["batchtopk"]["threshold_updates"] == TOKENS // 1000
    assert float(two_ranks[0]["batchtopk"]["threshold"]) > 0
