"""One SAE's optimisation step: the piece the bare loop and the Ray Train loop share."""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from raysae.config import TrainConfig
from raysae.models import MultiLayerDictionary, SparseAutoencoder
from raysae.models.multilayer import _sharded_dim as sharded_dim
from raysae.training.batch import Batch, nonfinite_rows, split_batch
from raysae.training.schedule import annealed_k, lr_factor, ramp


def data_parallel_world() -> int:
    """Workers training this SAE together (torch.distributed's world size), 1 when alone."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def replica_group(sae: nn.Module):
    """The process group of a feature-sharded model's data-parallel replicas (the workers holding
    the same features: its communicator's `replica_group`, `raysae.raytrain.feature_shards`), or
    None when the whole world is data parallel (an SAE, or a model on one shard)."""
    comm = getattr(sae, "comm", None)
    group = getattr(comm, "replica_group", None)
    if group is None and getattr(comm, "shards", 1) > 1:
        raise ValueError(
            "a feature-sharded model needs a communicator that names its replica group "
            "(raysae.raytrain.feature_shards.DistributedComm)"
        )
    return group


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or Inf; neither that step nor any after it was applied.

    `bad_rows` of the `rows` of that step's batch (on this worker) held NaN or Inf.
    """

    def __init__(self, message: str, *, bad_rows: int = 0, rows: int = 0):
        super().__init__(message)
        self.bad_rows, self.rows = bad_rows, rows


class StepMetrics(NamedTuple):
    """Per-step numbers, as tensors so that logging decides when to synchronise. A step
    between two finite-checks (`SAETrainer.check_finite`) may still show a non-finite loss;
    steps that are logged are checked first."""

    step: int
    tokens: int
    lr: float
    k: int | None
    loss: Tensor
    mse_loss: Tensor
    sparsity_loss: Tensor
    aux_loss: Tensor
    l0: Tensor

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._asdict().items() if v is not None}


def fused_adam_device(device: torch.device) -> bool:
    """Whether torch's fused Adam runs on `device`: it can skip a step on a device flag."""
    return device.type in ("cpu", "cuda")


