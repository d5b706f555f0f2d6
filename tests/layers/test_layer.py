"""The TTT layers on their own: drop-in use, per-layer state, step, gradcheck, errors."""

from __future__ import annotations

import pytest
import torch

from ttt import TTTMLP, TTTLinear

LAYERS = [TTTLinear, TTTMLP]


def make(cls, dtype=torch.float64, **kw):
    torch.manual_seed(0)
    layer = cls(hidden_size=16, num_heads=2, mini_batch_size=4, **kw).to(dtype)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if "token_idx" in name or "norm" in name or name in ("b1", "b2"):
                p.add_(0.1 * torch.randn_like(p))
            if name == "learnable_ttt_lr_bias":
                p.add_(1.0)
    return layer


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("share_qk", [False, True], ids=["sepqk", "shareqk"])
def test_chunked_calls_equal_one_call(cls, share_qk):
    layer = make(cls, share_qk=share_qk, use_gate=share_qk)
    x = torch.randn(2, 23, 16, dtype=torch.float64)
    whole = layer(x)
    state = layer.allocate_inference_cache(2)
    parts = [layer(x[:, a:b], past_key_values=state) for a, b in [(0, 3), (3, 9), (9, 10), (10, 23)]]
    assert (torch.cat(parts, 1) - whole).abs().max().item() < 1e-12
    state2 = layer.allocate_inference_cache(2)
    steps = [layer.step(x[:, t], state2) for t in range(23)]
    assert (torch.stack(steps, 1) - whole).abs().max().item() < 1e-12
    assert state.num_positions == state2.num_positions == 23


@pytest.mark.parametrize("impl", ["naive", "primal", "dual"])
def test_implementations_agree_in_layer(impl):
    ref = make(TTTMLP, share_qk=True, implementation="naive")
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    layer = make(TTTMLP, share_qk=True, implementation=impl)
    assert (layer(x) - ref(x)).abs().max().item() < 1e-12


@pytest.mark.parametrize("cls", LAYERS)
def test_gradcheck_outer_loop(cls):
    """float64 gradcheck of the outputs with respect to the input and the parameters of a tiny layer."""
    torch.manual_seed(0)
    layer = cls(hidden_size=4, num_heads=1, mini_batch_size=2, share_qk=True, use_gate=True, conv_kernel=2).double()
    # away from the init: with W ~ N(0, 0.02) and zero biases, LN(f(k)) sees a variance near its ε and finite
    # differences stop resolving it
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(1, 5, 4, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]

    def f(x, *ps):
        return torch.func.functional_call(layer, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-6)


def test_masked_rows_equal_unpadded_rows():
    layer = make(TTTLinear, share_qk=True)
    x = torch.randn(2, 12, 16, dtype=torch.float64)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, :5] = 0
    out = layer(x, attention_mask=mask)
    alone = layer(x[1:, 5:])
    assert (out[1, 5:] - alone[0]).abs().max().item() < 1e-12
    assert out[1, :5].abs().max().item() == 0
    assert (out[0] - layer(x[:1])[0]).abs().max().item() < 1e-12


def test_bad_inputs_and_config():
    layer = make(TTTLinear)
    with pytest.raises(ValueError, match="shape"):
        layer(torch.randn(2, 5, 15, dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        layer(torch.randn(5, 16, dtype=torch.float64))
    with pytest.raises(ValueError, match="batch size"):
        layer(torch.randn(2, 5, 16, dtype=torch.float64), past_key_values=layer.allocate_inference_cache(3))
    with pytest.raises(ValueError, match="another config"):
        layer(torch.randn(1, 5, 16, dtype=torch.float64), past_key_values=make(TTTMLP).allocate_inference_cache(1))
    with pytest.raises(ValueError, match="attention_mask"):
        layer(torch.randn(1, 5, 16, dtype=torch.float64), attention_mask=torch.ones(1, 1, 5, 5))
    with pytest.raises(ValueError, match="divisible"):
        TTTLinear(hidden_size=10, num_heads=3)
    with pytest.raises(ValueError, match="mini_batch_size"):
        TTTLinear(hidden_size=8, num_heads=2, mini_batch_size=0)
    assert layer(torch.randn(2, 0, 16, dtype=torch.float64)).shape == (2, 0, 16)


def test_layer_in_a_user_model_trains():
    """A TTT layer inside an ordinary nn.Module: loss goes down with AdamW."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), TTTLinear(hidden_size=16, num_heads=2), torch.nn.Linear(16, 8))
    x = torch.randn(4, 32, 8)
    target = x.roll(1, dims=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = (model(x) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_gradients_reach_w0_through_a_cache():
    """Training through a state (chunks) gives the gradients of one call, W0 included."""
    layer = make(TTTMLP, share_qk=True)
    x = torch.randn(2, 21, 16, dtype=torch.float64)
    whole = torch.autograd.grad(layer(x).square().sum(), list(layer.parameters()))
    state = layer.allocate_inference_cache(2)
    chunked = torch.cat([layer(x[:, :9], past_key_values=state), layer(x[:, 9:], past_key_values=state)], 1)
    grads = torch.autograd.grad(chunked.square().sum(), list(layer.parameters()))
    for (name, _), a, b in zip(layer.named_parameters(), whole, grads):
        assert (a - b).abs().max().item() < 1e-10, name


def test_mask_and_cache_mismatches_are_named():
    layer = make(TTTLinear)
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="batch=2"):
        layer(x, attention_mask=torch.ones(1, 5))
    with pytest.raises(ValueError, match="0 \\(padding\\) and 1"):
        layer(x, attention_mask=torch.tensor([[0.0, 0, -1e9, 0, 0]] * 2))
    with pytest.raises(ValueError, match="float32"):
        layer(x, past_key_values=layer.allocate_inference_cache(2, dtype=torch.float32))
