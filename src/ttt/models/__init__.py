"""Config, cache and causal LM; registered with transformers' Auto classes on import."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .cache import TTTCache
from .configuration import JAX_BLOCK_ALIASES, TTTConfig, get_preset, preset_names
from .modeling import TTTForCausalLM, TTTModel, TTTPreTrainedModel

AutoConfig.register("ttt", TTTConfig, exist_ok=True)
AutoModel.register(TTTConfig, TTTModel, exist_ok=True)
AutoModelForCausalLM.register(TTTConfig, TTTForCausalLM, exist_ok=True)

__all__ = [
    "JAX_BLOCK_ALIASES",
    "TTTCache",
    "TTTConfig",
    "TTTForCausalLM",
    "TTTModel",
    "TTTPreTrainedModel",
    "get_preset",
    "preset_names",
]
