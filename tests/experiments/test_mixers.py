"""The independent linear-attention and delta-rule references equal TTT-Linear's special cases (float64)."""

from __future__ import annotations

import pytest
import torch

from ttt import TTTLinear
from ttt.experiments.mixers import (
    SPECIAL_CASE,
    DeltaRuleLayer,
    LinearAttentionLayer,
    delta_rule_chunked,
    delta_rule_recurrent,
    linear_attention,
)
from ttt.ops import InnerSpec, TTTState, ttt_dual

B, H, D = 2, 2, 4


def qkv(seq_len: int) -> tuple[torch.Tensor, ...]:
    return tuple(torch.randn(B, seq_len, H, D, dtype=torch.float64) for _ in range(3))


def ttt_plain(q, k, v, lr, b: int, w0=None):
    """TTT-Linear's op with no bias, LN or residual and token factor 1."""
    w0 = torch.zeros(H, D, D, dtype=torch.float64) if w0 is None else w0
    tf = torch.ones(b, dtype=torch.float64)
    return ttt_dual(q, k, v, lr, InnerSpec(tf, residual=False), TTTState.initial((w0, None), B))


@pytest.mark.parametrize("seq_len", [1, 15, 37])
def test_linear_attention_is_ttt_with_one_mini_batch(seq_len):
    q, k, v = qkv(seq_len)
    lr = torch.rand(B, seq_len, H, dtype=torch.float64)
    z_ttt, _ = ttt_plain(q, k, v, lr, b=seq_len)
    assert (linear_attention(q, k, v, lr) - z_ttt).abs().max() < 1e-12


@pytest.mark.parametrize("seq_len", [1, 15, 16, 17, 37])
@pytest.mark.parametrize("chunk", [1, 4, 16])
def test_delta_rule_forms_are_ttt_with_mini_batch_one(seq_len, chunk):
    q, k, v = qkv(seq_len)
    lr = 0.3 * torch.rand(B, seq_len, H, dtype=torch.float64)
    w0 = 0.2 * torch.randn(H, D, D, dtype=torch.float64)
    z_ttt, final = ttt_plain(q, k, v, lr, b=1, w0=w0)
    z_rec, W_rec = delta_rule_recurrent(q, k, v, lr, w0.expand(B, H, D, D))
    z_chunk, W_chunk = delta_rule_chunked(q, k, v, lr, w0.expand(B, H, D, D), chunk=chunk)
    assert (z_rec - z_ttt).abs().max() < 1e-12
    assert (W_rec - final.params[0]).abs().max() < 1e-12
    assert (z_chunk - z_rec).abs().max() < 1e-10
    assert (W_chunk - W_rec).abs().max() < 1e-10


def test_chunked_delta_rule_gradients_match_the_recurrence():
    q, k, v = (t.requires_grad_() for t in qkv(19))
    lr = torch.full((B, 19, H), 0.2, dtype=torch.float64)
    grads = []
    for fn in (delta_rule_recurrent, lambda *a: delta_rule_chunked(*a, chunk=8)):
        z, _ = fn(q, k, v, lr)
        grads.append(torch.autograd.grad(z.square().sum(), (q, k, v)))
    for a, b in zip(*grads):
        assert (a - b).abs().max() < 1e-10


@pytest.mark.parametrize(
    "layer_cls, mini_batch_size", [(LinearAttentionLayer, 23), (DeltaRuleLayer, 1)], ids=["linear_attn", "delta"]
)
def test_layers_equal_ttt_linear_special_cases(layer_cls, mini_batch_size):
    """Same weights, whole layer (projections, RoPE, inner loop, output norm and projection)."""
    torch.manual_seed(0)
    ttt = TTTLinear(16, 2, mini_batch_size=mini_batch_size, ttt_base_lr=0.7, **SPECIAL_CASE).double()
    kw = dict(mini_batch_size=mini_batch_size) if layer_cls is LinearAttentionLayer else dict(chunk=8)
    ours = layer_cls(16, 2, ttt_base_lr=0.7, **kw).double()
    ours.load_state_dict(ttt.state_dict())
    with torch.no_grad():
        for p in ttt.parameters():
            p.add_(0.3 * torch.randn_like(p))
        ours.load_state_dict(ttt.state_dict())
    x = torch.randn(2, 23, 16, dtype=torch.float64)
    assert (ours(x) - ttt(x)).abs().max() < 1e-10


def test_special_case_switches_are_enforced():
    with pytest.raises(ValueError, match="inner_norm"):
        LinearAttentionLayer(16, 2, inner_norm=True)
    with pytest.raises(ValueError, match="mini_batch_size"):
        DeltaRuleLayer(16, 2, mini_batch_size=4)
    with pytest.raises(NotImplementedError, match="no cache"):
        DeltaRuleLayer(16, 2).allocate_inference_cache(1)
