"""Training: the shared step (`SAETrainer`), populations and the bare loop (`fit`). No Ray here."""

from raysae.devices import resolve_device
from raysae.training.loop import fit
from raysae.training.population import Member, Population, train_population
from raysae.training.step import NonFiniteLossError, SAETrainer, StepMetrics

__all__ = [
    "Member",
    "NonFiniteLossError",
    "Population",
    "SAETrainer",
    "StepMetrics",
    "fit",
    "resolve_device",
    "train_population",
]
