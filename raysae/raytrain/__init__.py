"""Ray at the edge: SAE training on Ray Train (`run_training`): the driver that builds the
`TorchTrainer` and the worker loop each Ray Train worker runs."""

from raysae.raytrain.driver import run_training

__all__ = ["run_training"]
