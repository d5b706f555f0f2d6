"""save_pretrained → from_pretrained (own class and Auto classes) gives identical logits for every preset and every
layer option, in float32 and loaded with dtype=torch.float64. A non-persistent buffer (the zero W0 without
learnable_init) is allocated empty by from_pretrained and must be filled by `_init_weights`."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from ttt import TTTForCausalLM, TTTModel, get_preset

from .helpers import PRESETS

OPTIONS = {
    "learnable_init=False": dict(learnable_init=False),
    "learnable_init=False,inner_bias=False": dict(learnable_init=False, inner_bias=False),
    "inner_norm=False,inner_residual=False": dict(inner_norm=False, inner_residual=False),
    "lr_gate=False,token_factor=harmonic": dict(lr_gate=False, token_factor="harmonic"),
    "momentum": dict(inner_optimizer="momentum"),
    "adam": dict(inner_optimizer="adam", learnable_init=False),
    "muon": dict(inner_optimizer="muon"),
    "forget_gate": dict(forget_gate=True),
    "weight_decay": dict(inner_weight_decay=0.1, learnable_init=False),
    "generic": dict(ttt_layer_type="generic", learnable_init=False),
    "nadaraya_watson": dict(ttt_layer_type="nadaraya_watson"),
}
CASES = [(preset, {}) for preset in PRESETS] + [
    (preset, options) for options in OPTIONS.values() for preset in ("ttt-linear-tiny", "ttt-mlp-tiny-T")
]
IDS = [preset for preset in PRESETS] + [f"{preset}-{name}" for name in OPTIONS for preset in ("linear", "mlp-T")]


def logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, use_cache=False).logits


@pytest.mark.parametrize(("preset", "options"), CASES, ids=IDS)
def test_round_trip_gives_identical_logits(tmp_path, preset, options):
    torch.manual_seed(0)
    model = TTTForCausalLM(get_preset(preset, vocab_size=61, **options)).eval()
    ids = torch.randint(0, 61, (2, 21))
    reference = logits(model, ids)
    assert torch.isfinite(reference).all()
    model.save_pretrained(tmp_path)
    for loader in (TTTForCausalLM, AutoModelForCausalLM):
        loaded = loader.from_pretrained(tmp_path).eval()
        assert type(loaded) is TTTForCausalLM and loaded.dtype == torch.float32
        assert torch.equal(logits(loaded, ids), reference)
        wide = loader.from_pretrained(tmp_path, dtype=torch.float64).eval()
        assert wide.dtype == torch.float64
        assert torch.equal(logits(wide, ids), logits(model.double(), ids))
        model.float()


def test_auto_config_and_base_model_load(tmp_path):
    config = get_preset("ttt-linear-tiny", vocab_size=61, learnable_init=False)
    TTTForCausalLM(config).save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).to_dict()["learnable_init"] is False
    base = AutoModel.from_pretrained(tmp_path)
    assert type(base) is TTTModel
    assert all(torch.equal(b.seq_modeling_block.W1, torch.zeros_like(b.seq_modeling_block.W1)) for b in base.layers)
