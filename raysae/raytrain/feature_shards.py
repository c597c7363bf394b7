"""Feature sharding over torch.distributed: a multi-layer dictionary's features split across workers.

With `train.feature_shards = N` the workers form `N x replicas` ranks (`ShardLayout`): rank `r` is
feature shard `r % N` of data-parallel replica `r // N`. The N shards of one replica (its *shard
group*) read the same rows; each holds a contiguous slice of every layer's features (encoder
columns, decoder rows, thresholds, dead counts) and only that slice's Adam state. The models do the
math against `raysae.models.multilayer.FeatureComm`; `DistributedComm` is that protocol over the
shard group: `gather` (top-k candidates, in shard order) and `reduce` (partial reconstructions and
penalties, summed, with an identity backward since every shard computes the same loss from the
summed result, so each shard's partial output receives the whole gradient exactly once). The
replicas of one shard (its *replica group*) average gradients (`wrap_replicas`: DDP over that
group) and sum the running statistics of their common features (`raysae.training.step`).

Every shard count starts from the same weights (`build_shard`: the full model from the seed, then
this shard's slice), and checkpoints are shard-count free: `gather_state` merges the shards' states
into the one-worker state, `state_for_shard` cuts any full state for any shard count, and
`save_shard`/`load_shard_files` write and read `shard-{i}-of-{n}.safetensors` per shard. Adam's
moments are cut like their parameters (`gather_trainer_state`, `trainer_state_for_shard`), so a
run checkpointed on N shards resumes on M and trains on as one worker would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from raysae.errors import ConfigError
from raysae.models import build_sae
from raysae.models.multilayer import merge_states, split_state

SHARD_FILE = "shard-{index}-of-{shards}.safetensors"
"""One shard's state in a per-shard checkpoint folder."""
_SHARD_FILE_RE = re.compile(r"shard-(\d+)-of-(\d+)\.safetensors")


