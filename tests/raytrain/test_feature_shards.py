"""Feature sharding without Ray: gloo processes holding slices of one cross-layer transcoder's
features (`raysae.raytrain.feature_shards`) step through `SAETrainer.step` and train what one
process trains on the whole batches: 2 and 4 shards, and 2 shards x 2 replicas (each replica on
its half of every global batch). A checkpoint written per shard by 2 shards reloads on 1 and 4.

Tolerance: the shards sum their partial reconstructions (and the clipping norm's squares) in
another order than one process's single matmul, so results differ by fp32 rounding (~1e-7
relative per operation); Adam divides each update by the gradient's own scale, so those relative
differences stay relative through the 5 steps (measured: weights 1.2e-7 at most, losses of ~100
2 ulp = 1.5e-5). Weights are compared at rtol 1e-4 / atol 1e-5, as
tests/training/test_data_parallel.py does for data parallelism, losses at rtol 1e-5: one feature
selected differently, or a gradient counted twice or not at all, moves weights by ~lr = 1e-2
(each of those mistakes, made on purpose, fails these tests).
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from raysae.config import SAEConfig, TrainConfig
from raysae.models.multilayer import Unsharded
from raysae.models.multilayer import _sharded_dim as sharded_dim
from raysae.raytrain.feature_shards import (
    DistributedComm,
    ShardLayout,
    build_shard,
    gather_state,
    gather_trainer_state,
    load_shard_files,
    save_shard,
    state_for_shard,
    trainer_state_for_shard,
    wrap_replicas,
)
from raysae.training import SAETrainer

L, D, F, BATCH, STEPS = 3, 16, 64, 64, 5
ARCHITECTURES = ["topk", "jumprelu"]
RTOL, ATOL = 1e-4, 1e-5
LOSS_RTOL = 1e-5  # losses are ~100 in fp32: a few ulp (measured 2: 1.5e-5 absolute)


def clt_config(arch: str) -> SAEConfig:
    """A small CLT: 64 features per layer; topk keeps 4 per layer per token, and features dead after
    2 steps bring AuxK in (exact across shards too)."""
    return SAEConfig(
        kind="clt", architecture=arch, d_sae=F, k=4, seed=3, dead_tokens_threshold=128, l0_coefficient=0.05
    )


def train_config() -> TrainConfig:
    """STEPS steps of BATCH rows, clipping on (its norm spans every shard)."""
    return TrainConfig(
        total_tokens=BATCH * STEPS, batch_size=BATCH, lr=1e-2, grad_clip_norm=0.5, log_every_steps=10_000
    )


def global_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """STEPS (inputs [BATCH, L, D], targets [BATCH, L, D]): targets a fixed causal map of the
    inputs (layer t reads layers <= t) plus noise, so the CLT has something to fit."""
    gen = torch.Generator().manual_seed(11)
    maps = torch.randn(L, L, D, D, generator=gen) / D**0.5
    out = []
    for _ in range(STEPS):
        x = torch.randn(BATCH, L, D, generator=gen)
        y = torch.stack([sum(x[:, s] @ maps[s, t] for s in range(t + 1)) for t in range(L)], 1)
        out.append((x, y + 0.1 * torch.randn(BATCH, L, D, generator=gen)))
    return out


def eval_inputs() -> torch.Tensor:
    """Rows no run trains on, for comparing reconstructions."""
    return torch.randn(32, L, D, generator=torch.Generator().manual_seed(12))


def train(
    arch: str, comm, replica: int = 0, replicas: int = 1, *, on_step=None
) -> tuple[list[float], object]:
    """STEPS steps of this shard's model on this replica's part of each global batch; the losses
    (averaged over the replicas: the global batch's loss) and the model. `on_step(step, trainer)`
    is called after each step."""
    model = build_shard(clt_config(arch), D, D, n_layers=L, comm=comm)
    data = global_batches()
    model.initialize_from_batch(*data[0])  # what share_init_rows gives every rank: the whole batch
    module = wrap_replicas(model, comm, torch.device("cpu")) if replicas > 1 else None
    trainer = SAETrainer(model, train_config(), module=module)  # type: ignore[arg-type]
    return run_steps(trainer, data, comm, replica, replicas, on_step=on_step), model


def run_steps(trainer, data, comm, replica=0, replicas=1, *, on_step=None) -> list[float]:
    """Step `trainer` on this replica's rows of each of `data`; the global batches' losses."""
    rows = slice(replica * BATCH // replicas, (replica + 1) * BATCH // replicas)
    losses = []
    for x, y in data:
        loss = trainer.step((x[rows], y[rows])).loss.clone()
        if replicas > 1:
            dist.all_reduce(loss, group=comm.replica_group)
        losses.append(float(loss) / replicas)
        if on_step is not None:
            on_step(trainer.steps, trainer)
    return losses


RESUME_AT = 3
"""The 2-shard TopK run's checkpoint step, which 4 shards resume from."""


def _copies_agree(state: dict[str, torch.Tensor], group) -> bool:
    """Whether every rank of `group` holds bit-identical `state`."""
    states: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(states, state, group=group)
    return all(torch.equal(s[k], state[k]) for s in states for k in state)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        layouts = [ShardLayout(world, 1)] + ([ShardLayout(2, 2)] if world == 4 else [])
        results: dict = {}
        for layout in layouts:
            comm = DistributedComm(layout.new_groups())
            for arch in ARCHITECTURES:
                checkpoint = layout == ShardLayout(2, 1) and arch == "topk"

                def keep(step, trainer, comm=comm):
                    if step == RESUME_AT:  # the whole model and Adam, as one worker's
                        results["resume"] = (
                            gather_state(trainer.sae, comm),
                            gather_trainer_state(trainer, comm),
                        )

                losses, model = train(
                    arch, comm, comm.groups.replica, layout.replicas, on_step=keep if checkpoint else None
                )
                local = {k: v.detach().clone() for k, v in model.state_dict().items()}
                replicated = {k: v for k, v in local.items() if sharded_dim(k) is None}
                results[layout.shards, layout.replicas, arch] = {
                    "losses": losses,
                    "state": gather_state(model, comm),
                    "replicas_agree": _copies_agree(local, comm.replica_group),
                    "shards_agree": _copies_agree(replicated, comm.shard_group),
                }
                if checkpoint:
                    save_shard(model, f"{out}/checkpoint", comm.index, comm.shards)
                    results["recon_2"] = reconstruct(model)
        if world == 4:
            comm = DistributedComm(ShardLayout(4, 1).new_groups())
            # the 2-shard checkpoint files reload on 4 shards
            model = build_shard(clt_config("topk"), D, D, n_layers=L, comm=comm)
            model.load_state_dict(state_for_shard(load_shard_files(f"{out}/checkpoint"), comm.index, 4))
            results["recon_4"] = reconstruct(model)
            # and the 2-shard run's state at step RESUME_AT trains on, on 4 shards
            sae_state, trainer_state = torch.load(f"{out}/world2.pt", weights_only=False)["resume"]
            model = build_shard(clt_config("topk"), D, D, n_layers=L, comm=comm)
            model.load_state_dict(state_for_shard(sae_state, comm.index, 4))
            trainer = SAETrainer(model, train_config())  # type: ignore[arg-type]
            trainer.load_state_dict(trainer_state_for_shard(trainer_state, model, comm.index, 4))
            losses = run_steps(trainer, global_batches()[RESUME_AT:], comm)
            results["resumed_4"] = {"losses": losses, "state": gather_state(model, comm)}
        if rank == 0:
            torch.save(results, f"{out}/world{world}.pt")
    finally:
        dist.destroy_process_group()


def reconstruct(model) -> torch.Tensor:
    """The model's output on `eval_inputs`, in eval mode (the exact top-k across its shards)."""
    model.eval()
    with torch.no_grad():
        return model.reconstruct(eval_inputs())


def _spawn(world: int, out) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(world, port, str(out)), nprocs=world, join=True)
    return torch.load(out / f"world{world}.pt", weights_only=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[dict, object]:
    """Every sharded run's results (2 shards first: the 4-rank spawn reloads its checkpoint)."""
    out = tmp_path_factory.mktemp("shards")
    return {**_spawn(2, out), **_spawn(4, out)}, out


@pytest.fixture(scope="module")
def alone() -> dict:
    """One process, unsharded, whole batches: the reference."""
    torch.set_num_threads(1)
    results = {}
    for arch in ARCHITECTURES:
        losses, model = train(arch, Unsharded())
        results[arch] = {
            "losses": losses,
            "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        }
    return results


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("layout", [(2, 1), (4, 1), (2, 2)], ids=["2x1", "4x1", "2x2"])
def test_sharded_training_equals_one_worker(runs, alone, arch, layout):
    ours, ref = runs[0][(*layout, arch)], alone[arch]
    torch.testing.assert_close(
        torch.tensor(ours["losses"]), torch.tensor(ref["losses"]), rtol=LOSS_RTOL, atol=0
    )
    assert ours["state"].keys() == ref["state"].keys()
    for name, tensor in ref["state"].items():
        if name == "tokens_since_fired":  # counts: exact
            assert torch.equal(ours["state"][name], tensor), name
        else:
            torch.testing.assert_close(ours["state"][name], tensor, rtol=RTOL, atol=ATOL, msg=name)
    # and the training moved the weights far more than the tolerance
    moved = max((ref["state"][n] - build_state(arch)[n]).abs().max() for n in ("W_enc", "b_dec"))
    assert moved > 100 * ATOL


def build_state(arch: str) -> dict[str, torch.Tensor]:
    """The untrained one-worker state."""
    return build_shard(clt_config(arch), D, D, n_layers=L, comm=Unsharded()).state_dict()


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("layout", [(2, 1), (4, 1), (2, 2)], ids=["2x1", "4x1", "2x2"])
def test_copies_stay_identical(runs, arch, layout):
    """Replicas of a shard hold the same slice; shards of a replica the same replicated tensors."""
    assert runs[0][(*layout, arch)]["replicas_agree"]
    assert runs[0][(*layout, arch)]["shards_agree"]


def test_two_shard_checkpoint_reloads_on_one_and_four(runs):
    results, out = runs
    full = load_shard_files(out / "checkpoint")
    # the per-shard files hold exactly what gather_state merged
    for name, tensor in results[2, 1, "topk"]["state"].items():
        assert torch.equal(full[name], tensor), name
    one = build_shard(clt_config("topk"), D, D, n_layers=L, comm=Unsharded())
    one.load_state_dict(state_for_shard(full, 0, 1))
    recon_1 = reconstruct(one)
    assert recon_1.abs().max() > 0.1
    torch.testing.assert_close(results["recon_2"], recon_1, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(results["recon_4"], recon_1, rtol=RTOL, atol=ATOL)


def test_two_shard_run_resumes_on_four(runs, alone):
    """Model and Adam state gathered from 2 shards mid-run, cut for 4, train on as one worker."""
    ours, ref = runs[0]["resumed_4"], alone["topk"]
    torch.testing.assert_close(
        torch.tensor(ours["losses"]), torch.tensor(ref["losses"][RESUME_AT:]), rtol=LOSS_RTOL, atol=0
    )
    for name, tensor in ref["state"].items():
        torch.testing.assert_close(
            ours["state"][name].to(tensor.dtype), tensor, rtol=RTOL, atol=ATOL, msg=name
        )


def test_layout_places_ranks():
    layout = ShardLayout.for_world(6, 3)
    assert (layout.shards, layout.replicas) == (3, 2)
    assert [layout.shard_of(r) for r in range(6)] == [0, 1, 2, 0, 1, 2]
    assert [layout.replica_of(r) for r in range(6)] == [0, 0, 0, 1, 1, 1]
    assert layout.shard_group_ranks(1) == [3, 4, 5]
    assert layout.replica_group_ranks(2) == [2, 5]
    with pytest.raises(ValueError, match="train.feature_shards"):
        ShardLayout.for_world(6, 4)


def test_missing_shard_file_is_named(tmp_path):
    model = build_shard(clt_config("topk"), D, D, n_layers=L, comm=Unsharded())
    save_shard(model, tmp_path, 0, 2)
    with pytest.raises(FileNotFoundError, match="shard-1-of-2.safetensors"):
        load_shard_files(tmp_path)
