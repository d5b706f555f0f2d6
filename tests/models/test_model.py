"""Model API: presets, save/load, Auto classes, hidden states, the cache's size, clear errors."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from ttt import TTTCache, TTTConfig, TTTForCausalLM, TTTModel, get_preset, preset_names
from ttt.hf_compat import enable_activation_checkpointing, output_cache


def tiny(preset="ttt-mlp-tiny", **kw) -> TTTForCausalLM:
    torch.manual_seed(0)
    return TTTForCausalLM(get_preset(preset, **kw)).eval()


def test_presets():
    names = preset_names()
    assert {"ttt-linear-125m", "ttt-mlp-1.3b", "ttt-mlp-350m-T", "ttt-linear-tiny"} <= set(names)
    c = get_preset("ttt-linear-125m")
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (768, 12, 12, 2048)
    assert c.pre_conv and c.share_qk and c.use_gate
    t = get_preset("ttt-mlp-350m-T")
    assert not (t.pre_conv or t.share_qk or t.use_gate) and t.ttt_layer_type == "mlp"
    alias = get_preset("ttt_mlp_base-760m")
    assert alias.ttt_layer_type == "mlp" and not alias.pre_conv and alias.hidden_size == 1536
    assert get_preset("ttt_linear-125m").share_qk
    assert get_preset("ttt-linear-tiny", mini_batch_size=8).mini_batch_size == 8
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("ttt-rnn-125m")
    with pytest.raises(ValueError, match="unknown size"):
        get_preset("ttt-linear-9b")


def test_parameter_count_125m():
    """The paper's TTT-Linear 125M (Mamba backbone) lands near 125M parameters."""
    with torch.device("meta"):
        model = TTTForCausalLM(get_preset("ttt-linear-125m"))
    n = sum(p.numel() for p in model.parameters())
    assert 110e6 < n < 140e6


@pytest.mark.parametrize("preset", ["ttt-mlp-tiny", "ttt-linear-tiny-T"])
def test_save_and_load_round_trip(tmp_path, preset):
    model = tiny(preset, tie_word_embeddings=False)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, TTTForCausalLM)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    ids = torch.randint(0, 256, (2, 20))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), TTTConfig)
    assert isinstance(AutoModel.from_pretrained(tmp_path), TTTModel)


def test_tied_embeddings_round_trip(tmp_path):
    model = tiny()
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    model.save_pretrained(tmp_path)
    loaded = TTTForCausalLM.from_pretrained(tmp_path)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)


def test_float64_round_trip(tmp_path):
    model = tiny().double()
    model.save_pretrained(tmp_path)
    loaded = TTTForCausalLM.from_pretrained(tmp_path, dtype=torch.float64)
    assert loaded.dtype == torch.float64
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_init_follows_the_jax_code():
    model = tiny("ttt-linear-tiny")
    block = model.model.layers[0]
    layer = block.seq_modeling_block
    assert torch.all(layer.learnable_token_idx == 0) and torch.all(layer.b1 == 0)
    assert torch.all(layer.ttt_norm_weight == 1) and torch.all(layer.learnable_ttt_lr_bias == 0)
    assert 0.01 < layer.W1.std().item() < 0.03 and 0.01 < layer.q_proj.weight.std().item() < 0.03
    std = 0.5 / 0.87962566103423978  # lecun normal, fan_in = kernel 4, truncated at 2σ
    assert torch.all(block.conv.conv.weight.abs() <= 2 * std) and torch.all(block.conv.conv.bias == 0)


def test_hidden_states_convention():
    model = tiny()
    ids = torch.randint(0, 256, (2, 19))
    out = model(ids, output_hidden_states=True)
    hs = out.hidden_states
    assert len(hs) == model.config.num_hidden_layers + 1
    assert torch.equal(hs[0], model.model.embed_tokens(ids))
    assert torch.equal(hs[-1], model.model(ids).last_hidden_state)  # after the final norm


def test_cache_is_fixed_size_and_returned():
    model = tiny()
    ids = torch.randint(0, 256, (2, 40))
    with torch.no_grad():
        out = model(ids[:, :3], use_cache=True)
        cache = output_cache(out)
        assert isinstance(cache, TTTCache) and cache.get_seq_length() == 3
        size = cache.nbytes()
        assert all(layer.ttt.grad_sums is not None for layer in cache.layers)  # offset 3: sums materialised
        model(ids[:, 3:], past_key_values=cache, use_cache=True)
    assert all(layer.ttt.grad_sums is not None for layer in cache.layers)  # offset 8
    assert cache.get_seq_length() == 40 and cache.nbytes() == size


