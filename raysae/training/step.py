"""One SAE's optimisation step: the piece the bare loop and the Ray Train loop share."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from raysae.config import TrainConfig
from raysae.models import SparseAutoencoder
from raysae.training.schedule import annealed_k, lr_factor, ramp


def data_parallel_world() -> int:
    """Workers training this SAE together (torch.distributed's world size), 1 when alone."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or Inf; the step was not applied."""


class StepMetrics(NamedTuple):
    """Per-step numbers, as tensors so that logging decides when to synchronise."""

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


class SAETrainer:
    """Adam, the schedules and the decoder constraint around one SAE.

    `step(batch)` applies one update; `tokens_seen` and `steps` are the only
    progress state, so a checkpoint is `state_dict()` plus the SAE's.

    Under data parallelism (torch.distributed initialised) every worker calls
    `step` with its own part of the global batch; `module` is then the
    `DistributedDataParallel` wrapper of `sae`, which averages the gradients.
    Progress counts global tokens, a non-finite loss on any worker stops
    every worker at the same step, and the SAE's running state (dead latents,
    BatchTopK's threshold) is updated from statistics summed over the workers, so
    every worker keeps the same SAE.
    """

    def __init__(self, sae: SparseAutoencoder, cfg: TrainConfig, *, module: nn.Module | None = None):
        self.sae = sae
        self.module = module if module is not None else sae
        self.cfg = cfg
        self.world_size = data_parallel_world()
        self.optimizer = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2))
        self.tokens_seen = 0
        self.steps = 0
        # k annealing, for the architectures that keep k latents (`sae.k` is None for the others)
        self.k_range = (
            None if sae.k is None else (min(cfg.k_anneal_start or 4 * sae.cfg.k, sae.d_sae), sae.cfg.k)
        )

    @property
    def progress(self) -> float:
        return min(self.tokens_seen / self.cfg.total_tokens, 1.0)

    @property
    def done(self) -> bool:
        return self.tokens_seen >= self.cfg.total_tokens

    def step(self, batch: Tensor) -> StepMetrics:
        sae, cfg, p = self.sae, self.cfg, self.progress
        lr = cfg.lr * lr_factor(p, cfg.lr_warmup_fraction, cfg.lr_decay_fraction)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.k_range is not None:
            sae.k = annealed_k(p, *self.k_range, cfg.k_anneal_fraction)
        sae.train()
        out = self.module(
            batch, dead_mask=sae.dead_mask(), sparsity_scale=ramp(p, cfg.sparsity_warmup_fraction)
        )
        if not self._finite_everywhere(out.loss):
            raise NonFiniteLossError(
                f"loss is {out.loss.item()} at step {self.steps} after {self.tokens_seen} tokens "
                f"(mse {out.mse_loss.item()}, sparsity {out.sparsity_loss.item()}, "
                f"aux {out.aux_loss.item()}"
                + ("" if self.world_size == 1 else "; on this worker, or on another")
                + "); the step was not applied"
            )
        stats = sae.batch_statistics(out.feature_acts.detach())
        if self.world_size > 1:
            dist.all_reduce(stats)
        sae.update_running_state(stats, tokens=batch.shape[0] * self.world_size)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        sae.remove_parallel_grad()
        if cfg.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(sae.parameters(), cfg.grad_clip_norm)
        self.optimizer.step()
        sae.after_optimizer_step()
        self.steps += 1
        self.tokens_seen += batch.shape[0] * self.world_size
        l0 = (out.feature_acts.detach() > 0).sum(-1).float().mean()
        return StepMetrics(
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

    def _finite_everywhere(self, loss: Tensor) -> bool:
        finite = torch.isfinite(loss.detach()).to(torch.float32)
        if self.world_size > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite)

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
