"""Models the trainer builds: TTT presets, and the baselines configured to match them in parameter count.

transformer++-SIZE   Llama architecture from transformers (RoPE, SwiGLU, RMSNorm, SDPA), same width, depth
                     and heads as ttt-linear-SIZE, FFN width solved so the parameter count matches
mamba-SIZE           transformers' Mamba, same width, twice the layers (a Mamba block has about half the
                     parameters of a TTT block + FFN), state 16, expand 2
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM, MambaConfig, MambaForCausalLM, PreTrainedModel

from ..models import SIZES, TTTConfig, TTTForCausalLM, get_preset
from .config import ConfigError

BASELINES = ("transformer++", "mamba")


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _ttt_reference(size: str, vocab_size: int, overrides: dict[str, Any]) -> tuple[TTTConfig, int]:
    """The ttt-linear-SIZE config a baseline is matched to, and its parameter count."""
    sizes = {k: v for k, v in overrides.items() if k in ("hidden_size", "num_hidden_layers", "num_attention_heads")}
    ref = get_preset(f"ttt-linear-{size}", vocab_size=vocab_size, **sizes)
    with torch.device("meta"):
        return ref, count_params(TTTForCausalLM(ref))


def _check_keys(overrides: dict[str, Any], config_cls: type, name: str) -> None:
    known = {f.name for f in dataclasses.fields(config_cls)} if dataclasses.is_dataclass(config_cls) else set()
    known |= set(config_cls().to_dict())
    unknown = sorted(k for k in overrides if k not in known)
    if unknown:
        raise ConfigError(f"unknown model config key(s) for {name}: {', '.join(unknown)}")


def llama_matched(size: str, vocab_size: int, overrides: dict[str, Any]) -> LlamaConfig:
    ref, target = _ttt_reference(size, vocab_size, overrides)
    base: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=ref.hidden_size,
        num_hidden_layers=ref.num_hidden_layers,
        num_attention_heads=ref.num_attention_heads,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        max_position_embeddings=max(ref.max_position_embeddings, 8192),
        bos_token_id=ref.bos_token_id,
        eos_token_id=ref.eos_token_id,
    )
    with torch.device("meta"):
        without_ffn = count_params(LlamaForCausalLM(LlamaConfig(**base, intermediate_size=8)))
    per_unit = 3 * ref.hidden_size * ref.num_hidden_layers
    intermediate = max(8, round((target - without_ffn + 8 * per_unit) / per_unit / 8) * 8)
    config = LlamaConfig(**{**base, "intermediate_size": intermediate, **overrides})
    config._attn_implementation = "sdpa"
    return config


def mamba_matched(size: str, vocab_size: int, overrides: dict[str, Any]) -> MambaConfig:
    ref, target = _ttt_reference(size, vocab_size, overrides)
    base: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=ref.hidden_size,
        state_size=16,
        expand=2,
        tie_word_embeddings=True,
        bos_token_id=ref.bos_token_id,
        eos_token_id=ref.eos_token_id,
        pad_token_id=0,
    )
    # the number of Mamba blocks whose total is closest to the TTT model's (about 2 per TTT block)
    with torch.device("meta"):
        one = count_params(MambaForCausalLM(MambaConfig(**base, num_hidden_layers=1)))
        two = count_params(MambaForCausalLM(MambaConfig(**base, num_hidden_layers=2)))
    layers = max(1, round((target - (2 * one - two)) / (two - one)))
    return MambaConfig(**{**base, "num_hidden_layers": layers, **overrides})


def build_model(name: str, vocab_size: int, overrides: dict[str, Any] | None = None) -> PreTrainedModel:
    """A freshly initialised model for `name`: a ttt preset (ttt-linear-125m, ...) or a matched baseline."""
    overrides = dict(overrides or {})
    kind, _, size = name.rpartition("-")
    try:
        if kind in BASELINES:
            if size not in SIZES:
                raise ConfigError(f"unknown size {size!r} in {name!r}; sizes: {', '.join(SIZES)}")
            if kind == "transformer++":
                _check_keys(overrides, LlamaConfig, name)
                return LlamaForCausalLM(llama_matched(size, vocab_size, overrides))
            _check_keys(overrides, MambaConfig, name)
            return MambaForCausalLM(mamba_matched(size, vocab_size, overrides))
        _check_keys(overrides, TTTConfig, name)
        return TTTForCausalLM(get_preset(name, vocab_size=vocab_size, **overrides))
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"model {name!r}: {err}") from err


def model_names() -> list[str]:
    from ..models import preset_names

    return preset_names() + [f"{kind}-{size}" for kind in BASELINES for size in SIZES]
