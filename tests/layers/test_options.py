"""Layer and model options beyond the default layer: ablation switches, inner optimizers, weight decay and the forget
gate. Each option: dual = naive in the layer, chunks and decode steps = one call, gradients reach the new
parameters, a session round-trips, and the state's bytes equal the formula."""

from __future__ import annotations

import pytest
import torch

from ttt import TTTMLP, TTTCache, TTTForCausalLM, TTTLinear, get_preset
from ttt.models import state_bytes

OPTIONS = {
    "momentum": dict(inner_optimizer="momentum"),
    "adam+forget": dict(inner_optimizer="adam", inner_lr=0.01, forget_gate=True),
    "muon+decay": dict(inner_optimizer="muon", inner_lr=0.01, inner_weight_decay=0.05),
    "ablated": dict(inner_bias=False, inner_norm=False, inner_residual=False, learnable_init=False, lr_gate=False),
    "harmonic": dict(token_factor="harmonic", forget_gate=True),
    "one": dict(token_factor="one", mini_batch_size=1),
}
LAYER_KEYS = {
    "inner_bias",
    "inner_norm",
    "inner_residual",
    "learnable_init",
    "lr_gate",
    "token_factor",
    "inner_weight_decay",
    "forget_gate",
    "mini_batch_size",
}


def layer_kwargs(options: dict) -> dict:
    kw = {k: v for k, v in options.items() if k in LAYER_KEYS}
    if "inner_optimizer" in options:
        from ttt.ops.inner_optim import InnerOptimizer

        kw["inner_optimizer"] = InnerOptimizer(options["inner_optimizer"], lr=options.get("inner_lr", 1e-3))
    return kw


def make(cls, implementation="auto", **options):
    torch.manual_seed(0)
    kw = dict(mini_batch_size=4) | layer_kwargs(options)
    layer = cls(hidden_size=16, num_heads=2, share_qk=True, implementation=implementation, **kw).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return layer


@pytest.mark.parametrize("name", list(OPTIONS))
@pytest.mark.parametrize("cls", [TTTLinear, TTTMLP])
def test_layer_forms_chunks_and_steps(name, cls):
    options = OPTIONS[name]
    x = torch.randn(2, 19, 16, dtype=torch.float64)
    whole = make(cls, **options)(x)
    assert (make(cls, "naive", **options)(x) - whole).abs().max() < 1e-10
    layer = make(cls, **options)
    state = layer.allocate_inference_cache(2)
    parts = [layer(x[:, a:b], past_key_values=state) for a, b in [(0, 3), (3, 10), (10, 15)]]
    parts += [layer.step(x[:, t], state) for t in range(15, 19)]
    parts = [p if p.dim() == 3 else p.unsqueeze(1) for p in parts]
    assert (torch.cat(parts, 1) - whole).abs().max() < 1e-10


@pytest.mark.parametrize("name", ["adam+forget", "ablated"])
def test_new_parameters_learn_and_absent_ones_are_absent(name):
    layer = make(TTTLinear, **OPTIONS[name])
    names = {n for n, _ in layer.named_parameters()}
    if name == "ablated":
        assert not names & {"W1", "b1", "ttt_norm_weight", "learnable_ttt_lr_weight"}
        assert layer.W1.abs().max() == 0 and layer.b1 is None
    else:
        assert {"forget_gate_weight", "forget_gate_bias", "W1", "b1"} <= names
    layer(torch.randn(2, 9, 16, dtype=torch.float64)).square().sum().backward()
    for n, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, n


def test_ablated_layer_is_linear_attention():
    """No bias, LN or residual, W0 = 0, constant η = ttt_base_lr / head_dim, tf = 1, one mini-batch for the whole
    sequence: z = (η Q Kᵀ ⊙ causal) V (Theorem 1 in the layer)."""
    layer = TTTLinear(
        16,
        2,
        mini_batch_size=12,
        inner_bias=False,
        inner_norm=False,
        inner_residual=False,
        learnable_init=False,
        lr_gate=False,
        token_factor="one",
    ).double()
    x = torch.randn(2, 12, 16, dtype=torch.float64)
    q, k, v, lr, _, _ = layer.projections(x)
    from ttt.ops import ttt_dual

    out, _ = ttt_dual(q, k, v, lr, layer.inner_spec(), layer.allocate_inference_cache(2).ttt)
    scores = torch.einsum("bihd,bjhd->bhij", q, k).tril()
    expected = torch.einsum("bhij,bjhd->bihd", scores, v) * (1.0 / 8)
    assert (out - expected).abs().max() < 1e-12


@pytest.mark.parametrize("name", ["momentum", "adam+forget", "muon+decay", "ablated"])
def test_model_state_bytes_and_session_round_trip(name, tmp_path):
    options = dict(OPTIONS[name])
    torch.manual_seed(0)
    model = TTTForCausalLM(get_preset("ttt-mlp-tiny", vocab_size=97, eos_token_id=None, **options)).eval()
    ids = torch.randint(0, 97, (1, 21))
    cache = TTTCache.from_model(model, 1)
    with torch.no_grad():
        model(ids, past_key_values=cache, use_cache=True)
    assert cache.nbytes() == state_bytes(model.config, batch_size=1)
    cache.save(tmp_path / "s.safetensors", model)
    loaded = TTTCache.load(tmp_path / "s.safetensors", model)
    nxt = torch.randint(0, 97, (1, 5))
    with torch.no_grad():
        a = model(nxt, past_key_values=cache, use_cache=True).logits
        b = model(nxt, past_key_values=loaded, use_cache=True).logits
        full = model(torch.cat([ids, nxt], 1)).logits[:, -5:]
    assert torch.equal(a, b)
    assert (a - full).abs().max() < 1e-4


def test_bad_option_values_are_named():
    with pytest.raises(ValueError, match="inner_optimizer"):
        get_preset("ttt-linear-tiny", inner_optimizer="sgd")
    with pytest.raises(ValueError, match="token_factor"):
        get_preset("ttt-linear-tiny", token_factor="half")
    with pytest.raises(ValueError, match="inner_weight_decay"):
        get_preset("ttt-linear-tiny", inner_weight_decay=1.5)
    with pytest.raises(ValueError, match="token_factor"):
        TTTLinear(16, 2, token_factor="x")