class SAETrainer:
    """Adam, the schedules and the decoder constraint around one SAE.

    `step(batch)` applies one update; `tokens_seen` and `steps` are the only
    progress state, so a checkpoint is `state_dict()` plus the SAE's.

    The step never waits for the device (no `.item()`, `bool()` or count read on the host):
    whether the loss is finite is kept on the device, and an update whose loss is not finite
    (or that follows one) is skipped there: Adam's `found_inf` (as under a GradScaler) leaves
    weights and moments untouched, and the SAE's running state is put back. `check_finite`
    reads the flag: `step` calls it after the first step and every `log_every_steps`, and the
    loops before any checkpoint and at the end, so the weights in memory, in a checkpoint and
    in the saved SAE are always those of the last good step. On detection the counters go
    back to that step and `NonFiniteLossError` names the step where the loss first went bad.
    (Weights never change after a bad step, so nothing needs restoring and nothing is copied.)

    `train.precision: bf16` runs the forward pass under bf16 autocast on the batch's device:
    the weights and Adam's state stay in the SAE's dtype (fp32 by default), the matmuls and
    pre-activations are bf16, and the losses are reduced in fp32.

    Under data parallelism (torch.distributed initialised) every worker calls
    `step` with its own part of the global batch; `module` is then the
    `DistributedDataParallel` wrapper of `sae`, which averages the gradients.
    Progress counts global tokens, a non-finite loss on any worker stops
    every worker at the same step (the flag is reduced over workers on the device), and the
    SAE's running state (dead latents, BatchTopK's threshold) is updated from statistics summed
    over the workers, so every worker keeps the same SAE.

    A feature-sharded model (`sae.comm.shards > 1`, `raysae.raytrain.feature_shards`) holds one
    slice of the features; the workers holding the same slice are its data-parallel replicas
    (`replica_group`): they split the global batch (`module` averages gradients over them alone),
    count its tokens (`world_size` is the replicas) and sum the running statistics of their
    common features. The shards of one replica see the same rows and compute the same loss, so the
    finite flag is still reduced over every worker; gradient clipping takes the norm over all
    features (the sharded parameters' squares summed over the shards, the replicated ones once) and
    the logged L0 sums the shards' firing counts.
    """

    def __init__(
        self,
        sae: SparseAutoencoder | MultiLayerDictionary,
        cfg: TrainConfig,
        *,
        module: nn.Module | None = None,
    ):
        self.sae = sae
        self.module = module if module is not None else sae
        self.cfg = cfg
        self.replica_group = replica_group(sae)
        self.ranks = data_parallel_world()
        """Every worker (all shards of all replicas): the finite flag is reduced over them."""
        self.world_size = (
            self.ranks if self.replica_group is None else dist.get_world_size(self.replica_group)
        )
        """Data-parallel replicas: the workers splitting each global batch."""
        self.comm = getattr(sae, "comm", None)
        self.shards = 1 if self.comm is None else self.comm.shards
        self.fused = fused_adam_device(sae.W_enc.device)
        self.optimizer = torch.optim.Adam(
            sae.parameters(), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), fused=self.fused or None
        )
        self.tokens_seen = 0
        self.steps = 0
        # k annealing, for the architectures that keep k latents (`sae.k` is None for the others)
        self.k_range = (
            None if sae.k is None else (min(cfg.k_anneal_start or 4 * sae.cfg.k, sae.d_sae), sae.cfg.k)
        )
        self._health: _Health | None = None

    @property
    def progress(self) -> float:
        return min(self.tokens_seen / self.cfg.total_tokens, 1.0)

    @property
    def done(self) -> bool:
        return self.tokens_seen >= self.cfg.total_tokens

    def autocast(self, device: torch.device):
        """The forward pass's autocast context for `train.precision`."""
        if self.cfg.precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(self, batch: Batch) -> StepMetrics:
        """One update on `batch`: inputs, or (inputs, targets), which a transcoder needs."""
        sae, cfg, p = self.sae, self.cfg, self.progress
        x, target = split_batch(batch)
        if not sae.is_transcoder:
            target = None
        lr = cfg.lr * lr_factor(p, cfg.lr_warmup_fraction, cfg.lr_decay_fraction)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.k_range is not None:
            sae.k = annealed_k(p, *self.k_range, cfg.k_anneal_fraction)
        sae.train()
        health = self._health_on(x.device)
        with self.autocast(x.device):
            out = self.module(
                x, target, dead_mask=sae.dead_mask(), sparsity_scale=ramp(p, cfg.sparsity_warmup_fraction)
            )
        ok = health.record(out, batch, self.ranks)
        if not self.fused:  # no device-side skip: read the flag now, before anything changes
            self.check_finite()
        running = [(b, b.clone()) for b in sae.buffers()]
        stats = sae.step_statistics(out)
        if self.world_size > 1:
            dist.all_reduce(stats, group=self.replica_group)
        sae.update_running_state(stats, tokens=x.shape[0] * self.world_size)
        with torch.no_grad():
            for b, before in running:  # a skipped step leaves dead counts and threshold as they were
                b.copy_(torch.where(ok, b, before))
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        sae.remove_parallel_grad()
        if cfg.grad_clip_norm is not None:
            self.clip_gradients(cfg.grad_clip_norm)
        if self.fused:
            # The GradScaler protocol of torch's fused optimisers: a nonzero `found_inf` skips
            # the whole update (weights, moments and step count) on the device.
            self.optimizer.found_inf = (~ok).float()  # type: ignore[attr-defined]
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf  # type: ignore[attr-defined]
        else:
            self.optimizer.step()
        sae.after_optimizer_step(ok)
        rows = x.shape[0] * self.world_size
        self.steps += 1
        self.tokens_seen += rows
        health.advance(rows)
        l0 = out.l0() if self.shards == 1 else self.comm.reduce(out.l0())  # type: ignore[union-attr]
        metrics = StepMetrics(
            self.steps,
            self.tokens_seen,
            lr,
            sae.k,
            out.loss.detach(),
            out.mse_loss.detach(),
            out.sparsity_loss.detach(),
            out.aux_loss.detach(),
            l0,
        )
        if self.steps == 1 or self.steps % cfg.log_every_steps == 0:
            self.check_finite()  # the first step (bad input shows at once) and every logged one
        return metrics

    def clip_gradients(self, max_norm: float) -> None:
        """Scale the gradients to a global norm of at most `max_norm` (torch's `clip_grad_norm_`);
        a sharded model's norm is over all features of all shards."""
        sae = self.sae
        if self.shards == 1:
            torch.nn.utils.clip_grad_norm_(sae.parameters(), max_norm)
            return
        grads = [(name, p.grad) for name, p in sae.named_parameters() if p.grad is not None]
        replicated = {name for name, _ in grads if sharded_dim(name) is None}
        if not grads:
            return
        zero = grads[0][1].new_zeros((), dtype=torch.float32)
        sharded_sq = sum((g.float().pow(2).sum() for n, g in grads if n not in replicated), zero)
        replicated_sq = sum((g.float().pow(2).sum() for n, g in grads if n in replicated), zero)
        total = (self.comm.reduce(sharded_sq) + replicated_sq).sqrt()  # type: ignore[union-attr]
        # The same factor as clip_grad_norm_: max_norm / (norm + 1e-6), never above 1.
        factor = (max_norm / (total + 1e-6)).clamp(max=1.0)
        for _, g in grads:
            g.mul_(factor.to(g.dtype))

    def _health_on(self, device: torch.device) -> _Health:
        if self._health is None or self._health.ok.device != device:
            self._health = _Health(device, self.steps, self.tokens_seen)
        return self._health

    def check_finite(self) -> None:
        """Read the on-device finite flag (one host synchronisation); when a step since the last
        check had a non-finite loss, rewind the counters to it and raise `NonFiniteLossError`."""
        health = self._health
        if health is None or bool(health.ok):
            return
        step, tokens, bad_rows, rows = health.first_bad.tolist()
        loss, mse, sparsity, aux = health.first_bad_losses.tolist()
        skipped = self.steps - step
        self.steps, self.tokens_seen = step, tokens  # the last good state, which the weights hold
        health.rewind(step, tokens)
        raise NonFiniteLossError(
            f"loss is {loss} at step {step} after {tokens} tokens "
            f"(mse {mse}, sparsity {sparsity}, aux {aux}"
            + ("" if self.ranks == 1 else "; on this worker, or on another")
            + (
                "); the step was not applied"
                if skipped <= 1
                else f"); it and the {skipped - 1} steps after it were not applied"
            ),
            bad_rows=bad_rows,
            rows=rows,
        )

    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "tokens_seen": self.tokens_seen,
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.tokens_seen = state["tokens_seen"]
        self.steps = state["steps"]
        self._health = None  # a checkpoint holds only checked, good steps