@pytest.mark.parametrize("preset", ["ttt-linear-tiny", "ttt-mlp-tiny-T"])
@pytest.mark.parametrize("padded", [False, True])
def test_cache_holds_only_its_own_bytes(preset, padded):
    """No cache tensor is a view into a larger buffer (a prefill's activations would stay alive, O(T) memory)."""
    model = tiny(preset)
    ids = torch.randint(0, 256, (2, 300))
    mask = torch.ones_like(ids)
    if padded:
        mask[0, :7] = 0
    with torch.no_grad():
        cache = output_cache(model(ids, attention_mask=mask, use_cache=True))
    tensors = [t for layer in cache.layers for t in [*layer.ttt.tensors(), *layer.conv.values()]]
    held = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    assert sum(held.values()) == sum(t.numel() * t.element_size() for t in tensors) == cache.nbytes()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(hidden_size=66, num_attention_heads=4), "divisible"),
        (dict(mini_batch_size=0), "mini_batch_size"),
        (dict(ttt_layer_type="rnn"), "ttt_layer_type"),
        (dict(ttt_implementation="fast"), "ttt_implementation"),
        (dict(hidden_size=12, num_attention_heads=4), "even"),
        (dict(remat_mini_batch_group_size=None), "remat_mini_batch_group_size"),
        (dict(ttt_base_lr="1"), "ttt_base_lr"),
        (dict(mini_batch_size=True), "mini_batch_size"),
        (dict(hidden_act="nope"), "hidden_act"),
        (dict(rms_norm_eps=-1.0), "rms_norm_eps"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TTTConfig(**kwargs)


def test_register_ttt_layer():
    """A user's TTTBase subclass becomes a ttt_layer_type; names are not silently taken over."""
    from ttt.layers import TTT_LAYERS, TTTLinear, register_ttt_layer

    class MyLinear(TTTLinear):
        pass

    register_ttt_layer("my_linear_for_test", MyLinear)
    try:
        register_ttt_layer("my_linear_for_test", MyLinear)  # same class again: fine
        model = TTTForCausalLM(get_preset("ttt-linear-tiny", ttt_layer_type="my_linear_for_test"))
        assert all(type(block.seq_modeling_block) is MyLinear for block in model.model.layers)
        with pytest.raises(ValueError, match="taken by MyLinear"):
            register_ttt_layer("my_linear_for_test", TTTLinear)
        with pytest.raises(TypeError, match="not a TTTBase subclass"):
            register_ttt_layer("other_for_test", torch.nn.Linear)
    finally:
        TTT_LAYERS.pop("my_linear_for_test")


def test_bad_inputs():
    model = tiny()
    with pytest.raises(ValueError, match="vocab_size"):
        model(torch.tensor([[1, 2, 256]]))
    with pytest.raises(ValueError, match="vocab_size"):
        model(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="2-D"):
        model(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="exactly one"):
        model()
    with pytest.raises(ValueError, match="inputs_embeds"):
        model(inputs_embeds=torch.randn(1, 4, 65))
    with pytest.raises(ValueError, match="labels"):
        model(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2]]))


def test_cache_mismatch_errors():
    model = tiny()
    ids = torch.randint(0, 256, (2, 5))
    with pytest.raises(ValueError, match="batch size"):
        model(ids, past_key_values=TTTCache.from_model(model, 3), use_cache=True)
    other = tiny("ttt-linear-tiny")
    with pytest.raises(ValueError, match="another config"):
        model(ids, past_key_values=TTTCache.from_model(other, 2), use_cache=True)
    deeper = tiny(num_hidden_layers=3)
    with pytest.raises(ValueError, match="another config"):
        model(ids, past_key_values=TTTCache.from_model(deeper, 2), use_cache=True)


def test_empty_sequence():
    model = tiny()
    out = model(torch.zeros(2, 0, dtype=torch.long))
    assert out.logits.shape == (2, 0, 256)


def test_gradients_with_a_cache_equal_without():
    model = tiny("ttt-linear-tiny").double()
    ids = torch.randint(0, 256, (2, 30))
    with_cache = torch.autograd.grad(model(ids, labels=ids, use_cache=True).loss, list(model.parameters()))
    without = torch.autograd.grad(model(ids, labels=ids, use_cache=False).loss, list(model.parameters()))
    for a, b in zip(with_cache, without):
        assert (a - b).abs().max().item() < 1e-12


def test_gradient_checkpointing_refuses_a_cache():
    model = tiny()
    enable_activation_checkpointing(model)
    model.train()
    ids = torch.randint(0, 256, (2, 20))
    model(ids, labels=ids).loss.backward()  # without a cache it trains
    with pytest.raises(ValueError, match="gradient checkpointing"):
        model(ids, past_key_values=TTTCache.from_model(model, 2), use_cache=True)
