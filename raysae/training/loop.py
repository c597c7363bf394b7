"""`fit`: the bare single-process training loop over any iterable of activation batches."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from raysae.config import TrainConfig
from raysae.devices import resolve_device
from raysae.models import SparseAutoencoder
from raysae.training.batch import Batch
from raysae.training.population import Member, Population, train_population
from raysae.training.step import StepMetrics

log = logging.getLogger("raysae.train")


def fit(
    sae: SparseAutoencoder,
    batches: Iterable[Batch],
    train_config: TrainConfig,
    *,
    on_step: Callable[[StepMetrics], None] | None = None,
) -> SparseAutoencoder:
    """Train `sae` on `batches` ([rows, d_in] tensors, or (inputs, targets) pairs for a
    transcoder) until `total_tokens` rows are seen.

    The first `init_tokens` rows set the input scale and the decoder bias (unless
    the SAE is already initialised); they are then trained on like any other.
    At the end the input scale is folded into the weights and the SAE is put in
    eval mode, so it reads raw activations. Returns the same SAE object.
    A non-finite loss raises `NonFiniteLossError` at the next finite-check (the first step,
    every `log_every_steps`, the end); that step and those after it were never applied,
    so the SAE holds the last good weights.
    """
    device = resolve_device(train_config.device)
    sae.to(device)
    member = Member(sae, train_config)
    started = time.perf_counter()

    def report(metrics: list[StepMetrics | None]) -> None:
        m = metrics[0]
        assert m is not None  # one member, stepped until it is done
        if on_step is not None:
            on_step(m)
        if m.step % train_config.log_every_steps == 0:
            log_progress(m, train_config.total_tokens, started)

    train_population(
        Population([member], stop_on_nonfinite=True),
        batches,
        init_tokens=train_config.init_tokens,
        device=device,
        on_step=report,
    )
    if not member.trainer.done:
        log.warning(
            "activation stream ended after %d of %d tokens",
            member.trainer.tokens_seen,
            train_config.total_tokens,
        )
    sae.fold_input_scale()
    sae.eval()
    return sae


def log_progress(
    m: StepMetrics, total: int, started: float, *, label: str = "", tokens_at_start: int = 0
) -> None:
    """One progress line; tokens/s counts the tokens trained since `started` (after a resume,
    those beyond `tokens_at_start`), and the ETA follows from it."""
    elapsed = time.perf_counter() - started
    rate = (m.tokens - tokens_at_start) / max(elapsed, 1e-9)
    eta = f"{(total - m.tokens) / rate:.0f} s" if rate > 0 else "-"
    log.info(
        "%sstep %d  tokens %d/%d (%.0f%%)  %.0f tok/s  ETA %s  %s",
        label,
        m.step,
        m.tokens,
        total,
        100 * m.tokens / total,
        rate,
        eta,
        step_note(m),
    )


def step_note(m: StepMetrics) -> str:
    """A step's loss, MSE and L0, as a progress line shows them."""
    return f"loss {float(m.loss):.4g}, mse {float(m.mse_loss):.4g}, L0 {float(m.l0):.1f}"
