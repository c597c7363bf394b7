"""`train.precision: bf16` and the step that never waits for the device.

Tolerances of bf16 against the fp32 reference: bf16 keeps 8 significant bits (relative
rounding 2^-9 ~ 0.2 %), the matmuls accumulate in fp32, so the pre-activations differ by a
few 0.1 % and a loss (a mean of squares over many entries, whose errors partly cancel) by
well under 2 %; gradients agree in direction (cosine > 0.99) rather than entry by entry,
because a latent near the top-k boundary may be swapped by the rounding.
"""

import pytest
import torch
from safetensors.torch import load_file
from torch.utils._python_dispatch import TorchDispatchMode

from raysae import build_sae, fit, save_sae
from raysae.synthetic import recovery
from raysae.training import Member, NonFiniteLossError, Population, SAETrainer, train_population
from tests.conftest import small_sae_config, small_train_config

ARCHITECTURES = ["topk", "batchtopk", "jumprelu", "standard"]


class HostReads(TorchDispatchMode):
    """Records the aten ops that need a device value on the host (a synchronisation on a GPU):
    `.item()`, `bool()`, `int()`, `float()` all reach `_local_scalar_dense`; boolean indexing
    and `masked_select` reach `nonzero` or read a count. Seen on the CPU, as the same ops."""

    SYNCING = ("aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::is_nonzero")

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    MASK_INDEXING = ("aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name in self.SYNCING:
            self.calls.append(name)
        elif name in self.MASK_INDEXING and any(  # a mask index: its true count sizes the result
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] or ()
        ):
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def test_the_host_read_detector_sees_reads():
    x = torch.arange(4.0)
    with HostReads() as reads:
        _ = int(x.sum()), bool(x[1]), x[x > 1], x.max().item()
        x[x > 2] = 0
    assert len(reads.calls) == 5


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_a_step_reads_nothing_on_the_host(planted, architecture, precision, sparse):
    # dead_tokens_threshold 1: every latent that did not fire last step is dead, so AuxK runs.
    sae = build_sae(small_sae_config(architecture, dead_tokens_threshold=1), 64)
    sae.sync_free = True  # the GPU's paths, on the CPU (where AuxK may read its dead count)
    sae.sparse_decode = sparse
    trainer = SAETrainer(sae, small_train_config(log_every_steps=1000, precision=precision))
    batches = list(planted.batches(256, 256 * 5, seed=4))
    sae.initialize_from_batch(batches[0])
    trainer.step(batches[0])  # the first step checks the flag once
    assert bool(sae.dead_mask().any()) or architecture not in ("topk", "batchtopk")
    with HostReads() as reads:
        for batch in batches[1:]:
            trainer.step(batch)
    assert reads.calls == []
    with HostReads() as reads:
        trainer.check_finite()
    assert reads.calls == ["aten::_local_scalar_dense"]  # one read per check


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_bf16_forward_and_gradients_agree_with_fp32(planted, architecture):
    sae = build_sae(small_sae_config(architecture, dead_tokens_threshold=1), 64)
    x = planted.sample(512, torch.Generator().manual_seed(7))
    sae.initialize_from_batch(x)
    sae.train()
    dead = torch.rand(sae.d_sae, generator=torch.Generator().manual_seed(1)) < 0.5

    def run(autocast: bool):
        # The reference: fp32 and the dense decode; against it bf16 with the sparse decode.
        sae.zero_grad(set_to_none=True)
        sae.sparse_decode = autocast
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = sae(x, dead_mask=dead)
        out.loss.backward()
        return out, {n: p.grad.clone() for n, p in sae.named_parameters() if p.grad is not None}

    ref, ref_grads = run(False)
    low, low_grads = run(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert sae.pre_activation(x * sae.input_scale).dtype == torch.bfloat16  # top-k runs on bf16
    assert low.loss.dtype == torch.float32 and low.mse_loss.dtype == torch.float32
    for name in ("loss", "mse_loss", "sparsity_loss", "aux_loss"):
        torch.testing.assert_close(getattr(low, name), getattr(ref, name), rtol=0.02, atol=1e-4, msg=name)
    for name, g in ref_grads.items():
        cosine = torch.nn.functional.cosine_similarity(low_grads[name].flatten(), g.flatten(), dim=0)
        assert cosine > 0.99, (name, float(cosine))
    if architecture == "topk":  # the same top-k sets, but for rounding near the k-th value
        fired_ref, fired_low = ref.feature_acts > 0, low.feature_acts > 0
        assert (fired_ref & fired_low).sum() >= 0.97 * fired_ref.sum()


def test_bf16_keeps_fp32_master_weights_and_saves_them_as_before(planted, tmp_path):
    sae = build_sae(small_sae_config("topk"), 64)
    cfg = small_train_config(total_tokens=8_000, precision="bf16")
    member = Member(sae, cfg)
    train_population(Population([member]), planted.batches(1000, 8_000, seed=2), init_tokens=1000)
    assert all(p.dtype == torch.float32 for p in sae.parameters())
    moments = [v for s in member.trainer.optimizer.state.values() for k, v in s.items() if k != "step"]
    assert moments and all(v.dtype == torch.float32 for v in moments)
    sae.fold_input_scale()
    sae.eval()
    save_sae(sae, tmp_path / "sae")
    saved = load_file(str(tmp_path / "sae" / "sae_weights.safetensors"))
    for name, tensor in sae.inference_state().items():
        assert saved[name].dtype == torch.float32 and torch.equal(saved[name], tensor), name


def test_a_bf16_topk_run_recovers_the_planted_dictionary(planted):
    sae = build_sae(small_sae_config("topk"), planted.d_in)
    fit(
        sae,
        planted.batches(1024, 600_000, seed=2),
        small_train_config(total_tokens=600_000, precision="bf16"),
    )
    assert recovery(sae.W_dec, planted.atoms, threshold=0.95) >= 0.95


def test_a_nan_mid_run_is_caught_at_the_next_check_with_the_last_good_weights(planted):
    batches = list(planted.batches(1000, 20_000, seed=5))
    batches[7][[3, 4]] = float("nan")  # the eighth step (step 7) goes non-finite
    sae = build_sae(small_sae_config("batchtopk"), 64)
    good = {}

    def snapshot(m):
        if m.step == 7:  # the last good state: after seven steps
            good.update({k: v.clone() for k, v in sae.state_dict().items()})

    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 7 after 7000 tokens .*2 steps after"):
        fit(sae, iter(batches), small_train_config(total_tokens=20_000, log_every_steps=5), on_step=snapshot)
    for name, tensor in good.items():  # weights, dead counts and threshold: not one bit moved
        assert torch.equal(sae.state_dict()[name], tensor), name


def test_a_checkpoint_never_holds_an_unchecked_non_finite_step(planted):
    sae = build_sae(small_sae_config("topk"), 64)
    member = Member(sae, small_train_config(total_tokens=20_000, log_every_steps=1000))
    population = Population([member])
    batches = list(planted.batches(1000, 6_000, seed=5))
    batches[4][[7, 9]] = float("inf")
    train = iter(batches)
    population.initialize(batches[0])
    for batch in train:
        population.step(batch)
    assert member.error is None  # not yet read: no check since the first step
    (state,) = population.state_dict()  # what a checkpoint saves
    assert member.error is not None and "2 of this worker's 1000 batch rows" in member.error
    assert state["trainer"]["tokens_seen"] == 4_000 and state["trainer"]["steps"] == 4
    assert all(torch.isfinite(t).all() for t in state["sae"].values() if t.is_floating_point())
