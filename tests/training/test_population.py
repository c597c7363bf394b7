import pytest
import torch

from raysae import build_sae, fit
from raysae.training import Member, Population, train_population
from tests.conftest import small_sae_config, small_train_config


def members(*configs):
    return [
        Member(build_sae(small_sae_config(arch, **kw), 64), small_train_config(total_tokens=20_000))
        for arch, kw in configs
    ]


def test_a_population_trains_exactly_what_separate_runs_train(planted):
    configs = [("topk", {}), ("jumprelu", {"seed": 3}), ("standard", {"l1_coefficient": 1.0})]
    population = Population(members(*configs))
    train_population(population, planted.batches(1000, 20_000, seed=5), init_tokens=4096)
    for member, (arch, kw) in zip(population.members, configs, strict=True):
        alone = fit(
            build_sae(small_sae_config(arch, **kw), 64),
            planted.batches(1000, 20_000, seed=5),
            small_train_config(total_tokens=20_000),
        )
        member.sae.fold_input_scale()
        for name, tensor in alone.state_dict().items():
            torch.testing.assert_close(member.sae.state_dict()[name], tensor, rtol=0, atol=0, msg=name)


def test_a_diverging_member_is_frozen_and_the_others_go_on(planted):
    # The step reads its finite flag every log_every_steps (no host sync in between): with 4,
    # the poisoned fourth step is found at its own end, and the member is rewound to step 3.
    population = Population(
        [
            Member(
                build_sae(small_sae_config(arch), 64),
                small_train_config(total_tokens=20_000, log_every_steps=4),
            )
            for arch in ("topk", "standard")
        ]
    )
    seen = []
    batches = iter(planted.batches(1000, 20_000, seed=5))

    def poison(metrics):
        seen.append(metrics)
        if len(seen) == 3:  # corrupt the second SAE after its third step
            population.members[1].sae.W_dec.data[0, 0] = float("inf")

    train_population(population, batches, init_tokens=1000, on_step=poison)
    good, bad = population.members
    assert good.trainer.tokens_seen == 20_000 and good.error is None
    assert bad.trainer.steps == 3 and bad.error.startswith("non-finite loss: loss is")
    assert all(m[1] is None for m in seen[3:]) and population.done


def test_the_bare_fit_still_raises_on_a_non_finite_loss(planted):
    from raysae.training import NonFiniteLossError

    sae = build_sae(small_sae_config("topk"), 64)
    with torch.no_grad():
        sae.b_enc.fill_(float("nan"))
    sae.initialized.fill_(True)
    with pytest.raises(NonFiniteLossError):
        fit(sae, planted.batches(1000, 5_000), small_train_config(total_tokens=5_000))


def test_population_state_round_trip(planted):
    population = Population(members(("topk", {}), ("batchtopk", {})))
    train_population(population, planted.batches(1000, 5_000), init_tokens=1000)
    other = Population(members(("topk", {}), ("batchtopk", {})))
    other.load_state_dict(population.state_dict())
    for a, b in zip(population.members, other.members, strict=True):
        assert b.trainer.tokens_seen == a.trainer.tokens_seen == 5_000
        for name, tensor in a.sae.state_dict().items():
            assert torch.equal(b.sae.state_dict()[name], tensor), name
    with pytest.raises(ValueError, match="checkpoint holds 2 SAEs, the population has 1"):
        Population(members(("topk", {}))).load_state_dict(population.state_dict())