@dataclass(frozen=True)
class ShardLayout:
    """How `shards * replicas` ranks split the work: rank `r` is shard `r % shards` of replica
    `r // shards`, so the shards of one replica are neighbouring ranks."""

    shards: int
    """Feature shards per replica (`train.feature_shards`)."""
    replicas: int
    """Data-parallel replicas; each reads its own part of every global batch."""

    def __post_init__(self) -> None:
        if self.shards < 1 or self.replicas < 1:
            raise ValueError(f"a layout needs at least one shard and one replica, got {self}")

    @classmethod
    def for_world(cls, world: int, shards: int) -> ShardLayout:
        """The layout of `world` workers with `shards` feature shards each; a clear error when
        the shards do not divide the workers."""
        if shards < 1 or world % shards:
            raise ConfigError(
                [
                    (
                        "train.feature_shards",
                        f"{shards} feature shards do not divide the {world} workers (train.workers.num)",
                    )
                ]
            )
        return cls(shards, world // shards)

    @property
    def world(self) -> int:
        """All ranks: shards times replicas."""
        return self.shards * self.replicas

    def shard_of(self, rank: int) -> int:
        """The feature shard rank `rank` holds."""
        return rank % self.shards

    def replica_of(self, rank: int) -> int:
        """The data-parallel replica rank `rank` belongs to."""
        return rank // self.shards

    def shard_group_ranks(self, replica: int) -> list[int]:
        """The ranks holding replica `replica`'s shards, in shard order."""
        return [replica * self.shards + i for i in range(self.shards)]

    def replica_group_ranks(self, shard: int) -> list[int]:
        """The ranks holding shard `shard`, one per replica, in replica order."""
        return [r * self.shards + shard for r in range(self.replicas)]

    def new_groups(self, rank: int | None = None) -> ShardGroups:
        """Create every shard and replica group (collective: every rank of the world calls it,
        in the same order, as `dist.new_group` requires) and return this rank's two."""
        rank = dist.get_rank() if rank is None else rank
        if dist.get_world_size() != self.world:
            raise ValueError(
                f"the layout {self.shards} shards x {self.replicas} replicas needs {self.world} ranks, "
                f"torch.distributed has {dist.get_world_size()}"
            )
        shard_group = replica_group = None
        for replica in range(self.replicas):
            group = dist.new_group(self.shard_group_ranks(replica))
            if replica == self.replica_of(rank):
                shard_group = group
        for shard in range(self.shards):
            group = dist.new_group(self.replica_group_ranks(shard))
            if shard == self.shard_of(rank):
                replica_group = group
        assert shard_group is not None and replica_group is not None
        return ShardGroups(self, rank, shard_group, replica_group)


@dataclass(frozen=True)
class ShardGroups:
    """One rank's place in a `ShardLayout` and the two process groups it talks over."""

    layout: ShardLayout
    rank: int
    """Global rank."""
    shard_group: Any
    """The ranks of this rank's replica (every shard of it): gathers and sums over features."""
    replica_group: Any
    """The ranks holding this rank's shard (one per replica): gradient averaging, running state."""

    @property
    def index(self) -> int:
        """This rank's feature shard."""
        return self.layout.shard_of(self.rank)

    @property
    def replica(self) -> int:
        """This rank's data-parallel replica."""
        return self.layout.replica_of(self.rank)


class _SumOverShards(torch.autograd.Function):
    """All-reduce SUM forward, identity backward: the loss after the sum is the same on every
    shard, so the gradient each shard computes for its own partial term is already the whole one."""

    @staticmethod
    def forward(ctx, t: Tensor, group: Any) -> Tensor:  # type: ignore[override]
        out = t.detach().clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, *grads: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grads[0], None


class DistributedComm:
    """`raysae.models.multilayer.FeatureComm` over a shard group, plus the replica group the trainer
    averages over (`replica_group`, `replicas`: read by `raysae.training.step.SAETrainer`)."""

    def __init__(self, groups: ShardGroups):
        self.groups = groups
        self.shards = groups.layout.shards
        """Feature shards per replica."""
        self.index = groups.index
        """This worker's shard, 0-based."""
        self.shard_group = groups.shard_group
        self.replica_group = groups.replica_group
        """The data-parallel group of this shard (its copies in the other replicas)."""
        self.replicas = groups.layout.replicas

    def gather(self, t: Tensor) -> Tensor:
        """`t` of every shard concatenated along the last dim in shard order; no gradient."""
        t = t.detach().contiguous()
        if self.shards == 1:
            return t
        parts = [torch.empty_like(t) for _ in range(self.shards)]
        dist.all_gather(parts, t, group=self.shard_group)
        return torch.cat(parts, dim=-1)

    def reduce(self, t: Tensor) -> Tensor:
        """`t` summed over the shards; its backward is the identity (see `_SumOverShards`)."""
        if self.shards == 1:
            return t
        return _SumOverShards.apply(t, self.shard_group)  # type: ignore[return-value]


def build_shard(cfg: Any, d_in: int, d_out: int | None, *, n_layers: int, comm: Any) -> nn.Module:
    """The model of shard `comm.index` of `comm.shards`, its communicator set: the slice of the
    full model built from `sae.seed`, so every shard count starts from the same weights."""
    full = build_sae(cfg, d_in, d_out, n_layers=n_layers)
    if comm.shards == 1:
        model = full
    else:
        model = build_sae(cfg, d_in, d_out, n_layers=n_layers, shard=(comm.index, comm.shards))
        model.load_state_dict(state_for_shard(full.state_dict(), comm.index, comm.shards))
    model.comm = comm
    return model


def wrap_replicas(model: nn.Module, comm: DistributedComm, device: torch.device) -> nn.Module | None:
    """`DistributedDataParallel` averaging `model`'s gradients over its replica group (None with
    one replica). Buffers stay as the trainer keeps them (summed statistics), never broadcast."""
    if comm.replicas == 1:
        return None
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(
        model, device_ids=ids, broadcast_buffers=False, process_group=comm.replica_group
    )


def _cpu_state(model: nn.Module) -> dict[str, Tensor]:
    """A copy on the CPU (never the live tensors, which later steps change in place)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def gather_state(model: nn.Module, comm: Any) -> dict[str, Tensor]:
    """The full (one-worker) state of a sharded model, on the CPU of every shard of the replica
    (collective over the shard group). Costs one full copy per shard: for a checkpoint too large
    for that, save per shard (`save_shard`) instead."""
    local = _cpu_state(model)
    if comm.shards == 1:
        return local
    states: list[Any] = [None] * comm.shards
    dist.all_gather_object(states, local, group=comm.shard_group)
    return merge_states(states)


def state_for_shard(full_state: dict[str, Tensor], index: int, shards: int) -> dict[str, Tensor]:
    """Shard `index` of `shards` of a full state (from `gather_state`, `load_shard_files` or a
    one-worker model), whatever shard count saved it."""
    if not 0 <= index < shards:
        raise ValueError(f"shard {index} does not exist among {shards} shards")
    return full_state if shards == 1 else split_state(full_state, shards)[index]


def save_shard(model: nn.Module, folder: str | Path, index: int, shards: int) -> Path:
    """Write this shard's state to `folder/shard-{index}-of-{shards}.safetensors` (each shard its own
    file, nothing gathered); returns the file."""
    path = Path(folder) / SHARD_FILE.format(index=index, shards=shards)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in _cpu_state(model).items()}, str(path))
    return path


def load_shard_files(folder: str | Path) -> dict[str, Tensor]:
    """The full state from a folder of `shard-{i}-of-{n}.safetensors` files (`save_shard`); errors
    name the folder when files are missing or their shard counts disagree."""
    folder = Path(folder)
    found = {}
    for path in sorted(folder.glob("shard-*-of-*.safetensors")):
        m = _SHARD_FILE_RE.fullmatch(path.name)
        if m:
            found[int(m[1]), int(m[2])] = path
    counts = {n for _, n in found}
    if not found:
        raise FileNotFoundError(f"{folder}: no shard-<i>-of-<n>.safetensors files")
    if len(counts) > 1:
        raise ValueError(f"{folder}: shard files of different shard counts {sorted(counts)}")
    (shards,) = counts
    missing = [i for i in range(shards) if (i, shards) not in found]
    if missing:
        names = ", ".join(SHARD_FILE.format(index=i, shards=shards) for i in missing)
        raise FileNotFoundError(f"{folder}: missing {names}")
    states = [load_file(str(found[i, shards])) for i in range(shards)]
    return states[0] if shards == 1 else merge_states(states)


def _moments(model: nn.Module, optimizer_state: dict) -> dict[str, Tensor]:
    """Adam's per-parameter tensors keyed `{exp_avg|exp_avg_sq}.{parameter name}`, so that
    `split_state`/`merge_states` cut them as the parameter they belong to (the step count is
    the same for every parameter and shard)."""
    names = [name for name, _ in model.named_parameters()]
    return {
        f"{key}.{names[index]}": value
        for index, state in optimizer_state["state"].items()
        for key, value in state.items()
        if key != "step"
    }


def _with_moments(model: nn.Module, optimizer_state: dict, moments: dict[str, Tensor]) -> dict:
    names = [name for name, _ in model.named_parameters()]
    state = {
        index: {key: value if key == "step" else moments[f"{key}.{names[index]}"] for key, value in s.items()}
        for index, s in optimizer_state["state"].items()
    }
    return {"state": state, "param_groups": optimizer_state["param_groups"]}


def gather_trainer_state(trainer: Any, comm: Any) -> dict:
    """`trainer.state_dict()` (an `SAETrainer` of a sharded model) as the one-worker trainer's:
    Adam's moments merged over the shard group like the parameters (collective)."""
    state = trainer.state_dict()
    local = _cpu_optimizer_state(state["optimizer"])
    if comm.shards == 1:
        return {**state, "optimizer": local}
    states: list[Any] = [None] * comm.shards
    dist.all_gather_object(states, local, group=comm.shard_group)
    merged = merge_states([_moments(trainer.sae, s) for s in states])
    return {**state, "optimizer": _with_moments(trainer.sae, local, merged)}


def trainer_state_for_shard(full_state: dict, model: nn.Module, index: int, shards: int) -> dict:
    """Shard `index` of `shards` of a one-worker trainer state (`gather_trainer_state`), for the
    `SAETrainer` of shard model `model`: a run resumes on another number of shards."""
    if shards == 1:
        return full_state
    optimizer = full_state["optimizer"]
    moments = split_state(_moments(model, optimizer), shards)[index]
    return {**full_state, "optimizer": _with_moments(model, optimizer, moments)}


def _cpu_optimizer_state(state: dict) -> dict:
    """A copy on the CPU, as `_cpu_state`."""
    return {
        "state": {
            i: {k: v.detach().to("cpu", copy=True) for k, v in s.items()} for i, s in state["state"].items()
        },
        "param_groups": state["param_groups"],
    }