class _Health:
    """On-device record of whether every step so far had a finite loss, and of the first that
    did not: its step, tokens before it, its batch's non-finite rows and rows, and its losses."""

    def __init__(self, device: torch.device, steps: int, tokens: int):
        self.ok = torch.ones((), dtype=torch.bool, device=device)
        self.counters = torch.tensor([steps, tokens], dtype=torch.long, device=device)
        self.first_bad = torch.zeros(4, dtype=torch.long, device=device)
        self.first_bad_losses = torch.zeros(4, dtype=torch.float32, device=device)

    def record(self, out, batch: Batch, world_size: int) -> Tensor:
        """Fold this step's loss into the flag; returns whether this step may be applied."""
        finite = torch.isfinite(out.loss.detach())
        if world_size > 1:
            flag = finite.to(torch.float32)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finite = flag > 0
        first = self.ok & ~finite
        bad = nonfinite_rows(batch)
        bad_rows = bad.sum()
        here = torch.stack([*self.counters, bad_rows, bad_rows.new_full((), len(bad))])
        self.first_bad = torch.where(first, here, self.first_bad)
        losses = torch.stack([out.loss, out.mse_loss, out.sparsity_loss, out.aux_loss]).detach().float()
        self.first_bad_losses = torch.where(first, losses, self.first_bad_losses)
        self.ok = self.ok & finite
        return self.ok

    def advance(self, rows: int) -> None:
        self.counters[0] += 1
        self.counters[1] += rows

    def rewind(self, steps: int, tokens: int) -> None:
        self.counters[0], self.counters[1] = steps, tokens
