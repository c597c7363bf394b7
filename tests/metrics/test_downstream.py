"""CE-loss recovered and KL with a real (tiny, random) TransformerLens 4.x model."""

import copy

import pytest
import torch
import torch.nn.functional as F

from raysae import build_sae, ce_loss_recovered
from raysae.config import SAEConfig

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def model():
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    cfg = TransformerBridgeConfig(
        d_model=32, d_head=8, n_layers=2, n_ctx=32, n_heads=4, d_vocab=97, act_fn="gelu", seed=0
    )
    return TransformerBridge.boot_native(cfg).eval()


@pytest.fixture
def tokens():
    return torch.randint(0, 97, (4, 24), generator=torch.Generator().manual_seed(0))


class Identity(torch.nn.Module):
    """A perfect 'SAE': encode = identity, decode = identity."""

    def encode(self, x):
        return x

    def decode(self, f):
        return f


class Zero(Identity):
    def decode(self, f):
        return torch.zeros_like(f)


def test_clean_ce_is_the_models_next_token_loss(model, tokens):
    out = ce_loss_recovered(model, tokens, Identity(), HOOK)
    with torch.no_grad():
        logits = model(tokens)
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, 97).double(), tokens[:, 1:].reshape(-1))
    assert out["ce_clean"] == pytest.approx(float(ref), rel=1e-6)


def test_perfect_sae_recovers_everything(model, tokens):
    out = ce_loss_recovered(model, tokens, Identity(), HOOK)
    assert out["ce_sae"] == pytest.approx(out["ce_clean"], rel=1e-6)
    assert out["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-5)
    assert out["kl_sae"] == pytest.approx(0.0, abs=1e-7)
    assert out["kl_zero"] > 0


def test_zero_sae_recovers_nothing(model, tokens):
    out = ce_loss_recovered(model, tokens, Zero(), HOOK)
    assert out["ce_sae"] == pytest.approx(out["ce_zero"], rel=1e-9)
    assert out["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-9)
    assert out["kl_sae"] == pytest.approx(out["kl_zero"], rel=1e-9)


def test_real_sae_is_between_and_mask_selects_positions(model, tokens):
    sae = build_sae(SAEConfig(architecture="topk", k=4, expansion_factor=2), 32)
    out = ce_loss_recovered(model, tokens, sae, HOOK)
    assert out["kl_sae"] > 0
    mask = torch.zeros(4, 23, dtype=torch.bool)
    mask[:, 0] = True
    first = ce_loss_recovered(model, tokens, sae, HOOK, loss_mask=mask)
    with torch.no_grad():
        logits = model(tokens)
    ref = F.cross_entropy(logits[:, 0].double(), tokens[:, 1])
    assert first["ce_clean"] == pytest.approx(float(ref), rel=1e-6)


def test_splice_mask_leaves_unselected_positions_alone(model, tokens):
    nothing = torch.zeros(4, 24, dtype=torch.bool)
    out = ce_loss_recovered(model, tokens, Zero(), HOOK, splice_mask=nothing)
    assert out["ce_sae"] == pytest.approx(out["ce_clean"], rel=1e-9) and out["kl_sae"] == pytest.approx(
        0, abs=1e-9
    )
    # ablating position 22 cannot change the predictions made before it (causal model)
    last = nothing.clone()
    last[:, 22] = True
    early = torch.zeros(4, 23, dtype=torch.bool)
    early[:, :22] = True
    out = ce_loss_recovered(model, tokens, Zero(), HOOK, splice_mask=last, loss_mask=early)
    assert out["kl_zero"] == pytest.approx(0, abs=1e-9)
    late = ~early
    out = ce_loss_recovered(model, tokens, Zero(), HOOK, splice_mask=last, loss_mask=late)
    assert out["kl_zero"] > 0


class ExactTranscoder(torch.nn.Module):
    """A perfect transcoder of block 0's MLP: its 'reconstruction' is the MLP itself (a copy,
    which carries none of the run's hooks: the model's own MLP would fire them again)."""

    def __init__(self, mlp, scale: float = 1.0):
        super().__init__()
        self.mlp, self.scale = copy.deepcopy(mlp), scale

    def reconstruct(self, x):
        return self.scale * self.mlp(x)


IN, OUT = "blocks.0.ln2.hook_out", "blocks.0.hook_mlp_out"


def test_a_perfect_transcoder_spliced_at_its_output_hook_loses_nothing(model, tokens):
    out = ce_loss_recovered(model, tokens, ExactTranscoder(model.blocks[0].mlp), IN, hook_point_out=OUT)
    assert out["ce_sae"] == pytest.approx(out["ce_clean"], abs=1e-6)
    assert out["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-5)
    assert out["kl_sae"] == pytest.approx(0.0, abs=1e-6)


def test_a_transcoder_splice_replaces_the_output_hook_with_its_prediction(model, tokens):
    """Against a direct computation: the MLP output halved at every position, by hand."""
    half = ExactTranscoder(model.blocks[0].mlp, scale=0.5)
    out = ce_loss_recovered(model, tokens, half, IN, hook_point_out=OUT)
    logits = model.run_with_hooks(
        tokens, fwd_hooks=[(OUT, lambda a, hook=None: 0.5 * a)], return_type="logits"
    )
    ce = F.cross_entropy(logits[:, :-1].double().reshape(-1, 97), tokens[:, 1:].reshape(-1))
    assert out["ce_sae"] == pytest.approx(float(ce), rel=1e-6)
    zero = model.run_with_hooks(tokens, fwd_hooks=[(OUT, lambda a, hook=None: 0 * a)], return_type="logits")
    ce_zero = F.cross_entropy(zero[:, :-1].double().reshape(-1, 97), tokens[:, 1:].reshape(-1))
    assert out["ce_zero"] == pytest.approx(float(ce_zero), rel=1e-6)


def test_a_transcoder_whose_output_runs_before_its_input_is_refused(model, tokens):
    with pytest.raises(ValueError, match="runs before"):
        ce_loss_recovered(
            model, tokens, ExactTranscoder(model.blocks[0].mlp), "blocks.1.ln2.hook_out", hook_point_out=OUT
        )
