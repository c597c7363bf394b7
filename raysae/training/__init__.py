"""Training: the shared step (`SAETrainer`), populations, the bare loop (`fit`) and the end of
training (`finish_sae`). Plain PyTorch, no Ray; data parallelism is torch.distributed's."""

from raysae.training.finish import finish_sae
from raysae.training.loop import fit
from raysae.training.population import Member, Population, train_population
from raysae.training.step import NonFiniteLossError, SAETrainer, StepMetrics, data_parallel_world

__all__ = [
    "Member",
    "NonFiniteLossError",
    "Population",
    "SAETrainer",
    "StepMetrics",
    "data_parallel_world",
    "finish_sae",
    "fit",
    "train_population",
]
