"""Training: the shared step (`SAETrainer`) and the bare loop (`fit`). No Ray here."""

from raysae.devices import resolve_device
from raysae.training.loop import fit
from raysae.training.step import NonFiniteLossError, SAETrainer, StepMetrics

__all__ = ["NonFiniteLossError", "SAETrainer", "StepMetrics", "fit", "resolve_device"]
