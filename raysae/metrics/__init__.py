"""Metrics (plain PyTorch, no Ray): reconstruction, sparsity, downstream CE / KL."""

from raysae.metrics.downstream import ce_loss_recovered
from raysae.metrics.evaluate import evaluate, evaluate_with_frequency
from raysae.metrics.reconstruction import ReconstructionStats, reconstruction_metrics
from raysae.metrics.sparsity import (
    DENSITY_EPS,
    FiringStats,
    density_histogram,
    log_feature_density,
)

__all__ = [
    "DENSITY_EPS",
    "FiringStats",
    "ReconstructionStats",
    "ce_loss_recovered",
    "density_histogram",
    "evaluate",
    "evaluate_with_frequency",
    "log_feature_density",
    "reconstruction_metrics",
]
