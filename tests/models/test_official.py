"""from_official: config translation, state-dict checks, dtype."""

from __future__ import annotations

import pytest
import torch

from ttt import TTTForCausalLM, from_official
from ttt.convert import config_from_official

from .test_parity import load_case


def test_config_defaults_and_unknown_keys():
    cfg = config_from_official({"hidden_size": 64, "num_attention_heads": 4, "architectures": ["X"], "foo": 1})
    # missing keys take the official defaults: the Transformer backbone, tied head, linear, base lr 1, b = 16
    assert (cfg.pre_conv, cfg.share_qk, cfg.use_gate, cfg.tie_word_embeddings) == (False, False, False, True)
    assert (cfg.ttt_layer_type, cfg.ttt_base_lr, cfg.mini_batch_size, cfg.vocab_size) == ("linear", 1.0, 16, 32000)
    assert not hasattr(cfg, "foo")


def test_tied_head_may_be_absent_and_dtype_follows_tensors():
    _, config, state, _ = load_case("mlp_M")
    state = {k: v.float() for k, v in state.items() if k != "lm_head.weight"}
    model = from_official(config, state)
    assert isinstance(model, TTTForCausalLM) and model.dtype == torch.float32
    assert torch.equal(model.lm_head.weight, state["model.embed_tokens.weight"])


def test_untied_head_is_loaded():
    _, config, state, _ = load_case("linear_M_untied")
    assert not config["tie_word_embeddings"]
    model = from_official(config, state)
    assert torch.equal(model.lm_head.weight, state["lm_head.weight"])
    assert not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)


def test_clear_errors():
    _, config, state, _ = load_case("linear_T")
    missing = dict(state)
    missing.pop("model.layers.0.seq_modeling_block.W1")
    with pytest.raises(ValueError, match="missing.*W1"):
        from_official(config, missing)
    shaped = dict(state)
    shaped["model.layers.1.seq_modeling_block.b1"] = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="b1"):
        from_official(config, shaped)
    with pytest.raises(ValueError, match="unexpected"):
        from_official({**config, "num_hidden_layers": 1}, state)
    with pytest.raises(TypeError, match="dict"):
        from_official("config.json", state)
