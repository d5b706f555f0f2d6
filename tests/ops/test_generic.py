"""The generic inner model (torch.func) equals the specialised TTT-Linear / TTT-MLP forms, float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ttt.ops import TTTState, ttt_dual
from ttt.ops.generic import ttt_generic

from .helpers import inner_params, max_diff, op_inputs, rel_diff, require_grad


def as_module(kind: str, dim: int) -> tuple[nn.Module, callable]:
    """A torch module computing our inner model, and how our [H, ...] params map to its parameters."""
    if kind == "linear":
        module = nn.Linear(dim, dim).double()

        def to_module(p):  # f(x) = x W1 + b1 = Linear with weight W1ᵀ
            return {"weight": p[0].transpose(-1, -2), "bias": p[1].squeeze(-2)}

    else:
        module = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim)).double()

        def to_module(p):
            return {
                "0.weight": p[0].transpose(-1, -2),
                "0.bias": p[1].squeeze(-2),
                "2.weight": p[2].transpose(-1, -2),
                "2.bias": p[3].squeeze(-2),
            }

    return module, to_module


@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("seq_len", [16, 37], ids=lambda t: f"T{t}")
def test_generic_equals_specialised(kind, seq_len):
    inputs = op_inputs(2, seq_len, 2, 4)
    params = tuple(p.requires_grad_() for p in inner_params(kind, 2, 4))
    leaves = [*require_grad(inputs), *params]
    module, to_module = as_module(kind, 4)
    z_generic, final = ttt_generic(module, to_module(params), **inputs)
    z_dual, state = ttt_dual(**inputs, state=TTTState.initial(params, 2))
    assert max_diff(z_generic, z_dual) < 1e-10
    if seq_len % 16 == 0:
        expected = to_module(state.params)
        assert max(max_diff(final[n], expected[n]) for n in final) < 1e-10
    # outer-loop gradients agree too
    probe = torch.randn_like(z_dual)
    g_generic = torch.autograd.grad((z_generic * probe).sum(), leaves, retain_graph=True)
    g_dual = torch.autograd.grad((z_dual * probe).sum(), leaves)
    assert rel_diff(g_generic, g_dual) < 1e-10


def test_any_module_runs():
    """A model the specialised forms do not have (two hidden layers, SiLU) trains in the inner loop."""
    dim, heads = 4, 2
    module = nn.Sequential(nn.Linear(dim, 8), nn.SiLU(), nn.Linear(8, 8), nn.SiLU(), nn.Linear(8, dim)).double()
    params = {n: p.detach().unsqueeze(0).repeat(heads, *[1] * p.dim()) for n, p in module.named_parameters()}
    inputs = op_inputs(1, 20, heads, dim)
    z, final = ttt_generic(module, params, **inputs)
    assert z.shape == (1, 20, heads, dim) and torch.isfinite(z).all()
    assert not torch.equal(final["0.weight"][0], params["0.weight"])  # the inner model learned
