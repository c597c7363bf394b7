"""Metrics (plain PyTorch: no Ray, no torch.distributed): reconstruction, shrinkage, sparsity,
latent weight similarity, downstream CE / KL, and SAEBench's core output layout.

Every statistic accumulates exactly and merges across batches and workers.
"""

from raysae.metrics.downstream import ce_loss_recovered
from raysae.metrics.evaluate import Evaluation, evaluate, evaluate_in_detail, evaluate_with_frequency
from raysae.metrics.latents import LatentWeights, latent_weights, max_cosine_similarity
from raysae.metrics.multilayer import evaluate_layers, replacement_ce
from raysae.metrics.reconstruction import ReconstructionStats
from raysae.metrics.saebench import SAEBENCH_CORE_FILE, saebench_core_output
from raysae.metrics.shrinkage import ShrinkageStats
from raysae.metrics.sparsity import DENSITY_EPS, FiringStats, log_feature_density

__all__ = [
    "DENSITY_EPS",
    "SAEBENCH_CORE_FILE",
    "Evaluation",
    "FiringStats",
    "LatentWeights",
    "ReconstructionStats",
    "ShrinkageStats",
    "ce_loss_recovered",
    "evaluate",
    "evaluate_in_detail",
    "evaluate_layers",
    "evaluate_with_frequency",
    "latent_weights",
    "log_feature_density",
    "max_cosine_similarity",
    "replacement_ce",
    "saebench_core_output",
]
