"""Multi-layer metrics against independent computations: per-layer FVU and L0 from the
concatenated data, and the replacement model's CE from a fixed-point iteration of whole-stack
reconstructions on a real (tiny, random) TransformerLens 4.x model."""

import pytest
import torch

from raysae import build_sae
from raysae.config import SAEConfig
from raysae.metrics.downstream import _next_token_stats
from raysae.metrics.multilayer import evaluate_layers, replacement_ce

L, D = 3, 32
INPUTS = [f"blocks.{i}.ln2.hook_normalized" for i in range(L)]
OUTPUTS = [f"blocks.{i}.hook_mlp_out" for i in range(L)]


@pytest.fixture(scope="module")
def model():
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    cfg = TransformerBridgeConfig(
        d_model=D, d_head=8, n_layers=L, n_ctx=32, n_heads=4, d_vocab=97, act_fn="gelu", seed=0
    )
    return TransformerBridge.boot_native(cfg).eval()


@pytest.fixture
def tokens():
    return torch.randint(0, 97, (4, 16), generator=torch.Generator().manual_seed(0))


def dictionary(kind: str, architecture: str = "topk", **kw):
    cfg = SAEConfig(kind=kind, architecture=architecture, d_sae=64, k=6, seed=1, **kw)
    m = build_sae(cfg, D, D if kind == "clt" else None, n_layers=L)
    with torch.no_grad():  # away from the init, so biases and scales matter
        g = torch.Generator().manual_seed(2)
        m.b_enc.add_(0.1 * torch.randn(m.b_enc.shape, generator=g))
        m.b_dec.add_(0.1 * torch.randn(m.b_dec.shape, generator=g))
        m.input_scale.mul_(1.5)
    return m.eval()


def data(seed: int, rows: int = 200):
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([1.0, 2.0, 0.5])[:, None]
    return torch.randn(rows, L, D, generator=g) * scale, torch.randn(rows, L, D, generator=g) * scale + 0.3


@pytest.mark.parametrize("kind", ["clt", "crosscoder"])
def test_per_layer_fvu_and_l0_equal_a_direct_computation(kind):
    m = dictionary(kind)
    batches = [data(s) for s in range(3)]
    metrics = evaluate_layers(m, batches, layers=[4, 5, 6])
    x = torch.cat([b[0] for b in batches]).double()
    y = x if kind == "crosscoder" else torch.cat([b[1] for b in batches]).double()
    with torch.no_grad():
        acts = torch.cat([m.encode(b[0]) for b in batches]).double()
        y_hat = torch.cat([m.reconstruct(b[0]) for b in batches]).double()
    err = (y - y_hat).pow(2)
    var = (y - y.mean(0)).pow(2)
    for i, layer in enumerate([4, 5, 6]):
        assert metrics[f"fvu_layer_{layer}"] == pytest.approx(
            float(err[:, i].sum() / var[:, i].sum()), rel=1e-9
        )
        assert metrics[f"mse_layer_{layer}"] == pytest.approx(float(err[:, i].mean()), rel=1e-9)
        if kind == "clt":
            assert metrics[f"l0_layer_{layer}"] == pytest.approx(
                float((acts[:, i] > 0).sum(-1).double().mean())
            )
    assert metrics["fvu"] == pytest.approx(float(err.sum() / var.sum()), rel=1e-9)
    assert metrics["l0"] == pytest.approx(float((acts > 0).reshape(len(acts), -1).sum(-1).double().mean()))
    assert metrics["n_tokens"] == 600
    if kind == "crosscoder":
        assert not any(k.startswith("l0_layer") for k in metrics)


