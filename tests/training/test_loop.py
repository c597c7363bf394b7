import pytest
import torch

from raysae import build_sae, fit
from raysae.training import NonFiniteLossError, SAETrainer
from tests.conftest import small_sae_config, small_train_config


def test_fit_stops_at_budget_and_reports_each_step(planted):
    sae = build_sae(small_sae_config("topk"), 64)
    seen = []
    fit(sae, planted.batches(1000, 50_000), small_train_config(total_tokens=10_000), on_step=seen.append)
    assert [m.tokens for m in seen] == list(range(1000, 10_001, 1000))
    assert not sae.training and float(sae.input_scale) == 1.0


def test_init_waits_for_init_tokens(planted):
    sae = build_sae(small_sae_config("topk"), 64)
    steps = []
    fit(
        sae,
        planted.batches(100, 2_000),
        small_train_config(total_tokens=2_000, batch_size=100, init_tokens=450),
        on_step=steps.append,
    )
    assert len(steps) == 20  # the buffered batches are trained on, none is lost


def test_lr_schedule_and_k_anneal_are_applied(planted):
    sae = build_sae(small_sae_config("topk", k=4), 64)
    cfg = small_train_config(
        total_tokens=10_000,
        lr_warmup_fraction=0.5,
        lr_decay_fraction=0.0,
        k_anneal_fraction=0.5,
        k_anneal_start=16,
    )
    seen = []
    fit(sae, planted.batches(1000, 10_000), cfg, on_step=seen.append)
    assert seen[0].lr == 0.0 and seen[2].lr == pytest.approx(cfg.lr * 0.4) and seen[-1].lr == cfg.lr
    assert [m.k for m in seen[:6]] == [16, 14, 11, 9, 6, 4]


def test_bad_batches_are_named(planted):
    sae = build_sae(small_sae_config("topk"), 64)
    batches = [planted.sample(10, torch.Generator()), torch.zeros(10, 32)]
    with pytest.raises(ValueError, match=r"batch 1: expected a \[rows, 64\] tensor, got \(10, 32\)"):
        fit(sae, batches, small_train_config(total_tokens=1000, batch_size=10, init_tokens=5))
    with pytest.raises(ValueError, match="empty"):
        fit(build_sae(small_sae_config("topk"), 64), [], small_train_config())


def test_nan_loss_stops_without_applying_the_step(planted):
    sae = build_sae(small_sae_config("standard"), 64)
    trainer = SAETrainer(sae, small_train_config())
    before = sae.W_enc.detach().clone()
    bad = planted.sample(8, torch.Generator())
    bad[3, 5] = float("nan")
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 0"):
        trainer.step(bad)
    assert torch.equal(sae.W_enc, before) and trainer.tokens_seen == 0


def test_trainer_state_round_trip(planted):
    sae = build_sae(small_sae_config("topk"), 64)
    trainer = SAETrainer(sae, small_train_config())
    trainer.step(planted.sample(64, torch.Generator()))
    other = SAETrainer(build_sae(small_sae_config("topk"), 64), small_train_config())
    other.load_state_dict(trainer.state_dict())
    assert other.tokens_seen == 64 and other.steps == 1
