"""What our forwards take: the documented keyword arguments, each honoured; anything else is a TypeError."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ttt import TTTCache, TTTLinear

from .helpers import VOCAB, tiny_model


def ids_and_model(preset="ttt-linear-tiny"):
    return torch.randint(1, VOCAB, (3, 24)), tiny_model(preset)


@pytest.mark.parametrize("target", ["lm", "model", "layer"])
def test_unknown_keyword_arguments_are_named(target):
    ids, model = ids_and_model()
    if target == "layer":
        layer = TTTLinear(hidden_size=16, num_heads=2, mini_batch_size=4)
        call = lambda **kw: layer(torch.randn(1, 5, 16), **kw)  # noqa: E731
    else:
        module = model if target == "lm" else model.model
        call = lambda **kw: module(ids, **kw)  # noqa: E731
    with pytest.raises(TypeError, match="past_key_value, use_cahce"):
        call(use_cahce=True, past_key_value=None)


def test_shift_labels_are_the_targets_as_given():
    ids, model = ids_and_model()
    other = torch.randint(1, VOCAB, ids.shape)
    other[0, :5] = -100
    with torch.no_grad():
        logits = model(ids).logits
        loss = model(ids, labels=ids, shift_labels=other).loss
        shifted = model(ids, labels=ids).loss
    assert torch.allclose(loss, F.cross_entropy(logits.flatten(0, 1), other.flatten()), rtol=0, atol=1e-12)
    assert torch.allclose(shifted, F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()), atol=1e-12)
    assert not torch.allclose(loss, shifted)
    # shift_labels alone (no labels) is enough
    assert torch.allclose(model(ids, shift_labels=other).loss, loss, atol=1e-12)


def test_num_items_in_batch_normalises_the_summed_loss():
    ids, model = ids_and_model()
    labels = ids.clone()
    labels[1, 3:9] = -100
    with torch.no_grad():
        logits = model(ids).logits
        total = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), reduction="sum")
        for n in (50, torch.tensor(50)):
            loss = model(ids, labels=labels, num_items_in_batch=n).loss
            assert torch.allclose(loss, total / 50, rtol=0, atol=1e-12)
    # the Trainer is told that the model handles it (and so does not rescale the loss itself)
    assert model.accepts_loss_kwargs


def test_output_attentions_is_refused_and_hidden_states_are_returned():
    ids, model = ids_and_model()
    with pytest.raises(ValueError, match="attention weights"):
        model(ids, output_attentions=True)
    out = model(ids, output_attentions=False, output_hidden_states=True)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1


def test_position_ids_that_restart_inside_a_row_are_refused():
    ids, model = ids_and_model()
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    # what transformers' generate builds: cumsum of the mask − 1, padding filled with 1
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    with torch.no_grad():
        reference = model(ids, attention_mask=mask).logits
        assert torch.equal(model(ids, attention_mask=mask, position_ids=positions).logits, reference)
        assert torch.equal(model(ids, position_ids=torch.arange(24)[None]).logits, model(ids).logits)
    packed = torch.cat([torch.arange(10), torch.arange(14)])[None].expand(3, -1)
    with pytest.raises(ValueError, match="packed sequences"):
        model(ids, position_ids=packed)


@pytest.mark.parametrize("mode", ["assistant_model", "prompt_lookup_num_tokens"])
def test_assisted_decoding_is_refused_by_transformers_as_stateful(mode):
    ids, model = ids_and_model()
    ids = ids[:1]
    extra = {"assistant_model": tiny_model("ttt-linear-tiny", seed=1)} if mode == "assistant_model" else {mode: 3}
    with pytest.raises(ValueError, match="stateful"):
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False, **extra)
    cache = TTTCache.from_model(model, 1)
    with pytest.raises(NotImplementedError, match="cannot be cropped"):
        cache.crop(3)


@pytest.mark.parametrize(
    "bad",
    [
        torch.arange(4)[None],  # too short
        torch.arange(24)[None].expand(5, -1),  # wrong batch
        torch.arange(24, dtype=torch.float32)[None],  # not integer
        torch.arange(24)[None, None],  # 3-D
    ],
)
def test_position_ids_of_the_wrong_shape_or_dtype_are_named(bad):
    ids, model = ids_and_model()
    with pytest.raises(ValueError, match="position_ids"):
        model(ids, position_ids=bad)
    with pytest.raises(ValueError, match="position_ids"):
        model(ids, attention_mask=torch.ones_like(ids), position_ids=bad)
