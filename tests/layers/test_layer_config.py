"""One configuration truth: `TTTLayerConfig` is what a TTTConfig produces and what layers take; its checks are the
only checks of the layer options, so a model config and a layer built by hand refuse the same values."""

from __future__ import annotations

import pytest

from ttt import TTTConfig, TTTForCausalLM, TTTLinear, get_preset
from ttt.layers import TTTLayerConfig


def test_layers_of_a_model_carry_the_configs_layer_options():
    config = get_preset("ttt-mlp-tiny", inner_optimizer="adam", inner_lr=0.01, forget_gate=True, mini_batch_size=8)
    model = TTTForCausalLM(config)
    expected = TTTLayerConfig.from_config(config)
    for block in model.model.layers:
        assert block.seq_modeling_block.config == expected
    assert expected.inner_optimizer.name == "adam" and expected.inner_optimizer.lr == 0.01
    assert expected.num_heads == config.num_attention_heads and expected.head_dim == 16


@pytest.mark.parametrize(
    ("option", "value", "names"),
    [
        ("mini_batch_size", 0, "mini_batch_size"),
        ("token_factor", "half", "token_factor"),
        ("inner_weight_decay", 1.5, "inner_weight_decay"),
        ("remat_mini_batch_group_size", -1, "remat_mini_batch_group_size"),
        ("implementation", "fast", "ttt_implementation"),
        ("inner_optimizer", "sgd", "inner_optimizer"),
    ],
)
def test_model_config_and_layer_refuse_the_same_values(option, value, names):
    config_name = {"implementation": "ttt_implementation"}.get(option, option)
    with pytest.raises(ValueError, match=names):
        TTTConfig(**{config_name: value})
    with pytest.raises(ValueError, match=names if option != "implementation" else "implementation"):
        TTTLinear(16, 2, **{option: value})


def test_unknown_layer_option_is_a_type_error():
    with pytest.raises(TypeError, match="mini_bach_size"):
        TTTLinear(16, 2, mini_bach_size=4)


def test_layer_config_is_frozen():
    layer = TTTLinear(16, 2)
    with pytest.raises(AttributeError):
        layer.config.mini_batch_size = 4
