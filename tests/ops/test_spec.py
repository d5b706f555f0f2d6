"""InnerSpec, the fixed part of an inner loop that every form takes: its checks and what it derives."""

from __future__ import annotations

import pytest
import torch

from ttt import TTTLinear
from ttt.ops import InnerSpec


def test_spec_checks_its_fields():
    with pytest.raises(ValueError, match="token_factor must be 1-D"):
        InnerSpec(torch.ones(2, 4))
    with pytest.raises(ValueError, match="ln_weight and ln_bias go together"):
        InnerSpec(torch.ones(4), ln_weight=torch.ones(2, 8))
    spec = InnerSpec(torch.ones(4), torch.ones(2, 8), torch.zeros(2, 8))
    assert spec.mini_batch_size == 4
    assert spec.norm is not None and spec.norm[0].shape == (2, 1, 8)
    assert InnerSpec(torch.ones(4)).norm is None
    with pytest.raises(AttributeError):
        spec.residual = False  # type: ignore[misc]  (frozen)


def test_layer_spec_carries_the_layer_options():
    layer = TTTLinear(16, 2, mini_batch_size=4, inner_norm=False, inner_residual=False, inner_optimizer="momentum")
    spec = layer.inner_spec()
    assert spec.mini_batch_size == 4 and spec.norm is None and not spec.residual
    assert spec.optimizer is layer.inner_optimizer and spec.optimizer.name == "momentum"
    assert torch.equal(spec.token_factor, layer.token_factors())
