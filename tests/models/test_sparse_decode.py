"""The top-k family's sparse decode (`ActiveLatents`, `embedding_bag`) against the dense one.

Both paths run the same top-k call, so they keep the same latents (ties included) with the
same values, exactly. Only the decode's summation order differs: fp32 sums of k terms agree to
~1e-6 relative, so losses are compared at rtol 1e-5 and gradients at rtol 1e-4 / atol 1e-6.
"""

import pytest
import torch

from raysae import build_sae
from raysae.models.sparse import ActiveLatents
from raysae.training import SAETrainer
from tests.conftest import small_sae_config, small_train_config


def test_the_flat_layout_decodes_like_the_dense_matrix_with_empty_rows():
    gen = torch.Generator().manual_seed(0)
    batch, d_sae, d_in = 6, 10, 4
    positions = torch.randperm(batch * d_sae, generator=gen)[:15]
    positions = positions[positions // d_sae != 2]  # token 2 keeps nothing: an empty bag
    values = torch.rand(len(positions), generator=gen)
    active = ActiveLatents.flat(positions, values, batch, d_sae)
    dense = torch.zeros(batch * d_sae).index_put((positions,), values).view(batch, d_sae)
    W_dec = torch.randn(d_sae, d_in, generator=gen)
    assert torch.equal(active.dense(), dense)
    torch.testing.assert_close(active.decode(W_dec), dense @ W_dec, rtol=1e-6, atol=1e-6)
    assert torch.equal(active.decode(W_dec)[2], torch.zeros(d_in))
    assert torch.equal(active.fired(), (dense > 0).any(0).float())
    assert active.l0() == (dense > 0).sum(-1).float().mean()


@pytest.mark.parametrize("architecture", ["topk", "batchtopk"])
def test_sparse_and_dense_forward_agree(planted, architecture):
    sae = build_sae(small_sae_config(architecture, k=8), 64)
    x = planted.sample(300, torch.Generator().manual_seed(3))
    sae.initialize_from_batch(x)
    sae.train()
    dead = torch.rand(sae.d_sae, generator=torch.Generator().manual_seed(4)) < 0.3

    def run(sparse: bool):
        sae.sparse_decode = sparse
        sae.zero_grad(set_to_none=True)
        out = sae(x, dead_mask=dead)
        out.loss.backward()
        return out, {n: p.grad.clone() for n, p in sae.named_parameters() if p.grad is not None}

    (dense, dense_grads), (sparse, sparse_grads) = run(False), run(True)
    assert dense.active is None and sparse.active is not None and sparse.dense_acts is None
    assert torch.equal(sparse.feature_acts, dense.feature_acts)  # the same latents and values
    assert torch.equal(sae.step_statistics(sparse), sae.step_statistics(dense))
    assert sparse.l0() == dense.l0()
    for name in ("loss", "mse_loss", "aux_loss"):
        torch.testing.assert_close(getattr(sparse, name), getattr(dense, name), rtol=1e-5, atol=1e-7)
    assert dense.aux_loss > 0
    for name, grad in dense_grads.items():
        torch.testing.assert_close(sparse_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("architecture", ["topk", "batchtopk"])
def test_sparse_and_dense_training_agree(planted, architecture):
    def train(sparse: bool):
        sae = build_sae(small_sae_config(architecture, dead_tokens_threshold=2000), 64)
        sae.sparse_decode = sparse
        trainer = SAETrainer(sae, small_train_config())
        batches = list(planted.batches(500, 5000, seed=6))
        sae.initialize_from_batch(batches[0])
        losses = [float(trainer.step(b).loss) for b in batches]
        return sae, losses

    (dense, dense_losses), (sparse, sparse_losses) = train(False), train(True)
    torch.testing.assert_close(torch.tensor(sparse_losses), torch.tensor(dense_losses), rtol=1e-4, atol=1e-6)
    for name, tensor in dense.state_dict().items():
        torch.testing.assert_close(sparse.state_dict()[name], tensor, rtol=1e-3, atol=1e-5, msg=name)
