"""Ray at the edge: SAE training on Ray Train (`run_training`), its data streams and tracking."""

from raysae.distributed.job import check_population, run_training

__all__ = ["check_population", "run_training"]
