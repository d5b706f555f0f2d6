"""The inference state has one owner: the model checks a cache once per call with no host synchronisation per layer,
each layer state flattens to one named list of tensors (sessions, byte counts and copies use it)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from ttt import TTTCache, TTTForCausalLM, get_preset

SYNCS = ("item", "tolist", "__int__", "__bool__", "__float__", "__index__")


@contextlib.contextmanager
def count_host_syncs():
    """Count the calls that read a tensor's value back to the host (on a GPU each is a synchronisation)."""
    counts = {"n": 0}
    originals = {name: getattr(torch.Tensor, name) for name in SYNCS}

    def counting(name):
        def wrapper(self, *args, **kwargs):
            counts["n"] += 1
            return originals[name](self, *args, **kwargs)

        return wrapper

    for name in SYNCS:
        setattr(torch.Tensor, name, counting(name))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def decode_syncs(preset: str, layers: int, masked: bool) -> int:
    torch.manual_seed(0)
    model = TTTForCausalLM(get_preset(preset, num_hidden_layers=layers)).eval()
    ids = torch.randint(0, 256, (2, 21))
    cache = TTTCache.from_model(model, 2)
    with torch.no_grad():
        model(ids[:, :-1], cache=cache)
        mask = torch.ones(2, 21, dtype=torch.long) if masked else None
        with count_host_syncs() as counts:
            model(ids[:, -1:], cache=cache, attention_mask=mask)
    return counts["n"]


@pytest.mark.parametrize("preset", ["ttt-linear-tiny", "ttt-mlp-tiny-T"])
@pytest.mark.parametrize("masked", [False, True])
def test_a_decode_step_has_no_host_sync_per_layer(preset, masked):
    shallow, deep = decode_syncs(preset, 2, masked), decode_syncs(preset, 6, masked)
    assert shallow == deep, f"host syncs grow with depth: {shallow} (2 layers) vs {deep} (6 layers)"
    assert deep <= 4  # per call: the input-id range check, and the mask's all-real test when a mask is given


@pytest.mark.parametrize(
    "options", [{}, dict(inner_optimizer="adam"), dict(forget_gate=True), dict(inner_bias=False)], ids=str
)
def test_layer_state_flattens_and_restores(options):
    model = TTTForCausalLM(get_preset("ttt-mlp-tiny", **options)).eval()
    cache = TTTCache.from_model(model, 2)
    with torch.no_grad():
        model(torch.randint(0, 256, (2, 7)), cache=cache)
    layer = cache.layers[0]
    named = layer.named_tensors()
    assert layer.nbytes() == sum(t.numel() * t.element_size() for t in named.values())
    copy = layer.clone()
    copy.load_named({name: t + 1 if t.is_floating_point() else t for name, t in named.items()})
    assert all(torch.equal(layer.named_tensors()[name], t) for name, t in named.items()), "the copy is independent"
    bad = dict(named)
    bad["offset"] = bad["offset"][:1]
    with pytest.raises(ValueError, match="'offset'"):
        layer.load_named(bad)
    with pytest.raises(ValueError, match="'conv.extra' is not expected"):
        layer.load_named({**named, "conv.extra": named["offset"]})
