"""Inner optimizers and retention (weight decay / forget gate): naive = dual / materialized = primal, the
reductions to the paper's GD, and mini-batch size 1 = torch.optim on the per-token losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ttt.ops import InnerSpec, TTTState, inner_optim, ttt_dual, ttt_naive, ttt_primal
from ttt.ops.inner_optim import InnerOptimizer, newton_schulz

from .helpers import initial_state, inner_params, map_tokens, max_diff, op_inputs, rel_diff, require_grad, with_spec

TOL = 1e-10
OPTIMIZERS = {
    "gd": InnerOptimizer("gd"),
    "momentum": InnerOptimizer("momentum", momentum=0.8),
    "adam": InnerOptimizer("adam", momentum=0.8, beta2=0.9, lr=0.05),
    "muon": InnerOptimizer("muon", momentum=0.8, lr=0.05),
    "muon-plain": InnerOptimizer("muon", momentum=0.5, lr=0.05, nesterov=False),
}


def retention_for(batch: int, seq_len: int, heads: int) -> torch.Tensor:
    return 1 - 0.2 * torch.rand(batch, seq_len, heads, dtype=torch.float64)


def state_diff(a: TTTState, b: TTTState) -> float:
    assert torch.equal(a.offset, b.offset)
    diff = max(max_diff(a.params, b.params), max_diff(a.grad_sums_or_zeros(), b.grad_sums_or_zeros()))
    for x, y in zip(a.buffers, b.buffers):
        diff = max(diff, max_diff(x, y))
    if a.retention is not None or b.retention is not None:
        diff = max(diff, max_diff(a.retention, b.retention))
    if a.steps is not None or b.steps is not None:
        assert torch.equal(a.steps_or_zeros(), b.steps_or_zeros())
    return diff


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("decay", [False, True], ids=["no-decay", "decay"])
@pytest.mark.parametrize("seq_len", [1, 17, 37], ids=lambda t: f"T{t}")
def test_forms_agree(name, kind, decay, seq_len):
    opt = OPTIMIZERS[name]
    inputs = with_spec(op_inputs(2, seq_len, 2, 4), optimizer=opt)
    retention = retention_for(2, seq_len, 2) if decay else None
    state = initial_state(inner_params(kind, 2, 4), 2)
    z_ref, s_ref = ttt_naive(**inputs, state=state, retention=retention)
    forms = [("dual", ttt_dual, {}), ("primal", ttt_primal, {})]
    if opt.is_linear:
        forms.append(("materialized", ttt_dual, {"materialize": True}))
    for label, form, extra in forms:
        z, s = form(**inputs, state=state, retention=retention, **extra)
        assert max_diff(z, z_ref) < TOL, label
        assert state_diff(s, s_ref) < TOL, label


@pytest.mark.parametrize("name", ["momentum", "adam", "muon"])
def test_chunks_padding_and_decode(name):
    """Prefill in unaligned chunks with left/right padding and per-row lengths, then decode steps: equal to the
    naive reference run on each row's real tokens."""
    opt = OPTIMIZERS[name]
    seq_len = 41
    inputs = with_spec(op_inputs(2, seq_len, 2, 4), optimizer=opt)
    retention = retention_for(2, seq_len, 2)
    state0 = initial_state(inner_params("mlp", 2, 4), 2)
    z_ref, s_ref = ttt_naive(**inputs, state=state0, retention=retention)

    def piece(start: int, stop: int) -> dict:
        return map_tokens(inputs, lambda t: t[:, start:stop])

    state, outs = state0, []
    for start, stop in [(0, 5), (5, 21), (21, 38)]:
        z, state = ttt_dual(**piece(start, stop), state=state, retention=retention[:, start:stop])
        outs.append(z)
    z, state = ttt_primal(**piece(38, 41), state=state, retention=retention[:, 38:41])
    outs.append(z)
    assert max_diff(torch.cat(outs, 1), z_ref) < TOL
    assert state_diff(state, s_ref) < TOL

    # row 0 holds 30 real tokens, row 1 holds 41: the padded call equals row 0 alone on its 30 tokens
    lengths = torch.tensor([30, 41])
    z_pad, s_pad = ttt_dual(**inputs, state=state0, retention=retention, lengths=lengths)
    z_row, s_row = ttt_naive(**piece(0, 30), state=state0, retention=retention[:, :30])
    assert max_diff(z_pad[0, :30], z_row[0]) < TOL
    assert z_pad[0, 30:].abs().max() == 0
    assert max_diff(tuple(p[0] for p in s_pad.params), tuple(p[0] for p in s_row.params)) < TOL
    assert max_diff(z_pad[1], z_ref[1]) < TOL


@pytest.mark.parametrize("name", ["momentum", "adam", "muon"])
def test_gradients_agree(name):
    opt = OPTIMIZERS[name]
    inputs = with_spec(op_inputs(2, 19, 2, 4), optimizer=opt)
    retention = retention_for(2, 19, 2).requires_grad_()
    params = tuple(p.requires_grad_() for p in inner_params("linear", 2, 4))
    leaves = [*require_grad(inputs), retention, *params]
    probe = torch.randn(2, 19, 2, 4, dtype=torch.float64)

    def grads(form):
        z, s = form(**inputs, state=initial_state(params, 2), retention=retention)
        loss = (z * probe).sum() + sum(p.square().sum() for p in s.params)
        loss = loss + sum(b.square().sum() for kind in s.buffers for b in kind if b is not None)
        return torch.autograd.grad(loss, leaves)

    reference = grads(ttt_naive)
    for form in (ttt_dual, ttt_primal):
        assert rel_diff(grads(form), reference) < 1e-9, form.__name__