def fixed_point_logits(model, tokens, m):
    """The replacement model by iteration: run with every MLP output replaced by the whole-stack
    reconstruction of the previous run's inputs. Layer l's input is exact after l + 1 runs, so
    after L + 1 runs the logits are the replacement model's (independent of encode/decode_layer)."""
    recon = None
    for _ in range(L + 1):
        seen = {}

        def read(i, seen=seen):
            def hook(act, hook=None):
                seen[i] = act
                return act

            return hook

        def write(i, recon=recon):
            return lambda act, hook=None: recon[:, :, i].to(act.dtype)

        hooks = [(h, read(i)) for i, h in enumerate(INPUTS)]
        if recon is not None:
            hooks += [(h, write(i)) for i, h in enumerate(OUTPUTS)]
        with torch.no_grad():
            logits = model.run_with_hooks(tokens, fwd_hooks=hooks, return_type="logits")
            stacked = torch.stack([seen[i] for i in range(L)], dim=-2)
            recon = m.reconstruct(stacked.reshape(-1, L, D)).reshape(*tokens.shape, L, D)
    return logits


@pytest.mark.parametrize("architecture", ["topk", "jumprelu"])
def test_replacement_model_equals_the_fixed_point_of_whole_stack_reconstructions(model, tokens, architecture):
    m = dictionary("clt", architecture, jumprelu_init_threshold=0.05)
    out = replacement_ce(model, tokens, m, INPUTS, OUTPUTS)
    ce = _next_token_stats(fixed_point_logits(model, tokens, m), tokens)[0]
    assert out["ce_sae"] == pytest.approx(float(ce.mean()), rel=1e-6)
    # The replacement changes the prediction, and a wrong layer order or open loop would show.
    assert out["kl_sae"] > 0
    assert out["ce_zero"] != out["ce_clean"]


def test_per_layer_splice_replaces_one_layer_from_clean_inputs(model, tokens):
    m = dictionary("clt")
    out = replacement_ce(model, tokens, m, INPUTS, OUTPUTS, layers=[0, 1, 2])
    seen = {}
    hooks = [(h, lambda act, hook=None, i=i: seen.__setitem__(i, act) or act) for i, h in enumerate(INPUTS)]
    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=hooks, return_type="logits")
        clean = torch.stack([seen[i] for i in range(L)], dim=-2).reshape(-1, L, D)
        recon = m.reconstruct(clean).reshape(*tokens.shape, L, D)
        for t in range(L):
            logits = model.run_with_hooks(
                tokens,
                fwd_hooks=[(OUTPUTS[t], lambda act, hook=None, t=t: recon[:, :, t])],
                return_type="logits",
            )
            zeroed = model.run_with_hooks(
                tokens,
                fwd_hooks=[(OUTPUTS[t], lambda act, hook=None: torch.zeros_like(act))],
                return_type="logits",
            )
            ce, ce_zero = (float(_next_token_stats(z, tokens)[0].mean()) for z in (logits, zeroed))
            expected = (ce_zero - ce) / (ce_zero - out["ce_clean"])
            assert out[f"ce_loss_recovered_layer_{t}"] == pytest.approx(expected, rel=1e-6)


def test_crosscoder_is_spliced_from_clean_inputs_and_splice_mask_keeps_positions(model, tokens):
    m = dictionary("crosscoder")
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, 0] = False
    out = replacement_ce(model, tokens, m, INPUTS, INPUTS, splice_mask=mask, per_layer=False)
    seen = {}
    hooks = [(h, lambda act, hook=None, i=i: seen.__setitem__(i, act) or act) for i, h in enumerate(INPUTS)]
    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=hooks, return_type="logits")
        clean = torch.stack([seen[i] for i in range(L)], dim=-2)
        recon = m.reconstruct(clean.reshape(-1, L, D)).reshape(*tokens.shape, L, D)
        recon[:, 0] = clean[:, 0]  # BOS kept
        logits = model.run_with_hooks(
            tokens,
            fwd_hooks=[(h, lambda act, hook=None, i=i: recon[:, :, i]) for i, h in enumerate(INPUTS)],
            return_type="logits",
        )
    assert out["ce_sae"] == pytest.approx(float(_next_token_stats(logits, tokens)[0].mean()), rel=1e-6)
    assert not any(k.endswith("_layer_0") for k in out)


def test_whole_model_topk_has_no_one_forward_replacement(model, tokens):
    m = dictionary("clt", topk_scope="model")
    with pytest.raises(ValueError, match="topk_scope"):
        replacement_ce(model, tokens, m, INPUTS, OUTPUTS)
