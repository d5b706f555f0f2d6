"""Parity with the official ttt-lm-pytorch model (reference vectors in tests/fixtures/parity, see its README).

float64: prefill logits, decode logits (prefill P tokens, then one token at a time through the cache), loss and
every parameter gradient within 1e-6 absolute; float32 model within 1e-5.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ttt import from_official
from ttt.models import TTTCache

DATA = Path(__file__).parent.parent / "fixtures" / "parity"
CASES = sorted(p.stem for p in DATA.glob("*.safetensors"))


def load_case(name: str):
    path = DATA / f"{name}.safetensors"
    tensors = load_file(path)
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    state = {k.removeprefix("state."): v for k, v in tensors.items() if k.startswith("state.")}
    return tensors, json.loads(meta["config"]), state, int(meta["prefill_len"])


def test_cases_present():
    assert {"linear_T", "mlp_M"} <= set(CASES)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-6), (torch.float32, 1e-5)], ids=["fp64", "fp32"])
@pytest.mark.parametrize("name", CASES)
def test_official_parity(name, dtype, tol):
    ref, config, state, prefill = load_case(name)
    model = from_official(config, {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()})
    assert model.dtype == dtype
    ids = ref["input_ids"]

    model.train()
    out = model(ids, labels=ids, use_cache=False)
    assert (out.logits.double() - ref["logits"]).abs().max().item() < tol
    assert abs(out.loss.item() - ref["loss"].item()) < tol
    out.loss.backward()
    named = dict(model.named_parameters())
    grad_refs = {k.removeprefix("grad."): v for k, v in ref.items() if k.startswith("grad.")}
    assert set(grad_refs) == set(named), "every parameter has a reference gradient"
    for key, expected in grad_refs.items():
        got = named[key].grad
        assert got is not None, key
        assert (got.double() - expected).abs().max().item() < tol, key

    model.eval()
    with torch.no_grad():
        cache = TTTCache.from_model(model, ids.shape[0])
        logits = model(ids[:, :prefill], past_key_values=cache, use_cache=True).logits
        assert (logits.double() - ref["logits"][:, :prefill]).abs().max().item() < tol
        steps = [
            model(ids[:, t : t + 1], past_key_values=cache, use_cache=True).logits[:, 0]
            for t in range(prefill, ids.shape[1])
        ]
    assert (torch.stack(steps, 1).double() - ref["decode_logits"]).abs().max().item() < tol


@pytest.mark.parametrize("name", CASES)
def test_float64_parity_is_near_exact(name):
    """With every constant in float64 the error is rounding only (~1e-14), far below the 1e-6 tolerance."""
    ref, config, state, _ = load_case(name)
    model = from_official(config, state)
    with torch.no_grad():
        logits = model(ref["input_ids"], use_cache=False).logits
    assert (logits - ref["logits"]).abs().max().item() < 1e-12
