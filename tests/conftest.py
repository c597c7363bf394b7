import os
import tempfile

# No hub access in tests: everything comes from the repo or from files the tests make.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="raysae-hf-"))

import pytest
import torch

from raysae.config import SAEConfig, TrainConfig
from raysae.synthetic import PlantedDictionary


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole test run, never a leftover cluster."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    torch.set_num_threads(2)


@pytest.fixture
def planted() -> PlantedDictionary:
    """64-d activations from 128 planted atoms, ~4 active per token, an offset and noise."""
    return PlantedDictionary(d_in=64, n_atoms=128, mean_active=4, seed=1)


def small_sae_config(architecture: str, **kw) -> SAEConfig:
    base = dict(architecture=architecture, d_sae=256, k=4, dead_tokens_threshold=20_000)
    return SAEConfig(**{**base, **kw})


def small_train_config(**kw) -> TrainConfig:
    base = dict(total_tokens=200_000, batch_size=1024, lr=3e-3, log_every_steps=10_000)
    return TrainConfig(**{**base, **kw})
