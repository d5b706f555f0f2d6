"""The Fig. 4 diagnostics follow the layer's own options: for every option, the three curves equal the naive
token-by-token oracle (autograd inner gradients) run with the same options, reading out at the key."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ttt import TTTForCausalLM, get_preset
from ttt.eval.diagnostics import inner_loss_trace, layer_inputs
from ttt.ops import ttt_naive
from ttt.ops.inner_optim import InnerOptimizer

OPTIONS = {
    "paper": {},
    "adam": dict(inner_optimizer="adam"),
    "momentum": dict(inner_optimizer="momentum"),
    "muon": dict(inner_optimizer="muon"),
    "no_residual": dict(inner_residual=False),
    "no_inner_norm": dict(inner_norm=False),
    "no_residual_no_norm": dict(inner_residual=False, inner_norm=False),
    "forget_gate": dict(forget_gate=True),
    "weight_decay": dict(inner_weight_decay=0.2),
    "no_bias": dict(inner_bias=False),
    "harmonic_no_lr_gate": dict(token_factor="harmonic", lr_gate=False),
}


def per_token(z, v):
    return 0.5 * (z - v).pow(2).sum(-1).mean(dim=(0, 2))


@pytest.mark.parametrize("preset", ["ttt-linear-tiny", "ttt-mlp-tiny-T"])
@pytest.mark.parametrize("option", list(OPTIONS))
def test_curves_equal_the_naive_oracle_with_the_layers_options(preset, option):
    torch.manual_seed(0)
    model = TTTForCausalLM(get_preset(preset, mini_batch_size=4, **OPTIONS[option])).double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ttt_lr_bias" in name:
                p.fill_(1.0)
            if "token_idx" in name or name.endswith(("b1", "b2")) or "forget_gate" in name:
                p.add_(0.1 * torch.randn_like(p))
    ids = torch.randint(0, 256, (2, 11))
    layer, x = layer_inputs(model, ids)[1]
    trace = inner_loss_trace(layer, x)
    with torch.no_grad():
        q, k, v, lr, state, _ = layer.projections(x)
        spec, retention = layer.inner_spec(), layer.retention(x)
        after, _ = ttt_naive(k, k, v, lr, spec, state, retention=retention)
        shifted = torch.cat([k[:, 1:], k[:, -1:]], 1)
        before, _ = ttt_naive(shifted, k, v, lr, spec, state, retention=retention)
        plain_gd = dataclasses.replace(spec, optimizer=InnerOptimizer("gd"))
        initial, _ = ttt_naive(k, k, v, torch.zeros_like(lr), plain_gd, state)
    assert torch.allclose(trace["W_t"], per_token(after, v), rtol=1e-9, atol=1e-12)
    assert torch.allclose(trace["W_prev"][1:], per_token(before[:, :-1], v[:, 1:]), rtol=1e-9, atol=1e-12)
    assert torch.allclose(trace["W0"], per_token(initial, v), rtol=1e-9, atol=1e-12)
    assert trace["W_prev"][0] == trace["W0"][0]


def test_other_layer_types_are_refused_by_name():
    model = TTTForCausalLM(get_preset("ttt-linear-tiny", ttt_layer_type="nadaraya_watson")).eval()
    layer, x = layer_inputs(model, torch.randint(0, 256, (1, 5)))[0]
    with pytest.raises(TypeError, match="TTTNadarayaWatson"):
        inner_loss_trace(layer, x)
