"""Metrics (plain PyTorch: no Ray, no torch.distributed): reconstruction, sparsity, downstream CE / KL.

Every statistic accumulates exactly and merges across batches and workers.
"""

from raysae.metrics.downstream import ce_loss_recovered
from raysae.metrics.evaluate import evaluate, evaluate_with_frequency
from raysae.metrics.reconstruction import ReconstructionStats
from raysae.metrics.sparsity import DENSITY_EPS, FiringStats, log_feature_density

__all__ = [
    "DENSITY_EPS",
    "FiringStats",
    "ReconstructionStats",
    "ce_loss_recovered",
    "evaluate",
    "evaluate_with_frequency",
    "log_feature_density",
]
