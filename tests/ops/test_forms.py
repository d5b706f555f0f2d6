"""naive = dual = primal in float64: forward, final state and gradients, whole sequences, chunks, padding."""

from __future__ import annotations

import pytest
import torch

from ttt.ops import TTTState, ttt_dual, ttt_naive, ttt_primal

from .helpers import cast, initial_state, inner_params, map_tokens, max_diff, op_inputs, rel_diff, require_grad

KINDS = ["linear", "mlp"]
LENGTHS = [1, 15, 16, 17, 37, 100]
TOL = 1e-10


def run(form, inputs, state, **kw):
    return form(**inputs, state=state, **kw)


def states_close(a: TTTState, b: TTTState) -> float:
    assert torch.equal(a.offset, b.offset)
    return max(max_diff(a.params, b.params), max_diff(a.grad_sums_or_zeros(), b.grad_sums_or_zeros()))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seq_len", LENGTHS, ids=lambda t: f"T{t}")
def test_forward_and_state_agree(kind, seq_len):
    inputs = op_inputs(2, seq_len, 2, 4)
    state = initial_state(inner_params(kind, 2, 4), 2)
    z_naive, s_naive = run(ttt_naive, inputs, state)
    for form in (ttt_dual, ttt_primal):
        z, s = run(form, inputs, state)
        assert max_diff(z, z_naive) < TOL, form.__name__
        assert states_close(s, s_naive) < TOL, form.__name__
    assert s_naive.offset.tolist() == [seq_len % 16] * 2


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seq_len", [17, 37], ids=lambda t: f"T{t}")
def test_gradients_agree(kind, seq_len):
    inputs = op_inputs(2, seq_len, 2, 4)
    params = tuple(p.requires_grad_() for p in inner_params(kind, 2, 4))
    leaves = [*require_grad(inputs), *params]
    probe = torch.randn(2, seq_len, 2, 4, dtype=torch.float64)

    def grads(form):
        z, s = run(form, inputs, initial_state(params, 2))
        # the final state enters the objective too, so its gradient path is checked
        loss = (
            (z * probe).sum() + sum(p.sum() for p in s.params) + sum(g.square().sum() for g in s.grad_sums_or_zeros())
        )
        return torch.autograd.grad(loss, leaves)

    reference = grads(ttt_naive)
    for form in (ttt_dual, ttt_primal):
        assert rel_diff(grads(form), reference) < TOL, form.__name__


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "cuts", [(16, 32), (5, 21, 22), (1, 2, 3, 40), (15, 17, 31, 48)], ids=lambda c: "cut" + "-".join(map(str, c))
)
def test_chunked_equals_whole(kind, cuts):
    """A sequence split at any points, aligned with the mini-batch or not, gives the whole sequence's outputs."""
    seq_len = 53
    inputs = op_inputs(2, seq_len, 2, 4)
    state0 = initial_state(inner_params(kind, 2, 4), 2)
    z_whole, s_whole = run(ttt_naive, inputs, state0)
    for form in (ttt_dual, ttt_primal, ttt_naive):
        state, outs = state0, []
        bounds = (0, *cuts, seq_len)
        for a, c in zip(bounds[:-1], bounds[1:]):
            chunk = map_tokens(inputs, lambda t, a=a, c=c: t[:, a:c])
            z, state = run(form, chunk, state)
            outs.append(z)
        assert max_diff(torch.cat(outs, 1), z_whole) < TOL, form.__name__
        assert states_close(state, s_whole) < TOL, form.__name__


@pytest.mark.parametrize("kind", KINDS)
def test_padding_and_per_row_offsets(kind):
    """Rows with different numbers of real tokens, then a second call from different offsets per row."""
    inputs = op_inputs(3, 29, 2, 4)
    state0 = initial_state(inner_params(kind, 2, 4), 3)
    lengths = torch.tensor([29, 7, 0])
    z_ref, s_ref = run(ttt_naive, inputs, state0, lengths=lengths)
    for form in (ttt_dual, ttt_primal):
        z, s = run(form, inputs, state0, lengths=lengths)
        assert max_diff(z, z_ref) < TOL and states_close(s, s_ref) < TOL, form.__name__
        assert z[1, 7:].abs().max() == 0 and z[2].abs().max() == 0
    assert s_ref.offset.tolist() == [13, 7, 0]
    more = op_inputs(3, 21, 2, 4)
    more["spec"] = inputs["spec"]
    z2_ref, s2_ref = run(ttt_naive, more, s_ref, lengths=torch.tensor([21, 20, 3]))
    for form in (ttt_dual, ttt_primal):
        z2, s2 = run(form, more, s_ref, lengths=torch.tensor([21, 20, 3]))
        assert max_diff(z2, z2_ref) < TOL and states_close(s2, s2_ref) < TOL, form.__name__


def test_padding_equals_unpadded_row():
    """A padded row gives exactly what the same row gives alone."""
    inputs = op_inputs(2, 40, 2, 4)
    state0 = initial_state(inner_params("mlp", 2, 4), 2)
    z, s = ttt_dual(**inputs, state=state0, lengths=torch.tensor([40, 19]))
    alone = map_tokens(inputs, lambda t: t[1:, :19])
    z1, s1 = ttt_dual(**alone, state=state0.map(lambda t: t[1:]))
    assert max_diff(z[1:, :19], z1) < TOL
    assert states_close(s.map(lambda t: t[1:]), s1) < TOL


@pytest.mark.parametrize("kind", KINDS)
def test_remat_is_exact(kind, monkeypatch):
    import ttt.ops.driver as dual

    calls = []
    real = dual.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(dual, "checkpoint", counting)
    inputs = op_inputs(2, 70, 2, 4)
    leaves = require_grad(inputs)
    state0 = initial_state(inner_params(kind, 2, 4), 2)

    def forward_backward(group):
        z, _ = ttt_dual(**inputs, state=state0, remat_mini_batch_group_size=group)
        return z, torch.autograd.grad(z.square().sum(), leaves)

    z0, g0 = forward_backward(0)
    assert not calls
    for group in (1, 2, 4):
        z, g = forward_backward(group)
        assert max_diff(z, z0) == 0.0 and rel_diff(g, g0) < 1e-13
    assert len(calls) == 5 + 3 + 2  # 70 tokens = 5 mini-batches: groups of 1, 2 and 4


def test_empty_sequence():
    inputs = op_inputs(2, 0, 2, 4)
    state0 = initial_state(inner_params("linear", 2, 4), 2)
    for form in (ttt_dual, ttt_primal, ttt_naive):
        z, s = run(form, inputs, state0)
        assert z.shape == (2, 0, 2, 4)
        assert torch.equal(s.offset, state0.offset)


def test_float32_dual_close_to_float64_naive():
    inputs = op_inputs(2, 37, 2, 8)
    state0 = initial_state(inner_params("mlp", 2, 8), 2)
    z_ref, _ = ttt_naive(**inputs, state=state0)
    z32, _ = ttt_dual(
        **cast(inputs, torch.float32), state=state0.map(lambda t: t.float() if t.is_floating_point() else t)
    )
    assert z32.dtype == torch.float32
    assert max_diff(z32.double(), z_ref) < 1e-5


def test_naive_under_no_grad():
    inputs = op_inputs(1, 20, 2, 4)
    params = tuple(p.requires_grad_() for p in inner_params("mlp", 2, 4))
    z_ref, _ = ttt_dual(**inputs, state=initial_state(params, 1))
    with torch.no_grad():
        z, _ = ttt_naive(**inputs, state=initial_state(params, 1))
    assert max_diff(z, z_ref) < TOL
