"""Other inner learners as layers: any module (TTTGeneric) and Nadaraya-Watson (Theorem 2), in layers and models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ttt import TTTMLP, TTTCache, TTTForCausalLM, TTTGeneric, TTTLinear, TTTNadarayaWatson, get_preset


def perturbed(layer: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return layer


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_generic_layer_equals_the_specialised_layer(kind):
    torch.manual_seed(0)
    cls = TTTLinear if kind == "linear" else TTTMLP
    ref = perturbed(cls(16, 2, mini_batch_size=4, share_qk=True, use_gate=True).double())
    layer = TTTGeneric(16, 2, inner_model=kind, mini_batch_size=4, share_qk=True, use_gate=True).double()
    # same outer weights; inner weights transposed into nn.Linear's [out, in] layout
    state = {k: v for k, v in ref.state_dict().items() if k not in ref.inner_param_names}
    linears = ["inner_weight", "inner_bias"] if kind == "linear" else ["inner_0_weight", "inner_0_bias"]
    linears += [] if kind == "linear" else ["inner_2_weight", "inner_2_bias"]
    for name, ours in zip(linears, ref.inner_param_names):
        tensor = getattr(ref, ours).detach()
        state[name] = tensor.transpose(-1, -2) if name.endswith("weight") else tensor.squeeze(1)
    layer.load_state_dict(state)
    x = torch.randn(2, 19, 16, dtype=torch.float64, requires_grad=True)
    out, expected = layer(x), ref(x)
    assert (out - expected).abs().max() < 1e-10
    (g1,) = torch.autograd.grad(out.square().sum(), x)
    (g2,) = torch.autograd.grad(expected.square().sum(), x)
    assert (g1 - g2).abs().max() < 1e-9


@pytest.mark.parametrize("name", ["mlp3", "swiglu"])
def test_generic_inner_models_train(name):
    torch.manual_seed(0)
    layer = TTTGeneric(16, 2, inner_model=name, mini_batch_size=4)
    layer(torch.randn(2, 11, 16)).square().mean().backward()
    assert all(p.grad is not None for p in layer.parameters())


def test_nadaraya_watson_layer_learner_equals_attention_form():
    torch.manual_seed(0)
    fast = perturbed(TTTNadarayaWatson(16, 2, share_qk=True).double())
    naive = TTTNadarayaWatson(16, 2, share_qk=True, implementation="naive").double()
    naive.load_state_dict(fast.state_dict())
    x = torch.randn(2, 13, 16, dtype=torch.float64)
    assert (fast(x) - naive(x)).abs().max() < 1e-12


@pytest.mark.parametrize("layer_type", ["generic", "nadaraya_watson"])
def test_models_with_other_learners(layer_type):
    torch.manual_seed(0)
    model = TTTForCausalLM(get_preset("ttt-linear-tiny", ttt_layer_type=layer_type)).eval()
    ids = torch.randint(0, 256, (2, 10))
    logits = model(ids).logits
    assert logits.shape == (2, 10, 256) and torch.isfinite(logits).all()
    with pytest.raises(NotImplementedError, match="no fixed-size TTT state"):
        TTTCache.from_model(model, 2)
    with pytest.raises(NotImplementedError, match="padding masks"):
        model(ids, attention_mask=torch.tensor([[0] * 3 + [1] * 7, [1] * 10]))


def test_bad_inner_models_are_named():
    with pytest.raises(ValueError, match="inner_model"):
        get_preset("ttt-linear-tiny", ttt_layer_type="generic", inner_model="resnet")
    with pytest.raises(ValueError, match="must map"):
        TTTGeneric(16, 2, inner_model=nn.Linear(8, 4))
    with pytest.raises(ValueError, match="GD only"):
        TTTGeneric(16, 2, inner_optimizer="adam")
