"""Linear layers as streaming reductions (models/streaming.py): the same product as F.linear up to the order of the
additions, switched on only while a decode package is traced, and traced as a reduction (no matrix product)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ttt.models.streaming import streaming_linear, streaming_linears
from ttt.models.weights import BF16Linear, quantize_weights

SHAPES = [(1, 7), (3, 1, 16), (2, 5, 33)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_equals_f_linear(shape, bias):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64)
    weight = torch.randn(11, shape[-1], dtype=torch.float64)
    b = torch.randn(11, dtype=torch.float64) if bias else None
    expected = F.linear(x, weight, b)
    assert torch.allclose(streaming_linear(x, weight, b), expected, rtol=1e-12, atol=1e-12)
    got32 = streaming_linear(x.float(), weight.float(), None if b is None else b.float())
    assert got32.dtype == torch.float32
    assert (got32.double() - expected).abs().max() / expected.abs().max() < 1e-6


def test_bfloat16_accumulates_in_float32():
    torch.manual_seed(0)
    x, weight = torch.randn(2, 512).bfloat16(), torch.randn(64, 512).bfloat16()
    got = streaming_linear(x, weight)
    assert got.dtype == torch.bfloat16
    # the exact product of the bf16 operands, rounded once to bf16: at most one bf16 rounding away
    exact = (x.double() @ weight.double().T).to(torch.bfloat16)
    assert ((got.double() - exact.double()).abs() <= exact.double().abs() * 2**-7 + 1e-6).all()
    with pytest.raises(ValueError, match="cast one first"):
        streaming_linear(x.float(), weight)


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8, bias=False))


def test_switches_plain_and_bf16_linears_and_restores_them():
    torch.manual_seed(0)
    model = _model()
    x = torch.randn(1, 16)
    expected = model(x)
    with streaming_linears(model) as switched:
        assert switched == 2
        assert torch.allclose(model(x), expected, atol=1e-6)
    assert all("forward" not in vars(m) for m in model.modules())  # the class's forward again
    assert torch.equal(model(x), expected)
    half = _model()
    half[0] = BF16Linear(16, 32)
    with torch.no_grad():
        eager = half(x)
        with streaming_linears(half) as switched:
            assert switched == 2
            assert torch.allclose(half(x), eager, rtol=1e-2, atol=1e-2)


def test_leaves_int8_weights_alone():
    pytest.importorskip("torchao")
    model = quantize_weights(_model(), "int8")
    with streaming_linears(model) as switched:
        assert switched == 0


def test_traced_as_a_reduction():
    """What a package compiles: the exported graph holds a sum over the input features and no matrix product."""
    model = _model().eval()
    x = torch.randn(1, 16)
    with torch.no_grad(), streaming_linears(model):
        graph = torch.export.export(model, (x,)).graph
    targets = {str(node.target) for node in graph.nodes if node.op == "call_function"}
    assert not any(name in t for t in targets for name in ("mm", "linear", "matmul"))
    assert any("sum" in t for t in targets)
    with torch.no_grad():
        plain = torch.export.export(model, (x,)).graph
    assert any("linear" in str(node.target) or "mm" in str(node.target) for node in plain.nodes)
