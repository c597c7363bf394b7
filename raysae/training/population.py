"""K SAEs trained on the same activation batches, and the loop that feeds them.

One pass over the data then trains K configurations (architectures or
hyperparameters with the same input). Each member has its own optimiser and
schedules; a member whose loss turns non-finite is frozen at its last good
state and reported, while the others go on. The loop is plain PyTorch: the
bare `fit` and the Ray Train worker both run it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from raysae.config import TrainConfig
from raysae.models import MultiLayerDictionary, SparseAutoencoder
from raysae.training.batch import (
    Batch,
    batch_rows,
    batch_to,
    check_batch,
    concat_batches,
    first_rows,
    split_batch,
)
from raysae.training.step import NonFiniteLossError, SAETrainer, StepMetrics

log = logging.getLogger("raysae.train")


class Member:
    """One SAE of a population with its optimiser and schedules."""

    def __init__(
        self,
        sae: SparseAutoencoder | MultiLayerDictionary,
        cfg: TrainConfig,
        *,
        module: nn.Module | None = None,
    ):
        self.sae = sae
        self.trainer = SAETrainer(sae, cfg, module=module)
        self.error: str | None = None
        """Why the member stopped early (a non-finite loss), or None."""

    @property
    def active(self) -> bool:
        return self.error is None and not self.trainer.done


def nonfinite_hint(bad_rows: int, rows: int) -> str:
    """What to do about a member stopped by a non-finite loss whose batch had `bad_rows` of
    `rows` non-finite: the error is kept in its checkpoint, so a plain rerun reports it again."""
    cause = (
        f"{bad_rows} of this worker's {rows} batch rows hold NaN or Inf activations (rebuild the cache: "
        "delete it and rerun `python -m raysae.generate`); "
        if bad_rows
        else ""
    )
    return (
        f"{cause}its last good state is kept; to train it again once fixed, delete its trial's folder "
        "under checkpoints/ in the run directory and rerun"
    )


class Population:
    """Members stepped on the same batches; `None` metrics for members no longer stepping."""

    def __init__(self, members: list[Member], *, stop_on_nonfinite: bool = False):
        if not members:
            raise ValueError("a population needs at least one SAE")
        self.members = members
        self.stop_on_nonfinite = stop_on_nonfinite
        """Re-raise `NonFiniteLossError` instead of freezing the member (the bare `fit`)."""
        self._initialized = False

    @property
    def initialized(self) -> bool:
        # Cached once true, so the loop's per-batch question reads no device flag.
        if not self._initialized:
            self._initialized = all(bool(m.sae.initialized) for m in self.members)
        return self._initialized

    @property
    def done(self) -> bool:
        return not any(m.active for m in self.members)

    @property
    def tokens_seen(self) -> int:
        return max(m.trainer.tokens_seen for m in self.members)

    def initialize(self, rows: Batch) -> None:
        x, y = split_batch(rows)
        for m in self.members:
            if not bool(m.sae.initialized):
                m.sae.initialize_from_batch(x, y)

    def step(self, batch: Batch) -> list[StepMetrics | None]:
        out: list[StepMetrics | None] = []
        for i, m in enumerate(self.members):
            if not m.active:
                out.append(None)
                continue
            try:
                out.append(m.trainer.step(batch))
            except NonFiniteLossError as exc:
                self._stop(i, m, exc)
                out.append(None)
        return out

    def check_finite(self) -> None:
        """Read every member's on-device finite flag (`SAETrainer.check_finite`): a member whose
        loss went non-finite since the last check is stopped at its last good state (`fit`
        re-raises). Called before a checkpoint and at the end; the steps call it as they log."""
        for i, m in enumerate(self.members):
            if m.error is None:
                try:
                    m.trainer.check_finite()
                except NonFiniteLossError as exc:
                    self._stop(i, m, exc)

    def _stop(self, i: int, m: Member, exc: NonFiniteLossError) -> None:
        if self.stop_on_nonfinite:
            raise exc
        m.error = f"non-finite loss: {exc}; {nonfinite_hint(exc.bad_rows, exc.rows)}"
        log.error("SAE %d of the population stopped, keeping its last good state: %s", i, exc)

    def state_dict(self) -> list[dict]:
        """Every member's state, for a checkpoint: checked first, so none holds a step
        whose loss was not finite."""
        self.check_finite()
        return [
            {"sae": m.sae.state_dict(), "trainer": m.trainer.state_dict(), "error": m.error}
            for m in self.members
        ]

    def load_state_dict(self, states: list[dict]) -> None:
        if len(states) != len(self.members):
            raise ValueError(f"checkpoint holds {len(states)} SAEs, the population has {len(self.members)}")
        for m, state in zip(self.members, states, strict=True):
            m.sae.load_state_dict(state["sae"])
            m.trainer.load_state_dict(state["trainer"])
            m.error = state["error"]


def train_population(
    population: Population,
    batches: Iterable[Batch],
    *,
    init_tokens: int,
    device: torch.device | str = "cpu",
    share_init_rows: Callable[[Batch], Batch] | None = None,
    on_step: Callable[[list[StepMetrics | None]], None] | None = None,
) -> int:
    """Step `population` on `batches` until every member is done; returns batches read.

    The first `init_tokens` rows (per worker: `init_tokens / world`, combined by
    `share_init_rows` under data parallelism) initialise members that are not
    yet initialised; those rows are then trained on like any other. Batches are inputs, or
    (inputs, targets) pairs, which a population with a transcoder needs (`raysae.training.batch`).
    """
    d_in = population.members[0].sae.d_in
    outs = {m.sae.d_out for m in population.members if m.sae.is_transcoder}
    if len(outs) > 1:
        raise ValueError(f"the population's transcoders write different widths {sorted(outs)}")
    d_out = outs.pop() if outs else None
    depths = {getattr(m.sae, "n_layers", None) for m in population.members}
    if len(depths) > 1:
        raise ValueError("a population mixes single-layer and multi-layer dictionaries (or layer counts)")
    layers = depths.pop()  # a multi-layer dictionary's batches are [rows, L, d]
    world = population.members[0].trainer.world_size
    init_rows = math.ceil(init_tokens / world)
    pending: list[Batch] = []
    index = -1

    def initialize(rows: Batch) -> None:
        population.initialize(share_init_rows(rows) if share_init_rows else rows)

    for index, batch in enumerate(batches):
        check_batch(batch, d_in, index, d_out, layers=layers)
        batch = batch_to(batch, device)
        if not population.initialized:
            pending.append(batch)
            if sum(batch_rows(b) for b in pending) < init_rows:
                continue
            initialize(first_rows(concat_batches(pending), init_rows))
        for b in pending or [batch]:
            metrics = population.step(b)
            if on_step is not None:
                on_step(metrics)
            if population.done:
                break
        pending = []
        if population.done:
            break
    if pending:  # fewer rows in the whole stream than init_tokens
        initialize(concat_batches(pending))
        for b in pending:
            if population.done:
                break
            metrics = population.step(b)
            if on_step is not None:
                on_step(metrics)
    if index < 0:
        raise ValueError("the activation stream was empty: nothing to train on")
    population.check_finite()  # the steps since the last check, before anyone saves the SAEs
    return index + 1
