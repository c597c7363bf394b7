"""`fit`: the bare single-process training loop over any iterable of activation batches."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from raysae.config import TrainConfig
from raysae.devices import resolve_device
from raysae.models import SparseAutoencoder
from raysae.training.step import SAETrainer, StepMetrics

log = logging.getLogger("raysae.train")


def _check_batch(batch: Tensor, d_in: int, index: int) -> None:
    if not isinstance(batch, Tensor) or batch.ndim != 2 or batch.shape[1] != d_in:
        shape = tuple(batch.shape) if isinstance(batch, Tensor) else type(batch).__name__
        raise ValueError(f"batch {index}: expected a [rows, {d_in}] tensor, got {shape}")


def fit(
    sae: SparseAutoencoder,
    batches: Iterable[Tensor],
    train_config: TrainConfig,
    *,
    on_step: Callable[[StepMetrics], None] | None = None,
) -> SparseAutoencoder:
    """Train `sae` on `batches` ([rows, d_in] tensors) until `total_tokens` rows are seen.

    The first `init_tokens` rows set the input scale and the decoder bias (unless
    the SAE is already initialised); they are then trained on like any other.
    At the end the input scale is folded into the weights and the SAE is put in
    eval mode, so it reads raw activations. Returns the same SAE object.
    """
    device = resolve_device(train_config.device)
    sae.to(device)
    trainer = SAETrainer(sae, train_config)
    pending: list[Tensor] = []
    started = time.perf_counter()
    index = -1
    for index, batch in enumerate(batches):
        _check_batch(batch, sae.d_in, index)
        batch = batch.to(device, non_blocking=True)
        if not bool(sae.initialized):
            pending.append(batch)
            if sum(b.shape[0] for b in pending) < train_config.init_tokens:
                continue
            sae.initialize_from_batch(torch.cat(pending)[: train_config.init_tokens])
        for b in pending or [batch]:
            metrics = trainer.step(b)
            if on_step is not None:
                on_step(metrics)
            if trainer.steps % train_config.log_every_steps == 0:
                _log_progress(metrics, train_config.total_tokens, started)
            if trainer.done:
                break
        pending = []
        if trainer.done:
            break
    if pending:  # fewer rows in the whole stream than init_tokens
        sae.initialize_from_batch(torch.cat(pending))
        for b in pending:
            trainer.step(b)
    if index < 0:
        raise ValueError("the activation stream was empty: nothing to train on")
    if not trainer.done:
        log.warning(
            "activation stream ended after %d of %d tokens", trainer.tokens_seen, train_config.total_tokens
        )
    sae.fold_input_scale()
    sae.eval()
    return sae


def _log_progress(m: StepMetrics, total: int, started: float) -> None:
    elapsed = time.perf_counter() - started
    log.info(
        "step %d  tokens %d/%d (%.0f%%)  %.0f tok/s  loss %.4g  mse %.4g  l0 %.1f",
        m.step, m.tokens, total, 100 * m.tokens / total, m.tokens / max(elapsed, 1e-9),
        float(m.loss), float(m.mse_loss), float(m.l0),
    )