def test_extra_features_off_reduce_to_gd():
    inputs = op_inputs(2, 37, 2, 4)
    state = initial_state(inner_params("mlp", 2, 4), 2)
    z_gd, s_gd = ttt_dual(**inputs, state=state)
    ones = torch.ones(2, 37, 2, dtype=torch.float64)
    for opt, retention in [(InnerOptimizer("momentum", momentum=0.0), None), (InnerOptimizer("gd"), ones)]:
        for form in (ttt_naive, ttt_dual, ttt_primal):
            z, s = form(**with_spec(inputs, optimizer=opt), state=state, retention=retention)
            assert max_diff(z, z_gd) < TOL
            assert max_diff(s.params, s_gd.params) < TOL


def _per_token_losses_with_torch(optimizer_cls, kwargs, inputs, params, *, heads: int):
    """Mini-batch size 1, tf = 1: run torch's optimizer on the per-token losses lr_t ℓ_t (one parameter pair per
    head, since torch's Muon wants 2-D parameters) and read out with the weights after each step."""
    q, k, v, lr = inputs["q"], inputs["k"], inputs["v"], inputs["lr"]
    gamma, beta = inputs["spec"].ln_weight, inputs["spec"].ln_bias
    W = [torch.nn.Parameter(params[0][h].clone()) for h in range(heads)]
    b = [torch.nn.Parameter(params[1][h].clone()) for h in range(heads)]
    opt = optimizer_cls([*W, *b], **kwargs)

    def ln(z, h):
        return F.layer_norm(z, z.shape[-1:], eps=1e-6) * gamma[h] + beta[h]

    outs = []
    for t in range(q.shape[1]):
        opt.zero_grad()
        loss = sum(
            lr[0, t, h] * 0.5 * (ln(k[0, t, h] @ W[h] + b[h], h) - (v[0, t, h] - k[0, t, h])).square().sum()
            for h in range(heads)
        )
        loss.backward()
        opt.step()
        with torch.no_grad():
            outs.append(torch.stack([q[0, t, h] + ln(q[0, t, h] @ W[h] + b[h], h)[0] for h in range(heads)]))
    return torch.stack(outs).unsqueeze(0)


@pytest.mark.parametrize(
    "name, torch_cls, kwargs, ours, decay",
    [
        ("sgd-momentum", torch.optim.SGD, dict(lr=1.0, momentum=0.8), InnerOptimizer("momentum", momentum=0.8), 1.0),
        ("adam", torch.optim.Adam, dict(lr=0.05, betas=(0.8, 0.9)), InnerOptimizer("adam", 0.8, 0.9, lr=0.05), 1.0),
        (
            "adamw",
            torch.optim.AdamW,
            dict(lr=0.05, betas=(0.8, 0.9), weight_decay=0.5),
            InnerOptimizer("adam", 0.8, 0.9, lr=0.05),
            1 - 0.05 * 0.5,
        ),
        (
            "muon",
            torch.optim.Muon,
            dict(lr=0.05, momentum=0.8, weight_decay=0.0),
            InnerOptimizer("muon", momentum=0.8, lr=0.05),
            1.0,
        ),
    ],
)
def test_mini_batch_one_is_torch_optim(name, torch_cls, kwargs, ours, decay, monkeypatch):
    heads, seq_len = 2, 12
    inputs = with_spec(op_inputs(1, seq_len, heads, 4, b=1), token_factor=torch.ones(1, dtype=torch.float64))
    params = inner_params("linear", heads, 4)
    if name == "muon":
        # torch's Newton-Schulz runs in bfloat16; swap in the same iteration in float64 to compare to 1e-10
        from torch.optim import _muon

        monkeypatch.setattr(_muon, "_zeropower_via_newtonschulz", lambda g, coeffs, steps, eps: newton_schulz(g, steps))
    expected = _per_token_losses_with_torch(torch_cls, kwargs, inputs, params, heads=heads)
    retention = torch.full((1, seq_len, heads), decay, dtype=torch.float64)
    for form in (ttt_naive, ttt_dual, ttt_primal):
        z, _ = form(**with_spec(inputs, optimizer=ours), state=initial_state(params, 1), retention=retention)
        assert max_diff(z, expected) < TOL, form.__name__


def test_newton_schulz_matches_torch_in_bfloat16():
    from torch.optim._muon import _zeropower_via_newtonschulz

    for shape in [(8, 8), (4, 12), (12, 4), (1, 16)]:
        g = torch.randn(*shape)
        ours = newton_schulz(g.double()).float()
        theirs = _zeropower_via_newtonschulz(g, inner_optim.NS_COEFFICIENTS, 5, 1e-7).float()
        assert (ours - theirs).abs().max() < 0.05, shape
        # an approximate orthogonalisation: singular values pulled into roughly [0.5, 1.5]
        s = torch.linalg.svdvals(ours)
        assert s.max() < 1.6 and s.min() > 0.3


def test_optimizer_validation():
    with pytest.raises(ValueError, match="inner optimizer must be one of"):
        InnerOptimizer("sgd")
    with pytest.raises(ValueError, match="momentum"):
        InnerOptimizer("momentum", momentum=1.0)
    with pytest.raises(ValueError, match="linear in the gradients"):
        from ttt.ops.dual import dual_mini_batch

        x = torch.zeros(1, 1, 16, 4)
        dual_mini_batch(x, x, x, x[..., 0], None, InnerSpec(torch.ones(16), optimizer=OPTIMIZERS["adam"]), None, False)
