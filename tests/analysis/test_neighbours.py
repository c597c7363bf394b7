"""Decoder-cosine neighbours and cross-SAE matches, against a brute-force numpy cosine matrix."""

import numpy as np
import pytest
import torch

from raysae import load_sae
from raysae.analysis.analyze import same_space
from raysae.analysis.neighbours import best_matches, decoder_neighbours
from raysae.store.client import feature_filter


def brute_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    return (a @ b.T) / np.maximum(na[:, None] * nb[None, :], 1e-300)


@pytest.mark.parametrize("chunk", [7, 50, 1024])  # 7 and 50 put chunk boundaries mid-SAE
def test_neighbours_are_the_nearest_other_rows(chunk):
    rng = np.random.default_rng(0)
    W = rng.normal(size=(50, 12)).astype(np.float32) * rng.uniform(0.1, 3, (50, 1)).astype(np.float32)
    got = decoder_neighbours(torch.as_tensor(W), 6, chunk=chunk)
    cos = brute_cosines(W, W)
    np.fill_diagonal(cos, -np.inf)
    expected = np.argsort(-cos, axis=1, kind="stable")[:, :6]
    assert got.indices.shape == got.cosines.shape == (50, 6)
    np.testing.assert_array_equal(got.indices, expected)
    np.testing.assert_allclose(got.cosines, np.take_along_axis(cos, expected, 1), rtol=0, atol=1e-6)
    assert (np.diff(got.cosines, axis=1) <= 0).all()
    assert not (got.indices == np.arange(50)[:, None]).any()


def test_neighbours_exclude_self_even_for_dead_rows_and_cap_k():
    W = torch.randn(5, 4)
    W[2] = 0  # cosine 0 with every row, itself included: it must still not list itself
    got = decoder_neighbours(W, 10)
    assert got.indices.shape == (5, 4)  # k capped at d_sae - 1
    for i in range(5):
        assert sorted(got.indices[i].tolist()) == [j for j in range(5) if j != i]
    np.testing.assert_array_equal(got.cosines[2], np.zeros(4, np.float32))
    assert decoder_neighbours(W, 0).indices.shape == (5, 0)


@pytest.mark.parametrize("chunk", [9, 1024])
def test_best_matches_are_the_argmax_of_the_other_decoder(chunk):
    rng = np.random.default_rng(1)
    A = rng.normal(size=(40, 16)).astype(np.float32)
    B = rng.normal(size=(70, 16)).astype(np.float32)
    B[:40:2] = A[::2] * 2.5  # half of A's features reappear, rescaled, in B
    got = best_matches(torch.as_tensor(A), torch.as_tensor(B), chunk=chunk)
    cos = brute_cosines(A, B)
    assert got.indices.shape == (40, 1)
    np.testing.assert_array_equal(got.indices[:, 0], cos.argmax(1))
    np.testing.assert_allclose(got.cosines[:, 0], cos.max(1), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got.indices[::2, 0], np.arange(0, 40, 2))
    np.testing.assert_allclose(got.cosines[::2, 0], 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="different spaces"):
        best_matches(torch.as_tensor(A), torch.as_tensor(B[:, :8]))


def doc(name="s", d_out=32, hook="blocks.0.hook_resid_pre", out=None):
    return {"name": name, "d_out": d_out, "hook_point": hook, "hook_point_out": out}


def test_same_space_needs_the_same_sweep_output_hook_and_width():
    assert same_space(doc(), doc())
    assert not same_space(doc(), doc(name="other"))
    assert not same_space(doc(), doc(d_out=64))
    assert not same_space(doc(), doc(out="blocks.0.hook_mlp_out"))  # a transcoder writes elsewhere
    assert same_space(doc(out="blocks.0.hook_mlp_out"), doc(out="blocks.0.hook_mlp_out"))


def test_browsed_documents_carry_neighbours_and_matches_from_the_checkpoints(browsed_store):
    saes = {s["_id"]: s for s in browsed_store.saes.find({"_id": {"$in": ["browse/t000", "browse/t001"]}})}
    assert sorted(saes) == ["browse/t000", "browse/t001"]
    decoders = {k: load_sae(s["checkpoint"]).W_dec.detach().numpy() for k, s in saes.items()}
    for sae_id, sae in saes.items():
        (other,) = set(saes) - {sae_id}
        own = brute_cosines(decoders[sae_id], decoders[sae_id])
        np.fill_diagonal(own, -np.inf)
        cross = brute_cosines(decoders[sae_id], decoders[other])
        docs = list(browsed_store.features.find(feature_filter(sae)))
        assert len(docs) == sae["d_sae"]
        for d in docs:
            i = d["index"]
            near = d["neighbours"]
            assert len(near) == 10
            assert [n["index"] for n in near] == np.argsort(-own[i], kind="stable")[:10].tolist()
            np.testing.assert_allclose(
                [n["cosine"] for n in near], own[i, [n["index"] for n in near]], atol=1e-6
            )
            (match,) = d["matches"]
            assert match["sae_id"] == other and match["index"] == int(cross[i].argmax())
            assert match["cosine"] == pytest.approx(cross[i].max(), abs=1e-6)
