import pytest

from raysae.training.schedule import annealed_k, lr_factor, ramp


@pytest.mark.parametrize(
    "progress, expected",
    [(0.0, 0.0), (0.05, 0.5), (0.1, 1.0), (0.5, 1.0), (0.8, 1.0), (0.9, 0.5), (1.0, 0.0)],
)
def test_lr_warmup_then_decay(progress, expected):
    assert lr_factor(progress, warmup=0.1, decay=0.2) == pytest.approx(expected)


def test_lr_constant_without_schedule():
    assert lr_factor(0.0, 0.0, 0.0) == 1.0 and lr_factor(1.0, 0.0, 0.0) == 1.0


def test_ramp():
    assert ramp(0.025, 0.05) == pytest.approx(0.5)
    assert ramp(0.5, 0.05) == 1.0 and ramp(0.0, 0.0) == 1.0


def test_k_anneal():
    assert annealed_k(0.0, 128, 32, 0.5) == 128
    assert annealed_k(0.25, 128, 32, 0.5) == 80
    assert annealed_k(0.5, 128, 32, 0.5) == 32
    assert annealed_k(0.9, 128, 32, 0.0) == 32
